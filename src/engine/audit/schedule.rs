//! The schedule check of the audit report: an auditor's policy file names
//! each source and when its backups are due; the log shows, for every
//! due slot, a backup that succeeded, one that failed, or nothing.
//!
//! The policy file (docs/audit.md) is a small TOML-like text:
//!
//! ```text
//! # one section per source
//! [source "db1 nightly"]
//! host = "db1"            # the host entries record (required)
//! user = "postgres"       # optional: only entries of this user
//! operation = "backup"    # optional: backup (default), import-tar, copy…
//! every = "1d"            # the cadence: Nd, Nh, Nw
//! window = "01:00-03:00"  # optional, UTC: when in each period it runs
//! grace = "2h"            # optional: how late still counts
//! since = "2026-01-01"    # first day a backup is due (UTC)
//! ```
//!
//! Entries record no paths (section 18 keeps file names out of the log),
//! so a source is named by host, user and operation.

use super::report::{format_time, Check, Status};
use crate::error::{Error, ErrorKind, Result};
use crate::format::audit::{Decoded, Outcome};

/// The largest policy file read: a policy is a few lines per source.
pub const POLICY_SIZE_MAX: u64 = 64 * 1024;
/// The most sources one policy may name.
pub const POLICY_SOURCES_MAX: usize = 256;
/// The most due slots one source may have in a report (an hourly cadence
/// over eleven years); past it the report says so instead of checking.
pub const SLOTS_MAX: u64 = 100_000;
/// The most gaps a check lists one by one; the rest are counted.
const GAPS_LISTED_MAX: usize = 1000;

const DAY: i64 = 86_400;

/// A `key = value` line of a section: key, value, line number.
type Field = (String, String, usize);
/// A `[source "NAME"]` section being read: its line, name and fields.
type Section = (usize, String, Vec<Field>);

/// One source the policy expects backups from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Source {
    pub name: String,
    pub host: String,
    pub user: Option<String>,
    pub operation: String,
    /// Seconds between two due backups.
    pub every: i64,
    /// Seconds after midnight UTC at which each slot opens, and how long
    /// it stays open (the window), then the grace.
    pub window_start: i64,
    pub window_len: i64,
    pub grace: i64,
    /// The first slot opens on this day (UTC midnight, seconds).
    pub since: i64,
}

/// An auditor's schedule policy.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Policy {
    pub sources: Vec<Source>,
}

fn bad(line: usize, what: impl std::fmt::Display) -> Error {
    Error::new(
        ErrorKind::InvalidInput,
        format!("policy line {line}: {what}"),
    )
}

/// `30m`, `2h`, `1d`, `1w` (a bare number is seconds).
fn duration(text: &str, line: usize) -> Result<i64> {
    let text = text.trim();
    let (number, unit) = text.split_at(
        text.find(|c: char| !c.is_ascii_digit())
            .unwrap_or(text.len()),
    );
    let n: i64 = number
        .parse()
        .map_err(|_| bad(line, format!("not a duration (like 2h, 1d, 1w): {text:?}")))?;
    let unit = match unit {
        "" | "s" => 1,
        "m" => 60,
        "h" => 3600,
        "d" => DAY,
        "w" => 7 * DAY,
        _ => {
            return Err(bad(
                line,
                format!("not a duration (like 2h, 1d, 1w): {text:?}"),
            ))
        }
    };
    n.checked_mul(unit)
        .filter(|d| *d <= 366 * DAY)
        .ok_or_else(|| bad(line, format!("duration {text:?} is longer than a year")))
}

/// `HH:MM` as seconds after midnight.
fn clock(text: &str, line: usize) -> Result<i64> {
    let t = chrono::NaiveTime::parse_from_str(text.trim(), "%H:%M")
        .map_err(|_| bad(line, format!("not a time of day (HH:MM): {text:?}")))?;
    Ok(i64::from(chrono::Timelike::num_seconds_from_midnight(&t)))
}

/// A value: `"quoted"` (no escapes) or a bare word; text after `#` outside
/// quotes is a comment.
fn value(text: &str, line: usize) -> Result<String> {
    let text = text.trim();
    if let Some(rest) = text.strip_prefix('"') {
        let end = rest
            .find('"')
            .ok_or_else(|| bad(line, "unterminated quote"))?;
        let after = rest[end + 1..].trim();
        if !after.is_empty() && !after.starts_with('#') {
            return Err(bad(
                line,
                format!("unexpected text after the value: {after:?}"),
            ));
        }
        return Ok(rest[..end].to_string());
    }
    Ok(text.split('#').next().unwrap_or("").trim().to_string())
}

