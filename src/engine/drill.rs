//! `cairn drill`: restores a snapshot into a private scratch directory,
//! proves it loads (a PostgreSQL dump into a throwaway cluster, an RDB into
//! redis-server, a tarball or a tree read back), compares the figures with
//! the previous passed drill of the same source, stores the result as a
//! sealed record (`drills/`, docs/FORMAT.md) and removes the scratch.
//!
//! A drill that fails because of the backup (a dump that does not load, a
//! damaged pack, a table that shrank) is an outcome with a failed verdict,
//! recorded like a passed one; a drill that cannot run (no initdb, no
//! space, an interrupt) is an error and records nothing.

mod child;
mod files;
mod postgres;
mod redis;
mod scratch;

use crate::engine::repository::Repository;
use crate::engine::restorer::{restore, RestoreOptions};
use crate::error::{Error, ErrorKind, Result};
use crate::format::drill::{
    bounded_text, shrinkage, DrillKind, DrillRecord, Figure, Verdict, DRILL_RECORD_VERSION,
};
use crate::format::id::{DrillId, SnapshotId};
use crate::format::snapshot::{Snapshot, SourceKind};
use crate::format::tree::NodeKind;
use crate::storage::lock::LockGuard;
use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Instant;

/// What `drill` is asked to do beyond the snapshot.
#[derive(Debug, Clone, Default)]
pub struct DrillOptions {
    /// The verifier; detected from the snapshot when None.
    pub kind: Option<DrillKind>,
    /// Shell commands run after the built-in checks, with the server still
    /// up (`CAIRN_DRILL_DIR`, `PGHOST`…, `CAIRN_DRILL_REDIS_SOCKET`).
    pub verify_commands: Vec<String>,
    /// Leave the scratch directory (servers stopped) for inspection.
    pub keep: bool,
    /// Fail when a figure dropped by more than this percentage since the
    /// previous passed drill of the same source.
    pub max_shrink_percent: Option<f64>,
    /// Where the scratch directory goes (default: the temp directory).
    pub scratch_parent: Option<PathBuf>,
    /// Globs of files (or tarball members) that must exist.
    pub require: Vec<String>,
}

/// One drill's result: its record as stored.
#[derive(Debug, Clone)]
pub struct DrillOutcome {
    pub id: DrillId,
    pub record: DrillRecord,
    /// The scratch directory, when kept.
    pub kept: Option<PathBuf>,
    /// Scratch directories of earlier drills that died, removed now.
    pub swept: Vec<PathBuf>,
}

/// What a verifier found: its figures and, if the drill failed, why.
pub(crate) struct Verified {
    figures: Vec<Figure>,
    failure: Option<String>,
}

/// A snapshot's source, the unit a drill compares against: its host and
/// paths (`db1:/app.sql`).
pub fn source_of(snapshot: &Snapshot) -> String {
    format!("{}:{}", snapshot.hostname, snapshot.paths.join(","))
}

/// The latest snapshot of each source among `snapshots` (oldest first, as
/// `Repository::snapshots` returns them), in source order.
pub fn latest_per_source(snapshots: Vec<(SnapshotId, Snapshot)>) -> Vec<(SnapshotId, Snapshot)> {
    let mut latest: BTreeMap<String, (SnapshotId, Snapshot)> = BTreeMap::new();
    for (id, snapshot) in snapshots {
        latest.insert(source_of(&snapshot), (id, snapshot));
    }
    latest.into_values().collect()
}

/// The verifier a snapshot calls for: the dump command it records
/// (`pg_dump`, `redis-cli`), else its file name (`.sql`, `.dump`, `.rdb`,
/// `.tar*`), else `files`.
pub fn detect_kind(snapshot: &Snapshot) -> DrillKind {
    if let Some(program) = snapshot.command.as_ref().and_then(|c| c.first()) {
        let base = program.rsplit('/').next().unwrap_or(program);
        match base {
            "pg_dump" => return DrillKind::Postgres,
            "redis-cli" => return DrillKind::Redis,
            _ => {}
        }
    }
    if snapshot.source == SourceKind::Tar {
        return DrillKind::Files;
    }
    match snapshot.paths.as_slice() {
        [one] => kind_of_name(one).unwrap_or(DrillKind::Files),
        _ => DrillKind::Files,
    }
}

