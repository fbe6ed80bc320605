//! The `cairn` binary: sets up the process (allocator thresholds, signal
//! handlers, the panic hook), parses the arguments and hands them to
//! `cli::execute`, whose exit code follows restic's (0 ok, 1 fatal,
//! 3 partial backup, 10 no repository, 11 locked, 12 wrong password,
//! 130 interrupted). The commands themselves are in `src/cli/`.

use clap::Parser;

mod cli;

/// The process's one operation context: the signal handler interrupts it,
/// the progress display reads it, and every repository runs under it.
static CONTEXT: std::sync::OnceLock<cairn::Context> = std::sync::OnceLock::new();

pub(crate) fn context() -> &'static cairn::Context {
    CONTEXT.get_or_init(cairn::Context::new)
}

extern "C" fn on_signal(_: std::ffi::c_int) {
    // Set before the handler was installed, so `get` finds it: one atomic
    // load and one atomic store, both async-signal-safe.
    if let Some(ctx) = CONTEXT.get() {
        ctx.interrupt();
    }
}

fn main() {
    // glibc hands memory back to the kernel as soon as an arena's free top
    // exceeds 128 KiB (more once its adaptive thresholds have grown), so a
    // restore's per-blob buffers and a backup's small-file buffers were
    // faulted in again and again: half of a restore's page faults came from
    // zstd writing into fresh output buffers. Blocks under 8 MiB (blobs,
    // small files, pack pieces) now come from the arenas, which keep up to
    // 32 MiB free for reuse; larger ones (8 MiB read buffers, whole packs
    // read by `check`, the KDF's 64 MiB) are still mapped and unmapped
    // whole. 32 and 256 MiB were tried: faster, but `check` and a backup
    // into 5 M blobs then held far more (docs/PERFORMANCE.md).
    // Before any thread starts.
    cairn::sys::set_allocation_thresholds(8 * 1024 * 1024, 32 * 1024 * 1024);
    context();
    cairn::sys::on_interrupt_signals(on_signal);
    // The process will hold the password and the master key: no core file
    // and no same-user ptrace may carry them off. Failing is not fatal
    // (a seccomp'd sandbox may refuse prctl); the key is only less guarded.
    let _ = cairn::sys::process::forbid_core_dumps();
    // A panic is a bug, but the user still gets one line, not a backtrace.
    std::panic::set_hook(Box::new(|info| {
        let location = info
            .location()
            .map(|l| format!(" at {}:{}", l.file(), l.line()))
            .unwrap_or_default();
        let message = info
            .payload()
            .downcast_ref::<&str>()
            .map(|s| s.to_string())
            .or_else(|| info.payload().downcast_ref::<String>().cloned())
            .unwrap_or_else(|| "unknown panic".into());
        // `cairn cat … | head`: the reader went away. Not a bug; end quietly
        // with the status a shell gives a process killed by SIGPIPE.
        if message.starts_with("failed printing to stdout") && message.contains("Broken pipe") {
            std::process::exit(cairn::sys::EXIT_BROKEN_PIPE);
        }
        eprintln!("cairn: internal error{location}: {message} (please report this bug)");
    }));
    let mut cli = match cli::args::Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) => {
            let code = if e.use_stderr() { 1 } else { 0 };
            let _ = e.print();
            std::process::exit(code);
        }
    };
    if let Err(e) = cli::profile::apply(&mut cli) {
        std::process::exit(cli::output::report_error(&e));
    }
    std::process::exit(cli::execute(&cli));
}
