//! `prune`: reclaims the space of blobs no snapshot uses.
//!
//! Under an exclusive lock (so no backup is writing), prune runs the
//! structure check (refusing to touch a damaged repository), marks every
//! blob a snapshot uses, deletes packs with no used blob, repacks packs
//! with too much unused data, and rewrites the index. The order of writes
//! and deletes (docs/FORMAT.md, "Pruning") makes a crash at any point lose
//! nothing: new packs → new index files → old index files deleted → old
//! packs deleted. No index file ever names a deleted pack.

use crate::engine::checker::{self, Row, Table, USED};
use crate::engine::repository::Repository;
use crate::error::{Error, ErrorKind, Result};
use crate::format::id::SnapshotId;
use crate::format::id::{IndexId, PackId};
use crate::format::index_file::INDEX_FILE_BLOBS_TARGET;
use crate::format::index_file::{IndexFile, IndexPack};
use crate::format::pack::{self, BlobKind, PackBuilder, SealedBlob};
use crate::storage::backend::FileKind;
use crate::storage::lock::{self, DeleteLock, LiveLocks, LockGuard};
use chrono::{DateTime, FixedOffset};
use serde::Serialize;
use std::collections::{HashMap, HashSet};
use std::str::FromStr;
use std::time::SystemTime;

/// Small packs (under half the target size) of one kind that make prune
/// rewrite them together: a backup or a repack leaves one or two each time,
/// and rewriting a handful would only move bytes.
pub const SMALL_PACKS_MIN: usize = 10;

/// How much unused data prune may leave in partly used packs.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum MaxUnused {
    /// A share of the used data (restic: of the repository after pruning).
    Percent(f64),
    Bytes(u64),
    Unlimited,
}

impl FromStr for MaxUnused {
    type Err = Error;

    fn from_str(text: &str) -> Result<MaxUnused> {
        let text = text.trim();
        if text == "unlimited" {
            return Ok(MaxUnused::Unlimited);
        }
        if let Some(p) = text.strip_suffix('%') {
            let p: f64 = p
                .trim()
                .parse()
                .map_err(|_| Error::invalid(format!(
                    "bad limit of unused space {text:?}: use a percentage (5%), a size (2G) or unlimited"
                )))?;
            if !(0.0..100.0).contains(&p) {
                return Err(Error::invalid(
                    "the limit of unused space must be below 100%",
                ));
            }
            return Ok(MaxUnused::Percent(p));
        }
        Ok(MaxUnused::Bytes(crate::units::parse_size(text)?))
    }
}

/// Parses `500`, `10K`, `500M`, `1G`, `2T` (binary units, optional `B`/`iB`).
#[derive(Debug, Clone)]
pub struct PruneOptions {
    pub max_unused: MaxUnused,
    /// Stop choosing packs to repack after this many bytes (pack sizes).
    pub max_repack_bytes: Option<u64>,
    pub dry_run: bool,
    /// Bytes the blob table may hold in memory before it goes to the
    /// cache directory (`None`: `TABLE_MEMORY_DEFAULT`).
    pub memory: Option<u64>,
    /// Rewrite packs under half the target size together (restic's
    /// `--repack-small`), when a kind of blob has `SMALL_PACKS_MIN` of them.
    pub repack_small: bool,
}

impl Default for PruneOptions {
    fn default() -> Self {
        PruneOptions {
            max_unused: MaxUnused::Percent(5.0),
            max_repack_bytes: None,
            dry_run: false,
            memory: None,
            repack_small: true,
        }
    }
}

