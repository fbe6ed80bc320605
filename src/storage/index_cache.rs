//! The local index cache: a RocksDB database mapping blob → pack location,
//! synced from the repository's index files. Derived state: it can always
//! be deleted and rebuilt, and is never trusted over the index files.
//!
//! Keys: `b kind id` → `pack_id || pack entry`; `f index_id` → "" for each
//! index file already merged; `x index_id` → "" for each index file a
//! merged one supersedes; `m repository` → repository id; for mark files
//! (prune's two-phase delete): `d kind id` → as `b`, `k pack_id` → "".

use crate::error::{Error, Result};
use crate::format::id::{BlobId, Id, IndexId, PackId, RepositoryId, SnapshotId};
use crate::format::index_file::IndexFile;
use crate::format::pack::{BlobKind, PackEntry, ENTRY_LEN};
use rocksdb::{BlockBasedOptions, Options, WriteBatch, DB};
use std::collections::HashSet;
use std::path::{Path, PathBuf};

/// A blob's place: the pack and the entry within it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BlobLocation {
    pub pack: PackId,
    pub entry: PackEntry,
}

pub struct IndexDb {
    db: Option<DB>,
    path: PathBuf,
    /// A private copy made because another process holds the shared cache;
    /// removed on drop.
    temporary: bool,
    /// The cache on disk could not be opened and was recreated empty.
    recreated: bool,
    /// Kept in memory only (`in_memory`): nothing on disk to delete.
    memory: bool,
}

fn blob_key(kind: BlobKind, id: &BlobId) -> [u8; 34] {
    prefixed_blob_key(b'b', kind, id)
}

/// The key of a blob that a mark file lists (readers find it; writers do
/// not deduplicate against it).
fn marked_blob_key(kind: BlobKind, id: &BlobId) -> [u8; 34] {
    prefixed_blob_key(b'd', kind, id)
}

fn marked_pack_key(pack: &PackId) -> [u8; 33] {
    let mut key = [0u8; 33];
    key[0] = b'k';
    key[1..].copy_from_slice(pack.as_bytes());
    key
}

fn prefixed_blob_key(prefix: u8, kind: BlobKind, id: &BlobId) -> [u8; 34] {
    let mut key = [0u8; 34];
    key[0] = prefix;
    key[1] = kind as u8;
    key[2..].copy_from_slice(id.as_bytes());
    key
}

fn options() -> Options {
    let mut opts = Options::default();
    opts.create_if_missing(true);
    // Small memtables and a bloom filter: most lookups during a first backup
    // are misses, and memory must not grow with the repository.
    opts.set_write_buffer_size(16 * 1024 * 1024);
    opts.set_max_write_buffer_number(2);
    opts.set_keep_log_file_num(2);
    // Table files kept open: at most a quarter of the descriptor limit
    // (`descriptor_limit`), so the walk ahead and the files a backup reads
    // have the rest.
    opts.set_max_open_files((crate::sys::descriptor_limit() / 4).clamp(16, 256) as i32);
    let mut table = BlockBasedOptions::default();
    table.set_bloom_filter(10.0, false);
    // Index and filter blocks live in the bounded block cache, not beside
    // it: kept outside, every open table file holds its whole index and
    // filter (about 2.5 bytes a blob, 50 MB at 20 M blobs) for as long as
    // the process runs, and check and prune grew with the repository.
    // Partitioned, a lookup loads one small partition of each; only the
    // top level of each file (a few KB) stays pinned.
    table.set_block_cache(&rocksdb::Cache::new_lru_cache(BLOCK_CACHE_BYTES));
    table.set_cache_index_and_filter_blocks(true);
    table.set_cache_index_and_filter_blocks_with_high_priority(true);
    table.set_index_type(rocksdb::BlockBasedIndexType::TwoLevelIndexSearch);
    table.set_partition_filters(true);
    table.set_metadata_block_size(4096);
    table.set_pin_top_level_index_and_filter(true);
    table.set_pin_l0_filter_and_index_blocks_in_cache(false);
    opts.set_block_based_table_factory(&table);
    opts
}

/// The block cache: data, index and filter blocks together. RocksDB's own
/// default size (32 MiB), now a bound on all three.
pub const BLOCK_CACHE_BYTES: usize = 32 << 20;

