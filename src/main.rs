//! The `cairn` command line: parses arguments, calls one library function
//! per command, prints, and maps errors to restic's exit codes
//! (0 ok, 1 fatal, 3 partial backup, 10 no repository, 11 locked,
//! 12 wrong password, 130 interrupted).

use anyhow::{anyhow, Context};
use cairn::{
    BackupOptions, ChunkerParams, ErrorKind, FileKind, InitOptions, KdfParams, LocalBackend,
    ParentChoice, Repository, SnapshotFilter,
};
use clap::{Args, Parser, Subcommand};
use std::io::{IsTerminal, Write};
use std::path::PathBuf;
use std::sync::Arc;

mod cli;

#[derive(Parser)]
#[command(
    name = "cairn",
    version,
    about = "Deduplicating, encrypted backups",
    max_term_width = 100
)]
struct Cli {
    /// Repository location (a local directory).
    #[arg(short = 'r', long = "repo", env = "CAIRN_REPOSITORY", global = true)]
    repo: Option<PathBuf>,
    /// Read the password from the first line of this file.
    #[arg(long, env = "CAIRN_PASSWORD_FILE", global = true)]
    password_file: Option<PathBuf>,
    /// Run this shell command and use its output as the password.
    #[arg(long, env = "CAIRN_PASSWORD_COMMAND", global = true)]
    password_command: Option<String>,
    /// Local cache directory (default: $XDG_CACHE_HOME/cairn).
    #[arg(long, env = "CAIRN_CACHE_DIR", global = true)]
    cache_dir: Option<PathBuf>,
    /// Print machine-readable JSON.
    #[arg(long, global = true)]
    json: bool,
    /// Print only errors.
    #[arg(short, long, global = true)]
    quiet: bool,
    /// Do not lock the repository (reading commands only: restore, dump,
    /// check, export-tar), e.g. for a copy on read-only media.
    #[arg(long, global = true)]
    no_lock: bool,
    /// Wait up to this long for a conflicting lock to go away (e.g. 5m, 1h).
    #[arg(long, global = true, value_name = "DURATION", value_parser = parse_duration)]
    retry_lock: Option<std::time::Duration>,
    /// Print more (repeat for more).
    #[arg(short, long, action = clap::ArgAction::Count, global = true)]
    verbose: u8,
    /// Configuration file (default: $XDG_CONFIG_HOME/cairn/cairn.toml, then
    /// /etc/cairn/cairn.toml); read only with --profile or --config.
    #[arg(long, env = "CAIRN_CONFIG", global = true, value_name = "FILE")]
    config: Option<PathBuf>,
    /// Take settings from this profile of the configuration file (flags and
    /// CAIRN_* variables override it; see docs/cairn.example.toml).
    #[arg(long, env = "CAIRN_PROFILE", global = true, value_name = "NAME")]
    profile: Option<String>,
    /// After backup, forget, prune and check, record the run in this
    /// Prometheus textfile (see docs/monitoring.md).
    #[arg(long, env = "CAIRN_METRICS_FILE", global = true, value_name = "PATH")]
    metrics_file: Option<PathBuf>,
    /// The profile, once loaded.
    #[arg(skip)]
    loaded: Option<cairn::ops::profile::Profile>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Create a new repository.
    Init(InitArgs),
    /// Back up directories and files, or standard input.
    Backup(BackupArgs),
    /// List snapshots.
    Snapshots(FilterArgs),
    /// Restore a snapshot (SNAPSHOT or SNAPSHOT:SUBPATH) into a directory.
    Restore {
        snapshot: String,
        #[arg(short, long)]
        target: PathBuf,
        #[command(flatten)]
        filter: FilterArgs,
    },
    /// Write one file of a snapshot to standard output.
    Dump {
        snapshot: String,
        path: String,
        #[command(flatten)]
        filter: FilterArgs,
    },
    /// List the files in a snapshot (SNAPSHOT[:SUBPATH] or SNAPSHOT PATH).
    Ls(cli::browse::LsArgs),
    /// Find files by name or path pattern in all (or some) snapshots.
    Find(cli::browse::FindArgs),
    /// Show what changed between two snapshots.
    Diff(cli::browse::DiffArgs),
    /// Add, remove or set tags of snapshots.
    Tag(cli::browse::TagArgs),
    /// Print a decrypted repository object: config, snapshot ID, index ID,
    /// key ID, lock ID, or tree SNAPSHOT[:PATH].
    Cat { kind: String, id: Option<String> },
    /// Import a tarball (plain, gzip, zstd, xz or bzip2; - for standard
    /// input) as a snapshot whose tree is the tarball's contents.
    ImportTar {
        file: PathBuf,
        /// Add a tag (repeatable).
        #[arg(long = "tag")]
        tags: Vec<String>,
        /// Hostname to record (default: this host's name).
        #[arg(long)]
        host: Option<String>,
    },
    /// Write a snapshot (SNAPSHOT[:PATH], or SNAPSHOT PATH) as a tarball to
    /// standard output or -o FILE.
    ExportTar {
        snapshot: String,
        path: Option<String>,
        /// Write to this file instead of standard output.
        #[arg(short, long)]
        output: Option<PathBuf>,
        /// Compress with gzip.
        #[arg(long, conflicts_with = "zstd")]
        gzip: bool,
        /// Compress with zstd.
        #[arg(long)]
        zstd: bool,
        #[command(flatten)]
        filter: FilterArgs,
    },
    /// Show what the repository stores and, for SNAPSHOT, its restored
    /// size and distinct data: the difference is deduplication.
    Stats {
        /// Snapshots to count (default: all matching the filters).
        snapshots: Vec<String>,
        /// restore-size: file sizes as restored; raw-data: the distinct data
        /// the snapshots need, plain and stored (dedup and compression ratios).
        #[arg(long, value_enum, default_value = "restore-size")]
        mode: StatsModeArg,
        #[command(flatten)]
        filter: FilterArgs,
    },
    /// Manage the passwords (key files) that open the repository.
    #[command(subcommand)]
    Key(KeyCommand),
    /// Verify the repository: structure, and with --read-data every blob.
    /// Exit 0 when clean, 1 when damage was found.
    Check(CheckArgs),
    /// Delete data no snapshot uses: unused packs, and repack packs with
    /// more unused data than --max-unused allows.
    Prune(PruneArgs),
    /// Rebuild the index from the pack headers, or rewrite damaged snapshots.
    #[command(subcommand)]
    Repair(RepairCommand),
    /// Remove snapshots: the given ones, or those a --keep-* policy does not
    /// keep (per group; see docs/retention.md). Data is freed only by prune.
    Forget(cli::forget::ForgetArgs),
    /// Remove stale locks (all locks with --remove-all).
    Unlock {
        #[arg(long)]
        remove_all: bool,
    },
    /// Run the steps of the profile's `run` list (e.g. backup, forget
    /// --prune, check), stopping at the first that fails.
    Run,
    /// Print a shell completion script (bash, zsh, fish, elvish, powershell).
    Completions { shell: clap_complete::Shell },
    /// Write the man page to standard output, or all pages into --dir.
    #[command(hide = true)]
    Man {
        #[arg(long)]
        dir: Option<PathBuf>,
    },
}

