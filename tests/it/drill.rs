//! `cairn drill`: real PostgreSQL 15 and redis-server, started by the
//! drill itself on sockets in its scratch directory, loading snapshots of
//! real dumps; tarballs and trees read back; records, metrics, scratch
//! clean-up and the environment the drill's children see.

use crate::common::*;
use crate::dumps::{backup_command, load_sql, resp, run_ok, Postgres, Redis, PG_BIN};
use std::io::Write;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

/// A scratch parent inside the test's directory, reachable (not listable)
/// by the unprivileged user a root drill runs PostgreSQL as.
fn scratch_parent(t: &TestRepo) -> PathBuf {
    let dir = t.path("scratch");
    for d in [t.dir.path(), dir.as_path()] {
        std::fs::set_permissions(d, std::fs::Permissions::from_mode(0o711)).unwrap();
    }
    dir
}

fn drill(t: &TestRepo, scratch: &Path, args: &[&str]) -> Output {
    t.command()
        .args(["--json", "drill", "--scratch", path_str(scratch)])
        .args(args)
        .output()
        .unwrap()
}

/// The one drill object of a `--json drill` run.
fn drilled(out: &Output) -> serde_json::Value {
    let text = String::from_utf8_lossy(&out.stdout);
    let v: serde_json::Value = serde_json::from_str(text.trim())
        .unwrap_or_else(|e| panic!("drill --json: {e}: {text} {}", stderr(out)));
    let all = v.as_array().expect("an array of drills");
    assert_eq!(all.len(), 1, "{v}");
    all[0].clone()
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

fn figure(d: &serde_json::Value, name: &str) -> u64 {
    d["figures"]
        .as_array()
        .unwrap()
        .iter()
        .find(|f| f["name"] == name)
        .unwrap_or_else(|| panic!("no figure {name:?} in {d}"))["count"]
        .as_u64()
        .unwrap()
}

fn passed(out: &Output) -> serde_json::Value {
    assert_eq!(out.status.code(), Some(0), "drill failed: {}", stderr(out));
    let d = drilled(out);
    assert_eq!(d["verdict"], "passed", "{d}");
    d
}

/// A failed drill: exit 1, its record failed; the failure line from stderr.
fn failed(out: &Output) -> (serde_json::Value, String) {
    assert_eq!(
        out.status.code(),
        Some(1),
        "a failed drill exits 1: {}",
        stderr(out)
    );
    let d = drilled(out);
    assert_eq!(d["verdict"], "failed", "{d}");
    let err = stderr(out);
    let line = err
        .lines()
        .find(|l| l.contains("drill of snapshot") && l.contains("failed:"))
        .unwrap_or_else(|| panic!("no failure line in {err}"))
        .to_string();
    (d, line)
}

fn entries(dir: &Path) -> Vec<String> {
    std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect()
}

fn list(t: &TestRepo, args: &[&str]) -> Vec<serde_json::Value> {
    let mut all = vec!["--json", "drill", "--list"];
    all.extend_from_slice(args);
    let out = t.ok(&all);
    serde_json::from_str::<serde_json::Value>(out.trim())
        .unwrap()
        .as_array()
        .unwrap()
        .clone()
}

#[test]
fn postgres_plain_and_custom_dumps_load_with_their_row_counts() {
    assert!(
        Postgres::available(),
        "PostgreSQL 15 is not installed: run scripts/setup.sh"
    );
    let pg = Postgres::start();
    pg.sql("postgres", "CREATE DATABASE app");
    let load = pg.dir.path().join("load.sql");
    std::fs::write(&load, load_sql(2000, 5000)).unwrap();
    run_ok(pg.psql("app").arg("-f").arg(&load));
    let t = TestRepo::new();
    let scratch = scratch_parent(&t);
    let plain = pg.pg_dump_argv("app");
    let plain: Vec<&str> = plain.iter().map(String::as_str).collect();
    assert_success(&backup_command(&t, "app.sql", &plain), &["backup app.sql"]);
    let mut custom = plain.clone();
    custom[1] = "-Fc";
    assert_success(
        &backup_command(&t, "app.dump", &custom),
        &["backup app.dump"],
    );

    // The plain dump, with the repository password in cairn's environment:
    // neither the verify command nor the server sees it.
    let seen = t.dir.path().join("seen-env");
    let server_env = t.dir.path().join("server-env");
    let metrics = t.dir.path().join("drill.prom");
    let check = format!(
        "env > {}; tr '\\0' '\\n' < /proc/$(head -1 $PGHOST/data/postmaster.pid)/environ > {}; \
         test \"$(psql -XAtc 'SELECT count(*) FROM orders')\" = 5000",
        path_str(&seen),
        path_str(&server_env)
    );
    let out = t
        .command()
        .env_remove("CAIRN_PASSWORD_FILE")
        .env("CAIRN_PASSWORD", PASSWORD)
        .env(
            "PATH",
            format!("{PG_BIN}:{}", std::env::var("PATH").unwrap()),
        )
        .args(["--json", "--metrics-file", path_str(&metrics), "drill"])
        .args(["--path", "/app.sql", "--scratch", path_str(&scratch)])
        .args(["--verify-command", &check])
        .output()
        .unwrap();
    let d = passed(&out);
    assert_eq!(d["kind"], "postgres");
    assert_eq!(figure(&d, "public.customers"), 2000);
    assert_eq!(figure(&d, "public.orders"), 5000);
    for file in [&seen, &server_env] {
        let env = std::fs::read_to_string(file).unwrap();
        assert!(env.contains("PATH="), "{env}");
        assert!(
            !env.contains("CAIRN_PASSWORD"),
            "secret leaked to a child: {env}"
        );
        assert!(!env.contains(PASSWORD), "password leaked to a child: {env}");
    }
    assert!(
        entries(&scratch).is_empty(),
        "scratch left: {:?}",
        entries(&scratch)
    );
    let prom = std::fs::read_to_string(&metrics).unwrap();
    assert!(
        prom.lines().any(
            |l| l.starts_with("cairn_drill_last_success_timestamp_seconds{")
                && l.contains(":/app.sql\"")
        ),
        "{prom}"
    );
    assert!(prom.contains("cairn_drill_duration_seconds{"), "{prom}");

    // pg_dumpall, the runbooks' own command: it creates the production
    // server's roles (the throwaway cluster already has its superuser) and
    // every database, whose tables are all counted.
    let mut all = vec![format!("{PG_BIN}/pg_dumpall")];
    all.extend(pg.pg_dump_argv("app")[2..8].iter().cloned());
    let all: Vec<&str> = all.iter().map(String::as_str).collect();
    assert_success(&backup_command(&t, "all.sql", &all), &["backup all.sql"]);
    let d = passed(&drill(&t, &scratch, &["--path", "/all.sql"]));
    assert_eq!(d["kind"], "postgres");
    assert_eq!(figure(&d, "app/public.orders"), 5000);

    // The custom-format dump goes through pg_restore; --keep leaves the
    // scratch, with the server stopped.
    let d = passed(&drill(&t, &scratch, &["--path", "/app.dump", "--keep"]));
    assert_eq!(figure(&d, "public.orders"), 5000);
    let kept = PathBuf::from(d["kept"].as_str().unwrap());
    assert!(kept.starts_with(&scratch) && kept.join("restore/app.dump").is_file());
    // The server's user may pass through the scratch, not change it: it is
    // where cairn, as root, writes.
    let meta = std::fs::metadata(&kept).unwrap();
    assert_eq!(
        meta.permissions().mode() & 0o777,
        if is_root() { 0o711 } else { 0o700 }
    );
    let ours = std::fs::metadata(t.dir.path()).unwrap();
    assert_eq!(
        std::os::unix::fs::MetadataExt::uid(&meta),
        std::os::unix::fs::MetadataExt::uid(&ours)
    );
    let probe = Command::new(Path::new(PG_BIN).join("psql"))
        .arg("-h")
        .arg(kept.join("pg"))
        .args(["-p", "5432", "-U", "postgres", "-c", "SELECT 1"])
        .output()
        .unwrap();
    assert!(
        !probe.status.success(),
        "the kept cluster's server still runs"
    );
    std::fs::remove_dir_all(&kept).unwrap();

    // A night that lost most of its orders: --max-shrink names the table.
    pg.sql("app", "DELETE FROM orders WHERE id > 100");
    assert_success(&backup_command(&t, "app.sql", &plain), &["backup app.sql"]);
    let (d, line) = failed(&drill(
        &t,
        &scratch,
        &["--path", "/app.sql", "--max-shrink", "10%"],
    ));
    assert!(
        line.contains("public.orders shrank from 5000 to 100"),
        "{line}"
    );
    assert_eq!(figure(&d, "public.orders"), 100);

    // A dump cut in the middle of a row fails with the loader's error.
    let whole = t.ok_bytes(&["dump", "latest", "app.sql"]);
    let copy = find(&whole, b"COPY public.customers").unwrap();
    // Right after a row's first column: the rest of its columns missing.
    let row = copy + 200 + find(&whole[copy + 200..], b"\n").unwrap();
    let cut = row + find(&whole[row..], b"\t").unwrap() + 1;
    let file = t.dir.path().join("cut.sql");
    std::fs::write(&file, &whole[..cut]).unwrap();
    let cat = ["cat", path_str(&file)];
    assert_success(&backup_command(&t, "cut.sql", &cat), &["backup cut.sql"]);
    let (_, line) = failed(&drill(&t, &scratch, &["--path", "/cut.sql"]));
    assert!(
        line.contains("psql failed to load the dump") && line.contains("ERROR:"),
        "{line}"
    );
    assert!(
        entries(&scratch).is_empty(),
        "scratch left: {:?}",
        entries(&scratch)
    );

    // Every drill is recorded, passed or failed.
    let records = list(&t, &[]);
    assert_eq!(records.len(), 5, "{records:?}");
    assert_eq!(records.iter().filter(|r| r["passed"] == true).count(), 3);
    assert_eq!(list(&t, &["--path", "/app.sql"]).len(), 2);
    let text = t.ok(&["drill", "--list"]);
    assert_eq!(text.matches("FAILED").count(), 2, "{text}");
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}

#[test]
fn redis_rdb_drill_counts_keys_and_a_flipped_byte_fails_the_check() {
    assert!(
        Redis::available(),
        "redis tools missing: run scripts/setup.sh"
    );
    let redis = Redis::start(None);
    let mut commands = Vec::new();
    for i in 0..300u64 {
        resp(
            &[b"SET", format!("s:{i}").as_bytes(), b"value"],
            &mut commands,
        );
    }
    for i in 0..20u64 {
        resp(
            &[b"HSET", format!("h:{i}").as_bytes(), b"f", b"1"],
            &mut commands,
        );
    }
    resp(&[b"RPUSH", b"queue", b"a", b"b"], &mut commands);
    let mut pipe = redis
        .cli()
        .arg("--pipe")
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .spawn()
        .unwrap();
    pipe.stdin.take().unwrap().write_all(&commands).unwrap();
    assert!(pipe.wait().unwrap().success());
    let t = TestRepo::new();
    let scratch = scratch_parent(&t);
    let port = redis.port.to_string();
    let rdb = ["redis-cli", "-p", &port, "--rdb", "-"];
    assert_success(&backup_command(&t, "dump.rdb", &rdb), &["backup dump.rdb"]);
    let d = passed(&drill(&t, &scratch, &[]));
    assert_eq!(d["kind"], "redis");
    assert_eq!(figure(&d, "db0 keys"), 321);
    assert_eq!(figure(&d, "db0 string"), 300);
    assert_eq!(figure(&d, "db0 hash"), 20);
    assert_eq!(figure(&d, "db0 list"), 1);

    let mut bytes = t.ok_bytes(&["dump", "latest", "dump.rdb"]);
    let middle = bytes.len() / 2;
    bytes[middle] ^= 0xff;
    let file = t.dir.path().join("flipped.rdb");
    std::fs::write(&file, &bytes).unwrap();
    let cat = ["cat", path_str(&file)];
    assert_success(&backup_command(&t, "dump.rdb", &cat), &["backup flipped"]);
    let (_, line) = failed(&drill(&t, &scratch, &["latest"]));
    assert!(line.contains("redis-check-rdb failed: [offset"), "{line}");
    assert!(
        entries(&scratch).is_empty(),
        "scratch left: {:?}",
        entries(&scratch)
    );
}

/// The pid of the redis-server whose command line mentions `dir`.
fn server_under(dir: &Path) -> Option<u32> {
    let needle = path_str(dir).as_bytes().to_vec();
    std::fs::read_dir("/proc").ok()?.flatten().find_map(|e| {
        let pid: u32 = e.file_name().to_str()?.parse().ok()?;
        let cmdline = std::fs::read(e.path().join("cmdline")).ok()?;
        (cmdline.starts_with(b"redis-server") && find(&cmdline, &needle).is_some()).then_some(pid)
    })
}

#[test]
fn a_killed_drill_leaves_no_server_and_the_next_drill_removes_its_scratch() {
    assert!(
        Redis::available(),
        "redis tools missing: run scripts/setup.sh"
    );
    let redis = Redis::start(None);
    redis.query(&["SET", "k", "v"]);
    let t = TestRepo::new();
    let scratch = scratch_parent(&t);
    let port = redis.port.to_string();
    let rdb = ["redis-cli", "-p", &port, "--rdb", "-"];
    assert_success(&backup_command(&t, "dump.rdb", &rdb), &["backup dump.rdb"]);
    let (mut child, server, _) = start_drill_paused_at_server(&t, &scratch);
    child.kill().unwrap();
    child.wait().unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    while Path::new(&format!("/proc/{server}")).exists() {
        assert!(
            Instant::now() < deadline,
            "redis-server outlived the killed drill"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    assert_eq!(
        entries(&scratch).len(),
        1,
        "the killed drill's scratch stays"
    );
    let out = drill(&t, &scratch, &[]);
    passed(&out);
    assert!(
        stderr(&out).contains("left by a drill that did not finish"),
        "{}",
        stderr(&out)
    );
    assert!(
        entries(&scratch).is_empty(),
        "scratch left: {:?}",
        entries(&scratch)
    );
}

#[test]
fn files_and_tar_drills_read_everything_back() {
    let t = TestRepo::new();
    let scratch = scratch_parent(&t);
    let src = t.path("src");
    std::fs::create_dir_all(src.join("sub")).unwrap();
    std::fs::write(src.join("a.txt"), b"hello\n").unwrap();
    std::fs::write(src.join("sub/b.bin"), random_bytes(3, 300_000)).unwrap();
    t.ok(&["backup", path_str(&src)]);
    let d = passed(&drill(&t, &scratch, &["--require", "**/sub/b.bin"]));
    assert_eq!(d["kind"], "files");
    assert_eq!(figure(&d, "files"), 2);
    assert_eq!(figure(&d, "bytes"), 300_006);
    let (_, line) = failed(&drill(&t, &scratch, &["--require", "**/missing.conf"]));
    assert!(
        line.contains("no file matches --require \"**/missing.conf\""),
        "{line}"
    );

    // A tarball: every member read; one cut short fails.
    let tarball = t.dir.path().join("site.tar.gz");
    run_tool(
        "tar",
        &["-czf", path_str(&tarball), "-C", path_str(&src), "."],
    );
    t.ok(&["backup", path_str(&tarball)]);
    let path = ["--path", path_str(&tarball)];
    let d = passed(&drill(&t, &scratch, &path));
    assert_eq!(d["kind"], "tar");
    assert_eq!(figure(&d, "member bytes"), 300_006);
    let bytes = std::fs::read(&tarball).unwrap();
    let cut = t.dir.path().join("cut.tar.gz");
    std::fs::write(&cut, &bytes[..bytes.len() / 2]).unwrap();
    let cat = ["cat", path_str(&cut)];
    assert_success(&backup_command(&t, "cut.tar.gz", &cat), &["backup cut"]);
    let (_, line) = failed(&drill(&t, &scratch, &["--path", "/cut.tar.gz"]));
    assert!(line.contains("the tarball does not read back"), "{line}");

    // Not enough space: one line, nothing recorded, nothing left behind.
    let before = list(&t, &[]).len();
    let out = t
        .command()
        .args([
            "drill",
            "--scratch",
            path_str(&scratch),
            "--path",
            path_str(&src),
        ])
        .env("CAIRN_FAILPOINT", "drill-no-space")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let err = stderr(&out);
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(err.contains("not enough space for the drill"), "{err}");
    assert_eq!(list(&t, &[]).len(), before);
    assert!(
        entries(&scratch).is_empty(),
        "scratch left: {:?}",
        entries(&scratch)
    );
}

#[test]
fn a_damaged_pack_fails_the_drill_at_restore_and_names_the_file() {
    let t = TestRepo::new();
    let scratch = scratch_parent(&t);
    let src = t.path("data");
    std::fs::write(src.join("ledger.bin"), random_bytes(5, 2_000_000)).unwrap();
    t.ok(&["backup", path_str(&src)]);
    // The largest pack holds the file's data; damage it in the middle.
    let mut packs: Vec<(u64, PathBuf)> = walk_files(&t.repo.join("packs"))
        .into_iter()
        .map(|(_, p)| (std::fs::metadata(&p).unwrap().len(), p))
        .collect();
    packs.sort();
    let (len, pack) = packs.pop().unwrap();
    let mut bytes = std::fs::read(&pack).unwrap();
    bytes[len as usize / 2] ^= 0x55;
    std::fs::set_permissions(&pack, std::fs::Permissions::from_mode(0o600)).unwrap();
    std::fs::write(&pack, &bytes).unwrap();
    let (d, line) = failed(&drill(&t, &scratch, &[]));
    assert!(
        line.contains("restore failed") && line.contains("ledger.bin"),
        "{line}"
    );
    assert!(d["figures"].as_array().unwrap().is_empty(), "{d}");
}

#[test]
fn a_profile_runs_the_drill_as_a_step() {
    let t = TestRepo::new();
    let src = t.path("src");
    std::fs::write(src.join("a.txt"), b"x").unwrap();
    let metrics = t.dir.path().join("m.prom");
    let cfg = t.dir.path().join("cairn.toml");
    std::fs::write(
        &cfg,
        format!(
            "[profile.p]\nrepository = {:?}\npassword-file = {:?}\ncache-dir = {:?}\nmetrics-file = {:?}\n\
             run = [\"backup\", \"drill --max-shrink 10%\"]\n\n[[profile.p.source]]\npaths = [{:?}]\n",
            path_str(&t.repo),
            path_str(&t.password_file),
            path_str(&t.cache),
            path_str(&metrics),
            path_str(&src)
        ),
    )
    .unwrap();
    let out = t
        .command()
        .env_remove("CAIRN_REPOSITORY")
        .env_remove("CAIRN_PASSWORD_FILE")
        .args(["--config", path_str(&cfg), "--profile", "p", "run"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        stdout.contains("== cairn drill --max-shrink 10%"),
        "{stdout}"
    );
    assert!(stdout.contains("files): passed"), "{stdout}");
    assert_eq!(list(&t, &[]).len(), 1);
    let prom = std::fs::read_to_string(&metrics).unwrap();
    assert!(
        prom.contains("cairn_last_exit_code{command=\"drill\"")
            && prom.contains("cairn_drill_passed{"),
        "{prom}"
    );
}

#[test]
fn an_interrupted_drill_stops_its_server_removes_its_scratch_and_records_nothing() {
    assert!(
        Redis::available(),
        "redis tools missing: run scripts/setup.sh"
    );
    let redis = Redis::start(None);
    redis.query(&["SET", "k", "v"]);
    let t = TestRepo::new();
    let scratch = scratch_parent(&t);
    let port = redis.port.to_string();
    let rdb = ["redis-cli", "-p", &port, "--rdb", "-"];
    assert_success(&backup_command(&t, "dump.rdb", &rdb), &["backup dump.rdb"]);
    let (child, server, signals) = start_drill_paused_at_server(&t, &scratch);
    // SAFETY: kill has no memory-safety preconditions.
    unsafe { libc::kill(child.id() as i32, libc::SIGINT) };
    std::fs::write(signals.join("drill-server-up.go"), b"").unwrap();
    let out = finish_with_timeout(child, "interrupted drill", COMMAND_TIMEOUT_SECS);
    assert_eq!(out.status.code(), Some(130), "{}", stderr(&out));
    assert!(
        !Path::new(&format!("/proc/{server}")).exists(),
        "redis-server outlived the interrupted drill"
    );
    assert!(
        entries(&scratch).is_empty(),
        "scratch left: {:?}",
        entries(&scratch)
    );
    assert!(
        list(&t, &[]).is_empty(),
        "an interrupted drill records nothing"
    );
}

/// Starts `cairn drill` and waits until its verification server is up:
/// returns the drill, the server's pid and the failpoint directory (write
/// `drill-server-up.go` there to let the drill go on).
fn start_drill_paused_at_server(t: &TestRepo, scratch: &Path) -> (Child, u32, PathBuf) {
    let signals = t.path("failpoints");
    let child = spawn_paused(
        t.command()
            .args(["drill", "--scratch", path_str(scratch)])
            .stdout(Stdio::piped())
            .stderr(Stdio::piped()),
        &signals,
        "drill-server-up",
    );
    let server = server_under(scratch).expect("the drill's redis-server runs");
    (child, server, signals)
}
