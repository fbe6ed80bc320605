//! Reading snapshots without restoring them: walking trees (`ls`),
//! searching many snapshots (`find`) and comparing two (`diff`).
//! Trees shared between snapshots have the same id, so `diff` skips equal
//! subtrees without loading them and `find` loads each distinct tree once
//! per snapshot walk.

use crate::engine::repository::Repository;
use crate::error::{Error, ErrorKind, Result};
use crate::format::id::{BlobId, SnapshotId};
use crate::format::snapshot::Snapshot;
use crate::format::tree::{Node, NodeKind, TREE_DEPTH_MAX};
use serde::Serialize;

/// Calls `f(path, node)` for every node under `tree` in depth-first, sorted
/// order; `prefix` is the path of `tree` itself ("" for the root). With an
/// explicit stack: a tree nested deeper than `TREE_DEPTH_MAX` is an error
/// (`Corrupt`), not a stack overflow.
pub fn walk(
    repo: &Repository,
    tree: BlobId,
    prefix: &str,
    f: &mut dyn FnMut(&str, &Node) -> Result<()>,
) -> Result<()> {
    let ctx = repo.context();
    ctx.check_interrupt()?;
    // Each level: its nodes (reversed, so `pop` gives them in order) and
    // its path.
    let mut stack: Vec<(Vec<Node>, String)> = vec![(reversed(repo, &tree)?, prefix.to_string())];
    while let Some((nodes, dir)) = stack.last_mut() {
        let Some(node) = nodes.pop() else {
            stack.pop();
            continue;
        };
        let path = format!("{dir}/{}", node.name_str());
        f(&path, &node)?;
        if let (NodeKind::Dir, Some(sub)) = (node.kind, node.subtree) {
            ctx.check_interrupt()?;
            if stack.len() >= TREE_DEPTH_MAX {
                return Err(too_deep(&path));
            }
            stack.push((reversed(repo, &sub)?, path));
        }
    }
    Ok(())
}

/// A tree's nodes, last first.
fn reversed(repo: &Repository, id: &BlobId) -> Result<Vec<Node>> {
    let mut nodes = repo.load_tree(id)?.nodes;
    nodes.reverse();
    Ok(nodes)
}

fn too_deep(path: &str) -> Error {
    Error::corrupt(format!(
        "{path}: directories are nested more than {TREE_DEPTH_MAX} deep"
    ))
}

/// A glob for `find`: `*`, `?`, `[...]` and `**`. A pattern without `/` is
/// matched against each name, one with `/` against the whole path (as in
/// restic's `find`).
pub struct Pattern {
    glob: globset::GlobMatcher,
    whole_path: bool,
}

impl Pattern {
    pub fn new(pattern: &str, ignore_case: bool) -> Result<Pattern> {
        let glob = globset::GlobBuilder::new(pattern)
            .case_insensitive(ignore_case)
            .literal_separator(true)
            .build()
            .map_err(|e| Error::invalid(format!("bad pattern {pattern:?}: {e}")))?;
        Ok(Pattern {
            glob: glob.compile_matcher(),
            whole_path: pattern.contains('/'),
        })
    }

    pub fn matches(&self, path: &str, name: &str) -> bool {
        if self.whole_path {
            self.glob.is_match(path)
        } else {
            self.glob.is_match(name)
        }
    }
}

#[derive(Debug, Clone, Serialize)]
pub struct Found {
    pub snapshot: SnapshotId,
    pub path: String,
    #[serde(rename = "type")]
    pub kind: NodeKind,
    pub size: u64,
    pub mtime_ns: i64,
    pub mode: u32,
}

