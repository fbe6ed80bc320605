//! `--json` on every command, checked against docs/json.md: each output is
//! parsed, every documented field must be present with its documented type,
//! and the values must agree with the repository (ids from backup appear in
//! snapshots, check is clean on a clean repository, find lists the expected
//! paths, …). When a command's output changes, docs/json.md changes with it.

use crate::common::*;
use serde_json::Value;
use std::process::Stdio;

/// The JSON types of docs/json.md.
#[derive(Clone, Copy, Debug)]
enum Ty {
    Str,
    /// A non-negative integer.
    U64,
    /// A signed integer.
    I64,
    /// Any number (may have a fraction).
    Num,
    Bool,
    /// A full 64-character lowercase hex id.
    Id,
    IdOrNull,
    Obj,
    Arr,
    ArrStr,
    ArrId,
}

fn is_id(v: &Value) -> bool {
    v.as_str().is_some_and(|s| {
        s.len() == 64
            && s.bytes()
                .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
    })
}

fn has_type(v: &Value, ty: Ty) -> bool {
    match ty {
        Ty::Str => v.is_string(),
        Ty::U64 => v.is_u64(),
        Ty::I64 => v.is_i64() || v.is_u64(),
        Ty::Num => v.is_number(),
        Ty::Bool => v.is_boolean(),
        Ty::Id => is_id(v),
        Ty::IdOrNull => v.is_null() || is_id(v),
        Ty::Obj => v.is_object(),
        Ty::Arr => v.is_array(),
        Ty::ArrStr => v.as_array().is_some_and(|a| a.iter().all(Value::is_string)),
        Ty::ArrId => v.as_array().is_some_and(|a| a.iter().all(is_id)),
    }
}

type Schema = &'static [(&'static str, Ty)];

/// Panics with every required field that is missing or has the wrong type.
fn check_schema(v: &Value, schema: Schema, what: &str) {
    assert!(v.is_object(), "{what}: not an object: {v}");
    let problems: Vec<String> = schema
        .iter()
        .filter_map(|(field, ty)| match v.get(field) {
            None => Some(format!("{field} missing")),
            Some(x) if !has_type(x, *ty) => Some(format!("{field} is {x}, not {ty:?}")),
            Some(_) => None,
        })
        .collect();
    assert!(
        problems.is_empty(),
        "{what} does not match docs/json.md: {}\n{v}",
        problems.join("; ")
    );
}

/// Optional fields: when present, of this type.
fn check_optional(v: &Value, schema: Schema, what: &str) {
    for (field, ty) in schema {
        if let Some(x) = v.get(field) {
            assert!(has_type(x, *ty), "{what}: {field} is {x}, not {ty:?}");
        }
    }
}

// ------------------------------------------------- schemas (docs/json.md)

const INIT: Schema = &[
    ("message_type", Ty::Str),
    ("id", Ty::Id),
    ("repository", Ty::Str),
];

/// The summary fields shared by the backup output and a snapshot's `summary`.
const SUMMARY: Schema = &[
    ("backup_start", Ty::Str),
    ("backup_end", Ty::Str),
    ("duration_seconds", Ty::Num),
    ("files_new", Ty::U64),
    ("files_changed", Ty::U64),
    ("files_unmodified", Ty::U64),
    ("files_unreadable", Ty::U64),
    ("dirs_new", Ty::U64),
    ("dirs_changed", Ty::U64),
    ("dirs_unmodified", Ty::U64),
    ("data_blobs", Ty::U64),
    ("tree_blobs", Ty::U64),
    ("data_added", Ty::U64),
    ("data_added_packed", Ty::U64),
    ("total_files_processed", Ty::U64),
    ("total_bytes_processed", Ty::U64),
];

const BACKUP: Schema = &[
    ("message_type", Ty::Str),
    ("snapshot_id", Ty::Id),
    ("parent", Ty::IdOrNull),
];

const SNAPSHOT: Schema = &[
    ("id", Ty::Id),
    ("short_id", Ty::Str),
    ("version", Ty::U64),
    ("time", Ty::Str),
    ("tree", Ty::Id),
    ("paths", Ty::ArrStr),
    ("hostname", Ty::Str),
    ("username", Ty::Str),
    ("uid", Ty::U64),
    ("gid", Ty::U64),
    ("tags", Ty::ArrStr),
    ("program_version", Ty::Str),
    ("source", Ty::Str),
    ("summary", Ty::Obj),
];
const SNAPSHOT_OPTIONAL: Schema = &[
    ("parent", Ty::Id),
    ("original", Ty::Id),
    ("command", Ty::ArrStr),
];

