//! Restoring from a remote backend, where every request costs a round trip
//! (about 40 ms for a ranged GET from Garage on loopback) whatever its
//! size: a walk that read one directory's trees and files at a time would
//! wait one or two round trips per directory. So the restorer reads ahead:
//! the snapshot's trees level by level, each level in batches of merged
//! ranged reads; and file content for the files the walk will restore next,
//! across directory boundaries, up to `AHEAD_BYTES` at a time
//! (`BlobReader`: grouped by pack, on `connections` IO threads).
//!
//! The plan is a walk ahead over the trees already read, from the file the
//! restorer needs; blobs are kept with how many planned files use them and
//! handed over as files are written. A file whose blobs are not there (the
//! walk skipped a directory it could not create, a tree was not read ahead)
//! starts a new plan from that file, so the restorer never depends on the
//! plan being followed.
//!
//! Fetching overlaps writing: as soon as one read-ahead is in, the content
//! of the files after it is fetched by a thread of its own (`Fetch`) while
//! the walk writes these, so at most two read-aheads are held (about
//! 2 × `AHEAD_BYTES` of plaintext).

use super::{content, plain, Frame, Restorer};
use crate::engine::repository::Repository;
use crate::error::{ErrorKind, Result};
use crate::format::id::BlobId;
use crate::format::pack::BlobKind;
use crate::format::tree::{Node, NodeKind, Tree};
use crossbeam_channel::{Receiver, Sender};
use std::collections::HashMap;
use std::os::fd::AsFd;

/// A read-ahead being fetched on the fetch thread while the walk writes
/// the previous one.
pub(super) struct Fetch {
    send: Sender<Vec<BlobId>>,
    recv: Receiver<Result<Vec<Vec<u8>>>>,
    /// The blobs asked for, and how many planned files use each.
    pending: Option<(Vec<BlobId>, HashMap<BlobId, usize>)>,
}

/// Runs `walk` with a fetch thread for read-aheads (`Fetch`) beside it; the
/// thread ends with `walk` (a fetch still running is waited for).
pub(super) fn with_fetch_thread<T>(
    repo: &Repository,
    walk: impl FnOnce(Fetch) -> Result<T>,
) -> Result<T> {
    let (send, requests) = crossbeam_channel::bounded::<Vec<BlobId>>(1);
    let (answers, recv) = crossbeam_channel::bounded(1);
    std::thread::scope(|scope| {
        scope.spawn(move || {
            for order in requests {
                let read = repo.blob_reader().read(BlobKind::Data, &order);
                if answers.send(read).is_err() {
                    break;
                }
            }
        });
        walk(Fetch {
            send,
            recv,
            pending: None,
        })
    })
}

/// File content read ahead at once: the plaintext held (plus what is being
/// written), and enough ranged reads to keep the connections busy.
const AHEAD_BYTES: u64 = 16 * 1024 * 1024;

/// Most files in one read-ahead, and written in parallel at once.
const AHEAD_FILES: usize = 4096;

/// Trees read in one batch.
const TREE_BATCH: usize = 1024;

/// Entries of trees read ahead before the restore starts (about 200 bytes
/// each in memory); past this, the subtrees of each directory are read when
/// it is entered.
const TREE_NODES_AHEAD: usize = 200_000;

