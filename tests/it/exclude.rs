//! Excludes for directory backups: patterns, case-insensitive patterns,
//! exclude files, marker files, CACHEDIR.TAG and --one-file-system.

use crate::common::*;
use std::path::Path;

fn listing(t: &TestRepo) -> Vec<String> {
    t.ok(&["ls", "latest"]).lines().map(String::from).collect()
}

fn has(list: &[String], src: &Path, rel: &str) -> bool {
    list.contains(&format!("{}/{rel}", path_str(src)))
}

#[test]
fn patterns_files_markers_and_caches_leave_out_exactly_what_they_name() {
    let t = TestRepo::new();
    let src = t.path("src");
    for dir in [
        "app/node_modules/pkg",
        "app/logs",
        "photos",
        "cache",
        "skipme",
        "keep",
    ] {
        std::fs::create_dir_all(src.join(dir)).unwrap();
    }
    for file in [
        "app/main.rs",
        "app/node_modules/pkg/index.js",
        "app/logs/today.log",
        "app/logs/keep.log",
        "photos/IMG_1.JPG",
        "photos/notes.txt",
        "cache/blob",
        "skipme/data",
        "keep/data",
        "top.tmp",
    ] {
        std::fs::write(src.join(file), file.as_bytes()).unwrap();
    }
    std::fs::write(
        src.join("cache/CACHEDIR.TAG"),
        b"Signature: 8a477f597d28d172789f06886806bc55\n",
    )
    .unwrap();
    std::fs::write(src.join("skipme/.nobackup"), b"").unwrap();
    // A fake tag (wrong signature) does not count.
    std::fs::write(src.join("keep/CACHEDIR.TAG"), b"not a tag\n").unwrap();
    let patterns = t.dir.path().join("excludes");
    std::fs::write(&patterns, "# build output\nnode_modules/\n\n*.tmp\n").unwrap();
    t.ok(&[
        "backup",
        path_str(&src),
        "--exclude",
        "*.log",
        "--exclude",
        "!keep.log",
        "--iexclude",
        "*.jpg",
        "--exclude-file",
        path_str(&patterns),
        "--exclude-if-present",
        ".nobackup",
        "--exclude-caches",
    ]);
    let l = listing(&t);
    for kept in [
        "app/main.rs",
        "app/logs/keep.log",
        "photos/notes.txt",
        "keep/data",
        "keep/CACHEDIR.TAG",
    ] {
        assert!(has(&l, &src, kept), "{kept} missing: {l:?}");
    }
    for gone in [
        "app/node_modules",
        "app/logs/today.log",
        "photos/IMG_1.JPG",
        "top.tmp",
        "skipme",
        "cache",
    ] {
        assert!(!has(&l, &src, gone), "{gone} not excluded: {l:?}");
    }
    // A bad pattern is a clear error before anything is written.
    let out = t.cmd(&["backup", path_str(&src), "--exclude", "[z-a"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("bad exclude pattern"));
}

#[test]
fn one_file_system_keeps_mount_points_empty() {
    if !is_root() {
        note("--one-file-system test needs root to mount a tmpfs");
        return;
    }
    let t = TestRepo::new();
    let src = t.path("src");
    std::fs::write(src.join("here"), b"same fs").unwrap();
    let mnt = src.join("mnt");
    std::fs::create_dir(&mnt).unwrap();
    let mounted = std::process::Command::new("mount")
        .args(["-t", "tmpfs", "-o", "size=1m", "tmpfs"])
        .arg(&mnt)
        .status()
        .is_ok_and(|s| s.success());
    if !mounted {
        note("cannot mount a tmpfs: skipping --one-file-system");
        return;
    }
    std::fs::write(mnt.join("elsewhere"), b"other fs").unwrap();
    let with = t.ok(&["backup", path_str(&src), "-x"]);
    let l = listing(&t);
    let without = t.ok(&["backup", path_str(&src)]);
    let l2 = listing(&t);
    let _ = std::process::Command::new("umount").arg(&mnt).status();
    let _ = (with, without);
    assert!(has(&l, &src, "here") && has(&l, &src, "mnt"), "{l:?}");
    assert!(
        !has(&l, &src, "mnt/elsewhere"),
        "crossed into the tmpfs: {l:?}"
    );
    assert!(has(&l2, &src, "mnt/elsewhere"), "{l2:?}");
}
