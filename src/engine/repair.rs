//! `repair index` and `repair snapshots`: the two ways back from damage.
//!
//! `repair index` rebuilds the index from the pack headers, for when index
//! files are lost or damaged. `repair snapshots` rewrites snapshots whose
//! data is partly gone, dropping only the files and directories that can no
//! longer be restored, so what remains restores cleanly. Both follow the
//! write order of docs/FORMAT.md: new files are stored before anything they
//! replace is deleted, so a crash at any point loses nothing.

use crate::engine::prune::IndexWriter;
use crate::engine::repository::{BlobWriter, Repository};
use crate::error::{ErrorKind, Result};
use crate::format::id::{BlobId, IndexId, PackId, SnapshotId};
use crate::format::index_file::IndexPack;
use crate::format::pack::{self, BlobKind};
use crate::format::tree::{Node, NodeKind, Tree, TREE_DEPTH_MAX};
use crate::storage::lock::{ExclusiveLock, LockGuard};
use rayon::prelude::*;
use serde::Serialize;
use std::collections::HashMap;

/// Packs whose headers `repair index` holds at once.
const REPAIR_BATCH_PACKS: usize = 256;

#[derive(Debug, Clone, Serialize)]
pub struct UnreadablePack {
    pub pack: PackId,
    pub reason: String,
}

#[derive(Debug, Default, Clone, Serialize)]
pub struct RepairIndexOutcome {
    pub packs_indexed: u64,
    pub blobs_indexed: u64,
    /// Damaged packs that could not be salvaged; their blobs are not
    /// indexed and the files are left in place.
    pub packs_unreadable: Vec<UnreadablePack>,
    pub index_files_written: u64,
    pub new_index_files: Vec<IndexId>,
    pub index_files_removed: u64,
    /// Damaged packs whose intact blobs were copied to new packs (and which
    /// were then deleted).
    pub packs_salvaged: u64,
    pub blobs_salvaged: u64,
    pub blobs_lost: u64,
}

/// Rebuilds every index file from the pack headers. The caller holds an
/// exclusive lock. New index files (naming the old ones as superseded) are
/// stored before the old ones are deleted.
pub fn repair_index(
    repo: &mut Repository,
    lock: &ExclusiveLock,
    read_data: bool,
) -> Result<RepairIndexOutcome> {
    let ctx = repo.context().clone();
    let old: Vec<IndexId> = {
        let mut ids: Vec<IndexId> = repo.list_index_ids()?.into_iter().collect();
        ids.sort();
        ids
    };
    let packs = repo.list_packs()?;
    let repo_ref: &Repository = repo;
    let mut outcome = RepairIndexOutcome::default();
    // Per pack: its entries from the header, and why it is damaged (an
    // unreadable header, or with --read-data a blob that fails to verify).
    // Packs are read in batches whose entries go to the new index files
    // at once, so memory does not grow with the repository.
    type Read = (PackId, Option<Vec<pack::PackEntry>>, Option<String>);
    let mut index = IndexWriter::new(repo_ref, lock);
    let mut unreadable = Vec::new();
    for batch in packs.chunks(REPAIR_BATCH_PACKS) {
        let reads: Vec<Result<Read>> = batch
            .par_iter()
            .map(|&(id, size)| {
                ctx.check_interrupt()?;
                let entries = match repo_ref.read_pack_header(&id, size) {
                    Ok(entries) => entries,
                    Err(e) if matches!(e.kind(), ErrorKind::Corrupt | ErrorKind::NotFound) => {
                        return Ok((id, None, Some(e.to_string())))
                    }
                    Err(e) => return Err(e),
                };
                if read_data {
                    // A pack with a blob that fails to verify is salvaged like
                    // one without a header: its good blobs move to a new pack,
                    // and the damaged ones drop out of the index (so `repair
                    // snapshots` and the next backup see them as missing).
                    let bytes = repo_ref.read_pack(&id)?;
                    for e in &entries {
                        // The pack may have shrunk since its header was read.
                        let start = e.offset as usize;
                        let sealed = bytes.get(start..start + e.length as usize).unwrap_or(&[]);
                        if let Err(err) = repo_ref.open_blob(e, sealed) {
                            let why = format!("{:?} blob {}: {err}", e.kind, e.id);
                            return Ok((id, Some(entries), Some(why)));
                        }
                    }
                }
                Ok((id, Some(entries), None))
            })
            .collect();
        for read in reads {
            match read? {
                (id, Some(entries), None) => {
                    outcome.packs_indexed += 1;
                    outcome.blobs_indexed += entries.len() as u64;
                    index.add(IndexPack { id, entries })?;
                }
                (id, entries, Some(why)) => unreadable.push((id, why, entries)),
                (_, None, None) => unreachable!("a pack without entries has a reason"),
            }
        }
    }
    // Packs without a readable header (e.g. truncated): move the blobs that
    // still verify, found through the old index files, into new packs.
    let mut salvaged_from = Vec::new();
    if !unreadable.is_empty() {
        let (new_packs, done) = salvage(repo_ref, lock, &old, &unreadable, &mut outcome)?;
        for p in new_packs {
            outcome.packs_indexed += 1;
            outcome.blobs_indexed += p.entries.len() as u64;
            index.add(p)?;
        }
        salvaged_from = done;
    }
    for (pack, reason, _) in unreadable {
        if !salvaged_from.contains(&pack) {
            outcome
                .packs_unreadable
                .push(UnreadablePack { pack, reason });
        }
    }
    outcome.packs_salvaged = salvaged_from.len() as u64;
    let written = index.finish(&old)?;
    outcome.index_files_written = written.len() as u64;
    outcome.new_index_files = written.iter().copied().collect();
    outcome.new_index_files.sort();
    crate::failpoint::hit!("repair-index-before-delete");
    for id in &old {
        if !written.contains(id) {
            repo.delete_index_file(id, lock)?;
            outcome.index_files_removed += 1;
        }
    }
    // Only now, with the salvaged blobs indexed elsewhere, may the damaged
    // packs go.
    for id in &salvaged_from {
        repo.delete_pack(id, lock)?;
    }
    repo.reload_index()?;
    Ok(outcome)
}

