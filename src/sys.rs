//! The operating system beneath cairn: every call into libc and every
//! `unsafe` block of the library lives here, each with the reason it is
//! sound. cairn supports Linux only;
//! the `compile_error!` in `lib.rs` says so at build time.

pub mod at;
pub mod clock;
pub mod fs;
pub mod memory;
pub mod mount;
pub mod process;
pub mod walk;

use std::collections::HashMap;
use std::ffi::CStr;
use std::sync::{Mutex, OnceLock};

/// This process's soft limit on open descriptors (RLIMIT_NOFILE), read
/// once. The walk ahead and the index cache each keep to a quarter of it,
/// so a backup under a low limit (a container, a `ulimit -n 64`) still
/// opens every file it has to read.
// Only the cache-backed walk and index cache use it; the fuzz build has neither.
#[cfg_attr(not(feature = "cache"), allow(dead_code))]
pub(crate) fn descriptor_limit() -> u64 {
    static LIMIT: OnceLock<u64> = OnceLock::new();
    *LIMIT.get_or_init(|| {
        let mut limit = libc::rlimit {
            rlim_cur: 0,
            rlim_max: 0,
        };
        // SAFETY: getrlimit writes into the struct it is given.
        if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) } != 0
            || limit.rlim_cur == libc::RLIM_INFINITY
        {
            return u64::MAX;
        }
        limit.rlim_cur
    })
}

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
    // SAFETY: passwd is plain old data; all zeroes is a valid value.
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
    // SAFETY: group is plain old data; all zeroes is a valid value.
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

/// Whether a process with this pid exists on this host.
pub fn process_alive(pid: u32) -> bool {
    let Ok(pid) = libc::pid_t::try_from(pid) else {
        return false;
    };
    // SAFETY: kill with signal 0 only checks whether the process exists.
    let rc = unsafe { libc::kill(pid, 0) };
    rc == 0 || std::io::Error::last_os_error().raw_os_error() == Some(libc::EPERM)
}

/// Bytes from the OS random source (nonces, salts, ids). A machine whose
/// random source fails cannot encrypt safely, so that is a panic.
pub fn random_bytes<const N: usize>() -> [u8; N] {
    let mut out = [0u8; N];
    getrandom::getrandom(&mut out).expect("the OS random source failed");
    out
}

/// The exit status a shell gives a process killed by SIGPIPE (141), for a
/// command whose reader went away (`cairn cat … | head`).
pub const EXIT_BROKEN_PIPE: i32 = 128 + libc::SIGPIPE;

/// Sets glibc's thresholds: blocks under `mmap_threshold` come from the
/// arenas, which keep up to `trim_threshold` free for reuse. The binary
/// calls this before it starts any thread; its comment says why.
pub fn set_allocation_thresholds(mmap_threshold: i32, trim_threshold: i32) {
    // SAFETY: mallopt only sets allocator parameters; the caller runs it
    // before any other thread exists, as glibc asks.
    unsafe {
        libc::mallopt(libc::M_MMAP_THRESHOLD, mmap_threshold);
        libc::mallopt(libc::M_TRIM_THRESHOLD, trim_threshold);
    }
}

/// Runs `handler` on SIGINT and SIGTERM. No SA_RESTART: a read blocked on
/// stdin must return EINTR so the interrupt is noticed. The handler MUST
/// be async-signal-safe (the binary's only stores to an atomic).
pub fn on_interrupt_signals(handler: extern "C" fn(std::ffi::c_int)) {
    // SAFETY: the struct is zeroed, then every field sigaction reads is
    // set; the handler is a plain extern "C" function that lives forever.
    unsafe {
        let mut action: libc::sigaction = std::mem::zeroed();
        action.sa_sigaction = handler as *const () as libc::sighandler_t;
        libc::sigemptyset(&mut action.sa_mask);
        action.sa_flags = 0;
        libc::sigaction(libc::SIGINT, &action, std::ptr::null_mut());
        libc::sigaction(libc::SIGTERM, &action, std::ptr::null_mut());
    }
}
