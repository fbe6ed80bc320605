//! `cairn repair index` and `cairn repair snapshots`.

use super::args::{Cli, RepairCommand};
use super::output::emit_text_even_quiet;
use super::repo::{lock_exclusive, open, warn_all};

pub(crate) fn repair(cli: &Cli, command: &RepairCommand) -> anyhow::Result<i32> {
    let repo = open(cli)?;
    let lock = lock_exclusive(cli, &repo)?;
    let mut repo = repo.load_index()?;
    match command {
        RepairCommand::Index { read_data } => {
            let outcome = cairn::repair_index(&mut repo, &lock, *read_data)?;
            warn_all(cli, &mut repo);
            emit_text_even_quiet(
                cli,
                || Ok(&outcome),
                || {
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
                    Ok(())
                },
            )?;
            Ok(if outcome.packs_unreadable.is_empty() {
                0
            } else {
                1
            })
        }
        RepairCommand::Snapshots { forget, dry_run } => {
            warn_all(cli, &mut repo);
            let outcome = cairn::repair_snapshots(&mut repo, &lock, *forget, *dry_run)?;
            super::audit::note_repair_snapshots(&outcome);
            emit_text_even_quiet(
                cli,
                || Ok(&outcome),
                || {
                    for s in &outcome.snapshots {
                        println!("snapshot {}:", s.original.short());
                        for d in &s.dropped {
                            println!("  dropped {}: {}", d.path, d.reason);
                        }
                        match (s.repaired, s.restorable) {
                            _ if s.already_repaired => {
                                println!("  already repaired by an earlier run")
                            }
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
                    Ok(())
                },
            )?;
            Ok(0)
        }
    }
}
