//! The audit log from the command line: every command that opened the
//! repository appends one entry when it ends (`finish`, called by
//! `cli::execute` whatever the outcome), with the ids commands reported
//! through the `note_*` calls; and `cairn audit log|report|keys`.

use super::args::{AuditCommand, AuditReportArgs, Cli, Command, KeyCommand, RepairCommand};
use super::output::{emit, emit_text_even_quiet};
use super::repo::{backend, open};
use anyhow::{anyhow, Context};
use cairn::{AuditWriter, IdKind, Outcome, PublicKey, Record};
use std::sync::Mutex;

/// The running command's writer and what it reported.
struct Session {
    writer: AuditWriter,
    record: Record,
}

static SESSION: Mutex<Option<Session>> = Mutex::new(None);

fn with_session(f: impl FnOnce(&mut Session)) {
    let mut guard = SESSION.lock().unwrap_or_else(|e| e.into_inner());
    if let Some(session) = guard.as_mut() {
        f(session);
    }
}

/// Called when the repository is opened: from now on the command is
/// logged. A key file without a signing key logs unsigned entries, with
/// a warning.
pub(crate) fn begin<S>(cli: &Cli, repo: &cairn::Repository<S>) {
    let mut guard = SESSION.lock().unwrap_or_else(|e| e.into_inner());
    if guard.is_some() {
        return;
    }
    if repo.signing_key().is_none() && !cli.quiet {
        eprintln!(
            "cairn: warning: key file {} has no signing key, so this operation's audit entry is unsigned; `cairn key passwd` gives it one",
            &repo.current_key()[..8.min(repo.current_key().len())]
        );
    }
    *guard = Some(Session {
        writer: AuditWriter::new(
            repo.backend().clone(),
            repo.config().id,
            repo.signing_key().cloned(),
        )
        .with_cache(repo.cache_dir()),
        record: Record::default(),
    });
}

pub(crate) fn note_id(kind: IdKind, id: cairn::format::id::Id) {
    with_session(|s| s.record.ids.push((kind, id)));
}

pub(crate) fn note_count(name: &str, value: u64) {
    with_session(|s| s.record.counts.push((name.into(), value)));
}

pub(crate) fn note_backup(outcome: &cairn::BackupOutcome) {
    note_id(IdKind::SnapshotAdded, outcome.id.0);
    let s = &outcome.snapshot.summary;
    note_count("files_new", s.files_new);
    note_count("files_changed", s.files_changed);
    note_count("data_added", s.data_added);
}

pub(crate) fn note_forget(outcome: &cairn::ForgetOutcome, dry_run: bool) {
    if !dry_run {
        for id in &outcome.removed {
            note_id(IdKind::SnapshotRemoved, id.0);
        }
    }
    note_count(
        "snapshots_removed",
        if dry_run {
            0
        } else {
            outcome.removed.len() as u64
        },
    );
}

pub(crate) fn note_prune(o: &cairn::PruneOutcome) {
    if !o.dry_run {
        note_count("packs_deleted", o.packs_deleted + o.packs_unindexed_deleted);
        note_count("packs_repacked", o.packs_repacked);
        note_count("packs_written", o.packs_written);
    }
}

/// A snapshot whose data or file names the command read.
pub(crate) fn note_read(id: &cairn::SnapshotId) {
    note_id(IdKind::SnapshotRead, id.0);
}

/// How much a check read: the report's verification cadence.
pub(crate) fn note_check(report: &cairn::CheckReport) {
    note_count("packs", report.packs);
    note_count("packs_read", report.packs_read);
    note_count(
        "problems",
        report.problems.len() as u64 + report.problems_unlisted,
    );
}

/// Snapshots rewritten (`tag`): the old one deleted, the new one written.
pub(crate) fn note_replaced(changed: &[(cairn::SnapshotId, cairn::SnapshotId)]) {
    for (old, new) in changed {
        note_id(IdKind::SnapshotRemoved, old.0);
        note_id(IdKind::SnapshotAdded, new.0);
    }
}

