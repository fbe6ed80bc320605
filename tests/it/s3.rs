//! A repository on S3: the backend contract, the conditional-write probe and
//! every command, against real servers started here (Garage and moto, from
//! scripts/setup.sh); wrong credentials and an unreachable endpoint fail
//! with one line, quickly.

use crate::common::*;
use crate::s3_server::{set_credentials, S3Server, DEFAULT_BUCKET};
use cairn::storage::backend::conformance::conforms;
use cairn::storage::backend::s3::ConditionalWrites;
use cairn::storage::backend::{S3Backend, S3Location};
use cairn::Backend as _;
use std::path::PathBuf;
use std::time::{Duration, Instant};

fn backend(server: &S3Server, bucket_and_prefix: &str) -> S3Backend {
    S3Backend::new(S3Location::parse(&server.repo(bucket_and_prefix)).unwrap()).unwrap()
}

#[test]
fn s3_backend_keeps_the_backend_contract_on_garage() {
    let server = S3Server::garage();
    // A bucket that does not exist yet: `create` makes it.
    conforms(&backend(&server, "conformance/repo"));
}

#[test]
fn s3_backend_keeps_the_backend_contract_on_moto() {
    let server = S3Server::moto();
    conforms(&backend(&server, "conformance"));
}

/// Garage answers 200 to a second `If-None-Match: *` PUT and overwrites;
/// moto answers 412. The probe must tell them apart, not trust either.
#[test]
fn conditional_write_probe_tells_moto_from_garage() {
    let garage = S3Server::garage();
    let moto = S3Server::moto();
    let on_garage = backend(&garage, "probe/r");
    on_garage.create().unwrap();
    assert_eq!(
        on_garage.conditional_writes().unwrap(),
        ConditionalWrites::Ignored
    );
    let on_moto = backend(&moto, "probe/r");
    on_moto.create().unwrap();
    assert_eq!(
        on_moto.conditional_writes().unwrap(),
        ConditionalWrites::Enforced
    );
    // The probe leaves nothing behind, and a second init is refused.
    for b in [&on_garage, &on_moto] {
        assert!(!b.exists().unwrap());
        assert!(b
            .put_new(cairn::FileKind::Config, "config", b"one")
            .unwrap());
        assert!(!b
            .put_new(cairn::FileKind::Config, "config", b"two")
            .unwrap());
        assert_eq!(b.get(cairn::FileKind::Config, "config").unwrap(), b"one");
    }
}

/// A repository at `repo` (an `s3:` URL) with its own cache and password.
fn s3_repo(repo: String) -> TestRepo {
    set_credentials();
    let mut t = TestRepo::uninitialised();
    t.repo = PathBuf::from(repo);
    t
}

fn round_trip(t: &TestRepo) {
    // No bucket or no config yet: no repository (exit code 10), not an error.
    assert_eq!(t.cmd(&["snapshots"]).status.code(), Some(10));
    let mut init = vec!["init"];
    init.extend_from_slice(&FAST_KDF);
    t.ok(&init);
    let again = t.cmd(&["init"]);
    assert!(!again.status.success(), "a second init succeeded");

    let src = t.path("src");
    std::fs::create_dir_all(src.join("sub")).unwrap();
    std::fs::write(src.join("small.txt"), b"hello, bucket\n").unwrap();
    // Several MiB of incompressible data: more than one chunk, real packs.
    std::fs::write(src.join("sub/big.bin"), random_bytes(7, 5 << 20)).unwrap();
    std::fs::write(src.join("sub/empty"), b"").unwrap();
    t.backup_json(&[path_str(&src)]);
    let stdin_data = random_bytes(8, 300_000);
    t.backup_stdin_json("stream.bin", &[], &mut &stdin_data[..]);
    assert_eq!(t.snapshot_ids().len(), 2);

    let listing = t.ok(&["ls", "latest"]);
    assert!(listing.contains("stream.bin"), "{listing}");
    let ids = t.snapshot_ids();
    let (first, stream) = (&ids[0], &ids[1]);
    let listing = t.ok(&["ls", first]);
    assert!(listing.contains("big.bin"), "{listing}");

    let target = t.restore(&format!("{first}:{}", path_str(&src)), "restored");
    assert_trees_equal(&src, &target);
    assert_eq!(t.ok_bytes(&["dump", "latest", "stream.bin"]), stdin_data);

    t.ok(&["check", "--read-data"]);
    // A second backup of the tree replaces most of it; forget keeps the
    // last snapshot of each group (the tree, the stream) and prune frees
    // what only the first one used.
    std::fs::write(src.join("sub/big.bin"), random_bytes(9, 3 << 20)).unwrap();
    t.backup_json(&[path_str(&src)]);
    t.ok(&["forget", "--keep-last", "1", "--prune"]);
    let left = t.snapshot_ids();
    assert_eq!(left.len(), 2);
    assert!(!left.contains(first) && left.contains(stream), "{left:?}");
    t.ok(&["check", "--read-data"]);
    let target = t.restore(&format!("latest:{}", path_str(&src)), "restored2");
    assert_trees_equal(&src, &target);
    assert_eq!(t.ok_bytes(&["dump", stream, "stream.bin"]), stdin_data);
}

