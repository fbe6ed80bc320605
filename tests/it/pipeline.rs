//! The backup pipeline (a reading stage and a store thread): a failure in
//! the store thread writes no snapshot and leaves no unindexed packs, and
//! many small files in flight at once are stored exactly once each, and
//! the walk ahead and the archiver agree even when the file system changes
//! under them.

use crate::common::*;

fn packs_and_index(t: &TestRepo) -> (usize, usize) {
    (
        walk_files(&t.repo.join("packs")).len(),
        walk_files(&t.repo.join("index")).len(),
    )
}

fn check_read_data_clean(t: &TestRepo, ctx: &str) {
    let out = t.command().args(["check", "--read-data"]).run();
    assert_eq!(
        out.status.code(),
        Some(0),
        "{ctx} check --read-data failed: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn a_failing_store_thread_writes_no_snapshot_and_leaves_no_packs() {
    let t = TestRepo::uninitialised();
    // Small packs, so the store thread has stored several packs before it
    // fails and the cleanup has something to delete.
    t.init(&[&FAST_KDF[..], &["--pack-size", "1"]].concat());
    let first = sql_bytes(1, 2 << 20);
    t.backup_stdin_json("first.sql", &[], &mut &first[..]);
    let before = packs_and_index(&t);

    let src = t.path("src");
    std::fs::write(src.join("big.bin"), random_bytes(2, 24 << 20)).unwrap();
    for i in 0..200 {
        std::fs::write(src.join(format!("small-{i}.txt")), format!("file {i}\n")).unwrap();
    }
    for source in ["paths", "stdin"] {
        let mut c = t.command();
        c.env("CAIRN_FAILPOINT", "store-error");
        let out = if source == "paths" {
            c.args(["backup", path_str(&src)]).run()
        } else {
            c.args(["backup", "--stdin", "--stdin-filename", "big.bin"])
                .stdin(std::fs::File::open(src.join("big.bin")).unwrap());
            c.run()
        };
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "[{source}] {stderr}");
        assert!(
            stderr.contains("injected store failure"),
            "[{source}] {stderr}"
        );
        assert!(!stderr.contains("panicked"), "[{source}] {stderr}");
        assert_eq!(
            t.snapshot_ids().len(),
            1,
            "[{source}] a snapshot was written"
        );
        assert_eq!(
            packs_and_index(&t),
            before,
            "[{source}] packs or index files left behind"
        );
        assert!(
            std::fs::read_dir(t.repo.join("locks"))
                .unwrap()
                .next()
                .is_none(),
            "[{source}] the failed backup left its lock"
        );
    }
    check_read_data_clean(&t, "[after store failures]");
    assert_eq!(t.ok_bytes(&["dump", "latest", "first.sql"]), first);
    // The same backup without the failure stores everything.
    let id = t.backup_json(&[&src])["snapshot_id"]
        .as_str()
        .unwrap()
        .to_string();
    let target = t.restore(&format!("{id}:{}", path_str(&src)), "after");
    assert_trees_equal(&src, &target);
}

#[test]
fn many_small_files_in_flight_are_each_stored_once() {
    let t = TestRepo::new();
    let src = t.path("src");
    let mut distinct = 0u64;
    // 3000 small files in 30 directories, a third of them duplicates of
    // another file (dedup must hold across files sealed in one batch), plus
    // empty files and a file larger than one read buffer.
    for d in 0..30 {
        let dir = src.join(format!("d{d:02}"));
        std::fs::create_dir(&dir).unwrap();
        for f in 0..100 {
            let n = d * 100 + f;
            let body = if n % 3 == 0 {
                format!("duplicate body {}\n", n % 7).into_bytes()
            } else {
                distinct += 1;
                random_bytes(n as u64, 100 + (n % 5000))
            };
            std::fs::write(dir.join(format!("f{f:03}")), body).unwrap();
        }
        std::fs::write(dir.join("empty"), b"").unwrap();
    }
    std::fs::write(src.join("large.sql"), sql_bytes(9, 40 << 20)).unwrap();
    let summary = t.backup_json(&[&src]);
    let data_blobs = num(&summary, "data_blobs");
    // 7 distinct duplicate bodies, the distinct small files, and the chunks
    // of the large file (at least 40 MiB / 1 MiB).
    assert!(
        data_blobs >= distinct + 7 + 40,
        "too few data blobs: {data_blobs}"
    );
    assert!(
        data_blobs <= distinct + 7 + 40 * 16,
        "too many data blobs: {data_blobs}"
    );
    let id = summary["snapshot_id"].as_str().unwrap().to_string();
    let target = t.restore(&format!("{id}:{}", path_str(&src)), "restored");
    assert_trees_equal(&src, &target);
    // Everything again with --force: nothing new is stored.
    let again = t.backup_json(&[src.as_os_str(), "--force".as_ref()]);
    assert_eq!(num(&again, "data_blobs"), 0, "{again}");
    check_read_data_clean(&t, "[small files]");
}

