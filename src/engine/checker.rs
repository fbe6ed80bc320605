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
//!
//! Invariants the parts keep:
//! - It never writes, except a rebuild of the local index cache
//!   (`cache`); the repository itself is only read.
//! - It never trusts the cache: what it reports comes from the index
//!   files, the packs and the snapshots (`table`, `packs`, `snapshots`).
//! - What it finds is typed (`report`): the verdict and the remedies are
//!   derived from the kinds of problems and notes, never from their words,
//!   and the library names no command; the CLI turns remedies into hints.
//!
//! The parts: `table` (the checker's own index, also used by prune),
//! `packs` (pack files and `--read-data`), `snapshots` (the tree walk),
//! `cache` (the local cache compared and rebuilt), `keyless` (the check
//! without a password) and `report` (what was found).

mod cache;
mod keyless;
mod packs;
mod report;
mod rows;
mod snapshots;
mod table;

pub use keyless::check_keyless;
pub use report::{
    CheckReport, DamagedPath, Note, NoteKind, Object, ObjectKind, Problem, Remedy, Status, Verdict,
};
pub use table::{expected_pack_size, TABLE_MEMORY_DEFAULT};
pub(crate) use table::{Row, Table, USED};

use crate::engine::checker::cache::verify_cache;
use crate::engine::checker::packs::{check_pack_files, read_packs};
use crate::engine::checker::snapshots::check_snapshots;
use crate::engine::checker::table::build_table;
use crate::engine::repository::Repository;
use crate::error::{Error, Result};
use crate::format::id::{IndexId, PackId};
use std::collections::HashMap;
use std::str::FromStr;

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
    /// Bytes the blob table may hold in memory before it goes to the
    /// cache directory (`None`: `TABLE_MEMORY_DEFAULT`).
    pub memory: Option<u64>,
}

impl Default for CheckOptions {
    fn default() -> Self {
        CheckOptions {
            read_data: ReadData::None,
            read_threads: 4,
            memory: None,
        }
    }
}

/// Checks the repository. Returns the report; `Err` only when the check
/// itself cannot run (e.g. the backend is unreachable).
pub fn check<S: Sync>(repo: &Repository<S>, options: &CheckOptions) -> Result<CheckReport> {
    let ctx = repo.context();
    let mut report = CheckReport::default();

    check_keys(repo, &mut report)?;
    ctx.check_interrupt()?;
    // Snapshots are listed before the index is read (FORMAT.md, "Read
    // order"): a backup stores its index files before its snapshot, so every
    // snapshot listed here has its blobs in the index read next, even when
    // backups run beside this check or a prune.
    let snapshot_ids = repo.list_snapshot_ids()?;
    let (mut table, good_index_files) = build_table(repo, &mut report, options.memory)?;
    ctx.check_interrupt()?;
    let listed_packs = check_pack_files(repo, &mut table, &mut report)?;
    if options.read_data != ReadData::None {
        read_packs(repo, options, &listed_packs, &mut table, &mut report)?;
        table.check_error()?;
    }
    ctx.check_interrupt()?;
    check_snapshots(repo, snapshot_ids, &mut table, &mut report)?;
    table.check_error()?;
    if report
        .problems
        .iter()
        .all(|p| p.object.kind != ObjectKind::Snapshot)
    {
        // Unused blobs only mean something when every snapshot was read.
        table.for_each(|_, row| {
            if row.flags & USED == 0 {
                report.unused_blobs += 1;
                report.unused_bytes += u64::from(row.entry.length);
            }
            Ok(())
        })?;
        if report.unused_blobs > 0 {
            let text = format!(
                "{} blobs ({} bytes) are not used by any snapshot",
                report.unused_blobs, report.unused_bytes
            );
            report.note(NoteKind::UnusedBlobs, text);
        }
    }
    verify_cache(repo, &table, &good_index_files, &mut report)?;
    report.remedies = report.find_remedies();
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

pub(crate) fn usage<S: Sync>(repo: &Repository<S>, memory: Option<u64>) -> Result<Usage> {
    let mut report = CheckReport::default();
    // Snapshots before the index, as in `check`.
    let snapshot_ids = repo.list_snapshot_ids()?;
    let (mut table, index_files) = build_table(repo, &mut report, memory)?;
    let listed_packs = check_pack_files(repo, &mut table, &mut report)?;
    check_snapshots(repo, snapshot_ids, &mut table, &mut report)?;
    table.check_error()?;
    Ok(Usage {
        table,
        listed_packs,
        index_files,
        report,
    })
}

fn check_keys<S: Sync>(repo: &Repository<S>, report: &mut CheckReport) -> Result<()> {
    for (name, decoded) in repo.list_keys()? {
        report.keys += 1;
        if let Err(e) = decoded {
            report.problem(
                Object::new(ObjectKind::KeyFile, name),
                Status::Damaged,
                e.to_string(),
            );
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::archiver::save_nested_snapshot;
    use crate::engine::repository::InitOptions;
    use crate::format::crypto::KdfParams;
    use crate::format::tree::TREE_DEPTH_MAX;
    use crate::storage::backend::{Backend, MemoryBackend};
    use std::sync::Arc;

    /// A snapshot whose tree is `depth` directories nested in one another,
    /// in a repository in memory.
    fn nested(depth: usize) -> (tempfile::TempDir, Repository) {
        let backend: Arc<dyn Backend> = Arc::new(MemoryBackend::new());
        let options = InitOptions {
            kdf: KdfParams {
                memory_kib: 8,
                iterations: 1,
                parallelism: 1,
            },
            ..InitOptions::default()
        };
        Repository::init(backend.clone(), b"pw", &options).unwrap();
        let cache = tempfile::tempdir().unwrap();
        let repo = Repository::open(backend, b"pw", Some(cache.path()))
            .unwrap()
            .load_index()
            .unwrap();
        let lock = repo.lock_shared(std::time::Duration::ZERO).unwrap();
        save_nested_snapshot(&repo, &lock, depth);
        drop(lock);
        (cache, repo)
    }

    /// A test thread has a 2 MiB stack: a walk that recursed per level
    /// overflowed it long before 5,000 levels.
    #[test]
    fn trees_nested_past_the_limit_are_damage_not_a_stack_overflow() {
        let (_cache, repo) = nested(5_000);
        let report = check(&repo, &CheckOptions::default()).unwrap();
        assert!(!report.is_clean());
        assert_eq!(
            report.damaged_paths.len(),
            1,
            "{:?} {:?}",
            report.damaged_paths,
            report.problems
        );
        let damaged = &report.damaged_paths[0];
        assert!(
            damaged.detail.contains("nested more than"),
            "{}",
            damaged.detail
        );
        assert_eq!(damaged.path.matches('/').count(), TREE_DEPTH_MAX);

        let (_cache, repo) = nested(TREE_DEPTH_MAX);
        let report = check(&repo, &CheckOptions::default()).unwrap();
        assert!(report.is_clean(), "{:?}", report.damaged_paths);
        assert_eq!(report.trees, TREE_DEPTH_MAX as u64);
    }

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
}
