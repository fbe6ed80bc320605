//! The archiver: turns directory trees and byte streams into blobs, trees
//! and a snapshot. Files unchanged since the parent snapshot (same size,
//! mtime, ctime and inode) are not read again; streams are always read in
//! full and never have a parent.

use crate::chunker::Chunker;
use crate::error::{Error, ErrorKind, Result};
use crate::id::{BlobId, SnapshotId};
use crate::metadata;
use crate::pack::{self, BlobKind};
use crate::repository::{BlobWriter, Repository};
use crate::snapshot::{Snapshot, SnapshotFilter, SourceKind, Summary, SNAPSHOT_VERSION};
use crate::tree::{Node, NodeKind, Tree};
use rayon::prelude::*;
use std::collections::BTreeMap;
use std::ffi::OsStr;
use std::io::Read;
use std::os::unix::ffi::OsStrExt;
use std::path::{Component, Path, PathBuf};
use std::time::Instant;

/// Bytes read from a source before they are chunked; at least 8 × the
/// largest chunk so most cuts are found inside one buffer.
const READ_BUFFER_MIN: usize = 32 * 1024 * 1024;

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
    pub exclude: std::sync::Arc<crate::exclude::Excluder>,
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

/// Why storing a stream stopped: the source (skip the file) or the
/// repository (fatal).
pub(crate) enum StreamError {
    Source(std::io::Error),
    Repository(Error),
}

impl From<Error> for StreamError {
    fn from(e: Error) -> Self {
        StreamError::Repository(e)
    }
}

pub(crate) struct Archiver<'r> {
    pub(crate) writer: BlobWriter<'r>,
    chunker: Chunker,
    zstd_level: i32,
    buffer: Vec<u8>,
    pub(crate) summary: Summary,
    pub(crate) unreadable: Vec<Unreadable>,
    exclude: std::sync::Arc<crate::exclude::Excluder>,
    /// Device of the directory being listed (for --one-file-system).
    dir_device: Option<u64>,
}

