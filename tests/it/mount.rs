//! `cairn mount` through the kernel: real FUSE mounts on /dev/fuse (root
//! only; skipped elsewhere). Every mount is held by a guard that unmounts
//! lazily and kills the process on drop, so a failing test never leaves a
//! mount behind that would hang the rest of the suite; every wait has a
//! deadline.

use crate::common::*;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// Seconds any one wait (the mount appearing, the process ending) may take.
const WAIT_SECS: u64 = 20;
const EROFS: i32 = 30;
const EIO: i32 = 5;
const EOPNOTSUPP: i32 = 95;

fn can_mount() -> bool {
    if !is_root() || !Path::new("/dev/fuse").exists() {
        note("mount tests need root and /dev/fuse; skipped");
        return false;
    }
    true
}

/// A running `cairn mount`. Dropping it unmounts (lazily: a stuck file
/// system must not block the test) and ends the process.
struct Mounted {
    child: Option<Child>,
    dir: PathBuf,
}

impl Mounted {
    fn start(t: &TestRepo, extra: &[&str]) -> Mounted {
        let dir = t.path("mnt");
        let child = t
            .command()
            .arg("mount")
            .arg(&dir)
            .args(extra)
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn cairn mount");
        let mut m = Mounted {
            child: Some(child),
            dir,
        };
        let deadline = Instant::now() + Duration::from_secs(WAIT_SECS);
        while !m.dir.join("snapshots").is_dir() {
            if let Some(status) = m.child.as_mut().unwrap().try_wait().unwrap() {
                let out = m.child.take().unwrap().wait_with_output().unwrap();
                panic!(
                    "cairn mount ended with {status}: {}",
                    String::from_utf8_lossy(&out.stderr)
                );
            }
            assert!(Instant::now() < deadline, "the mount did not appear");
            std::thread::sleep(Duration::from_millis(20));
        }
        m
    }

    fn path(&self, rel: &str) -> PathBuf {
        self.dir.join(rel)
    }

    /// Waits for the process to end by itself; its exit status.
    fn wait(&mut self) -> std::process::ExitStatus {
        let mut child = self.child.take().expect("still running");
        wait_timeout(&mut child, WAIT_SECS)
    }

    fn pid(&self) -> u32 {
        self.child.as_ref().unwrap().id()
    }
}