fn kind_of_name(name: &str) -> Option<DrillKind> {
    let name = name.rsplit('/').next().unwrap_or(name).to_ascii_lowercase();
    let ends = |suffixes: &[&str]| suffixes.iter().any(|s| name.ends_with(s));
    if ends(&[".sql", ".dump", ".pgdump", ".pg_dump"]) {
        Some(DrillKind::Postgres)
    } else if ends(&[".rdb"]) {
        Some(DrillKind::Redis)
    } else if ends(&[
        ".tar", ".tar.gz", ".tgz", ".tar.zst", ".tzst", ".tar.xz", ".txz", ".tar.bz2", ".tbz2",
    ]) {
        Some(DrillKind::Tar)
    } else {
        None
    }
}

/// The restored path a dump verifier loads: the one regular file of the
/// snapshot, else the first whose name fits `kind` (for PostgreSQL, a
/// directory-format dump's directory, the one holding `toc.dat`).
fn dump_path(repo: &Repository, snapshot: &Snapshot, kind: DrillKind) -> Result<String> {
    let mut files = Vec::new();
    let mut fitting = None;
    crate::engine::browse::walk(repo, snapshot.tree, "", &mut |path, node| {
        if node.kind == NodeKind::File {
            files.push(path.to_string());
            if fitting.is_none() {
                if kind == DrillKind::Postgres && path.ends_with("/toc.dat") {
                    fitting = Some(path.trim_end_matches("/toc.dat").to_string());
                } else if kind_of_name(path) == Some(kind) {
                    fitting = Some(path.to_string());
                }
            }
        }
        Ok(())
    })?;
    match (fitting, files.len()) {
        (Some(path), _) => Ok(path),
        (None, 1) => Ok(files.remove(0)),
        (None, _) => Err(Error::invalid(format!(
            "snapshot has no file for the {} drill (a single file, or one named like a {} dump)",
            kind.name(),
            kind.name()
        ))),
    }
}

/// Bytes the scratch file system needs: the restored snapshot, and for
/// PostgreSQL the loaded database (about twice the dump, indexes included)
/// plus a fresh cluster.
fn space_needed(snapshot: &Snapshot, kind: DrillKind) -> u64 {
    let bytes = snapshot.summary.total_bytes_processed;
    match kind {
        DrillKind::Postgres => bytes.saturating_mul(3).saturating_add(64 << 20),
        _ => bytes,
    }
}

/// Runs one drill of snapshot `id` and stores its record (under `lock`).
pub fn drill(
    repo: &mut Repository,
    lock: &LockGuard,
    id: SnapshotId,
    snapshot: &Snapshot,
    options: &DrillOptions,
) -> Result<DrillOutcome> {
    let kind = options.kind.unwrap_or_else(|| detect_kind(snapshot));
    let source = source_of(snapshot);
    let parent = options
        .scratch_parent
        .clone()
        .unwrap_or_else(std::env::temp_dir);
    let swept = scratch::sweep(&parent);
    scratch::check_space(
        &parent,
        space_needed(snapshot, kind),
        &format!("a {} drill of snapshot {}", kind.name(), id.short()),
    )?;
    let user = match kind {
        DrillKind::Postgres => {
            postgres::bin_dir()?;
            postgres::server_user()?
        }
        _ => None,
    };
    let started = chrono::Local::now().fixed_offset();
    let mut scratch = scratch::Scratch::create(&parent, user.is_some())?;
    let target = scratch.restore_dir();
    let clock = Instant::now();
    let untrusted = RestoreOptions {
        no_same_owner: true,
        no_special: true,
    };
    let mut bytes = 0;
    let mut failure = match restore(repo, snapshot, "", &target, &untrusted) {
        Err(e) if e.kind() == ErrorKind::Interrupted => return Err(e),
        Err(e) => Some(format!("restore failed: {e}")),
        Ok(o) => {
            bytes = o.bytes;
            o.problems
                .first()
                .map(|p| format!("restore failed ({} problem(s)): {p}", o.problems.len()))
        }
    };
    let restore_seconds = clock.elapsed().as_secs_f64();
    let clock = Instant::now();
    let mut figures = Vec::new();
    if failure.is_none() {
        let verified = verify(repo, snapshot, kind, &scratch, user, options)?;
        figures = verified.figures;
        failure = verified.failure;
    }
    let verify_seconds = clock.elapsed().as_secs_f64();
    if let (None, Some(max)) = (&failure, options.max_shrink_percent) {
        let records = repo.drill_records()?;
        let previous = records
            .iter()
            .rev()
            .find(|(_, r)| r.source == source && r.passed());
        if let Some((_, previous)) = previous {
            failure = shrinkage(previous, &figures, max);
        }
    }
    let record = DrillRecord {
        version: DRILL_RECORD_VERSION,
        snapshot: id,
        source: bounded_text(&source),
        kind,
        started,
        restore_seconds,
        verify_seconds,
        bytes,
        figures,
        verdict: if failure.is_none() {
            Verdict::Passed
        } else {
            Verdict::Failed
        },
        failure: failure.map(|f| bounded_text(&f.replace('\n', " "))),
    };
    let record_id = repo.save_drill_record(&record, lock)?;
    let kept = options.keep.then(|| scratch.keep());
    Ok(DrillOutcome {
        id: record_id,
        record,
        kept,
        swept,
    })
}

