//! The programs a drill runs (initdb, postgres, psql, pg_restore,
//! redis-server, redis-cli, redis-check-rdb, `--verify-command`): started
//! without the repository's secret variables, killed if cairn dies, waited
//! for while the interrupt flag is watched, and servers stopped on drop.

use crate::context::Context;
use crate::engine::command::SECRET_VARIABLES;
use crate::error::{Error, ErrorKind, Result};
use crate::sys::process::{send_group_signal, send_signal, stop_with_parent, Signal};
use std::ffi::OsStr;
use std::io::Read;
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

/// How long a server may take to stop after its stop signal before it is
/// killed.
const STOP_GRACE: Duration = Duration::from_secs(10);
/// Standard error kept of a child (its first lines carry the first error).
const STDERR_KEPT: usize = 256 * 1024;
/// Standard output kept of a query.
const STDOUT_KEPT: usize = 16 * 1024 * 1024;

/// A command for `program`: no secret variable of cairn's and no PG*
/// variable of the caller's (a drill talks to its own server only),
/// standard input closed, killed with `on_parent_death` if cairn dies, in
/// a process group of its own (the terminal's Ctrl-C reaches cairn, which
/// stops its children in order; an interrupted `--verify-command` is
/// killed with everything it started).
pub(super) fn command(program: impl AsRef<OsStr>, on_parent_death: Signal) -> Command {
    let mut c = Command::new(program);
    for name in SECRET_VARIABLES {
        c.env_remove(name);
    }
    for (name, _) in std::env::vars_os() {
        if name.to_string_lossy().starts_with("PG") {
            c.env_remove(name);
        }
    }
    c.stdin(Stdio::null()).process_group(0);
    stop_with_parent(&mut c, on_parent_death);
    c
}

/// What to do with a child's standard output.
#[derive(Clone, Copy, PartialEq, Eq)]
pub(super) enum Stdout {
    Discard,
    Keep,
}

pub(super) struct Finished {
    pub status: ExitStatus,
    pub stdout: Vec<u8>,
    /// The first `STDERR_KEPT` bytes.
    pub stderr: String,
}

impl Finished {
    /// The first line of standard error (or output) that says what went
    /// wrong: the first containing `matches`, else the first non-empty one.
    pub fn first_line(&self, matches: &dyn Fn(&str) -> bool) -> String {
        let text = format!("{}\n{}", self.stderr, String::from_utf8_lossy(&self.stdout));
        let lines = || text.lines().map(str::trim).filter(|l| !l.is_empty());
        lines()
            .find(|l| matches(l))
            .or_else(|| lines().next())
            .map(String::from)
            .unwrap_or_else(|| format!("no message ({})", self.status))
    }
}

