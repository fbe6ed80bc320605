//! The data path on object storage (Garage): backups upload packs on
//! `--connections` threads, restore and `check --read-data` fetch merged
//! ranges on as many IO threads; the result must not depend on how many.

use crate::common::*;
use crate::s3_server::{set_credentials, S3Server, DEFAULT_BUCKET};
use std::path::{Path, PathBuf};

/// A repository at `repo` (an `s3:` URL), initialised with 1 MiB packs so
/// a small tree fills many (concurrent uploads, ranges in many packs).
fn s3_repo(repo: String) -> TestRepo {
    set_credentials();
    let mut t = TestRepo::uninitialised();
    t.repo = PathBuf::from(repo);
    let mut init = vec!["init", "--pack-size", "1"];
    init.extend_from_slice(&FAST_KDF);
    t.ok(&init);
    t
}

/// Directories of small files (several packs' worth, many per pack: what
/// merged ranges are for), a file of many chunks, one of repeated blocks
/// (one blob many times) and an empty one.
fn source(root: &Path) {
    for d in 0..6u64 {
        let dir = root.join(format!("dir{d}/sub"));
        std::fs::create_dir_all(&dir).unwrap();
        for f in 0..40u64 {
            let len = 200 + (f * 7919 + d * 104_729) as usize % 60_000;
            std::fs::write(dir.join(format!("f{f}")), random_bytes(d * 100 + f, len)).unwrap();
        }
    }
    std::fs::write(root.join("big.bin"), random_bytes(77, 6 << 20)).unwrap();
    let block = random_bytes(78, 300_000);
    std::fs::write(root.join("repeated.bin"), block.repeat(8)).unwrap();
    std::fs::write(root.join("empty"), b"").unwrap();
}

#[test]
fn restores_are_byte_identical_with_one_and_eight_connections() {
    let server = S3Server::garage();
    let src_repo = TestRepo::uninitialised();
    let src = src_repo.path("src");
    source(&src);
    let mut restored = Vec::new();
    for connections in ["1", "8"] {
        let t = s3_repo(server.repo(&format!("{DEFAULT_BUCKET}/conn-{connections}")));
        let with = |args: &[&str]| -> Vec<String> {
            let mut all = vec!["--connections".to_string(), connections.to_string()];
            all.extend(args.iter().map(|a| a.to_string()));
            all
        };
        t.backup_json(&with(&[path_str(&src)]));
        let target = t.path("restored");
        t.ok(&with(&[
            "restore",
            &format!("latest:{}", path_str(&src)),
            "--target",
            path_str(&target),
        ]));
        assert_trees_equal(&src, &target);
        let check = t.ok(&with(&["--json", "check", "--read-data"]));
        let report: serde_json::Value = serde_json::from_str(&check).unwrap();
        assert!(
            report["clean"] == true && num(&report, "packs") >= 5,
            "{report}"
        );
        assert_eq!(report["packs_read"], report["packs"]);
        restored.push((t, target));
    }
    let (one, eight) = (content_map(&restored[0].1), content_map(&restored[1].1));
    assert!(one.len() > 200 && one == eight);
}

/// One failed upload among several running at once fails the backup with
/// one line and writes no snapshot; the packs uploaded meanwhile are
/// deleted, so `check` finds nothing wrong and nothing left over.
#[test]
fn an_upload_error_among_concurrent_uploads_fails_the_backup_cleanly() {
    let server = S3Server::garage();
    let t = s3_repo(server.repo(&format!("{DEFAULT_BUCKET}/upload-error")));
    let src = t.path("src");
    source(&src);
    let out = t
        .command()
        .args(["--connections", "4", "backup", path_str(&src)])
        .env("CAIRN_FAILPOINT", "third-upload-error")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("injected upload error"), "{stderr}");
    assert_eq!(stderr.trim().lines().count(), 1, "{stderr}");
    assert!(t.snapshot_ids().is_empty());
    let check = t.ok(&["--json", "check", "--read-data"]);
    let report: serde_json::Value = serde_json::from_str(&check).unwrap();
    assert_eq!(report["packs"], 0, "{report}");
    // And the next backup goes through.
    t.backup_json(&["--connections", "4", path_str(&src)]);
    assert_eq!(t.snapshot_ids().len(), 1);
}