#[derive(Debug, Default, Clone, Serialize)]
pub struct PruneOutcome {
    pub dry_run: bool,
    pub blobs_used: u64,
    pub blobs_unused: u64,
    /// Sealed bytes of the blobs snapshots use / do not use.
    pub bytes_used: u64,
    pub bytes_unused: u64,
    pub packs: u64,
    /// Packs with no used blob, deleted whole.
    pub packs_deleted: u64,
    /// Partly used packs whose used blobs were copied to new packs.
    pub packs_repacked: u64,
    /// Of those, packs repacked because they were small (`repack_small`).
    pub packs_repacked_small: u64,
    /// Packs no index names (left by interrupted backups), deleted.
    pub packs_unindexed_deleted: u64,
    /// Packs no index names that are younger than the minimum age
    /// (docs/FORMAT.md, section 13), kept: a backup may still index them.
    pub packs_unindexed_kept: u64,
    /// Temporary files of writes a crash interrupted (a pack being
    /// streamed), deleted; their bytes count in `bytes_deleted`.
    pub temp_files_deleted: u64,
    pub packs_written: u64,
    /// Bytes of pack files deleted, and of new pack files written.
    pub bytes_deleted: u64,
    pub bytes_written: u64,
    /// Unused bytes left in partly used packs (within --max-unused).
    pub bytes_unused_remaining: u64,
    pub index_files_written: u64,
    pub index_files_removed: u64,
    /// Packs this run would delete or repacked, left marked for a later
    /// prune because a lock older than the mark is still live (prune lock
    /// only), and their bytes (not in `bytes_deleted`).
    pub packs_marked: u64,
    pub bytes_marked: u64,
    pub mark_files_written: u64,
    /// Packs an earlier prune marked, deleted now (their bytes are in
    /// `bytes_deleted`) or indexed again because a snapshot needs them.
    pub marked_packs_deleted: u64,
    pub marked_packs_restored: u64,
    /// Mark files whose packs must wait: a lock older than them is live.
    pub mark_files_waiting: u64,
}

impl PruneOutcome {
    /// Space given back to the storage.
    pub fn bytes_freed(&self) -> u64 {
        self.bytes_deleted.saturating_sub(self.bytes_written)
    }
}

