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

use crate::context::Context;
use crate::engine::metadata;
use crate::engine::repository::{BlobWriter, Repository, Written};
use crate::error::{Error, ErrorKind, Result};
use crate::format::chunker::{Chunker, Guide};
use crate::format::id::{BlobId, SnapshotId};
use crate::format::pack::{self, BlobKind, SealedBlob};
use crate::format::snapshot::{Snapshot, SnapshotFilter, SourceKind, Summary, SNAPSHOT_VERSION};
use crate::format::tree::{Node, NodeKind, Tree, Xattr};
use crate::storage::lock::LockGuard;
use crossbeam_channel::{Receiver, RecvTimeoutError, Sender};
use rayon::prelude::*;
use std::collections::BTreeMap;
use std::ffi::OsStr;
use std::io::Read;
use std::os::fd::{AsRawFd, BorrowedFd, FromRawFd};
use std::os::unix::ffi::OsStrExt;
use std::path::{Component, Path, PathBuf};
use std::sync::atomic::AtomicUsize;
use std::sync::{Arc, Condvar, Mutex};
use std::time::Instant;

mod ahead;

/// Bytes read from a source before they are chunked; at least 8 × the
/// largest chunk so most cuts are found inside one buffer. The pipeline
/// keeps several buffers busy, so one need not be large.
const READ_BUFFER_MIN: usize = 8 * 1024 * 1024;

/// Read bytes queued for, or being sealed or packed by, the store thread.
/// This bounds the pipeline's memory (with one read buffer, the walk
/// ahead's allowance and the open packs) and applies back-pressure to the
/// reader. Three groups: the store thread seals one while it packs the
/// one before, and the reader queues the next; a whole read buffer is
/// charged in full, so it is sealed while the reader fills the next.
const IN_FLIGHT_MAX: usize = 3 * GROUP_BYTES_MAX;

/// The store thread seals up to this many queued bytes in one parallel
/// batch: enough to keep every core busy on a run of small files.
const GROUP_BYTES_MAX: usize = 4 * 1024 * 1024;

/// A read buffer smaller than this fraction of a full one is copied out
/// rather than handed over whole (small files would otherwise pin 16 MiB each).
const HAND_OVER_FRACTION: usize = 4;

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

/// Work for the store thread.
enum Job {
    /// Chunks of a source: `lengths` and `ids` describe consecutive chunks
    /// from `offset` in `bytes` (which may be a whole, longer read buffer).
    Data {
        bytes: Vec<u8>,
        offset: usize,
        lengths: Vec<usize>,
        ids: Vec<BlobId>,
    },
    /// An encoded tree and its id.
    Tree { id: BlobId, bytes: Vec<u8> },
}

impl Job {
    /// Budget bytes this job holds while queued (capped so one oversized
    /// job cannot wait forever).
    fn charge(&self) -> usize {
        let len = match self {
            Job::Data { bytes, .. } => bytes.len(),
            Job::Tree { bytes, .. } => bytes.len(),
        };
        len.min(IN_FLIGHT_MAX)
    }
}

/// A counting byte budget between the stages. `close` wakes a waiting
/// producer when the other side has stopped, so neither can block forever.
struct Budget {
    state: Mutex<BudgetState>,
    changed: Condvar,
}

struct BudgetState {
    used: usize,
    closed: bool,
}

impl Budget {
    fn new() -> Budget {
        Budget {
            state: Mutex::new(BudgetState {
                used: 0,
                closed: false,
            }),
            changed: Condvar::new(),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, BudgetState> {
        // A poisoned lock means the other stage panicked; the scope
        // re-raises that panic, so the state itself is still usable.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Waits until `n` more bytes fit. False if the budget was closed.
    fn acquire(&self, n: usize) -> bool {
        let mut state = self.lock();
        while !state.closed && state.used > 0 && state.used + n > IN_FLIGHT_MAX {
            state = self.changed.wait(state).unwrap_or_else(|e| e.into_inner());
        }
        if state.closed {
            return false;
        }
        state.used += n;
        true
    }

    fn release(&self, n: usize) {
        let mut state = self.lock();
        state.used -= n.min(state.used);
        self.changed.notify_all();
    }

    fn close(&self) {
        self.lock().closed = true;
        self.changed.notify_all();
    }

    fn is_closed(&self) -> bool {
        self.lock().closed
    }
}

/// The error the reading stage sees when the store thread has stopped; the
/// store thread's own error replaces it.
fn store_stopped() -> Error {
    Error::new(ErrorKind::Interrupted, "the store thread stopped")
}

/// The store stage: dedup, seal and pack everything queued, in order.
/// Returns the writer, not yet finished, once the queue is closed and
/// empty; on error the writer is dropped, deleting its unindexed packs.
///
/// Two groups are in the stage at once: while the pool seals one group,
/// this thread appends the previous one to packs (the page-cache copy of
/// the pack writes is its largest cost), so sealing never waits for a
/// write, nor a write for sealing.
fn store_thread<'r>(
    mut writer: BlobWriter<'r>,
    jobs: Receiver<Job>,
    budget: &Budget,
    spare: Sender<Vec<u8>>,
    zstd_level: i32,
) -> Result<BlobWriter<'r>> {
    let key = writer.repository().key();
    let ctx = writer.repository().context().clone();
    // Closed however this returns, a panic included, so a reader waiting
    // for budget never waits forever.
    let _close = CloseOnDrop(budget);
    // A group sealed and not yet appended, and its jobs (which hold budget).
    let mut sealed: Option<(Vec<Job>, Vec<SealedBlob>)> = None;
    let result = (|| {
        loop {
            // Wait for more jobs only when nothing sealed is left to append.
            let first = if sealed.is_some() {
                jobs.try_recv().ok()
            } else {
                match jobs.recv() {
                    Ok(job) => Some(job),
                    Err(_) => return Ok(()),
                }
            };
            let Some(first) = first else {
                append_group(&mut writer, sealed.take(), budget, &spare)?;
                continue;
            };
            if budget.is_closed() {
                // The reading stage failed: nothing queued will be used.
                return Ok(());
            }
            ctx.check_interrupt()?;
            let mut bytes = first.charge();
            let mut group = vec![first];
            while bytes < GROUP_BYTES_MAX {
                match jobs.try_recv() {
                    Ok(job) => {
                        bytes += job.charge();
                        group.push(job);
                    }
                    Err(_) => break,
                }
            }
            let new = reserve_group(&mut writer, &group)?;
            let mut blobs = Vec::new();
            let previous = sealed.take();
            rayon::in_place_scope(|scope| {
                scope.spawn(|_| {
                    blobs = new
                        .par_iter()
                        .map(|(kind, id, bytes)| {
                            pack::seal_blob(key, *kind, *id, bytes, zstd_level)
                        })
                        .collect();
                });
                append_group(&mut writer, previous, budget, &spare)
            })?;
            sealed = Some((group, blobs));
        }
    })();
    let result = result.and_then(|()| append_group(&mut writer, sealed.take(), budget, &spare));
    result.map(|()| writer)
}

struct CloseOnDrop<'b>(&'b Budget);