const LS_NODE: Schema = &[
    ("path", Ty::Str),
    ("name", Ty::Str),
    ("type", Ty::Str),
    ("size", Ty::U64),
    ("mode", Ty::U64),
    ("permissions", Ty::Str),
    ("uid", Ty::U64),
    ("gid", Ty::U64),
    ("mtime_ns", Ty::I64),
    ("mtime", Ty::Str),
];
const LS_NODE_OPTIONAL: Schema = &[
    ("user", Ty::Str),
    ("group", Ty::Str),
    ("link_target", Ty::Str),
];

const FOUND: Schema = &[
    ("snapshot", Ty::Id),
    ("path", Ty::Str),
    ("type", Ty::Str),
    ("size", Ty::U64),
    ("mtime_ns", Ty::I64),
    ("mode", Ty::U64),
];

const DIFF: Schema = &[
    ("first", Ty::Id),
    ("second", Ty::Id),
    ("changes", Ty::Arr),
    ("stats", Ty::Obj),
];
const DIFF_CHANGE: Schema = &[
    ("path", Ty::Str),
    ("change", Ty::Str),
    ("type", Ty::Str),
    ("size_before", Ty::U64),
    ("size_after", Ty::U64),
];
const DIFF_STATS: Schema = &[
    ("added", Ty::U64),
    ("removed", Ty::U64),
    ("modified", Ty::U64),
    ("metadata_changed", Ty::U64),
    ("bytes_added", Ty::U64),
    ("bytes_removed", Ty::U64),
];

const STATS_REPOSITORY: Schema = &[
    ("snapshots", Ty::U64),
    ("packs", Ty::U64),
    ("pack_bytes", Ty::U64),
    ("blobs", Ty::U64),
    ("blob_bytes", Ty::U64),
    ("blob_stored_bytes", Ty::U64),
];
const STATS_SNAPSHOT: Schema = &[
    ("id", Ty::Id),
    ("files", Ty::U64),
    ("dirs", Ty::U64),
    ("total_size", Ty::U64),
    ("data_blobs", Ty::U64),
    ("data_blob_bytes", Ty::U64),
];

const CHECK: Schema = &[
    ("clean", Ty::Bool),
    ("verdict", Ty::Str),
    ("keyless", Ty::Bool),
    ("keys", Ty::U64),
    ("index_files", Ty::U64),
    ("packs", Ty::U64),
    ("snapshots", Ty::U64),
    ("trees", Ty::U64),
    ("blobs_indexed", Ty::U64),
    ("packs_read", Ty::U64),
    ("bytes_read", Ty::U64),
    ("problems", Ty::Arr),
    ("problems_unlisted", Ty::U64),
    ("damaged_paths", Ty::Arr),
    ("damaged_paths_unlisted", Ty::U64),
    ("damaged_snapshots", Ty::ArrId),
    ("notes", Ty::ArrStr),
    ("unused_blobs", Ty::U64),
    ("unused_bytes", Ty::U64),
    ("hints", Ty::ArrStr),
];
const CHECK_PROBLEM: Schema = &[
    ("object", Ty::Str),
    ("status", Ty::Str),
    ("message", Ty::Str),
];
const CHECK_DAMAGED_PATH: Schema = &[("snapshot", Ty::Id), ("path", Ty::Str), ("detail", Ty::Str)];

const COPY: Schema = &[
    ("message_type", Ty::Str),
    ("snapshots", Ty::Arr),
    ("snapshots_copied", Ty::U64),
    ("snapshots_skipped", Ty::U64),
    ("data_added", Ty::U64),
    ("data_added_packed", Ty::U64),
    ("rehashed", Ty::Bool),
];

const COPIED_SNAPSHOT: Schema = &[
    ("source", Ty::Id),
    ("copy", Ty::Id),
    ("already_copied", Ty::Bool),
    ("time", Ty::Str),
    ("hostname", Ty::Str),
    ("paths", Ty::ArrStr),
    ("tags", Ty::ArrStr),
    ("data_blobs", Ty::U64),
    ("tree_blobs", Ty::U64),
    ("data_added", Ty::U64),
    ("data_added_packed", Ty::U64),
];

