//! `import-tar` and `export-tar` against GNU tar: a real tree tarred by GNU
//! tar (plain, gzip, zstd, xz, bzip2, sparse), imported, exported, extracted
//! by GNU tar and compared; damaged tarballs leave no snapshot. The sparse
//! file goes through GNU tar's old GNU and PAX (0.1 and 1.0) sparse formats.

use crate::common::*;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

const MTIME: i64 = 1_767_225_600; // 2026-01-01; tar's GNU format keeps whole seconds

/// A tree with what tarballs of Docker volumes hold: nested dirs, empty
/// files and dirs, symlinks (also dangling and long), hard links, odd and
/// long names, setuid bits, other owners, a sparse file.
fn make_tree(root: &Path) {
    let long_dir = root.join("d".repeat(90)).join("e".repeat(90));
    std::fs::create_dir_all(&long_dir).unwrap();
    std::fs::create_dir_all(root.join("empty/dir")).unwrap();
    std::fs::create_dir_all(root.join("conf")).unwrap();
    std::fs::write(root.join("conf/app.sql"), sql_bytes(1, 700_000)).unwrap();
    std::fs::write(root.join("conf/blob.bin"), random_bytes(2, 300_000)).unwrap();
    std::fs::write(root.join("empty.txt"), b"").unwrap();
    std::fs::write(long_dir.join(format!("{}.txt", "f".repeat(120))), b"deep\n").unwrap();
    for name in ["with space", "tab\tname", "ünïcödé", "-dash", "new\nline"] {
        std::fs::write(root.join(name), name.as_bytes()).unwrap();
    }
    std::fs::write(root.join(os(b"latin1-caf\xe9")), b"non-UTF-8 name").unwrap();
    std::os::unix::fs::symlink("conf/app.sql", root.join("link")).unwrap();
    std::os::unix::fs::symlink("../nowhere", root.join("conf/dangling")).unwrap();
    std::os::unix::fs::symlink(long_dir.strip_prefix(root).unwrap(), root.join("long-link"))
        .unwrap();
    std::fs::hard_link(root.join("conf/app.sql"), root.join("hard.sql")).unwrap();
    std::fs::hard_link(root.join("conf/app.sql"), long_dir.join("hard-too.sql")).unwrap();
    let tool = root.join("conf/tool");
    std::fs::write(&tool, b"#!/bin/sh\n").unwrap();
    chmod(&tool, 0o4755);
    chmod(&root.join("empty/dir"), 0o700);
    // Mostly holes: GNU tar -S stores it as a sparse member.
    let sparse = std::fs::File::create(root.join("sparse.img")).unwrap();
    sparse.set_len(8 << 20).unwrap();
    std::os::unix::fs::FileExt::write_all_at(&sparse, b"middle", 4 << 20).unwrap();
    if is_root() {
        std::os::unix::fs::lchown(root.join("with space"), Some(1234), Some(5678)).unwrap();
        std::os::unix::fs::lchown(root.join("link"), Some(33), Some(33)).unwrap();
        std::os::unix::fs::chown(root.join("empty"), Some(1000), Some(1000)).unwrap();
    }
    set_mtimes_recursive(root, MTIME, 0);
}

/// `tar -tvf` lines, comparable across archivers: `./` prefixes and
/// trailing slashes dropped, hard links compared by their data only (which
/// of the names carries the data depends on the walk order), sorted.
fn listing(tarball: &Path) -> Vec<String> {
    let out = Command::new("tar")
        .args(["--numeric-owner", "-tvf"])
        .arg(tarball)
        .output()
        .unwrap();
    assert!(out.status.success(), "tar -tvf {}", tarball.display());
    let mut lines: Vec<String> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| {
            let fields: Vec<&str> = l.split_whitespace().collect();
            let name = fields[5..].join(" ");
            let name = name.strip_prefix("./").unwrap_or(&name);
            let name = name.split(" link to ").next().unwrap();
            let name = name.trim_end_matches('/').to_string();
            if name.is_empty() || name == "." {
                return None; // the root: not part of a snapshot's tree
            }
            let perms = fields[0].replacen('h', "-", 1);
            let size = if fields[0].starts_with('h') || fields[0].starts_with('-') {
                "file"
            } else {
                fields[2]
            };
            Some(format!(
                "{perms} {} {size} {} {} {name}",
                fields[1], fields[3], fields[4]
            ))
        })
        .collect();
    lines.sort();
    lines
}

