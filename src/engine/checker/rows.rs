//! The rows of the checker's table as fixed-size records, sorted by (kind,
//! id, pack) without duplicates. They stay in memory while they fit the
//! memory budget; beyond it, sorted runs of the budget's size are written
//! to a private directory in the repository's cache and merged into one
//! file, which lookups then read one block at a time (an external sort:
//! memory no longer grows with the repository). Without a cache directory
//! everything stays in memory.

use crate::error::{Error, Result};
use crate::format::id::BlobId;
use crate::format::pack::{BlobKind, PackEntry, ENTRY_LEN};
use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::fs::File;
use std::io::{BufReader, BufWriter, Read, Write};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

/// kind (1), id (32), pack number (4, big-endian), codec (1), offset,
/// length, raw length (4 each, little-endian).
pub(crate) const REC: usize = 50;
pub(crate) type Rec = [u8; REC];
/// kind and id: what a lookup compares.
const ID_KEY: usize = 33;
/// Records per block of the merged file: one lookup reads one block (6.4 KB)
/// and memory keeps the first key of each block (33 bytes per 128 blobs).
const BLOCK_ROWS: usize = 128;
/// Read buffer of each run while merging, at most.
const RUN_BUFFER: usize = 256 * 1024;
/// Prefix of the spill directories in a repository's cache directory.
const SPILL_PREFIX: &str = "table.tmp-";

pub(crate) fn encode(pack: u32, e: &PackEntry) -> Rec {
    let mut r = [0u8; REC];
    r[0] = e.kind as u8;
    r[1..33].copy_from_slice(e.id.as_bytes());
    r[33..37].copy_from_slice(&pack.to_be_bytes());
    r[37] = e.codec as u8;
    r[38..42].copy_from_slice(&e.offset.to_le_bytes());
    r[42..46].copy_from_slice(&e.length.to_le_bytes());
    r[46..50].copy_from_slice(&e.raw_length.to_le_bytes());
    r
}

pub(crate) fn decode(r: &Rec) -> Result<(u32, PackEntry)> {
    let mut e = [0u8; ENTRY_LEN];
    e[0] = r[0];
    e[1] = r[37];
    e[2..34].copy_from_slice(&r[1..33]);
    e[34..46].copy_from_slice(&r[38..50]);
    let pack = u32::from_be_bytes(r[33..37].try_into().expect("4"));
    Ok((pack, PackEntry::decode(&e)?))
}

pub(crate) fn id_key(kind: BlobKind, id: &BlobId) -> [u8; ID_KEY] {
    let mut k = [0u8; ID_KEY];
    k[0] = kind as u8;
    k[1..].copy_from_slice(id.as_bytes());
    k
}

fn spill_error(e: std::io::Error) -> Error {
    Error::io("the checker's temporary table in the cache directory", e)
}

/// Collects records, spilling sorted runs when `limit` bytes are reached.
pub(crate) struct Builder {
    run: Vec<Rec>,
    limit: usize,
    spill: Option<Spill>,
    cache_dir: Option<PathBuf>,
}

/// A private directory of run files, removed when dropped.
struct Spill {
    dir: PathBuf,
    runs: Vec<PathBuf>,
}

impl Drop for Spill {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

impl Builder {
    /// `limit`: bytes of records held before a run is spilled (`None`: no
    /// limit); `cache_dir`: where runs go (`None`: nowhere, all in memory).
    pub(crate) fn new(limit: Option<u64>, cache_dir: Option<&Path>) -> Builder {
        if let Some(dir) = cache_dir {
            remove_orphaned_spills(dir);
        }
        let limit = match (limit, cache_dir) {
            (Some(l), Some(_)) => usize::try_from(l).unwrap_or(usize::MAX).max(REC * 1024),
            _ => usize::MAX,
        };
        Builder {
            run: Vec::new(),
            limit,
            spill: None,
            cache_dir: cache_dir.map(Path::to_path_buf),
        }
    }

    /// Adds a record; `other` is memory the caller holds besides the
    /// records (counted against the same limit).
    pub(crate) fn push(&mut self, rec: Rec, other: usize) -> Result<()> {
        let room = self.room(other);
        if self.run.len() >= room && !self.run.is_empty() {
            self.spill_run()?;
            if self.run.capacity() > room {
                // The other memory grew since the run's buffer was sized:
                // a buffer kept at its old size would hold both (with 200k
                // packs, 20 MB more than the budget).
                self.run = Vec::new();
            }
        }
        if self.run.len() == self.run.capacity() && self.limit != usize::MAX {
            // Grow to what the budget leaves at once, not by doubling past it.
            self.run
                .reserve_exact(room.saturating_sub(self.run.len()).max(1));
        }
        self.run.push(rec);
        Ok(())
    }

