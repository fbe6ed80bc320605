//! A repository in an S3 bucket (AWS S3, MinIO, Garage, Ceph RGW, R2, B2…),
//! through `object_store`'s S3 client. The engine is synchronous (rayon and
//! threads), so the backend owns a small tokio runtime and blocks on it; the
//! callers never see anything async.
//!
//! Layout: the same names as the local backend under `bucket/prefix/`
//! (`config`, `keys/<id>`, `packs/<2 hex>/<id>`, …). A PUT is atomic on S3:
//! an object appears whole or not at all, so no temporary names are needed,
//! and a pack is stored by one PUT of its finished bytes (the default
//! `create_pending` buffers it), never under its name while incomplete.
//!
//! Transient failures (5xx, SlowDown, 429, timeouts, refused or reset
//! connections) are retried by one layer, `object_store`'s retry, set up in
//! `retry_config`: exponential backoff with jitter, bounded in total time.
//! Permanent ones (403, a missing bucket, bad credentials) fail at once.

mod signed;

use super::{Backend, FileKind};
use crate::error::{Error, ErrorKind, Result};
use futures::TryStreamExt;
use object_store::aws::{AmazonS3, AmazonS3Builder};
use object_store::path::Path;
use object_store::{
    BackoffConfig, ClientOptions, ObjectStore, ObjectStoreExt, PutMode, PutOptions, PutPayload,
    RetryConfig,
};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Mutex, OnceLock};
use std::time::{Duration, SystemTime};

/// How long transient errors are retried before the last one is reported,
/// unless `CAIRN_S3_RETRY_SECONDS` says otherwise.
const RETRY_TOTAL: Duration = Duration::from_secs(120);
/// A TCP connection that is not up by then counts as failed (and retried
/// within `RETRY_TOTAL`): a black-holed endpoint cannot hang a command.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// One request (a whole 32 MiB pack on a slow uplink) may take this long;
/// a server that stalls longer is retried as a timeout.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(600);
/// A server that accepts a request and then sends nothing (no first byte,
/// or a body that stops) for this long is retried as a timeout, so the
/// retry bound, not `REQUEST_TIMEOUT`, is what a silent server costs. Each
/// read restarts it: a slow but moving transfer is not cut.
/// `CAIRN_S3_READ_TIMEOUT_SECONDS` overrides it (tests).
const READ_TIMEOUT: Duration = Duration::from_secs(30);

fn read_timeout() -> Duration {
    std::env::var("CAIRN_S3_READ_TIMEOUT_SECONDS")
        .ok()
        .and_then(|s| s.parse::<u64>().ok())
        .filter(|&s| s > 0)
        .map_or(READ_TIMEOUT, Duration::from_secs)
}

/// Where a repository is: parsed from `s3:http(s)://host[:port]/bucket[/prefix]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct S3Location {
    /// `http://host:port` or `https://host`.
    pub endpoint: String,
    pub bucket: String,
    /// Without leading or trailing `/`; empty for the bucket's root.
    pub prefix: String,
}

impl S3Location {
    /// Parses restic's form. `s3:host/bucket` (no scheme) means https.
    pub fn parse(repo: &str) -> Result<S3Location> {
        let bad = |why: &str| {
            Error::invalid(format!(
                "invalid S3 repository {repo:?}: {why} (expected s3:https://host[:port]/bucket[/prefix])"
            ))
        };
        let rest = repo
            .strip_prefix("s3:")
            .ok_or_else(|| bad("no s3: prefix"))?;
        let (scheme, rest) = match rest.split_once("://") {
            Some((scheme @ ("http" | "https"), rest)) => (scheme, rest),
            Some(_) => return Err(bad("the scheme must be http or https")),
            None => ("https", rest),
        };
        let (host, path) = rest.split_once('/').ok_or_else(|| bad("no bucket"))?;
        if host.is_empty() || host.contains(['@', '?', '#', ' ']) {
            return Err(bad("bad host"));
        }
        let path = path.trim_matches('/');
        let (bucket, prefix) = path.split_once('/').unwrap_or((path, ""));
        let bucket_ok = (3..=63).contains(&bucket.len())
            && bucket
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'.');
        if !bucket_ok {
            return Err(bad(
                "the bucket name must be 3 to 63 of a-z, 0-9, '-' and '.'",
            ));
        }
        if !prefix.is_empty()
            && prefix
                .split('/')
                .any(|part| part.is_empty() || part.starts_with('.'))
        {
            return Err(bad("bad prefix"));
        }
        Ok(S3Location {
            endpoint: format!("{scheme}://{host}"),
            bucket: bucket.to_string(),
            prefix: prefix.to_string(),
        })
    }
}