fn extract(tarball: &Path, into: &Path) {
    std::fs::create_dir_all(into).unwrap();
    let out = Command::new("tar")
        .args(["--numeric-owner", "-xpf"])
        .arg(tarball)
        .arg("-C")
        .arg(into)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "GNU tar cannot extract {}: {}",
        tarball.display(),
        String::from_utf8_lossy(&out.stderr)
    );
    // The tarball's root directory has no node in a snapshot; give the
    // extraction root the source root's metadata.
    chmod(into, 0o755);
    set_mtime(into, MTIME, 0);
}

fn import(t: &TestRepo, tarball: &Path, tag: &str) -> serde_json::Value {
    let out = t.ok(&["--json", "import-tar", path_str(tarball), "--tag", tag]);
    parse_summary(&out)
}

#[test]
fn gnu_tarballs_import_export_and_extract_to_the_same_tree() {
    let t = TestRepo::new();
    let src = t.path("src");
    chmod(&src, 0o755);
    make_tree(&src);
    let tars = t.path("tars");
    let variants: [(&str, &[&str]); 7] = [
        ("plain.tar", &["-S"]),
        ("posix.tar", &["--format=posix", "-S"]),
        (
            "posix-sparse-0.1.tar",
            &["--format=posix", "-S", "--sparse-version=0.1"],
        ),
        ("gz.tar.gz", &["-z"]),
        ("zst.tar.zst", &["--zstd"]),
        ("xz.tar.xz", &["-J"]),
        ("bz.tar.bz2", &["-j"]),
    ];
    let mut first_listing = None;
    let mut imported = String::new();
    for (i, (name, flags)) in variants.iter().enumerate() {
        let tarball = tars.join(name);
        let mut c = Command::new("tar");
        c.args(*flags)
            .arg("-cf")
            .arg(&tarball)
            .arg("-C")
            .arg(&src)
            .arg(".");
        run_ok_cmd(&mut c);
        let summary = import(&t, &tarball, "volume:shared-data");
        if i == 0 {
            assert!(num(&summary, "data_blobs") > 0, "{summary}");
            first_listing = Some(listing(&tarball));
        } else {
            // The same files in another wrapping: nothing new to store.
            assert_eq!(num(&summary, "data_blobs"), 0, "{name}: {summary}");
            assert_eq!(num(&summary, "tree_blobs"), 0, "{name}: {summary}");
        }
        let id = summary["snapshot_id"].as_str().unwrap().to_string();
        imported = id.clone();

        let out_tar = t.dir.path().join(format!("out-{i}.tar"));
        match i {
            0 => {
                t.ok(&["export-tar", &id, "-o", path_str(&out_tar)]);
            }
            1 => std::fs::write(&out_tar, t.ok_bytes(&["export-tar", &id, "--gzip"])).unwrap(),
            _ => std::fs::write(&out_tar, t.ok_bytes(&["export-tar", &id, "--zstd"])).unwrap(),
        }
        assert_eq!(
            listing(&out_tar),
            *first_listing.as_ref().unwrap(),
            "{name}: tar -tvf of the export differs from GNU tar's own tarball"
        );
        let dst = t.dir.path().join(format!("extracted-{i}"));
        extract(&out_tar, &dst);
        assert_trees_equal(&src, &dst);
    }

    // A directory backup of the same tree stores no new file data.
    let summary = t.backup_json(&[path_str(&src)]);
    assert_eq!(num(&summary, "data_blobs"), 0, "{summary}");

    // The snapshot records the tarball and the tag.
    let snaps = t.snapshots_json(&["--tag", "volume:shared-data"]);
    assert_eq!(snaps.len(), variants.len());
    assert_eq!(snaps[0]["source"], "tar");
    assert_eq!(
        snaps[0]["paths"],
        serde_json::json!([path_str(&tars.join("plain.tar"))])
    );

    // export-tar SNAPSHOT PATH: a subtree, and a single file.
    let sub = t.ok_bytes(&["export-tar", &imported, "conf"]);
    let sub_tar = t.dir.path().join("sub.tar");
    std::fs::write(&sub_tar, sub).unwrap();
    let out = Command::new("tar")
        .arg("-tf")
        .arg(&sub_tar)
        .output()
        .unwrap();
    let mut names: Vec<String> = String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .map(String::from)
        .collect();
    names.sort();
    assert_eq!(names, ["app.sql", "blob.bin", "dangling", "tool"]);
}