    /// Records a run may hold besides `other` bytes: what the budget leaves,
    /// but at least a quarter of it, so that a budget the other memory
    /// already fills still writes runs of a useful size (not one record
    /// each) and the merge has few to read.
    fn room(&self, other: usize) -> usize {
        self.limit.saturating_sub(other).max(self.limit / 4) / REC
    }

    fn spill_run(&mut self) -> Result<()> {
        let cache_dir = self.cache_dir.as_ref().expect("a limit only with a cache");
        if self.spill.is_none() {
            let dir = cache_dir.join(format!("{SPILL_PREFIX}{}-{}", std::process::id(), {
                let id = crate::format::id::Id::random();
                id.to_hex()[..8].to_string()
            }));
            std::os::unix::fs::DirBuilderExt::mode(&mut std::fs::DirBuilder::new(), 0o700)
                .create(&dir)
                .map_err(spill_error)?;
            self.spill = Some(Spill {
                dir,
                runs: Vec::new(),
            });
        }
        let spill = self.spill.as_mut().expect("just made");
        sort_dedup(&mut self.run);
        let path = spill.dir.join(format!("run-{}", spill.runs.len()));
        let mut out = BufWriter::with_capacity(1 << 20, File::create(&path).map_err(spill_error)?);
        for r in &self.run {
            out.write_all(r).map_err(spill_error)?;
        }
        out.flush().map_err(spill_error)?;
        spill.runs.push(path);
        self.run.clear();
        Ok(())
    }

    pub(crate) fn finish(mut self) -> Result<Rows> {
        if self.spill.is_none() {
            let mut run = std::mem::take(&mut self.run);
            sort_dedup(&mut run);
            run.shrink_to_fit();
            return Ok(Rows::Memory(run));
        }
        if !self.run.is_empty() {
            self.spill_run()?;
        }
        self.run = Vec::new();
        let spill = self.spill.take().expect("spilled");
        // The runs' read buffers share the budget too.
        let buffer = (self.limit / spill.runs.len().max(1)).clamp(16 * 1024, RUN_BUFFER);
        merge(spill, buffer)
    }
}

fn sort_dedup(run: &mut Vec<Rec>) {
    run.sort_unstable();
    run.dedup();
}

/// Merges the sorted runs into one file, without duplicates, and keeps the
/// first key of each block.
fn merge(spill: Spill, buffer: usize) -> Result<Rows> {
    let mut readers = Vec::new();
    for path in &spill.runs {
        readers.push(BufReader::with_capacity(
            buffer,
            File::open(path).map_err(spill_error)?,
        ));
    }
    let mut heap = BinaryHeap::new();
    for (n, r) in readers.iter_mut().enumerate() {
        if let Some(rec) = read_rec(r)? {
            heap.push(Reverse((rec, n)));
        }
    }
    let path = spill.dir.join("table");
    let file = File::options()
        .read(true)
        .write(true)
        .create_new(true)
        .open(&path)
        .map_err(spill_error)?;
    let mut out = BufWriter::with_capacity(1 << 20, &file);
    let mut last: Option<Rec> = None;
    let mut len = 0usize;
    let mut firsts = Vec::new();
    while let Some(Reverse((rec, n))) = heap.pop() {
        if let Some(next) = read_rec(&mut readers[n])? {
            heap.push(Reverse((next, n)));
        }
        if last == Some(rec) {
            continue;
        }
        if len.is_multiple_of(BLOCK_ROWS) {
            firsts.push(rec[..ID_KEY].try_into().expect("33"));
        }
        out.write_all(&rec).map_err(spill_error)?;
        last = Some(rec);
        len += 1;
    }
    out.flush().map_err(spill_error)?;
    drop(out);
    drop(readers);
    for run in &spill.runs {
        let _ = std::fs::remove_file(run);
    }
    Ok(Rows::Disk(DiskRows {
        file,
        len,
        firsts,
        _spill: spill,
    }))
}

fn read_rec(r: &mut impl Read) -> Result<Option<Rec>> {
    let mut rec = [0u8; REC];
    match r.read_exact(&mut rec) {
        Ok(()) => Ok(Some(rec)),
        Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => Ok(None),
        Err(e) => Err(spill_error(e)),
    }
}

/// Deletes spill directories whose process is gone (a killed check).
fn remove_orphaned_spills(dir: &Path) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for entry in entries.flatten() {
        let name = entry.file_name();
        let Some(pid) = name
            .to_str()
            .and_then(|n| n.strip_prefix(SPILL_PREFIX))
            .and_then(|n| n.split('-').next())
            .and_then(|p| p.parse::<u32>().ok())
        else {
            continue;
        };
        if !crate::sys::process_alive(pid) {
            let _ = std::fs::remove_dir_all(entry.path());
        }
    }
}

