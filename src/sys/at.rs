//! Calls relative to a held directory descriptor, for the restorer: every
//! name is one path component looked up in a directory that is already
//! open, and nothing here follows a symlink in that place. A user who can
//! write in a restored directory can swap an entry for a symlink at any
//! moment; with these calls the swap is either refused (`O_NOFOLLOW`,
//! `O_EXCL`) or acts on the symlink itself, never on what it points to.
//!
//! `Handle` is an `O_PATH` descriptor of a symlink or special file, which
//! cannot be opened for reading: its owner, mode, times and xattrs are set
//! through the descriptor (`AT_EMPTY_PATH`) or through `/proc/self/fd/N`,
//! which names exactly the file the descriptor holds and does not follow
//! a symlink any further.

use super::fs::Special;
use std::ffi::{CString, OsStr};
use std::fs::File;
use std::io;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, FromRawFd};
use std::os::unix::ffi::OsStrExt;
use std::path::Path;

fn c_name(name: &OsStr) -> io::Result<CString> {
    CString::new(name.as_bytes()).map_err(|_| io::Error::from(io::ErrorKind::InvalidInput))
}

/// A new descriptor from a call that returns one, or the OS error.
fn owned(fd: libc::c_int) -> io::Result<File> {
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: the call returned a new descriptor that nothing else owns.
    Ok(unsafe { File::from_raw_fd(fd) })
}

