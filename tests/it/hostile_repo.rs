//! A repository someone else can write to, and a machine other users
//! share: files planted in the repository (FIFOs, symlinks, expensive key
//! files) cost a command seconds at most, and what cairn writes (the
//! repository, the cache) is the owner's alone.

use crate::common::*;
use std::io::Read;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// A hostile file must cost a command no more than this.
const PROMPT_SECS: u64 = 20;

struct Ran {
    success: bool,
    stdout: String,
    stderr: String,
}

/// Runs `c` with a 4 GiB address-space limit (reading /dev/zero or
/// running Argon2 on 4 GiB fails instead of taking the machine's memory),
/// and panics if it has not finished within `secs`: sends SIGTERM first and
/// says whether that ended it.
fn run_within(c: Command, secs: u64) -> Ran {
    run_limited(c, secs, 4 << 30)
}

/// `run_within` with an address-space limit of `bytes`.
fn run_limited(mut c: Command, secs: u64, bytes: u64) -> Ran {
    // SAFETY: setrlimit is async-signal-safe and touches only the child.
    unsafe {
        c.pre_exec(move || {
            let limit = libc::rlimit {
                rlim_cur: bytes,
                rlim_max: bytes,
            };
            libc::setrlimit(libc::RLIMIT_AS, &limit);
            Ok(())
        });
    }
    c.stdout(Stdio::piped()).stderr(Stdio::piped());
    let description = format!("{c:?}");
    let mut child = c.spawn().expect("spawn cairn");
    let pipe = |r: Option<Box<dyn Read + Send>>| {
        std::thread::spawn(move || {
            let mut s = Vec::new();
            if let Some(mut r) = r {
                let _ = r.read_to_end(&mut s);
            }
            String::from_utf8_lossy(&s).into_owned()
        })
    };
    let out = pipe(child.stdout.take().map(|r| Box::new(r) as _));
    let err = pipe(child.stderr.take().map(|r| Box::new(r) as _));
    let deadline = Instant::now() + Duration::from_secs(secs);
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if Instant::now() > deadline {
            // SAFETY: a signal to our own child, which has not been reaped.
            unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
            let ended = (0..500).any(|_| {
                std::thread::sleep(Duration::from_millis(10));
                child.try_wait().unwrap().is_some()
            });
            let _ = child.kill();
            let _ = child.wait();
            panic!(
                "{description} did not finish within {secs}s; SIGTERM {} it",
                if ended { "ended" } else { "did not end" }
            );
        }
        std::thread::sleep(Duration::from_millis(10));
    };
    Ran {
        success: status.success(),
        stdout: out.join().unwrap(),
        stderr: err.join().unwrap(),
    }
}

fn run(t: &TestRepo, args: &[&str]) -> Ran {
    let mut c = t.command();
    c.args(args);
    run_within(c, PROMPT_SECS)
}

fn fake_id(first: char) -> String {
    std::iter::repeat_n(first, 64).collect()
}

fn mkfifo(path: &Path) {
    run_tool("mkfifo", &[path]);
}

/// A repository with one snapshot of a small tree.
fn with_snapshot() -> TestRepo {
    let t = TestRepo::new();
    let src = t.path("src");
    std::fs::write(src.join("a.txt"), b"hostile neighbours\n").unwrap();
    t.backup_json(&[&src]);
    t
}

#[test]
fn a_fifo_planted_in_locks_hangs_no_command() {
    let t = with_snapshot();
    mkfifo(&t.repo.join("locks").join(fake_id('0')));
    let src = t.dir.path().join("src");
    for args in [
        &["backup", path_str(&src)][..],
        &["check"],
        &["forget", "--keep-last", "1"],
        &["unlock"],
    ] {
        let ran = run(&t, args);
        assert!(
            ran.success || ran.stderr.contains("FIFO"),
            "{args:?}: {}",
            ran.stderr
        );
    }
}

