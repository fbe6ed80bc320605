//! Operating a repository on S3: faults between cairn and the server
//! (through `s3_proxy`), credentials from AWS profiles, a missing bucket,
//! many hosts writing at once while a prune runs, a backup killed while it
//! uploads, and the local copies of snapshots and index files.

use crate::common::*;
use crate::s3_proxy::{Fault, FaultProxy, Plan};
use crate::s3_server::{set_credentials, S3Server, ACCESS_KEY, DEFAULT_BUCKET, SECRET_KEY};
use cairn::storage::backend::{S3Backend, S3Location};
use cairn::{Backend as _, FileKind};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

fn s3_repo(repo: String) -> TestRepo {
    set_credentials();
    let mut t = TestRepo::uninitialised();
    t.repo = PathBuf::from(repo);
    t
}

fn init(t: &TestRepo) -> String {
    let mut args = vec!["init"];
    args.extend_from_slice(&FAST_KDF);
    t.ok(&args)
}

fn repo_id(t: &TestRepo) -> String {
    let v: serde_json::Value = serde_json::from_str(&t.ok(&["--json", "cat", "config"])).unwrap();
    v["id"].as_str().unwrap().to_string()
}

/// A tree of a few files, `bytes` of them incompressible, made from `seed`.
fn tree(at: &Path, seed: u64, bytes: usize) {
    std::fs::create_dir_all(at.join("sub")).unwrap();
    std::fs::write(at.join("note.txt"), format!("tree {seed}\n")).unwrap();
    std::fs::write(at.join("sub/data.bin"), random_bytes(seed, bytes)).unwrap();
}

/// Runs `args` with `env` set (a `None` value removes the variable):
/// the exit code, stderr, and how long it took.
fn run(
    t: &TestRepo,
    args: &[&str],
    env: &[(&str, Option<&str>)],
) -> (Option<i32>, String, Duration) {
    let started = Instant::now();
    let mut c = t.command();
    c.args(args);
    for (k, v) in env {
        match v {
            Some(v) => c.env(k, v),
            None => c.env_remove(k),
        };
    }
    let out = output_with_timeout(&mut c, 120);
    let stderr = String::from_utf8_lossy(&out.stderr).to_string();
    (out.status.code(), stderr, started.elapsed())
}

/// The command failed with `code` and one error line, within `secs`.
fn fails_with_one_line(
    t: &TestRepo,
    args: &[&str],
    env: &[(&str, Option<&str>)],
    code: i32,
    secs: u64,
) -> String {
    let (got, stderr, took) = run(t, args, env);
    note(&format!(
        "{args:?} failed after {took:?}: {}",
        stderr.trim_end()
    ));
    assert_eq!(got, Some(code), "{args:?}: {stderr}");
    let errors: Vec<&str> = stderr
        .lines()
        .filter(|l| l.starts_with("cairn: error"))
        .collect();
    assert_eq!(errors.len(), 1, "{args:?}: {stderr}");
    assert!(
        took < Duration::from_secs(secs),
        "{args:?} took {took:?}: {stderr}"
    );
    stderr
}

fn check_clean(t: &TestRepo, read_data: bool) {
    let mut args = vec!["check"];
    if read_data {
        args.push("--read-data");
    }
    let out = t.ok(&args);
    assert!(out.contains("no errors were found"), "{out}");
}

/// Every request path between cairn and the server fails now and then:
/// dropped connections, 503s, SlowDown, short stalls. Retries with backoff
/// carry init, a backup, a restore and `check --read-data` through them.
#[test]
fn backup_and_restore_succeed_through_transient_faults() {
    let server = S3Server::garage();
    let proxy = FaultProxy::start(
        &server.endpoint,
        Plan {
            skip: 0,
            every: 4,
            left: 40,
            faults: vec![
                Fault::Drop,
                Fault::Unavailable,
                Fault::SlowDown,
                Fault::Stall(Duration::from_millis(300)),
            ],
        },
    );
    let t = s3_repo(proxy.repo(&format!("{DEFAULT_BUCKET}/faults")));
    init(&t);
    let src = t.path("src");
    tree(&src, 41, 3 << 20);
    t.backup_json(&[path_str(&src)]);
    let target = t.restore(&format!("latest:{}", path_str(&src)), "restored");
    assert_trees_equal(&src, &target);
    check_clean(&t, true);
    note(&format!(
        "{} of {} requests failed on the way",
        proxy.faults(),
        proxy.requests()
    ));
    assert!(
        proxy.faults() >= 8,
        "only {} faults were injected: the test proves nothing",
        proxy.faults()
    );
}