fn check(rc: libc::c_int) -> io::Result<()> {
    if rc != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

fn openat(dir: BorrowedFd<'_>, name: &OsStr, flags: libc::c_int, mode: u32) -> io::Result<File> {
    let name = c_name(name)?;
    // SAFETY: `dir` is an open descriptor and `name` NUL-terminated.
    owned(unsafe {
        libc::openat(
            dir.as_raw_fd(),
            name.as_ptr(),
            flags | libc::O_CLOEXEC | libc::O_NOFOLLOW,
            mode as libc::c_uint,
        )
    })
}

/// Opens the directory the user named as a restore target. It may be a
/// symlink: the user chose it. Everything beneath it is opened with the
/// calls below.
pub fn open_target(path: &Path) -> io::Result<File> {
    let path = c_name(path.as_os_str())?;
    // SAFETY: `path` is NUL-terminated.
    owned(unsafe {
        libc::open(
            path.as_ptr(),
            libc::O_RDONLY | libc::O_DIRECTORY | libc::O_CLOEXEC,
        )
    })
}

/// Opens the directory `name` in `dir` for reading and for `*at` calls;
/// fails (ELOOP, ENOTDIR) if `name` is a symlink or not a directory.
pub fn open_dir(dir: BorrowedFd<'_>, name: &OsStr) -> io::Result<File> {
    openat(dir, name, libc::O_RDONLY | libc::O_DIRECTORY, 0)
}

/// Opens the directory `name` in `dir` for `*at` calls only (`O_PATH`):
/// needs search permission on `dir`, none on `name`, so it also opens
/// directories whose stored mode was already applied (`0311`, `0111`).
pub fn open_dir_path(dir: BorrowedFd<'_>, name: &OsStr) -> io::Result<File> {
    openat(dir, name, libc::O_PATH | libc::O_DIRECTORY, 0)
}

/// Creates the regular file `name` in `dir` with `mode` (before the umask)
/// and opens it for writing. It must not exist (`O_EXCL`): the caller
/// removes what was there first, and anything put back in between makes
/// this fail rather than be followed or truncated.
pub fn create_file(dir: BorrowedFd<'_>, name: &OsStr, mode: u32) -> io::Result<File> {
    openat(
        dir,
        name,
        libc::O_WRONLY | libc::O_CREAT | libc::O_EXCL,
        mode,
    )
}

/// Creates the directory `name` in `dir` with `mode` (before the umask).
pub fn make_dir(dir: BorrowedFd<'_>, name: &OsStr, mode: u32) -> io::Result<()> {
    let name = c_name(name)?;
    // SAFETY: `dir` is an open descriptor and `name` NUL-terminated.
    check(unsafe { libc::mkdirat(dir.as_raw_fd(), name.as_ptr(), mode as libc::mode_t) })
}

/// Removes the entry `name` of `dir`, which must not be a directory. A
/// symlink is removed itself, not what it points to.
pub fn remove(dir: BorrowedFd<'_>, name: &OsStr) -> io::Result<()> {
    let name = c_name(name)?;
    // SAFETY: `dir` is an open descriptor and `name` NUL-terminated.
    check(unsafe { libc::unlinkat(dir.as_raw_fd(), name.as_ptr(), 0) })
}

/// Creates the symlink `name` in `dir`, pointing to `target`.
pub fn make_symlink(target: &OsStr, dir: BorrowedFd<'_>, name: &OsStr) -> io::Result<()> {
    let (target, name) = (c_name(target)?, c_name(name)?);
    // SAFETY: both strings are NUL-terminated and `dir` is open.
    check(unsafe { libc::symlinkat(target.as_ptr(), dir.as_raw_fd(), name.as_ptr()) })
}

/// Creates a fifo, device node or socket file `name` in `dir` with the
/// permission bits `permissions` (before the umask) and, for devices, the
/// device number `rdev`.
pub fn make_special(
    dir: BorrowedFd<'_>,
    name: &OsStr,
    special: Special,
    permissions: u32,
    rdev: u64,
) -> io::Result<()> {
    let name = c_name(name)?;
    let kind_bits = match special {
        Special::Fifo => libc::S_IFIFO,
        Special::CharDevice => libc::S_IFCHR,
        Special::BlockDevice => libc::S_IFBLK,
        Special::Socket => libc::S_IFSOCK,
    };
    // SAFETY: `dir` is an open descriptor and `name` NUL-terminated.
    check(unsafe {
        libc::mknodat(
            dir.as_raw_fd(),
            name.as_ptr(),
            kind_bits | (permissions & 0o7777),
            rdev as libc::dev_t,
        )
    })
}

/// An `O_PATH` descriptor of a file that is not opened for reading (a
/// symlink, a special file, the first name of a hard link): it names one
/// inode, whatever happens to the name it was opened by.
#[derive(Debug)]
pub struct Handle(File);

impl Handle {
    /// The entry `name` of `dir` itself, a symlink included.
    pub fn open(dir: BorrowedFd<'_>, name: &OsStr) -> io::Result<Handle> {
        openat(dir, name, libc::O_PATH, 0).map(Handle)
    }

    /// The lstat of the file held.
    pub fn metadata(&self) -> io::Result<std::fs::Metadata> {
        self.0.metadata()
    }

    /// `/proc/self/fd/N`: the file held, for calls that take only a path.
    /// Following this magic link gives the file itself, even a symlink.
    fn proc_path(&self) -> CString {
        CString::new(format!("/proc/self/fd/{}", self.0.as_raw_fd())).expect("no NUL")
    }

    pub fn chown(&self, uid: u32, gid: u32) -> io::Result<()> {
        // SAFETY: an open descriptor and an empty NUL-terminated name.
        check(unsafe {
            libc::fchownat(
                self.0.as_raw_fd(),
                c"".as_ptr(),
                uid,
                gid,
                libc::AT_EMPTY_PATH | libc::AT_SYMLINK_NOFOLLOW,
            )
        })
    }

    /// Sets the permission bits (not for symlinks, whose mode Linux keeps
    /// at 0777).
    pub fn chmod(&self, mode: u32) -> io::Result<()> {
        let path = self.proc_path();
        // SAFETY: a NUL-terminated path.
        check(unsafe { libc::chmod(path.as_ptr(), (mode & 0o7777) as libc::mode_t) })
    }

    /// Sets access and modification time to `mtime_ns` (nanoseconds since
    /// the epoch).
    pub fn set_times(&self, mtime_ns: i64) -> io::Result<()> {
        let ts = libc::timespec {
            tv_sec: mtime_ns.div_euclid(1_000_000_000) as libc::time_t,
            tv_nsec: mtime_ns.rem_euclid(1_000_000_000) as libc::c_long,
        };
        let times = [ts, ts];
        // SAFETY: an open descriptor, an empty NUL-terminated name and two
        // timespecs.
        let rc = unsafe {
            libc::utimensat(
                self.0.as_raw_fd(),
                c"".as_ptr(),
                times.as_ptr(),
                libc::AT_EMPTY_PATH | libc::AT_SYMLINK_NOFOLLOW,
            )
        };
        if rc == 0 {
            return Ok(());
        }
        // Kernels before 5.8 refuse AT_EMPTY_PATH here.
        let path = self.proc_path();
        // SAFETY: a NUL-terminated path and two timespecs.
        check(unsafe { libc::utimensat(libc::AT_FDCWD, path.as_ptr(), times.as_ptr(), 0) })
    }

    pub fn set_xattr(&self, name: &OsStr, value: &[u8]) -> io::Result<()> {
        let (path, name) = (self.proc_path(), c_name(name)?);
        // SAFETY: NUL-terminated path and name; the value is valid for its
        // length.
        check(unsafe {
            libc::setxattr(
                path.as_ptr(),
                name.as_ptr(),
                value.as_ptr().cast(),
                value.len(),
                0,
            )
        })
    }

    /// Makes `name` in `dir` a new hard link to the file held. `linkat`
    /// with `AT_EMPTY_PATH` needs CAP_DAC_READ_SEARCH; without it, the
    /// `/proc/self/fd` path links the same file.
    pub fn link(&self, dir: BorrowedFd<'_>, name: &OsStr) -> io::Result<()> {
        let name = c_name(name)?;
        // SAFETY: open descriptors and NUL-terminated names.
        let rc = unsafe {
            libc::linkat(
                self.0.as_raw_fd(),
                c"".as_ptr(),
                dir.as_raw_fd(),
                name.as_ptr(),
                libc::AT_EMPTY_PATH,
            )
        };
        if rc == 0 {
            return Ok(());
        }
        let e = io::Error::last_os_error();
        if e.raw_os_error() != Some(libc::ENOENT) {
            return Err(e);
        }
        let path = self.proc_path();
        // SAFETY: NUL-terminated paths and an open descriptor.
        check(unsafe {
            libc::linkat(
                libc::AT_FDCWD,
                path.as_ptr(),
                dir.as_raw_fd(),
                name.as_ptr(),
                libc::AT_SYMLINK_FOLLOW,
            )
        })
    }
}

impl AsFd for Handle {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.0.as_fd()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::MetadataExt;

    /// The `O_PATH` handle acts on a symlink itself, never on its target.
    #[test]
    fn a_handle_on_a_symlink_changes_the_link_not_its_target() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("target"), b"x").unwrap();
        let d = File::open(dir.path()).unwrap();
        make_symlink(OsStr::new("target"), d.as_fd(), OsStr::new("link")).unwrap();
        let h = Handle::open(d.as_fd(), OsStr::new("link")).unwrap();
        assert!(h.metadata().unwrap().file_type().is_symlink());
        h.set_times(1_000_000_000_000_000_007).unwrap();
        let link = std::fs::symlink_metadata(dir.path().join("link")).unwrap();
        let target = std::fs::metadata(dir.path().join("target")).unwrap();
        assert_eq!((link.mtime(), link.mtime_nsec()), (1_000_000_000, 7));
        assert_ne!(target.mtime(), 1_000_000_000);
        assert!(h.chmod(0o600).is_err(), "a symlink's mode cannot change");
        assert_eq!(
            target.mode() & 0o777,
            std::fs::metadata(dir.path().join("target")).unwrap().mode() & 0o777
        );
        // Creating over a symlink is refused, not followed.
        let e = create_file(d.as_fd(), OsStr::new("link"), 0o600).unwrap_err();
        assert_eq!(e.raw_os_error(), Some(libc::EEXIST));
        let e = open_dir(d.as_fd(), OsStr::new("link")).unwrap_err();
        assert!(matches!(
            e.raw_os_error(),
            Some(libc::ELOOP | libc::ENOTDIR)
        ));
        remove(d.as_fd(), OsStr::new("link")).unwrap();
        assert_eq!(std::fs::read(dir.path().join("target")).unwrap(), b"x");
        // A hard link made through the handle of a file.
        let f = Handle::open(d.as_fd(), OsStr::new("target")).unwrap();
        f.link(d.as_fd(), OsStr::new("second")).unwrap();
        assert_eq!(
            std::fs::metadata(dir.path().join("second")).unwrap().ino(),
            f.metadata().unwrap().ino()
        );
    }
}