const PRUNE: Schema = &[
    ("dry_run", Ty::Bool),
    ("blobs_used", Ty::U64),
    ("bytes_used", Ty::U64),
    ("blobs_unused", Ty::U64),
    ("bytes_unused", Ty::U64),
    ("packs", Ty::U64),
    ("packs_deleted", Ty::U64),
    ("packs_repacked", Ty::U64),
    ("packs_repacked_small", Ty::U64),
    ("packs_unindexed_deleted", Ty::U64),
    ("packs_unindexed_kept", Ty::U64),
    ("temp_files_deleted", Ty::U64),
    ("packs_written", Ty::U64),
    ("bytes_deleted", Ty::U64),
    ("bytes_written", Ty::U64),
    ("bytes_freed", Ty::U64),
    ("bytes_unused_remaining", Ty::U64),
    ("index_files_written", Ty::U64),
    ("index_files_removed", Ty::U64),
];

/// docs/retention.md, "Output".
const FORGET_GROUP: Schema = &[("keep", Ty::Arr), ("remove", Ty::Arr), ("reasons", Ty::Arr)];

const REPAIR_INDEX: Schema = &[
    ("packs_indexed", Ty::U64),
    ("blobs_indexed", Ty::U64),
    ("packs_unreadable", Ty::Arr),
    ("index_files_written", Ty::U64),
    ("new_index_files", Ty::ArrId),
    ("index_files_removed", Ty::U64),
    ("packs_salvaged", Ty::U64),
    ("blobs_salvaged", Ty::U64),
    ("blobs_lost", Ty::U64),
];

const REPAIR_SNAPSHOTS: Schema = &[
    ("dry_run", Ty::Bool),
    ("snapshots_checked", Ty::U64),
    ("snapshots", Ty::Arr),
];
const REPAIRED_SNAPSHOT: Schema = &[
    ("original", Ty::Id),
    ("repaired", Ty::IdOrNull),
    ("dropped", Ty::Arr),
    ("restorable", Ty::Bool),
    ("already_repaired", Ty::Bool),
    ("forgotten", Ty::Bool),
];

const KEY: Schema = &[
    ("id", Ty::Id),
    ("current", Ty::Bool),
    ("created", Ty::Str),
    ("hostname", Ty::Str),
    ("username", Ty::Str),
    ("kdf", Ty::Str),
    ("kdf_params", Ty::Obj),
];
const KDF_PARAMS: Schema = &[
    ("memory_kib", Ty::U64),
    ("iterations", Ty::U64),
    ("parallelism", Ty::U64),
];

const TAG_CHANGE: Schema = &[("old", Ty::Id), ("new", Ty::Id)];

const RESTORE: Schema = &[
    ("message_type", Ty::Str),
    ("snapshot_id", Ty::Id),
    ("files_restored", Ty::U64),
    ("dirs_restored", Ty::U64),
    ("bytes_restored", Ty::U64),
    ("special_files_skipped", Ty::U64),
    ("errors", Ty::U64),
];

// ---------------------------------------------------------------- helpers

/// One JSON document: the whole of stdout, on one line.
fn document(out: &str, what: &str) -> Value {
    assert_eq!(
        out.trim_end().lines().count(),
        1,
        "{what}: expected one JSON document on one line, got {out:?}"
    );
    serde_json::from_str(out.trim()).unwrap_or_else(|e| panic!("{what}: {e}: {out}"))
}

fn json(t: &TestRepo, args: &[&str]) -> Value {
    let mut all = vec!["--json"];
    all.extend_from_slice(args);
    document(&t.ok(&all), &args.join(" "))
}

fn array<'a>(v: &'a Value, what: &str) -> &'a Vec<Value> {
    v.as_array()
        .unwrap_or_else(|| panic!("{what}: expected an array: {v}"))
}

fn s<'a>(v: &'a Value, field: &str) -> &'a str {
    v[field]
        .as_str()
        .unwrap_or_else(|| panic!("{field} is not a string in {v}"))
}

fn check_snapshot(v: &Value) {
    check_schema(v, SNAPSHOT, "snapshot object");
    check_optional(v, SNAPSHOT_OPTIONAL, "snapshot object");
    check_schema(&v["summary"], SUMMARY, "snapshot summary");
    assert_eq!(s(v, "short_id"), &s(v, "id")[..8], "short_id: {v}");
    assert!(
        ["directory", "stdin", "tar"].contains(&s(v, "source")),
        "source: {v}"
    );
    chrono::DateTime::parse_from_rfc3339(s(v, "time")).expect("snapshot time is RFC 3339");
}

