//! The command line's grammar: the clap types for the global flags, every
//! command and its arguments, and the small parsers of flag values. Their
//! doc comments are the help text and the man page (`scripts/man.sh`). The
//! argument types of `ls`, `find`, `diff`, `tag` and `forget` live with
//! those commands, in `browse.rs` and `forget.rs`.

use clap::{Args, Parser, Subcommand};
use std::path::PathBuf;

#[derive(Parser)]
#[command(
    name = "cairn",
    version,
    about = "Deduplicating, encrypted backups",
    max_term_width = 100
)]
pub(crate) struct Cli {
    /// Repository location (a local directory).
    #[arg(short = 'r', long = "repo", env = "CAIRN_REPOSITORY", global = true)]
    pub(crate) repo: Option<PathBuf>,
    /// Read the password from the first line of this file.
    #[arg(long, env = "CAIRN_PASSWORD_FILE", global = true)]
    pub(crate) password_file: Option<PathBuf>,
    /// Run this shell command and use its output as the password.
    #[arg(long, env = "CAIRN_PASSWORD_COMMAND", global = true)]
    pub(crate) password_command: Option<String>,
    /// Local cache directory (default: $XDG_CACHE_HOME/cairn, else
    /// ~/.cache/cairn; with neither set, the index is kept in memory).
    #[arg(long, env = "CAIRN_CACHE_DIR", global = true)]
    pub(crate) cache_dir: Option<PathBuf>,
    /// Try the key file with this id (or id prefix) first, before the one
    /// used last and the others.
    #[arg(long, env = "CAIRN_KEY_HINT", global = true, value_name = "ID")]
    pub(crate) key_hint: Option<String>,
    /// Print machine-readable JSON.
    #[arg(long, global = true)]
    pub(crate) json: bool,
    /// Print only errors.
    #[arg(short, long, global = true)]
    pub(crate) quiet: bool,
    /// Do not lock the repository (reading commands only: restore, dump,
    /// check, export-tar), e.g. for a copy on read-only media.
    #[arg(long, global = true)]
    pub(crate) no_lock: bool,
    /// Wait up to this long for a conflicting lock to go away (e.g. 5m, 1h).
    #[arg(long, global = true, value_name = "DURATION", value_parser = parse_duration)]
    pub(crate) retry_lock: Option<std::time::Duration>,
    /// Print more (repeat for more).
    #[arg(short, long, action = clap::ArgAction::Count, global = true)]
    pub(crate) verbose: u8,
    /// Configuration file (default: $XDG_CONFIG_HOME/cairn/cairn.toml, then
    /// /etc/cairn/cairn.toml); read only with --profile or --config.
    #[arg(long, env = "CAIRN_CONFIG", global = true, value_name = "FILE")]
    pub(crate) config: Option<PathBuf>,
    /// Take settings from this profile of the configuration file (flags and
    /// CAIRN_* variables override it; see docs/cairn.example.toml).
    #[arg(long, env = "CAIRN_PROFILE", global = true, value_name = "NAME")]
    pub(crate) profile: Option<String>,
    /// After backup, forget, prune, check and drill, record the run in this
    /// Prometheus textfile (see docs/monitoring.md).
    #[arg(long, env = "CAIRN_METRICS_FILE", global = true, value_name = "PATH")]
    pub(crate) metrics_file: Option<PathBuf>,
    /// Requests to run at once against an S3 repository: parallel pack
    /// uploads and ranged reads (default 5; a backup holds up to N packs in
    /// memory while they upload). No effect on a local repository.
    #[arg(long, env = "CAIRN_CONNECTIONS", global = true, value_name = "N",
          value_parser = clap::value_parser!(u16).range(1..=64))]
    pub(crate) connections: Option<u16>,
    /// The profile, once loaded.
    #[arg(skip)]
    pub(crate) loaded: Option<cairn::ops::profile::Profile>,
    #[command(subcommand)]
    pub(crate) command: Command,
}

