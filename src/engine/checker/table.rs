//! The checker's own index: a sorted table of every blob the repository's
//! index files list, built from those files alone (never from the local
//! cache). Prune uses the same table, with the blobs snapshots use marked.
//! Its rows stay within a memory budget (`rows`); its packs, one per
//! hundred to thousand blobs, and two flag bits per row stay in memory.

use crate::engine::checker::report::{CheckReport, NoteKind, Object, Status};
use crate::engine::checker::rows::{self, Builder, Rows};
use crate::engine::repository::Repository;
use crate::error::{Error, ErrorKind, Result};
use crate::format::crypto::SEAL_OVERHEAD;
use crate::format::id::{BlobId, IndexId, PackId};
use crate::format::index_file::IndexFile;
use crate::format::pack::{BlobKind, PackEntry, ENTRY_LEN};
use std::collections::{HashMap, HashSet};
use std::sync::Mutex;

pub(crate) const USED: u8 = 1;
pub(crate) const DAMAGED: u8 = 2;

/// Memory for the table's rows when no budget is given: up to about 1.3
/// million blobs stay in memory (lookups by binary search, as fast as
/// before); a larger repository's rows go to its cache directory.
pub const TABLE_MEMORY_DEFAULT: u64 = 64 << 20;
/// What one pack costs in memory besides its rows (id, size, blob count,
/// the map from id to number), counted against the budget.
const PACK_MEMORY: usize = 100;

/// One index entry, with its flags.
#[derive(Clone, Copy, Debug, PartialEq)]
pub(crate) struct Row {
    pub(crate) pack: u32,
    pub(crate) flags: u8,
    pub(crate) entry: PackEntry,
}

/// The checker's own index, built from the index files alone: rows sorted
/// by (kind, id, pack), possibly several per blob, in memory or on disk
/// (`rows`), and two flag bits per row in memory.
pub(crate) struct Table {
    rows: Rows,
    /// `USED` and `DAMAGED` of row i: bits 2(i%4) and 2(i%4)+1 of byte i/4.
    flags: Vec<u8>,
    pub(crate) packs: Vec<PackId>,
    pub(crate) pack_numbers: HashMap<PackId, u32>,
    /// Size each pack must have, from its index entries.
    pub(crate) pack_sizes: Vec<u64>,
    pub(crate) pack_blobs: Vec<u32>,
    /// Readable index files that a newer one supersedes; not in the table.
    pub(crate) superseded_files: Vec<IndexId>,
    /// When prune marked each pack for deletion (the latest mark file that
    /// lists it, ms since the epoch); `None` for a pack no mark file lists.
    pub(crate) pack_marked: Vec<Option<i64>>,
    /// The mark files in the table and their times.
    pub(crate) mark_files: Vec<(IndexId, i64)>,
    /// The first error reading rows from disk in a lookup (which has no
    /// `Result`, so that callers stay simple); `check_error` returns it.
    error: Mutex<Option<Error>>,
}

impl Table {
    fn new(rows: Rows, packs: Packs, superseded_files: Vec<IndexId>) -> Table {
        Table {
            flags: vec![0; rows.len().div_ceil(4)],
            rows,
            packs: packs.ids,
            pack_numbers: packs.numbers,
            pack_sizes: packs.sizes,
            pack_blobs: packs.blobs,
            pack_marked: packs.marked,
            mark_files: Vec::new(),
            superseded_files,
            error: Mutex::new(None),
        }
    }

    /// A table of these packs and no rows (for tests).
    #[cfg(test)]
    pub(crate) fn of_packs(ids: Vec<PackId>) -> Table {
        let mut packs = Packs::default();
        for id in ids {
            packs.number(id, 1, 0);
        }
        Table::new(Rows::Memory(Vec::new()), packs, Vec::new())
    }

    pub(crate) fn len(&self) -> usize {
        self.rows.len()
    }

    fn flags_of(&self, i: usize) -> u8 {
        (self.flags[i / 4] >> (2 * (i % 4))) & 3
    }

    fn set_flags(&mut self, i: usize, flags: u8) {
        self.flags[i / 4] |= (flags & 3) << (2 * (i % 4));
    }

    fn row(&self, i: usize, rec: &rows::Rec) -> Result<Row> {
        let (pack, entry) = rows::decode(rec)?;
        Ok(Row {
            pack,
            flags: self.flags_of(i),
            entry,
        })
    }

    fn keep_error(&self, e: Error) {
        let mut slot = self.error.lock().unwrap_or_else(|p| p.into_inner());
        slot.get_or_insert(e);
    }

