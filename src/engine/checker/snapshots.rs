//! The snapshots: every snapshot's trees walked through the checker's own
//! table, every blob they use marked, and every file or directory that
//! cannot be restored in full named with the snapshot it belongs to.

use crate::engine::checker::report::{CheckReport, Object, Status, LISTED_PER_KIND_MAX};
use crate::engine::checker::table::Table;
use crate::engine::repository::Repository;
use crate::error::{ErrorKind, Result};
use crate::format::id::{BlobId, SnapshotId};
use crate::format::pack::BlobKind;
use crate::format::snapshot::Snapshot;
use crate::format::tree::{NodeKind, Tree, TREE_DEPTH_MAX};
use crate::storage::backend::FileKind;
use std::collections::{HashMap, HashSet};

#[derive(Clone, Copy, PartialEq, Eq)]
enum TreeState {
    /// Restorable in full; how many levels of trees it holds (1: no
    /// directories in it).
    Clean(usize),
    Damaged,
}

impl TreeState {
    /// This state after a child's (one level further down).
    fn with_child(self, child: TreeState) -> TreeState {
        match (self, child) {
            (TreeState::Clean(h), TreeState::Clean(c)) => TreeState::Clean(h.max(c + 1)),
            _ => TreeState::Damaged,
        }
    }
}

/// A tree being walked: the explicit stack's entry, so that a deeply
/// nested snapshot takes heap, not the thread's stack.
struct Frame {
    id: BlobId,
    path: String,
    tree: Tree,
    next: usize,
    state: TreeState,
}

struct Walker<'a, S> {
    repo: &'a Repository<S>,
    table: &'a mut Table,
    report: &'a mut CheckReport,
    trees: HashMap<BlobId, TreeState>,
    reported_trees: HashSet<BlobId>,
    missing_reported: usize,
}

/// Loads every snapshot and walks its trees, oldest first; marks the blobs
/// they use `USED` in the table.
///
/// `ids` were listed before the index was read (see `check`); a snapshot
/// forgotten since is skipped.
pub(crate) fn check_snapshots<S: Sync>(
    repo: &Repository<S>,
    ids: Vec<SnapshotId>,
    table: &mut Table,
    report: &mut CheckReport,
) -> Result<()> {
    let ctx = repo.context();
    let mut snapshots: Vec<(SnapshotId, Snapshot)> = Vec::new();
    for id in ids {
        let loaded = repo.load_snapshot(&id);
        if matches!(&loaded, Err(e) if e.kind() == ErrorKind::NotFound) {
            continue;
        }
        report.snapshots += 1;
        match loaded {
            Ok(s) => snapshots.push((id, s)),
            Err(e) if matches!(e.kind(), ErrorKind::Corrupt | ErrorKind::UnsupportedVersion) => {
                report.problem(Object::snapshot(&id), Status::Damaged, e.to_string());
                report.damaged_snapshots.push(id);
            }
            Err(e) => return Err(e),
        }
    }
    snapshots.sort_by(|a, b| a.1.time.cmp(&b.1.time).then(a.0.cmp(&b.0)));
    let mut walker = Walker {
        repo,
        table,
        report,
        trees: HashMap::new(),
        reported_trees: HashSet::new(),
        missing_reported: 0,
    };
    ctx.progress()
        .start("checking snapshots", 0, snapshots.len() as u64);
    for (id, snapshot) in &snapshots {
        ctx.check_interrupt()?;
        walker.walk(*id, snapshot.tree, "")?;
        ctx.progress().add_items(1);
    }
    walker.report.trees = walker.trees.len() as u64;
    Ok(())
}

