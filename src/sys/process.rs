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
