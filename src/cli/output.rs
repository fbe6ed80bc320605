//! The one place that prints: a command's result as text or as one line of
//! JSON (`--json`), the sizes and snapshot documents both forms share, and
//! errors as one line with the exit code for their kind.
//!
//! Commands hand their result to `emit` (or `emit_text_even_quiet`) as two
//! closures, one building the JSON document and one printing the text, so
//! that `--json` and `--quiet` are decided here and not in every command.

use super::args::Cli;
use cairn::ErrorKind;
use serde::Serialize;
use std::borrow::Cow;

/// Prints a command's result: its JSON document with `--json`, else its
/// text, which `--quiet` leaves out.
pub(crate) fn emit<T: Serialize>(
    cli: &Cli,
    json: impl FnOnce() -> anyhow::Result<T>,
    text: impl FnOnce() -> anyhow::Result<()>,
) -> anyhow::Result<()> {
    if cli.json {
        print_json(&json()?)
    } else if cli.quiet {
        Ok(())
    } else {
        text()
    }
}

/// Like `emit`, for results whose text is the point of the command (a
/// listing) or holds what `--quiet` must not hide (damage found): the text
/// is printed with `--quiet` too, and leaves out what it chooses itself.
pub(crate) fn emit_text_even_quiet<T: Serialize>(
    cli: &Cli,
    json: impl FnOnce() -> anyhow::Result<T>,
    text: impl FnOnce() -> anyhow::Result<()>,
) -> anyhow::Result<()> {
    if cli.json {
        print_json(&json()?)
    } else {
        text()
    }
}

/// One JSON document on one line of standard output.
pub(crate) fn print_json<T: Serialize + ?Sized>(value: &T) -> anyhow::Result<()> {
    println!("{}", serde_json::to_string(value)?);
    Ok(())
}

pub(crate) fn human_bytes(n: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut value = n as f64;
    let mut unit = 0;
    while value >= 1024.0 && unit + 1 < UNITS.len() {
        value /= 1024.0;
        unit += 1;
    }
    if unit == 0 {
        format!("{n} B")
    } else {
        format!("{value:.3} {}", UNITS[unit])
    }
}

pub(crate) fn snapshot_json(
    id: &cairn::SnapshotId,
    s: &cairn::Snapshot,
) -> anyhow::Result<serde_json::Value> {
    let mut v = serde_json::to_value(s)?;
    v["id"] = id.to_hex().into();
    v["short_id"] = id.short().into();
    Ok(v)
}

/// Prints an error as one line; its exit code.
pub(crate) fn report_error(e: &anyhow::Error) -> i32 {
    if is_broken_pipe(e) {
        return cairn::sys::EXIT_BROKEN_PIPE;
    }
    let cairn_error = e.chain().find_map(|c| c.downcast_ref::<cairn::Error>());
    let kind = cairn_error.map(|c| c.kind());
    let mut message = one_line(e);
    if let Some(hint) = cairn_error.and_then(hint) {
        message.push_str("; ");
        message.push_str(hint);
    }
    eprintln!("cairn: error: {}", term_safe(&message));
    kind.map_or(1, ErrorKind::exit_code)
}

/// The error and its causes on one line. A `cairn::Error`'s message already
/// ends with its OS error, so that cause is not printed again.
fn one_line(e: &anyhow::Error) -> String {
    let mut parts: Vec<String> = Vec::new();
    let mut after_cairn = false;
    for cause in e.chain() {
        if !after_cairn {
            parts.push(cause.to_string());
        }
        after_cairn = cause.downcast_ref::<cairn::Error>().is_some();
    }
    parts.join(": ").replace('\n', " ")
}

/// `text` as it may reach a terminal: control characters (C0, DEL, C1)
/// and the bidirectional overrides become visible escapes (`\x1b`,
/// `\u{202e}`), so a file name, tag or host name from a repository or a
/// tarball cannot move the cursor, rewrite the screen or reorder what the
/// user reads. JSON output needs no such care: serde escapes C0 itself.
pub(crate) fn term_safe(text: &str) -> Cow<'_, str> {
    let hostile =
        |c: char| c.is_control() || matches!(c, '\u{202a}'..='\u{202e}' | '\u{2066}'..='\u{2069}');
    if !text.chars().any(hostile) {
        return Cow::Borrowed(text);
    }
    let mut out = String::with_capacity(text.len() + 8);
    for c in text.chars() {
        if !hostile(c) {
            out.push(c);
        } else if (c as u32) < 0x80 {
            out.push_str(&format!("\\x{:02x}", c as u32));
        } else {
            out.push_str(&format!("\\u{{{:x}}}", c as u32));
        }
    }
    Cow::Owned(out)
}

/// What the user can do next, for errors whose remedy is a cairn command
/// (the library's messages say what happened, not which command to run).
fn hint(e: &cairn::Error) -> Option<&'static str> {
    let message = e.to_string();
    match e.kind() {
        ErrorKind::Locked if message.starts_with("repository is locked") => {
            Some("run `cairn unlock` if that process is gone")
        }
        ErrorKind::Locked if message.starts_with("lock file ") => Some(
            "if no cairn process is using the repository, remove it with `cairn unlock --remove-all`",
        ),
        ErrorKind::RepositoryNotFound if !message.starts_with("source ") => {
            Some("run `cairn init` to create it")
        }
        ErrorKind::Corrupt if message.contains("prune refuses to run") => {
            Some("run `cairn check` and repair first")
        }
        ErrorKind::Corrupt if message.contains("prune stopped before deleting") => {
            Some("run `cairn check --read-data`")
        }
        _ => None,
    }
}

/// Our standard output was closed by its reader (`cairn ls | head`): end
/// quietly, as a process killed by SIGPIPE would.
fn is_broken_pipe(e: &anyhow::Error) -> bool {
    e.chain().any(|cause| {
        cause
            .downcast_ref::<std::io::Error>()
            .is_some_and(|io| io.kind() == std::io::ErrorKind::BrokenPipe)
            || cause
                .downcast_ref::<cairn::Error>()
                .and_then(cairn::Error::io_error)
                .is_some_and(|io| io.kind() == std::io::ErrorKind::BrokenPipe)
    })
}

#[cfg(test)]
mod tests {
    use super::term_safe;

    #[test]
    fn names_with_escape_sequences_reach_the_terminal_escaped() {
        assert_eq!(term_safe("plain/name ü"), "plain/name ü");
        assert_eq!(term_safe("a\x1b[2Jb"), "a\\x1b[2Jb");
        assert_eq!(term_safe("line\nbreak\r"), "line\\x0abreak\\x0d");
        assert_eq!(term_safe("c1\u{9b}31m"), "c1\\u{9b}31m");
        assert_eq!(term_safe("evil\u{202e}txt.exe"), "evil\\u{202e}txt.exe");
    }
}
