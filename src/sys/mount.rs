//! Ending a FUSE mount: a lazy unmount, which works while files in it are
//! still open (a shell sitting in it, a `cat` reading).

use std::ffi::CString;
use std::os::unix::ffi::OsStrExt;
use std::path::Path;

/// `umount2(path, MNT_DETACH)`: the mount leaves the name space now and is
/// torn down when nothing uses it any more. Needs CAP_SYS_ADMIN; without it
/// the error is EPERM and the caller goes through `fusermount3 -u -z`.
pub fn detach(path: &Path) -> std::io::Result<()> {
    let c = CString::new(path.as_os_str().as_bytes())?;
    // SAFETY: `c` is a NUL-terminated string that outlives the call, which
    // only reads it.
    if unsafe { libc::umount2(c.as_ptr(), libc::MNT_DETACH) } == 0 {
        Ok(())
    } else {
        Err(std::io::Error::last_os_error())
    }
}
