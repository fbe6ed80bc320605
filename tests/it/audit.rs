//! The audit log through the real binary: what an auditor without the
//! password verifies, and each kind of tampering the report must catch.

use crate::common::*;
use std::path::{Path, PathBuf};
use std::process::Output;

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

/// The JSON report and the exit code.
fn report(t: &TestRepo, repo: &Path, extra: &[&str]) -> (serde_json::Value, i32) {
    let mut args = vec!["report", "--json"];
    args.extend_from_slice(extra);
    let out = keyless(t, repo, &args);
    let code = out.status.code().unwrap_or(-1);
    let value = serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
        panic!(
            "report is not JSON ({e}): {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        )
    });
    (value, code)
}

fn check<'a>(report: &'a serde_json::Value, name: &str) -> &'a serde_json::Value {
    report["checks"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["name"] == name)
        .unwrap_or_else(|| panic!("no check {name} in {report:#}"))
}

/// Asserts the report fails on check `name` with evidence containing `what`.
fn assert_fails(t: &TestRepo, repo: &Path, name: &str, what: &str) {
    let (r, code) = report(t, repo, &[]);
    assert_eq!(code, 1, "report passed: {r:#}");
    assert_eq!(r["verdict"], "fail");
    let c = check(&r, name);
    assert_eq!(c["status"], "fail", "{name}: {r:#}");
    assert!(
        c["evidence"]
            .as_array()
            .unwrap()
            .iter()
            .any(|e| e.as_str().unwrap().contains(what)),
        "{name} names no {what:?}: {c:#}"
    );
}

