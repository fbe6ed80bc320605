//! `check` and `repair` against real damage: bit flips in every kind of
//! repository object, truncated and deleted packs, lost index files, a lost
//! or corrupt local cache. Every fault must be found and named with what it
//! affects, nothing may panic, and what does not depend on the damage must
//! still restore byte-exact.

use crate::common::*;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Output;

/// Two snapshots with disjoint data: `a` (first backup, its own packs and
/// index file) and `b` (second backup). Damage to the first backup's files
/// must leave `b` restorable.
struct Fixture {
    t: TestRepo,
    src_a: PathBuf,
    src_b: PathBuf,
    snap_a: String,
    snap_b: String,
    /// Pack and index file names written by the first backup.
    packs_a: Vec<PathBuf>,
    index_a: Vec<PathBuf>,
    /// The key file made by init (the main password's).
    key_main: PathBuf,
}

fn files_under(dir: &Path) -> Vec<PathBuf> {
    let mut out: Vec<PathBuf> = walk_files(dir).into_iter().map(|(_, p)| p).collect();
    out.sort();
    out
}

fn fixture() -> Fixture {
    let t = TestRepo::uninitialised();
    t.init(&[&FAST_KDF[..], &["--pack-size", "1"]].concat());
    let key_main = files_under(&t.repo.join("keys")).remove(0);
    let src_a = t.path("a");
    std::fs::create_dir_all(src_a.join("db")).unwrap();
    std::fs::write(src_a.join("db/app.sql"), sql_bytes(11, 3 << 20)).unwrap();
    std::fs::write(src_a.join("notes.txt"), b"first backup\n").unwrap();
    std::fs::write(src_a.join("blob.bin"), random_bytes(12, 700_000)).unwrap();
    let snap_a = t.backup_json(&[&src_a])["snapshot_id"]
        .as_str()
        .unwrap()
        .to_string();
    let packs_a = files_under(&t.repo.join("packs"));
    let index_a = files_under(&t.repo.join("index"));
    let src_b = t.path("b");
    std::fs::write(src_b.join("other.sql"), sql_bytes(21, 2 << 20)).unwrap();
    std::fs::write(src_b.join("small"), b"b\n").unwrap();
    let snap_b = t.backup_json(&[&src_b])["snapshot_id"]
        .as_str()
        .unwrap()
        .to_string();
    Fixture {
        t,
        src_a,
        src_b,
        snap_a,
        snap_b,
        packs_a,
        index_a,
        key_main,
    }
}

fn check(t: &TestRepo, args: &[&str]) -> (i32, String) {
    let out = t.command().arg("check").args(args).run();
    assert_no_panic(&out);
    let code = out.status.code().expect("check was killed by a signal");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (code, text)
}

fn assert_no_panic(out: &Output) {
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        !err.contains("panicked") && !err.contains("internal error"),
        "cairn panicked: {err}"
    );
    assert!(
        out.status.code().is_some(),
        "cairn died from a signal: {}",
        out.status
    );
}

fn assert_restores(t: &TestRepo, snapshot: &str, src: &Path, target: &str) {
    let target = t.restore(
        &format!("{snapshot}:{}", path_str(src)),
        &format!("restore-{target}"),
    );
    assert_trees_equal(src, &target);
}

fn flip_bit(path: &Path, at: usize, bit: u8) {
    let mut bytes = std::fs::read(path).unwrap();
    bytes[at] ^= 1 << bit;
    make_file_writable(path);
    std::fs::write(path, bytes).unwrap();
}

fn make_file_writable(path: &Path) {
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600)).unwrap();
}

fn name_of(path: &Path) -> String {
    path.file_name().unwrap().to_string_lossy().into_owned()
}

fn largest(paths: &[PathBuf]) -> PathBuf {
    paths
        .iter()
        .max_by_key(|p| std::fs::metadata(p).unwrap().len())
        .unwrap()
        .clone()
}

