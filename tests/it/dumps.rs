//! `backup --stdin-from-command`: a failing dump command leaves no snapshot;
//! real PostgreSQL and Redis servers, started here, are dumped through cairn
//! and restored from `cairn dump`.

use crate::common::*;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

fn snapshot_count(t: &TestRepo) -> usize {
    t.snapshots_json(&[]).len()
}

/// Runs `cairn backup --stdin-from-command ... -- argv` and returns the output.
pub(crate) fn backup_command(t: &TestRepo, name: &str, argv: &[&str]) -> std::process::Output {
    let mut args = vec![
        "--json",
        "backup",
        "--stdin-from-command",
        "--stdin-filename",
        name,
        "--",
    ];
    args.extend_from_slice(argv);
    t.cmd(&args)
}

/// The one-line error of a failed command backup.
pub(crate) fn failure_line(out: &std::process::Output) -> String {
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert_eq!(
        out.status.code(),
        Some(1),
        "a failed dump command must exit 1: {stderr}"
    );
    stderr
        .lines()
        .find(|l| l.starts_with("cairn: error:"))
        .unwrap_or_else(|| panic!("no error line in {stderr:?}"))
        .to_string()
}

#[test]
fn command_that_exits_3_after_writing_leaves_no_snapshot() {
    let t = TestRepo::new();
    // Several MiB of output first, so blobs are already stored when the
    // command fails.
    let out = backup_command(
        &t,
        "app.sql",
        &[
            "sh",
            "-c",
            "head -c 5000000 /dev/urandom; echo dumper-says-bye >&2; exit 3",
        ],
    );
    let line = failure_line(&out);
    assert!(line.contains("status 3"), "{line}");
    assert!(line.contains("no snapshot"), "{line}");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("dumper-says-bye"),
        "the command's stderr must pass through: {stderr}"
    );
    assert!(out.stdout.is_empty(), "no summary for a failed backup");
    assert_eq!(snapshot_count(&t), 0);
}

#[test]
fn command_killed_by_a_signal_leaves_no_snapshot() {
    let t = TestRepo::new();
    let out = backup_command(
        &t,
        "app.sql",
        &[
            "sh",
            "-c",
            "echo 'INSERT INTO t VALUES (1);'; kill -KILL $$",
        ],
    );
    let line = failure_line(&out);
    assert!(line.contains("signal 9"), "{line}");
    assert_eq!(snapshot_count(&t), 0);
    // A command that cannot be started is a failure too.
    let out = backup_command(&t, "app.sql", &["/nonexistent/pg_dump"]);
    let line = failure_line(&out);
    assert!(line.contains("cannot run /nonexistent/pg_dump"), "{line}");
    assert_eq!(snapshot_count(&t), 0);
}

#[test]
fn command_output_is_stored_exactly_and_the_command_recorded() {
    let t = TestRepo::new();
    let data = t.dir.path().join("data.sql");
    std::fs::write(&data, sql_bytes(5, 3 << 20)).unwrap();
    // No shell: the argument with a space and a quote reaches cat as is.
    let odd = t.dir.path().join("it's here.sql");
    std::fs::copy(&data, &odd).unwrap();
    let out = backup_command(&t, "app.sql", &["cat", path_str(&odd)]);
    assert_success(&out, &["backup --stdin-from-command"]);
    let summary = parse_summary(&String::from_utf8(out.stdout).unwrap());
    assert_eq!(num(&summary, "total_bytes_processed"), 3 << 20);
    let dumped = t.ok_bytes(&["dump", "latest", "app.sql"]);
    assert!(dumped == std::fs::read(&data).unwrap(), "dump differs");
    let snaps = t.snapshots_json(&[]);
    assert_eq!(
        snaps[0]["command"],
        serde_json::json!(["cat", path_str(&odd)])
    );
    assert_eq!(snaps[0]["version"], 2);
    assert_eq!(snaps[0]["paths"], serde_json::json!(["/app.sql"]));
}

// ------------------------------------------------------------ servers ----