impl Restorer<'_> {
    /// Reads the trees under `root`, level by level in batches, until
    /// `TREE_NODES_AHEAD` entries are held. Best effort: a tree that cannot
    /// be read here is read again (and its error recorded) when its
    /// directory is entered.
    pub(super) fn prefetch_all_trees(&mut self, root: &Tree) -> Result<()> {
        if !self.remote {
            return Ok(());
        }
        let mut nodes = root.nodes.len();
        let mut level = self.unread_subtrees(root);
        while !level.is_empty() && nodes < TREE_NODES_AHEAD {
            let mut next = Vec::new();
            for batch in level.chunks(TREE_BATCH) {
                for tree in self.read_trees(batch)? {
                    nodes += tree.nodes.len();
                    next.extend(self.unread_subtrees(&tree));
                }
            }
            next.sort_unstable();
            next.dedup();
            level = next;
        }
        Ok(())
    }

    /// Reads the subtrees of `tree` not read yet, in one batch (after the
    /// walk ahead stopped at `TREE_NODES_AHEAD`).
    pub(super) fn prefetch_subtrees(&mut self, tree: &Tree) -> Result<()> {
        if !self.remote {
            return Ok(());
        }
        let ids = self.unread_subtrees(tree);
        for batch in ids.chunks(TREE_BATCH) {
            self.read_trees(batch)?;
        }
        Ok(())
    }

    fn unread_subtrees(&self, tree: &Tree) -> Vec<BlobId> {
        tree.nodes
            .iter()
            .filter_map(|n| n.subtree)
            .filter(|id| !self.trees.contains_key(id))
            .collect()
    }

    /// Reads and keeps trees; returns clones of those read (the next
    /// level's parents). Only an interruption is an error.
    fn read_trees(&mut self, ids: &[BlobId]) -> Result<Vec<Tree>> {
        let mut ids = ids.to_vec();
        ids.sort_unstable();
        ids.dedup();
        if ids.is_empty() {
            return Ok(Vec::new());
        }
        let blobs = match self.repo.blob_reader().read(BlobKind::Tree, &ids) {
            Ok(blobs) => blobs,
            Err(e) if e.kind() == ErrorKind::Interrupted => return Err(e),
            Err(_) => return Ok(Vec::new()),
        };
        let mut read = Vec::new();
        for (id, bytes) in ids.into_iter().zip(blobs) {
            if let Ok(tree) = Tree::decode(&bytes) {
                read.push(tree.clone());
                self.trees.insert(id, tree);
            }
        }
        Ok(read)
    }

    /// Restores the run of `run` plain files at the top frame's `next`,
    /// with content read ahead. Only an interruption is returned as an
    /// error; the rest are recorded.
    pub(super) fn restore_remote_files(&mut self, stack: &[Frame], run: usize) -> Result<()> {
        let ctx = self.repo.context();
        let top = stack.last().expect("the walk has a frame");
        let at = top.next;
        let nodes = &top.tree.nodes[at..at + run];
        let dir = top.dir.as_ref().expect("the top frame holds its directory");
        let window = content::window_blobs(&self.repo.blob_reader());
        let mut done = 0;
        while done < run {
            ctx.check_interrupt()?;
            let rest = &nodes[done..];
            let mut read = Vec::new();
            for node in rest.iter().take(AHEAD_FILES) {
                if node.content.len() > window {
                    // Read window by window as it is written.
                    read.push(None);
                } else if node.content.iter().all(|id| self.ahead.contains_key(id)) {
                    read.push(self.take_ahead(node));
                } else {
                    break;
                }
            }
            if read.is_empty() {
                // The next read-ahead, fetched while the last one was
                // written; else read now.
                let fetched = self.take_fetched()?
                    && rest[0].content.iter().all(|id| self.ahead.contains_key(id));
                if fetched || self.read_ahead(stack, at + done, window)? {
                    self.fetch_next(stack, at + done, window);
                    continue;
                }
                // The read failed: this file reads its own content, and
                // records the problem.
                read.push(None);
            }
            let count = read.len();
            self.write_plain_files(&rest[..count], read, dir.as_fd(), &top.path)?;
            done += count;
        }
        Ok(())
    }

    /// The content of `node`, taken from what was read ahead; `None` if a
    /// blob is missing (used up by files the plan did not count).
    fn take_ahead(&mut self, node: &Node) -> Option<Vec<Vec<u8>>> {
        let mut blobs = Vec::with_capacity(node.content.len());
        for id in &node.content {
            let (bytes, uses) = self.ahead.get_mut(id)?;
            if *uses > 1 {
                *uses -= 1;
                blobs.push(bytes.clone());
            } else {
                blobs.push(self.ahead.remove(id).expect("just found").0);
            }
        }
        Some(blobs)
    }

    /// Puts the read-ahead fetched on the fetch thread in place of what is
    /// left of the last one (files the walk did not reach as planned, which
    /// are planned again if it does). False: none was pending, or it failed.
    fn take_fetched(&mut self) -> Result<bool> {
        let Some(fetch) = self.fetch.as_mut() else {
            return Ok(false);
        };
        let Some((order, uses)) = fetch.pending.take() else {
            return Ok(false);
        };
        let read = match fetch.recv.recv() {
            Ok(read) => read,
            // The thread is gone (it panicked): read here from now on.
            Err(_) => {
                self.fetch = None;
                return Ok(false);
            }
        };
        self.ahead.clear();
        match read {
            Ok(blobs) => {
                for (id, bytes) in order.into_iter().zip(blobs) {
                    self.ahead.insert(id, (bytes, uses[&id]));
                }
                Ok(true)
            }
            Err(e) if e.kind() == ErrorKind::Interrupted => Err(e),
            Err(_) => Ok(false),
        }
    }

    /// Asks the fetch thread for the content of the files the walk restores
    /// after those read ahead now (from entry `from` of the top frame on,
    /// skipping files whose blobs are all held), while these are written.
    fn fetch_next(&mut self, stack: &[Frame], from: usize, window: usize) {
        let Some(fetch) = self.fetch.as_mut() else {
            return;
        };
        if fetch.pending.is_some() {
            return;
        }
        let (order, uses) = count_uses(plan(stack, from, &self.trees, window, &self.ahead));
        if order.is_empty() {
            return;
        }
        if fetch.send.send(order.clone()).is_ok() {
            fetch.pending = Some((order, uses));
        }
    }

    /// Plans the next files the walk will restore, from entry `from` of the
    /// top frame on, and reads their content. Returns false when the read
    /// failed (not interrupted).
    fn read_ahead(&mut self, stack: &[Frame], from: usize, window: usize) -> Result<bool> {
        self.ahead.clear();
        // A fetch still running is for files after those planned here:
        // waited for and dropped, since they are planned again next.
        if let Some(fetch) = self.fetch.as_mut() {
            if fetch.pending.take().is_some() && fetch.recv.recv().is_err() {
                self.fetch = None;
            }
        }
        let (order, uses) = count_uses(plan(stack, from, &self.trees, window, &self.ahead));
        match self.repo.blob_reader().read(BlobKind::Data, &order) {
            Ok(blobs) => {
                for (id, bytes) in order.into_iter().zip(blobs) {
                    self.ahead.insert(id, (bytes, uses[&id]));
                }
                Ok(true)
            }
            Err(e) if e.kind() == ErrorKind::Interrupted => Err(e),
            Err(_) => Ok(false),
        }
    }
}

