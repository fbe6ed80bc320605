//! Retention policies: which snapshots `forget --keep-*` keeps, and why.
//!
//! Pure: no IO and no clock. The one input that depends on the present,
//! "now" (snapshots from the future are not the newest), is a parameter.
//!
//! The semantics are restic's `forget` (restic 0.17/0.18,
//! `internal/data/snapshot_policy.go` and `doc/060_forget.rst`):
//!
//! - Snapshots are split into groups by any combination of host, paths and
//!   tags (default host and paths); each group is judged on its own.
//! - Within a group, snapshots are walked newest first. A bucket rule
//!   (`last`, `hourly`, `daily`, `weekly`, `monthly`, `yearly`) keeps a
//!   snapshot when it is the first (newest) one of its period and the rule
//!   has count left; each keep uses up one count. Unlimited rules never run
//!   out. Periods are read off the snapshot's *own recorded local time*
//!   (the UTC offset it was written with), not UTC and not this machine's
//!   zone, so a nightly 00:30 backup belongs to the day its host saw.
//! - Weeks are ISO 8601 weeks keyed by ISO year and week number (Go's
//!   `ISOWeek`): 2020-12-31 is in 2020-W53 and 2021-01-03 too, while
//!   2024-12-30 is in 2025-W01.
//! - If a bucket rule still has count left when the walk reaches the oldest
//!   snapshot of the group, that snapshot is kept too ("oldest daily
//!   snapshot"), which keeps the longest history the counts allow.
//! - `within D` keeps every snapshot newer than the newest snapshot of the
//!   group minus D (strictly newer); `within-daily D` and friends keep the
//!   newest snapshot of each period inside that window, without a count.
//!   "The newest snapshot" ignores snapshots dated after `now`.
//!   Subtracting D works on the newest snapshot's calendar as Go's
//!   `AddDate` does: years and months first, with day overflow carried
//!   forward (March 31 minus one month is March 3 or 2, not February 28),
//!   then days, then hours as elapsed time.
//! - `tags` keeps every snapshot that carries all tags of at least one tag
//!   list; the empty tag `""` matches snapshots without tags.
//! - A snapshot kept by several rules lists every reason, in this order:
//!   tag lists, `within`, the bucket rules from `last` to `yearly`, then the
//!   `within-*` rules from hourly to yearly.
//! - An empty policy keeps nothing here; refusing to forget with an empty
//!   policy is the caller's job (`crate::forget`).
//!
//! Differences from restic (also listed in `docs/retention.md`):
//!
//! - Snapshots with equal times are ordered by id (the larger id counts as
//!   newer); restic keeps them in repository listing order.
//! - Groups come out sorted by key; restic's order is random (a Go map).
//! - Counts are `u32`; restic uses the platform `int`.
//! - A `within` window reaching past the year −262143 (chrono's range)
//!   covers everything; restic's arithmetic would overflow instead.

use crate::error::{Error, Result};
use crate::format::id::SnapshotId;
use crate::format::snapshot::Snapshot;
use chrono::{DateTime, Datelike, FixedOffset, NaiveDate, TimeZone, Timelike};
use std::fmt;

/// How many snapshots a bucket rule keeps. `Limited(0)` means the rule is
/// off.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Count {
    Limited(u32),
    Unlimited,
}

impl Default for Count {
    fn default() -> Self {
        Count::Limited(0)
    }
}

impl Count {
    /// `N`, `unlimited`, or `-1` (restic before 0.17 spelled unlimited `-1`;
    /// restic 0.17 refuses it, cairn accepts both spellings).
    pub fn parse(s: &str) -> Result<Count> {
        match s.trim() {
            "unlimited" | "-1" => Ok(Count::Unlimited),
            t => t.parse::<u32>().map(Count::Limited).map_err(|_| {
                Error::invalid(format!(
                    "invalid count {s:?}: use a number of snapshots or 'unlimited'"
                ))
            }),
        }
    }

    pub fn is_set(self) -> bool {
        self != Count::Limited(0)
    }
}

impl fmt::Display for Count {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Count::Limited(n) => write!(f, "{n}"),
            Count::Unlimited => f.write_str("unlimited"),
        }
    }
}

/// A calendar duration such as `2y5m7d3h` (restic's `Duration`): years,
/// months, days and hours, applied in that order.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Duration {
    pub years: u32,
    pub months: u32,
    pub days: u32,
    pub hours: u32,
}

impl Duration {
    /// Parses `[N y][N m][N d][N h]` in any order; a unit given twice keeps
    /// the last value, as in restic. Negative numbers are refused.
    pub fn parse(s: &str) -> Result<Duration> {
        let bad = |why: &str| Error::invalid(format!("invalid duration {s:?}: {why}"));
        let mut d = Duration::default();
        let mut rest = s.trim();
        if rest.is_empty() {
            return Err(bad("empty (use e.g. 1y5m7d2h)"));
        }
        while !rest.is_empty() {
            if rest.starts_with('-') {
                return Err(bad("negative durations are not allowed"));
            }
            let digits = rest.bytes().take_while(u8::is_ascii_digit).count();
            if digits == 0 {
                return Err(bad("expected a number"));
            }
            let number: u32 = rest[..digits]
                .parse()
                .map_err(|_| bad("number too large"))?;
            let unit = rest[digits..]
                .chars()
                .next()
                .ok_or_else(|| bad("no unit after the last number (use y, m, d or h)"))?;
            match unit {
                'y' => d.years = number,
                'm' => d.months = number,
                'd' => d.days = number,
                'h' => d.hours = number,
                other => return Err(bad(&format!("unknown unit {other:?} (use y, m, d or h)"))),
            }
            rest = &rest[digits + unit.len_utf8()..];
        }
        Ok(d)
    }

