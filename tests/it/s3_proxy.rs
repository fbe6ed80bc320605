//! A fault-injecting HTTP proxy in front of a test S3 server, on threads:
//! it reads each request (head and `Content-Length` body) from the client
//! and either forwards it or fails it in one of the ways S3 and networks
//! fail: a dropped connection, a 503, a 503 SlowDown (S3's XML error), a
//! stall. Responses are relayed as raw bytes: a client sends its next
//! request on a connection only after reading the whole response, so a
//! fault decided at a request's head never cuts a response in two.
//! Loopback only; every thread ends when the proxy is dropped.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

#[derive(Debug, Clone, Copy)]
pub enum Fault {
    /// Read the request, then close the connection without an answer.
    Drop,
    /// `503 Service Unavailable` with S3's `ServiceUnavailable` error.
    Unavailable,
    /// `503` with S3's `SlowDown` error (throttling).
    SlowDown,
    /// Answer nothing for this long, then close.
    Stall(Duration),
}

/// Which requests fail: after `skip` requests pass, every `every`th one
/// fails, `left` times in all (then everything passes), the faults taken
/// in turn from `faults`.
#[derive(Debug, Clone)]
pub struct Plan {
    pub skip: u64,
    pub every: u64,
    pub left: u64,
    pub faults: Vec<Fault>,
}

impl Plan {
    pub fn pass() -> Plan {
        Plan {
            skip: 0,
            every: 1,
            left: 0,
            faults: vec![Fault::Drop],
        }
    }

    /// Every request from now on fails with `fault`.
    pub fn outage(fault: Fault) -> Plan {
        Plan {
            skip: 0,
            every: 1,
            left: u64::MAX,
            faults: vec![fault],
        }
    }
}

struct State {
    plan: Mutex<(Plan, u64)>,
    faults: AtomicU64,
    requests: AtomicU64,
    stop: AtomicBool,
}

impl State {
    /// The fault for the next request, if any.
    fn decide(&self) -> Option<Fault> {
        self.requests.fetch_add(1, Ordering::SeqCst);
        let mut guard = self.plan.lock().unwrap();
        let (plan, seen) = &mut *guard;
        *seen += 1;
        if *seen <= plan.skip || plan.left == 0 || (*seen - plan.skip) % plan.every.max(1) != 0 {
            return None;
        }
        plan.left -= 1;
        let n = self.faults.fetch_add(1, Ordering::SeqCst);
        Some(plan.faults[n as usize % plan.faults.len()])
    }
}

pub struct FaultProxy {
    /// `http://127.0.0.1:PORT`
    pub endpoint: String,
    state: Arc<State>,
}

impl FaultProxy {
    /// A proxy for `upstream` (`http://127.0.0.1:PORT`).
    pub fn start(upstream: &str, plan: Plan) -> FaultProxy {
        let upstream = upstream
            .strip_prefix("http://")
            .expect("a loopback http endpoint")
            .to_string();
        assert!(upstream.starts_with("127.0.0.1:"), "loopback only");
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        listener.set_nonblocking(true).unwrap();
        let endpoint = format!("http://{}", listener.local_addr().unwrap());
        let state = Arc::new(State {
            plan: Mutex::new((plan, 0)),
            faults: AtomicU64::new(0),
            requests: AtomicU64::new(0),
            stop: AtomicBool::new(false),
        });
        let accept_state = state.clone();
        std::thread::spawn(move || {
            while !accept_state.stop.load(Ordering::SeqCst) {
                match listener.accept() {
                    Ok((client, _)) => {
                        let state = accept_state.clone();
                        let upstream = upstream.clone();
                        std::thread::spawn(move || {
                            let _ = serve(client, &upstream, &state);
                        });
                    }
                    Err(_) => std::thread::sleep(Duration::from_millis(5)),
                }
            }
        });
        FaultProxy { endpoint, state }
    }

    /// Changes the plan; requests are counted from here for `skip`.
    pub fn set(&self, plan: Plan) {
        *self.state.plan.lock().unwrap() = (plan, 0);
    }

    /// Faults injected so far.
    pub fn faults(&self) -> u64 {
        self.state.faults.load(Ordering::SeqCst)
    }

