//! Progress display: a bar on a terminal (driven through a pseudo-terminal
//! with `script`), plain periodic lines otherwise, nothing with `-q`.

use crate::common::*;

/// A repository whose `check --read-data` takes a moment: many small packs.
fn busy_repo() -> TestRepo {
    let t = TestRepo::uninitialised();
    t.init(&[&FAST_KDF[..], &["--pack-size", "1"]].concat());
    let src = t.path("src");
    std::fs::write(src.join("big.bin"), random_bytes(5, 60 << 20)).unwrap();
    t.backup_json(&[&src]);
    t
}

#[test]
fn progress_is_line_based_without_a_terminal_and_silent_with_q() {
    let t = busy_repo();
    let out = t
        .command()
        .env("CAIRN_PROGRESS_INTERVAL", "0.02")
        .args(["check", "--read-data"])
        .run();
    assert_success(&out, &["check"]);
    let err = String::from_utf8_lossy(&out.stderr);
    let lines: Vec<&str> = err
        .lines()
        .filter(|l| l.contains("reading packs:"))
        .collect();
    assert!(!lines.is_empty(), "no progress lines: {err}");
    for line in &lines {
        assert!(line.starts_with('[') && line.contains("items"), "{line}");
        assert!(
            !line.contains('\r') && !line.contains('\x1b'),
            "not plain: {line:?}"
        );
    }
    let out = t
        .command()
        .env("CAIRN_PROGRESS_INTERVAL", "0.02")
        .args(["-q", "check", "--read-data"])
        .run();
    assert_success(&out, &["check -q"]);
    assert!(
        out.stderr.is_empty(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn progress_bar_renders_on_a_terminal() {
    if !have_tool("script") {
        note("no `script` (util-linux): skipping the terminal test");
        return;
    }
    let t = busy_repo();
    // `script` gives cairn a pseudo-terminal and copies what it draws.
    let log = t.dir.path().join("tty.log");
    let command = format!("{} check --read-data", path_str(&t.bin));
    let out = t
        .command_for("script")
        .args(["-qefc", &command])
        .arg(&log)
        .run();
    assert_success(&out, &["script cairn check"]);
    let drawn = String::from_utf8_lossy(&std::fs::read(&log).unwrap()).into_owned();
    // Which phase is on screen when the bar is drawn depends on the speed
    // of the machine: "reading packs" or "checking snapshots".
    assert!(
        drawn.contains("reading packs") || drawn.contains("checking snapshots"),
        "no bar: {drawn:?}"
    );
    assert!(drawn.contains("[00:00:"), "no elapsed time: {drawn:?}");
    assert!(
        drawn.contains('\r') || drawn.contains("\x1b["),
        "not redrawn in place: {drawn:?}"
    );
    assert!(drawn.contains("no errors were found"), "{drawn:?}");
}
