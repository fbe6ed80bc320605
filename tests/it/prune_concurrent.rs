//! Prune alongside backups (docs/FORMAT.md, section 15, "Two-phase
//! delete"): prune takes a lock that backups do not wait for, marks what it
//! would delete, and deletes it only once no lock older than the mark is
//! live; a marked pack a snapshot came to need is indexed again.

use crate::common::*;
use std::collections::{BTreeMap, HashMap};
use std::path::PathBuf;
use std::process::{Child, Output, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

fn small_packs() -> TestRepo {
    let t = TestRepo::uninitialised();
    t.init(&[&FAST_KDF[..], &["--pack-size", "1"]].concat());
    t
}

fn prune_json(t: &TestRepo, env: &[(&str, &str)]) -> serde_json::Value {
    let out = t
        .command()
        .envs(env.iter().copied())
        .args(["--json", "prune"])
        .run();
    assert_success(&out, &["prune"]);
    parse_summary(&String::from_utf8_lossy(&out.stdout))
}

fn check_read_data(t: &TestRepo, ctx: &str) -> String {
    let out = t.command().args(["check", "--read-data"]).run();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(out.status.code(), Some(0), "{ctx}: check failed:\n{text}");
    text
}

/// A repository whose only snapshot was forgotten: the pack of `kept.bin`
/// is unused, and `src` holds `kept.bin` again with a new file, so the next
/// backup deduplicates against that unused pack and stores new packs.
fn repository_with_an_unused_pack() -> (TestRepo, PathBuf) {
    let t = small_packs();
    let old = t.path("old");
    std::fs::write(old.join("kept.bin"), random_bytes(1, 300_000)).unwrap();
    let first = t.backup_json(&[&old])["snapshot_id"]
        .as_str()
        .unwrap()
        .to_string();
    t.ok(&["forget", &first]);
    let src = t.path("src");
    std::fs::copy(old.join("kept.bin"), src.join("kept.bin")).unwrap();
    std::fs::write(src.join("new.bin"), random_bytes(2, 2 << 20)).unwrap();
    (t, src)
}

/// A backup paused after deduplicating against a pack no snapshot uses; a
/// prune marks the pack and a second prune runs while the backup still
/// holds its lock; the backup finishes. Its snapshot restores byte-exact,
/// and the next prune indexes the pack again rather than deleting it.
/// Before, prune could not run at all while the backup held its lock (it
/// took an exclusive lock); without the wait the second prune would have
/// deleted the pack, and without the restore rule the third.
#[test]
fn a_backup_that_deduplicated_against_a_marked_pack_keeps_it() {
    let (t, src) = repository_with_an_unused_pack();
    let paused = PausedBackup::start(&t, &["--json"], &src, &[]);

    let first = prune_json(&t, &[]);
    // The data pack of kept.bin and the forgotten snapshot's tree pack.
    assert_eq!(num(&first, "packs_deleted"), 2, "{first}");
    assert_eq!(num(&first, "packs_marked"), 2, "{first}");
    assert_eq!(num(&first, "mark_files_written"), 1, "{first}");
    let second = prune_json(&t, &[]);
    assert_eq!(num(&second, "mark_files_waiting"), 1, "{second}");
    assert_eq!(num(&second, "marked_packs_deleted"), 0, "{second}");
    check_read_data(&t, "marked, with the backup running");

    let out = paused.release(false);
    assert_success(&out, &["the paused backup"]);
    let snapshot = parse_summary(&String::from_utf8_lossy(&out.stdout))["snapshot_id"]
        .as_str()
        .unwrap()
        .to_string();
    let restored = t.restore(&format!("{snapshot}:{}", path_str(&src)), "restored");
    assert_trees_equal(&src, &restored);

    let third = prune_json(&t, &[]);
    assert_eq!(num(&third, "marked_packs_restored"), 1, "{third}");
    assert_eq!(
        num(&third, "marked_packs_deleted"),
        1,
        "the tree pack: {third}"
    );
    let text = check_read_data(&t, "after the pack was restored");
    assert!(!text.contains("marked for deletion"), "{text}");
    let again = t.restore(&format!("{snapshot}:{}", path_str(&src)), "again");
    assert_trees_equal(&src, &again);
}

/// A backup that starts after the mark does not deduplicate against the
/// marked pack: it stores the blob again, so the pack can go once the
/// older backup has ended.
#[test]
fn a_backup_after_the_mark_stores_the_marked_blob_again() {
    let (t, src) = repository_with_an_unused_pack();
    let paused = PausedBackup::start(&t, &["--json"], &src, &[]);
    let first = prune_json(&t, &[]);
    assert_eq!(num(&first, "packs_marked"), 2, "{first}");
    let later = t.path("later");
    std::fs::copy(src.join("kept.bin"), later.join("kept.bin")).unwrap();
    let summary = t.backup_json(&[&later]);
    assert!(
        num(&summary, "data_added") >= 300_000,
        "kept.bin is stored again: {summary}"
    );
    drop(paused);
    let pruned = prune_json(&t, &[]);
    assert_eq!(num(&pruned, "marked_packs_deleted"), 2, "{pruned}");
    check_read_data(&t, "after the marked pack was deleted");
    let id = summary["snapshot_id"].as_str().unwrap();
    let restored = t.restore(&format!("{id}:{}", path_str(&later)), "later-restored");
    assert_trees_equal(&later, &restored);
}

/// A backup whose lock goes stale (stopped past the shortened stale time)
/// does not keep prune from deleting what it marked: the next prune
/// deletes the marked pack, and the backup stops without a snapshot.
#[test]
fn a_stale_lock_does_not_block_deletion_forever() {
    let fast = [("CAIRN_TEST_LOCK_STALE_MS", "2000")];
    let (t, src) = repository_with_an_unused_pack();
    let paused = PausedBackup::start(&t, &["--json"], &src, &fast);
    let first = prune_json(&t, &fast);
    assert_eq!(num(&first, "packs_marked"), 2, "{first}");
    signal(paused.child.as_ref().unwrap(), libc::SIGSTOP);
    std::thread::sleep(Duration::from_millis(2500));
    let second = prune_json(&t, &fast);
    assert_eq!(num(&second, "marked_packs_deleted"), 2, "{second}");
    let out = paused.release(true);
    assert_eq!(
        out.status.code(),
        Some(11),
        "the backup lost its lock: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(t.snapshot_ids().is_empty());
    check_read_data(&t, "after the stale lock");
}

/// The processes running now, by a number of the test's own, so one can
/// be killed before it is reaped (its pid cannot have been reused).
#[derive(Default)]
struct Running {
    children: Mutex<HashMap<u64, Child>>,
    next: Mutex<u64>,
}

impl Running {
    /// Runs `c` to its end unless it is killed; its output.
    fn run(&self, c: &mut std::process::Command) -> Output {
        c.stdout(Stdio::piped()).stderr(Stdio::piped());
        let child = c.spawn().unwrap();
        let n = {
            let mut next = self.next.lock().unwrap();
            *next += 1;
            *next
        };
        self.children.lock().unwrap().insert(n, child);
        let deadline = Instant::now() + Duration::from_secs(120);
        loop {
            {
                let mut children = self.children.lock().unwrap();
                let child = children.get_mut(&n).unwrap();
                if child.try_wait().unwrap().is_some() {
                    let child = children.remove(&n).unwrap();
                    return child.wait_with_output().unwrap();
                }
                assert!(Instant::now() < deadline, "a command hung: {c:?}");
            }
            std::thread::sleep(Duration::from_millis(5));
        }
    }

    /// SIGKILLs the `pick`-th running process, if any.
    fn kill_one(&self, pick: u64) {
        let mut children = self.children.lock().unwrap();
        if children.is_empty() {
            return;
        }
        let mut keys: Vec<u64> = children.keys().copied().collect();
        keys.sort_unstable();
        let key = keys[(pick % keys.len() as u64) as usize];
        let _ = children.get_mut(&key).unwrap().kill();
    }
}

/// Four writers back up their own trees in a loop (sharing some files, so
/// they deduplicate against each other's blobs) while prune runs over and
/// over, repacking everything it can, and a killer sends SIGKILL to a
/// random one of those processes every few hundred milliseconds. Then
/// `check --read-data` passes, before and after a last prune, and every
/// snapshot restores byte-exact to the tree it was taken of.
#[test]
fn four_writers_and_a_continuous_prune_under_kill_9_lose_nothing() {
    let t = small_packs();
    let env = [("CAIRN_TEST_LOCK_STALE_MS", "4000")];
    let running = Running::default();
    let stop = AtomicBool::new(false);
    // Tag of each attempt → what its tree held.
    let attempts: Arc<Mutex<BTreeMap<String, BTreeMap<String, blake3::Hash>>>> = Arc::default();
    let prunes = Mutex::new((0u32, 0u32));
    let writers = 4;
    std::thread::scope(|s| {
        for w in 0..writers {
            let (t, running, stop, attempts) = (&t, &running, &stop, attempts.clone());
            s.spawn(move || {
                let dir = t.path(&format!("w{w}"));
                let mut round = 0u64;
                while !stop.load(Ordering::Relaxed) {
                    round += 1;
                    let seed = 1000 * w + round;
                    std::fs::write(dir.join("common.bin"), random_bytes(round % 3, 150_000))
                        .unwrap();
                    std::fs::write(
                        dir.join(format!("own-{round}.bin")),
                        random_bytes(seed, 200_000 + 50_000 * (round % 4) as usize),
                    )
                    .unwrap();
                    if round > 2 {
                        let _ = std::fs::remove_file(dir.join(format!("own-{}.bin", round - 2)));
                    }
                    let tag = format!("w{w}-r{round}");
                    attempts
                        .lock()
                        .unwrap()
                        .insert(tag.clone(), content_map(&dir));
                    let out = running.run(
                        t.command()
                            .envs(env)
                            .args(["backup", "--retry-lock", "30s", "--tag", &tag])
                            .arg(&dir),
                    );
                    // A killed backup, or one whose lock a stall lost, is
                    // allowed; a backup that fails otherwise is not.
                    if out.status.code().is_some() && !out.status.success() {
                        assert_eq!(
                            out.status.code(),
                            Some(11),
                            "backup {tag}: {}",
                            String::from_utf8_lossy(&out.stderr)
                        );
                    }
                }
            });
        }
        s.spawn(|| {
            while !stop.load(Ordering::Relaxed) {
                let out = running.run(t.command().envs(env).args([
                    "prune",
                    "--retry-lock",
                    "30s",
                    "--max-unused",
                    "0",
                ]));
                let mut counts = prunes.lock().unwrap();
                counts.0 += 1;
                if out.status.success() {
                    counts.1 += 1;
                } else if let Some(code) = out.status.code() {
                    // Only a lost lock (a stall on a loaded machine).
                    assert_eq!(code, 11, "prune: {}", String::from_utf8_lossy(&out.stderr));
                }
            }
        });
        s.spawn(|| {
            let mut rng = Rng::new(7);
            let end = Instant::now() + Duration::from_secs(14);
            while Instant::now() < end {
                std::thread::sleep(Duration::from_millis(150 + rng.below(350)));
                running.kill_one(rng.next());
            }
            stop.store(true, Ordering::Relaxed);
        });
    });
    let (runs, succeeded) = *prunes.lock().unwrap();
    assert!(succeeded >= 2, "prune completed {succeeded} of {runs} runs");
    let attempts = attempts.lock().unwrap();

    let restore_all = |round: &str| {
        // Restores every snapshot and compares it with its attempt's tree.
        let snapshots = t.snapshots_json(&[]);
        assert!(snapshots.len() >= writers as usize, "{snapshots:?}");
        for (i, snapshot) in snapshots.iter().enumerate() {
            let id = snapshot["id"].as_str().unwrap();
            let tag = snapshot["tags"][0].as_str().unwrap();
            let source = t.path(&tag[..tag.find('-').unwrap()]);
            let selector = format!("{id}:{}", path_str(&source));
            let target = t.restore(&selector, &format!("{round}-{i}"));
            assert_eq!(content_map(&target), attempts[tag], "snapshot {id} ({tag})");
            std::fs::remove_dir_all(&target).unwrap();
        }
    };
    // Every snapshot is complete with the marks as the run left them (the
    // check reads every blob), and restores byte-exact once a last prune
    // has deleted or restored what was marked.
    check_read_data(&t, "after the run");
    prune_json(&t, &[]);
    check_read_data(&t, "after a last prune");
    restore_all("after");
}
