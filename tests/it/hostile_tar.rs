//! Hostile tarballs, built byte by byte (GNU tar refuses to write most of
//! them): each is refused with one line and no snapshot, or stored so that
//! `check` is clean, `prune` runs and the snapshot restores.

use crate::common::*;
use std::io::Write;
use std::path::PathBuf;

/// One 512-byte ustar header (names and link names cut at 100 bytes: put
/// longer ones in a PAX record).
fn header(name: &[u8], kind: u8, size: usize, link: &[u8]) -> Vec<u8> {
    let mut h = [0u8; 512];
    let n = name.len().min(100);
    h[..n].copy_from_slice(&name[..n]);
    h[100..107].copy_from_slice(b"0000644");
    h[108..115].copy_from_slice(b"0000000");
    h[116..123].copy_from_slice(b"0000000");
    h[124..135].copy_from_slice(format!("{size:011o}").as_bytes());
    h[136..147].copy_from_slice(b"15050010000");
    h[156] = kind;
    let l = link.len().min(100);
    h[157..157 + l].copy_from_slice(&link[..l]);
    h[257..263].copy_from_slice(b"ustar\0");
    h[263..265].copy_from_slice(b"00");
    h[148..156].copy_from_slice(b"        ");
    let sum: u32 = h.iter().map(|&b| u32::from(b)).sum();
    h[148..155].copy_from_slice(format!("{sum:06o}\0").as_bytes());
    h.to_vec()
}

/// A member: its header and its data padded to whole blocks.
fn member(name: &[u8], kind: u8, data: &[u8], link: &[u8]) -> Vec<u8> {
    let mut out = header(name, kind, data.len(), link);
    out.extend_from_slice(data);
    out.resize(out.len().div_ceil(512) * 512, 0);
    out
}

fn file(name: &str, data: &[u8]) -> Vec<u8> {
    member(name.as_bytes(), b'0', data, b"")
}

/// A PAX extended header for the member after it.
fn pax(records: &[(&[u8], &[u8])]) -> Vec<u8> {
    let mut body = Vec::new();
    for (key, value) in records {
        // "<len> <key>=<value>\n", where <len> counts itself.
        let rest = key.len() + value.len() + 3;
        let mut len = rest + 1;
        while rest + len.to_string().len() != len {
            len = rest + len.to_string().len();
        }
        body.extend_from_slice(format!("{len} ").as_bytes());
        body.extend_from_slice(key);
        body.push(b'=');
        body.extend_from_slice(value);
        body.push(b'\n');
    }
    member(b"PaxHeaders/x", b'x', &body, b"")
}

/// The members, then the end-of-archive blocks.
fn tarball(parts: &[Vec<u8>]) -> Vec<u8> {
    let mut tar = parts.concat();
    tar.resize(tar.len() + 1024, 0);
    tar
}

fn write(t: &TestRepo, name: &str, bytes: &[u8]) -> PathBuf {
    let path = t.dir.path().join(name);
    std::fs::write(&path, bytes).unwrap();
    path
}

/// import-tar refuses the tarball promptly: exit 1, one short line on
/// stderr that names the problem, no snapshot.
fn assert_refused(t: &TestRepo, name: &str, bytes: &[u8], expect: &str) {
    let path = write(t, name, bytes);
    assert_refused_with(t, &path, &[], expect);
}

fn assert_refused_with(t: &TestRepo, path: &std::path::Path, extra: &[&str], expect: &str) {
    let name = path.display();
    let out = output_with_timeout(
        t.command().args(["import-tar", path_str(path)]).args(extra),
        60,
    );
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert_eq!(out.status.code(), Some(1), "{name} accepted: {stderr}");
    let lines: Vec<&str> = stderr.lines().collect();
    assert_eq!(lines.len(), 1, "{name}: {stderr}");
    assert!(lines[0].starts_with("cairn: error:"), "{name}: {stderr}");
    assert!(
        lines[0].contains("no snapshot was written"),
        "{name}: {stderr}"
    );
    assert!(lines[0].contains(expect), "{name}: {stderr}");
    assert!(
        lines[0].len() < 500,
        "{name}: a {} byte line",
        lines[0].len()
    );
    assert!(t.snapshots_json(&[]).is_empty(), "{name} left a snapshot");
}