fn check_backup(v: &Value) {
    check_schema(v, BACKUP, "backup summary");
    check_schema(v, SUMMARY, "backup summary");
    assert_eq!(s(v, "message_type"), "summary");
    for field in ["backup_start", "backup_end"] {
        chrono::DateTime::parse_from_rfc3339(s(v, field))
            .unwrap_or_else(|e| panic!("{field} is not RFC 3339: {e}: {v}"));
    }
}

/// A directory with a file, a nested file and a symlink; returns it.
fn source_tree(t: &TestRepo) -> std::path::PathBuf {
    let src = t.path("src");
    std::fs::create_dir_all(src.join("sub")).unwrap();
    std::fs::write(src.join("a.sql"), sql_bytes(1, 3000)).unwrap();
    std::fs::write(src.join("sub/b.sql"), sql_bytes(2, 50_000)).unwrap();
    std::os::unix::fs::symlink("a.sql", src.join("link")).unwrap();
    src
}

// ------------------------------------------------------------------ tests

#[test]
fn init_json_names_the_repository() {
    let t = TestRepo::uninitialised();
    let mut args = vec!["init"];
    args.extend_from_slice(&FAST_KDF);
    let v = json(&t, &args);
    check_schema(&v, INIT, "init");
    assert_eq!(s(&v, "message_type"), "initialized");
    assert_eq!(s(&v, "repository"), path_str(&t.repo));
    // `cat` prints JSON with or without --json (pretty, several lines).
    let config: Value = serde_json::from_str(&t.ok(&["--json", "cat", "config"])).unwrap();
    assert_eq!(s(&config, "id"), s(&v, "id"), "init id is the config id");
}

