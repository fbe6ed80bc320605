//! The restorer: writes a snapshot's tree (or a part of it) back to disk,
//! and streams single files (`dump`). Every blob is verified against its id
//! on the way. Problems with one file are collected and do not stop the
//! others: the caller reports them and exits non-zero.
//!
//! A local user who can write in a restored directory must not be able to
//! redirect a restore run as root (issue 17). So nothing beneath the target
//! is looked up by path: the target is opened once, and every entry is
//! created, opened or removed by its one-component name relative to the
//! held descriptor of its directory, never following a symlink
//! (`sys::at`). Files are created `O_EXCL` with mode 0600 and directories
//! 0700; owners, modes, times and xattrs are set on the open descriptor
//! (or an `O_PATH` handle for symlinks and special files), files as soon
//! as their content is written, directories when their last child is done.
//! The walk uses an explicit stack, and holds at most `HELD_DIRS`
//! directory descriptors on it.

mod content;
mod remote;

pub use content::dump;

use crate::engine::metadata::{self, Apply, Stat};
use crate::engine::repository::Repository;
use crate::error::{Error, ErrorKind, Result};
use crate::format::id::BlobId;
use crate::format::snapshot::Snapshot;
use crate::format::tree::{Node, NodeKind, Tree};
use crate::sys::at::{self, Handle};
use crate::sys::fs::FileType;
use rayon::prelude::*;
use std::collections::HashMap;
use std::ffi::OsStr;
use std::fs::File;
use std::os::fd::{AsFd, BorrowedFd};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{DirBuilderExt, MetadataExt};
use std::path::{Path, PathBuf};

/// How to restore. The defaults restore everything the snapshot holds, with
/// its owners when run as root.
#[derive(Debug, Default, Clone)]
pub struct RestoreOptions {
    /// Keep the restoring user as the owner of what is restored, even as
    /// root (`--no-same-owner`).
    pub no_same_owner: bool,
    /// Leave out fifos, device nodes and sockets, and clear set-user-ID and
    /// set-group-ID bits on files (`--no-special`).
    pub no_special: bool,
}

#[derive(Debug, Default)]
pub struct RestoreOutcome {
    pub files: u64,
    pub dirs: u64,
    pub bytes: u64,
    /// Special files left out by `RestoreOptions::no_special`.
    pub special_skipped: u64,
    /// One line per problem; empty means everything was restored.
    pub problems: Vec<String>,
}

/// Directory descriptors the walk keeps open on its stack: the deepest 64
/// of the current path. A deeper ancestor's is closed on the way down and
/// reopened on the way up as `..` of its child, checked to be the same
/// directory (device and inode), so the tree's depth does not bound the
/// restore and its descriptors stay bounded.
const HELD_DIRS: usize = 64;

/// The first restored name of a multiply-linked file.
struct FirstLink {
    /// Its directory, relative to the target.
    dir: PathBuf,
    name: Vec<u8>,
    /// (device, inode) of the restored file, checked before linking to it.
    id: (u64, u64),
}

struct Restorer<'r> {
    repo: &'r Repository,
    apply: Apply,
    no_special: bool,
    target: PathBuf,
    /// The target, open for the whole restore: hard links are found again
    /// from it.
    root: File,
    /// (device, inode) of multiply-linked files in the snapshot → where the
    /// first was restored.
    hardlinks: HashMap<(u64, u64), FirstLink>,
    outcome: RestoreOutcome,
    /// The backend is remote: files and trees are read in batches
    /// (`BlobReader`), not one blob per request.
    remote: bool,
    /// Subtrees read ahead of the walk on a remote backend, taken when
    /// their directory is entered.
    trees: HashMap<BlobId, Tree>,
    /// File content read ahead of the walk on a remote backend, with how
    /// many more files of the plan use each blob (`remote.rs`).
    ahead: HashMap<BlobId, (Vec<u8>, usize)>,
    /// The next read-ahead, fetched while this one is written (remote).
    fetch: Option<remote::Fetch>,
}

/// A directory being restored.
struct Frame {
    /// Its descriptor; `None` while it is more than `HELD_DIRS` above the
    /// top of the stack.
    dir: Option<File>,
    /// (device, inode), to check the directory reopened through `..`.
    id: (u64, u64),
    tree: Tree,
    /// The next entry of `tree` to restore.
    next: usize,
    /// The directory's path, for messages and hard links.
    path: PathBuf,
    /// The metadata to give it when its entries are done (`None` for the
    /// target of a whole-snapshot restore).
    node: Option<Node>,
}

