//! `--metrics-file`: after `backup`, `forget`, `prune`, `check` and `drill`, record
//! the run in a Prometheus textfile (the metrics are listed in
//! `docs/monitoring.md`). Commands report their results here with the
//! `note_*` calls; `cli::execute` calls `write` once the command has finished,
//! whatever its outcome, so that a failure is visible as an exit code.

use super::args::{tag_list, Cli, Command};
use cairn::ops::metrics::TextFile;
use std::sync::Mutex;
use std::time::{Instant, SystemTime, UNIX_EPOCH};

/// What the finished command reported, beyond its exit code.
#[derive(Default)]
struct Report {
    backup: Option<BackupTotals>,
    check_errors: Option<u64>,
    check_damaged_snapshots: Option<u64>,
    forget_removed: Option<u64>,
    prune_bytes_freed: Option<u64>,
    /// `drill`: per drill, its source, whether it passed, its seconds.
    drills: Vec<(String, bool, f64)>,
}

/// Summed over the snapshots of one run (a profile writes several).
#[derive(Default)]
struct BackupTotals {
    snapshots: u64,
    bytes_processed: u64,
    bytes_added: u64,
    bytes_added_packed: u64,
    files_new: u64,
    files_changed: u64,
    files_unmodified: u64,
}

static REPORT: Mutex<Option<Report>> = Mutex::new(None);

fn with_report(f: impl FnOnce(&mut Report)) {
    let mut guard = REPORT.lock().unwrap_or_else(|e| e.into_inner());
    f(guard.get_or_insert_with(Report::default));
}

pub(crate) fn note_backup(outcome: &cairn::BackupOutcome) {
    let s = &outcome.snapshot.summary;
    with_report(|r| {
        let t = r.backup.get_or_insert_with(BackupTotals::default);
        t.snapshots += 1;
        t.bytes_processed += s.total_bytes_processed;
        t.bytes_added += s.data_added;
        t.bytes_added_packed += s.data_added_packed;
        t.files_new += s.files_new;
        t.files_changed += s.files_changed;
        t.files_unmodified += s.files_unmodified;
    });
}

pub(crate) fn note_check(report: &cairn::CheckReport) {
    with_report(|r| {
        r.check_errors = Some(report.problems.len() as u64 + report.problems_unlisted);
        r.check_damaged_snapshots = Some(report.damaged_snapshots.len() as u64);
    });
}

pub(crate) fn note_forget(outcome: &cairn::ForgetOutcome) {
    with_report(|r| r.forget_removed = Some(outcome.removed.len() as u64));
}

pub(crate) fn note_prune(outcome: &cairn::PruneOutcome) {
    with_report(|r| r.prune_bytes_freed = Some(outcome.bytes_freed()));
}

pub(crate) fn note_drill(source: &str, passed: bool, seconds: f64) {
    with_report(|r| r.drills.push((source.to_string(), passed, seconds)));
}

/// When the command started; taken before it runs.
pub(crate) struct Started {
    wall: SystemTime,
    clock: Instant,
}

pub(crate) fn start() -> Started {
    // A step of `cairn run` must not inherit its predecessor's results.
    *REPORT.lock().unwrap_or_else(|e| e.into_inner()) = None;
    Started {
        wall: SystemTime::now(),
        clock: Instant::now(),
    }
}

fn seconds(t: SystemTime) -> f64 {
    t.duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs_f64())
        .unwrap_or(0.0)
}

/// The command name and the labels of its series: `command`, `host`,
/// `tags` (sorted, comma-separated), `profile`, `repository`. `None` for
/// commands that write no metrics.
fn labels(cli: &Cli) -> Option<Vec<(&'static str, String)>> {
    let profile = cli.loaded.as_ref();
    let profile_host = profile.and_then(|p| p.host.clone());
    let (command, host, mut tags) = match &cli.command {
        Command::Backup(args) => (
            "backup",
            super::profile::backup_host(cli, &args.host),
            super::profile::backup_tags(cli, &args.tags),
        ),
        Command::Forget(_) => ("forget", profile_host, profile_tags(cli)),
        Command::Prune(_) => ("prune", profile_host, profile_tags(cli)),
        Command::Check(_) => ("check", profile_host, profile_tags(cli)),
        Command::Drill(args) if !args.list => ("drill", profile_host, profile_tags(cli)),
        _ => return None,
    };
    tags.sort();
    tags.dedup();
    let repository = cli
        .repo
        .as_ref()
        .map(|r| std::path::absolute(r).unwrap_or_else(|_| r.clone()))
        .map(|r| r.display().to_string())
        .unwrap_or_default();
    Some(vec![
        ("command", command.to_string()),
        (
            "host",
            host.unwrap_or_else(|| cairn::sys::hostname().to_string()),
        ),
        ("tags", tags.join(",")),
        (
            "profile",
            profile.map(|p| p.name.clone()).unwrap_or_default(),
        ),
        ("repository", repository),
    ])
}

fn profile_tags(cli: &Cli) -> Vec<String> {
    cli.loaded
        .as_ref()
        .map(|p| tag_list(&p.tags))
        .unwrap_or_default()
}

/// Counts snapshots and pack bytes from the backend's listing: no password
/// and no index needed, so this works after a failed run too.
fn repository_totals(cli: &Cli) -> Option<(u64, u64, u64)> {
    use cairn::Backend as _;
    let backend = cairn::LocalBackend::new(cli.repo.as_ref()?);
    if !backend.exists().ok()? {
        return None;
    }
    let snapshots = backend.list(cairn::FileKind::Snapshot).ok()?.len() as u64;
    let packs = backend.list(cairn::FileKind::Pack).ok()?;
    let pack_bytes = packs.iter().map(|(_, size)| size).sum();
    Some((snapshots, packs.len() as u64, pack_bytes))
}

