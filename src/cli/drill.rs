//! `cairn drill`: restore drills (`cairn::drill`), their listing
//! (`--list`) and their gauges in `--metrics-file`.

use super::args::{Cli, FilterArgs};
use super::output::{emit, emit_text_even_quiet, human_bytes, term_safe};
use super::repo::{lock, open, warn_all};
use anyhow::anyhow;
use cairn::{DrillId, DrillKind, DrillRecord};
use clap::Args;
use std::path::PathBuf;

#[derive(Args)]
pub(crate) struct DrillArgs {
    /// The snapshot to drill (default: the latest snapshot of each source,
    /// host and paths, matching the filters).
    pub(crate) snapshot: Option<String>,
    /// The verifier: postgres, redis, tar or files (default: from the
    /// snapshot's dump command or file name).
    #[arg(long, value_name = "KIND", value_parser = parse_kind)]
    pub(crate) kind: Option<DrillKind>,
    /// Also run this shell command once the built-in checks pass, with the
    /// server still up; a non-zero exit fails the drill (repeatable). It
    /// gets CAIRN_DRILL_DIR, and PGHOST/PGPORT/PGUSER/PGDATABASE or
    /// CAIRN_DRILL_REDIS_SOCKET.
    #[arg(long = "verify-command", value_name = "CMD")]
    pub(crate) verify_commands: Vec<String>,
    /// Leave the scratch directory in place (servers stopped) and print it.
    #[arg(long)]
    pub(crate) keep: bool,
    /// Fail when a table's rows (a key type's keys, the files) dropped by
    /// more than this since the previous passed drill of the source, e.g.
    /// 10%.
    #[arg(long, value_name = "PCT", value_parser = parse_percent)]
    pub(crate) max_shrink: Option<f64>,
    /// A glob of files (or tarball members) that must exist, e.g.
    /// 'etc/nginx/**' (repeatable; files and tar drills).
    #[arg(long = "require", value_name = "GLOB")]
    pub(crate) require: Vec<String>,
    /// Where to make the scratch directory (default: $TMPDIR or /tmp).
    #[arg(long, value_name = "DIR")]
    pub(crate) scratch: Option<PathBuf>,
    /// List the drills recorded in the repository instead.
    #[arg(long)]
    pub(crate) list: bool,
    #[command(flatten)]
    pub(crate) filter: FilterArgs,
}

fn parse_kind(text: &str) -> Result<DrillKind, String> {
    DrillKind::parse(text).map_err(|e| e.to_string())
}

fn parse_percent(text: &str) -> Result<f64, String> {
    let number = text.strip_suffix('%').unwrap_or(text).trim();
    match number.parse::<f64>() {
        Ok(p) if (0.0..=100.0).contains(&p) => Ok(p),
        _ => Err(format!("{text:?} is not a percentage from 0 to 100")),
    }
}

/// A record as `--json` shows it: its fields plus its id.
fn record_json(id: &DrillId, record: &DrillRecord, kept: Option<&PathBuf>) -> serde_json::Value {
    let mut value = serde_json::to_value(record).unwrap_or_default();
    if let Some(map) = value.as_object_mut() {
        map.insert("id".into(), id.to_hex().into());
        map.insert("short_id".into(), id.short().into());
        map.insert("passed".into(), record.passed().into());
        if let Some(dir) = kept {
            map.insert("kept".into(), dir.display().to_string().into());
        }
    }
    value
}