#[test]
fn backups_snapshots_ls_find_diff_stats_restore() {
    let t = TestRepo::new();
    let src = source_tree(&t);
    let base = path_str(&src).to_string();

    let first = t.backup_json(&[base.as_str(), "--tag", "one", "--host", "h1"]);
    check_backup(&first);
    assert!(first["parent"].is_null(), "first backup has no parent");
    assert_eq!(num(&first, "files_new"), 2);
    assert_eq!(num(&first, "total_bytes_processed"), 53_000);
    let first_id = s(&first, "snapshot_id").to_string();

    std::fs::write(src.join("a.sql"), sql_bytes(3, 4000)).unwrap();
    std::fs::write(src.join("new.sql"), b"new\n").unwrap();
    let second = t.backup_json(&[base.as_str(), "--host", "h1"]);
    check_backup(&second);
    assert_eq!(s(&second, "parent"), first_id, "parent is the first backup");
    assert_eq!(num(&second, "files_unmodified"), 1);
    let second_id = s(&second, "snapshot_id").to_string();

    let stdin = t.backup_stdin_json("dump.sql", &[], &mut &sql_bytes(4, 2000)[..]);
    check_backup(&stdin);
    assert_eq!(num(&stdin, "total_bytes_processed"), 2000);

    let cmd = json(
        &t,
        &[
            "backup",
            "--stdin-from-command",
            "--stdin-filename",
            "hi.txt",
            "--",
            "echo",
            "hi",
        ],
    );
    check_backup(&cmd);

    let mut ids = vec![
        first_id.clone(),
        second_id.clone(),
        s(&stdin, "snapshot_id").to_string(),
        s(&cmd, "snapshot_id").to_string(),
    ];
    if have_tool("tar") {
        let tarball = t.dir.path().join("src.tar");
        run_tool("tar", &["-cf", path_str(&tarball), "-C", &base, "."]);
        let tar = json(&t, &["import-tar", path_str(&tarball), "--tag", "tar"]);
        check_backup(&tar);
        assert!(tar["parent"].is_null());
        ids.push(s(&tar, "snapshot_id").to_string());
    } else {
        note("tar is missing: import-tar --json is not checked");
    }

    // snapshots: every backup's id, in order, with the documented fields.
    let snaps = t.snapshots_json(&[]);
    for snap in &snaps {
        check_snapshot(snap);
    }
    let listed: Vec<&str> = snaps.iter().map(|v| s(v, "id")).collect();
    assert_eq!(
        listed, ids,
        "snapshots --json lists the backups oldest first"
    );
    assert_eq!(snaps[0]["tags"], serde_json::json!(["one"]));
    assert!(snaps[0].get("parent").is_none(), "no parent: field absent");
    assert_eq!(s(&snaps[1], "parent"), first_id);
    assert_eq!(snaps[0]["summary"]["files_new"], first["files_new"]);
    assert_eq!(s(&snaps[2], "source"), "stdin");
    assert_eq!(snaps[2]["paths"], serde_json::json!(["/dump.sql"]));
    assert_eq!(snaps[3]["command"], serde_json::json!(["echo", "hi"]));
    if let Some(tar) = snaps.get(4) {
        assert_eq!(s(tar, "source"), "tar");
    }
    let filtered = t.snapshots_json(&["--tag", "one"]);
    assert_eq!(filtered.len(), 1);
    assert_eq!(s(&filtered[0], "id"), first_id);

    // ls: JSON lines, one node per entry.
    let out = t.ok(&["--json", "ls", &second_id, &base]);
    let nodes: Vec<Value> = out
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("ls --json line {e}: {l}")))
        .collect();
    for n in &nodes {
        check_schema(n, LS_NODE, "ls node");
        check_optional(n, LS_NODE_OPTIONAL, "ls node");
    }
    let paths: Vec<&str> = nodes.iter().map(|n| s(n, "path")).collect();
    let expect: Vec<String> = ["", "/a.sql", "/link", "/new.sql", "/sub", "/sub/b.sql"]
        .iter()
        .map(|p| format!("{base}{p}"))
        .collect();
    assert_eq!(paths, expect, "ls --json paths in tree order");
    assert_eq!(s(&nodes[0], "type"), "dir");
    assert_eq!(s(&nodes[2], "link_target"), "a.sql");
    assert_eq!(num(&nodes[1], "size"), 4000);
    assert_eq!(num(&nodes[5], "size"), 50_000);
    assert_eq!(s(&nodes[5], "name"), "b.sql");
    // --long changes nothing with --json.
    assert_eq!(t.ok(&["--json", "ls", "--long", &second_id, &base]), out);

    // find: one array; the expected paths in both directory snapshots.
    let found = json(&t, &["find", "b.sql", "--host", "h1"]);
    let found = array(&found, "find");
    for f in found {
        check_schema(f, FOUND, "find match");
        assert_eq!(s(f, "path"), format!("{base}/sub/b.sql"));
        assert_eq!(num(f, "size"), 50_000);
    }
    let in_snaps: Vec<&str> = found.iter().map(|f| s(f, "snapshot")).collect();
    assert_eq!(in_snaps, [first_id.as_str(), second_id.as_str()]);
    let none = t.cmd(&["--json", "find", "no-such-name"]);
    assert_eq!(none.status.code(), Some(1), "find without a match exits 1");
    assert_eq!(
        document(&String::from_utf8_lossy(&none.stdout), "find"),
        serde_json::json!([])
    );

    // diff: one modified, one added file.
    let d = json(&t, &["diff", &first_id, &second_id]);
    check_schema(&d, DIFF, "diff");
    check_schema(&d["stats"], DIFF_STATS, "diff stats");
    assert_eq!(
        (s(&d, "first"), s(&d, "second")),
        (first_id.as_str(), second_id.as_str())
    );
    let changes = array(&d["changes"], "diff changes");
    for c in changes {
        check_schema(c, DIFF_CHANGE, "diff change");
    }
    let summary: Vec<(&str, &str)> = changes
        .iter()
        .map(|c| (s(c, "change"), s(c, "path")))
        .collect();
    let (a, n) = (format!("{base}/a.sql"), format!("{base}/new.sql"));
    assert!(summary.contains(&("modified", a.as_str())), "{summary:?}");
    assert!(summary.contains(&("added", n.as_str())), "{summary:?}");
    assert_eq!(num(&d["stats"], "added"), 1);
    assert_eq!(num(&d["stats"], "modified"), 1);
    assert_eq!(num(&d["stats"], "removed"), 0);

    // stats: repository totals, and the snapshot's own numbers.
    let st = json(&t, &["stats", &second_id]);
    check_schema(&st["repository"], STATS_REPOSITORY, "stats repository");
    check_schema(&st["snapshot"], STATS_SNAPSHOT, "stats snapshot");
    assert_eq!(num(&st["repository"], "snapshots"), ids.len() as u64);
    assert_eq!(num(&st["repository"], "pack_bytes"), t.pack_bytes());
    assert_eq!(s(&st["snapshot"], "id"), second_id);
    assert_eq!(num(&st["snapshot"], "files"), 3);
    assert_eq!(num(&st["snapshot"], "total_size"), 4000 + 4 + 50_000);
    let repo_only = json(&t, &["stats"]);
    assert!(
        repo_only.get("snapshot").is_none(),
        "no SNAPSHOT: no snapshot field"
    );

    // restore: one summary document.
    let target = t.dir.path().join("restored");
    let r = json(&t, &["restore", &second_id, "--target", path_str(&target)]);
    check_schema(&r, RESTORE, "restore");
    assert_eq!(s(&r, "message_type"), "summary");
    assert_eq!(s(&r, "snapshot_id"), second_id);
    assert_eq!(num(&r, "files_restored"), 3);
    assert_eq!(num(&r, "bytes_restored"), 54_004);
    assert_eq!(num(&r, "errors"), 0);
    // --quiet does not suppress JSON.
    let quiet = t.ok(&[
        "--json",
        "-q",
        "restore",
        &second_id,
        "--target",
        path_str(&t.dir.path().join("r2")),
    ]);
    check_schema(&document(&quiet, "restore -q"), RESTORE, "restore -q");

    // cat snapshot: the stored file, which is the snapshot object without ids.
    let mut cat: Value = serde_json::from_str(&t.ok(&["cat", "snapshot", &second_id])).unwrap();
    cat["id"] = second_id.clone().into();
    cat["short_id"] = second_id[..8].into();
    assert_eq!(
        cat, snaps[1],
        "cat snapshot = snapshots --json entry minus id/short_id"
    );
}

