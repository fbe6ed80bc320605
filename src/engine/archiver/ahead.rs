//! The walk ahead: a thread lists a directory tree in the archiver's order
//! (depth first, names sorted bytewise) and hands each entry to the rayon
//! pool to be stat'ed and, for a small file, read, chunked and hashed
//! (`EntryReader::prefetch`). The archiver takes the results in the same
//! order, so several directories' entries are read at once on every core,
//! not one directory's batch at a time (on a tree of small directories
//! those batches left the cores idle between them).
//!
//! The order is a flat stream of `Event`s: a directory's `Listed` (or
//! `Excluded` / `NotListed`, and nothing more for it), its entries, and for
//! an entry the walker descends into, that directory's events right after
//! the entry, then `Leave`. Whether to descend is
//! decided from the directory entry's type (no extra stat), so the
//! archiver, which decides from the entry's stat, can disagree when the
//! entry changed in between; it then skips the subtree's events or walks
//! the directory on its own (`Archiver::save_path`).
//!
//! Bounds: `AHEAD_EVENTS` events are queued at most (each is at most one
//! pending task), the small files read ahead hold at most
//! `AHEAD_BYTES_MAX` bytes (a file that does not fit is streamed by the
//! archiver instead), and the directories kept open at most a quarter of
//! the descriptor limit (`dir_fds_max`; past it, paths are used). Rayon
//! tasks never block on the archiver or the store thread, so neither can
//! starve the pool the store thread seals on.

use super::file::{EntryReader, Prefetched};
use crate::engine::exclude::Excluder;
use crate::engine::metadata::Stat;
use crate::engine::repository::Repository;
use crate::format::tree::{NodeKind, Tree};
use crate::sys::walk::EntryType;
use crossbeam_channel::{Receiver, Sender};
use rayon::prelude::*;
use std::ffi::OsString;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::Path;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

/// Events queued between the walker and the archiver.
pub(super) const AHEAD_EVENTS: usize = 256;

/// Bytes of small files read ahead and not yet taken by the archiver:
/// 32 of the largest (`PREFETCH_FILE_MAX`).
const AHEAD_BYTES_MAX: usize = 32 * 1024 * 1024;

pub(super) enum Event {
    /// A directory the walker entered; its `Unreadable` and `Entry` events
    /// follow, then `Leave`. `parent` is its version in the parent snapshot.
    Listed {
        parent: Option<Arc<Tree>>,
    },
    /// A directory left out by a marker file; no events follow for it.
    Excluded,
    /// A directory that could not be listed; no events follow for it.
    NotListed(std::io::Error),
    /// An entry of the directory could not be read while listing it.
    Unreadable(std::io::Error),
    Entry(Entry),
    /// The end of the directory last `Listed`.
    Leave,
}

pub(super) struct Entry {
    pub name: OsString,
    /// The entry's stat and content, when a worker has them.
    pub prefetched: Receiver<Prefetched>,
    /// The walker descended: this directory's events come next.
    pub descends: bool,
}

/// Small-file bytes held by the walk ahead, given back when dropped (when
/// the archiver has queued them for the store thread, which then charges
/// them to its own budget).
pub(super) struct Held {
    held: Arc<AtomicUsize>,
    bytes: usize,
}

impl Held {
    pub(super) fn bytes(&self) -> usize {
        self.bytes
    }
}

impl Drop for Held {
    fn drop(&mut self) {
        self.held.fetch_sub(self.bytes, Ordering::Relaxed);
    }
}

/// Reserves `bytes` of the read-ahead allowance, or None if it is spent.
pub(super) fn reserve(held: &Arc<AtomicUsize>, bytes: usize) -> Option<Held> {
    let before = held.fetch_add(bytes, Ordering::Relaxed);
    let reservation = Held {
        held: held.clone(),
        bytes,
    };
    // A single file always fits when nothing else is held.
    (before == 0 || before + bytes <= AHEAD_BYTES_MAX).then_some(reservation)
}

/// The walker's own view: what it reads with and which rules it applies.
pub(super) struct Walker<'r> {
    pub repo: &'r Repository,
    pub chunker: crate::format::chunker::Chunker,
    pub exclude: Arc<Excluder>,
    pub parent_blobs_indexed: bool,
    pub held: Arc<AtomicUsize>,
    /// Directory descriptors this walk holds (at most `dir_fds_max`).
    pub dir_fds_held: Arc<AtomicUsize>,
    /// Test hook: descend into every entry, or into none, to drive the
    /// archiver's handling of a walk that disagrees with the stats.
    pub descend_override: Option<bool>,
}

/// The archiver stopped listening (it failed, or the backup was
/// interrupted): the walk ends.
struct Stopped;

