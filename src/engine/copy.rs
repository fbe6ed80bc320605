//! `copy`: snapshots from one repository into another (restic's `copy`).
//!
//! Blobs are read from the source, verified, and sealed again under the
//! destination's key; only those the destination lacks are stored. When
//! the two repositories share the blob-id key (the destination was made
//! with `init --copy-chunker-params`), a blob has the same id in both: it
//! is looked up by id and read from the source only when missing, and trees
//! are copied as they are. Otherwise every data blob of a snapshot is read
//! and its id computed under the destination's key, and each tree is
//! rewritten bottom-up to name the new ids. Chunks are never cut again: a
//! blob's content is the content, whatever chunker made it.
//!
//! Each snapshot is copied with its own `BlobWriter` and written only after
//! the writer's `finish`, so a copy stopped at any point leaves no snapshot
//! whose data is missing. A copied snapshot keeps its time, host, paths,
//! tags and summary; `parent` is dropped (it names a source snapshot) and
//! `original` names the source snapshot (or keeps the source's own
//! `original`), which is how a later copy knows to skip it.

use crate::engine::repository::{BlobWriter, Repository, WriteStats};
use crate::error::{Error, Result};
use crate::format::id::{BlobId, SnapshotId};
use crate::format::pack::{BlobKind, SealedBlob};
use crate::format::snapshot::{select, Snapshot, SnapshotFilter};
use crate::format::tree::{Node, NodeKind, Tree, TREE_DEPTH_MAX};
use crate::storage::lock::LockGuard;
use rayon::prelude::*;
use std::collections::{HashMap, HashSet};

/// Data blobs (of the files of one directory) read and sealed at once (in
/// parallel): at most this many, and a batch ends once it holds `BATCH_BYTES` of plaintext (by
/// the source's index), so memory is bounded whatever the size of the file
/// or of the source's chunks.
const BATCH: usize = 32;
const BATCH_BYTES: u64 = 32 * 1024 * 1024;
/// `BATCH` for a remote source, whose blobs are fetched as merged ranged
/// reads (`BlobReader`): a directory of small files in a few requests.
const BATCH_REMOTE: usize = 1024;

/// Most source trees whose copies are remembered (about 40 MiB): past it
/// the memory is given back and trees met again are walked again, which
/// costs reads but stores nothing twice.
const TREES_REMEMBERED_MAX: usize = 500_000;

/// Two repositories give this the same blob id exactly when they share the
/// blob-id key.
const PROBE: &[u8] = b"cairn copy: is the blob-id key shared?";

/// Which snapshots to copy.
#[derive(Debug, Clone, Default)]
pub struct CopyOptions {
    /// `--host/--tag/--path`: only snapshots that match.
    pub filter: SnapshotFilter,
    /// Ids, id prefixes or `latest`, among the snapshots `filter` matches;
    /// empty: all of those.
    pub snapshots: Vec<String>,
}

/// One source snapshot and what became of it.
#[derive(Debug, Clone)]
pub struct CopiedSnapshot {
    pub source: SnapshotId,
    /// The source snapshot, as read.
    pub snapshot: Snapshot,
    /// Its copy in the destination: written now, or found there.
    pub copy: SnapshotId,
    /// The destination had a copy already: nothing was written.
    pub already_copied: bool,
    /// What this snapshot's copy added to the destination.
    pub stats: WriteStats,
}

#[derive(Debug, Clone, Default)]
pub struct CopyOutcome {
    /// Oldest first.
    pub snapshots: Vec<CopiedSnapshot>,
    /// The repositories do not share the blob-id key: ids were computed
    /// again under the destination's and trees rewritten.
    pub rehashed: bool,
}

