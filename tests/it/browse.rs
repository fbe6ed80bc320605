//! Browsing and managing without restoring: `ls --long/--json`, `find`,
//! `diff`, `tag`, `key remove` and `key passwd`, through the real binary.

use crate::common::*;
use std::os::unix::fs::PermissionsExt;

fn json_lines(text: &str) -> Vec<serde_json::Value> {
    text.lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}")))
        .collect()
}

fn two_snapshots() -> (TestRepo, std::path::PathBuf, String, String) {
    let t = TestRepo::new();
    let src = t.path("src");
    std::fs::create_dir(src.join("d")).unwrap();
    std::fs::write(src.join("app.sql"), b"one\n").unwrap();
    std::fs::write(src.join("d/notes.TXT"), b"notes\n").unwrap();
    std::fs::write(src.join("same"), b"same\n").unwrap();
    std::os::unix::fs::symlink("app.sql", src.join("link")).unwrap();
    let first = t.backup_json(&[&src])["snapshot_id"]
        .as_str()
        .unwrap()
        .to_string();
    std::fs::write(src.join("app.sql"), b"one\ntwo\n").unwrap();
    std::fs::remove_file(src.join("d/notes.TXT")).unwrap();
    std::fs::write(src.join("new.sql"), b"new\n").unwrap();
    std::fs::set_permissions(src.join("same"), std::fs::Permissions::from_mode(0o600)).unwrap();
    let second = t.backup_json(&[&src])["snapshot_id"]
        .as_str()
        .unwrap()
        .to_string();
    (t, src, first, second)
}

#[test]
fn ls_long_and_json_show_metadata() {
    let (t, src, _, _) = two_snapshots();
    let base = path_str(&src);
    let long = t.ok(&["ls", "latest", base, "--long"]);
    let line = long
        .lines()
        .find(|l| l.ends_with("/same"))
        .unwrap_or_else(|| panic!("{long}"));
    assert!(line.starts_with("-rw-------"), "{line}");
    let link = long.lines().find(|l| l.contains("/link")).unwrap();
    assert!(
        link.starts_with('l') && link.ends_with("-> app.sql"),
        "{link}"
    );
    let nodes = json_lines(&t.ok(&["--json", "ls", &format!("latest:{base}")]));
    let app = nodes
        .iter()
        .find(|n| n["path"] == format!("{base}/app.sql"))
        .unwrap();
    assert_eq!(app["type"], "file");
    assert_eq!(app["size"], 8);
    assert_eq!(app["permissions"], "-rw-r--r--");
    // The listing starts at the given path and covers everything below it.
    assert_eq!(nodes[0]["path"], base);
    assert!(nodes
        .iter()
        .all(|n| n["path"].as_str().unwrap().starts_with(base)));
}

#[test]
fn find_matches_names_and_paths_across_snapshots() {
    let (t, src, first, second) = two_snapshots();
    let found: Vec<serde_json::Value> =
        serde_json::from_str(t.ok(&["--json", "find", "*.sql"]).trim()).unwrap();
    let hits: Vec<(String, String)> = found
        .iter()
        .map(|f| {
            (
                f["snapshot"].as_str().unwrap().to_string(),
                f["path"]
                    .as_str()
                    .unwrap()
                    .rsplit('/')
                    .next()
                    .unwrap()
                    .to_string(),
            )
        })
        .collect();
    assert!(
        hits.contains(&(first.clone(), "app.sql".into())),
        "{hits:?}"
    );
    assert!(
        hits.contains(&(second.clone(), "new.sql".into())),
        "{hits:?}"
    );
    assert!(
        !hits.contains(&(first.clone(), "new.sql".into())),
        "{hits:?}"
    );
    assert_eq!(hits.len(), 3, "{hits:?}");
    // Case: only with -i.
    let out = t.cmd(&["find", "notes.txt"]);
    assert_eq!(out.status.code(), Some(1), "no match must exit 1");
    let text = t.ok(&["find", "-i", "notes.txt"]);
    assert!(
        text.contains(&first[..8]) && !text.contains(&second[..8]),
        "{text}"
    );
    // A pattern with a slash matches whole paths.
    let text = t.ok(&["find", &format!("{}/d/*", path_str(&src))]);
    assert!(text.contains("notes.TXT"), "{text}");
    let text = t.ok(&["find", "--snapshot", &second[..8], "*.sql"]);
    assert!(!text.contains(&first[..8]), "{text}");
}

#[test]
fn diff_names_added_removed_modified_and_metadata_changes() {
    let (t, src, first, second) = two_snapshots();
    let v: serde_json::Value =
        serde_json::from_str(t.ok(&["--json", "diff", &first, &second]).trim()).unwrap();
    let base = path_str(&src);
    let change = |name: &str| -> Option<String> {
        v["changes"]
            .as_array()
            .unwrap()
            .iter()
            .find(|c| c["path"] == format!("{base}/{name}"))
            .map(|c| c["change"].as_str().unwrap().to_string())
    };
    assert_eq!(change("app.sql").as_deref(), Some("modified"));
    assert_eq!(change("new.sql").as_deref(), Some("added"));
    assert_eq!(change("d/notes.TXT").as_deref(), Some("removed"));
    assert_eq!(change("same").as_deref(), Some("metadata"));
    assert_eq!(change("link"), None);
    assert_eq!(v["stats"]["added"], 1);
    assert_eq!(v["stats"]["removed"], 1);
    assert_eq!(v["stats"]["modified"], 1);
    assert_eq!(v["stats"]["bytes_added"], 4 + 4);
    assert_eq!(v["stats"]["bytes_removed"], 6);
    let text = t.ok(&["diff", &first, &second]);
    assert!(text.contains(&format!("+    {base}/new.sql")), "{text}");
    assert!(text.contains(&format!("M    {base}/app.sql")), "{text}");
    // A snapshot against itself: nothing.
    let v: serde_json::Value =
        serde_json::from_str(t.ok(&["--json", "diff", &second, &second]).trim()).unwrap();
    assert!(v["changes"].as_array().unwrap().is_empty());
}

