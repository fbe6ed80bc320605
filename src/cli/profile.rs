//! `--config`/`--profile`: fills the global settings a profile gives, runs a
//! profile's sources for `backup` without paths, and `cairn run`.
//!
//! Precedence, per setting: command-line flag > environment variable >
//! profile. clap already merges flags and `CAIRN_*` variables into `Cli`,
//! so the profile only fills what is still unset. The password is one
//! setting: a profile's password source is used only when none of
//! `--password-file`, `--password-command`, their variables and
//! `CAIRN_PASSWORD` is given.

use super::args::{parse_duration, tag_list, BackupArgs, Cli, Command};
use super::backup::report_backup;
use super::repo::{lock, open, warn_all};
use anyhow::{anyhow, Context};
use cairn::ops::profile::{Profile, SourceInput};
use cairn::{BackupOptions, ErrorKind, ParentChoice};
use clap::Parser;

/// Loads the profile named by `--profile` (or `default` when only
/// `--config` is given) and fills the unset global settings from it.
pub(crate) fn apply(cli: &mut Cli) -> anyhow::Result<()> {
    if cli.profile.is_none() && cli.config.is_none() {
        return Ok(());
    }
    let file = cairn::ops::profile::load(cli.config.as_deref())?;
    let name = cli
        .profile
        .clone()
        .unwrap_or_else(|| cairn::ops::profile::DEFAULT_PROFILE.to_string());
    let profile = file.profile(&name)?.clone();
    fill(cli, profile).with_context(|| format!("{}: profile {name:?}", file.path.display()))?;
    Ok(())
}

fn fill(cli: &mut Cli, p: Profile) -> anyhow::Result<()> {
    if cli.repo.is_none() {
        cli.repo.clone_from(&p.repository);
    }
    let password_given = cli.password_file.is_some()
        || cli.password_command.is_some()
        || std::env::var_os("CAIRN_PASSWORD").is_some();
    if !password_given {
        cli.password_file.clone_from(&p.password_file);
        cli.password_command.clone_from(&p.password_command);
    }
    if cli.cache_dir.is_none() {
        cli.cache_dir.clone_from(&p.cache_dir);
    }
    if cli.retry_lock.is_none() {
        if let Some(text) = &p.retry_lock {
            cli.retry_lock = Some(parse_duration(text).map_err(|e| anyhow!("retry-lock: {e}"))?);
        }
    }
    if cli.metrics_file.is_none() {
        cli.metrics_file.clone_from(&p.metrics_file);
    }
    cli.connections = cli.connections.or(p.connections);
    cli.loaded = Some(p);
    Ok(())
}

/// The tags of a backup: `--tag` flags replace the profile's tags.
pub(crate) fn backup_tags(cli: &Cli, flags: &[String]) -> Vec<String> {
    match &cli.loaded {
        Some(p) if flags.is_empty() => tag_list(&p.tags),
        _ => tag_list(flags),
    }
}

/// The host of a backup: `--host` replaces the profile's host.
pub(crate) fn backup_host(cli: &Cli, flag: &Option<String>) -> Option<String> {
    flag.clone()
        .or_else(|| cli.loaded.as_ref().and_then(|p| p.host.clone()))
}

/// The profile's exclude patterns, plus a source's own when given.
pub(crate) fn profile_excludes(
    cli: &Cli,
    source: Option<&cairn::ops::profile::Source>,
) -> Vec<String> {
    let Some(p) = &cli.loaded else {
        return Vec::new();
    };
    let mut patterns = p.exclude.clone();
    if let Some(s) = source {
        patterns.extend(s.exclude.iter().cloned());
    }
    patterns
}

/// Whether `backup` should run the profile's sources: a profile with
/// sources, and no paths or --stdin on the command line.
pub(crate) fn runs_sources(cli: &Cli, args: &BackupArgs) -> bool {
    args.paths.is_empty()
        && !args.stdin
        && !args.stdin_from_command
        && cli.loaded.as_ref().is_some_and(|p| !p.sources.is_empty())
}