/// Prunes the repository, under the caller's exclusive lock or prune lock.
///
/// Under an exclusive lock no other process runs, so what prune no longer
/// needs is deleted at once. Under a prune lock backups go on, and prune
/// deletes in two phases (docs/FORMAT.md, section 15, "Two-phase delete"):
/// the packs it would delete are listed in mark files and left out of the
/// new index; they are deleted once no lock that may have seen them as
/// live remains (in this run if none does, else by a later prune), and a
/// marked pack that a snapshot written since needs is indexed again.
pub fn prune<L: DeleteLock>(
    repo: &mut Repository,
    lock: &L,
    options: &PruneOptions,
) -> Result<PruneOutcome> {
    let ctx = repo.context().clone();
    // The locks live before the snapshots are read: a backup that ends
    // after this has its snapshot read below, and one that is still
    // running is among these (docs/FORMAT.md, section 15, "Two-phase
    // delete", why nothing is lost).
    let exclusive = lock.is_exclusive();
    let live = repo.live_locks(lock)?;
    let snapshots_before: HashSet<_> = repo.list_snapshot_ids()?.into_iter().collect();
    let usage = checker::usage(repo, options.memory)?;
    if !usage.report.is_clean() {
        let first =
            usage
                .report
                .problems
                .first()
                .map(|p| format!("{} {}: {}", p.object, p.status, p.message))
                .or_else(|| {
                    usage.report.damaged_paths.first().map(|d| {
                        format!("snapshot {} {}: {}", d.snapshot.short(), d.path, d.detail)
                    })
                })
                .unwrap_or_default();
        return Err(Error::new(
            ErrorKind::Corrupt,
            format!("prune refuses to run on a damaged repository ({first})"),
        ));
    }
    let table = &usage.table;
    let pack_count = table.packs.len();
    let mut outcome = PruneOutcome {
        dry_run: options.dry_run,
        ..PruneOutcome::default()
    };
    // Which marks are due: under an exclusive lock all of them (no other
    // lock is live), else those no live lock is older than.
    let is_due = |at: i64| exclusive || live.blocking(mark_time(at)).is_none();
    let mut state = vec![State::Live; pack_count];
    for (n, marked) in table.pack_marked.iter().enumerate() {
        if let Some(at) = *marked {
            state[n] = if is_due(at) {
                State::Due
            } else {
                State::Waiting
            };
        }
    }
    let mut due_files = Vec::new();
    for (id, at) in &table.mark_files {
        if is_due(*at) {
            due_files.push(*id);
        } else {
            outcome.mark_files_waiting += 1;
        }
    }

    // One copy of each used blob is kept: the first row of its (kind, id)
    // range in a pack that is not marked, else the first row. Every other
    // row is unused data.
    let mut used_bytes = vec![0u64; pack_count];
    let mut used_blobs = vec![0u32; pack_count];
    // A pack's kind: a writer's packs hold one kind of blob each.
    let mut tree_pack = vec![false; pack_count];
    for_each_keeper(table, &state, |row, keeper| {
        tree_pack[row.pack as usize] = row.entry.kind == BlobKind::Tree;
        let length = u64::from(row.entry.length);
        if keeper {
            used_bytes[row.pack as usize] += length;
            used_blobs[row.pack as usize] += 1;
            outcome.blobs_used += 1;
            outcome.bytes_used += length;
        } else {
            outcome.blobs_unused += 1;
            outcome.bytes_unused += length;
        }
    })?;

    // Fates: delete whole packs without used blobs; repack the worst partly
    // used packs until the unused data left is within the limit. A marked
    // pack that is due goes if nothing needs it, and is indexed again if a
    // snapshot does; one that is waiting is left alone.
    let mut fate = vec![Fate::Keep; pack_count];
    let mut partial: Vec<(usize, u64)> = Vec::new();
    let mut unused_left = 0u64;
    for n in 0..pack_count {
        let size = table.pack_sizes[n];
        match state[n] {
            State::Waiting => {
                fate[n] = Fate::Wait;
                continue;
            }
            State::Due if used_blobs[n] > 0 => {
                outcome.marked_packs_restored += 1;
                continue;
            }
            State::Due => {
                fate[n] = Fate::Delete;
                continue;
            }
            State::Live => {}
        }
        if used_blobs[n] == 0 {
            fate[n] = Fate::Delete;
        } else {
            let unused = size - used_bytes[n].min(size);
            // Header, envelope and trailer count as overhead, not unused.
            let overhead = checker::expected_pack_size(0, u64::from(table.pack_blobs[n]));
            let unused = unused.saturating_sub(overhead);
            if unused > 0 {
                partial.push((n, unused));
                unused_left += unused;
            }
        }
    }
    let limit = match options.max_unused {
        MaxUnused::Unlimited => u64::MAX,
        MaxUnused::Bytes(b) => b,
        MaxUnused::Percent(p) => (outcome.bytes_used as f64 * p / (100.0 - p)) as u64,
    };
    // Most wasteful first: the fewest bytes copied per byte freed.
    partial.sort_by(|a, b| {
        let ra = a.1 as f64 / table.pack_sizes[a.0] as f64;
        let rb = b.1 as f64 / table.pack_sizes[b.0] as f64;
        rb.total_cmp(&ra)
    });
    let mut repack_bytes = 0u64;
    for &(n, unused) in &partial {
        if unused_left <= limit {
            break;
        }
        if let Some(max) = options.max_repack_bytes {
            if repack_bytes + table.pack_sizes[n] > max {
                continue;
            }
        }
        fate[n] = Fate::Repack;
        repack_bytes += table.pack_sizes[n];
        unused_left -= unused;
    }
    if options.repack_small {
        // Small packs, one kind at a time: once there are enough to be
        // worth a rewrite they go together into packs of the target size.
        // The last pack of a rewrite may be small again; alone it stays, so
        // prune does not churn.
        let small_size = u64::from(repo.config().pack_size_target) / 2;
        for tree in [false, true] {
            let small: Vec<usize> = (0..pack_count)
                .filter(|&n| tree_pack[n] == tree && fate[n] == Fate::Keep)
                .filter(|&n| state[n] == State::Live)
                .filter(|&n| table.pack_sizes[n] < small_size)
                .collect();
            if small.len() < SMALL_PACKS_MIN {
                continue;
            }
            for n in small {
                if fate[n] == Fate::Repack {
                    continue;
                }
                if let Some(max) = options.max_repack_bytes {
                    if repack_bytes + table.pack_sizes[n] > max {
                        continue;
                    }
                }
                fate[n] = Fate::Repack;
                repack_bytes += table.pack_sizes[n];
                outcome.packs_repacked_small += 1;
                let overhead = checker::expected_pack_size(0, u64::from(table.pack_blobs[n]));
                let unused = table.pack_sizes[n]
                    .saturating_sub(used_bytes[n])
                    .saturating_sub(overhead);
                unused_left = unused_left.saturating_sub(unused);
            }
        }
    }
    outcome.bytes_unused_remaining = unused_left;
    outcome.packs = usage.listed_packs.len() as u64;
    let unindexed = old_unindexed_packs(
        repo,
        (!exclusive).then_some(&live),
        &usage.listed_packs,
        &table.pack_numbers,
        &mut outcome,
    )?;
    for n in 0..pack_count {
        let size = table.pack_sizes[n];
        match (fate[n], state[n]) {
            (Fate::Delete, State::Due) => {
                outcome.marked_packs_deleted += 1;
                outcome.bytes_deleted += size;
            }
            (Fate::Delete, _) => outcome.packs_deleted += 1,
            (Fate::Repack, _) => outcome.packs_repacked += 1,
            (Fate::Keep | Fate::Wait, _) => continue,
        }
        if state[n] == State::Live {
            // Deleted at once under an exclusive lock; else marked, and
            // counted as deleted only if this run may delete them too.
            outcome.packs_marked += 1;
            outcome.bytes_marked += size;
        }
    }
    outcome.packs_unindexed_deleted = unindexed.len() as u64;
    outcome.bytes_deleted += unindexed.iter().map(|(_, s)| s).sum::<u64>();
    // Temporary files are a crashed writer's only when no other process
    // holds a lock: under a prune lock a backup may be streaming one.
    if exclusive || !repo.live_locks(lock)?.any() {
        let (temp_files, temp_bytes) = repo.sweep_temp_files(options.dry_run, lock)?;
        outcome.temp_files_deleted = temp_files;
        outcome.bytes_deleted += temp_bytes;
    }
    let nothing_to_do = fate.iter().all(|f| matches!(f, Fate::Keep | Fate::Wait))
        && unindexed.is_empty()
        && due_files.is_empty()
        && table.superseded_files.is_empty();
    if nothing_to_do {
        // Rewriting an index that would come out the same is churn.
        return Ok(outcome);
    }
    if options.dry_run {
        // Estimate what repacking writes: the used blobs of repacked packs.
        outcome.bytes_written = (0..pack_count)
            .filter(|&n| fate[n] == Fate::Repack)
            .map(|n| used_bytes[n])
            .sum();
        if lock.is_exclusive() {
            outcome.bytes_deleted += outcome.bytes_marked;
            outcome.packs_marked = 0;
            outcome.bytes_marked = 0;
        }
        return Ok(outcome);
    }

    // 1. Copy the used blobs of repacked packs into new packs, indexed as
    // they are stored.
    let mut index = IndexWriter::new(repo, lock);
    repack(
        repo,
        lock,
        table,
        &state,
        &fate,
        &used_blobs,
        options.memory,
        &mut index,
        &mut outcome,
    )?;
    crate::failpoint::hit!("prune-after-packs");

    // 2. New index files: every kept pack with all its entries (its size
    // must still match), as the index files it came from list it; marked
    // packs that are due and still needed come back from their mark files.
    // Under a prune lock the packs to go are listed in mark files, all
    // stored before the new index leaves them out.
    let marks_needed = !lock.is_exclusive() && outcome.packs_marked > 0;
    let mut marks = IndexWriter::marking(repo, lock);
    let mark_set: HashSet<IndexId> = table.mark_files.iter().map(|(id, _)| *id).collect();
    let live_files: Vec<IndexId> = usage
        .index_files
        .iter()
        .filter(|id| !mark_set.contains(id))
        .copied()
        .collect();
    let mut listed = vec![false; pack_count];
    let mut marked = vec![false; pack_count];
    for id in live_files.iter().chain(&due_files) {
        ctx.check_interrupt()?;
        let file = repo.load_index_file(id)?;
        for p in file.packs {
            let Some(&n) = table.pack_numbers.get(&p.id) else {
                continue;
            };
            let n = n as usize;
            let mut entries = p.entries;
            entries.sort_by_key(|e| e.offset);
            let pack = IndexPack { id: p.id, entries };
            match (fate[n], state[n]) {
                (Fate::Keep, State::Live | State::Due) if !listed[n] => {
                    listed[n] = true;
                    index.add(pack)?;
                }
                (Fate::Delete | Fate::Repack, State::Live) if marks_needed && !marked[n] => {
                    marked[n] = true;
                    marks.add(pack)?;
                }
                _ => {}
            }
        }
    }
    let new_marks = marks.finish_marks()?;
    outcome.mark_files_written = new_marks.len() as u64;
    crate::failpoint::hit!("prune-after-mark");
    let mut old_index = live_files;
    old_index.extend(&table.superseded_files);
    let written = index.finish(&old_index)?;
    outcome.index_files_written = written.len() as u64;
    crate::failpoint::hit!("prune-after-index");

    // 3. Old index files and due mark files go, so no index names a pack
    // about to be deleted.
    for id in old_index.iter().chain(&due_files) {
        if !written.contains(id) {
            repo.delete_index_file(id, lock)?;
            outcome.index_files_removed += 1;
        }
    }
    crate::failpoint::hit!("prune-after-index-delete");

    // 4. Only now the packs: those of due marks, those this run marked if
    // no lock older than the marks is live now (always so under an
    // exclusive lock), and old unindexed packs.
    let delete_now = exclusive
        || outcome.packs_marked == 0
        || new_marks_due(repo, lock, &new_marks, &snapshots_before)?;
    if delete_now && !exclusive {
        for (id, _) in &new_marks {
            repo.delete_index_file(id, lock)?;
        }
    }
    for n in 0..pack_count {
        let deleted = match (fate[n], state[n]) {
            (Fate::Delete, State::Due) => true,
            (Fate::Delete | Fate::Repack, State::Live) => delete_now,
            _ => false,
        };
        if deleted {
            repo.delete_pack(&table.packs[n], lock)?;
        }
    }
    if delete_now {
        outcome.bytes_deleted += outcome.bytes_marked;
        outcome.packs_marked = 0;
        outcome.bytes_marked = 0;
    }
    for (id, _) in &unindexed {
        repo.delete_pack(id, lock)?;
    }
    ctx.progress().finish();
    repo.reload_index()?;
    // 5. Snapshots whose blobs moved get manifests naming the new packs.
    repo.refresh_manifests(lock, &snapshots_before)?;
    Ok(outcome)
}

