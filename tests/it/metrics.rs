//! `--metrics-file`: a Prometheus textfile that is valid exposition format,
//! records failures without a new success time, and keeps the series of
//! other commands and hosts.

use crate::common::*;
use std::collections::BTreeMap;
use std::path::Path;

fn valid_name(name: &str) -> bool {
    let mut c = name.chars();
    c.next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_' || c == ':')
        && c.all(|c| c.is_ascii_alphanumeric() || c == '_' || c == ':')
}

/// Parses the file strictly (every line a HELP/TYPE comment or a
/// `name{labels} value` sample) into "name{labels}" -> value.
fn parse(path: &Path) -> BTreeMap<String, f64> {
    let text = std::fs::read_to_string(path).unwrap();
    let mut out = BTreeMap::new();
    let mut typed = Vec::new();
    for line in text.lines() {
        if let Some(rest) = line.strip_prefix("# HELP ") {
            assert!(valid_name(rest.split(' ').next().unwrap()), "{line}");
            continue;
        }
        if let Some(rest) = line.strip_prefix("# TYPE ") {
            let (name, kind) = rest.split_once(' ').unwrap();
            assert!(valid_name(name) && kind == "gauge", "{line}");
            assert!(!typed.contains(&name.to_string()), "TYPE twice: {line}");
            typed.push(name.to_string());
            continue;
        }
        let (series, value) = line.rsplit_once(' ').expect(line);
        let value: f64 = value
            .parse()
            .unwrap_or_else(|_| panic!("bad value: {line}"));
        let name = series.split('{').next().unwrap();
        assert!(valid_name(name), "{line}");
        assert_eq!(
            typed.last().map(String::as_str),
            Some(name),
            "samples follow their TYPE: {line}"
        );
        if let Some(labels) = series.strip_prefix(name) {
            if !labels.is_empty() {
                let inner = labels
                    .strip_prefix('{')
                    .and_then(|l| l.strip_suffix('}'))
                    .expect(line);
                for pair in inner.split("\",") {
                    let (k, v) = pair.split_once("=\"").expect(line);
                    assert!(valid_name(k), "{line}");
                    assert!(!v.trim_end_matches('"').contains('"'), "{line}");
                }
            }
        }
        assert!(
            out.insert(series.to_string(), value).is_none(),
            "duplicate: {line}"
        );
    }
    out
}

/// The value of `name` whose labels contain every `k="v"` of `labels`.
fn value(m: &BTreeMap<String, f64>, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
    let hits: Vec<f64> = m
        .iter()
        .filter(|(k, _)| k.split('{').next() == Some(name))
        .filter(|(k, _)| {
            labels
                .iter()
                .all(|(l, v)| k.contains(&format!("{l}=\"{v}\"")))
        })
        .map(|(_, v)| *v)
        .collect();
    assert!(hits.len() <= 1, "{name} {labels:?} matches {hits:?}");
    hits.first().copied()
}

#[test]
fn backup_writes_valid_metrics_and_a_failure_keeps_the_last_success() {
    let t = TestRepo::new();
    let src = t.path("src");
    std::fs::write(src.join("a"), vec![7u8; 1000]).unwrap();
    std::fs::write(src.join("b"), vec![8u8; 2000]).unwrap();
    let metrics = t.dir.path().join("textfile/cairn.prom");
    std::fs::create_dir_all(metrics.parent().unwrap()).unwrap();
    let mf = path_str(&metrics);
    t.ok(&[
        "--metrics-file",
        mf,
        "backup",
        path_str(&src),
        "--tag",
        "volumes",
        "--host",
        "h1",
    ]);
    let m = parse(&metrics);
    let run = [("command", "backup"), ("host", "h1"), ("tags", "volumes")];
    assert_eq!(value(&m, "cairn_last_exit_code", &run), Some(0.0));
    let success = value(&m, "cairn_last_success_timestamp_seconds", &run).unwrap();
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs_f64();
    assert!((now - success).abs() < 600.0, "{success} vs {now}");
    assert_eq!(
        value(&m, "cairn_last_run_timestamp_seconds", &run),
        Some(success)
    );
    assert_eq!(
        value(&m, "cairn_backup_bytes_processed", &run),
        Some(3000.0)
    );
    assert_eq!(value(&m, "cairn_backup_files_new", &run), Some(2.0));
    assert_eq!(value(&m, "cairn_backup_files_unmodified", &run), Some(0.0));
    assert!(value(&m, "cairn_backup_bytes_added", &run).unwrap() > 0.0);
    assert!(value(&m, "cairn_duration_seconds", &run).unwrap() >= 0.0);
    assert_eq!(value(&m, "cairn_snapshots_total", &[]), Some(1.0));
    assert_eq!(
        value(&m, "cairn_repository_pack_bytes", &[]),
        Some(t.pack_bytes() as f64)
    );
    // No temporary file is left for the collector to trip over.
    let names: Vec<_> = std::fs::read_dir(metrics.parent().unwrap())
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .filter(|n| n.ends_with(".prom") || n.contains("tmp"))
        .collect();
    assert_eq!(names, ["cairn.prom"]);

    // A failing backup of the same job: a new exit code and run time, the
    // old success time.
    std::thread::sleep(std::time::Duration::from_millis(20));
    let out = t.cmd(&[
        "--metrics-file",
        mf,
        "backup",
        "--tag",
        "volumes",
        "--host",
        "h1",
        "--stdin-from-command",
        "--",
        "false",
    ]);
    assert_eq!(out.status.code(), Some(1));
    let m = parse(&metrics);
    assert_eq!(value(&m, "cairn_last_exit_code", &run), Some(1.0));
    assert_eq!(
        value(&m, "cairn_last_success_timestamp_seconds", &run),
        Some(success)
    );
    assert!(value(&m, "cairn_last_run_timestamp_seconds", &run).unwrap() > success);

    // A wrong password fails before anything: still recorded.
    let wrong = t.dir.path().join("wrong");
    std::fs::write(&wrong, "nope\n").unwrap();
    let out = t.cmd(&[
        "--metrics-file",
        mf,
        "--password-file",
        path_str(&wrong),
        "backup",
        path_str(&src),
        "--tag",
        "volumes",
        "--host",
        "h1",
    ]);
    assert_eq!(out.status.code(), Some(12));
    let m = parse(&metrics);
    assert_eq!(value(&m, "cairn_last_exit_code", &run), Some(12.0));
    assert_eq!(
        value(&m, "cairn_last_success_timestamp_seconds", &run),
        Some(success)
    );
}

