//! Stream backups (`backup --stdin`, `--stdin-from-command`): the stream
//! is read ahead on a thread of its own into whole read buffers
//! (`read_ahead`), chunked with the parent's version as a guide
//! (`guide_from`) and stored as one file at the snapshot's root.

use super::file::{cut_and_hash, StreamError};
use super::pipeline::{archive, Archiver, Job, Spares, HAND_OVER_FRACTION};
use super::{find_parent, finish, new_snapshot, BackupOptions, BackupOutcome};
use crate::engine::repository::Repository;
use crate::error::{Error, ErrorKind, Result};
use crate::format::chunker::Guide;
use crate::format::id::BlobId;
use crate::format::pack::BlobKind;
use crate::format::snapshot::{Snapshot, SourceKind};
use crate::format::tree::{Node, NodeKind, Tree};
use crate::storage::lock::LockGuard;
use crossbeam_channel::{Receiver, RecvTimeoutError, Sender};
use rayon::prelude::*;
use std::io::Read;
use std::time::Instant;

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