impl std::fmt::Display for S3Location {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "s3:{}/{}", self.endpoint, self.bucket)?;
        if !self.prefix.is_empty() {
            write!(f, "/{}", self.prefix)?;
        }
        Ok(())
    }
}

/// Does the server refuse a second `If-None-Match: *` PUT of one name?
/// Garage 2.5 does not (it answers 200 and overwrites); AWS, MinIO, R2 and
/// moto do (412). docs/FORMAT.md, section 3, "On object storage", says what each guarantees.
pub use super::ConditionalWrites;

pub struct S3Backend {
    location: S3Location,
    region: String,
    store: AmazonS3,
    runtime: tokio::runtime::Runtime,
    /// Probed once per process, at `create` or at the first `put_new`.
    conditional: OnceLock<ConditionalWrites>,
    /// Requests the engine runs at once (`with_connections`).
    connections: usize,
    /// For the requests object_store cannot make (`signed`).
    http: OnceLock<reqwest::Client>,
    /// Files of retained kinds written from now on are kept (S3 Object
    /// Lock, compliance mode) until this date (`Backend::retain_until`).
    retain: Mutex<Option<SystemTime>>,
    /// The bucket's Object Lock configuration was found enabled.
    bucket_lock_checked: OnceLock<()>,
    /// No bucket yet: `create` makes it with Object Lock enabled.
    lock_at_create: AtomicBool,
}

/// Requests run at once against a bucket unless `--connections` says
/// otherwise: restic's default too. docs/recipes.md says how to size it.
pub const CONNECTIONS_DEFAULT: usize = 5;

/// The most `--connections` takes: each connection may hold a pack in
/// memory (a backup's uploads, `check --read-data`'s reads).
pub const CONNECTIONS_MAX: usize = 64;

/// The one retry policy for every request: exponential backoff from 100 ms
/// up to 15 s, with jitter, for at most `RETRY_TOTAL` (or
/// `CAIRN_S3_RETRY_SECONDS`). The retry count is set high enough that the
/// time bound is what ends a long outage (10 retries ran out after ~40 s).
fn retry_config() -> RetryConfig {
    let total = std::env::var("CAIRN_S3_RETRY_SECONDS")
        .ok()
        .and_then(|s| s.parse::<u64>().ok())
        .map(Duration::from_secs)
        .unwrap_or(RETRY_TOTAL);
    RetryConfig {
        backoff: BackoffConfig {
            init_backoff: Duration::from_millis(100),
            max_backoff: Duration::from_secs(15),
            base: 2.0,
        },
        max_retries: 40,
        retry_timeout: total,
    }
}