#[test]
fn commands_and_hosts_share_one_file() {
    let t = TestRepo::new();
    let src = t.path("src");
    std::fs::write(src.join("a"), b"data").unwrap();
    let metrics = t.dir.path().join("cairn.prom");
    let mf = path_str(&metrics);
    // Something else's metrics in the same file survive too.
    std::fs::write(
        &metrics,
        "# TYPE other_metric gauge\nother_metric{job=\"x\"} 5\n",
    )
    .unwrap();
    t.ok(&[
        "--metrics-file",
        mf,
        "backup",
        path_str(&src),
        "--host",
        "h1",
    ]);
    t.ok(&[
        "--metrics-file",
        mf,
        "backup",
        path_str(&src),
        "--host",
        "h2",
        "--tag",
        "a,b",
    ]);
    t.ok(&["--metrics-file", mf, "check"]);
    t.ok(&["--metrics-file", mf, "forget", "--keep-last", "5"]);
    t.ok(&["--metrics-file", mf, "prune"]);
    let m = parse(&metrics);
    for run in [
        vec![("command", "backup"), ("host", "h1")],
        vec![("command", "backup"), ("host", "h2"), ("tags", "a,b")],
        vec![("command", "check")],
        vec![("command", "forget")],
        vec![("command", "prune")],
    ] {
        assert_eq!(
            value(&m, "cairn_last_exit_code", &run),
            Some(0.0),
            "{run:?}"
        );
        assert!(
            value(&m, "cairn_last_success_timestamp_seconds", &run).is_some(),
            "{run:?}"
        );
    }
    assert_eq!(
        value(&m, "cairn_check_errors", &[("command", "check")]),
        Some(0.0)
    );
    assert_eq!(
        value(
            &m,
            "cairn_forget_snapshots_removed",
            &[("command", "forget")]
        ),
        Some(0.0)
    );
    assert_eq!(value(&m, "other_metric", &[("job", "x")]), Some(5.0));
    assert_eq!(value(&m, "cairn_snapshots_total", &[]), Some(2.0));
    // Each host's backup has its own series (h2 had no parent: another host).
    assert_eq!(
        value(&m, "cairn_backup_files_new", &[("host", "h1")]),
        Some(1.0)
    );
    assert_eq!(
        value(&m, "cairn_backup_files_new", &[("host", "h2")]),
        Some(1.0)
    );
    // Commands that are not jobs write nothing.
    let before = std::fs::read(&metrics).unwrap();
    t.ok(&["--metrics-file", mf, "snapshots"]);
    assert_eq!(std::fs::read(&metrics).unwrap(), before);
}

#[test]
fn a_damaged_repository_shows_in_check_errors() {
    let t = TestRepo::new();
    let src = t.path("src");
    std::fs::write(src.join("a"), b"data").unwrap();
    t.ok(&["backup", path_str(&src)]);
    let metrics = t.dir.path().join("cairn.prom");
    let (_, pack) = walk_files(&t.repo.join("packs"))
        .into_iter()
        .next()
        .unwrap();
    std::fs::remove_file(&pack).unwrap();
    let out = t.cmd(&["--metrics-file", path_str(&metrics), "check"]);
    assert_eq!(out.status.code(), Some(1));
    let m = parse(&metrics);
    assert_eq!(
        value(&m, "cairn_last_exit_code", &[("command", "check")]),
        Some(1.0)
    );
    assert!(value(&m, "cairn_check_errors", &[("command", "check")]).unwrap() >= 1.0);
    assert!(value(
        &m,
        "cairn_last_success_timestamp_seconds",
        &[("command", "check")]
    )
    .is_none());
}