impl Drop for Mounted {
    fn drop(&mut self) {
        if is_mounted(&self.dir) {
            let _ = Command::new("fusermount3")
                .args(["-u", "-z"])
                .arg(&self.dir)
                .status();
            if is_mounted(&self.dir) {
                let _ = Command::new("umount").arg("-l").arg(&self.dir).status();
            }
        }
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

fn is_mounted(dir: &Path) -> bool {
    let dir = path_str(dir);
    std::fs::read_to_string("/proc/self/mounts")
        .unwrap()
        .lines()
        .any(|l| l.split(' ').nth(1) == Some(dir))
}

/// The mount options /proc/self/mounts shows for `dir`.
fn mount_options(dir: &Path) -> Vec<String> {
    let dir = path_str(dir);
    let mounts = std::fs::read_to_string("/proc/self/mounts").unwrap();
    let line = mounts
        .lines()
        .find(|l| l.split(' ').nth(1) == Some(dir))
        .unwrap_or_else(|| panic!("{dir} is not mounted"));
    line.split(' ')
        .nth(3)
        .unwrap()
        .split(',')
        .map(String::from)
        .collect()
}

fn names(dir: &Path) -> Vec<String> {
    let mut out: Vec<String> = std::fs::read_dir(dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    out.sort();
    out
}

fn xattrs(path: &Path) -> Vec<(String, Vec<u8>)> {
    let mut out: Vec<_> = xattr::list(path)
        .unwrap()
        .map(|n| {
            let value = xattr::get(path, &n).unwrap().unwrap_or_default();
            (n.into_string().unwrap(), value)
        })
        .collect();
    out.sort();
    out
}

/// A tree with what the mount must show as stored: files of one and many
/// blobs, a sparse file, a symlink, a hard link, xattrs, odd modes and a
/// nested directory.
fn make_tree(src: &Path) {
    std::fs::create_dir_all(src.join("dir/deeper")).unwrap();
    std::fs::write(src.join("small.txt"), b"hello through the mount\n").unwrap();
    std::fs::write(src.join("dir/big.bin"), random_bytes(7, 3 << 20)).unwrap();
    std::fs::write(src.join("dir/deeper/sql"), sql_bytes(3, 700_000)).unwrap();
    std::fs::write(src.join("empty"), b"").unwrap();
    let sparse = std::fs::File::create(src.join("sparse")).unwrap();
    sparse.set_len(8 << 20).unwrap();
    std::os::unix::fs::FileExt::write_all_at(&sparse, b"middle", 5 << 20).unwrap();
    drop(sparse);
    std::os::unix::fs::symlink("dir/big.bin", src.join("link")).unwrap();
    std::fs::hard_link(src.join("small.txt"), src.join("dir/hard")).unwrap();
    xattr::set(src.join("small.txt"), "user.colour", b"blue\0binary").unwrap();
    // More entries than one readdir reply holds: listed in several calls.
    std::fs::create_dir(src.join("many")).unwrap();
    for i in 0..300 {
        std::fs::write(
            src.join(format!("many/entry-with-a-long-name-{i:04}")),
            i.to_string(),
        )
        .unwrap();
    }
    chmod(&src.join("dir/deeper/sql"), 0o600);
    chmod(&src.join("dir/deeper"), 0o710);
}

/// Every entry under `src` and the same path under `mounted`: type, mode,
/// owner, size, mtime, link count, symlink target, xattrs and every byte.
fn assert_mount_matches(src: &Path, mounted: &Path) {
    let mut stack = vec![PathBuf::new()];
    let mut files = 0;
    while let Some(rel) = stack.pop() {
        let (a, b) = (src.join(&rel), mounted.join(&rel));
        assert_eq!(names(&a), names(&b), "{}", rel.display());
        for name in names(&a) {
            let rel = rel.join(&name);
            let (a, b) = (src.join(&rel), mounted.join(&rel));
            let (ma, mb) = (a.symlink_metadata().unwrap(), b.symlink_metadata().unwrap());
            let what = rel.display();
            assert_eq!(ma.file_type(), mb.file_type(), "{what}: type");
            assert_eq!(
                ma.permissions().mode(),
                mb.permissions().mode(),
                "{what}: mode"
            );
            assert_eq!((ma.uid(), ma.gid()), (mb.uid(), mb.gid()), "{what}: owner");
            assert_eq!(ma.mtime(), mb.mtime(), "{what}: mtime");
            assert_eq!(ma.mtime_nsec(), mb.mtime_nsec(), "{what}: mtime ns");
            if ma.is_dir() {
                stack.push(rel.clone());
                continue;
            }
            assert_eq!(ma.nlink(), mb.nlink(), "{what}: links");
            assert_eq!(ma.len(), mb.len(), "{what}: size");
            if ma.file_type().is_symlink() {
                assert_eq!(
                    std::fs::read_link(&a).unwrap(),
                    std::fs::read_link(&b).unwrap()
                );
                continue;
            }
            assert_eq!(xattrs(&a), xattrs(&b), "{what}: xattrs");
            assert!(
                std::fs::read(&a).unwrap() == std::fs::read(&b).unwrap(),
                "{what}: content"
            );
            files += 1;
        }
    }
    assert!(files >= 5, "only {files} files compared");
}

#[test]
fn mount_shows_every_snapshot_as_stored_refuses_writes_and_sigterm_unmounts() {
    if !can_mount() {
        return;
    }
    let t = TestRepo::new();
    let src = t.path("src");
    make_tree(&src);
    let snap = t.backup_json(&[path_str(&src), "--tag", "daily", "--host", "box"]);
    let id = snap["snapshot_id"].as_str().unwrap().to_string();
    let time = t.snapshots_json(&[])[0]["time"]
        .as_str()
        .unwrap()
        .to_string();
    let mut m = Mounted::start(&t, &[]);

    assert_eq!(names(&m.dir), ["hosts", "ids", "snapshots", "tags"]);
    let snapshots = names(&m.path("snapshots"));
    assert_eq!(snapshots.len(), 2, "{snapshots:?}");
    assert_eq!(snapshots[1], "latest");
    assert_eq!(
        std::fs::read_link(m.path("snapshots/latest")).unwrap(),
        Path::new(&snapshots[0])
    );
    assert_eq!(names(&m.path("ids")), [id[..8].to_string()]);
    assert_eq!(names(&m.path("hosts")), ["box"]);
    assert_eq!(
        names(&m.path("hosts/box")),
        [snapshots[0].clone(), "latest".into()]
    );
    assert_eq!(names(&m.path("tags")), ["daily"]);
    assert_eq!(
        names(&m.path("tags/daily")),
        [snapshots[0].clone(), "latest".into()]
    );
    // The snapshot directory carries the snapshot's time.
    let dir_mtime = std::fs::metadata(m.path(&format!("snapshots/{}", snapshots[0])))
        .unwrap()
        .mtime();
    let stored = chrono::DateTime::parse_from_rfc3339(&time)
        .unwrap()
        .timestamp();
    assert_eq!(dir_mtime, stored);

    let inside = |top: &str| m.path(top).join(src.strip_prefix("/").unwrap());
    assert_mount_matches(&src, &inside("snapshots/latest"));
    assert_mount_matches(&src, &inside(&format!("ids/{}", &id[..8])));
    assert_eq!(
        std::fs::read(inside("tags/daily/latest").join("small.txt")).unwrap(),
        b"hello through the mount\n"
    );

    // Hard links: one inode under both names, as in the source; the link
    // found first by its second name (a fresh view of the snapshot).
    let ino = |dir: &Path, rel: &str| dir.join(rel).symlink_metadata().unwrap().ino();
    let fresh = inside("hosts/box/latest");
    assert_eq!(ino(&fresh, "dir/hard"), ino(&fresh, "small.txt"));
    assert_ne!(ino(&fresh, "small.txt"), ino(&fresh, "empty"));
    let latest = inside("snapshots/latest");
    assert_eq!(ino(&latest, "small.txt"), ino(&latest, "dir/hard"));
    assert_eq!(ino(&src, "small.txt"), ino(&src, "dir/hard"));

    // What `ls -l` asks of every file: "not supported" where no xattr is
    // stored (so it stops asking), "no such attribute" where some are.
    let probe = |rel: &str| xattr::get(latest.join(rel), "security.selinux");
    assert_eq!(probe("empty").unwrap_err().raw_os_error(), Some(EOPNOTSUPP));
    assert_eq!(probe("small.txt").unwrap(), None);
    assert_eq!(
        xattr::get(latest.join("small.txt"), "user.colour").unwrap(),
        Some(b"blue\0binary".to_vec())
    );

    // Private to the mounting user unless --allow-other is given.
    let options = mount_options(&m.dir);
    assert!(options.iter().any(|o| o == "ro"), "{options:?}");
    assert!(!options.iter().any(|o| o == "allow_other"), "{options:?}");

    // Read-only: writes, new files and new directories are refused.
    let file = inside("snapshots/latest").join("small.txt");
    let err = std::fs::OpenOptions::new()
        .write(true)
        .open(&file)
        .unwrap_err();
    assert_eq!(err.raw_os_error(), Some(EROFS), "{err}");
    let err = std::fs::write(inside("snapshots/latest").join("new"), b"x").unwrap_err();
    assert_eq!(err.raw_os_error(), Some(EROFS), "{err}");
    let err = std::fs::create_dir(m.path("snapshots/new")).unwrap_err();
    assert_eq!(err.raw_os_error(), Some(EROFS), "{err}");
    let err = xattr::set(&file, "user.other", b"x").unwrap_err();
    assert_eq!(err.raw_os_error(), Some(EROFS), "{err}");

    // SIGTERM: a clean unmount and exit 0.
    run_tool("kill", &["-TERM", &m.pid().to_string()]);
    let status = m.wait();
    assert_eq!(status.code(), Some(0), "{status}");
    assert!(!is_mounted(&m.dir), "still mounted after SIGTERM");
}

#[test]
fn a_snapshot_taken_while_mounted_appears_and_fusermount_ends_the_mount() {
    if !can_mount() {
        return;
    }
    let t = TestRepo::new();
    let src = t.path("src");
    std::fs::write(src.join("first"), b"one").unwrap();
    t.backup_json(&[path_str(&src)]);
    let mut m = Mounted::start(&t, &[]);
    assert_eq!(names(&m.path("ids")).len(), 1);

    std::fs::write(src.join("second"), random_bytes(11, 300_000)).unwrap();
    let snap = t.backup_json(&[path_str(&src), "--tag", "later"]);
    let id = snap["snapshot_id"].as_str().unwrap()[..8].to_string();
    let deadline = Instant::now() + Duration::from_secs(WAIT_SECS);
    while !names(&m.path("ids")).contains(&id) {
        assert!(Instant::now() < deadline, "the new snapshot did not appear");
        std::thread::sleep(Duration::from_millis(200));
    }
    assert_eq!(names(&m.path("snapshots")).len(), 3);
    let second = m
        .path(&format!("ids/{id}"))
        .join(src.strip_prefix("/").unwrap())
        .join("second");
    assert_eq!(std::fs::read(second).unwrap(), random_bytes(11, 300_000));
    assert_eq!(names(&m.path("tags")), ["later"]);

    run_tool("fusermount3", &["-u", path_str(&m.dir)]);
    let status = m.wait();
    assert_eq!(status.code(), Some(0), "{status}");

    // --allow-other opens it to other users, with the stored owners and
    // modes checked by the kernel.
    let m = Mounted::start(&t, &["--allow-other"]);
    let options = mount_options(&m.dir);
    assert!(options.iter().any(|o| o == "allow_other"), "{options:?}");
    assert!(
        options.iter().any(|o| o == "default_permissions"),
        "{options:?}"
    );
}

#[test]
fn a_damaged_pack_fails_only_its_file_with_eio_and_the_mount_keeps_working() {
    if !can_mount() {
        return;
    }
    let t = TestRepo::new();
    let src = t.path("src");
    let good = random_bytes(21, 1 << 20);
    std::fs::write(src.join("good"), &good).unwrap();
    t.backup_json(&[path_str(&src)]);
    let packs = |t: &TestRepo| -> Vec<PathBuf> {
        walk_files(&t.repo.join("packs"))
            .into_iter()
            .map(|(_, p)| p)
            .collect()
    };
    let before = packs(&t);
    // The second file's blobs go into a pack of their own.
    std::fs::write(src.join("bad"), random_bytes(22, 2 << 20)).unwrap();
    t.backup_json(&[path_str(&src)]);
    let victim = packs(&t)
        .into_iter()
        .filter(|p| !before.contains(p))
        .max_by_key(|p| std::fs::metadata(p).unwrap().len())
        .expect("a new pack");
    let mut bytes = std::fs::read(&victim).unwrap();
    let at = bytes.len() / 3;
    bytes[at] ^= 0x10;
    std::fs::set_permissions(&victim, std::fs::Permissions::from_mode(0o600)).unwrap();
    std::fs::write(&victim, bytes).unwrap();

    let m = Mounted::start(&t, &["--cache-size", "4M"]);
    let dir = m
        .path("snapshots/latest")
        .join(src.strip_prefix("/").unwrap());
    let err = std::fs::read(dir.join("bad")).unwrap_err();
    assert_eq!(err.raw_os_error(), Some(EIO), "{err}");
    assert_eq!(std::fs::read(dir.join("good")).unwrap(), good);
    assert_eq!(names(&dir), ["bad", "good"]);
    assert_eq!(std::fs::metadata(dir.join("bad")).unwrap().len(), 2 << 20);
    // Still serving after the failure.
    assert_eq!(names(&m.dir), ["hosts", "ids", "snapshots", "tags"]);
}
