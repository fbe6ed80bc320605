//! The `forget` subcommand's arguments and printing. One library call:
//! `cairn::forget`.

use super::args::{Cli, FilterArgs};
use super::output::snapshot_json;
use super::prune::print_prune;
use super::repo::{lock_exclusive, open, warn_all};
use cairn::format::retention::{parse_tag_list, Count, Duration, GroupBy};
use cairn::{ForgetOptions, Policy, Snapshot, SnapshotId};
use clap::Args;
use std::io::Write;

fn count(s: &str) -> Result<Count, String> {
    Count::parse(s).map_err(|e| e.to_string())
}

fn duration(s: &str) -> Result<Duration, String> {
    Duration::parse(s).map_err(|e| e.to_string())
}

#[derive(Args)]
pub(crate) struct ForgetArgs {
    /// Snapshots to remove (ids, unique prefixes or `latest`); instead of a policy.
    #[arg(value_name = "SNAPSHOT")]
    ids: Vec<String>,
    /// Keep the last N snapshots (`unlimited` or -1: all).
    #[arg(short = 'l', long, value_name = "N", value_parser = count, allow_hyphen_values = true)]
    keep_last: Option<Count>,
    /// Keep the last N hourly snapshots (`unlimited` or -1: all).
    #[arg(short = 'H', long, value_name = "N", value_parser = count, allow_hyphen_values = true)]
    keep_hourly: Option<Count>,
    /// Keep the last N daily snapshots (`unlimited` or -1: all).
    #[arg(short = 'd', long, value_name = "N", value_parser = count, allow_hyphen_values = true)]
    keep_daily: Option<Count>,
    /// Keep the last N weekly (ISO week) snapshots (`unlimited` or -1: all).
    #[arg(short = 'w', long, value_name = "N", value_parser = count, allow_hyphen_values = true)]
    keep_weekly: Option<Count>,
    /// Keep the last N monthly snapshots (`unlimited` or -1: all).
    #[arg(short = 'm', long, value_name = "N", value_parser = count, allow_hyphen_values = true)]
    keep_monthly: Option<Count>,
    /// Keep the last N yearly snapshots (`unlimited` or -1: all).
    #[arg(short = 'y', long, value_name = "N", value_parser = count, allow_hyphen_values = true)]
    keep_yearly: Option<Count>,
    /// Keep snapshots newer than DURATION (e.g. 1y5m7d2h) before the newest snapshot.
    #[arg(long, value_name = "DURATION", value_parser = duration)]
    keep_within: Option<Duration>,
    /// Keep hourly snapshots within DURATION of the newest snapshot.
    #[arg(long, value_name = "DURATION", value_parser = duration)]
    keep_within_hourly: Option<Duration>,
    /// Keep daily snapshots within DURATION of the newest snapshot.
    #[arg(long, value_name = "DURATION", value_parser = duration)]
    keep_within_daily: Option<Duration>,
    /// Keep weekly snapshots within DURATION of the newest snapshot.
    #[arg(long, value_name = "DURATION", value_parser = duration)]
    keep_within_weekly: Option<Duration>,
    /// Keep monthly snapshots within DURATION of the newest snapshot.
    #[arg(long, value_name = "DURATION", value_parser = duration)]
    keep_within_monthly: Option<Duration>,
    /// Keep yearly snapshots within DURATION of the newest snapshot.
    #[arg(long, value_name = "DURATION", value_parser = duration)]
    keep_within_yearly: Option<Duration>,
    /// Keep snapshots having all of these comma-separated tags (repeatable).
    #[arg(long = "keep-tag", value_name = "TAG[,TAG...]")]
    keep_tags: Vec<String>,
    /// Group snapshots by host, paths and/or tags, comma-separated ('' for one
    /// group) [default: host,paths, or the profile's group-by].
    #[arg(short = 'g', long, value_name = "GROUP")]
    group_by: Option<String>,
    #[command(flatten)]
    filter: FilterArgs,
    /// Print what would be removed; remove nothing.
    #[arg(short = 'n', long)]
    dry_run: bool,
    /// Allow an empty policy to remove every snapshot matching --host/--tag/--path.
    #[arg(long)]
    unsafe_allow_remove_all: bool,
    /// Run prune afterwards, with its default limits (a dry run with --dry-run).
    #[arg(long)]
    prune: bool,
}

