//! Reading and applying file-system metadata (owners, modes, times,
//! xattrs, special files), through `crate::sys::fs` for what std lacks.

use crate::format::tree::{Bytes, Node, NodeKind, Xattr};
use crate::sys::at::Handle;
use crate::sys::fs::{FileType, Special};
use std::ffi::OsStr;
use std::fs::{File, Metadata};
use std::os::unix::ffi::OsStrExt;
use std::path::Path;

pub use crate::sys::fs::Stat;

impl Stat {
    /// The kind of node this lstat describes. Here, not in `sys`: the
    /// base layer cannot name a format type.
    pub fn kind(&self) -> NodeKind {
        match self.file_type() {
            FileType::Dir => NodeKind::Dir,
            FileType::Symlink => NodeKind::Symlink,
            FileType::Special(Special::Fifo) => NodeKind::Fifo,
            FileType::Special(Special::CharDevice) => NodeKind::Chardev,
            FileType::Special(Special::BlockDevice) => NodeKind::Blockdev,
            FileType::Special(Special::Socket) => NodeKind::Socket,
            FileType::File => NodeKind::File,
        }
    }
}

/// A node for `path` from its lstat metadata (no content, no subtree).
pub fn node_from_metadata(name: &OsStr, path: &Path, meta: &Metadata) -> Node {
    let mut node = node_from_stat(name, path, &Stat::from(meta));
    node.xattrs = read_xattrs(path);
    node
}

/// A node for `path` from its lstat, without its xattrs: the caller reads
/// them from the path (`read_xattrs`) or from the open file
/// (`read_file_xattrs`).
pub fn node_from_stat(name: &OsStr, path: &Path, stat: &Stat) -> Node {
    let kind = stat.kind();
    let mut node = Node::new(name.as_bytes(), kind);
    node.mode = stat.mode & 0o7777;
    node.uid = stat.uid;
    node.gid = stat.gid;
    node.user = crate::sys::user_name(stat.uid);
    node.group = crate::sys::group_name(stat.gid);
    node.mtime_ns = stat.mtime_ns;
    node.ctime_ns = stat.ctime_ns;
    node.inode = stat.ino;
    node.device_id = stat.dev;
    node.links = stat.nlink;
    node.size = if kind == NodeKind::File { stat.size } else { 0 };
    if matches!(kind, NodeKind::Chardev | NodeKind::Blockdev) {
        node.rdev = stat.rdev;
    }
    if kind == NodeKind::Symlink {
        node.link_target = std::fs::read_link(path)
            .ok()
            .map(|t| Bytes(t.as_os_str().as_bytes().to_vec()));
    }
    node
}

/// Extended attributes of `path` itself (not a symlink's target). File
/// systems without xattr support give an empty list.
pub fn read_xattrs(path: &Path) -> Vec<Xattr> {
    let Ok(names) = xattr::list(path) else {
        return Vec::new();
    };
    xattrs_sorted(names, |name| xattr::get(path, name))
}

/// `read_xattrs` for an open file: no path to look up again.
pub fn read_file_xattrs(file: &std::fs::File) -> Vec<Xattr> {
    use xattr::FileExt;
    let Ok(names) = file.list_xattr() else {
        return Vec::new();
    };
    xattrs_sorted(names, |name| file.get_xattr(name))
}

fn xattrs_sorted(
    names: xattr::XAttrs,
    get: impl Fn(&OsStr) -> std::io::Result<Option<Vec<u8>>>,
) -> Vec<Xattr> {
    let mut out: Vec<Xattr> = names
        .filter_map(|name| {
            let value = get(&name).ok().flatten()?;
            Some(Xattr {
                name: Bytes(name.as_bytes().to_vec()),
                value: hex::encode(value),
            })
        })
        .collect();
    out.sort_by(|a, b| a.name.cmp(&b.name));
    out
}

/// Which of a node's metadata a restore applies.
#[derive(Debug, Clone, Copy)]
pub struct Apply {
    /// Give the file its stored owner (root only, and not with
    /// `--no-same-owner`).
    pub owner: bool,
    /// Clear set-user-ID and set-group-ID bits on everything but
    /// directories (`--no-special`).
    pub clear_set_id: bool,
}

impl Apply {
    /// The permission bits a restored node gets.
    pub fn mode(&self, node: &Node) -> u32 {
        let mode = node.mode & 0o7777;
        if self.clear_set_id && node.kind != NodeKind::Dir {
            mode & !0o6000
        } else {
            mode
        }
    }
}

/// `mtime_ns` as a `SystemTime`, before the epoch included.
fn system_time(mtime_ns: i64) -> std::time::SystemTime {
    let epoch = std::time::UNIX_EPOCH;
    let delta = std::time::Duration::from_nanos(mtime_ns.unsigned_abs());
    if mtime_ns >= 0 {
        epoch + delta
    } else {
        epoch - delta
    }
}

fn xattr_value(x: &Xattr) -> Option<(&OsStr, Vec<u8>)> {
    Some((OsStr::from_bytes(&x.name.0), hex::decode(&x.value).ok()?))
}