#[test]
fn a_fifo_planted_in_snapshots_or_index_is_refused_not_waited_on() {
    let t = with_snapshot();
    mkfifo(&t.repo.join("snapshots").join(fake_id('0')));
    let ran = run(&t, &["snapshots"]);
    assert!(ran.success, "{}", ran.stderr);
    assert!(
        ran.stderr.contains("warning") && ran.stderr.contains("FIFO"),
        "{}",
        ran.stderr
    );

    mkfifo(&t.repo.join("index").join(fake_id('1')));
    let target = t.dir.path().join("restored");
    let ran = run(&t, &["restore", "latest", "--target", path_str(&target)]);
    assert!(ran.success, "{}", ran.stderr);
    assert!(
        ran.stderr.contains("skipping damaged index file") && ran.stderr.contains("FIFO"),
        "{}",
        ran.stderr
    );
    let ran = run(&t, &["check", "--no-password"]);
    assert!(!ran.success, "{}", ran.stdout);
    assert!(ran.stdout.contains("FIFO"), "{}", ran.stdout);
}

/// `args` run with a cache that has never seen the repository, so no key
/// is known to open it and every key file sorting first is tried.
fn run_without_memory(t: &TestRepo, args: &[&str]) -> Ran {
    let mut c = t.command();
    static FRESH: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
    let n = FRESH.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    c.env(
        "CAIRN_CACHE_DIR",
        t.dir.path().join(format!("fresh-cache-{n}")),
    )
    .args(args);
    run_within(c, PROMPT_SECS)
}

#[test]
fn a_key_file_linked_to_dev_zero_is_skipped_with_a_warning() {
    let t = with_snapshot();
    std::os::unix::fs::symlink("/dev/zero", t.repo.join("keys").join(fake_id('0'))).unwrap();
    let ran = run_without_memory(&t, &["snapshots"]);
    assert!(ran.success, "{}", ran.stderr);
    assert!(
        ran.stderr.contains("skipping key file") && ran.stderr.contains("symbolic link"),
        "{}",
        ran.stderr
    );
    let ran = run(&t, &["check", "--no-password"]);
    assert!(!ran.success);
    assert!(ran.stdout.contains("symbolic link"), "{}", ran.stdout);
}

/// A well-formed key file, named by its hash, asking for `kdf` and sorting
/// before `before`.
fn plant_key(t: &TestRepo, memory_kib: u64, iterations: u64, before: &str) -> String {
    for attempt in 0.. {
        let key = serde_json::json!({
            "version": 1,
            "created": "2026-01-01T00:00:00+00:00",
            "hostname": format!("planted-{attempt}"),
            "username": "mallory",
            "kdf": "argon2id",
            "kdf_params": {"memory_kib": memory_kib, "iterations": iterations, "parallelism": 4},
            "salt": "ab".repeat(32),
            "data": "cd".repeat(32 + 41),
        });
        let bytes = serde_json::to_vec_pretty(&key).unwrap();
        let name = blake3::hash(&bytes).to_hex().to_string();
        if name.as_str() < before {
            std::fs::write(t.repo.join("keys").join(&name), &bytes).unwrap();
            return name;
        }
    }
    unreachable!()
}

fn key_names(t: &TestRepo) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(t.repo.join("keys"))
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    names.sort();
    names
}

#[test]
fn a_planted_key_file_asking_for_a_huge_argon2_cost_is_skipped_promptly() {
    let t = with_snapshot();
    let real = key_names(&t).remove(0);
    // 4 GiB and 64 passes: minutes of Argon2 on every command before.
    let planted = plant_key(&t, 4 * 1024 * 1024, 64, &real);
    let started = Instant::now();
    let ran = run_without_memory(&t, &["snapshots"]);
    assert!(ran.success, "{}", ran.stderr);
    assert!(
        ran.stderr
            .contains(&format!("skipping key file {}", &planted[..8]))
            && ran.stderr.contains("Argon2"),
        "{}",
        ran.stderr
    );
    assert!(started.elapsed() < Duration::from_secs(10));
}

