//! A local copy of a remote repository's snapshot and index files, and of
//! the packs that hold trees, in front of the backend that holds them (the
//! CLI puts one in front of every S3 repository). All are named by the
//! BLAKE3 of their bytes and never change, so a copy is checked against its
//! name when it is read back (`Id::of_file_bytes`; a pack copy once per
//! process): a copy that does not match, or cannot be read, is deleted and
//! fetched again. A listing of the backend removes the copies of files it
//! no longer lists. Deleting the directory loses nothing.
//!
//! A pack is copied whole the first time a tree is read from it
//! (`get_blob_range` with `BlobKind::Tree`; a pack holds one kind of blob),
//! up to `TREE_PACK_COPY_MAX`: walking a snapshot reads most trees of it.
//!
//! The copies live in `<repository cache dir>/remote/{snapshots,index,packs}/`,
//! which exists only once opening the repository has found a private cache
//! directory for it (`Backend::use_cache_dir`); until then, and for every
//! other kind of file, calls go straight to the backend.
//!
//! The first lock a process writes through it (every command that writes
//! takes one) first probes whether the server enforces conditional writes
//! and records the answer in `<repository cache dir>/conditional-writes`
//! (docs/FORMAT.md, section 3, "On object storage").

use super::{Backend, ConditionalWrites, FileKind, PendingFile};
use crate::error::Result;
use crate::format::id::Id;
use crate::format::pack::BlobKind;
use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::sync::{Mutex, OnceLock};

/// Where a process records the probe, in the repository's cache directory.
pub const PROBE_RECORD: &str = "conditional-writes";
/// The subdirectory of the repository's cache directory holding the copies.
pub const REMOTE_DIR: &str = "remote";
/// A copy larger than this is not trusted to be one (index files and
/// snapshots are bounded far below it by the format).
const COPY_SIZE_MAX: u64 = 1 << 30;
/// Entries a listing looks at when it prunes copies: a bound on the work
/// a planted directory can cause.
const PRUNE_ENTRIES_MAX: usize = 10_000_000;
/// A tree pack larger than this (a repository made with a huge pack size)
/// is read by ranges as usual, not copied.
pub const TREE_PACK_COPY_MAX: u64 = 128 << 20;

pub struct CachedBackend<B> {
    inner: B,
    /// `<repository cache dir>`, once known.
    dir: OnceLock<PathBuf>,
    /// Set once this process has probed and recorded conditional writes.
    probed: OnceLock<Option<ConditionalWrites>>,
    /// Pack copies this process has checked against their names.
    packs_checked: Mutex<HashSet<String>>,
    /// Tree packs not to copy in this process (too large, or the fetch
    /// failed): read by ranges.
    packs_skipped: Mutex<HashSet<String>>,
}

impl<B: Backend> CachedBackend<B> {
    pub fn new(inner: B) -> CachedBackend<B> {
        CachedBackend {
            inner,
            dir: OnceLock::new(),
            probed: OnceLock::new(),
            packs_checked: Mutex::new(HashSet::new()),
            packs_skipped: Mutex::new(HashSet::new()),
        }
    }

    pub fn inner(&self) -> &B {
        &self.inner
    }

