//! `backup --stdin-from-command`: runs a dump command (no shell), stores its
//! standard output as one file, and writes the snapshot only if the command
//! succeeded. A shell pipe into `--stdin` cannot give that guarantee: without
//! `pipefail` the pipe's status is cairn's, and a dumper that died halfway
//! leaves a truncated dump that looks like a good backup.

use crate::engine::archiver::{backup_stream_checked, BackupOptions, BackupOutcome};
use crate::engine::repository::Repository;
use crate::error::{Error, ErrorKind, Result};
use crate::storage::lock::LockGuard;
use std::ffi::OsString;
use std::os::unix::process::ExitStatusExt;
use std::process::{Child, Command, ExitStatus, Stdio};

/// The environment variables that carry the repository password or say
/// where to find it. Children cairn starts (a dump command, the password
/// command's shell) never see them: a dump command has no business with the
/// repository's key, and a child's environment is readable by anything
/// running as its user (`/proc/PID/environ`) for as long as it runs. The
/// `FROM` ones are `copy`'s source repository's.
pub const SECRET_VARIABLES: [&str; 6] = [
    "CAIRN_PASSWORD",
    "CAIRN_PASSWORD_FILE",
    "CAIRN_PASSWORD_COMMAND",
    "CAIRN_FROM_PASSWORD",
    "CAIRN_FROM_PASSWORD_FILE",
    "CAIRN_FROM_PASSWORD_COMMAND",
];

/// Runs `argv` (program and arguments, no shell), backs up its standard
/// output as the file `filename`, and passes its standard error through.
/// If the command exits non-zero or is killed by a signal, no snapshot is
/// written and the error (`ErrorKind::Command`) names its status. Blobs
/// already stored stay in the repository unreferenced; a later backup reuses
/// them.
pub fn backup_command(
    repo: &mut Repository,
    lock: &LockGuard,
    argv: &[OsString],
    filename: &str,
    options: &BackupOptions,
) -> Result<BackupOutcome> {
    let Some((program, args)) = argv.split_first() else {
        return Err(Error::invalid(
            "no command to run: the command line is empty",
        ));
    };
    let shown = describe(argv);
    // Standard input is closed: a dump command that wants to prompt must not
    // hang a nightly job.
    let mut command = Command::new(program);
    for name in SECRET_VARIABLES {
        command.env_remove(name);
    }
    let mut child = command
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .map_err(|e| {
            Error::new(
                ErrorKind::Command,
                format!("cannot run {}: {e}", program.to_string_lossy()),
            )
        })?;
    // Moved to the archiver's reader thread, which reads it to its end.
    let stdout = child.stdout.take().expect("stdout is piped");
    let recorded: Vec<String> = argv
        .iter()
        .map(|a| a.to_string_lossy().into_owned())
        .collect();
    let mut waited: Option<ExitStatus> = None;
    let result = backup_stream_checked(
        repo,
        lock,
        stdout,
        filename,
        options,
        Some(recorded),
        &mut || {
            let status = child
                .wait()
                .map_err(|e| Error::io(format!("cannot wait for {shown}"), e))?;
            waited = Some(status);
            check_status(&shown, status)
        },
    );
    if waited.is_none() {
        // The backup failed before the stream ended: do not leave the
        // command running (or blocked on a full pipe) behind us; killing it
        // also ends the reader thread's read of its stdout.
        stop(&mut child);
    }
    result
}

fn check_status(shown: &str, status: ExitStatus) -> Result<()> {
    if status.success() {
        return Ok(());
    }
    let how = match (status.code(), status.signal()) {
        (Some(code), _) => format!("exited with status {code}"),
        (None, Some(signal)) => format!("was killed by signal {signal}{}", signal_name(signal)),
        (None, None) => format!("failed ({status})"),
    };
    Err(Error::new(
        ErrorKind::Command,
        format!("command {shown} {how}; no snapshot was written"),
    ))
}

/// " (SIGKILL)" after a signal's number, for the signals that have a
/// common name.
fn signal_name(signal: i32) -> String {
    crate::sys::process::signal_name(signal)
        .map(|name| format!(" ({name})"))
        .unwrap_or_default()
}

fn stop(child: &mut Child) {
    let _ = child.kill();
    let _ = child.wait();
}

/// The command line as the user typed it, for messages: arguments with
/// spaces or quotes are shown quoted.
fn describe(argv: &[OsString]) -> String {
    argv.iter()
        .map(|a| {
            let s = a.to_string_lossy();
            if !s.is_empty()
                && s.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b"-_./=:,@+%".contains(&b))
            {
                s.into_owned()
            } else {
                format!("'{}'", s.replace('\'', r"'\''"))
            }
        })
        .collect::<Vec<_>>()
        .join(" ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn command_lines_are_shown_quoted_where_needed() {
        let argv: Vec<OsString> = ["pg_dump", "-Fp", "my db", "it's"]
            .iter()
            .map(OsString::from)
            .collect();
        assert_eq!(describe(&argv), r"pg_dump -Fp 'my db' 'it'\''s'");
    }
}
