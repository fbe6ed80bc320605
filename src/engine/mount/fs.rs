//! The FUSE file system over one repository: answers the kernel's
//! requests from the inode table, the snapshot layout, the tree cache and
//! the blob cache. Every read goes through `Repository::load_tree` and
//! `Repository::read_blob`, the readers every other command uses.

use super::cache::Cache;
use super::inodes::{Entry, Inodes};
use super::layout::{Child, Dir, Snapshots};
use super::MountOptions;
use crate::engine::repository::Repository;
use crate::error::{ErrorKind, Result};
use crate::format::id::{BlobId, SnapshotId};
use crate::format::pack::BlobKind;
use crate::format::snapshot::Snapshot;
use crate::format::tree::{Node, NodeKind, Tree};
use fuser::{
    Errno, FileAttr, FileHandle, FileType, Filesystem, FopenFlags, Generation, INodeNo, InitFlags,
    LockOwner, OpenAccMode, OpenFlags, ReplyAttr, ReplyData, ReplyDirectory, ReplyDirectoryPlus,
    ReplyEntry, ReplyOpen, ReplyXattr, Request,
};
use std::collections::{HashMap, HashSet};
use std::ffi::OsStr;
use std::os::unix::ffi::OsStrExt;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, RwLock};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

/// How long the kernel may keep what it learnt of a made-up directory: a
/// new snapshot shows within about this long.
const TTL_LAYOUT: Duration = Duration::from_secs(1);
/// Snapshot contents never change.
const TTL_TREE: Duration = Duration::from_secs(300);
/// The snapshot list is read again at most this often (when listed).
pub(super) const REFRESH_INTERVAL: Duration = Duration::from_secs(3);
/// Trees cached, by approximate decoded size.
const TREE_CACHE_BYTES: u64 = 64 << 20;
/// Read-ahead stays within this, and within a quarter of the blob cache, so
/// what is read ahead is still cached when it is asked for.
const READ_AHEAD_MAX: u64 = 32 << 20;
/// The first read-ahead of a file, and after a jump.
const READ_AHEAD_MIN: u64 = 1 << 20;

pub(super) struct MountFs {
    inner: Arc<Inner>,
}

struct Inner {
    repo: RwLock<Repository>,
    filter: crate::format::snapshot::SnapshotFilter,
    snapshots: RwLock<Arc<Snapshots>>,
    known: Mutex<Known>,
    inodes: Mutex<Inodes>,
    trees: Cache<Tree>,
    blobs: Cache<Vec<u8>>,
    files: Mutex<HashMap<u64, Arc<OpenFile>>>,
    next_fh: AtomicU64,
    read_ahead: u64,
    /// Owner and time of the made-up directories.
    uid: u32,
    gid: u32,
    started_ns: i64,
}

/// Every snapshot id seen and its snapshot (None: filtered out or
/// unreadable), so a refresh reads only new snapshot files.
struct Known {
    checked: Option<Instant>,
    snapshots: HashMap<SnapshotId, Option<Arc<Snapshot>>>,
}

/// What `readdir` lists.
enum Listing {
    Layout(Arc<Snapshots>, Vec<(String, Child)>),
    Tree(Arc<Tree>),
}

impl Listing {
    fn len(&self) -> usize {
        match self {
            Listing::Layout(_, children) => children.len(),
            Listing::Tree(tree) => tree.nodes.len(),
        }
    }

    fn name(&self, i: usize) -> &[u8] {
        match self {
            Listing::Layout(_, children) => children[i].0.as_bytes(),
            Listing::Tree(tree) => &tree.nodes[i].name.0,
        }
    }

    fn kind(&self, i: usize) -> FileType {
        match self {
            Listing::Layout(_, children) => match children[i].1 {
                Child::Latest { .. } => FileType::Symlink,
                _ => FileType::Directory,
            },
            Listing::Tree(tree) => file_type(tree.nodes[i].kind),
        }
    }

    /// The entry of the `i`th name, as `lookup` would make it.
    fn entry(&self, i: usize) -> Entry {
        match self {
            Listing::Layout(layout, children) => layout_entry(layout, &children[i].1),
            Listing::Tree(tree) => Entry::Node(tree.nodes[i].clone()),
        }
    }
}

