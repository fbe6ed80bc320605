//! `cairn backup` (paths, `--stdin`, `--stdin-from-command`, or a profile's
//! sources) and `cairn import-tar`, and the summary both print.

use super::args::{tag_list, BackupArgs, Cli, ExcludeArgs};
use super::output::{emit, human_bytes};
use super::repo::{lock, open, warn_all};
use anyhow::{anyhow, Context};
use cairn::{BackupOptions, ParentChoice};

pub(crate) fn backup(cli: &Cli, args: &BackupArgs) -> anyhow::Result<i32> {
    if args.stdin && !args.paths.is_empty() {
        return Err(anyhow!("--stdin takes no paths"));
    }
    if args.stdin_from_command && args.paths.is_empty() {
        return Err(anyhow!(
            "--stdin-from-command needs a command: cairn backup --stdin-from-command -- CMD ARGS..."
        ));
    }
    if super::profile::runs_sources(cli, args) {
        return super::profile::backup_sources(cli, args);
    }
    if !args.stdin && args.paths.is_empty() {
        return Err(anyhow!("nothing to back up: give paths or --stdin"));
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
    let options = BackupOptions {
        tags: super::profile::backup_tags(cli, &args.tags),
        host: super::profile::backup_host(cli, &args.host),
        time,
        exclude: std::sync::Arc::new(
            args.exclude
                .excluder(&super::profile::profile_excludes(cli, None))?,
        ),
        parent: match (&args.parent, args.force) {
            (_, true) => ParentChoice::None,
            (Some(id), false) => ParentChoice::Id(id.clone()),
            (None, false) => ParentChoice::Latest,
        },
    };
    let outcome = if args.stdin {
        // Not locked: the stream is read on cairn's reader thread.
        cairn::backup_stream(
            &mut repo,
            &lock,
            std::io::stdin(),
            &args.stdin_filename,
            &options,
        )?
    } else if args.stdin_from_command {
        let argv: Vec<_> = args
            .paths
            .iter()
            .map(|p| p.clone().into_os_string())
            .collect();
        cairn::backup_command(&mut repo, &lock, &argv, &args.stdin_filename, &options)?
    } else {
        cairn::backup_paths(&mut repo, &lock, &args.paths, &options)?
    };
    report_backup(cli, &outcome)
}

impl ExcludeArgs {
    /// The excluder from these flags plus the profile's patterns.
    pub(crate) fn excluder(
        &self,
        extra_patterns: &[String],
    ) -> anyhow::Result<cairn::engine::exclude::Excluder> {
        let mut e = cairn::engine::exclude::Excluder::default();
        e.add_patterns(extra_patterns, false)?;
        e.add_patterns(&self.patterns, false)?;
        e.add_patterns(&self.ipatterns, true)?;
        for file in &self.files {
            let text = std::fs::read_to_string(file)
                .with_context(|| format!("cannot read exclude file {}", file.display()))?;
            let lines: Vec<String> = text.lines().map(String::from).collect();
            e.add_patterns(&lines, false)?;
        }
        e.markers.clone_from(&self.if_present);
        e.exclude_caches = self.exclude_caches;
        e.one_file_system = self.one_file_system;
        Ok(e)
    }
}

pub(crate) fn import_tar(
    cli: &Cli,
    file: &std::path::Path,
    tags: &[String],
    host: &Option<String>,
    max_size: &str,
    max_members: u64,
) -> anyhow::Result<i32> {
    let max_content_bytes = cairn::units::parse_size(max_size)?;
    let limits = cairn::TarLimits {
        max_content_bytes,
        // The stream holds headers and padding too: never below the
        // default, and twice the contents when they may be larger.
        max_stream_bytes: max_content_bytes
            .saturating_mul(2)
            .max(cairn::TarLimits::default().max_stream_bytes),
        max_members,
        ..cairn::TarLimits::default()
    };
    let mut input: Box<dyn std::io::Read> = if file == std::path::Path::new("-") {
        Box::new(std::io::stdin().lock())
    } else {
        Box::new(
            std::fs::File::open(file).with_context(|| format!("cannot open {}", file.display()))?,
        )
    };
    let name = if file == std::path::Path::new("-") {
        "-".to_string()
    } else {
        std::path::absolute(file)?.to_string_lossy().into_owned()
    };
    let repo = open(cli)?;
    let lock = lock(cli, &repo)?;
    let mut repo = repo.load_index()?;
    warn_all(cli, &mut repo);
    let options = BackupOptions {
        tags: tag_list(tags),
        host: host.clone(),
        time: None,
        exclude: Default::default(),
        parent: ParentChoice::None,
    };
    let outcome =
        cairn::import_tar_with_limits(&mut repo, &lock, &mut input, &name, &options, &limits)?;
    report_backup(cli, &outcome)
}

/// Prints a backup's summary and warnings; returns the exit code.
pub(crate) fn report_backup(cli: &Cli, outcome: &cairn::BackupOutcome) -> anyhow::Result<i32> {
    super::metrics::note_backup(outcome);
    super::audit::note_backup(outcome);
    for u in &outcome.unreadable {
        eprintln!(
            "cairn: warning: cannot read {}: {}",
            super::output::term_safe(&u.path.to_string_lossy()),
            super::output::term_safe(&u.reason)
        );
    }
    let s = &outcome.snapshot.summary;
    emit(
        cli,
        || {
            let mut summary = serde_json::to_value(s)?;
            summary["message_type"] = "summary".into();
            summary["snapshot_id"] = outcome.id.to_hex().into();
            summary["parent"] = serde_json::to_value(outcome.snapshot.parent)?;
            Ok(summary)
        },
        || {
            if let Some(parent) = outcome.snapshot.parent {
                println!("using parent snapshot {}", parent.short());
            }
            println!(
                "Files:   {:>8} new, {:>8} changed, {:>8} unmodified",
                s.files_new, s.files_changed, s.files_unmodified
            );
            println!(
                "Dirs:    {:>8} new, {:>8} changed, {:>8} unmodified",
                s.dirs_new, s.dirs_changed, s.dirs_unmodified
            );
            println!(
                "Added to the repository: {} ({} stored)",
                human_bytes(s.data_added),
                human_bytes(s.data_added_packed)
            );
            println!(
                "processed {} files, {} in {:.1}s",
                s.total_files_processed,
                human_bytes(s.total_bytes_processed),
                s.duration_seconds
            );
            println!("snapshot {} saved", outcome.id.short());
            Ok(())
        },
    )?;
    if outcome.unreadable.is_empty() {
        Ok(0)
    } else {
        eprintln!(
            "cairn: warning: {} file(s) could not be read; the snapshot does not contain them",
            outcome.unreadable.len()
        );
        Ok(3)
    }
}