    /// The directory of copies of `kind` and the file name, for the kinds
    /// cached and well-formed names only.
    fn slot<'n>(&self, kind: FileKind, name: &'n str) -> Option<(PathBuf, &'n str)> {
        let dir = self.dir.get()?;
        let sub = match kind {
            FileKind::Snapshot | FileKind::Index => kind.dir(),
            _ => return None,
        };
        Id::from_hex(name).ok()?;
        Some((dir.join(REMOTE_DIR).join(sub), name))
    }

    /// The directory of pack copies and the name, for well-formed names.
    fn pack_slot<'n>(&self, name: &'n str) -> Option<(PathBuf, &'n str)> {
        let dir = self.dir.get()?;
        Id::from_hex(name).ok()?;
        Some((dir.join(REMOTE_DIR).join(FileKind::Pack.dir()), name))
    }

    /// `length` bytes at `offset` of the tree pack `name`, from its copy,
    /// which is made first if there is none. `None`: read the backend.
    fn tree_pack_range(&self, name: &str, offset: u64, length: u64) -> Option<Vec<u8>> {
        use std::os::unix::fs::FileExt;
        let (dir, name) = self.pack_slot(name)?;
        let end = offset.checked_add(length)?;
        if self.packs_skipped.lock().ok()?.contains(name) {
            return None;
        }
        let checked = self.packs_checked.lock().ok()?.contains(name);
        match crate::sys::fs::open_regular_beneath(&dir, &[], name) {
            Ok((file, size)) if checked => {
                let mut out = vec![0; usize::try_from(length).ok()?];
                if end > size || file.read_exact_at(&mut out, offset).is_err() {
                    return None;
                }
                return Some(out);
            }
            Ok((file, size)) => {
                if let Ok(bytes) = crate::sys::fs::read_bounded(&file, size, TREE_PACK_COPY_MAX) {
                    if Id::of_file_bytes(&bytes).to_hex() == name {
                        self.packs_checked.lock().ok()?.insert(name.to_string());
                        return range(&bytes, offset, end);
                    }
                }
                let _ = std::fs::remove_file(dir.join(name));
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(_) => {
                let _ = std::fs::remove_file(dir.join(name));
            }
        }
        match self
            .inner
            .get_bounded(FileKind::Pack, name, TREE_PACK_COPY_MAX as usize)
        {
            Ok(bytes) if Id::of_file_bytes(&bytes).to_hex() == name => {
                self.write_file(&dir, name, &bytes);
                self.packs_checked.lock().ok()?.insert(name.to_string());
                range(&bytes, offset, end)
            }
            // Too large, damaged (the range read reports it) or not
            // reachable now (the range read retries and reports it).
            _ => {
                self.packs_skipped.lock().ok()?.insert(name.to_string());
                None
            }
        }
    }

    /// The copy of `name`, if there is a good one; a bad one is deleted.
    fn read_copy(&self, kind: FileKind, name: &str, size_max: u64) -> Option<Vec<u8>> {
        let (dir, name) = self.slot(kind, name)?;
        let read =
            crate::sys::fs::open_regular_beneath(&dir, &[], name).and_then(|(file, size)| {
                crate::sys::fs::read_bounded(&file, size, size_max.min(COPY_SIZE_MAX))
            });
        match read {
            Ok(bytes) if Id::of_file_bytes(&bytes).to_hex() == name => Some(bytes),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
            // Damaged, too large for the caller, or not a regular file:
            // fetched again (and a symlink is removed, not followed).
            _ => {
                let _ = std::fs::remove_file(dir.join(name));
                None
            }
        }
    }

    /// Keeps a copy of bytes just read or written, if they match their
    /// name. Best effort: a failure costs only a later fetch.
    fn write_copy(&self, kind: FileKind, name: &str, bytes: &[u8]) {
        let Some((dir, name)) = self.slot(kind, name) else {
            return;
        };
        if Id::of_file_bytes(bytes).to_hex() != name {
            return;
        }
        self.write_file(&dir, name, bytes);
    }

    /// Writes `dir/name` through a temporary file. Best effort.
    fn write_file(&self, dir: &Path, name: &str, bytes: &[u8]) {
        use std::io::Write;
        use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
        if std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(dir)
            .is_err()
        {
            return;
        }
        let temp = dir.join(format!(
            ".tmp-{}",
            hex::encode(crate::sys::random_bytes::<8>())
        ));
        let written = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&temp)
            .and_then(|mut file| file.write_all(bytes))
            .and_then(|()| std::fs::rename(&temp, dir.join(name)));
        if written.is_err() {
            let _ = std::fs::remove_file(&temp);
        }
    }

    fn drop_copy(&self, kind: FileKind, name: &str) {
        let slot = match kind {
            FileKind::Pack => self.pack_slot(name),
            _ => self.slot(kind, name),
        };
        if let Some((dir, name)) = slot {
            let _ = std::fs::remove_file(dir.join(name));
        }
    }

    /// Removes the copies of files the backend did not list (and temporary
    /// files a crashed writer left).
    fn prune_copies(&self, kind: FileKind, listed: &[(String, u64)]) {
        let Some(dir) = self.dir.get() else {
            return;
        };
        if !matches!(kind, FileKind::Snapshot | FileKind::Index | FileKind::Pack) {
            return;
        }
        let dir = dir.join(REMOTE_DIR).join(kind.dir());
        let Ok(entries) = std::fs::read_dir(&dir) else {
            return;
        };
        let listed: std::collections::HashSet<&str> =
            listed.iter().map(|(name, _)| name.as_str()).collect();
        for entry in entries.flatten().take(PRUNE_ENTRIES_MAX) {
            let name = entry.file_name();
            let keep = name.to_str().is_some_and(|n| listed.contains(n));
            if !keep {
                let _ = std::fs::remove_file(entry.path());
            }
        }
    }

    /// Probes conditional writes once and records the answer next to the
    /// copies (the record is for people and later versions; nothing reads
    /// it to decide).
    fn probe_and_record(&self) -> Result<()> {
        if self.probed.get().is_some() {
            return Ok(());
        }
        let found = self.inner.probe_conditional_writes()?;
        if let (Some(mode), Some(dir)) = (found, self.dir.get()) {
            record_probe(dir, mode);
        }
        let _ = self.probed.set(found);
        Ok(())
    }
}

