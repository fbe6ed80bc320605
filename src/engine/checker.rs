//! `check`: proves that every snapshot can be restored, and names exactly
//! what is damaged and which snapshots and files depend on it.
//!
//! The checker trusts nothing local: it builds its own index from the
//! repository's index files (a sorted table, not the RocksDB cache), checks
//! every indexed pack's size against what its index entries imply, walks
//! every snapshot's trees, and with `--read-data` reads, decrypts,
//! decompresses and re-hashes every blob of the chosen packs. Afterwards it
//! compares the local cache with what it found and rebuilds the cache when
//! they disagree. It never writes to the repository.

use crate::context::Context;
use crate::engine::repository::Repository;
use crate::error::{Error, ErrorKind, Result};
use crate::format::crypto::SEAL_OVERHEAD;
use crate::format::id::{BlobId, Id, IndexId, PackId, SnapshotId};
use crate::format::index_file::IndexFile;
use crate::format::pack::{self, BlobKind, PackEntry, ENTRY_LEN};
use crate::format::snapshot::Snapshot;
use crate::format::tree::{NodeKind, Tree};
use crate::storage::backend::{Backend, FileKind};
use crate::storage::index_cache::{BlobLocation, IndexDb};
use rayon::prelude::*;
use serde::Serialize;
use std::collections::{HashMap, HashSet};
use std::str::FromStr;

/// Problems of one kind listed in full before the rest are only counted,
/// so a repository with a million missing blobs still gives a readable
/// report in bounded memory.
const LISTED_PER_KIND_MAX: usize = 1000;

/// Which packs `--read-data` reads.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum ReadData {
    None,
    All,
    /// Slice `n` (1-based) of `of` deterministic slices: a pack belongs to
    /// slice `(first 8 bytes of its id as u64 big-endian) % of + 1`, so the
    /// slices of one `of` cover every pack exactly once.
    Slice {
        n: u32,
        of: u32,
    },
    /// A random sample of this share of the packs (0 < share <= 1).
    Fraction(f64),
    /// Random packs until this many bytes are chosen.
    Bytes(u64),
}

impl FromStr for ReadData {
    type Err = Error;

    /// Parses `n/m`, `p%` or a size such as `500M` / `2G` (binary units).
    fn from_str(text: &str) -> Result<ReadData> {
        let bad = || {
            Error::invalid(format!(
                "bad --read-data-subset {text:?}: use n/m (e.g. 3/7), a percentage (10%) or a size (2G)"
            ))
        };
        let text = text.trim();
        if let Some((n, of)) = text.split_once('/') {
            let n: u32 = n.trim().parse().map_err(|_| bad())?;
            let of: u32 = of.trim().parse().map_err(|_| bad())?;
            if of == 0 || n == 0 || n > of {
                return Err(bad());
            }
            return Ok(ReadData::Slice { n, of });
        }
        if let Some(p) = text.strip_suffix('%') {
            let p: f64 = p.trim().parse().map_err(|_| bad())?;
            if !(p > 0.0 && p <= 100.0) {
                return Err(bad());
            }
            return Ok(ReadData::Fraction(p / 100.0));
        }
        let bytes = crate::units::parse_size(text).map_err(|_| bad())?;
        if bytes == 0 {
            return Err(bad());
        }
        Ok(ReadData::Bytes(bytes))
    }
}

#[derive(Debug, Clone)]
pub struct CheckOptions {
    pub read_data: ReadData,
    /// Packs read at once by `--read-data` (I/O bound, so more than cores).
    pub read_threads: usize,
}

impl Default for CheckOptions {
    fn default() -> Self {
        CheckOptions {
            read_data: ReadData::None,
            read_threads: 4,
        }
    }
}

/// One damaged or missing object.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct Problem {
    /// What is damaged, e.g. `pack 3f2a91c0…` (full id) or `index file …`.
    pub object: String,
    /// `missing`, `damaged`, `truncated`, `mismatch` or `unreferenced`.
    pub status: &'static str,
    pub message: String,
}

/// A file or directory of a snapshot that cannot be restored in full.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct DamagedPath {
    pub snapshot: SnapshotId,
    pub path: String,
    /// e.g. `2 of 611 chunks unreadable` or `directory listing unreadable`.
    pub detail: String,
}