/// Copies the selected snapshots of `src` (under its shared lock
/// `src_lock`) that `dst` does not have yet into `dst` (under `dst_lock`,
/// shared, as for a backup).
pub fn copy(
    src: &mut Repository,
    src_lock: &LockGuard,
    dst: &mut Repository,
    dst_lock: &LockGuard,
    options: &CopyOptions,
) -> Result<CopyOutcome> {
    src.ensure_locked(src_lock)?;
    dst.ensure_locked(dst_lock)?;
    if src.config().id == dst.config().id {
        return Err(Error::invalid(
            "the source and the destination are the same repository",
        ));
    }
    let chosen = choose(src, options)?;
    // What the destination has: by the id a copy keeps of its source (its
    // `original`), and by its own id (a snapshot copied back where it came
    // from).
    let mut copies: HashMap<SnapshotId, Vec<(SnapshotId, Snapshot)>> = HashMap::new();
    for (id, s) in dst.snapshots(&SnapshotFilter::default())? {
        if let Some(original) = s.original {
            copies.entry(original).or_default().push((id, s.clone()));
        }
        copies.entry(id).or_default().push((id, s));
    }
    let (src, dst): (&Repository, &Repository) = (src, dst);
    let rehashed = src.blob_id(PROBE) != dst.blob_id(PROBE);
    let ctx = dst.context();
    ctx.progress().start("copying", 0, chosen.len() as u64);
    let mut trees = HashMap::new();
    let mut outcome = CopyOutcome {
        snapshots: Vec::new(),
        rehashed,
    };
    for (id, snapshot) in chosen {
        ctx.check_interrupt()?;
        let original = snapshot.original.unwrap_or(id);
        let found = copies
            .get(&original)
            .and_then(|list| list.iter().find(|(_, d)| similar(d, &snapshot)));
        if let Some((copy, _)) = found {
            outcome.snapshots.push(CopiedSnapshot {
                source: id,
                snapshot,
                copy: *copy,
                already_copied: true,
                stats: WriteStats::default(),
            });
            ctx.progress().add_items(1);
            continue;
        }
        let mut writer = dst.blob_writer(dst_lock);
        let root = Copier {
            src,
            dst,
            writer: &mut writer,
            rehashed,
            trees: &mut trees,
        }
        .tree(snapshot.tree)?;
        let written = writer.finish()?;
        // Tests stop here: every blob stored and indexed, no snapshot yet.
        crate::failpoint::hit!("copy-before-snapshot");
        // Stopped while the last pack or index file was written: what is
        // stored stays for the next run, but no snapshot is added.
        ctx.check_interrupt()?;
        let mut copy = snapshot.clone();
        copy.tree = root;
        copy.parent = None;
        copy.original = Some(original);
        let copy_id = dst.save_snapshot(&copy, &written)?;
        copies
            .entry(original)
            .or_default()
            .push((copy_id, copy.clone()));
        outcome.snapshots.push(CopiedSnapshot {
            source: id,
            snapshot,
            copy: copy_id,
            already_copied: false,
            stats: written.stats,
        });
        ctx.progress().add_items(1);
    }
    ctx.progress().finish();
    Ok(outcome)
}

/// The source snapshots to copy, oldest first.
fn choose(src: &mut Repository, options: &CopyOptions) -> Result<Vec<(SnapshotId, Snapshot)>> {
    let all = src.snapshots(&options.filter)?;
    if options.snapshots.is_empty() {
        return Ok(all);
    }
    let mut seen = HashSet::new();
    let mut chosen = Vec::new();
    for selector in &options.snapshots {
        let (id, s) = select(&all, selector)?;
        if seen.insert(*id) {
            chosen.push((*id, s.clone()));
        }
    }
    chosen.sort_by(|a, b| a.1.time.cmp(&b.1.time).then(a.0.cmp(&b.0)));
    Ok(chosen)
}

