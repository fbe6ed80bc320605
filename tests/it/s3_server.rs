//! Real S3 servers for the S3 tests, each on a free loopback port in its own
//! temp dir, stopped when dropped: Garage (a distributed object store, the
//! data path) and moto's server (which enforces conditional writes).
//! `scripts/setup.sh --test-servers` installs both into the tools cache; a missing binary
//! fails the test, it never skips it.

use std::net::{TcpListener, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// The credentials every test server accepts (moto accepts any; Garage is
/// started with this key). AWS's documented example shapes.
pub const ACCESS_KEY: &str = "GK31c2f218a2e44f485b94239e";
pub const SECRET_KEY: &str = "b892c0665f0ada8a4755dae98baa3b133590e11dae3bcc1f9d769d67f16c3835";
/// The bucket Garage creates at start.
pub const DEFAULT_BUCKET: &str = "cairn-default";

pub struct S3Server {
    child: Child,
    /// `http://127.0.0.1:PORT`
    pub endpoint: String,
    _dir: tempfile::TempDir,
}

fn tools_dir() -> PathBuf {
    match std::env::var_os("CAIRN_TOOLS_DIR") {
        Some(dir) => PathBuf::from(dir),
        None => PathBuf::from(std::env::var_os("HOME").expect("HOME")).join(".cache/cairn/tools"),
    }
}

fn tool(relative: &str) -> PathBuf {
    let path = tools_dir().join(relative);
    assert!(
        path.is_file(),
        "{} is missing: run `scripts/setup.sh --test-servers` (it installs the S3 test servers)",
        path.display()
    );
    path
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// Sets the AWS variables the `cairn` child processes (and in-process
/// backends) inherit. The same values every time, so tests that race here
/// agree.
pub fn set_credentials() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        std::env::set_var("AWS_ACCESS_KEY_ID", ACCESS_KEY);
        std::env::set_var("AWS_SECRET_ACCESS_KEY", SECRET_KEY);
        std::env::set_var("AWS_DEFAULT_REGION", "us-east-1");
        std::env::remove_var("AWS_SESSION_TOKEN");
        // A developer's own profile or region must not reach the servers
        // (AWS_REGION wins over AWS_DEFAULT_REGION, as in AWS's tools).
        std::env::remove_var("AWS_PROFILE");
        std::env::remove_var("AWS_REGION");
        // Keep a misbehaving server from stretching a test.
        std::env::set_var("CAIRN_S3_RETRY_SECONDS", "10");
    });
}

impl S3Server {
    /// Garage 2.x, single node, with `DEFAULT_BUCKET` and the test key.
    pub fn garage() -> S3Server {
        set_credentials();
        let bin = tool("bin/garage");
        let dir = tempfile::Builder::new()
            .prefix("cairn-garage-")
            .tempdir()
            .unwrap();
        let port = free_port();
        let rpc = free_port();
        let config = dir.path().join("garage.toml");
        std::fs::write(
            &config,
            format!(
                "metadata_dir = \"{d}/meta\"\n\
                 data_dir = \"{d}/data\"\n\
                 db_engine = \"sqlite\"\n\
                 replication_factor = 1\n\
                 rpc_bind_addr = \"127.0.0.1:{rpc}\"\n\
                 rpc_secret = \"{secret}\"\n\
                 [s3_api]\n\
                 s3_region = \"us-east-1\"\n\
                 api_bind_addr = \"127.0.0.1:{port}\"\n",
                d = dir.path().display(),
                secret = "4425f5c26c5e11581d3223904324dcb5b5d5dfb14e5e7f35e38c595424f5f1e6",
            ),
        )
        .unwrap();
        let log = std::fs::File::create(dir.path().join("garage.log")).unwrap();
        let child = Command::new(bin)
            .arg("-c")
            .arg(&config)
            .args(["server", "--single-node", "--default-bucket"])
            .env("GARAGE_DEFAULT_ACCESS_KEY", ACCESS_KEY)
            .env("GARAGE_DEFAULT_SECRET_KEY", SECRET_KEY)
            .env("GARAGE_DEFAULT_BUCKET", DEFAULT_BUCKET)
            .env("RUST_LOG", "warn")
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .expect("cannot start garage");
        S3Server::ready(child, port, dir)
    }

    /// moto's S3 server (any credentials; no buckets at start).
    pub fn moto() -> S3Server {
        set_credentials();
        let bin = tool("moto/bin/moto_server");
        let dir = tempfile::Builder::new()
            .prefix("cairn-moto-")
            .tempdir()
            .unwrap();
        let port = free_port();
        let log = std::fs::File::create(dir.path().join("moto.log")).unwrap();
        let child = Command::new(bin)
            .args(["-H", "127.0.0.1", "-p", &port.to_string()])
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .expect("cannot start moto_server");
        S3Server::ready(child, port, dir)
    }

    /// Waits (at most 30 s) until the server accepts connections.
    fn ready(mut child: Child, port: u16, dir: tempfile::TempDir) -> S3Server {
        let started = Instant::now();
        while TcpStream::connect(("127.0.0.1", port)).is_err() {
            if let Some(status) = child.try_wait().unwrap() {
                let log: String = std::fs::read_dir(dir.path())
                    .unwrap()
                    .map(|e| e.unwrap().path())
                    .filter(|p| p.extension().is_some_and(|x| x == "log"))
                    .filter_map(|p| std::fs::read_to_string(p).ok())
                    .collect();
                panic!("the S3 server exited ({status}) before it was ready: {log}");
            }
            assert!(
                started.elapsed() < Duration::from_secs(30),
                "the S3 server did not listen on port {port} within 30 s"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        S3Server {
            child,
            endpoint: format!("http://127.0.0.1:{port}"),
            _dir: dir,
        }
    }

    /// `s3:http://127.0.0.1:PORT/BUCKET[/PREFIX]`
    pub fn repo(&self, bucket_and_prefix: &str) -> String {
        format!("s3:{}/{bucket_and_prefix}", self.endpoint)
    }
}

impl Drop for S3Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