pub(crate) fn drill(cli: &Cli, args: &DrillArgs) -> anyhow::Result<i32> {
    if args.list {
        return list(cli, args);
    }
    let repo = open(cli)?;
    let lock = lock(cli, &repo)?;
    let mut repo = repo.load_index()?;
    let filter = args.filter.filter();
    let chosen = match &args.snapshot {
        Some(selector) => vec![repo.find_snapshot(selector, &filter)?],
        None => cairn::engine::drill::latest_per_source(repo.snapshots(&filter)?),
    };
    warn_all(cli, &mut repo);
    if chosen.is_empty() {
        return Err(anyhow!("no snapshot matches: nothing to drill"));
    }
    let options = cairn::DrillOptions {
        kind: args.kind,
        verify_commands: args.verify_commands.clone(),
        keep: args.keep,
        max_shrink_percent: args.max_shrink,
        scratch_parent: args.scratch.clone(),
        require: args.require.clone(),
    };
    let mut outcomes = Vec::new();
    let mut not_run = 0;
    for (id, snapshot) in &chosen {
        let started = std::time::Instant::now();
        let outcome = match cairn::drill(&mut repo, &lock, *id, snapshot, &options) {
            Ok(outcome) => outcome,
            // An interrupt stops every drill; a drill that cannot run
            // (no PostgreSQL, no space) does not stop the other sources'.
            Err(e) if chosen.len() == 1 || e.kind() == cairn::ErrorKind::Interrupted => {
                return Err(e.into())
            }
            Err(e) => {
                eprintln!(
                    "cairn: error: drill of snapshot {} ({}) did not run: {}",
                    id.short(),
                    term_safe(&cairn::engine::drill::source_of(snapshot)),
                    term_safe(&e.to_string())
                );
                not_run += 1;
                continue;
            }
        };
        warn_all(cli, &mut repo);
        note_drill(&outcome, started.elapsed().as_secs_f64());
        if !cli.quiet {
            for dir in &outcome.swept {
                eprintln!(
                    "cairn: warning: removed {}, left by a drill that did not finish",
                    dir.display()
                );
            }
        }
        if let Some(why) = &outcome.record.failure {
            eprintln!(
                "cairn: error: drill of snapshot {} ({}) failed: {}",
                id.short(),
                term_safe(&outcome.record.source),
                term_safe(why)
            );
        }
        outcomes.push(outcome);
    }
    emit(
        cli,
        || {
            Ok(outcomes
                .iter()
                .map(|o| record_json(&o.id, &o.record, o.kept.as_ref()))
                .collect::<Vec<_>>())
        },
        || {
            for o in &outcomes {
                print_record(&o.record, true);
                if let Some(dir) = &o.kept {
                    println!("  scratch kept in {}", dir.display());
                }
            }
            Ok(())
        },
    )?;
    let failed = outcomes.iter().filter(|o| !o.record.passed()).count() + not_run;
    // The audit entry's figures: the report's verification-cadence check
    // looks for the last drill that passed.
    super::audit::note_count(
        "drills_passed",
        (outcomes.len() - failed.saturating_sub(not_run)) as u64,
    );
    super::audit::note_count("drills_failed", failed as u64);
    if failed > 0 {
        eprintln!(
            "cairn: error: {failed} of {} drill(s) failed or did not run",
            chosen.len()
        );
        return Ok(1);
    }
    Ok(0)
}

fn print_record(r: &DrillRecord, figures: bool) {
    let verdict = if r.passed() { "passed" } else { "FAILED" };
    println!(
        "{}  drill of snapshot {} ({}, {}): {verdict}; restored {} in {:.1} s, verified in {:.1} s",
        r.started.format("%Y-%m-%d %H:%M:%S"),
        r.snapshot.short(),
        term_safe(&r.source),
        r.kind.name(),
        human_bytes(r.bytes),
        r.restore_seconds,
        r.verify_seconds
    );
    if figures {
        for f in &r.figures {
            println!("  {:<40} {:>12}", term_safe(&f.name), f.count);
        }
    }
    if let Some(why) = &r.failure {
        println!("  failure: {}", term_safe(why));
    }
}

fn list(cli: &Cli, args: &DrillArgs) -> anyhow::Result<i32> {
    let filter = args.filter.filter();
    if !filter.tags.is_empty() {
        return Err(anyhow!(
            "drill --list selects by --host and --path: drill records carry no tags"
        ));
    }
    let mut repo = open(cli)?;
    let mut records = repo.drill_records()?;
    warn_all(cli, &mut repo);
    // The filters apply to the drilled snapshot's source: `host:paths`.
    records.retain(|(_, r)| {
        let (host, paths) = r.source.split_once(':').unwrap_or(("", &r.source));
        (filter.hosts.is_empty() || filter.hosts.iter().any(|h| h == host))
            && filter
                .paths
                .iter()
                .all(|p| paths.split(',').any(|q| q == p))
    });
    emit_text_even_quiet(
        cli,
        || {
            Ok(records
                .iter()
                .map(|(id, r)| record_json(id, r, None))
                .collect::<Vec<_>>())
        },
        || {
            if records.is_empty() {
                println!("no drills recorded");
            }
            for (_, r) in &records {
                print_record(r, cli.verbose > 0);
            }
            Ok(())
        },
    )?;
    Ok(0)
}

/// Where a finished drill is reported beyond its output: its gauges, per
/// source, for `--metrics-file` (written by `metrics::write` once the
/// command ends), and the snapshot it read in the command's audit entry
/// (whose pass and fail counts the caller adds).
fn note_drill(outcome: &cairn::DrillOutcome, seconds: f64) {
    let record = &outcome.record;
    super::audit::note_read(&record.snapshot);
    super::metrics::note_drill(&record.source, record.passed(), seconds);
}
