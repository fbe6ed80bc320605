//! The tree comparison the other tests rely on must itself notice every
//! kind of difference, or a passing round trip would prove nothing.

use crate::common::*;
use std::path::Path;
use std::process::Command;

fn build(root: &Path, linked: bool) {
    std::fs::create_dir_all(root.join("d")).unwrap();
    std::fs::write(root.join("f"), b"content").unwrap();
    if linked {
        std::fs::hard_link(root.join("f"), root.join("d/g")).unwrap();
    } else {
        std::fs::write(root.join("d/g"), b"content").unwrap();
    }
    std::os::unix::fs::symlink("f", root.join("l")).unwrap();
    chmod(&root.join("f"), 0o640);
    set_mtimes_recursive(root, 1_500_000_000, 5);
}

fn differs(name: &str, mutate: impl FnOnce(&Path), linked_b: bool) {
    let dir = tempfile::tempdir().unwrap();
    let (a, b) = (dir.path().join("a"), dir.path().join("b"));
    build(&a, true);
    build(&b, linked_b);
    mutate(&b);
    let result = std::panic::catch_unwind(|| assert_trees_equal(&a, &b));
    assert!(
        result.is_err(),
        "the comparison missed a difference: {name}"
    );
}

#[test]
fn tree_comparison_notices_every_difference() {
    // Identical trees compare equal.
    let dir = tempfile::tempdir().unwrap();
    build(&dir.path().join("a"), true);
    build(&dir.path().join("b"), true);
    assert_trees_equal(&dir.path().join("a"), &dir.path().join("b"));

    let keep = |p: &Path| set_mtime(p, 1_500_000_000, 5);
    differs(
        "content of the same size",
        |b| {
            std::fs::write(b.join("f"), b"CONTENT").unwrap();
            set_mtime(&b.join("f"), 1_500_000_000, 5);
        },
        true,
    );
    differs("mode", |b| chmod(&b.join("f"), 0o600), true);
    differs(
        "mtime by 1 ns",
        |b| set_mtime(&b.join("f"), 1_500_000_000, 6),
        true,
    );
    differs(
        "dir mtime",
        |b| set_mtime(&b.join("d"), 1_500_000_000, 6),
        true,
    );
    differs(
        "symlink mtime",
        |b| set_mtime(&b.join("l"), 1_500_000_001, 5),
        true,
    );
    differs(
        "symlink target",
        |b| {
            std::fs::remove_file(b.join("l")).unwrap();
            std::os::unix::fs::symlink("g", b.join("l")).unwrap();
            set_mtime(&b.join("l"), 1_500_000_000, 5);
            keep(b);
        },
        true,
    );
    differs(
        "missing entry",
        |b| {
            std::fs::remove_file(b.join("l")).unwrap();
            keep(b);
        },
        true,
    );
    differs("hard link broken", |_| {}, false);
    if is_root() {
        differs(
            "owner",
            |b| std::os::unix::fs::lchown(b.join("d/g"), Some(1234), None).unwrap(),
            true,
        );
    }
    let probe = tempfile::tempdir().unwrap();
    std::fs::write(probe.path().join("x"), b"").unwrap();
    let xattrs = have_tool("setfattr")
        && Command::new("setfattr")
            .args(["-n", "user.t", "-v", "1"])
            .arg(probe.path().join("x"))
            .status()
            .is_ok_and(|s| s.success());
    if xattrs {
        differs(
            "xattr",
            |b| {
                run_tool(
                    "setfattr",
                    &[
                        "-n".as_ref(),
                        "user.t".as_ref(),
                        "-v".as_ref(),
                        "1".as_ref(),
                        b.join("f").as_os_str(),
                    ],
                )
            },
            true,
        );
    } else {
        note("user xattrs unsupported: the xattr comparison is not self-tested");
    }
}
