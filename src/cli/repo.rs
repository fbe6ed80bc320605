//! Opening the repository for a command: the backend from `--repo`, the
//! password from its sources, the locks (with `--retry-lock` and
//! `--no-lock`), and the warnings the library collected on the way.

use super::args::{Cli, FromRepoArgs};
use crate::context;
use anyhow::{anyhow, Context};
use cairn::{ErrorKind, LocalBackend, Repository};
use std::io::IsTerminal;
use std::path::Path;
use std::sync::Arc;

/// The backend `--repo` names: `s3:…` is a bucket (restic's form), anything
/// else a local directory.
pub(crate) fn backend(cli: &Cli) -> anyhow::Result<Arc<dyn cairn::Backend>> {
    let repo = cli
        .repo
        .as_ref()
        .ok_or_else(|| anyhow!("no repository given: use -r/--repo or set CAIRN_REPOSITORY"))?;
    // `check` is there to find damage in the bucket: it reads every file
    // from there, never a local copy.
    let copies = !matches!(cli.command, super::args::Command::Check(_));
    backend_at(repo, copies, cli.connections)
}

/// The backend a repository location names: `s3:…` (restic's form) or a
/// local directory. The repository and `copy`'s source both go through it.
/// `copies`: keep local copies of metadata (`CachedBackend`);
/// `connections`: `--connections` (S3 only).
fn backend_at(
    location: &Path,
    copies: bool,
    connections: Option<u16>,
) -> anyhow::Result<Arc<dyn cairn::Backend>> {
    if let Some(s3) = location.to_str().filter(|r| r.starts_with("s3:")) {
        let location = cairn::storage::backend::S3Location::parse(s3)?;
        let mut s3 = cairn::storage::backend::S3Backend::new(location)?;
        if let Some(n) = connections {
            s3 = s3.with_connections(usize::from(n));
        }
        // Snapshots, index files and tree packs are kept in the
        // repository's cache directory, checked against their names.
        return Ok(match copies {
            true => Arc::new(cairn::storage::backend::CachedBackend::new(s3)),
            false => Arc::new(s3),
        });
    }
    Ok(Arc::new(LocalBackend::new(location)))
}

/// The password, from (in order) CAIRN_PASSWORD_COMMAND, CAIRN_PASSWORD_FILE,
/// CAIRN_PASSWORD, or a prompt when a terminal is attached.
pub(crate) fn password(cli: &Cli, confirm: bool) -> anyhow::Result<zeroize::Zeroizing<String>> {
    read_password(
        &Sources {
            command: cli.password_command.as_deref(),
            file: cli.password_file.as_deref(),
            variable: "CAIRN_PASSWORD",
            whose: "",
        },
        confirm,
    )
}

/// Where one repository's password comes from.
struct Sources<'a> {
    command: Option<&'a str>,
    file: Option<&'a Path>,
    variable: &'static str,
    /// "" for the repository, "source " for `copy`'s source.
    whose: &'static str,
}

fn read_password(from: &Sources<'_>, confirm: bool) -> anyhow::Result<zeroize::Zeroizing<String>> {
    let whose = from.whose;
    let strip = |mut s: String| {
        if let Some(line_end) = s.find('\n') {
            s.truncate(line_end);
        }
        if s.ends_with('\r') {
            s.pop();
        }
        zeroize::Zeroizing::new(s)
    };
    if let Some(command) = from.command {
        let mut shell = std::process::Command::new("sh");
        for name in cairn::engine::command::SECRET_VARIABLES {
            shell.env_remove(name);
        }
        let out = shell
            .arg("-c")
            .arg(command)
            .stdin(std::process::Stdio::null())
            .stderr(std::process::Stdio::inherit())
            .output()
            .with_context(|| format!("cannot run {whose}password command {command:?}"))?;
        if !out.status.success() {
            return Err(cairn::Error::new(
                ErrorKind::Command,
                format!("{whose}password command failed ({})", out.status),
            )
            .into());
        }
        return Ok(strip(String::from_utf8(out.stdout).with_context(|| {
            format!("{whose}password command printed non-UTF-8")
        })?));
    }
    if let Some(file) = from.file {
        let text = std::fs::read_to_string(file)
            .with_context(|| format!("cannot read {whose}password file {}", file.display()))?;
        return Ok(strip(text));
    }
    if let Ok(pw) = std::env::var(from.variable) {
        return Ok(zeroize::Zeroizing::new(pw));
    }
    if std::io::stderr().is_terminal() || std::io::stdin().is_terminal() {
        let first = rpassword::prompt_password(format!("enter password for {whose}repository: "))
            .context("cannot read password")?;
        if confirm {
            let second = rpassword::prompt_password("enter password again: ")
                .context("cannot read password")?;
            if first != second {
                return Err(anyhow!("passwords do not match"));
            }
        }
        return Ok(zeroize::Zeroizing::new(first));
    }
    let v = from.variable;
    Err(anyhow!(
        "no {whose}password given: set {v}_FILE, {v}_COMMAND or {v}"
    ))
}

