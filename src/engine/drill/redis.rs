//! The `redis` verifier: `redis-check-rdb` on the restored file, then a
//! redis-server started on it (a unix socket in the scratch directory, no
//! TCP port, nothing saved), its key count per database and per type.

use super::child::{self, Server, Stdout};
use super::Verified;
use crate::context::Context;
use crate::error::{Error, ErrorKind, Result};
use crate::format::drill::Figure;
use crate::sys::process::Signal;
use std::ffi::OsStr;
use std::path::Path;

/// Counts the keys of the selected database by type in one pass (SCAN
/// inside the server: redis-cli 7.0 has no `--scan --type`). The server
/// is the drill's own, so blocking it while the script runs harms nobody.
const COUNT_TYPES: &str = "local c = {} local cur = '0' \
    repeat local r = redis.call('SCAN', cur, 'COUNT', 1000) cur = r[1] \
    for _, k in ipairs(r[2]) do local t = redis.call('TYPE', k)['ok'] c[t] = (c[t] or 0) + 1 end \
    until cur == '0' \
    local out = {} for t, n in pairs(c) do table.insert(out, t) table.insert(out, n) end \
    return out";

pub(super) fn verify(
    ctx: &Context,
    scratch: &Path,
    rdb: &Path,
    commands: &[String],
) -> Result<Verified> {
    let mut check = child::command("redis-check-rdb", Signal::Kill);
    check.arg(rdb);
    let done = child::run(ctx, check, "redis-check-rdb", Stdout::Keep)?;
    if !done.status.success() {
        // The line after "--- RDB ERROR DETECTED ---" says what is wrong.
        let text = String::from_utf8_lossy(&done.stdout).into_owned();
        let line = text
            .lines()
            .skip_while(|l| !l.contains("RDB ERROR DETECTED"))
            .nth(1)
            .map(str::trim)
            .map(String::from)
            .unwrap_or_else(|| done.first_line(&|l| l.contains("rror")));
        return Ok(Verified {
            figures: Vec::new(),
            failure: Some(format!("redis-check-rdb failed: {line}")),
        });
    }
    let (dir, name) = match (rdb.parent(), rdb.file_name()) {
        (Some(dir), Some(name)) => (dir, name),
        _ => return Err(Error::invalid("the RDB file has no name")),
    };
    let socket = scratch.join("redis.sock");
    let mut server = child::command("redis-server", Signal::Terminate);
    server
        .args(["--port", "0", "--unixsocket"])
        .arg(&socket)
        .args(["--unixsocketperm", "700", "--dir"])
        .arg(dir)
        .arg("--dbfilename")
        .arg(name)
        .args(["--save", "", "--appendonly", "no", "--daemonize", "no"]);
    let log = scratch.join("redis.log");
    let mut server = Server::start(server, "redis-server", Signal::Terminate, &log)?;
    let cli = |args: &[&str]| {
        let mut c = child::command("redis-cli", Signal::Kill);
        c.arg("-s").arg(&socket).args(args);
        c
    };
    server.wait_ready(ctx, &log, &|l| l.contains('#'), &mut || {
        // PING answers LOADING while the file is read.
        child::run(ctx, cli(&["PING"]), "redis-cli", Stdout::Keep)
            .is_ok_and(|d| d.stdout.starts_with(b"PONG"))
    })?;
    // Tests kill the drill here, with the server up.
    crate::failpoint::pause!("drill-server-up");
    let info = child::run(ctx, cli(&["INFO", "keyspace"]), "redis-cli", Stdout::Keep)?;
    if !info.status.success() {
        return Err(Error::new(
            ErrorKind::Command,
            format!("redis-cli INFO failed: {}", info.first_line(&|_| true)),
        ));
    }
    let mut figures = Vec::new();
    // "db0:keys=20508,expires=0,avg_ttl=0"
    for line in String::from_utf8_lossy(&info.stdout).lines() {
        let Some((db, rest)) = line.trim().split_once(':') else {
            continue;
        };
        let Some(keys) = rest
            .split(',')
            .find_map(|kv| kv.strip_prefix("keys="))
            .and_then(|n| n.parse::<u64>().ok())
        else {
            continue;
        };
        figures.push(Figure {
            name: format!("{db} keys"),
            count: keys,
            sample: None,
        });
        let number = db.trim_start_matches("db");
        let done = child::run(
            ctx,
            cli(&["-n", number, "EVAL", COUNT_TYPES, "0"]),
            "redis-cli EVAL",
            Stdout::Keep,
        )?;
        if !done.status.success() {
            return Err(Error::new(
                ErrorKind::Command,
                format!(
                    "counting keys by type failed: {}",
                    done.first_line(&|_| true)
                ),
            ));
        }
        // Alternating lines: type, count.
        let text = String::from_utf8_lossy(&done.stdout).into_owned();
        let lines: Vec<&str> = text.lines().map(str::trim).collect();
        let mut types: Vec<(String, u64)> = lines
            .chunks(2)
            .filter_map(|pair| match pair {
                [kind, count] => Some((kind.to_string(), count.parse().ok()?)),
                _ => None,
            })
            .collect();
        types.sort();
        for (kind, count) in types {
            figures.push(Figure {
                name: format!("{db} {kind}"),
                count,
                sample: None,
            });
        }
    }
    let env: [(&str, &OsStr); 2] = [
        ("CAIRN_DRILL_DIR", dir.as_os_str()),
        ("CAIRN_DRILL_REDIS_SOCKET", socket.as_os_str()),
    ];
    let failure = child::verify_commands(ctx, commands, &env)?;
    drop(server);
    Ok(Verified { figures, failure })
}
