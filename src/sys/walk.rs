//! Directory descriptors for the backup walk: open, list and stat entries
//! relative to an open directory (`openat`, `fstatat`).
//!
//! A backup of a large tree calls these once per entry, so none of them
//! allocates or makes a system call beyond the one it wraps (`open_file_at`
//! makes the name NUL-terminated, as `std` does for a path).

use std::ffi::{CStr, CString, OsStr};
use std::fs::File;
use std::io;
use std::os::fd::{AsRawFd, BorrowedFd, FromRawFd, IntoRawFd};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;

/// Flags for opening a file the stat said is a regular file: no blocking
/// (a FIFO put in its place would wait for a writer) and no following a
/// symlink put in its place.
const REGULAR_FLAGS: libc::c_int = libc::O_NONBLOCK | libc::O_NOFOLLOW;

/// Opens `path` for reading without blocking and without following a
/// final symlink (`O_NONBLOCK | O_NOFOLLOW`); the caller checks what it got.
pub fn open_file_nofollow(path: &Path) -> io::Result<File> {
    std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(REGULAR_FLAGS)
        .open(path)
}

/// `open_file_nofollow` of `name` in the open directory `dir`: one path
/// component to look up, rather than the whole path.
pub fn open_file_at(dir: BorrowedFd<'_>, name: &OsStr) -> io::Result<File> {
    let name =
        CString::new(name.as_bytes()).map_err(|_| io::Error::from(io::ErrorKind::InvalidInput))?;
    // SAFETY: `dir` is an open descriptor and `name` NUL-terminated.
    let fd = unsafe {
        libc::openat(
            dir.as_raw_fd(),
            name.as_ptr(),
            libc::O_RDONLY | libc::O_CLOEXEC | REGULAR_FLAGS,
        )
    };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: openat returned a new descriptor that nothing else owns.
    Ok(unsafe { File::from_raw_fd(fd) })
}

/// Opens a directory for `*at` lookups and listing, not following a
/// symlink (`O_DIRECTORY | O_NOFOLLOW`).
pub fn open_dir_nofollow(path: &Path) -> io::Result<File> {
    std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_DIRECTORY | libc::O_NOFOLLOW)
        .open(path)
}

/// An entry's type as the directory listing gives it (`d_type`), which on
/// the usual file systems costs no stat.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EntryType {
    Dir,
    /// The file system does not say: stat the entry to know.
    Unknown,
    Other,
}

/// Lists the directory open as `dir` from its start, calling `each` with
/// every entry's name (`.` and `..` left out) and type. The name is valid
/// for the call only. Fails if the directory cannot be read at all;
/// `Ok(Some(error))` when listing stopped part way with an error (the
/// entries before it were given).
pub fn list_dir(
    dir: BorrowedFd<'_>,
    mut each: impl FnMut(&OsStr, EntryType),
) -> io::Result<Option<io::Error>> {
    // fdopendir takes over the descriptor it is given: a duplicate. The
    // duplicate shares the read position, which nothing else uses (the
    // lookups in `dir` do not), so it is rewound below.
    let raw = dir.try_clone_to_owned()?.into_raw_fd();
    // SAFETY: `raw` is an open directory descriptor that we own.
    let stream = unsafe { libc::fdopendir(raw) };
    if stream.is_null() {
        let e = io::Error::last_os_error();
        // SAFETY: fdopendir failed, so `raw` is still ours to close.
        unsafe { libc::close(raw) };
        return Err(e);
    }
    struct Stream(*mut libc::DIR);
    impl Drop for Stream {
        fn drop(&mut self) {
            // SAFETY: a stream from fdopendir, closed once (with its fd).
            unsafe { libc::closedir(self.0) };
        }
    }
    let stream = Stream(stream);
    // From the top, whoever listed through this descriptor before.
    // SAFETY: a live stream.
    unsafe { libc::rewinddir(stream.0) };
    loop {
        // readdir reports an error only through errno.
        // SAFETY: errno is this thread's; readdir64 gets a live stream.
        let entry = unsafe {
            *libc::__errno_location() = 0;
            libc::readdir64(stream.0)
        };
        if entry.is_null() {
            let e = io::Error::last_os_error();
            return Ok(e.raw_os_error().is_some_and(|n| n != 0).then_some(e));
        }
        // SAFETY: a non-null entry is valid until the next readdir call,
        // and its name is NUL-terminated; `each` sees it before that call.
        let (name, kind) = unsafe {
            (
                CStr::from_ptr((*entry).d_name.as_ptr()).to_bytes(),
                (*entry).d_type,
            )
        };
        if name == b"." || name == b".." {
            continue;
        }
        let kind = match kind {
            libc::DT_DIR => EntryType::Dir,
            libc::DT_UNKNOWN => EntryType::Unknown,
            _ => EntryType::Other,
        };
        each(OsStr::from_bytes(name), kind);
    }
}
