//! Locks that fail closed: a backup whose lock was lost (suspended past the
//! stale threshold, or removed by `unlock --remove-all`) stops before it
//! writes an index file or a snapshot; a lock file nobody can read keeps
//! prune out; prune leaves young unindexed packs alone.

use crate::common::*;
use std::collections::BTreeSet;
use std::path::PathBuf;
use std::time::Duration;

fn small_packs() -> TestRepo {
    let t = TestRepo::uninitialised();
    t.init(&[&FAST_KDF[..], &["--pack-size", "1"]].concat());
    t
}

/// The names of the pack files in the repository.
fn packs(t: &TestRepo) -> BTreeSet<String> {
    walk_files(&t.repo.join("packs"))
        .into_iter()
        .filter_map(|(_, p)| {
            let name = p.file_name()?.to_string_lossy().into_owned();
            (!name.starts_with('.')).then_some(name)
        })
        .collect()
}

fn pack_path(t: &TestRepo, name: &str) -> PathBuf {
    t.repo.join("packs").join(&name[..2]).join(name)
}

fn lock_files(t: &TestRepo) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(t.repo.join("locks"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| !n.starts_with('.'))
        .collect();
    names.sort();
    names
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

fn assert_check_clean(t: &TestRepo, ctx: &str) {
    let out = t.command().arg("check").run();
    assert_eq!(
        out.status.code(),
        Some(0),
        "{ctx}: check failed:\n{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A repository with one snapshot, and a new incompressible file in `src`
/// that the next backup stores in several 1 MiB packs.
fn repository_with_a_snapshot() -> (TestRepo, PathBuf, String) {
    let t = small_packs();
    let src = t.path("src");
    std::fs::write(src.join("a.sql"), sql_bytes(1, 300_000)).unwrap();
    let first = t.backup_json(&[&src])["snapshot_id"]
        .as_str()
        .unwrap()
        .to_string();
    std::fs::write(src.join("big.bin"), random_bytes(2, 3 << 20)).unwrap();
    (t, src, first)
}

/// The laptop that sleeps mid-backup. Every thread of the backup is
/// stopped (SIGSTOP, as a suspend stops them) past the stale threshold
/// (shortened to 2 s); a prune then takes the backup's lock for stale and
/// deletes its unindexed packs. On waking the backup must see the gap
/// since its last refresh itself, before the refresher could, and stop:
/// exit 11, no index file naming the deleted packs (check is clean), no
/// snapshot. Before the fix, `ensure_held` only read a flag the refresher
/// sets on its next tick, and the backup wrote both.
#[test]
fn a_backup_suspended_past_the_stale_threshold_writes_no_index_or_snapshot() {
    let (t, src, first) = repository_with_a_snapshot();
    let fast = [("CAIRN_TEST_LOCK_STALE_MS", "2000")];
    let before = packs(&t);
    let paused = PausedBackup::start(&t, &[], &src, &fast);
    signal(paused.child.as_ref().unwrap(), libc::SIGSTOP);
    let written: Vec<String> = packs(&t).difference(&before).cloned().collect();
    assert!(
        !written.is_empty(),
        "the backup stored packs before pausing"
    );
    // Past the threshold: the lock is stale to others, the packs old enough.
    std::thread::sleep(Duration::from_millis(2600));
    let pruned = prune_json(&t, &fast);
    assert_eq!(
        num(&pruned, "packs_unindexed_deleted"),
        written.len() as u64,
        "{pruned}"
    );
    assert!(written.iter().all(|p| !pack_path(&t, p).exists()));

    let out = paused.release(true);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(11), "{stderr}");
    assert!(
        stderr.contains("lock was lost") && stderr.contains("not refreshed"),
        "{stderr}"
    );
    assert_eq!(stderr.trim().lines().count(), 1, "one line: {stderr}");
    assert_eq!(t.snapshot_ids(), vec![first]);
    assert_check_clean(&t, "after the suspended backup");
    assert!(lock_files(&t).is_empty(), "{:?}", lock_files(&t));
}

/// `unlock --remove-all` while a backup holds its lock, then a prune. The
/// prune keeps the backup's packs (younger than the minimum age); the
/// backup reads its lock file before its index file, finds it gone and
/// stops (exit 11). It leaves its unindexed packs: with its lock lost,
/// another process may have indexed them. Before the fix it trusted a flag
/// the refresher sets only every 5 minutes, and committed.
#[test]
fn a_backup_whose_lock_was_removed_writes_no_index_or_snapshot() {
    let (t, src, first) = repository_with_a_snapshot();
    let before = packs(&t);
    let paused = PausedBackup::start(&t, &[], &src, &[]);
    let written: Vec<String> = packs(&t).difference(&before).cloned().collect();
    assert!(
        !written.is_empty(),
        "the backup stored packs before pausing"
    );
    let unlocked: serde_json::Value =
        serde_json::from_str(t.ok(&["--json", "unlock", "--remove-all"]).trim()).unwrap();
    assert_eq!(num(&unlocked, "removed"), 1, "{unlocked}");
    let pruned = prune_json(&t, &[]);
    assert_eq!(num(&pruned, "packs_unindexed_deleted"), 0, "{pruned}");
    assert_eq!(
        num(&pruned, "packs_unindexed_kept"),
        written.len() as u64,
        "{pruned}"
    );
    assert!(written.iter().all(|p| pack_path(&t, p).exists()));

    let out = paused.release(false);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(11), "{stderr}");
    assert!(
        stderr.contains("lock was lost") && stderr.contains("was removed"),
        "{stderr}"
    );
    assert_eq!(t.snapshot_ids(), vec![first]);
    assert!(written.iter().all(|p| pack_path(&t, p).exists()));
    assert_check_clean(&t, "after the unlocked backup");
}

/// A lock file that cannot be read or opened may be a running backup's:
/// prune (and forget --prune) refuse to run, naming the file and the way
/// out; a backup runs with a warning; plain `unlock` leaves the file,
/// `unlock --remove-all` clears it. Before the fix such a file was ignored.
#[test]
fn an_unreadable_lock_file_blocks_prune_with_a_message_naming_it() {
    let t = TestRepo::new();
    let src = t.path("src");
    std::fs::write(src.join("a.sql"), sql_bytes(3, 200_000)).unwrap();
    t.backup_json(&[&src]);
    let garbage = t.repo.join("locks").join("0badf00d");
    std::fs::write(&garbage, random_bytes(4, 300)).unwrap();

    for args in [&["prune"][..], &["forget", "--keep-last", "1", "--prune"]] {
        let out = t.cmd(args);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(11), "{args:?}: {stderr}");
        assert!(
            stderr.contains(path_str(&garbage)) && stderr.contains("unlock --remove-all"),
            "{args:?}: {stderr}"
        );
        assert_eq!(stderr.trim().lines().count(), 1, "one line: {stderr}");
    }
    let out = t.cmd(&["backup", path_str(&src)]);
    assert_success(&out, &["backup"]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("warning") && stderr.contains("0badf00d"),
        "{stderr}"
    );
    let out = t.cmd(&["unlock"]);
    assert_success(&out, &["unlock"]);
    assert!(String::from_utf8_lossy(&out.stderr).contains("0badf00d"));
    assert!(garbage.exists(), "plain unlock leaves what it cannot read");
    t.ok(&["unlock", "--remove-all"]);
    assert!(!garbage.exists());
    t.ok(&["prune"]);

    // Not a regular file: it cannot be read either.
    let odd = t.repo.join("locks").join("0dd");
    std::fs::create_dir(&odd).unwrap();
    let out = t.cmd(&["prune"]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(11), "{stderr}");
    assert!(stderr.contains(path_str(&odd)), "{stderr}");
    std::fs::remove_dir(&odd).unwrap();
    t.ok(&["prune"]);
    assert_check_clean(&t, "after the unreadable locks");
}

