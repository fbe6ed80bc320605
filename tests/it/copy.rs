//! `cairn copy` between local repositories, and `init --copy-chunker-params`.

use crate::common::*;
use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};

/// A source repository with two snapshots of `data` (hosts a and b, the
/// first tagged `nightly`), and the data directory.
fn source() -> (TestRepo, PathBuf) {
    let src = TestRepo::new();
    let data = src.path("data");
    std::fs::create_dir_all(data.join("sub/deeper")).unwrap();
    std::fs::write(data.join("noise.bin"), random_bytes(11, 2_500_000)).unwrap();
    std::fs::write(data.join("sub/dump.sql"), sql_bytes(12, 1_200_000)).unwrap();
    std::fs::write(data.join("sub/deeper/small.txt"), b"small\n").unwrap();
    std::fs::write(data.join("empty"), b"").unwrap();
    std::os::unix::fs::symlink("sub/dump.sql", data.join("link")).unwrap();
    src.backup_json(&[
        data.as_os_str(),
        "--host".as_ref(),
        "a".as_ref(),
        "--tag".as_ref(),
        "nightly".as_ref(),
    ]);
    std::fs::write(data.join("sub/deeper/small.txt"), b"changed\n").unwrap();
    std::fs::write(data.join("more.bin"), random_bytes(13, 400_000)).unwrap();
    src.backup_json(&[data.as_os_str(), "--host".as_ref(), "b".as_ref()]);
    (src, data)
}

/// `cairn --json copy --from-repo SRC ARGS…` into `dst`: the summary.
fn copy_json(dst: &TestRepo, src: &TestRepo, args: &[&str]) -> serde_json::Value {
    let mut all = vec![
        "--json",
        "copy",
        "--from-repo",
        path_str(&src.repo),
        "--from-password-file",
        path_str(&src.password_file),
    ];
    all.extend_from_slice(args);
    let out = dst.ok(&all);
    serde_json::from_str(out.trim()).unwrap_or_else(|e| panic!("copy --json: {e}: {out}"))
}

fn pack_names(repo: &Path) -> Vec<String> {
    let mut names: Vec<String> = walk_files(&repo.join("packs"))
        .into_iter()
        .map(|(rel, _)| String::from_utf8(rel).unwrap())
        .collect();
    names.sort();
    names
}

fn assert_check_clean(t: &TestRepo) {
    let out = t.ok(&["check", "--read-data"]);
    assert!(out.contains("no errors were found"), "{out}");
}

#[test]
fn copy_of_all_snapshots_restores_byte_exact_and_a_second_copy_adds_nothing() {
    let (src, data) = source();
    let dst = TestRepo::new();
    let summary = copy_json(&dst, &src, &[]);
    assert_eq!(summary["snapshots_copied"], 2, "{summary}");
    assert_eq!(summary["rehashed"], true, "independent keys: {summary}");

    let from = src.snapshots_json(&[]);
    let to = dst.snapshots_json(&[]);
    assert_eq!(to.len(), 2);
    for (s, d) in from.iter().zip(&to) {
        for field in ["time", "hostname", "paths", "tags", "username", "summary"] {
            assert_eq!(s[field], d[field], "{field} differs: {s} {d}");
        }
        assert_eq!(d["original"], s["id"], "the copy names its source");
        assert!(d.get("parent").is_none(), "a copy has no parent: {d}");
        let a = src.restore(
            &format!("{}:{}", s["id"].as_str().unwrap(), path_str(&data)),
            "a",
        );
        let b = dst.restore(
            &format!("{}:{}", d["id"].as_str().unwrap(), path_str(&data)),
            "b",
        );
        assert_trees_equal(&a, &b);
        std::fs::remove_dir_all(&a).unwrap();
        std::fs::remove_dir_all(&b).unwrap();
    }
    assert_check_clean(&dst);

    // Again: every snapshot is found, nothing is written.
    let packs = pack_names(&dst.repo);
    let again = copy_json(&dst, &src, &[]);
    assert_eq!(again["snapshots_copied"], 0, "{again}");
    assert_eq!(again["snapshots_skipped"], 2, "{again}");
    assert_eq!(again["data_added"], 0, "{again}");
    assert_eq!(pack_names(&dst.repo), packs, "a second copy wrote packs");
    assert_eq!(dst.snapshot_ids().len(), 2);

    // Copied back into the source, they are recognised as its own.
    let back = copy_json(&src, &dst, &[]);
    assert_eq!(back["snapshots_copied"], 0, "{back}");
}

