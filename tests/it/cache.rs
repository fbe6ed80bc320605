//! The local caches of repositories: `cairn cache` lists them, and both
//! `cache --cleanup` and every command that opens a repository remove
//! those unused for their maximum age, and nothing else in the cache root.

use crate::common::*;
use std::path::Path;
use std::time::{Duration, SystemTime};

fn age(path: &Path, days: u64) {
    std::fs::File::open(path)
        .unwrap()
        .set_modified(SystemTime::now() - Duration::from_secs(days * 86_400))
        .unwrap();
}

fn listed(t: &TestRepo, args: &[&str]) -> Vec<String> {
    let mut all = vec!["--json", "cache"];
    all.extend_from_slice(args);
    let v: serde_json::Value = serde_json::from_str(t.ok(&all).trim()).unwrap();
    v["caches"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| {
            let path = Path::new(c["path"].as_str().unwrap());
            path.file_name().unwrap().to_string_lossy().into_owned()
        })
        .collect()
}

#[test]
fn caches_unused_for_thirty_days_are_removed_and_nothing_else() {
    let t = TestRepo::new();
    let src = t.path("src");
    std::fs::write(src.join("f"), b"cached").unwrap();
    t.ok(&["backup", path_str(&src)]);
    let own: Vec<String> = listed(&t, &[]);
    assert_eq!(own.len(), 1, "{own:?}");
    let own = own[0].clone();

    // A cache of a repository gone 40 days ago, one used 5 days ago, and
    // things that are not caches (a build directory, a symlink).
    let gone = "a".repeat(64);
    let recent = "b".repeat(64);
    for name in [&gone, &recent, &"target-release".to_string()] {
        std::fs::create_dir_all(t.cache.join(name).join("index.rocksdb")).unwrap();
        std::fs::write(t.cache.join(name).join("index.rocksdb/LOG"), b"x").unwrap();
    }
    std::os::unix::fs::symlink(t.path("src"), t.cache.join("c".repeat(64))).unwrap();
    age(&t.cache.join(&gone), 40);
    age(&t.cache.join("target-release"), 400);
    age(&t.cache.join(&recent), 5);
    assert_eq!(listed(&t, &[]), [gone.clone(), recent.clone(), own.clone()]);
    assert!(listed(&t, &["--cleanup", "--max-age", "100"]).is_empty());

    // Any command that opens the repository removes the 40-day-old one.
    t.ok(&["snapshots"]);
    assert!(!t.cache.join(&gone).exists());
    assert_eq!(listed(&t, &[]), [recent.clone(), own.clone()]);

    // --cleanup with a shorter age removes the recent one too; the
    // repository's own cache was just used, so it stays.
    assert_eq!(listed(&t, &["--cleanup", "--max-age", "2"]), [recent]);
    assert_eq!(listed(&t, &[]), [own]);
    assert!(t.cache.join("target-release").exists());
    assert!(t.cache.join("c".repeat(64)).symlink_metadata().is_ok());
    assert!(t.path("src").join("f").exists());
}

/// `stats` names this machine's cache of the repository and its size, the
/// figure `cairn cache` lists for the same directory.
#[test]
fn stats_reports_the_local_caches_size() {
    let t = TestRepo::new();
    let src = t.path("src");
    std::fs::write(src.join("f"), b"cached").unwrap();
    t.ok(&["backup", path_str(&src)]);
    let v: serde_json::Value = serde_json::from_str(t.ok(&["--json", "stats"]).trim()).unwrap();
    let path = Path::new(v["cache"]["path"].as_str().unwrap()).to_path_buf();
    let bytes = v["cache"]["bytes"].as_u64().unwrap();
    assert_eq!(path.parent().unwrap(), t.cache, "{v}");
    let listed: serde_json::Value =
        serde_json::from_str(t.ok(&["--json", "cache"]).trim()).unwrap();
    let entry = &listed["caches"][0];
    assert_eq!(Path::new(entry["path"].as_str().unwrap()), path);
    // The same directory measured the same way; closing the index cache
    // after `stats` measured it may flush or trim its log a little.
    let after = entry["bytes"].as_u64().unwrap();
    assert!(
        bytes > 0 && bytes / 2 <= after && after / 2 <= bytes,
        "stats {bytes}, cache {after}"
    );
    let text = t.ok(&["stats"]);
    assert!(
        text.contains("local cache:") && text.contains(&*path.to_string_lossy()),
        "{text}"
    );
}
