//! The `postgres` verifier: a throwaway cluster (`initdb`) in the scratch
//! directory, listening only on a unix socket there, the dump loaded
//! (`psql` for plain SQL, `pg_restore` for custom, directory and tar
//! formats), then every table's row count and a checksum of a sample of
//! its rows. The server runs as an unprivileged user when cairn is root
//! (PostgreSQL refuses to run as root).

use super::child::{self, Server, Stdout};
use super::Verified;
use crate::context::Context;
use crate::error::{Error, ErrorKind, Result};
use crate::format::drill::{bounded_text, Figure, DRILL_FIGURES_MAX};
use crate::sys::process::Signal;
use std::ffi::OsStr;
use std::io::{Read, Seek, SeekFrom};
use std::os::unix::fs::DirBuilderExt;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::Command;

/// The port only names the socket file: the server has no TCP listener.
const PORT: &str = "5432";
/// The database a dump without `CREATE DATABASE` is loaded into.
const DATABASE: &str = "drill";
/// Rows per table whose text goes into the sample checksum.
const SAMPLE_ROWS: u32 = 100;
/// The line pg_dump ends a plain dump with; a dump without it was cut.
const PLAIN_TRAILER: &[u8] = b"-- PostgreSQL database dump complete";

/// The programs the verifier runs, all from one installation.
const PROGRAMS: [&str; 4] = ["initdb", "postgres", "psql", "pg_restore"];

fn has_programs(dir: &Path) -> bool {
    PROGRAMS.iter().all(|p| dir.join(p).is_file())
}

/// The directory holding all of `PROGRAMS`: one on PATH, else the newest
/// `/usr/lib/postgresql/N/bin` (Debian's layout, where only the clients
/// are on PATH).
pub(super) fn bin_dir() -> Result<PathBuf> {
    if let Some(path) = std::env::var_os("PATH") {
        for dir in std::env::split_paths(&path) {
            if has_programs(&dir) {
                return Ok(dir);
            }
        }
    }
    let mut versions: Vec<(u32, PathBuf)> = std::fs::read_dir("/usr/lib/postgresql")
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| {
            let v = e.file_name().to_str()?.parse::<u32>().ok()?;
            let bin = e.path().join("bin");
            has_programs(&bin).then_some((v, bin))
        })
        .collect();
    versions.sort();
    versions.pop().map(|(_, bin)| bin).ok_or_else(|| {
        Error::new(
            ErrorKind::Command,
            "the postgres drill needs PostgreSQL's initdb, postgres, psql and pg_restore: none found on PATH or in /usr/lib/postgresql",
        )
    })
}

/// The user the server runs as: an unprivileged one (`nobody`) when cairn
/// is root, else cairn's own.
pub(super) fn server_user() -> Result<Option<(u32, u32)>> {
    if !crate::sys::is_root() {
        return Ok(None);
    }
    crate::sys::process::user_ids("nobody").map(Some).ok_or_else(|| {
        Error::new(
            ErrorKind::Command,
            "running as root, the postgres drill runs the server as user nobody, which does not exist",
        )
    })
}

struct Cluster<'a> {
    ctx: &'a Context,
    bin: PathBuf,
    socket_dir: PathBuf,
}

impl Cluster<'_> {
    fn client(&self, program: &str) -> Command {
        let mut c = child::command(self.bin.join(program), Signal::Kill);
        c.arg("-h")
            .arg(&self.socket_dir)
            .args(["-p", PORT, "-U", "postgres"]);
        c
    }

    fn psql(&self, db: &str) -> Command {
        let mut c = self.client("psql");
        c.args(["-X", "-q", "-d", db]);
        c
    }

    /// Runs a query; its rows, NUL-separated, columns tab-separated.
    fn query(&self, db: &str, sql: &str) -> Result<Vec<String>> {
        let mut c = self.psql(db);
        c.args(["-v", "ON_ERROR_STOP=1", "-A", "-t", "-0", "-c", sql]);
        let done = child::run(self.ctx, c, "psql", Stdout::Keep)?;
        if !done.status.success() {
            return Err(Error::new(
                ErrorKind::Command,
                format!("psql query failed: {}", done.first_line(&is_error)),
            ));
        }
        Ok(String::from_utf8_lossy(&done.stdout)
            .split('\0')
            .map(|r| r.trim_end_matches('\n').to_string())
            .filter(|r| !r.is_empty())
            .collect())
    }
}

fn is_error(line: &str) -> bool {
    line.contains("ERROR:") || line.contains("FATAL:") || line.contains("error:")
}

/// A plain dump's error that says nothing about the backup: the dump's
/// owners and grantees are roles of the production server, which the
/// throwaway cluster does not have, and a `pg_dumpall` dump creates the
/// roles of that server, among them the superuser the throwaway cluster
/// already has.
fn is_missing_role(line: &str) -> bool {
    line.contains("ERROR:")
        && line.contains("role \"")
        && (line.ends_with("does not exist") || line.ends_with("already exists"))
}