impl Policy {
    /// Parses a policy file's text (see the module comment).
    pub fn parse(text: &str) -> Result<Policy> {
        let mut sources = Vec::new();
        let mut current: Option<Section> = None;
        for (i, raw) in text.lines().enumerate() {
            let line = i + 1;
            let trimmed = raw.trim();
            if trimmed.is_empty() || trimmed.starts_with('#') {
                continue;
            }
            if let Some(header) = trimmed.strip_prefix('[') {
                let header = header
                    .split('#')
                    .next()
                    .unwrap_or("")
                    .trim()
                    .strip_suffix(']')
                    .ok_or_else(|| bad(line, "a section header ends with ]"))?;
                let name = header
                    .trim()
                    .strip_prefix("source")
                    .ok_or_else(|| bad(line, "the only section is [source \"NAME\"]"))?;
                let name = value(name, line)?;
                if name.is_empty() {
                    return Err(bad(line, "a source needs a name: [source \"NAME\"]"));
                }
                if let Some(done) = current.take() {
                    sources.push(Self::source(done)?);
                }
                if sources.len() >= POLICY_SOURCES_MAX {
                    return Err(bad(line, format!("more than {POLICY_SOURCES_MAX} sources")));
                }
                current = Some((line, name, Vec::new()));
                continue;
            }
            let (key, rest) = trimmed
                .split_once('=')
                .ok_or_else(|| bad(line, "expected key = value"))?;
            let Some((_, _, fields)) = current.as_mut() else {
                return Err(bad(line, "a key before the first [source \"NAME\"]"));
            };
            fields.push((key.trim().to_string(), value(rest, line)?, line));
        }
        if let Some(done) = current.take() {
            sources.push(Self::source(done)?);
        }
        if sources.is_empty() {
            return Err(bad(0, "names no [source \"NAME\"]"));
        }
        let mut names: Vec<&str> = sources.iter().map(|s: &Source| s.name.as_str()).collect();
        names.sort_unstable();
        if let Some(w) = names.windows(2).find(|w| w[0] == w[1]) {
            return Err(bad(0, format!("source {:?} is named twice", w[0])));
        }
        Ok(Policy { sources })
    }

    fn source(
        (header, name, fields): (usize, String, Vec<(String, String, usize)>),
    ) -> Result<Source> {
        let mut host = None;
        let mut user = None;
        let mut operation = "backup".to_string();
        let mut every = None;
        let mut window = None;
        let mut grace = 0;
        let mut since = None;
        for (key, value, line) in fields {
            match key.as_str() {
                "host" => host = Some(value),
                "user" => user = Some(value),
                "operation" => operation = value,
                "every" => every = Some(duration(&value, line)?),
                "grace" => grace = duration(&value, line)?,
                "window" => {
                    let (a, b) = value
                        .split_once('-')
                        .ok_or_else(|| bad(line, "a window is HH:MM-HH:MM"))?;
                    let (a, b) = (clock(a, line)?, clock(b, line)?);
                    // A window may cross midnight (23:00-01:00).
                    let len = (b - a).rem_euclid(DAY);
                    window = Some((a, if len == 0 { DAY } else { len }));
                }
                "since" => {
                    let day = chrono::NaiveDate::parse_from_str(&value, "%Y-%m-%d")
                        .map_err(|_| bad(line, format!("not a date (YYYY-MM-DD): {value:?}")))?;
                    since = Some(
                        day.and_hms_opt(0, 0, 0)
                            .expect("midnight exists")
                            .and_utc()
                            .timestamp(),
                    );
                }
                _ => return Err(bad(line, format!("unknown key {key:?}"))),
            }
        }
        let missing = |what: &str| bad(header, format!("source {name:?} has no {what}"));
        let host = host.ok_or_else(|| missing("host"))?;
        let every = every.ok_or_else(|| missing("every (the cadence, like 1d)"))?;
        if every < 60 {
            return Err(bad(
                header,
                format!("source {name:?}: every must be at least 1m"),
            ));
        }
        let since = since.ok_or_else(|| missing("since (the first day a backup is due)"))?;
        let (window_start, window_len) = window.unwrap_or((0, every));
        if window_len > every {
            return Err(bad(
                header,
                format!("source {name:?}: the window is longer than the cadence"),
            ));
        }
        Ok(Source {
            name,
            host,
            user,
            operation,
            every,
            window_start,
            window_len,
            grace,
            since,
        })
    }
}

/// What one due slot found.
enum Found<'a> {
    Ok,
    Failed(&'a Decoded),
    Missing,
}

