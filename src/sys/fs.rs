//! File-system calls beneath `engine::metadata`, the local backend and the
//! metrics file: stat, special files, writeback, flock. Each is a safe
//! function; the `unsafe` blocks and the libc types stay in this file.

use std::ffi::{CString, OsStr};
use std::fs::{File, Metadata};
use std::os::fd::{AsFd, AsRawFd, BorrowedFd};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::MetadataExt;
use std::path::Path;

/// What a node keeps of an lstat, from `std::fs::Metadata` or from
/// `fstatat` on a directory descriptor (`Stat::at`), which std cannot turn
/// into a `Metadata`. `engine::metadata` re-exports it and adds `kind`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Stat {
    /// `st_mode`: the file type bits and the permissions.
    pub mode: u32,
    pub uid: u32,
    pub gid: u32,
    pub size: u64,
    pub mtime_ns: i64,
    pub ctime_ns: i64,
    pub ino: u64,
    pub dev: u64,
    pub nlink: u64,
    pub rdev: u64,
}

/// Seconds and nanoseconds as nanoseconds, saturating: a file dated beyond
/// year 2262 must not crash the backup.
fn nanoseconds(seconds: i64, nanoseconds: i64) -> i64 {
    seconds
        .saturating_mul(1_000_000_000)
        .saturating_add(nanoseconds)
}

impl From<&Metadata> for Stat {
    fn from(meta: &Metadata) -> Stat {
        Stat {
            mode: meta.mode(),
            uid: meta.uid(),
            gid: meta.gid(),
            size: meta.len(),
            mtime_ns: nanoseconds(meta.mtime(), meta.mtime_nsec()),
            ctime_ns: nanoseconds(meta.ctime(), meta.ctime_nsec()),
            ino: meta.ino(),
            dev: meta.dev(),
            nlink: meta.nlink(),
            rdev: meta.rdev(),
        }
    }
}

impl Stat {
    /// The lstat of `name` in the directory `dir`: one path component to
    /// look up instead of the whole path, which on a tree of small files
    /// was a tenth of the CPU time (stat, open and xattrs each walked it).
    pub fn at(dir: BorrowedFd<'_>, name: &OsStr) -> std::io::Result<Stat> {
        let name = CString::new(name.as_bytes())
            .map_err(|_| std::io::Error::from(std::io::ErrorKind::InvalidInput))?;
        let mut st = std::mem::MaybeUninit::<libc::stat64>::uninit();
        // SAFETY: `dir` is an open descriptor, `name` NUL-terminated, and
        // `st` is written in full on success.
        let rc = unsafe {
            libc::fstatat64(
                dir.as_raw_fd(),
                name.as_ptr(),
                st.as_mut_ptr(),
                libc::AT_SYMLINK_NOFOLLOW,
            )
        };
        if rc != 0 {
            return Err(std::io::Error::last_os_error());
        }
        // SAFETY: fstatat succeeded, so `st` is initialised.
        let st = unsafe { st.assume_init() };
        // The field types differ between targets (nlink_t is 32 bits on
        // aarch64, time_t and the nanoseconds on 32-bit ones): widened with
        // `from`, which is the identity on x86_64.
        #[allow(clippy::useless_conversion)]
        Ok(Stat {
            mode: st.st_mode,
            uid: st.st_uid,
            gid: st.st_gid,
            size: u64::try_from(st.st_size).unwrap_or(0),
            mtime_ns: nanoseconds(i64::from(st.st_mtime), i64::from(st.st_mtime_nsec)),
            ctime_ns: nanoseconds(i64::from(st.st_ctime), i64::from(st.st_ctime_nsec)),
            ino: u64::from(st.st_ino),
            dev: u64::from(st.st_dev),
            nlink: u64::from(st.st_nlink),
            rdev: u64::from(st.st_rdev),
        })
    }