impl IndexDb {
    /// A cache held in memory for this process only, as restic's
    /// `--no-cache`: for a process with no private place for a cache on
    /// disk (no HOME, or a cache directory it refused). Temporary: it is
    /// rebuilt by every process that uses it.
    pub fn in_memory(repository: RepositoryId) -> Result<IndexDb> {
        let mut index = IndexDb {
            db: Some(open_in_memory()?),
            path: PathBuf::from(MEMORY_PATH),
            temporary: true,
            recreated: false,
            memory: true,
        };
        index.claim(repository)?;
        Ok(index)
    }

    /// Opens (or creates) the cache in `dir`. If another process holds it,
    /// works on a private temporary cache instead; if it is damaged, it is
    /// deleted and recreated (it is only a cache).
    pub fn open(dir: &Path, repository: RepositoryId) -> Result<IndexDb> {
        use std::os::unix::fs::DirBuilderExt;
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(dir)
            .map_err(|e| {
                Error::io(
                    format!("cannot create cache directory {}", dir.display()),
                    e,
                )
            })?;
        let path = dir.join("index.rocksdb");
        remove_orphaned_private_caches(dir);
        let (db, path, temporary, recreated) = match DB::open(&options(), &path) {
            Ok(db) => (db, path, false, false),
            Err(e) if e.to_string().contains("lock") => {
                let private = dir.join(format!("index.tmp-{}", std::process::id()));
                let _ = DB::destroy(&options(), &private);
                let db = DB::open(&options(), &private).map_err(db_error)?;
                (db, private, true, false)
            }
            Err(_) => (Self::recreate(&path)?, path, false, true),
        };
        let mut index = IndexDb {
            db: Some(db),
            path,
            temporary,
            recreated,
            memory: false,
        };
        make_private(&index.path);
        index.claim(repository)?;
        Ok(index)
    }

    /// Marks the cache as this repository's, clearing it if it held
    /// another's.
    fn claim(&mut self, repository: RepositoryId) -> Result<()> {
        let index = self;
        match index.db().get(b"mrepository").map_err(db_error)? {
            Some(v) if v.as_slice() == repository.as_bytes() => {}
            Some(_) => {
                index.clear()?;
                index
                    .db()
                    .put(b"mrepository", repository.as_bytes())
                    .map_err(db_error)?;
            }
            None => index
                .db()
                .put(b"mrepository", repository.as_bytes())
                .map_err(db_error)?,
        }
        Ok(())
    }

    fn recreate(path: &Path) -> Result<DB> {
        let _ = DB::destroy(&options(), path);
        let _ = std::fs::remove_dir_all(path);
        DB::open(&options(), path).map_err(db_error)
    }

    /// Throws the cache away and starts an empty one, for a cache whose
    /// reads failed (a damaged cache is rebuilt, never trusted or fatal).
    pub fn rebuild_empty(&mut self) -> Result<()> {
        drop(self.db.take());
        self.db = Some(if self.memory {
            open_in_memory()?
        } else {
            Self::recreate(&self.path)?
        });
        self.recreated = true;
        Ok(())
    }

    /// True when the cache on disk was unreadable and was started afresh.
    pub fn was_recreated(&self) -> bool {
        self.recreated
    }

    /// True for a private copy (another process holds the shared cache).
    pub fn is_temporary(&self) -> bool {
        self.temporary
    }

    /// Calls `f` with every blob location in the cache, in key order
    /// (kind, then id). Reads every block, so RocksDB's checksums catch a
    /// damaged cache here.
    pub fn for_each_blob(&self, mut f: impl FnMut(BlobKind, BlobLocation)) -> Result<()> {
        // A scan reads every block once: kept out of the block cache, it
        // would only push out the index and filter blocks lookups need.
        let mut read = rocksdb::ReadOptions::default();
        read.fill_cache(false);
        read.set_readahead_size(1 << 20);
        let scan = self.db().iterator_opt(
            rocksdb::IteratorMode::From(b"b", rocksdb::Direction::Forward),
            read,
        );
        for item in scan {
            let (key, value) = item.map_err(db_error)?;
            if key.first() != Some(&b'b') {
                break;
            }
            if key.len() != 34 || value.len() != 32 + ENTRY_LEN {
                return Err(Error::corrupt("local index cache entry is damaged"));
            }
            let kind = BlobKind::from_byte(key[1])?;
            let pack = PackId(Id(value[..32].try_into().expect("32")));
            let entry = PackEntry::decode(&value[32..])?;
            f(kind, BlobLocation { pack, entry });
        }
        Ok(())
    }