pub(super) fn verify(
    ctx: &Context,
    scratch: &Path,
    dump: &Path,
    user: Option<(u32, u32)>,
    commands: &[String],
) -> Result<Verified> {
    let bin = bin_dir()?;
    let pg = scratch.join("pg");
    std::fs::DirBuilder::new()
        .mode(0o700)
        .create(&pg)
        .map_err(|e| Error::io(format!("cannot create {}", pg.display()), e))?;
    if let Some((uid, gid)) = user {
        std::os::unix::fs::chown(&pg, Some(uid), Some(gid))
            .map_err(|e| Error::io(format!("cannot hand {} over", pg.display()), e))?;
    }
    let as_server = |program: &str| {
        let mut c = child::command(bin.join(program), Signal::Quit);
        if let Some((uid, gid)) = user {
            c.uid(uid).gid(gid);
        }
        c.current_dir(&pg);
        c
    };
    let data = pg.join("data");
    let mut initdb = as_server("initdb");
    initdb
        .args([
            "-A",
            "trust",
            "-U",
            "postgres",
            "-E",
            "UTF8",
            "--locale=C",
            "--no-sync",
            "-D",
        ])
        .arg(&data);
    let done = child::run(ctx, initdb, "initdb", Stdout::Discard)?;
    if !done.status.success() {
        return Err(Error::new(
            ErrorKind::Command,
            format!("initdb failed: {}", done.first_line(&is_error)),
        ));
    }
    let mut postgres = as_server("postgres");
    postgres
        .arg("-D")
        .arg(&data)
        .args(["-p", PORT, "-k"])
        .arg(&pg)
        .args(["-c", "listen_addresses=", "-c", "fsync=off"])
        .args(["-c", "full_page_writes=off", "-c", "synchronous_commit=off"]);
    let log = scratch.join("postgres.log");
    let mut server = Server::start(postgres, "postgres", Signal::Quit, &log)?;
    let cluster = Cluster {
        ctx,
        bin: bin.clone(),
        socket_dir: pg.clone(),
    };
    server.wait_ready(ctx, &log, &is_error, &mut || {
        pg.join(format!(".s.PGSQL.{PORT}")).exists()
            && cluster.query("postgres", "SELECT 1").is_ok()
    })?;
    cluster.query("postgres", &format!("CREATE DATABASE {DATABASE}"))?;
    if let Some(failure) = load(&cluster, dump)? {
        return Ok(Verified {
            figures: Vec::new(),
            failure: Some(failure),
        });
    }
    let figures = figures(&cluster, scratch)?;
    let env: [(&str, &OsStr); 5] = [
        ("CAIRN_DRILL_DIR", dump.as_os_str()),
        ("PGHOST", pg.as_os_str()),
        ("PGPORT", OsStr::new(PORT)),
        ("PGUSER", OsStr::new("postgres")),
        ("PGDATABASE", OsStr::new(DATABASE)),
    ];
    let failure = child::verify_commands(ctx, commands, &env)?;
    drop(server);
    Ok(Verified { figures, failure })
}

#[derive(Debug, PartialEq, Eq)]
enum DumpFormat {
    Plain,
    /// Custom, directory or tar: pg_restore's.
    Archive,
}

fn dump_format(dump: &Path) -> Result<DumpFormat> {
    if dump.is_dir() {
        return Ok(DumpFormat::Archive);
    }
    let mut head = Vec::new();
    std::fs::File::open(dump)
        .and_then(|f| f.take(512).read_to_end(&mut head))
        .map_err(|e| Error::io(format!("cannot read {}", dump.display()), e))?;
    let tar = head.len() >= 262 && &head[257..262] == b"ustar";
    Ok(if head.starts_with(b"PGDMP") || tar {
        DumpFormat::Archive
    } else {
        DumpFormat::Plain
    })
}

/// Loads the dump; the failure (the loader's first error line), if any.
fn load(cluster: &Cluster<'_>, dump: &Path) -> Result<Option<String>> {
    match dump_format(dump)? {
        DumpFormat::Archive => {
            let mut c = cluster.client("pg_restore");
            c.args([
                "-d",
                DATABASE,
                "--no-owner",
                "--no-privileges",
                "--exit-on-error",
            ])
            .arg(dump);
            let done = child::run(cluster.ctx, c, "pg_restore", Stdout::Discard)?;
            Ok((!done.status.success())
                .then(|| format!("pg_restore failed: {}", done.first_line(&is_error))))
        }
        DumpFormat::Plain => {
            // Errors do not stop the load, so that a missing role (see
            // `is_missing_role`) does not end it; any other error fails
            // the drill with its line.
            let mut c = cluster.psql(DATABASE);
            c.args(["-v", "ON_ERROR_STOP=0", "-f"]).arg(dump);
            let done = child::run(cluster.ctx, c, "psql", Stdout::Discard)?;
            let first = done
                .stderr
                .lines()
                .map(str::trim)
                .find(|l| is_error(l) && !is_missing_role(l));
            if let Some(line) = first {
                return Ok(Some(format!("psql failed to load the dump: {line}")));
            }
            if !done.status.success() {
                return Ok(Some(format!(
                    "psql failed to load the dump: {}",
                    done.first_line(&is_error)
                )));
            }
            if from_pg_dump(dump)? && !ends_with_trailer(dump)? {
                return Ok(Some(
                    "the dump ends before pg_dump's last line (\"-- PostgreSQL database dump complete\"): it was cut short".into(),
                ));
            }
            Ok(None)
        }
    }
}