impl Drop for CloseOnDrop<'_> {
    fn drop(&mut self) {
        self.0.close();
    }
}

/// The dedup decisions for a group, in input order: the blobs to seal.
fn reserve_group<'g>(
    writer: &mut BlobWriter<'_>,
    group: &'g [Job],
) -> Result<Vec<(BlobKind, BlobId, &'g [u8])>> {
    let mut new = Vec::new();
    for job in group {
        match job {
            Job::Data {
                bytes,
                offset,
                lengths,
                ids,
            } => {
                let mut at = *offset;
                for (&length, id) in lengths.iter().zip(ids) {
                    if writer.reserve(BlobKind::Data, *id)? {
                        new.push((BlobKind::Data, *id, &bytes[at..at + length]));
                    }
                    at += length;
                }
            }
            Job::Tree { id, bytes } => {
                if writer.reserve(BlobKind::Tree, *id)? {
                    new.push((BlobKind::Tree, *id, &bytes[..]));
                }
            }
        }
    }
    Ok(new)
}

/// Appends a sealed group to packs, then gives its jobs' budget back.
fn append_group(
    writer: &mut BlobWriter<'_>,
    sealed: Option<(Vec<Job>, Vec<SealedBlob>)>,
    budget: &Budget,
    spare: &Sender<Vec<u8>>,
) -> Result<()> {
    let Some((group, blobs)) = sealed else {
        return Ok(());
    };
    // Test hook: fail once packs exist, to prove they are cleaned up.
    if writer.stats.packs > 0 && crate::failpoint::is_set!("store-error") {
        return Err(Error::io(
            "injected store failure",
            std::io::Error::other("CAIRN_FAILPOINT=store-error"),
        ));
    }
    for blob in blobs {
        writer.add(blob)?;
    }
    for job in group {
        budget.release(job.charge());
        if let Job::Data { bytes, .. } = job {
            // Full read buffers go back to the reader, saving the page
            // faults of a fresh 16 MiB allocation.
            if bytes.len() >= READ_BUFFER_MIN {
                let _ = spare.try_send(bytes);
            }
        }
    }
    Ok(())
}

/// The walk thread's stack: enough for the deepest path Linux allows
/// (PATH_MAX, 4096 bytes, is at most 2048 levels).
const WALK_STACK_SIZE: usize = 16 * 1024 * 1024;

/// Files up to this size are read whole by the walk ahead's tasks, many at
/// once (within `ahead::AHEAD_BYTES_MAX`); larger ones are streamed through
/// the archiver's read buffer, one at a time.
const PREFETCH_FILE_MAX: u64 = 1024 * 1024;

/// An entry's node and what to do about its content; an error means the
/// entry cannot be read and is skipped.
type Prefetched = std::io::Result<(Node, FileContent)>;

enum FileContent {
    /// As in the parent snapshot: reuse its content.
    Unchanged,
    /// A small file, already read, chunked and hashed.
    Read(std::io::Result<SmallFile>),
    /// Not a file, or a large one: read through `store_stream`.
    Stream,
}

struct SmallFile {
    bytes: Vec<u8>,
    lengths: Vec<usize>,
    ids: Vec<BlobId>,
    /// Its share of the walk ahead's allowance, if it was read ahead.
    _held: Option<ahead::Held>,
}

/// Opens a file the stat said is a regular file, without blocking or
/// following a link if it has been replaced since (by a FIFO, whose open
/// would block a pool thread or the archiver; by a symlink).
fn open_regular(path: &Path) -> std::io::Result<std::fs::File> {
    open_regular_in(None, path, OsStr::new(""))
}

/// `open_regular` of `name` in the open directory `dir` when there is one
/// (one path component to look up), else of `path`.
fn open_regular_in(
    dir: Option<BorrowedFd<'_>>,
    path: &Path,
    name: &OsStr,
) -> std::io::Result<std::fs::File> {
    use std::os::unix::fs::OpenOptionsExt;
    let flags = libc::O_NONBLOCK | libc::O_NOFOLLOW;
    let file = match dir {
        Some(dir) => {
            let name = std::ffi::CString::new(name.as_bytes())
                .map_err(|_| std::io::Error::from(std::io::ErrorKind::InvalidInput))?;
            // SAFETY: `dir` is an open descriptor and `name` NUL-terminated.
            let fd = unsafe {
                libc::openat(
                    dir.as_raw_fd(),
                    name.as_ptr(),
                    libc::O_RDONLY | libc::O_CLOEXEC | flags,
                )
            };
            if fd < 0 {
                return Err(std::io::Error::last_os_error());
            }
            // SAFETY: openat returned a new descriptor that nothing else owns.
            unsafe { std::fs::File::from_raw_fd(fd) }
        }
        None => std::fs::OpenOptions::new()
            .read(true)
            .custom_flags(flags)
            .open(path)?,
    };
    if !file.metadata()?.is_file() {
        return Err(std::io::Error::other(
            "no longer a regular file (changed during the backup)",
        ));
    }
    Ok(file)
}