#[derive(Subcommand)]
pub(crate) enum Command {
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
        /// Keep yourself as the owner of what is restored, even as root
        /// (for snapshots you do not trust).
        #[arg(long)]
        no_same_owner: bool,
        /// Leave out device nodes, fifos and sockets, and clear set-user-ID
        /// and set-group-ID bits on files (for snapshots you do not trust).
        #[arg(long)]
        no_special: bool,
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
    Ls(super::browse::LsArgs),
    /// Find files by name or path pattern in all (or some) snapshots.
    Find(super::browse::FindArgs),
    /// Show what changed between two snapshots.
    Diff(super::browse::DiffArgs),
    /// Add, remove or set tags of snapshots.
    Tag(super::browse::TagArgs),
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
        /// Most bytes of member contents, sparse holes included (refused
        /// past it). Other limits: path depth 2047, 64 MiB of headers per
        /// member; a tarball past one writes no snapshot.
        #[arg(long, value_name = "SIZE", default_value = "16T")]
        max_size: String,
        /// Most members (each is held in memory until the end).
        #[arg(long, value_name = "N", default_value_t = 10_000_000)]
        max_members: u64,
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
    /// Copy snapshots from another repository (--from-repo) into this one:
    /// only what this one lacks, sealed under its key; snapshots copied
    /// before are skipped.
    Copy(CopyArgs),
    /// Remove snapshots: the given ones, or those a --keep-* policy does not
    /// keep (per group; see docs/retention.md). Data is freed only by prune.
    Forget(super::forget::ForgetArgs),
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
    /// The signed audit log: list it, verify it (both without the
    /// password), or print the signing keys to pin.
    #[command(subcommand)]
    Audit(AuditCommand),
    /// Set or show the retention lock: forget removes no snapshot younger
    /// than it. It can be lengthened, never shortened.
    #[command(subcommand)]
    RetentionLock(RetentionLockCommand),
    /// List the local caches of repositories; with --cleanup remove those
    /// unused for --max-age days (every command removes those unused for
    /// 30 days).
    Cache {
        /// Remove the old caches instead of only listing them.
        #[arg(long)]
        cleanup: bool,
        /// Days without use after which a cache is old.
        #[arg(long, value_name = "DAYS", default_value_t = 30)]
        max_age: u64,
    },
    /// Serve every snapshot as a read-only file system at MOUNTPOINT
    /// (snapshots/, ids/, hosts/, tags/) until unmounted or interrupted.
    #[cfg(feature = "mount")]
    Mount(super::mount::MountArgs),
    /// Restore a snapshot into a scratch directory and prove it loads: a
    /// PostgreSQL dump into a throwaway cluster, an RDB into redis-server,
    /// a tarball or a tree read back; the result is recorded in the
    /// repository (--list shows them). Exit 0 when every drill passed, 1
    /// when one failed or could not run.
    Drill(super::drill::DrillArgs),
}