#[derive(Debug, Default, Clone, Serialize)]
pub struct CheckReport {
    pub keys: u64,
    pub index_files: u64,
    pub packs: u64,
    pub snapshots: u64,
    pub trees: u64,
    pub blobs_indexed: u64,
    pub packs_read: u64,
    pub bytes_read: u64,
    pub problems: Vec<Problem>,
    /// Problems beyond the listed ones, only counted.
    pub problems_unlisted: u64,
    pub damaged_paths: Vec<DamagedPath>,
    pub damaged_paths_unlisted: u64,
    /// Snapshots that cannot be restored in full (damaged or missing data).
    pub damaged_snapshots: Vec<SnapshotId>,
    /// Findings that are not damage: unused blobs, packs no index names,
    /// a local cache that was rebuilt.
    pub notes: Vec<String>,
    pub unused_blobs: u64,
    pub unused_bytes: u64,
    /// What to run next, when something was found.
    pub hints: Vec<String>,
    /// Checked without the key: damage is found, dependents are not known.
    pub keyless: bool,
}

impl CheckReport {
    pub fn is_clean(&self) -> bool {
        self.problems.is_empty() && self.problems_unlisted == 0 && self.damaged_paths.is_empty()
    }

    /// The last line of the report.
    pub fn verdict(&self) -> String {
        if self.is_clean() {
            format!(
                "no errors were found: {} snapshots, {} packs{}",
                self.snapshots,
                self.packs,
                if self.packs_read > 0 {
                    format!(", {} packs read in full", self.packs_read)
                } else {
                    String::new()
                }
            )
        } else if self.keyless {
            format!(
                "repository damaged: {} file(s) do not match their names (check with the password to see what depends on them)",
                self.problems.len() as u64 + self.problems_unlisted
            )
        } else {
            let problems = self.problems.len() as u64 + self.problems_unlisted;
            format!(
                "repository damaged: {problems} problem(s); {} of {} snapshots cannot be restored in full",
                self.damaged_snapshots.len(),
                self.snapshots
            )
        }
    }

    fn problem(&mut self, object: String, status: &'static str, message: String) {
        if self.problems.len() < LISTED_PER_KIND_MAX * 4 {
            self.problems.push(Problem {
                object,
                status,
                message,
            });
        } else {
            self.problems_unlisted += 1;
        }
    }