/// Every node matching any of `patterns` in `snapshots`.
pub fn find(
    repo: &Repository,
    snapshots: &[(SnapshotId, Snapshot)],
    patterns: &[Pattern],
) -> Result<Vec<Found>> {
    let mut out = Vec::new();
    for (id, snapshot) in snapshots {
        walk(repo, snapshot.tree, "", &mut |path, node| {
            let name = node.name_str();
            if patterns.iter().any(|p| p.matches(path, &name)) {
                out.push(Found {
                    snapshot: *id,
                    path: path.to_string(),
                    kind: node.kind,
                    size: node.size,
                    mtime_ns: node.mtime_ns,
                    mode: node.mode,
                });
            }
            Ok(())
        })?;
    }
    Ok(out)
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Change {
    Added,
    Removed,
    /// Content differs (files), target differs (symlinks), or the type.
    Modified,
    /// Same content; mode, owner, times or xattrs differ.
    Metadata,
}

impl Change {
    /// restic's one-letter code.
    pub fn symbol(self) -> char {
        match self {
            Change::Added => '+',
            Change::Removed => '-',
            Change::Modified => 'M',
            Change::Metadata => 'U',
        }
    }
}

#[derive(Debug, Clone, Serialize)]
pub struct DiffEntry {
    pub path: String,
    pub change: Change,
    #[serde(rename = "type")]
    pub kind: NodeKind,
    /// Size in the first snapshot (0 if added) and in the second.
    pub size_before: u64,
    pub size_after: u64,
}

#[derive(Debug, Clone, Default, Serialize)]
pub struct DiffStats {
    pub added: u64,
    pub removed: u64,
    pub modified: u64,
    pub metadata_changed: u64,
    /// Sizes of added files plus the growth of modified ones, and the other way.
    pub bytes_added: u64,
    pub bytes_removed: u64,
}

#[derive(Debug, Clone, Default, Serialize)]
pub struct Diff {
    pub changes: Vec<DiffEntry>,
    pub stats: DiffStats,
}

/// Compares two trees. Equal subtree ids are skipped without loading.
/// With an explicit stack of work, in the order a recursive walk would
/// take: a pair of trees nested deeper than `TREE_DEPTH_MAX` is an error.
pub fn diff(repo: &Repository, before: BlobId, after: BlobId) -> Result<Diff> {
    let mut out = Diff::default();
    let mut work = vec![Work::Trees {
        before: Some(before),
        after: Some(after),
        prefix: String::new(),
        depth: 1,
    }];
    while let Some(item) = work.pop() {
        match item {
            Work::Trees {
                before,
                after,
                prefix,
                depth,
            } => {
                if depth > TREE_DEPTH_MAX {
                    return Err(too_deep(&prefix));
                }
                let mut next = Vec::new();
                diff_trees(repo, before, after, &prefix, depth, &mut next)?;
                work.extend(next.into_iter().rev());
            }
            Work::Record(entry) => record(
                &mut out,
                entry.path,
                entry.change,
                entry.kind,
                entry.size_before,
                entry.size_after,
            ),
        }
    }
    Ok(out)
}

/// What is left to do in `diff`, last item first.
enum Work {
    Trees {
        before: Option<BlobId>,
        after: Option<BlobId>,
        prefix: String,
        depth: usize,
    },
    Record(DiffEntry),
}

/// Compares one pair of trees: the changes in it and the pairs of subtrees
/// to compare, in order, appended to `next`.
fn diff_trees(
    repo: &Repository,
    before: Option<BlobId>,
    after: Option<BlobId>,
    prefix: &str,
    depth: usize,
    next: &mut Vec<Work>,
) -> Result<()> {
    let ctx = repo.context();
    if before == after {
        return Ok(());
    }
    ctx.check_interrupt()?;
    let load = |id: Option<BlobId>| -> Result<Vec<Node>> {
        Ok(match id {
            Some(id) => repo.load_tree(&id)?.nodes,
            None => Vec::new(),
        })
    };
    let (a, b) = (load(before)?, load(after)?);
    let (mut i, mut j) = (0, 0);
    while i < a.len() || j < b.len() {
        let order = match (a.get(i), b.get(j)) {
            (Some(x), Some(y)) => x.name.0.cmp(&y.name.0),
            (Some(_), None) => std::cmp::Ordering::Less,
            _ => std::cmp::Ordering::Greater,
        };
        match order {
            std::cmp::Ordering::Less => {
                one_side(&a[i], prefix, Change::Removed, depth, next);
                i += 1;
            }
            std::cmp::Ordering::Greater => {
                one_side(&b[j], prefix, Change::Added, depth, next);
                j += 1;
            }
            std::cmp::Ordering::Equal => {
                both_sides(&a[i], &b[j], prefix, depth, next);
                i += 1;
                j += 1;
            }
        }
    }
    Ok(())
}

/// A change to record, as `Work`.
fn change(path: String, change: Change, kind: NodeKind, before: u64, after: u64) -> Work {
    Work::Record(DiffEntry {
        path,
        change,
        kind,
        size_before: before,
        size_after: after,
    })
}

fn record(out: &mut Diff, path: String, change: Change, kind: NodeKind, before: u64, after: u64) {
    let s = &mut out.stats;
    match change {
        Change::Added => {
            s.added += 1;
            s.bytes_added += after;
        }
        Change::Removed => {
            s.removed += 1;
            s.bytes_removed += before;
        }
        Change::Modified => {
            s.modified += 1;
            s.bytes_added += after.saturating_sub(before);
            s.bytes_removed += before.saturating_sub(after);
        }
        Change::Metadata => s.metadata_changed += 1,
    }
    out.changes.push(DiffEntry {
        path,
        change,
        kind,
        size_before: before,
        size_after: after,
    });
}

/// A node only in one snapshot: it and everything under it.
fn one_side(node: &Node, prefix: &str, kind: Change, depth: usize, next: &mut Vec<Work>) {
    let path = format!("{prefix}/{}", node.name_str());
    let size = if node.kind == NodeKind::File {
        node.size
    } else {
        0
    };
    let (before, after) = match kind {
        Change::Added => (0, size),
        _ => (size, 0),
    };
    next.push(change(path.clone(), kind, node.kind, before, after));
    if node.kind == NodeKind::Dir {
        let (b, a) = match kind {
            Change::Added => (None, node.subtree),
            _ => (node.subtree, None),
        };
        next.push(Work::Trees {
            before: b,
            after: a,
            prefix: path,
            depth: depth + 1,
        });
    }
}

fn both_sides(a: &Node, b: &Node, prefix: &str, depth: usize, next: &mut Vec<Work>) {
    let path = format!("{prefix}/{}", a.name_str());
    if a.kind != b.kind {
        one_side(a, prefix, Change::Removed, depth, next);
        return one_side(b, prefix, Change::Added, depth, next);
    }
    let content_differs =
        a.content != b.content || a.link_target != b.link_target || a.rdev != b.rdev;
    let metadata_differs = a.mode != b.mode
        || a.uid != b.uid
        || a.gid != b.gid
        || a.mtime_ns != b.mtime_ns
        || a.xattrs != b.xattrs;
    let size = |n: &Node| if n.kind == NodeKind::File { n.size } else { 0 };
    if a.kind != NodeKind::Dir && content_differs {
        next.push(change(
            path.clone(),
            Change::Modified,
            a.kind,
            size(a),
            size(b),
        ));
    } else if metadata_differs {
        next.push(change(
            path.clone(),
            Change::Metadata,
            a.kind,
            size(a),
            size(b),
        ));
    }
    if a.kind == NodeKind::Dir {
        next.push(Work::Trees {
            before: a.subtree,
            after: b.subtree,
            prefix: path,
            depth: depth + 1,
        });
    }
}

/// Finds the node at `subpath` ("/" or "" is the root) in a snapshot.
/// Returns None for the root itself.
pub fn find_node(repo: &Repository, snapshot: &Snapshot, subpath: &str) -> Result<Option<Node>> {
    let mut tree = repo.load_tree(&snapshot.tree)?;
    let parts: Vec<&str> = subpath
        .split('/')
        .filter(|p| !p.is_empty() && *p != ".")
        .collect();
    let mut found = None;
    for (i, part) in parts.iter().enumerate() {
        let node = tree.find(part.as_bytes()).cloned().ok_or_else(|| {
            Error::new(
                ErrorKind::NotFound,
                format!("{subpath:?} is not in the snapshot"),
            )
        })?;
        if i + 1 < parts.len() {
            let subtree = node.subtree.ok_or_else(|| {
                Error::new(
                    ErrorKind::NotFound,
                    format!("{subpath:?} is not in the snapshot"),
                )
            })?;
            tree = repo.load_tree(&subtree)?;
        }
        found = Some(node);
    }
    Ok(found)
}