fn read_at(dump: &Path, from_end: bool) -> Result<Vec<u8>> {
    let mut f = std::fs::File::open(dump)
        .map_err(|e| Error::io(format!("cannot read {}", dump.display()), e))?;
    if from_end {
        let len = f.metadata().map(|m| m.len()).unwrap_or(0);
        f.seek(SeekFrom::Start(len.saturating_sub(4096)))
            .map_err(|e| Error::io(format!("cannot read {}", dump.display()), e))?;
    }
    let mut bytes = Vec::new();
    f.take(4096)
        .read_to_end(&mut bytes)
        .map_err(|e| Error::io(format!("cannot read {}", dump.display()), e))?;
    Ok(bytes)
}

fn from_pg_dump(dump: &Path) -> Result<bool> {
    Ok(read_at(dump, false)?.starts_with(b"--\n-- PostgreSQL database dump"))
}

fn ends_with_trailer(dump: &Path) -> Result<bool> {
    let tail = read_at(dump, true)?;
    Ok(tail
        .windows(PLAIN_TRAILER.len())
        .any(|w| w == PLAIN_TRAILER))
}

/// Row counts and sample checksums of every table of every database the
/// dump loaded into.
fn figures(cluster: &Cluster<'_>, scratch: &Path) -> Result<Vec<Figure>> {
    let databases = cluster.query(
        "postgres",
        "SELECT datname FROM pg_database WHERE datallowconn AND NOT datistemplate ORDER BY 1",
    )?;
    let mut figures = Vec::new();
    for db in databases {
        let tables = cluster.query(
            &db,
            "SELECT format('%I.%I', n.nspname, c.relname) FROM pg_class c \
             JOIN pg_namespace n ON n.oid = c.relnamespace \
             WHERE c.relkind IN ('r', 'p') AND n.nspname <> 'information_schema' \
             AND n.nspname NOT LIKE 'pg\\_%' ORDER BY 1",
        )?;
        if tables.is_empty() {
            continue;
        }
        // One script per database: one psql run, however many tables.
        let mut script = String::new();
        for table in tables.iter().take(DRILL_FIGURES_MAX) {
            script.push_str(&format!(
                "SELECT count(*), (SELECT md5(coalesce(string_agg(r, E'\\n' ORDER BY r), '')) \
                 FROM (SELECT t::text AS r FROM {table} t ORDER BY 1 LIMIT {SAMPLE_ROWS}) s) FROM {table};\n"
            ));
        }
        let file = scratch.join("figures.sql");
        std::fs::write(&file, script)
            .map_err(|e| Error::io(format!("cannot write {}", file.display()), e))?;
        let mut c = cluster.psql(&db);
        c.args(["-v", "ON_ERROR_STOP=1", "-A", "-t", "-0", "-F", " ", "-f"])
            .arg(&file);
        let done = child::run(cluster.ctx, c, "psql", Stdout::Keep)?;
        if !done.status.success() {
            return Err(Error::new(
                ErrorKind::Command,
                format!("counting rows failed: {}", done.first_line(&is_error)),
            ));
        }
        let text = String::from_utf8_lossy(&done.stdout).into_owned();
        let rows = text
            .split('\0')
            .map(|r| r.trim_matches('\n'))
            .filter(|r| !r.is_empty());
        for (table, row) in tables.iter().zip(rows) {
            let (count, sample) = row.split_once(' ').unwrap_or((row, ""));
            let name = if db == DATABASE {
                table.clone()
            } else {
                format!("{db}/{table}")
            };
            figures.push(Figure {
                name: bounded_text(&name),
                count: count.parse().unwrap_or(0),
                sample: Some(sample.to_string()).filter(|s| !s.is_empty()),
            });
        }
        if figures.len() >= DRILL_FIGURES_MAX {
            figures.truncate(DRILL_FIGURES_MAX);
            break;
        }
    }
    Ok(figures)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn missing_roles_are_told_apart_from_other_errors() {
        assert!(is_missing_role(
            "psql:/x/app.sql:30: ERROR:  role \"app_owner\" does not exist"
        ));
        assert!(is_missing_role(
            "psql:/x/all.sql:14: ERROR:  role \"postgres\" already exists"
        ));
        assert!(!is_missing_role(
            "psql:/x/all.sql:20: ERROR:  relation \"orders\" already exists"
        ));
        assert!(!is_missing_role(
            "psql:/x/app.sql:40: ERROR:  relation \"orders\" does not exist"
        ));
    }
}