    pub fn is_zero(self) -> bool {
        self == Duration::default()
    }

    /// `from` minus this duration, on `from`'s own calendar (Go `AddDate`
    /// normalisation, then hours as elapsed time). `None` when the result is
    /// before the earliest representable time, i.e. "everything is newer".
    pub fn before(self, from: DateTime<FixedOffset>) -> Option<DateTime<FixedOffset>> {
        let local = from.naive_local();
        let months_total = i64::from(local.year()) * 12 + i64::from(local.month0())
            - i64::from(self.years) * 12
            - i64::from(self.months);
        let year = i32::try_from(months_total.div_euclid(12)).ok()?;
        let month0 = u32::try_from(months_total.rem_euclid(12)).ok()?;
        // Day overflow is carried forward from the first of the month, as Go
        // does: "February 31" is March 3 (or 2 in a leap year).
        let first = NaiveDate::from_ymd_opt(year, month0 + 1, 1)?;
        let day_offset = i64::from(local.day()) - 1 - i64::from(self.days);
        let date = first.checked_add_signed(chrono::Duration::try_days(day_offset)?)?;
        let shifted = date.and_time(local.time());
        let at = from.offset().from_local_datetime(&shifted).single()?;
        at.checked_sub_signed(chrono::Duration::try_hours(i64::from(self.hours))?)
    }
}

impl fmt::Display for Duration {
    /// restic's spelling: non-zero parts only, e.g. `1y14d`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (n, unit) in [
            (self.years, 'y'),
            (self.months, 'm'),
            (self.days, 'd'),
            (self.hours, 'h'),
        ] {
            if n != 0 {
                write!(f, "{n}{unit}")?;
            }
        }
        Ok(())
    }
}

/// A calendar period that bucket rules group snapshots by.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Period {
    Hourly,
    Daily,
    Weekly,
    Monthly,
    Yearly,
}

impl Period {
    fn name(self) -> &'static str {
        match self {
            Period::Hourly => "hourly",
            Period::Daily => "daily",
            Period::Weekly => "weekly",
            Period::Monthly => "monthly",
            Period::Yearly => "yearly",
        }
    }

    /// The bucket of a time: equal for two times in the same period of
    /// their own local calendars.
    fn bucket(self, time: &DateTime<FixedOffset>) -> i64 {
        let t = time.naive_local();
        let (y, m, d, h) = (
            i64::from(t.year()),
            i64::from(t.month()),
            i64::from(t.day()),
            i64::from(t.hour()),
        );
        match self {
            Period::Hourly => ((y * 100 + m) * 100 + d) * 100 + h,
            Period::Daily => (y * 100 + m) * 100 + d,
            Period::Weekly => {
                let w = t.iso_week();
                i64::from(w.year()) * 100 + i64::from(w.week())
            }
            Period::Monthly => y * 100 + m,
            Period::Yearly => y,
        }
    }
}

/// What to keep. `Policy::default()` is the empty policy.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Policy {
    pub last: Count,
    pub hourly: Count,
    pub daily: Count,
    pub weekly: Count,
    pub monthly: Count,
    pub yearly: Count,
    pub within: Duration,
    pub within_hourly: Duration,
    pub within_daily: Duration,
    pub within_weekly: Duration,
    pub within_monthly: Duration,
    pub within_yearly: Duration,
    /// Keep snapshots that have every tag of at least one of these lists.
    pub tags: Vec<Vec<String>>,
}

impl Policy {
    pub fn is_empty(&self) -> bool {
        self.tags.is_empty() && *self == Policy::default()
    }

    fn counts(&self) -> [(Count, Option<Period>); 6] {
        [
            (self.last, None),
            (self.hourly, Some(Period::Hourly)),
            (self.daily, Some(Period::Daily)),
            (self.weekly, Some(Period::Weekly)),
            (self.monthly, Some(Period::Monthly)),
            (self.yearly, Some(Period::Yearly)),
        ]
    }

    fn withins(&self) -> [(Duration, Period); 5] {
        [
            (self.within_hourly, Period::Hourly),
            (self.within_daily, Period::Daily),
            (self.within_weekly, Period::Weekly),
            (self.within_monthly, Period::Monthly),
            (self.within_yearly, Period::Yearly),
        ]
    }
}

impl fmt::Display for Policy {
    /// restic's "Applying Policy" sentence.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let counts: Vec<String> = self
            .counts()
            .iter()
            .filter(|(c, _)| c.is_set())
            .map(|(c, p)| {
                let what = p.map_or("latest", Period::name);
                match c {
                    Count::Unlimited => format!("all {what}"),
                    Count::Limited(n) => format!("{n} {what}"),
                }
            })
            .collect();
        let withins: Vec<String> = self
            .withins()
            .iter()
            .filter(|(d, _)| !d.is_zero())
            .map(|(d, p)| format!("{} snapshots within {d}", p.name()))
            .collect();
        let mut s = String::new();
        if !counts.is_empty() {
            s = format!("{} snapshots", counts.join(", "));
        }
        if !withins.is_empty() {
            if !s.is_empty() {
                s.push_str(", ");
            }
            s.push_str(&withins.join(", "));
        }
        if !self.tags.is_empty() {
            if !s.is_empty() {
                s.push_str(" and ");
            }
            let lists: Vec<String> = self.tags.iter().map(|l| tag_list(l)).collect();
            s.push_str(&format!("all snapshots with tags [{}]", lists.join(" ")));
        }
        if !self.within.is_zero() {
            if !s.is_empty() {
                s.push_str(" and ");
            }
            s.push_str(&format!(
                "all snapshots within {} of the newest",
                self.within
            ));
        }
        if s.is_empty() {
            f.write_str("remove")
        } else {
            write!(f, "keep {s}")
        }
    }
}