/// The distinct blobs of `files` in order, and how many of them use each.
fn count_uses(files: Vec<&Node>) -> (Vec<BlobId>, HashMap<BlobId, usize>) {
    let mut uses: HashMap<BlobId, usize> = HashMap::new();
    let mut order = Vec::new();
    for node in files {
        for id in &node.content {
            let count = uses.entry(*id).or_insert(0);
            if *count == 0 {
                order.push(*id);
            }
            *count += 1;
        }
    }
    (order, uses)
}

/// The plain files of at most `window` blobs that the walk restores next,
/// in its order, from entry `from` of the top frame: the rest of that
/// directory (and the directories in it whose trees were read ahead), then
/// the rest of each directory below it on the stack; up to `AHEAD_BYTES`
/// of content or `AHEAD_FILES` files. Files whose blobs are all in `held`
/// are passed over. The first is the top frame's entry `from` itself,
/// unless it is held.
fn plan<'t, V>(
    stack: &'t [Frame],
    from: usize,
    trees: &'t HashMap<BlobId, Tree>,
    window: usize,
    held: &HashMap<BlobId, V>,
) -> Vec<&'t Node> {
    let mut levels: Vec<(&'t [Node], usize)> =
        stack.iter().map(|f| (&f.tree.nodes[..], f.next)).collect();
    if let Some(top) = levels.last_mut() {
        top.1 = from;
    }
    let (mut files, mut bytes) = (Vec::new(), 0u64);
    while let Some((nodes, next)) = levels.last_mut() {
        let Some(node) = nodes.get(*next) else {
            levels.pop();
            continue;
        };
        *next += 1;
        if plain(node) && node.content.len() <= window {
            if node.content.iter().all(|id| held.contains_key(id)) {
                continue;
            }
            files.push(node);
            bytes += node.size;
            if bytes >= AHEAD_BYTES || files.len() >= AHEAD_FILES {
                break;
            }
        } else if node.kind == NodeKind::Dir {
            // A tree not read ahead (or already taken): its files are
            // planned when the walk gets there.
            if let Some(tree) = node.subtree.and_then(|id| trees.get(&id)) {
                levels.push((&tree.nodes[..], 0));
            }
        }
    }
    files
}