/// A planted key file within the limits but at the cap (1 GiB × 4 passes,
/// about 2 s), named to sort first, is tried after the cheap real one:
/// under a 700 MB address-space limit, running Argon2 on it would fail.
#[test]
fn a_planted_key_file_at_the_cost_cap_is_tried_after_cheaper_ones() {
    let t = with_snapshot();
    let real = key_names(&t).remove(0);
    plant_key(&t, 1024 * 1024, 4, &real);
    let mut c = t.command();
    c.env("CAIRN_CACHE_DIR", t.dir.path().join("fresh-cache"))
        .arg("snapshots");
    let ran = run_limited(c, PROMPT_SECS, 700 << 20);
    assert!(ran.success, "{}", ran.stderr);
    assert!(ran.stdout.contains("1 snapshot"), "{}", ran.stdout);
}

#[test]
fn the_key_used_last_or_hinted_is_tried_first() {
    let t = with_snapshot();
    let real = key_names(&t).remove(0);
    // A damaged key file sorting first: trying it gives a warning.
    let damaged = fake_id('0');
    std::fs::write(t.repo.join("keys").join(&damaged), b"{}").unwrap();
    let tried_damaged = |ran: &Ran| ran.stderr.contains("skipping key file 00000000");

    let mut c = t.command();
    c.env("CAIRN_CACHE_DIR", t.dir.path().join("fresh-cache"));
    c.arg("snapshots");
    let ran = run_within(c, PROMPT_SECS);
    assert!(ran.success && tried_damaged(&ran), "{}", ran.stderr);

    // The same cache remembers which key opened the repository.
    let mut c = t.command();
    c.env("CAIRN_CACHE_DIR", t.dir.path().join("fresh-cache"));
    c.arg("snapshots");
    let ran = run_within(c, PROMPT_SECS);
    assert!(ran.success && !tried_damaged(&ran), "{}", ran.stderr);

    // Without that memory, a hint does the same.
    for hint in [
        vec!["--key-hint".to_string(), real[..8].to_string()],
        vec![],
    ] {
        let mut c = t.command();
        c.env(
            "CAIRN_CACHE_DIR",
            t.dir.path().join(format!("cache-{}", hint.len())),
        );
        c.args(&hint).arg("snapshots");
        let ran = run_within(c, PROMPT_SECS);
        assert!(ran.success, "{}", ran.stderr);
        assert_eq!(
            tried_damaged(&ran),
            hint.is_empty(),
            "{hint:?}: {}",
            ran.stderr
        );
    }
    let mut c = t.command();
    c.env("CAIRN_CACHE_DIR", t.dir.path().join("cache-env"))
        .env("CAIRN_KEY_HINT", &real[..10])
        .arg("snapshots");
    let ran = run_within(c, PROMPT_SECS);
    assert!(ran.success && !tried_damaged(&ran), "{}", ran.stderr);
}

#[test]
fn symlinks_in_packs_and_snapshots_are_not_followed() {
    let t = with_snapshot();
    let outside = t.path("outside");
    // A snapshot moved out of the repository and linked back in.
    let snapshot = walk_files(&t.repo.join("snapshots")).remove(0).1;
    let moved = outside.join("snapshot");
    std::fs::rename(&snapshot, &moved).unwrap();
    std::os::unix::fs::symlink(&moved, &snapshot).unwrap();
    let ran = run(&t, &["--json", "snapshots"]);
    assert!(ran.success, "{}", ran.stderr);
    assert_eq!(ran.stdout.trim(), "[]", "{}", ran.stderr);
    assert!(ran.stderr.contains("symbolic link"), "{}", ran.stderr);
    std::fs::remove_file(&snapshot).unwrap();
    std::fs::rename(&moved, &snapshot).unwrap();

    // A pack linked back in, and a whole pack directory linked.
    let (_, pack) = walk_files(&t.repo.join("packs")).remove(0);
    let moved = outside.join("pack");
    std::fs::rename(&pack, &moved).unwrap();
    std::os::unix::fs::symlink(&moved, &pack).unwrap();
    let ran = run(&t, &["check", "--read-data"]);
    assert!(!ran.success, "{}", ran.stdout);
    assert!(ran.stdout.contains("symbolic link"), "{}", ran.stdout);
    std::fs::remove_file(&pack).unwrap();
    std::fs::rename(&moved, &pack).unwrap();
    assert!(run(&t, &["check", "--read-data"]).success);

    let pack_dir = pack.parent().unwrap().to_path_buf();
    let moved_dir = outside.join("packdir");
    std::fs::rename(&pack_dir, &moved_dir).unwrap();
    std::os::unix::fs::symlink(&moved_dir, &pack_dir).unwrap();
    let ran = run(&t, &["check", "--read-data"]);
    assert!(
        !ran.success,
        "a linked pack directory was followed: {}",
        ran.stdout
    );
}