#[test]
fn clean_repository_passes_every_form_of_check() {
    let f = fixture();
    let t = &f.t;
    for args in [
        &[][..],
        &["--read-data"],
        &["--read-data-subset", "10%"],
        &["--read-data-subset", "1M"],
        &["--no-password"],
        &["--no-password", "--read-data"],
    ] {
        let (code, text) = check(t, args);
        assert_eq!(code, 0, "check {args:?}: {text}");
        let clean = if args.contains(&"--no-password") {
            "no file differs from its name"
        } else {
            "no errors were found"
        };
        assert!(
            text.trim_end().lines().last().unwrap().starts_with(clean),
            "check {args:?} verdict: {text}"
        );
    }
    // The slices of n/3 read every pack exactly once between them.
    let mut read = 0;
    for n in 1..=3 {
        let out = t.ok(&["--json", "check", "--read-data-subset", &format!("{n}/3")]);
        let v: serde_json::Value = serde_json::from_str(out.trim()).unwrap();
        assert_eq!(v["clean"], true);
        read += num(&v, "packs_read");
    }
    let out = t.ok(&["--json", "check", "--read-data"]);
    let v: serde_json::Value = serde_json::from_str(out.trim()).unwrap();
    assert_eq!(read, num(&v, "packs_read"));
    assert_eq!(num(&v, "packs_read"), num(&v, "packs"));
    assert_eq!(num(&v, "snapshots"), 2);
    assert!(v["problems"].as_array().unwrap().is_empty());
    // check is read-only: the repository's files are unchanged.
    let before = repo_content_map(&t.repo);
    check(t, &["--read-data"]);
    assert_eq!(before, repo_content_map(&t.repo));
}

