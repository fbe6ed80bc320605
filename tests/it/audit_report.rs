//! `cairn audit report` beyond the log's integrity: the schedule an
//! auditor's policy expects, the HTML page as a browser shows it, byte-
//! identical reports, and a log that must exist.

use crate::common::*;
use std::path::Path;
use std::process::Output;

/// 2040-01-01T00:00:00Z: entries written "at" this time and after come
/// after the real init (chains require time to run forwards).
const DAY0: i64 = 2_208_988_800;
const DAY: i64 = 86_400;

/// `cairn audit …` without any password source.
fn keyless(t: &TestRepo, repo: &Path, args: &[&str]) -> Output {
    t.command()
        .env_remove("CAIRN_PASSWORD_FILE")
        .env("CAIRN_REPOSITORY", repo)
        .arg("audit")
        .args(args)
        .output()
        .expect("cannot run cairn")
}

fn report(t: &TestRepo, args: &[&str]) -> (serde_json::Value, i32) {
    let mut all = vec!["report", "--json"];
    all.extend_from_slice(args);
    let out = keyless(t, &t.repo, &all);
    let value = serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
        panic!(
            "report is not JSON ({e}): {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        )
    });
    (value, out.status.code().unwrap_or(-1))
}

fn check<'a>(report: &'a serde_json::Value, name: &str) -> &'a serde_json::Value {
    report["checks"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["name"] == name)
        .unwrap_or_else(|| panic!("no check {name} in {report:#}"))
}

fn evidence(check: &serde_json::Value) -> Vec<String> {
    check["evidence"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e.as_str().unwrap().to_string())
        .collect()
}

/// Runs cairn with its audit entry written "at" `time`.
fn at(t: &TestRepo, time: i64, args: &[&str]) -> Output {
    t.command()
        .env("CAIRN_TEST_AUDIT_TIME", time.to_string())
        .args(args)
        .output()
        .expect("cannot run cairn")
}

/// A repository whose whole log is dated: init on day 0, backups at 02:00
/// on day 1 (ok), day 3 (failed) and day 4 (ok); nothing on day 2.
fn nights() -> (TestRepo, String) {
    let t = TestRepo::uninitialised();
    let mut init = vec!["init"];
    init.extend(FAST_KDF);
    assert_success(&at(&t, DAY0, &init), &init);
    let src = t.path("src");
    std::fs::write(src.join("a"), b"night").unwrap();
    let two_am = |day: i64| DAY0 + day * DAY + 2 * 3600;
    let out = at(&t, two_am(1), &["backup", path_str(&src)]);
    assert_success(&out, &["backup"]);
    let failing = [
        "backup",
        "--stdin-from-command",
        "--",
        "sh",
        "-c",
        "echo x; exit 1",
    ];
    assert_eq!(at(&t, two_am(3), &failing).status.code(), Some(1));
    std::fs::write(src.join("a"), b"another night").unwrap();
    assert_success(&at(&t, two_am(4), &["backup", path_str(&src)]), &["backup"]);
    let log = keyless(&t, &t.repo, &["log", "--json"]);
    let log: serde_json::Value = serde_json::from_slice(&log.stdout).unwrap();
    let host = log[0]["host"].as_str().unwrap().to_string();
    let policy = t.dir.path().join("policy");
    std::fs::write(
        &policy,
        format!(
            "# the nightly backup of this host\n[source \"nightly\"]\nhost = \"{host}\"\nevery = 1d\nwindow = 01:00-03:00\ngrace = 1h\nsince = 2040-01-01\n"
        ),
    )
    .unwrap();
    (t, path_str(&policy).to_string())
}

