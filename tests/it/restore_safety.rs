//! Restores that a local user cannot redirect (issue 17): nothing beneath
//! the target is followed if it is a symlink, not even one swapped in while
//! the restore runs; what is restored stays private until its stored mode
//! is applied; untrusted snapshots can be restored without their owners
//! and special files.

use crate::common::*;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Stdio};

/// A restore stopped at the test hook `point` (`failpoint::pause!`).
struct Paused {
    child: Child,
    dir: PathBuf,
    point: &'static str,
}

impl Paused {
    /// Starts `cairn restore SELECTOR --target TARGET` and waits until it
    /// reaches `point`.
    fn start(t: &TestRepo, selector: &str, target: &Path, point: &'static str) -> Paused {
        let dir = t.path(&format!("failpoint-{point}"));
        let mut c = t.command();
        c.args(["restore", selector, "--target", path_str(target)])
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let child = spawn_paused(&mut c, &dir, point);
        Paused { child, dir, point }
    }

    /// Lets the restore go on and waits for it to end.
    fn finish(self) -> std::process::Output {
        std::fs::write(self.dir.join(format!("{}.go", self.point)), b"").unwrap();
        finish_with_timeout(self.child, "restore", COMMAND_TIMEOUT_SECS)
    }
}

/// Entry names of a directory, sorted.
fn names(dir: &Path) -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    v.sort();
    v
}

fn mode(path: &Path) -> u32 {
    std::fs::symlink_metadata(path).unwrap().mode() & 0o7777
}

/// A directory outside the target that a restore must leave alone.
struct Outside {
    dir: PathBuf,
}

impl Outside {
    fn new(t: &TestRepo) -> Outside {
        let dir = t.path("outside");
        std::fs::write(dir.join("keep"), b"outside\n").unwrap();
        chmod(&dir.join("keep"), 0o640);
        chmod(&dir, 0o751);
        set_mtime(&dir, 1_000_000_000, 0);
        Outside { dir }
    }

    fn assert_untouched(&self, out: &std::process::Output) {
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(names(&self.dir), ["keep"], "written outside: {stderr}");
        assert_eq!(mode(&self.dir), 0o751, "outside chmodded: {stderr}");
        assert_eq!(mode(&self.dir.join("keep")), 0o640);
        assert_eq!(std::fs::read(self.dir.join("keep")).unwrap(), b"outside\n");
        let m = std::fs::metadata(&self.dir).unwrap();
        assert_eq!(m.mtime(), 1_000_000_000, "outside touched: {stderr}");
    }
}

/// The race of issue 17: the restorer had checked that `d` is a directory
/// and then wrote its children by path, so a user who swapped `d` for a
/// symlink in between had the (root) restore write and chmod files in the
/// symlink's target. The children now go into the directory descriptor
/// held since `d` was created.
#[test]
fn a_directory_swapped_for_a_symlink_mid_restore_is_not_followed() {
    let t = TestRepo::new();
    let src = t.path("src");
    std::fs::create_dir_all(src.join("d/sub")).unwrap();
    std::fs::write(src.join("d/f1"), b"one\n").unwrap();
    std::fs::write(src.join("d/f2"), b"two\n").unwrap();
    std::fs::write(src.join("d/sub/f3"), b"three\n").unwrap();
    std::os::unix::fs::symlink("f1", src.join("d/link")).unwrap();
    chmod(&src.join("d"), 0o777);
    t.backup_json(&[&src]);
    let outside = Outside::new(&t);

    let target = t.dir.path().join("target");
    let paused = Paused::start(
        &t,
        &format!("latest:{}", path_str(&src)),
        &target,
        "restore-dir-ready",
    );
    // `d` was created and checked; nothing is in it yet.
    assert!(std::fs::symlink_metadata(target.join("d"))
        .unwrap()
        .is_dir());
    std::fs::rename(target.join("d"), target.join("d-moved")).unwrap();
    std::os::unix::fs::symlink(&outside.dir, target.join("d")).unwrap();
    let out = paused.finish();

    outside.assert_untouched(&out);
    // Restored safely: into the directory it created, wherever that went.
    assert_success(&out, &["restore"]);
    assert_eq!(
        std::fs::read(target.join("d-moved/sub/f3")).unwrap(),
        b"three\n"
    );
    assert_eq!(mode(&target.join("d-moved")), 0o777);
    assert!(std::fs::symlink_metadata(target.join("d"))
        .unwrap()
        .file_type()
        .is_symlink());
}