pub(crate) fn note_repair_snapshots(outcome: &cairn::RepairSnapshotsOutcome) {
    if outcome.dry_run {
        return;
    }
    for s in &outcome.snapshots {
        if let Some(new) = s.repaired {
            note_id(IdKind::SnapshotAdded, new.0);
        }
        if s.forgotten {
            note_id(IdKind::SnapshotRemoved, s.original.0);
        }
    }
}

pub(crate) fn note_copy(outcome: &cairn::CopyOutcome) {
    for s in outcome.snapshots.iter().filter(|s| !s.already_copied) {
        note_id(IdKind::SnapshotAdded, s.copy.0);
    }
}

pub(crate) fn note_key_removed(name: &str) {
    if let Ok(id) = cairn::KeyId::from_hex(name) {
        note_id(IdKind::KeyRemoved, id.0);
    }
}

/// The operation's name as entries record it.
fn operation(command: &Command) -> &'static str {
    match command {
        Command::Init(_) => "init",
        Command::Backup(_) => "backup",
        Command::Snapshots(_) => "snapshots",
        Command::Restore { .. } => "restore",
        Command::Dump { .. } => "dump",
        Command::Ls(_) => "ls",
        Command::Find(_) => "find",
        Command::Diff(_) => "diff",
        Command::Tag(_) => "tag",
        Command::Cat { .. } => "cat",
        Command::ImportTar { .. } => "import-tar",
        Command::ExportTar { .. } => "export-tar",
        Command::Stats { .. } => "stats",
        Command::Copy(_) => "copy",
        Command::Forget(_) => "forget",
        Command::Check(_) => "check",
        Command::Prune(_) => "prune",
        Command::Key(KeyCommand::Add { .. }) => "key add",
        Command::Key(KeyCommand::List) => "key list",
        Command::Key(KeyCommand::Remove { .. }) => "key remove",
        Command::Key(KeyCommand::Passwd { .. }) => "key passwd",
        Command::Repair(RepairCommand::Index { .. }) => "repair index",
        Command::Repair(RepairCommand::Snapshots { .. }) => "repair snapshots",
        Command::Unlock { .. } => "unlock",
        Command::Run => "run",
        Command::Audit(_) => "audit keys",
        Command::RetentionLock(super::args::RetentionLockCommand::Set { .. }) => {
            "retention-lock set"
        }
        Command::RetentionLock(super::args::RetentionLockCommand::Show) => "retention-lock show",
        Command::Completions { .. } | Command::Man { .. } => "help",
        Command::Cache { .. } => "cache",
        Command::Drill(args) if args.list => "drill list",
        Command::Drill(_) => "drill",
        #[cfg(feature = "mount")]
        Command::Mount(_) => "mount",
    }
}

/// Appends the command's entry, if it opened the repository. A failure to
/// append is a warning: the operation itself has already happened.
pub(crate) fn finish(cli: &Cli, result: &anyhow::Result<i32>) {
    let Some(mut session) = SESSION.lock().unwrap_or_else(|e| e.into_inner()).take() else {
        return;
    };
    let record = &mut session.record;
    record.operation = operation(&cli.command).into();
    let (outcome, detail) = match result {
        Ok(0) => (Outcome::Ok, String::new()),
        // A backup that skipped unreadable files.
        Ok(3) => (Outcome::Ok, "partial: some files were unreadable".into()),
        Ok(code) => (Outcome::Failed, format!("exit {code}")),
        Err(e) => match e.downcast_ref::<cairn::Error>().map(cairn::Error::kind) {
            Some(cairn::ErrorKind::Refused) => (Outcome::Refused, e.to_string()),
            Some(kind) => (Outcome::Failed, format!("{kind:?}")),
            None => (Outcome::Failed, "error".into()),
        },
    };
    record.result = Some(outcome);
    record.detail = detail;
    if let Err(e) = session.writer.append(record) {
        if !cli.quiet {
            eprintln!("cairn: warning: cannot append to the audit log: {e}");
        }
    }
}