/// An open file: its blobs and where each ends in the file.
struct OpenFile {
    node: Arc<Entry>,
    ends: Vec<u64>,
    /// The blob the last read ended in, to tell sequential reads.
    last: AtomicUsize,
    /// Blobs before this one have been read ahead.
    ahead: AtomicUsize,
    /// Bytes to read ahead: doubled by each sequential read up to the
    /// mount's limit, back to the least after a jump, so `head` or a
    /// random reader (`pg_restore -l`) does not pull in megabytes.
    window: AtomicU64,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

fn errno(e: &crate::error::Error) -> Errno {
    match e.kind() {
        ErrorKind::NotFound | ErrorKind::FileNotFound => Errno::EIO,
        ErrorKind::Interrupted => Errno::EINTR,
        _ => Errno::EIO,
    }
}

fn time(ns: i64) -> SystemTime {
    if ns >= 0 {
        UNIX_EPOCH + Duration::from_nanos(ns as u64)
    } else {
        UNIX_EPOCH - Duration::from_nanos(ns.unsigned_abs())
    }
}

fn file_type(kind: NodeKind) -> FileType {
    match kind {
        NodeKind::File => FileType::RegularFile,
        NodeKind::Dir => FileType::Directory,
        NodeKind::Symlink => FileType::Symlink,
        NodeKind::Fifo => FileType::NamedPipe,
        NodeKind::Chardev => FileType::CharDevice,
        NodeKind::Blockdev => FileType::BlockDevice,
        NodeKind::Socket => FileType::Socket,
    }
}

fn entry_type(entry: &Entry) -> FileType {
    match entry {
        Entry::Dir(_) => FileType::Directory,
        Entry::Latest { .. } => FileType::Symlink,
        Entry::Node(node) => file_type(node.kind),
    }
}

/// A snapshot's root directory as a node: its tree, its time, its owner.
fn snapshot_root(snapshot: &Snapshot) -> Node {
    let mut node = Node::new(b"", NodeKind::Dir);
    let ns = snapshot.time.timestamp_nanos_opt().unwrap_or(0);
    node.mtime_ns = ns;
    node.ctime_ns = ns;
    node.uid = snapshot.uid;
    node.gid = snapshot.gid;
    node.mode = 0o755;
    node.links = 2;
    node.subtree = Some(snapshot.tree);
    node
}

/// Approximate memory of a decoded tree, for the cache's budget.
fn tree_weight(tree: &Tree) -> u64 {
    tree.nodes
        .iter()
        .map(|n| {
            200 + n.name.0.len() as u64 + 32 * n.content.len() as u64 + 64 * n.xattrs.len() as u64
        })
        .sum::<u64>()
        + 64
}

impl MountFs {
    pub(super) fn new(repo: Repository, options: &MountOptions) -> Result<MountFs> {
        let (uid, gid) = crate::sys::current_ids();
        let blob_budget = options.cache_size.max(1 << 20);
        let inner = Inner {
            repo: RwLock::new(repo),
            filter: options.filter.clone(),
            snapshots: RwLock::new(Arc::new(Snapshots::new(Vec::new()))),
            known: Mutex::new(Known {
                checked: None,
                snapshots: HashMap::new(),
            }),
            inodes: Mutex::new(Inodes::new()),
            trees: Cache::new(TREE_CACHE_BYTES),
            blobs: Cache::new(blob_budget),
            files: Mutex::new(HashMap::new()),
            next_fh: AtomicU64::new(1),
            read_ahead: (blob_budget / 4).min(READ_AHEAD_MAX),
            uid,
            gid,
            started_ns: SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map(|d| d.as_nanos() as i64)
                .unwrap_or(0),
        };
        inner.refresh(true)?;
        Ok(MountFs {
            inner: Arc::new(inner),
        })
    }
}

impl Inner {
    fn repo(&self) -> std::sync::RwLockReadGuard<'_, Repository> {
        self.repo.read().unwrap_or_else(|e| e.into_inner())
    }