/// The source repository of `copy` and `init --copy-chunker-params`,
/// opened with its own password (`--from-password-*`, `CAIRN_FROM_*`).
pub(crate) fn open_source(
    cli: &Cli,
    from: &FromRepoArgs,
) -> anyhow::Result<Repository<cairn::Opened>> {
    let location = from.from_repo.as_ref().ok_or_else(|| {
        anyhow!("no source repository given: use --from-repo or set CAIRN_FROM_REPOSITORY")
    })?;
    let backend = backend_at(location, true, cli.connections)?;
    if !backend.exists()? {
        return Err(cairn::Error::new(
            ErrorKind::RepositoryNotFound,
            format!("source repository {} does not exist", backend.location()),
        )
        .into());
    }
    let password = read_password(
        &Sources {
            command: from.from_password_command.as_deref(),
            file: from.from_password_file.as_deref(),
            variable: "CAIRN_FROM_PASSWORD",
            whose: "source ",
        },
        false,
    )?;
    let options = cairn::OpenOptions {
        cache_root: cli.cache_dir.as_deref(),
        key_hint: from.from_key_hint.as_deref(),
    };
    let mut repo = Repository::open_with(backend, password.as_bytes(), &options)
        .map_err(|e| e.context("source repository"))?
        .with_context(context().clone());
    warn_all(cli, &mut repo);
    Ok(repo)
}

/// The source's backend, made as `backend` makes the destination's (the
/// same location forms are to work for both).
pub(crate) fn open(cli: &Cli) -> anyhow::Result<Repository<cairn::Opened>> {
    let backend = backend(cli)?;
    if !cairn::Backend::exists(backend.as_ref())? {
        return Err(cairn::Error::new(
            ErrorKind::RepositoryNotFound,
            format!("repository {} does not exist", backend.location()),
        )
        .into());
    }
    let password = password(cli, false)?;
    let options = cairn::OpenOptions {
        cache_root: cli.cache_dir.as_deref(),
        key_hint: cli.key_hint.as_deref(),
    };
    let mut repo = Repository::open_with(backend, password.as_bytes(), &options)?
        .with_context(context().clone());
    super::audit::begin(cli, &repo);
    // Now, not after the command: a skipped key file or a missing cache
    // matters to every command, also to those that print no warnings.
    warn_all(cli, &mut repo);
    Ok(repo)
}

fn refuse_no_lock(cli: &Cli) -> anyhow::Result<()> {
    if cli.no_lock {
        return Err(anyhow!(
            "--no-lock is only for commands that do not write (restore, dump, check, export-tar)"
        ));
    }
    Ok(())
}

/// Takes a shared lock, waiting up to `--retry-lock` for it.
pub(crate) fn lock<S>(cli: &Cli, repo: &Repository<S>) -> anyhow::Result<cairn::LockGuard> {
    refuse_no_lock(cli)?;
    let lock = repo.lock_shared(cli.retry_lock.unwrap_or_default())?;
    if !cli.quiet {
        for what in lock.warnings() {
            eprintln!(
                "cairn: warning: {what}; commands that need an exclusive lock (prune, forget, repair, tag, key remove) refuse to run while it is there"
            );
        }
    }
    Ok(lock)
}

/// Takes an exclusive lock, waiting up to `--retry-lock` for it.
pub(crate) fn lock_exclusive<S>(
    cli: &Cli,
    repo: &Repository<S>,
) -> anyhow::Result<cairn::ExclusiveLock> {
    refuse_no_lock(cli)?;
    Ok(repo.lock_exclusive(cli.retry_lock.unwrap_or_default())?)
}

/// Takes prune's lock (backups go on), waiting up to `--retry-lock` for it.
pub(crate) fn lock_prune<S>(cli: &Cli, repo: &Repository<S>) -> anyhow::Result<cairn::PruneLock> {
    refuse_no_lock(cli)?;
    Ok(repo.lock_prune(cli.retry_lock.unwrap_or_default())?)
}

/// The shared lock of a reading command, or none with `--no-lock` (for a
/// repository on read-only media, as restic allows).
pub(crate) fn read_lock<S>(
    cli: &Cli,
    repo: &Repository<S>,
) -> anyhow::Result<Option<cairn::LockGuard>> {
    if cli.no_lock {
        return Ok(None);
    }
    lock(cli, repo).map(Some)
}

pub(crate) fn warn_all<S>(cli: &Cli, repo: &mut Repository<S>) {
    for w in repo.take_warnings() {
        if !cli.quiet {
            eprintln!("cairn: warning: {}", super::output::term_safe(&w));
        }
    }
}