/// A server that stops answering (503 SlowDown on every request, or
/// stalls) ends a command with one error line and exit code 1 once the
/// retry budget (`CAIRN_S3_RETRY_SECONDS`) is spent, not a hang. A backup
/// cut off that way leaves no snapshot, the repository checks clean, and
/// the next backup completes.
#[test]
fn a_permanent_outage_fails_within_the_retry_bound_and_leaves_no_snapshot() {
    let server = S3Server::garage();
    let proxy = FaultProxy::start(&server.endpoint, Plan::pass());
    let t = s3_repo(server.repo(&format!("{DEFAULT_BUCKET}/outage")));
    let mut args = vec!["init", "--pack-size", "1"];
    args.extend_from_slice(&FAST_KDF);
    t.ok(&args);
    let src = t.path("src");
    tree(&src, 42, 6 << 20);
    let through = proxy.repo(&format!("{DEFAULT_BUCKET}/outage"));
    let env = [
        ("CAIRN_REPOSITORY", Some(through.as_str())),
        ("CAIRN_S3_RETRY_SECONDS", Some("2")),
    ];
    // The outage starts after the backup has opened the repository and
    // begun to store packs.
    proxy.set(Plan {
        skip: 14,
        ..Plan::outage(Fault::SlowDown)
    });
    let stderr = fails_with_one_line(&t, &["backup", path_str(&src)], &env, 1, 30);
    assert!(
        stderr.contains("503") || stderr.contains("SlowDown"),
        "{stderr}"
    );
    assert!(proxy.faults() > 0);

    proxy.set(Plan::outage(Fault::Stall(Duration::from_secs(2))));
    fails_with_one_line(&t, &["snapshots"], &env, 1, 30);

    assert!(
        t.snapshot_ids().is_empty(),
        "a failed backup left a snapshot"
    );
    check_clean(&t, false);
    t.backup_json(&[path_str(&src)]);
    check_clean(&t, true);
}

/// A bucket that does not exist is "no repository" (exit 10) at once;
/// credentials come from an AWS profile when the environment has none; a
/// profile that does not exist, or a file that cannot be parsed, is one
/// line and exit 1, naming no secret.
#[test]
fn a_missing_bucket_and_bad_profiles_fail_at_once_with_one_line() {
    let server = S3Server::garage();
    let t = s3_repo(server.repo("no-such-bucket/x"));
    let stderr = fails_with_one_line(&t, &["snapshots"], &[], 10, 5);
    assert!(stderr.contains("does not exist"), "{stderr}");

    let t = s3_repo(server.repo(&format!("{DEFAULT_BUCKET}/profile")));
    let aws = t.path("aws");
    std::fs::write(
        aws.join("credentials"),
        format!("[ops]\naws_access_key_id = {ACCESS_KEY}\naws_secret_access_key = {SECRET_KEY}\n"),
    )
    .unwrap();
    std::fs::write(aws.join("config"), "[profile ops]\nregion = us-east-1\n").unwrap();
    let credentials = aws.join("credentials");
    let config = aws.join("config");
    let profile = |name: &'static str| {
        [
            ("AWS_ACCESS_KEY_ID", None),
            ("AWS_SECRET_ACCESS_KEY", None),
            ("AWS_DEFAULT_REGION", None),
            ("AWS_PROFILE", Some(name)),
            ("AWS_SHARED_CREDENTIALS_FILE", Some(path_str(&credentials))),
            ("AWS_CONFIG_FILE", Some(path_str(&config))),
        ]
    };
    let mut args = vec!["init"];
    args.extend_from_slice(&FAST_KDF);
    let (code, stderr, _) = run(&t, &args, &profile("ops"));
    assert_eq!(code, Some(0), "init with a profile: {stderr}");
    let (code, stderr, _) = run(&t, &["snapshots"], &profile("ops"));
    assert_eq!(code, Some(0), "{stderr}");

    let stderr = fails_with_one_line(&t, &["snapshots"], &profile("nope"), 1, 5);
    assert!(stderr.contains("\"nope\""), "{stderr}");
    std::fs::write(
        &credentials,
        format!("[ops]\naws_secret_access_key {SECRET_KEY}\n"),
    )
    .unwrap();
    let stderr = fails_with_one_line(&t, &["snapshots"], &profile("ops"), 1, 5);
    assert!(stderr.contains("line 2"), "{stderr}");
    assert!(!stderr.contains(SECRET_KEY), "{stderr}");
}