#[test]
fn hostile_member_fields_are_refused_with_one_line_and_no_snapshot() {
    let t = TestRepo::new();
    let ok = file("ok.txt", b"fine\n");
    let link =
        |target: &[u8]| [pax(&[(b"linkpath", target)]), member(b"l", b'2', b"", b"x")].concat();
    let xattr = |name: &[u8]| {
        let key = [&b"SCHILY.xattr."[..], name].concat();
        [pax(&[(&key, b"v")]), file("f", b"data")].concat()
    };
    // A version 1.0 sparse map (one segment of one byte at 0), padded to a
    // block, then the byte: a reader that believed the claimed size would
    // expand zeros for ever.
    let mut sparse_data = b"1\n0\n1\n".to_vec();
    sparse_data.resize(512, 0);
    sparse_data.push(b'x');
    let cases: Vec<(&str, Vec<u8>, &str)> = vec![
        ("nul-target.tar", link(b"a\0b"), "symlink target with a NUL"),
        (
            "long-target.tar",
            link(&[b'a'; 5000]),
            "symlink target longer",
        ),
        (
            "empty-target.tar",
            member(b"l", b'2', b"", b""),
            "empty symlink target",
        ),
        ("empty-xattr.tar", xattr(b""), "xattr name"),
        ("long-xattr.tar", xattr(&[b'u'; 300]), "xattr name"),
        (
            "deep.tar",
            [
                pax(&[(b"path", format!("{}f", "d/".repeat(10_000)).as_bytes())]),
                file("x", b"deep"),
            ]
            .concat(),
            "is nested 10001 deep",
        ),
        (
            "sparse.tar",
            [
                pax(&[
                    (b"GNU.sparse.major", b"1"),
                    (b"GNU.sparse.minor", b"0"),
                    (b"GNU.sparse.name", b"big"),
                    (b"GNU.sparse.realsize", b"18446744073709551000"),
                ]),
                file("GNUSparseFile.0/big", &sparse_data),
            ]
            .concat(),
            "sparse file claiming 18446744073709551000 bytes",
        ),
    ];
    for (name, hostile, expect) in cases {
        assert_refused(&t, name, &tarball(&[ok.clone(), hostile]), expect);
    }
    // A PAX header past the 64 MiB header limit, gzip-compressed so that the
    // test file stays small.
    let huge = tarball(&[
        ok.clone(),
        pax(&[(b"comment", &vec![b'c'; 65 << 20])]),
        file("f", b"x"),
    ]);
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    gz.write_all(&huge).unwrap();
    assert_refused(&t, "huge-pax.tar.gz", &gz.finish().unwrap(), "headers");
}