/// Runs `c` to its end. An interrupt kills it and returns `Interrupted`.
pub(super) fn run(ctx: &Context, mut c: Command, what: &str, stdout: Stdout) -> Result<Finished> {
    c.stdout(if stdout == Stdout::Discard {
        Stdio::null()
    } else {
        Stdio::piped()
    })
    .stderr(Stdio::piped());
    let mut child = c.spawn().map_err(|e| cannot_run(what, e))?;
    let out = child.stdout.take();
    let err = child.stderr.take().expect("stderr is piped");
    let reader = std::thread::spawn(move || match out {
        Some(out) => bounded_read(out, STDOUT_KEPT),
        None => Vec::new(),
    });
    let stderr_reader = std::thread::spawn(move || bounded_read(err, STDERR_KEPT));
    let status = loop {
        match child.try_wait() {
            Ok(Some(status)) => break status,
            Ok(None) => {}
            Err(e) => return Err(Error::io(format!("cannot wait for {what}"), e)),
        }
        if let Err(e) = ctx.check_interrupt() {
            send_group_signal(child.id(), Signal::Kill);
            let _ = child.kill();
            let _ = child.wait();
            return Err(e);
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    let stdout = reader.join().unwrap_or_default();
    let stderr = String::from_utf8_lossy(&stderr_reader.join().unwrap_or_default()).into_owned();
    Ok(Finished {
        status,
        stdout,
        stderr,
    })
}

/// Reads to the end, keeping the first `limit` bytes (a child blocked on a
/// full pipe would never exit).
fn bounded_read(mut from: impl Read, limit: usize) -> Vec<u8> {
    let mut kept = Vec::new();
    let mut buf = vec![0u8; 16 * 1024];
    while let Ok(n) = from.read(&mut buf) {
        if n == 0 {
            break;
        }
        if kept.len() < limit {
            kept.extend_from_slice(&buf[..n.min(limit - kept.len())]);
        }
    }
    kept
}

pub(super) fn cannot_run(what: &str, e: std::io::Error) -> Error {
    Error::new(ErrorKind::Command, format!("cannot run {what}: {e}"))
}

/// A server the drill started: stopped (its `stop` signal, then SIGKILL
/// after `STOP_GRACE`) when dropped, on success, failure or interrupt.
pub(super) struct Server {
    child: Child,
    stop: Signal,
    pub name: &'static str,
}

impl Server {
    /// Starts `c` with its output going to `log` (a file in the scratch
    /// directory, read for the error when the server does not come up).
    pub fn start(mut c: Command, name: &'static str, stop: Signal, log: &Path) -> Result<Server> {
        let file = std::fs::File::create(log)
            .map_err(|e| Error::io(format!("cannot create {}", log.display()), e))?;
        let file2 = file
            .try_clone()
            .map_err(|e| Error::io(format!("cannot open {}", log.display()), e))?;
        c.stdout(file).stderr(file2);
        let child = c.spawn().map_err(|e| cannot_run(name, e))?;
        Ok(Server { child, stop, name })
    }

    /// Waits until `ready` holds, the server exits (an error quoting the
    /// first line of `log` that `matches`), or a minute passes.
    pub fn wait_ready(
        &mut self,
        ctx: &Context,
        log: &Path,
        matches: &dyn Fn(&str) -> bool,
        ready: &mut dyn FnMut() -> bool,
    ) -> Result<()> {
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            ctx.check_interrupt()?;
            if let Ok(Some(status)) = self.child.try_wait() {
                let text = std::fs::read_to_string(log).unwrap_or_default();
                let line = text
                    .lines()
                    .find(|l| matches(l))
                    .or_else(|| text.lines().find(|l| !l.trim().is_empty()))
                    .unwrap_or("no message")
                    .trim()
                    .to_string();
                return Err(Error::new(
                    ErrorKind::Command,
                    format!(
                        "{} exited ({status}) before it was ready: {line}",
                        self.name
                    ),
                ));
            }
            if ready() {
                return Ok(());
            }
            if Instant::now() > deadline {
                return Err(Error::new(
                    ErrorKind::Command,
                    format!("{} did not become ready within a minute", self.name),
                ));
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        if let Ok(Some(_)) = self.child.try_wait() {
            return;
        }
        send_signal(self.child.id(), self.stop);
        let deadline = Instant::now() + STOP_GRACE;
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Runs each `--verify-command` through `sh -c` with `env` added (where
/// the restored files are, how to reach the server); the first that fails
/// gives the drill's failure.
pub(super) fn verify_commands(
    ctx: &Context,
    commands: &[String],
    env: &[(&str, &OsStr)],
) -> Result<Option<String>> {
    for shell in commands {
        let mut c = command("sh", Signal::Kill);
        c.arg("-c").arg(shell);
        for (name, value) in env {
            c.env(name, value);
        }
        let done = run(ctx, c, "the verify command", Stdout::Discard)?;
        if !done.status.success() {
            let line = done.first_line(&|_| true);
            return Ok(Some(format!(
                "verify command {shell:?} failed ({}): {line}",
                done.status
            )));
        }
    }
    Ok(None)
}