/// `bytes[offset..end]`, or `None` past the end (the backend's range read
/// then says what is wrong).
fn range(bytes: &[u8], offset: u64, end: u64) -> Option<Vec<u8>> {
    let (offset, end) = (usize::try_from(offset).ok()?, usize::try_from(end).ok()?);
    bytes.get(offset..end).map(<[u8]>::to_vec)
}

/// Writes `<dir>/conditional-writes`: the mode and when it was found.
fn record_probe(dir: &Path, mode: ConditionalWrites) {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let temp = dir.join(format!(
        "{PROBE_RECORD}.tmp-{}",
        hex::encode(crate::sys::random_bytes::<8>())
    ));
    let text = format!(
        "{}\nprobed {}\n",
        mode.as_str(),
        chrono::Utc::now().format("%Y-%m-%dT%H:%M:%SZ")
    );
    let written = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(&temp)
        .and_then(|mut file| file.write_all(text.as_bytes()))
        .and_then(|()| std::fs::rename(&temp, dir.join(PROBE_RECORD)));
    if written.is_err() {
        let _ = std::fs::remove_file(&temp);
    }
}

/// What the last probe recorded in a repository's cache directory, if
/// anything (read bounded, and only its first line).
pub fn recorded_probe(dir: &Path) -> Option<ConditionalWrites> {
    let (file, size) = crate::sys::fs::open_regular_beneath(dir, &[], PROBE_RECORD).ok()?;
    let bytes = crate::sys::fs::read_bounded(&file, size, 256).ok()?;
    match bytes.split(|b| *b == b'\n').next()? {
        b"enforced" => Some(ConditionalWrites::Enforced),
        b"ignored" => Some(ConditionalWrites::Ignored),
        _ => None,
    }
}

impl<B: Backend> Backend for CachedBackend<B> {
    fn location(&self) -> String {
        self.inner.location()
    }

    fn exists(&self) -> Result<bool> {
        self.inner.exists()
    }

    fn create(&self) -> Result<()> {
        self.inner.create()
    }

    fn put(&self, kind: FileKind, name: &str, bytes: &[u8]) -> Result<()> {
        if kind == FileKind::Lock {
            // Before the lock is written: a probe that fails leaves no
            // lock behind.
            self.probe_and_record()?;
        }
        self.inner.put(kind, name, bytes)?;
        self.write_copy(kind, name, bytes);
        Ok(())
    }

    fn put_new(&self, kind: FileKind, name: &str, bytes: &[u8]) -> Result<bool> {
        self.inner.put_new(kind, name, bytes)
    }

    fn get(&self, kind: FileKind, name: &str) -> Result<Vec<u8>> {
        if let Some(bytes) = self.read_copy(kind, name, COPY_SIZE_MAX) {
            return Ok(bytes);
        }
        let bytes = self.inner.get(kind, name)?;
        self.write_copy(kind, name, &bytes);
        Ok(bytes)
    }

    fn get_bounded(&self, kind: FileKind, name: &str, size_max: usize) -> Result<Vec<u8>> {
        if let Some(bytes) = self.read_copy(kind, name, size_max as u64) {
            return Ok(bytes);
        }
        let bytes = self.inner.get_bounded(kind, name, size_max)?;
        self.write_copy(kind, name, &bytes);
        Ok(bytes)
    }

    fn get_range(&self, kind: FileKind, name: &str, offset: u64, length: u64) -> Result<Vec<u8>> {
        self.inner.get_range(kind, name, offset, length)
    }

    fn get_blob_range(
        &self,
        kind: BlobKind,
        pack: &str,
        offset: u64,
        length: u64,
    ) -> Result<Vec<u8>> {
        if kind == BlobKind::Tree {
            if let Some(bytes) = self.tree_pack_range(pack, offset, length) {
                return Ok(bytes);
            }
        }
        self.inner.get_blob_range(kind, pack, offset, length)
    }

    fn size(&self, kind: FileKind, name: &str) -> Result<u64> {
        self.inner.size(kind, name)
    }

    fn list(&self, kind: FileKind) -> Result<Vec<(String, u64)>> {
        let listed = self.inner.list(kind)?;
        self.prune_copies(kind, &listed);
        Ok(listed)
    }

