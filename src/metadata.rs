//! Reading and applying file-system metadata (owners, modes, times,
//! xattrs, special files). The only module that calls the OS for these.

use crate::tree::{Bytes, Node, NodeKind, Xattr};
use std::collections::HashMap;
use std::ffi::{CStr, CString, OsStr};
use std::fs::Metadata;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::Path;
use std::sync::{Mutex, OnceLock};

pub fn hostname() -> String {
    static HOST: OnceLock<String> = OnceLock::new();
    HOST.get_or_init(|| {
        let mut buf = [0u8; 256];
        // SAFETY: the buffer is valid for its length; gethostname NUL-terminates
        // on success for names shorter than the buffer.
        let rc = unsafe { libc::gethostname(buf.as_mut_ptr().cast(), buf.len() - 1) };
        if rc != 0 {
            return "localhost".into();
        }
        let end = buf.iter().position(|&b| b == 0).unwrap_or(buf.len());
        String::from_utf8_lossy(&buf[..end]).into_owned()
    })
    .clone()
}

pub fn username() -> String {
    // SAFETY: geteuid cannot fail.
    let uid = unsafe { libc::geteuid() };
    user_name(uid).unwrap_or_else(|| uid.to_string())
}

pub fn current_ids() -> (u32, u32) {
    // SAFETY: these calls cannot fail.
    unsafe { (libc::geteuid(), libc::getegid()) }
}

pub fn is_root() -> bool {
    current_ids().0 == 0
}

/// Looks up a user name, cached: a tree of 40,000 files has few owners.
pub fn user_name(uid: u32) -> Option<String> {
    static CACHE: OnceLock<Mutex<HashMap<u32, Option<String>>>> = OnceLock::new();
    let cache = CACHE.get_or_init(Default::default);
    if let Some(hit) = cache.lock().expect("cache mutex").get(&uid) {
        return hit.clone();
    }
    let mut buf = vec![0 as libc::c_char; 16 * 1024];
    let mut pwd: libc::passwd = unsafe { std::mem::zeroed() };
    let mut result: *mut libc::passwd = std::ptr::null_mut();
    // SAFETY: all pointers are valid for the call and the buffer outlives use.
    let rc = unsafe { libc::getpwuid_r(uid, &mut pwd, buf.as_mut_ptr(), buf.len(), &mut result) };
    let name = if rc == 0 && !result.is_null() {
        // SAFETY: on success pw_name points to a NUL-terminated string in buf.
        Some(
            unsafe { CStr::from_ptr(pwd.pw_name) }
                .to_string_lossy()
                .into_owned(),
        )
    } else {
        None
    };
    cache.lock().expect("cache mutex").insert(uid, name.clone());
    name
}

pub fn group_name(gid: u32) -> Option<String> {
    static CACHE: OnceLock<Mutex<HashMap<u32, Option<String>>>> = OnceLock::new();
    let cache = CACHE.get_or_init(Default::default);
    if let Some(hit) = cache.lock().expect("cache mutex").get(&gid) {
        return hit.clone();
    }
    let mut buf = vec![0 as libc::c_char; 16 * 1024];
    let mut grp: libc::group = unsafe { std::mem::zeroed() };
    let mut result: *mut libc::group = std::ptr::null_mut();
    // SAFETY: as in user_name.
    let rc = unsafe { libc::getgrgid_r(gid, &mut grp, buf.as_mut_ptr(), buf.len(), &mut result) };
    let name = if rc == 0 && !result.is_null() {
        // SAFETY: on success gr_name points to a NUL-terminated string in buf.
        Some(
            unsafe { CStr::from_ptr(grp.gr_name) }
                .to_string_lossy()
                .into_owned(),
        )
    } else {
        None
    };
    cache.lock().expect("cache mutex").insert(gid, name.clone());
    name
}

pub fn node_kind(meta: &Metadata) -> NodeKind {
    let t = meta.file_type();
    if t.is_dir() {
        NodeKind::Dir
    } else if t.is_symlink() {
        NodeKind::Symlink
    } else if t.is_fifo() {
        NodeKind::Fifo
    } else if t.is_char_device() {
        NodeKind::Chardev
    } else if t.is_block_device() {
        NodeKind::Blockdev
    } else if t.is_socket() {
        NodeKind::Socket
    } else {
        NodeKind::File
    }
}

