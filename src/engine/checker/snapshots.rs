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
use crate::format::tree::{NodeKind, Tree};
use crate::storage::backend::FileKind;
use std::collections::{HashMap, HashSet};

#[derive(Clone, Copy, PartialEq, Eq)]
enum TreeState {
    Clean,
    Damaged,
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
pub(crate) fn check_snapshots<S: Sync>(
    repo: &Repository<S>,
    table: &mut Table,
    report: &mut CheckReport,
) -> Result<()> {
    let ctx = repo.context();
    let mut snapshots: Vec<(SnapshotId, Snapshot)> = Vec::new();
    for id in repo.list_snapshot_ids()? {
        report.snapshots += 1;
        match repo.load_snapshot(&id) {
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
    /// Walks one tree of snapshot `snap` at `path`; returns whether all of
    /// it is restorable. Clean trees are remembered and not walked again.
    fn walk(&mut self, snap: SnapshotId, tree_id: BlobId, path: &str) -> Result<TreeState> {
        if let Some(&TreeState::Clean) = self.trees.get(&tree_id) {
            return Ok(TreeState::Clean);
        }
        let shown = if path.is_empty() { "/" } else { path };
        let tree = match self.load_tree(&tree_id) {
            Ok(tree) => tree,
            Err(message) => {
                if self.reported_trees.insert(tree_id) {
                    self.report.problem(
                        Object::blob(BlobKind::Tree, &tree_id),
                        Status::Damaged,
                        message,
                    );
                }
                self.report.damaged_path(
                    snap,
                    shown.to_string(),
                    format!("directory listing (tree {}) unreadable", tree_id.short()),
                );
                self.trees.insert(tree_id, TreeState::Damaged);
                return Ok(TreeState::Damaged);
            }
        };
        let mut state = TreeState::Clean;
        for node in &tree.nodes {
            let child = format!("{path}/{}", node.name_str());
            match node.kind {
                NodeKind::Dir => match node.subtree {
                    Some(sub) => {
                        if self.walk(snap, sub, &child)? == TreeState::Damaged {
                            state = TreeState::Damaged;
                        }
                    }
                    None => {
                        self.report
                            .damaged_path(snap, child, "directory has no tree".into());
                        state = TreeState::Damaged;
                    }
                },
                NodeKind::File => {
                    let mut unreadable = 0usize;
                    let mut missing = 0usize;
                    for blob in &node.content {
                        match self.table.use_blob(BlobKind::Data, blob) {
                            Some(true) => {}
                            Some(false) => unreadable += 1,
                            None => {
                                missing += 1;
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
                    if unreadable + missing > 0 {
                        self.report.damaged_path(
                            snap,
                            child,
                            format!(
                                "{} of {} chunks unreadable",
                                unreadable + missing,
                                node.content.len()
                            ),
                        );
                        state = TreeState::Damaged;
                    }
                }
                _ => {}
            }
        }
        self.trees.insert(tree_id, state);
        Ok(state)
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