pub(crate) fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// A command that runs as `nobody` when we are root (PostgreSQL refuses to
/// run as root), else as ourselves.
fn unprivileged(program: &Path) -> Command {
    if is_root() {
        let mut c = Command::new("setpriv");
        c.args(["--reuid=nobody", "--regid=nogroup", "--clear-groups"])
            .arg(program);
        c
    } else {
        Command::new(program)
    }
}

pub(crate) fn run_ok(c: &mut Command) -> Vec<u8> {
    let out = output_with_timeout(c, COMMAND_TIMEOUT_SECS);
    assert!(
        out.status.success(),
        "{c:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    out.stdout
}

fn wait_until(what: &str, mut ready: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(60);
    while !ready() {
        assert!(Instant::now() < deadline, "{what} did not come up");
        std::thread::sleep(Duration::from_millis(100));
    }
}

pub(crate) const PG_BIN: &str = "/usr/lib/postgresql/15/bin";

/// A throw-away PostgreSQL 15 cluster: its own data directory, a unix
/// socket in its temp dir and no TCP listener. Stopped on drop.
pub(crate) struct Postgres {
    pub(crate) dir: tempfile::TempDir,
    pub(crate) port: u16,
    server: Child,
}

impl Postgres {
    pub(crate) fn available() -> bool {
        Path::new(PG_BIN).join("initdb").exists()
    }

    pub(crate) fn start() -> Postgres {
        let dir = tempfile::Builder::new()
            .prefix("cairn-pg-")
            .tempdir()
            .unwrap();
        if is_root() {
            run_tool("chown", &["nobody:nogroup", path_str(dir.path())]);
        }
        let data = dir.path().join("data");
        run_ok(
            unprivileged(&Path::new(PG_BIN).join("initdb"))
                .args(["-A", "trust", "-U", "postgres", "-E", "UTF8", "--locale=C"])
                .args(["--no-sync", "-D"])
                .arg(&data),
        );
        let port = free_port();
        let server = unprivileged(&Path::new(PG_BIN).join("postgres"))
            .arg("-D")
            .arg(&data)
            .args(["-p", &port.to_string(), "-k", path_str(dir.path())])
            .args(["-c", "listen_addresses=", "-c", "fsync=off"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start postgres");
        let pg = Postgres { dir, port, server };
        wait_until("postgres", || {
            pg.psql("postgres")
                .args(["-c", "select 1"])
                .output()
                .is_ok_and(|o| o.status.success())
        });
        pg
    }

    pub(crate) fn tool(&self, name: &str) -> Command {
        let mut c = Command::new(Path::new(PG_BIN).join(name));
        c.args(["-h", path_str(self.dir.path())]).args([
            "-p",
            &self.port.to_string(),
            "-U",
            "postgres",
        ]);
        c
    }

    pub(crate) fn psql(&self, db: &str) -> Command {
        let mut c = self.tool("psql");
        c.args(["-X", "-q", "-v", "ON_ERROR_STOP=1", "-d", db]);
        c
    }

    pub(crate) fn sql(&self, db: &str, sql: &str) -> String {
        String::from_utf8(run_ok(self.psql(db).args(["-At", "-c", sql]))).unwrap()
    }

    /// The pg_dump command line cairn runs, as strings.
    pub(crate) fn pg_dump_argv(&self, db: &str) -> Vec<String> {
        vec![
            format!("{PG_BIN}/pg_dump"),
            "-Fp".into(),
            "-h".into(),
            path_str(self.dir.path()).into(),
            "-p".into(),
            self.port.to_string(),
            "-U".into(),
            "postgres".into(),
            db.into(),
        ]
    }
}

impl Drop for Postgres {
    fn drop(&mut self) {
        // SIGQUIT: immediate shutdown, the cluster is thrown away anyway.
        // SAFETY: kill has no memory-safety preconditions.
        unsafe { libc::kill(self.server.id() as i32, libc::SIGQUIT) };
        let _ = wait_timeout(&mut self.server, 60);
    }
}

const CITIES: [&str; 8] = [
    "Lisbon",
    "Tromsø",
    "Kraków",
    "Nairobi",
    "Montréal",
    "Osaka",
    "Valparaíso",
    "Tbilisi",
];
const WORDS: [&str; 12] = [
    "invoice",
    "refund",
    "shipment",
    "delayed",
    "express",
    "fragile",
    "gift",
    "returned",
    "priority",
    "customs",
    "signed",
    "warehouse",
];

/// COPY data for `customers` and `orders`: realistic text, deterministic.
pub(crate) fn load_sql(customers: u64, orders: u64) -> Vec<u8> {
    let mut rng = Rng::new(42);
    let mut s = Vec::new();
    writeln!(
        s,
        "CREATE TABLE customers (id int PRIMARY KEY, name text, email text, city text, note text);\n\
         CREATE TABLE orders (id int PRIMARY KEY, customer_id int, item text, amount numeric(12,2), placed timestamptz, remark text);\n\
         COPY customers FROM stdin;"
    )
    .unwrap();
    for id in 1..=customers {
        let city = CITIES[rng.below(8) as usize];
        let note: Vec<&str> = (0..4).map(|_| WORDS[rng.below(12) as usize]).collect();
        writeln!(
            s,
            "{id}\tCustomer {}\tuser{id}@example.org\t{city}\t{}",
            rng.below(1_000_000),
            note.join(" ")
        )
        .unwrap();
    }
    writeln!(s, "\\.\nCOPY orders FROM stdin;").unwrap();
    for id in 1..=orders {
        let remark: Vec<&str> = (0..6).map(|_| WORDS[rng.below(12) as usize]).collect();
        writeln!(
            s,
            "{id}\t{}\tSKU-{:06}\t{}.{:02}\t2025-{:02}-{:02} {:02}:{:02}:00+00\t{}",
            1 + rng.below(customers),
            rng.below(1_000_000),
            rng.below(100_000),
            rng.below(100),
            1 + rng.below(12),
            1 + rng.below(28),
            rng.below(24),
            rng.below(60),
            remark.join(" ")
        )
        .unwrap();
    }
    writeln!(s, "\\.").unwrap();
    s
}

fn table_contents(pg: &Postgres, db: &str) -> (String, String) {
    (
        pg.sql(db, "SELECT * FROM customers ORDER BY id"),
        pg.sql(db, "SELECT * FROM orders ORDER BY id"),
    )
}

fn backup_json_command(t: &TestRepo, argv: &[&str]) -> serde_json::Value {
    let out = backup_command(t, "app.sql", argv);
    assert_success(&out, &["backup --stdin-from-command", argv[0]]);
    parse_summary(&String::from_utf8(out.stdout).unwrap())
}

#[test]
fn postgres_dump_two_nights_restore_night_one() {
    assert!(
        Postgres::available(),
        "PostgreSQL 15 is not installed: run scripts/setup.sh"
    );
    let pg = Postgres::start();
    pg.sql("postgres", "CREATE DATABASE app");
    let load = pg.dir.path().join("load.sql");
    std::fs::write(&load, load_sql(20_000, 100_000)).unwrap();
    run_ok(pg.psql("app").arg("-f").arg(&load));
    let night1_tables = table_contents(&pg, "app");

    let t = TestRepo::new();
    let argv = pg.pg_dump_argv("app");
    let argv: Vec<&str> = argv.iter().map(String::as_str).collect();
    let night1 = backup_json_command(&t, &argv);
    let dump_len = num(&night1, "total_bytes_processed");

    // Night 2: 1% of the orders are archived (deleted) and 1% arrive. The
    // new rows carry a delivery note longer than the space PostgreSQL left
    // free in the loaded pages, so they go to the end of the table.
    pg.sql(
        "app",
        "DELETE FROM orders WHERE id BETWEEN 5001 AND 6000;\
         INSERT INTO orders SELECT id + 100000, customer_id, item, amount, placed + interval '1 year',\
           remark || ' delivery note: ' || repeat(remark || ' ', 6) FROM orders WHERE id BETWEEN 1 AND 1000;",
    );
    let night2 = backup_json_command(&t, &argv);
    let added2 = num(&night2, "data_added");
    // `cairn stats` shows the same: two full-size snapshots, little more
    // than one dump's worth of unique data.
    let stats: serde_json::Value =
        serde_json::from_str(&t.ok(&["--json", "stats", "latest"])).unwrap();
    let snapshot_size = num(&stats["snapshot"], "total_size");
    let unique = num(&stats["repository"], "blob_bytes");
    assert_eq!(num(&stats["repository"], "snapshots"), 2, "{stats}");
    assert!(
        snapshot_size > dump_len * 98 / 100 && unique < dump_len + added2 + (1 << 20),
        "stats: {stats}, dump {dump_len}, night 2 added {added2}"
    );
    assert!(
        num(&stats["repository"], "pack_bytes") < unique,
        "packs hold compressed blobs: {stats}"
    );
    // Night 3: 1% of the rows updated at random. PostgreSQL writes each new
    // row version wherever its free-space map finds room, so the changes
    // spread over the whole dump: measured, not asserted.
    pg.sql(
        "app",
        "UPDATE orders SET amount = amount + 1 WHERE id % 100 = 7;",
    );
    let night3 = backup_json_command(&t, &argv);
    let added3 = num(&night3, "data_added");
    let percent = |n: u64| 100.0 * n as f64 / dump_len as f64;
    note(&format!(
        "pg_dump of {dump_len} bytes: night 1 added {}, night 2 (1% deleted, 1% appended) added {added2} ({:.1}%), \
         night 3 (1% updated at random) added {added3} ({:.1}%)",
        num(&night1, "data_added"),
        percent(added2),
        percent(added3),
    ));
    assert!(
        added2 < dump_len / 5,
        "night 2 re-stored too much: {added2} of {dump_len} bytes"
    );

    // Restore night 1 into a fresh database from `cairn dump`.
    pg.sql("postgres", "CREATE DATABASE restored");
    let night1_id = night1["snapshot_id"].as_str().unwrap();
    let sql = t.ok_bytes(&["dump", night1_id, "app.sql"]);
    let mut psql = pg
        .psql("restored")
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    psql.stdin.take().unwrap().write_all(&sql).unwrap();
    let restored = finish_with_timeout(psql, "psql restore", COMMAND_TIMEOUT_SECS);
    assert!(
        restored.status.success(),
        "psql restore failed: {}",
        String::from_utf8_lossy(&restored.stderr)
    );
    assert!(
        table_contents(&pg, "restored") == night1_tables,
        "restored night 1 differs from the database as it was"
    );
    assert!(
        table_contents(&pg, "app") != night1_tables,
        "night 2 must differ from night 1 for this test to mean anything"
    );

    // pg_dump of a database that does not exist: no snapshot, exit 1.
    let before = snapshot_count(&t);
    let argv = pg.pg_dump_argv("no_such_db");
    let argv: Vec<&str> = argv.iter().map(String::as_str).collect();
    let line = failure_line(&backup_command(&t, "missing.sql", &argv));
    assert!(line.contains("status 1"), "{line}");
    assert_eq!(snapshot_count(&t), before);
}

/// A redis-server on a free local port with its data in a temp dir.
pub(crate) struct Redis {
    /// Holds the server's data; removed on drop.
    _dir: tempfile::TempDir,
    pub(crate) port: u16,
    server: Child,
}

impl Redis {
    pub(crate) fn available() -> bool {
        have_tool("redis-server") && have_tool("redis-cli") && have_tool("redis-check-rdb")
    }

    /// Starts a server; with `rdb`, loaded from that file.
    pub(crate) fn start(rdb: Option<&Path>) -> Redis {
        let dir = tempfile::Builder::new()
            .prefix("cairn-redis-")
            .tempdir()
            .unwrap();
        if let Some(rdb) = rdb {
            std::fs::copy(rdb, dir.path().join("dump.rdb")).unwrap();
        }
        let port = free_port();
        let server = Command::new("redis-server")
            .args(["--port", &port.to_string(), "--bind", "127.0.0.1"])
            .args(["--dir", path_str(dir.path()), "--dbfilename", "dump.rdb"])
            .args(["--save", "", "--appendonly", "no", "--daemonize", "no"])
            .args(["--enable-debug-command", "local"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start redis-server");
        let redis = Redis {
            _dir: dir,
            port,
            server,
        };
        wait_until("redis-server", || {
            redis
                .cli()
                .arg("PING")
                .output()
                .is_ok_and(|o| o.stdout.starts_with(b"PONG"))
        });
        redis
    }

    pub(crate) fn cli(&self) -> Command {
        let mut c = Command::new("redis-cli");
        c.args(["-p", &self.port.to_string()]);
        c
    }

    pub(crate) fn query(&self, args: &[&str]) -> String {
        String::from_utf8(run_ok(self.cli().args(args))).unwrap()
    }
}

impl Drop for Redis {
    fn drop(&mut self) {
        let _ = self.server.kill();
        let _ = wait_timeout(&mut self.server, 60);
    }
}

pub(crate) fn resp(args: &[&[u8]], out: &mut Vec<u8>) {
    write!(out, "*{}\r\n", args.len()).unwrap();
    for a in args {
        write!(out, "${}\r\n", a.len()).unwrap();
        out.extend_from_slice(a);
        out.extend_from_slice(b"\r\n");
    }
}

#[test]
fn redis_rdb_through_redis_cli_restores_into_a_second_server() {
    assert!(
        Redis::available(),
        "redis-server, redis-cli or redis-check-rdb is missing: run scripts/setup.sh"
    );
    let redis = Redis::start(None);
    let mut rng = Rng::new(7);
    let mut commands = Vec::new();
    for i in 0..20_000u64 {
        let value = format!(
            "session {i} user{} {}",
            rng.below(5000),
            WORDS[rng.below(12) as usize]
        );
        resp(
            &[b"SET", format!("session:{i}").as_bytes(), value.as_bytes()],
            &mut commands,
        );
    }
    for i in 0..500u64 {
        let key = format!("cart:{i}");
        resp(
            &[b"HSET", key.as_bytes(), b"sku", b"SKU-1", b"qty", b"3"],
            &mut commands,
        );
        resp(
            &[
                b"RPUSH",
                format!("queue:{}", i % 7).as_bytes(),
                key.as_bytes(),
            ],
            &mut commands,
        );
    }
    resp(&[b"SET", b"binary", &[0, 255, 13, 10, 1]], &mut commands);
    let mut pipe = redis
        .cli()
        .arg("--pipe")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    pipe.stdin.take().unwrap().write_all(&commands).unwrap();
    let piped = finish_with_timeout(pipe, "redis-cli --pipe", COMMAND_TIMEOUT_SECS);
    assert!(piped.status.success(), "redis-cli --pipe failed");
    let keys = redis.query(&["DBSIZE"]);
    assert_eq!(keys.trim(), "20508");
    let digest = redis.query(&["DEBUG", "DIGEST"]);

    let t = TestRepo::new();
    let port = redis.port.to_string();
    let out = backup_command(&t, "dump.rdb", &["redis-cli", "-p", &port, "--rdb", "-"]);
    assert_success(&out, &["backup redis-cli --rdb -"]);

    let rdb: PathBuf = t.dir.path().join("restored.rdb");
    std::fs::write(&rdb, t.ok_bytes(&["dump", "latest", "dump.rdb"])).unwrap();
    run_ok(Command::new("redis-check-rdb").arg(&rdb));
    let second = Redis::start(Some(&rdb));
    assert_eq!(second.query(&["DBSIZE"]), keys);
    assert_eq!(second.query(&["DEBUG", "DIGEST"]), digest);
    assert_eq!(
        second.query(&["HGET", "cart:42", "qty"]).trim(),
        "3",
        "hash field lost"
    );
}