/// A node for `path` from its lstat metadata (no content, no subtree).
pub fn node_from_metadata(name: &OsStr, path: &Path, meta: &Metadata) -> Node {
    let kind = node_kind(meta);
    let mut node = Node::new(name.as_bytes(), kind);
    node.mode = meta.mode() & 0o7777;
    node.uid = meta.uid();
    node.gid = meta.gid();
    node.user = user_name(meta.uid());
    node.group = group_name(meta.gid());
    // Saturating: a file dated beyond year 2262 must not crash the backup.
    node.mtime_ns = meta
        .mtime()
        .saturating_mul(1_000_000_000)
        .saturating_add(meta.mtime_nsec());
    node.ctime_ns = meta
        .ctime()
        .saturating_mul(1_000_000_000)
        .saturating_add(meta.ctime_nsec());
    node.inode = meta.ino();
    node.device_id = meta.dev();
    node.links = meta.nlink();
    node.size = if kind == NodeKind::File {
        meta.len()
    } else {
        0
    };
    if matches!(kind, NodeKind::Chardev | NodeKind::Blockdev) {
        node.rdev = meta.rdev();
    }
    if kind == NodeKind::Symlink {
        node.link_target = std::fs::read_link(path)
            .ok()
            .map(|t| Bytes(t.as_os_str().as_bytes().to_vec()));
    }
    node.xattrs = read_xattrs(path);
    node
}

/// Extended attributes of `path` itself (not a symlink's target). File
/// systems without xattr support give an empty list.
pub fn read_xattrs(path: &Path) -> Vec<Xattr> {
    let Ok(names) = xattr::list(path) else {
        return Vec::new();
    };
    let mut out: Vec<Xattr> = names
        .filter_map(|name| {
            let value = xattr::get(path, &name).ok().flatten()?;
            Some(Xattr {
                name: Bytes(name.as_bytes().to_vec()),
                value: hex::encode(value),
            })
        })
        .collect();
    out.sort_by(|a, b| a.name.cmp(&b.name));
    out
}

/// Applies owner (as root), xattrs, mode and mtime to a restored path, in
/// an order where chown cannot clear setuid bits after chmod set them.
/// Returns the problems met, each as one line.
pub fn apply(path: &Path, node: &Node, restore_owner: bool) -> Vec<String> {
    let mut problems = Vec::new();
    let is_link = node.kind == NodeKind::Symlink;
    if restore_owner {
        if let Err(e) = std::os::unix::fs::lchown(path, Some(node.uid), Some(node.gid)) {
            problems.push(format!("{}: cannot set owner: {e}", path.display()));
        }
    }
    for x in &node.xattrs {
        let Ok(value) = hex::decode(&x.value) else {
            continue;
        };
        if let Err(e) = xattr::set(path, OsStr::from_bytes(&x.name.0), &value) {
            problems.push(format!(
                "{}: cannot set xattr {}: {e}",
                path.display(),
                String::from_utf8_lossy(&x.name.0)
            ));
        }
    }
    if !is_link {
        use std::os::unix::fs::PermissionsExt;
        if let Err(e) =
            std::fs::set_permissions(path, std::fs::Permissions::from_mode(node.mode & 0o7777))
        {
            problems.push(format!("{}: cannot set mode: {e}", path.display()));
        }
    }
    let mtime = filetime::FileTime::from_unix_time(
        node.mtime_ns.div_euclid(1_000_000_000),
        node.mtime_ns.rem_euclid(1_000_000_000) as u32,
    );
    // utimensat with AT_SYMLINK_NOFOLLOW for every kind: filetime's
    // set_file_times opens the path, which blocks forever on a fifo.
    if let Err(e) = filetime::set_symlink_file_times(path, mtime, mtime) {
        problems.push(format!("{}: cannot set times: {e}", path.display()));
    }
    problems
}

/// Creates a fifo or device node.
pub fn make_special(path: &Path, node: &Node) -> std::io::Result<()> {
    let c_path = CString::new(path.as_os_str().as_bytes())
        .map_err(|_| std::io::Error::new(std::io::ErrorKind::InvalidInput, "path contains NUL"))?;
    let (kind_bits, rdev) = match node.kind {
        NodeKind::Fifo => (libc::S_IFIFO, 0),
        NodeKind::Chardev => (libc::S_IFCHR, node.rdev),
        NodeKind::Blockdev => (libc::S_IFBLK, node.rdev),
        NodeKind::Socket => (libc::S_IFSOCK, 0),
        _ => {
            return Err(std::io::Error::new(
                std::io::ErrorKind::InvalidInput,
                "not a special file",
            ))
        }
    };
    // SAFETY: c_path is a valid NUL-terminated string.
    let rc = unsafe {
        libc::mknod(
            c_path.as_ptr(),
            kind_bits | (node.mode & 0o7777),
            rdev as libc::dev_t,
        )
    };
    if rc == 0 {
        Ok(())
    } else {
        Err(std::io::Error::last_os_error())
    }
}