/// Four hosts back up into one bucket at once while `forget --prune` runs
/// (it waits for their locks): every process succeeds, nothing is lost,
/// `check --read-data` is clean and every snapshot left restores
/// byte-exact.
#[test]
fn four_hosts_back_up_at_once_while_forget_prunes() {
    let server = S3Server::garage();
    let t = s3_repo(server.repo(&format!("{DEFAULT_BUCKET}/hosts")));
    init(&t);
    let hosts = ["alpha", "beta", "gamma", "delta"];
    let source = |h: usize| t.path(&format!("src-{}", hosts[h]));
    let seed = |h: usize, round: u64| 100 + h as u64 * 10 + round;
    // A first round, one after another: what forget will drop.
    for (h, host) in hosts.iter().enumerate() {
        tree(&source(h), seed(h, 1), 1 << 20);
        t.ok(&[
            "backup",
            "--host",
            host,
            "--tag",
            "r1",
            path_str(&source(h)),
        ]);
    }
    for h in 0..hosts.len() {
        tree(&source(h), seed(h, 2), 1 << 20);
    }
    let spawn = |args: Vec<String>| {
        t.command()
            .args(&args)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap()
    };
    let mut children: Vec<_> = (0..hosts.len())
        .map(|h| {
            // Waits if forget took its exclusive lock first, as a cron
            // job on a shared bucket should.
            spawn(vec![
                "--retry-lock".into(),
                "2m".into(),
                "backup".into(),
                "--host".into(),
                hosts[h].into(),
                "--tag".into(),
                "r2".into(),
                path_str(&source(h)).into(),
            ])
        })
        .collect();
    children.push(spawn(
        [
            "--retry-lock",
            "2m",
            "forget",
            "--keep-last",
            "1",
            "--prune",
        ]
        .map(String::from)
        .to_vec(),
    ));
    for child in children {
        let out = finish_with_timeout(child, "concurrent backup or forget", 180);
        assert_success(&out, &["concurrent backup or forget"]);
    }
    check_clean(&t, true);
    let snapshots = t.snapshots_json(&[]);
    assert!(snapshots.len() >= hosts.len(), "{snapshots:?}");
    for (h, host) in hosts.iter().enumerate() {
        let mine: Vec<_> = snapshots
            .iter()
            .filter(|s| s["hostname"] == *host)
            .collect();
        assert!(!mine.is_empty(), "no snapshot of {host} is left");
        for s in mine {
            let round = if s["tags"].to_string().contains("r2") {
                2
            } else {
                1
            };
            let expected = t.path(&format!("expected-{host}-{round}"));
            tree(&expected, seed(h, round), 1 << 20);
            let id = s["id"].as_str().unwrap();
            let target = t.restore(
                &format!("{id}:{}", path_str(&source(h))),
                &format!("restored-{host}-{round}"),
            );
            assert_eq!(content_map(&target), content_map(&expected), "{host} {id}");
        }
    }
}