fn tag_list(tags: &[String]) -> String {
    format!("[{}]", tags.join(", "))
}

/// Parses one `--keep-tag` value: a comma-separated list, each tag trimmed
/// (restic's `TagList`).
pub fn parse_tag_list(s: &str) -> Vec<String> {
    s.split(',').map(|t| t.trim().to_string()).collect()
}

/// restic's `HasTags`: every tag of `list` is present; the empty tag matches
/// a snapshot without tags.
fn has_tags(snapshot: &Snapshot, list: &[String]) -> bool {
    for tag in list {
        if tag.is_empty() && snapshot.tags.is_empty() {
            return true;
        }
        if !snapshot.has_tag(tag) {
            return false;
        }
    }
    true
}

/// Why a snapshot was kept. `Display` gives restic's wording.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Reason {
    /// It has all tags of this `--keep-tag` list.
    Tags(Vec<String>),
    /// It is within this duration of the newest snapshot.
    Within(Duration),
    /// One of the last N snapshots.
    Last,
    /// The newest of its period (`oldest`: the group's oldest snapshot,
    /// kept because the rule had count left).
    Period { period: Period, oldest: bool },
    /// The newest of its period inside the `within-*` window.
    PeriodWithin {
        period: Period,
        within: Duration,
        oldest: bool,
    },
    /// Younger than the repository's retention lock: `forget` never
    /// removes it, whatever the policy says.
    Locked(Duration),
}

impl fmt::Display for Reason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let oldest = |o: &bool| if *o { "oldest " } else { "" };
        match self {
            Reason::Tags(list) => write!(f, "has tags {}", tag_list(list)),
            Reason::Within(d) => write!(f, "within {d}"),
            Reason::Last => f.write_str("last snapshot"),
            Reason::Period { period, oldest: o } => {
                write!(f, "{}{} snapshot", oldest(o), period.name())
            }
            Reason::PeriodWithin {
                period,
                within,
                oldest: o,
            } => write!(f, "{}{} within {within}", oldest(o), period.name()),
            Reason::Locked(d) => write!(f, "retention lock {d}"),
        }
    }
}

/// The verdict on one group: indices into the slice given to [`apply`],
/// newest first.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Decision {
    pub keep: Vec<(usize, Vec<Reason>)>,
    pub remove: Vec<usize>,
}

/// Applies `policy` to one group of snapshots.
pub fn apply(
    snapshots: &[(SnapshotId, Snapshot)],
    policy: &Policy,
    now: DateTime<FixedOffset>,
) -> Decision {
    let mut order: Vec<usize> = (0..snapshots.len()).collect();
    order.sort_by(|&a, &b| {
        let (a, b) = (&snapshots[a], &snapshots[b]);
        b.1.time.cmp(&a.1.time).then(b.0.cmp(&a.0))
    });
    let newest = order
        .iter()
        .map(|&i| snapshots[i].1.time)
        .find(|t| *t < now);
    // `None`: the window reaches back past every snapshot.
    let window_start = |d: Duration| newest.and_then(|n| d.before(n));
    let in_window = |d: Duration, t: &DateTime<FixedOffset>| window_start(d).is_none_or(|s| *t > s);

    let mut counted: Vec<(Count, Option<Period>, Option<i64>)> = policy
        .counts()
        .iter()
        .map(|&(count, period)| (count, period, None))
        .collect();
    let mut windowed: Vec<(Duration, Period, Option<i64>)> = policy
        .withins()
        .iter()
        .map(|&(d, period)| (d, period, None))
        .collect();

    let mut decision = Decision::default();
    for (nr, &index) in order.iter().enumerate() {
        let snapshot = &snapshots[index].1;
        let is_oldest = nr + 1 == order.len();
        let mut reasons = Vec::new();
        for list in &policy.tags {
            if has_tags(snapshot, list) {
                reasons.push(Reason::Tags(list.clone()));
            }
        }
        if !policy.within.is_zero() && in_window(policy.within, &snapshot.time) {
            reasons.push(Reason::Within(policy.within));
        }
        for (count, period, last) in counted.iter_mut() {
            if !count.is_set() {
                continue;
            }
            // `last` gives every snapshot its own bucket.
            let bucket = period.map_or(nr as i64, |p| p.bucket(&snapshot.time));
            let same = *last == Some(bucket);
            if !same || is_oldest {
                *last = Some(bucket);
                if let Count::Limited(n) = count {
                    *n -= 1;
                }
                reasons.push(match period {
                    None => Reason::Last,
                    Some(p) => Reason::Period {
                        period: *p,
                        oldest: same,
                    },
                });
            }
        }
        for (within, period, last) in windowed.iter_mut() {
            if within.is_zero() || !in_window(*within, &snapshot.time) {
                continue;
            }
            let bucket = period.bucket(&snapshot.time);
            let same = *last == Some(bucket);
            if !same || is_oldest {
                *last = Some(bucket);
                reasons.push(Reason::PeriodWithin {
                    period: *period,
                    within: *within,
                    oldest: same,
                });
            }
        }
        if reasons.is_empty() {
            decision.remove.push(index);
        } else {
            decision.keep.push((index, reasons));
        }
    }
    decision
}

