//! Every kind of file-system object and every piece of metadata survives a
//! backup and restore.

use crate::common::*;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::process::Command;

/// Can `dir`'s file system hold user xattrs?
fn user_xattrs_work(dir: &Path) -> bool {
    if !have_tool("setfattr") || !have_tool("getfattr") {
        return false;
    }
    let probe = dir.join(".xattr-probe");
    std::fs::write(&probe, b"x").unwrap();
    let ok = Command::new("setfattr")
        .args(["-n", "user.probe", "-v", "1"])
        .arg(&probe)
        .output()
        .map(|o| o.status.success())
        .unwrap_or(false);
    std::fs::remove_file(&probe).unwrap();
    ok
}

struct Base {
    _shm: Option<tempfile::TempDir>,
    root: PathBuf,
}

impl Drop for Base {
    fn drop(&mut self) {
        make_writable(&self.root);
    }
}

/// Where to build the source and the restore: the test's temp dir, or
/// /dev/shm when only that file system takes user xattrs.
fn pick_base(t: &TestRepo) -> (Base, bool) {
    let local = t.path("fs");
    if user_xattrs_work(&local) {
        return (
            Base {
                _shm: None,
                root: local,
            },
            true,
        );
    }
    if Path::new("/dev/shm").is_dir() {
        if let Ok(shm) = tempfile::Builder::new()
            .prefix("cairn-it-")
            .tempdir_in("/dev/shm")
        {
            if user_xattrs_work(shm.path()) {
                let root = shm.path().to_path_buf();
                return (
                    Base {
                        _shm: Some(shm),
                        root,
                    },
                    true,
                );
            }
        }
    }
    note("user xattrs are not supported here (nor under /dev/shm): xattrs are not tested");
    (
        Base {
            _shm: None,
            root: local,
        },
        false,
    )
}

fn setfattr(path: &Path, name: &str, value: &str) {
    run_tool(
        "setfattr",
        &[
            "-h".as_ref(),
            "-n".as_ref(),
            name.as_ref(),
            "-v".as_ref(),
            value.as_ref(),
            path.as_os_str(),
        ],
    );
}