fn dropped(path: String, reason: impl Into<String>) -> DroppedPath {
    DroppedPath {
        path,
        reason: reason.into(),
    }
}

/// Copies the blobs of damaged packs that still verify into new packs.
/// Their places come from the old index files. Returns the new packs and
/// the damaged packs that were fully dealt with.
fn salvage(
    repo: &Repository,
    lock: &LockGuard,
    old_index_files: &[IndexId],
    damaged: &[(PackId, String, Option<Vec<pack::PackEntry>>)],
    outcome: &mut RepairIndexOutcome,
) -> Result<(Vec<IndexPack>, Vec<PackId>)> {
    let wanted: HashMap<PackId, usize> = damaged
        .iter()
        .enumerate()
        .map(|(n, (id, _, _))| (*id, n))
        .collect();
    // Where each blob is: from the header when it could be read, else from
    // the old index files.
    let mut entries: Vec<Vec<pack::PackEntry>> = damaged
        .iter()
        .map(|(_, _, header)| header.clone().unwrap_or_default())
        .collect();
    for id in old_index_files {
        let Ok(file) = repo.load_index_file(id) else {
            continue;
        };
        for p in file.packs {
            if let Some(&n) = wanted.get(&p.id) {
                if damaged[n].2.is_none() {
                    entries[n].extend(p.entries);
                }
            }
        }
    }
    let mut builder = pack::PackBuilder::new();
    let mut new_packs = Vec::new();
    let mut done = Vec::new();
    let mut seen = std::collections::HashSet::new();
    for ((id, _, _), entries) in damaged.iter().zip(entries) {
        if entries.is_empty() {
            continue; // Nothing known about it: leave it for a human.
        }
        let bytes = match repo.read_pack(id) {
            Ok(bytes) => bytes,
            Err(e) if e.kind() == ErrorKind::NotFound => continue,
            Err(e) => return Err(e),
        };
        for entry in entries {
            let start = entry.offset as usize;
            if !seen.insert((entry.kind, entry.id)) {
                continue;
            }
            let Some(sealed) = bytes
                .get(start..start + entry.length as usize)
                .filter(|sealed| repo.open_blob(&entry, sealed).is_ok())
            else {
                outcome.blobs_lost += 1;
                continue;
            };
            outcome.blobs_salvaged += 1;
            if builder.len() + sealed.len() > repo.config().pack_size_target as usize
                || builder.is_full()
            {
                new_packs.push(repo.store_pack(std::mem::take(&mut builder), lock)?.0);
            }
            builder.add(pack::SealedBlob {
                kind: entry.kind,
                codec: entry.codec,
                id: entry.id,
                raw_length: entry.raw_length,
                bytes: sealed.to_vec(),
            });
        }
        done.push(*id);
    }
    if !builder.is_empty() {
        new_packs.push(repo.store_pack(builder, lock)?.0);
    }
    Ok((new_packs, done))
}

