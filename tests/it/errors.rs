//! Documented exit codes and error behaviour.

use crate::common::*;
use std::sync::Arc;

fn stderr(out: &std::process::Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

#[test]
fn wrong_password_exits_12() {
    let t = TestRepo::new();
    let src = t.path("src");
    std::fs::write(src.join("f"), b"x").unwrap();
    t.backup_json(&[&src]);
    let wrong = t.dir.path().join("wrong-password");
    std::fs::write(&wrong, "not the password\n").unwrap();
    let target = t.dir.path().join("never-restored");
    for args in [
        vec!["snapshots"],
        vec!["backup", path_str(&src)],
        vec!["restore", "latest", "--target", path_str(&target)],
    ] {
        let out = t
            .command()
            .env("CAIRN_PASSWORD_FILE", &wrong)
            .args(&args)
            .run();
        assert_eq!(
            out.status.code(),
            Some(12),
            "{args:?} with a wrong password: {}",
            stderr(&out)
        );
    }
    assert!(
        !target.exists(),
        "restore with a wrong password created its target"
    );
    // The same through CAIRN_PASSWORD and CAIRN_PASSWORD_COMMAND.
    let out = t
        .command()
        .env_remove("CAIRN_PASSWORD_FILE")
        .env("CAIRN_PASSWORD", "nope")
        .arg("snapshots")
        .run();
    assert_eq!(
        out.status.code(),
        Some(12),
        "CAIRN_PASSWORD: {}",
        stderr(&out)
    );
    let out = t
        .command()
        .env_remove("CAIRN_PASSWORD_FILE")
        .env("CAIRN_PASSWORD_COMMAND", "echo nope")
        .arg("snapshots")
        .run();
    assert_eq!(
        out.status.code(),
        Some(12),
        "CAIRN_PASSWORD_COMMAND: {}",
        stderr(&out)
    );
    // And the right password through each channel still works.
    let out = t
        .command()
        .env_remove("CAIRN_PASSWORD_FILE")
        .env("CAIRN_PASSWORD", PASSWORD)
        .arg("snapshots")
        .run();
    assert_success(&out, &["snapshots (CAIRN_PASSWORD)"]);
    let out = t
        .command()
        .env_remove("CAIRN_PASSWORD_FILE")
        .env(
            "CAIRN_PASSWORD_COMMAND",
            format!("printf '%s\\n' '{PASSWORD}'"),
        )
        .arg("snapshots")
        .run();
    assert_success(&out, &["snapshots (CAIRN_PASSWORD_COMMAND)"]);
    assert_eq!(t.snapshot_ids().len(), 1, "no snapshot may have been added");
}

#[test]
fn missing_repository_exits_10() {
    let t = TestRepo::uninitialised();
    let src = t.path("src");
    std::fs::write(src.join("f"), b"x").unwrap();
    for args in [
        vec!["snapshots"],
        vec!["backup", path_str(&src)],
        vec!["ls", "latest"],
    ] {
        let out = t.cmd(&args);
        assert_eq!(
            out.status.code(),
            Some(10),
            "{args:?} without a repository: {}",
            stderr(&out)
        );
    }
    // An existing but empty directory is not a repository either.
    std::fs::create_dir_all(&t.repo).unwrap();
    let out = t.cmd(&["snapshots"]);
    assert_eq!(out.status.code(), Some(10), "empty dir: {}", stderr(&out));
    assert!(
        !t.repo.join("config").exists(),
        "a failed command must not create a repository"
    );
}

#[test]
fn locked_repository_exits_11() {
    let t = TestRepo::new();
    let src = t.path("src");
    std::fs::write(src.join("f"), b"locked out").unwrap();
    let backend: Arc<dyn cairn::Backend> = Arc::new(cairn::LocalBackend::new(&t.repo));
    let repo = cairn::Repository::open(
        backend.clone(),
        PASSWORD.as_bytes(),
        Some(t.cache.as_path()),
    )
    .expect("open repository");
    let guard = repo
        .lock_exclusive(std::time::Duration::ZERO)
        .expect("take exclusive lock");

    let out = t.cmd(&["backup", path_str(&src)]);
    assert_eq!(
        out.status.code(),
        Some(11),
        "backup under an exclusive lock: {}",
        stderr(&out)
    );
    assert!(
        stderr(&out).contains("lock"),
        "the message should mention the lock: {}",
        stderr(&out)
    );
    let out = t.cmd(&["unlock"]);
    assert_success(&out, &["unlock"]);
    let out = t.cmd(&["backup", path_str(&src)]);
    assert_eq!(
        out.status.code(),
        Some(11),
        "unlock must not remove a live lock: {}",
        stderr(&out)
    );
    assert!(
        t.snapshot_ids().is_empty(),
        "no snapshot may be written while locked"
    );

    drop(guard);
    let s = t.backup_json(&[&src]);
    assert_eq!(num(&s, "files_new"), 1);
    assert!(
        std::fs::read_dir(t.repo.join("locks"))
            .unwrap()
            .next()
            .is_none(),
        "locks left behind"
    );
}

#[test]
fn init_twice_fails() {
    let t = TestRepo::new();
    let config_before = std::fs::read(t.repo.join("config")).unwrap();
    let keys_before: Vec<_> = walk(&t.repo.join("keys")).into_keys().collect();

    let other = t.dir.path().join("other-password");
    std::fs::write(&other, "another password\n").unwrap();
    let out = t
        .command()
        .env("CAIRN_PASSWORD_FILE", &other)
        .args(["init"])
        .args(FAST_KDF)
        .run();
    assert!(
        !out.status.success(),
        "second init succeeded: {}",
        String::from_utf8_lossy(&out.stdout)
    );
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));

    assert_eq!(
        std::fs::read(t.repo.join("config")).unwrap(),
        config_before,
        "config was rewritten"
    );
    let keys_after: Vec<_> = walk(&t.repo.join("keys")).into_keys().collect();
    assert_eq!(keys_before, keys_after, "key files changed");
    t.ok(&["snapshots"]);
    let out = t
        .command()
        .env("CAIRN_PASSWORD_FILE", &other)
        .arg("snapshots")
        .run();
    assert_eq!(
        out.status.code(),
        Some(12),
        "the second init's password must not open the repository"
    );

    // A non-empty directory that is not a repository is not taken over.
    let t2 = TestRepo::uninitialised();
    std::fs::create_dir_all(&t2.repo).unwrap();
    std::fs::write(t2.repo.join("precious.txt"), b"do not touch").unwrap();
    let out = t2.cmd(&["init", FAST_KDF[0], FAST_KDF[1], FAST_KDF[2], FAST_KDF[3]]);
    assert!(
        !out.status.success(),
        "init into a non-empty directory succeeded"
    );
    assert_eq!(
        std::fs::read(t2.repo.join("precious.txt")).unwrap(),
        b"do not touch"
    );
}