/// A backup killed with SIGKILL while it uploads packs to the bucket
/// leaves no snapshot and a repository that checks clean; the next backup
/// reuses the packs the killed one had indexed. Along the way: `init`
/// says what the conditional-write probe found, the first command that
/// takes a lock records it in the cache, and snapshots and index files
/// are kept there, checked against their names when read back.
#[test]
fn a_backup_killed_mid_upload_to_s3_resumes_and_the_cache_keeps_copies() {
    let server = S3Server::garage();
    let t = s3_repo(server.repo(&format!("{DEFAULT_BUCKET}/killed")));
    let mut args = vec!["init", "--pack-size", "1"];
    args.extend_from_slice(&FAST_KDF);
    let out = t.ok(&args);
    assert!(out.contains("conditional writes: ignored"), "{out}");
    let s3 = S3Backend::new(
        S3Location::parse(&server.repo(&format!("{DEFAULT_BUCKET}/killed"))).unwrap(),
    )
    .unwrap();

    let data = random_bytes(43, 24 << 20);
    let mut child = t
        .command()
        .env("CAIRN_TEST_INDEX_AFTER_BYTES", (4u64 << 20).to_string())
        .args(["backup", "--stdin", "--stdin-filename", "big.bin"])
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut stdin = child.stdin.take().unwrap();
    stdin.write_all(&data[..16 << 20]).unwrap();
    let deadline = Instant::now() + Duration::from_secs(60);
    while s3.list(FileKind::Index).unwrap().is_empty() {
        assert!(
            Instant::now() < deadline,
            "no index file while the backup uploads"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    child.kill().unwrap();
    child.wait().unwrap();
    drop(stdin);
    assert!(
        t.snapshot_ids().is_empty(),
        "a killed backup left a snapshot"
    );
    check_clean(&t, false);

    let resumed = t.backup_stdin_json("big.bin", &[], &mut &data[..]);
    let added = num(&resumed, "data_added");
    assert!(
        added <= (data.len() as u64) * 7 / 8,
        "the resumed backup stored {added} of {} bytes again",
        data.len()
    );
    check_clean(&t, true);
    assert_eq!(t.ok_bytes(&["dump", "latest", "big.bin"]), data);

    // The cache: the probe's record and a copy of the snapshot.
    let dir = t.cache.join(repo_id(&t));
    let record = std::fs::read_to_string(dir.join("conditional-writes")).unwrap();
    assert!(record.starts_with("ignored\n"), "{record}");
    let id = t.snapshot_ids().pop().unwrap();
    let copy = dir.join("remote/snapshots").join(&id);
    let good = std::fs::read(&copy).expect("no copy of the snapshot in the cache");
    assert_eq!(good, s3.get(FileKind::Snapshot, &id).unwrap());
    assert!(std::fs::read_dir(dir.join("remote/index")).unwrap().count() > 0);
    // `dump` read the snapshot's tree: its pack was copied.
    assert!(std::fs::read_dir(dir.join("remote/packs")).unwrap().count() > 0);
    // A damaged copy is replaced, not believed.
    let mut bad = good.clone();
    bad[40] ^= 1;
    std::fs::write(&copy, &bad).unwrap();
    assert_eq!(t.snapshot_ids(), std::slice::from_ref(&id));
    assert_eq!(std::fs::read(&copy).unwrap(), good);
    // Damage in the bucket is not hidden by a good copy: `check` reads
    // the bucket.
    s3.put(FileKind::Snapshot, &id, &bad).unwrap();
    assert_eq!(t.snapshot_ids(), std::slice::from_ref(&id));
    let (code, stderr, _) = run(&t, &["check"], &[]);
    assert_eq!(code, Some(1), "check missed a damaged snapshot: {stderr}");
    // A snapshot forgotten elsewhere loses its copy at the next listing.
    s3.delete(FileKind::Snapshot, &id).unwrap();
    assert!(t.snapshot_ids().is_empty());
    assert!(!copy.exists());
}

/// moto enforces `If-None-Match: *`: `init` says so, in text and JSON.
#[test]
fn init_says_conditional_writes_are_enforced_on_moto() {
    let server = S3Server::moto();
    let t = s3_repo(server.repo("enforcing"));
    let mut args = vec!["--json", "init"];
    args.extend_from_slice(&FAST_KDF);
    let v: serde_json::Value = serde_json::from_str(t.ok(&args).trim()).unwrap();
    assert_eq!(v["conditional_writes"], "enforced", "{v}");
    let t = s3_repo(server.repo("enforcing/other"));
    let out = init(&t);
    assert!(out.contains("conditional writes: enforced"), "{out}");
}
