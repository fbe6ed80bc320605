//! The checker's own index: a sorted table of every blob the repository's
//! index files list, built from those files alone (never from the local
//! cache). Prune uses the same table, with the blobs snapshots use marked.

use crate::engine::checker::report::{CheckReport, NoteKind, Object, Status};
use crate::engine::repository::Repository;
use crate::error::{ErrorKind, Result};
use crate::format::crypto::SEAL_OVERHEAD;
use crate::format::id::{BlobId, IndexId, PackId};
use crate::format::index_file::IndexFile;
use crate::format::pack::{BlobKind, PackEntry, ENTRY_LEN};
use std::collections::{HashMap, HashSet};

pub(crate) const USED: u8 = 1;
pub(crate) const DAMAGED: u8 = 2;

/// One index entry. 52 bytes, so even five million blobs fit in ~260 MB;
/// the table is sorted by (kind, id) and may hold duplicates.
#[derive(Clone, Copy)]
pub(crate) struct Row {
    pub(crate) pack: u32,
    pub(crate) flags: u8,
    pub(crate) entry: PackEntry,
}

/// The checker's own index, built from the index files alone.
pub(crate) struct Table {
    pub(crate) rows: Vec<Row>,
    pub(crate) packs: Vec<PackId>,
    pub(crate) pack_numbers: HashMap<PackId, u32>,
    /// Size each pack must have, from its index entries.
    pub(crate) pack_sizes: Vec<u64>,
    pub(crate) pack_blobs: Vec<u32>,
    /// Readable index files that a newer one supersedes; not in the table.
    pub(crate) superseded_files: Vec<IndexId>,
}

impl Table {
    /// Rows of every copy of a blob (the table is sorted by kind, id).
    pub(crate) fn range(&self, kind: BlobKind, id: &BlobId) -> &[Row] {
        &self.rows[self.range_indices(kind, id)]
    }

    pub(crate) fn range_indices(&self, kind: BlobKind, id: &BlobId) -> std::ops::Range<usize> {
        let start = self
            .rows
            .partition_point(|r| (r.entry.kind, r.entry.id) < (kind, *id));
        let end = self
            .rows
            .partition_point(|r| (r.entry.kind, r.entry.id) <= (kind, *id));
        start..end
    }

    /// Marks every copy of a blob used; returns whether one copy is intact
    /// (`None` when no index names the blob at all).
    pub(crate) fn use_blob(&mut self, kind: BlobKind, id: &BlobId) -> Option<bool> {
        let range = self.range_indices(kind, id);
        if range.is_empty() {
            return None;
        }
        let mut intact = false;
        for row in &mut self.rows[range] {
            row.flags |= USED;
            intact |= row.flags & DAMAGED == 0;
        }
        Some(intact)
    }

    pub(crate) fn intact_location(
        &self,
        kind: BlobKind,
        id: &BlobId,
    ) -> Option<(PackId, PackEntry)> {
        self.range(kind, id)
            .iter()
            .find(|r| r.flags & DAMAGED == 0)
            .map(|r| (self.packs[r.pack as usize], r.entry))
    }
}

/// The exact size of a pack holding `entries`: blobs, sealed header, trailer.
pub fn expected_pack_size(blob_bytes: u64, blob_count: u64) -> u64 {
    blob_bytes + SEAL_OVERHEAD as u64 + 8 + blob_count * ENTRY_LEN as u64 + 4
}

pub(crate) fn empty_table() -> Table {
    Table {
        rows: Vec::new(),
        packs: Vec::new(),
        pack_numbers: HashMap::new(),
        pack_sizes: Vec::new(),
        pack_blobs: Vec::new(),
        superseded_files: Vec::new(),
    }
}

