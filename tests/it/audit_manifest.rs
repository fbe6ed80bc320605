//! Snapshot manifests and the report's presence and integrity check,
//! through the real binary and without the password: each kind of damage
//! fails the report and names the evidence (docs/FORMAT.md 18.2).

use crate::common::*;
use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

const CHECK: &str = "presence and integrity";

/// `cairn audit report --json EXTRA…` with no password source: the report
/// and the exit code.
fn report(t: &TestRepo, repo: &Path, extra: &[&str]) -> (serde_json::Value, i32) {
    let out = t
        .command()
        .env_remove("CAIRN_PASSWORD_FILE")
        .env("CAIRN_REPOSITORY", repo)
        .args(["audit", "report", "--json"])
        .args(extra)
        .output()
        .expect("cannot run cairn");
    let value = serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
        panic!(
            "report is not JSON ({e}): {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        )
    });
    (value, out.status.code().unwrap_or(-1))
}

fn check<'a>(report: &'a serde_json::Value, name: &str) -> &'a serde_json::Value {
    report["checks"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["name"] == name)
        .unwrap_or_else(|| panic!("no check {name} in {report:#}"))
}

/// The evidence line of check `name` that contains `what`, after asserting
/// the report and that check fail.
fn failing_line(t: &TestRepo, repo: &Path, extra: &[&str], name: &str, what: &str) -> String {
    let (r, code) = report(t, repo, extra);
    assert_eq!((code, &r["verdict"]), (1, &"fail".into()), "{r:#}");
    let c = check(&r, name);
    assert_eq!(c["status"], "fail", "{name}: {r:#}");
    c["evidence"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|e| e.as_str())
        .find(|e| e.contains(what))
        .unwrap_or_else(|| panic!("{name} names no {what:?}: {c:#}"))
        .to_string()
}

fn files(dir: &Path) -> BTreeSet<PathBuf> {
    let mut out = BTreeSet::new();
    let Ok(entries) = std::fs::read_dir(dir) else {
        return out;
    };
    for entry in entries.flatten() {
        let path = entry.path();
        if path.is_dir() {
            out.extend(files(&path));
        } else {
            out.insert(path);
        }
    }
    out
}

fn name(path: &Path) -> String {
    path.file_name().unwrap().to_string_lossy().into_owned()
}

/// How reports show an id.
fn short(id: &str) -> &str {
    &id[..12]
}

/// A copy of the repository to damage.
fn copy_repo(t: &TestRepo, label: &str) -> PathBuf {
    let to = t.path(label).join("repo");
    run_tool("cp", &["-a", path_str(&t.repo), path_str(&to)]);
    to
}

/// Two backups: the second adds a file, so the packs of the first are
/// reached by both snapshots and the new ones by the second only. Returns
/// the snapshot ids and the packs each backup added.
fn two_backups() -> (TestRepo, [String; 2], [BTreeSet<PathBuf>; 2]) {
    let t = TestRepo::new();
    let src = t.path("src");
    std::fs::write(src.join("a"), random_bytes(1, 40_000)).unwrap();
    t.ok(&["backup", path_str(&src)]);
    let first_packs = files(&t.repo.join("packs"));
    let first = t.snapshot_ids()[0].clone();
    std::fs::write(src.join("b"), random_bytes(2, 40_000)).unwrap();
    t.ok(&["backup", path_str(&src)]);
    let second_packs: BTreeSet<PathBuf> = files(&t.repo.join("packs"))
        .difference(&first_packs)
        .cloned()
        .collect();
    let second = t
        .snapshot_ids()
        .into_iter()
        .find(|id| *id != first)
        .unwrap();
    assert_eq!(
        files(&t.repo.join("manifests")).len(),
        2,
        "one manifest per snapshot"
    );
    (t, [first, second], [first_packs, second_packs])
}