    fn layout(&self) -> Arc<Snapshots> {
        self.snapshots
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// Reads the snapshot list again if it was last read long enough ago
    /// (`force`: now). New snapshots' index files are synced before they
    /// show, so their blobs can be read. Errors are only returned when
    /// forced (at mount time); later the old list stays.
    fn refresh(&self, force: bool) -> Result<()> {
        let mut known = lock(&self.known);
        if !force
            && known
                .checked
                .is_some_and(|t| t.elapsed() < REFRESH_INTERVAL)
        {
            return Ok(());
        }
        known.checked = Some(Instant::now());
        let ids: HashSet<SnapshotId> = self.repo().list_snapshot_ids()?.into_iter().collect();
        let mut changed = known.snapshots.len() != ids.len();
        let mut added = false;
        known.snapshots.retain(|id, _| ids.contains(id));
        for id in &ids {
            if known.snapshots.contains_key(id) {
                continue;
            }
            changed = true;
            let loaded = match self.repo().load_snapshot(id) {
                Ok(s) => Some(s),
                Err(e) if e.kind() == ErrorKind::Corrupt => None,
                Err(e) if e.kind() == ErrorKind::NotFound => continue,
                Err(e) => return Err(e),
            };
            let matching = loaded.filter(|s| self.filter.matches(s)).map(Arc::new);
            added |= matching.is_some();
            known.snapshots.insert(*id, matching);
        }
        if added && !force {
            self.repo
                .write()
                .unwrap_or_else(|e| e.into_inner())
                .reload_index()?;
        }
        if changed || force {
            let list = known
                .snapshots
                .iter()
                .filter_map(|(id, s)| s.as_ref().map(|s| (*id, s.clone())))
                .collect();
            *self.snapshots.write().unwrap_or_else(|e| e.into_inner()) =
                Arc::new(Snapshots::new(list));
        }
        Ok(())
    }

    fn tree(&self, id: &BlobId) -> Result<Arc<Tree>> {
        self.trees.get(id, || {
            let tree = self.repo().load_tree(id)?;
            let weight = tree_weight(&tree);
            Ok((tree, weight))
        })
    }

    fn blob(&self, id: &BlobId) -> Result<Arc<Vec<u8>>> {
        self.blobs.get(id, || load_blob(&self.repo(), id))
    }

    fn attr(&self, ino: u64, entry: &Entry) -> FileAttr {
        let mut attr = FileAttr {
            ino: INodeNo(ino),
            size: 0,
            blocks: 0,
            atime: time(self.started_ns),
            mtime: time(self.started_ns),
            ctime: time(self.started_ns),
            crtime: time(self.started_ns),
            kind: entry_type(entry),
            perm: 0o555,
            nlink: 2,
            uid: self.uid,
            gid: self.gid,
            rdev: 0,
            blksize: 4096,
            flags: 0,
        };
        match entry {
            Entry::Dir(_) => {}
            Entry::Latest { target, time_ns } => {
                attr.size = target.len() as u64;
                attr.perm = 0o777;
                attr.nlink = 1;
                (attr.atime, attr.mtime, attr.ctime) =
                    (time(*time_ns), time(*time_ns), time(*time_ns));
            }
            Entry::Node(node) => {
                attr.size = match node.kind {
                    NodeKind::Symlink => node.link_target.as_ref().map_or(0, |t| t.0.len() as u64),
                    _ => node.size,
                };
                attr.blocks = attr.size.div_ceil(512);
                attr.perm = (node.mode & 0o7777) as u16;
                attr.nlink = node.links.clamp(1, u64::from(u32::MAX)) as u32;
                attr.uid = node.uid;
                attr.gid = node.gid;
                attr.rdev = node.rdev as u32;
                attr.mtime = time(node.mtime_ns);
                attr.atime = attr.mtime;
                attr.ctime = time(node.ctime_ns);
                attr.crtime = attr.mtime;
            }
        }
        attr
    }

    fn ttl(entry: &Entry) -> Duration {
        match entry {
            Entry::Node(_) => TTL_TREE,
            _ => TTL_LAYOUT,
        }
    }

    fn entry(&self, ino: u64) -> std::result::Result<(Arc<Entry>, u64), Errno> {
        lock(&self.inodes).get(ino).ok_or(Errno::ENOENT)
    }

    /// The entry `name` stands for in the directory `parent` is.
    fn child(&self, parent: &Entry, name: &[u8]) -> std::result::Result<Entry, Errno> {
        match parent {
            Entry::Dir(dir) => {
                if *dir != Dir::Root {
                    let _ = self.refresh(false);
                }
                let layout = self.layout();
                let children = layout.children(dir);
                let i = children
                    .binary_search_by(|(n, _)| n.as_bytes().cmp(name))
                    .map_err(|_| Errno::ENOENT)?;
                Ok(layout_entry(&layout, &children[i].1))
            }
            Entry::Node(node) if node.kind == NodeKind::Dir => {
                let Some(subtree) = node.subtree else {
                    return Err(Errno::ENOENT);
                };
                let tree = self.tree(&subtree).map_err(|e| errno(&e))?;
                let i = tree
                    .nodes
                    .binary_search_by(|n| n.name.0.as_slice().cmp(name))
                    .map_err(|_| Errno::ENOENT)?;
                Ok(Entry::Node(tree.nodes[i].clone()))
            }
            _ => Err(Errno::ENOTDIR),
        }
    }

    /// A directory's entries after `.` and `..`.
    fn list(&self, entry: &Entry) -> std::result::Result<Listing, Errno> {
        match entry {
            Entry::Dir(dir) => {
                let _ = self.refresh(false);
                let layout = self.layout();
                let children = layout.children(dir);
                Ok(Listing::Layout(layout, children))
            }
            Entry::Node(node) if node.kind == NodeKind::Dir => match node.subtree {
                None => Ok(Listing::Layout(self.layout(), Vec::new())),
                // The cached tree itself: a large directory is listed in
                // many calls, and none copies its names.
                Some(subtree) => Ok(Listing::Tree(self.tree(&subtree).map_err(|e| errno(&e))?)),
            },
            _ => Err(Errno::ENOTDIR),
        }
    }

    fn open_file(&self, entry: Arc<Entry>) -> std::result::Result<OpenFile, Errno> {
        let Entry::Node(node) = &*entry else {
            return Err(Errno::EISDIR);
        };
        if node.kind != NodeKind::File {
            return Err(Errno::EINVAL);
        }
        let repo = self.repo();
        let mut ends = Vec::with_capacity(node.content.len());
        let mut end = 0u64;
        for id in &node.content {
            let location = repo
                .locate(BlobKind::Data, id)
                .map_err(|e| errno(&e))?
                .ok_or(Errno::EIO)?;
            end += u64::from(location.entry.raw_length);
            ends.push(end);
        }
        drop(repo);
        Ok(OpenFile {
            node: entry,
            ends,
            last: AtomicUsize::new(0),
            ahead: AtomicUsize::new(0),
            window: AtomicU64::new(READ_AHEAD_MIN),
        })
    }

    fn read(self: &Arc<Self>, file: &OpenFile, offset: u64, size: u32) -> Result<Vec<u8>> {
        let Entry::Node(node) = &*file.node else {
            return Ok(Vec::new());
        };
        let total = file.ends.last().copied().unwrap_or(0).min(node.size);
        let end = offset.saturating_add(u64::from(size)).min(total);
        if offset >= end {
            return Ok(Vec::new());
        }
        let first = file.ends.partition_point(|&e| e <= offset);
        let last_read = file.last.swap(first, Ordering::Relaxed);
        // Sequential (or nearly: the kernel sends a few reads at once):
        // read the next blobs ahead on other threads.
        if first == 0 || (last_read.saturating_sub(2)..=last_read + 4).contains(&first) {
            let window = file.window.load(Ordering::Relaxed);
            file.window
                .store((window * 2).min(self.read_ahead), Ordering::Relaxed);
            self.read_ahead(file, node, first, window.min(self.read_ahead));
        } else {
            file.window.store(READ_AHEAD_MIN, Ordering::Relaxed);
        }
        let mut out = Vec::with_capacity((end - offset) as usize);
        let mut i = first;
        while (out.len() as u64) < end - offset {
            let start = if i == 0 { 0 } else { file.ends[i - 1] };
            let blob = self.blob(&node.content[i])?;
            let from = (offset + out.len() as u64 - start) as usize;
            let to = ((end - start) as usize).min(blob.len());
            if from >= to {
                // The index and the blob disagree on its length.
                return Err(crate::error::Error::corrupt(format!(
                    "blob {} is shorter than the index says",
                    node.content[i]
                )));
            }
            out.extend_from_slice(&blob[from..to]);
            i += 1;
        }
        Ok(out)
    }

    fn read_ahead(self: &Arc<Self>, file: &OpenFile, node: &Node, from: usize, window: u64) {
        let base = if from == 0 { 0 } else { file.ends[from - 1] };
        let mut next = file.ahead.load(Ordering::Relaxed).max(from + 1);
        while next < node.content.len() && file.ends[next - 1] - base < window {
            let id = node.content[next];
            if self.blobs.claim(&id) {
                let inner = self.clone();
                rayon::spawn(move || {
                    let loaded = load_blob(&inner.repo(), &id);
                    inner.blobs.finish(&id, loaded);
                });
            }
            next += 1;
        }
        file.ahead.fetch_max(next, Ordering::Relaxed);
    }
}

fn load_blob(repo: &Repository, id: &BlobId) -> Result<(Vec<u8>, u64)> {
    let data = repo.read_blob(BlobKind::Data, id)?;
    let weight = data.len() as u64;
    Ok((data, weight))
}

fn layout_entry(layout: &Snapshots, child: &Child) -> Entry {
    match child {
        Child::Dir(dir) => Entry::Dir(dir.clone()),
        Child::Snapshot(i) => Entry::Node(snapshot_root(&layout.list[*i].1)),
        Child::Latest { target, snapshot } => Entry::Latest {
            target: target.clone(),
            time_ns: layout.list[*snapshot]
                .1
                .time
                .timestamp_nanos_opt()
                .unwrap_or(0),
        },
    }
}

fn xattr_value(node: &Node, name: &[u8]) -> Option<Vec<u8>> {
    let x = node.xattrs.iter().find(|x| x.name.0 == name)?;
    hex::decode(&x.value).ok()
}

impl Filesystem for MountFs {
    /// Asks for `readdirplus` on every listing (the attributes come from
    /// the tree being listed anyway), symlink targets cached, and parallel
    /// lookups in one directory. A kernel without one of them goes without.
    fn init(&mut self, _req: &Request, config: &mut fuser::KernelConfig) -> std::io::Result<()> {
        for wanted in [
            InitFlags::FUSE_DO_READDIRPLUS,
            InitFlags::FUSE_CACHE_SYMLINKS,
            InitFlags::FUSE_PARALLEL_DIROPS,
        ] {
            let _ = config.add_capabilities(wanted);
        }
        Ok(())
    }