/// Every directory and file below `root` has exactly these modes.
fn assert_modes(root: &Path, dir_mode: u32, file_mode: u32) {
    let meta = std::fs::symlink_metadata(root).unwrap();
    assert_eq!(meta.mode() & 0o7777, dir_mode, "{}", root.display());
    for (_, path) in walk(root) {
        let meta = std::fs::symlink_metadata(&path).unwrap();
        let want = if meta.is_dir() { dir_mode } else { file_mode };
        assert_eq!(
            meta.permissions().mode() & 0o7777,
            want,
            "{:o} {}",
            meta.mode(),
            path.display()
        );
    }
}

#[test]
fn repository_and_cache_are_private_after_init_and_backup() {
    let t = with_snapshot();
    t.ok(&["check"]);
    assert_modes(&t.repo, 0o700, 0o600);
    assert_modes(&t.cache, 0o700, 0o600);
}

#[test]
fn without_home_or_xdg_cache_home_no_cache_is_written_anywhere() {
    let t = with_snapshot();
    let shared = Path::new("/tmp/.cache/cairn");
    let before: Vec<_> = std::fs::read_dir(shared)
        .map(|d| d.map(|e| e.unwrap().file_name()).collect())
        .unwrap_or_default();
    let src = t.dir.path().join("src");
    for args in [
        &["backup", path_str(&src)][..],
        &["ls", "latest"],
        &["check"],
    ] {
        let mut c = t.command();
        c.env_remove("HOME")
            .env_remove("XDG_CACHE_HOME")
            .env_remove("CAIRN_CACHE_DIR")
            .args(args);
        let ran = run_within(c, PROMPT_SECS);
        assert!(ran.success, "{args:?}: {}", ran.stderr);
        assert!(
            ran.stderr.contains("no cache directory") && ran.stderr.contains("in memory"),
            "{args:?}: {}",
            ran.stderr
        );
    }
    let after: Vec<_> = std::fs::read_dir(shared)
        .map(|d| d.map(|e| e.unwrap().file_name()).collect())
        .unwrap_or_default();
    assert_eq!(before, after, "a cache was written to {}", shared.display());
}

#[test]
fn a_cache_directory_others_control_is_not_used() {
    let t = with_snapshot();
    let open = t.path("open-cache");
    chmod(&open, 0o777);
    let mut dirs = vec![(open, "written by other users")];
    if is_root() {
        let foreign = t.path("foreign-cache");
        std::os::unix::fs::chown(&foreign, Some(4242), Some(4242)).unwrap();
        dirs.push((foreign, "belongs to user 4242"));
    } else {
        note("not root: the cache owned by another user is not tried");
    }
    for (dir, why) in dirs {
        let mut c = t.command();
        c.env("CAIRN_CACHE_DIR", &dir).args(["ls", "latest"]);
        let ran = run_within(c, PROMPT_SECS);
        assert!(ran.success, "{}", ran.stderr);
        assert!(ran.stderr.contains(why), "{}", ran.stderr);
        assert_eq!(std::fs::read_dir(&dir).unwrap().count(), 0, "{why}");
    }
}

#[test]
fn the_keyless_check_names_what_it_cannot_verify() {
    let t = with_snapshot();
    let out = t.ok(&["check", "--no-password"]);
    let last = out.trim_end().lines().last().unwrap();
    assert!(!last.contains("no errors were found"), "{last}");
    for unseen in ["missing packs", "snapshots are complete", "config"] {
        assert!(last.contains(unseen), "{last}");
    }
}
