//! The archiver: turns directory trees and byte streams into blobs, trees
//! and a snapshot. Files unchanged since the parent snapshot (same size,
//! mtime, ctime and inode) are not read again; streams are always read in
//! full and never have a parent.
//!
//! A backup is a two-stage pipeline. The calling thread walks the source,
//! reads, chunks (`Chunker::cut_parallel`, on all cores) and hashes (it
//! needs the blob ids at once to build the trees) and queues the bytes as
//! `Job`s; for a directory tree, a walk thread (`ahead`) lists it ahead
//! and reads its entries on all cores. A store thread owns the
//! `BlobWriter`: it takes every queued job up to `GROUP_BYTES_MAX` at once,
//! makes the dedup decisions in input order, seals the new blobs in
//! parallel (so several small files are compressed at the same time) and
//! appends them to packs while the next group is sealed, so its pack
//! writes overlap sealing as well as the reading and hashing of the next
//! bytes. A byte budget (`IN_FLIGHT_MAX`) bounds what is
//! queued, so memory does not grow with the source and a slow disk slows
//! the reader down. The writer is finished (packs, then index files) only
//! after both stages succeeded, and only then is the snapshot written; a
//! failure in either stage drops the writer, which deletes its unindexed
//! packs.

use crate::engine::repository::{Repository, Written};
use crate::error::{Error, Result};
use crate::format::id::{BlobId, SnapshotId};
use crate::format::snapshot::{Snapshot, SnapshotFilter, SourceKind, Summary, SNAPSHOT_VERSION};
use crate::storage::lock::LockGuard;
use std::collections::BTreeMap;
use std::io::Read;
use std::path::{Component, Path, PathBuf};
use std::time::Instant;

mod ahead;
mod file;
mod pipeline;
mod stream;
mod walk;

pub(crate) use file::StreamError;
pub(crate) use pipeline::{archive, Archived, Archiver, Spares};
pub(crate) use stream::backup_stream_checked;
use walk::insert_target;

#[derive(Debug, Clone, Default)]
pub struct BackupOptions {
    pub tags: Vec<String>,
    /// Overrides the hostname recorded in the snapshot.
    pub host: Option<String>,
    pub parent: ParentChoice,
    /// The snapshot's time instead of now (`backup --time`), kept with its
    /// offset. Retention policies bucket snapshots by this local time.
    pub time: Option<chrono::DateTime<chrono::FixedOffset>>,
    /// What a directory backup leaves out.
    pub exclude: std::sync::Arc<crate::engine::exclude::Excluder>,
}