    /// The first error a lookup met reading the rows, if any.
    pub(crate) fn check_error(&self) -> Result<()> {
        let mut slot = self.error.lock().unwrap_or_else(|p| p.into_inner());
        slot.take().map_or(Ok(()), Err)
    }

    /// The index of the first row of a blob and its rows (empty on an
    /// error, which `check_error` then returns).
    fn lookup(&self, kind: BlobKind, id: &BlobId) -> (usize, Vec<Row>) {
        let found = self
            .rows
            .range(&rows::id_key(kind, id))
            .and_then(|(start, recs)| {
                let rows = recs
                    .iter()
                    .enumerate()
                    .map(|(i, r)| self.row(start + i, r))
                    .collect::<Result<Vec<Row>>>()?;
                Ok((start, rows))
            });
        found.unwrap_or_else(|e| {
            self.keep_error(e);
            (0, Vec::new())
        })
    }

    /// Rows of every copy of a blob.
    pub(crate) fn range(&self, kind: BlobKind, id: &BlobId) -> Vec<Row> {
        self.lookup(kind, id).1
    }

    /// Marks every copy of a blob used; returns whether one copy is intact
    /// (`None` when no index names the blob at all).
    pub(crate) fn use_blob(&mut self, kind: BlobKind, id: &BlobId) -> Option<bool> {
        let (start, rows) = self.lookup(kind, id);
        if rows.is_empty() {
            return None;
        }
        let mut intact = false;
        for (i, row) in rows.iter().enumerate() {
            self.set_flags(start + i, USED);
            intact |= row.flags & DAMAGED == 0;
        }
        Some(intact)
    }

    /// Marks the copy of a blob in pack `pack` with `flags`.
    pub(crate) fn mark_copy(&mut self, kind: BlobKind, id: &BlobId, pack: u32, flags: u8) {
        let (start, rows) = self.lookup(kind, id);
        for (i, row) in rows.iter().enumerate() {
            if row.pack == pack {
                self.set_flags(start + i, flags);
            }
        }
    }

    /// Marks every row for which `pick` is true with `flags` (one pass).
    pub(crate) fn mark_where(
        &mut self,
        flags: u8,
        mut pick: impl FnMut(&Row) -> bool,
    ) -> Result<()> {
        let marks = &mut self.flags;
        self.rows.scan(|i, rec| {
            let (pack, entry) = rows::decode(rec)?;
            let shift = 2 * (i % 4);
            let row = Row {
                pack,
                flags: (marks[i / 4] >> shift) & 3,
                entry,
            };
            if pick(&row) {
                marks[i / 4] |= (flags & 3) << shift;
            }
            Ok(())
        })
    }

    /// Every row in order, with its index.
    pub(crate) fn for_each(&self, mut f: impl FnMut(usize, &Row) -> Result<()>) -> Result<()> {
        self.rows.scan(|i, rec| f(i, &self.row(i, rec)?))
    }

    /// Reads the rows in order, a piece at a time, for a merge with another
    /// sorted sequence.
    pub(crate) fn cursor(&self) -> Cursor<'_> {
        Cursor {
            table: self,
            at: 0,
            piece: Vec::new(),
            pos: 0,
        }
    }

    /// The rows of one pack (a pass over the whole table).
    pub(crate) fn rows_of_pack(&self, pack: u32) -> Result<Vec<Row>> {
        let mut found = Vec::new();
        self.for_each(|_, row| {
            if row.pack == pack {
                found.push(*row);
            }
            Ok(())
        })?;
        Ok(found)
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

pub(crate) struct Cursor<'t> {
    table: &'t Table,
    /// Index of the first row of `piece`.
    at: usize,
    piece: Vec<Row>,
    pos: usize,
}

impl Cursor<'_> {
    /// The next row, without moving past it.
    pub(crate) fn peek(&mut self) -> Result<Option<Row>> {
        if self.pos == self.piece.len() {
            self.at += self.piece.len();
            self.pos = 0;
            let recs = self.table.rows.read(self.at, 16 * 1024)?;
            self.piece = recs
                .iter()
                .enumerate()
                .map(|(i, r)| self.table.row(self.at + i, r))
                .collect::<Result<Vec<Row>>>()?;
        }
        Ok(self.piece.get(self.pos).copied())
    }

    pub(crate) fn advance(&mut self) {
        self.pos += 1;
    }
}

/// The packs while the table is built: numbered in the order met.
#[derive(Default)]
struct Packs {
    ids: Vec<PackId>,
    numbers: HashMap<PackId, u32>,
    sizes: Vec<u64>,
    blobs: Vec<u32>,
    marked: Vec<Option<i64>>,
}