/// One bit flipped in each kind of repository object. The flip position
/// comes from a seeded generator, so a failure names a reproducible case.
#[test]
fn bit_flip_in_each_kind_of_object_is_found_and_named() {
    let pristine = fixture();
    // A second key, so a damaged key file leaves a way in.
    let second = pristine.t.dir.path().join("password2");
    std::fs::write(&second, "second password\n").unwrap();
    pristine
        .t
        .ok(&["key", "add", "--new-password-file", path_str(&second)]);
    let mut rng = Rng::new(0xb17f11b);
    let kinds = [
        "pack body",
        "pack header",
        "index file",
        "snapshot",
        "key file",
        "config",
    ];
    for kind in kinds {
        let f = clone_fixture(&pristine);
        let t = &f.t;
        let (victim, at): (PathBuf, usize) = match kind {
            "pack body" => {
                let p = largest(&f.packs_a);
                let len = std::fs::metadata(&p).unwrap().len() as usize;
                (p, rng.below(len as u64 / 2) as usize)
            }
            "pack header" => {
                let p = largest(&f.packs_a);
                let len = std::fs::metadata(&p).unwrap().len() as usize;
                // Inside the sealed header, before the 4-byte trailer.
                (p, len - 5 - rng.below(40) as usize)
            }
            "index file" => {
                let p = f.index_a[0].clone();
                let len = std::fs::metadata(&p).unwrap().len();
                (p, rng.below(len) as usize)
            }
            "snapshot" => {
                let p = t.repo.join("snapshots").join(&f.snap_a);
                let len = std::fs::metadata(&p).unwrap().len();
                (p, rng.below(len) as usize)
            }
            "key file" => {
                // The key file the main password opens.
                let p = f.key_main.clone();
                let len = std::fs::metadata(&p).unwrap().len();
                (p, rng.below(len) as usize)
            }
            _ => {
                let p = t.repo.join("config");
                let len = std::fs::metadata(&p).unwrap().len();
                (p, rng.below(len) as usize)
            }
        };
        let bit = rng.below(8) as u8;
        flip_bit(&victim, at, bit);
        let ctx = format!("[{kind}: {} byte {at} bit {bit}]", name_of(&victim));
        match kind {
            "config" => {
                // Nothing opens without the config: a clear error, exit 1.
                let (code, text) = check(t, &[]);
                assert_eq!(code, 1, "{ctx} {text}");
                assert!(
                    text.contains("config"),
                    "{ctx} does not name the config: {text}"
                );
                assert_eq!(text.trim().lines().count(), 1, "{ctx} not one line: {text}");
                // The keyless check still verifies everything else.
                let (code, text) = check(t, &["--no-password", "--read-data"]);
                assert_eq!(code, 0, "{ctx} keyless: {text}");
                continue;
            }
            "key file" => {
                let (code, text) = check(t, &[]);
                assert_eq!(
                    code, 12,
                    "{ctx} the damaged key was the only one for this password: {text}"
                );
                assert!(text.contains("damaged"), "{ctx} {text}");
                let mut with_second = t.command();
                with_second.env("CAIRN_PASSWORD_FILE", &second);
                let out = with_second.args(["check"]).run();
                assert_no_panic(&out);
                let text = String::from_utf8_lossy(&out.stdout);
                assert_eq!(out.status.code(), Some(1), "{ctx} {text}");
                assert!(text.contains(&name_of(&victim)), "{ctx} not named: {text}");
                let out = t
                    .command()
                    .env("CAIRN_PASSWORD_FILE", &second)
                    .args(["restore", &f.snap_a, "--target"])
                    .arg(t.dir.path().join("via-second"))
                    .run();
                assert_success(&out, &["restore with the second key"]);
                let (code, text) = check(t, &["--no-password"]);
                assert_eq!(code, 1, "{ctx} keyless: {text}");
                assert!(text.contains(&name_of(&victim)), "{ctx} keyless: {text}");
                continue;
            }
            _ => {}
        }
        let read_data = kind.starts_with("pack");
        let args: &[&str] = if read_data { &["--read-data"] } else { &[] };
        let (code, text) = check(t, args);
        assert_eq!(code, 1, "{ctx} check did not fail: {text}");
        assert!(
            text.contains(&name_of(&victim)),
            "{ctx} check does not name the damaged object: {text}"
        );
        assert!(
            text.trim_end()
                .lines()
                .last()
                .unwrap()
                .starts_with("repository damaged"),
            "{ctx} verdict: {text}"
        );
        if kind != "pack header" {
            // The damage is traced to the snapshot that depends on it.
            let short_a = &f.snap_a[..8];
            assert!(text.contains(short_a), "{ctx} snapshot a not named: {text}");
        }
        let short_b = &f.snap_b[..8];
        assert!(
            !text.contains(&format!("snapshot {short_b}")),
            "{ctx} snapshot b blamed: {text}"
        );
        // The keyless check finds the same file.
        let (code, text) = check(t, &["--no-password", "--read-data"]);
        assert_eq!(code, 1, "{ctx} keyless: {text}");
        assert!(text.contains(&name_of(&victim)), "{ctx} keyless: {text}");
        // What does not depend on the damage restores byte-exact.
        assert_restores(t, &f.snap_b, &f.src_b, "b-restored");
        if kind == "pack header" {
            // The index still knows every blob: a damaged header loses nothing.
            assert_restores(t, &f.snap_a, &f.src_a, "a-restored");
        }
    }
}

fn clone_fixture(f: &Fixture) -> Fixture {
    let t = TestRepo::uninitialised();
    let status = std::process::Command::new("cp")
        .arg("-a")
        .arg(&f.t.repo)
        .arg(&t.repo)
        .status()
        .unwrap();
    assert!(status.success());
    let moved = |paths: &[PathBuf]| -> Vec<PathBuf> {
        paths
            .iter()
            .map(|p| t.repo.join(p.strip_prefix(&f.t.repo).unwrap()))
            .collect()
    };
    Fixture {
        packs_a: moved(&f.packs_a),
        index_a: moved(&f.index_a),
        key_main: moved(std::slice::from_ref(&f.key_main)).remove(0),
        src_a: f.src_a.clone(),
        src_b: f.src_b.clone(),
        snap_a: f.snap_a.clone(),
        snap_b: f.snap_b.clone(),
        t,
    }
}

