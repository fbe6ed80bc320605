//! The two stages of a backup and what runs between them: the reading
//! stage (`Archiver`, driven by a walk, a stream or a tarball) queues
//! `Job`s under a byte `Budget`; the store thread (`store_thread`) makes
//! the dedup decisions, seals new blobs on all cores and appends them to
//! packs. `archive` runs both and finishes the writer only if both
//! succeeded (the module doc of `archiver` tells the whole story).

use super::Unreadable;
use crate::engine::repository::{BlobWriter, Repository, Written};
use crate::error::{Error, ErrorKind, Result};
use crate::format::chunker::Chunker;
use crate::format::id::BlobId;
use crate::format::pack::{BlobKind, SealedBlob};
use crate::format::snapshot::Summary;
use crate::format::tree::Tree;
use crate::storage::lock::LockGuard;
use crossbeam_channel::{Receiver, Sender};
use rayon::prelude::*;
use std::sync::atomic::AtomicUsize;
use std::sync::{Arc, Condvar, Mutex};

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
pub(super) const HAND_OVER_FRACTION: usize = 4;

/// Work for the store thread.
pub(super) enum Job {
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
pub(super) struct Budget {
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
    let repo = writer.repository();
    let ctx = repo.context().clone();
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
                        .map(|(kind, id, bytes)| repo.seal_blob(*kind, *id, bytes, zstd_level))
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

/// The reading stage: walks, reads, chunks and hashes, and queues the bytes.
/// `engine::tar` drives one too (through `archive`), storing member contents
/// with `store_stream` and its own trees with `save_tree`.
pub(crate) struct Archiver<'r, 'b> {
    pub(crate) repo: &'r Repository,
    jobs: Option<Sender<Job>>,
    budget: &'b Budget,
    pub(super) spare: Receiver<Vec<u8>>,
    pub(super) chunker: Chunker,
    pub(super) buffer: Vec<u8>,
    pub(crate) summary: Summary,
    pub(crate) unreadable: Vec<Unreadable>,
    pub(super) exclude: std::sync::Arc<crate::engine::exclude::Excluder>,
    /// Device of the directory being listed (for --one-file-system).
    pub(super) dir_device: Option<u64>,
    /// The parent snapshot's data blobs are all known to be indexed (this
    /// cache marked it complete), so unchanged files need no lookups.
    pub(super) parent_blobs_indexed: bool,
    /// Small-file bytes read ahead, shared by every walk (a directory may
    /// start a walk of its own while an outer one is ahead of it).
    pub(super) held: Arc<AtomicUsize>,
}

impl Archiver<'_, '_> {
    /// Queues a job, waiting while the budget is spent.
    pub(super) fn send(&mut self, job: Job) -> Result<()> {
        let jobs = self.jobs.as_ref().ok_or_else(store_stopped)?;
        if !self.budget.acquire(job.charge()) {
            return Err(store_stopped());
        }
        jobs.send(job).map_err(|_| store_stopped())
    }

    /// Encodes a tree and queues it; returns its id at once.
    pub(crate) fn save_tree(&mut self, tree: &Tree) -> Result<BlobId> {
        let bytes = tree.encode();
        if bytes.len() > crate::format::tree::TREE_SIZE_MAX {
            return Err(Error::invalid(
                "a directory is too large to encode as one tree",
            ));
        }
        let id = self.repo.blob_id(&bytes);
        self.send(Job::Tree { id, bytes })?;
        Ok(id)
    }
}

/// What the reading stage produced: the root tree, and its bookkeeping.
pub(crate) struct Archived {
    pub(super) tree: BlobId,
    pub(super) summary: Summary,
    pub(super) unreadable: Vec<Unreadable>,
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
