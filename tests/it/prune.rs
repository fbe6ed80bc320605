//! `prune` on real repositories: space is reclaimed, nothing a kept
//! snapshot needs is lost — after random operation sequences, with backups
//! running in parallel, and with prune killed at random moments.

use crate::common::*;
use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::{Arc, Mutex};

type Content = BTreeMap<String, blake3::Hash>;

fn slow() -> bool {
    std::env::var_os("CAIRN_SLOW_TESTS").is_some()
}

fn small_packs() -> TestRepo {
    let t = TestRepo::uninitialised();
    t.init(&[&FAST_KDF[..], &["--pack-size", "1"]].concat());
    t
}

fn backup_id(t: &TestRepo, src: &Path, extra: &[&str]) -> String {
    let mut args: Vec<&str> = vec![path_str(src)];
    args.extend_from_slice(extra);
    t.backup_json(&args)["snapshot_id"]
        .as_str()
        .unwrap()
        .to_string()
}

fn assert_check_clean(t: &TestRepo, ctx: &str, read_data: bool) {
    let mut args = vec!["check"];
    if read_data {
        args.push("--read-data");
    }
    let out = t.command().args(&args).run();
    assert_eq!(
        out.status.code(),
        Some(0),
        "{ctx} check failed:\n{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Every snapshot in `expected` still exists and restores to its content.
fn assert_restorable(t: &TestRepo, src: &Path, expected: &HashMap<String, Content>, ctx: &str) {
    let ids = t.snapshot_ids();
    for (id, content) in expected {
        assert!(ids.contains(id), "{ctx} kept snapshot {id} is gone");
        let target = t.dir.path().join(format!("verify-{}", &id[..12]));
        let _ = std::fs::remove_dir_all(&target);
        t.ok(&[
            "restore",
            &format!("{id}:{}", path_str(src)),
            "--target",
            path_str(&target),
        ]);
        assert_eq!(
            &content_map(&target),
            content,
            "{ctx} snapshot {id} differs"
        );
        std::fs::remove_dir_all(&target).unwrap();
    }
}

fn prune_json(t: &TestRepo, args: &[&str]) -> serde_json::Value {
    let mut all = vec!["--json", "prune"];
    all.extend_from_slice(args);
    let out = t.ok(&all);
    serde_json::from_str(out.trim()).unwrap_or_else(|e| panic!("prune --json: {e}: {out}"))
}

#[test]
fn prune_frees_the_space_of_forgotten_snapshots_and_keeps_the_rest() {
    let t = small_packs();
    let src = t.path("src");
    let mut kept = HashMap::new();
    let mut ids = Vec::new();
    for night in 0..5u64 {
        for e in std::fs::read_dir(&src).unwrap() {
            std::fs::remove_file(e.unwrap().path()).unwrap();
        }
        std::fs::write(src.join("shared.sql"), sql_bytes(1, 400_000)).unwrap();
        std::fs::write(
            src.join(format!("n{night}.bin")),
            random_bytes(night, 1_500_000),
        )
        .unwrap();
        ids.push(backup_id(&t, &src, &[]));
        kept.insert(ids.last().unwrap().clone(), content_map(&src));
    }
    let before = t.pack_bytes();
    for id in &ids[..3] {
        kept.remove(id);
    }
    t.ok(&["forget", &ids[0], &ids[1], &ids[2]]);

    // A dry run changes nothing but predicts what the real run does.
    let repo_before = repo_content_map(&t.repo);
    let dry = prune_json(&t, &["--dry-run", "--max-unused", "0"]);
    assert_eq!(dry["dry_run"], true);
    assert_eq!(
        repo_before,
        repo_content_map(&t.repo),
        "dry run changed the repository"
    );
    let real = prune_json(&t, &["--max-unused", "0"]);
    for field in [
        "packs_deleted",
        "packs_repacked",
        "blobs_used",
        "blobs_unused",
    ] {
        assert_eq!(dry[field], real[field], "{field}: dry {dry} real {real}");
    }
    assert!(
        num(&real, "packs_deleted") + num(&real, "packs_repacked") > 0,
        "{real}"
    );
    let after = t.pack_bytes();
    // Three of five nightly 1.5 MB random files are gone.
    assert!(
        after < before - 4_000_000,
        "prune freed too little: {before} -> {after}"
    );
    assert!(after > 3_000_000, "prune freed too much: {after}");
    assert_check_clean(&t, "[after prune]", true);
    assert_restorable(&t, &src, &kept, "[after prune]");
    // Nothing left to do: a second prune deletes nothing.
    let again = prune_json(&t, &["--max-unused", "0"]);
    assert_eq!(num(&again, "packs_deleted"), 0, "{again}");
    assert_eq!(num(&again, "packs_repacked"), 0, "{again}");
    assert_eq!(num(&again, "blobs_unused"), 0, "{again}");
}

#[test]
fn prune_refuses_a_damaged_repository() {
    let t = small_packs();
    let src = t.path("src");
    std::fs::write(src.join("a"), random_bytes(1, 3_000_000)).unwrap();
    backup_id(&t, &src, &[]);
    let (_, pack) = walk_files(&t.repo.join("packs"))
        .into_iter()
        .max_by_key(|(_, p)| std::fs::metadata(p).unwrap().len())
        .unwrap();
    std::fs::remove_file(&pack).unwrap();
    let before = repo_content_map(&t.repo);
    let out = t.command().args(["prune"]).run();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(err.contains("damaged repository"), "{err}");
    assert_eq!(
        before,
        repo_content_map(&t.repo),
        "prune changed a damaged repository"
    );
}

/// Random sequences of backup / forget / prune / check against a model of
/// what must stay restorable.
#[test]
fn random_operation_sequences_keep_every_kept_snapshot_restorable() {
    let seeds: &[u64] = if slow() { &[1, 2, 3] } else { &[1] };
    for &seed in seeds {
        let steps = if slow() { 40 } else { 25 };
        let t = small_packs();
        let src = t.path("src");
        let mut rng = Rng::new(seed);
        let mut model: HashMap<String, Content> = HashMap::new();
        let mut file_seed = seed * 1000;
        for step in 0..steps {
            let ctx = format!("[seed {seed} step {step}]");
            match rng.below(10) {
                0..=4 => {
                    // Change the source a little, then back it up.
                    for _ in 0..=rng.below(3) {
                        file_seed += 1;
                        let name = format!("f{}", rng.below(8));
                        match rng.below(4) {
                            0 => {
                                let _ = std::fs::remove_file(src.join(&name));
                            }
                            1 => std::fs::write(
                                src.join(&name),
                                sql_bytes(file_seed, rng.below(600_000) as usize),
                            )
                            .unwrap(),
                            _ => std::fs::write(
                                src.join(&name),
                                random_bytes(file_seed, rng.below(500_000) as usize),
                            )
                            .unwrap(),
                        }
                    }
                    let id = backup_id(&t, &src, &[]);
                    model.insert(id, content_map(&src));
                }
                5 | 6 => {
                    if model.is_empty() {
                        continue;
                    }
                    let mut ids: Vec<&String> = model.keys().collect();
                    ids.sort();
                    let victim = ids[rng.below(ids.len() as u64) as usize].clone();
                    t.ok(&["forget", &victim]);
                    model.remove(&victim);
                }
                7 => {
                    let keep = 1 + rng.below(3);
                    let out = t.ok(&["--json", "forget", "--keep-last", &keep.to_string()]);
                    let v: serde_json::Value = serde_json::from_str(out.trim()).unwrap();
                    for group in v.as_array().unwrap() {
                        for removed in group["remove"].as_array().unwrap() {
                            model.remove(removed["id"].as_str().unwrap());
                        }
                    }
                    assert!(model.len() as u64 <= keep, "{ctx} {out}");
                }
                _ => {
                    let limit = ["0", "5%", "unlimited", "30%"][rng.below(4) as usize];
                    prune_json(&t, &["--max-unused", limit]);
                    assert_restorable(&t, &src, &model, &ctx);
                }
            }
            assert_eq!(t.snapshot_ids().len(), model.len(), "{ctx}");
            assert_check_clean(&t, &ctx, false);
        }
        prune_json(&t, &["--max-unused", "0"]);
        assert_check_clean(&t, "[end]", true);
        assert_restorable(&t, &src, &model, "[end]");
    }
}

/// Four backup processes and prunes at the same time on one repository.
/// Prune runs beside the backups (two-phase delete); afterwards the
/// repository checks clean and every kept snapshot restores.
#[test]
fn four_backups_and_prune_in_parallel() {
    let t = Arc::new(small_packs());
    // Garbage for the prunes to remove.
    let junk = t.path("junk");
    std::fs::write(junk.join("j"), random_bytes(9, 2_000_000)).unwrap();
    let junk_id = backup_id(&t, &junk, &[]);
    t.ok(&["forget", &junk_id]);

    let expected: Arc<Mutex<HashMap<String, (PathBuf, Content)>>> = Arc::default();
    let mut workers = Vec::new();
    for w in 0..4u64 {
        let (t, expected) = (t.clone(), expected.clone());
        workers.push(std::thread::spawn(move || {
            let src = t.path(&format!("w{w}"));
            for round in 0..3u64 {
                std::fs::write(src.join("shared.sql"), sql_bytes(77, 500_000)).unwrap();
                std::fs::write(
                    src.join(format!("r{round}.bin")),
                    random_bytes(w * 100 + round, 700_000),
                )
                .unwrap();
                let out = t
                    .command()
                    .args(["--retry-lock", "3m", "--json", "backup", path_str(&src)])
                    .run();
                assert_success(&out, &["backup", &format!("worker {w} round {round}")]);
                let v = parse_summary(&String::from_utf8_lossy(&out.stdout));
                let id = v["snapshot_id"].as_str().unwrap().to_string();
                expected
                    .lock()
                    .unwrap()
                    .insert(id, (src.clone(), content_map(&src)));
            }
        }));
    }
    let pruner = {
        let t = t.clone();
        std::thread::spawn(move || {
            for _ in 0..3 {
                let out = t
                    .command()
                    .args(["--retry-lock", "3m", "prune", "--max-unused", "0"])
                    .run();
                assert_success(&out, &["prune"]);
                std::thread::sleep(std::time::Duration::from_millis(150));
            }
        })
    };
    for w in workers {
        w.join().unwrap();
    }
    pruner.join().unwrap();
    t.ok(&["prune", "--max-unused", "0"]);
    assert_check_clean(&t, "[parallel]", true);
    let expected = expected.lock().unwrap();
    assert_eq!(t.snapshot_ids().len(), 12);
    for (id, (src, content)) in expected.iter() {
        let mut one = HashMap::new();
        one.insert(id.clone(), content.clone());
        assert_restorable(&t, src, &one, "[parallel]");
    }
}

/// A prune stopped dead at each step, and at random moments: afterwards
/// check passes, nothing kept is lost, and the next prune finishes the job.
#[test]
fn prune_killed_at_any_moment_loses_nothing() {
    let t = small_packs();
    let src = t.path("src");
    let mut model: HashMap<String, Content> = HashMap::new();
    let mut file_seed = 0;
    let mut make_garbage = |t: &TestRepo, model: &mut HashMap<String, Content>| {
        // Two backups; all but the newest are forgotten, leaving unused
        // data in packs that also hold used data (so prune repacks).
        for _ in 0..2 {
            file_seed += 1;
            std::fs::write(src.join("keep.sql"), sql_bytes(file_seed, 300_000)).unwrap();
            std::fs::write(src.join("churn.bin"), random_bytes(file_seed, 900_000)).unwrap();
            let id = backup_id(t, &src, &[]);
            model.insert(id, content_map(&src));
        }
        let out = t.ok(&["--json", "forget", "--keep-last", "1"]);
        let v: serde_json::Value = serde_json::from_str(out.trim()).unwrap();
        for group in v.as_array().unwrap() {
            for removed in group["remove"].as_array().unwrap() {
                model.remove(removed["id"].as_str().unwrap());
            }
        }
    };
    for failpoint in [
        "prune-after-packs",
        "prune-after-mark",
        "prune-after-index",
        "prune-after-index-delete",
    ] {
        make_garbage(&t, &mut model);
        let out = t
            .command()
            .env("CAIRN_FAILPOINT", failpoint)
            .args(["prune", "--max-unused", "0"])
            .run();
        assert!(!out.status.success(), "[{failpoint}] prune did not stop");
        assert_check_clean(&t, &format!("[{failpoint}]"), false);
        assert_restorable(&t, &src, &model, &format!("[{failpoint}]"));
    }
    let trials = if slow() { 20 } else { 10 };
    let mut rng = Rng::new(0x9e3779b9);
    for trial in 0..trials {
        let ctx = format!("[kill trial {trial}]");
        make_garbage(&t, &mut model);
        let started = std::time::Instant::now();
        let mut child = t
            .command()
            .args(["prune", "--max-unused", "0"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        std::thread::sleep(std::time::Duration::from_millis(rng.below(250)));
        let _ = child.kill();
        wait_timeout(&mut child, 60);
        let _ = started;
        assert_check_clean(&t, &ctx, false);
        assert_restorable(&t, &src, &model, &ctx);
    }
    t.ok(&["prune", "--max-unused", "0"]);
    assert_check_clean(&t, "[end]", true);
    assert_restorable(&t, &src, &model, "[end]");
    let last = prune_json(&t, &["--max-unused", "0"]);
    assert_eq!(num(&last, "blobs_unused"), 0, "{last}");
}

/// Nightly backups under the runbook policy: after `forget --prune` the
/// repository holds what the kept snapshots need, and little more.
#[test]
fn a_year_of_nightly_backups_under_the_runbook_policy() {
    let nights: i64 = if slow() { 365 } else { 100 };
    let t = TestRepo::uninitialised();
    t.init(&[&FAST_KDF[..], &["--pack-size", "1"]].concat());
    let src = t.path("src");
    std::fs::write(src.join("base.sql"), sql_bytes(1, 300_000)).unwrap();
    let start = chrono::NaiveDate::from_ymd_opt(2025, 1, 1).unwrap();
    let nightly_len = 40_000usize;
    for night in 0..nights {
        let day = start + chrono::Duration::days(night);
        std::fs::write(
            src.join("nightly.bin"),
            random_bytes(1000 + night as u64, nightly_len),
        )
        .unwrap();
        backup_id(
            &t,
            &src,
            &["--time", &format!("{day} 01:30:00"), "--host", "db1"],
        );
    }
    // Each night left a small data pack and a small tree pack.
    let small = |t: &TestRepo| small_packs_of(t, 512 * 1024);
    assert!(small(&t) >= nights as usize, "{} small packs", small(&t));
    let out = t.ok(&[
        "--json",
        "forget",
        "--keep-daily",
        "30",
        "--keep-weekly",
        "12",
        "--keep-monthly",
        "12",
        "--keep-yearly",
        "7",
        "--prune",
    ]);
    let kept = t.snapshot_ids().len() as u64;
    assert!(out.contains("bytes_freed"), "no prune output: {out}");
    // 30 daily + the weekly, monthly and yearly ones beyond them.
    assert!((30..=30 + 12 + 12 + 7).contains(&kept), "{kept} kept");
    // Small packs were rewritten together: at most the last data and the
    // last tree pack are under half the target size.
    assert!(small(&t) <= 2, "{} small packs left", small(&t));
    prune_json(&t, &["--max-unused", "0"]);
    assert!(small(&t) <= 2, "{} small packs left", small(&t));
    assert_check_clean(&t, "[year]", true);
    // The repository is the base file plus one nightly file per kept
    // snapshot (both incompressible or nearly), plus trees and headers.
    let bytes = t.pack_bytes();
    let data = kept * nightly_len as u64;
    assert!(
        bytes >= data && bytes < data + 300_000 + kept * 3_000,
        "repository {bytes} bytes for {kept} kept snapshots ({data} bytes of nightly data)"
    );
    // The newest snapshot restores byte-exact, and the oldest kept one
    // holds its night's file.
    let target = t.restore(&format!("latest:{}", path_str(&src)), "latest");
    assert_trees_equal(&src, &target);
    let oldest = t.snapshots_json(&[])[0].clone();
    let night = (chrono::DateTime::parse_from_rfc3339(oldest["time"].as_str().unwrap())
        .unwrap()
        .date_naive()
        - start)
        .num_days();
    let id = oldest["id"].as_str().unwrap();
    let target = t.restore(&format!("{id}:{}", path_str(&src)), "oldest");
    assert_eq!(
        std::fs::read(target.join("nightly.bin")).unwrap(),
        random_bytes(1000 + night as u64, nightly_len)
    );
}

/// Pack files under `below` bytes.
fn small_packs_of(t: &TestRepo, below: u64) -> usize {
    files_named(&t.repo.join("packs"), "")
        .iter()
        .filter(|p| p.is_file() && std::fs::metadata(p).unwrap().len() < below)
        .count()
}

/// A repository's files, recursively, whose names start with `prefix`.
fn files_named(root: &Path, prefix: &str) -> Vec<PathBuf> {
    let mut found = Vec::new();
    let mut dirs = vec![root.to_path_buf()];
    while let Some(dir) = dirs.pop() {
        for e in std::fs::read_dir(&dir).into_iter().flatten().flatten() {
            if e.file_name().to_string_lossy().starts_with(prefix) {
                found.push(e.path());
            }
            if e.file_type().is_ok_and(|t| t.is_dir()) {
                dirs.push(e.path());
            }
        }
    }
    found
}

/// With `--memory` far below the size of the blob table, check and prune
/// sort it on disk in the cache directory (runs of 1,024 rows here): the
/// same report, the same prune, the same damage found, nothing kept lost,
/// and nothing left behind in the cache.
#[test]
fn a_blob_table_over_its_memory_budget_checks_and_prunes_the_same() {
    let t = TestRepo::uninitialised();
    t.init(
        &[
            &FAST_KDF[..],
            &["--pack-size", "1", "--chunk-sizes", "1,2,4"],
        ]
        .concat(),
    );
    let src = t.path("src");
    let mut ids = Vec::new();
    let mut kept = HashMap::new();
    for n in 0..3u64 {
        for e in std::fs::read_dir(&src).unwrap() {
            std::fs::remove_file(e.unwrap().path()).unwrap();
        }
        std::fs::write(src.join("shared.sql"), sql_bytes(7, 300_000)).unwrap();
        std::fs::write(
            src.join(format!("n{n}.bin")),
            random_bytes(50 + n, 2_000_000),
        )
        .unwrap();
        ids.push(backup_id(&t, &src, &[]));
        kept.insert(ids.last().unwrap().clone(), content_map(&src));
    }
    let check = |extra: &[&str]| -> serde_json::Value {
        let mut args = vec!["--json", "check"];
        args.extend_from_slice(extra);
        let out = t.cmd(&args);
        serde_json::from_slice(&out.stdout).unwrap_or_else(|e| panic!("check --json: {e}"))
    };
    let (small, big) = (check(&["--memory", "1"]), check(&[]));
    assert!(num(&big, "blobs_indexed") > 2_000, "{big}");
    for field in ["blobs_indexed", "unused_blobs", "trees", "packs", "clean"] {
        assert_eq!(small[field], big[field], "{field}");
    }

    t.ok(&["forget", &ids[0]]);
    kept.remove(&ids[0]);
    let dry = prune_json(&t, &["--dry-run", "--max-unused", "0"]);
    let real = prune_json(&t, &["--max-unused", "0", "--memory", "1"]);
    for field in [
        "packs_deleted",
        "packs_repacked",
        "blobs_used",
        "blobs_unused",
    ] {
        assert_eq!(dry[field], real[field], "{field}: dry {dry} real {real}");
    }
    assert!(num(&real, "packs_repacked") > 0, "{real}");
    assert_check_clean(&t, "[spilled prune]", true);
    assert_restorable(&t, &src, &kept, "[spilled prune]");
    let after = check(&["--memory", "1"]);
    assert_eq!(num(&after, "unused_blobs"), 0, "{after}");

    // Damage is found alike: a pack gone.
    let pack = files_named(&t.repo.join("packs"), "")
        .into_iter()
        .find(|p| p.is_file())
        .unwrap();
    std::fs::remove_file(pack).unwrap();
    let (small, big) = (check(&["--memory", "1"]), check(&[]));
    assert_eq!(big["clean"], false);
    for field in ["problems", "damaged_paths", "unused_blobs"] {
        assert_eq!(small[field], big[field], "{field}");
    }
    assert!(
        files_named(&t.cache, "table.tmp-").is_empty(),
        "a spilled table was left in the cache"
    );
}