impl Frame {
    fn new(dir: File, tree: Tree, path: PathBuf, node: Option<Node>) -> Result<Frame> {
        let meta = dir
            .metadata()
            .map_err(|e| Error::io(format!("cannot stat {}", path.display()), e))?;
        Ok(Frame {
            dir: Some(dir),
            id: (meta.dev(), meta.ino()),
            tree,
            next: 0,
            path,
            node,
        })
    }
}

/// Restores `subpath` of a snapshot into `target`: a directory's contents go
/// into `target`; a single file is written as `target/<name>`. Counts
/// progress as the "restore" phase (with totals when the whole snapshot is
/// restored, from its summary).
pub fn restore(
    repo: &Repository,
    snapshot: &Snapshot,
    subpath: &str,
    target: &Path,
    options: &RestoreOptions,
) -> Result<RestoreOutcome> {
    let ctx = repo.context();
    let whole = subpath.split('/').all(|p| p.is_empty() || p == ".");
    let (bytes_total, files_total) = if whole {
        (
            snapshot.summary.total_bytes_processed,
            snapshot.summary.total_files_processed,
        )
    } else {
        (0, 0)
    };
    let progress = ctx.progress();
    progress.start("restore", bytes_total, files_total);
    let result = restore_into(repo, snapshot, subpath, target, options);
    progress.finish();
    result
}

fn restore_into(
    repo: &Repository,
    snapshot: &Snapshot,
    subpath: &str,
    target: &Path,
    options: &RestoreOptions,
) -> Result<RestoreOutcome> {
    // A target that does not exist yet is private until a restored
    // directory's mode is applied to it (restic creates it 0700 too).
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(target)
        .map_err(|e| Error::io(format!("cannot create {}", target.display()), e))?;
    let root = at::open_target(target)
        .map_err(|e| Error::io(format!("cannot open {}", target.display()), e))?;
    let mut restorer = Restorer {
        repo,
        apply: Apply {
            owner: crate::sys::is_root() && !options.no_same_owner,
            clear_set_id: options.no_special,
        },
        no_special: options.no_special,
        target: target.to_path_buf(),
        root,
        hardlinks: HashMap::new(),
        outcome: RestoreOutcome::default(),
        remote: repo.blob_reader().remote(),
        trees: HashMap::new(),
        ahead: HashMap::new(),
        fetch: None,
    };
    let root_dir = || {
        restorer
            .root
            .try_clone()
            .map_err(|e| Error::io(format!("cannot open {}", target.display()), e))
    };
    match crate::engine::browse::find_node(repo, snapshot, subpath)? {
        None => {
            let tree = repo.load_tree(&snapshot.tree)?;
            let frame = Frame::new(root_dir()?, tree, target.to_path_buf(), None)?;
            restorer.run_frame(frame)?;
        }
        Some(node) if node.kind == NodeKind::Dir => {
            let tree = repo.load_tree(&node.subtree.expect("validated dir"))?;
            let frame = Frame::new(root_dir()?, tree, target.to_path_buf(), Some(node))?;
            restorer.run_frame(frame)?;
        }
        Some(node) => {
            let root = root_dir()?;
            let path = target.join(OsStr::from_bytes(&node.name.0));
            restorer.restore_leaf(root.as_fd(), &node, &path, Path::new(""))?;
        }
    }
    Ok(restorer.outcome)
}

/// A file that needs no hard-link bookkeeping: restored in parallel runs.
pub(super) fn plain(n: &Node) -> bool {
    n.kind == NodeKind::File && n.links <= 1
}

pub(super) fn name_of(node: &Node) -> &OsStr {
    OsStr::from_bytes(&node.name.0)
}