/// Records the finished command in `--metrics-file`, if one is set and the
/// command is one that writes metrics. Never changes the exit code: a
/// problem writing the file is a warning (the missing update shows up as a
/// stale `cairn_last_success_timestamp_seconds`).
pub(crate) fn write(cli: &Cli, code: i32, started: Started) {
    let report = REPORT
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .take()
        .unwrap_or_default();
    let Some(path) = cli.metrics_file.as_ref() else {
        return;
    };
    let Some(owned) = labels(cli) else { return };
    let run: Vec<(&str, &str)> = owned.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let repository: Vec<(&str, &str)> = run
        .iter()
        .filter(|(k, _)| *k == "repository")
        .copied()
        .collect();
    let totals = repository_totals(cli);
    let now = seconds(SystemTime::now());
    let result = cairn::ops::metrics::update_file(path, |f: &mut TextFile| {
        let g = "gauge";
        f.set(
            "cairn_last_run_timestamp_seconds",
            "When the last run of this command finished (Unix time).",
            g,
            &run,
            now,
        );
        f.set(
            "cairn_last_exit_code",
            "Exit code of the last run of this command (0 = success).",
            g,
            &run,
            f64::from(code),
        );
        f.set(
            "cairn_duration_seconds",
            "How long the last run of this command took.",
            g,
            &run,
            started.clock.elapsed().as_secs_f64(),
        );
        if code == 0 {
            f.set(
                "cairn_last_success_timestamp_seconds",
                "When this command last finished with exit code 0 (Unix time).",
                g,
                &run,
                now,
            );
            f.set(
                "cairn_last_success_start_timestamp_seconds",
                "When the last successful run of this command started (Unix time).",
                g,
                &run,
                seconds(started.wall),
            );
        }
        if let Some(b) = &report.backup {
            for (name, help, value) in [
                (
                    "cairn_backup_snapshots_written",
                    "Snapshots the last backup run wrote.",
                    b.snapshots,
                ),
                (
                    "cairn_backup_bytes_processed",
                    "Bytes of file content the last backup read.",
                    b.bytes_processed,
                ),
                (
                    "cairn_backup_bytes_added",
                    "Plaintext bytes of new blobs the last backup added.",
                    b.bytes_added,
                ),
                (
                    "cairn_backup_bytes_added_packed",
                    "Bytes the last backup added to pack files (compressed, sealed).",
                    b.bytes_added_packed,
                ),
                (
                    "cairn_backup_files_new",
                    "Files the last backup found new.",
                    b.files_new,
                ),
                (
                    "cairn_backup_files_changed",
                    "Files the last backup found changed.",
                    b.files_changed,
                ),
                (
                    "cairn_backup_files_unmodified",
                    "Files the last backup found unmodified.",
                    b.files_unmodified,
                ),
            ] {
                f.set(name, help, g, &run, value as f64);
            }
        }
        if let Some(n) = report.check_errors {
            f.set(
                "cairn_check_errors",
                "Problems the last check found (0 = clean).",
                g,
                &run,
                n as f64,
            );
        }
        if let Some(n) = report.check_damaged_snapshots {
            f.set(
                "cairn_check_damaged_snapshots",
                "Snapshots the last check found not restorable in full.",
                g,
                &run,
                n as f64,
            );
        }
        if let Some(n) = report.forget_removed {
            f.set(
                "cairn_forget_snapshots_removed",
                "Snapshots the last forget removed.",
                g,
                &run,
                n as f64,
            );
        }
        if let Some(n) = report.prune_bytes_freed {
            f.set(
                "cairn_prune_bytes_freed",
                "Bytes the last prune freed.",
                g,
                &run,
                n as f64,
            );
        }
        for (source, passed, seconds) in &report.drills {
            let mut labels = vec![("source", source.as_str())];
            labels.extend(repository.iter().copied());
            f.set(
                "cairn_drill_last_run_timestamp_seconds",
                "When the last drill of this source finished (Unix time).",
                g,
                &labels,
                now,
            );
            f.set(
                "cairn_drill_duration_seconds",
                "How long the last drill of this source took (restore and verify).",
                g,
                &labels,
                *seconds,
            );
            f.set(
                "cairn_drill_passed",
                "Whether the last drill of this source passed (1) or failed (0).",
                g,
                &labels,
                f64::from(u8::from(*passed)),
            );
            if *passed {
                f.set(
                    "cairn_drill_last_success_timestamp_seconds",
                    "When a drill of this source last passed (Unix time).",
                    g,
                    &labels,
                    now,
                );
            }
        }
        if let Some((snapshots, packs, pack_bytes)) = totals {
            f.set(
                "cairn_snapshots_total",
                "Snapshots in the repository.",
                g,
                &repository,
                snapshots as f64,
            );
            f.set(
                "cairn_repository_packs",
                "Pack files in the repository.",
                g,
                &repository,
                packs as f64,
            );
            f.set(
                "cairn_repository_pack_bytes",
                "Bytes of pack files in the repository.",
                g,
                &repository,
                pack_bytes as f64,
            );
        }
    });
    match result {
        Ok(rejected) => {
            for line in rejected {
                eprintln!(
                    "cairn: warning: {}: dropped a line that is not Prometheus text format: {line}",
                    path.display()
                );
            }
        }
        Err(e) => eprintln!("cairn: warning: metrics not written: {e}"),
    }
}