#[test]
fn unreadable_file_exits_3_and_is_named() {
    let mut t = TestRepo::uninitialised();
    if is_root() {
        if !have_tool("setpriv") {
            note("root without setpriv: cannot run as an unprivileged user; test skipped");
            return;
        }
        t.switch_user(65534, 65534);
    }
    t.init(&FAST_KDF);
    let src = t.path("src");
    std::fs::write(src.join("readable.txt"), b"can read me\n").unwrap();
    std::fs::create_dir(src.join("sub")).unwrap();
    std::fs::write(src.join("sub/also-readable.txt"), sql_bytes(4, 100_000)).unwrap();
    let secret = src.join("sub/locked.txt");
    std::fs::write(&secret, b"cannot read me\n").unwrap();
    chmod(&secret, 0o000);
    if t.run_as.is_some() {
        run_tool("chown", &["-R", "65534:65534", path_str(&src)]);
    }
    if std::fs::File::open(&secret).is_ok() && !is_root() {
        note("a mode-000 file is readable here (capabilities?): test skipped");
        return;
    }

    let out = t.cmd(&["--json", "backup", path_str(&src)]);
    let err = stderr(&out);
    assert_eq!(
        out.status.code(),
        Some(3),
        "backup with an unreadable file: {err}"
    );
    assert!(
        err.contains(path_str(&secret)),
        "stderr must name {}: {err}",
        secret.display()
    );
    let summary = parse_summary(&String::from_utf8_lossy(&out.stdout));
    assert_eq!(num(&summary, "files_unreadable"), 1, "{summary}");

    let snaps = t.snapshots_json(&[]);
    assert_eq!(snaps.len(), 1, "the snapshot must have been written");
    let target = t.dir.path().join("restored");
    let selector = format!("latest:{}", path_str(&src));
    t.ok(&["restore", &selector, "--target", path_str(&target)]);
    assert_eq!(
        std::fs::read(target.join("readable.txt")).unwrap(),
        b"can read me\n"
    );
    assert_eq!(
        std::fs::read(target.join("sub/also-readable.txt")).unwrap(),
        sql_bytes(4, 100_000)
    );
    assert!(
        !target.join("sub/locked.txt").exists(),
        "the unreadable file must not be in the snapshot"
    );
}

