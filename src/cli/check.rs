//! `cairn check`: verifies the repository (with or without the password)
//! and prints what it found. Exit 0 when clean, 1 when damage was found.

use super::args::{CheckArgs, Cli};
use super::output::human_bytes;
use super::repo::{backend, open, read_lock};
use crate::context;
use anyhow::anyhow;
use cairn::ErrorKind;

pub(crate) fn check(cli: &Cli, args: &CheckArgs) -> anyhow::Result<i32> {
    let report = if args.no_password {
        if args.read_data_subset.is_some() {
            return Err(anyhow!(
                "--no-password reads all packs or none: use --read-data"
            ));
        }
        let backend = backend(cli)?;
        if !backend.exists()? {
            return Err(cairn::Error::new(
                ErrorKind::RepositoryNotFound,
                format!("repository {} does not exist", backend.location()),
            )
            .into());
        }
        cairn::check_keyless(backend.as_ref(), args.read_data, context())?
    } else {
        let read_data = match (&args.read_data_subset, args.read_data) {
            (Some(subset), _) => subset.parse::<cairn::ReadData>()?,
            (None, true) => cairn::ReadData::All,
            (None, false) => cairn::ReadData::None,
        };
        let repo = open(cli)?;
        let _lock = read_lock(cli, &repo)?;
        let options = cairn::CheckOptions {
            read_data,
            memory: args
                .memory
                .as_deref()
                .map(cairn::units::parse_size)
                .transpose()?,
            ..cairn::CheckOptions::default()
        };
        cairn::check(&repo, &options)?
    };
    super::metrics::note_check(&report);
    super::audit::note_check(&report);
    if cli.json {
        let mut value = serde_json::to_value(&report)?;
        value["clean"] = report.is_clean().into();
        value["verdict"] = report.verdict().to_string().into();
        value["notes"] = super::hints::note_texts(&report).into();
        value["hints"] = super::hints::hint_texts(&report).into();
        println!("{value}");
    } else {
        if !cli.quiet {
            println!(
                "checked {} key file(s), {} index file(s), {} pack(s), {} snapshot(s), {} tree(s)",
                report.keys, report.index_files, report.packs, report.snapshots, report.trees
            );
            if report.packs_read > 0 {
                println!(
                    "read {} pack(s), {}",
                    report.packs_read,
                    human_bytes(report.bytes_read)
                );
            }
            for note in super::hints::note_texts(&report) {
                println!("note: {note}");
            }
        }
        for p in &report.problems {
            println!("error: {} {}: {}", p.object, p.status, p.message);
        }
        if report.problems_unlisted > 0 {
            println!(
                "error: ... and {} more problem(s)",
                report.problems_unlisted
            );
        }
        for d in &report.damaged_paths {
            println!(
                "damaged: snapshot {} {}: {}",
                d.snapshot.short(),
                d.path,
                d.detail
            );
        }
        if report.damaged_paths_unlisted > 0 {
            println!(
                "damaged: ... and {} more path(s)",
                report.damaged_paths_unlisted
            );
        }
        if !cli.quiet {
            for hint in super::hints::hint_texts(&report) {
                println!("hint: {hint}");
            }
        }
        println!("{}", report.verdict());
    }
    Ok(if report.is_clean() { 0 } else { 1 })
}