#[test]
fn metadata_round_trip() {
    let t = TestRepo::new();
    let (base, xattrs) = pick_base(&t);
    let src = base.root.join("src");
    std::fs::create_dir_all(&src).unwrap();

    // Regular files: empty, small, multi-chunk (~3 MB of mixed text and noise).
    std::fs::write(src.join("empty"), b"").unwrap();
    std::fs::write(src.join("small.txt"), b"hello, cairn\n").unwrap();
    let mut big = sql_bytes(1, 2 << 20);
    big.extend_from_slice(&random_bytes(2, 1 << 20));
    std::fs::write(src.join("big.bin"), &big).unwrap();

    // Nested directories.
    let deep = src.join("nested/a/b/c");
    std::fs::create_dir_all(&deep).unwrap();
    std::fs::write(deep.join("deep.txt"), b"deep down\n").unwrap();

    // Directory modes: private and read-only (must still be restorable).
    let private = src.join("private");
    std::fs::create_dir(&private).unwrap();
    std::fs::write(private.join("secret.txt"), b"secret\n").unwrap();
    chmod(&private, 0o700);
    let readonly = src.join("readonly");
    std::fs::create_dir(&readonly).unwrap();
    std::fs::write(readonly.join("inside.txt"), b"inside a read-only dir\n").unwrap();
    std::fs::create_dir(readonly.join("sub")).unwrap();
    std::fs::write(readonly.join("sub/more.txt"), b"more\n").unwrap();

    // Special permission bits.
    std::fs::write(src.join("setuid"), b"#!/bin/sh\n").unwrap();
    std::fs::write(src.join("setgid"), b"#!/bin/sh\n").unwrap();
    std::fs::write(src.join("sticky-mode"), b"x").unwrap();
    std::fs::write(src.join("mode-0640"), b"x").unwrap();
    std::fs::create_dir(src.join("sticky-dir")).unwrap();

    // Symlinks: relative, absolute, dangling.
    std::os::unix::fs::symlink("small.txt", src.join("link-relative")).unwrap();
    std::os::unix::fs::symlink("/etc/passwd", src.join("link-absolute")).unwrap();
    std::os::unix::fs::symlink("does/not/exist", src.join("link-dangling")).unwrap();
    std::os::unix::fs::symlink("../../small.txt", src.join("nested/a/link-up")).unwrap();

    // A hard-link pair across directories, and a second pair in one dir.
    std::fs::write(src.join("hard1"), b"linked content\n").unwrap();
    std::fs::hard_link(src.join("hard1"), src.join("nested/hard2")).unwrap();
    std::fs::write(src.join("pair-a"), random_bytes(3, 100_000)).unwrap();
    std::fs::hard_link(src.join("pair-a"), src.join("pair-b")).unwrap();

    // A fifo.
    run_tool("mkfifo", &[src.join("fifo")]);

    // A non-UTF-8 name, on a file and on a directory.
    let odd = src.join(os(b"name-\xff\xfe.bin"));
    std::fs::write(&odd, b"odd name\n").unwrap();
    std::fs::create_dir(src.join(os(b"dir-\xff\xfe"))).unwrap();
    std::fs::write(src.join(os(b"dir-\xff\xfe")).join("f"), b"in odd dir\n").unwrap();

    // A sparse file: 64 MiB with a few bytes in the middle.
    let sparse = src.join("sparse");
    run_tool(
        "truncate",
        &["-s".as_ref(), "64M".as_ref(), sparse.as_os_str()],
    );
    {
        use std::io::{Seek, SeekFrom, Write};
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .open(&sparse)
            .unwrap();
        f.seek(SeekFrom::Start(32 << 20)).unwrap();
        f.write_all(b"a few bytes in the middle").unwrap();
    }

    // Root-only: devices and foreign owners.
    if is_root() {
        run_tool(
            "mknod",
            &[
                src.join("chardev").as_os_str(),
                "c".as_ref(),
                "1".as_ref(),
                "3".as_ref(),
            ],
        );
        run_tool(
            "mknod",
            &[
                src.join("blockdev").as_os_str(),
                "b".as_ref(),
                "7".as_ref(),
                "200".as_ref(),
            ],
        );
        std::fs::write(src.join("owned-by-other"), b"someone else's\n").unwrap();
        std::os::unix::fs::lchown(src.join("owned-by-other"), Some(1234), Some(5678)).unwrap();
        std::fs::create_dir(src.join("other-dir")).unwrap();
        std::fs::write(src.join("other-dir/f"), b"x").unwrap();
        std::os::unix::fs::lchown(src.join("other-dir"), Some(1234), Some(5678)).unwrap();
        std::os::unix::fs::symlink("small.txt", src.join("other-link")).unwrap();
        std::os::unix::fs::lchown(src.join("other-link"), Some(4321), Some(8765)).unwrap();
        // setgid with a foreign group (chown first: chown clears set-id bits).
        std::fs::write(src.join("setgid-other"), b"x").unwrap();
        std::os::unix::fs::lchown(src.join("setgid-other"), Some(1234), Some(5678)).unwrap();
        chmod(&src.join("setgid-other"), 0o2750);
    } else {
        note("not root: device nodes and foreign owners are not tested");
    }

    // User xattrs on a file, a directory, and with a binary value.
    if xattrs {
        setfattr(&src.join("small.txt"), "user.cairn", "hello");
        setfattr(&src.join("small.txt"), "user.empty", "\"\"");
        setfattr(&src.join("nested"), "user.dirattr", "on a directory");
        setfattr(&src.join("big.bin"), "user.binary", "0x00ff10fe");
    }

    chmod(&src.join("setuid"), 0o4755);
    chmod(&src.join("setgid"), 0o2755);
    chmod(&src.join("sticky-mode"), 0o1644);
    chmod(&src.join("mode-0640"), 0o640);
    chmod(&src.join("sticky-dir"), 0o1777);
    chmod(&readonly.join("sub"), 0o555);
    chmod(&readonly, 0o555);

    // Fixed past mtimes with nanoseconds; some entries get their own.
    set_mtimes_recursive(&src, 1_500_000_000, 123_456_789);
    set_mtime(&src.join("small.txt"), 1_234_567_890, 987_654_321);
    set_mtime(&src.join("link-relative"), 1_111_111_111, 1);
    set_mtime(&src.join("nested/a"), 1_400_000_000, 999_999_999);
    set_mtime(&src.join("empty"), -86_400 * 365, 500_000_000);
    set_mtime(&src, 1_600_000_000, 42);

    let summary = t.backup_json(&[&src]);
    assert!(
        num(&summary, "files_new") >= 15,
        "files_new too small: {summary}"
    );
    assert_eq!(num(&summary, "files_unreadable"), 0, "{summary}");

    let target = base.root.join("restored");
    let selector = format!("latest:{}", path_str(&src));
    let out = t.cmd(&["restore", &selector, "--target", path_str(&target)]);
    assert_success(&out, &["restore", &selector]);
    assert!(
        out.stderr.is_empty() || !String::from_utf8_lossy(&out.stderr).contains("error"),
        "restore reported problems: {}",
        String::from_utf8_lossy(&out.stderr)
    );

    assert_trees_equal(&src, &target);

    // The sparse file stays sparse.
    let m = std::fs::metadata(target.join("sparse")).unwrap();
    assert_eq!(m.len(), 64 << 20);
    assert!(
        m.blocks() * 512 < 8 << 20,
        "restored sparse file allocates {} bytes of 64 MiB",
        m.blocks() * 512
    );

    // Sanity: the odd name really is the raw bytes.
    let names: Vec<Vec<u8>> = std::fs::read_dir(&target)
        .unwrap()
        .map(|e| e.unwrap().file_name().as_bytes().to_vec())
        .collect();
    assert!(
        names.contains(&b"name-\xff\xfe.bin".to_vec()),
        "non-UTF-8 name missing: {names:?}"
    );
}