/// Parses a `backup --time` value: RFC 3339 (its offset is kept), or
/// restic's `YYYY-MM-DD HH:MM:SS` in this machine's time zone (the earlier
/// of two readings when a DST change repeats the hour).
pub fn parse_backup_time(s: &str) -> Result<chrono::DateTime<chrono::FixedOffset>> {
    use chrono::TimeZone;
    let s = s.trim();
    if let Ok(t) = chrono::DateTime::parse_from_rfc3339(s) {
        return Ok(t);
    }
    let naive = chrono::NaiveDateTime::parse_from_str(s, "%Y-%m-%d %H:%M:%S").map_err(|_| {
        Error::invalid(format!(
            "invalid time {s:?}: use \"YYYY-MM-DD HH:MM:SS\" (local time) or RFC 3339"
        ))
    })?;
    chrono::Local
        .from_local_datetime(&naive)
        .earliest()
        .map(|t| t.fixed_offset())
        .ok_or_else(|| Error::invalid(format!("time {s:?} does not exist in the local time zone")))
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub enum ParentChoice {
    /// The latest snapshot of the same host and paths.
    #[default]
    Latest,
    /// Read every file again.
    None,
    Id(String),
}

/// A source file that could not be read; the snapshot lacks it.
#[derive(Debug, Clone)]
pub struct Unreadable {
    pub path: PathBuf,
    pub reason: String,
}

#[derive(Debug)]
pub struct BackupOutcome {
    pub id: SnapshotId,
    pub snapshot: Snapshot,
    pub unreadable: Vec<Unreadable>,
}

/// Absolute, with `.` and `..` resolved lexically (symlinks are kept, as in
/// restic: the path is what the user named).
fn absolute(path: &Path) -> Result<PathBuf> {
    let abs = std::path::absolute(path)
        .map_err(|e| Error::io(format!("cannot resolve {}", path.display()), e))?;
    let mut out = PathBuf::from("/");
    for c in abs.components() {
        match c {
            Component::ParentDir => {
                out.pop();
            }
            Component::Normal(n) => out.push(n),
            _ => {}
        }
    }
    Ok(out)
}

/// Saves a snapshot whose tree is `levels` directories named `d`, each in
/// the one before, the innermost empty: the deep trees every walk (check,
/// repair, copy) must stop at their limit instead of overflowing a stack.
#[cfg(test)]
pub(crate) fn save_nested_snapshot(
    repo: &Repository,
    lock: &LockGuard,
    levels: usize,
) -> SnapshotId {
    use crate::format::tree::{Node, NodeKind, Tree};
    let mut writer = repo.blob_writer(lock);
    let mut id = writer.save_tree(&Tree::new(Vec::new())).unwrap();
    for _ in 1..levels {
        let mut dir = Node::new(b"d", NodeKind::Dir);
        dir.subtree = Some(id);
        id = writer.save_tree(&Tree::new(vec![dir])).unwrap();
    }
    let written = writer.finish().unwrap();
    let mut snapshot = new_snapshot(
        &BackupOptions::default(),
        vec!["/".into()],
        SourceKind::Directory,
    );
    snapshot.tree = id;
    repo.save_snapshot(&snapshot, &written).unwrap()
}

pub(crate) fn new_snapshot(
    options: &BackupOptions,
    paths: Vec<String>,
    source: SourceKind,
) -> Snapshot {
    let (uid, gid) = crate::sys::current_ids();
    let mut tags = options.tags.clone();
    tags.sort();
    tags.dedup();
    Snapshot {
        version: SNAPSHOT_VERSION,
        time: options
            .time
            .unwrap_or_else(|| chrono::Local::now().fixed_offset()),
        parent: None,
        original: None,
        tree: BlobId::default(),
        paths,
        hostname: options.host.clone().unwrap_or_else(crate::sys::hostname),
        username: crate::sys::username(),
        uid,
        gid,
        tags,
        program_version: format!("cairn {}", env!("CARGO_PKG_VERSION")),
        source,
        command: None,
        summary: Summary::default(),
    }
}

pub(crate) fn finish(
    repo: &Repository,
    archived: Archived,
    written: Written<'_>,
    mut snapshot: Snapshot,
    started: Instant,
) -> Result<BackupOutcome> {
    let stats = &written.stats;
    let mut summary = archived.summary;
    summary.data_blobs = stats.data_blobs;
    summary.tree_blobs = stats.tree_blobs;
    summary.data_added = stats.bytes_raw;
    summary.data_added_packed = stats.bytes_packed;
    summary.backup_start = snapshot.time.to_rfc3339();
    summary.backup_end = chrono::Local::now().fixed_offset().to_rfc3339();
    summary.duration_seconds = started.elapsed().as_secs_f64();
    snapshot.summary = summary;
    snapshot.tree = archived.tree;
    snapshot.version = snapshot.required_version();
    repo.context().check_interrupt()?;
    crate::failpoint::hit!("before-snapshot");
    let id = repo.save_snapshot(&snapshot, &written)?;
    // Every data blob it references is indexed now: stored by this backup,
    // found by dedup, or checked (or covered by the parent's mark). A failure
    // to record that only costs the next backup its lookups.
    repo.mark_snapshot_blobs_indexed(&id);
    Ok(BackupOutcome {
        id,
        snapshot,
        unreadable: archived.unreadable,
    })
}

/// The parent of a new snapshot: the one `options.parent` names, or the
/// latest of the same host, paths and source kind.
fn find_parent(
    repo: &mut Repository,
    options: &BackupOptions,
    snapshot: &Snapshot,
) -> Result<Option<(SnapshotId, Snapshot)>> {
    Ok(match &options.parent {
        ParentChoice::None => None,
        ParentChoice::Id(sel) => Some(repo.find_snapshot(sel, &SnapshotFilter::default())?),
        ParentChoice::Latest => {
            let filter = SnapshotFilter {
                hosts: vec![snapshot.hostname.clone()],
                ..Default::default()
            };
            repo.snapshots(&filter)?
                .into_iter()
                .rfind(|(_, s)| s.paths == snapshot.paths && s.source == snapshot.source)
        }
    })
}

/// Backs up directory trees (or single files). Needs `load_index` first.
pub fn backup_paths(
    repo: &mut Repository,
    lock: &LockGuard,
    paths: &[PathBuf],
    options: &BackupOptions,
) -> Result<BackupOutcome> {
    let started = Instant::now();
    if paths.is_empty() {
        return Err(Error::invalid("nothing to back up: give at least one path"));
    }
    let mut targets = BTreeMap::new();
    let mut names = Vec::new();
    for path in paths {
        let abs = absolute(path)?;
        // A path that does not exist fails as `FileNotFound`.
        std::fs::symlink_metadata(&abs)
            .map_err(|e| Error::io(format!("cannot back up {}", abs.display()), e))?;
        if abs == Path::new("/") {
            return Err(Error::invalid(
                "backing up / as a whole is not supported yet; name its directories",
            ));
        }
        names.push(abs.to_string_lossy().into_owned());
        insert_target(&mut targets, &abs);
    }
    names.sort();
    names.dedup();
    let mut snapshot = new_snapshot(options, names.clone(), SourceKind::Directory);
    let parent = find_parent(repo, options, &snapshot)?;
    snapshot.parent = parent.as_ref().map(|(id, _)| *id);
    let parent_tree = match &parent {
        Some((_, s)) => repo.load_tree(&s.tree).ok(),
        None => None,
    };
    let repo_ref: &Repository = repo;
    let parent_blobs_indexed = parent
        .as_ref()
        .is_some_and(|(id, _)| repo_ref.snapshot_blobs_indexed(id));
    let (archived, written) = archive(repo_ref, lock, Spares::One, |archiver| {
        archiver.exclude = options.exclude.clone();
        archiver.parent_blobs_indexed = parent_blobs_indexed;
        archiver.save_virtual(Path::new("/"), &targets, parent_tree.as_ref())
    })?;
    finish(repo_ref, archived, written, snapshot, started)
}

/// Backs up one byte stream as the file `filename` at the snapshot's root.
/// Always reads and hashes every byte. The parent (the latest stream of the
/// same name and host, unless `options.parent` says otherwise) only guides
/// chunking (`Chunker::cut_guided`). The stream is read a few
/// MiB ahead on a thread of its own. If the backup fails before the end of
/// the stream, that thread is left to finish its current `read` and then
/// stops (it may outlive this call while blocked on an open pipe).
pub fn backup_stream(
    repo: &mut Repository,
    lock: &LockGuard,
    source: impl Read + Send + 'static,
    filename: &str,
    options: &BackupOptions,
) -> Result<BackupOutcome> {
    backup_stream_checked(repo, lock, source, filename, options, None, &mut || Ok(()))
}