#[derive(Subcommand)]
enum KeyCommand {
    /// Add a password: read from --new-password-file, or prompted twice.
    Add {
        #[arg(long)]
        new_password_file: Option<PathBuf>,
    },
    /// List the key files (the one this password opened is marked).
    List,
    /// Remove a key file (a password) by id prefix. The key in use and the
    /// last intact key cannot be removed.
    Remove { id: String },
    /// Change this password: add a key for the new one, remove the old.
    Passwd {
        #[arg(long)]
        new_password_file: Option<PathBuf>,
    },
}

/// A new password from a file's first line, or prompted twice.
fn new_password(file: Option<&std::path::Path>) -> anyhow::Result<zeroize::Zeroizing<String>> {
    let new = match file {
        Some(file) => {
            let text = std::fs::read_to_string(file)
                .with_context(|| format!("cannot read {}", file.display()))?;
            text.lines().next().unwrap_or("").to_string()
        }
        None if std::io::stdin().is_terminal() => {
            let first = rpassword::prompt_password("enter new password: ")?;
            if first != rpassword::prompt_password("enter new password again: ")? {
                return Err(anyhow!("passwords do not match"));
            }
            first
        }
        None => {
            return Err(anyhow!(
                "a new password needs --new-password-file or a terminal"
            ))
        }
    };
    if new.is_empty() {
        return Err(anyhow!("an empty password is not allowed"));
    }
    Ok(zeroize::Zeroizing::new(new))
}

#[derive(Args)]
struct PruneArgs {
    /// Unused data to tolerate in partly used packs: a percentage of the
    /// used data (default 5%), a size (e.g. 100M), or "unlimited".
    #[arg(long, default_value = "5%")]
    max_unused: String,
    /// Repack at most this much pack data (e.g. 1G).
    #[arg(long, value_name = "SIZE")]
    max_repack_size: Option<String>,
    /// Show what would be deleted and repacked; change nothing.
    #[arg(short = 'n', long)]
    dry_run: bool,
}

#[derive(Subcommand)]
enum RepairCommand {
    /// Rebuild every index file (and the local cache) from the pack headers.
    Index {
        /// Also read and verify every blob: packs with damaged blobs are
        /// rewritten without them (their intact blobs move to new packs).
        #[arg(long)]
        read_data: bool,
    },
    /// Rewrite snapshots that reference missing or damaged data, dropping
    /// only the files and directories that cannot be restored.
    Snapshots {
        /// Delete the damaged originals once their repaired copies are saved.
        #[arg(long)]
        forget: bool,
        /// Show what would be dropped; write nothing.
        #[arg(short = 'n', long)]
        dry_run: bool,
    },
}

#[derive(Args)]
struct CheckArgs {
    /// Also read, decrypt, decompress and re-hash every blob of every pack.
    #[arg(long)]
    read_data: bool,
    /// Read only a subset of the packs: n/m (the n-th of m slices), p% or a
    /// size such as 2G (random packs).
    #[arg(long, value_name = "SUBSET", conflicts_with = "read_data")]
    read_data_subset: Option<String>,
    /// Without the password: compare every file with its name (the BLAKE3
    /// of its bytes); with --read-data, packs too.
    #[arg(long)]
    no_password: bool,
}

#[derive(Args)]
struct InitArgs {
    /// zstd level for new blobs (-7..22).
    #[arg(long, default_value_t = cairn::engine::repository::ZSTD_LEVEL_DEFAULT, allow_hyphen_values = true)]
    compression_level: i32,
    /// Target pack size in MiB.
    #[arg(long, default_value_t = 32)]
    pack_size: u32,
    /// Chunk sizes in KiB as MIN,AVG,MAX (default 16,64,256).
    #[arg(long)]
    chunk_sizes: Option<String>,
    /// Argon2id memory in KiB (default 65536). Lower only for tests.
    #[arg(long, hide = true)]
    kdf_memory_kib: Option<u32>,
    /// Argon2id passes (default 3).
    #[arg(long, hide = true)]
    kdf_iterations: Option<u32>,
}

#[derive(Args)]
struct BackupArgs {
    /// Paths to back up; with --stdin-from-command, the command and its
    /// arguments (after --).
    paths: Vec<PathBuf>,
    /// Read the data to back up from standard input.
    #[arg(long)]
    stdin: bool,
    /// Run the command given after -- (no shell) and back up its standard
    /// output; if it fails, no snapshot is written.
    #[arg(long, conflicts_with = "stdin")]
    stdin_from_command: bool,
    /// File name for --stdin data in the snapshot.
    #[arg(long, default_value = "stdin")]
    stdin_filename: String,
    /// Add a tag (repeatable).
    #[arg(long = "tag")]
    tags: Vec<String>,
    /// Hostname to record (default: this host's name).
    #[arg(long)]
    host: Option<String>,
    /// Use this snapshot as parent instead of the latest matching one.
    #[arg(long)]
    parent: Option<String>,
    /// Read every file, ignoring the parent snapshot.
    #[arg(long)]
    force: bool,
    /// Record this time instead of now: "YYYY-MM-DD HH:MM:SS" (local time)
    /// or RFC 3339 with its offset.
    #[arg(long, value_name = "TIME")]
    time: Option<String>,
    #[command(flatten)]
    exclude: ExcludeArgs,
}

/// What a directory backup leaves out (gitignore-style patterns; see
/// `cairn::exclude`).
#[derive(Args, Clone, Default)]
struct ExcludeArgs {
    /// Leave out paths matching this pattern (repeatable).
    #[arg(short = 'e', long = "exclude", value_name = "PATTERN")]
    patterns: Vec<String>,
    /// Like --exclude, ignoring case.
    #[arg(long = "iexclude", value_name = "PATTERN")]
    ipatterns: Vec<String>,
    /// Read patterns from this file, one per line (# comments).
    #[arg(long = "exclude-file", value_name = "FILE")]
    files: Vec<PathBuf>,
    /// Leave out directories holding a valid CACHEDIR.TAG.
    #[arg(long)]
    exclude_caches: bool,
    /// Leave out directories holding a file of this name (repeatable).
    #[arg(long = "exclude-if-present", value_name = "NAME")]
    if_present: Vec<String>,
    /// Do not cross into other file systems (mount points are kept, empty).
    #[arg(short = 'x', long)]
    one_file_system: bool,
}