/// What snapshots are grouped by (`--group-by host,paths,tags`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct GroupBy {
    pub host: bool,
    pub paths: bool,
    pub tags: bool,
}

impl Default for GroupBy {
    /// restic's default: host and paths.
    fn default() -> Self {
        GroupBy {
            host: true,
            paths: true,
            tags: false,
        }
    }
}

impl GroupBy {
    /// A comma-separated list of `host`, `paths`, `tags` (singular forms
    /// too); the empty string turns grouping off.
    pub fn parse(s: &str) -> Result<GroupBy> {
        let mut g = GroupBy {
            host: false,
            paths: false,
            tags: false,
        };
        for part in s.split(',') {
            match part {
                "host" | "hosts" => g.host = true,
                "path" | "paths" => g.paths = true,
                "tag" | "tags" => g.tags = true,
                "" => {}
                other => {
                    return Err(Error::invalid(format!(
                        "unknown grouping option {other:?}: use host, paths and/or tags"
                    )))
                }
            }
        }
        Ok(g)
    }

    pub fn key(self, s: &Snapshot) -> GroupKey {
        let sorted = |v: &[String]| {
            let mut v = v.to_vec();
            v.sort();
            v
        };
        GroupKey {
            hostname: self.host.then(|| s.hostname.clone()),
            paths: self.paths.then(|| sorted(&s.paths)),
            tags: self.tags.then(|| sorted(&s.tags)),
        }
    }
}

/// The values a group shares; `None` for what is not grouped by.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct GroupKey {
    pub hostname: Option<String>,
    pub paths: Option<Vec<String>>,
    pub tags: Option<Vec<String>>,
}

impl fmt::Display for GroupKey {
    /// restic's wording: `host db1, path [/etc /srv], tags [nightly]`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut parts = Vec::new();
        if let Some(h) = self.hostname.as_deref().filter(|h| !h.is_empty()) {
            parts.push(format!("host {h}"));
        }
        if let Some(p) = self.paths.as_ref().filter(|p| !p.is_empty()) {
            parts.push(format!("path [{}]", p.join(" ")));
        }
        if let Some(t) = self.tags.as_ref().filter(|t| !t.is_empty()) {
            parts.push(format!("tags [{}]", t.join(" ")));
        }
        f.write_str(&parts.join(", "))
    }
}

/// Splits snapshots into groups: each group's indices into `snapshots` in
/// input order, groups sorted by key.
pub fn group(snapshots: &[(SnapshotId, Snapshot)], by: GroupBy) -> Vec<(GroupKey, Vec<usize>)> {
    let mut groups: std::collections::BTreeMap<GroupKey, Vec<usize>> = Default::default();
    for (i, (_, s)) in snapshots.iter().enumerate() {
        groups.entry(by.key(s)).or_default().push(i);
    }
    groups.into_iter().collect()
}

/// One group's verdict with indices into the whole list.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GroupDecision {
    pub key: GroupKey,
    pub keep: Vec<(usize, Vec<Reason>)>,
    pub remove: Vec<usize>,
}

