//! `cairn completions SHELL` and the man page (`cairn man`).

use crate::common::*;
use std::io::Write;
use std::process::{Command, Stdio};

fn output(args: &[&str]) -> String {
    let out = Command::new(cairn_bin()).args(args).run();
    assert_success(&out, args);
    String::from_utf8(out.stdout).unwrap()
}

#[test]
fn completion_scripts_name_the_subcommands() {
    for shell in ["bash", "zsh", "fish"] {
        let script = output(&["completions", shell]);
        // fish spells long options `-l repo`.
        for word in ["backup", "forget", "restore", "check", "repo", "profile"] {
            assert!(script.contains(word), "{shell} completions lack {word}");
        }
    }
    let out = Command::new(cairn_bin())
        .args(["completions", "tcsh"])
        .run();
    assert_eq!(out.status.code(), Some(1));
}

#[test]
fn bash_accepts_the_bash_completions() {
    if !have_tool("bash") {
        note("bash not installed: skipping bash -n");
        return;
    }
    let script = output(&["completions", "bash"]);
    let mut child = Command::new("bash")
        .arg("-n")
        .stdin(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(script.as_bytes())
        .unwrap();
    let out = finish_with_timeout(child, "bash -n", 60);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn man_page_renders() {
    let page = output(&["man"]);
    assert!(page.contains(".TH cairn 1"), "{page}");
    assert!(page.contains("backup"));
    let dir = tempfile::tempdir().unwrap();
    output(&["man", "--dir", path_str(dir.path())]);
    for name in ["cairn.1", "cairn-backup.1", "cairn-forget.1"] {
        assert!(dir.path().join(name).is_file(), "{name} missing");
    }
    // Hidden: not offered in the help or completions.
    assert!(!output(&["--help"]).contains("\n  man "));
    if !have_tool("groff") {
        note("groff not installed: skipping rendering the man page");
        return;
    }
    let out = Command::new("groff")
        .args(["-man", "-Tascii"])
        .arg(dir.path().join("cairn.1"))
        .run();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("NAME") || text.contains("N\u{8}NA"), "{text}");
    assert!(text.contains("cairn"), "{text}");
}