impl S3Backend {
    /// A backend for `location`, with credentials and region from the
    /// environment and the AWS profile files (`aws_config`: AWS's order,
    /// default region `us-east-1`). Nothing is contacted yet.
    pub fn new(location: S3Location) -> Result<S3Backend> {
        let aws = super::aws_config::from_env()?;
        let region = aws.region.clone();
        let mut builder = AmazonS3Builder::new()
            .with_endpoint(&location.endpoint)
            .with_bucket_name(&location.bucket)
            .with_region(&region)
            // Path-style (`host/bucket/key`): what local servers (Garage,
            // MinIO, moto) answer without wildcard DNS.
            .with_virtual_hosted_style_request(false)
            .with_retry(retry_config())
            // Before `with_allow_http`, which is a client option too and
            // would be reset by a later `with_client_options`.
            .with_client_options(
                ClientOptions::new()
                    .with_connect_timeout(CONNECT_TIMEOUT)
                    .with_read_timeout(read_timeout())
                    .with_timeout(REQUEST_TIMEOUT),
            )
            .with_allow_http(location.endpoint.starts_with("http://"));
        if let Some(key) = aws.access_key_id {
            builder = builder.with_access_key_id(key);
        }
        if let Some(secret) = aws.secret_access_key {
            builder = builder.with_secret_access_key(secret);
        }
        if let Some(token) = aws.session_token {
            builder = builder.with_token(token);
        }
        let store = builder
            .build()
            .map_err(|e| Error::invalid(format!("{location}: {}", one_line(&e))))?;
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .thread_name("cairn-s3")
            .enable_all()
            .build()
            .map_err(|e| Error::new(ErrorKind::Io, format!("cannot start the S3 client: {e}")))?;
        Ok(S3Backend {
            location,
            region,
            store,
            runtime,
            conditional: OnceLock::new(),
            connections: CONNECTIONS_DEFAULT,
            http: OnceLock::new(),
            retain: Mutex::new(None),
            bucket_lock_checked: OnceLock::new(),
            lock_at_create: AtomicBool::new(false),
        })
    }

    /// Runs up to `n` requests at once (1 to `CONNECTIONS_MAX`): parallel
    /// pack uploads in a backup and ranged reads in a restore and `check
    /// --read-data`. A backup holds up to `n` packs in memory while they
    /// upload, so memory grows by `n` × the pack size.
    pub fn with_connections(mut self, n: usize) -> S3Backend {
        self.connections = n.clamp(1, CONNECTIONS_MAX);
        self
    }

    /// Whether the server enforces `If-None-Match: *`, probed once (by
    /// writing a probe object twice under `locks/.probe-<random>` and
    /// deleting it).
    pub fn conditional_writes(&self) -> Result<ConditionalWrites> {
        if let Some(known) = self.conditional.get() {
            return Ok(*known);
        }
        // Under `locks/`, where even a backup-only host may delete
        // (docs/recipes.md, least privilege): the probe runs before every
        // writing command's first lock and must not leave objects behind.
        let name = format!(
            "locks/.probe-{}",
            hex::encode(crate::sys::random_bytes::<8>())
        );
        let path = self.object(&name);
        let create = || {
            self.store.put_opts(
                &path,
                PutPayload::from_static(b"cairn probe"),
                PutOptions::from(PutMode::Create),
            )
        };
        let result = self.block(async {
            create().await?;
            let second = create().await;
            let _ = self.store.delete(&path).await;
            Ok::<_, object_store::Error>(match second {
                Ok(_) => ConditionalWrites::Ignored,
                Err(object_store::Error::AlreadyExists { .. }) => ConditionalWrites::Enforced,
                // A server that refuses the header outright (501) does
                // not enforce it either.
                Err(object_store::Error::NotImplemented { .. }) => ConditionalWrites::Ignored,
                Err(e) => return Err(e),
            })
        });
        let found = result.map_err(|e| self.error(e, "cannot probe conditional writes at"))?;
        Ok(*self.conditional.get_or_init(|| found))
    }

    fn block<F: std::future::Future>(&self, future: F) -> F::Output {
        self.runtime.block_on(future)
    }

    fn object(&self, relative: &str) -> Path {
        if self.location.prefix.is_empty() {
            Path::from(relative)
        } else {
            Path::from(format!("{}/{relative}", self.location.prefix))
        }
    }

    /// The object of a repository file, refusing names the local backend
    /// refuses (so both accept the same repositories).
    fn path(&self, kind: FileKind, name: &str) -> Result<Path> {
        if name.is_empty() || name.contains('/') || name.starts_with('.') {
            return Err(Error::invalid(format!(
                "invalid repository file name {name:?}"
            )));
        }
        Ok(match kind {
            FileKind::Config => self.object("config"),
            FileKind::Pack => {
                let Some(prefix) = name.get(..2) else {
                    return Err(Error::invalid(format!("invalid pack name {name:?}")));
                };
                self.object(&format!("packs/{prefix}/{name}"))
            }
            _ => self.object(&format!("{}/{name}", kind.dir())),
        })
    }