/// Issue 17, point 3: files were created 0666 & umask and directories
/// 0777 & umask, and got their stored modes only at the end, so secrets
/// were readable while the restore ran.
#[test]
fn modes_are_private_while_a_restore_runs() {
    let t = TestRepo::new();
    let src = t.path("src");
    std::fs::create_dir_all(src.join("open/inner")).unwrap();
    for (name, m) in [
        ("open/inner/secret", 0o644),
        ("open/readme", 0o666),
        ("tool", 0o4755),
    ] {
        std::fs::write(src.join(name), format!("{name}\n")).unwrap();
        chmod(&src.join(name), m);
    }
    chmod(&src.join("open/inner"), 0o755);
    chmod(&src.join("open"), 0o777);
    t.backup_json(&[&src]);

    let target = t.dir.path().join("target");
    let paused = Paused::start(
        &t,
        &format!("latest:{}", path_str(&src)),
        &target,
        "restore-file-written",
    );
    let mut files = 0;
    for (rel, path) in walk(&target) {
        let m = std::fs::symlink_metadata(&path).unwrap();
        let rel = String::from_utf8_lossy(&rel).into_owned();
        if m.is_dir() {
            assert_eq!(m.mode() & 0o7777 & !0o700, 0, "{rel} is {:o}", m.mode());
        } else {
            files += 1;
            assert_eq!(m.mode() & 0o7777 & !0o600, 0, "{rel} is {:o}", m.mode());
        }
    }
    assert!(files > 0, "no file was written before the pause");
    let out = paused.finish();
    assert_success(&out, &["restore"]);
    assert_trees_equal(&src, &target);
}

/// Symlinks already in the target where the snapshot has a file, a
/// directory or a hard link are replaced, never followed.
#[test]
fn symlinks_already_in_the_target_are_replaced_not_followed() {
    let t = TestRepo::new();
    let src = t.path("src");
    std::fs::create_dir_all(src.join("d")).unwrap();
    std::fs::write(src.join("d/g"), b"in d\n").unwrap();
    std::fs::write(src.join("f"), b"a file\n").unwrap();
    std::fs::write(src.join("h1"), b"linked\n").unwrap();
    std::fs::hard_link(src.join("h1"), src.join("h2")).unwrap();
    std::fs::write(src.join("big"), random_bytes(9, 300_000)).unwrap();
    t.backup_json(&[&src]);
    let outside = Outside::new(&t);

    let target = t.path("target");
    for name in ["f", "d", "h2", "big"] {
        let to = if name == "d" {
            outside.dir.clone()
        } else {
            outside.dir.join("keep")
        };
        std::os::unix::fs::symlink(&to, target.join(name)).unwrap();
    }
    let out = t.cmd(&[
        "restore",
        &format!("latest:{}", path_str(&src)),
        "--target",
        path_str(&target),
    ]);
    outside.assert_untouched(&out);
    assert_success(&out, &["restore"]);
    assert_trees_equal(&src, &target);
}

/// `levels` directories `0/1/2/…` under `src`, each holding a file `f`.
fn nested_dirs(src: &Path, levels: usize) {
    let mut dir = src.to_path_buf();
    for level in 0..levels {
        dir = dir.join(format!("{level}"));
        std::fs::create_dir(&dir).unwrap();
        std::fs::write(dir.join("f"), format!("{level}\n")).unwrap();
    }
}

/// A tree deeper than the directory descriptors the restorer holds (64):
/// ancestors closed on the way down are reopened through `..` on the way
/// up, and get their metadata.
#[test]
fn a_tree_deeper_than_the_held_descriptors_is_restored_whole() {
    let t = TestRepo::new();
    let src = t.path("src");
    nested_dirs(&src, 100);
    set_mtimes_recursive(&src, 1_500_000_000, 5);
    chmod(&src.join("0"), 0o750);
    t.backup_json(&[&src]);
    let target = t.restore(&format!("latest:{}", path_str(&src)), "target");
    assert_trees_equal(&src, &target);
}