#[derive(Debug, Clone, Serialize)]
pub struct DroppedPath {
    pub path: String,
    pub reason: String,
}

#[derive(Debug, Clone, Serialize)]
pub struct RepairedSnapshot {
    pub original: SnapshotId,
    /// The rewritten snapshot; `None` when nothing of it could be saved
    /// (its root directory listing is unreadable).
    pub repaired: Option<SnapshotId>,
    /// Paths dropped from the snapshot, with why.
    pub dropped: Vec<DroppedPath>,
    /// Whether any of it can be kept (false: root listing unreadable).
    pub restorable: bool,
    /// A repaired copy existed already (an earlier run without --forget).
    pub already_repaired: bool,
    /// Whether the damaged original was deleted (`--forget`).
    pub forgotten: bool,
}

#[derive(Debug, Default, Clone, Serialize)]
pub struct RepairSnapshotsOutcome {
    pub dry_run: bool,
    pub snapshots_checked: u64,
    pub snapshots: Vec<RepairedSnapshot>,
}

/// Rewrites every snapshot that references blobs that are missing from the
/// index or lie in missing or truncated packs. The caller holds an
/// exclusive lock and has called `load_index`. With `dry_run`, reports what
/// it would do and writes nothing.
pub fn repair_snapshots(
    repo: &mut Repository,
    lock: &ExclusiveLock,
    forget: bool,
    dry_run: bool,
) -> Result<RepairSnapshotsOutcome> {
    let ctx = repo.context().clone();
    let pack_sizes: HashMap<PackId, u64> = repo.list_packs()?.into_iter().collect();
    let ids = repo.list_snapshot_ids()?;
    let mut outcome = RepairSnapshotsOutcome {
        dry_run,
        ..RepairSnapshotsOutcome::default()
    };
    // Originals that already have a repaired copy are not repaired again
    // (a second run without --forget would otherwise copy them again).
    let mut already_repaired = std::collections::HashSet::new();
    for id in &ids {
        if let Ok(s) = repo.load_snapshot(id) {
            if let Some(original) = s.original {
                already_repaired.insert(original);
            }
        }
    }
    let repo_ref: &Repository = repo;
    let mut rewriter = Rewriter {
        repo: repo_ref,
        pack_sizes,
        writer: (!dry_run).then(|| repo_ref.blob_writer(lock)),
        rewritten: HashMap::new(),
        dropped: Vec::new(),
    };
    let mut todo = Vec::new();
    for id in ids {
        ctx.check_interrupt()?;
        let snapshot = match repo_ref.load_snapshot(&id) {
            Ok(s) => s,
            // A damaged snapshot file cannot be rewritten: there is nothing
            // to read. `check` reports it; `forget` removes it.
            Err(e) if e.kind() == ErrorKind::Corrupt => continue,
            Err(e) => return Err(e),
        };
        outcome.snapshots_checked += 1;
        if already_repaired.contains(&id) {
            if forget {
                if !dry_run {
                    repo_ref.delete_snapshot(&id, lock)?;
                }
                outcome.snapshots.push(RepairedSnapshot {
                    original: id,
                    repaired: None,
                    dropped: Vec::new(),
                    restorable: true,
                    already_repaired: true,
                    forgotten: !dry_run,
                });
            }
            continue;
        }
        rewriter.dropped.clear();
        let root = rewriter.rewrite(snapshot.tree, "")?;
        if root == Some(snapshot.tree) {
            continue;
        }
        todo.push((id, snapshot, root, std::mem::take(&mut rewriter.dropped)));
    }
    // Nothing was written with `dry_run`; the empty writer's token is then
    // never used to save a snapshot.
    let written = match rewriter.writer.take() {
        Some(writer) => writer.finish()?,
        None => repo_ref.blob_writer(lock).finish()?,
    };
    for (id, snapshot, root, dropped) in todo {
        let mut repaired = None;
        if let (Some(root), false) = (root, dry_run) {
            let mut copy = snapshot.clone();
            copy.tree = root;
            copy.original = Some(id);
            copy.parent = None;
            if !copy.has_tag("repaired") {
                copy.tags.push("repaired".into());
                copy.tags.sort();
            }
            repaired = Some(repo_ref.save_snapshot(&copy, &written)?);
        }
        let forgotten = forget && !dry_run;
        if forgotten {
            repo_ref.delete_snapshot(&id, lock)?;
        }
        outcome.snapshots.push(RepairedSnapshot {
            original: id,
            repaired,
            dropped,
            restorable: root.is_some(),
            already_repaired: false,
            forgotten,
        });
    }
    Ok(outcome)
}