#[test]
fn copy_takes_filters_and_snapshot_ids() {
    let (src, _) = source();
    let ids: Vec<String> = src.snapshot_ids();
    let dst = TestRepo::new();
    let by_host = copy_json(&dst, &src, &["--host", "b"]);
    assert_eq!(by_host["snapshots_copied"], 1, "{by_host}");
    assert_eq!(by_host["snapshots"][0]["source"], ids[1].as_str());
    let by_tag = copy_json(&dst, &src, &["--tag", "nightly"]);
    assert_eq!(by_tag["snapshots_copied"], 1, "{by_tag}");
    assert_eq!(by_tag["snapshots"][0]["source"], ids[0].as_str());
    assert_eq!(dst.snapshots_json(&["--tag", "nightly"]).len(), 1);

    let other = TestRepo::new();
    let by_id = copy_json(&other, &src, &[&ids[0][..8], "latest"]);
    assert_eq!(by_id["snapshots_copied"], 2, "{by_id}");
    let none = copy_json(&other, &src, &["--path", "/nowhere"]);
    assert_eq!(none["snapshots"].as_array().unwrap().len(), 0, "{none}");
    let out = other.cmd(&[
        "copy",
        "--from-repo",
        path_str(&src.repo),
        "--from-password-file",
        path_str(&src.password_file),
        "ffffffff",
    ]);
    assert_eq!(out.status.code(), Some(1), "an unknown id is an error");
}

#[test]
fn init_copy_chunker_params_makes_copies_deduplicate_with_backups() {
    let (src, data) = source();
    let shared = TestRepo::uninitialised();
    let mut args = vec![
        "init",
        "--copy-chunker-params",
        "--from-repo",
        path_str(&src.repo),
        "--from-password-file",
        path_str(&src.password_file),
    ];
    args.extend_from_slice(&FAST_KDF);
    shared.ok(&args);
    let summary = copy_json(&shared, &src, &[]);
    assert_eq!(summary["rehashed"], false, "shared ids: {summary}");
    assert_eq!(summary["snapshots_copied"], 2);
    // Same ids: the copy holds exactly the source's blobs, no more.
    let src_blobs = src.ok(&["--json", "stats", "--mode", "raw-data"]);
    let dst_blobs = shared.ok(&["--json", "stats", "--mode", "raw-data"]);
    let repository = |s: &str| {
        serde_json::from_str::<serde_json::Value>(s.trim()).unwrap()["repository"].clone()
    };
    for field in ["blobs", "blob_bytes"] {
        assert_eq!(
            repository(&src_blobs)[field],
            repository(&dst_blobs)[field],
            "{field}"
        );
    }
    assert_check_clean(&shared);

    // A backup into it, every file read again, finds every chunk there.
    let forced = shared.backup_json(&[data.as_os_str(), "--force".as_ref()]);
    assert_eq!(num(&forced, "data_blobs"), 0, "{forced}");

    // Into a repository with keys of its own, the same backup stores it all.
    let independent = TestRepo::new();
    copy_json(&independent, &src, &[]);
    let forced = independent.backup_json(&[data.as_os_str(), "--force".as_ref()]);
    assert!(num(&forced, "data_added") > 3_000_000, "{forced}");

    // The shared repository's config says what it is.
    let config = shared.ok(&["cat", "config"]);
    assert!(
        config.contains("\"version\": 2") && config.contains("id_keys"),
        "{config}"
    );
}

#[test]
fn copy_with_a_wrong_source_password_exits_12_with_one_line() {
    let (src, _) = source();
    let dst = TestRepo::new();
    let wrong = dst.dir.path().join("wrong");
    std::fs::write(&wrong, "not it\n").unwrap();
    let out = dst.cmd(&[
        "copy",
        "--from-repo",
        path_str(&src.repo),
        "--from-password-file",
        path_str(&wrong),
    ]);
    assert_eq!(out.status.code(), Some(12));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(stderr.lines().count(), 1, "{stderr}");
    assert!(stderr.contains("source repository"), "{stderr}");
    assert!(dst.snapshot_ids().is_empty());

    let out = dst.cmd(&[
        "copy",
        "--from-repo",
        path_str(&dst.dir.path().join("nothing")),
    ]);
    assert_eq!(out.status.code(), Some(10));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("source repository") && !stderr.contains("cairn init"),
        "{stderr}"
    );

    let out = dst.cmd(&[
        "copy",
        "--from-repo",
        path_str(&dst.repo),
        "--from-password-file",
        path_str(&dst.password_file),
    ]);
    assert_eq!(out.status.code(), Some(1), "copy into itself");
    assert!(String::from_utf8_lossy(&out.stderr).contains("same repository"));
}