/// What reading one entry needs; copied into the walk ahead's tasks.
#[derive(Clone, Copy)]
struct EntryReader<'a> {
    repo: &'a Repository,
    chunker: &'a Chunker,
    parent_blobs_indexed: bool,
    /// The walk ahead's allowance for small files read (None: no limit,
    /// for the one entry the archiver reads itself).
    held: Option<&'a Arc<AtomicUsize>>,
}

/// The reading stage: walks, reads, chunks and hashes, and queues the bytes.
/// `tarball` drives one too (through `archive`), storing member contents
/// with `store_stream` and its own trees with `save_tree`.
pub(crate) struct Archiver<'r, 'b> {
    pub(crate) repo: &'r Repository,
    jobs: Option<Sender<Job>>,
    budget: &'b Budget,
    spare: Receiver<Vec<u8>>,
    chunker: Chunker,
    buffer: Vec<u8>,
    pub(crate) summary: Summary,
    pub(crate) unreadable: Vec<Unreadable>,
    exclude: std::sync::Arc<crate::engine::exclude::Excluder>,
    /// Device of the directory being listed (for --one-file-system).
    dir_device: Option<u64>,
    /// The parent snapshot's data blobs are all known to be indexed (this
    /// cache marked it complete), so unchanged files need no lookups.
    parent_blobs_indexed: bool,
    /// Small-file bytes read ahead, shared by every walk (a directory may
    /// start a walk of its own while an outer one is ahead of it).
    held: Arc<AtomicUsize>,
}

/// The chunks of the parent's version of a stream or file, to confirm cut
/// points by hashing (`Chunker::cut_guided`). Blobs the index no longer
/// knows end the guide there. The lookups run on all cores.
pub(crate) fn guide_from(repo: &Repository, content: &[BlobId]) -> Option<Guide<BlobId>> {
    if content.is_empty() {
        return None;
    }
    let lengths: Vec<Option<usize>> = content
        .par_iter()
        .map(|id| {
            repo.locate(BlobKind::Data, id)
                .ok()
                .flatten()
                .map(|loc| loc.entry.raw_length as usize)
        })
        .collect();
    let chunks: Vec<(usize, BlobId)> = lengths
        .into_iter()
        .zip(content)
        .map_while(|(length, id)| length.map(|l| (l, *id)))
        .collect();
    let params = repo.chunker().ok()?.params();
    Some(Guide::new(params, chunks))
}

impl EntryReader<'_> {
    /// The part of backing up one entry that runs for many entries at
    /// once: stat, owner names, xattrs, the comparison with the parent, and
    /// reading, chunking and hashing a small changed file whole.
    ///
    /// `dir`, when the walk has the entry's directory open, is where `name`
    /// is looked up (stat, open, xattrs of an opened file), rather than
    /// along the whole `path` each time.
    fn prefetch(
        self,
        path: &Path,
        name: &OsStr,
        dir: Option<BorrowedFd<'_>>,
        parent: Option<&Node>,
    ) -> Prefetched {
        let stat = match dir {
            Some(dir) => metadata::Stat::at(dir, name)?,
            None => metadata::Stat::from(&std::fs::symlink_metadata(path)?),
        };
        let mut node = metadata::node_from_stat(name, path, &stat);
        if node.kind != NodeKind::File {
            node.xattrs = metadata::read_xattrs(path);
            return Ok((node, FileContent::Stream));
        }
        let parent = parent.filter(|p| p.kind == node.kind);
        let content = if parent.is_some_and(|p| self.unchanged(p, &node)) {
            FileContent::Unchanged
        } else if node.size <= PREFETCH_FILE_MAX {
            match self.read_small(path, name, dir, node.size) {
                // It grew past the limit since the stat (or the read-ahead
                // allowance is spent): stream it.
                Ok(None) => FileContent::Stream,
                Ok(Some((small, xattrs))) => {
                    node.xattrs = xattrs;
                    return Ok((node, FileContent::Read(Ok(small))));
                }
                Err(e) => FileContent::Read(Err(e)),
            }
        } else {
            FileContent::Stream
        };
        node.xattrs = metadata::read_xattrs(path);
        Ok((node, content))
    }

    /// Reads a small file whole, and its xattrs from the open file; None if
    /// it is larger than `PREFETCH_FILE_MAX` after all, or `size` does not
    /// fit in the walk ahead's allowance, so memory stays bounded.
    fn read_small(
        self,
        path: &Path,
        name: &OsStr,
        dir: Option<BorrowedFd<'_>>,
        size: u64,
    ) -> std::io::Result<Option<(SmallFile, Vec<Xattr>)>> {
        let ctx = self.repo.context();
        let held = match self.held {
            Some(held) => match ahead::reserve(held, size as usize + 1) {
                Some(h) => Some(h),
                // The allowance is spent: the archiver streams this one.
                None => return Ok(None),
            },
            None => None,
        };
        // Sized from the stat, so the read takes one call (plus the one
        // that finds the end) and no reallocation.
        let mut bytes = Vec::with_capacity(size as usize + 1);
        let file = open_regular_in(dir, path, name)?;
        let xattrs = metadata::read_file_xattrs(&file);
        file.take(PREFETCH_FILE_MAX + 1).read_to_end(&mut bytes)?;
        ctx.progress().add_bytes(bytes.len() as u64);
        if bytes.len() as u64 > PREFETCH_FILE_MAX {
            return Ok(None);
        }
        // A file that grew since its stat holds more than was reserved.
        let held = match (held, self.held) {
            (Some(held), Some(allowance)) if bytes.capacity() > held.bytes() => {
                match ahead::reserve(allowance, bytes.capacity()) {
                    Some(larger) => Some(larger),
                    None => return Ok(None),
                }
            }
            (held, _) => held,
        };
        let lengths = self.chunker.cut(&bytes, true);
        let key = self.repo.key();
        let mut at = 0;
        let ids = lengths
            .iter()
            .map(|&length| {
                at += length;
                key.blob_id(&bytes[at - length..at])
            })
            .collect();
        let small = SmallFile {
            bytes,
            lengths,
            ids,
            _held: held,
        };
        Ok(Some((small, xattrs)))
    }

    /// Same size, mtime, ctime and inode as in the parent, and all of its
    /// content still indexed.
    fn unchanged(self, old: &Node, new: &Node) -> bool {
        old.size == new.size
            && old.mtime_ns == new.mtime_ns
            && old.ctime_ns == new.ctime_ns
            && old.inode == new.inode
            && (self.parent_blobs_indexed
                || old
                    .content
                    .iter()
                    .all(|id| matches!(self.repo.locate(BlobKind::Data, id), Ok(Some(_)))))
    }
}

