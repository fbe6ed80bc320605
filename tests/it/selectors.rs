//! Snapshot selectors, filters and the read-only commands' output.

use crate::common::*;
use std::sync::Arc;

fn is_hex(s: &str, len: usize) -> bool {
    s.len() == len
        && s.bytes()
            .all(|b| b.is_ascii_hexdigit() && !b.is_ascii_uppercase())
}

#[test]
fn selectors_and_output() {
    let t = TestRepo::new();
    let src = t.path("src");
    let sub = src.join("sub");
    std::fs::create_dir(&sub).unwrap();
    std::fs::write(sub.join("inner.txt"), b"inner\n").unwrap();
    let f = src.join("f.txt");
    let fpath = path_str(&f).to_string();

    std::fs::write(&f, b"one\n").unwrap();
    let a = t.backup_json(&[
        src.as_os_str(),
        "--host".as_ref(),
        "host-a".as_ref(),
        "--tag".as_ref(),
        "t1".as_ref(),
    ]);
    std::fs::write(&f, b"two\n").unwrap();
    let b = t.backup_json(&[
        src.as_os_str(),
        "--host".as_ref(),
        "host-b".as_ref(),
        "--tag".as_ref(),
        "t2".as_ref(),
        "--tag".as_ref(),
        "t3".as_ref(),
    ]);
    std::fs::write(&f, b"three\n").unwrap();
    let c = t.backup_json(&[
        src.as_os_str(),
        "--host".as_ref(),
        "host-a".as_ref(),
        "--tag".as_ref(),
        "t1".as_ref(),
    ]);
    let (ida, idb, idc) = (
        a["snapshot_id"].as_str().unwrap().to_string(),
        b["snapshot_id"].as_str().unwrap().to_string(),
        c["snapshot_id"].as_str().unwrap().to_string(),
    );
    assert!(
        a["parent"].is_null(),
        "first backup of host-a has no parent: {a}"
    );
    assert!(
        b["parent"].is_null(),
        "host-b's first backup must not take host-a's snapshot as parent: {b}"
    );
    assert_eq!(
        c["parent"].as_str(),
        Some(ida.as_str()),
        "host-a's second backup has the first as parent"
    );

    // snapshots --json: field names and values.
    let snaps = t.snapshots_json(&[]);
    assert_eq!(snaps.len(), 3);
    let ids: Vec<&str> = snaps.iter().map(|s| s["id"].as_str().unwrap()).collect();
    assert_eq!(
        ids,
        [ida.as_str(), idb.as_str(), idc.as_str()],
        "oldest first"
    );
    for s in &snaps {
        let id = s["id"].as_str().expect("id");
        assert!(is_hex(id, 64), "id {id}");
        assert_eq!(s["short_id"].as_str().expect("short_id"), &id[..8]);
        let time = s["time"].as_str().expect("time");
        assert!(
            time.len() >= 20 && time.contains('T'),
            "time is RFC 3339: {time}"
        );
        assert!(
            s["hostname"].is_string() && s["username"].is_string(),
            "{s}"
        );
        assert_eq!(
            s["paths"],
            serde_json::json!([fpath.trim_end_matches("/f.txt")])
        );
        assert!(s["tags"].is_array(), "{s}");
        assert!(is_hex(s["tree"].as_str().expect("tree"), 64), "{s}");
    }
    assert_eq!(snaps[0]["hostname"], "host-a");
    assert_eq!(snaps[1]["tags"], serde_json::json!(["t2", "t3"]));
    assert!(
        snaps[0].get("parent").is_none_or(|p| p.is_null()),
        "{}",
        snaps[0]
    );
    assert_eq!(snaps[2]["parent"].as_str(), Some(ida.as_str()));
    assert_ne!(
        snaps[2]["tree"], snaps[0]["tree"],
        "content changed, so the tree did"
    );

    // Filters on `snapshots`.
    assert_eq!(t.snapshots_json(&["--host", "host-b"]).len(), 1);
    assert_eq!(t.snapshots_json(&["--tag", "t1"]).len(), 2);
    assert_eq!(t.snapshots_json(&["--tag", "t2,t3"]).len(), 1);
    assert_eq!(t.snapshots_json(&["--tag", "t2,t1"]).len(), 0);
    assert_eq!(t.snapshots_json(&["--tag", "t2", "--tag", "t1"]).len(), 3);
    assert_eq!(t.snapshots_json(&["--path", path_str(&src)]).len(), 3);
    assert_eq!(t.snapshots_json(&["--path", "/elsewhere"]).len(), 0);
    // The table mentions every short id.
    let table = t.ok(&["snapshots"]);
    for id in [&ida, &idb, &idc] {
        assert!(table.contains(&id[..8]), "{table}");
    }

    // latest with filters, and dump of a file inside a directory backup.
    let dump = |sel: &str, extra: &[&str]| -> Vec<u8> {
        let mut args = vec!["dump", sel, fpath.as_str()];
        args.extend_from_slice(extra);
        t.ok_bytes(&args)
    };
    assert_eq!(dump("latest", &[]), b"three\n");
    assert_eq!(dump("latest", &["--host", "host-b"]), b"two\n");
    assert_eq!(dump("latest", &["--tag", "t1"]), b"three\n");
    assert_eq!(dump("latest", &["--tag", "t2,t3"]), b"two\n");
    assert_eq!(dump(&ida, &[]), b"one\n");
    let out = t.cmd(&["dump", "latest", &fpath, "--tag", "t2,t9"]);
    assert!(
        !out.status.success(),
        "latest with a filter matching nothing must fail"
    );
    let out = t.cmd(&["dump", "latest", path_str(&src)]);
    assert!(!out.status.success(), "dump of a directory must fail");
    let out = t.cmd(&["dump", "latest", &format!("{}/missing", path_str(&src))]);
    assert!(!out.status.success(), "dump of a missing path must fail");

    // Unique prefixes of 4+ hex digits select; upper case is accepted.
    let unique_prefix = |id: &str| -> String {
        (4..=64)
            .map(|n| id[..n].to_string())
            .find(|p| {
                [&ida, &idb, &idc]
                    .iter()
                    .filter(|x| x.starts_with(p.as_str()))
                    .count()
                    == 1
            })
            .unwrap()
    };
    let pb = unique_prefix(&idb);
    assert_eq!(dump(&pb, &[]), b"two\n", "prefix {pb}");
    assert_eq!(
        dump(&pb.to_uppercase(), &[]),
        b"two\n",
        "upper-case prefix {pb}"
    );
    assert_eq!(dump(&idb, &[]), b"two\n", "full id");
    // A prefix that matches only outside the filter does not select.
    let out = t.cmd(&["dump", &pb, &fpath, "--host", "host-a"]);
    assert!(
        !out.status.success(),
        "prefix of a filtered-out snapshot selected something"
    );
    for bad in ["abc", "a", "", "zzzz", "latestx", &format!("{ida}0")] {
        let out = t.cmd(&["dump", bad, &fpath]);
        assert!(!out.status.success(), "selector {bad:?} must fail");
        assert_eq!(
            out.status.code(),
            Some(1),
            "selector {bad:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }

    // restore by prefix, and ID:subpath.
    let target = t.restore(&unique_prefix(&ida), "by-prefix");
    assert_eq!(
        std::fs::read(target.join(f.strip_prefix("/").unwrap())).unwrap(),
        b"one\n"
    );
    let target = t.restore(&format!("{idc}:{}", path_str(&sub)), "subpath");
    assert_eq!(std::fs::read(target.join("inner.txt")).unwrap(), b"inner\n");
    assert_eq!(
        walk(&target).len(),
        1,
        "only the subdirectory's contents: {:?}",
        walk(&target).keys()
    );
    let target = t.restore(&format!("{idb}:{fpath}"), "single-file");
    assert_eq!(std::fs::read(target.join("f.txt")).unwrap(), b"two\n");
    let out = t.cmd(&[
        "restore",
        &format!("{idb}:/no/such/path"),
        "--target",
        path_str(&t.dir.path().join("x")),
    ]);
    assert!(
        !out.status.success(),
        "restore of a missing subpath must fail"
    );

    // ls, whole snapshot and a subpath.
    let listing = t.ok(&["ls", "latest"]);
    let lines: Vec<&str> = listing.lines().collect();
    assert!(lines.contains(&fpath.as_str()), "{listing}");
    assert!(
        lines.contains(&format!("{}/inner.txt", path_str(&sub)).as_str()),
        "{listing}"
    );
    assert!(lines.contains(&path_str(&src)), "{listing}");
    let listing = t.ok(&["ls", &format!("latest:{}", path_str(&src))]);
    let mut lines: Vec<&str> = listing.lines().collect();
    lines.sort();
    // As restic: the named directory itself, then everything below it.
    let mut want = vec![
        path_str(&src).to_string(),
        fpath.clone(),
        path_str(&sub).to_string(),
        format!("{}/inner.txt", path_str(&sub)),
    ];
    want.sort();
    assert_eq!(lines, want);
    let json_lines = t.ok(&["--json", "ls", "latest"]);
    let file_entry = json_lines
        .lines()
        .map(|l| serde_json::from_str::<serde_json::Value>(l).expect("ls --json lines are JSON"))
        .find(|v| v["path"] == fpath.as_str())
        .expect("f.txt in ls --json");
    assert_eq!(file_entry["type"], "file");
    assert_eq!(file_entry["size"], 6);

    // cat config: JSON with the chunker parameters.
    let config: serde_json::Value =
        serde_json::from_str(&t.ok(&["cat", "config"])).expect("cat config is JSON");
    let chunker = &config["chunker"];
    for field in ["size_min", "size_avg", "size_max"] {
        assert!(
            chunker[field].as_u64().is_some_and(|v| v > 0),
            "config chunker.{field}: {config}"
        );
    }
    assert!(chunker["size_min"].as_u64() <= chunker["size_avg"].as_u64());
    assert!(chunker["size_avg"].as_u64() <= chunker["size_max"].as_u64());
    assert!(
        is_hex(config["id"].as_str().expect("config id"), 64),
        "{config}"
    );

    // cat snapshot: JSON, by id and by prefix.
    for sel in [idb.clone(), unique_prefix(&idb)] {
        let snap: serde_json::Value =
            serde_json::from_str(&t.ok(&["cat", "snapshot", &sel])).expect("cat snapshot is JSON");
        assert_eq!(snap["hostname"], "host-b", "{snap}");
        assert_eq!(snap["tree"], snaps[1]["tree"]);
        assert_eq!(snap["tags"], serde_json::json!(["t2", "t3"]));
    }
    // cat tree and cat index, cat key.
    let tree: serde_json::Value =
        serde_json::from_str(&t.ok(&["cat", "tree", &format!("latest:{}", path_str(&src))]))
            .unwrap();
    let names: Vec<&str> = tree["nodes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|n| n["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["f.txt", "sub"]);
    let index_name = walk(&t.repo.join("index"))
        .into_keys()
        .next()
        .expect("an index file");
    let index: serde_json::Value =
        serde_json::from_str(&t.ok(&["cat", "index", &String::from_utf8(index_name).unwrap()]))
            .unwrap();
    assert!(
        index["packs"].as_array().is_some_and(|p| !p.is_empty()),
        "{index}"
    );
    let key_name = walk(&t.repo.join("keys"))
        .into_keys()
        .next()
        .expect("a key file");
    let key: serde_json::Value =
        serde_json::from_str(&t.ok(&["cat", "key", &String::from_utf8(key_name).unwrap()]))
            .unwrap();
    assert_eq!(key["kdf"], "argon2id");
}

/// Two snapshots sharing a 4-digit prefix: that prefix is refused as
/// ambiguous, a longer one selects.
#[test]
fn ambiguous_prefix_is_refused() {
    let t = TestRepo::new();
    let src = t.path("src");
    std::fs::write(src.join("f"), b"x").unwrap();
    t.backup_json(&[&src]);
    // Make copies of the snapshot through the library until two ids share
    // their first four hex digits (birthday bound: a few hundred).
    let backend: Arc<dyn cairn::Backend> = Arc::new(cairn::LocalBackend::new(&t.repo));
    let mut repo = cairn::Repository::open(backend, PASSWORD.as_bytes(), Some(t.cache.as_path()))
        .unwrap()
        .load_index()
        .unwrap();
    let all = repo.snapshots(&cairn::SnapshotFilter::default()).unwrap();
    let lock = repo.lock_shared(std::time::Duration::ZERO).unwrap();
    let written = repo.blob_writer(&lock).finish().unwrap();
    let (id0, snap) = all[0].clone();
    let mut seen = std::collections::HashMap::new();
    seen.insert(id0.to_hex()[..4].to_string(), id0.to_hex());
    let mut pair = None;
    for i in 0..5000 {
        let mut s = snap.clone();
        s.tags = vec![format!("copy-{i}")];
        let id = repo.save_snapshot(&s, &written).unwrap().to_hex();
        if let Some(other) = seen.insert(id[..4].to_string(), id.clone()) {
            pair = Some((other, id));
            break;
        }
    }
    let (x, y) = pair.expect("no 4-digit prefix collision in 5000 snapshots");
    // The commands below take their own locks.
    drop(lock);
    let prefix = &x[..4];
    let out = t.cmd(&["cat", "snapshot", prefix]);
    assert!(
        !out.status.success(),
        "ambiguous prefix {prefix} selected something"
    );
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("ambiguous"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let out = t.cmd(&["ls", prefix]);
    assert!(!out.status.success());
    // The longest common prefix plus one digit is unique again.
    let common = x.bytes().zip(y.bytes()).take_while(|(a, b)| a == b).count();
    for id in [&x, &y] {
        let snap: serde_json::Value =
            serde_json::from_str(&t.ok(&["cat", "snapshot", &id[..common + 1]])).unwrap();
        assert!(snap["hostname"].is_string(), "{snap}");
    }
}