#[test]
fn check_prune_repair_tag_keys_forget_on_a_clean_repository() {
    let t = TestRepo::new();
    let src = source_tree(&t);
    let first = s(&t.backup_json(&[&src]), "snapshot_id").to_string();
    std::fs::write(src.join("a.sql"), sql_bytes(5, 3000)).unwrap();
    let second = s(&t.backup_json(&[&src]), "snapshot_id").to_string();
    let stats = json(&t, &["stats"]);

    // check, in all its modes.
    for args in [
        &["check"][..],
        &["check", "--read-data"],
        &["check", "--read-data-subset", "1/2"],
        &["check", "--no-password"],
        &["check", "--no-password", "--read-data"],
    ] {
        let c = json(&t, args);
        let what = args.join(" ");
        check_schema(&c, CHECK, &what);
        assert_eq!(c["clean"], true, "{what}: clean repository");
        let clean = if args.contains(&"--no-password") {
            "no file differs from its name"
        } else {
            "no errors were found"
        };
        assert!(s(&c, "verdict").starts_with(clean), "{what}: {c}");
        assert_eq!(c["problems"], serde_json::json!([]), "{what}");
        assert_eq!(c["damaged_paths"], serde_json::json!([]), "{what}");
        assert_eq!(num(&c, "snapshots"), 2, "{what}");
        assert_eq!(
            num(&c, "packs"),
            num(&stats["repository"], "packs"),
            "{what}"
        );
        assert_eq!(c["keyless"], args.contains(&"--no-password"), "{what}");
        if args.contains(&"--read-data") {
            assert_eq!(num(&c, "packs_read"), num(&c, "packs"), "{what}");
            assert_eq!(num(&c, "bytes_read"), t.pack_bytes(), "{what}");
        }
        if !args.contains(&"--no-password") {
            assert_eq!(
                num(&c, "blobs_indexed"),
                num(&stats["repository"], "blobs"),
                "{what}"
            );
        }
    }

    // prune: nothing to do on a repository without unused data.
    let p = json(&t, &["prune", "--dry-run"]);
    check_schema(&p, PRUNE, "prune --dry-run");
    assert_eq!(p["dry_run"], true);
    assert_eq!(num(&p, "blobs_unused"), 0);
    assert_eq!(num(&p, "bytes_freed"), 0);
    assert_eq!(num(&p, "packs"), num(&stats["repository"], "packs"));

    // repair index: a count, and the ids of the new index files.
    let ri = json(&t, &["repair", "index"]);
    check_schema(&ri, REPAIR_INDEX, "repair index");
    assert_eq!(
        num(&ri, "blobs_indexed"),
        num(&stats["repository"], "blobs")
    );
    assert_eq!(
        num(&ri, "packs_indexed"),
        num(&stats["repository"], "packs")
    );
    assert_eq!(num(&ri, "index_files_written"), 1);
    assert_eq!(array(&ri["new_index_files"], "new_index_files").len(), 1);
    for args in [
        &["repair", "snapshots"][..],
        &["repair", "snapshots", "--dry-run"],
    ] {
        let rs = json(&t, args);
        check_schema(&rs, REPAIR_SNAPSHOTS, "repair snapshots");
        assert_eq!(num(&rs, "snapshots_checked"), 2);
        assert_eq!(rs["snapshots"], serde_json::json!([]));
    }

    // key list: one current key; an added one is listed, not current.
    let new_password = t.dir.path().join("new-password");
    std::fs::write(&new_password, "another one\n").unwrap();
    t.ok(&["key", "add", "--new-password-file", path_str(&new_password)]);
    let keys = json(&t, &["key", "list"]);
    let keys = array(&keys, "key list");
    assert_eq!(keys.len(), 2);
    for k in keys {
        check_schema(k, KEY, "key");
        check_schema(&k["kdf_params"], KDF_PARAMS, "kdf_params");
        chrono::DateTime::parse_from_rfc3339(s(k, "created")).expect("created is RFC 3339");
    }
    assert_eq!(keys.iter().filter(|k| k["current"] == true).count(), 1);

    // tag: old → new; a second identical change changes nothing.
    let tagged = json(&t, &["tag", "--add", "kept", &second]);
    let tagged = array(&tagged, "tag");
    assert_eq!(tagged.len(), 1);
    check_schema(&tagged[0], TAG_CHANGE, "tag change");
    assert_eq!(s(&tagged[0], "old"), second);
    let retagged = s(&tagged[0], "new").to_string();
    assert_eq!(t.snapshot_ids(), [first.clone(), retagged.clone()]);
    assert_eq!(
        json(&t, &["tag", "--add", "kept", &retagged]),
        serde_json::json!([])
    );

    // forget: documented in docs/retention.md.
    let groups = json(&t, &["forget", "--dry-run", "--keep-last", "1"]);
    let groups = array(&groups, "forget");
    assert_eq!(groups.len(), 1);
    check_schema(&groups[0], FORGET_GROUP, "forget group");
    for snap in array(&groups[0]["keep"], "keep")
        .iter()
        .chain(array(&groups[0]["remove"], "remove"))
    {
        check_snapshot(snap);
    }
    assert_eq!(s(&groups[0]["keep"][0], "id"), retagged);
    assert_eq!(s(&groups[0]["remove"][0], "id"), first);
    assert_eq!(s(&groups[0]["reasons"][0]["snapshot"], "id"), retagged);
    assert_eq!(t.snapshot_ids().len(), 2, "dry run removed nothing");

    // forget --prune: one document holding both outcomes.
    let both = json(&t, &["forget", &first, "--prune"]);
    assert_eq!(s(&both["forget"][0]["remove"][0], "id"), first);
    check_schema(&both["prune"], PRUNE, "forget --prune's prune");
    assert_eq!(both["prune"]["dry_run"], false);
    assert!(
        num(&both["prune"], "blobs_unused") > 0,
        "the forgotten snapshot left unused data"
    );
    assert_eq!(t.snapshot_ids(), [retagged]);
    assert_eq!(json(&t, &["check"])["clean"], true);
}