/// Builds the table from every readable index file; damaged index files
/// and index files that list one pack differently are reported. Returns
/// the table and the index files it was built from.
pub(crate) fn build_table<S: Sync>(
    repo: &Repository<S>,
    report: &mut CheckReport,
) -> Result<(Table, Vec<IndexId>)> {
    let mut ids: Vec<IndexId> = repo.list_index_ids()?.into_iter().collect();
    ids.sort();
    // One read of every index file. Which files are superseded is known only
    // at the end; superseded files are present only after an interrupted
    // prune or repair, and then the table is built again without them.
    let mut table = empty_table();
    let mut mismatches = CheckReport::default();
    let mut good = Vec::new();
    let mut superseded = HashSet::new();
    for id in ids {
        report.index_files += 1;
        match repo.load_index_file(&id) {
            Ok(file) => {
                superseded.extend(file.supersedes.iter().copied());
                add_index_file(&mut table, &file, &id, &mut mismatches);
                good.push(id);
            }
            Err(e) if matches!(e.kind(), ErrorKind::Corrupt | ErrorKind::UnsupportedVersion) => {
                report.problem(Object::index_file(&id), Status::Damaged, e.to_string());
            }
            Err(e) => return Err(e),
        }
    }
    if good.iter().any(|id| superseded.contains(id)) {
        table = empty_table();
        mismatches = CheckReport::default();
        let mut used = Vec::new();
        for id in good {
            if superseded.contains(&id) {
                report.note(
                    NoteKind::SupersededIndexFile,
                    format!(
                        "index file {id} is superseded by a newer one and ignored (left by an interrupted prune or repair; the next prune deletes it)"
                    ),
                );
                table.superseded_files.push(id);
                continue;
            }
            add_index_file(
                &mut table,
                &repo.load_index_file(&id)?,
                &id,
                &mut mismatches,
            );
            used.push(id);
        }
        good = used;
    }
    for p in mismatches.problems {
        report.problem(p.object, p.status, p.message);
    }
    report.problems_unlisted += mismatches.problems_unlisted;
    table.rows.sort_unstable_by(|a, b| {
        (a.entry.kind, a.entry.id, a.pack).cmp(&(b.entry.kind, b.entry.id, b.pack))
    });
    table
        .rows
        .dedup_by(|a, b| a.pack == b.pack && a.entry == b.entry);
    report.blobs_indexed = table.rows.len() as u64;
    Ok((table, good))
}

fn add_index_file(table: &mut Table, file: &IndexFile, id: &IndexId, report: &mut CheckReport) {
    for pack in &file.packs {
        let blob_bytes: u64 = pack.entries.iter().map(|e| u64::from(e.length)).sum();
        let size = expected_pack_size(blob_bytes, pack.entries.len() as u64);
        let number = match table.pack_numbers.get(&pack.id) {
            Some(&n) => {
                if table.pack_sizes[n as usize] != size {
                    report.problem(
                        Object::index_file(id),
                        Status::Mismatch,
                        format!(
                            "lists pack {} with other blobs than another index file",
                            pack.id
                        ),
                    );
                }
                n
            }
            None => {
                let n = table.packs.len() as u32;
                table.packs.push(pack.id);
                table.pack_numbers.insert(pack.id, n);
                table.pack_sizes.push(size);
                table.pack_blobs.push(pack.entries.len() as u32);
                n
            }
        };
        table.rows.extend(pack.entries.iter().map(|&entry| Row {
            pack: number,
            flags: 0,
            entry,
        }));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::format::pack;

    #[test]
    fn expected_pack_size_matches_the_pack_builder() {
        let key = crate::format::crypto::MasterKey::generate();
        let mut builder = pack::PackBuilder::new();
        for i in 0..5u8 {
            let data = vec![i; 1000 + usize::from(i)];
            let id = key.blob_id(&data);
            builder.add(pack::seal_blob(&key, BlobKind::Data, id, &data, 3));
        }
        let (_, bytes, entries) = builder.finish(&key);
        let blob_bytes: u64 = entries.iter().map(|e| u64::from(e.length)).sum();
        assert_eq!(
            expected_pack_size(blob_bytes, entries.len() as u64),
            bytes.len() as u64
        );
    }
}