#[cfg(test)]
mod tests {
    use crate::engine::archiver::{backup_paths, BackupOptions};
    use crate::engine::repository::{InitOptions, Repository};
    use crate::engine::restorer::{restore, RestoreOptions};
    use crate::format::crypto::KdfParams;
    use crate::storage::backend::{Backend, MemoryBackend};
    use std::path::Path;
    use std::sync::Arc;

    fn write(path: &Path, seed: u32, len: usize) {
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        let mut state = seed | 1;
        let bytes: Vec<u8> = (0..len)
            .map(|_| {
                state ^= state << 13;
                state ^= state >> 17;
                state ^= state << 5;
                state as u8
            })
            .collect();
        std::fs::write(path, bytes).unwrap();
    }

    /// The files under `root`, by relative path.
    fn files(root: &Path) -> Vec<(std::path::PathBuf, Vec<u8>)> {
        let mut out = Vec::new();
        let mut dirs = vec![root.to_path_buf()];
        while let Some(dir) = dirs.pop() {
            for entry in std::fs::read_dir(&dir).unwrap() {
                let path = entry.unwrap().path();
                if path.is_dir() {
                    dirs.push(path);
                } else {
                    let rel = path.strip_prefix(root).unwrap().to_path_buf();
                    out.push((rel, std::fs::read(&path).unwrap()));
                }
            }
        }
        out.sort();
        out
    }

    /// A tree that needs several read-aheads (more than `AHEAD_BYTES` of
    /// small files over many directories, identical directories sharing a
    /// tree, repeated and empty files, a file larger than a window, a
    /// chain of single subdirectories) restores byte for byte from a
    /// remote backend, as from a local one.
    #[test]
    fn a_tree_of_many_directories_restores_exactly_from_a_remote_backend() {
        let src = tempfile::tempdir().unwrap();
        for d in 0..30u32 {
            for f in 0..25u32 {
                let len = 1 + (d as usize * 7919 + f as usize * 104_729) % 90_000;
                write(&src.path().join(format!("d{d}/f{f}")), d * 100 + f, len);
            }
            std::fs::write(src.path().join(format!("d{d}/empty")), b"").unwrap();
        }
        for same in ["same1/x", "same2/x"] {
            write(&src.path().join(same).join("file"), 7, 5000);
        }
        std::fs::write(src.path().join("zeros"), vec![0u8; 3 << 20]).unwrap();
        write(&src.path().join("a/b/c/d/e/big"), 9, 12 << 20);
        let mut restored = Vec::new();
        for connections in [None, Some(3)] {
            let backend: Arc<dyn Backend> = match connections {
                Some(n) => Arc::new(MemoryBackend::with_connections(n)),
                None => Arc::new(MemoryBackend::new()),
            };
            let options = InitOptions {
                kdf: KdfParams {
                    memory_kib: 8,
                    iterations: 1,
                    parallelism: 1,
                },
                pack_size_target: 2 << 20,
                ..InitOptions::default()
            };
            Repository::init(backend.clone(), b"pw", &options).unwrap();
            let cache = tempfile::tempdir().unwrap();
            let mut repo = Repository::open(backend, b"pw", Some(cache.path()))
                .unwrap()
                .load_index()
                .unwrap();
            assert_eq!(repo.blob_reader().remote(), connections.is_some());
            let lock = repo.lock_shared(std::time::Duration::ZERO).unwrap();
            let done = backup_paths(
                &mut repo,
                &lock,
                &[src.path().to_path_buf()],
                &BackupOptions::default(),
            )
            .unwrap();
            let target = tempfile::tempdir().unwrap();
            let subpath = src.path().to_str().unwrap();
            let outcome = restore(
                &repo,
                &done.snapshot,
                subpath,
                target.path(),
                &RestoreOptions::default(),
            )
            .unwrap();
            assert!(outcome.problems.is_empty(), "{:?}", outcome.problems);
            restored.push(files(target.path()));
        }
        assert_eq!(restored[0].len(), 30 * 26 + 4);
        assert!(restored[0] == files(src.path()));
        assert!(restored[1] == restored[0]);
    }
}