impl<S: Sync> Walker<'_, S> {
    /// Walks the trees of snapshot `snap` from `root`, depth first with an
    /// explicit stack; returns whether all of it is restorable. Clean trees
    /// are remembered with their height and not walked again; trees nested
    /// deeper than `TREE_DEPTH_MAX` are damage (no reader walks them).
    fn walk(&mut self, snap: SnapshotId, root: BlobId, path: &str) -> Result<TreeState> {
        if let Some(&state @ TreeState::Clean(_)) = self.trees.get(&root) {
            return Ok(state);
        }
        let Some(frame) = self.open(snap, root, path) else {
            return Ok(TreeState::Damaged);
        };
        let ctx = self.repo.context();
        let mut stack = vec![frame];
        loop {
            let depth = stack.len();
            let top = stack.last_mut().expect("popped only below");
            let Some(node) = top.tree.nodes.get(top.next) else {
                let done = stack.pop().expect("non-empty");
                self.trees.insert(done.id, done.state);
                match stack.last_mut() {
                    Some(parent) => parent.state = parent.state.with_child(done.state),
                    None => return Ok(done.state),
                }
                continue;
            };
            top.next += 1;
            let child = format!("{}/{}", top.path, node.name_str());
            match node.kind {
                NodeKind::Dir => {
                    let Some(sub) = node.subtree else {
                        self.report
                            .damaged_path(snap, child, "directory has no tree".into());
                        top.state = TreeState::Damaged;
                        continue;
                    };
                    let known = self.trees.get(&sub).copied();
                    let height = match known {
                        Some(TreeState::Clean(h)) => h,
                        _ => 1,
                    };
                    if depth + height > TREE_DEPTH_MAX {
                        self.report.damaged_path(
                            snap,
                            child,
                            format!("directories nested more than {TREE_DEPTH_MAX} deep"),
                        );
                        top.state = TreeState::Damaged;
                        continue;
                    }
                    if let Some(state @ TreeState::Clean(_)) = known {
                        top.state = top.state.with_child(state);
                        continue;
                    }
                    ctx.check_interrupt()?;
                    match self.open(snap, sub, &child) {
                        Some(frame) => stack.push(frame),
                        None => top.state = TreeState::Damaged,
                    }
                }
                NodeKind::File => {
                    let bad = self.unreadable_chunks(&node.content);
                    if bad > 0 {
                        let detail = format!("{bad} of {} chunks unreadable", node.content.len());
                        self.report.damaged_path(snap, child, detail);
                        top.state = TreeState::Damaged;
                    }
                }
                _ => {}
            }
        }
    }

    /// Loads tree `id` at `path` as a frame to walk, or reports it damaged.
    fn open(&mut self, snap: SnapshotId, id: BlobId, path: &str) -> Option<Frame> {
        match self.load_tree(&id) {
            Ok(tree) => Some(Frame {
                id,
                path: path.to_string(),
                tree,
                next: 0,
                state: TreeState::Clean(1),
            }),
            Err(message) => {
                if self.reported_trees.insert(id) {
                    self.report.problem(
                        Object::blob(BlobKind::Tree, &id),
                        Status::Damaged,
                        message,
                    );
                }
                let shown = if path.is_empty() { "/" } else { path };
                self.report.damaged_path(
                    snap,
                    shown.to_string(),
                    format!("directory listing (tree {}) unreadable", id.short()),
                );
                self.trees.insert(id, TreeState::Damaged);
                None
            }
        }
    }

    /// Marks a file's chunks used; returns how many cannot be read.
    fn unreadable_chunks(&mut self, content: &[BlobId]) -> usize {
        let mut bad = 0usize;
        for blob in content {
            match self.table.use_blob(BlobKind::Data, blob) {
                Some(true) => {}
                Some(false) => bad += 1,
                None => {
                    bad += 1;
                    if self.missing_reported < LISTED_PER_KIND_MAX {
                        self.missing_reported += 1;
                        self.report.problem(
                            Object::blob(BlobKind::Data, blob),
                            Status::Missing,
                            "referenced by a snapshot but not in any index".into(),
                        );
                    } else {
                        self.report.problems_unlisted += 1;
                    }
                }
            }
        }
        bad
    }

    /// Loads a tree through the checker's own index; the error is the
    /// message for the report.
    fn load_tree(&mut self, id: &BlobId) -> std::result::Result<Tree, String> {
        match self.table.use_blob(BlobKind::Tree, id) {
            None => return Err("referenced but not in any index".into()),
            Some(false) => return Err("its pack is missing or damaged".into()),
            Some(true) => {}
        }
        let (pack, entry) = self
            .table
            .intact_location(BlobKind::Tree, id)
            .expect("use_blob found an intact copy");
        // One ranged read of the blob's sealed bytes: no `Repository`
        // method reads a range of a pack yet.
        let sealed = self
            .repo
            .backend()
            .get_range(
                FileKind::Pack,
                &pack.to_hex(),
                u64::from(entry.offset),
                u64::from(entry.length),
            )
            .map_err(|e| format!("in pack {}: {e}", pack.short()))?;
        let plain = self
            .repo
            .open_blob(&entry, &sealed)
            .map_err(|e| format!("in pack {}: {e}", pack.short()))?;
        Tree::decode(&plain).map_err(|e| e.to_string())
    }
}