#[test]
fn check_and_repair_snapshots_on_a_damaged_repository() {
    let t = TestRepo::new();
    let src = t.path("src");
    std::fs::write(src.join("big.sql"), sql_bytes(7, 200_000)).unwrap();
    std::fs::write(src.join("small.sql"), b"small\n").unwrap();
    let id = s(&t.backup_json(&[&src]), "snapshot_id").to_string();
    // Delete the pack that holds big.sql's data (the largest one).
    let (_, pack) = walk_files(&t.repo.join("packs"))
        .into_iter()
        .max_by_key(|(_, p)| std::fs::metadata(p).unwrap().len())
        .unwrap();
    std::fs::remove_file(&pack).unwrap();

    let out = t.cmd(&["--json", "check"]);
    assert_eq!(out.status.code(), Some(1), "damage found: exit 1");
    let c = document(&String::from_utf8_lossy(&out.stdout), "check");
    check_schema(&c, CHECK, "check (damaged)");
    assert_eq!(c["clean"], false);
    assert!(s(&c, "verdict").starts_with("repository damaged"), "{c}");
    assert_eq!(c["damaged_snapshots"], serde_json::json!([id]));
    let problems = array(&c["problems"], "problems");
    assert!(!problems.is_empty(), "{c}");
    for p in problems {
        check_schema(p, CHECK_PROBLEM, "check problem");
    }
    let damaged = array(&c["damaged_paths"], "damaged_paths");
    for d in damaged {
        check_schema(d, CHECK_DAMAGED_PATH, "damaged path");
        assert_eq!(s(d, "snapshot"), id);
    }
    let big = format!("{}/big.sql", path_str(&src));
    assert!(damaged.iter().any(|d| s(d, "path") == big), "{c}");
    assert!(!array(&c["hints"], "hints").is_empty());

    let ri = json(&t, &["repair", "index"]);
    check_schema(&ri, REPAIR_INDEX, "repair index");

    let dry = json(&t, &["repair", "snapshots", "--dry-run"]);
    check_schema(&dry, REPAIR_SNAPSHOTS, "repair snapshots --dry-run");
    let entry = &array(&dry["snapshots"], "snapshots")[0];
    check_schema(entry, REPAIRED_SNAPSHOT, "repaired snapshot (dry run)");
    assert!(
        entry["repaired"].is_null(),
        "dry run writes nothing: {entry}"
    );

    let rs = json(&t, &["repair", "snapshots", "--forget"]);
    check_schema(&rs, REPAIR_SNAPSHOTS, "repair snapshots");
    assert_eq!(num(&rs, "snapshots_checked"), 1);
    let entries = array(&rs["snapshots"], "snapshots");
    assert_eq!(entries.len(), 1);
    let e = &entries[0];
    check_schema(e, REPAIRED_SNAPSHOT, "repaired snapshot");
    assert_eq!(s(e, "original"), id);
    assert_eq!(e["restorable"], true, "{e}");
    assert_eq!(e["forgotten"], true, "{e}");
    let dropped: Vec<&str> = array(&e["dropped"], "dropped")
        .iter()
        .map(|p| p["path"].as_str().unwrap())
        .collect();
    assert!(dropped.contains(&big.as_str()), "{e}");
    let repaired = s(e, "repaired").to_string();
    let snaps = t.snapshots_json(&[]);
    assert_eq!(snaps.len(), 1);
    check_snapshot(&snaps[0]);
    assert_eq!(s(&snaps[0], "id"), repaired);
    assert_eq!(s(&snaps[0], "original"), id, "the copy names its original");
    assert_eq!(json(&t, &["check"])["clean"], true);
}