impl ExcludeArgs {
    /// The excluder from these flags plus the profile's patterns.
    fn excluder(
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

#[derive(Args, Clone, Default)]
struct FilterArgs {
    /// Only snapshots of this host (repeatable).
    #[arg(long = "host")]
    hosts: Vec<String>,
    /// Only snapshots with this tag, or all of a comma-separated list (repeatable).
    #[arg(long = "tag")]
    tags: Vec<String>,
    /// Only snapshots including this path (repeatable).
    #[arg(long = "path")]
    paths: Vec<String>,
}

impl FilterArgs {
    fn filter(&self) -> SnapshotFilter {
        SnapshotFilter {
            hosts: self.hosts.clone(),
            tags: self.tags.clone(),
            paths: self.paths.clone(),
        }
    }
}

/// The process's one operation context: the signal handler interrupts it,
/// the progress display reads it, and every repository runs under it.
static CONTEXT: std::sync::OnceLock<cairn::Context> = std::sync::OnceLock::new();

pub(crate) fn context() -> &'static cairn::Context {
    CONTEXT.get_or_init(cairn::Context::new)
}

extern "C" fn on_signal(_: std::ffi::c_int) {
    // Set before the handler was installed, so `get` finds it: one atomic
    // load and one atomic store, both async-signal-safe.
    if let Some(ctx) = CONTEXT.get() {
        ctx.interrupt();
    }
}

fn main() {
    // glibc hands memory back to the kernel as soon as an arena's free top
    // exceeds 128 KiB (more once its adaptive thresholds have grown), so a
    // restore's per-blob buffers and a backup's small-file buffers were
    // faulted in again and again: half of a restore's page faults came from
    // zstd writing into fresh output buffers. Blocks under 8 MiB (blobs,
    // small files, pack pieces) now come from the arenas, which keep up to
    // 32 MiB free for reuse; larger ones (8 MiB read buffers, whole packs
    // read by `check`, the KDF's 64 MiB) are still mapped and unmapped
    // whole. 32 and 256 MiB were tried: faster, but `check` and a backup
    // into 5 M blobs then held far more (docs/PERFORMANCE.md).
    // Before any thread starts.
    cairn::sys::set_allocation_thresholds(8 * 1024 * 1024, 32 * 1024 * 1024);
    context();
    cairn::sys::on_interrupt_signals(on_signal);
    // A panic is a bug, but the user still gets one line, not a backtrace.
    std::panic::set_hook(Box::new(|info| {
        let location = info
            .location()
            .map(|l| format!(" at {}:{}", l.file(), l.line()))
            .unwrap_or_default();
        let message = info
            .payload()
            .downcast_ref::<&str>()
            .map(|s| s.to_string())
            .or_else(|| info.payload().downcast_ref::<String>().cloned())
            .unwrap_or_else(|| "unknown panic".into());
        // `cairn cat … | head`: the reader went away. Not a bug; end quietly
        // with the status a shell gives a process killed by SIGPIPE.
        if message.starts_with("failed printing to stdout") && message.contains("Broken pipe") {
            std::process::exit(cairn::sys::EXIT_BROKEN_PIPE);
        }
        eprintln!("cairn: internal error{location}: {message} (please report this bug)");
    }));
    let mut cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) => {
            let code = if e.use_stderr() { 1 } else { 0 };
            let _ = e.print();
            std::process::exit(code);
        }
    };
    if let Err(e) = cli::profile::apply(&mut cli) {
        std::process::exit(report_error(&e));
    }
    std::process::exit(execute(&cli));
}

/// Runs the command, prints its error, records metrics; the exit code.
fn execute(cli: &Cli) -> i32 {
    let started = cli::metrics::start();
    let display = cli::progress::start(cli);
    let result = run(cli);
    // The progress line is cleared before the summary or error is printed.
    drop(display);
    let code = match result {
        Ok(code) => code,
        Err(e) => report_error(&e),
    };
    cli::metrics::write(cli, code, started);
    code
}

/// Prints an error as one line; its exit code.
fn report_error(e: &anyhow::Error) -> i32 {
    if is_broken_pipe(e) {
        return cairn::sys::EXIT_BROKEN_PIPE;
    }
    let cairn_error = e.chain().find_map(|c| c.downcast_ref::<cairn::Error>());
    let kind = cairn_error.map(|c| c.kind());
    let mut message = one_line(e);
    if let Some(hint) = cairn_error.and_then(hint) {
        message.push_str("; ");
        message.push_str(hint);
    }
    eprintln!("cairn: error: {message}");
    kind.map_or(1, ErrorKind::exit_code)
}

/// The error and its causes on one line. A `cairn::Error`'s message already
/// ends with its OS error, so that cause is not printed again.
fn one_line(e: &anyhow::Error) -> String {
    let mut parts: Vec<String> = Vec::new();
    let mut after_cairn = false;
    for cause in e.chain() {
        if !after_cairn {
            parts.push(cause.to_string());
        }
        after_cairn = cause.downcast_ref::<cairn::Error>().is_some();
    }
    parts.join(": ").replace('\n', " ")
}

/// What the user can do next, for errors whose remedy is a cairn command
/// (the library's messages say what happened, not which command to run).
fn hint(e: &cairn::Error) -> Option<&'static str> {
    let message = e.to_string();
    match e.kind() {
        ErrorKind::Locked if message.starts_with("repository is locked") => {
            Some("run `cairn unlock` if that process is gone")
        }
        ErrorKind::RepositoryNotFound => Some("run `cairn init` to create it"),
        ErrorKind::Corrupt if message.contains("prune refuses to run") => {
            Some("run `cairn check` and repair first")
        }
        ErrorKind::Corrupt if message.contains("prune stopped before deleting") => {
            Some("run `cairn check --read-data`")
        }
        _ => None,
    }
}

/// Our standard output was closed by its reader (`cairn ls | head`): end
/// quietly, as a process killed by SIGPIPE would.
fn is_broken_pipe(e: &anyhow::Error) -> bool {
    e.chain().any(|cause| {
        cause
            .downcast_ref::<std::io::Error>()
            .is_some_and(|io| io.kind() == std::io::ErrorKind::BrokenPipe)
            || cause
                .downcast_ref::<cairn::Error>()
                .and_then(cairn::Error::io_error)
                .is_some_and(|io| io.kind() == std::io::ErrorKind::BrokenPipe)
    })
}

