//! `cairn stats`: how big a snapshot is when restored, and what the
//! repository actually stores. Comparing the two shows deduplication.

use crate::engine::repository::Repository;
use crate::error::Result;
use crate::format::id::{BlobId, IndexId};
use crate::format::pack::BlobKind;
use crate::format::snapshot::Snapshot;
use crate::format::tree::NodeKind;
use serde::Serialize;
use std::collections::HashSet;

/// One snapshot's size as restored, and the distinct data it references.
#[derive(Debug, Default, Clone, Serialize)]
pub struct SnapshotStats {
    pub files: u64,
    pub dirs: u64,
    /// Sum of the sizes of its files (what a restore writes).
    pub total_size: u64,
    /// Distinct data blobs its files reference.
    pub data_blobs: u64,
    /// Plaintext bytes of those distinct blobs: the snapshot's size after
    /// deduplication within itself.
    pub data_blob_bytes: u64,
}

/// What the repository stores, over all snapshots.
#[derive(Debug, Default, Clone, Serialize)]
pub struct RepositoryStats {
    pub snapshots: u64,
    pub packs: u64,
    /// Bytes of all pack files (compressed, sealed, with headers).
    pub pack_bytes: u64,
    /// Distinct blobs listed in the index, data and tree.
    pub blobs: u64,
    /// Plaintext bytes of those distinct blobs.
    pub blob_bytes: u64,
    /// Their bytes as stored in packs (after compression and sealing).
    pub blob_stored_bytes: u64,
}

/// One snapshot's figures. Needs `load_index` first.
pub fn snapshot_stats(repo: &Repository, snapshot: &Snapshot) -> Result<SnapshotStats> {
    let all = selection_stats(repo, std::slice::from_ref(snapshot), StatsMode::RestoreSize)?;
    Ok(SnapshotStats::from(&all))
}

impl From<&SelectionStats> for SnapshotStats {
    /// The figures of a selection of one snapshot.
    fn from(s: &SelectionStats) -> SnapshotStats {
        SnapshotStats {
            files: s.files,
            dirs: s.dirs,
            total_size: s.total_size,
            data_blobs: s.blobs,
            data_blob_bytes: s.raw_bytes,
        }
    }
}

/// Reads every index file and lists the packs (the index files, not the
/// cache, so the numbers describe the repository itself).
pub fn repository_stats(repo: &Repository) -> Result<RepositoryStats> {
    let mut stats = RepositoryStats {
        snapshots: repo.list_snapshot_ids()?.len() as u64,
        ..RepositoryStats::default()
    };
    for (_, size) in repo.list_packs()? {
        stats.packs += 1;
        stats.pack_bytes += size;
    }
    let mut seen: HashSet<(BlobKind, BlobId)> = HashSet::new();
    // In id order, so that which copy of a blob is counted does not depend
    // on the order the backend lists files in.
    let mut ids: Vec<IndexId> = repo.list_index_ids()?.into_iter().collect();
    ids.sort();
    for id in ids {
        let file = repo.load_index_file(&id)?;
        for pack in &file.packs {
            for entry in &pack.entries {
                if seen.insert((entry.kind, entry.id)) {
                    stats.blobs += 1;
                    stats.blob_bytes += u64::from(entry.raw_length);
                    stats.blob_stored_bytes += u64::from(entry.length);
                }
            }
        }
    }
    Ok(stats)
}

/// `stats --mode`: what to add up over the selected snapshots (restic's
/// modes of the same names).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum StatsMode {
    /// The size of every file as restored, summed over the snapshots.
    RestoreSize,
    /// The distinct data blobs the snapshots need, plain and as stored.
    RawData,
}

/// Totals over several snapshots. Both modes' figures are computed (one
/// walk); `mode` says which the user asked for.
#[derive(Debug, Clone, Serialize)]
pub struct SelectionStats {
    pub mode: StatsMode,
    pub snapshots: u64,
    pub files: u64,
    pub dirs: u64,
    /// Restore size: file sizes summed over all snapshots.
    pub total_size: u64,
    /// Distinct data blobs, their plaintext bytes and their bytes in packs.
    pub blobs: u64,
    pub raw_bytes: u64,
    pub stored_bytes: u64,
    /// total_size / raw_bytes: what deduplication saves.
    pub dedup_ratio: f64,
    /// raw_bytes / stored_bytes: what compression saves.
    pub compression_ratio: f64,
}

/// Totals over `snapshots`: files, dirs and sizes per snapshot summed
/// (restore size), distinct data blobs counted once across all of them.
pub fn selection_stats(
    repo: &Repository,
    snapshots: &[Snapshot],
    mode: StatsMode,
) -> Result<SelectionStats> {
    let mut out = SelectionStats {
        mode,
        snapshots: snapshots.len() as u64,
        files: 0,
        dirs: 0,
        total_size: 0,
        blobs: 0,
        raw_bytes: 0,
        stored_bytes: 0,
        dedup_ratio: 0.0,
        compression_ratio: 0.0,
    };
    // One walk per snapshot; the distinct-blob set is shared, so data seen
    // in an earlier snapshot is counted once.
    let mut seen: HashSet<BlobId> = HashSet::new();
    for snapshot in snapshots {
        crate::engine::browse::walk(repo, snapshot.tree, "", &mut |_, node| {
            match node.kind {
                NodeKind::Dir => out.dirs += 1,
                NodeKind::File => {
                    out.files += 1;
                    out.total_size += node.size;
                }
                _ => {}
            }
            for id in &node.content {
                if seen.insert(*id) {
                    out.blobs += 1;
                    if let Some(at) = repo.locate(BlobKind::Data, id)? {
                        out.raw_bytes += u64::from(at.entry.raw_length);
                        out.stored_bytes += u64::from(at.entry.length);
                    }
                }
            }
            Ok(())
        })?;
    }
    if out.raw_bytes > 0 {
        out.dedup_ratio = out.total_size as f64 / out.raw_bytes as f64;
    }
    if out.stored_bytes > 0 {
        out.compression_ratio = out.raw_bytes as f64 / out.stored_bytes as f64;
    }
    Ok(out)
}