#[test]
fn tag_adds_removes_and_sets_without_touching_data() {
    let (t, src, first, _) = two_snapshots();
    let packs_before = t.pack_bytes();
    t.ok(&["tag", "--add", "release,nightly", &first[..8]]);
    let snaps = t.snapshots_json(&["--tag", "release"]);
    assert_eq!(snaps.len(), 1);
    assert_eq!(snaps[0]["tags"], serde_json::json!(["nightly", "release"]));
    assert_eq!(snaps[0]["original"], first.as_str());
    let new_id = snaps[0]["id"].as_str().unwrap().to_string();
    assert!(!t.snapshot_ids().contains(&first), "old snapshot file kept");
    t.ok(&["tag", "--remove", "nightly", &new_id]);
    let snaps = t.snapshots_json(&["--tag", "release"]);
    assert_eq!(snaps[0]["tags"], serde_json::json!(["release"]));
    assert_eq!(
        snaps[0]["original"],
        first.as_str(),
        "original keeps the first id"
    );
    // --set on every snapshot matching a filter.
    t.ok(&["tag", "--set", "x"]);
    assert_eq!(t.snapshots_json(&["--tag", "x"]).len(), 2);
    assert_eq!(t.pack_bytes(), packs_before, "tag wrote data");
    let target = t.restore(&format!("latest:{}", path_str(&src)), "r");
    assert!(target.join("app.sql").exists());
    let out = t.cmd(&["tag", "latest"]);
    assert_eq!(out.status.code(), Some(1));
}

#[test]
fn key_remove_and_passwd_never_lock_users_out() {
    let t = TestRepo::new();
    let src = t.path("src");
    std::fs::write(src.join("f"), b"x").unwrap();
    t.backup_json(&[&src]);
    let keys = |t: &TestRepo| -> Vec<serde_json::Value> {
        serde_json::from_str(t.ok(&["--json", "key", "list"]).trim()).unwrap()
    };
    let current = keys(&t)[0]["id"].as_str().unwrap().to_string();
    assert_eq!(keys(&t)[0]["current"], true);
    // The key in use and the last key cannot be removed.
    let out = t.cmd(&["key", "remove", &current[..8]]);
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("refusing"));
    let second = t.dir.path().join("pw2");
    std::fs::write(&second, "second\n").unwrap();
    t.ok(&["key", "add", "--new-password-file", path_str(&second)]);
    let other = keys(&t)
        .into_iter()
        .find(|k| k["current"] == false)
        .unwrap()["id"]
        .as_str()
        .unwrap()
        .to_string();
    let packs = t.pack_bytes();
    t.ok(&["key", "remove", &other[..8]]);
    assert_eq!(keys(&t).len(), 1);
    let out = t
        .command()
        .env("CAIRN_PASSWORD_FILE", &second)
        .args(["snapshots"])
        .run();
    assert_eq!(out.status.code(), Some(12), "removed password still works");
    // passwd: the new password opens, the old one no longer does.
    let third = t.dir.path().join("pw3");
    std::fs::write(&third, "third\n").unwrap();
    t.ok(&["key", "passwd", "--new-password-file", path_str(&third)]);
    let out = t.cmd(&["snapshots"]);
    assert_eq!(out.status.code(), Some(12), "old password still works");
    let out = t
        .command()
        .env("CAIRN_PASSWORD_FILE", &third)
        .args(["dump", "latest", &format!("{}/f", path_str(&src))])
        .run();
    assert_eq!(out.stdout, b"x");
    assert_eq!(t.pack_bytes(), packs, "keys changed data");
}

#[test]
fn stats_modes_show_restore_size_and_deduplicated_raw_data() {
    let t = TestRepo::new();
    let src = t.path("src");
    std::fs::write(src.join("a.sql"), sql_bytes(3, 2 << 20)).unwrap();
    t.backup_json(&[&src]);
    std::fs::write(src.join("small"), b"tiny\n").unwrap();
    t.backup_json(&[&src]);
    let v: serde_json::Value =
        serde_json::from_str(t.ok(&["--json", "stats", "--mode", "raw-data"]).trim()).unwrap();
    let sel = &v["selection"];
    assert_eq!(sel["mode"], "raw-data");
    assert_eq!(sel["snapshots"], 2);
    // Both snapshots hold the 2 MiB dump; its data is stored once.
    assert_eq!(num(sel, "total_size"), 2 * (2 << 20) + 5);
    assert_eq!(num(sel, "raw_bytes"), (2 << 20) + 5);
    let dedup = sel["dedup_ratio"].as_f64().unwrap();
    assert!((1.9..2.0).contains(&dedup), "{sel}");
    assert!(
        sel["compression_ratio"].as_f64().unwrap() > 2.0,
        "SQL compresses: {sel}"
    );
    let text = t.ok(&["stats", "latest"]);
    assert!(text.contains("restore size"), "{text}");
}