#[derive(Subcommand)]
pub(crate) enum KeyCommand {
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

#[derive(Args)]
pub(crate) struct PruneArgs {
    /// Unused data to tolerate in partly used packs: a percentage of the
    /// used data (default 5%), a size (e.g. 100M), or "unlimited".
    #[arg(long, default_value = "5%")]
    pub(crate) max_unused: String,
    /// Repack at most this much pack data (e.g. 1G).
    #[arg(long, value_name = "SIZE")]
    pub(crate) max_repack_size: Option<String>,
    /// Show what would be deleted and repacked; change nothing.
    #[arg(short = 'n', long)]
    pub(crate) dry_run: bool,
    /// Memory for the blob table (e.g. 256M; default 64M); a larger
    /// table goes to the cache directory.
    #[arg(long, value_name = "SIZE")]
    pub(crate) memory: Option<String>,
    /// Leave packs under half the target size as they are (by default ten
    /// or more of one kind are rewritten together).
    #[arg(long)]
    pub(crate) no_repack_small: bool,
}

#[derive(Subcommand)]
pub(crate) enum RepairCommand {
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
pub(crate) struct CheckArgs {
    /// Also read, decrypt, decompress and re-hash every blob of every pack.
    #[arg(long)]
    pub(crate) read_data: bool,
    /// Read only a subset of the packs: n/m (the n-th of m slices), p% or a
    /// size such as 2G (random packs).
    #[arg(long, value_name = "SUBSET", conflicts_with = "read_data")]
    pub(crate) read_data_subset: Option<String>,
    /// Without the password: compare every file with its name (the BLAKE3
    /// of its bytes); with --read-data, packs too.
    #[arg(long)]
    pub(crate) no_password: bool,
    /// Memory for the blob table (e.g. 256M; default 64M); a larger
    /// table goes to the cache directory.
    #[arg(long, value_name = "SIZE")]
    pub(crate) memory: Option<String>,
}

#[derive(Args)]
pub(crate) struct InitArgs {
    /// zstd level for new blobs (-7..22).
    #[arg(long, default_value_t = cairn::engine::repository::ZSTD_LEVEL_DEFAULT, allow_hyphen_values = true)]
    pub(crate) compression_level: i32,
    /// Target pack size in MiB.
    #[arg(long, default_value_t = 32)]
    pub(crate) pack_size: u32,
    /// Chunk sizes in KiB as MIN,AVG,MAX (default 16,64,256).
    #[arg(long)]
    pub(crate) chunk_sizes: Option<String>,
    /// Argon2id memory in KiB (default 65536). Lower only for tests.
    #[arg(long, hide = true)]
    pub(crate) kdf_memory_kib: Option<u32>,
    /// Argon2id passes (default 3).
    #[arg(long, hide = true)]
    pub(crate) kdf_iterations: Option<u32>,
    /// Use the chunker parameters, chunker seed and blob-id key of the
    /// repository given with --from-repo, so that `copy` from it moves
    /// blobs by id and backups here deduplicate against its copies (the two
    /// repositories then share those keys: see docs/recipes.md).
    #[arg(long, requires = "from_repo")]
    pub(crate) copy_chunker_params: bool,
    #[command(flatten)]
    pub(crate) from: FromRepoArgs,
    /// Lock retention for this long (e.g. 6y): forget removes no snapshot
    /// younger than it. Later `retention-lock set` can only lengthen it.
    #[arg(long, value_name = "DURATION")]
    pub(crate) retention_lock: Option<String>,
}

/// The source repository of `copy` and `init --copy-chunker-params`.
#[derive(Args, Clone, Default)]
pub(crate) struct FromRepoArgs {
    /// Source repository location.
    #[arg(long, env = "CAIRN_FROM_REPOSITORY", value_name = "REPO")]
    pub(crate) from_repo: Option<PathBuf>,
    /// Read the source repository's password from the first line of this
    /// file.
    #[arg(long, env = "CAIRN_FROM_PASSWORD_FILE", value_name = "FILE")]
    pub(crate) from_password_file: Option<PathBuf>,
    /// Run this shell command and use its output as the source
    /// repository's password.
    #[arg(long, env = "CAIRN_FROM_PASSWORD_COMMAND", value_name = "COMMAND")]
    pub(crate) from_password_command: Option<String>,
    /// Try the source's key file with this id (or id prefix) first.
    #[arg(long, env = "CAIRN_FROM_KEY_HINT", value_name = "ID")]
    pub(crate) from_key_hint: Option<String>,
}

#[derive(Args)]
pub(crate) struct CopyArgs {
    /// Snapshots to copy: ids, id prefixes or latest (default: all that
    /// match the filters).
    pub(crate) snapshots: Vec<String>,
    #[command(flatten)]
    pub(crate) filter: FilterArgs,
    #[command(flatten)]
    pub(crate) from: FromRepoArgs,
}

#[derive(Args)]
pub(crate) struct BackupArgs {
    /// Paths to back up; with --stdin-from-command, the command and its
    /// arguments (after --).
    pub(crate) paths: Vec<PathBuf>,
    /// Read the data to back up from standard input.
    #[arg(long)]
    pub(crate) stdin: bool,
    /// Run the command given after -- (no shell) and back up its standard
    /// output; if it fails, no snapshot is written.
    #[arg(long, conflicts_with = "stdin")]
    pub(crate) stdin_from_command: bool,
    /// File name for --stdin data in the snapshot.
    #[arg(long, default_value = "stdin")]
    pub(crate) stdin_filename: String,
    /// Add a tag (repeatable).
    #[arg(long = "tag")]
    pub(crate) tags: Vec<String>,
    /// Hostname to record (default: this host's name).
    #[arg(long)]
    pub(crate) host: Option<String>,
    /// Use this snapshot as parent instead of the latest matching one.
    #[arg(long)]
    pub(crate) parent: Option<String>,
    /// Read every file, ignoring the parent snapshot.
    #[arg(long)]
    pub(crate) force: bool,
    /// Record this time instead of now: "YYYY-MM-DD HH:MM:SS" (local time)
    /// or RFC 3339 with its offset.
    #[arg(long, value_name = "TIME")]
    pub(crate) time: Option<String>,
    #[command(flatten)]
    pub(crate) exclude: ExcludeArgs,
}

/// What a directory backup leaves out (gitignore-style patterns; see
/// `cairn::exclude`).
#[derive(Args, Clone, Default)]
pub(crate) struct ExcludeArgs {
    /// Leave out paths matching this pattern (repeatable).
    #[arg(short = 'e', long = "exclude", value_name = "PATTERN")]
    pub(crate) patterns: Vec<String>,
    /// Like --exclude, ignoring case.
    #[arg(long = "iexclude", value_name = "PATTERN")]
    pub(crate) ipatterns: Vec<String>,
    /// Read patterns from this file, one per line (# comments).
    #[arg(long = "exclude-file", value_name = "FILE")]
    pub(crate) files: Vec<PathBuf>,
    /// Leave out directories holding a valid CACHEDIR.TAG.
    #[arg(long)]
    pub(crate) exclude_caches: bool,
    /// Leave out directories holding a file of this name (repeatable).
    #[arg(long = "exclude-if-present", value_name = "NAME")]
    pub(crate) if_present: Vec<String>,
    /// Do not cross into other file systems (mount points are kept, empty).
    #[arg(short = 'x', long)]
    pub(crate) one_file_system: bool,
}

#[derive(Args, Clone, Default)]
pub(crate) struct FilterArgs {
    /// Only snapshots of this host (repeatable).
    #[arg(long = "host")]
    pub(crate) hosts: Vec<String>,
    /// Only snapshots with this tag, or all of a comma-separated list (repeatable).
    #[arg(long = "tag")]
    pub(crate) tags: Vec<String>,
    /// Only snapshots including this path (repeatable).
    #[arg(long = "path")]
    pub(crate) paths: Vec<String>,
}

impl FilterArgs {
    pub(crate) fn filter(&self) -> cairn::SnapshotFilter {
        cairn::SnapshotFilter {
            hosts: self.hosts.clone(),
            tags: self.tags.clone(),
            paths: self.paths.clone(),
        }
    }
}

#[derive(Clone, Copy, clap::ValueEnum)]
pub(crate) enum StatsModeArg {
    RestoreSize,
    RawData,
}

/// Parses `90s`, `5m`, `2h`, `1d` or plain seconds.
pub(crate) fn parse_duration(text: &str) -> Result<std::time::Duration, String> {
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

/// The tags of repeatable `--tag` flags, each of which may hold a
/// comma-separated list.
pub(crate) fn tag_list(tags: &[String]) -> Vec<String> {
    tags.iter()
        .flat_map(|t| t.split(','))
        .filter(|t| !t.is_empty())
        .map(String::from)
        .collect()
}

/// `SNAPSHOT:PATH` as the snapshot and the path (empty without a colon).
pub(crate) fn split_selector(selector: &str) -> (&str, &str) {
    match selector.split_once(':') {
        Some((id, path)) => (id, path),
        None => (selector, ""),
    }
}

#[derive(Subcommand)]
pub(crate) enum AuditCommand {
    /// List the audit entries, oldest first (no password needed).
    Log,
    /// Verify the audit log and the snapshots it names, without the
    /// password. Exit 0 when no check fails, 1 when one does.
    Report(AuditReportArgs),
    /// Print the public signing keys of the key files (password needed),
    /// one per line, for --trusted-keys.
    Keys,
}

#[derive(Args)]
pub(crate) struct AuditReportArgs {
    /// List results and activity from this date on (YYYY-MM-DD or RFC 3339).
    #[arg(long, value_name = "DATE")]
    pub(crate) from: Option<String>,
    /// List results and activity up to this date (inclusive).
    #[arg(long, value_name = "DATE")]
    pub(crate) to: Option<String>,
    /// Public signing keys to trust, one per line (from `cairn audit keys`).
    #[arg(long, value_name = "FILE")]
    pub(crate) trusted_keys: Option<PathBuf>,
    /// Heads saved by the last report: the log must still extend them.
    /// Updated when the report passes.
    #[arg(long, value_name = "FILE")]
    pub(crate) state: Option<PathBuf>,
    /// text, markdown or html (one self-contained page); --json for JSON.
    #[arg(long, value_enum, default_value = "text")]
    pub(crate) format: ReportFormat,
    /// Write the report to this file instead of standard output.
    #[arg(short, long, value_name = "FILE")]
    pub(crate) output: Option<PathBuf>,
    /// Re-hash packs against their names: all, a share (5%) or a group n/m
    /// (1/7); the snapshots a bad pack affects are listed.
    #[arg(long, value_name = "WHICH")]
    pub(crate) read_packs: Option<String>,
    /// The expected backups of each source (docs/audit.md): each due one
    /// must be logged; a gap is named "missing" or "failed".
    #[arg(long, value_name = "FILE")]
    pub(crate) policy: Option<PathBuf>,
}

#[derive(Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub(crate) enum ReportFormat {
    Text,
    Markdown,
    Html,
}

#[derive(Subcommand)]
pub(crate) enum RetentionLockCommand {
    /// Set or lengthen the lock (e.g. 6y, 18m, 1y6m); shortening is refused.
    Set { duration: String },
    /// Print the lock in force.
    Show,
}