#[test]
fn truncated_and_deleted_packs_are_traced_to_the_files_they_hold() {
    let pristine = fixture();
    for delete in [false, true] {
        let f = clone_fixture(&pristine);
        let t = &f.t;
        let victim = largest(&f.packs_a);
        if delete {
            std::fs::remove_file(&victim).unwrap();
        } else {
            let len = std::fs::metadata(&victim).unwrap().len();
            let file = std::fs::OpenOptions::new()
                .write(true)
                .open(&victim)
                .unwrap();
            file.set_len(len / 2).unwrap();
        }
        let ctx = if delete { "[deleted]" } else { "[truncated]" };
        let (code, text) = check(t, &[]);
        assert_eq!(code, 1, "{ctx} {text}");
        let status = if delete { "missing" } else { "truncated" };
        assert!(
            text.contains(&format!("pack {} {status}", name_of(&victim))),
            "{ctx} {text}"
        );
        // Each damaged file is named with its snapshot and chunk count.
        let lines: Vec<&str> = text
            .lines()
            .filter(|l| l.starts_with("damaged: snapshot"))
            .collect();
        assert!(!lines.is_empty(), "{ctx} no damaged file reported: {text}");
        for line in lines {
            assert!(line.contains(&f.snap_a[..8]), "{ctx} {line}");
            assert!(line.contains("chunks unreadable"), "{ctx} {line}");
        }
        assert!(
            text.contains("hint: `cairn repair"),
            "{ctx} no hint: {text}"
        );
        let (code, text) = check(t, &["--read-data"]);
        assert_eq!(code, 1, "{ctx} read-data: {text}");
        assert_restores(t, &f.snap_b, &f.src_b, "b");

        // repair snapshots drops exactly the damaged files; then the
        // repository checks clean and the repaired snapshot restores.
        let damaged: Vec<String> = text
            .lines()
            .filter(|l| l.starts_with("damaged: snapshot"))
            .map(|l| {
                l.split_whitespace()
                    .nth(3)
                    .unwrap()
                    .trim_end_matches(':')
                    .to_string()
            })
            .collect();
        let out = t.ok(&["repair", "snapshots", "--forget"]);
        for path in &damaged {
            assert!(
                out.contains(&format!("dropped {path}")),
                "{ctx} {path} not listed: {out}"
            );
        }
        t.ok(&["repair", "index"]);
        let (code, text) = check(t, &["--read-data"]);
        assert_eq!(code, 0, "{ctx} after repair: {text}");
        let snaps = t.snapshots_json(&["--tag", "repaired"]);
        assert_eq!(snaps.len(), 1, "{ctx}");
        let id = snaps[0]["id"].as_str().unwrap();
        let target = t.restore(&format!("{id}:{}", path_str(&f.src_a)), "restore-repaired");
        let expected: BTreeMap<String, blake3::Hash> = content_map(&f.src_a)
            .into_iter()
            .filter(|(name, _)| !damaged.iter().any(|d| d.ends_with(name.as_str())))
            .collect();
        assert!(
            expected.len() < content_map(&f.src_a).len(),
            "{ctx} nothing dropped"
        );
        assert_eq!(content_map(&target), expected, "{ctx}");
        assert_restores(t, &f.snap_b, &f.src_b, "b-after");
    }
}

