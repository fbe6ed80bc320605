//! `cairn forget`: retention policies applied through the real binary,
//! forgetting by id, dry runs, refusals and the JSON structure.

use crate::common::*;
use chrono::{DateTime, Datelike, FixedOffset, NaiveDate, Weekday};
use std::collections::BTreeSet;
use std::sync::Arc;

const RUNBOOK: [&str; 8] = [
    "--keep-daily",
    "30",
    "--keep-weekly",
    "12",
    "--keep-monthly",
    "12",
    "--keep-yearly",
    "7",
];

fn last_sunday(year: i32, month: u32) -> NaiveDate {
    let mut d = NaiveDate::from_ymd_opt(year, month + 1, 1)
        .unwrap()
        .pred_opt()
        .unwrap();
    while d.weekday() != Weekday::Sun {
        d = d.pred_opt().unwrap();
    }
    d
}

/// 00:30 local time in Berlin: +02:00 from the day after the last Sunday of
/// March to the last Sunday of October (the switches happen later at night).
fn berlin_half_past_midnight(date: NaiveDate) -> DateTime<FixedOffset> {
    let summer = date > last_sunday(date.year(), 3) && date <= last_sunday(date.year(), 10);
    let offset = if summer { "+02:00" } else { "+01:00" };
    DateTime::parse_from_rfc3339(&format!("{date}T00:30:00{offset}")).unwrap()
}

fn date(s: &str) -> NaiveDate {
    s.parse().unwrap()
}

/// Local dates of the snapshots left, and the whole `snapshots --json`.
fn remaining_dates(t: &TestRepo) -> BTreeSet<NaiveDate> {
    t.snapshots_json(&[])
        .iter()
        .map(|s| {
            DateTime::parse_from_rfc3339(s["time"].as_str().unwrap())
                .unwrap()
                .date_naive()
        })
        .collect()
}

fn json(out: &str) -> serde_json::Value {
    serde_json::from_str(out.trim()).unwrap_or_else(|e| panic!("forget --json: {e}: {out}"))
}

/// The reasons JSON lists for the snapshot kept on local date `day`.
fn reasons_on(group: &serde_json::Value, day: &str) -> Vec<String> {
    let entry = group["reasons"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["snapshot"]["time"].as_str().unwrap().starts_with(day))
        .unwrap_or_else(|| panic!("nothing kept on {day}"));
    entry["matches"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m.as_str().unwrap().to_string())
        .collect()
}