impl<'r> Archiver<'r> {
    pub(crate) fn new(repo: &'r Repository) -> Result<Archiver<'r>> {
        let chunker = repo.chunker()?;
        let size = READ_BUFFER_MIN.max(8 * chunker.params().size_max as usize);
        Ok(Archiver {
            writer: repo.blob_writer(),
            zstd_level: repo.config().compression.level,
            chunker,
            buffer: vec![0u8; size],
            summary: Summary::default(),
            unreadable: Vec::new(),
            exclude: Default::default(),
            dir_device: None,
        })
    }

    /// Chunks, dedups, seals and stores everything `source` yields.
    pub(crate) fn store_stream(
        &mut self,
        source: &mut dyn Read,
    ) -> Result<(Vec<BlobId>, u64), StreamError> {
        let mut content = Vec::new();
        let mut filled = 0usize;
        let mut total = 0u64;
        loop {
            crate::check_interrupt()?;
            let mut at_end = false;
            while filled < self.buffer.len() {
                match source.read(&mut self.buffer[filled..]) {
                    Ok(0) => {
                        at_end = true;
                        break;
                    }
                    Ok(n) => filled += n,
                    Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {
                        crate::check_interrupt()?
                    }
                    Err(e) => return Err(StreamError::Source(e)),
                }
            }
            let lengths = self.chunker.cut(&self.buffer[..filled], at_end);
            let used = self.store_chunks(&lengths, &mut content)?;
            total += used as u64;
            self.buffer.copy_within(used..filled, 0);
            filled -= used;
            if at_end {
                debug_assert_eq!(filled, 0);
                self.summary.total_bytes_processed += total;
                return Ok((content, total));
            }
        }
    }

    /// Stores the chunks at the start of the buffer: hashing and sealing run
    /// in parallel, dedup decisions and pack writes in order.
    fn store_chunks(&mut self, lengths: &[usize], content: &mut Vec<BlobId>) -> Result<usize> {
        let mut spans = Vec::with_capacity(lengths.len());
        let mut at = 0;
        for &length in lengths {
            spans.push(at..at + length);
            at += length;
        }
        let buffer = &self.buffer;
        let key = self.writer.repository().key();
        let ids: Vec<BlobId> = spans
            .par_iter()
            .map(|s| key.blob_id(&buffer[s.clone()]))
            .collect();
        let mut new = Vec::new();
        for (span, id) in spans.iter().zip(&ids) {
            if self.writer.reserve(BlobKind::Data, *id)? {
                new.push((span.clone(), *id));
            }
        }
        let level = self.zstd_level;
        let sealed: Vec<_> = new
            .par_iter()
            .map(|(span, id)| {
                pack::seal_blob(key, BlobKind::Data, *id, &buffer[span.clone()], level)
            })
            .collect();
        for blob in sealed {
            self.writer.add(blob)?;
        }
        content.extend_from_slice(&ids);
        Ok(at)
    }

    fn skip(&mut self, path: &Path, reason: impl std::fmt::Display) {
        self.summary.files_unreadable += 1;
        self.unreadable.push(Unreadable {
            path: path.to_path_buf(),
            reason: reason.to_string(),
        });
    }

    /// Backs up one file-system object. Returns None if it was skipped.
    fn save_path(
        &mut self,
        path: &Path,
        name: &OsStr,
        parent: Option<&Node>,
    ) -> Result<Option<Node>> {
        crate::check_interrupt()?;
        let meta = match std::fs::symlink_metadata(path) {
            Ok(m) => m,
            Err(e) => {
                self.skip(path, e);
                return Ok(None);
            }
        };
        let mut node = metadata::node_from_metadata(name, path, &meta);
        let parent = parent.filter(|p| p.kind == node.kind);
        if self.exclude.one_file_system
            && node.kind == NodeKind::Dir
            && self.dir_device.is_some_and(|d| d != node.device_id)
        {
            // A mount point: kept as an empty directory, as restic does.
            node.subtree = Some(self.writer.save_tree(&Tree::new(Vec::new()))?);
            return Ok(Some(node));
        }
        match node.kind {
            NodeKind::Dir => {
                let parent_tree = match parent.and_then(|p| p.subtree) {
                    Some(id) => self.writer.repository().load_tree(&id).ok(),
                    None => None,
                };
                let Some(subtree) = self.save_dir(path, parent_tree.as_ref())? else {
                    return Ok(None);
                };
                match parent.and_then(|p| p.subtree) {
                    None => self.summary.dirs_new += 1,
                    Some(old) if old == subtree => self.summary.dirs_unmodified += 1,
                    Some(_) => self.summary.dirs_changed += 1,
                }
                node.subtree = Some(subtree);
            }
            NodeKind::File => {
                self.summary.total_files_processed += 1;
                if let Some(p) = parent.filter(|p| self.unchanged(p, &node)) {
                    node.content = p.content.clone();
                    self.summary.files_unmodified += 1;
                    self.summary.total_bytes_processed += node.size;
                    return Ok(Some(node));
                }
                let mut file = match std::fs::File::open(path) {
                    Ok(f) => f,
                    Err(e) => {
                        self.skip(path, e);
                        return Ok(None);
                    }
                };
                match self.store_stream(&mut file) {
                    Ok((content, size)) => {
                        node.content = content;
                        // The size we read is the truth (the file may grow
                        // while we read it).
                        node.size = size;
                    }
                    Err(StreamError::Source(e)) => {
                        self.skip(path, e);
                        return Ok(None);
                    }
                    Err(StreamError::Repository(e)) => return Err(e),
                }
                if parent.is_some() {
                    self.summary.files_changed += 1;
                } else {
                    self.summary.files_new += 1;
                }
            }
            _ => {}
        }
        Ok(Some(node))
    }

    /// Same size, mtime, ctime and inode as in the parent, and all of its
    /// content still indexed.
    fn unchanged(&self, old: &Node, new: &Node) -> bool {
        old.size == new.size
            && old.mtime_ns == new.mtime_ns
            && old.ctime_ns == new.ctime_ns
            && old.inode == new.inode
            && old.content.iter().all(|id| {
                matches!(
                    self.writer.repository().locate(BlobKind::Data, id),
                    Ok(Some(_))
                )
            })
    }

    fn save_dir(&mut self, path: &Path, parent: Option<&Tree>) -> Result<Option<BlobId>> {
        if self.excluded_by_marker(path) {
            return Ok(None);
        }
        let entries = match std::fs::read_dir(path) {
            Ok(entries) => entries,
            Err(e) => {
                self.skip(path, e);
                return Ok(None);
            }
        };
        let mut names = Vec::new();
        for entry in entries {
            match entry {
                Ok(entry) => names.push(entry.file_name()),
                Err(e) => self.skip(path, e),
            }
        }
        names.sort_by(|a, b| a.as_bytes().cmp(b.as_bytes()));
        let mut nodes = Vec::with_capacity(names.len());
        let outer_device = self.dir_device;
        if self.exclude.one_file_system {
            self.dir_device = std::fs::symlink_metadata(path)
                .ok()
                .map(|m| std::os::unix::fs::MetadataExt::dev(&m));
        }
        for name in names {
            let child = path.join(&name);
            if self.excluded_by_pattern(&child) {
                continue;
            }
            let parent_node = parent.and_then(|t| t.find(name.as_bytes()));
            if let Some(node) = self.save_path(&child, &name, parent_node)? {
                nodes.push(node);
            }
        }
        self.dir_device = outer_device;
        Ok(Some(self.writer.save_tree(&Tree::new(nodes))?))
    }

    /// `--exclude` patterns (a stat only when a rule is for directories).
    fn excluded_by_pattern(&self, path: &Path) -> bool {
        if !self.exclude.has_patterns() {
            return false;
        }
        let is_dir = std::fs::symlink_metadata(path).is_ok_and(|m| m.is_dir());
        self.exclude.excludes(path, is_dir)
    }

    /// `--exclude-if-present` and `--exclude-caches`.
    fn excluded_by_marker(&self, dir: &Path) -> bool {
        if self.exclude.markers.iter().any(|m| dir.join(m).exists()) {
            return true;
        }
        if self.exclude.exclude_caches {
            let mut head = [0u8; 43];
            if let Ok(mut f) = std::fs::File::open(dir.join("CACHEDIR.TAG")) {
                use std::io::Read;
                if f.read_exact(&mut head).is_ok() {
                    return crate::exclude::Excluder::is_cachedir_tag(&head);
                }
            }
        }
        false
    }

    /// Saves the synthetic directories leading to the backed-up paths
    /// (`/var/lib/x` is stored as var → lib → x, as restic does).
    fn save_virtual(
        &mut self,
        at: &Path,
        children: &BTreeMap<Vec<u8>, Target>,
        parent: Option<&Tree>,
    ) -> Result<BlobId> {
        let mut nodes = Vec::new();
        for (name, target) in children {
            let path = at.join(OsStr::from_bytes(name));
            let parent_node = parent.and_then(|t| t.find(name));
            match target {
                Target::Real => {
                    if let Some(node) =
                        self.save_path(&path, OsStr::from_bytes(name), parent_node)?
                    {
                        nodes.push(node);
                    }
                }
                Target::Virtual(grandchildren) => {
                    // A parent of a named path is recorded as the directory
                    // it leads to, even if it is a symlink (/var/run → /run).
                    let meta = std::fs::metadata(&path)
                        .map_err(|e| Error::io(format!("cannot read {}", path.display()), e))?;
                    let mut node =
                        metadata::node_from_metadata(OsStr::from_bytes(name), &path, &meta);
                    node.kind = NodeKind::Dir;
                    node.link_target = None;
                    let parent_tree = match parent_node.and_then(|p| p.subtree) {
                        Some(id) => self.writer.repository().load_tree(&id).ok(),
                        None => None,
                    };
                    node.subtree =
                        Some(self.save_virtual(&path, grandchildren, parent_tree.as_ref())?);
                    nodes.push(node);
                }
            }
        }
        self.writer.save_tree(&Tree::new(nodes))
    }
}

enum Target {
    Real,
    Virtual(BTreeMap<Vec<u8>, Target>),
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

fn insert_target(root: &mut BTreeMap<Vec<u8>, Target>, path: &Path) {
    let parts: Vec<&[u8]> = path
        .components()
        .filter_map(|c| match c {
            Component::Normal(n) => Some(n.as_bytes()),
            _ => None,
        })
        .collect();
    let mut level = root;
    for (i, part) in parts.iter().enumerate() {
        let last = i + 1 == parts.len();
        let entry = level.entry(part.to_vec()).or_insert_with(|| {
            if last {
                Target::Real
            } else {
                Target::Virtual(BTreeMap::new())
            }
        });
        if last {
            // The named path is stored whole, whatever was below it.
            *entry = Target::Real;
            return;
        }
        match entry {
            Target::Real => return, // an ancestor is already backed up whole
            Target::Virtual(children) => level = children,
        }
    }
}

pub(crate) fn new_snapshot(
    options: &BackupOptions,
    paths: Vec<String>,
    source: SourceKind,
) -> Snapshot {
    let (uid, gid) = metadata::current_ids();
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
        hostname: options.host.clone().unwrap_or_else(metadata::hostname),
        username: metadata::username(),
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
    mut archiver: Archiver<'_>,
    repo: &Repository,
    mut snapshot: Snapshot,
    tree: BlobId,
    started: Instant,
) -> Result<BackupOutcome> {
    crate::check_interrupt()?;
    let stats = archiver.writer.finish()?;
    let mut summary = std::mem::take(&mut archiver.summary);
    summary.data_blobs = stats.data_blobs;
    summary.tree_blobs = stats.tree_blobs;
    summary.data_added = stats.bytes_raw;
    summary.data_added_packed = stats.bytes_packed;
    summary.backup_start = snapshot.time.to_rfc3339();
    summary.backup_end = chrono::Local::now().fixed_offset().to_rfc3339();
    summary.duration_seconds = started.elapsed().as_secs_f64();
    snapshot.summary = summary;
    snapshot.tree = tree;
    snapshot.version = snapshot.required_version();
    crate::check_interrupt()?;
    crate::failpoint("before-snapshot");
    let id = repo.save_snapshot(&snapshot)?;
    Ok(BackupOutcome {
        id,
        snapshot,
        unreadable: archiver.unreadable,
    })
}

/// Backs up directory trees (or single files). Needs `load_index` first.
pub fn backup_paths(
    repo: &mut Repository,
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
        std::fs::symlink_metadata(&abs)
            .map_err(|e| Error::io(format!("cannot back up {}", abs.display()), e))
            .map_err(|e| {
                if e.kind() == ErrorKind::NotFound {
                    Error::invalid(e.to_string())
                } else {
                    e
                }
            })?;
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
    let parent = match &options.parent {
        ParentChoice::None => None,
        ParentChoice::Id(sel) => Some(repo.find_snapshot(sel, &SnapshotFilter::default())?),
        ParentChoice::Latest => {
            let filter = SnapshotFilter {
                hosts: vec![snapshot.hostname.clone()],
                ..Default::default()
            };
            repo.snapshots(&filter)?
                .into_iter()
                .rfind(|(_, s)| s.paths == names && s.source == SourceKind::Directory)
        }
    };
    snapshot.parent = parent.as_ref().map(|(id, _)| *id);
    let parent_tree = match &parent {
        Some((_, s)) => repo.load_tree(&s.tree).ok(),
        None => None,
    };
    let repo_ref: &Repository = repo;
    let mut archiver = Archiver::new(repo_ref)?;
    archiver.exclude = options.exclude.clone();
    let tree = archiver.save_virtual(Path::new("/"), &targets, parent_tree.as_ref())?;
    finish(archiver, repo_ref, snapshot, tree, started)
}

/// Backs up one byte stream as the file `filename` at the snapshot's root.
/// Always reads every byte; never uses a parent.
pub fn backup_stream(
    repo: &mut Repository,
    source: &mut dyn Read,
    filename: &str,
    options: &BackupOptions,
) -> Result<BackupOutcome> {
    backup_stream_checked(repo, source, filename, options, None, &mut || Ok(()))
}

/// `backup_stream` for a stream produced by `command`: `source_ok` runs
/// once the stream has ended and before anything is finished, so an error
/// from it (the command failed) leaves no snapshot.
pub(crate) fn backup_stream_checked(
    repo: &mut Repository,
    source: &mut dyn Read,
    filename: &str,
    options: &BackupOptions,
    command: Option<Vec<String>>,
    source_ok: &mut dyn FnMut() -> Result<()>,
) -> Result<BackupOutcome> {
    let started = Instant::now();
    if !crate::tree::is_valid_name(filename.as_bytes()) {
        return Err(Error::invalid(format!(
            "invalid --stdin-filename {filename:?}: one path component, no '/'"
        )));
    }
    let mut snapshot = new_snapshot(options, vec![format!("/{filename}")], SourceKind::Stdin);
    snapshot.command = command;
    let repo_ref: &Repository = repo;
    let mut archiver = Archiver::new(repo_ref)?;
    let (content, size) = match archiver.store_stream(source) {
        Ok(done) => done,
        Err(StreamError::Source(e)) => {
            let from = match &snapshot.command {
                Some(argv) => format!("the output of {}", argv[0]),
                None => "standard input".into(),
            };
            return Err(Error::io(format!("cannot read {from}"), e));
        }
        Err(StreamError::Repository(e)) => return Err(e),
    };
    source_ok()?;
    let (uid, gid) = metadata::current_ids();
    let mut node = Node::new(filename.as_bytes(), NodeKind::File);
    node.mode = 0o644;
    node.uid = uid;
    node.gid = gid;
    node.user = metadata::user_name(uid);
    node.group = metadata::group_name(gid);
    let now_ns = snapshot.time.timestamp_nanos_opt().unwrap_or(0);
    node.mtime_ns = now_ns;
    node.ctime_ns = now_ns;
    node.size = size;
    node.content = content;
    archiver.summary.files_new = 1;
    archiver.summary.total_files_processed = 1;
    let tree = archiver.writer.save_tree(&Tree::new(vec![node]))?;
    finish(archiver, repo_ref, snapshot, tree, started)
}
