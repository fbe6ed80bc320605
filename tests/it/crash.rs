//! Crashes and interrupts leave a valid repository and no half snapshot.

use crate::common::*;
use std::io::Write;
use std::os::unix::process::ExitStatusExt;
use std::process::Stdio;

const FAILPOINTS: [&str; 3] = ["after-pack", "after-index", "before-snapshot"];

fn crash_scenario(failpoint: &str, delete_cache: bool) {
    let ctx = format!("[{failpoint}, delete_cache={delete_cache}]");
    let t = TestRepo::new();
    let src = t.path("src");
    std::fs::create_dir(src.join("sub")).unwrap();
    std::fs::write(src.join("a.sql"), sql_bytes(1, 1 << 20)).unwrap();
    std::fs::write(src.join("sub/b.bin"), random_bytes(2, 600_000)).unwrap();
    std::fs::write(src.join("sub/c.txt"), b"small\n").unwrap();
    let first = t.backup_json(&[&src]);
    let first_id = first["snapshot_id"].as_str().unwrap().to_string();
    let original = content_map(&src);

    // New data, so the crashing backup has packs and an index to write.
    std::fs::write(src.join("new.bin"), random_bytes(3, 1_500_000)).unwrap();
    std::fs::write(src.join("sub/c.txt"), b"small, changed\n").unwrap();
    let out = t
        .command()
        .env("CAIRN_FAILPOINT", failpoint)
        .args(["backup", path_str(&src)])
        .run();
    assert!(
        !out.status.success(),
        "{ctx} backup with a failpoint succeeded"
    );
    assert_eq!(
        out.status.signal(),
        Some(libc::SIGABRT),
        "{ctx} expected death by SIGABRT at the failpoint, got {} ({})",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );

    if delete_cache {
        std::fs::remove_dir_all(&t.cache).unwrap();
    }
    let ids = t.snapshot_ids();
    assert_eq!(
        ids,
        vec![first_id.clone()],
        "{ctx} only the first snapshot may exist"
    );
    let check = t.ok(&["check", "--read-data"]);
    assert!(check.contains("no errors were found"), "{ctx} {check}");

    let target = t.restore(&first_id, "first");
    let restored = content_map(&target.join(src.strip_prefix("/").unwrap()));
    assert_eq!(
        restored, original,
        "{ctx} the first snapshot no longer restores byte-exact"
    );

    if delete_cache {
        std::fs::remove_dir_all(&t.cache).unwrap();
    }
    // A new backup over the debris succeeds and is complete.
    let again = t.backup_json(&[&src]);
    assert_eq!(t.snapshot_ids().len(), 2, "{ctx}");
    let id = again["snapshot_id"].as_str().unwrap();
    let target = t.restore(&format!("{id}:{}", path_str(&src)), "after");
    assert_trees_equal(&src, &target);
    // And once more with every file re-read, then restored without a cache.
    t.backup_json(&[src.as_os_str(), "--force".as_ref()]);
    std::fs::remove_dir_all(&t.cache).unwrap();
    let target = t.restore(&format!("latest:{}", path_str(&src)), "forced");
    assert_trees_equal(&src, &target);
}

#[test]
fn crash_at_each_failpoint_leaves_a_valid_repository() {
    for fp in FAILPOINTS {
        crash_scenario(fp, false);
        crash_scenario(fp, true);
    }
}

/// A crash while backing up a stream leaves no snapshot and no damage.
#[test]
fn crash_during_stdin_backup_leaves_a_valid_repository() {
    for fp in FAILPOINTS {
        let t = TestRepo::new();
        let data = sql_bytes(5, 3 << 20);
        t.backup_stdin_json("s.sql", &[], &mut &data[..]);
        let mut child = t
            .command()
            .env("CAIRN_FAILPOINT", fp)
            .args(["backup", "--stdin", "--stdin-filename", "s2.sql"])
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let other = sql_bytes(6, 3 << 20);
        let _ = child.stdin.take().unwrap().write_all(&other);
        let status = wait_timeout(&mut child, 60);
        assert_eq!(status.signal(), Some(libc::SIGABRT), "[{fp}] {status}");
        assert_eq!(t.snapshot_ids().len(), 1, "[{fp}]");
        assert_eq!(t.ok_bytes(&["dump", "latest", "s.sql"]), data, "[{fp}]");
        t.backup_stdin_json("s2.sql", &[], &mut &other[..]);
        assert_eq!(t.ok_bytes(&["dump", "latest", "s2.sql"]), other, "[{fp}]");
    }
}