/// Whether `copy` is a copy of `source` (restic's test: everything but the
/// tree, whose id depends on the repository, the parent, the original and
/// the summary).
fn similar(copy: &Snapshot, source: &Snapshot) -> bool {
    copy.time == source.time
        && copy.hostname == source.hostname
        && copy.username == source.username
        && copy.uid == source.uid
        && copy.gid == source.gid
        && copy.paths == source.paths
        && copy.tags == source.tags
        && copy.source == source.source
        && copy.command == source.command
}

/// One level of the tree walk: a source tree whose nodes are being copied.
struct Level {
    id: BlobId,
    /// The tree's plaintext, stored as it is when ids are shared.
    raw: Vec<u8>,
    version: u32,
    rest: std::vec::IntoIter<Node>,
    done: Vec<Node>,
    /// The directory node whose subtree is being copied.
    waiting: Option<Node>,
}

struct Copier<'a, 'r> {
    src: &'a Repository,
    dst: &'r Repository,
    writer: &'a mut BlobWriter<'r>,
    rehashed: bool,
    /// Source tree id → destination tree id, for trees copied in this run
    /// (each is copied once, however many snapshots share it).
    trees: &'a mut HashMap<BlobId, BlobId>,
}

impl Copier<'_, '_> {
    /// Copies the tree `root` and everything below it; its id in the
    /// destination. Bottom-up with an explicit stack: the depth comes from
    /// the source repository, which may be hostile.
    fn tree(&mut self, root: BlobId) -> Result<BlobId> {
        if let Some(&done) = self.trees.get(&root) {
            return Ok(done);
        }
        let mut stack = vec![self.enter(root)?];
        let mut finished: Option<BlobId> = None;
        loop {
            self.dst.context().check_interrupt()?;
            let depth = stack.len();
            let top = stack.last_mut().expect("popped only below");
            if let Some(new) = finished.take() {
                let mut node = top.waiting.take().expect("a subtree was entered");
                node.subtree = Some(new);
                top.done.push(node);
            }
            let Some(mut node) = top.rest.next() else {
                let level = stack.pop().expect("not empty");
                let new = self.store_tree(level)?;
                if stack.is_empty() {
                    return Ok(new);
                }
                finished = Some(new);
                continue;
            };
            match (node.kind, node.subtree) {
                (NodeKind::Dir, Some(sub)) => {
                    if let Some(&done) = self.trees.get(&sub) {
                        node.subtree = Some(done);
                        top.done.push(node);
                        continue;
                    }
                    if depth >= TREE_DEPTH_MAX {
                        return Err(Error::corrupt(format!(
                            "tree {} nests directories more than {TREE_DEPTH_MAX} deep",
                            top.id
                        )));
                    }
                    top.waiting = Some(node);
                    stack.push(self.enter(sub)?);
                }
                _ => {
                    // With the entries after it up to the next directory:
                    // their blobs are read together, grouped by pack into
                    // merged ranged reads on a remote source (`read_plain`),
                    // not one request per file.
                    let more = top
                        .rest
                        .as_slice()
                        .iter()
                        .take_while(|n| !(n.kind == NodeKind::Dir && n.subtree.is_some()))
                        .count();
                    let mut nodes = vec![node];
                    nodes.extend(top.rest.by_ref().take(more));
                    let ids: Vec<BlobId> = nodes
                        .iter()
                        .flat_map(|n| n.content.iter().copied())
                        .collect();
                    let mut new = self.data_blobs(&ids)?.into_iter();
                    for mut node in nodes {
                        if !node.content.is_empty() {
                            node.content = new.by_ref().take(node.content.len()).collect();
                        }
                        top.done.push(node);
                    }
                }
            }
        }
    }

    fn enter(&self, id: BlobId) -> Result<Level> {
        let raw = self.src.read_blob(BlobKind::Tree, &id)?;
        let tree = Tree::decode(&raw).map_err(|e| e.context(format!("tree {id}")))?;
        Ok(Level {
            id,
            raw: if self.rehashed { Vec::new() } else { raw },
            version: tree.version,
            rest: tree.nodes.into_iter(),
            done: Vec::new(),
            waiting: None,
        })
    }

