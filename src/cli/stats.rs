//! `cairn stats`: what the repository stores and what the chosen snapshots
//! need, restored and stored (the difference is deduplication).

use super::args::{Cli, FilterArgs, StatsModeArg};
use super::output::{emit_text_even_quiet, human_bytes};
use super::repo::{open, warn_all};

pub(crate) fn stats(
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
    // This machine's cache of the repository (none: kept in memory).
    let cache = repo
        .cache_dir()
        .map(|dir| (dir.to_path_buf(), cairn::engine::cache::cache_size(dir)));
    emit_text_even_quiet(
        cli,
        || {
            let mut v = serde_json::json!({"repository": r, "selection": selection});
            v["cache"] = match &cache {
                Some((path, bytes)) => serde_json::json!({"path": path, "bytes": bytes}),
                None => serde_json::Value::Null,
            };
            if let Some((id, s)) = &single {
                v["snapshot"] = serde_json::to_value(s)?;
                v["snapshot"]["id"] = id.to_hex().into();
                v["snapshot"]["short_id"] = id.short().into();
            }
            Ok(v)
        },
        || {
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
            match &cache {
                Some((path, bytes)) => println!(
                    "local cache:          {} in {}",
                    human_bytes(*bytes),
                    path.display()
                ),
                None => println!("local cache:          none (kept in memory)"),
            }
            Ok(())
        },
    )?;
    Ok(0)
}
