//! `cairn prune` (delete and repack unused data), the summary that
//! `forget --prune` prints too, and `cairn unlock`.

use super::args::{Cli, PruneArgs};
use super::output::{emit, human_bytes};
use super::repo::{lock_prune, open, warn_all};

pub(crate) fn prune(cli: &Cli, args: &PruneArgs) -> anyhow::Result<i32> {
    let options = cairn::PruneOptions {
        max_unused: args.max_unused.parse()?,
        max_repack_bytes: args
            .max_repack_size
            .as_deref()
            .map(cairn::units::parse_size)
            .transpose()?,
        dry_run: args.dry_run,
        memory: args
            .memory
            .as_deref()
            .map(cairn::units::parse_size)
            .transpose()?,
        repack_small: !args.no_repack_small,
    };
    let repo = open(cli)?;
    // Not exclusive: backups go on while prune runs (two-phase delete).
    let lock = lock_prune(cli, &repo)?;
    let mut repo = repo.load_index()?;
    let outcome = cairn::prune(&mut repo, &lock, &options)?;
    warn_all(cli, &mut repo);
    super::metrics::note_prune(&outcome);
    super::audit::note_prune(&outcome);
    print_prune(cli, &outcome)?;
    Ok(0)
}

pub(crate) fn print_prune(cli: &Cli, o: &cairn::PruneOutcome) -> anyhow::Result<()> {
    emit(
        cli,
        || {
            let mut value = serde_json::to_value(o)?;
            value["bytes_freed"] = o.bytes_freed().into();
            Ok(value)
        },
        || print_prune_text(o),
    )
}

fn print_prune_text(o: &cairn::PruneOutcome) -> anyhow::Result<()> {
    let would = if o.dry_run { "would " } else { "" };
    println!(
        "used:   {} blobs, {}; unused: {} blobs, {}",
        o.blobs_used,
        human_bytes(o.bytes_used),
        o.blobs_unused,
        human_bytes(o.bytes_unused)
    );
    println!(
        "{would}delete {} unused pack(s) and {} pack(s) no index names; {would}repack {} pack(s) ({} small)",
        o.packs_deleted, o.packs_unindexed_deleted, o.packs_repacked, o.packs_repacked_small
    );
    if o.packs_unindexed_kept > 0 {
        println!(
            "kept {} pack(s) no index names that are too young to delete (a backup may still index them)",
            o.packs_unindexed_kept
        );
    }
    if o.marked_packs_deleted > 0 || o.marked_packs_restored > 0 {
        println!(
            "{would}delete {} pack(s) an earlier prune marked; {} marked pack(s) are needed again and {would}stay",
            o.marked_packs_deleted, o.marked_packs_restored
        );
    }
    if o.packs_marked > 0 {
        println!(
            "{would}mark {} pack(s) ({}) for deletion: backups that started before are still running, so a later prune deletes them",
            o.packs_marked,
            human_bytes(o.bytes_marked)
        );
    }
    if o.mark_files_waiting > 0 {
        println!(
            "{} mark file(s) of an earlier prune wait for backups that started before them",
            o.mark_files_waiting
        );
    }
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

pub(crate) fn unlock(cli: &Cli, remove_all: bool) -> anyhow::Result<i32> {
    let repo = open(cli)?;
    let outcome = repo.remove_locks(remove_all)?;
    let removed = outcome.removed;
    if !cli.quiet {
        for what in &outcome.unreadable {
            eprintln!(
                "cairn: warning: {what}; left in place: if no cairn process is using the repository, remove it with `cairn unlock --remove-all`"
            );
        }
    }
    emit(
        cli,
        || Ok(serde_json::json!({"removed": removed, "unreadable": outcome.unreadable})),
        || {
            println!("removed {removed} lock(s)");
            Ok(())
        },
    )?;
    Ok(0)
}