    fn damaged_path(&mut self, snapshot: SnapshotId, path: String, detail: String) {
        if !self.damaged_snapshots.contains(&snapshot) {
            self.damaged_snapshots.push(snapshot);
        }
        if self.damaged_paths.len() < LISTED_PER_KIND_MAX {
            self.damaged_paths.push(DamagedPath {
                snapshot,
                path,
                detail,
            });
        } else {
            self.damaged_paths_unlisted += 1;
        }
    }
}

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
    fn range(&self, kind: BlobKind, id: &BlobId) -> &[Row] {
        &self.rows[self.range_indices(kind, id)]
    }

    fn range_indices(&self, kind: BlobKind, id: &BlobId) -> std::ops::Range<usize> {
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
    fn use_blob(&mut self, kind: BlobKind, id: &BlobId) -> Option<bool> {
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

    fn intact_location(&self, kind: BlobKind, id: &BlobId) -> Option<(PackId, PackEntry)> {
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

/// Checks the repository. Returns the report; `Err` only when the check
/// itself cannot run (e.g. the backend is unreachable).
pub fn check<S: Sync>(repo: &Repository<S>, options: &CheckOptions) -> Result<CheckReport> {
    let ctx = repo.context();
    let mut report = CheckReport::default();
    let backend = repo.backend().as_ref();

    check_keys(repo, &mut report)?;
    ctx.check_interrupt()?;
    let (mut table, good_index_files) = build_table(repo, &mut report)?;
    ctx.check_interrupt()?;
    let listed_packs = check_pack_files(backend, &mut table, &mut report)?;
    if options.read_data != ReadData::None {
        read_packs(repo, options, &listed_packs, &mut table, &mut report)?;
    }
    ctx.check_interrupt()?;
    check_snapshots(repo, &mut table, &mut report)?;
    if report
        .problems
        .iter()
        .all(|p| !p.object.starts_with("snapshot "))
    {
        // Unused blobs only mean something when every snapshot was read.
        for row in table.rows.iter().filter(|r| r.flags & USED == 0) {
            report.unused_blobs += 1;
            report.unused_bytes += u64::from(row.entry.length);
        }
        if report.unused_blobs > 0 {
            report.notes.push(format!(
                "{} blobs ({} bytes) are not used by any snapshot; `cairn prune` removes them",
                report.unused_blobs, report.unused_bytes
            ));
        }
    }
    verify_cache(repo, &table, &good_index_files, &mut report)?;
    add_hints(&mut report);
    ctx.progress().finish();
    Ok(report)
}

/// What `prune` needs: the structure check's table with every blob that a
/// snapshot uses marked `USED`, the pack files listed with their sizes, the
/// readable index files, and the report (prune refuses unless it is clean).
pub(crate) struct Usage {
    pub(crate) table: Table,
    pub(crate) listed_packs: HashMap<PackId, u64>,
    pub(crate) index_files: Vec<IndexId>,
    pub(crate) report: CheckReport,
}

pub(crate) fn usage<S: Sync>(repo: &Repository<S>) -> Result<Usage> {
    let mut report = CheckReport::default();
    let (mut table, index_files) = build_table(repo, &mut report)?;
    let listed_packs = check_pack_files(repo.backend().as_ref(), &mut table, &mut report)?;
    check_snapshots(repo, &mut table, &mut report)?;
    Ok(Usage {
        table,
        listed_packs,
        index_files,
        report,
    })
}

fn add_hints(report: &mut CheckReport) {
    let index_trouble = report.problems.iter().any(|p| {
        p.object.starts_with("index file") || p.status == "missing" || p.status == "mismatch"
    }) || report.notes.iter().any(|n| n.contains("not in any index"));
    if index_trouble {
        report.hints.push(
            "`cairn repair index` rebuilds the index from the packs that exist (it drops packs that are gone and adds packs no index names)".into(),
        );
    }
    let blob_damage = report.problems.iter().any(|p| {
        p.status == "damaged" && (p.object.starts_with("pack ") || p.object.contains(" blob "))
    });
    if blob_damage {
        report.hints.push(
            "`cairn repair index --read-data` moves the intact blobs of damaged packs into new packs and drops the damaged ones from the index".into(),
        );
    }
    if !report.damaged_paths.is_empty() {
        report.hints.push(
            "`cairn repair snapshots --forget` rewrites the damaged snapshots without the unrestorable files (run `repair index` first); restore them from another copy if you have one".into(),
        );
    }
}

fn check_keys<S: Sync>(repo: &Repository<S>, report: &mut CheckReport) -> Result<()> {
    for (name, decoded) in repo.list_keys()? {
        report.keys += 1;
        if let Err(e) = decoded {
            report.problem(format!("key file {name}"), "damaged", e.to_string());
        }
    }
    Ok(())
}

fn empty_table() -> Table {
    Table {
        rows: Vec::new(),
        packs: Vec::new(),
        pack_numbers: HashMap::new(),
        pack_sizes: Vec::new(),
        pack_blobs: Vec::new(),
        superseded_files: Vec::new(),
    }
}

fn build_table<S: Sync>(
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
                report.problem(format!("index file {id}"), "damaged", e.to_string());
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
                report.notes.push(format!(
                    "index file {id} is superseded by a newer one and ignored (left by an interrupted prune or repair; the next prune deletes it)"
                ));
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
                        format!("index file {id}"),
                        "mismatch",
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

fn check_pack_files(
    backend: &dyn Backend,
    table: &mut Table,
    report: &mut CheckReport,
) -> Result<HashMap<PackId, u64>> {
    let listed: HashMap<PackId, u64> = crate::engine::repository::list_packs(backend)?
        .into_iter()
        .collect();
    report.packs = listed.len() as u64;
    // Usable length of each indexed pack: 0 when missing. A blob that does
    // not lie wholly inside its pack cannot be read.
    let mut usable = vec![u64::MAX; table.packs.len()];
    for (n, pack) in table.packs.iter().enumerate() {
        match listed.get(pack) {
            None => {
                usable[n] = 0;
                report.problem(
                    format!("pack {pack}"),
                    "missing",
                    "pack file is missing".into(),
                )
            }
            Some(&size) if size != table.pack_sizes[n] => {
                usable[n] = size;
                report.problem(
                    format!("pack {pack}"),
                    if size < table.pack_sizes[n] {
                        "truncated"
                    } else {
                        "damaged"
                    },
                    format!(
                        "pack file has {size} bytes, its index entries need {}",
                        table.pack_sizes[n]
                    ),
                )
            }
            Some(_) => {}
        }
    }
    for row in &mut table.rows {
        let end = u64::from(row.entry.offset) + u64::from(row.entry.length);
        if end > usable[row.pack as usize] {
            row.flags |= DAMAGED;
        }
    }
    let unindexed: Vec<(&PackId, &u64)> = listed
        .iter()
        .filter(|(id, _)| !table.pack_numbers.contains_key(id))
        .collect();
    if !unindexed.is_empty() {
        let bytes: u64 = unindexed.iter().map(|(_, s)| **s).sum();
        report.notes.push(format!(
            "{} pack(s) ({bytes} bytes) are not in any index (left by an interrupted backup, \
             or their index file is damaged); `cairn repair index` indexes them, `cairn prune` removes unused ones",
            unindexed.len()
        ));
    }
    // Counted, never deleted: the checker does not write, and a temporary
    // file may belong to a backup running now.
    if let Ok((files, bytes)) = backend.sweep_temp_files(true) {
        if files > 0 {
            report.notes.push(format!(
                "{files} temporary file(s) ({bytes} bytes) of interrupted or running writes; \
                 `cairn prune` removes them when no backup is running"
            ));
        }
    }
    Ok(listed)
}

/// The packs `--read-data` reads: indexed packs that exist, by selection.
fn select_packs(options: &CheckOptions, table: &Table, listed: &HashMap<PackId, u64>) -> Vec<u32> {
    let mut candidates: Vec<u32> = (0..table.packs.len() as u32)
        .filter(|&n| listed.contains_key(&table.packs[n as usize]))
        .collect();
    match options.read_data {
        ReadData::None => Vec::new(),
        ReadData::All => candidates,
        ReadData::Slice { n, of } => candidates
            .into_iter()
            .filter(|&p| {
                let id = table.packs[p as usize];
                let prefix = u64::from_be_bytes(id.as_bytes()[..8].try_into().expect("8"));
                prefix % u64::from(of) == u64::from(n - 1)
            })
            .collect(),
        ReadData::Fraction(share) => {
            shuffle(&mut candidates);
            let count = ((candidates.len() as f64) * share).ceil() as usize;
            candidates.truncate(count.max(1).min(candidates.len()));
            candidates
        }
        ReadData::Bytes(budget) => {
            shuffle(&mut candidates);
            let mut total = 0u64;
            candidates
                .into_iter()
                .take_while(|&p| {
                    let before = total;
                    total += listed[&table.packs[p as usize]];
                    before < budget
                })
                .collect()
        }
    }
}

fn shuffle(items: &mut [u32]) {
    let seed = Id::random();
    let mut state = u64::from_le_bytes(seed.0[..8].try_into().expect("8")) | 1;
    for i in (1..items.len()).rev() {
        // xorshift64: a sample only needs to differ from run to run.
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        items.swap(i, (state % (i as u64 + 1)) as usize);
    }
}

/// What reading one pack found.
struct PackRead {
    pack: u32,
    bytes: u64,
    problems: Vec<Problem>,
    /// Blobs whose sealed bytes fail to open or verify.
    damaged: Vec<(BlobKind, BlobId)>,
    /// The whole pack is unusable (hash or header failed).
    unusable: bool,
}

fn read_packs<S: Sync>(
    repo: &Repository<S>,
    options: &CheckOptions,
    listed: &HashMap<PackId, u64>,
    table: &mut Table,
    report: &mut CheckReport,
) -> Result<()> {
    let ctx = repo.context();
    let selected = select_packs(options, table, listed);
    let selected_bytes = selected
        .iter()
        .map(|&n| listed.get(&table.packs[n as usize]).copied().unwrap_or(0))
        .sum();
    ctx.progress()
        .start("reading packs", selected_bytes, selected.len() as u64);
    let pool = rayon::ThreadPoolBuilder::new()
        .num_threads(options.read_threads.max(1))
        .build()
        .map_err(|e| Error::new(ErrorKind::Io, format!("cannot start reader threads: {e}")))?;
    let shared: &Table = table;
    let results: Vec<Result<PackRead>> = pool.install(|| {
        selected
            .par_iter()
            .map(|&n| {
                ctx.check_interrupt()?;
                let read = read_pack(repo, shared, n);
                let progress = ctx.progress();
                progress.add_items(1);
                progress.add_bytes(read.as_ref().map_or(0, |r| r.bytes));
                read
            })
            .collect()
    });
    let mut unusable = Vec::new();
    let mut damaged = Vec::new();
    for result in results {
        let read = result?;
        report.packs_read += 1;
        report.bytes_read += read.bytes;
        for p in read.problems {
            report.problem(p.object, p.status, p.message);
        }
        if read.unusable {
            unusable.push(read.pack);
        }
        damaged.extend(read.damaged.into_iter().map(|b| (read.pack, b)));
    }
    for (pack, (kind, id)) in damaged {
        let range = table.range_indices(kind, &id);
        for row in &mut table.rows[range] {
            if row.pack == pack {
                row.flags |= DAMAGED;
            }
        }
    }
    let unusable: HashSet<u32> = unusable.into_iter().collect();
    for row in &mut table.rows {
        if unusable.contains(&row.pack) {
            row.flags |= DAMAGED;
        }
    }
    Ok(())
}

fn read_pack<S: Sync>(repo: &Repository<S>, table: &Table, n: u32) -> Result<PackRead> {
    let id = table.packs[n as usize];
    let object = format!("pack {id}");
    let mut read = PackRead {
        pack: n,
        bytes: 0,
        problems: Vec::new(),
        damaged: Vec::new(),
        unusable: false,
    };
    let bytes =
        match repo
            .backend()
            .get_bounded(FileKind::Pack, &id.to_hex(), pack::PACK_SIZE_MAX as usize)
        {
            Ok(bytes) => bytes,
            Err(e) if e.kind() == ErrorKind::NotFound => return Ok(read),
            Err(e) if e.kind() == ErrorKind::Corrupt => {
                read.problems.push(Problem {
                    object,
                    status: "damaged",
                    message: e.to_string(),
                });
                read.unusable = true;
                return Ok(read);
            }
            Err(e) => return Err(e),
        };
    read.bytes = bytes.len() as u64;
    if Id::of_file_bytes(&bytes) != id.0 {
        read.problems.push(Problem {
            object: object.clone(),
            status: "damaged",
            message: "pack file does not match its name (its bytes changed)".into(),
        });
    }
    let header = match pack::read_header(repo.key(), &bytes) {
        Ok(header) => header,
        Err(e) => {
            read.problems.push(Problem {
                object,
                status: "damaged",
                message: format!("pack header is unreadable: {e}"),
            });
            // Blobs may still be intact; judge each by its index entry.
            for row in table.rows.iter().filter(|r| r.pack == n) {
                if open_at(repo, &bytes, &row.entry).is_err() {
                    read.damaged.push((row.entry.kind, row.entry.id));
                }
            }
            return Ok(read);
        }
    };
    let mut matched = 0u32;
    for entry in &header {
        let indexed = table
            .range(entry.kind, &entry.id)
            .iter()
            .any(|r| r.pack == n && r.entry == *entry);
        if indexed {
            matched += 1;
        } else {
            read.problems.push(Problem {
                object: object.clone(),
                status: "mismatch",
                message: format!(
                    "{:?} blob {} is in the pack header but not indexed at this place",
                    entry.kind, entry.id
                ),
            });
        }
        if let Err(e) = open_at(repo, &bytes, entry) {
            read.problems.push(Problem {
                object: format!("{} blob {}", kind_name(entry.kind), entry.id),
                status: "damaged",
                message: format!("in pack {}: {e}", id.short()),
            });
            read.damaged.push((entry.kind, entry.id));
        }
    }
    if matched != table.pack_blobs[n as usize] {
        read.problems.push(Problem {
            object,
            status: "mismatch",
            message: format!(
                "the index lists {} blobs in this pack, its header {} of them",
                table.pack_blobs[n as usize], matched
            ),
        });
    }
    Ok(read)
}

fn open_at<S: Sync>(repo: &Repository<S>, pack_bytes: &[u8], entry: &PackEntry) -> Result<Vec<u8>> {
    let start = entry.offset as usize;
    let end = start
        .checked_add(entry.length as usize)
        .filter(|&end| end <= pack_bytes.len())
        .ok_or_else(|| Error::corrupt("blob lies outside the pack"))?;
    pack::open_blob(repo.key(), entry, &pack_bytes[start..end])
}

fn kind_name(kind: BlobKind) -> &'static str {
    match kind {
        BlobKind::Data => "data",
        BlobKind::Tree => "tree",
    }
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum TreeState {
    Clean,
    Damaged,
}

struct Walker<'a, S> {
    repo: &'a Repository<S>,
    table: &'a mut Table,
    report: &'a mut CheckReport,
    trees: HashMap<BlobId, TreeState>,
    reported_trees: HashSet<BlobId>,
    missing_reported: usize,
}

fn check_snapshots<S: Sync>(
    repo: &Repository<S>,
    table: &mut Table,
    report: &mut CheckReport,
) -> Result<()> {
    let ctx = repo.context();
    let mut snapshots: Vec<(SnapshotId, Snapshot)> = Vec::new();
    for id in repo.list_snapshot_ids()? {
        report.snapshots += 1;
        match repo.load_snapshot(&id) {
            Ok(s) => snapshots.push((id, s)),
            Err(e) if matches!(e.kind(), ErrorKind::Corrupt | ErrorKind::UnsupportedVersion) => {
                report.problem(format!("snapshot {id}"), "damaged", e.to_string());
                report.damaged_snapshots.push(id);
            }
            Err(e) => return Err(e),
        }
    }
    snapshots.sort_by(|a, b| a.1.time.cmp(&b.1.time).then(a.0.cmp(&b.0)));
    let mut walker = Walker {
        repo,
        table,
        report,
        trees: HashMap::new(),
        reported_trees: HashSet::new(),
        missing_reported: 0,
    };
    ctx.progress()
        .start("checking snapshots", 0, snapshots.len() as u64);
    for (id, snapshot) in &snapshots {
        ctx.check_interrupt()?;
        walker.walk(*id, snapshot.tree, "")?;
        ctx.progress().add_items(1);
    }
    walker.report.trees = walker.trees.len() as u64;
    Ok(())
}

impl<S: Sync> Walker<'_, S> {
    /// Walks one tree of snapshot `snap` at `path`; returns whether all of
    /// it is restorable. Clean trees are remembered and not walked again.
    fn walk(&mut self, snap: SnapshotId, tree_id: BlobId, path: &str) -> Result<TreeState> {
        if let Some(&TreeState::Clean) = self.trees.get(&tree_id) {
            return Ok(TreeState::Clean);
        }
        let shown = if path.is_empty() { "/" } else { path };
        let tree = match self.load_tree(&tree_id) {
            Ok(tree) => tree,
            Err(message) => {
                if self.reported_trees.insert(tree_id) {
                    self.report
                        .problem(format!("tree blob {tree_id}"), "damaged", message);
                }
                self.report.damaged_path(
                    snap,
                    shown.to_string(),
                    format!("directory listing (tree {}) unreadable", tree_id.short()),
                );
                self.trees.insert(tree_id, TreeState::Damaged);
                return Ok(TreeState::Damaged);
            }
        };
        let mut state = TreeState::Clean;
        for node in &tree.nodes {
            let child = format!("{path}/{}", node.name_str());
            match node.kind {
                NodeKind::Dir => match node.subtree {
                    Some(sub) => {
                        if self.walk(snap, sub, &child)? == TreeState::Damaged {
                            state = TreeState::Damaged;
                        }
                    }
                    None => {
                        self.report
                            .damaged_path(snap, child, "directory has no tree".into());
                        state = TreeState::Damaged;
                    }
                },
                NodeKind::File => {
                    let mut unreadable = 0usize;
                    let mut missing = 0usize;
                    for blob in &node.content {
                        match self.table.use_blob(BlobKind::Data, blob) {
                            Some(true) => {}
                            Some(false) => unreadable += 1,
                            None => {
                                missing += 1;
                                if self.missing_reported < LISTED_PER_KIND_MAX {
                                    self.missing_reported += 1;
                                    self.report.problem(
                                        format!("data blob {blob}"),
                                        "missing",
                                        "referenced by a snapshot but not in any index".into(),
                                    );
                                } else {
                                    self.report.problems_unlisted += 1;
                                }
                            }
                        }
                    }
                    if unreadable + missing > 0 {
                        self.report.damaged_path(
                            snap,
                            child,
                            format!(
                                "{} of {} chunks unreadable",
                                unreadable + missing,
                                node.content.len()
                            ),
                        );
                        state = TreeState::Damaged;
                    }
                }
                _ => {}
            }
        }
        self.trees.insert(tree_id, state);
        Ok(state)
    }

    /// Loads a tree through the checker's own index; the error is the
    /// message for the report.
    fn load_tree(&mut self, id: &BlobId) -> std::result::Result<Tree, String> {
        match self.table.use_blob(BlobKind::Tree, id) {
            None => return Err("referenced but not in any index".into()),
            Some(false) => return Err("its pack is missing or damaged".into()),
            Some(true) => {}
        }
        let (pack, entry) = self
            .table
            .intact_location(BlobKind::Tree, id)
            .expect("use_blob found an intact copy");
        let sealed = self
            .repo
            .backend()
            .get_range(
                FileKind::Pack,
                &pack.to_hex(),
                u64::from(entry.offset),
                u64::from(entry.length),
            )
            .map_err(|e| format!("in pack {}: {e}", pack.short()))?;
        let plain = pack::open_blob(self.repo.key(), &entry, &sealed)
            .map_err(|e| format!("in pack {}: {e}", pack.short()))?;
        Tree::decode(&plain).map_err(|e| e.to_string())
    }
}

/// Compares the local index cache with the checker's own table; a cache
/// that cannot be read or disagrees is rebuilt from the index files.
fn verify_cache<S: Sync>(
    repo: &Repository<S>,
    table: &Table,
    good_index_files: &[IndexId],
    report: &mut CheckReport,
) -> Result<()> {
    let mut db = match IndexDb::open(repo.cache_dir(), repo.config().id) {
        Ok(db) => db,
        Err(e) => {
            report
                .notes
                .push(format!("the local index cache cannot be opened: {e}"));
            return Ok(());
        }
    };
    if db.is_temporary() {
        // Another process holds the cache; it keeps it in sync itself.
        return Ok(());
    }
    let listed: HashSet<IndexId> = good_index_files.iter().copied().collect();
    let mut trouble = if db.was_recreated() {
        Some("could not be opened (damaged)".to_string())
    } else {
        None
    };
    if trouble.is_none() {
        trouble = match db.merged_index_files() {
            Ok(merged) if !merged.is_subset(&listed) => None, // stale: load_index rebuilds it
            Ok(_) => {
                let mut wrong = 0u64;
                let scan = db.for_each_blob(|kind, BlobLocation { pack, entry }| {
                    let ok = table
                        .range(kind, &entry.id)
                        .iter()
                        .any(|r| r.entry == entry && table.packs[r.pack as usize] == pack);
                    if !ok {
                        wrong += 1;
                    }
                });
                match scan {
                    Err(e) => Some(format!("is unreadable ({e})")),
                    Ok(()) if wrong > 0 => {
                        Some(format!("had {wrong} entries no index file contains"))
                    }
                    Ok(()) => None,
                }
            }
            Err(e) => Some(format!("is unreadable ({e})")),
        };
    }
    if let Some(trouble) = trouble {
        report.notes.push(format!(
            "the local index cache {trouble}; it was rebuilt from the index files"
        ));
        db.rebuild_empty()?;
        for id in good_index_files {
            db.merge(*id, &repo.load_index_file(id)?)?;
        }
    }
    Ok(())
}

/// Keyless check for someone who holds no password: every file named by
/// the BLAKE3 of its bytes (packs with `read_packs`, index files,
/// snapshots, key files) is read and compared with its name.
pub fn check_keyless(
    backend: &dyn Backend,
    read_packs: bool,
    ctx: &Context,
) -> Result<CheckReport> {
    let mut report = CheckReport {
        keyless: true,
        ..CheckReport::default()
    };
    let mut kinds = vec![FileKind::Key, FileKind::Index, FileKind::Snapshot];
    if read_packs {
        kinds.push(FileKind::Pack);
    }
    for kind in kinds {
        let files = backend.list(kind)?;
        let what = match kind {
            FileKind::Key => "key file",
            FileKind::Index => "index file",
            FileKind::Snapshot => "snapshot",
            _ => "pack",
        };
        let results: Vec<Result<Option<Problem>>> = files
            .par_iter()
            .map(|(name, _)| {
                ctx.check_interrupt()?;
                let bytes = match backend.get(kind, name) {
                    Ok(bytes) => bytes,
                    Err(e) if e.kind() == ErrorKind::NotFound => return Ok(None),
                    Err(e) => return Err(e),
                };
                let matches = Id::from_hex(name).is_ok_and(|id| Id::of_file_bytes(&bytes) == id);
                Ok((!matches).then(|| Problem {
                    object: format!("{what} {name}"),
                    status: "damaged",
                    message: format!("{what} does not match its name (its bytes changed)"),
                }))
            })
            .collect();
        for (result, (_, size)) in results.into_iter().zip(&files) {
            match kind {
                FileKind::Key => report.keys += 1,
                FileKind::Index => report.index_files += 1,
                FileKind::Snapshot => report.snapshots += 1,
                _ => {
                    report.packs += 1;
                    report.packs_read += 1;
                    report.bytes_read += size;
                }
            }
            if let Some(p) = result? {
                report.problem(p.object, p.status, p.message);
            }
        }
    }
    if !read_packs {
        report.packs = backend.list(FileKind::Pack)?.len() as u64;
    }
    report.notes.push(
        "keyless check: file contents were compared with their names; nothing was decrypted".into(),
    );
    Ok(report)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn read_data_subset_forms_parse() {
        assert_eq!(
            "3/7".parse::<ReadData>().unwrap(),
            ReadData::Slice { n: 3, of: 7 }
        );
        assert_eq!("10%".parse::<ReadData>().unwrap(), ReadData::Fraction(0.1));
        assert_eq!("2G".parse::<ReadData>().unwrap(), ReadData::Bytes(2 << 30));
        assert_eq!(
            "500MiB".parse::<ReadData>().unwrap(),
            ReadData::Bytes(500 << 20)
        );
        assert_eq!("4096".parse::<ReadData>().unwrap(), ReadData::Bytes(4096));
        for bad in ["0/7", "8/7", "3/0", "0%", "101%", "2X", "", "x/y", "0"] {
            assert!(bad.parse::<ReadData>().is_err(), "{bad} accepted");
        }
    }

    #[test]
    fn slices_cover_every_pack_exactly_once() {
        let packs: Vec<PackId> = (0..500).map(|_| PackId(Id::random())).collect();
        let table = Table {
            rows: Vec::new(),
            pack_numbers: packs
                .iter()
                .enumerate()
                .map(|(n, p)| (*p, n as u32))
                .collect(),
            pack_sizes: vec![1; packs.len()],
            pack_blobs: vec![0; packs.len()],
            superseded_files: Vec::new(),
            packs: packs.clone(),
        };
        let listed: HashMap<PackId, u64> = packs.iter().map(|p| (*p, 1)).collect();
        let mut seen = vec![0u32; packs.len()];
        for n in 1..=7 {
            let options = CheckOptions {
                read_data: ReadData::Slice { n, of: 7 },
                ..CheckOptions::default()
            };
            for p in select_packs(&options, &table, &listed) {
                seen[p as usize] += 1;
            }
        }
        assert!(seen.iter().all(|&c| c == 1));
        let options = CheckOptions {
            read_data: ReadData::Fraction(0.1),
            ..CheckOptions::default()
        };
        assert_eq!(select_packs(&options, &table, &listed).len(), 50);
        let options = CheckOptions {
            read_data: ReadData::Bytes(20),
            ..CheckOptions::default()
        };
        assert_eq!(select_packs(&options, &table, &listed).len(), 20);
    }

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