fn verify(
    repo: &Repository,
    snapshot: &Snapshot,
    kind: DrillKind,
    scratch: &scratch::Scratch,
    user: Option<(u32, u32)>,
    options: &DrillOptions,
) -> Result<Verified> {
    let ctx = repo.context();
    let root = scratch.restore_dir();
    match kind {
        DrillKind::Files => {
            let mut v = files::verify_files(repo, snapshot, &root, &options.require)?;
            if v.failure.is_none() {
                let env = [("CAIRN_DRILL_DIR", root.as_os_str())];
                v.failure = child::verify_commands(ctx, &options.verify_commands, &env)?;
            }
            Ok(v)
        }
        DrillKind::Tar | DrillKind::Postgres | DrillKind::Redis => {
            let path = root.join(dump_path(repo, snapshot, kind)?.trim_start_matches('/'));
            match kind {
                DrillKind::Tar => {
                    let mut v = files::verify_tar(ctx, &path, &options.require)?;
                    if v.failure.is_none() {
                        let env = [("CAIRN_DRILL_DIR", path.as_os_str())];
                        v.failure = child::verify_commands(ctx, &options.verify_commands, &env)?;
                    }
                    Ok(v)
                }
                DrillKind::Postgres => {
                    postgres::verify(ctx, &scratch.dir, &path, user, &options.verify_commands)
                }
                _ => redis::verify(ctx, &scratch.dir, &path, &options.verify_commands),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kinds_are_detected_from_the_command_then_the_name() {
        let mut s: Snapshot = serde_json::from_value(serde_json::json!({
            "version": 2, "time": "2026-12-01T03:00:00Z",
            "tree": "00".repeat(32), "paths": ["/app.sql"], "hostname": "db1",
            "username": "root", "uid": 0, "gid": 0, "program_version": "x",
            "source": "stdin", "summary": {
                "backup_start": "", "backup_end": "", "duration_seconds": 0.0,
                "files_new": 0, "files_changed": 0, "files_unmodified": 0,
                "files_unreadable": 0, "dirs_new": 0, "dirs_changed": 0,
                "dirs_unmodified": 0, "data_blobs": 0, "tree_blobs": 0,
                "data_added": 0, "data_added_packed": 0,
                "total_files_processed": 1, "total_bytes_processed": 10 }
        }))
        .unwrap();
        assert_eq!(detect_kind(&s), DrillKind::Postgres);
        assert_eq!(source_of(&s), "db1:/app.sql");
        s.paths = vec!["/dump.rdb".into()];
        assert_eq!(detect_kind(&s), DrillKind::Redis);
        s.paths = vec!["/etc.tar.zst".into()];
        assert_eq!(detect_kind(&s), DrillKind::Tar);
        s.command = Some(vec!["/usr/bin/pg_dump".into(), "-Fc".into()]);
        assert_eq!(detect_kind(&s), DrillKind::Postgres);
        s.command = None;
        s.paths = vec!["/etc".into(), "/home".into()];
        assert_eq!(detect_kind(&s), DrillKind::Files);
    }
}