impl Restorer<'_> {
    /// `run`, with a thread that fetches file content ahead on a remote
    /// backend (`remote::Fetch`).
    fn run_frame(&mut self, root: Frame) -> Result<()> {
        if !self.remote {
            return self.run(root);
        }
        remote::with_fetch_thread(self.repo, |fetch| {
            self.fetch = Some(fetch);
            let done = self.run(root);
            self.fetch = None;
            done
        })
    }

    /// Restores the tree of `root` and everything below it, depth first,
    /// with an explicit stack. Only an interruption, or a directory on the
    /// stack that was moved away, stops it; other errors are recorded.
    fn run(&mut self, root: Frame) -> Result<()> {
        let ctx = self.repo.context();
        self.prefetch_all_trees(&root.tree)?;
        let mut stack = vec![root];
        while let Some(top) = stack.last_mut() {
            ctx.check_interrupt()?;
            if top.next == top.tree.nodes.len() {
                let done = stack.pop().expect("the loop saw a frame");
                if let Some(parent) = stack.last_mut() {
                    if parent.dir.is_none() {
                        // Before the child's own mode is applied: it may
                        // not let us search it.
                        parent.dir = Some(reopen_parent(&done, parent)?);
                    }
                }
                self.finish_dir(&done);
                continue;
            }
            let at = top.next;
            if plain(&top.tree.nodes[at]) {
                // Runs of plain files (no hard links to track) are restored
                // in parallel: a tree of small files is bound by creating
                // files and setting their metadata, which runs on every core.
                let run = top.tree.nodes[at..].iter().take_while(|n| plain(n)).count();
                if self.remote {
                    self.restore_remote_files(&stack, run)?;
                } else {
                    let top = stack.last().expect("the loop saw a frame");
                    let dir = top.dir.as_ref().expect("the top frame holds its directory");
                    self.restore_plain_files(
                        &top.tree.nodes[at..at + run],
                        dir.as_fd(),
                        &top.path,
                    )?;
                }
                stack.last_mut().expect("the loop saw a frame").next += run;
                continue;
            }
            let dir = top.dir.as_ref().expect("the top frame holds its directory");
            top.next += 1;
            let node = &top.tree.nodes[at];
            let path = top.path.join(name_of(node));
            if node.kind != NodeKind::Dir {
                let rel = top.path.strip_prefix(&self.target).unwrap_or(Path::new(""));
                let rel = rel.to_path_buf();
                self.restore_leaf(dir.as_fd(), node, &path, &rel)?;
                continue;
            }
            match self.enter_dir(dir.as_fd(), node, path) {
                Ok(frame) => {
                    self.prefetch_subtrees(&frame.tree)?;
                    stack.push(frame);
                    if stack.len() > HELD_DIRS {
                        let far = stack.len() - 1 - HELD_DIRS;
                        stack[far].dir = None;
                    }
                }
                Err(e) if e.kind() == ErrorKind::Interrupted => return Err(e),
                Err(e) => self.outcome.problems.push(e.to_string()),
            }
        }
        Ok(())
    }

    /// Creates (or keeps) the directory `node` in `parent` and opens it:
    /// the frame that restores its entries.
    fn enter_dir(&mut self, parent: BorrowedFd<'_>, node: &Node, path: PathBuf) -> Result<Frame> {
        let name = name_of(node);
        let opened = match Stat::at(parent, name) {
            // An existing directory is merged into (as restic does).
            Ok(st) if st.file_type() == FileType::Dir => at::open_dir(parent, name),
            found => {
                if found.is_ok() {
                    let _ = at::remove(parent, name);
                }
                at::make_dir(parent, name, 0o700).and_then(|()| at::open_dir(parent, name))
            }
        };
        let dir = opened.map_err(|e| Error::io(format!("cannot create {}", path.display()), e))?;
        self.outcome.dirs += 1;
        // Test hook: the directory is there and held; its entries are not.
        crate::failpoint::pause!("restore-dir-ready");
        let id = node.subtree.expect("validated dir");
        let tree = match self.trees.remove(&id) {
            Some(tree) => tree,
            None => self.repo.load_tree(&id)?,
        };
        Frame::new(dir, tree, path, Some(node.clone()))
    }

    /// Mode and mtime last: creating entries changes the mtime, and a
    /// read-only mode would have stopped us creating them.
    fn finish_dir(&mut self, frame: &Frame) {
        if let (Some(node), Some(dir)) = (&frame.node, &frame.dir) {
            let problems = metadata::apply_to_file(dir, node, self.apply, &frame.path);
            self.outcome.problems.extend(problems);
        }
    }

    /// Restores files that are not hard links, several at once, into
    /// `dir`, on a local backend. Only an interruption is returned as an
    /// error; the rest are recorded.
    fn restore_plain_files(
        &mut self,
        nodes: &[Node],
        dir: BorrowedFd<'_>,
        dir_path: &Path,
    ) -> Result<()> {
        let unread = nodes.iter().map(|_| None).collect();
        self.write_plain_files(nodes, unread, dir, dir_path)
    }

    /// Writes plain files in parallel, with their blobs when already read.
    pub(super) fn write_plain_files(
        &mut self,
        nodes: &[Node],
        read: Vec<Option<Vec<Vec<u8>>>>,
        dir: BorrowedFd<'_>,
        dir_path: &Path,
    ) -> Result<()> {
        let ctx = self.repo.context();
        let (repo, apply) = (self.repo, self.apply);
        let results: Vec<Result<(Option<u64>, Vec<String>)>> = nodes
            .par_iter()
            .zip(read)
            .map(|(node, blobs)| {
                ctx.check_interrupt()?;
                let path = dir_path.join(name_of(node));
                match write_file(repo, dir, node, &path, apply, blobs) {
                    Ok((written, problems, _)) => Ok((Some(written), problems)),
                    Err(e) if e.kind() == ErrorKind::Interrupted => Err(e),
                    Err(e) => Ok((None, vec![e.to_string()])),
                }
            })
            .collect();
        for result in results {
            let (written, problems) = result?;
            if let Some(written) = written {
                self.count_file(written);
            }
            self.outcome.problems.extend(problems);
        }
        Ok(())
    }

    /// Restores one entry that is not a directory into `dir` (`rel`: that
    /// directory relative to the target). Errors about this entry are
    /// recorded; only interruption is returned as an error.
    fn restore_leaf(
        &mut self,
        dir: BorrowedFd<'_>,
        node: &Node,
        path: &Path,
        rel: &Path,
    ) -> Result<()> {
        let result = match node.kind {
            NodeKind::File => self.restore_file(dir, node, path, rel),
            NodeKind::Symlink => restore_symlink(dir, node, path, self.apply),
            _ if self.no_special => {
                self.outcome.special_skipped += 1;
                Ok(Vec::new())
            }
            _ => restore_special(dir, node, path, self.apply),
        };
        match result {
            Ok(problems) => {
                self.outcome.problems.extend(problems);
                Ok(())
            }
            Err(e) if e.kind() == ErrorKind::Interrupted => Err(e),
            Err(e) => {
                self.outcome.problems.push(e.to_string());
                Ok(())
            }
        }
    }

    fn restore_file(
        &mut self,
        dir: BorrowedFd<'_>,
        node: &Node,
        path: &Path,
        rel: &Path,
    ) -> Result<Vec<String>> {
        let key = (node.device_id, node.inode);
        if node.links > 1 {
            if let Some(first) = self.hardlinks.get(&key) {
                self.link_to(first, dir, node, path)?;
                return Ok(Vec::new());
            }
        }
        let (written, problems, file) = write_file(self.repo, dir, node, path, self.apply, None)?;
        if node.links > 1 {
            let meta = file
                .metadata()
                .map_err(|e| Error::io(format!("cannot stat {}", path.display()), e))?;
            let first = FirstLink {
                dir: rel.to_path_buf(),
                name: node.name.0.clone(),
                id: (meta.dev(), meta.ino()),
            };
            self.hardlinks.insert(key, first);
        }
        self.count_file(written);
        Ok(problems)
    }

    /// Makes `node` in `dir` a hard link to the file restored first. That
    /// file is found again from the target, one name at a time without
    /// following symlinks, and must still be the file restored (device and
    /// inode) before it is linked.
    fn link_to(
        &self,
        first: &FirstLink,
        dir: BorrowedFd<'_>,
        node: &Node,
        path: &Path,
    ) -> Result<()> {
        let first_path = self
            .target
            .join(&first.dir)
            .join(OsStr::from_bytes(&first.name));
        let fail = |e: std::io::Error| {
            Error::io(
                format!("cannot link {} to {}", path.display(), first_path.display()),
                e,
            )
        };
        let mut opened: Option<File> = None;
        for name in first.dir.iter() {
            let from = opened.as_ref().unwrap_or(&self.root).as_fd();
            opened = Some(at::open_dir_path(from, name).map_err(fail)?);
        }
        let from = opened.as_ref().unwrap_or(&self.root).as_fd();
        let handle = Handle::open(from, OsStr::from_bytes(&first.name)).map_err(fail)?;
        let meta = handle.metadata().map_err(fail)?;
        if (meta.dev(), meta.ino()) != first.id {
            return Err(Error::io(
                format!("{}: not linked", path.display()),
                std::io::Error::other(format!(
                    "{} was replaced during the restore",
                    first_path.display()
                )),
            ));
        }
        let name = name_of(node);
        make_way(dir, name);
        handle.link(dir, name).map_err(fail)
    }

    fn count_file(&mut self, written: u64) {
        let ctx = self.repo.context();
        self.outcome.files += 1;
        self.outcome.bytes += written;
        ctx.progress().add_items(1);
    }
}