#[test]
fn hostile_paths_and_duplicates_are_stored_restorably() {
    let t = TestRepo::new();
    let tar = tarball(&[
        file("../escape", b"evil\n"),
        file("/abs/file", b"absolute\n"),
        file("a//b/./c", b"dots\n"),
        file("dup", b"one\n"),
        file("dup", b"two\n"),
        // A file, then a member under it: the directory wins.
        file("d", b"file first\n"),
        file("d/x", b"under d\n"),
        // A directory with an entry, then a file of the same name: the
        // later member wins, as when extracting.
        member(b"e", b'5', b"", b""),
        file("e/y", b"gone\n"),
        file("e", b"file last\n"),
        // The same xattr twice: the later record wins.
        pax(&[
            (b"SCHILY.xattr.user.k", b"1"),
            (b"SCHILY.xattr.user.k", b"2"),
        ]),
        file("x", b"x\n"),
        member(b"up", b'2', b"", b"../../etc/passwd"),
        member(b"hard", b'1', b"", b"dup"),
        member(b"nowhere", b'1', b"", b"missing"),
    ]);
    let path = write(&t, "paths.tar", &tar);
    let out = t.cmd(&["import-tar", path_str(&path)]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    // The escape and the hard link to nothing are skipped, with a warning.
    assert_eq!(out.status.code(), Some(3), "{stderr}");
    assert!(stderr.contains("../escape"), "{stderr}");
    assert!(stderr.contains("nowhere"), "{stderr}");
    let ls = t.ok(&["ls", "latest"]);
    assert_eq!(
        ls.lines().collect::<Vec<_>>(),
        [
            "/a",
            "/a/b",
            "/a/b/c",
            "/abs",
            "/abs/file",
            "/d",
            "/d/x",
            "/dup",
            "/e",
            "/hard",
            "/up",
            "/x"
        ]
    );
    assert_eq!(t.ok_bytes(&["dump", "latest", "dup"]), b"two\n");
    assert_eq!(t.ok_bytes(&["dump", "latest", "hard"]), b"two\n");
    assert_eq!(t.ok_bytes(&["dump", "latest", "e"]), b"file last\n");
    let tree = t.ok(&["cat", "tree", "latest"]);
    assert!(tree.contains("\"value\": \"32\""), "{tree}");
    assert!(!tree.contains("\"value\": \"31\""), "{tree}");
    assert_success(&t.cmd(&["check"]), &["check"]);
    assert_success(&t.cmd(&["prune"]), &["prune"]);
    let target = t.restore("latest", "out");
    assert_eq!(std::fs::read(target.join("a/b/c")).unwrap(), b"dots\n");
    assert_eq!(
        std::fs::read_link(target.join("up")).unwrap(),
        PathBuf::from("../../etc/passwd")
    );
    assert!(!t.dir.path().join("escape").exists());
}

/// A tree 2,000 directories deep (the limit is 2,048) imports, and every
/// command that walks trees handles it.
#[test]
fn a_deep_tarball_imports_and_every_tree_walk_handles_it() {
    let t = TestRepo::new();
    let deep = format!("{}f", "d/".repeat(2_000));
    let tar = tarball(&[pax(&[(b"path", deep.as_bytes())]), file("x", b"deep\n")]);
    let path = write(&t, "deep.tar", &tar);
    assert_success(&t.cmd(&["import-tar", path_str(&path)]), &["import-tar"]);
    assert_success(&t.cmd(&["check"]), &["check"]);
    assert_eq!(t.ok(&["ls", "latest"]).lines().count(), 2_001);
    assert_eq!(
        t.ok(&["find", "f"])
            .lines()
            .filter(|l| l.ends_with("/f"))
            .count(),
        1
    );
    assert_eq!(
        t.ok_bytes(&["dump", "latest", &format!("/{deep}")]),
        b"deep\n"
    );
    let stats = t.ok(&["--json", "stats", "latest"]);
    assert!(stats.contains("\"dirs\":2000"), "{stats}");
    let exported = t.ok_bytes(&["export-tar", "latest"]);
    assert!(exported.len() > 2_000 * 512);
    // A second snapshot without the deep tree: diff walks all of it.
    let flat = write(&t, "flat.tar", &tarball(&[file("g", b"flat\n")]));
    assert_success(&t.cmd(&["import-tar", path_str(&flat)]), &["import-tar"]);
    let ids = t.snapshot_ids();
    let diff = t.ok(&["diff", &ids[0], &ids[1]]);
    assert!(
        diff.lines().filter(|l| l.starts_with('-')).count() >= 2_001,
        "{diff}"
    );
    assert_success(&t.cmd(&["prune"]), &["prune"]);
}

#[test]
fn import_limits_can_be_set_on_the_command_line() {
    let t = TestRepo::new();
    let path = write(
        &t,
        "two.tar",
        &tarball(&[file("a", b"12345"), file("b", b"")]),
    );
    assert_refused_with(&t, &path, &["--max-members", "1"], "more than 1 members");
    assert_refused_with(&t, &path, &["--max-size", "4"], "more than 4 bytes");
    let out = t.cmd(&[
        "import-tar",
        path_str(&path),
        "--max-size",
        "5",
        "--max-members",
        "2",
    ]);
    assert_success(&out, &["import-tar", "--max-size", "5"]);
}