/// Whether the marks this run wrote are already due: no live lock is
/// older than the latest of them, and no snapshot was stored since this
/// run read them (a backup that ended meanwhile may use a marked pack, and
/// its snapshot was not read).
fn new_marks_due(
    repo: &Repository,
    lock: &LockGuard,
    marks: &[(IndexId, i64)],
    snapshots_before: &HashSet<SnapshotId>,
) -> Result<bool> {
    let Some(at) = marks.iter().map(|(_, at)| *at).max() else {
        // Packs to go and no mark listing them: never delete unmarked.
        return Ok(false);
    };
    if repo.live_locks(lock)?.blocking(mark_time(at)).is_some() {
        return Ok(false);
    }
    let now: HashSet<SnapshotId> = repo.list_snapshot_ids()?.into_iter().collect();
    Ok(now.is_subset(snapshots_before))
}

/// A mark file's time (ms since the epoch) as a date; out of range: now.
fn mark_time(at: i64) -> DateTime<FixedOffset> {
    DateTime::from_timestamp_millis(at)
        .map(|t| t.fixed_offset())
        .unwrap_or_else(|| chrono::Local::now().fixed_offset())
}

/// What prune may do with a pack, from the mark files that list it.
#[derive(Clone, Copy, PartialEq)]
enum State {
    /// No mark file lists it.
    Live,
    /// Marked, and no lock that may have seen it live remains.
    Due,
    /// Marked, and some such lock is still live: left alone.
    Waiting,
}

