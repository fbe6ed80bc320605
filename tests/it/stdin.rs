//! `backup --stdin`: large streams round-trip; a parent stream only guides chunking.

use crate::common::*;
use std::io::{Read, Write};
use std::process::Stdio;

fn stream_size() -> u64 {
    if std::env::var_os("CAIRN_SLOW_TESTS").is_some_and(|v| v == "1") {
        500 << 20
    } else {
        64 << 20
    }
}

/// Feeds a generated stream (never held in memory) into `backup --stdin`
/// from a writer thread; returns the summary and the stream's hash.
fn backup_generated(
    t: &TestRepo,
    name: &str,
    seed: u64,
    len: u64,
) -> (serde_json::Value, blake3::Hash) {
    let mut c = t.command();
    c.args(["--json", "backup", "--stdin", "--stdin-filename", name]);
    c.stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = c.spawn().expect("spawn cairn");
    let mut stdin = child.stdin.take().unwrap();
    let writer = std::thread::spawn(move || {
        let mut gen = SqlStream::new(seed, len);
        let mut hasher = blake3::Hasher::new();
        let mut buf = vec![0u8; 1 << 20];
        loop {
            let n = gen.read(&mut buf).unwrap();
            if n == 0 {
                break;
            }
            hasher.update(&buf[..n]);
            stdin
                .write_all(&buf[..n])
                .expect("cairn stopped reading stdin");
        }
        hasher.finalize()
    });
    let out = finish_with_timeout(child, "backup --stdin", COMMAND_TIMEOUT_SECS);
    let hash = writer.join();
    assert_success(&out, &["backup", "--stdin"]);
    let hash = hash.expect("writer thread failed although cairn succeeded");
    (parse_summary(&String::from_utf8(out.stdout).unwrap()), hash)
}

/// `dump SNAP PATH` streamed through BLAKE3.
fn dump_hash(t: &TestRepo, snap: &str, path: &str) -> (blake3::Hash, u64) {
    let mut child = t
        .command()
        .args(["dump", snap, path])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdout = child.stdout.take().unwrap();
    let hasher = std::thread::spawn(move || hash_reader(&mut stdout));
    let out = finish_with_timeout(child, "dump", COMMAND_TIMEOUT_SECS);
    assert_success(&out, &["dump", snap, path]);
    hasher.join().unwrap()
}

#[test]
fn stdin_round_trip_large() {
    let t = TestRepo::new();
    let len = stream_size();
    let (summary, hash) = backup_generated(&t, "app.sql", 77, len);
    assert_eq!(num(&summary, "total_bytes_processed"), len, "{summary}");
    assert_eq!(num(&summary, "files_new"), 1, "{summary}");
    assert!(
        num(&summary, "data_added") >= len * 9 / 10,
        "a fresh stream must be stored: {summary}"
    );
    let (dumped, dumped_len) = dump_hash(&t, "latest", "app.sql");
    assert_eq!(dumped_len, len, "dump length");
    assert_eq!(
        dumped, hash,
        "dumped stream differs from what was backed up"
    );
    // The snapshot records it as /app.sql and ls shows it.
    let snaps = t.snapshots_json(&[]);
    assert_eq!(snaps.len(), 1);
    assert_eq!(snaps[0]["paths"], serde_json::json!(["/app.sql"]));
    assert!(t.ok(&["ls", "latest"]).lines().any(|l| l == "/app.sql"));
}

#[test]
fn stdin_streams_of_same_name_and_size_are_both_stored_in_full() {
    let t = TestRepo::new();
    let len = 8 << 20;
    let (first, hash1) = backup_generated(&t, "db.sql", 1001, len);
    let (second, hash2) = backup_generated(&t, "db.sql", 2002, len);
    assert_ne!(hash1, hash2, "test streams must differ");
    // The parent only guides chunking: every byte is still read and hashed.
    assert_eq!(
        second["parent"], first["snapshot_id"],
        "the earlier stream of the same name is the parent: {second}"
    );
    assert!(
        num(&second, "data_added") >= len * 9 / 10,
        "second stream was not stored in full: {second}"
    );

    let id1 = first["snapshot_id"].as_str().unwrap().to_string();
    let id2 = second["snapshot_id"].as_str().unwrap().to_string();
    assert_eq!(dump_hash(&t, &id1, "db.sql"), (hash1, len));
    assert_eq!(dump_hash(&t, &id2, "db.sql"), (hash2, len));

    assert_eq!(t.snapshots_json(&[]).len(), 2);
}

/// A re-backed-up stream with edits (bytes inserted, overwritten, removed
/// and appended) is chunked with its parent as a guide. Guided cuts must be
/// exactly FastCDC's: a `--force` backup (no parent) of the same bytes then
/// adds nothing, and neither does a guided one after it.
#[test]
fn guided_stream_chunks_equal_unguided_chunks() {
    let t = TestRepo::uninitialised();
    let mut init = FAST_KDF.to_vec();
    init.extend_from_slice(&["--chunk-sizes", "4,16,64"]);
    t.init(&init);
    // Longer than the 8 MiB read buffer, so guides cross buffers.
    let first = sql_bytes(41, 20 << 20);
    let mut edited = first.clone();
    edited.splice(1_000_000..1_000_000, b"-- inserted row\n".iter().copied());
    edited[9_000_000..9_000_300].fill(b'x');
    edited.drain(16_700_000..16_720_000);
    edited.extend_from_slice(&sql_bytes(42, 300_000));

    let one = t.backup_stdin_json("db.sql", &[], &mut &first[..]);
    let two = t.backup_stdin_json("db.sql", &[], &mut &edited[..]);
    assert_eq!(two["parent"], one["snapshot_id"], "{two}");
    // Only the chunks around the edits and the appended tail are new. The
    // count of them depends on the cut points, and those on the gear table,
    // which each repository seeds from its own key: 12–24 chunks in 30
    // runs here, but 58 once in CI. So the bound is on bytes (about 0.45 MB
    // typically, of a 20 MB stream), and the exact check is the one below.
    assert!(
        num(&two, "data_blobs") > 0 && num(&two, "data_added") < 2_000_000,
        "an edited stream should add only its changed chunks: {two}"
    );
    let forced = t.backup_stdin_json("db.sql", &["--force"], &mut &edited[..]);
    assert!(forced["parent"].is_null(), "{forced}");
    // Only the tree is new (the node's times are the snapshot's).
    assert_eq!(
        num(&forced, "data_blobs"),
        0,
        "unguided chunking found chunks the guided backup did not store: {forced}"
    );
    let again = t.backup_stdin_json("db.sql", &[], &mut &edited[..]);
    assert_eq!(num(&again, "data_blobs"), 0, "{again}");
    let id = two["snapshot_id"].as_str().unwrap().to_string();
    assert_eq!(
        dump_hash(&t, &id, "db.sql"),
        (blake3::hash(&edited), edited.len() as u64)
    );
}