/// Restoring the whole snapshot (not a subpath) recreates the absolute path
/// under the target, with the source directory's own metadata.
#[test]
fn full_restore_recreates_the_absolute_path() {
    let t = TestRepo::new();
    let src = t.path("data/src");
    std::fs::write(src.join("f.txt"), b"content\n").unwrap();
    chmod(&src, 0o750);
    set_mtime(&src.join("f.txt"), 1_500_000_000, 7);
    set_mtime(&src, 1_500_000_001, 8);
    t.backup_json(&[&src]);
    let target = t.restore("latest", "full");
    let restored_src = target.join(src.strip_prefix("/").unwrap());
    assert_eq!(
        std::fs::read(restored_src.join("f.txt")).unwrap(),
        b"content\n"
    );
    assert_trees_equal(&src, &restored_src);
}

/// Several paths, relative and overlapping, and a single file: each is
/// stored under its absolute path; the second backup finds the first as
/// parent whatever the order the paths are given in.
#[test]
fn several_relative_paths_are_stored_under_their_absolute_paths() {
    let t = TestRepo::new();
    let base = t.path("base");
    std::fs::create_dir_all(base.join("a/x")).unwrap();
    std::fs::create_dir_all(base.join("b")).unwrap();
    std::fs::write(base.join("a/x/one"), b"1\n").unwrap();
    std::fs::write(base.join("a/top"), sql_bytes(7, 200_000)).unwrap();
    std::fs::write(base.join("b/two"), b"2\n").unwrap();
    std::fs::write(base.join("b/not-backed-up"), b"no\n").unwrap();
    std::fs::write(base.join("single"), b"3\n").unwrap();
    set_mtimes_recursive(&base, 1_400_000_000, 1);

    let mut c = t.command();
    c.current_dir(&base)
        .args(["--json", "backup", "a", "b/two", "single", "./a/../a/x"]);
    let out = c.run();
    assert_success(&out, &["backup with relative paths"]);
    let first = parse_summary(&String::from_utf8_lossy(&out.stdout));
    assert_eq!(num(&first, "files_new"), 4, "{first}");

    let mut c = t.command();
    c.current_dir(&base).args([
        "--json",
        "backup",
        "single",
        "a/x",
        "b/two",
        &format!("{}/a", path_str(&base)),
    ]);
    let out = c.run();
    assert_success(&out, &["backup with paths in another order"]);
    let second = parse_summary(&String::from_utf8_lossy(&out.stdout));
    assert_eq!(
        second["parent"], first["snapshot_id"],
        "same path set, same parent: {second}"
    );
    assert_eq!(num(&second, "files_unmodified"), 4, "{second}");

    let target = t.restore("latest", "restored");
    let rbase = target.join(base.strip_prefix("/").unwrap());
    assert_trees_equal(&base.join("a"), &rbase.join("a"));
    assert_eq!(std::fs::read(rbase.join("b/two")).unwrap(), b"2\n");
    assert_eq!(std::fs::read(rbase.join("single")).unwrap(), b"3\n");
    assert!(
        !rbase.join("b/not-backed-up").exists(),
        "an unnamed sibling was backed up"
    );
    let snaps = t.snapshots_json(&[]);
    let want: Vec<String> = ["a", "a/x", "b/two", "single"]
        .iter()
        .map(|p| format!("{}/{p}", path_str(&base)))
        .collect();
    assert_eq!(snaps[1]["paths"], serde_json::json!(want));
}