#[test]
fn the_source_password_command_sees_no_password_variables() {
    let (src, _) = source();
    let dst = TestRepo::new();
    // The file variable would work, but the command wins, and it fails if
    // any password variable reached it.
    let command = format!(
        "env | grep -q '^CAIRN_.*PASSWORD' && exit 9; cat {}",
        path_str(&src.password_file)
    );
    let out = dst
        .command()
        .env("CAIRN_FROM_REPOSITORY", &src.repo)
        .env("CAIRN_FROM_PASSWORD_FILE", &src.password_file)
        .env("CAIRN_FROM_PASSWORD", "also not for the command")
        .env("CAIRN_FROM_PASSWORD_COMMAND", &command)
        .args(["--json", "copy"])
        .run();
    assert_success(&out, &["copy with CAIRN_FROM_PASSWORD_COMMAND"]);
    assert_eq!(dst.snapshot_ids().len(), 2);
}

#[test]
fn a_killed_copy_leaves_no_snapshot_and_a_clean_repository() {
    let (src, data) = source();
    let dst = TestRepo::uninitialised();
    let mut init = vec!["--pack-size", "1"];
    init.extend_from_slice(&FAST_KDF);
    dst.init(&init);
    for failpoint in ["after-pack", "copy-before-snapshot"] {
        let out = dst
            .command()
            .env("CAIRN_FAILPOINT", failpoint)
            .args([
                "copy",
                "--from-repo",
                path_str(&src.repo),
                "--from-password-file",
                path_str(&src.password_file),
            ])
            .run();
        assert_eq!(
            out.status.signal(),
            Some(libc::SIGABRT),
            "{failpoint}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(dst.snapshot_ids().is_empty(), "{failpoint} left a snapshot");
        assert_check_clean(&dst);
    }
    // The next copy finishes the job.
    let summary = copy_json(&dst, &src, &[]);
    assert_eq!(summary["snapshots_copied"], 2);
    assert_check_clean(&dst);
    let b = dst.restore(&format!("latest:{}", path_str(&data)), "b");
    assert_trees_equal(&data, &b);
}

#[test]
fn a_profile_runs_the_offsite_copy_as_a_step() {
    let (src, _) = source();
    let dst = TestRepo::new();
    let cfg = dst.dir.path().join("cairn.toml");
    std::fs::write(
        &cfg,
        format!(
            "[profile.offsite]\nrepository = {:?}\npassword-file = {:?}\ncache-dir = {:?}\nrun = [\"copy --from-repo {} --from-password-file {}\", \"check\"]\n",
            path_str(&dst.repo),
            path_str(&dst.password_file),
            path_str(&dst.cache),
            path_str(&src.repo),
            path_str(&src.password_file),
        ),
    )
    .unwrap();
    let out = dst
        .command()
        .env_remove("CAIRN_REPOSITORY")
        .env_remove("CAIRN_PASSWORD_FILE")
        .args(["--config", path_str(&cfg), "--profile", "offsite", "run"])
        .run();
    assert_success(&out, &["--profile offsite run"]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        stdout.contains("2 snapshots copied") && stdout.contains("no errors"),
        "{stdout}"
    );
    assert_eq!(dst.snapshot_ids().len(), 2);
}

#[test]
fn an_interrupted_copy_exits_130_and_writes_no_snapshot() {
    const PAUSE: &str = "before-index";
    let (src, _) = source();
    let dst = TestRepo::new();
    let dir = dst.path("failpoint");
    let child = spawn_paused(
        dst.command()
            .args([
                "copy",
                "--from-repo",
                path_str(&src.repo),
                "--from-password-file",
                path_str(&src.password_file),
            ])
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped()),
        &dir,
        PAUSE,
    );
    // SAFETY: a plain kill(2) of the child this test started.
    let sent = unsafe { libc::kill(child.id() as libc::pid_t, libc::SIGINT) };
    assert_eq!(sent, 0);
    std::fs::write(dir.join(format!("{PAUSE}.go")), b"").unwrap();
    let out = finish_with_timeout(child, "the interrupted copy", 60);
    assert_eq!(
        out.status.code(),
        Some(130),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        dst.snapshot_ids().is_empty(),
        "an interrupted copy wrote a snapshot"
    );
    assert_check_clean(&dst);
}
