//! Reading one file: the stat, the comparison with the parent snapshot,
//! and reading, chunking and hashing its content, either whole for a
//! small file (`EntryReader`, on the walk ahead's tasks) or streamed
//! through the archiver's read buffer (`Archiver::store_stream`).

use super::ahead;
use super::pipeline::{Archiver, Job, HAND_OVER_FRACTION};
use crate::engine::metadata;
use crate::engine::repository::Repository;
use crate::error::{Error, Result};
use crate::format::chunker::{Chunker, Guide};
use crate::format::id::BlobId;
use crate::format::pack::BlobKind;
use crate::format::tree::{Node, NodeKind, Xattr};
use rayon::prelude::*;
use std::ffi::OsStr;
use std::io::Read;
use std::os::fd::BorrowedFd;
use std::path::Path;
use std::sync::atomic::AtomicUsize;
use std::sync::Arc;

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

/// Files up to this size are read whole by the walk ahead's tasks, many at
/// once (within `ahead::AHEAD_BYTES_MAX`); larger ones are streamed through
/// the archiver's read buffer, one at a time.
pub(super) const PREFETCH_FILE_MAX: u64 = 1024 * 1024;

/// An entry's node and what to do about its content; an error means the
/// entry cannot be read and is skipped.
pub(super) type Prefetched = std::io::Result<(Node, FileContent)>;

pub(super) enum FileContent {
    /// As in the parent snapshot: reuse its content.
    Unchanged,
    /// A small file, already read, chunked and hashed.
    Read(std::io::Result<SmallFile>),
    /// Not a file, or a large one: read through `store_stream`.
    Stream,
}

pub(super) struct SmallFile {
    pub(super) bytes: Vec<u8>,
    pub(super) lengths: Vec<usize>,
    pub(super) ids: Vec<BlobId>,
    /// Its share of the walk ahead's allowance, if it was read ahead.
    _held: Option<ahead::Held>,
}

/// Opens a file the stat said is a regular file, without blocking or
/// following a link if it has been replaced since (by a FIFO, whose open
/// would block a pool thread or the archiver; by a symlink).
pub(super) fn open_regular(path: &Path) -> std::io::Result<std::fs::File> {
    open_regular_in(None, path, OsStr::new(""))
}

/// `open_regular` of `name` in the open directory `dir` when there is one
/// (one path component to look up), else of `path`.
fn open_regular_in(
    dir: Option<BorrowedFd<'_>>,
    path: &Path,
    name: &OsStr,
) -> std::io::Result<std::fs::File> {
    let file = match dir {
        Some(dir) => crate::sys::walk::open_file_at(dir, name)?,
        None => crate::sys::walk::open_file_nofollow(path)?,
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
pub(super) struct EntryReader<'a> {
    pub(super) repo: &'a Repository,
    pub(super) chunker: &'a Chunker,
    pub(super) parent_blobs_indexed: bool,
    /// The walk ahead's allowance for small files read (None: no limit,
    /// for the one entry the archiver reads itself).
    pub(super) held: Option<&'a Arc<AtomicUsize>>,
}

impl EntryReader<'_> {
    /// The part of backing up one entry that runs for many entries at
    /// once: stat, owner names, xattrs, the comparison with the parent, and
    /// reading, chunking and hashing a small changed file whole.
    ///
    /// `dir`, when the walk has the entry's directory open, is where `name`
    /// is looked up (stat, open, xattrs of an opened file), rather than
    /// along the whole `path` each time.
    pub(super) fn prefetch(
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
        let repo = self.repo;
        let mut at = 0;
        let ids = lengths
            .iter()
            .map(|&length| {
                at += length;
                repo.blob_id(&bytes[at - length..at])
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
                    .all(|id| matches!(self.repo.has_live_blob(BlobKind::Data, id), Ok(true))))
    }
}

impl Archiver<'_, '_> {
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
}

/// there are several.
fn blob_ids(repo: &Repository, buffer: &[u8], lengths: &[usize]) -> Vec<BlobId> {
    let mut spans = Vec::with_capacity(lengths.len());
    let mut at = 0;
    for &length in lengths {
        spans.push(at..at + length);
        at += length;
    }
    if spans.len() == 1 {
        return vec![repo.blob_id(&buffer[spans[0].clone()])];
    }
    spans
        .par_iter()
        .map(|s| repo.blob_id(&buffer[s.clone()]))
        .collect()
}

/// Cut points and blob ids for the start of `data` (see `Chunker::cut`),
/// confirmed from the guide where it can be.
pub(super) fn cut_and_hash(
    repo: &Repository,
    chunker: &Chunker,
    data: &[u8],
    at_end: bool,
    guide: Option<&mut Guide<BlobId>>,
) -> (Vec<usize>, Vec<BlobId>) {
    let threads = rayon::current_num_threads();
    match guide {
        Some(guide) => {
            chunker.cut_guided(data, at_end, threads, guide, |chunk| repo.blob_id(chunk))
        }
        None => {
            let lengths = chunker.cut_parallel(data, at_end, threads);
            let ids = blob_ids(repo, data, &lengths);
            (lengths, ids)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::fd::AsFd;
    use std::os::unix::ffi::OsStrExt;

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