#[test]
fn key_and_unlock_json_and_data_commands_untouched_by_json() {
    // docs/json.md: unlock and key print small documents; dump and
    // export-tar write data ("Commands without JSON output").
    let t = TestRepo::new();
    let unlock = json(&t, &["unlock"]);
    assert_eq!(num(&unlock, "removed"), 0, "{unlock}");

    let new_password = t.dir.path().join("new-password");
    std::fs::write(&new_password, "another one\n").unwrap();
    let added = json(
        &t,
        &["key", "add", "--new-password-file", path_str(&new_password)],
    );
    let added = s(&added, "added").to_string();
    assert!(is_id(&Value::String(added.clone())), "{added}");
    let removed = json(&t, &["key", "remove", &added[..8]]);
    assert_eq!(s(&removed, "removed"), added);
    let passwd = json(
        &t,
        &[
            "key",
            "passwd",
            "--new-password-file",
            path_str(&new_password),
        ],
    );
    assert!(
        is_id(&passwd["added"]) && is_id(&passwd["removed"]),
        "{passwd}"
    );
    // From now on the repository opens with the new password.
    std::fs::copy(&new_password, &t.password_file).unwrap();

    // dump writes the file's bytes, untouched by --json.
    let src = t.path("src");
    std::fs::write(src.join("f"), b"{not json\n").unwrap();
    t.backup_json(&[&src]);
    let mut c = t.command();
    c.args(["--json", "dump", "latest", &format!("{}/f", path_str(&src))])
        .stdout(Stdio::piped());
    let out = c.output().unwrap();
    assert!(out.status.success());
    assert_eq!(out.stdout, b"{not json\n");
}

#[test]
fn copy_json_matches_the_docs() {
    let src = TestRepo::new();
    let tree = source_tree(&src);
    src.backup_json(&[&tree]);
    let dst = TestRepo::new();
    let args = [
        "copy",
        "--from-repo",
        path_str(&src.repo),
        "--from-password-file",
        path_str(&src.password_file),
    ];
    for round in 0..2 {
        let v = json(&dst, &args);
        check_schema(&v, COPY, "copy");
        assert_eq!(s(&v, "message_type"), "copy_summary");
        let snapshots = array(&v["snapshots"], "copy snapshots");
        assert_eq!(snapshots.len(), 1);
        check_schema(&snapshots[0], COPIED_SNAPSHOT, "copy snapshot");
        assert_eq!(snapshots[0]["already_copied"], round == 1);
    }
}
