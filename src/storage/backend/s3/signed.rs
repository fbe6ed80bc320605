//! The requests `object_store` cannot make: CreateBucket, the bucket's
//! Object Lock configuration, and a PUT carrying Object Lock headers. They
//! are signed by `object_store`'s own SigV4 signer (`AwsAuthorizer`) with
//! the store's credentials, so every header sent is signed (AWS refuses
//! unsigned `x-amz-*` headers), and retried on transient failures within
//! the same time bound as every other request.

use super::{one_line, S3Backend};
use crate::error::{Error, ErrorKind, Result};
use object_store::aws::AwsAuthorizer;
use object_store::client::{HttpRequest, HttpRequestBody};
use object_store::path::Path;
use reqwest::header::{HeaderName, HeaderValue};
use std::time::{Duration, Instant, SystemTime};

/// A server's answer: status and body (S3 errors are small XML bodies).
pub(super) struct Answer {
    pub status: u16,
    pub body: String,
}

impl Answer {
    fn ok(&self) -> bool {
        (200..300).contains(&self.status)
    }

    /// S3's error code (`<Code>…</Code>`), or "" when there is none.
    pub fn code(&self) -> &str {
        self.body
            .split_once("<Code>")
            .and_then(|(_, rest)| rest.split_once("</Code>"))
            .map_or("", |(code, _)| code)
    }

    fn one_line(&self) -> String {
        match self.code() {
            "" => format!("HTTP {}", self.status),
            code => format!("HTTP {} {code}", self.status),
        }
    }
}

/// Where the bucket stands on Object Lock.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum BucketLock {
    Enabled,
    /// No bucket yet: `create` makes it with Object Lock enabled.
    NoBucket,
}

/// Percent-encodes a key for a URL path (`/` kept), as SigV4's canonical
/// URI wants it: every byte outside the unreserved set.
fn encode_key(key: &str) -> String {
    let mut out = String::with_capacity(key.len());
    for b in key.bytes() {
        match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' | b'/' => {
                out.push(char::from(b))
            }
            _ => out.push_str(&format!("%{b:02X}")),
        }
    }
    out
}

/// An S3 date: `2032-12-03T19:30:00Z`.
pub(super) fn s3_date(t: SystemTime) -> String {
    chrono::DateTime::<chrono::Utc>::from(t)
        .format("%Y-%m-%dT%H:%M:%SZ")
        .to_string()
}

/// Content-MD5: base64 of the MD5 of the body.
fn content_md5(body: &[u8]) -> String {
    use base64::Engine;
    use md5::Digest;
    base64::engine::general_purpose::STANDARD.encode(md5::Md5::digest(body))
}

impl S3Backend {
    fn http(&self) -> Result<&reqwest::Client> {
        if let Some(client) = self.http.get() {
            return Ok(client);
        }
        let client = reqwest::Client::builder()
            .connect_timeout(super::CONNECT_TIMEOUT)
            .read_timeout(super::read_timeout())
            .timeout(super::REQUEST_TIMEOUT)
            .build()
            .map_err(|e| {
                Error::new(
                    ErrorKind::Io,
                    format!("cannot start the S3 client: {}", one_line(&e)),
                )
            })?;
        Ok(self.http.get_or_init(|| client))
    }

    /// `endpoint/bucket[/key]` (path-style, like the store's own requests).
    fn url(&self, key: Option<&Path>, query: &str) -> String {
        let mut url = format!("{}/{}", self.location.endpoint, self.location.bucket);
        if let Some(key) = key {
            url.push('/');
            url.push_str(&encode_key(key.as_ref()));
        }
        url.push_str(query);
        url
    }

