//! Nothing the user backs up appears in the repository in the clear.

use crate::common::*;
use std::process::Command;

const MARKER: &str = "CAIRN-MARKER-7f3a9";

#[test]
fn marker_is_not_found_in_repository() {
    let t = TestRepo::new();
    let src = t.path("src");
    let m = MARKER.as_bytes();

    // Compressible content: the marker repeated in text.
    let mut text = Vec::new();
    for i in 0..20_000 {
        text.extend_from_slice(format!("line {i}: {MARKER} lorem ipsum\n").as_bytes());
    }
    std::fs::write(src.join("compressible.txt"), &text).unwrap();
    // Incompressible content with the marker planted in it.
    let mut noise = random_bytes(31, 2 << 20);
    for at in (0..noise.len() - m.len()).step_by(100_003) {
        noise[at..at + m.len()].copy_from_slice(m);
    }
    std::fs::write(src.join("noise.bin"), &noise).unwrap();
    // A tiny file: content equal to the marker.
    std::fs::write(src.join("tiny"), m).unwrap();
    // Names, a symlink target, an xattr value.
    std::fs::write(src.join(format!("file-{MARKER}.txt")), b"named").unwrap();
    std::fs::create_dir(src.join(format!("dir-{MARKER}"))).unwrap();
    std::fs::write(src.join(format!("dir-{MARKER}/inner")), b"in marked dir").unwrap();
    std::os::unix::fs::symlink(format!("/target/{MARKER}"), src.join("link")).unwrap();
    let mut xattr_planted = false;
    if have_tool("setfattr") {
        xattr_planted = Command::new("setfattr")
            .args(["-n", "user.note", "-v", MARKER])
            .arg(src.join("compressible.txt"))
            .output()
            .map(|o| o.status.success())
            .unwrap_or(false);
    }
    if !xattr_planted {
        note("user xattrs unsupported here: the marker is not planted in an xattr");
    }

    let tag = format!("tag-{MARKER}");
    let host = format!("host-{MARKER}");
    t.backup_json(&[
        src.as_os_str(),
        "--tag".as_ref(),
        tag.as_ref(),
        "--host".as_ref(),
        host.as_ref(),
    ]);
    // stdin: content and file name.
    let mut stream = Vec::new();
    for i in 0..50_000 {
        stream.extend_from_slice(format!("INSERT INTO t VALUES ({i}, '{MARKER}');\n").as_bytes());
    }
    t.backup_stdin_json(
        &format!("stdin-{MARKER}.sql"),
        &["--tag", &tag],
        &mut &stream[..],
    );

    // The data is really there (so the scan below is meaningful).
    let listing = t.ok(&["ls", "latest", "--host", &host]);
    assert!(listing.contains(&format!("file-{MARKER}.txt")), "{listing}");
    let dumped = t.ok_bytes(&["dump", "latest", &format!("stdin-{MARKER}.sql")]);
    assert_eq!(dumped, stream);
    let snaps = t.snapshots_json(&["--tag", &tag]);
    assert_eq!(snaps.len(), 2);

    let hex_lower = hex::encode(m);
    let hex_upper = hex_lower.to_uppercase();
    let needles: [(&str, &[u8]); 3] = [
        ("raw", m),
        ("hex", hex_lower.as_bytes()),
        ("HEX", hex_upper.as_bytes()),
    ];
    let files = all_files_bytes(&t.repo);
    assert!(
        files.len() >= 5,
        "repository has only {} files",
        files.len()
    );
    let mut found = Vec::new();
    for (path, bytes) in &files {
        for (what, needle) in &needles {
            if contains(bytes, needle) {
                found.push(format!("{what} marker in {}", path.display()));
            }
        }
    }
    assert!(
        found.is_empty(),
        "the marker leaked into the repository:\n{}",
        found.join("\n")
    );
}