impl Packs {
    /// The pack's number, and whether it was known with another size.
    fn number(&mut self, id: PackId, size: u64, blobs: u32) -> (u32, bool) {
        match self.numbers.get(&id) {
            Some(&n) => (n, self.sizes[n as usize] != size),
            None => {
                let n = self.ids.len() as u32;
                self.ids.push(id);
                self.numbers.insert(id, n);
                self.sizes.push(size);
                self.blobs.push(blobs);
                self.marked.push(None);
                (n, false)
            }
        }
    }

    fn memory(&self) -> usize {
        self.ids.len() * PACK_MEMORY
    }
}

/// The exact size of a pack holding `entries`: blobs, sealed header, trailer.
pub fn expected_pack_size(blob_bytes: u64, blob_count: u64) -> u64 {
    blob_bytes + SEAL_OVERHEAD as u64 + 8 + blob_count * ENTRY_LEN as u64 + 4
}

/// Builds the table from every readable index file; damaged index files
/// and index files that list one pack differently are reported. Returns
/// the table and the index files it was built from. `memory`: bytes the
/// rows may take in memory before they go to `repo`'s cache directory.
pub(crate) fn build_table<S: Sync>(
    repo: &Repository<S>,
    report: &mut CheckReport,
    memory: Option<u64>,
) -> Result<(Table, Vec<IndexId>)> {
    let mut ids: Vec<IndexId> = repo.list_index_ids()?.into_iter().collect();
    ids.sort();
    let memory = Some(memory.unwrap_or(TABLE_MEMORY_DEFAULT));
    let spill_to = repo.cache_dir();
    // One read of every index file. Which files are superseded is known only
    // at the end; superseded files are present only after an interrupted
    // prune or repair, and then the table is built again without them.
    let mut rows = Builder::new(memory, spill_to);
    let mut packs = Packs::default();
    let mut mismatches = CheckReport::default();
    let mut good = Vec::new();
    let mut superseded = HashSet::new();
    let mut marks = HashMap::new();
    for id in ids {
        report.index_files += 1;
        repo.context().check_interrupt()?;
        match repo.load_index_file(&id) {
            Ok(file) => {
                superseded.extend(file.supersedes.iter().copied());
                if let Some(at) = file.marked_at {
                    marks.insert(id, at);
                }
                add_index_file(&mut rows, &mut packs, &file, &id, &mut mismatches)?;
                good.push(id);
            }
            Err(e) if matches!(e.kind(), ErrorKind::Corrupt | ErrorKind::UnsupportedVersion) => {
                report.problem(Object::index_file(&id), Status::Damaged, e.to_string());
            }
            Err(e) => return Err(e),
        }
    }
    let mut superseded_files = Vec::new();
    if good.iter().any(|id| superseded.contains(id)) {
        drop(rows);
        rows = Builder::new(memory, spill_to);
        packs = Packs::default();
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
                superseded_files.push(id);
                continue;
            }
            let file = repo.load_index_file(&id)?;
            add_index_file(&mut rows, &mut packs, &file, &id, &mut mismatches)?;
            used.push(id);
        }
        good = used;
    }
    for p in mismatches.problems {
        report.problem(p.object, p.status, p.message);
    }
    report.problems_unlisted += mismatches.problems_unlisted;
    let mut table = Table::new(rows.finish()?, packs, superseded_files);
    table.mark_files = good
        .iter()
        .filter_map(|id| marks.get(id).map(|at| (*id, *at)))
        .collect();
    let marked = table.pack_marked.iter().flatten().count();
    if marked > 0 {
        report.note(
            NoteKind::MarkedPacks,
            format!(
                "{marked} pack(s) are marked for deletion by prune (still readable; a later prune deletes them once the backups that ran when they were marked have ended)"
            ),
        );
    }
    report.blobs_indexed = table.len() as u64;
    Ok((table, good))
}

fn add_index_file(
    rows: &mut Builder,
    packs: &mut Packs,
    file: &IndexFile,
    id: &IndexId,
    report: &mut CheckReport,
) -> Result<()> {
    for pack in &file.packs {
        let blob_bytes: u64 = pack.entries.iter().map(|e| u64::from(e.length)).sum();
        let size = expected_pack_size(blob_bytes, pack.entries.len() as u64);
        let (number, other_size) = packs.number(pack.id, size, pack.entries.len() as u32);
        if let Some(at) = file.marked_at {
            let marked = &mut packs.marked[number as usize];
            *marked = Some(marked.map_or(at, |m| m.max(at)));
        }
        if other_size {
            report.problem(
                Object::index_file(id),
                Status::Mismatch,
                format!(
                    "lists pack {} with other blobs than another index file",
                    pack.id
                ),
            );
        }
        for entry in &pack.entries {
            rows.push(rows::encode(number, entry), packs.memory())?;
        }
    }
    Ok(())
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