    /// Requests seen so far, failed or passed.
    pub fn requests(&self) -> u64 {
        self.state.requests.load(Ordering::SeqCst)
    }

    /// `s3:http://127.0.0.1:PORT/BUCKET[/PREFIX]` through the proxy.
    pub fn repo(&self, bucket_and_prefix: &str) -> String {
        format!("s3:{}/{bucket_and_prefix}", self.endpoint)
    }
}

impl Drop for FaultProxy {
    fn drop(&mut self) {
        self.state.stop.store(true, Ordering::SeqCst);
    }
}

/// One client connection: requests in, one by one.
fn serve(client: TcpStream, upstream: &str, state: &State) -> std::io::Result<()> {
    client.set_nonblocking(false)?;
    // A stalled client (or one the test abandoned) cannot pin a thread.
    client.set_read_timeout(Some(Duration::from_secs(60)))?;
    let mut reader = BufReader::new(client.try_clone()?);
    let mut server: Option<TcpStream> = None;
    let close = |server: &Option<TcpStream>| {
        if let Some(s) = server {
            let _ = s.shutdown(Shutdown::Both);
        }
        let _ = client.shutdown(Shutdown::Both);
    };
    loop {
        let Some(head) = read_head(&mut reader)? else {
            close(&server);
            return Ok(());
        };
        let length = content_length(&head);
        if state.stop.load(Ordering::SeqCst) {
            close(&server);
            return Ok(());
        }
        if let Some(fault) = state.decide() {
            // Read the body first: the client then sees a closed
            // connection or an answer, not a write error halfway.
            std::io::copy(&mut (&mut reader).take(length), &mut std::io::sink())?;
            match fault {
                Fault::Drop => {}
                Fault::Stall(pause) => std::thread::sleep(pause),
                Fault::Unavailable => answer_503(&client, &head, "ServiceUnavailable")?,
                Fault::SlowDown => answer_503(&client, &head, "SlowDown")?,
            }
            close(&server);
            return Ok(());
        }
        let up = match &mut server {
            Some(up) => up,
            None => {
                let up = TcpStream::connect(upstream)?;
                let mut from = up.try_clone()?;
                let mut to = client.try_clone()?;
                std::thread::spawn(move || {
                    let _ = std::io::copy(&mut from, &mut to);
                    let _ = to.shutdown(Shutdown::Both);
                });
                server.insert(up)
            }
        };
        up.write_all(&head)?;
        std::io::copy(&mut (&mut reader).take(length), up)?;
    }
}

/// The request line and headers, through the blank line; `None` at a
/// clean end of the connection.
fn read_head(reader: &mut BufReader<TcpStream>) -> std::io::Result<Option<Vec<u8>>> {
    let mut head = Vec::new();
    loop {
        let before = head.len();
        let n = reader.read_until(b'\n', &mut head)?;
        if n == 0 {
            return Ok(None);
        }
        assert!(head.len() < 256 << 10, "request head too large");
        if &head[before..] == b"\r\n" && before > 0 {
            return Ok(Some(head));
        }
    }
}

fn header<'h>(head: &'h [u8], name: &str) -> Option<&'h str> {
    std::str::from_utf8(head).ok()?.lines().find_map(|line| {
        let (key, value) = line.split_once(':')?;
        key.trim().eq_ignore_ascii_case(name).then(|| value.trim())
    })
}

fn content_length(head: &[u8]) -> u64 {
    assert!(
        header(head, "transfer-encoding").is_none(),
        "the proxy reads only Content-Length bodies"
    );
    header(head, "content-length").map_or(0, |v| v.parse().unwrap())
}

fn answer_503(mut client: &TcpStream, head: &[u8], code: &str) -> std::io::Result<()> {
    let body = format!(
        "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<Error><Code>{code}</Code><Message>injected by the test proxy</Message><RequestId>0</RequestId></Error>"
    );
    let is_head = head.starts_with(b"HEAD ");
    let response = format!(
        "HTTP/1.1 503 Service Unavailable\r\nContent-Type: application/xml\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{}",
        if is_head { 0 } else { body.len() },
        if is_head { "" } else { &body },
    );
    client.write_all(response.as_bytes())
}