#[test]
fn repair_index_after_every_index_file_is_deleted_restores_full_function() {
    let f = fixture();
    let t = &f.t;
    for p in files_under(&t.repo.join("index")) {
        std::fs::remove_file(p).unwrap();
    }
    let (code, text) = check(t, &[]);
    assert_eq!(code, 1, "{text}");
    assert!(text.contains("not in any index"), "{text}");
    assert!(text.contains("hint: `cairn repair index`"), "{text}");
    let out = t.ok(&["repair", "index"]);
    assert!(out.contains("wrote 1 index file"), "{out}");
    let (code, text) = check(t, &["--read-data"]);
    assert_eq!(code, 0, "{text}");
    std::fs::remove_dir_all(&t.cache).unwrap();
    assert_restores(t, &f.snap_a, &f.src_a, "a");
    assert_restores(t, &f.snap_b, &f.src_b, "b");
    // And the repository takes new backups that dedup against the old data.
    let again = t.backup_json(&[&f.src_a]);
    assert_eq!(num(&again, "data_blobs"), 0, "{again}");
}

#[test]
fn damaged_index_file_is_named_and_repair_index_recovers_its_blobs() {
    let f = fixture();
    let t = &f.t;
    let victim = &f.index_a[0];
    flip_bit(victim, 100, 3);
    let (code, text) = check(t, &[]);
    assert_eq!(code, 1, "{text}");
    assert!(
        text.contains(&format!("index file {}", name_of(victim))),
        "{text}"
    );
    t.ok(&["repair", "index"]);
    assert!(!victim.exists(), "the damaged index file was not replaced");
    let (code, text) = check(t, &[]);
    assert_eq!(code, 0, "{text}");
    assert_restores(t, &f.snap_a, &f.src_a, "a");
}

#[test]
fn lost_or_corrupt_local_cache_is_not_damage_and_is_rebuilt() {
    let f = fixture();
    let t = &f.t;
    std::fs::remove_dir_all(&t.cache).unwrap();
    let (code, text) = check(t, &[]);
    assert_eq!(code, 0, "deleted cache: {text}");
    assert_restores(t, &f.snap_a, &f.src_a, "a1");

    // Overwrite every file of the RocksDB cache with garbage of its length.
    let mut rng = Rng::new(7);
    for (_, p) in walk_files(&t.cache) {
        let len = std::fs::metadata(&p).unwrap().len() as usize;
        let mut junk = vec![0u8; len];
        rng.fill(&mut junk);
        std::fs::write(&p, junk).unwrap();
    }
    let (code, text) = check(t, &[]);
    assert_eq!(code, 0, "corrupt cache: {text}");
    assert!(text.contains("local index cache"), "not reported: {text}");
    assert!(text.contains("rebuilt"), "{text}");
    let (code, text) = check(t, &[]);
    assert_eq!(code, 0, "{text}");
    assert!(!text.contains("local index cache"), "not rebuilt: {text}");

    // A cache damaged again is rebuilt by ordinary commands too.
    for (_, p) in walk_files(&t.cache) {
        if name_of(&p).ends_with(".sst") || name_of(&p).starts_with("MANIFEST") {
            let len = std::fs::metadata(&p).unwrap().len() as usize;
            std::fs::write(&p, vec![0xa5u8; len]).unwrap();
        }
    }
    assert_restores(t, &f.snap_b, &f.src_b, "b1");
    std::fs::write(f.src_b.join("later"), b"after the cache broke\n").unwrap();
    let out = t.backup_json(&[&f.src_b]);
    assert_eq!(num(&out, "files_new"), 1, "{out}");
    let (code, text) = check(t, &["--read-data"]);
    assert_eq!(code, 0, "{text}");
}

#[test]
fn stale_cache_entries_cannot_hide_a_missing_blob() {
    // The cache is synced, then the index files are rebuilt without one
    // pack: check must judge by the index files, not the cache.
    let f = fixture();
    let t = &f.t;
    t.ok(&["snapshots"]);
    let victim = largest(&f.packs_a);
    std::fs::remove_file(&victim).unwrap();
    let (code, text) = check(t, &[]);
    assert_eq!(code, 1, "{text}");
    assert!(text.contains(&name_of(&victim)), "{text}");
}