/// The walk ahead decides from the listing which entries are directories;
/// the archiver decides from their stat. When the two disagree (an entry
/// replaced in between), the archiver must skip the walk's events for a
/// directory it does not save, or walk a directory on its own. Both are
/// forced here for every entry, and must give the very same trees.
#[test]
fn a_walk_ahead_that_disagrees_with_the_stats_gives_the_same_snapshot() {
    let t = TestRepo::new();
    let src = t.path("src");
    for (d, depth) in [("a", 3), ("b", 1), ("c", 0)] {
        let mut dir = src.join(d);
        for level in 0..=depth {
            std::fs::create_dir_all(&dir).unwrap();
            for f in 0..5 {
                let n = level * 10 + f;
                std::fs::write(
                    dir.join(format!("f{f}")),
                    random_bytes(n, 50 + n as usize * 300),
                )
                .unwrap();
            }
            dir = dir.join(format!("sub{level}"));
        }
    }
    std::fs::create_dir(src.join("empty")).unwrap();
    std::os::unix::fs::symlink("a", src.join("link-to-dir")).unwrap();
    std::os::unix::fs::symlink("a/f0", src.join("link-to-file")).unwrap();
    std::fs::write(src.join("large"), sql_bytes(3, 3 << 20)).unwrap();

    let first = t.backup_json(&[&src]);
    let first_id = first["snapshot_id"].as_str().unwrap().to_string();
    let listing = |id: &str| t.ok(&["--json", "ls", &format!("{id}:{}", path_str(&src))]);
    let expected = listing(&first_id);
    assert!(expected.lines().count() > 40, "{expected}");
    for failpoint in [
        "walk-descends-into-everything",
        "walk-descends-into-nothing",
    ] {
        let out = t
            .command()
            .env("CAIRN_FAILPOINT", failpoint)
            .args(["--json", "backup", "--force", path_str(&src)])
            .output()
            .unwrap();
        assert_success(&out, &[failpoint]);
        let summary = parse_summary(&String::from_utf8(out.stdout).unwrap());
        // --force reads every file again (each has a parent node).
        assert_eq!(
            num(&summary, "files_new") + num(&summary, "files_changed"),
            num(&first, "files_new"),
            "{failpoint}: {summary}"
        );
        assert_eq!(num(&summary, "data_blobs"), 0, "{failpoint}: {summary}");
        assert_eq!(
            num(&summary, "files_unreadable"),
            0,
            "{failpoint}: {summary}"
        );
        // The same entries with the same metadata, in the same order (the
        // ancestors of src may differ: other tests write to /tmp).
        let id = summary["snapshot_id"].as_str().unwrap().to_string();
        assert_eq!(listing(&id), expected, "{failpoint}");
        let target = t.restore(&format!("{id}:{}", path_str(&src)), failpoint);
        assert_trees_equal(&src, &target);
    }
}

/// `backup --json src` with RLIMIT_NOFILE set to `descriptors`; checks
/// that every one of `files` was stored and that the tree restores whole.
fn backup_under_descriptor_limit(
    t: &TestRepo,
    src: &std::path::Path,
    descriptors: u64,
    files: u64,
) {
    let mut command = t.command();
    command.args(["--json", "backup", path_str(src)]);
    // SAFETY: only an async-signal-safe system call between fork and exec.
    unsafe {
        std::os::unix::process::CommandExt::pre_exec(&mut command, move || {
            let limit = libc::rlimit {
                rlim_cur: descriptors,
                rlim_max: descriptors,
            };
            if libc::setrlimit(libc::RLIMIT_NOFILE, &limit) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    let out = command.output().unwrap();
    assert_success(&out, &["backup under a low descriptor limit"]);
    let summary = parse_summary(&String::from_utf8(out.stdout).unwrap());
    assert_eq!(num(&summary, "files_new"), files, "{summary}");
    let restored = t.restore(&format!("latest:{}", path_str(src)), "out");
    assert_trees_equal(src, &restored);
}

/// The walk ahead keeps a directory open while its entries are read: a
/// tree deeper than the descriptor limit must not hold one per level
/// (which failed the opens of the files below with EMFILE).
#[test]
fn a_tree_deeper_than_the_descriptor_limit_backs_up_whole() {
    const DEPTH: usize = 300;
    let t = TestRepo::new();
    let src = t.path("deep");
    let mut dir = src.clone();
    for level in 0..DEPTH {
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join("f"), format!("level {level}\n")).unwrap();
        dir = dir.join("d");
    }
    backup_under_descriptor_limit(&t, &src, 200, DEPTH as u64);
}

/// Regression: under a limit of 80 descriptors the walk ahead's queued
/// tasks held a directory each, and files of a wide tree could not be
/// opened ("Too many open files"): they were left out (exit 3). The walk
/// and the index cache now keep to a quarter of the limit each.
#[test]
fn a_wide_tree_under_a_low_descriptor_limit_backs_up_whole() {
    const DIRS: usize = 300;
    const FILES_PER_DIR: usize = 3;
    let t = TestRepo::new();
    let src = t.path("wide");
    for d in 0..DIRS {
        let dir = src.join(format!("d{d:03}"));
        std::fs::create_dir_all(&dir).unwrap();
        for f in 0..FILES_PER_DIR {
            std::fs::write(dir.join(format!("f{f}")), format!("{d} {f}\n")).unwrap();
        }
    }
    backup_under_descriptor_limit(&t, &src, 40, (DIRS * FILES_PER_DIR) as u64);
}