    fn lookup(&self, _req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEntry) {
        let inner = &self.inner;
        let result = inner
            .entry(parent.0)
            .and_then(|(p, _)| inner.child(&p, name.as_bytes()));
        match result {
            Ok(entry) => {
                let (ino, entry) = lock(&inner.inodes).lookup(parent.0, name.as_bytes(), entry);
                reply.entry(&Inner::ttl(&entry), &inner.attr(ino, &entry), Generation(0));
            }
            Err(e) => reply.error(e),
        }
    }

    fn forget(&self, _req: &Request, ino: INodeNo, nlookup: u64) {
        lock(&self.inner.inodes).forget(ino.0, nlookup);
    }

    fn getattr(&self, _req: &Request, ino: INodeNo, _fh: Option<FileHandle>, reply: ReplyAttr) {
        match self.inner.entry(ino.0) {
            Ok((entry, _)) => reply.attr(&Inner::ttl(&entry), &self.inner.attr(ino.0, &entry)),
            Err(e) => reply.error(e),
        }
    }

    fn readlink(&self, _req: &Request, ino: INodeNo, reply: ReplyData) {
        match self.inner.entry(ino.0).map(|(e, _)| e) {
            Ok(entry) => match &*entry {
                Entry::Latest { target, .. } => reply.data(target.as_bytes()),
                Entry::Node(node) if node.kind == NodeKind::Symlink => {
                    reply.data(node.link_target.as_ref().map_or(&[][..], |t| &t.0))
                }
                _ => reply.error(Errno::EINVAL),
            },
            Err(e) => reply.error(e),
        }
    }