#[derive(Clone, Copy, PartialEq)]
enum Fate {
    Keep,
    Delete,
    Repack,
    /// A marked pack that is not due yet.
    Wait,
}

/// Calls `f` with every row of the table and whether it is the copy of a
/// used blob that prune keeps: the first row of its (kind, id) range in a
/// pack no mark file lists, else the first row. One range at a time is
/// held (a blob has a copy or two).
fn for_each_keeper(table: &Table, state: &[State], mut f: impl FnMut(&Row, bool)) -> Result<()> {
    let mut group: Vec<Row> = Vec::new();
    let mut flush = |group: &mut Vec<Row>| {
        let used = group.iter().any(|r| r.flags & USED != 0);
        let keeper = group
            .iter()
            .position(|r| state[r.pack as usize] == State::Live)
            .unwrap_or(0);
        for (i, row) in group.iter().enumerate() {
            f(row, used && i == keeper);
        }
        group.clear();
    };
    table.for_each(|_, row| {
        if let Some(last) = group.last() {
            if (last.entry.kind, last.entry.id) != (row.entry.kind, row.entry.id) {
                flush(&mut group);
            }
        }
        group.push(*row);
        Ok(())
    })?;
    flush(&mut group);
    Ok(())
}

/// Copies the kept blobs of the packs to repack into new packs. The blobs
/// of a batch of packs are gathered in one pass over the table, batches
/// sized to the memory budget, so memory does not grow with the repository.
#[allow(clippy::too_many_arguments)]
fn repack(
    repo: &Repository,
    lock: &LockGuard,
    table: &Table,
    state: &[State],
    fate: &[Fate],
    used_blobs: &[u32],
    memory: Option<u64>,
    index: &mut IndexWriter,
    outcome: &mut PruneOutcome,
) -> Result<()> {
    let ctx = repo.context();
    let repacked: Vec<u32> = (0..fate.len() as u32)
        .filter(|&n| fate[n as usize] == Fate::Repack)
        .collect();
    let repack_total = repacked.iter().map(|&n| table.pack_sizes[n as usize]).sum();
    ctx.progress()
        .start("repacking", repack_total, repacked.len() as u64);
    let batch_blobs = (memory.unwrap_or(checker::TABLE_MEMORY_DEFAULT) / 64).max(1024);
    let mut builders = [PackBuilder::new(), PackBuilder::new()];
    let target = repo.config().pack_size_target as usize;
    let mut next = 0;
    while next < repacked.len() {
        let mut end = next;
        let mut blobs = 0u64;
        while end < repacked.len() && (end == next || blobs < batch_blobs) {
            blobs += u64::from(used_blobs[repacked[end] as usize]);
            end += 1;
        }
        let batch: HashSet<u32> = repacked[next..end].iter().copied().collect();
        let mut kept: Vec<(u32, pack::PackEntry)> = Vec::new();
        for_each_keeper(table, state, |row, keeper| {
            if keeper && batch.contains(&row.pack) {
                kept.push((row.pack, row.entry));
            }
        })?;
        kept.sort_unstable_by_key(|(n, e)| (*n, e.offset));
        for rows in kept.chunk_by(|a, b| a.0 == b.0) {
            let n = rows[0].0;
            ctx.check_interrupt()?;
            ctx.progress().add_items(1);
            ctx.progress().add_bytes(table.pack_sizes[n as usize]);
            let id = table.packs[n as usize];
            let bytes = repo.read_pack(&id)?;
            for &(_, entry) in rows {
                let sealed = bytes
                    .get(entry.offset as usize..entry.offset as usize + entry.length as usize)
                    .ok_or_else(|| {
                        Error::corrupt(format!("pack {id} is shorter than its index says"))
                    })?;
                // Verify before copying: prune must not spread damage.
                repo.open_blob(&entry, sealed).map_err(|e| {
                    e.context(format!(
                        "pack {id} (prune stopped before deleting anything)"
                    ))
                })?;
                let builder = &mut builders[entry.kind as usize];
                if builder.len() + sealed.len() > target || builder.is_full() {
                    let full = std::mem::take(builder);
                    index.add(store_pack(repo, lock, full, outcome)?)?;
                }
                builders[entry.kind as usize].add(SealedBlob {
                    kind: entry.kind,
                    codec: entry.codec,
                    id: entry.id,
                    raw_length: entry.raw_length,
                    bytes: sealed.to_vec(),
                });
            }
        }
        next = end;
    }
    for builder in builders {
        if !builder.is_empty() {
            index.add(store_pack(repo, lock, builder, outcome)?)?;
        }
    }
    Ok(())
}