struct Rewriter<'r> {
    repo: &'r Repository,
    pack_sizes: HashMap<PackId, u64>,
    writer: Option<BlobWriter<'r>>,
    /// Old tree id → new one (`None`: unreadable). Shared across snapshots.
    rewritten: HashMap<BlobId, Option<BlobId>>,
    dropped: Vec<DroppedPath>,
}

impl Rewriter<'_> {
    fn blob_readable(&self, kind: BlobKind, id: &BlobId) -> Result<bool> {
        Ok(match self.repo.locate(kind, id)? {
            None => false,
            Some(loc) => self.pack_sizes.get(&loc.pack).is_some_and(|&size| {
                u64::from(loc.entry.offset) + u64::from(loc.entry.length) <= size
            }),
        })
    }

    /// Why a file cannot be restored in full, or `None` if it can.
    fn file_damage(&self, node: &Node) -> Result<Option<String>> {
        let mut bad = 0;
        for blob in &node.content {
            if !self.blob_readable(BlobKind::Data, blob)? {
                bad += 1;
            }
        }
        Ok((bad > 0).then(|| format!("{bad} of {} chunks unreadable", node.content.len())))
    }

    /// Returns the id of the repaired tree, or `None` if it is unreadable.
    /// Bottom-up with an explicit stack: a tree's depth comes from the
    /// repository, which may be hostile. Directories nested deeper than
    /// `TREE_DEPTH_MAX` are dropped like unreadable ones.
    fn rewrite(&mut self, root: BlobId, path: &str) -> Result<Option<BlobId>> {
        let mut stack = match self.enter(root, path)? {
            Enter::Done(done) => return Ok(done),
            Enter::Tree(level) => vec![*level],
        };
        // The result of the subtree just finished, for the level below it.
        let mut finished: Option<Option<BlobId>> = None;
        loop {
            let depth = stack.len();
            let top = stack.last_mut().expect("popped only below");
            if let Some(result) = finished.take() {
                let (mut node, child) = top.waiting.take().expect("a subtree was entered");
                match result {
                    Some(new) => {
                        node.subtree = Some(new);
                        top.kept.push(node);
                    }
                    None => self
                        .dropped
                        .push(dropped(child, "directory listing unreadable")),
                }
            }
            let Some(node) = top.rest.next() else {
                let done = stack.pop().expect("non-empty");
                let new_tree = Tree {
                    nodes: done.kept,
                    version: done.version,
                };
                let new_id = match &mut self.writer {
                    Some(writer) => writer.save_tree(&new_tree)?,
                    // Dry run: the id the tree would get, without storing it.
                    None => self.repo.blob_id(&new_tree.encode()),
                };
                self.rewritten.insert(done.id, Some(new_id));
                if stack.is_empty() {
                    return Ok(Some(new_id));
                }
                finished = Some(Some(new_id));
                continue;
            };
            let child = format!("{}/{}", top.path, node.name_str());
            match node.kind {
                NodeKind::Dir => {
                    let Some(sub) = node.subtree else {
                        self.dropped
                            .push(dropped(child, "directory has no listing"));
                        continue;
                    };
                    if depth >= TREE_DEPTH_MAX {
                        self.dropped.push(dropped(
                            child,
                            format!("directories nested more than {TREE_DEPTH_MAX} deep"),
                        ));
                        continue;
                    }
                    let entered = self.enter(sub, &child)?;
                    top.waiting = Some((node, child));
                    match entered {
                        Enter::Done(done) => finished = Some(done),
                        Enter::Tree(level) => stack.push(*level),
                    }
                }
                NodeKind::File => match self.file_damage(&node)? {
                    None => top.kept.push(node),
                    Some(reason) => self.dropped.push(dropped(child, reason)),
                },
                _ => top.kept.push(node),
            }
        }
    }

    /// Starts rewriting tree `id` at `path`: its result if known (or if it
    /// is unreadable), else a level to work through.
    fn enter(&mut self, id: BlobId, path: &str) -> Result<Enter> {
        if let Some(&done) = self.rewritten.get(&id) {
            if done != Some(id) {
                // Same damage as met before in another snapshot: list it
                // again for this one.
                self.collect_dropped(id, path)?;
            }
            return Ok(Enter::Done(done));
        }
        let Some(tree) = self.load(&id) else {
            self.rewritten.insert(id, None);
            return Ok(Enter::Done(None));
        };
        Ok(Enter::Tree(Box::new(Level {
            id,
            path: path.to_string(),
            version: tree.version,
            kept: Vec::with_capacity(tree.nodes.len()),
            rest: tree.nodes.into_iter(),
            waiting: None,
        })))
    }

    fn load(&self, id: &BlobId) -> Option<Tree> {
        if !self.blob_readable(BlobKind::Tree, id).unwrap_or(false) {
            return None;
        }
        self.repo.load_tree(id).ok()
    }

    /// Re-lists what a tree rewritten earlier dropped, under a new path.
    /// Depth first with an explicit stack, in the order `rewrite` met it.
    fn collect_dropped(&mut self, id: BlobId, path: &str) -> Result<()> {
        let Some(tree) = self.load(&id) else {
            return Ok(());
        };
        let reversed = |mut tree: Tree| {
            tree.nodes.reverse();
            tree.nodes
        };
        let mut stack = vec![(reversed(tree), path.to_string())];
        while let Some((nodes, dir)) = stack.last_mut() {
            let Some(node) = nodes.pop() else {
                stack.pop();
                continue;
            };
            let child = format!("{dir}/{}", node.name_str());
            match (node.kind, node.subtree) {
                (NodeKind::Dir, Some(sub)) => match self.rewritten.get(&sub).copied() {
                    Some(None) => self
                        .dropped
                        .push(dropped(child, "directory listing unreadable")),
                    Some(Some(new)) if new != sub && stack.len() < TREE_DEPTH_MAX => {
                        if let Some(tree) = self.load(&sub) {
                            stack.push((reversed(tree), child));
                        }
                    }
                    _ => {}
                },
                (NodeKind::File, _) => {
                    if let Some(reason) = self.file_damage(&node)? {
                        self.dropped.push(dropped(child, reason));
                    }
                }
                _ => {}
            }
        }
        Ok(())
    }
}

/// What `Rewriter::enter` found.
enum Enter {
    /// The tree's result: rewritten before, or unreadable (`None`).
    Done(Option<BlobId>),
    Tree(Box<Level>),
}

/// A tree being rewritten: the nodes still to look at, those kept, and the
/// directory node (with its path) whose subtree is being rewritten.
struct Level {
    id: BlobId,
    path: String,
    version: u32,
    rest: std::vec::IntoIter<Node>,
    kept: Vec<Node>,
    waiting: Option<(Node, String)>,
}

#[cfg(test)]
mod tests;