    fn open(&self, _req: &Request, ino: INodeNo, flags: OpenFlags, reply: ReplyOpen) {
        if flags.acc_mode() != OpenAccMode::O_RDONLY {
            return reply.error(Errno::EROFS);
        }
        let opened = self
            .inner
            .entry(ino.0)
            .and_then(|(entry, _)| self.inner.open_file(entry));
        match opened {
            Ok(file) => {
                let fh = self.inner.next_fh.fetch_add(1, Ordering::Relaxed);
                lock(&self.inner.files).insert(fh, Arc::new(file));
                // Contents never change: the kernel may keep its page cache
                // across opens.
                reply.opened(FileHandle(fh), FopenFlags::FOPEN_KEEP_CACHE);
            }
            Err(e) => reply.error(e),
        }
    }

    fn read(
        &self,
        _req: &Request,
        _ino: INodeNo,
        fh: FileHandle,
        offset: u64,
        size: u32,
        _flags: OpenFlags,
        _lock_owner: Option<LockOwner>,
        reply: ReplyData,
    ) {
        let Some(file) = lock(&self.inner.files).get(&fh.0).cloned() else {
            return reply.error(Errno::EBADF);
        };
        match self.inner.read(&file, offset, size) {
            Ok(data) => reply.data(&data),
            Err(e) => reply.error(errno(&e)),
        }
    }

