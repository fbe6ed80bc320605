//! The tree walk as the archiver sees it: each entry of a directory in
//! order (`save_path`), from the walk ahead's events (`save_dir_ahead`) or
//! a walk of its own (`save_dir`), and the synthetic directories that lead
//! from `/` to the paths a backup names (`save_virtual`).

use super::ahead;
use super::file::{open_regular, EntryReader, FileContent, Prefetched, StreamError};
use super::pipeline::{Archiver, Job};
use super::stream::guide_from;
use super::Unreadable;
use crate::context::Context;
use crate::engine::metadata;
use crate::error::{Error, ErrorKind, Result};
use crate::format::id::BlobId;
use crate::format::tree::{Node, NodeKind, Tree};
use crossbeam_channel::Receiver;
use std::collections::BTreeMap;
use std::ffi::OsStr;
use std::os::unix::ffi::OsStrExt;
use std::path::{Component, Path};
use std::sync::Arc;

/// The walk thread's stack: enough for the deepest path Linux allows
/// (PATH_MAX, 4096 bytes, is at most 2048 levels).
const WALK_STACK_SIZE: usize = 16 * 1024 * 1024;

impl Archiver<'_, '_> {
    fn skip(&mut self, path: &Path, reason: impl std::fmt::Display) {
        self.summary.files_unreadable += 1;
        self.unreadable.push(Unreadable {
            path: path.to_path_buf(),
            reason: reason.to_string(),
        });
    }

    /// Backs up one file-system object. Returns None if it was skipped.
    /// A directory is saved from the walk ahead's events in `subtree` when
    /// there are some (they are taken), and with a walk of its own if not.
    fn save_path(
        &mut self,
        path: &Path,
        parent: Option<&Node>,
        prefetched: Prefetched,
        subtree: &mut Option<&Receiver<ahead::Event>>,
    ) -> Result<Option<Node>> {
        let ctx = self.repo.context();
        ctx.check_interrupt()?;
        let (mut node, content) = match prefetched {
            Ok(found) => found,
            Err(e) => {
                self.skip(path, e);
                return Ok(None);
            }
        };
        let parent = parent.filter(|p| p.kind == node.kind);
        if self.exclude.one_file_system
            && node.kind == NodeKind::Dir
            && self.dir_device.is_some_and(|d| d != node.device_id)
        {
            // A mount point: kept as an empty directory, as restic does.
            node.subtree = Some(self.save_tree(&Tree::new(Vec::new()))?);
            return Ok(Some(node));
        }
        match node.kind {
            NodeKind::Dir => {
                let saved = match subtree.take() {
                    Some(stream) => self.save_dir_ahead(path, stream)?,
                    None => {
                        let parent_tree = parent
                            .and_then(|p| p.subtree)
                            .and_then(|id| self.repo.load_tree(&id).ok());
                        self.save_dir(path, parent_tree)?
                    }
                };
                let Some(subtree) = saved else {
                    return Ok(None);
                };
                match parent.and_then(|p| p.subtree) {
                    None => self.summary.dirs_new += 1,
                    Some(old) if old == subtree => self.summary.dirs_unmodified += 1,
                    Some(_) => self.summary.dirs_changed += 1,
                }
                node.subtree = Some(subtree);
            }
            NodeKind::File => {
                self.summary.total_files_processed += 1;
                ctx.progress().add_items(1);
                match content {
                    FileContent::Unchanged => {
                        node.content = parent.map(|p| p.content.clone()).unwrap_or_default();
                        self.summary.files_unmodified += 1;
                        self.summary.total_bytes_processed += node.size;
                        return Ok(Some(node));
                    }
                    FileContent::Read(Ok(read)) => {
                        // The size we read is the truth (the file may have
                        // changed since it was stat'ed).
                        node.size = read.bytes.len() as u64;
                        node.content = read.ids.clone();
                        self.summary.total_bytes_processed += node.size;
                        if !read.lengths.is_empty() {
                            self.send(Job::Data {
                                bytes: read.bytes,
                                offset: 0,
                                lengths: read.lengths,
                                ids: read.ids,
                            })?;
                        }
                    }
                    FileContent::Read(Err(e)) => {
                        self.skip(path, e);
                        return Ok(None);
                    }
                    FileContent::Stream => {
                        let mut file = match open_regular(path) {
                            Ok(f) => f,
                            Err(e) => {
                                self.skip(path, e);
                                return Ok(None);
                            }
                        };
                        // A changed large file (a database file, a log that
                        // grew) is mostly its parent's chunks.
                        let guide = parent.and_then(|p| guide_from(self.repo, &p.content));
                        match self.store_stream(&mut file, guide) {
                            Ok((content, size)) => {
                                node.content = content;
                                node.size = size;
                            }
                            Err(StreamError::Source(e)) => {
                                self.skip(path, e);
                                return Ok(None);
                            }
                            Err(StreamError::Repository(e)) => return Err(e),
                        }
                    }
                }
                if parent.is_some() {
                    self.summary.files_changed += 1;
                } else {
                    self.summary.files_new += 1;
                }
            }
            _ => {}
        }
        Ok(Some(node))
    }