/// Applies owner, xattrs, mode and mtime to a restored regular file or
/// directory through its open descriptor (nothing is looked up by name),
/// in an order where chown cannot clear set-ID bits after chmod set them.
/// `path` is for messages. Returns the problems met, one line each.
pub fn apply_to_file(file: &File, node: &Node, what: Apply, path: &Path) -> Vec<String> {
    use std::os::unix::fs::PermissionsExt;
    use xattr::FileExt;
    let mut problems = Vec::new();
    if what.owner {
        if let Err(e) = std::os::unix::fs::fchown(file, Some(node.uid), Some(node.gid)) {
            problems.push(format!("{}: cannot set owner: {e}", path.display()));
        }
    }
    for x in &node.xattrs {
        let Some((name, value)) = xattr_value(x) else {
            continue;
        };
        if let Err(e) = file.set_xattr(name, &value) {
            problems.push(xattr_problem(path, x, e));
        }
    }
    if let Err(e) = file.set_permissions(std::fs::Permissions::from_mode(what.mode(node))) {
        problems.push(format!("{}: cannot set mode: {e}", path.display()));
    }
    let mtime = system_time(node.mtime_ns);
    let times = std::fs::FileTimes::new()
        .set_accessed(mtime)
        .set_modified(mtime);
    if let Err(e) = file.set_times(times) {
        problems.push(format!("{}: cannot set times: {e}", path.display()));
    }
    problems
}

/// `apply_to_file` for a symlink or special file, through the `O_PATH`
/// handle opened right after it was created (a symlink keeps its mode).
pub fn apply_to_handle(handle: &Handle, node: &Node, what: Apply, path: &Path) -> Vec<String> {
    let mut problems = Vec::new();
    if what.owner {
        if let Err(e) = handle.chown(node.uid, node.gid) {
            problems.push(format!("{}: cannot set owner: {e}", path.display()));
        }
    }
    for x in &node.xattrs {
        let Some((name, value)) = xattr_value(x) else {
            continue;
        };
        if let Err(e) = handle.set_xattr(name, &value) {
            problems.push(xattr_problem(path, x, e));
        }
    }
    if node.kind != NodeKind::Symlink {
        if let Err(e) = handle.chmod(what.mode(node)) {
            problems.push(format!("{}: cannot set mode: {e}", path.display()));
        }
    }
    if let Err(e) = handle.set_times(node.mtime_ns) {
        problems.push(format!("{}: cannot set times: {e}", path.display()));
    }
    problems
}

fn xattr_problem(path: &Path, x: &Xattr, e: std::io::Error) -> String {
    format!(
        "{}: cannot set xattr {}: {e}",
        path.display(),
        String::from_utf8_lossy(&x.name.0)
    )
}

/// The special file a node stands for, with its device number, or `None`
/// for files, directories and symlinks.
pub fn special(node: &Node) -> Option<(Special, u64)> {
    match node.kind {
        NodeKind::Fifo => Some((Special::Fifo, 0)),
        NodeKind::Chardev => Some((Special::CharDevice, node.rdev)),
        NodeKind::Blockdev => Some((Special::BlockDevice, node.rdev)),
        NodeKind::Socket => Some((Special::Socket, 0)),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::ffi::CString;
    use std::os::fd::AsFd;

    /// The walk ahead stats names in an open directory; the archiver stats
    /// whole paths: both must give the same node.
    #[test]
    fn stat_in_a_directory_equals_the_stat_of_the_path() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        std::fs::write(root.join("file"), b"some bytes").unwrap();
        std::fs::create_dir(root.join("dir")).unwrap();
        std::os::unix::fs::symlink("file", root.join("link")).unwrap();
        let fifo = CString::new(root.join("fifo").as_os_str().as_bytes()).unwrap();
        // SAFETY: a valid NUL-terminated path.
        assert_eq!(unsafe { libc::mkfifo(fifo.as_ptr(), 0o640) }, 0);
        let name = OsStr::from_bytes(b"caf\xe9 not utf-8");
        std::fs::write(root.join(name), b"").unwrap();
        let handle = std::fs::File::open(root).unwrap();
        for (entry, kind) in [
            (OsStr::new("file"), NodeKind::File),
            (OsStr::new("dir"), NodeKind::Dir),
            (OsStr::new("link"), NodeKind::Symlink),
            (OsStr::new("fifo"), NodeKind::Fifo),
            (name, NodeKind::File),
        ] {
            let path = root.join(entry);
            let at = Stat::at(handle.as_fd(), entry).unwrap();
            let of_path = Stat::from(&std::fs::symlink_metadata(&path).unwrap());
            assert_eq!(at, of_path, "{entry:?}");
            assert_eq!(at.kind(), kind, "{entry:?}");
            assert_eq!(
                node_from_stat(entry, &path, &at),
                node_from_stat(entry, &path, &of_path)
            );
        }
        let missing = Stat::at(handle.as_fd(), OsStr::new("missing")).unwrap_err();
        assert_eq!(missing.kind(), std::io::ErrorKind::NotFound);
    }
}