impl<'r> Archiver<'r, '_> {
    /// Queues a job, waiting while the budget is spent.
    fn send(&mut self, job: Job) -> Result<()> {
        let jobs = self.jobs.as_ref().ok_or_else(store_stopped)?;
        if !self.budget.acquire(job.charge()) {
            return Err(store_stopped());
        }
        jobs.send(job).map_err(|_| store_stopped())
    }

    /// Chunks, dedups, seals and stores everything `source` yields.
    /// With a `guide` (the parent's version of the content), chunks that
    /// are unchanged are confirmed by their hash instead of being chunked.
    pub(crate) fn store_stream(
        &mut self,
        source: &mut dyn Read,
        mut guide: Option<Guide<BlobId>>,
    ) -> Result<(Vec<BlobId>, u64), StreamError> {
        let ctx = self.repo.context();
        let mut content = Vec::new();
        let mut filled = 0usize;
        let mut total = 0u64;
        loop {
            ctx.check_interrupt()?;
            let mut at_end = false;
            while filled < self.buffer.len() {
                match source.read(&mut self.buffer[filled..]) {
                    Ok(0) => {
                        at_end = true;
                        break;
                    }
                    Ok(n) => {
                        filled += n;
                        ctx.progress().add_bytes(n as u64);
                    }
                    Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {
                        ctx.check_interrupt()?
                    }
                    Err(e) => return Err(StreamError::Source(e)),
                }
            }
            let (lengths, ids) = cut_and_hash(
                self.repo,
                &self.chunker,
                &self.buffer[..filled],
                at_end,
                guide.as_mut(),
            );
            let used: usize = lengths.iter().sum();
            if used > 0 {
                content.extend_from_slice(&ids);
                self.queue_chunks(used, filled, lengths, ids)?;
            }
            total += used as u64;
            filled -= used;
            if at_end {
                debug_assert_eq!(filled, 0);
                self.summary.total_bytes_processed += total;
                return Ok((content, total));
            }
        }
    }

    /// Hands the first `used` bytes of the buffer to the store thread and
    /// moves the unfinished tail (up to `filled`) to the front of the
    /// buffer that is read next.
    fn queue_chunks(
        &mut self,
        used: usize,
        filled: usize,
        lengths: Vec<usize>,
        ids: Vec<BlobId>,
    ) -> Result<()> {
        let bytes = if used >= self.buffer.len() / HAND_OVER_FRACTION {
            let mut next = match self.spare.try_recv() {
                Ok(b) if b.len() == self.buffer.len() => b,
                _ => vec![0u8; self.buffer.len()],
            };
            next[..filled - used].copy_from_slice(&self.buffer[used..filled]);
            std::mem::replace(&mut self.buffer, next)
        } else {
            let bytes = self.buffer[..used].to_vec();
            self.buffer.copy_within(used..filled, 0);
            bytes
        };
        self.send(Job::Data {
            bytes,
            offset: 0,
            lengths,
            ids,
        })
    }

    /// Encodes a tree and queues it; returns its id at once.
    pub(crate) fn save_tree(&mut self, tree: &Tree) -> Result<BlobId> {
        let bytes = tree.encode();
        if bytes.len() > crate::format::tree::TREE_SIZE_MAX {
            return Err(Error::invalid(
                "a directory is too large to encode as one tree",
            ));
        }
        let id = self.repo.key().blob_id(&bytes);
        self.send(Job::Tree { id, bytes })?;
        Ok(id)
    }

    fn skip(&mut self, path: &Path, reason: impl std::fmt::Display) {
        self.summary.files_unreadable += 1;
        self.unreadable.push(Unreadable {
            path: path.to_path_buf(),
            reason: reason.to_string(),
        });
    }

    /// Backs up one file-system object. Returns None if it was skipped.
    /// A directory is saved from the walk ahead's events in `subtree` when
    /// there are some (they are taken), and with a walk of its own if not.
    fn save_path(
        &mut self,
        path: &Path,
        parent: Option<&Node>,
        prefetched: Prefetched,
        subtree: &mut Option<&Receiver<ahead::Event>>,
    ) -> Result<Option<Node>> {
        let ctx = self.repo.context();
        ctx.check_interrupt()?;
        let (mut node, content) = match prefetched {
            Ok(found) => found,
            Err(e) => {
                self.skip(path, e);
                return Ok(None);
            }
        };
        let parent = parent.filter(|p| p.kind == node.kind);
        if self.exclude.one_file_system
            && node.kind == NodeKind::Dir
            && self.dir_device.is_some_and(|d| d != node.device_id)
        {
            // A mount point: kept as an empty directory, as restic does.
            node.subtree = Some(self.save_tree(&Tree::new(Vec::new()))?);
            return Ok(Some(node));
        }
        match node.kind {
            NodeKind::Dir => {
                let saved = match subtree.take() {
                    Some(stream) => self.save_dir_ahead(path, stream)?,
                    None => {
                        let parent_tree = parent
                            .and_then(|p| p.subtree)
                            .and_then(|id| self.repo.load_tree(&id).ok());
                        self.save_dir(path, parent_tree)?
                    }
                };
                let Some(subtree) = saved else {
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
                ctx.progress().add_items(1);
                match content {
                    FileContent::Unchanged => {
                        node.content = parent.map(|p| p.content.clone()).unwrap_or_default();
                        self.summary.files_unmodified += 1;
                        self.summary.total_bytes_processed += node.size;
                        return Ok(Some(node));
                    }
                    FileContent::Read(Ok(read)) => {
                        // The size we read is the truth (the file may have
                        // changed since it was stat'ed).
                        node.size = read.bytes.len() as u64;
                        node.content = read.ids.clone();
                        self.summary.total_bytes_processed += node.size;
                        if !read.lengths.is_empty() {
                            self.send(Job::Data {
                                bytes: read.bytes,
                                offset: 0,
                                lengths: read.lengths,
                                ids: read.ids,
                            })?;
                        }
                    }
                    FileContent::Read(Err(e)) => {
                        self.skip(path, e);
                        return Ok(None);
                    }
                    FileContent::Stream => {
                        let mut file = match open_regular(path) {
                            Ok(f) => f,
                            Err(e) => {
                                self.skip(path, e);
                                return Ok(None);
                            }
                        };
                        // A changed large file (a database file, a log that
                        // grew) is mostly its parent's chunks.
                        let guide = parent.and_then(|p| guide_from(self.repo, &p.content));
                        match self.store_stream(&mut file, guide) {
                            Ok((content, size)) => {
                                node.content = content;
                                node.size = size;
                            }
                            Err(StreamError::Source(e)) => {
                                self.skip(path, e);
                                return Ok(None);
                            }
                            Err(StreamError::Repository(e)) => return Err(e),
                        }
                    }
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

    /// Reads the entry a backup names itself (the walk ahead reads the
    /// entries below it).
    fn entry_reader(&self) -> EntryReader<'_> {
        EntryReader {
            repo: self.repo,
            chunker: &self.chunker,
            parent_blobs_indexed: self.parent_blobs_indexed,
            held: None,
        }
    }

    /// Backs up the directory tree at `path` with a walk ahead of it
    /// (`ahead`) on its own thread.
    fn save_dir(&mut self, path: &Path, parent: Option<Tree>) -> Result<Option<BlobId>> {
        let walker = ahead::Walker {
            repo: self.repo,
            chunker: self.chunker.clone(),
            exclude: self.exclude.clone(),
            parent_blobs_indexed: self.parent_blobs_indexed,
            held: self.held.clone(),
            dir_fds_held: Default::default(),
            descend_override: if crate::failpoint::is_set!("walk-descends-into-everything") {
                Some(true)
            } else if crate::failpoint::is_set!("walk-descends-into-nothing") {
                Some(false)
            } else {
                None
            },
        };
        let (events, stream) = crossbeam_channel::bounded(ahead::AHEAD_EVENTS);
        std::thread::scope(|scope| {
            let walk = std::thread::Builder::new()
                .name("cairn-walk".into())
                // It recurses once per directory level, as the archiver
                // does on the main thread (8 MiB).
                .stack_size(WALK_STACK_SIZE)
                .spawn_scoped(scope, || walker.run(path, parent.map(Arc::new), events))
                .map_err(|e| Error::io("cannot start the walk thread", e))?;
            let saved = self.save_dir_ahead(path, &stream);
            // Hanging up ends the walk early when this one failed.
            drop(stream);
            if let Err(panic) = walk.join() {
                std::panic::resume_unwind(panic);
            }
            saved
        })
    }

    /// The next event of the walk ahead. It ends early only when the
    /// backup was interrupted.
    fn next_event(ctx: &Context, stream: &Receiver<ahead::Event>) -> Result<ahead::Event> {
        match stream.recv() {
            Ok(event) => Ok(event),
            Err(_) => {
                ctx.check_interrupt()?;
                Err(Error::new(
                    ErrorKind::Interrupted,
                    "the directory walk stopped early",
                ))
            }
        }
    }

    /// Backs up the directory whose events come next in `stream`.
    fn save_dir_ahead(
        &mut self,
        path: &Path,
        stream: &Receiver<ahead::Event>,
    ) -> Result<Option<BlobId>> {
        let ctx = self.repo.context();
        let parent = match Self::next_event(ctx, stream)? {
            ahead::Event::Listed { parent } => parent,
            ahead::Event::Excluded => return Ok(None),
            ahead::Event::NotListed(e) => {
                self.skip(path, e);
                return Ok(None);
            }
            _ => return Err(Error::invalid("the directory walk is out of step")),
        };
        let outer_device = self.dir_device;
        if self.exclude.one_file_system {
            self.dir_device = std::fs::symlink_metadata(path)
                .ok()
                .map(|m| std::os::unix::fs::MetadataExt::dev(&m));
        }
        let mut nodes = Vec::new();
        loop {
            let entry = match Self::next_event(ctx, stream)? {
                ahead::Event::Entry(entry) => entry,
                ahead::Event::Unreadable(e) => {
                    self.skip(path, e);
                    continue;
                }
                ahead::Event::Leave => break,
                _ => return Err(Error::invalid("the directory walk is out of step")),
            };
            ctx.check_interrupt()?;
            let child = path.join(&entry.name);
            let node = parent
                .as_deref()
                .and_then(|t| t.find(entry.name.as_bytes()));
            let prefetched = entry.prefetched.recv().map_err(|_| {
                Error::new(ErrorKind::Interrupted, "a directory entry was not read")
            })?;
            let mut subtree = entry.descends.then_some(stream);
            if let Some(node) = self.save_path(&child, node, prefetched, &mut subtree)? {
                nodes.push(node);
            }
            if let Some(stream) = subtree {
                // The entry is no longer the directory the walk entered.
                Self::skip_subtree(ctx, stream)?;
            }
        }
        self.dir_device = outer_device;
        Ok(Some(self.save_tree(&Tree::new(nodes))?))
    }

    /// Passes over the events of a directory the archiver does not save.
    fn skip_subtree(ctx: &Context, stream: &Receiver<ahead::Event>) -> Result<()> {
        let mut depth = 0usize;
        loop {
            match Self::next_event(ctx, stream)? {
                // Waited for, so the walk stays within its bounds (one
                // pending task per queued event) while it is skipped.
                ahead::Event::Entry(entry) => {
                    let _ = entry.prefetched.recv();
                }
                ahead::Event::Listed { .. } => depth += 1,
                ahead::Event::Leave => depth = depth.saturating_sub(1),
                _ => {}
            }
            if depth == 0 {
                return Ok(());
            }
        }
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
                    let name = OsStr::from_bytes(name);
                    let pre = self.entry_reader().prefetch(&path, name, None, parent_node);
                    if let Some(node) = self.save_path(&path, parent_node, pre, &mut None)? {
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
                        Some(id) => self.repo.load_tree(&id).ok(),
                        None => None,
                    };
                    node.subtree =
                        Some(self.save_virtual(&path, grandchildren, parent_tree.as_ref())?);
                    nodes.push(node);
                }
            }
        }
        self.save_tree(&Tree::new(nodes))
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

/// What the reading stage produced: the root tree, and its bookkeeping.
pub(crate) struct Archived {
    tree: BlobId,
    summary: Summary,
    unreadable: Vec<Unreadable>,
}

/// Runs `walk` as the reading stage of the pipeline, with the store stage
/// on its own thread, and finishes the writer (packs, then index files)
/// only if both succeeded. Counts progress as the "backup" phase.
pub(crate) fn archive<'r>(
    repo: &'r Repository,
    lock: &'r LockGuard,
    spares: Spares,
    walk: impl FnOnce(&mut Archiver<'_, '_>) -> Result<BlobId>,
) -> Result<(Archived, Written<'r>)> {
    // Totals are unknown: the walk does not count ahead.
    let progress = repo.context().progress();
    progress.start("backup", 0, 0);
    let result = run_stages(repo, lock, spares, walk);
    progress.finish();
    result
}

/// How many emptied read buffers wait to be filled again.
#[derive(Clone, Copy)]
pub(crate) enum Spares {
    /// A walk hands whole buffers over only for large files: a second
    /// spare mostly sat idle, and a tree backup's peak was 6-10 MiB higher
    /// with two (4 alternating runs each). A tarball is read like a walk.
    One,
    /// A stream hands over every buffer. The store stage gives them back
    /// and the reader thread takes them out of step: two can come back
    /// while the reader waits for the cutter, and with one slot the second
    /// was freed and the reader then faulted a fresh one in: 12,000 to
    /// 81,000 page faults per backup of a 688 MB stream instead of 8,200
    /// (also with the buffer given back before its budget is released,
    /// which was tried). Two slots absorb that.
    Two,
}

impl Spares {
    fn count(self) -> usize {
        match self {
            Spares::One => 1,
            Spares::Two => 2,
        }
    }
}

fn run_stages<'r>(
    repo: &'r Repository,
    lock: &'r LockGuard,
    spares: Spares,
    walk: impl FnOnce(&mut Archiver<'_, '_>) -> Result<BlobId>,
) -> Result<(Archived, Written<'r>)> {
    let chunker = repo.chunker()?;
    let size = READ_BUFFER_MIN.max(8 * chunker.params().size_max as usize);
    let budget = Budget::new();
    let (jobs, queued) = crossbeam_channel::unbounded();
    // Read buffers come back from the store stage to be filled again.
    let (spare_tx, spare) = crossbeam_channel::bounded(spares.count());
    let zstd_level = repo.config().compression.level;
    let writer = repo.blob_writer(lock);
    let (walked, stored) = std::thread::scope(|scope| {
        let store = std::thread::Builder::new()
            .name("cairn-store".into())
            .spawn_scoped(scope, || {
                store_thread(writer, queued, &budget, spare_tx, zstd_level)
            })
            .map_err(|e| Error::io("cannot start the store thread", e))?;
        let mut archiver = Archiver {
            repo,
            jobs: Some(jobs),
            budget: &budget,
            spare,
            chunker,
            buffer: vec![0u8; size],
            summary: Summary::default(),
            unreadable: Vec::new(),
            exclude: Default::default(),
            dir_device: None,
            parent_blobs_indexed: false,
            held: Default::default(),
        };
        let walked = walk(&mut archiver);
        if walked.is_err() {
            // Tell the store thread to drop what is queued, not seal it.
            budget.close();
        }
        // Closing the queue lets the store thread drain it and return.
        archiver.jobs = None;
        let stored = match store.join() {
            Ok(stored) => stored,
            Err(panic) => std::panic::resume_unwind(panic),
        };
        let walked = walked.map(|tree| Archived {
            tree,
            summary: std::mem::take(&mut archiver.summary),
            unreadable: std::mem::take(&mut archiver.unreadable),
        });
        Ok::<_, Error>((walked, stored))
    })?;
    // The store thread's error is the cause when both stages failed (the
    // reading stage then only saw `store_stopped`).
    let writer = stored?;
    let archived = walked?;
    repo.context().check_interrupt()?;
    let written = writer.finish()?;
    Ok((archived, written))
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

/// Keyed BLAKE3 of the chunks at the start of `buffer`, in parallel when
/// there are several.
fn blob_ids(repo: &Repository, buffer: &[u8], lengths: &[usize]) -> Vec<BlobId> {
    let key = repo.key();
    let mut spans = Vec::with_capacity(lengths.len());
    let mut at = 0;
    for &length in lengths {
        spans.push(at..at + length);
        at += length;
    }
    if spans.len() == 1 {
        return vec![key.blob_id(&buffer[spans[0].clone()])];
    }
    spans
        .par_iter()
        .map(|s| key.blob_id(&buffer[s.clone()]))
        .collect()
}

/// Cut points and blob ids for the start of `data` (see `Chunker::cut`),
/// confirmed from the guide where it can be.
fn cut_and_hash(
    repo: &Repository,
    chunker: &Chunker,
    data: &[u8],
    at_end: bool,
    guide: Option<&mut Guide<BlobId>>,
) -> (Vec<usize>, Vec<BlobId>) {
    let threads = rayon::current_num_threads();
    match guide {
        Some(guide) => {
            let key = repo.key();
            chunker.cut_guided(data, at_end, threads, guide, |chunk| key.blob_id(chunk))
        }
        None => {
            let lengths = chunker.cut_parallel(data, at_end, threads);
            let ids = blob_ids(repo, data, &lengths);
            (lengths, ids)
        }
    }
}

/// How often a reader waiting for the stream checks for an interrupt.
const INTERRUPT_POLL: std::time::Duration = std::time::Duration::from_millis(100);

/// A stream read ahead on a thread of its own, straight into whole read
/// buffers, so that the process writing into a pipe (`pg_dump | cairn
/// backup --stdin`) keeps writing while this one chunks and hashes, and so
/// that each byte is copied once: the data lands at `headroom` in each
/// buffer, and only the unfinished chunk of the previous buffer (at most
/// `size_max` bytes) is copied in front of it. Buffers come back from the
/// store thread through the archiver's spare channel.
struct ReadAhead {
    /// A buffer and the end of the data in it; an error ends the stream.
    blocks: Receiver<std::io::Result<(Vec<u8>, usize)>>,
    headroom: usize,
}

/// The reader thread: runs until the stream ends or fails, or until the
/// consumer has gone away (the backup failed; it notices at its next
/// buffer). The channel holds no buffer: one is filled while one is cut.
fn read_ahead(
    mut source: impl Read,
    blocks: Sender<std::io::Result<(Vec<u8>, usize)>>,
    spare: Receiver<Vec<u8>>,
    size: usize,
    headroom: usize,
) {
    loop {
        let mut buffer = match spare.try_recv() {
            Ok(b) if b.len() == size => b,
            _ => vec![0u8; size],
        };
        let mut filled = headroom;
        let mut ended = false;
        while filled < size {
            match source.read(&mut buffer[filled..]) {
                Ok(0) => {
                    ended = true;
                    break;
                }
                Ok(n) => filled += n,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Err(e) => {
                    let _ = blocks.send(Err(e));
                    return;
                }
            }
        }
        if filled > headroom && blocks.send(Ok((buffer, filled))).is_err() {
            return;
        }
        if ended {
            return;
        }
    }
}

impl Archiver<'_, '_> {
    /// `store_stream` for a stream read by `read_ahead`.
    fn store_read_ahead(
        &mut self,
        ahead: &ReadAhead,
        mut guide: Option<Guide<BlobId>>,
    ) -> Result<(Vec<BlobId>, u64), StreamError> {
        let ctx = self.repo.context();
        let mut content = Vec::new();
        let mut total = 0u64;
        let mut tail: Vec<u8> = Vec::new();
        loop {
            ctx.check_interrupt()?;
            let (mut buffer, filled) = match ahead.blocks.recv_timeout(INTERRUPT_POLL) {
                Ok(Ok(block)) => block,
                Ok(Err(e)) => return Err(StreamError::Source(e)),
                // The reader thread may be blocked on a pipe that stays
                // open: an interrupt must not wait for it.
                Err(RecvTimeoutError::Timeout) => continue,
                Err(RecvTimeoutError::Disconnected) => break,
            };
            ctx.progress().add_bytes((filled - ahead.headroom) as u64);
            // The carried-over piece is at most `size_max` (= headroom)
            // long: what `Chunker::cut` leaves out when more input follows.
            let start = ahead.headroom.checked_sub(tail.len()).ok_or_else(|| {
                Error::new(
                    ErrorKind::Io,
                    "the chunker left more than size_max bytes to carry over",
                )
            })?;
            buffer[start..ahead.headroom].copy_from_slice(&tail);
            let data = &buffer[start..filled];
            let (lengths, ids) =
                cut_and_hash(self.repo, &self.chunker, data, false, guide.as_mut());
            let used: usize = lengths.iter().sum();
            tail.clear();
            tail.extend_from_slice(&data[used..]);
            total += used as u64;
            if used > 0 {
                content.extend_from_slice(&ids);
                let job = if used >= buffer.len() / HAND_OVER_FRACTION {
                    Job::Data {
                        bytes: buffer,
                        offset: start,
                        lengths,
                        ids,
                    }
                } else {
                    Job::Data {
                        bytes: buffer[start..start + used].to_vec(),
                        offset: 0,
                        lengths,
                        ids,
                    }
                };
                self.send(job)?;
            }
        }
        // The end of the stream: what is left is its last chunk or chunks.
        if !tail.is_empty() {
            let (lengths, ids) =
                cut_and_hash(self.repo, &self.chunker, &tail, true, guide.as_mut());
            debug_assert_eq!(lengths.iter().sum::<usize>(), tail.len());
            total += tail.len() as u64;
            content.extend_from_slice(&ids);
            self.send(Job::Data {
                bytes: tail,
                offset: 0,
                lengths,
                ids,
            })?;
        }
        self.summary.total_bytes_processed += total;
        Ok((content, total))
    }
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

/// `backup_stream` for a stream produced by `command`: `source_ok` runs
/// once the stream has ended and before anything is finished, so an error
/// from it (the command failed) leaves no snapshot and drops the writer,
/// which deletes the packs it wrote.
pub(crate) fn backup_stream_checked(
    repo: &mut Repository,
    lock: &LockGuard,
    source: impl Read + Send + 'static,
    filename: &str,
    options: &BackupOptions,
    command: Option<Vec<String>>,
    source_ok: &mut dyn FnMut() -> Result<()>,
) -> Result<BackupOutcome> {
    let started = Instant::now();
    if !crate::format::tree::is_valid_name(filename.as_bytes()) {
        return Err(Error::invalid(format!(
            "invalid file name {filename:?} for the stream: one path component, no '/'"
        )));
    }
    let mut snapshot = new_snapshot(options, vec![format!("/{filename}")], SourceKind::Stdin);
    snapshot.command = command;
    // Every byte of a stream is read and hashed; the parent's version only
    // spares FastCDC the chunks that did not change.
    let parent = find_parent(repo, options, &snapshot)?;
    let repo_ref: &Repository = repo;
    let guide = parent.as_ref().and_then(|(id, s)| {
        let tree = repo_ref.load_tree(&s.tree).ok()?;
        let node = tree
            .nodes
            .iter()
            .find(|n| n.name.0 == filename.as_bytes() && n.kind == NodeKind::File)?;
        snapshot.parent = Some(*id);
        guide_from(repo_ref, &node.content)
    });
    let mut reader = None;
    let (archived, written) = archive(repo_ref, lock, Spares::Two, |archiver| {
        let (blocks_tx, blocks) = crossbeam_channel::bounded(0);
        let spare = archiver.spare.clone();
        let size = archiver.buffer.len();
        let headroom = archiver.chunker.params().size_max as usize;
        reader = Some(
            std::thread::Builder::new()
                .name("cairn-read".into())
                .spawn(move || read_ahead(source, blocks_tx, spare, size, headroom))
                .map_err(|e| Error::io("cannot start the reader thread", e))?,
        );
        let ahead = ReadAhead { blocks, headroom };
        store_stdin(archiver, &ahead, filename, &snapshot, source_ok, guide)
    })?;
    // The whole stream was read, so the reader thread has returned.
    if let Some(Err(panic)) = reader.map(|r| r.join()) {
        std::panic::resume_unwind(panic);
    }
    finish(repo_ref, archived, written, snapshot, started)
}

/// The reading stage of a stream backup: the stream, the check that its
/// source succeeded, then its root tree.
fn store_stdin(
    archiver: &mut Archiver<'_, '_>,
    source: &ReadAhead,
    filename: &str,
    snapshot: &Snapshot,
    source_ok: &mut dyn FnMut() -> Result<()>,
    guide: Option<Guide<BlobId>>,
) -> Result<BlobId> {
    let (content, size) = match archiver.store_read_ahead(source, guide) {
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
    let (uid, gid) = crate::sys::current_ids();
    let mut node = Node::new(filename.as_bytes(), NodeKind::File);
    node.mode = 0o644;
    node.uid = uid;
    node.gid = gid;
    node.user = crate::sys::user_name(uid);
    node.group = crate::sys::group_name(gid);
    let now_ns = snapshot.time.timestamp_nanos_opt().unwrap_or(0);
    node.mtime_ns = now_ns;
    node.ctime_ns = now_ns;
    node.size = size;
    node.content = content;
    archiver.summary.files_new = 1;
    archiver.summary.total_files_processed = 1;
    archiver.repo.context().progress().add_items(1);
    archiver.save_tree(&Tree::new(vec![node]))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::fd::AsFd;

    #[test]
    fn a_file_replaced_by_a_fifo_or_a_symlink_is_not_opened() {
        let dir = tempfile::tempdir().unwrap();
        let fifo = dir.path().join("fifo");
        let c = std::ffi::CString::new(fifo.as_os_str().as_bytes()).unwrap();
        // SAFETY: a valid NUL-terminated path; mkfifo only creates a node.
        assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o600) }, 0);
        // Opening it for reading without O_NONBLOCK would wait for a writer.
        assert!(open_regular(&fifo).is_err());
        let file = dir.path().join("file");
        std::fs::write(&file, b"data").unwrap();
        let link = dir.path().join("link");
        std::os::unix::fs::symlink(&file, &link).unwrap();
        assert!(open_regular(&link).is_err());
        let mut read = String::new();
        open_regular(&file)
            .unwrap()
            .read_to_string(&mut read)
            .unwrap();
        assert_eq!(read, "data");
        // The same, by name in the open directory (the walk ahead's way).
        let handle = std::fs::File::open(dir.path()).unwrap();
        let at = |name: &str| open_regular_in(Some(handle.as_fd()), Path::new("/"), name.as_ref());
        assert!(at("fifo").is_err());
        assert!(at("link").is_err());
        assert_eq!(
            at("missing").unwrap_err().kind(),
            std::io::ErrorKind::NotFound
        );
        let mut read = String::new();
        at("file").unwrap().read_to_string(&mut read).unwrap();
        assert_eq!(read, "data");
    }
}