    /// The file type in `mode`'s type bits.
    pub fn file_type(&self) -> FileType {
        match self.mode & libc::S_IFMT {
            libc::S_IFDIR => FileType::Dir,
            libc::S_IFLNK => FileType::Symlink,
            libc::S_IFIFO => FileType::Special(Special::Fifo),
            libc::S_IFCHR => FileType::Special(Special::CharDevice),
            libc::S_IFBLK => FileType::Special(Special::BlockDevice),
            libc::S_IFSOCK => FileType::Special(Special::Socket),
            _ => FileType::File,
        }
    }
}

/// The type of file a `Stat` describes. Anything that is none of the
/// others is a `File`, as the archiver has always treated it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FileType {
    File,
    Dir,
    Symlink,
    Special(Special),
}

/// The files `at::make_special` creates: neither data nor directories.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Special {
    Fifo,
    CharDevice,
    BlockDevice,
    Socket,
}

/// The error a write to a full disk gives (ENOSPC), for the test hook that
/// simulates one.
pub fn full_disk_error() -> std::io::Error {
    std::io::Error::from_raw_os_error(libc::ENOSPC)
}

/// Starts writing every dirty page of `file` to disk, without waiting.
/// Advisory: it reports no writeback error, which the next
/// `wait_writeback` or an fsync does.
pub fn start_writeback(file: &File) {
    // Offset 0 and length 0: the whole file.
    // SAFETY: a plain system call on an open descriptor the caller owns.
    unsafe {
        libc::sync_file_range(file.as_raw_fd(), 0, 0, libc::SYNC_FILE_RANGE_WRITE);
    }
}

/// Writes `length` bytes of `file` from `start` to disk and waits for them.
/// `Ok(false)` when the file system cannot do this (the pages then stay
/// cached); an `Err` is a writeback error (EIO, ENOSPC, ...), which waiting
/// consumed: an fsync would no longer report it.
pub fn wait_writeback(file: &File, start: u64, length: u64) -> std::io::Result<bool> {
    // SAFETY: a plain system call on an open descriptor the caller owns.
    let waited = unsafe {
        libc::sync_file_range(
            file.as_raw_fd(),
            start as libc::off64_t,
            length as libc::off64_t,
            libc::SYNC_FILE_RANGE_WAIT_BEFORE
                | libc::SYNC_FILE_RANGE_WRITE
                | libc::SYNC_FILE_RANGE_WAIT_AFTER,
        )
    };
    if waited == 0 {
        return Ok(true);
    }
    let e = std::io::Error::last_os_error();
    match e.raw_os_error() {
        Some(libc::EINVAL | libc::ENOSYS | libc::ESPIPE | libc::EOPNOTSUPP) => Ok(false),
        _ => Err(e),
    }
}

/// Drops `length` bytes of `file` from `start` out of the page cache, once
/// they are on disk (`wait_writeback`). Advisory: pages that stay cached
/// cost only memory.
pub fn drop_cached_pages(file: &File, start: u64, length: u64) {
    // SAFETY: a plain system call on an open descriptor the caller owns.
    unsafe {
        libc::posix_fadvise(
            file.as_raw_fd(),
            start as libc::off_t,
            length as libc::off_t,
            libc::POSIX_FADV_DONTNEED,
        );
    }
}

/// Takes an exclusive `flock` on `file`, waiting while another process
/// holds one. The lock ends when the file is closed.
pub fn lock_exclusive(file: &File) -> std::io::Result<()> {
    // SAFETY: flock on a valid descriptor; the lock ends when it closes.
    if unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX) } != 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(())
}

/// Opens `name` in the directories `dirs` beneath `root` for reading,
/// without following a symbolic link on the way (`root` itself may be
/// one: the user chose it), without blocking on a FIFO, and only if it is
/// a regular file. Returns the file and its size (from `fstat` on the open
/// descriptor, so what was checked is what is read). A repository never
/// holds anything but directories and regular files: a symlink, FIFO,
/// device or socket planted there is `InvalidData`, naming what it is.
pub fn open_regular_beneath(
    root: &Path,
    dirs: &[&str],
    name: &str,
) -> std::io::Result<(File, u64)> {
    use std::os::unix::fs::OpenOptionsExt;
    let mut dir = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_DIRECTORY | libc::O_CLOEXEC)
        .open(root)?;
    for component in dirs {
        dir = openat(&dir, component, libc::O_DIRECTORY)?;
    }
    let file = openat(&dir, name, libc::O_NONBLOCK)?;
    let meta = file.metadata()?;
    let kind = match meta.mode() & libc::S_IFMT {
        libc::S_IFREG => return Ok((file, meta.len())),
        libc::S_IFDIR => "a directory",
        libc::S_IFIFO => "a FIFO",
        libc::S_IFCHR | libc::S_IFBLK => "a device",
        libc::S_IFSOCK => "a socket",
        _ => "not a regular file",
    };
    Err(not_regular(kind))
}