#[test]
fn runbook_policy_over_sixteen_months_of_nightly_backups() {
    let t = TestRepo::new();
    let src = t.path("src");
    std::fs::write(src.join("f"), b"nightly").unwrap();
    let first = date("2023-10-01");
    let last = date("2025-02-14");
    t.ok(&[
        "backup",
        path_str(&src),
        "--time",
        &berlin_half_past_midnight(first).to_rfc3339(),
    ]);
    // The other nights reuse that snapshot's tree: a backup of unchanged
    // data differs only in its time, and 500 real runs would be slow.
    let backend: Arc<dyn cairn::Backend> = Arc::new(cairn::LocalBackend::new(&t.repo));
    let mut repo = cairn::Repository::open(backend, PASSWORD.as_bytes(), Some(t.cache.as_path()))
        .unwrap()
        .load_index()
        .unwrap();
    // Copies of a stored snapshot need nothing written first: an empty
    // writer's token stands for that.
    let (_, template) = repo
        .snapshots(&cairn::SnapshotFilter::default())
        .unwrap()
        .remove(0);
    let lock = repo.lock_shared(std::time::Duration::ZERO).unwrap();
    let written = repo.blob_writer(&lock).finish().unwrap();
    let mut nights = 1;
    let mut day = first.succ_opt().unwrap();
    while day <= last {
        let mut s = template.clone();
        s.time = berlin_half_past_midnight(day);
        repo.save_snapshot(&s, &written).unwrap();
        nights += 1;
        day = day.succ_opt().unwrap();
    }
    assert_eq!(nights, 503);
    // The commands below take their own locks.
    drop(lock);

    let mut dry = vec!["forget", "--dry-run"];
    dry.extend_from_slice(&RUNBOOK);
    let out = t.ok(&dry);
    assert!(
        out.contains("Would have removed the following snapshots:"),
        "{out}"
    );
    assert_eq!(t.snapshot_ids().len(), 503, "--dry-run removed something");

    let mut run = vec!["--json", "forget"];
    run.extend_from_slice(&RUNBOOK);
    let groups = json(&t.ok(&run));
    let groups = groups.as_array().unwrap();
    assert_eq!(groups.len(), 1);
    let group = &groups[0];

    // Worked out by hand from the calendar, not from the implementation.
    let mut expected: BTreeSet<NaiveDate> = BTreeSet::new();
    // 30 daily: January 16 to February 14, 2025.
    let mut d = date("2025-01-16");
    while d <= last {
        expected.insert(d);
        d = d.succ_opt().unwrap();
    }
    // 12 weekly: the newest night of each ISO week, i.e. Sundays (Friday
    // 2025-02-14 for the current week). 2024-12-30 and 31 belong to
    // 2025-W01, whose newest night is Sunday 2025-01-05.
    for w in [
        "2025-02-14",
        "2025-02-09",
        "2025-02-02",
        "2025-01-26",
        "2025-01-19",
        "2025-01-12",
        "2025-01-05",
        "2024-12-29",
        "2024-12-22",
        "2024-12-15",
        "2024-12-08",
        "2024-12-01",
    ] {
        expected.insert(date(w));
    }
    // 12 monthly: the last night of each month back to March 2024.
    for m in [
        "2025-02-14",
        "2025-01-31",
        "2024-12-31",
        "2024-11-30",
        "2024-10-31",
        "2024-09-30",
        "2024-08-31",
        "2024-07-31",
        "2024-06-30",
        "2024-05-31",
        "2024-04-30",
        "2024-03-31",
    ] {
        expected.insert(date(m));
    }
    // 7 yearly: 2025, 2024 and 2023 use three; with counts left, the oldest
    // night is kept too.
    for y in ["2025-02-14", "2024-12-31", "2023-12-31", "2023-10-01"] {
        expected.insert(date(y));
    }
    assert_eq!(expected.len(), 49);
    assert_eq!(remaining_dates(&t), expected);
    assert_eq!(group["keep"].as_array().unwrap().len(), 49);
    assert_eq!(group["remove"].as_array().unwrap().len(), 503 - 49);
    assert_eq!(group["host"], template.hostname.as_str());
    assert_eq!(group["paths"], serde_json::json!(template.paths));
    assert_eq!(group["tags"], serde_json::Value::Null);

    assert_eq!(
        reasons_on(group, "2025-02-14"),
        [
            "daily snapshot",
            "weekly snapshot",
            "monthly snapshot",
            "yearly snapshot"
        ]
    );
    assert_eq!(
        reasons_on(group, "2024-12-31"),
        ["monthly snapshot", "yearly snapshot"]
    );
    assert_eq!(reasons_on(group, "2024-12-29"), ["weekly snapshot"]);
    assert_eq!(reasons_on(group, "2023-12-31"), ["yearly snapshot"]);
    assert_eq!(reasons_on(group, "2023-10-01"), ["oldest yearly snapshot"]);

    // Applying the same policy again removes nothing more.
    let again = json(&t.ok(&run));
    assert_eq!(again[0]["remove"], serde_json::json!([]));
    assert_eq!(remaining_dates(&t).len(), 49);
}

fn backup_at(t: &TestRepo, src: &std::path::Path, time: &str, extra: &[&str]) -> String {
    let mut args = vec![path_str(src), "--time", time];
    args.extend_from_slice(extra);
    let summary = t.backup_json(&args);
    summary["snapshot_id"].as_str().unwrap().to_string()
}