    fn release(
        &self,
        _req: &Request,
        _ino: INodeNo,
        fh: FileHandle,
        _flags: OpenFlags,
        _lock_owner: Option<LockOwner>,
        _flush: bool,
        reply: fuser::ReplyEmpty,
    ) {
        lock(&self.inner.files).remove(&fh.0);
        reply.ok();
    }

    fn readdir(
        &self,
        _req: &Request,
        ino: INodeNo,
        _fh: FileHandle,
        offset: u64,
        mut reply: ReplyDirectory,
    ) {
        let (entry, parent) = match self.inner.entry(ino.0) {
            Ok(found) => found,
            Err(e) => return reply.error(e),
        };
        let listing = match self.inner.list(&entry) {
            Ok(listing) => listing,
            Err(e) => return reply.error(e),
        };
        let inodes = lock(&self.inner.inodes);
        let dots = [
            (ino.0, FileType::Directory, &b"."[..]),
            (parent, FileType::Directory, &b".."[..]),
        ];
        // Entry i (0 and 1 are the dots) is sent with offset i + 1, where
        // the next call starts.
        let all = dots.into_iter().skip(offset.min(2) as usize).chain(
            (offset.saturating_sub(2) as usize..listing.len()).map(|i| {
                let name = listing.name(i);
                (inodes.listed_ino(ino.0, name), listing.kind(i), name)
            }),
        );
        for (i, (child, kind, name)) in (offset..).zip(all) {
            if reply.add(INodeNo(child), i + 1, kind, OsStr::from_bytes(name)) {
                break;
            }
        }
        drop(inodes);
        reply.ok();
    }