/// Stores packs in index files of up to INDEX_FILE_BLOBS_TARGET blobs as
/// they come. Only the LAST file names the old ones as superseded: readers
/// skip superseded files, so the list must not appear before every new file
/// is stored (docs/FORMAT.md). Used by prune and `repair index`.
pub(crate) struct IndexWriter<'r> {
    repo: &'r Repository,
    lock: &'r LockGuard,
    file: IndexFile,
    blobs: usize,
    written: HashSet<IndexId>,
    /// Writes mark files (`marking`): each gets the time it is stored at,
    /// and they are returned with their times.
    marking: bool,
    marks: Vec<(IndexId, i64)>,
}

impl<'r> IndexWriter<'r> {
    pub(crate) fn new(repo: &'r Repository, lock: &'r LockGuard) -> IndexWriter<'r> {
        IndexWriter {
            repo,
            lock,
            file: IndexFile::default(),
            blobs: 0,
            written: HashSet::new(),
            marking: false,
            marks: Vec::new(),
        }
    }

    /// A writer of mark files (docs/FORMAT.md, section 15, "Two-phase
    /// delete"). Each file's time is taken just before it is stored: a
    /// process that read the index before then holds a lock that started
    /// before it.
    pub(crate) fn marking(repo: &'r Repository, lock: &'r LockGuard) -> IndexWriter<'r> {
        IndexWriter {
            marking: true,
            ..IndexWriter::new(repo, lock)
        }
    }

    fn store(&mut self, mut file: IndexFile) -> Result<()> {
        if self.marking {
            let at = chrono::Utc::now().timestamp_millis();
            file.marked_at = Some(at);
            let id = self.repo.save_index_file(&file, self.lock)?;
            self.marks.push((id, at));
        } else {
            self.written
                .insert(self.repo.save_index_file(&file, self.lock)?);
        }
        Ok(())
    }

    pub(crate) fn add(&mut self, pack: IndexPack) -> Result<()> {
        if self.blobs >= INDEX_FILE_BLOBS_TARGET {
            let full = std::mem::take(&mut self.file);
            self.store(full)?;
            self.blobs = 0;
        }
        self.blobs += pack.entries.len();
        self.file.packs.push(pack);
        Ok(())
    }

    /// Stores the last file, naming `old` as superseded; returns every
    /// index file written.
    pub(crate) fn finish(mut self, old: &[IndexId]) -> Result<HashSet<IndexId>> {
        self.file.supersedes = old.to_vec();
        if !self.file.packs.is_empty() || !self.file.supersedes.is_empty() {
            let last = std::mem::take(&mut self.file);
            self.store(last)?;
        }
        Ok(self.written)
    }

    /// `finish` for a writer of mark files: the mark files and their times.
    pub(crate) fn finish_marks(mut self) -> Result<Vec<(IndexId, i64)>> {
        if !self.file.packs.is_empty() {
            let last = std::mem::take(&mut self.file);
            self.store(last)?;
        }
        Ok(self.marks)
    }
}