/// Groups `snapshots` and applies `policy` to each group.
pub fn plan(
    snapshots: &[(SnapshotId, Snapshot)],
    policy: &Policy,
    by: GroupBy,
    now: DateTime<FixedOffset>,
) -> Vec<GroupDecision> {
    group(snapshots, by)
        .into_iter()
        .map(|(key, members)| {
            let subset: Vec<(SnapshotId, Snapshot)> =
                members.iter().map(|&i| snapshots[i].clone()).collect();
            let d = apply(&subset, policy, now);
            GroupDecision {
                key,
                keep: d
                    .keep
                    .into_iter()
                    .map(|(i, reasons)| (members[i], reasons))
                    .collect(),
                remove: d.remove.into_iter().map(|i| members[i]).collect(),
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::format::id::{BlobId, Id};
    use crate::format::snapshot::{SourceKind, Summary, SNAPSHOT_VERSION};
    use proptest::prelude::*;

    fn id(n: u32) -> SnapshotId {
        let mut bytes = [0u8; 32];
        bytes[..4].copy_from_slice(&n.to_be_bytes());
        SnapshotId(Id(bytes))
    }

    fn at(time: &str) -> DateTime<FixedOffset> {
        DateTime::parse_from_rfc3339(time).unwrap()
    }

    fn snap(
        n: u32,
        time: &str,
        host: &str,
        paths: &[&str],
        tags: &[&str],
    ) -> (SnapshotId, Snapshot) {
        (
            id(n),
            Snapshot {
                version: SNAPSHOT_VERSION,
                time: at(time),
                parent: None,
                original: None,
                command: None,
                tree: BlobId(Id([1; 32])),
                paths: paths.iter().map(|p| p.to_string()).collect(),
                hostname: host.into(),
                username: "root".into(),
                uid: 0,
                gid: 0,
                tags: tags.iter().map(|t| t.to_string()).collect(),
                program_version: "cairn test".into(),
                source: SourceKind::Directory,
                summary: Summary::default(),
            },
        )
    }

    /// One snapshot per given time, host "h", path "/data", no tags.
    fn timeline(times: &[&str]) -> Vec<(SnapshotId, Snapshot)> {
        times
            .iter()
            .enumerate()
            .map(|(i, t)| snap(i as u32, t, "h", &["/data"], &[]))
            .collect()
    }

    fn far_future() -> DateTime<FixedOffset> {
        at("2999-01-01T00:00:00Z")
    }

    /// The kept snapshots' times (as written) with their reasons, newest first.
    fn kept(list: &[(SnapshotId, Snapshot)], policy: &Policy) -> Vec<(String, Vec<String>)> {
        let d = apply(list, policy, far_future());
        d.keep
            .iter()
            .map(|(i, r)| {
                (
                    list[*i].1.time.to_rfc3339(),
                    r.iter().map(|r| r.to_string()).collect(),
                )
            })
            .collect()
    }

    fn kept_times(list: &[(SnapshotId, Snapshot)], policy: &Policy) -> Vec<String> {
        kept(list, policy).into_iter().map(|(t, _)| t).collect()
    }

    #[test]
    fn weeks_are_iso_weeks_across_the_2020_2021_boundary() {
        // 2020 has an ISO week 53: Monday 2020-12-28 to Sunday 2021-01-03.
        let days: Vec<String> = (0..14)
            .map(|i| {
                let d = NaiveDate::from_ymd_opt(2020, 12, 28).unwrap() + chrono::Days::new(i);
                format!("{d}T12:00:00+00:00")
            })
            .collect();
        let list = timeline(&days.iter().map(String::as_str).collect::<Vec<_>>());
        let weekly = |n| Policy {
            weekly: Count::Limited(n),
            ..Policy::default()
        };
        assert_eq!(
            kept(&list, &weekly(2)),
            vec![
                (
                    "2021-01-10T12:00:00+00:00".into(),
                    vec!["weekly snapshot".into()]
                ),
                (
                    "2021-01-03T12:00:00+00:00".into(),
                    vec!["weekly snapshot".into()]
                ),
            ]
        );
        // A count left at the oldest snapshot keeps it too.
        assert_eq!(
            kept(&list, &weekly(3)),
            vec![
                (
                    "2021-01-10T12:00:00+00:00".into(),
                    vec!["weekly snapshot".into()]
                ),
                (
                    "2021-01-03T12:00:00+00:00".into(),
                    vec!["weekly snapshot".into()]
                ),
                (
                    "2020-12-28T12:00:00+00:00".into(),
                    vec!["oldest weekly snapshot".into()]
                ),
            ]
        );
    }

    #[test]
    fn iso_week_year_differs_from_the_calendar_year() {
        // 2024-12-29 is a Sunday in 2024-W52; 2024-12-30 and 2025-01-01 are
        // both in 2025-W01, while their calendar years differ.
        let list = timeline(&[
            "2024-12-29T12:00:00+00:00",
            "2024-12-30T12:00:00+00:00",
            "2025-01-01T12:00:00+00:00",
        ]);
        let weekly = Policy {
            weekly: Count::Limited(2),
            ..Policy::default()
        };
        assert_eq!(
            kept_times(&list, &weekly),
            vec!["2025-01-01T12:00:00+00:00", "2024-12-29T12:00:00+00:00"]
        );
        let yearly = Policy {
            yearly: Count::Limited(2),
            ..Policy::default()
        };
        assert_eq!(
            kept_times(&list, &yearly),
            vec!["2025-01-01T12:00:00+00:00", "2024-12-30T12:00:00+00:00"]
        );
    }

    #[test]
    fn days_follow_each_snapshots_recorded_offset_across_dst() {
        // Europe/Berlin moves from +01:00 to +02:00 on Sunday 2021-03-28.
        // The 00:30+01:00 backup on the 28th is 23:30 UTC on the 27th, but
        // restic buckets it on the 28th, the day its host saw.
        let list = timeline(&[
            "2021-03-26T00:30:00+01:00",
            "2021-03-27T00:30:00+01:00",
            "2021-03-28T00:30:00+01:00",
            "2021-03-28T03:30:00+02:00",
            "2021-03-29T00:30:00+02:00",
            "2021-03-30T00:30:00+02:00",
        ]);
        let daily = Policy {
            daily: Count::Limited(10),
            ..Policy::default()
        };
        let d = apply(&list, &daily, far_future());
        assert_eq!(
            d.remove,
            vec![2],
            "only the earlier backup of the 28th goes"
        );
        assert_eq!(
            kept_times(&list, &daily),
            vec![
                "2021-03-30T00:30:00+02:00",
                "2021-03-29T00:30:00+02:00",
                "2021-03-28T03:30:00+02:00",
                "2021-03-27T00:30:00+01:00",
                "2021-03-26T00:30:00+01:00",
            ]
        );
    }

    #[test]
    fn repeated_local_hour_at_dst_end_is_one_hourly_bucket() {
        // On 2021-10-31 Berlin shows 02:30 twice, an hour apart.
        let list = timeline(&[
            "2021-10-31T01:30:00+02:00",
            "2021-10-31T02:30:00+02:00",
            "2021-10-31T02:30:00+01:00",
            "2021-10-31T03:30:00+01:00",
        ]);
        let hourly = Policy {
            hourly: Count::Limited(3),
            ..Policy::default()
        };
        assert_eq!(
            kept_times(&list, &hourly),
            vec![
                "2021-10-31T03:30:00+01:00",
                "2021-10-31T02:30:00+01:00",
                "2021-10-31T01:30:00+02:00",
            ]
        );
    }

    #[test]
    fn keep_tag_needs_all_tags_of_one_list() {
        let list = vec![
            snap(1, "2021-01-01T00:00:00Z", "h", &["/d"], &["a"]),
            snap(2, "2021-01-02T00:00:00Z", "h", &["/d"], &["a", "b"]),
            snap(3, "2021-01-03T00:00:00Z", "h", &["/d"], &["b"]),
            snap(4, "2021-01-04T00:00:00Z", "h", &["/d"], &[]),
        ];
        let tags = |lists: &[&str]| Policy {
            tags: lists.iter().map(|l| parse_tag_list(l)).collect(),
            ..Policy::default()
        };
        assert_eq!(
            kept(&list, &tags(&["a, b"])),
            vec![(
                "2021-01-02T00:00:00+00:00".into(),
                vec!["has tags [a, b]".into()]
            )]
        );
        assert_eq!(
            kept(&list, &tags(&["a", "b"])),
            vec![
                (
                    "2021-01-03T00:00:00+00:00".into(),
                    vec!["has tags [b]".into()]
                ),
                (
                    "2021-01-02T00:00:00+00:00".into(),
                    vec!["has tags [a]".into(), "has tags [b]".into()]
                ),
                (
                    "2021-01-01T00:00:00+00:00".into(),
                    vec!["has tags [a]".into()]
                ),
            ]
        );
        assert_eq!(
            kept_times(&list, &tags(&[""])),
            vec!["2021-01-04T00:00:00+00:00"],
            "the empty tag matches untagged snapshots"
        );
    }

    #[test]
    fn groups_by_host_paths_and_tags() {
        let list = vec![
            snap(1, "2021-01-01T00:00:00Z", "h1", &["/x"], &["n"]),
            snap(2, "2021-01-02T00:00:00Z", "h1", &["/y"], &[]),
            snap(3, "2021-01-03T00:00:00Z", "h2", &["/x"], &["n"]),
            snap(4, "2021-01-04T00:00:00Z", "h2", &["/x"], &[]),
            snap(5, "2021-01-05T00:00:00Z", "h1", &["/x"], &[]),
        ];
        let last1 = Policy {
            last: Count::Limited(1),
            ..Policy::default()
        };
        let kept_ids = |by: &str| -> Vec<Vec<usize>> {
            plan(&list, &last1, GroupBy::parse(by).unwrap(), far_future())
                .iter()
                .map(|g| g.keep.iter().map(|(i, _)| *i).collect())
                .collect()
        };
        // Default host,paths: (h1,/x) (h1,/y) (h2,/x).
        assert_eq!(kept_ids("host,paths"), vec![vec![4], vec![1], vec![3]]);
        assert_eq!(GroupBy::parse("host,paths").unwrap(), GroupBy::default());
        assert_eq!(kept_ids(""), vec![vec![4]]);
        assert_eq!(kept_ids("host"), vec![vec![4], vec![3]]);
        assert_eq!(kept_ids("paths"), vec![vec![4], vec![1]]);
        // Untagged groups sort before tagged ones.
        assert_eq!(kept_ids("tags"), vec![vec![4], vec![2]]);
        assert_eq!(
            kept_ids("host,tag"),
            vec![vec![4], vec![0], vec![3], vec![2]]
        );
        let groups = plan(
            &list,
            &last1,
            GroupBy::parse("host,paths,tags").unwrap(),
            far_future(),
        );
        assert_eq!(groups.len(), 5);
        assert_eq!(groups[1].key.to_string(), "host h1, path [/x], tags [n]");
        assert!(GroupBy::parse("hostname").is_err());
    }

    #[test]
    fn durations_parse_and_subtract_like_restic() {
        assert_eq!(
            Duration::parse("2y5m7d3h").unwrap(),
            Duration {
                years: 2,
                months: 5,
                days: 7,
                hours: 3
            }
        );
        assert_eq!(Duration::parse("3h1y").unwrap().to_string(), "1y3h");
        for bad in ["", "5", "5x", "-1d", "d", "1d5"] {
            assert!(Duration::parse(bad).is_err(), "{bad:?} parsed");
        }
        let minus = |d: &str, from: &str| {
            Duration::parse(d)
                .unwrap()
                .before(at(from))
                .unwrap()
                .to_rfc3339()
        };
        // Go's AddDate carries day overflow forward rather than clamping.
        assert_eq!(
            minus("1m", "2021-03-31T10:00:00+02:00"),
            "2021-03-03T10:00:00+02:00"
        );
        assert_eq!(
            minus("1m", "2020-03-31T10:00:00+02:00"),
            "2020-03-02T10:00:00+02:00"
        );
        assert_eq!(
            minus("1y", "2020-02-29T00:00:00Z"),
            "2019-03-01T00:00:00+00:00"
        );
        assert_eq!(
            minus("14d", "2021-01-05T00:00:00+01:00"),
            "2020-12-22T00:00:00+01:00"
        );
        assert_eq!(
            minus("1d3h", "2021-01-01T02:00:00Z"),
            "2020-12-30T23:00:00+00:00"
        );
        assert_eq!(
            Duration::parse("1000000y")
                .unwrap()
                .before(at("2021-01-01T00:00:00Z")),
            None
        );
    }

    #[test]
    fn keep_within_counts_from_the_newest_snapshot_not_now() {
        let days: Vec<String> = (1..=31)
            .map(|d| format!("2021-01-{d:02}T12:00:00+00:00"))
            .collect();
        let mut list = timeline(&days.iter().map(String::as_str).collect::<Vec<_>>());
        let within = Policy {
            within: Duration::parse("14d").unwrap(),
            ..Policy::default()
        };
        let d = apply(&list, &within, at("2030-01-01T00:00:00Z"));
        // Newer than Jan 31 12:00 minus 14 days, strictly: Jan 18..31.
        assert_eq!(d.keep.len(), 14);
        assert_eq!(d.keep.last().unwrap().0, 17);
        assert!(d
            .keep
            .iter()
            .all(|(_, r)| r == &[Reason::Within(within.within)]));
        // A snapshot from the future does not move the window.
        list.push(snap(99, "2099-01-01T00:00:00Z", "h", &["/data"], &[]));
        let d = apply(&list, &within, at("2021-02-01T00:00:00Z"));
        assert_eq!(d.keep.len(), 15);
        assert_eq!(d.keep[0].0, 31);
        // Every snapshot in the future: the window covers everything.
        let d = apply(&list, &within, at("2020-01-01T00:00:00Z"));
        assert!(d.remove.is_empty());
    }

    #[test]
    fn keep_within_daily_keeps_one_per_day_inside_the_window() {
        let list = timeline(&[
            "2021-01-01T08:00:00Z",
            "2021-01-02T08:00:00Z",
            "2021-01-02T20:00:00Z",
            "2021-01-03T08:00:00Z",
            "2021-01-03T20:00:00Z",
        ]);
        let policy = Policy {
            within_daily: Duration::parse("1d12h").unwrap(),
            ..Policy::default()
        };
        assert_eq!(
            kept(&list, &policy),
            vec![
                (
                    "2021-01-03T20:00:00+00:00".into(),
                    vec!["daily within 1d12h".into()]
                ),
                (
                    "2021-01-02T20:00:00+00:00".into(),
                    vec!["daily within 1d12h".into()]
                ),
            ]
        );
        // Window covering all: the oldest is kept as well, although the
        // 1st has only one snapshot (a new bucket, so not "oldest").
        let policy = Policy {
            within_daily: Duration::parse("5d").unwrap(),
            ..Policy::default()
        };
        assert_eq!(
            kept_times(&list, &policy),
            vec![
                "2021-01-03T20:00:00+00:00",
                "2021-01-02T20:00:00+00:00",
                "2021-01-01T08:00:00+00:00"
            ]
        );
        let two_per_day = timeline(&["2021-01-01T08:00:00Z", "2021-01-01T20:00:00Z"]);
        assert_eq!(
            kept(&two_per_day, &policy)[1],
            (
                "2021-01-01T08:00:00+00:00".into(),
                vec!["oldest daily within 5d".into()]
            )
        );
    }

    #[test]
    fn unlimited_counts_keep_every_period_and_the_oldest() {
        let mut times = Vec::new();
        for day in 1..=5 {
            for hour in [6, 12, 18] {
                times.push(format!("2021-01-{day:02}T{hour:02}:00:00+00:00"));
            }
        }
        let list = timeline(&times.iter().map(String::as_str).collect::<Vec<_>>());
        let daily = Policy {
            daily: Count::parse("unlimited").unwrap(),
            ..Policy::default()
        };
        let k = kept(&list, &daily);
        assert_eq!(k.len(), 6);
        assert!(k[..5]
            .iter()
            .all(|(t, r)| t.contains("T18:") && r == &["daily snapshot"]));
        assert_eq!(
            k[5],
            (
                "2021-01-01T06:00:00+00:00".into(),
                vec!["oldest daily snapshot".into()]
            )
        );
        assert_eq!(Count::parse("-1").unwrap(), Count::Unlimited);
        let last = Policy {
            last: Count::Unlimited,
            ..Policy::default()
        };
        assert_eq!(apply(&list, &last, far_future()).keep.len(), 15);
    }

    #[test]
    fn every_matching_rule_is_listed() {
        let list = vec![
            snap(1, "2020-06-01T00:00:00Z", "h", &["/d"], &[]),
            snap(2, "2021-03-01T10:00:00Z", "h", &["/d"], &["x"]),
        ];
        let policy = Policy {
            last: Count::Limited(1),
            hourly: Count::Limited(1),
            daily: Count::Limited(1),
            weekly: Count::Limited(1),
            monthly: Count::Limited(1),
            yearly: Count::Limited(1),
            within: Duration::parse("1d").unwrap(),
            within_hourly: Duration::parse("1d").unwrap(),
            within_daily: Duration::parse("1d").unwrap(),
            within_weekly: Duration::parse("1d").unwrap(),
            within_monthly: Duration::parse("1d").unwrap(),
            within_yearly: Duration::parse("1d").unwrap(),
            tags: vec![vec!["x".into()]],
        };
        let k = kept(&list, &policy);
        assert_eq!(
            k.len(),
            1,
            "counts are used up, the oldest is outside the window"
        );
        assert_eq!(
            k[0].1,
            [
                "has tags [x]",
                "within 1d",
                "last snapshot",
                "hourly snapshot",
                "daily snapshot",
                "weekly snapshot",
                "monthly snapshot",
                "yearly snapshot",
                "hourly within 1d",
                "daily within 1d",
                "weekly within 1d",
                "monthly within 1d",
                "yearly within 1d",
            ]
        );
    }

    #[test]
    fn policy_parsing_and_description() {
        assert!(Policy::default().is_empty());
        assert!(!Policy {
            tags: vec![vec!["x".into()]],
            ..Policy::default()
        }
        .is_empty());
        assert!(Count::parse("-2").is_err() && Count::parse("x").is_err());
        assert!(!Count::parse("0").unwrap().is_set());
        let runbook = Policy {
            daily: Count::Limited(30),
            weekly: Count::Limited(12),
            monthly: Count::Limited(12),
            yearly: Count::Unlimited,
            within: Duration::parse("2d").unwrap(),
            within_daily: Duration::parse("1m").unwrap(),
            tags: vec![vec!["a".into(), "b".into()], vec!["c".into()]],
            ..Policy::default()
        };
        assert_eq!(
            runbook.to_string(),
            "keep 30 daily, 12 weekly, 12 monthly, all yearly snapshots, daily snapshots within 1m \
             and all snapshots with tags [[a, b] [c]] and all snapshots within 2d of the newest"
        );
        assert_eq!(Policy::default().to_string(), "remove");
        assert!(apply(
            &timeline(&["2021-01-01T00:00:00Z"]),
            &Policy::default(),
            far_future()
        )
        .keep
        .is_empty());
    }

    fn arb_snapshots() -> impl Strategy<Value = Vec<(SnapshotId, Snapshot)>> {
        let offsets = ["-05:00", "+00:00", "+01:00", "+02:00", "+05:30"];
        proptest::collection::vec(
            (
                0i64..2 * 366 * 24 * 3600,
                0usize..5,
                0usize..2,
                0usize..2,
                any::<bool>(),
            ),
            0..40,
        )
        .prop_map(move |items| {
            items
                .into_iter()
                .enumerate()
                .map(|(i, (secs, off, host, path, tagged))| {
                    let offset: FixedOffset = offsets[off].parse().unwrap();
                    let time = DateTime::from_timestamp(1_600_000_000 + secs, 0)
                        .unwrap()
                        .with_timezone(&offset)
                        .to_rfc3339();
                    let tags: &[&str] = if tagged { &["t"] } else { &[] };
                    snap(
                        i as u32,
                        &time,
                        ["a", "b"][host],
                        &[["/x", "/y"][path]],
                        tags,
                    )
                })
                .collect()
        })
    }

    fn arb_count() -> impl Strategy<Value = Count> {
        prop_oneof![4 => (0u32..6).prop_map(Count::Limited), 1 => Just(Count::Unlimited)]
    }

    proptest! {
        #[test]
        fn keep_last_keeps_min_n_len_per_group(list in arb_snapshots(), n in 0u32..8, by in 0usize..4) {
            let by = GroupBy::parse(["", "host", "host,paths", "host,paths,tags"][by]).unwrap();
            let policy = Policy { last: Count::Limited(n), ..Policy::default() };
            for g in plan(&list, &policy, by, far_future()) {
                let size = g.keep.len() + g.remove.len();
                prop_assert_eq!(g.keep.len(), size.min(n as usize));
            }
        }

        #[test]
        fn plan_partitions_and_explains(
            list in arb_snapshots(),
            counts in proptest::collection::vec(arb_count(), 6),
            within_days in 0u32..40,
            tagged in any::<bool>(),
        ) {
            let policy = Policy {
                last: counts[0], hourly: counts[1], daily: counts[2],
                weekly: counts[3], monthly: counts[4], yearly: counts[5],
                within: Duration { days: within_days, ..Duration::default() },
                tags: if tagged { vec![vec!["t".into()]] } else { vec![] },
                ..Policy::default()
            };
            let groups = plan(&list, &policy, GroupBy::default(), far_future());
            let mut seen: Vec<usize> = Vec::new();
            for g in &groups {
                seen.extend(g.keep.iter().map(|(i, _)| *i));
                seen.extend(&g.remove);
                prop_assert!(g.keep.iter().all(|(_, r)| !r.is_empty()));
                for &i in &g.remove {
                    prop_assert_eq!(GroupBy::default().key(&list[i].1), g.key.clone());
                }
                if counts.iter().any(|c| c.is_set()) || within_days > 0 {
                    // The newest snapshot of the group always survives.
                    let members: Vec<usize> = g.keep.iter().map(|(i, _)| *i).chain(g.remove.iter().copied()).collect();
                    let newest = members.iter().copied().max_by(|&a, &b| {
                        list[a].1.time.cmp(&list[b].1.time).then(list[a].0.cmp(&list[b].0))
                    }).unwrap();
                    prop_assert_eq!(g.keep.first().map(|(i, _)| *i), Some(newest));
                }
                if !counts.iter().any(|c| c.is_set()) && within_days == 0 && !tagged {
                    prop_assert!(g.keep.is_empty());
                }
            }
            seen.sort_unstable();
            prop_assert_eq!(seen, (0..list.len()).collect::<Vec<_>>());
        }

        #[test]
        fn unlimited_daily_keeps_one_per_local_day_plus_the_oldest(list in arb_snapshots()) {
            let policy = Policy { daily: Count::Unlimited, ..Policy::default() };
            let d = apply(&list, &policy, far_future());
            // restic starts a new bucket whenever the local day differs from
            // the previous (newer) snapshot's. With mixed UTC offsets local
            // days need not fall monotonically, so count changes in
            // newest-first order, not distinct days.
            let mut order: Vec<usize> = (0..list.len()).collect();
            order.sort_by(|&a, &b| list[b].1.time.cmp(&list[a].1.time).then(list[b].0.cmp(&list[a].0)));
            let mut days: Vec<NaiveDate> = order.iter().map(|&i| list[i].1.time.date_naive()).collect();
            days.dedup();
            let extra_oldest = d.keep.last().is_some_and(|(_, r)| r == &[Reason::Period { period: Period::Daily, oldest: true }]);
            prop_assert_eq!(d.keep.len(), days.len() + usize::from(extra_oldest));
        }
    }
}