    /// `readdir` with each entry's attributes (the kernel asks for it, as
    /// it was told it may in `init`): `ls -l` then needs no `lookup` per
    /// name. Each entry sent counts as one lookup of its inode, as the
    /// kernel counts it (it forgets each later); the dots do not.
    fn readdirplus(
        &self,
        _req: &Request,
        ino: INodeNo,
        _fh: FileHandle,
        offset: u64,
        mut reply: ReplyDirectoryPlus,
    ) {
        let inner = &self.inner;
        let (entry, parent) = match inner.entry(ino.0) {
            Ok(found) => found,
            Err(e) => return reply.error(e),
        };
        let listing = match inner.list(&entry) {
            Ok(listing) => listing,
            Err(e) => return reply.error(e),
        };
        let dir = inner.attr(ino.0, &entry);
        let ttl = Inner::ttl(&entry);
        for (i, (child, name)) in [(ino.0, &b"."[..]), (parent, &b".."[..])]
            .into_iter()
            .enumerate()
            .skip(offset.min(2) as usize)
        {
            let attr = FileAttr {
                ino: INodeNo(child),
                ..dir
            };
            if reply.add(
                INodeNo(child),
                i as u64 + 1,
                OsStr::from_bytes(name),
                &ttl,
                &attr,
                Generation(0),
            ) {
                return reply.ok();
            }
        }
        let mut inodes = lock(&inner.inodes);
        for i in offset.saturating_sub(2) as usize..listing.len() {
            let name = listing.name(i);
            let (child, entry) = inodes.lookup(ino.0, name, listing.entry(i));
            let full = reply.add(
                INodeNo(child),
                i as u64 + 3,
                OsStr::from_bytes(name),
                &Inner::ttl(&entry),
                &inner.attr(child, &entry),
                Generation(0),
            );
            if full {
                // Not sent: not held by the kernel either.
                inodes.forget(child, 1);
                break;
            }
        }
        drop(inodes);
        reply.ok();
    }

    /// A snapshot's directory never changes: the kernel may keep its
    /// listing across opens.
    fn opendir(&self, _req: &Request, ino: INodeNo, _flags: OpenFlags, reply: ReplyOpen) {
        let flags = match self.inner.entry(ino.0) {
            Ok((entry, _)) if matches!(*entry, Entry::Node(_)) => {
                FopenFlags::FOPEN_CACHE_DIR | FopenFlags::FOPEN_KEEP_CACHE
            }
            Ok(_) => FopenFlags::empty(),
            Err(e) => return reply.error(e),
        };
        reply.opened(FileHandle(0), flags);
    }

    fn getxattr(&self, _req: &Request, ino: INodeNo, name: &OsStr, size: u32, reply: ReplyXattr) {
        let (value, none_stored) = match self.inner.entry(ino.0) {
            Ok((entry, _)) => match &*entry {
                Entry::Node(node) => (xattr_value(node, name.as_bytes()), node.xattrs.is_empty()),
                _ => (None, true),
            },
            Err(e) => return reply.error(e),
        };
        match value {
            // `ls -l` asks every file for these two (the kernel caches
            // neither answer); "not supported" where nothing is stored
            // makes it stop asking for the rest of the mount, which would
            // otherwise cost two round trips a file. A file with stored
            // xattrs still answers "no such attribute".
            None if none_stored && ASKED_BY_LS.contains(&name.as_bytes()) => {
                reply.error(Errno::EOPNOTSUPP)
            }
            None => reply.error(Errno::ENODATA),
            Some(v) => xattr_reply(reply, &v, size),
        }
    }

    fn listxattr(&self, _req: &Request, ino: INodeNo, size: u32, reply: ReplyXattr) {
        let mut names = Vec::new();
        match self.inner.entry(ino.0) {
            Ok((entry, _)) => {
                if let Entry::Node(node) = &*entry {
                    for x in &node.xattrs {
                        names.extend_from_slice(&x.name.0);
                        names.push(0);
                    }
                }
            }
            Err(e) => return reply.error(e),
        }
        xattr_reply(reply, &names, size);
    }
}

/// The attributes `ls -l` reads from every file it lists (SELinux label,
/// access ACL).
const ASKED_BY_LS: [&[u8]; 2] = [b"security.selinux", b"system.posix_acl_access"];

/// `size` 0 asks for the length; a buffer too small is ERANGE.
fn xattr_reply(reply: ReplyXattr, value: &[u8], size: u32) {
    if size == 0 {
        reply.size(value.len() as u32);
    } else if value.len() > size as usize {
        reply.error(Errno::ERANGE);
    } else {
        reply.data(value);
    }
}