    /// One signed request, retried while it fails transiently (no answer,
    /// 5xx, 429, SlowDown) with exponential backoff and jitter, for at most
    /// the retry bound. The last answer is returned, whatever its status.
    async fn send(
        &self,
        method: reqwest::Method,
        url: &str,
        headers: &[(&'static str, String)],
        body: &[u8],
    ) -> std::result::Result<Answer, String> {
        let total = super::retry_config().retry_timeout;
        let started = Instant::now();
        let mut backoff = Duration::from_millis(100);
        loop {
            let answer = self.attempt(method.clone(), url, headers, body).await;
            let transient = match &answer {
                Ok(a) => a.status >= 500 || a.status == 429 || a.code() == "SlowDown",
                Err((_, transient)) => *transient,
            };
            // Jitter: a random 50–100 % of the backoff.
            let jitter = u32::from(crate::sys::random_bytes::<1>()[0]);
            let pause = backoff / 2 + backoff * jitter / 512;
            if !transient || started.elapsed() + pause > total {
                return answer.map_err(|(e, _)| e);
            }
            tokio::time::sleep(pause).await;
            backoff = (backoff * 2).min(Duration::from_secs(15));
        }
    }

    /// One try: `Err((why, transient))` when no answer came.
    async fn attempt(
        &self,
        method: reqwest::Method,
        url: &str,
        headers: &[(&'static str, String)],
        body: &[u8],
    ) -> std::result::Result<Answer, (String, bool)> {
        let credential = self
            .store
            .credentials()
            .get_credential()
            .await
            .map_err(|e| (one_line(&e), false))?;
        let mut request = HttpRequest::new(HttpRequestBody::empty());
        *request.method_mut() = method.clone();
        *request.uri_mut() = url
            .parse()
            .map_err(|e| (format!("bad URL {url}: {e}"), false))?;
        for (name, value) in headers {
            let value = HeaderValue::from_str(value)
                .map_err(|_| (format!("bad header value for {name}"), false))?;
            request
                .headers_mut()
                .insert(HeaderName::from_static(name), value);
        }
        // The body is covered by Content-MD5 where it matters, not by
        // the signature: the bytes are not hashed twice.
        AwsAuthorizer::new(&credential, "s3", &self.region)
            .with_sign_payload(false)
            .try_authorize(&mut request, None)
            .map_err(|e| (one_line(&e), false))?;
        let response = self
            .http()
            .map_err(|e| (e.to_string(), false))?
            .request(method, url)
            .headers(request.headers().clone())
            .header(reqwest::header::CONTENT_LENGTH, body.len())
            .body(body.to_vec())
            .send()
            .await
            .map_err(|e| (one_line(&e), !e.is_builder()))?;
        let status = response.status().as_u16();
        let body = response.text().await.map_err(|e| (one_line(&e), true))?;
        Ok(Answer { status, body })
    }

    /// Creates the bucket (an existing one is fine), with Object Lock
    /// enabled when a retention lock asked for it (`lock_at_create`).
    pub(super) async fn create_bucket(&self) -> std::result::Result<(), String> {
        // AWS wants the region named for any but us-east-1.
        let body = match self.region.as_str() {
            "us-east-1" => String::new(),
            region => format!(
                "<CreateBucketConfiguration xmlns=\"http://s3.amazonaws.com/doc/2006-03-01/\">\
                 <LocationConstraint>{region}</LocationConstraint></CreateBucketConfiguration>"
            ),
        };
        let mut headers = Vec::new();
        if self
            .lock_at_create
            .load(std::sync::atomic::Ordering::Relaxed)
        {
            headers.push(("x-amz-bucket-object-lock-enabled", "true".to_string()));
        }
        let answer = self
            .send(
                reqwest::Method::PUT,
                &self.url(None, ""),
                &headers,
                body.as_bytes(),
            )
            .await?;
        match answer.ok() || answer.code().starts_with("BucketAlready") {
            true => Ok(()),
            false => Err(answer.one_line()),
        }
    }

    /// Reads the bucket's Object Lock configuration: enabled, no bucket yet,
    /// or one line saying why a retention lock cannot be kept here.
    pub(super) async fn bucket_lock(&self) -> Result<BucketLock> {
        let answer = self
            .send(
                reqwest::Method::GET,
                &self.url(None, "?object-lock"),
                &[],
                b"",
            )
            .await
            .map_err(|e| {
                Error::new(
                    ErrorKind::Io,
                    format!(
                        "cannot read the Object Lock configuration of {}: {e}",
                        self.location
                    ),
                )
            })?;
        let enabled = answer.ok()
            && answer
                .body
                .replace(char::is_whitespace, "")
                .contains("<ObjectLockEnabled>Enabled</ObjectLockEnabled>");
        if enabled {
            return Ok(BucketLock::Enabled);
        }
        let why = match answer.code() {
            "NoSuchBucket" => return Ok(BucketLock::NoBucket),
            "ObjectLockConfigurationNotFoundError" => {
                "the bucket has no Object Lock enabled (create a new one with `cairn init --retention-lock`, or enable it with `aws s3api put-object-lock-configuration`)".to_string()
            }
            _ if answer.ok() => {
                "the server does not support S3 Object Lock (it answered without a lock configuration)".to_string()
            }
            _ => format!(
                "the server does not support S3 Object Lock ({})",
                answer.one_line()
            ),
        };
        // Refused: the storage cannot keep the lock (not a failure to
        // reach it), which opening tells from the rest.
        Err(Error::new(
            ErrorKind::Refused,
            format!(
                "a retention lock on object storage needs S3 Object Lock, and {} cannot keep one: {why}",
                self.location
            ),
        ))
    }

    /// A PUT whose object cannot be deleted or overwritten (its version,
    /// on a versioned bucket) before `until`: COMPLIANCE mode, with the
    /// Content-MD5 AWS requires for it. `if_none_match`: only if no object
    /// has that name (`Ok(false)` when one had).
    pub(super) fn put_locked(
        &self,
        path: &Path,
        bytes: &[u8],
        until: SystemTime,
        if_none_match: bool,
    ) -> Result<bool> {
        let mut headers = vec![
            ("x-amz-object-lock-mode", "COMPLIANCE".to_string()),
            ("x-amz-object-lock-retain-until-date", s3_date(until)),
            ("content-md5", content_md5(bytes)),
        ];
        if if_none_match {
            headers.push(("if-none-match", "*".to_string()));
        }
        let answer = self
            .block(self.send(
                reqwest::Method::PUT,
                &self.url(Some(path), ""),
                &headers,
                bytes,
            ))
            .map_err(|e| {
                Error::new(
                    ErrorKind::Io,
                    format!("cannot store {path} in {}: {e}", self.location),
                )
            })?;
        match answer.status {
            200..=299 => Ok(true),
            412 if if_none_match => Ok(false),
            _ => Err(Error::new(
                ErrorKind::Io,
                format!(
                    "cannot store {path} under Object Lock in {}: {}",
                    self.location,
                    answer.one_line()
                ),
            )),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_dates_and_digests_are_spelled_as_s3_wants() {
        assert_eq!(encode_key("a/packs/0f/x y+é"), "a/packs/0f/x%20y%2B%C3%A9");
        assert_eq!(
            s3_date(SystemTime::UNIX_EPOCH + Duration::from_secs(1_000_000_000)),
            "2001-09-09T01:46:40Z"
        );
        // RFC 1321's test vector, base64 as Content-MD5 wants it.
        assert_eq!(content_md5(b"abc"), "kAFQmDzST7DWlj99KOF/cg==");
        let answer = Answer {
            status: 404,
            body: "<Error><Code>NoSuchBucket</Code></Error>".into(),
        };
        assert_eq!(answer.code(), "NoSuchBucket");
        assert_eq!(answer.one_line(), "HTTP 404 NoSuchBucket");
    }
}
