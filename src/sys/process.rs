//! Child processes: the names of the signals that can end one, for the
//! message of a dump command that was killed (`backup --stdin-from-command`);
//! signals, parent-death signals and user lookups for the servers a restore
//! drill runs.

/// The name of a signal that commonly ends a process (`SIGKILL`, …), or
/// None for another number, which is then shown alone.
pub fn signal_name(signal: i32) -> Option<&'static str> {
    Some(match signal {
        libc::SIGHUP => "SIGHUP",
        libc::SIGINT => "SIGINT",
        libc::SIGQUIT => "SIGQUIT",
        libc::SIGABRT => "SIGABRT",
        libc::SIGKILL => "SIGKILL",
        libc::SIGSEGV => "SIGSEGV",
        libc::SIGPIPE => "SIGPIPE",
        libc::SIGTERM => "SIGTERM",
        _ => return None,
    })
}

/// Marks the process non-dumpable (`PR_SET_DUMPABLE` 0): no core file is
/// written if it crashes, and processes of the same user can no longer
/// attach to it or read its memory (`/proc/PID/mem`), so the master key and
/// the password it holds stay in it. Reset by `execve`: children (a dump
/// command) are dumpable as usual. Root, and a system with
/// `fs.suid_dumpable = 2`, can still obtain a root-only core.
pub fn forbid_core_dumps() -> std::io::Result<()> {
    // SAFETY: prctl with PR_SET_DUMPABLE takes one integer argument (the
    // others are ignored) and touches no memory of ours.
    let rc = unsafe { libc::prctl(libc::PR_SET_DUMPABLE, 0 as libc::c_ulong, 0, 0, 0) };
    if rc == 0 {
        Ok(())
    } else {
        Err(std::io::Error::last_os_error())
    }
}

/// Whether the process may dump core (`PR_GET_DUMPABLE`), for the tests.
pub fn may_dump_core() -> bool {
    // SAFETY: PR_GET_DUMPABLE takes no pointer and returns the flag.
    unsafe { libc::prctl(libc::PR_GET_DUMPABLE, 0, 0, 0, 0) == 1 }
}

/// Signals cairn sends to the servers a restore drill starts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Signal {
    /// PostgreSQL's immediate shutdown.
    Quit,
    Terminate,
    Kill,
}

impl Signal {
    fn number(self) -> libc::c_int {
        match self {
            Signal::Quit => libc::SIGQUIT,
            Signal::Terminate => libc::SIGTERM,
            Signal::Kill => libc::SIGKILL,
        }
    }
}

/// Sends `signal` to process `pid`; false if it is gone.
pub fn send_signal(pid: u32, signal: Signal) -> bool {
    let Ok(pid) = libc::pid_t::try_from(pid) else {
        return false;
    };
    // SAFETY: kill touches no memory of ours.
    unsafe { libc::kill(pid, signal.number()) == 0 }
}

/// Sends `signal` to every process of process group `group`; false if
/// there is none.
pub fn send_group_signal(group: u32, signal: Signal) -> bool {
    let Ok(group) = libc::pid_t::try_from(group) else {
        return false;
    };
    // SAFETY: kill touches no memory of ours; a negative pid names a group.
    group > 0 && unsafe { libc::kill(-group, signal.number()) == 0 }
}

/// Has the child started by `command` receive `signal` when the thread
/// that starts it ends (`PR_SET_PDEATHSIG`), so a drill killed with
/// SIGKILL leaves no database server running. Set after `uid`/`gid` are
/// changed (std runs `pre_exec` hooks last), which would otherwise clear it.
pub fn stop_with_parent(command: &mut std::process::Command, signal: Signal) {
    use std::os::unix::process::CommandExt;
    let number = signal.number() as libc::c_ulong;
    // SAFETY: the hook runs between fork and exec and only calls prctl and
    // getppid, which are async-signal-safe and allocate nothing.
    unsafe {
        command.pre_exec(move || {
            if libc::prctl(libc::PR_SET_PDEATHSIG, number, 0, 0, 0) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            // The parent may have died before the hook ran.
            if libc::getppid() == 1 {
                return Err(std::io::Error::from_raw_os_error(libc::ESRCH));
            }
            Ok(())
        });
    }
}

/// The user id and primary group id of a user name (`getpwnam_r`).
pub fn user_ids(name: &str) -> Option<(u32, u32)> {
    let name = std::ffi::CString::new(name).ok()?;
    let mut buf = vec![0 as libc::c_char; 16 * 1024];
    // SAFETY: passwd is plain old data; all zeroes is a valid value.
    let mut pwd: libc::passwd = unsafe { std::mem::zeroed() };
    let mut result: *mut libc::passwd = std::ptr::null_mut();
    // SAFETY: all pointers are valid for the call and the buffer outlives it.
    let rc = unsafe {
        libc::getpwnam_r(
            name.as_ptr(),
            &mut pwd,
            buf.as_mut_ptr(),
            buf.len(),
            &mut result,
        )
    };
    (rc == 0 && !result.is_null()).then_some((pwd.pw_uid, pwd.pw_gid))
}

#[cfg(test)]
mod tests {
    #[test]
    fn a_process_that_forbids_core_dumps_cannot_dump_core() {
        // Runs in a child so the test binary itself stays dumpable.
        if std::env::var_os("CAIRN_TEST_FORBID_CORE").is_some() {
            assert!(super::may_dump_core());
            super::forbid_core_dumps().unwrap();
            assert!(!super::may_dump_core());
            return;
        }
        let status = std::process::Command::new(std::env::current_exe().unwrap())
            .args([
                "--exact",
                "sys::process::tests::a_process_that_forbids_core_dumps_cannot_dump_core",
            ])
            .env("CAIRN_TEST_FORBID_CORE", "1")
            .status()
            .unwrap();
        assert!(status.success());
    }
}