impl ForgetArgs {
    /// `profile`: its retention policy applies when no ids and no --keep-*
    /// flag are given (flags replace the whole policy, not single rules).
    fn options(
        &self,
        profile: Option<&cairn::ops::profile::Profile>,
    ) -> anyhow::Result<ForgetOptions> {
        let mut policy = Policy {
            last: self.keep_last.unwrap_or_default(),
            hourly: self.keep_hourly.unwrap_or_default(),
            daily: self.keep_daily.unwrap_or_default(),
            weekly: self.keep_weekly.unwrap_or_default(),
            monthly: self.keep_monthly.unwrap_or_default(),
            yearly: self.keep_yearly.unwrap_or_default(),
            within: self.keep_within.unwrap_or_default(),
            within_hourly: self.keep_within_hourly.unwrap_or_default(),
            within_daily: self.keep_within_daily.unwrap_or_default(),
            within_weekly: self.keep_within_weekly.unwrap_or_default(),
            within_monthly: self.keep_within_monthly.unwrap_or_default(),
            within_yearly: self.keep_within_yearly.unwrap_or_default(),
            tags: self.keep_tags.iter().map(|t| parse_tag_list(t)).collect(),
        };
        let retention = profile.and_then(|p| p.retention.as_ref());
        let mut group_by = None;
        if let Some(r) = retention.filter(|_| self.ids.is_empty() && policy.is_empty()) {
            policy = r.policy.clone();
            group_by = r.group_by;
        }
        let group_by = match &self.group_by {
            Some(text) => GroupBy::parse(text)?,
            None => group_by.unwrap_or_default(),
        };
        Ok(ForgetOptions {
            ids: self.ids.clone(),
            policy,
            group_by,
            filter: self.filter.filter(),
            dry_run: self.dry_run,
            unsafe_allow_remove_all: self.unsafe_allow_remove_all,
        })
    }
}

pub(crate) fn forget(cli: &Cli, args: &ForgetArgs) -> anyhow::Result<i32> {
    let options = args.options(cli.loaded.as_ref())?;
    let repo = open(cli)?;
    let lock = lock_exclusive(cli, &repo)?;
    // Prune after forget reads and writes blobs: only an indexed
    // repository can.
    let mut repo = repo.load_index()?;
    let outcome = cairn::forget(&mut repo, &lock, &options)?;
    super::metrics::note_forget(&outcome);
    super::audit::note_forget(&outcome, options.dry_run);
    warn_all(cli, &mut repo);
    if cli.json && !args.prune {
        println!("{}", forget_json(&outcome)?);
    } else if !cli.json && !cli.quiet {
        print_text(&options, &outcome)?;
    }
    if args.prune {
        let prune_options = cairn::PruneOptions {
            dry_run: options.dry_run,
            ..cairn::PruneOptions::default()
        };
        let pruned = cairn::prune(&mut repo, &lock, &prune_options)?;
        super::metrics::note_prune(&pruned);
        super::audit::note_prune(&pruned);
        if cli.json {
            // One document: {"forget": [groups], "prune": {…}}.
            let mut prune = serde_json::to_value(&pruned)?;
            prune["bytes_freed"] = pruned.bytes_freed().into();
            let both = serde_json::json!({"forget": forget_json(&outcome)?, "prune": prune});
            println!("{both}");
        } else {
            print_prune(cli, &pruned)?;
        }
    }
    Ok(0)
}