fn not_regular(kind: &str) -> std::io::Error {
    std::io::Error::new(
        std::io::ErrorKind::InvalidData,
        format!("{kind}, where only regular files belong"),
    )
}

/// `openat(dir, name, O_RDONLY | O_NOFOLLOW | O_CLOEXEC | extra)`; a
/// symbolic link is `InvalidData` (ELOOP, or ENOTDIR for a link where a
/// directory was asked for).
fn openat(dir: &File, name: &str, extra: libc::c_int) -> std::io::Result<File> {
    use std::os::fd::FromRawFd;
    let c_name = CString::new(name)
        .map_err(|_| std::io::Error::new(std::io::ErrorKind::InvalidInput, "name contains NUL"))?;
    // SAFETY: `dir` is an open descriptor and `c_name` NUL-terminated; the
    // descriptor returned on success is new and owned by nobody else.
    let fd = unsafe {
        libc::openat(
            dir.as_raw_fd(),
            c_name.as_ptr(),
            libc::O_RDONLY | libc::O_NOFOLLOW | libc::O_CLOEXEC | extra,
        )
    };
    if fd < 0 {
        let e = std::io::Error::last_os_error();
        return Err(match e.raw_os_error() {
            Some(libc::ELOOP) => not_regular("a symbolic link"),
            Some(libc::ENOTDIR) if extra & libc::O_DIRECTORY != 0 => {
                match Stat::at(dir.as_fd(), OsStr::new(name)).map(|s| s.file_type()) {
                    Ok(FileType::Symlink) => not_regular("a symbolic link"),
                    _ => not_regular("not a directory"),
                }
            }
            _ => e,
        });
    }
    // SAFETY: `fd` was just returned by openat and is owned by nothing else.
    Ok(unsafe { File::from_raw_fd(fd) })
}

/// Reads `file` to its end, but at most `limit` bytes: one byte more is an
/// `InvalidData` error, so a file that grew after it was sized, or lied
/// about its size, cannot make the reader allocate without bound.
/// `size` is what `fstat` said, to allocate once.
pub fn read_bounded(file: &File, size: u64, limit: u64) -> std::io::Result<Vec<u8>> {
    use std::io::Read;
    let mut out = Vec::with_capacity(size.min(limit).saturating_add(1) as usize);
    file.take(limit.saturating_add(1)).read_to_end(&mut out)?;
    if out.len() as u64 > limit {
        return Err(std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            format!("larger than the {limit} bytes expected"),
        ));
    }
    Ok(out)
}

/// Bytes an unprivileged user may still write on the file system that
/// holds `path` (`statvfs`: available blocks times the fragment size).
// The fields are u64 on 64-bit targets only.
#[allow(clippy::useless_conversion)]
pub fn free_space(path: &std::path::Path) -> std::io::Result<u64> {
    use std::os::unix::ffi::OsStrExt;
    let c = std::ffi::CString::new(path.as_os_str().as_bytes())
        .map_err(|_| std::io::Error::from(std::io::ErrorKind::InvalidInput))?;
    // SAFETY: statvfs is plain old data; all zeroes is a valid value.
    let mut st: libc::statvfs = unsafe { std::mem::zeroed() };
    // SAFETY: the path is NUL-terminated and st is valid for writes.
    if unsafe { libc::statvfs(c.as_ptr(), &mut st) } != 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(u64::from(st.f_bavail).saturating_mul(u64::from(st.f_frsize)))
}
