//! The retention lock on S3: packs, snapshots and audit entries carry an
//! Object Lock retain-until date in compliance mode, which moto enforces
//! (a locked version cannot be deleted); a bucket or server without Object
//! Lock says so in one line. And a server that accepts a connection and
//! never answers costs the retry bound, not the per-request timeout.

use crate::common::*;
use crate::s3_server::{set_credentials, S3Server, ACCESS_KEY, DEFAULT_BUCKET};
use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::PathBuf;
use std::time::{Duration, Instant};

/// A repository at `repo` (an `s3:` URL) with its own cache and password.
fn s3_repo(repo: String) -> TestRepo {
    set_credentials();
    let mut t = TestRepo::uninitialised();
    t.repo = PathBuf::from(repo);
    t
}

/// An answer from moto to a request with a made-up signature: moto checks
/// none, but answers 403 to anonymous reads of private objects.
struct Raw {
    status: u16,
    head: String,
    body: String,
}

fn raw(endpoint: &str, method: &str, path: &str, body: &[u8]) -> Raw {
    let host = endpoint.trim_start_matches("http://");
    let mut stream = TcpStream::connect(host).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(30)))
        .unwrap();
    write!(
        stream,
        "{method} {path} HTTP/1.1\r\nHost: {host}\r\nContent-Length: {}\r\n\
         Authorization: AWS4-HMAC-SHA256 Credential={ACCESS_KEY}/20260101/us-east-1/s3/aws4_request, \
         SignedHeaders=host, Signature=00\r\nConnection: close\r\n\r\n",
        body.len()
    )
    .unwrap();
    stream.write_all(body).unwrap();
    let mut answer = Vec::new();
    stream.read_to_end(&mut answer).unwrap();
    let text = String::from_utf8_lossy(&answer).to_string();
    let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    Raw {
        status,
        head: head.to_ascii_lowercase(),
        body: body.to_string(),
    }
}

/// (key, version id) of every object version in `bucket`.
fn versions(endpoint: &str, bucket: &str) -> Vec<(String, String)> {
    let listing = raw(endpoint, "GET", &format!("/{bucket}?versions"), b"");
    assert_eq!(listing.status, 200, "{}", listing.body);
    let tag = |text: &str, name: &str| -> String {
        let open = format!("<{name}>");
        let start = text.find(&open).map(|i| i + open.len()).unwrap_or(0);
        let end = text[start..].find(&format!("</{name}>")).unwrap_or(0);
        text[start..start + end].to_string()
    };
    listing
        .body
        .split("<Version>")
        .skip(1)
        .map(|v| (tag(v, "Key"), tag(v, "VersionId")))
        .collect()
}

/// The retain-until date moto reports for an object, if it is locked in
/// compliance mode.
fn compliance_until(endpoint: &str, bucket: &str, key: &str) -> Option<String> {
    let head = raw(endpoint, "HEAD", &format!("/{bucket}/{key}"), b"");
    assert_eq!(head.status, 200, "{key}: {}", head.head);
    if !head.head.contains("x-amz-object-lock-mode: compliance") {
        return None;
    }
    head.head
        .lines()
        .find_map(|l| l.strip_prefix("x-amz-object-lock-retain-until-date: "))
        // The head was lowercased.
        .map(str::to_ascii_uppercase)
}