#[test]
fn a_skipped_night_and_a_failed_night_are_told_apart() {
    let (t, policy) = nights();
    // Slots open at 01:00 and close at 04:00 each day: January 1 and 3
    // have nothing logged, January 4 only a failed backup.
    let (r, code) = report(&t, &["--policy", &policy, "--to", "2040-01-05"]);
    assert_eq!(code, 1, "{r:#}");
    assert_eq!(r["verdict"], "fail");
    let schedule = check(&r, "schedule");
    assert_eq!(schedule["status"], "fail", "{r:#}");
    let lines = evidence(schedule);
    let gap = |day: &str, what: &str| {
        lines
            .iter()
            .any(|l| l.contains(&format!("due {day}T01:00:00Z")) && l.contains(what))
    };
    assert!(gap("2040-01-01", "missing: nothing logged"), "{lines:#?}");
    assert!(gap("2040-01-03", "missing: nothing logged"), "{lines:#?}");
    assert!(gap("2040-01-04", "failed: entry"), "{lines:#?}");
    assert!(
        lines.iter().any(|l| l.contains("backup failed")),
        "{lines:#?}"
    );
    assert!(!gap("2040-01-02", ""), "{lines:#?}");
    assert!(!gap("2040-01-05", ""), "{lines:#?}");
    assert!(
        lines
            .iter()
            .any(|l| l.contains("5 due, 2 present, 1 failed, 2 missing")),
        "{lines:#?}"
    );
    // --from leaves out the slots that open before it (January 1 here).
    let (r, code) = report(
        &t,
        &[
            "--policy",
            &policy,
            "--from",
            "2040-01-02",
            "--to",
            "2040-01-05",
        ],
    );
    assert_eq!(code, 1, "{r:#}");
    let text = r.to_string();
    assert!(
        text.contains("4 due, 2 present, 1 failed, 1 missing"),
        "{r:#}"
    );
    assert!(!text.contains("due 2040-01-01T01:00:00Z"), "{r:#}");
    // Due from January 2 and checked up to it: the schedule holds.
    std::fs::write(
        &policy,
        std::fs::read_to_string(&policy)
            .unwrap()
            .replace("2040-01-01", "2040-01-02"),
    )
    .unwrap();
    let (r, code) = report(&t, &["--policy", &policy, "--to", "2040-01-02"]);
    assert_eq!(check(&r, "schedule")["status"], "pass", "{r:#}");
    assert_eq!(code, 0, "{r:#}");
    // A bad policy is one line naming the line.
    std::fs::write(&policy, "[source \"x\"]\nhost = a\nevery = sometimes\n").unwrap();
    let out = keyless(&t, &t.repo, &["report", "--policy", &policy]);
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("line 3"), "{stderr}");
    assert_eq!(stderr.trim().lines().count(), 1, "{stderr}");
}

#[test]
fn identical_inputs_give_byte_identical_reports_in_every_format() {
    let (t, policy) = nights();
    let today = chrono::Utc::now().format("%Y-%m-%d").to_string();
    for format in [
        &["--json"][..],
        &["--format", "text"],
        &["--format", "markdown"],
        &["--format", "html"],
    ] {
        let mut args = vec!["report", "--policy", &policy, "--to", "2040-01-05"];
        args.extend_from_slice(format);
        let a = keyless(&t, &t.repo, &args);
        let b = keyless(&t, &t.repo, &args);
        assert_eq!(a.status.code(), Some(1), "{format:?}");
        assert!(!a.stdout.is_empty());
        assert!(a.stdout == b.stdout, "{format:?}: two runs differ");
        // Nothing in it comes from the clock: every entry is dated 2040.
        let text = String::from_utf8_lossy(&a.stdout);
        assert!(!text.contains(&today), "{format:?} names today: {text}");
        // -o writes the same bytes.
        let file = t.dir.path().join("report.out");
        let mut with_file = args.clone();
        with_file.extend(["-o", path_str(&file)]);
        keyless(&t, &t.repo, &with_file);
        assert_eq!(std::fs::read(&file).unwrap(), a.stdout, "{format:?}");
    }
}

