//! The command-line interface: argument types, one module per command
//! group, and the printing of results. Only the binary uses these modules;
//! everything they do is a call into the library.
//!
//! Where a command lives: `args.rs` holds the grammar (every flag and its
//! help text), `run` below sends each command to its file (`backup` to
//! `backup.rs`, `ls`/`find`/`diff`/`tag` to `browse.rs`, …), `repo.rs`
//! opens and locks the repository, and `output.rs` prints results and
//! errors.

pub(crate) mod args;
pub(crate) mod audit;
pub(crate) mod backup;
pub(crate) mod browse;
pub(crate) mod cache;
pub(crate) mod cat;
pub(crate) mod check;
pub(crate) mod copy;
pub(crate) mod drill;
pub(crate) mod forget;
pub(crate) mod hints;
pub(crate) mod init;
pub(crate) mod key;
pub(crate) mod metrics;
#[cfg(feature = "mount")]
pub(crate) mod mount;
pub(crate) mod output;
pub(crate) mod profile;
pub(crate) mod progress;
pub(crate) mod prune;
pub(crate) mod repair;
pub(crate) mod repo;
pub(crate) mod restore;
pub(crate) mod retention_lock;
pub(crate) mod shell;
pub(crate) mod snapshots;
pub(crate) mod stats;

use args::{Cli, Command};

/// Runs the command, prints its error, records metrics; the exit code.
pub(crate) fn execute(cli: &Cli) -> i32 {
    let started = metrics::start();
    let display = progress::start(cli);
    let result = run(cli);
    audit::finish(cli, &result);
    // The progress line is cleared before the summary or error is printed.
    drop(display);
    let code = match result {
        Ok(code) => code,
        Err(e) => output::report_error(&e),
    };
    metrics::write(cli, code, started);
    code
}

/// Sends the command to its module: one call each.
fn run(cli: &Cli) -> anyhow::Result<i32> {
    match &cli.command {
        Command::Init(args) => init::init(cli, args),
        Command::Backup(args) => backup::backup(cli, args),
        Command::Snapshots(filter) => snapshots::snapshots(cli, filter),
        Command::Restore {
            snapshot,
            target,
            no_same_owner,
            no_special,
            filter,
        } => {
            let options = cairn::RestoreOptions {
                no_same_owner: *no_same_owner,
                no_special: *no_special,
            };
            restore::restore(cli, snapshot, target, &options, filter)
        }
        Command::Dump {
            snapshot,
            path,
            filter,
        } => restore::dump(cli, snapshot, path, filter),
        Command::Ls(args) => browse::ls(cli, args),
        Command::Find(args) => browse::find(cli, args),
        Command::Diff(args) => browse::diff(cli, args),
        Command::Tag(args) => browse::tag(cli, args),
        Command::Cat { kind, id } => cat::cat(cli, kind, id.as_deref()),
        Command::Copy(args) => copy::copy(cli, args),
        Command::Forget(args) => forget::forget(cli, args),
        Command::ImportTar {
            file,
            tags,
            host,
            max_size,
            max_members,
        } => backup::import_tar(cli, file, tags, host, max_size, *max_members),
        Command::Stats {
            snapshots,
            mode,
            filter,
        } => stats::stats(cli, snapshots, *mode, filter),
        Command::ExportTar {
            snapshot,
            path,
            output,
            gzip,
            zstd,
            filter,
        } => restore::export_tar(
            cli,
            snapshot,
            path.as_deref(),
            output.as_deref(),
            restore::compression(*gzip, *zstd),
            filter,
        ),
        Command::Key(command) => key::key(cli, command),
        Command::Check(args) => check::check(cli, args),
        Command::Repair(command) => repair::repair(cli, command),
        Command::Prune(args) => prune::prune(cli, args),
        Command::Run => profile::run_steps(cli),
        Command::Completions { shell } => shell::completions(*shell),
        Command::Man { dir } => shell::man(dir.as_deref()),
        Command::Unlock { remove_all } => prune::unlock(cli, *remove_all),
        Command::Audit(command) => audit::audit(cli, command),
        Command::RetentionLock(command) => retention_lock::retention_lock(cli, command),
        Command::Cache { cleanup, max_age } => cache::cache(cli, *cleanup, *max_age),
        #[cfg(feature = "mount")]
        Command::Mount(args) => mount::mount(cli, args),
        Command::Drill(args) => drill::drill(cli, args),
    }
}
