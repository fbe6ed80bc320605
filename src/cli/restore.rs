//! `cairn restore`, `cairn dump` and `cairn export-tar`: the commands that
//! write a snapshot's files out, into a directory, to standard output, or
//! as a tarball.

use super::args::{split_selector, Cli, FilterArgs};
use super::output::{emit, human_bytes};
use super::repo::{open, read_lock, warn_all};
use anyhow::{anyhow, Context};
use std::io::IsTerminal;

pub(crate) fn restore(
    cli: &Cli,
    selector: &str,
    target: &std::path::Path,
    options: &cairn::RestoreOptions,
    filter: &FilterArgs,
) -> anyhow::Result<i32> {
    let mut repo = open(cli)?;
    let _lock = read_lock(cli, &repo)?;
    let (sel, subpath) = split_selector(selector);
    let (id, snapshot) = repo.find_snapshot(sel, &filter.filter())?;
    super::audit::note_read(&id);
    let mut repo = repo.load_index()?;
    warn_all(cli, &mut repo);
    let outcome = cairn::restore(&repo, &snapshot, subpath, target, options)?;
    for p in &outcome.problems {
        eprintln!("cairn: error: {p}");
    }
    emit(
        cli,
        || {
            Ok(
                serde_json::json!({"message_type": "summary", "snapshot_id": id.to_hex(), "files_restored": outcome.files,
                "dirs_restored": outcome.dirs, "bytes_restored": outcome.bytes, "special_files_skipped": outcome.special_skipped,
                "errors": outcome.problems.len()}),
            )
        },
        || {
            println!(
                "restored snapshot {} to {}: {} files, {} dirs, {}",
                id.short(),
                target.display(),
                outcome.files,
                outcome.dirs,
                human_bytes(outcome.bytes)
            );
            if outcome.special_skipped > 0 {
                println!(
                    "left out {} special file(s) (--no-special)",
                    outcome.special_skipped
                );
            }
            Ok(())
        },
    )?;
    if outcome.problems.is_empty() {
        Ok(0)
    } else {
        eprintln!(
            "cairn: error: {} problem(s) during restore",
            outcome.problems.len()
        );
        Ok(1)
    }
}

pub(crate) fn dump(
    cli: &Cli,
    selector: &str,
    path: &str,
    filter: &FilterArgs,
) -> anyhow::Result<i32> {
    let mut repo = open(cli)?;
    let _lock = read_lock(cli, &repo)?;
    let (id, snapshot) = repo.find_snapshot(selector, &filter.filter())?;
    super::audit::note_read(&id);
    let mut repo = repo.load_index()?;
    warn_all(cli, &mut repo);
    let stdout = std::io::stdout();
    let mut out = std::io::BufWriter::with_capacity(1 << 20, stdout.lock());
    cairn::dump(&repo, &snapshot, path, &mut out)?;
    Ok(0)
}

/// The tarball's compression from `--gzip` and `--zstd`.
pub(crate) fn compression(gzip: bool, zstd: bool) -> cairn::Compression {
    match (gzip, zstd) {
        (true, _) => cairn::Compression::Gzip,
        (_, true) => cairn::Compression::Zstd,
        _ => cairn::Compression::None,
    }
}

pub(crate) fn export_tar(
    cli: &Cli,
    selector: &str,
    path: Option<&str>,
    output: Option<&std::path::Path>,
    compression: cairn::Compression,
    filter: &FilterArgs,
) -> anyhow::Result<i32> {
    let (sel, subpath) = split_selector(selector);
    let subpath = path.unwrap_or(subpath);
    let mut repo = open(cli)?;
    let _lock = read_lock(cli, &repo)?;
    let (id, snapshot) = repo.find_snapshot(sel, &filter.filter())?;
    super::audit::note_read(&id);
    let mut repo = repo.load_index()?;
    warn_all(cli, &mut repo);
    let outcome = match output {
        Some(file) => {
            let f = std::fs::File::create(file)
                .with_context(|| format!("cannot create {}", file.display()))?;
            let mut out = std::io::BufWriter::with_capacity(1 << 20, f);
            let result = cairn::export_tar(&repo, &snapshot, subpath, &mut out, compression);
            if result.is_err() {
                // Half a tarball must not pass for a whole one.
                let _ = std::fs::remove_file(file);
            }
            result?
        }
        None => {
            let stdout = std::io::stdout();
            if stdout.is_terminal() {
                return Err(anyhow!(
                    "not writing a tarball to a terminal: redirect standard output or use -o FILE"
                ));
            }
            let mut out = std::io::BufWriter::with_capacity(1 << 20, stdout.lock());
            cairn::export_tar(&repo, &snapshot, subpath, &mut out, compression)?
        }
    };
    for s in &outcome.skipped {
        eprintln!("cairn: warning: {s}");
    }
    Ok(0)
}