/// A pack no index names (here: a backup killed after its first pack)
/// survives prune while it is younger than the minimum age (a backup that
/// lost its lock may still be about to index it) and goes once it is
/// older. Before the fix the first prune deleted it at once.
#[test]
fn prune_keeps_a_young_unindexed_pack_and_deletes_it_once_old() {
    let (t, src, _) = repository_with_a_snapshot();
    let before = packs(&t);
    let out = t
        .command()
        .env("CAIRN_FAILPOINT", "after-pack")
        .args(["backup", path_str(&src)])
        .run();
    assert!(!out.status.success());
    let left: Vec<String> = packs(&t).difference(&before).cloned().collect();
    assert_eq!(left.len(), 1, "{left:?}");

    let pruned = prune_json(&t, &[]);
    assert_eq!(num(&pruned, "packs_unindexed_kept"), 1, "{pruned}");
    assert_eq!(num(&pruned, "packs_unindexed_deleted"), 0, "{pruned}");
    assert!(pack_path(&t, &left[0]).exists());
    assert_check_clean(&t, "with the young pack");

    let old = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64
        - 31 * 60;
    set_mtime(&pack_path(&t, &left[0]), old, 0);
    let pruned = prune_json(&t, &[]);
    assert_eq!(num(&pruned, "packs_unindexed_kept"), 0, "{pruned}");
    assert_eq!(num(&pruned, "packs_unindexed_deleted"), 1, "{pruned}");
    assert!(!pack_path(&t, &left[0]).exists());
    assert_eq!(packs(&t), before);
    assert_check_clean(&t, "after the old pack went");
}

/// The other side: a backup that runs for many refresh periods (0.1 s
/// here) refreshes its lock, passes every check and commits.
#[test]
fn a_backup_that_outlives_many_refresh_periods_keeps_its_lock() {
    let (t, src, first) = repository_with_a_snapshot();
    let fast = [("CAIRN_TEST_LOCK_STALE_MS", "600")];
    let paused = PausedBackup::start(&t, &[], &src, &fast);
    let at_pause = lock_files(&t);
    std::thread::sleep(Duration::from_millis(1500));
    let later = lock_files(&t);
    assert_eq!(later.len(), 1, "{later:?}");
    assert_ne!(at_pause, later, "the lock was refreshed");
    let out = paused.release(false);
    assert_success(&out, &["backup (refreshing its lock)"]);
    let ids = t.snapshot_ids();
    assert_eq!(ids.len(), 2);
    assert_eq!(ids[0], first);
    assert!(lock_files(&t).is_empty());
    assert_check_clean(&t, "after the long backup");
}