    fn delete(&self, kind: FileKind, name: &str) -> Result<()> {
        // The copy goes first: a delete that fails half-way must not leave
        // a copy of a file that may be gone.
        self.drop_copy(kind, name);
        self.inner.delete(kind, name)
    }

    fn sweep_temp_files(&self, dry_run: bool) -> Result<(u64, u64)> {
        self.inner.sweep_temp_files(dry_run)
    }

    fn create_pending(&self, kind: FileKind) -> Result<Box<dyn PendingFile + '_>> {
        self.inner.create_pending(kind)
    }

    fn modified(&self, kind: FileKind, name: &str) -> Result<Option<std::time::SystemTime>> {
        self.inner.modified(kind, name)
    }

    fn probe_conditional_writes(&self) -> Result<Option<ConditionalWrites>> {
        self.inner.probe_conditional_writes()
    }

    fn can_retain(&self) -> bool {
        self.inner.can_retain()
    }

    fn retain_until(&self, until: std::time::SystemTime) -> Result<()> {
        self.inner.retain_until(until)
    }

    fn connections(&self) -> Option<usize> {
        self.inner.connections()
    }

    fn use_cache_dir(&self, dir: &Path) {
        let _ = self.dir.set(dir.to_path_buf());
        self.inner.use_cache_dir(dir);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::storage::backend::conformance::conforms;
    use crate::storage::backend::MemoryBackend;

    fn named(bytes: &[u8]) -> String {
        Id::of_file_bytes(bytes).to_hex()
    }

    #[test]
    fn cached_backend_keeps_the_backend_contract() {
        let cache = tempfile::tempdir().unwrap();
        let backend = CachedBackend::new(MemoryBackend::new());
        backend.use_cache_dir(cache.path());
        conforms(&backend);
    }

    /// A copy is used instead of the backend; a damaged, planted or stale
    /// copy is deleted and fetched again, or pruned by a listing.
    #[test]
    fn copies_are_checked_against_their_names_and_pruned() {
        let cache = tempfile::tempdir().unwrap();
        let backend = CachedBackend::new(MemoryBackend::new());
        backend.create().unwrap();
        backend.use_cache_dir(cache.path());
        let bytes = b"a sealed snapshot".to_vec();
        let name = named(&bytes);
        backend.put(FileKind::Snapshot, &name, &bytes).unwrap();
        let copy = cache.path().join("remote/snapshots").join(&name);
        assert_eq!(std::fs::read(&copy).unwrap(), bytes);

        // Served from the copy: the backend's file is not read.
        backend
            .inner()
            .put(FileKind::Snapshot, &name, b"other")
            .unwrap();
        assert_eq!(backend.get(FileKind::Snapshot, &name).unwrap(), bytes);
        backend
            .inner()
            .put(FileKind::Snapshot, &name, &bytes)
            .unwrap();

        // A flipped byte in the copy: deleted, refetched, rewritten.
        std::fs::write(&copy, b"a sealed snapshoT").unwrap();
        assert_eq!(
            backend
                .get_bounded(FileKind::Snapshot, &name, 1000)
                .unwrap(),
            bytes
        );
        assert_eq!(std::fs::read(&copy).unwrap(), bytes);

        // A symlink planted as a copy is removed, not followed.
        let outside = cache.path().join("outside");
        std::fs::write(&outside, &bytes).unwrap();
        std::fs::remove_file(&copy).unwrap();
        std::os::unix::fs::symlink(&outside, &copy).unwrap();
        assert_eq!(backend.get(FileKind::Snapshot, &name).unwrap(), bytes);
        assert!(!std::fs::symlink_metadata(&copy).unwrap().is_symlink());

        // A copy over the caller's bound is not returned.
        assert!(backend.get_bounded(FileKind::Snapshot, &name, 3).is_err());

        // Deleted through the cache, or gone from the backend behind its
        // back: no copy after the next listing.
        let other = b"another index file".to_vec();
        let other_name = named(&other);
        backend.put(FileKind::Index, &other_name, &other).unwrap();
        backend
            .inner()
            .delete(FileKind::Index, &other_name)
            .unwrap();
        let stray = cache.path().join("remote/index/.tmp-left");
        std::fs::write(&stray, b"x").unwrap();
        assert!(backend.list(FileKind::Index).unwrap().is_empty());
        assert!(!cache.path().join("remote/index").join(&other_name).exists());
        assert!(!stray.exists());
        backend.delete(FileKind::Snapshot, &name).unwrap();
        assert!(!copy.exists());
        assert!(backend.get(FileKind::Snapshot, &name).is_err());

        // Other kinds and names that are not ids are never copied.
        backend.put(FileKind::Key, &named(b"k"), b"k").unwrap();
        backend.put(FileKind::Snapshot, "not-an-id", b"x").unwrap();
        let entries = std::fs::read_dir(cache.path().join("remote/snapshots"))
            .unwrap()
            .count();
        assert_eq!(entries, 0);
        assert!(!cache.path().join("remote/keys").exists());
    }

    /// The pack a tree is read from is copied whole and read from there;
    /// a damaged copy is fetched again; data packs are never copied; a
    /// listing or a delete removes copies of packs that are gone.
    #[test]
    fn tree_packs_are_copied_and_checked() {
        let cache = tempfile::tempdir().unwrap();
        let inner = MemoryBackend::new();
        inner.create().unwrap();
        let pack: Vec<u8> = (0..=255u8).cycle().take(10_000).collect();
        let name = named(&pack);
        inner.put(FileKind::Pack, &name, &pack).unwrap();
        let data: Vec<u8> = (0..=255u8).rev().cycle().take(5_000).collect();
        let data_name = named(&data);
        inner.put(FileKind::Pack, &data_name, &data).unwrap();

        let backend = CachedBackend::new(inner);
        backend.use_cache_dir(cache.path());
        let copy = cache.path().join("remote/packs").join(&name);
        assert_eq!(
            backend
                .get_blob_range(BlobKind::Tree, &name, 100, 50)
                .unwrap(),
            pack[100..150]
        );
        assert_eq!(std::fs::read(&copy).unwrap(), pack);
        // From the copy now: the backend's pack is not read.
        backend.inner().put(FileKind::Pack, &name, b"gone").unwrap();
        assert_eq!(
            backend
                .get_blob_range(BlobKind::Tree, &name, 9_990, 10)
                .unwrap(),
            pack[9_990..]
        );
        backend.inner().put(FileKind::Pack, &name, &pack).unwrap();
        // Past the end: the backend's range read reports it.
        assert!(backend
            .get_blob_range(BlobKind::Tree, &name, 9_995, 10)
            .is_err());
        // A data pack is read by range, not copied.
        assert_eq!(
            backend
                .get_blob_range(BlobKind::Data, &data_name, 0, 3)
                .unwrap(),
            data[..3]
        );
        assert!(!cache.path().join("remote/packs").join(&data_name).exists());

        // Another process finds a damaged copy: fetched again.
        let mut bad = pack.clone();
        bad[7] ^= 1;
        std::fs::write(&copy, &bad).unwrap();
        let fresh = CachedBackend::new(MemoryBackend::new());
        fresh.inner().create().unwrap();
        fresh.inner().put(FileKind::Pack, &name, &pack).unwrap();
        fresh.use_cache_dir(cache.path());
        assert_eq!(
            fresh.get_blob_range(BlobKind::Tree, &name, 0, 10).unwrap(),
            pack[..10]
        );
        assert_eq!(std::fs::read(&copy).unwrap(), pack);

        // Gone from the backend: pruned by a listing, or by a delete.
        fresh.inner().delete(FileKind::Pack, &name).unwrap();
        fresh.list(FileKind::Pack).unwrap();
        assert!(!copy.exists());
        backend.get_blob_range(BlobKind::Tree, &name, 0, 1).unwrap();
        assert!(copy.exists());
        backend.delete(FileKind::Pack, &name).unwrap();
        assert!(!copy.exists());
    }

    #[test]
    fn without_a_cache_dir_nothing_is_copied() {
        let backend = CachedBackend::new(MemoryBackend::new());
        backend.create().unwrap();
        let bytes = b"index".to_vec();
        backend
            .put(FileKind::Index, &named(&bytes), &bytes)
            .unwrap();
        assert_eq!(backend.get(FileKind::Index, &named(&bytes)).unwrap(), bytes);
        assert!(backend.probe_conditional_writes().unwrap().is_none());
    }

    #[test]
    fn the_probe_record_reads_back() {
        let dir = tempfile::tempdir().unwrap();
        assert_eq!(recorded_probe(dir.path()), None);
        record_probe(dir.path(), ConditionalWrites::Ignored);
        assert_eq!(recorded_probe(dir.path()), Some(ConditionalWrites::Ignored));
        record_probe(dir.path(), ConditionalWrites::Enforced);
        assert_eq!(
            recorded_probe(dir.path()),
            Some(ConditionalWrites::Enforced)
        );
    }
}