fn run(cli: &Cli) -> anyhow::Result<i32> {
    match &cli.command {
        Command::Init(args) => init(cli, args),
        Command::Backup(args) => backup(cli, args),
        Command::Snapshots(filter) => snapshots(cli, filter),
        Command::Restore {
            snapshot,
            target,
            filter,
        } => restore(cli, snapshot, target, filter),
        Command::Dump {
            snapshot,
            path,
            filter,
        } => dump(cli, snapshot, path, filter),
        Command::Ls(args) => cli::browse::ls(cli, args),
        Command::Find(args) => cli::browse::find(cli, args),
        Command::Diff(args) => cli::browse::diff(cli, args),
        Command::Tag(args) => cli::browse::tag(cli, args),
        Command::Cat { kind, id } => cat(cli, kind, id.as_deref()),
        Command::Forget(args) => cli::forget::forget(cli, args),
        Command::ImportTar { file, tags, host } => import_tar(cli, file, tags, host),
        Command::Stats {
            snapshots,
            mode,
            filter,
        } => stats(cli, snapshots, *mode, filter),
        Command::ExportTar {
            snapshot,
            path,
            output,
            gzip,
            zstd,
            filter,
        } => {
            let compression = match (gzip, zstd) {
                (true, _) => cairn::Compression::Gzip,
                (_, true) => cairn::Compression::Zstd,
                _ => cairn::Compression::None,
            };
            export_tar(
                cli,
                snapshot,
                path.as_deref(),
                output.as_deref(),
                compression,
                filter,
            )
        }
        Command::Key(KeyCommand::Add { new_password_file }) => {
            let repo = open(cli)?;
            let new = new_password(new_password_file.as_deref())?;
            let id = repo.add_key(new.as_bytes(), KdfParams::DEFAULT)?;
            if cli.json {
                println!("{}", serde_json::json!({"added": id.to_hex()}));
            } else if !cli.quiet {
                println!("added key {}", id.short());
            }
            Ok(0)
        }
        Command::Key(KeyCommand::Remove { id }) => {
            let repo = open(cli)?;
            let lock = lock_exclusive(cli, &repo)?;
            let removed = repo.remove_key(id, &lock)?;
            if cli.json {
                println!("{}", serde_json::json!({"removed": removed}));
            } else if !cli.quiet {
                println!("removed key {}", &removed[..8]);
            }
            Ok(0)
        }
        Command::Key(KeyCommand::Passwd { new_password_file }) => {
            let mut repo = open(cli)?;
            let lock = lock_exclusive(cli, &repo)?;
            let new = new_password(new_password_file.as_deref())?;
            let old = repo.current_key().to_string();
            let id = repo.change_password(new.as_bytes(), KdfParams::DEFAULT, &lock)?;
            if cli.json {
                println!(
                    "{}",
                    serde_json::json!({"added": id.to_hex(), "removed": old})
                );
            } else if !cli.quiet {
                println!("password changed: key {} replaces the old one", id.short());
            }
            Ok(0)
        }
        Command::Key(KeyCommand::List) => {
            let repo = open(cli)?;
            let keys = repo.list_keys()?;
            if cli.json {
                let values: Vec<_> = keys
                    .iter()
                    .map(|(name, k)| match k {
                        Ok(k) => serde_json::json!({"id": name, "current": name == repo.current_key(),
                            "created": k.created, "hostname": k.hostname,
                            "username": k.username, "kdf": k.kdf, "kdf_params": k.kdf_params}),
                        Err(e) => serde_json::json!({"id": name, "current": false, "error": e.to_string()}),
                    })
                    .collect();
                println!("{}", serde_json::to_string(&values)?);
            } else {
                for (name, k) in &keys {
                    match k {
                        Ok(k) => println!(
                            "{}{} {}  {}@{}",
                            if name == repo.current_key() { "*" } else { " " },
                            &name[..8.min(name.len())],
                            k.created,
                            k.username,
                            k.hostname
                        ),
                        Err(e) => println!("{}  damaged: {e}", &name[..8.min(name.len())]),
                    }
                }
            }
            Ok(0)
        }
        Command::Check(args) => check(cli, args),
        Command::Repair(command) => repair(cli, command),
        Command::Prune(args) => {
            let options = cairn::PruneOptions {
                max_unused: args.max_unused.parse()?,
                max_repack_bytes: args
                    .max_repack_size
                    .as_deref()
                    .map(cairn::units::parse_size)
                    .transpose()?,
                dry_run: args.dry_run,
            };
            let repo = open(cli)?;
            let lock = lock_exclusive(cli, &repo)?;
            let mut repo = repo.load_index()?;
            let outcome = cairn::prune(&mut repo, &lock, &options)?;
            warn_all(cli, &mut repo);
            cli::metrics::note_prune(&outcome);
            print_prune(cli, &outcome)?;
            Ok(0)
        }
        Command::Run => cli::profile::run_steps(cli),
        Command::Completions { shell } => cli::shell::completions(*shell),
        Command::Man { dir } => cli::shell::man(dir.as_deref()),
        Command::Unlock { remove_all } => {
            let repo = open(cli)?;
            let removed = repo.remove_locks(*remove_all)?;
            if cli.json {
                println!("{}", serde_json::json!({"removed": removed}));
            } else if !cli.quiet {
                println!("removed {removed} lock(s)");
            }
            Ok(0)
        }
    }
}

fn backend(cli: &Cli) -> anyhow::Result<Arc<LocalBackend>> {
    let repo = cli
        .repo
        .as_ref()
        .ok_or_else(|| anyhow!("no repository given: use -r/--repo or set CAIRN_REPOSITORY"))?;
    Ok(Arc::new(LocalBackend::new(repo)))
}