/// Opens `parent` again as `..` of `child`, which is held: the walk closed
/// it on the way down. Refused if it is not the directory it was.
fn reopen_parent(child: &Frame, parent: &Frame) -> Result<File> {
    let held = child.dir.as_ref().expect("a popped frame was on top");
    let moved = |why: String| {
        Error::new(
            ErrorKind::Io,
            format!(
                "{} was moved during the restore ({why}): restore stopped",
                parent.path.display()
            ),
        )
    };
    let dir = at::open_dir(held.as_fd(), OsStr::new("..")).map_err(|e| moved(e.to_string()))?;
    let meta = dir.metadata().map_err(|e| moved(e.to_string()))?;
    if (meta.dev(), meta.ino()) != parent.id {
        return Err(moved("it is another directory now".into()));
    }
    Ok(dir)
}

/// Makes way for a restored entry (restore overwrites, as restic does):
/// anything but a directory at `name` is removed, a symlink itself and not
/// what it points to; directories are kept and merged into.
fn make_way(dir: BorrowedFd<'_>, name: &OsStr) {
    if let Ok(st) = Stat::at(dir, name) {
        if st.file_type() != FileType::Dir {
            let _ = at::remove(dir, name);
        }
    }
}

/// Creates a regular file in `dir` (0600 until its metadata is applied,
/// `O_EXCL`: whatever was there is removed first), writes its content and
/// applies its metadata through the open descriptor. Returns its length
/// (which must be the snapshot's), the metadata problems and the file.
fn write_file(
    repo: &Repository,
    dir: BorrowedFd<'_>,
    node: &Node,
    path: &Path,
    apply: Apply,
    blobs: Option<Vec<Vec<u8>>>,
) -> Result<(u64, Vec<String>, File)> {
    let name = name_of(node);
    make_way(dir, name);
    let mut file = at::create_file(dir, name, 0o600)
        .map_err(|e| Error::io(format!("cannot create {}", path.display()), e))?;
    let written = match blobs {
        Some(blobs) => content::write_read_content(repo, &blobs, &mut file),
        None => content::write_content(repo, &node.content, &mut file),
    }
    .map_err(|e| e.context(path.display()))?;
    if written != node.size {
        return Err(Error::corrupt(format!(
            "{}: restored {written} bytes but the snapshot records {}",
            path.display(),
            node.size
        )));
    }
    // Test hook: content written, stored mode not yet applied.
    crate::failpoint::pause!("restore-file-written");
    let problems = metadata::apply_to_file(&file, node, apply, path);
    Ok((written, problems, file))
}