/// The page's text as headless Chromium renders it.
fn chromium_dom(page: &Path) -> String {
    assert!(
        have_tool("chromium"),
        "chromium is missing: scripts/setup.sh installs it (apt-get install chromium)"
    );
    let profile = tempfile::tempdir().unwrap();
    let mut command = std::process::Command::new("chromium");
    command
        .args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--no-first-run",
            "--disable-extensions",
        ])
        .arg(format!("--user-data-dir={}", profile.path().display()))
        .arg("--dump-dom")
        .arg(format!("file://{}", page.display()))
        .env("HOME", profile.path())
        .stdin(std::process::Stdio::null());
    let out = output_with_timeout(&mut command, 60);
    assert!(
        out.status.success(),
        "chromium failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

/// The verdict element's text in the DOM Chromium built.
fn verdict_in(dom: &str) -> String {
    let start = dom.find("id=\"verdict\"").expect("no verdict element");
    let open = dom[start..].find('>').unwrap() + start + 1;
    let close = dom[open..].find('<').unwrap() + open;
    dom[open..close].trim().to_string()
}

#[test]
fn the_html_report_opens_in_a_browser_and_shows_its_verdict() {
    let t = TestRepo::new();
    let src = t.path("src");
    std::fs::write(src.join("a"), b"data").unwrap();
    t.ok(&["backup", path_str(&src)]);
    let page = t.dir.path().join("report.html");
    let out = keyless(
        &t,
        &t.repo,
        &["report", "--format", "html", "-o", path_str(&page)],
    );
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let html = std::fs::read_to_string(&page).unwrap();
    for external in ["<script", "src=", "<link", "http://", "https://"] {
        assert!(!html.contains(external), "page loads {external}: {html}");
    }
    let dom = chromium_dom(&page);
    assert_eq!(verdict_in(&dom), "Verdict: PASS", "{dom}");
    assert!(dom.contains("log integrity"), "{dom}");

    // A snapshot deleted behind the tool's back: the page says FAIL.
    let snapshot = std::fs::read_dir(t.repo.join("snapshots"))
        .unwrap()
        .next()
        .unwrap()
        .unwrap()
        .path();
    std::fs::remove_file(snapshot).unwrap();
    let out = keyless(
        &t,
        &t.repo,
        &["report", "--format", "html", "-o", path_str(&page)],
    );
    assert_eq!(out.status.code(), Some(1));
    let dom = chromium_dom(&page);
    assert_eq!(verdict_in(&dom), "Verdict: FAIL", "{dom}");
    assert!(dom.contains("no logged forget removed it"), "{dom}");
}

#[test]
fn a_deleted_log_fails_where_the_key_files_say_one_must_exist() {
    let t = TestRepo::new();
    let src = t.path("src");
    std::fs::write(src.join("a"), b"data").unwrap();
    t.ok(&["backup", path_str(&src)]);
    let pinned = t.dir.path().join("trusted");
    std::fs::write(&pinned, t.ok(&["audit", "keys"])).unwrap();
    let (r, code) = report(&t, &["--trusted-keys", path_str(&pinned)]);
    assert_eq!(code, 0, "{r:#}");
    assert_eq!(check(&r, "log present")["status"], "pass", "{r:#}");

    // The whole log deleted, no --state: the version 2 key file was
    // written by a logged init, so an empty log fails.
    let audit = t.repo.join("audit");
    std::fs::remove_dir_all(&audit).unwrap();
    std::fs::create_dir(&audit).unwrap();
    let (r, code) = report(&t, &[]);
    assert_eq!(code, 1, "{r:#}");
    let present = check(&r, "log present");
    assert_eq!(present["status"], "fail", "{r:#}");
    assert!(
        evidence(present)
            .iter()
            .any(|e| e.contains("carries a signing key, but no entry")),
        "{r:#}"
    );
    // The backup's snapshot is unlogged now, but still present: no
    // retention failure from it.
    assert_eq!(check(&r, "retention")["status"], "pass", "{r:#}");

    // The key file stripped to version 1 as well: the files no longer say
    // a log exists (only a warning), but the pinned keys do.
    let keys = t.repo.join("keys");
    let old = std::fs::read_dir(&keys)
        .unwrap()
        .next()
        .unwrap()
        .unwrap()
        .path();
    let mut json: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&old).unwrap()).unwrap();
    let object = json.as_object_mut().unwrap();
    object.remove("signing");
    object.remove("signing_public");
    object.insert("version".into(), 1.into());
    let bytes = serde_json::to_vec_pretty(&json).unwrap();
    std::fs::remove_file(&old).unwrap();
    std::fs::write(keys.join(blake3::hash(&bytes).to_hex().as_str()), &bytes).unwrap();
    let (r, code) = report(&t, &[]);
    assert_eq!(code, 0, "{r:#}");
    assert_eq!(check(&r, "log present")["status"], "warn", "{r:#}");
    let (r, code) = report(&t, &["--trusted-keys", path_str(&pinned)]);
    assert_eq!(code, 1, "{r:#}");
    assert!(
        evidence(check(&r, "log present"))
            .iter()
            .any(|e| e.contains("no entry is signed by any of the 1 trusted key")),
        "{r:#}"
    );
}