/// Regression: repository files used to be read whole before their size was
/// checked, so a huge junk file in `snapshots/` would be allocated in full.
/// Now the size is checked first and the file is skipped as damaged.
#[test]
fn oversized_snapshot_file_is_skipped_unread() {
    let t = TestRepo::new();
    let src = t.path("src");
    std::fs::write(src.join("f"), b"kept").unwrap();
    t.backup_json(&[&src]);
    let junk = t.repo.join("snapshots").join("ab".repeat(32));
    std::fs::write(&junk, vec![0u8; 5 * 1024 * 1024]).unwrap();
    let out = t.cmd(&["snapshots", "--json"]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let listed: Vec<serde_json::Value> = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(listed.len(), 1, "the junk file was listed as a snapshot");
    let err = stderr(&out);
    assert!(
        err.contains("more than") && err.contains(&"ab".repeat(32)),
        "no warning naming the file: {err}"
    );
    let restored = t.restore("latest", "restored");
    let file = restored.join(src.strip_prefix("/").unwrap()).join("f");
    assert_eq!(std::fs::read(file).unwrap(), b"kept");
}

/// Several passwords open one repository: `key add` writes a second key
/// file; both passwords open it, a third does not.
#[test]
fn a_second_password_opens_the_repository() {
    let t = TestRepo::new();
    let src = t.path("src");
    std::fs::write(src.join("f"), b"x").unwrap();
    t.backup_json(&[&src]);
    let second = t.dir.path().join("second-password");
    std::fs::write(&second, "another secret\n").unwrap();
    t.ok(&["key", "add", "--new-password-file", path_str(&second)]);
    let keys: Vec<serde_json::Value> =
        serde_json::from_str(&t.ok(&["key", "list", "--json"])).unwrap();
    assert_eq!(keys.len(), 2);
    let out = t
        .command()
        .env("CAIRN_PASSWORD_FILE", &second)
        .args(["snapshots", "--json"])
        .run();
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert_eq!(t.snapshot_ids().len(), 1);
    let third = t.dir.path().join("third-password");
    std::fs::write(&third, "not a key\n").unwrap();
    let out = t
        .command()
        .env("CAIRN_PASSWORD_FILE", &third)
        .args(["snapshots"])
        .run();
    assert_eq!(out.status.code(), Some(12));
}

/// Regression: `cairn cat snapshot latest | head` ended with "internal
/// error … failed printing to stdout: Broken pipe". A reader that goes away
/// is not a bug: no message, and the status of a process killed by SIGPIPE.
#[test]
fn output_into_a_closed_pipe_is_not_an_internal_error() {
    let t = TestRepo::new();
    let src = t.path("src");
    for i in 0..2000 {
        std::fs::write(src.join(format!("file-{i:05}")), b"x").unwrap();
    }
    t.backup_json(&[&src]);
    for args in [&["ls", "latest"][..], &["cat", "snapshot", "latest"]] {
        let mut child = t
            .command()
            .args(args)
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        drop(child.stdout.take());
        let out = finish_with_timeout(child, "cairn into a closed pipe", 60);
        let err = stderr(&out);
        assert!(!err.contains("internal error"), "{args:?}: {err}");
        assert!(
            matches!(out.status.code(), Some(0) | Some(141)),
            "{args:?}: {} {err}",
            out.status
        );
    }
}

/// A repository on read-only media (an offsite copy mounted read-only):
/// reading commands work with `--no-lock`; writing commands refuse it.
#[test]
fn no_lock_reads_a_read_only_repository() {
    let mut t = TestRepo::new();
    let src = t.path("src");
    std::fs::write(src.join("f"), b"offsite\n").unwrap();
    t.backup_json(&[&src]);
    let ro = t.dir.path().join("ro");
    std::fs::create_dir(&ro).unwrap();
    let mounted = is_root()
        && std::process::Command::new("mount")
            .args(["--bind", "-o", "ro"])
            .arg(&t.repo)
            .arg(&ro)
            .status()
            .is_ok_and(|s| s.success());
    if !mounted {
        note("cannot bind-mount read-only (not root?): checking --no-lock refusals only");
    }
    let original = t.repo.clone();
    if mounted {
        t.repo = ro.clone();
    }
    let out = t.cmd(&[
        "--no-lock",
        "dump",
        "latest",
        &format!("{}/f", path_str(&src)),
    ]);
    assert_eq!(out.stdout, b"offsite\n", "{}", stderr(&out));
    let out = t.cmd(&["--no-lock", "check", "--read-data"]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    if mounted {
        let out = t.cmd(&["dump", "latest", &format!("{}/f", path_str(&src))]);
        assert_ne!(
            out.status.code(),
            Some(0),
            "a lock was written to read-only media"
        );
    }
    let out = t.cmd(&["--no-lock", "backup", path_str(&src)]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        stderr(&out).contains("--no-lock is only for"),
        "{}",
        stderr(&out)
    );
    if mounted {
        let _ = std::process::Command::new("umount").arg(&ro).status();
    }
    t.repo = original;
}
