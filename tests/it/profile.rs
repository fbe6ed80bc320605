//! `cairn.toml` profiles: sources, precedence (flag > environment >
//! profile), retention for `forget`, `run`, and the errors a bad file gives.

use crate::common::*;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

/// The test repository's command without the CAIRN_* settings, so that
/// only the profile provides them.
fn bare(t: &TestRepo) -> Command {
    let mut c = t.command();
    c.env_remove("CAIRN_REPOSITORY")
        .env_remove("CAIRN_PASSWORD_FILE")
        .env_remove("CAIRN_CACHE_DIR");
    c
}

fn run(mut c: Command, args: &[&str]) -> Output {
    c.args(args).run()
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// Writes `cairn.toml` with a profile `p` pointing at `t`'s repository,
/// followed by `rest` (more keys of `[profile.p]` and further tables).
fn config(t: &TestRepo, rest: &str) -> PathBuf {
    let path = t.dir.path().join("cairn.toml");
    std::fs::write(
        &path,
        format!(
            "[profile.p]\nrepository = {:?}\npassword-file = {:?}\ncache-dir = {:?}\n{rest}",
            path_str(&t.repo),
            path_str(&t.password_file),
            path_str(&t.cache),
        ),
    )
    .unwrap();
    path
}

fn tags_of(s: &serde_json::Value) -> Vec<String> {
    s["tags"]
        .as_array()
        .map(|a| a.iter().map(|t| t.as_str().unwrap().to_string()).collect())
        .unwrap_or_default()
}

#[test]
fn example_config_is_valid() {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("docs/cairn.example.toml");
    let file = cairn::ops::profile::load(Some(&path)).expect("docs/cairn.example.toml must parse");
    let nightly = file.profile("nightly").unwrap();
    assert_eq!(nightly.sources.len(), 3);
    assert!(nightly.retention.is_some());
    assert_eq!(nightly.run.len(), 3);
    // The example is meant to be copied and run as it is.
    assert!(nightly.exclude.is_empty());
    assert!(file.profile("weekly-check").is_ok());
    // And the binary accepts it (the repository does not exist here: 10).
    let t = TestRepo::uninitialised();
    let out = run(
        bare(&t),
        &[
            "--config",
            path_str(&path),
            "--profile",
            "nightly",
            "snapshots",
        ],
    );
    assert_eq!(out.status.code(), Some(10), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("/srv/backup/repo"),
        "{}",
        stderr(&out)
    );
}

#[test]
fn backup_runs_every_source_and_goes_on_after_a_failed_one() {
    let t = TestRepo::new();
    let src = t.path("src");
    std::fs::write(src.join("a.txt"), b"hello").unwrap();
    let cfg = config(
        &t,
        &format!(
            r#"host = "db1"
tags = ["nightly"]

[[profile.p.source]]
paths = [{src:?}]
tags = ["files"]

[[profile.p.source]]
command = ["false"]
filename = "bad.sql"

[[profile.p.source]]
command = ["sh", "-c", "printf dump"]
filename = "app.sql"
tags = ["postgres"]
"#,
            src = path_str(&src)
        ),
    );
    let out = run(
        bare(&t),
        &["--config", path_str(&cfg), "--profile", "p", "backup"],
    );
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    let err = stderr(&out);
    assert!(err.contains("source bad.sql"), "{err}");
    assert!(err.contains("1 of 3 source(s) failed"), "{err}");
    let snaps = t.snapshots_json(&[]);
    assert_eq!(snaps.len(), 2, "the sources after the failed one ran");
    assert!(snaps.iter().all(|s| s["hostname"] == "db1"));
    assert_eq!(tags_of(&snaps[0]), ["files", "nightly"]);
    assert_eq!(tags_of(&snaps[1]), ["nightly", "postgres"]);
    assert_eq!(
        t.ok_bytes(&["dump", "latest", "app.sql", "--tag", "postgres"]),
        b"dump"
    );

    // With paths on the command line, only those are backed up, with the
    // profile's tags and host.
    let out = run(
        bare(&t),
        &[
            "--config",
            path_str(&cfg),
            "--profile",
            "p",
            "backup",
            path_str(&src),
        ],
    );
    assert!(out.status.success(), "{}", stderr(&out));
    let snaps = t.snapshots_json(&[]);
    assert_eq!(snaps.len(), 3);
    assert_eq!(tags_of(&snaps[2]), ["nightly"]);
    assert_eq!(snaps[2]["hostname"], "db1");
}

#[test]
fn flags_beat_environment_beat_profile() {
    let t = TestRepo::new();
    let src = t.path("src");
    std::fs::write(src.join("a.txt"), b"x").unwrap();
    let wrong = t.dir.path().join("wrong-password");
    std::fs::write(&wrong, "not the password\n").unwrap();
    let nowhere = t.dir.path().join("nowhere");
    let cfg = t.dir.path().join("cairn.toml");
    std::fs::write(
        &cfg,
        format!(
            "[profile.p]\nrepository = {:?}\npassword-file = {:?}\ntags = [\"fromfile\"]\nhost = \"filehost\"\n",
            path_str(&nowhere),
            path_str(&wrong)
        ),
    )
    .unwrap();
    let args = |extra: &[&str]| {
        let mut a = vec!["--config", path_str(&cfg), "--profile", "p"];
        a.extend_from_slice(extra);
        a.into_iter().map(String::from).collect::<Vec<_>>()
    };
    // Profile alone: its (missing) repository.
    let out = bare(&t).args(args(&["snapshots"])).run();
    assert_eq!(out.status.code(), Some(10), "{}", stderr(&out));
    // Environment over profile: repository and password.
    let out = t.command().args(args(&["snapshots"])).run();
    assert!(out.status.success(), "{}", stderr(&out));
    // Flag over environment.
    let out = t
        .command()
        .env("CAIRN_REPOSITORY", &nowhere)
        .args(args(&["-r", path_str(&t.repo), "snapshots"]))
        .run();
    assert!(out.status.success(), "{}", stderr(&out));
    // The profile's wrong password file, when nothing else names one.
    let out = bare(&t)
        .args(args(&["-r", path_str(&t.repo), "snapshots"]))
        .run();
    assert_eq!(out.status.code(), Some(12), "{}", stderr(&out));
    // CAIRN_PASSWORD beats the profile's password file.
    let out = bare(&t)
        .env("CAIRN_PASSWORD", PASSWORD)
        .args(args(&["-r", path_str(&t.repo), "snapshots"]))
        .run();
    assert!(out.status.success(), "{}", stderr(&out));
    // --tag and --host replace the profile's.
    let out = t
        .command()
        .args(args(&[
            "backup",
            path_str(&src),
            "--tag",
            "flag",
            "--host",
            "flaghost",
        ]))
        .run();
    assert!(out.status.success(), "{}", stderr(&out));
    let out = t.command().args(args(&["backup", path_str(&src)])).run();
    assert!(out.status.success(), "{}", stderr(&out));
    let snaps = t.snapshots_json(&[]);
    assert_eq!(tags_of(&snaps[0]), ["flag"]);
    assert_eq!(snaps[0]["hostname"], "flaghost");
    assert_eq!(tags_of(&snaps[1]), ["fromfile"]);
    assert_eq!(snaps[1]["hostname"], "filehost");
}

#[test]
fn forget_uses_the_profile_policy_unless_a_keep_flag_is_given() {
    let t = TestRepo::new();
    let src = t.path("src");
    std::fs::write(src.join("a.txt"), b"x").unwrap();
    for day in 1..=4 {
        t.ok(&[
            "backup",
            path_str(&src),
            "--time",
            &format!("2025-01-0{day} 12:00:00"),
        ]);
    }
    let cfg = config(&t, "\n[profile.p.retention]\nkeep-last = 3\n");
    let out = run(
        bare(&t),
        &[
            "--config",
            path_str(&cfg),
            "--profile",
            "p",
            "forget",
            "--keep-last",
            "2",
            "--dry-run",
        ],
    );
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(String::from_utf8_lossy(&out.stdout).contains("keep 2 snapshots"));
    let out = run(
        bare(&t),
        &["--config", path_str(&cfg), "--profile", "p", "forget"],
    );
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(t.snapshot_ids().len(), 3);
    // Without a profile and without flags, forget still refuses.
    let out = t.cmd(&["forget"]);
    assert_eq!(out.status.code(), Some(1));
}

#[test]
fn run_runs_the_steps_and_stops_at_the_first_failure() {
    let t = TestRepo::new();
    let src = t.path("src");
    std::fs::write(src.join("a.txt"), b"x").unwrap();
    let body = format!(
        "run = [\"backup\", \"forget --prune\", \"check\"]\n\n[[profile.p.source]]\npaths = [{:?}]\n\n[profile.p.retention]\nkeep-last = 1\n",
        path_str(&src)
    );
    let cfg = config(&t, &body);
    for _ in 0..2 {
        let out = run(
            bare(&t),
            &["--config", path_str(&cfg), "--profile", "p", "run"],
        );
        assert!(out.status.success(), "{}", stderr(&out));
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert!(
            stdout.contains("== cairn check") && stdout.contains("no errors"),
            "{stdout}"
        );
    }
    assert_eq!(t.snapshot_ids().len(), 1, "forget ran after each backup");

    let body = "run = [\"backup\", \"check\"]\n\n[[profile.p.source]]\ncommand = [\"false\"]\nfilename = \"x\"\n";
    let cfg = config(&t, body);
    let out = run(
        bare(&t),
        &["--config", path_str(&cfg), "--profile", "p", "run"],
    );
    assert_eq!(out.status.code(), Some(1));
    assert!(!String::from_utf8_lossy(&out.stdout).contains("== cairn check"));
    assert!(
        stderr(&out).contains("later steps skipped"),
        "{}",
        stderr(&out)
    );

    // A step that is not a cairn command line is reported as such.
    let cfg = config(&t, "run = [\"backup --no-such-flag\"]\n");
    let out = run(
        bare(&t),
        &["--config", path_str(&cfg), "--profile", "p", "run"],
    );
    assert_eq!(out.status.code(), Some(1));
    assert!(stderr(&out).contains("--no-such-flag"), "{}", stderr(&out));
}

#[test]
fn bad_files_give_one_line_naming_file_and_key() {
    let t = TestRepo::new();
    let cfg = config(&t, "\n[profile.p.retention]\nkeep-dayly = 7\n");
    let out = run(
        bare(&t),
        &["--config", path_str(&cfg), "--profile", "p", "snapshots"],
    );
    assert_eq!(out.status.code(), Some(1));
    let err = stderr(&out);
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(
        err.contains(path_str(&cfg)) && err.contains("keep-dayly"),
        "{err}"
    );

    let cfg = config(&t, "");
    let out = run(
        bare(&t),
        &["--config", path_str(&cfg), "--profile", "nope", "snapshots"],
    );
    assert_eq!(out.status.code(), Some(1));
    assert!(
        stderr(&out).contains("no profile \"nope\" (profiles: p)"),
        "{}",
        stderr(&out)
    );

    // --profile without a file anywhere.
    let out = run(bare(&t), &["--profile", "p", "snapshots"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        stderr(&out).contains("no configuration file"),
        "{}",
        stderr(&out)
    );
}

#[test]
fn default_location_and_default_profile() {
    let t = TestRepo::new();
    let cfg = config(&t, "");
    let xdg = t.dir.path().join("xdg-config");
    std::fs::create_dir_all(xdg.join("cairn")).unwrap();
    std::fs::copy(&cfg, xdg.join("cairn/cairn.toml")).unwrap();
    let out = run(bare(&t), &["--profile", "p", "snapshots"]);
    assert!(out.status.success(), "{}", stderr(&out));
    // --config alone: the profile named "default".
    let text = std::fs::read_to_string(&cfg)
        .unwrap()
        .replace("[profile.p]", "[profile.default]");
    std::fs::write(&cfg, text).unwrap();
    let out = run(bare(&t), &["--config", path_str(&cfg), "snapshots"]);
    assert!(out.status.success(), "{}", stderr(&out));
}

#[test]
fn profile_exclude_patterns_apply_to_its_sources() {
    let t = TestRepo::new();
    let src = t.path("src");
    std::fs::write(src.join("a.tmp"), b"x").unwrap();
    std::fs::write(src.join("keep.txt"), b"y").unwrap();
    std::fs::write(src.join("b.log"), b"z").unwrap();
    let cfg = config(
        &t,
        &format!(
            "exclude = [\"*.tmp\"]\n\n[[profile.p.source]]\npaths = [{:?}]\nexclude = [\"*.log\"]\n",
            path_str(&src)
        ),
    );
    let out = run(
        bare(&t),
        &["--config", path_str(&cfg), "--profile", "p", "backup"],
    );
    assert!(out.status.success(), "{}", stderr(&out));
    let listing = t.ok(&["ls", "latest"]);
    assert!(listing.contains("keep.txt"), "{listing}");
    assert!(
        !listing.contains("a.tmp") && !listing.contains("b.log"),
        "{listing}"
    );
}