fn run_ok_cmd(c: &mut Command) {
    let out = c.output().unwrap();
    assert!(
        out.status.success(),
        "{c:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Runs import-tar on a damaged tarball: exit 1, one error line, no snapshot.
fn assert_rejected(t: &TestRepo, tarball: &Path, what: &str) {
    let out = t.cmd(&["import-tar", path_str(tarball)]);
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert_eq!(out.status.code(), Some(1), "{what} accepted: {stderr}");
    let errors: Vec<&str> = stderr
        .lines()
        .filter(|l| l.starts_with("cairn: error:"))
        .collect();
    assert_eq!(errors.len(), 1, "{what}: {stderr}");
    assert!(
        errors[0].contains("no snapshot was written"),
        "{what}: {stderr}"
    );
    assert!(t.snapshots_json(&[]).is_empty(), "{what} left a snapshot");
}

#[test]
fn truncated_and_corrupt_tarballs_leave_no_snapshot() {
    let t = TestRepo::new();
    let src = t.path("src");
    std::fs::write(src.join("a.sql"), sql_bytes(3, 2_000_000)).unwrap();
    std::fs::write(src.join("b.bin"), random_bytes(4, 600_000)).unwrap();
    let gz: PathBuf = t.dir.path().join("v.tar.gz");
    let plain: PathBuf = t.dir.path().join("v.tar");
    let zst: PathBuf = t.dir.path().join("v.tar.zst");
    for (file, flag) in [(&gz, "-z"), (&plain, "--format=gnu"), (&zst, "--zstd")] {
        run_ok_cmd(
            Command::new("tar")
                .arg(flag)
                .arg("-cf")
                .arg(file)
                .arg("-C")
                .arg(&src)
                .arg("."),
        );
    }
    let cut = |from: &Path, name: &str, len: usize| {
        let bytes = std::fs::read(from).unwrap();
        let to = t.dir.path().join(name);
        std::fs::write(&to, &bytes[..len.min(bytes.len())]).unwrap();
        to
    };
    let gz_len = std::fs::metadata(&gz).unwrap().len() as usize;
    assert_rejected(
        &t,
        &cut(&gz, "half.tar.gz", gz_len / 2),
        "a truncated .tar.gz",
    );
    // Only the gzip trailer (CRC and length) missing: the tar inside is
    // whole, but the compressed file is not.
    assert_rejected(
        &t,
        &cut(&gz, "notrailer.tar.gz", gz_len - 4),
        "a .tar.gz without its trailer",
    );
    let zst_len = std::fs::metadata(&zst).unwrap().len() as usize;
    assert_rejected(
        &t,
        &cut(&zst, "half.tar.zst", zst_len / 2),
        "a truncated .tar.zst",
    );
    // Cut inside a member's data, and exactly at a member boundary (a tar
    // parser sees a clean end there; the missing end-of-archive block tells).
    assert_rejected(
        &t,
        &cut(&plain, "mid.tar", 1_000_000),
        "a tar cut inside a file",
    );
    let bytes = std::fs::read(&plain).unwrap();
    // The first member is "./" (one header, no data); cut after the second.
    let boundary = find_member_end(&bytes, 512);
    assert_rejected(
        &t,
        &cut(&plain, "boundary.tar", boundary),
        "a tar cut at a member boundary",
    );
    // A flipped byte in a header fails its checksum.
    let mut corrupt = bytes.clone();
    corrupt[512 + 10] ^= 0x5a;
    let corrupt_path = t.dir.path().join("corrupt.tar");
    std::fs::write(&corrupt_path, &corrupt).unwrap();
    assert_rejected(&t, &corrupt_path, "a tar with a corrupt header");

    // The undamaged tarball from standard input imports fine.
    let mut child = t
        .command()
        .args(["--json", "import-tar", "-"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(&std::fs::read(&zst).unwrap())
        .unwrap();
    let out = finish_with_timeout(child, "import-tar -", COMMAND_TIMEOUT_SECS);
    assert_success(&out, &["import-tar", "-"]);
    assert_eq!(
        t.ok_bytes(&["dump", "latest", "a.sql"]),
        std::fs::read(src.join("a.sql")).unwrap()
    );
    assert_eq!(t.snapshots_json(&[])[0]["paths"], serde_json::json!(["-"]));
}

/// The offset just past the member whose header is at `header` (header
/// block plus data rounded up to 512 bytes).
fn find_member_end(tar: &[u8], header: usize) -> usize {
    let size_field = std::str::from_utf8(&tar[header + 124..header + 135]).unwrap();
    let size = u64::from_str_radix(size_field.trim_matches(|c: char| c == '\0' || c == ' '), 8)
        .unwrap() as usize;
    header + 512 + size.div_ceil(512) * 512
}

#[test]
fn names_that_climb_out_are_skipped_with_exit_3() {
    let t = TestRepo::new();
    // GNU tar refuses to write "../x" without -P; build the archive by hand.
    let mut tar = Vec::new();
    for (name, data) in [
        ("ok.txt", &b"fine\n"[..]),
        ("../escape.txt", &b"evil\n"[..]),
    ] {
        let mut header = [0u8; 512];
        header[..name.len()].copy_from_slice(name.as_bytes());
        header[100..107].copy_from_slice(b"0000644");
        header[108..115].copy_from_slice(b"0000000");
        header[116..123].copy_from_slice(b"0000000");
        header[124..135].copy_from_slice(format!("{:011o}", data.len()).as_bytes());
        header[136..147].copy_from_slice(format!("{MTIME:011o}").as_bytes());
        header[156] = b'0';
        header[257..263].copy_from_slice(b"ustar\0");
        header[263..265].copy_from_slice(b"00");
        header[148..156].copy_from_slice(b"        ");
        let sum: u32 = header.iter().map(|&b| b as u32).sum();
        header[148..155].copy_from_slice(format!("{sum:06o}\0").as_bytes());
        tar.extend_from_slice(&header);
        tar.extend_from_slice(data);
        tar.resize(tar.len().div_ceil(512) * 512, 0);
    }
    tar.resize(tar.len() + 1024, 0);
    let file = t.dir.path().join("evil.tar");
    std::fs::write(&file, &tar).unwrap();
    let out = t.cmd(&["import-tar", path_str(&file)]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(3), "{stderr}");
    assert!(stderr.contains("../escape.txt"), "{stderr}");
    let ls = t.ok(&["ls", "latest"]);
    assert_eq!(ls.lines().collect::<Vec<_>>(), ["/ok.txt"]);
    assert!(!t.dir.path().join("escape.txt").exists());
}
