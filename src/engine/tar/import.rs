//! `import_tar`: a tarball as a snapshot. Each member `format::tar`
//! decodes becomes a node of the snapshot's tree, and file contents are
//! chunked like any other file's, so files inside nightly volume tarballs
//! deduplicate across nights and against directory backups however the
//! tarball's layout shifts.

use crate::engine::archiver::{
    archive, finish, new_snapshot, Archiver, BackupOptions, BackupOutcome, Spares, StreamError,
    Unreadable,
};
use crate::engine::repository::Repository;
use crate::error::Result;
use crate::format::id::BlobId;
use crate::format::snapshot::SourceKind;
use crate::format::tar::{bad_archive, read_members, Limits, Member, HARD_LINK_TO_NOTHING};
use crate::format::tree::{Bytes, Node, NodeKind, Tree};
use crate::storage::lock::LockGuard;
use std::collections::{BTreeMap, HashMap};
use std::io::Read;
use std::time::Instant;

/// One entry of the tree being built; tar members arrive in any order and a
/// member may name a directory that has no member of its own.
enum Item {
    Dir {
        node: Option<Node>,
        children: BTreeMap<Vec<u8>, Item>,
    },
    Leaf(Node),
}

#[derive(Default)]
struct Builder {
    root: BTreeMap<Vec<u8>, Item>,
    /// Hard-link groups get inode numbers 1, 2, …; other files have inode 0
    /// so that an unchanged directory encodes identically every night.
    next_group: u64,
}

impl Builder {
    fn insert(&mut self, parts: &[Vec<u8>], node: Node) {
        let (last, parents) = parts.split_last().expect("at least one component");
        let mut level = &mut self.root;
        for part in parents {
            let item = level.entry(part.clone()).or_insert_with(|| Item::Dir {
                node: None,
                children: BTreeMap::new(),
            });
            if let Item::Leaf(_) = item {
                // A later member goes through what was a file: the directory
                // wins, as it would when extracting.
                *item = Item::Dir {
                    node: None,
                    children: BTreeMap::new(),
                };
            }
            let Item::Dir { children, .. } = item else {
                unreachable!("made a directory above")
            };
            level = children;
        }
        match (level.get_mut(last), node.kind) {
            (Some(Item::Dir { node: slot, .. }), NodeKind::Dir) => *slot = Some(node),
            (_, NodeKind::Dir) => {
                level.insert(
                    last.clone(),
                    Item::Dir {
                        node: Some(node),
                        children: BTreeMap::new(),
                    },
                );
            }
            _ => {
                level.insert(last.clone(), Item::Leaf(node));
            }
        }
    }

    fn leaf_mut(&mut self, parts: &[Vec<u8>]) -> Option<&mut Node> {
        let (last, parents) = parts.split_last()?;
        let mut level = &mut self.root;
        for part in parents {
            match level.get_mut(part)? {
                Item::Dir { children, .. } => level = children,
                Item::Leaf(_) => return None,
            }
        }
        match level.get_mut(last)? {
            Item::Leaf(node) => Some(node),
            Item::Dir { .. } => None,
        }
    }

    /// Makes `parts` a hard link to the file at `target`; returns false if
    /// there is no such file earlier in the archive.
    fn hard_link(&mut self, parts: &[Vec<u8>], target: &[Vec<u8>]) -> bool {
        let next = self.next_group + 1;
        let Some(first) = self.leaf_mut(target) else {
            return false;
        };
        if first.kind != NodeKind::File {
            return false;
        }
        if first.inode == 0 {
            first.inode = next;
        }
        let mut node = first.clone();
        if node.inode == next {
            self.next_group = next;
        }
        node.name = Bytes(parts.last().expect("non-empty").clone());
        self.insert(parts, node);
        true
    }
}

/// Counts the members of each hard-link group. With an explicit stack: the
/// depth of the tree comes from the input (bounded by `Limits::max_depth`,
/// but a thread's stack is not the place to spend it).
fn count_links(root: &BTreeMap<Vec<u8>, Item>) -> HashMap<u64, u64> {
    let mut counts = HashMap::new();
    let mut stack = vec![root];
    while let Some(items) = stack.pop() {
        for item in items.values() {
            match item {
                Item::Dir { children, .. } => stack.push(children),
                Item::Leaf(node) if node.kind == NodeKind::File && node.inode != 0 => {
                    *counts.entry(node.inode).or_default() += 1
                }
                Item::Leaf(_) => {}
            }
        }
    }
    counts
}

/// One directory whose tree is being built: its own node (None for the
/// root), the entries still to visit and the nodes done.
struct Level {
    dir: Option<Node>,
    rest: std::collections::btree_map::IntoIter<Vec<u8>, Item>,
    nodes: Vec<Node>,
}