/// The merged file: records in order, and the first key of each block.
pub(crate) struct DiskRows {
    file: File,
    len: usize,
    firsts: Vec<[u8; ID_KEY]>,
    _spill: Spill,
}

pub(crate) enum Rows {
    Memory(Vec<Rec>),
    Disk(DiskRows),
}

impl Rows {
    pub(crate) fn len(&self) -> usize {
        match self {
            Rows::Memory(v) => v.len(),
            Rows::Disk(d) => d.len,
        }
    }

    /// Reads `count` records from index `start` (fewer at the end).
    pub(crate) fn read(&self, start: usize, count: usize) -> Result<Vec<Rec>> {
        match self {
            Rows::Memory(v) => Ok(v[start.min(v.len())..(start + count).min(v.len())].to_vec()),
            Rows::Disk(d) => {
                let count = count.min(d.len.saturating_sub(start));
                let mut bytes = vec![0u8; count * REC];
                d.file
                    .read_exact_at(&mut bytes, (start * REC) as u64)
                    .map_err(spill_error)?;
                Ok(bytes
                    .chunks_exact(REC)
                    .map(|c| c.try_into().expect("REC"))
                    .collect())
            }
        }
    }

    /// The index of the first record of `key` and its records.
    pub(crate) fn range(&self, key: &[u8; ID_KEY]) -> Result<(usize, Vec<Rec>)> {
        match self {
            Rows::Memory(v) => {
                let start = v.partition_point(|r| r[..ID_KEY] < key[..]);
                let end = start + v[start..].partition_point(|r| r[..ID_KEY] <= key[..]);
                Ok((start, v[start..end].to_vec()))
            }
            Rows::Disk(d) => {
                // The first row of `key` lies in the last block starting
                // below it, or starts the next one.
                let block = d.firsts.partition_point(|f| f < key).saturating_sub(1);
                let mut at = block * BLOCK_ROWS;
                let mut found = Vec::new();
                let mut start = None;
                loop {
                    let recs = self.read(at, BLOCK_ROWS)?;
                    let n = recs.len();
                    for (i, r) in recs.into_iter().enumerate() {
                        match r[..ID_KEY].cmp(&key[..]) {
                            std::cmp::Ordering::Less => {}
                            std::cmp::Ordering::Equal => {
                                start.get_or_insert(at + i);
                                found.push(r);
                            }
                            std::cmp::Ordering::Greater => {
                                return Ok((start.unwrap_or(at + i), found));
                            }
                        }
                    }
                    at += n;
                    if n < BLOCK_ROWS || at >= d.len {
                        return Ok((start.unwrap_or(at), found));
                    }
                }
            }
        }
    }

    /// Every record in order, read in large pieces.
    pub(crate) fn scan(&self, mut f: impl FnMut(usize, &Rec) -> Result<()>) -> Result<()> {
        const PIECE: usize = 16 * 1024;
        match self {
            Rows::Memory(v) => v.iter().enumerate().try_for_each(|(i, r)| f(i, r)),
            Rows::Disk(d) => {
                let mut at = 0;
                while at < d.len {
                    let recs = self.read(at, PIECE)?;
                    for (i, r) in recs.iter().enumerate() {
                        f(at + i, r)?;
                    }
                    at += recs.len();
                }
                Ok(())
            }
        }
    }