    fn db(&self) -> &DB {
        self.db.as_ref().expect("open until dropped")
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Where a blob is, for readers: in a pack an index file lists, or else
    /// in a pack a mark file lists (still there until prune deletes it).
    pub fn get(&self, kind: BlobKind, id: &BlobId) -> Result<Option<BlobLocation>> {
        match self.get_at(&blob_key(kind, id))? {
            Some(found) => Ok(Some(found)),
            None => self.get_at(&marked_blob_key(kind, id)),
        }
    }

    fn get_at(&self, key: &[u8]) -> Result<Option<BlobLocation>> {
        let Some(value) = self.db().get_pinned(key).map_err(db_error)? else {
            return Ok(None);
        };
        if value.len() != 32 + ENTRY_LEN {
            return Err(Error::corrupt("local index cache entry is damaged"));
        }
        let pack = PackId(Id(value[..32].try_into().expect("32")));
        let entry = PackEntry::decode(&value[32..])?;
        Ok(Some(BlobLocation { pack, entry }))
    }

    /// Whether a writer may skip storing a blob: an index file lists it in
    /// a pack that no mark file lists. A blob only in marked packs counts
    /// as absent, so a backup stores it again (docs/FORMAT.md, section 15,
    /// "Two-phase delete").
    pub fn contains(&self, kind: BlobKind, id: &BlobId) -> Result<bool> {
        let Some(value) = self.db().get_pinned(blob_key(kind, id)).map_err(db_error)? else {
            return Ok(false);
        };
        if value.len() != 32 + ENTRY_LEN {
            return Err(Error::corrupt("local index cache entry is damaged"));
        }
        let pack = PackId(Id(value[..32].try_into().expect("32")));
        Ok(self
            .db()
            .get_pinned(marked_pack_key(&pack))
            .map_err(db_error)?
            .is_none())
    }

    /// Index files already merged into the cache.
    pub fn merged_index_files(&self) -> Result<HashSet<IndexId>> {
        let mut out = HashSet::new();
        for item in self.db().prefix_iterator(b"f") {
            let (key, _) = item.map_err(db_error)?;
            if key.first() != Some(&b'f') {
                break;
            }
            if key.len() == 33 {
                out.insert(IndexId(Id(key[1..].try_into().expect("32"))));
            }
        }
        Ok(out)
    }

    /// Index files named as superseded by a merged index file.
    pub fn superseded_index_files(&self) -> Result<HashSet<IndexId>> {
        let mut out = HashSet::new();
        for item in self.db().prefix_iterator(b"x") {
            let (key, _) = item.map_err(db_error)?;
            if key.first() != Some(&b'x') {
                break;
            }
            if key.len() == 33 {
                out.insert(IndexId(Id(key[1..].try_into().expect("32"))));
            }
        }
        Ok(out)
    }

    /// Merges one index file, atomically with its "merged" mark and the
    /// marks of the index files it supersedes.
    pub fn merge(&self, id: IndexId, file: &IndexFile) -> Result<()> {
        // Put in key order: RocksDB's memtable finds where a key goes
        // starting from the previous insert, so sorted keys go in several
        // times faster than random ids. Syncing a cache with 5 M blobs took
        // 7.1-7.5 s in file order and 3.7-4.1 s sorted; the merge at the end
        // of a 45,000-blob backup 29-30 ms and 19 ms. The sort is stable, so
        // of two entries for one blob the later one still wins, as before.
        // The rows take 112 bytes a blob (11 MB for an index file of the
        // writer's size, as much as its write batch). Sorting 40-byte keys
        // with the entry's place, or references to the entries, took 10 %
        // and 40 % longer for the 5 M blobs.
        // A mark file's blobs go under their own prefix, for readers only;
        // its packs are recorded, so no writer deduplicates against them
        // even where a (superseded, or not yet superseded) index file
        // lists them too.
        let key_of: fn(BlobKind, &BlobId) -> [u8; 34] = match file.marked_at {
            None => blob_key,
            Some(_) => marked_blob_key,
        };
        let mut rows: Vec<([u8; 34], [u8; 32 + ENTRY_LEN])> = Vec::with_capacity(file.blob_count());
        for pack in &file.packs {
            for entry in &pack.entries {
                let mut value = [0u8; 32 + ENTRY_LEN];
                value[..32].copy_from_slice(pack.id.as_bytes());
                value[32..].copy_from_slice(&entry.encode());
                rows.push((key_of(entry.kind, &entry.id), value));
            }
        }
        rows.sort_by_key(|row| row.0);
        let mut batch = WriteBatch::default();
        for (key, value) in &rows {
            batch.put(key, value);
        }
        drop(rows);
        if file.marked_at.is_some() {
            for pack in &file.packs {
                batch.put(marked_pack_key(&pack.id), b"");
            }
            // A complete snapshot's blobs may be in a pack just marked: its
            // `v` key no longer holds, and a backup must look them up.
            batch.delete_range(&b"v"[..], &b"w"[..]);
        }
        let mut mark = vec![b'f'];
        mark.extend_from_slice(id.as_bytes());
        batch.put(mark, b"");
        for old in &file.supersedes {
            let mut mark = vec![b'x'];
            mark.extend_from_slice(old.as_bytes());
            batch.put(mark, b"");
        }
        self.db().write(batch).map_err(db_error)
    }

    /// Records that every data blob a snapshot references is in this cache.
    /// Entries only ever leave the cache all at once (`clear`, or a cache
    /// recreated), which drops these marks too; so while the mark is here,
    /// so are the blobs, and a backup using the snapshot as its parent need
    /// not look them up one by one.
    pub fn mark_snapshot_complete(&self, id: &SnapshotId) -> Result<()> {
        let mut mark = vec![b'v'];
        mark.extend_from_slice(id.as_bytes());
        self.db().put(mark, b"").map_err(db_error)
    }

    /// Whether `mark_snapshot_complete` was called for this snapshot since
    /// the cache last lost entries.
    pub fn snapshot_complete(&self, id: &SnapshotId) -> Result<bool> {
        let mut mark = vec![b'v'];
        mark.extend_from_slice(id.as_bytes());
        Ok(self.db().get_pinned(mark).map_err(db_error)?.is_some())
    }

    /// Drops every entry (e.g. when an index file disappeared).
    pub fn clear(&mut self) -> Result<()> {
        let mut batch = WriteBatch::default();
        batch.delete_range(&[0u8][..], &[0xffu8; 40][..]);
        self.db().write(batch).map_err(db_error)?;
        self.db().compact_range::<&[u8], &[u8]>(None, None);
        Ok(())
    }
}

impl Drop for IndexDb {
    fn drop(&mut self) {
        drop(self.db.take());
        if self.memory {
            // Nothing on disk: the path is not ours to delete.
        } else if self.temporary {
            let _ = DB::destroy(&options(), &self.path);
            let _ = std::fs::remove_dir_all(&self.path);
        } else {
            // Files written since `open` (RocksDB makes them 0644).
            make_private(&self.path);
        }
    }
}

/// The path an in-memory cache is opened under. `DB::open` creates it on
/// disk first, so it is a directory that always exists; RocksDB's memory
/// environment writes nothing there, and were anything to reach the disk
/// it could not be written in /proc.
const MEMORY_PATH: &str = "/proc";

fn open_in_memory() -> Result<DB> {
    let env = rocksdb::Env::mem_env().map_err(db_error)?;
    let mut opts = options();
    opts.set_env(&env);
    DB::open(&opts, MEMORY_PATH).map_err(db_error)
}

/// The cache shows which blobs a repository holds and their sizes: its
/// files are the owner's alone (0600, directories 0700). RocksDB creates
/// them with the process umask, so they are tightened after the fact;
/// the cache directory above, 0700, keeps others out meanwhile.
fn make_private(dir: &Path) {
    use std::os::unix::fs::PermissionsExt;
    let set = |path: &Path, mode: u32| {
        if let Ok(meta) = std::fs::symlink_metadata(path) {
            if !meta.file_type().is_symlink() && meta.permissions().mode() & 0o777 != mode {
                let _ = std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode));
            }
        }
    };
    set(dir, 0o700);
    if let Ok(entries) = std::fs::read_dir(dir) {
        for entry in entries.flatten() {
            if entry.file_type().is_ok_and(|t| t.is_file()) {
                set(&entry.path(), 0o600);
            }
        }
    }
}

