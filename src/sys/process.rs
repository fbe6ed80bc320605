//! Child processes: the names of the signals that can end one, for the
//! message of a dump command that was killed (`backup --stdin-from-command`).

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