/// Every due slot of every source up to `end` (the report's `--to`, or
/// the time it was made): present, "failed" (only failed attempts were
/// logged) or "missing" (nothing logged).
pub fn schedule_check(
    policy: &Policy,
    good: &[Decoded],
    start: Option<i64>,
    end: i64,
    describe: impl Fn(&Decoded) -> String,
) -> Check {
    let mut fail = Vec::new();
    let mut notes = Vec::new();
    let mut due_total = 0u64;
    let mut gaps = 0usize;
    for source in &policy.sources {
        let mut times: Vec<&Decoded> = good
            .iter()
            .filter(|d| {
                d.entry.host == source.host
                    && d.entry.operation == source.operation
                    && source.user.as_ref().is_none_or(|u| *u == d.entry.user)
            })
            .collect();
        times.sort_by_key(|d| (d.entry.time, d.id));
        let first = source.since + source.window_start;
        let close = source.window_len + source.grace;
        // Slots that have closed by `end`, from the first one that opens at
        // or after `start` (`--from`).
        let closed = if end < first + close {
            0
        } else {
            ((end - first - close) / source.every + 1) as u64
        };
        let skipped = match start {
            Some(start) if start > first => {
                ((start - first + source.every - 1) / source.every) as u64
            }
            _ => 0,
        };
        let due = closed.saturating_sub(skipped);
        if due > SLOTS_MAX {
            fail.push(format!(
                "source {:?}: {due} backups due, more than the {SLOTS_MAX} one report checks (narrow --to or since)",
                source.name
            ));
            continue;
        }
        due_total += due;
        let (mut ok, mut failed, mut missing) = (0u64, 0u64, 0u64);
        for k in skipped..skipped + due {
            let open = first + k as i64 * source.every;
            let shut = open + close;
            let lo = times.partition_point(|d| d.entry.time < open);
            let hi = times.partition_point(|d| d.entry.time < shut);
            let slot = &times[lo..hi];
            let found = if slot.iter().any(|d| d.entry.result == Outcome::Ok) {
                Found::Ok
            } else if let Some(d) = slot.last() {
                Found::Failed(d)
            } else {
                Found::Missing
            };
            let when = || {
                format!(
                    "source {:?} ({}@{} {}) due {} to {}",
                    source.name,
                    source.user.as_deref().unwrap_or("*"),
                    source.host,
                    source.operation,
                    format_time(open),
                    format_time(shut)
                )
            };
            match found {
                Found::Ok => ok += 1,
                Found::Failed(d) => {
                    failed += 1;
                    gaps += 1;
                    if gaps <= GAPS_LISTED_MAX {
                        fail.push(format!(
                            "{}: failed: {} {}",
                            when(),
                            describe(d),
                            d.entry.detail
                        ));
                    }
                }
                Found::Missing => {
                    missing += 1;
                    gaps += 1;
                    if gaps <= GAPS_LISTED_MAX {
                        fail.push(format!("{}: missing: nothing logged", when()));
                    }
                }
            }
        }
        notes.push(format!(
            "source {:?}: {due} due, {ok} present, {failed} failed, {missing} missing",
            source.name
        ));
    }
    if gaps > GAPS_LISTED_MAX {
        fail.push(format!("… and {} more gaps", gaps - GAPS_LISTED_MAX));
    }
    let status = if fail.is_empty() {
        Status::Pass
    } else {
        Status::Fail
    };
    let summary = format!(
        "{} source(s), {due_total} backup(s) due through {}: {}",
        policy.sources.len(),
        format_time(end),
        if gaps == 0 {
            "all present".to_string()
        } else {
            format!("{gaps} gap(s)")
        }
    );
    Check {
        name: "schedule",
        status,
        summary,
        evidence: fail.into_iter().chain(notes).collect(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_policy_parses_and_bad_ones_name_their_line() {
        let p = Policy::parse(
            "# nightly\n[source \"db\"]  # the database\nhost = \"db1\"\nevery = 1d\nwindow = 23:00-01:00\ngrace = \"2h\"\nsince = 2040-01-01\n\n[source web]\nhost = web\nuser = root\noperation = import-tar\nevery = 1w\nsince = 2040-01-02\n",
        )
        .unwrap();
        assert_eq!(p.sources.len(), 2);
        let db = &p.sources[0];
        assert_eq!(
            (db.window_start, db.window_len, db.grace),
            (23 * 3600, 2 * 3600, 7200)
        );
        assert_eq!(db.since, 2208988800);
        assert_eq!(p.sources[1].window_len, 7 * DAY);
        assert_eq!(p.sources[1].operation, "import-tar");
        for (text, what) in [
            ("host = a\n", "line 1"),
            ("[source a]\nhost = a\nevery = 1d\n", "since"),
            ("[source a]\nhost = a\nevery = 1x\nsince = 2040-01-01\n", "line 3"),
            ("[source a]\nhost = a\nevery = 1d\nsince = 2040-01-01\ncolour = red\n", "unknown key"),
            ("[source a]\nhost = a\nevery = 1h\nwindow = 01:00-03:00\nsince = 2040-01-01\n", "longer than the cadence"),
            ("[source a]\nhost=a\nevery=1d\nsince=2040-01-01\n[source a]\nhost=b\nevery=1d\nsince=2040-01-01\n", "twice"),
            ("", "names no"),
        ] {
            let e = Policy::parse(text).unwrap_err().to_string();
            assert!(e.contains(what), "{text:?}: {e}");
        }
    }
}