/// The other side of holding only 64 descriptors: a directory reopened
/// as `..` of its child must be the one restored. Here the child was moved
/// elsewhere while the restore ran, so its `..` is another directory, and
/// the restore stops instead of writing there.
#[test]
fn an_ancestor_moved_while_its_descriptor_was_closed_stops_the_restore() {
    let t = TestRepo::new();
    let src = t.path("src");
    nested_dirs(&src, 70);
    t.backup_json(&[&src]);
    let target = t.dir.path().join("target");
    // The first file written is the deepest one: every directory is on
    // the stack, those above "6" closed.
    let paused = Paused::start(
        &t,
        &format!("latest:{}", path_str(&src)),
        &target,
        "restore-file-written",
    );
    std::fs::create_dir(target.join("elsewhere")).unwrap();
    std::fs::rename(target.join("0/1/2/3/4/5/6"), target.join("elsewhere/6")).unwrap();
    let out = paused.finish();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{stderr}");
    assert!(stderr.contains("was moved during the restore"), "{stderr}");
    assert!(
        !target.join("elsewhere/f").exists(),
        "written into the wrong directory"
    );
    assert!(
        !target.join("0/1/2/3/4/5/f").exists(),
        "went on after the move"
    );
}

/// `--no-same-owner` keeps the restoring user as owner; `--no-special`
/// leaves out fifos and device nodes and clears set-user-ID and
/// set-group-ID bits on files (root only: a foreign owner and a device
/// node need it).
#[test]
fn no_same_owner_and_no_special_restore_untrusted_snapshots_safely() {
    if !is_root() {
        note("not root: --no-same-owner and --no-special are not tested");
        return;
    }
    let t = TestRepo::new();
    let src = t.path("src");
    std::fs::create_dir(src.join("sub")).unwrap();
    std::fs::write(src.join("sub/plain"), b"plain\n").unwrap();
    std::fs::write(src.join("suid"), b"#!/bin/sh\n").unwrap();
    std::fs::write(src.join("sgid"), b"#!/bin/sh\n").unwrap();
    run_tool("mkfifo", &[src.join("fifo")]);
    run_tool(
        "mknod",
        &[
            src.join("null").as_os_str(),
            "c".as_ref(),
            "1".as_ref(),
            "3".as_ref(),
        ],
    );
    for p in ["sub", "sub/plain", "suid", "sgid", "fifo", "null"] {
        std::os::unix::fs::lchown(src.join(p), Some(1234), Some(5678)).unwrap();
    }
    chmod(&src.join("suid"), 0o4755);
    chmod(&src.join("sgid"), 0o2750);
    t.backup_json(&[&src]);
    let selector = format!("latest:{}", path_str(&src));
    let restore = |name: &str, flags: &[&str]| -> PathBuf {
        let target = t.dir.path().join(name);
        let mut args = vec!["restore", &selector, "--target", path_str(&target)];
        args.extend_from_slice(flags);
        t.ok(&args);
        target
    };

    let same = restore("same", &[]);
    assert_trees_equal(&src, &same);

    let (uid, gid) = (0, 0);
    let mine = restore("mine", &["--no-same-owner"]);
    for (rel, path) in walk(&mine) {
        let m = std::fs::symlink_metadata(&path).unwrap();
        let rel = String::from_utf8_lossy(&rel).into_owned();
        assert_eq!((m.uid(), m.gid()), (uid, gid), "{rel}");
    }
    assert_eq!(mode(&mine.join("suid")), 0o4755);
    assert!(std::fs::symlink_metadata(mine.join("fifo")).is_ok());

    let plain = restore("plain", &["--no-special"]);
    assert_eq!(names(&plain), ["sgid", "sub", "suid"]);
    assert_eq!(mode(&plain.join("suid")), 0o755);
    assert_eq!(mode(&plain.join("sgid")), 0o750);
    assert_eq!(std::fs::metadata(plain.join("suid")).unwrap().uid(), 1234);

    let untrusted = restore("untrusted", &["--no-same-owner", "--no-special"]);
    assert_eq!(names(&untrusted), ["sgid", "sub", "suid"]);
    assert_eq!(mode(&untrusted.join("suid")), 0o755);
    let m = std::fs::metadata(untrusted.join("suid")).unwrap();
    assert_eq!((m.uid(), m.gid()), (uid, gid));
    assert_eq!(
        std::fs::read(untrusted.join("sub/plain")).unwrap(),
        b"plain\n"
    );
    // Still one line of summary, no problems.
    let out = t.cmd(&[
        "restore",
        &selector,
        "--target",
        path_str(&t.dir.path().join("again")),
        "--no-special",
    ]);
    assert_success(&out, &["restore --no-special"]);
    assert!(
        !String::from_utf8_lossy(&out.stderr).contains("error"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Without privileges the restorer links hard links through
/// `/proc/self/fd` (`linkat` of an `O_PATH` descriptor needs
/// CAP_DAC_READ_SEARCH) and finds a first link again through directories
/// whose stored modes are already applied (read-only), with `O_PATH`
/// opens that need only search permission.
#[test]
fn an_unprivileged_restore_keeps_hard_links_in_restricted_directories() {
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
    for d in ["a-readonly/sub", "z"] {
        std::fs::create_dir_all(src.join(d)).unwrap();
    }
    std::fs::write(src.join("a-readonly/sub/first"), b"linked\n").unwrap();
    std::fs::hard_link(src.join("a-readonly/sub/first"), src.join("z/second")).unwrap();
    std::os::unix::fs::symlink("second", src.join("z/link")).unwrap();
    run_tool("mkfifo", &[src.join("z/fifo")]);
    if t.run_as.is_some() {
        run_tool("chown", &["-R", "65534:65534", path_str(&src)]);
    }
    chmod(&src.join("z/fifo"), 0o640);
    chmod(&src.join("a-readonly/sub"), 0o555);
    chmod(&src.join("a-readonly"), 0o555);
    set_mtimes_recursive(&src, 1_500_000_000, 3);
    t.backup_json(&[&src]);
    let target = t.dir.path().join("target");
    let selector = format!("latest:{}", path_str(&src));
    let out = t.cmd(&["restore", &selector, "--target", path_str(&target)]);
    assert_success(&out, &["restore as an unprivileged user"]);
    assert_trees_equal(&src, &target);
}

/// A local user can build a directory tree deeper than any path (mkdir
/// relative to the last one). Root's nightly backup must neither overflow
/// its stack nor store a tree readers refuse: it stops where paths end
/// (PATH_MAX), warns (exit 3), and what it stored checks clean and restores.
#[test]
fn a_tree_deeper_than_path_max_is_backed_up_to_its_limit_and_restores() {
    let t = TestRepo::new();
    let src = t.path("deep");
    let mut dir = std::fs::File::open(&src).unwrap();
    for _ in 0..2300 {
        // Relative to the last directory: no path this long exists.
        let child = {
            use std::os::fd::AsRawFd;
            let fd = dir.as_raw_fd();
            let at = PathBuf::from(format!("/proc/self/fd/{fd}/d"));
            std::fs::create_dir(&at).unwrap();
            std::fs::File::open(&at).unwrap()
        };
        dir = child;
    }
    drop(dir);
    let out = t.cmd(&["backup", path_str(&src)]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(3), "{stderr}");
    assert!(stderr.contains("cannot read"), "{stderr}");
    t.ok(&["check"]);
    let listed = t.ok(&["ls", "latest"]);
    let depth = listed.lines().count();
    assert!((2000..=2048).contains(&depth), "{depth} levels stored");
    let target = t.restore("latest", "restored");
    let mut deepest = target.clone();
    let mut levels = 0;
    while let Ok(Some(entry)) = std::fs::read_dir(&deepest).map(|mut d| d.next()) {
        deepest = entry.unwrap().path();
        levels += 1;
        if deepest.as_os_str().len() > 3900 {
            break;
        }
    }
    assert!(levels > 1900, "restored {levels} levels");
}