#[test]
fn every_command_round_trips_on_garage() {
    let server = S3Server::garage();
    round_trip(&s3_repo(server.repo(&format!("{DEFAULT_BUCKET}/host-a"))));
}

#[test]
fn every_command_round_trips_on_moto() {
    let server = S3Server::moto();
    // No bucket yet: init creates it.
    round_trip(&s3_repo(server.repo("fresh-bucket")));
}

/// One line on stderr, the documented exit code, within `secs`.
fn fails_quickly(t: &TestRepo, env: &[(&str, &str)], code: i32, secs: u64) -> String {
    let started = Instant::now();
    let mut c = t.command();
    c.args(["snapshots"]);
    for (k, v) in env {
        c.env(k, v);
    }
    let out = output_with_timeout(&mut c, secs + 30);
    let took = started.elapsed();
    let stderr = String::from_utf8_lossy(&out.stderr).to_string();
    assert_eq!(out.status.code(), Some(code), "{stderr}");
    assert_eq!(stderr.trim_end().lines().count(), 1, "{stderr}");
    assert!(took < Duration::from_secs(secs), "took {took:?}: {stderr}");
    stderr
}

#[test]
fn wrong_credentials_fail_at_once_with_one_line() {
    let server = S3Server::garage();
    let t = s3_repo(server.repo(&format!("{DEFAULT_BUCKET}/creds")));
    let mut init = vec!["init"];
    init.extend_from_slice(&FAST_KDF);
    t.ok(&init);
    let wrong = "0".repeat(64);
    // Not retried: a 403 is not transient.
    let stderr = fails_quickly(&t, &[("AWS_SECRET_ACCESS_KEY", &wrong)], 1, 5);
    assert!(stderr.contains("access denied"), "{stderr}");
}

#[test]
fn an_unreachable_endpoint_fails_within_the_retry_bound() {
    set_credentials();
    // A port nobody listens on: connections are refused, retried with
    // backoff for CAIRN_S3_RETRY_SECONDS, then reported.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let t = s3_repo(format!("s3:http://127.0.0.1:{port}/nowhere"));
    let stderr = fails_quickly(&t, &[("CAIRN_S3_RETRY_SECONDS", "2")], 1, 20);
    assert!(stderr.contains(&format!("127.0.0.1:{port}")), "{stderr}");
}

/// The runbooks' nightly offsite step, as `cairn copy`: a local repository
/// to a bucket, and back from the bucket into a new local repository; every
/// snapshot restores byte-exact from the copy of the copy, and a second
/// copy to the bucket adds nothing.
#[test]
fn copy_goes_offsite_to_garage_and_back() {
    let server = S3Server::garage();
    let local = TestRepo::new();
    let src = local.path("src");
    std::fs::create_dir_all(src.join("sub")).unwrap();
    std::fs::write(src.join("sub/big.bin"), random_bytes(31, 3 << 20)).unwrap();
    std::fs::write(src.join("note.txt"), b"offsite\n").unwrap();
    local.backup_json(&[path_str(&src)]);

    let offsite = s3_repo(server.repo(&format!("{DEFAULT_BUCKET}/offsite")));
    let mut init = vec!["init"];
    init.extend_from_slice(&FAST_KDF);
    offsite.ok(&init);
    let copy_from = |dst: &TestRepo, from: &TestRepo| {
        dst.ok(&[
            "copy",
            "--from-repo",
            path_str(&from.repo),
            "--from-password-file",
            path_str(&from.password_file),
        ])
    };
    copy_from(&offsite, &local);
    assert_eq!(offsite.snapshot_ids().len(), 1);
    offsite.ok(&["check", "--read-data"]);
    let again = offsite.cmd(&[
        "--json",
        "copy",
        "--from-repo",
        path_str(&local.repo),
        "--from-password-file",
        path_str(&local.password_file),
    ]);
    assert_success(&again, &["second copy"]);
    assert_eq!(
        offsite.snapshot_ids().len(),
        1,
        "a second copy adds no snapshot"
    );

    let back = TestRepo::new();
    copy_from(&back, &offsite);
    let target = back.restore(&format!("latest:{}", path_str(&src)), "restored");
    assert_trees_equal(&src, &target);
}