/// The packs no index file names that are old enough to delete. A younger
/// one may belong to a backup whose lock was lost (a suspended laptop, an
/// `unlock --remove-all`) and that has not yet noticed: even under an
/// exclusive lock, it stays until it is `unindexed_pack_min_age` old, as
/// does one whose age the backend cannot tell.
fn old_unindexed_packs(
    repo: &Repository,
    live: Option<&LiveLocks>,
    listed: &HashMap<PackId, u64>,
    indexed: &HashMap<PackId, u32>,
    outcome: &mut PruneOutcome,
) -> Result<Vec<(PackId, u64)>> {
    let min_age = lock::unindexed_pack_min_age();
    let now = SystemTime::now();
    let mut old = Vec::new();
    for (id, size) in listed {
        if indexed.contains_key(id) {
            continue;
        }
        let old_enough = match repo.backend().modified(FileKind::Pack, &id.to_hex()) {
            // A time in the future (clocks disagree) is not old.
            Ok(Some(written)) => now.duration_since(written).is_ok_and(|age| age >= min_age),
            Ok(None) => false,
            Err(e) if e.kind() == ErrorKind::NotFound => continue,
            Err(e) => return Err(e),
        };
        // Under a prune lock, a backup whose lock is older than the pack
        // may still index it, however long ago it stored it.
        let orphaned = old_enough
            && match (live, repo.backend().modified(FileKind::Pack, &id.to_hex())) {
                (None, _) => true,
                (Some(live), Ok(Some(written))) => {
                    let written = DateTime::<chrono::Local>::from(written).fixed_offset();
                    live.blocking(written).is_none()
                }
                _ => false,
            };
        if orphaned {
            old.push((*id, *size));
        } else {
            outcome.packs_unindexed_kept += 1;
        }
    }
    old.sort_unstable();
    Ok(old)
}

fn store_pack(
    repo: &Repository,
    lock: &LockGuard,
    builder: PackBuilder,
    outcome: &mut PruneOutcome,
) -> Result<IndexPack> {
    let (pack, size) = repo.store_pack(builder, lock)?;
    outcome.packs_written += 1;
    outcome.bytes_written += size;
    Ok(pack)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn limits_parse() {
        assert_eq!("5%".parse::<MaxUnused>().unwrap(), MaxUnused::Percent(5.0));
        assert_eq!(
            "unlimited".parse::<MaxUnused>().unwrap(),
            MaxUnused::Unlimited
        );
        assert_eq!(
            "10M".parse::<MaxUnused>().unwrap(),
            MaxUnused::Bytes(10 << 20)
        );
        assert_eq!("0".parse::<MaxUnused>().unwrap(), MaxUnused::Bytes(0));
        assert!("100%".parse::<MaxUnused>().is_err());
        assert!("x".parse::<MaxUnused>().is_err());
    }
}