#[test]
fn a_deleted_truncated_or_bit_flipped_pack_fails_and_names_the_snapshots_it_affects() {
    let (t, [first, second], [first_packs, second_packs]) = two_backups();
    let (r, code) = report(&t, &t.repo, &["--read-packs", "all"]);
    assert_eq!(code, 0, "{r:#}");
    let c = check(&r, CHECK);
    assert_eq!(c["status"], "pass", "{r:#}");
    assert!(
        c["summary"]
            .as_str()
            .unwrap()
            .contains("2 live logged snapshot(s)"),
        "{c:#}"
    );

    // A pack of the first backup deleted: both snapshots may need it, the
    // first surely does.
    let repo = copy_repo(&t, "deleted");
    let pack = first_packs.iter().next().unwrap();
    std::fs::remove_file(repo.join(pack.strip_prefix(&t.repo).unwrap())).unwrap();
    let line = failing_line(&t, &repo, &[], CHECK, "is missing");
    assert!(line.contains(short(&name(pack))), "{line}");
    assert!(line.contains(short(&first)), "{line}");

    // A pack of the second backup cut short by one byte: only the second
    // snapshot is affected.
    let repo = copy_repo(&t, "truncated");
    let pack = second_packs.iter().next().unwrap();
    let path = repo.join(pack.strip_prefix(&t.repo).unwrap());
    let mut bytes = std::fs::read(&path).unwrap();
    bytes.pop();
    std::fs::write(&path, &bytes).unwrap();
    let line = failing_line(&t, &repo, &[], CHECK, "truncated or replaced");
    assert!(line.contains(short(&name(pack))), "{line}");
    assert!(line.contains(short(&second)), "{line}");
    assert!(!line.contains(short(&first)), "{line}");

    // One bit flipped, size unchanged: names and sizes cannot see it, a
    // re-hash does.
    let repo = copy_repo(&t, "flipped");
    let pack = first_packs.iter().next().unwrap();
    let path = repo.join(pack.strip_prefix(&t.repo).unwrap());
    let mut bytes = std::fs::read(&path).unwrap();
    let middle = bytes.len() / 2;
    bytes[middle] ^= 0x04;
    std::fs::write(&path, &bytes).unwrap();
    let (r, _) = report(&t, &repo, &[]);
    assert_eq!(check(&r, CHECK)["status"], "pass", "{r:#}");
    for which in ["all", "100%", "1/1"] {
        let line = failing_line(&t, &repo, &["--read-packs", which], CHECK, "re-hashed");
        assert!(line.contains(short(&name(pack))), "{which}: {line}");
        assert!(line.contains(short(&first)), "{which}: {line}");
    }
    // The groups n/m cover every pack once: exactly one of 1/2 and 2/2
    // finds the damage.
    let found: Vec<i32> = ["1/2", "2/2"]
        .iter()
        .map(|g| report(&t, &repo, &["--read-packs", g]).1)
        .collect();
    assert_eq!(found.iter().filter(|c| **c == 1).count(), 1, "{found:?}");
    let out = t
        .command()
        .env_remove("CAIRN_PASSWORD_FILE")
        .env("CAIRN_REPOSITORY", &repo)
        .args(["audit", "report", "--read-packs", "3/2"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("--read-packs"));

    // A snapshot file deleted behind the tool's back.
    let repo = copy_repo(&t, "snapshot");
    std::fs::remove_file(repo.join("snapshots").join(&second)).unwrap();
    let line = failing_line(&t, &repo, &[], "snapshots present", short(&second));
    assert!(line.contains("no logged operation removed it"), "{line}");
}

#[test]
fn a_changed_forged_or_deleted_manifest_fails() {
    let (t, [first, _], _) = two_backups();
    let manifest_of = |repo: &Path, snapshot: &str| -> PathBuf {
        // The snapshot id sits at bytes 73..105 (docs/FORMAT.md 18.2).
        files(&repo.join("manifests"))
            .into_iter()
            .find(|p| hex_of(&std::fs::read(p).unwrap()[73..105]) == snapshot)
            .expect("a manifest of the snapshot")
    };

    // One byte changed (the time): the file no longer matches its name.
    let repo = copy_repo(&t, "byte");
    let path = manifest_of(&repo, &first);
    let mut bytes = std::fs::read(&path).unwrap();
    bytes[105] ^= 1;
    std::fs::write(&path, &bytes).unwrap();
    failing_line(&t, &repo, &[], CHECK, "does not match its name");
    let line = failing_line(&t, &repo, &[], CHECK, "has no manifest");
    assert!(line.contains(short(&first)), "{line}");

    // Renamed to its new hash: now the signature does not hold.
    let renamed = path.with_file_name(blake3::hash(&bytes).to_hex().to_string());
    std::fs::rename(&path, &renamed).unwrap();
    failing_line(&t, &repo, &[], CHECK, "signature does not hold");

    // Deleted.
    let repo = copy_repo(&t, "deleted");
    std::fs::remove_file(manifest_of(&repo, &first)).unwrap();
    let line = failing_line(&t, &repo, &[], CHECK, "has no manifest");
    assert!(line.contains(short(&first)), "{line}");
}

fn hex_of(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

#[test]
fn a_prune_that_repacks_still_passes_with_replacement_manifests() {
    let t = TestRepo::new();
    let src = t.path("src");
    std::fs::write(src.join("kept"), random_bytes(3, 60_000)).unwrap();
    std::fs::write(src.join("dropped"), random_bytes(4, 60_000)).unwrap();
    t.ok(&["backup", path_str(&src)]);
    let old = t.snapshot_ids()[0].clone();
    std::fs::remove_file(src.join("dropped")).unwrap();
    t.ok(&["backup", path_str(&src)]);
    let manifests_before = files(&t.repo.join("manifests"));
    let packs_before = files(&t.repo.join("packs"));
    t.ok(&["forget", &old]);
    t.ok(&["prune"]);
    let packs_after = files(&t.repo.join("packs"));
    // The pack holding both files was half unused: rewritten, so the
    // second snapshot's first manifest names a pack that is gone.
    assert!(
        packs_before.difference(&packs_after).count() > 0
            && packs_after.difference(&packs_before).count() > 0,
        "prune repacked nothing"
    );
    let manifests_after = files(&t.repo.join("manifests"));
    assert!(
        manifests_after.is_superset(&manifests_before),
        "prune deleted a manifest"
    );
    assert_eq!(
        manifests_after.len(),
        manifests_before.len() + 1,
        "one replacement"
    );
    let (r, code) = report(&t, &t.repo, &["--read-packs", "all"]);
    assert_eq!(code, 0, "{r:#}");
    assert_eq!(check(&r, CHECK)["status"], "pass", "{r:#}");
    // A second prune finds nothing to replace.
    t.ok(&["prune"]);
    assert_eq!(
        files(&t.repo.join("manifests")).len(),
        manifests_after.len()
    );
}