fn db_error(e: rocksdb::Error) -> Error {
    let kind = match e.kind() {
        rocksdb::ErrorKind::Corruption => crate::error::ErrorKind::Corrupt,
        _ => crate::error::ErrorKind::Io,
    };
    Error::new(kind, format!("local index cache: {e}"))
}

/// Deletes private caches (`index.tmp-<pid>`) whose process is gone, left
/// behind when a process that could not share the cache was killed.
fn remove_orphaned_private_caches(dir: &Path) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for entry in entries.flatten() {
        let name = entry.file_name();
        let Some(pid) = name
            .to_str()
            .and_then(|n| n.strip_prefix("index.tmp-"))
            .and_then(|p| p.parse::<u32>().ok())
        else {
            continue;
        };
        if !crate::sys::process_alive(pid) {
            let _ = std::fs::remove_dir_all(entry.path());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::format::index_file::IndexPack;
    use crate::format::pack::Codec;
    use proptest::prelude::*;
    use std::collections::HashMap;
    use std::os::unix::fs::PermissionsExt;

    fn one_blob() -> (IndexFile, BlobId) {
        let id = BlobId(Id([3; 32]));
        let file = IndexFile {
            supersedes: vec![],
            packs: vec![IndexPack {
                id: PackId(Id([4; 32])),
                entries: vec![PackEntry {
                    kind: BlobKind::Data,
                    codec: Codec::Raw,
                    id,
                    offset: 0,
                    length: 100,
                    raw_length: 59,
                }],
            }],
            marked_at: None,
        };
        (file, id)
    }

    /// With no private place on disk the cache lives in memory: it works
    /// as the one on disk does, and is rebuilt in memory too.
    #[test]
    fn an_in_memory_cache_works_like_the_one_on_disk() {
        let (file, id) = one_blob();
        let mut db = IndexDb::in_memory(RepositoryId(Id([1; 32]))).unwrap();
        assert!(db.is_temporary());
        db.merge(IndexId(Id([9; 32])), &file).unwrap();
        assert!(db.contains(BlobKind::Data, &id).unwrap());
        db.rebuild_empty().unwrap();
        assert!(!db.contains(BlobKind::Data, &id).unwrap());
        db.merge(IndexId(Id([9; 32])), &file).unwrap();
        assert!(db.contains(BlobKind::Data, &id).unwrap());
        // Two at once do not share anything.
        let other = IndexDb::in_memory(RepositoryId(Id([2; 32]))).unwrap();
        assert!(!other.contains(BlobKind::Data, &id).unwrap());
    }

    /// A mark file's blobs are found by readers and not by writers, even
    /// where an index file lists the same pack, and merging it drops the
    /// snapshots' completeness keys.
    #[test]
    fn a_marked_pack_is_read_but_not_deduplicated_against() {
        let (file, id) = one_blob();
        let db = IndexDb::in_memory(RepositoryId(Id([1; 32]))).unwrap();
        let marked = IndexFile {
            marked_at: Some(1),
            ..file.clone()
        };
        db.merge(IndexId(Id([8; 32])), &marked).unwrap();
        assert!(db.get(BlobKind::Data, &id).unwrap().is_some());
        assert!(!db.contains(BlobKind::Data, &id).unwrap());
        let snapshot = SnapshotId(Id([5; 32]));
        db.mark_snapshot_complete(&snapshot).unwrap();
        db.merge(IndexId(Id([9; 32])), &file).unwrap();
        assert_eq!(
            db.get(BlobKind::Data, &id).unwrap().unwrap().pack,
            PackId(Id([4; 32]))
        );
        assert!(!db.contains(BlobKind::Data, &id).unwrap(), "still marked");
        assert!(db.snapshot_complete(&snapshot).unwrap());
        db.merge(IndexId(Id([7; 32])), &marked).unwrap();
        assert!(!db.snapshot_complete(&snapshot).unwrap());
    }

    #[test]
    fn the_cache_on_disk_is_the_owners_alone() {
        let dir = tempfile::tempdir().unwrap();
        let cache = dir.path().join("repo-cache");
        let (file, _) = one_blob();
        let db = IndexDb::open(&cache, RepositoryId(Id([1; 32]))).unwrap();
        db.merge(IndexId(Id([9; 32])), &file).unwrap();
        drop(db);
        let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode(&cache), 0o700);
        assert_eq!(mode(&cache.join("index.rocksdb")), 0o700);
        for entry in std::fs::read_dir(cache.join("index.rocksdb")).unwrap() {
            let path = entry.unwrap().path();
            assert_eq!(mode(&path), 0o600, "{}", path.display());
        }
    }

    /// Index and filter blocks go to the bounded block cache: the table
    /// readers, which RocksDB keeps for every open table file for as long
    /// as the process runs, hold only the top level of each (before, they
    /// held every table's whole index and filter: about 2.5 bytes a blob,
    /// so check and prune grew with the repository).
    #[test]
    fn open_tables_hold_no_index_or_filter_outside_the_cache() {
        let dir = tempfile::tempdir().unwrap();
        let repository = RepositoryId(Id([1; 32]));
        let db = IndexDb::open(dir.path(), repository).unwrap();
        let mut ids = Vec::new();
        for f in 0..4u8 {
            let entries: Vec<PackEntry> = (0..50_000)
                .map(|i| PackEntry {
                    kind: BlobKind::Data,
                    codec: Codec::Zstd,
                    id: BlobId(Id::random()),
                    offset: i,
                    length: 100,
                    raw_length: 400,
                })
                .collect();
            ids.extend(entries.iter().step_by(997).map(|e| e.id));
            let file = IndexFile {
                supersedes: vec![],
                marked_at: None,
                packs: vec![IndexPack {
                    id: PackId(Id([f; 32])),
                    entries,
                }],
            };
            db.merge(IndexId(Id([f; 32])), &file).unwrap();
        }
        db.db().flush().unwrap();
        drop(db);
        let db = IndexDb::open(dir.path(), repository).unwrap();
        for id in &ids {
            assert!(db.contains(BlobKind::Data, id).unwrap());
        }
        let mut n = 0;
        db.for_each_blob(|_, _| n += 1).unwrap();
        assert_eq!(n, 200_000);
        let readers = db
            .db()
            .property_int_value("rocksdb.estimate-table-readers-mem")
            .unwrap()
            .unwrap();
        // 200k blobs: their index and filter blocks take about 500 KB.
        assert!(readers < 100_000, "table readers hold {readers} bytes");
    }

    proptest! {
        // Each case opens a RocksDB database: a few dozen are enough.
        #![proptest_config(ProptestConfig::with_cases(24))]

        /// `merge` puts a file's entries in key order, not file order; every
        /// blob must still end up where the file's last entry for it says,
        /// also when a blob is listed twice (ids from a pool of 8); no other
        /// blob may appear, and the file's marks must.
        #[test]
        fn merged_blobs_are_where_the_files_last_entry_puts_them(
            packs in proptest::collection::vec(
                (any::<[u8; 32]>(),
                 proptest::collection::vec(
                     (any::<bool>(), any::<bool>(), 0u8..8, any::<u32>(), 41u32..1000), 0..40)),
                1..6),
            supersedes in proptest::collection::vec(any::<[u8; 32]>(), 0..3),
        ) {
            let file = IndexFile {
                supersedes: supersedes.into_iter().map(|b| IndexId(Id(b))).collect(),
                packs: packs
                    .into_iter()
                    .map(|(pack, entries)| IndexPack {
                        id: PackId(Id(pack)),
                        entries: entries
                            .into_iter()
                            .map(|(tree, zstd, id, offset, length)| PackEntry {
                                kind: if tree { BlobKind::Tree } else { BlobKind::Data },
                                codec: if zstd { Codec::Zstd } else { Codec::Raw },
                                id: BlobId(Id([id; 32])),
                                offset,
                                length,
                                raw_length: length,
                            })
                            .collect(),
                    })
                    .collect(),
                marked_at: None,
            };
            let mut last = HashMap::new();
            for pack in &file.packs {
                for entry in &pack.entries {
                    last.insert((entry.kind, entry.id), BlobLocation { pack: pack.id, entry: *entry });
                }
            }
            let dir = tempfile::tempdir().unwrap();
            let db = IndexDb::open(dir.path(), RepositoryId(Id([1; 32]))).unwrap();
            let index_id = IndexId(Id([9; 32]));
            db.merge(index_id, &file).unwrap();
            for ((kind, id), location) in &last {
                prop_assert_eq!(db.get(*kind, id).unwrap(), Some(*location));
            }
            let mut blobs = 0;
            db.for_each_blob(|_, _| blobs += 1).unwrap();
            prop_assert_eq!(blobs, last.len());
            prop_assert_eq!(db.merged_index_files().unwrap(), HashSet::from([index_id]));
            prop_assert_eq!(
                db.superseded_index_files().unwrap(),
                file.supersedes.iter().copied().collect::<HashSet<_>>()
            );
        }
    }
}