pub(crate) fn audit(cli: &Cli, command: &AuditCommand) -> anyhow::Result<i32> {
    match command {
        AuditCommand::Log => log(cli),
        AuditCommand::Report(args) => report(cli, args),
        AuditCommand::Keys => keys(cli),
    }
}

fn log(cli: &Cli) -> anyhow::Result<i32> {
    let lines = cairn::audit_log(backend(cli)?.as_ref())?;
    emit_text_even_quiet(
        cli,
        || Ok(serde_json::to_value(&lines)?),
        || {
            for l in &lines {
                let ids: Vec<String> = l
                    .ids
                    .iter()
                    .map(|(k, id)| format!("{k}:{}", &id[..8]))
                    .collect();
                let counts: Vec<String> =
                    l.counts.iter().map(|(n, v)| format!("{n}={v}")).collect();
                println!(
                    "{}  {}  {}  {}@{}  {} {}{}  {} {} {}",
                    &l.id[..12],
                    l.time
                        .map(cairn::engine::audit::report::format_time)
                        .unwrap_or_default(),
                    l.signer
                        .as_deref()
                        .map(|s| format!("{}#{}", &s[..16], l.seq.unwrap_or(0)))
                        .unwrap_or_else(|| "unsigned".into()),
                    l.user,
                    l.host,
                    l.operation,
                    l.result,
                    if l.detail.is_empty() {
                        String::new()
                    } else {
                        format!(" ({})", l.detail)
                    },
                    l.status,
                    ids.join(" "),
                    counts.join(" ")
                );
            }
            Ok(())
        },
    )?;
    Ok(0)
}

/// A `--from`/`--to` date: YYYY-MM-DD (UTC midnight; `--to` the end of that
/// day) or RFC 3339.
fn parse_date(text: &str, end_of_day: bool) -> anyhow::Result<i64> {
    if let Ok(t) = chrono::DateTime::parse_from_rfc3339(text) {
        return Ok(t.timestamp());
    }
    let day = chrono::NaiveDate::parse_from_str(text, "%Y-%m-%d")
        .map_err(|_| anyhow!("not a date (YYYY-MM-DD or RFC 3339): {text:?}"))?;
    let start = day
        .and_hms_opt(0, 0, 0)
        .expect("midnight exists")
        .and_utc()
        .timestamp();
    Ok(if end_of_day { start + 86_399 } else { start })
}

/// One public key per line (hex, as `cairn audit keys` prints them); text
/// after the key and lines starting with # are ignored.
fn read_keys(path: &std::path::Path) -> anyhow::Result<Vec<PublicKey>> {
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("cannot read trusted keys {}", path.display()))?;
    text.lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .map(|l| {
            let hex = l.split_whitespace().next().unwrap_or("");
            PublicKey::from_hex(hex)
                .with_context(|| format!("{}: not a public key: {l:?}", path.display()))
        })
        .collect()
}

/// The `--policy` file, read up to its size limit.
fn read_policy(path: &std::path::Path) -> anyhow::Result<cairn::engine::audit::schedule::Policy> {
    use std::io::Read;
    let limit = cairn::engine::audit::schedule::POLICY_SIZE_MAX;
    let mut text = String::new();
    std::fs::File::open(path)
        .and_then(|f| f.take(limit + 1).read_to_string(&mut text))
        .with_context(|| format!("cannot read policy {}", path.display()))?;
    if text.len() as u64 > limit {
        return Err(anyhow!(
            "policy {} is larger than {} KiB",
            path.display(),
            limit / 1024
        ));
    }
    cairn::engine::audit::schedule::Policy::parse(&text)
        .with_context(|| format!("policy {}", path.display()))
}