    /// Whether the rows went to disk (for tests).
    #[cfg(test)]
    pub(crate) fn spilled(&self) -> bool {
        matches!(self, Rows::Disk(_))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::format::id::Id;
    use crate::format::pack::Codec;

    fn entry(id: BlobId, offset: u32) -> PackEntry {
        PackEntry {
            kind: BlobKind::Data,
            codec: Codec::Zstd,
            id,
            offset,
            length: 1000,
            raw_length: 2000,
        }
    }

    fn runs(b: &Builder) -> usize {
        b.spill.as_ref().map_or(0, |s| s.runs.len())
    }

    /// Memory the caller holds besides the rows (the packs) grows while the
    /// table is built: the run's buffer must shrink to what the budget
    /// leaves, not keep the size it got when the packs took nothing.
    #[test]
    fn the_run_buffer_shrinks_when_the_packs_grow() {
        let cache = tempfile::tempdir().unwrap();
        let limit = REC * 4096;
        let mut b = Builder::new(Some(limit as u64), Some(cache.path()));
        let rec = |n: u32| encode(n, &entry(BlobId(Id::random()), n));
        for n in 0..4096 {
            b.push(rec(n), 0).unwrap();
        }
        assert_eq!(b.run.capacity(), 4096);
        assert_eq!(runs(&b), 0);
        // The packs now take half the budget.
        for n in 0..4096 {
            b.push(rec(n), limit / 2).unwrap();
            assert!(b.run.capacity() * REC + limit / 2 <= limit || runs(&b) == 0);
        }
        assert!(runs(&b) >= 2, "{}", runs(&b));
        let rows = b.finish().unwrap();
        assert_eq!(rows.len(), 8192);
    }

    /// Memory besides the rows that fills the whole budget still leaves
    /// runs of a quarter of it: spilling one record a run would write
    /// thousands of files and hold a read buffer for each in the merge.
    #[test]
    fn a_full_budget_still_spills_runs_of_a_useful_size() {
        let cache = tempfile::tempdir().unwrap();
        let limit = REC * 4096;
        let mut b = Builder::new(Some(limit as u64), Some(cache.path()));
        for n in 0..10_000u32 {
            b.push(encode(n, &entry(BlobId(Id::random()), n)), 2 * limit)
                .unwrap();
        }
        // 1,024 records a run: 9 full runs, the rest still in memory.
        assert_eq!(runs(&b), 9);
        let rows = b.finish().unwrap();
        assert_eq!(rows.len(), 10_000);
        let mut last = None;
        rows.scan(|_, r| {
            assert!(last < Some(*r));
            last = Some(*r);
            Ok(())
        })
        .unwrap();
    }

    /// The same records, through memory and through spilled runs, give the
    /// same rows, ranges and scans; duplicates across runs are merged.
    #[test]
    fn spilled_rows_match_rows_in_memory() {
        let cache = tempfile::tempdir().unwrap();
        let ids: Vec<BlobId> = (0..3000).map(|_| BlobId(Id::random())).collect();
        let mut recs = Vec::new();
        for (n, id) in ids.iter().enumerate() {
            recs.push(encode((n % 17) as u32, &entry(*id, n as u32)));
            if n % 5 == 0 {
                // Another copy elsewhere, and an exact duplicate.
                recs.push(encode(99, &entry(*id, 1)));
                recs.push(encode((n % 17) as u32, &entry(*id, n as u32)));
            }
        }
        let mut memory = Builder::new(Some(1 << 30), Some(cache.path()));
        let mut disk = Builder::new(Some(REC as u64 * 1024), Some(cache.path()));
        for r in &recs {
            memory.push(*r, 0).unwrap();
            disk.push(*r, 0).unwrap();
        }
        let memory = memory.finish().unwrap();
        let disk = disk.finish().unwrap();
        assert!(!memory.spilled() && disk.spilled());
        assert_eq!(memory.len(), 3000 + 600);
        assert_eq!(disk.len(), memory.len());
        for id in ids.iter().step_by(7) {
            let key = id_key(BlobKind::Data, id);
            assert_eq!(memory.range(&key).unwrap(), disk.range(&key).unwrap());
        }
        let absent = id_key(BlobKind::Data, &BlobId(Id::random()));
        assert_eq!(memory.range(&absent).unwrap(), disk.range(&absent).unwrap());
        assert!(disk.range(&absent).unwrap().1.is_empty());
        let mut a = Vec::new();
        let mut b = Vec::new();
        memory
            .scan(|_, r| {
                a.push(*r);
                Ok(())
            })
            .unwrap();
        disk.scan(|_, r| {
            b.push(*r);
            Ok(())
        })
        .unwrap();
        assert_eq!(a, b);
        assert!(a.windows(2).all(|w| w[0] < w[1]));
        let (pack, e) = decode(&a[0]).unwrap();
        assert_eq!(encode(pack, &e), a[0]);
        let spill_dirs = || {
            std::fs::read_dir(cache.path())
                .unwrap()
                .filter(|e| {
                    let name = e.as_ref().unwrap().file_name();
                    name.to_string_lossy().starts_with(SPILL_PREFIX)
                })
                .count()
        };
        assert_eq!(spill_dirs(), 1);
        drop(disk);
        assert_eq!(spill_dirs(), 0, "the spill directory outlived the table");
    }
}