    /// One line naming the location and what failed. Missing objects (and
    /// a missing bucket) are `NotFound`; everything else, including denied
    /// access, is `Io` (exit code 1), after the retries are spent.
    fn error(&self, e: object_store::Error, what: &str) -> Error {
        let kind = match is_missing(&e) {
            true => ErrorKind::NotFound,
            false => ErrorKind::Io,
        };
        let hint = match e {
            object_store::Error::PermissionDenied { .. }
            | object_store::Error::Unauthenticated { .. } => {
                " (access denied: check AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY, or the AWS_PROFILE profile, and the bucket policy)"
            }
            _ => "",
        };
        Error::new(
            kind,
            format!("{what} {}: {}{hint}", self.location, one_line(&e)),
        )
    }

    /// The retain-until date for a file of `kind`, if a retention lock
    /// is in force and the kind is one it keeps.
    fn retained(&self, kind: FileKind) -> Option<SystemTime> {
        if !kind.is_retained() {
            return None;
        }
        *self.retain.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// A missing object or bucket. A listing's 404 reaches us as a generic
/// error that only names S3's code.
fn is_missing(e: &object_store::Error) -> bool {
    matches!(e, object_store::Error::NotFound { .. }) || e.to_string().contains("NoSuchBucket")
}

/// An error's text on one line, at most 300 characters: S3 servers answer
/// with XML bodies that `object_store` quotes whole.
fn one_line(e: &dyn std::fmt::Display) -> String {
    let text: String = e
        .to_string()
        .split_whitespace()
        .collect::<Vec<_>>()
        .join(" ");
    match text.char_indices().nth(300) {
        Some((cut, _)) => format!("{}…", &text[..cut]),
        None => text,
    }
}

impl Backend for S3Backend {
    fn location(&self) -> String {
        self.location.to_string()
    }

    fn connections(&self) -> Option<usize> {
        Some(self.connections)
    }

    fn exists(&self) -> Result<bool> {
        let path = self.object("config");
        match self.block(self.store.head(&path)) {
            Ok(_) => Ok(true),
            // Also a missing bucket: no repository there yet.
            Err(object_store::Error::NotFound { .. }) => Ok(false),
            Err(e) => Err(self.error(e, "cannot reach")),
        }
    }

    /// Creates the bucket if it is missing and probes whether the server
    /// enforces conditional writes (`conditional_writes`).
    fn create(&self) -> Result<()> {
        if self.exists()? {
            return Err(Error::new(
                ErrorKind::RepositoryExists,
                format!("a repository already exists at {}", self.location),
            ));
        }
        // One page of a listing tells a missing bucket (NoSuchBucket).
        let listed = self.block(async { self.store.list(None).try_next().await.map(|_| ()) });
        match listed {
            Ok(()) => {}
            Err(e) if is_missing(&e) => {
                self.block(self.create_bucket()).map_err(|e| {
                    Error::new(
                        ErrorKind::Io,
                        format!("cannot create bucket {}: {e}", self.location),
                    )
                })?;
                // A server that ignored the Object Lock header says so now,
                // before any file is written.
                if self.lock_at_create.load(Ordering::Relaxed) {
                    match self.block(self.bucket_lock())? {
                        signed::BucketLock::Enabled => {
                            let _ = self.bucket_lock_checked.set(());
                        }
                        signed::BucketLock::NoBucket => {
                            return Err(Error::new(
                                ErrorKind::Io,
                                format!("bucket {} was created but is not there", self.location),
                            ))
                        }
                    }
                }
            }
            Err(e) => return Err(self.error(e, "cannot list")),
        }
        self.conditional_writes()?;
        Ok(())
    }

    fn put(&self, kind: FileKind, name: &str, bytes: &[u8]) -> Result<()> {
        let path = self.path(kind, name)?;
        if let Some(until) = self.retained(kind) {
            return self.put_locked(&path, bytes, until, false).map(|_| ());
        }
        let payload = PutPayload::from(bytes.to_vec());
        self.block(self.store.put(&path, payload))
            .map_err(|e| self.error(e, &format!("cannot store {path} in")))?;
        Ok(())
    }

    /// With conditional writes enforced, one `If-None-Match: *` PUT: of two
    /// writers racing, exactly one stores the file. Where the server ignores
    /// them (Garage), a HEAD and then a PUT: a writer that comes between the
    /// two is overwritten (docs/FORMAT.md, section 3, "On object storage").
    fn put_new(&self, kind: FileKind, name: &str, bytes: &[u8]) -> Result<bool> {
        let path = self.path(kind, name)?;
        if let Some(until) = self.retained(kind) {
            let enforced = self.conditional_writes()? == ConditionalWrites::Enforced;
            if !enforced && self.size(kind, name).is_ok() {
                return Ok(false);
            }
            return self.put_locked(&path, bytes, until, enforced);
        }
        let payload = PutPayload::from(bytes.to_vec());
        let result = match self.conditional_writes()? {
            ConditionalWrites::Enforced => self.block(self.store.put_opts(
                &path,
                payload,
                PutOptions::from(PutMode::Create),
            )),
            ConditionalWrites::Ignored => match self.block(self.store.head(&path)) {
                Ok(_) => return Ok(false),
                Err(object_store::Error::NotFound { .. }) => {
                    self.block(self.store.put(&path, payload))
                }
                Err(e) => Err(e),
            },
        };
        match result {
            Ok(_) => Ok(true),
            Err(object_store::Error::AlreadyExists { .. }) => Ok(false),
            Err(e) => Err(self.error(e, &format!("cannot store {path} in"))),
        }
    }

    fn get(&self, kind: FileKind, name: &str) -> Result<Vec<u8>> {
        let path = self.path(kind, name)?;
        self.block(async { self.store.get(&path).await?.bytes().await })
            // Without a copy when the buffer is the response's alone.
            .map(Vec::from)
            .map_err(|e| self.error(e, &format!("cannot read {path} in")))
    }

    /// One GET, whose size is checked before its body is read: not a HEAD
    /// and then a GET (the trait's default), which costs a round trip and
    /// trusts the first answer about the second.
    fn get_bounded(&self, kind: FileKind, name: &str, size_max: usize) -> Result<Vec<u8>> {
        let path = self.path(kind, name)?;
        let read = self.block(async {
            let response = self.store.get(&path).await?;
            let size = response.meta.size;
            if size > size_max as u64 {
                return Ok(Err(size));
            }
            response.bytes().await.map(Ok)
        });
        match read {
            Ok(Ok(bytes)) if bytes.len() <= size_max => Ok(Vec::from(bytes)),
            Ok(Ok(bytes)) => Err(super::too_large(kind, name, bytes.len() as u64, size_max)),
            Ok(Err(size)) => Err(super::too_large(kind, name, size, size_max)),
            Err(e) => Err(self.error(e, &format!("cannot read {path} in"))),
        }
    }

    fn get_range(&self, kind: FileKind, name: &str, offset: u64, length: u64) -> Result<Vec<u8>> {
        let path = self.path(kind, name)?;
        let past_end = |size: u64| {
            Error::corrupt(format!(
                "{path} in {} is {size} bytes, too short for {length} bytes at {offset}",
                self.location
            ))
        };
        let Some(end) = offset.checked_add(length) else {
            return Err(past_end(self.size(kind, name)?));
        };
        if length == 0 {
            // S3 has no empty range: check the offset against the size.
            let size = self.size(kind, name)?;
            return if offset <= size {
                Ok(Vec::new())
            } else {
                Err(past_end(size))
            };
        }
        match self.block(self.store.get_range(&path, offset..end)) {
            Ok(bytes) if bytes.len() as u64 == length => Ok(Vec::from(bytes)),
            Ok(_) => Err(past_end(self.size(kind, name)?)),
            Err(e @ object_store::Error::NotFound { .. }) => {
                Err(self.error(e, &format!("cannot read {path} in")))
            }
            // A range past the end is an error of its own kind (416, or a
            // short answer): tell it from a failure by the size.
            Err(e) => match self.size(kind, name) {
                Ok(size) if end > size => Err(past_end(size)),
                _ => Err(self.error(e, &format!("cannot read {path} in"))),
            },
        }
    }

    fn size(&self, kind: FileKind, name: &str) -> Result<u64> {
        let path = self.path(kind, name)?;
        self.block(self.store.head(&path))
            .map(|meta| meta.size)
            .map_err(|e| self.error(e, &format!("cannot stat {path} in")))
    }

    fn list(&self, kind: FileKind) -> Result<Vec<(String, u64)>> {
        if kind == FileKind::Config {
            return Ok(Vec::new());
        }
        let dir = self.object(kind.dir());
        // Paged by the client (ListObjectsV2 continuation tokens).
        let objects: Vec<object_store::ObjectMeta> = self
            .block(self.store.list(Some(&dir)).try_collect())
            .map_err(|e| self.error(e, &format!("cannot list {dir} in")))?;
        let depth = if kind == FileKind::Pack { 2 } else { 1 };
        let mut files: Vec<(String, u64)> = objects
            .into_iter()
            .filter_map(|meta| {
                let parts: Vec<_> = meta.location.prefix_match(&dir)?.collect();
                if parts.len() != depth {
                    return None;
                }
                let name = parts.last()?.as_ref().to_string();
                // Readers ignore names that start with '.' (FORMAT.md 3).
                (!name.starts_with('.')).then_some((name, meta.size))
            })
            .collect();
        files.sort();
        Ok(files)
    }

    fn delete(&self, kind: FileKind, name: &str) -> Result<()> {
        let path = self.path(kind, name)?;
        // S3 answers a DELETE of a missing key with success; the contract
        // says NotFound.
        self.block(async {
            self.store.head(&path).await?;
            self.store.delete(&path).await
        })
        .map_err(|e| self.error(e, &format!("cannot delete {path} in")))
    }

    fn modified(&self, kind: FileKind, name: &str) -> Result<Option<std::time::SystemTime>> {
        let path = self.path(kind, name)?;
        let meta = self
            .block(self.store.head(&path))
            .map_err(|e| self.error(e, &format!("cannot stat {path} in")))?;
        Ok(Some(meta.last_modified.into()))
    }

    fn probe_conditional_writes(&self) -> Result<Option<ConditionalWrites>> {
        self.conditional_writes().map(Some)
    }

    fn can_retain(&self) -> bool {
        true
    }

    /// Checks once that the bucket has Object Lock enabled (or, with no
    /// bucket yet, has `create` make it so), then keeps `until`, the latest
    /// date asked for.
    fn retain_until(&self, until: SystemTime) -> Result<()> {
        if self.bucket_lock_checked.get().is_none() {
            match self.block(self.bucket_lock())? {
                signed::BucketLock::Enabled => {
                    let _ = self.bucket_lock_checked.set(());
                }
                signed::BucketLock::NoBucket => self.lock_at_create.store(true, Ordering::Relaxed),
            }
        }
        let mut retain = self.retain.lock().unwrap_or_else(|e| e.into_inner());
        *retain = Some(retain.map_or(until, |old| old.max(until)));
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_restics_form() {
        let l = S3Location::parse("s3:http://127.0.0.1:3900/bucket/a/b/").unwrap();
        assert_eq!(l.endpoint, "http://127.0.0.1:3900");
        assert_eq!((l.bucket.as_str(), l.prefix.as_str()), ("bucket", "a/b"));
        assert_eq!(l.to_string(), "s3:http://127.0.0.1:3900/bucket/a/b");
        let l = S3Location::parse("s3:s3.amazonaws.com/my-backups").unwrap();
        assert_eq!(l.endpoint, "https://s3.amazonaws.com");
        assert_eq!((l.bucket.as_str(), l.prefix.as_str()), ("my-backups", ""));
        for bad in [
            "s3:ftp://host/bucket",
            "s3:http://host",
            "s3:http://host/",
            "s3:http:///bucket",
            "s3:http://host/Bucket",
            "s3:http://host/bucket/a//b",
            "s3:http://host/bucket/.hidden",
            "http://host/bucket",
        ] {
            assert_eq!(
                S3Location::parse(bad).unwrap_err().kind(),
                ErrorKind::InvalidInput,
                "{bad}"
            );
        }
    }
}