fn report(cli: &Cli, args: &AuditReportArgs) -> anyhow::Result<i32> {
    let backend = backend(cli)?;
    if !cairn::Backend::exists(backend.as_ref())? {
        return Err(cairn::Error::new(
            cairn::ErrorKind::RepositoryNotFound,
            format!("repository {} does not exist", backend.location()),
        )
        .into());
    }
    let saved_heads = match &args.state {
        Some(path) if path.exists() => {
            let text = std::fs::read_to_string(path)
                .with_context(|| format!("cannot read state {}", path.display()))?;
            let value: serde_json::Value = serde_json::from_str(&text)
                .with_context(|| format!("state {} is not JSON", path.display()))?;
            let heads = value["heads"]
                .as_array()
                .ok_or_else(|| anyhow!("state {} has no heads", path.display()))?
                .iter()
                .map(|h| {
                    h.as_str()
                        .and_then(|h| cairn::AuditId::from_hex(h).ok())
                        .ok_or_else(|| anyhow!("state {} has a bad head", path.display()))
                })
                .collect::<anyhow::Result<Vec<_>>>()?;
            Some(heads)
        }
        _ => None,
    };
    let options = cairn::ReportOptions {
        trusted: args.trusted_keys.as_deref().map(read_keys).transpose()?,
        saved_heads,
        from: args
            .from
            .as_deref()
            .map(|d| parse_date(d, false))
            .transpose()?,
        to: args
            .to
            .as_deref()
            .map(|d| parse_date(d, true))
            .transpose()?,
        read_packs: args
            .read_packs
            .as_deref()
            .map(|text| {
                text.parse::<cairn::ReadPacks>()
                    .map_err(|e| e.context("--read-packs"))
            })
            .transpose()?,
        policy: args.policy.as_deref().map(read_policy).transpose()?,
    };
    let report = cairn::audit_report(backend.as_ref(), &options)?;
    let failed = report.verdict == cairn::engine::audit::report::Status::Fail;
    // The state moves on only when the log it describes passed.
    if let (Some(path), false) = (&args.state, failed) {
        let state = serde_json::json!({"heads": report.heads, "entries": report.entries});
        let temp = path.with_extension("tmp");
        std::fs::write(&temp, format!("{state:#}\n"))
            .and_then(|()| std::fs::rename(&temp, path))
            .with_context(|| format!("cannot write state {}", path.display()))?;
    }
    use cairn::engine::audit::render::{render, ReportFormat};
    let text = if cli.json {
        format!("{}\n", serde_json::to_string_pretty(&report)?)
    } else {
        render(
            &report,
            match args.format {
                super::args::ReportFormat::Text => ReportFormat::Text,
                super::args::ReportFormat::Markdown => ReportFormat::Markdown,
                super::args::ReportFormat::Html => ReportFormat::Html,
            },
        )
    };
    match &args.output {
        Some(path) => std::fs::write(path, text)
            .with_context(|| format!("cannot write {}", path.display()))?,
        None => print!("{text}"),
    }
    Ok(if failed { 1 } else { 0 })
}

/// The public signing keys of the key files, for the auditor to pin. Needs
/// the password: only then is the repository known to be the one meant.
fn keys(cli: &Cli) -> anyhow::Result<i32> {
    let repo = open(cli)?;
    let keys = repo.list_keys()?;
    let current = repo.signing_key().map(|k| k.public().to_hex());
    emit(
        cli,
        || {
            let v: Vec<_> = keys
                .iter()
                .map(|(name, k)| {
                    let signer = k.as_ref().ok().and_then(|k| k.signer()).map(|s| s.to_hex());
                    serde_json::json!({"key": name, "signer": signer,
                        "current": current.is_some() && signer == current})
                })
                .collect();
            Ok(v)
        },
        || {
            for (name, k) in &keys {
                let key = &name[..8.min(name.len())];
                match k.as_ref().ok().map(|k| (k.signer(), k)) {
                    Some((Some(signer), k)) => {
                        println!(
                            "{}  key {key} {}@{}",
                            signer.to_hex(),
                            k.username,
                            k.hostname
                        )
                    }
                    Some((None, _)) => println!("# key {key}: no signing key (version 1)"),
                    None => println!("# key {key}: damaged"),
                }
            }
            Ok(())
        },
    )?;
    Ok(0)
}