/// Saves the trees bottom-up (a directory's tree after its children's)
/// with an explicit stack; returns the root tree's id.
fn save_items(
    archiver: &mut Archiver<'_, '_>,
    root: BTreeMap<Vec<u8>, Item>,
    counts: &HashMap<u64, u64>,
) -> Result<BlobId> {
    let mut stack = vec![Level {
        dir: None,
        nodes: Vec::with_capacity(root.len()),
        rest: root.into_iter(),
    }];
    loop {
        let top = stack.last_mut().expect("the root level is popped last");
        match top.rest.next() {
            Some((name, Item::Dir { node, children })) => {
                let node = node.unwrap_or_else(|| Node::new(&name, NodeKind::Dir));
                stack.push(Level {
                    dir: Some(node),
                    nodes: Vec::with_capacity(children.len()),
                    rest: children.into_iter(),
                });
            }
            Some((_, Item::Leaf(mut node))) => {
                if node.kind == NodeKind::File && node.inode != 0 {
                    node.links = counts.get(&node.inode).copied().unwrap_or(1);
                }
                top.nodes.push(node);
            }
            None => {
                let done = stack.pop().expect("non-empty");
                let id = archiver.save_tree(&Tree::new(done.nodes))?;
                let Some(mut node) = done.dir else {
                    return Ok(id);
                };
                node.subtree = Some(id);
                archiver.summary.dirs_new += 1;
                stack
                    .last_mut()
                    .expect("a directory has a parent level")
                    .nodes
                    .push(node);
            }
        }
    }
}

/// Imports a tarball (plain or compressed) as a snapshot whose tree is the
/// tarball's contents, within the default `Limits`. `name` is recorded as
/// the snapshot's path (the tarball as given, or `-` for standard input).
/// Members that cannot be represented (`..` in the name, a hard link to
/// nothing) are skipped and reported in `unreadable`; a truncated or
/// corrupt tarball, one with a member whose fields a tree may not hold
/// (`tree::check_node_fields`) or one past a limit is an error and writes
/// no snapshot. Needs `load_index` first.
pub fn import_tar(
    repo: &mut Repository,
    lock: &LockGuard,
    input: &mut dyn Read,
    name: &str,
    options: &BackupOptions,
) -> Result<BackupOutcome> {
    import_tar_with_limits(repo, lock, input, name, options, &Limits::default())
}

/// `import_tar` within `limits`.
pub fn import_tar_with_limits(
    repo: &mut Repository,
    lock: &LockGuard,
    input: &mut dyn Read,
    name: &str,
    options: &BackupOptions,
    limits: &Limits,
) -> Result<BackupOutcome> {
    let started = Instant::now();
    let snapshot = new_snapshot(options, vec![name.to_string()], SourceKind::Tar);
    let repo_ref: &Repository = repo;
    // A bad tarball fails the reading stage, so the writer is dropped
    // (deleting its packs) and no snapshot is written.
    let (archived, written) = archive(repo_ref, lock, Spares::One, |archiver| {
        let mut tree = Builder::default();
        read_members(input, name, limits, &mut |member, contents| {
            store_member(archiver, &mut tree, member, contents, name)
        })?;
        let counts = count_links(&tree.root);
        save_items(archiver, std::mem::take(&mut tree.root), &counts)
    })?;
    finish(repo_ref, archived, written, snapshot, started)
}

/// Adds one decoded member to the tree, storing a file's contents.
fn store_member(
    archiver: &mut Archiver<'_, '_>,
    tree: &mut Builder,
    member: Member,
    contents: &mut dyn Read,
    archive_name: &str,
) -> Result<()> {
    // The decoder knows nothing of interrupts; each member stops here.
    let ctx = archiver.repo.context();
    ctx.check_interrupt()?;
    match member {
        Member::Skipped { path, reason } => skip(archiver, &path, reason),
        Member::HardLink {
            path,
            parts,
            target,
        } => {
            if tree.hard_link(&parts, &target) {
                archiver.summary.files_new += 1;
                archiver.summary.total_files_processed += 1;
            } else {
                skip(archiver, &path, HARD_LINK_TO_NOTHING);
            }
        }
        Member::Node { parts, mut node } => {
            if node.kind == NodeKind::File {
                archiver.summary.total_files_processed += 1;
                ctx.progress().add_items(1);
                match archiver.store_stream(contents, None) {
                    Ok((content, size)) => {
                        node.content = content;
                        node.size = size;
                    }
                    Err(StreamError::Source(e)) => return Err(bad_archive(archive_name, e)),
                    Err(StreamError::Repository(e)) => return Err(e),
                }
                archiver.summary.files_new += 1;
            }
            tree.insert(&parts, node);
        }
    }
    Ok(())
}

fn skip(archiver: &mut Archiver<'_, '_>, member: &str, reason: impl std::fmt::Display) {
    archiver.summary.files_unreadable += 1;
    archiver.unreadable.push(Unreadable {
        path: member.into(),
        reason: reason.to_string(),
    });
}