/// Opens what was just created as `name` in `dir` and checks that it is
/// still that: of the expected type and with one link (a hard link to
/// another file put in its place has more). Its metadata is then set
/// through this handle only.
fn created_handle(
    dir: BorrowedFd<'_>,
    name: &OsStr,
    path: &Path,
    expected: impl Fn(&std::fs::FileType) -> bool,
) -> Result<Handle> {
    let handle = Handle::open(dir, name)
        .map_err(|e| Error::io(format!("cannot open {}", path.display()), e))?;
    let meta = handle
        .metadata()
        .map_err(|e| Error::io(format!("cannot stat {}", path.display()), e))?;
    if !expected(&meta.file_type()) || meta.nlink() != 1 {
        return Err(Error::new(
            ErrorKind::Io,
            format!(
                "{} was replaced while it was restored: its metadata is not set",
                path.display()
            ),
        ));
    }
    Ok(handle)
}

fn restore_symlink(
    dir: BorrowedFd<'_>,
    node: &Node,
    path: &Path,
    apply: Apply,
) -> Result<Vec<String>> {
    let target = node
        .link_target
        .as_ref()
        .ok_or_else(|| Error::corrupt("symlink without a target"))?;
    let name = name_of(node);
    make_way(dir, name);
    at::make_symlink(OsStr::from_bytes(&target.0), dir, name)
        .map_err(|e| Error::io(format!("cannot create symlink {}", path.display()), e))?;
    let handle = created_handle(dir, name, path, |t| t.is_symlink())?;
    Ok(metadata::apply_to_handle(&handle, node, apply, path))
}

fn restore_special(
    dir: BorrowedFd<'_>,
    node: &Node,
    path: &Path,
    apply: Apply,
) -> Result<Vec<String>> {
    use std::os::unix::fs::FileTypeExt;
    let (special, rdev) = metadata::special(node)
        .ok_or_else(|| Error::corrupt(format!("{}: not a special file", path.display())))?;
    let name = name_of(node);
    make_way(dir, name);
    at::make_special(dir, name, special, 0o600, rdev)
        .map_err(|e| Error::io(format!("{}: cannot create special file", path.display()), e))?;
    let handle = created_handle(dir, name, path, |t| {
        t.is_fifo() || t.is_char_device() || t.is_block_device() || t.is_socket()
    })?;
    Ok(metadata::apply_to_handle(&handle, node, apply, path))
}