fn log(t: &TestRepo, repo: &Path) -> Vec<serde_json::Value> {
    let out = keyless(t, repo, &["log", "--json"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice::<serde_json::Value>(&out.stdout)
        .unwrap()
        .as_array()
        .unwrap()
        .clone()
}

/// A copy of the repository to tamper with.
fn copy_repo(t: &TestRepo, name: &str) -> PathBuf {
    let to = t.path(name).join("repo");
    run_tool("cp", &["-a", path_str(&t.repo), path_str(&to)]);
    to
}

/// A repository with a history: two backups, a failed one, reads, a tag,
/// a forget and a prune, a key added.
fn with_history() -> TestRepo {
    let t = TestRepo::new();
    let src = t.path("src");
    std::fs::write(src.join("a"), b"first").unwrap();
    t.ok(&["backup", path_str(&src)]);
    std::fs::write(src.join("b"), b"second").unwrap();
    t.ok(&["backup", path_str(&src)]);
    // The dump command fails: a failed night, logged as failed.
    let out = t.cmd(&[
        "backup",
        "--stdin-from-command",
        "--",
        "sh",
        "-c",
        "echo x; exit 1",
    ]);
    assert_eq!(out.status.code(), Some(1));
    t.ok(&["ls", "latest"]);
    t.restore("latest", "restored");
    let ids = t.snapshot_ids();
    t.ok(&["tag", "--add", "keep", &ids[1]]);
    let ids = t.snapshot_ids();
    t.ok(&["forget", &ids[0]]);
    t.ok(&["prune"]);
    let new_password = t.dir.path().join("pw2");
    std::fs::write(&new_password, "another\n").unwrap();
    t.ok(&["key", "add", "--new-password-file", path_str(&new_password)]);
    t.ok(&["check", "--read-data"]);
    t
}

#[test]
fn a_full_history_verifies_without_the_password_and_a_failed_backup_reads_failed() {
    let t = with_history();
    let (r, code) = report(&t, &t.repo, &[]);
    assert_eq!(code, 0, "{r:#}");
    assert_eq!(r["verdict"], "pass");
    for name in [
        "log integrity",
        "chains",
        "snapshots present",
        "verification cadence",
    ] {
        assert_eq!(check(&r, name)["status"], "pass", "{name}: {r:#}");
    }
    let entries = log(&t, &t.repo);
    let ops: Vec<(&str, &str)> = entries
        .iter()
        .map(|e| {
            (
                e["operation"].as_str().unwrap(),
                e["result"].as_str().unwrap(),
            )
        })
        .collect();
    for expected in [
        ("init", "ok"),
        ("backup", "ok"),
        ("backup", "failed"),
        ("ls", "ok"),
        ("restore", "ok"),
        ("tag", "ok"),
        ("forget", "ok"),
        ("prune", "ok"),
        ("key add", "ok"),
    ] {
        assert!(ops.contains(&expected), "{expected:?} not logged: {ops:?}");
    }
    assert!(
        entries.iter().all(|e| e["status"] == "valid"),
        "{entries:#?}"
    );
    // The failed night is named in the results, not missing.
    let results = check(&r, "operation results");
    assert_eq!(results["status"], "warn");
    assert!(results["evidence"][0]
        .as_str()
        .unwrap()
        .contains("backup failed"));

    // Pinned keys: `audit keys` (with the password) gives the file.
    let keys = t.ok(&["audit", "keys"]);
    let pinned = t.dir.path().join("trusted");
    std::fs::write(&pinned, &keys).unwrap();
    let (r, code) = report(&t, &t.repo, &["--trusted-keys", path_str(&pinned)]);
    assert_eq!(code, 0, "{r:#}");
    assert_eq!(check(&r, "signers known")["status"], "pass");
    // A key the auditor did not pin signed entries: fail.
    assert_eq!(keys.lines().count(), 2, "{keys}");
    std::fs::write(&pinned, format!("{}  someone else\n", "ab".repeat(32))).unwrap();
    let (r, code) = report(&t, &t.repo, &["--trusted-keys", path_str(&pinned)]);
    assert_eq!((code, &r["verdict"]), (1, &"fail".into()), "{r:#}");
    assert_eq!(check(&r, "signers known")["status"], "fail");

    // Identical inputs, identical report.
    let a = keyless(&t, &t.repo, &["report", "--format", "markdown"]);
    let b = keyless(&t, &t.repo, &["report", "--format", "markdown"]);
    assert_eq!(a.stdout, b.stdout);
    assert!(String::from_utf8_lossy(&a.stdout).contains("**Verdict: PASS**"));
}

#[test]
fn tampering_with_the_log_or_the_snapshots_is_detected_without_the_key() {
    let t = with_history();
    let entries = log(&t, &t.repo);
    let name = |i: usize| entries[i]["id"].as_str().unwrap().to_string();
    let entry_path = |repo: &Path, i: usize| repo.join("audit").join(name(i));
    let middle = entries.len() / 2;

    // One byte of an entry changed: it no longer matches its name, and a
    // forger who renames it to its new hash breaks the signature.
    let repo = copy_repo(&t, "byte");
    let mut bytes = std::fs::read(entry_path(&repo, middle)).unwrap();
    // The time field (section 18): still decodes, no longer signed.
    bytes[82] ^= 1;
    std::fs::write(entry_path(&repo, middle), &bytes).unwrap();
    assert_fails(&t, &repo, "log integrity", "does not match its name");
    std::fs::remove_file(entry_path(&repo, middle)).unwrap();
    let renamed = cairn::format::id::Id::of_file_bytes(&bytes).to_hex();
    std::fs::write(repo.join("audit").join(renamed), &bytes).unwrap();
    assert_fails(&t, &repo, "log integrity", "signature does not hold");

    // An entry removed from the middle: the next entry links it.
    let repo = copy_repo(&t, "removed");
    std::fs::remove_file(entry_path(&repo, middle)).unwrap();
    assert_fails(&t, &repo, "chains", "which is missing");

    // Two entries' contents swapped ("reordered"): names no longer match.
    let repo = copy_repo(&t, "swapped");
    let (a, b) = (entry_path(&repo, 1), entry_path(&repo, 2));
    let (bytes_a, bytes_b) = (std::fs::read(&a).unwrap(), std::fs::read(&b).unwrap());
    std::fs::write(&a, bytes_b).unwrap();
    std::fs::write(&b, bytes_a).unwrap();
    assert_fails(&t, &repo, "log integrity", "does not match its name");

    // A snapshot file deleted behind the tool's back: logged as written,
    // never logged as removed.
    let repo = copy_repo(&t, "snapshot");
    let snapshot = std::fs::read_dir(repo.join("snapshots"))
        .unwrap()
        .next()
        .unwrap()
        .unwrap()
        .path();
    std::fs::remove_file(&snapshot).unwrap();
    assert_fails(
        &t,
        &repo,
        "snapshots present",
        "no logged operation removed it",
    );

    // Rollback: the auditor saved the heads; the newest entry is then
    // removed (it links nothing after it, so only the state shows it).
    let repo = copy_repo(&t, "rollback");
    let state = t.dir.path().join("state.json");
    let (r, code) = report(&t, &repo, &["--state", path_str(&state)]);
    assert_eq!(code, 0, "{r:#}");
    // Nothing saved before this first run: a warning; now the heads are.
    assert_eq!(check(&r, "rollback")["status"], "warn");
    assert_eq!(report(&t, &repo, &["--state", path_str(&state)]).1, 0);
    std::fs::remove_file(entry_path(&repo, entries.len() - 1)).unwrap();
    let (r, code) = report(&t, &repo, &["--state", path_str(&state)]);
    assert_eq!(code, 1, "{r:#}");
    assert_eq!(check(&r, "rollback")["status"], "fail");
    assert_eq!(check(&r, "chains")["status"], "pass", "{r:#}");

    // The untouched repository still passes.
    assert_eq!(report(&t, &t.repo, &[]).1, 0);
}

#[test]
fn concurrent_backups_of_one_key_keep_a_verifiable_log() {
    let t = TestRepo::new();
    let src = t.path("src");
    std::fs::write(src.join("a"), b"data").unwrap();
    let children: Vec<_> = (0..3)
        .map(|_| {
            t.command()
                .args(["backup", "--retry-lock", "30s", path_str(&src)])
                .stdout(std::process::Stdio::null())
                .stderr(std::process::Stdio::piped())
                .spawn()
                .unwrap()
        })
        .collect();
    for child in children {
        let out = finish_with_timeout(child, "concurrent backup", 60);
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let (r, code) = report(&t, &t.repo, &[]);
    assert_eq!(code, 0, "{r:#}");
    assert_ne!(check(&r, "chains")["status"], "fail", "{r:#}");
    assert_eq!(check(&r, "snapshots present")["status"], "pass", "{r:#}");
    // The next operation merges whatever branches the backups left.
    t.ok(&["snapshots"]);
    let (r, code) = report(&t, &t.repo, &[]);
    assert_eq!(code, 0, "{r:#}");
    assert_eq!(check(&r, "chains")["status"], "pass", "{r:#}");
    assert_eq!(r["heads"].as_array().unwrap().len(), 1, "{r:#}");
}

#[test]
fn the_retention_lock_keeps_young_snapshots_refuses_forget_and_cannot_be_shortened() {
    let t = TestRepo::uninitialised();
    let mut init = FAST_KDF.to_vec();
    init.extend(["--retention-lock", "6y"]);
    t.init(&init);
    let src = t.path("src");
    std::fs::write(src.join("a"), b"one").unwrap();
    t.ok(&["backup", path_str(&src)]);
    std::fs::write(src.join("a"), b"two").unwrap();
    t.ok(&["backup", path_str(&src)]);
    let ids = t.snapshot_ids();

    // Named by id: refused with one line, exit 1, nothing removed.
    let out = t.cmd(&["forget", &ids[0]]);
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(stderr.trim().lines().count(), 1, "{stderr}");
    assert!(
        stderr.contains("younger than the retention lock (6y)"),
        "{stderr}"
    );
    // By policy: kept, and the table says why.
    let out = t.ok(&["forget", "--keep-last", "1"]);
    assert!(out.contains("retention lock 6y"), "{out}");
    assert_eq!(t.snapshot_ids().len(), 2);
    // A tag rewrites a snapshot (old file replaced): not a removal the
    // lock forbids, and the report agrees.
    t.ok(&["tag", "--add", "kept", &ids[1]]);
    let ids = t.snapshot_ids();

    // Shortening is refused; lengthening works.
    let out = t.cmd(&["retention-lock", "set", "1y"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("not shortened"));
    t.ok(&["retention-lock", "set", "7y"]);
    assert!(t
        .ok(&["retention-lock", "show"])
        .contains("retention lock 7y"));
    let out = t.cmd(&["forget", &ids[0]]);
    assert!(String::from_utf8_lossy(&out.stderr).contains("(7y)"));

    // The refusals are in the log, and the report finds nothing removed
    // inside the lock.
    let entries = log(&t, &t.repo);
    let refused: Vec<&str> = entries
        .iter()
        .filter(|e| e["result"] == "refused")
        .map(|e| e["operation"].as_str().unwrap())
        .collect();
    assert_eq!(
        refused,
        ["forget", "retention-lock set", "forget"],
        "{entries:#?}"
    );
    let (r, code) = report(&t, &t.repo, &[]);
    assert_eq!(code, 0, "{r:#}");
    let retention = check(&r, "retention");
    assert_eq!(retention["status"], "pass", "{r:#}");
    assert!(
        retention["summary"].as_str().unwrap().contains("7y"),
        "{r:#}"
    );
}

#[test]
fn a_version_1_key_file_still_opens_logs_unsigned_and_passwd_gives_it_a_signing_key() {
    let t = TestRepo::new();
    // Make the only key file what older cairn wrote: version 1, no signing
    // key, stored under the hash of its bytes.
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

    let src = t.path("src");
    std::fs::write(src.join("a"), b"data").unwrap();
    let out = t.cmd(&["backup", path_str(&src)]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stderr).contains("has no signing key"));
    let entries = log(&t, &t.repo);
    let backup = entries.iter().find(|e| e["operation"] == "backup").unwrap();
    assert_eq!(backup["status"], "unsigned", "{entries:#?}");
    let (r, code) = report(&t, &t.repo, &[]);
    assert_eq!(code, 0, "{r:#}");
    assert_eq!(check(&r, "log integrity")["status"], "warn", "{r:#}");

    // `key passwd` writes a version 2 key file: signed from then on.
    let new_password = t.dir.path().join("pw2");
    std::fs::write(&new_password, format!("{PASSWORD}\n")).unwrap();
    t.ok(&[
        "key",
        "passwd",
        "--new-password-file",
        path_str(&new_password),
    ]);
    t.ok(&["snapshots"]);
    let entries = log(&t, &t.repo);
    let listed = entries
        .iter()
        .find(|e| e["operation"] == "snapshots")
        .unwrap();
    assert_eq!(listed["status"], "valid", "{entries:#?}");
}