#[test]
fn forget_by_id_removes_exactly_those() {
    let t = TestRepo::new();
    let src = t.path("src");
    std::fs::write(src.join("f"), b"x").unwrap();
    let a = backup_at(&t, &src, "2026-01-01 03:00:00", &[]);
    let b = backup_at(&t, &src, "2026-01-02T03:00:00+01:00", &[]);
    let c = backup_at(&t, &src, "2026-01-03T03:00:00-05:00", &[]);
    let times: Vec<String> = t
        .snapshots_json(&[])
        .iter()
        .map(|s| s["time"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(
        times[1], "2026-01-02T03:00:00+01:00",
        "--time keeps the offset"
    );
    assert_eq!(times[2], "2026-01-03T03:00:00-05:00");

    // A missing id fails before anything is removed.
    let out = t.cmd(&["forget", &a[..8], "00000000"]);
    assert_eq!(out.status.code(), Some(1));
    assert_eq!(t.snapshot_ids().len(), 3);
    // Ids and a policy together are refused.
    assert_eq!(
        t.cmd(&["forget", &a, "--keep-last", "1"]).status.code(),
        Some(1)
    );
    assert_eq!(t.snapshot_ids().len(), 3);

    let out = t.ok(&["forget", &a[..8], &c, "--dry-run"]);
    assert!(out.contains(&a[..8]) && out.contains(&c[..8]), "{out}");
    assert_eq!(t.snapshot_ids().len(), 3);

    let out = json(&t.ok(&["--json", "forget", &a[..8], &c]));
    let removed: Vec<&str> = out[0]["remove"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["id"].as_str().unwrap())
        .collect();
    assert_eq!(removed, [c.as_str(), a.as_str()], "newest first");
    assert_eq!(t.snapshot_ids(), [b]);
    // The data stays: the remaining snapshot restores.
    let restored = t.restore("latest", "out");
    assert_eq!(
        std::fs::read(restored.join(src.strip_prefix("/").unwrap()).join("f")).unwrap(),
        b"x"
    );
}

#[test]
fn forget_refuses_to_remove_everything_by_accident() {
    let t = TestRepo::new();
    let src = t.path("src");
    std::fs::write(src.join("f"), b"x").unwrap();
    backup_at(&t, &src, "2026-01-01T03:00:00Z", &["--host", "a"]);
    backup_at(&t, &src, "2026-01-02T03:00:00Z", &["--host", "a"]);
    backup_at(&t, &src, "2026-01-02T03:00:00Z", &["--host", "b"]);
    let refused = |args: &[&str], message: &str| {
        let out = t.cmd(args);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "{args:?}: {stderr}");
        assert!(stderr.contains(message), "{args:?}: {stderr}");
        assert_eq!(t.snapshot_ids().len(), 3, "{args:?} removed something");
    };
    refused(&["forget"], "no policy was specified");
    refused(&["forget", "--keep-last", "0"], "no policy was specified");
    refused(&["forget", "--unsafe-allow-remove-all"], "snapshot filter");
    refused(
        &["forget", "--keep-tag", "nope"],
        "refusing to delete last snapshot of snapshot group \"host a, path",
    );
    refused(&["forget", "--keep-daily", "-2"], "invalid count");
    refused(&["forget", "--keep-within", "3w"], "invalid duration");
    refused(
        &["forget", "--keep-last", "1", "--group-by", "user"],
        "unknown grouping option",
    );

    // forget deletes, so it needs an exclusive lock: a running backup's
    // shared lock keeps it out.
    let backend: Arc<dyn cairn::Backend> = Arc::new(cairn::LocalBackend::new(&t.repo));
    let repo = cairn::Repository::open(
        backend.clone(),
        PASSWORD.as_bytes(),
        Some(t.cache.as_path()),
    )
    .unwrap();
    let guard = repo.lock_shared(std::time::Duration::ZERO).unwrap();
    let out = t.cmd(&["forget", "--keep-last", "1"]);
    assert_eq!(out.status.code(), Some(11));
    assert_eq!(t.snapshot_ids().len(), 3);
    drop(guard);

    t.ok(&["forget", "--unsafe-allow-remove-all", "--host", "a"]);
    let left = t.snapshots_json(&[]);
    assert_eq!(left.len(), 1);
    assert_eq!(left[0]["hostname"], "b");
}

#[test]
fn forget_json_groups_by_host_and_buckets_by_recorded_local_day() {
    let t = TestRepo::new();
    let src = t.path("src");
    std::fs::write(src.join("f"), b"x").unwrap();
    // Berlin switches to summer time on 2021-03-28; both backups of that
    // night are on the 28th locally, though the first is the 27th in UTC.
    for (time, tag) in [
        ("2021-03-27T00:30:00+01:00", "nightly"),
        ("2021-03-28T00:30:00+01:00", "nightly"),
        ("2021-03-28T03:30:00+02:00", "release"),
        ("2021-03-29T00:30:00+02:00", "nightly"),
    ] {
        backup_at(&t, &src, time, &["--host", "a", "--tag", tag]);
    }
    backup_at(&t, &src, "2021-03-29T00:30:00+02:00", &["--host", "b"]);
    let out = json(&t.ok(&[
        "--json",
        "forget",
        "--dry-run",
        "--keep-daily",
        "unlimited",
        "--keep-tag",
        "release",
        "--group-by",
        "host",
    ]));
    let groups = out.as_array().unwrap();
    assert_eq!(groups.len(), 2);
    assert_eq!(groups[0]["host"], "a");
    assert_eq!(groups[0]["paths"], serde_json::Value::Null);
    assert_eq!(groups[1]["host"], "b");
    let kept: Vec<&str> = groups[0]["keep"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["time"].as_str().unwrap())
        .collect();
    assert_eq!(
        kept,
        [
            "2021-03-29T00:30:00+02:00",
            "2021-03-28T03:30:00+02:00",
            "2021-03-27T00:30:00+01:00"
        ]
    );
    assert_eq!(
        reasons_on(&groups[0], "2021-03-28T03:30"),
        ["has tags [release]", "daily snapshot"]
    );
    let removed = groups[0]["remove"].as_array().unwrap();
    assert_eq!(removed.len(), 1);
    assert_eq!(removed[0]["time"], "2021-03-28T00:30:00+01:00");
    assert_eq!(removed[0]["short_id"].as_str().unwrap().len(), 8);
    assert_eq!(groups[1]["keep"].as_array().unwrap().len(), 1);
    assert_eq!(t.snapshot_ids().len(), 5, "--dry-run removed something");
}