fn print_text(options: &ForgetOptions, outcome: &cairn::ForgetOutcome) -> anyhow::Result<()> {
    let mut out = std::io::stdout().lock();
    if options.ids.is_empty() {
        writeln!(out, "Applying Policy: {}", options.policy)?;
    }
    for group in &outcome.groups {
        if group.key != cairn::GroupKey::default() {
            writeln!(out, "snapshots for {}:", group.key)?;
        }
        if !group.keep.is_empty() {
            writeln!(out, "keep {} snapshots:", group.keep.len())?;
            let rows: Vec<_> = group
                .keep
                .iter()
                .map(|(id, s, r)| (id, s, r.iter().map(|r| r.to_string()).collect()))
                .collect();
            table(&mut out, &rows, true)?;
        }
        if !group.remove.is_empty() {
            writeln!(out, "remove {} snapshots:", group.remove.len())?;
            let rows: Vec<_> = group
                .remove
                .iter()
                .map(|(id, s)| (id, s, Vec::new()))
                .collect();
            table(&mut out, &rows, false)?;
        }
    }
    let ids: Vec<String> = outcome.removed.iter().map(|id| id.short()).collect();
    if outcome.removed.is_empty() {
        writeln!(out, "no snapshots removed")?;
    } else if options.dry_run {
        writeln!(
            out,
            "Would have removed the following snapshots:\n{}",
            ids.join(" ")
        )?;
    } else {
        writeln!(out, "removed {} snapshots: {}", ids.len(), ids.join(" "))?;
    }
    Ok(())
}

/// restic's table: one row per snapshot, extra lines for further reasons.
fn table(
    out: &mut impl Write,
    rows: &[(&SnapshotId, &Snapshot, Vec<String>)],
    reasons: bool,
) -> anyhow::Result<()> {
    let reason_width = rows
        .iter()
        .flat_map(|(_, _, r)| r.iter().map(String::len))
        .max()
        .unwrap_or(0)
        .max("Reasons".len());
    let head_reasons = if reasons {
        format!("{:<reason_width$}  ", "Reasons")
    } else {
        String::new()
    };
    let rule = "-".repeat(80 + if reasons { reason_width + 2 } else { 0 });
    writeln!(
        out,
        "{:<8}  {:<19}  {:<15}  {:<20}  {head_reasons}Paths",
        "ID", "Time", "Host", "Tags"
    )?;
    writeln!(out, "{rule}")?;
    for (id, s, why) in rows {
        let first = if reasons {
            format!(
                "{:<reason_width$}  ",
                why.first().map(String::as_str).unwrap_or("")
            )
        } else {
            String::new()
        };
        writeln!(
            out,
            "{:<8}  {:<19}  {:<15}  {:<20}  {first}{}",
            id.short(),
            s.time.format("%Y-%m-%d %H:%M:%S"),
            s.hostname,
            s.tags.join(","),
            s.paths.join(" ")
        )?;
        for more in why.iter().skip(1) {
            writeln!(out, "{:<70}{more}", "")?;
        }
    }
    writeln!(out, "{rule}")?;
    writeln!(out, "{} snapshots\n", rows.len())?;
    Ok(())
}

/// The documented `forget --json` structure (docs/retention.md): one object
/// per group, restic's field names.
fn forget_json(outcome: &cairn::ForgetOutcome) -> anyhow::Result<serde_json::Value> {
    let mut groups = Vec::new();
    for g in &outcome.groups {
        let keep = g
            .keep
            .iter()
            .map(|(id, s, _)| snapshot_json(id, s))
            .collect::<anyhow::Result<Vec<_>>>()?;
        let reasons = g
            .keep
            .iter()
            .map(|(id, s, r)| {
                Ok(serde_json::json!({
                    "snapshot": snapshot_json(id, s)?,
                    "matches": r.iter().map(|r| r.to_string()).collect::<Vec<_>>(),
                }))
            })
            .collect::<anyhow::Result<Vec<_>>>()?;
        let remove = g
            .remove
            .iter()
            .map(|(id, s)| snapshot_json(id, s))
            .collect::<anyhow::Result<Vec<_>>>()?;
        groups.push(serde_json::json!({
            "host": g.key.hostname,
            "paths": g.key.paths,
            "tags": g.key.tags,
            "keep": keep,
            "remove": remove,
            "reasons": reasons,
        }));
    }
    Ok(serde_json::Value::Array(groups))
}