/// `cairn --profile NAME backup`: one snapshot per source, under one lock.
/// A failed source does not stop the others; the exit code is 1 if any
/// failed, else 3 if any missed unreadable files, else 0.
pub(crate) fn backup_sources(cli: &Cli, args: &BackupArgs) -> anyhow::Result<i32> {
    let profile = cli.loaded.as_ref().expect("runs_sources checked");
    if args.parent.is_some() {
        return Err(anyhow!(
            "--parent names one snapshot, but profile {:?} has {} sources: give paths too",
            profile.name,
            profile.sources.len()
        ));
    }
    let time = args
        .time
        .as_deref()
        .map(cairn::parse_backup_time)
        .transpose()?;
    let repo = open(cli)?;
    let lock = lock(cli, &repo)?;
    let mut repo = repo.load_index()?;
    warn_all(cli, &mut repo);
    let base_tags = backup_tags(cli, &args.tags);
    let total = profile.sources.len();
    let mut failed = Vec::new();
    let mut code = 0;
    for (i, source) in profile.sources.iter().enumerate() {
        let name = source.describe();
        if !cli.quiet && !cli.json {
            println!("source {}/{total}: {name}", i + 1);
        }
        let mut tags = base_tags.clone();
        tags.extend(tag_list(&source.tags));
        let options = BackupOptions {
            tags,
            host: backup_host(cli, &args.host),
            time,
            exclude: std::sync::Arc::new(
                args.exclude
                    .excluder(&profile_excludes(cli, Some(source)))?,
            ),
            parent: if args.force {
                ParentChoice::None
            } else {
                ParentChoice::Latest
            },
        };
        let result = match &source.input {
            SourceInput::Paths(paths) => cairn::backup_paths(&mut repo, &lock, paths, &options),
            SourceInput::Command { argv, filename } => {
                let argv: Vec<_> = argv.iter().map(std::ffi::OsString::from).collect();
                cairn::backup_command(&mut repo, &lock, &argv, filename, &options)
            }
        };
        warn_all(cli, &mut repo);
        match result {
            Ok(outcome) => code = code.max(report_backup(cli, &outcome)?),
            // An interrupt stops the whole job, as it would a single backup.
            Err(e) if e.kind() == ErrorKind::Interrupted => return Err(e.into()),
            Err(e) => {
                eprintln!(
                    "cairn: error: source {name}: {}",
                    e.to_string().replace('\n', " ")
                );
                failed.push(name);
            }
        }
    }
    if failed.is_empty() {
        return Ok(code);
    }
    eprintln!(
        "cairn: error: {} of {total} source(s) failed: {}",
        failed.len(),
        failed.join(", ")
    );
    Ok(1)
}

/// `cairn --profile NAME run`: the profile's `run` steps in order, each as
/// if given on the command line with the same global flags, each writing
/// its own metrics. Stops at the first failed step (like `&&` in a shell)
/// and exits with its code.
pub(crate) fn run_steps(cli: &Cli) -> anyhow::Result<i32> {
    let profile = cli
        .loaded
        .as_ref()
        .ok_or_else(|| anyhow!("run needs a profile: cairn --profile NAME run"))?;
    if profile.run.is_empty() {
        return Err(anyhow!(
            "profile {:?} has no run steps (e.g. run = [\"backup\", \"forget --prune\", \"check\"])",
            profile.name
        ));
    }
    for step in &profile.run {
        let words = std::iter::once("cairn").chain(step.iter().map(String::as_str));
        let mut step_cli = match Cli::try_parse_from(words) {
            Ok(c) => c,
            Err(e) => {
                return Err(anyhow!(
                    "profile {:?}: run step {:?}: {}",
                    profile.name,
                    step.join(" "),
                    e.to_string().lines().next().unwrap_or("").trim()
                ))
            }
        };
        if matches!(step_cli.command, Command::Run) {
            return Err(anyhow!("run cannot be a run step"));
        }
        // The global settings as resolved for this run (flags, environment,
        // profile); a step's own flags are for its command only.
        step_cli.repo.clone_from(&cli.repo);
        step_cli.password_file.clone_from(&cli.password_file);
        step_cli.password_command.clone_from(&cli.password_command);
        step_cli.cache_dir.clone_from(&cli.cache_dir);
        step_cli.key_hint.clone_from(&cli.key_hint);
        step_cli.json = step_cli.json || cli.json;
        step_cli.quiet = step_cli.quiet || cli.quiet;
        step_cli.verbose = step_cli.verbose.max(cli.verbose);
        step_cli.retry_lock = step_cli.retry_lock.or(cli.retry_lock);
        step_cli.metrics_file.clone_from(&cli.metrics_file);
        step_cli.connections = step_cli.connections.or(cli.connections);
        step_cli.profile.clone_from(&cli.profile);
        step_cli.loaded.clone_from(&cli.loaded);
        if !cli.quiet && !cli.json {
            println!("== cairn {}", step.join(" "));
        }
        let code = super::execute(&step_cli);
        if code != 0 {
            eprintln!(
                "cairn: error: run step {:?} exited {code}; later steps skipped",
                step.join(" ")
            );
            return Ok(code);
        }
    }
    Ok(0)
}