impl Walker<'_> {
    /// Walks the tree at `root` (a directory), sending its events. Returns
    /// once every entry's task has finished.
    pub(super) fn run(&self, root: &Path, parent: Option<Arc<Tree>>, events: Sender<Event>) {
        rayon::in_place_scope(|scope| {
            let _ = self.walk_dir(scope, root, parent, &events);
        });
    }

    fn walk_dir<'s>(
        &'s self,
        scope: &rayon::Scope<'s>,
        path: &Path,
        parent: Option<Arc<Tree>>,
        events: &Sender<Event>,
    ) -> Result<(), Stopped> {
        let ctx = self.repo.context();
        let send = |event| events.send(event).map_err(|_| Stopped);
        if ctx.check_interrupt().is_err() {
            return Err(Stopped);
        }
        if self.exclude.excludes_dir_by_marker(path) {
            return send(Event::Excluded);
        }
        // Kept open while the entries' tasks run: they look their names up
        // in it, and it is what is listed, so names and lookups agree even
        // if the path is renamed meanwhile. Without it (a directory swapped
        // for a symlink since its parent was listed, no descriptor left)
        // the path is listed and looked up. The walker lets go of it while
        // it descends, so the descriptors a walk holds are bounded by the
        // queued tasks, not by the depth of the tree; it reopens it after,
        // and uses it only if it is still the same directory.
        let opened = open_dir_held(&self.dir_fds_held, path);
        let mut identity = opened.as_ref().map(|(_, id)| *id);
        let mut dir = opened.map(|(fd, _)| Arc::new(fd));
        let listed = match &dir {
            Some(fd) => list_dir(fd.as_fd()),
            None => list_path(path),
        };
        let (mut names, errors) = match listed {
            Ok(listed) => listed,
            Err(e) => return send(Event::NotListed(e)),
        };
        names.sort_by(|a, b| a.0.as_bytes().cmp(b.0.as_bytes()));
        if self.exclude.has_patterns() {
            let keep: Vec<bool> = names
                .par_iter()
                .map(|(name, _)| !self.exclude.excludes_entry(&path.join(name)))
                .collect();
            let mut keep = keep.into_iter();
            names.retain(|_| keep.next().unwrap_or(true));
        }
        let device = if self.exclude.one_file_system {
            // Known already when the directory is open.
            identity
                .map(|(device, _)| device)
                .or_else(|| std::fs::symlink_metadata(path).ok().map(|m| dev(&m)))
        } else {
            None
        };
        send(Event::Listed {
            parent: parent.clone(),
        })?;
        for e in errors {
            send(Event::Unreadable(e))?;
        }
        for (name, is_dir) in names {
            if dir.is_none() && identity.is_some() {
                dir = open_dir_held(&self.dir_fds_held, path)
                    .filter(|(_, id)| Some(*id) == identity)
                    .map(|(fd, _)| Arc::new(fd));
                if dir.is_none() {
                    // Renamed or replaced meanwhile: paths from here on.
                    identity = None;
                }
            }
            let child = path.join(&name);
            let (slot, prefetched) = crossbeam_channel::bounded(1);
            {
                let parent = parent.clone();
                let name = name.clone();
                let child = child.clone();
                let dir = dir.clone();
                scope.spawn(move |_| {
                    let reader = EntryReader {
                        repo: self.repo,
                        chunker: &self.chunker,
                        parent_blobs_indexed: self.parent_blobs_indexed,
                        held: Some(&self.held),
                    };
                    let node = parent.as_deref().and_then(|t| t.find(name.as_bytes()));
                    // The archiver may have stopped; then nobody wants it.
                    let dir = dir.as_deref().map(|d| d.as_fd());
                    let _ = slot.send(reader.prefetch(&child, &name, dir, node));
                });
            }
            // A mount point is kept as an empty directory: not entered.
            let descends = self.descend_override.unwrap_or(is_dir)
                && device.is_none_or(|d| {
                    let stat = match &dir {
                        Some(fd) => Stat::at(fd.as_fd(), &name).ok().map(|s| s.dev),
                        None => std::fs::symlink_metadata(&child).ok().map(|m| dev(&m)),
                    };
                    stat == Some(d)
                });
            let subtree = if descends {
                parent
                    .as_deref()
                    .and_then(|t| t.find(name.as_bytes()))
                    .filter(|n| n.kind == NodeKind::Dir)
                    .and_then(|n| n.subtree)
            } else {
                None
            };
            send(Event::Entry(Entry {
                name,
                prefetched,
                descends,
            }))?;
            if descends {
                // The parent's tree is loaded here, ahead of the archiver.
                let sub_parent = subtree
                    .and_then(|id| self.repo.load_tree(&id).ok())
                    .map(Arc::new);
                dir = None;
                self.walk_dir(scope, &child, sub_parent, events)?;
            }
        }
        send(Event::Leave)
    }
}

/// Directory descriptors the walk ahead holds at most: a quarter of the
/// descriptor limit, and no more than 256. Every queued task keeps its
/// directory open; past this, a directory is listed and its entries looked
/// up by path, as when it cannot be opened. Without a bound, a walk under
/// a limit of 80 descriptors held them all and files could not be opened
/// ("Too many open files"), so they were left out of the snapshot.
fn dir_fds_max() -> usize {
    (crate::sys::descriptor_limit() / 4).clamp(4, 256) as usize
}

