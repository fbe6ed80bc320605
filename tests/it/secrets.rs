//! What must not leave the process: the password (to the children cairn
//! starts), and escape sequences from stored names (to the terminal).

use crate::common::*;

/// A dump command's environment, as the command saw it and cairn stored it.
#[test]
fn dump_command_environment_has_no_password_variables() {
    let t = TestRepo::new();
    let out = t
        .command()
        .env("CAIRN_PASSWORD", PASSWORD)
        .args([
            "backup",
            "--stdin-from-command",
            "--stdin-filename",
            "env.txt",
            "--",
            "env",
        ])
        .output()
        .unwrap();
    assert_success(&out, &["backup --stdin-from-command env"]);
    let seen = String::from_utf8(t.ok_bytes(&["dump", "latest", "env.txt"])).unwrap();
    assert!(
        seen.contains("PATH="),
        "the command ran with an environment: {seen}"
    );
    assert!(
        seen.contains("CAIRN_REPOSITORY="),
        "other variables pass: {seen}"
    );
    for secret in ["CAIRN_PASSWORD=", "CAIRN_PASSWORD_FILE=", PASSWORD] {
        assert!(
            !seen.contains(secret),
            "{secret} reached the dump command: {seen}"
        );
    }
}

#[test]
fn password_command_shell_gets_no_password_variables() {
    let t = TestRepo::new();
    let seen_file = t.dir.path().join("seen-env");
    let command = format!("env > '{}'; echo '{PASSWORD}'", seen_file.display());
    let out = t
        .command()
        .env("CAIRN_PASSWORD_COMMAND", &command)
        .env("CAIRN_PASSWORD", "not the password")
        .args(["snapshots"])
        .output()
        .unwrap();
    assert_success(&out, &["snapshots with CAIRN_PASSWORD_COMMAND"]);
    let seen = std::fs::read_to_string(&seen_file).unwrap();
    assert!(seen.contains("PATH="), "{seen}");
    assert!(
        !seen.contains("CAIRN_PASSWORD"),
        "password variables reached the shell: {seen}"
    );
}

#[test]
fn names_with_escape_sequences_are_escaped_in_listings() {
    let t = TestRepo::new();
    let src = t.path("src");
    std::fs::create_dir_all(&src).unwrap();
    std::fs::write(src.join("evil\x1b]0;owned\x07\x1b[2J"), b"x").unwrap();
    t.ok(&["backup", path_str(&src)]);
    for args in [
        &["ls", "latest"][..],
        &["ls", "-l", "latest"],
        &["find", "evil*"],
    ] {
        let listing = t.ok(args);
        assert!(
            !listing.contains('\x1b') && !listing.contains('\x07'),
            "{args:?}: {listing:?}"
        );
        assert!(
            listing.contains("evil\\x1b]0;owned\\x07\\x1b[2J"),
            "{args:?}: {listing:?}"
        );
    }
    // JSON keeps the name exact (serde escapes control characters itself).
    let json = t.ok(&["--json", "ls", "latest"]);
    assert!(
        json.contains("evil\\u001b]0;owned\\u0007\\u001b[2J"),
        "{json}"
    );
}