/// The password, from (in order) CAIRN_PASSWORD_COMMAND, CAIRN_PASSWORD_FILE,
/// CAIRN_PASSWORD, or a prompt when a terminal is attached.
fn password(cli: &Cli, confirm: bool) -> anyhow::Result<zeroize::Zeroizing<String>> {
    let strip = |mut s: String| {
        if let Some(line_end) = s.find('\n') {
            s.truncate(line_end);
        }
        if s.ends_with('\r') {
            s.pop();
        }
        zeroize::Zeroizing::new(s)
    };
    if let Some(command) = &cli.password_command {
        let out = std::process::Command::new("sh")
            .arg("-c")
            .arg(command)
            .stdin(std::process::Stdio::null())
            .stderr(std::process::Stdio::inherit())
            .output()
            .with_context(|| format!("cannot run password command {command:?}"))?;
        if !out.status.success() {
            return Err(cairn::Error::new(
                ErrorKind::Command,
                format!("password command failed ({})", out.status),
            )
            .into());
        }
        return Ok(strip(
            String::from_utf8(out.stdout).context("password command printed non-UTF-8")?,
        ));
    }
    if let Some(file) = &cli.password_file {
        let text = std::fs::read_to_string(file)
            .with_context(|| format!("cannot read password file {}", file.display()))?;
        return Ok(strip(text));
    }
    if let Ok(pw) = std::env::var("CAIRN_PASSWORD") {
        return Ok(zeroize::Zeroizing::new(pw));
    }
    if std::io::stderr().is_terminal() || std::io::stdin().is_terminal() {
        let first = rpassword::prompt_password("enter password for repository: ")
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
    Err(anyhow!(
        "no password given: set CAIRN_PASSWORD_FILE, CAIRN_PASSWORD_COMMAND or CAIRN_PASSWORD"
    ))
}

fn open(cli: &Cli) -> anyhow::Result<Repository<cairn::Opened>> {
    let backend = backend(cli)?;
    if !cairn::Backend::exists(backend.as_ref())? {
        return Err(cairn::Error::new(
            ErrorKind::RepositoryNotFound,
            format!("repository {} does not exist", backend.location()),
        )
        .into());
    }
    let password = password(cli, false)?;
    Ok(
        Repository::open(backend, password.as_bytes(), cli.cache_dir.as_deref())?
            .with_context(context().clone()),
    )
}

use cairn::Backend as _;

fn refuse_no_lock(cli: &Cli) -> anyhow::Result<()> {
    if cli.no_lock {
        return Err(anyhow!(
            "--no-lock is only for commands that do not write (restore, dump, check, export-tar)"
        ));
    }
    Ok(())
}

/// Takes a shared lock, waiting up to `--retry-lock` for it.
fn lock<S>(cli: &Cli, repo: &Repository<S>) -> anyhow::Result<cairn::LockGuard> {
    refuse_no_lock(cli)?;
    Ok(repo.lock_shared(cli.retry_lock.unwrap_or_default())?)
}

/// Takes an exclusive lock, waiting up to `--retry-lock` for it.
fn lock_exclusive<S>(cli: &Cli, repo: &Repository<S>) -> anyhow::Result<cairn::ExclusiveLock> {
    refuse_no_lock(cli)?;
    Ok(repo.lock_exclusive(cli.retry_lock.unwrap_or_default())?)
}

/// The shared lock of a reading command, or none with `--no-lock` (for a
/// repository on read-only media, as restic allows).
fn read_lock<S>(cli: &Cli, repo: &Repository<S>) -> anyhow::Result<Option<cairn::LockGuard>> {
    if cli.no_lock {
        return Ok(None);
    }
    lock(cli, repo).map(Some)
}

/// Parses `90s`, `5m`, `2h`, `1d` or plain seconds.
fn parse_duration(text: &str) -> Result<std::time::Duration, String> {
    let text = text.trim();
    let (digits, unit) = text.split_at(
        text.find(|c: char| !c.is_ascii_digit())
            .unwrap_or(text.len()),
    );
    let n: u64 = digits
        .parse()
        .map_err(|_| format!("bad duration {text:?}: use e.g. 30s, 5m, 2h"))?;
    let seconds = match unit {
        "" | "s" => n,
        "m" => n * 60,
        "h" => n * 3600,
        "d" => n * 86400,
        _ => return Err(format!("bad duration {text:?}: use e.g. 30s, 5m, 2h")),
    };
    Ok(std::time::Duration::from_secs(seconds))
}

fn warn_all<S>(cli: &Cli, repo: &mut Repository<S>) {
    for w in repo.take_warnings() {
        if !cli.quiet {
            eprintln!("cairn: warning: {w}");
        }
    }
}

fn init(cli: &Cli, args: &InitArgs) -> anyhow::Result<i32> {
    let backend = backend(cli)?;
    let mut options = InitOptions {
        zstd_level: args.compression_level,
        pack_size_target: args
            .pack_size
            .checked_mul(1024 * 1024)
            .ok_or_else(|| anyhow!("--pack-size too large"))?,
        ..InitOptions::default()
    };
    if let Some(sizes) = &args.chunk_sizes {
        let parts: Vec<u32> = sizes
            .split(',')
            .map(|p| {
                p.trim()
                    .parse::<u32>()
                    .ok()
                    .and_then(|k| k.checked_mul(1024))
            })
            .collect::<Option<_>>()
            .context("--chunk-sizes takes MIN,AVG,MAX in KiB")?;
        let [size_min, size_avg, size_max] = parts[..] else {
            return Err(anyhow!("--chunk-sizes takes MIN,AVG,MAX in KiB"));
        };
        options.chunker = ChunkerParams {
            size_min,
            size_avg,
            size_max,
        };
    }
    options.kdf = KdfParams {
        memory_kib: args.kdf_memory_kib.unwrap_or(KdfParams::DEFAULT.memory_kib),
        iterations: args.kdf_iterations.unwrap_or(KdfParams::DEFAULT.iterations),
        ..KdfParams::DEFAULT
    };
    if backend.exists()? {
        return Err(cairn::Error::new(
            ErrorKind::RepositoryExists,
            format!("a repository already exists at {}", backend.location()),
        )
        .into());
    }
    let password = password(cli, true)?;
    if password.is_empty() {
        return Err(anyhow!("an empty password is not allowed"));
    }
    let id = Repository::init(backend.clone(), password.as_bytes(), &options)?;
    if cli.json {
        println!(
            "{}",
            serde_json::json!({"message_type": "initialized", "id": id.to_hex(), "repository": backend.location()})
        );
    } else if !cli.quiet {
        println!(
            "created cairn repository {} at {}",
            id.short(),
            backend.location()
        );
        println!("Without the password the data cannot be read: keep it safe.");
    }
    Ok(0)
}

fn backup(cli: &Cli, args: &BackupArgs) -> anyhow::Result<i32> {
    if args.stdin && !args.paths.is_empty() {
        return Err(anyhow!("--stdin takes no paths"));
    }
    if args.stdin_from_command && args.paths.is_empty() {
        return Err(anyhow!(
            "--stdin-from-command needs a command: cairn backup --stdin-from-command -- CMD ARGS..."
        ));
    }
    if cli::profile::runs_sources(cli, args) {
        return cli::profile::backup_sources(cli, args);
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
        tags: cli::profile::backup_tags(cli, &args.tags),
        host: cli::profile::backup_host(cli, &args.host),
        time,
        exclude: std::sync::Arc::new(
            args.exclude
                .excluder(&cli::profile::profile_excludes(cli, None))?,
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

fn tag_list(tags: &[String]) -> Vec<String> {
    tags.iter()
        .flat_map(|t| t.split(','))
        .filter(|t| !t.is_empty())
        .map(String::from)
        .collect()
}

/// Prints a backup's summary and warnings; returns the exit code.
fn report_backup(cli: &Cli, outcome: &cairn::BackupOutcome) -> anyhow::Result<i32> {
    cli::metrics::note_backup(outcome);
    for u in &outcome.unreadable {
        eprintln!(
            "cairn: warning: cannot read {}: {}",
            u.path.display(),
            u.reason
        );
    }
    let s = &outcome.snapshot.summary;
    if cli.json {
        let mut summary = serde_json::to_value(s)?;
        summary["message_type"] = "summary".into();
        summary["snapshot_id"] = outcome.id.to_hex().into();
        summary["parent"] = serde_json::to_value(outcome.snapshot.parent)?;
        println!("{summary}");
    } else if !cli.quiet {
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
    }
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

pub(crate) fn print_prune(cli: &Cli, o: &cairn::PruneOutcome) -> anyhow::Result<()> {
    if cli.json {
        let mut value = serde_json::to_value(o)?;
        value["bytes_freed"] = o.bytes_freed().into();
        println!("{value}");
        return Ok(());
    }
    if cli.quiet {
        return Ok(());
    }
    let would = if o.dry_run { "would " } else { "" };
    println!(
        "used:   {} blobs, {}; unused: {} blobs, {}",
        o.blobs_used,
        human_bytes(o.bytes_used),
        o.blobs_unused,
        human_bytes(o.bytes_unused)
    );
    println!(
        "{would}delete {} unused pack(s) and {} pack(s) no index names; {would}repack {} pack(s)",
        o.packs_deleted, o.packs_unindexed_deleted, o.packs_repacked
    );
    if o.temp_files_deleted > 0 {
        println!(
            "{would}delete {} temporary file(s) left by interrupted writes",
            o.temp_files_deleted
        );
    }
    println!(
        "{would}free {} ({} deleted, {} written); unused data left: {}",
        human_bytes(o.bytes_freed()),
        human_bytes(o.bytes_deleted),
        human_bytes(o.bytes_written),
        human_bytes(o.bytes_unused_remaining)
    );
    if o.dry_run {
        println!("dry run: nothing was changed");
    }
    Ok(())
}

fn repair(cli: &Cli, command: &RepairCommand) -> anyhow::Result<i32> {
    let repo = open(cli)?;
    let lock = lock_exclusive(cli, &repo)?;
    let mut repo = repo.load_index()?;
    match command {
        RepairCommand::Index { read_data } => {
            let outcome = cairn::repair_index(&mut repo, &lock, *read_data)?;
            warn_all(cli, &mut repo);
            if cli.json {
                println!("{}", serde_json::to_string(&outcome)?);
            } else {
                for p in &outcome.packs_unreadable {
                    eprintln!("cairn: warning: pack {} not indexed: {}", p.pack, p.reason);
                }
                if outcome.packs_salvaged > 0 {
                    println!(
                        "salvaged {} blobs from {} damaged pack(s) into new packs; {} blobs were lost",
                        outcome.blobs_salvaged, outcome.packs_salvaged, outcome.blobs_lost
                    );
                }
                if !cli.quiet {
                    println!(
                        "indexed {} blobs in {} packs; wrote {} index file(s), removed {} old one(s)",
                        outcome.blobs_indexed,
                        outcome.packs_indexed,
                        outcome.index_files_written,
                        outcome.index_files_removed
                    );
                }
            }
            Ok(if outcome.packs_unreadable.is_empty() {
                0
            } else {
                1
            })
        }
        RepairCommand::Snapshots { forget, dry_run } => {
            warn_all(cli, &mut repo);
            let outcome = cairn::repair_snapshots(&mut repo, &lock, *forget, *dry_run)?;
            if cli.json {
                println!("{}", serde_json::to_string(&outcome)?);
                return Ok(0);
            }
            for s in &outcome.snapshots {
                println!("snapshot {}:", s.original.short());
                for d in &s.dropped {
                    println!("  dropped {}: {}", d.path, d.reason);
                }
                match (s.repaired, s.restorable) {
                    _ if s.already_repaired => println!("  already repaired by an earlier run"),
                    (_, false) => {
                        println!("  nothing restorable is left (root directory unreadable)")
                    }
                    (Some(new), true) => println!("  saved as snapshot {}", new.short()),
                    (None, true) => println!("  would be rewritten"),
                }
                if s.forgotten {
                    println!("  removed the damaged original");
                }
            }
            if !cli.quiet {
                println!(
                    "{} of {} snapshot(s) needed repair{}",
                    outcome.snapshots.len(),
                    outcome.snapshots_checked,
                    if *dry_run {
                        " (dry run: nothing written)"
                    } else {
                        ""
                    }
                );
            }
            Ok(0)
        }
    }
}

fn check(cli: &Cli, args: &CheckArgs) -> anyhow::Result<i32> {
    let report = if args.no_password {
        if args.read_data_subset.is_some() {
            return Err(anyhow!(
                "--no-password reads all packs or none: use --read-data"
            ));
        }
        let backend = backend(cli)?;
        if !backend.exists()? {
            return Err(cairn::Error::new(
                ErrorKind::RepositoryNotFound,
                format!("repository {} does not exist", backend.location()),
            )
            .into());
        }
        cairn::check_keyless(backend.as_ref(), args.read_data, context())?
    } else {
        let read_data = match (&args.read_data_subset, args.read_data) {
            (Some(subset), _) => subset.parse::<cairn::ReadData>()?,
            (None, true) => cairn::ReadData::All,
            (None, false) => cairn::ReadData::None,
        };
        let repo = open(cli)?;
        let _lock = read_lock(cli, &repo)?;
        let options = cairn::CheckOptions {
            read_data,
            ..cairn::CheckOptions::default()
        };
        cairn::check(&repo, &options)?
    };
    cli::metrics::note_check(&report);
    if cli.json {
        let mut value = serde_json::to_value(&report)?;
        value["clean"] = report.is_clean().into();
        value["verdict"] = report.verdict().to_string().into();
        value["notes"] = cli::hints::note_texts(&report).into();
        value["hints"] = cli::hints::hint_texts(&report).into();
        println!("{value}");
    } else {
        if !cli.quiet {
            println!(
                "checked {} key file(s), {} index file(s), {} pack(s), {} snapshot(s), {} tree(s)",
                report.keys, report.index_files, report.packs, report.snapshots, report.trees
            );
            if report.packs_read > 0 {
                println!(
                    "read {} pack(s), {}",
                    report.packs_read,
                    human_bytes(report.bytes_read)
                );
            }
            for note in cli::hints::note_texts(&report) {
                println!("note: {note}");
            }
        }
        for p in &report.problems {
            println!("error: {} {}: {}", p.object, p.status, p.message);
        }
        if report.problems_unlisted > 0 {
            println!(
                "error: ... and {} more problem(s)",
                report.problems_unlisted
            );
        }
        for d in &report.damaged_paths {
            println!(
                "damaged: snapshot {} {}: {}",
                d.snapshot.short(),
                d.path,
                d.detail
            );
        }
        if report.damaged_paths_unlisted > 0 {
            println!(
                "damaged: ... and {} more path(s)",
                report.damaged_paths_unlisted
            );
        }
        if !cli.quiet {
            for hint in cli::hints::hint_texts(&report) {
                println!("hint: {hint}");
            }
        }
        println!("{}", report.verdict());
    }
    Ok(if report.is_clean() { 0 } else { 1 })
}

fn import_tar(
    cli: &Cli,
    file: &std::path::Path,
    tags: &[String],
    host: &Option<String>,
) -> anyhow::Result<i32> {
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
    let outcome = cairn::import_tar(&mut repo, &lock, &mut input, &name, &options)?;
    report_backup(cli, &outcome)
}

fn export_tar(
    cli: &Cli,
    selector: &str,
    path: Option<&str>,
    output: Option<&std::path::Path>,
    compression: cairn::Compression,
    filter: &FilterArgs,
) -> anyhow::Result<i32> {
    let (sel, subpath) = split_selector(selector);
    let subpath = path.unwrap_or(subpath);
    let mut repo = open(cli)?;
    let _lock = read_lock(cli, &repo)?;
    let (_, snapshot) = repo.find_snapshot(sel, &filter.filter())?;
    let mut repo = repo.load_index()?;
    warn_all(cli, &mut repo);
    let outcome = match output {
        Some(file) => {
            let f = std::fs::File::create(file)
                .with_context(|| format!("cannot create {}", file.display()))?;
            let mut out = std::io::BufWriter::with_capacity(1 << 20, f);
            let result = cairn::export_tar(&repo, &snapshot, subpath, &mut out, compression);
            if result.is_err() {
                // Half a tarball must not pass for a whole one.
                let _ = std::fs::remove_file(file);
            }
            result?
        }
        None => {
            let stdout = std::io::stdout();
            if stdout.is_terminal() {
                return Err(anyhow!(
                    "not writing a tarball to a terminal: redirect standard output or use -o FILE"
                ));
            }
            let mut out = std::io::BufWriter::with_capacity(1 << 20, stdout.lock());
            cairn::export_tar(&repo, &snapshot, subpath, &mut out, compression)?
        }
    };
    for s in &outcome.skipped {
        eprintln!("cairn: warning: {s}");
    }
    Ok(0)
}

#[derive(Clone, Copy, clap::ValueEnum)]
enum StatsModeArg {
    RestoreSize,
    RawData,
}

fn stats(
    cli: &Cli,
    selectors: &[String],
    mode: StatsModeArg,
    filter: &FilterArgs,
) -> anyhow::Result<i32> {
    let mut repo = open(cli)?;
    let chosen: Vec<(cairn::SnapshotId, cairn::Snapshot)> = if selectors.is_empty() {
        repo.snapshots(&filter.filter())?
    } else {
        selectors
            .iter()
            .map(|sel| repo.find_snapshot(sel, &filter.filter()))
            .collect::<cairn::Result<_>>()?
    };
    let mut repo = repo.load_index()?;
    warn_all(cli, &mut repo);
    let single_id = match (selectors.len(), chosen.first()) {
        (1, Some((id, _))) => Some(*id),
        _ => None,
    };
    let mode = match mode {
        StatsModeArg::RestoreSize => cairn::StatsMode::RestoreSize,
        StatsModeArg::RawData => cairn::StatsMode::RawData,
    };
    let snapshots: Vec<cairn::Snapshot> = chosen.into_iter().map(|(_, s)| s).collect();
    let selection = cairn::selection_stats(&repo, &snapshots, mode)?;
    // One named snapshot: its own figures, which are the selection's.
    let single = single_id.map(|id| (id, cairn::SnapshotStats::from(&selection)));
    let r = cairn::repository_stats(&repo)?;
    if cli.json {
        let mut v = serde_json::json!({"repository": r, "selection": selection});
        if let Some((id, s)) = &single {
            v["snapshot"] = serde_json::to_value(s)?;
            v["snapshot"]["id"] = id.to_hex().into();
            v["snapshot"]["short_id"] = id.short().into();
        }
        println!("{v}");
        return Ok(0);
    }
    if let Some((id, s)) = &single {
        println!("snapshot {}", id.short());
        println!("  files: {}, dirs: {}", s.files, s.dirs);
        println!("  total size:         {}", human_bytes(s.total_size));
        println!(
            "  distinct data:      {} in {} blobs",
            human_bytes(s.data_blob_bytes),
            s.data_blobs
        );
    }
    let sel = &selection;
    match sel.mode {
        cairn::StatsMode::RestoreSize => println!(
            "{} snapshot(s), restore size: {} in {} files, {} dirs",
            sel.snapshots,
            human_bytes(sel.total_size),
            sel.files,
            sel.dirs
        ),
        cairn::StatsMode::RawData => println!(
            "{} snapshot(s), raw data: {} in {} blobs, stored as {} (dedup {:.2}x, compression {:.2}x)",
            sel.snapshots,
            human_bytes(sel.raw_bytes),
            sel.blobs,
            human_bytes(sel.stored_bytes),
            sel.dedup_ratio,
            sel.compression_ratio
        ),
    }
    println!("repository: {} snapshots", r.snapshots);
    println!(
        "  unique blobs:       {} in {} blobs",
        human_bytes(r.blob_bytes),
        r.blobs
    );
    println!(
        "  stored in packs:    {} in {} packs",
        human_bytes(r.pack_bytes),
        r.packs
    );
    Ok(0)
}

fn human_bytes(n: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut value = n as f64;
    let mut unit = 0;
    while value >= 1024.0 && unit + 1 < UNITS.len() {
        value /= 1024.0;
        unit += 1;
    }
    if unit == 0 {
        format!("{n} B")
    } else {
        format!("{value:.3} {}", UNITS[unit])
    }
}

fn snapshot_json(id: &cairn::SnapshotId, s: &cairn::Snapshot) -> anyhow::Result<serde_json::Value> {
    let mut v = serde_json::to_value(s)?;
    v["id"] = id.to_hex().into();
    v["short_id"] = id.short().into();
    Ok(v)
}

fn snapshots(cli: &Cli, filter: &FilterArgs) -> anyhow::Result<i32> {
    let mut repo = open(cli)?;
    let list = repo.snapshots(&filter.filter())?;
    warn_all(cli, &mut repo);
    if cli.json {
        let values: Vec<_> = list
            .iter()
            .map(|(id, s)| snapshot_json(id, s))
            .collect::<Result<_, _>>()?;
        println!("{}", serde_json::to_string(&values)?);
        return Ok(0);
    }
    let mut out = std::io::stdout().lock();
    writeln!(
        out,
        "{:<8}  {:<19}  {:<15}  {:<20}  Paths",
        "ID", "Time", "Host", "Tags"
    )?;
    writeln!(out, "{}", "-".repeat(90))?;
    for (id, s) in &list {
        writeln!(
            out,
            "{:<8}  {:<19}  {:<15}  {:<20}  {}",
            id.short(),
            s.time.format("%Y-%m-%d %H:%M:%S"),
            s.hostname,
            s.tags.join(","),
            s.paths.join(" ")
        )?;
    }
    writeln!(out, "{}", "-".repeat(90))?;
    writeln!(
        out,
        "{} snapshot{}",
        list.len(),
        if list.len() == 1 { "" } else { "s" }
    )?;
    Ok(0)
}

fn split_selector(selector: &str) -> (&str, &str) {
    match selector.split_once(':') {
        Some((id, path)) => (id, path),
        None => (selector, ""),
    }
}

fn restore(
    cli: &Cli,
    selector: &str,
    target: &std::path::Path,
    filter: &FilterArgs,
) -> anyhow::Result<i32> {
    let mut repo = open(cli)?;
    let _lock = read_lock(cli, &repo)?;
    let (sel, subpath) = split_selector(selector);
    let (id, snapshot) = repo.find_snapshot(sel, &filter.filter())?;
    let mut repo = repo.load_index()?;
    warn_all(cli, &mut repo);
    let outcome = cairn::restore(&repo, &snapshot, subpath, target)?;
    for p in &outcome.problems {
        eprintln!("cairn: error: {p}");
    }
    if cli.json {
        println!(
            "{}",
            serde_json::json!({"message_type": "summary", "snapshot_id": id.to_hex(), "files_restored": outcome.files,
                "dirs_restored": outcome.dirs, "bytes_restored": outcome.bytes, "errors": outcome.problems.len()})
        );
    } else if !cli.quiet {
        println!(
            "restored snapshot {} to {}: {} files, {} dirs, {}",
            id.short(),
            target.display(),
            outcome.files,
            outcome.dirs,
            human_bytes(outcome.bytes)
        );
    }
    if outcome.problems.is_empty() {
        Ok(0)
    } else {
        eprintln!(
            "cairn: error: {} problem(s) during restore",
            outcome.problems.len()
        );
        Ok(1)
    }
}

fn dump(cli: &Cli, selector: &str, path: &str, filter: &FilterArgs) -> anyhow::Result<i32> {
    let mut repo = open(cli)?;
    let _lock = read_lock(cli, &repo)?;
    let (_, snapshot) = repo.find_snapshot(selector, &filter.filter())?;
    let mut repo = repo.load_index()?;
    warn_all(cli, &mut repo);
    let stdout = std::io::stdout();
    let mut out = std::io::BufWriter::with_capacity(1 << 20, stdout.lock());
    cairn::dump(&repo, &snapshot, path, &mut out)?;
    Ok(0)
}

fn cat(cli: &Cli, kind: &str, id: Option<&str>) -> anyhow::Result<i32> {
    let mut repo = open(cli)?;
    let need_id = || id.ok_or_else(|| anyhow!("cat {kind} needs an id"));
    let (file_kind, name) = match kind {
        "config" => (FileKind::Config, "config".to_string()),
        "snapshot" => {
            let (sid, _) = repo.find_snapshot(need_id()?, &SnapshotFilter::default())?;
            (FileKind::Snapshot, sid.to_hex())
        }
        "index" => (FileKind::Index, need_id()?.to_string()),
        "key" => (FileKind::Key, need_id()?.to_string()),
        "lock" => (FileKind::Lock, need_id()?.to_string()),
        "tree" => {
            let (sel, subpath) = split_selector(need_id()?);
            let (_, snapshot) = repo.find_snapshot(sel, &SnapshotFilter::default())?;
            let repo = repo.load_index()?;
            let tree_id = match cairn::engine::browse::find_node(&repo, &snapshot, subpath)? {
                None => snapshot.tree,
                Some(node) => node
                    .subtree
                    .ok_or_else(|| anyhow!("{subpath} is not a directory"))?,
            };
            let tree = repo.load_tree(&tree_id)?;
            println!("{}", serde_json::to_string_pretty(&tree)?);
            return Ok(0);
        }
        other => {
            return Err(anyhow!(
                "cannot cat {other:?}: use config, snapshot, index, key, lock or tree"
            ))
        }
    };
    let plain = repo.open_file(file_kind, &name)?;
    if file_kind == FileKind::Index {
        let file = cairn::format::index_file::IndexFile::decode(&plain)?;
        let packs: Vec<_> = file
            .packs
            .iter()
            .map(|p| {
                serde_json::json!({"id": p.id.to_hex(), "blobs": p.entries.iter().map(|e| serde_json::json!({
                    "id": e.id.to_hex(), "type": if e.kind == cairn::format::pack::BlobKind::Tree { "tree" } else { "data" }, "offset": e.offset,
                    "length": e.length, "raw_length": e.raw_length, "codec": e.codec as u8})).collect::<Vec<_>>()})
            })
            .collect();
        println!(
            "{}",
            serde_json::to_string_pretty(
                &serde_json::json!({"supersedes": file.supersedes, "packs": packs})
            )?
        );
    } else {
        std::io::stdout().write_all(&plain)?;
        println!();
    }
    Ok(0)
}