    /// Stores a finished level's tree unless the destination has it.
    fn store_tree(&mut self, level: Level) -> Result<BlobId> {
        let new = if self.rehashed {
            self.writer.save_tree(&Tree {
                version: level.version,
                nodes: level.done,
            })?
        } else {
            // The same bytes under the same id: nothing in it changed.
            if self.writer.reserve(BlobKind::Tree, level.id)? {
                let sealed = self.seal(BlobKind::Tree, level.id, &level.raw);
                self.writer.add(sealed)?;
            }
            level.id
        };
        if self.trees.len() >= TREES_REMEMBERED_MAX {
            self.trees.clear();
        }
        self.trees.insert(level.id, new);
        Ok(new)
    }

    fn seal(&self, kind: BlobKind, id: BlobId, plain: &[u8]) -> SealedBlob {
        let level = self.dst.config().compression.level;
        self.dst.seal_blob(kind, id, plain, level)
    }

    /// Copies a file's data blobs the destination lacks; their ids there.
    fn data_blobs(&mut self, ids: &[BlobId]) -> Result<Vec<BlobId>> {
        let (src, dst) = (self.src, self.dst);
        let level = dst.config().compression.level;
        let mut out = Vec::with_capacity(ids.len());
        let progress = dst.context().progress();
        let batch_max = match src.blob_reader().remote() {
            true => BATCH_REMOTE,
            false => BATCH,
        };
        let mut rest = ids;
        while !rest.is_empty() {
            let mut len = 0;
            let mut bytes = 0;
            while len < rest.len() && len < batch_max && (len == 0 || bytes < BATCH_BYTES) {
                bytes += src
                    .locate(BlobKind::Data, &rest[len])?
                    .map_or(0, |at| u64::from(at.entry.raw_length));
                len += 1;
            }
            let (batch, after) = rest.split_at(len);
            rest = after;
            dst.context().check_interrupt()?;
            // (id in the destination, plaintext) of the blobs to store.
            let mut todo: Vec<(BlobId, Vec<u8>)> = Vec::new();
            if self.rehashed {
                // The id is known only from the plaintext: read them all.
                let read: Vec<(BlobId, Vec<u8>)> = read_plain(src, batch)?
                    .into_par_iter()
                    .map(|plain| (dst.blob_id(&plain), plain))
                    .collect();
                for (id, plain) in read {
                    progress.add_bytes(plain.len() as u64);
                    out.push(id);
                    if self.writer.reserve(BlobKind::Data, id)? {
                        todo.push((id, plain));
                    }
                }
            } else {
                let mut missing = Vec::new();
                for id in batch {
                    if self.writer.reserve(BlobKind::Data, *id)? {
                        missing.push(*id);
                    }
                }
                let read = read_plain(src, &missing)?;
                for (id, plain) in missing.into_iter().zip(read) {
                    progress.add_bytes(plain.len() as u64);
                    todo.push((id, plain));
                }
                out.extend_from_slice(batch);
            }
            let sealed: Vec<SealedBlob> = todo
                .par_iter()
                .map(|(id, plain)| dst.seal_blob(BlobKind::Data, *id, plain, level))
                .collect();
            for blob in sealed {
                self.writer.add(blob)?;
            }
        }
        Ok(out)
    }
}

/// The plaintext of data blobs, in order: on a remote source through
/// `BlobReader` (grouped by pack into merged ranged reads on IO threads),
/// on a local one a blob per task on the CPU pool, as before.
fn read_plain(src: &Repository, ids: &[BlobId]) -> Result<Vec<Vec<u8>>> {
    let reader = src.blob_reader();
    if reader.remote() {
        return reader.read(BlobKind::Data, ids);
    }
    ids.par_iter()
        .map(|id| src.read_blob(BlobKind::Data, id))
        .collect()
}

#[cfg(test)]
mod tests;