#[test]
fn interrupt_exits_130_and_writes_no_snapshot() {
    let t = TestRepo::new();
    let first = sql_bytes(1, 1 << 20);
    t.backup_stdin_json("first.sql", &[], &mut &first[..]);

    let mut child = t
        .command()
        .args(["backup", "--stdin", "--stdin-filename", "big.sql"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdin = child.stdin.take().unwrap();
    let data = sql_bytes(2, 8 << 20);
    stdin.write_all(&data).unwrap();
    stdin.flush().unwrap();
    std::thread::sleep(std::time::Duration::from_millis(300));
    // The pipe stays open: cairn is blocked reading when the signal comes.
    let kill = std::process::Command::new("kill")
        .args(["-INT", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(kill.success());
    let status = wait_timeout(&mut child, 30);
    drop(stdin);
    let out = child.wait_with_output().unwrap();
    assert_eq!(
        status.code(),
        Some(130),
        "expected exit 130 after SIGINT, got {status}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(
        t.snapshot_ids().len(),
        1,
        "an interrupted backup must not write a snapshot"
    );
    assert!(
        std::fs::read_dir(t.repo.join("locks"))
            .unwrap()
            .next()
            .is_none(),
        "interrupted backup left its lock"
    );
    // The repository is fine afterwards.
    assert_eq!(t.ok_bytes(&["dump", "latest", "first.sql"]), first);
    t.backup_stdin_json("big.sql", &[], &mut &data[..]);
    assert_eq!(t.ok_bytes(&["dump", "latest", "big.sql"]), data);
}

/// Temporary files in `packs/` (`.tmp-*`) of a directory, recursively.
fn pack_temp_files(repo: &std::path::Path) -> Vec<std::path::PathBuf> {
    walk(&repo.join("packs"))
        .into_values()
        .filter(|p| {
            p.file_name()
                .is_some_and(|n| n.to_string_lossy().starts_with(".tmp-"))
        })
        .collect()
}

/// A backup killed while it streams a pack leaves that pack's temporary
/// file: no reader sees it, `check` passes, and `prune` deletes it.
#[test]
fn crash_while_streaming_a_pack_leaves_a_temp_file_that_prune_deletes() {
    let t = TestRepo::new();
    let src = t.path("src");
    std::fs::write(src.join("a.sql"), sql_bytes(1, 1 << 20)).unwrap();
    let first = t.backup_json(&[&src]);
    // Incompressible, so more than one 4 MiB piece of a pack is written.
    std::fs::write(src.join("big.bin"), random_bytes(9, 10 << 20)).unwrap();
    let out = t
        .command()
        .env("CAIRN_FAILPOINT", "after-pack-piece")
        .args(["backup", path_str(&src)])
        .run();
    assert_eq!(out.status.signal(), Some(libc::SIGABRT), "{}", out.status);
    let temps = pack_temp_files(&t.repo);
    assert_eq!(temps.len(), 1, "one pack was being streamed: {temps:?}");
    assert!(std::fs::metadata(&temps[0]).unwrap().len() >= 4 << 20);
    assert_eq!(
        t.snapshot_ids(),
        vec![first["snapshot_id"].as_str().unwrap().to_string()]
    );
    let check = t.ok(&["check", "--read-data"]);
    assert!(check.contains("no errors were found"), "{check}");
    assert!(
        check.contains("1 temporary file(s)"),
        "check notes the temp file: {check}"
    );

    let dry = parse_summary(&t.ok(&["--json", "prune", "--dry-run"]));
    assert_eq!(num(&dry, "temp_files_deleted"), 1, "{dry}");
    assert_eq!(
        pack_temp_files(&t.repo).len(),
        1,
        "a dry run deletes nothing"
    );
    let pruned = parse_summary(&t.ok(&["--json", "prune"]));
    assert_eq!(num(&pruned, "temp_files_deleted"), 1, "{pruned}");
    assert!(num(&pruned, "bytes_deleted") >= 4 << 20, "{pruned}");
    assert!(pack_temp_files(&t.repo).is_empty());
    let check = t.ok(&["check", "--read-data"]);
    assert!(check.contains("no errors were found"), "{check}");
}

/// A backup killed halfway has indexed its packs on the way (every
/// `INDEX_AFTER_PACK_BYTES`, lowered here to 4 MiB), so the next run
/// stores only what the killed one had not. Before, a backup wrote its
/// index at the end (or every 100,000 blobs): killed, it left packs no
/// index named, and the next run stored everything again.
#[test]
fn a_killed_backup_is_resumed_from_the_packs_it_indexed() {
    let t = TestRepo::uninitialised();
    let mut init = FAST_KDF.to_vec();
    init.extend(["--pack-size", "1"]);
    t.init(&init);
    let data = random_bytes(18, 24 << 20);
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
    // Two thirds of the stream; the rest never comes (the input stalls, as
    // a dump over a slow link would, and then the process is killed).
    stdin.write_all(&data[..16 << 20]).unwrap();
    let index_dir = t.repo.join("index");
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    // Only a renamed index file counts: a `.tmp-*` one may still be
    // written when the process is killed (this raced under load).
    let indexed = || {
        std::fs::read_dir(&index_dir)
            .unwrap()
            .filter_map(|e| e.ok())
            .any(|e| !e.file_name().to_string_lossy().starts_with('.'))
    };
    while !indexed() {
        assert!(
            std::time::Instant::now() < deadline,
            "no index file while the backup runs: a killed backup would leave its packs unindexed"
        );
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    child.kill().unwrap();
    child.wait().unwrap();
    drop(stdin);
    assert!(
        t.snapshot_ids().is_empty(),
        "a killed backup leaves no snapshot"
    );
    t.ok(&["check"]);

    let resumed = t.backup_stdin_json("big.bin", &[], &mut &data[..]);
    let added = num(&resumed, "data_added");
    assert!(
        added <= (data.len() as u64) * 7 / 8,
        "the resumed backup stored {added} of {} bytes again: {resumed}",
        data.len()
    );
    t.ok(&["check", "--read-data"]);
    assert_eq!(t.ok_bytes(&["dump", "latest", "big.bin"]), data);
}