    /// Reads the entry a backup names itself (the walk ahead reads the
    /// entries below it).
    fn entry_reader(&self) -> EntryReader<'_> {
        EntryReader {
            repo: self.repo,
            chunker: &self.chunker,
            parent_blobs_indexed: self.parent_blobs_indexed,
            held: None,
        }
    }

    /// Backs up the directory tree at `path` with a walk ahead of it
    /// (`ahead`) on its own thread.
    fn save_dir(&mut self, path: &Path, parent: Option<Tree>) -> Result<Option<BlobId>> {
        let walker = ahead::Walker {
            repo: self.repo,
            chunker: self.chunker.clone(),
            exclude: self.exclude.clone(),
            parent_blobs_indexed: self.parent_blobs_indexed,
            held: self.held.clone(),
            dir_fds_held: Default::default(),
            descend_override: if crate::failpoint::is_set!("walk-descends-into-everything") {
                Some(true)
            } else if crate::failpoint::is_set!("walk-descends-into-nothing") {
                Some(false)
            } else {
                None
            },
        };
        let (events, stream) = crossbeam_channel::bounded(ahead::AHEAD_EVENTS);
        std::thread::scope(|scope| {
            let walk = std::thread::Builder::new()
                .name("cairn-walk".into())
                // It recurses once per directory level, as the archiver
                // does on the main thread (8 MiB).
                .stack_size(WALK_STACK_SIZE)
                .spawn_scoped(scope, || walker.run(path, parent.map(Arc::new), events))
                .map_err(|e| Error::io("cannot start the walk thread", e))?;
            let saved = self.save_dir_ahead(path, &stream);
            // Hanging up ends the walk early when this one failed.
            drop(stream);
            if let Err(panic) = walk.join() {
                std::panic::resume_unwind(panic);
            }
            saved
        })
    }

    /// The next event of the walk ahead. It ends early only when the
    /// backup was interrupted.
    fn next_event(ctx: &Context, stream: &Receiver<ahead::Event>) -> Result<ahead::Event> {
        match stream.recv() {
            Ok(event) => Ok(event),
            Err(_) => {
                ctx.check_interrupt()?;
                Err(Error::new(
                    ErrorKind::Interrupted,
                    "the directory walk stopped early",
                ))
            }
        }
    }

    /// Backs up the directory whose events come next in `stream`.
    fn save_dir_ahead(
        &mut self,
        path: &Path,
        stream: &Receiver<ahead::Event>,
    ) -> Result<Option<BlobId>> {
        let ctx = self.repo.context();
        let parent = match Self::next_event(ctx, stream)? {
            ahead::Event::Listed { parent } => parent,
            ahead::Event::Excluded => return Ok(None),
            ahead::Event::NotListed(e) => {
                self.skip(path, e);
                return Ok(None);
            }
            _ => return Err(Error::invalid("the directory walk is out of step")),
        };
        let outer_device = self.dir_device;
        if self.exclude.one_file_system {
            self.dir_device = std::fs::symlink_metadata(path)
                .ok()
                .map(|m| std::os::unix::fs::MetadataExt::dev(&m));
        }
        let mut nodes = Vec::new();
        loop {
            let entry = match Self::next_event(ctx, stream)? {
                ahead::Event::Entry(entry) => entry,
                ahead::Event::Unreadable(e) => {
                    self.skip(path, e);
                    continue;
                }
                ahead::Event::Leave => break,
                _ => return Err(Error::invalid("the directory walk is out of step")),
            };
            ctx.check_interrupt()?;
            let child = path.join(&entry.name);
            let node = parent
                .as_deref()
                .and_then(|t| t.find(entry.name.as_bytes()));
            let prefetched = entry.prefetched.recv().map_err(|_| {
                Error::new(ErrorKind::Interrupted, "a directory entry was not read")
            })?;
            let mut subtree = entry.descends.then_some(stream);
            if let Some(node) = self.save_path(&child, node, prefetched, &mut subtree)? {
                nodes.push(node);
            }
            if let Some(stream) = subtree {
                // The entry is no longer the directory the walk entered.
                Self::skip_subtree(ctx, stream)?;
            }
        }
        self.dir_device = outer_device;
        Ok(Some(self.save_tree(&Tree::new(nodes))?))
    }

    /// Passes over the events of a directory the archiver does not save.
    fn skip_subtree(ctx: &Context, stream: &Receiver<ahead::Event>) -> Result<()> {
        let mut depth = 0usize;
        loop {
            match Self::next_event(ctx, stream)? {
                // Waited for, so the walk stays within its bounds (one
                // pending task per queued event) while it is skipped.
                ahead::Event::Entry(entry) => {
                    let _ = entry.prefetched.recv();
                }
                ahead::Event::Listed { .. } => depth += 1,
                ahead::Event::Leave => depth = depth.saturating_sub(1),
                _ => {}
            }
            if depth == 0 {
                return Ok(());
            }
        }
    }

    /// Saves the synthetic directories leading to the backed-up paths
    /// (`/var/lib/x` is stored as var → lib → x, as restic does).
    pub(super) fn save_virtual(
        &mut self,
        at: &Path,
        children: &BTreeMap<Vec<u8>, Target>,
        parent: Option<&Tree>,
    ) -> Result<BlobId> {
        let mut nodes = Vec::new();
        for (name, target) in children {
            let path = at.join(OsStr::from_bytes(name));
            let parent_node = parent.and_then(|t| t.find(name));
            match target {
                Target::Real => {
                    let name = OsStr::from_bytes(name);
                    let pre = self.entry_reader().prefetch(&path, name, None, parent_node);
                    if let Some(node) = self.save_path(&path, parent_node, pre, &mut None)? {
                        nodes.push(node);
                    }
                }
                Target::Virtual(grandchildren) => {
                    // A parent of a named path is recorded as the directory
                    // it leads to, even if it is a symlink (/var/run → /run).
                    let meta = std::fs::metadata(&path)
                        .map_err(|e| Error::io(format!("cannot read {}", path.display()), e))?;
                    let mut node =
                        metadata::node_from_metadata(OsStr::from_bytes(name), &path, &meta);
                    node.kind = NodeKind::Dir;
                    node.link_target = None;
                    let parent_tree = match parent_node.and_then(|p| p.subtree) {
                        Some(id) => self.repo.load_tree(&id).ok(),
                        None => None,
                    };
                    node.subtree =
                        Some(self.save_virtual(&path, grandchildren, parent_tree.as_ref())?);
                    nodes.push(node);
                }
            }
        }
        self.save_tree(&Tree::new(nodes))
    }
}

pub(super) enum Target {
    Real,
    Virtual(BTreeMap<Vec<u8>, Target>),
}

pub(super) fn insert_target(root: &mut BTreeMap<Vec<u8>, Target>, path: &Path) {
    let parts: Vec<&[u8]> = path
        .components()
        .filter_map(|c| match c {
            Component::Normal(n) => Some(n.as_bytes()),
            _ => None,
        })
        .collect();
    let mut level = root;
    for (i, part) in parts.iter().enumerate() {
        let last = i + 1 == parts.len();
        let entry = level.entry(part.to_vec()).or_insert_with(|| {
            if last {
                Target::Real
            } else {
                Target::Virtual(BTreeMap::new())
            }
        });
        if last {
            // The named path is stored whole, whatever was below it.
            *entry = Target::Real;
            return;
        }
        match entry {
            Target::Real => return, // an ancestor is already backed up whole
            Target::Virtual(children) => level = children,
        }
    }
}
