//! `cairn copy`: snapshots from `--from-repo` into `--repo`.

use super::args::{Cli, CopyArgs};
use super::output::{emit, human_bytes, term_safe};
use super::repo::{lock, open, open_source, warn_all};

pub(crate) fn copy(cli: &Cli, args: &CopyArgs) -> anyhow::Result<i32> {
    let dst = open(cli)?;
    let src = open_source(cli, &args.from)?;
    // Shared locks on both, as for a backup: the source is only read, and
    // an exclusive lock there (prune) must not delete what is being copied.
    let src_lock = lock(cli, &src)?;
    let dst_lock = lock(cli, &dst)?;
    let mut src = src.load_index()?;
    let mut dst = dst.load_index()?;
    warn_all(cli, &mut src);
    warn_all(cli, &mut dst);
    let options = cairn::CopyOptions {
        filter: args.filter.filter(),
        snapshots: args.snapshots.clone(),
    };
    let result = cairn::copy(&mut src, &src_lock, &mut dst, &dst_lock, &options);
    warn_all(cli, &mut src);
    warn_all(cli, &mut dst);
    let outcome = result?;
    super::audit::note_copy(&outcome);
    report(cli, &outcome)?;
    Ok(0)
}

fn report(cli: &Cli, outcome: &cairn::CopyOutcome) -> anyhow::Result<()> {
    let copied: Vec<_> = outcome
        .snapshots
        .iter()
        .filter(|s| !s.already_copied)
        .collect();
    let data_added: u64 = copied.iter().map(|s| s.stats.bytes_raw).sum();
    let packed: u64 = copied.iter().map(|s| s.stats.bytes_packed).sum();
    emit(
        cli,
        || {
            let snapshots: Vec<_> = outcome
                .snapshots
                .iter()
                .map(|s| {
                    serde_json::json!({
                        "source": s.source.to_hex(),
                        "copy": s.copy.to_hex(),
                        "already_copied": s.already_copied,
                        "time": s.snapshot.time.to_rfc3339(),
                        "hostname": s.snapshot.hostname,
                        "paths": s.snapshot.paths,
                        "tags": s.snapshot.tags,
                        "data_blobs": s.stats.data_blobs,
                        "tree_blobs": s.stats.tree_blobs,
                        "data_added": s.stats.bytes_raw,
                        "data_added_packed": s.stats.bytes_packed,
                    })
                })
                .collect();
            Ok(serde_json::json!({
                "message_type": "copy_summary",
                "snapshots": snapshots,
                "snapshots_copied": copied.len(),
                "snapshots_skipped": outcome.snapshots.len() - copied.len(),
                "data_added": data_added,
                "data_added_packed": packed,
                "rehashed": outcome.rehashed,
            }))
        },
        || {
            for s in &outcome.snapshots {
                let what = format!(
                    "snapshot {} of {} at {} ({})",
                    s.source.short(),
                    term_safe(&s.snapshot.hostname),
                    s.snapshot.time.format("%Y-%m-%d %H:%M:%S"),
                    term_safe(&s.snapshot.paths.join(", "))
                );
                if s.already_copied {
                    println!("skipped {what}: already copied as {}", s.copy.short());
                } else {
                    println!(
                        "copied {what} as {}: {} new blobs, {} added ({} stored)",
                        s.copy.short(),
                        s.stats.data_blobs + s.stats.tree_blobs,
                        human_bytes(s.stats.bytes_raw),
                        human_bytes(s.stats.bytes_packed)
                    );
                }
            }
            println!(
                "{} snapshots copied, {} already there; {} added ({} stored)",
                copied.len(),
                outcome.snapshots.len() - copied.len(),
                human_bytes(data_added),
                human_bytes(packed)
            );
            Ok(())
        },
    )
}