/// A directory descriptor counted against `dir_fds_max`.
struct HeldDir(OwnedFd, Arc<AtomicUsize>);

impl AsFd for HeldDir {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.0.as_fd()
    }
}

impl Drop for HeldDir {
    fn drop(&mut self) {
        self.1.fetch_sub(1, Ordering::SeqCst);
    }
}

/// `open_dir` within the budget; None when it is spent or the directory
/// cannot be opened (the caller then uses paths).
fn open_dir_held(held: &Arc<AtomicUsize>, path: &Path) -> Option<(HeldDir, (u64, u64))> {
    if held.fetch_add(1, Ordering::SeqCst) >= dir_fds_max() {
        held.fetch_sub(1, Ordering::SeqCst);
        return None;
    }
    match open_dir(path) {
        Ok((fd, identity)) => Some((HeldDir(fd, held.clone()), identity)),
        Err(_) => {
            held.fetch_sub(1, Ordering::SeqCst);
            None
        }
    }
}

/// Opens a directory for `*at` lookups, not following a symlink; with its
/// device and inode, to tell whether a later open found the same one.
fn open_dir(path: &Path) -> std::io::Result<(OwnedFd, (u64, u64))> {
    use std::os::unix::fs::MetadataExt;
    let dir = crate::sys::walk::open_dir_nofollow(path)?;
    let meta = dir.metadata()?;
    Ok((OwnedFd::from(dir), (meta.dev(), meta.ino())))
}

/// A directory's entry names, each with whether its type (from the
/// listing; no stat on the usual file systems) is a directory, which only
/// says whether to descend; and the errors met while listing.
type Listing = (Vec<(OsString, bool)>, Vec<std::io::Error>);

/// Lists the directory open as `dir`.
fn list_dir(dir: BorrowedFd<'_>) -> std::io::Result<Listing> {
    let mut names = Vec::new();
    let stopped = crate::sys::walk::list_dir(dir, |name, kind| {
        let is_dir = match kind {
            EntryType::Dir => true,
            // A file system that does not say: ask.
            EntryType::Unknown => Stat::at(dir, name).is_ok_and(|s| s.kind() == NodeKind::Dir),
            EntryType::Other => false,
        };
        names.push((name.to_os_string(), is_dir));
    })?;
    Ok((names, stopped.into_iter().collect()))
}

/// Lists the directory at `path` (when it could not be opened by itself).
fn list_path(path: &Path) -> std::io::Result<Listing> {
    let mut names = Vec::new();
    let mut errors = Vec::new();
    for entry in std::fs::read_dir(path)? {
        match entry {
            Ok(entry) => {
                let is_dir = entry.file_type().is_ok_and(|t| t.is_dir());
                names.push((entry.file_name(), is_dir));
            }
            Err(e) => errors.push(e),
        }
    }
    Ok((names, errors))
}

fn dev(meta: &std::fs::Metadata) -> u64 {
    std::os::unix::fs::MetadataExt::dev(meta)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::ffi::OsStr;

    /// The walk lists through the directory's descriptor; the fallback
    /// lists by path: both must give the same names and types.
    #[test]
    fn listing_by_descriptor_equals_listing_by_path() {
        let tmp = tempfile::tempdir().unwrap();
        let root = tmp.path();
        std::fs::write(root.join("file"), b"x").unwrap();
        std::fs::create_dir(root.join("dir")).unwrap();
        std::os::unix::fs::symlink("dir", root.join("link-to-dir")).unwrap();
        std::fs::write(root.join(OsStr::from_bytes(b"caf\xe9")), b"").unwrap();
        for i in 0..300 {
            std::fs::write(root.join(format!("many-{i}")), b"").unwrap();
        }
        let (fd, _) = open_dir(root).unwrap();
        let (mut by_fd, errors) = list_dir(fd.as_fd()).unwrap();
        assert!(errors.is_empty());
        let (mut by_path, _) = list_path(root).unwrap();
        by_fd.sort();
        by_path.sort();
        assert_eq!(by_fd, by_path);
        assert_eq!(by_fd.len(), 304);
        let dirs: Vec<_> = by_fd.iter().filter(|(_, d)| *d).collect();
        assert_eq!(dirs, [&(OsString::from("dir"), true)]);
        // A second listing of the same descriptor starts from the top.
        assert_eq!(list_dir(fd.as_fd()).unwrap().0.len(), 304);
    }

    #[test]
    fn a_directory_is_not_opened_through_a_symlink() {
        let tmp = tempfile::tempdir().unwrap();
        std::fs::create_dir(tmp.path().join("dir")).unwrap();
        std::os::unix::fs::symlink("dir", tmp.path().join("link")).unwrap();
        assert!(open_dir(&tmp.path().join("link")).is_err());
        let (_, a) = open_dir(&tmp.path().join("dir")).unwrap();
        let (_, b) = open_dir(&tmp.path().join("dir")).unwrap();
        assert_eq!(a, b);
    }
}