#[test]
fn retention_lock_keeps_packs_and_snapshots_under_object_lock() {
    let server = S3Server::moto();
    let bucket = "locked";
    // No bucket yet: init creates it with Object Lock enabled.
    let t = s3_repo(server.repo(&format!("{bucket}/repo")));
    let mut init = vec!["init", "--retention-lock", "2d"];
    init.extend_from_slice(&FAST_KDF);
    t.ok(&init);
    let config = raw(
        &server.endpoint,
        "GET",
        &format!("/{bucket}?object-lock"),
        b"",
    );
    assert!(
        config
            .body
            .contains("<ObjectLockEnabled>Enabled</ObjectLockEnabled>"),
        "{}",
        config.body
    );

    let src = t.path("src");
    std::fs::create_dir_all(&src).unwrap();
    std::fs::write(src.join("a.bin"), random_bytes(3, 300_000)).unwrap();
    t.backup_json(&[path_str(&src)]);
    let id = t.snapshot_ids().remove(0);

    let all = versions(&server.endpoint, bucket);
    let of = |dir: &str| -> Vec<(String, String)> {
        all.iter()
            .filter(|(k, _)| k.starts_with(&format!("repo/{dir}/")))
            .cloned()
            .collect()
    };
    let (packs, snapshots, audit, index) = (of("packs"), of("snapshots"), of("audit"), of("index"));
    let manifests = of("manifests");
    assert!(!packs.is_empty() && snapshots.len() == 1 && !audit.is_empty() && !index.is_empty());
    assert_eq!(manifests.len(), 1, "one signed manifest for the snapshot");

    // Packs, snapshots, audit entries and manifests: compliance mode, until
    // about two days (the lock) and a day (the margin) from now.
    let now = chrono::Utc::now();
    for (key, _) in packs
        .iter()
        .chain(&snapshots)
        .chain(&audit)
        .chain(&manifests)
    {
        let until = compliance_until(&server.endpoint, bucket, key)
            .unwrap_or_else(|| panic!("{key} is not under Object Lock"));
        let until = chrono::NaiveDateTime::parse_from_str(&until, "%Y-%m-%dT%H:%M:%SZ")
            .unwrap_or_else(|e| panic!("{until}: {e}"))
            .and_utc();
        let ahead = until - now;
        assert!(
            ahead > chrono::Duration::days(2) && ahead < chrono::Duration::days(4),
            "{key}: until {until}"
        );
    }
    // Index files are rewritten by prune: not locked.
    for (key, _) in &index {
        assert_eq!(
            compliance_until(&server.endpoint, bucket, key),
            None,
            "{key}"
        );
    }

    // The storage refuses to delete a locked version, and an overwrite
    // leaves it readable.
    for (key, version) in packs.iter().chain(&snapshots) {
        let delete = raw(
            &server.endpoint,
            "DELETE",
            &format!("/{bucket}/{key}?versionId={version}"),
            b"",
        );
        assert_eq!(delete.status, 403, "{key}: {}", delete.body);
    }
    let (snapshot_key, snapshot_version) = &snapshots[0];
    let original = raw(
        &server.endpoint,
        "GET",
        &format!("/{bucket}/{snapshot_key}?versionId={snapshot_version}"),
        b"",
    );
    let put = raw(
        &server.endpoint,
        "PUT",
        &format!("/{bucket}/{snapshot_key}"),
        b"forged",
    );
    assert_eq!(put.status, 200, "{}", put.body);
    let kept = raw(
        &server.endpoint,
        "GET",
        &format!("/{bucket}/{snapshot_key}?versionId={snapshot_version}"),
        b"",
    );
    assert_eq!((kept.status, &kept.body), (200, &original.body));

    // The tool refuses to forget the snapshot, as on a local repository.
    let forget = t.cmd(&["forget", &id]);
    assert_eq!(forget.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&forget.stderr);
    assert_eq!(stderr.trim_end().lines().count(), 1, "{stderr}");
    assert!(stderr.contains("retention lock"), "{stderr}");
}

#[test]
fn a_bucket_without_object_lock_says_so_in_one_line() {
    let one_line_failure = |t: &TestRepo, args: &[&str], needle: &str| {
        let out = t.cmd(args);
        let stderr = String::from_utf8_lossy(&out.stderr).to_string();
        assert_eq!(out.status.code(), Some(1), "{args:?}: {stderr}");
        assert_eq!(stderr.trim_end().lines().count(), 1, "{stderr}");
        assert!(stderr.contains(needle), "{stderr}");
    };
    let moto = S3Server::moto();
    // A bucket made without Object Lock (by a plain init).
    let plain = s3_repo(moto.repo("plain/a"));
    let mut init = vec!["init"];
    init.extend_from_slice(&FAST_KDF);
    plain.ok(&init);
    one_line_failure(
        &plain,
        &["retention-lock", "set", "1y"],
        "has no Object Lock enabled",
    );
    assert!(plain
        .ok(&["retention-lock", "show"])
        .contains("no retention lock"));
    // init --retention-lock into that bucket: refused before anything is
    // written.
    let second = s3_repo(moto.repo("plain/b"));
    let mut init = vec!["init", "--retention-lock", "1y"];
    init.extend_from_slice(&FAST_KDF);
    one_line_failure(&second, &init, "has no Object Lock enabled");
    assert_eq!(second.cmd(&["snapshots"]).status.code(), Some(10));

    // Garage has no Object Lock at all.
    let garage = S3Server::garage();
    let t = s3_repo(garage.repo(&format!("{DEFAULT_BUCKET}/locked")));
    one_line_failure(&t, &init, "does not support S3 Object Lock");
    assert_eq!(t.cmd(&["snapshots"]).status.code(), Some(10));
}

/// Regression: a server that accepted the connection and never answered
/// held each request for the 10-minute request timeout. Now a read timeout
/// makes it a transient failure, retried within the retry bound.
#[test]
fn a_server_that_never_answers_fails_within_the_retry_bound() {
    set_credentials();
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    listener.set_nonblocking(true).unwrap();
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let silent = {
        let stop = stop.clone();
        std::thread::spawn(move || {
            // Accepts and holds every connection, reading nothing back.
            let mut held = Vec::new();
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                match listener.accept() {
                    Ok((conn, _)) => held.push(conn),
                    Err(_) => std::thread::sleep(Duration::from_millis(20)),
                }
            }
        })
    };
    let t = s3_repo(format!("s3:http://127.0.0.1:{port}/silent"));
    let started = Instant::now();
    let mut c = t.command();
    c.args(["snapshots"])
        .env("CAIRN_S3_READ_TIMEOUT_SECONDS", "1")
        .env("CAIRN_S3_RETRY_SECONDS", "3");
    let out = output_with_timeout(&mut c, 60);
    let took = started.elapsed();
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    silent.join().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert_eq!(stderr.trim_end().lines().count(), 1, "{stderr}");
    assert!(took < Duration::from_secs(20), "took {took:?}: {stderr}");
}
