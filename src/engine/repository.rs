//! The repository: backend + master key + config + index cache. The only
//! module that orders writes (MUST: packs, then index files, then the
//! snapshot) and the only one that seals or opens repository files.

use crate::context::Context;
use crate::error::{Error, ErrorKind, Result};
use crate::format::audit::SigningKey;
use crate::format::chunker::{Chunker, ChunkerParams};
use crate::format::config::{Config, PACK_SIZE_TARGET_DEFAULT};
use crate::format::crypto::{Domain, IdKeys, KdfParams, MasterKey};
use crate::format::id::{BlobId, Id, IndexId, KeyId, PackId, RepositoryId, SnapshotId};
use crate::format::index_file::INDEX_FILE_BLOBS_TARGET;
use crate::format::index_file::{IndexFile, IndexPack};
use crate::format::key::KeyFile;
use crate::format::pack::{self, BlobKind, PackBuilder, PackEntry, SealedBlob};
use crate::format::snapshot::{Snapshot, SnapshotFilter};
use crate::format::tree::Tree;
use crate::storage::backend::{Backend, FileKind, PendingFile};
use crate::storage::index_cache::{BlobLocation, IndexDb};
use crate::storage::lock::{self, DeleteLock, ExclusiveLock, LockGuard};
use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// Envelope bytes a sealed file carries beyond its plaintext limit.
/// An open pack is written to the backend in pieces of this size, so a
/// writer holds a few MiB of it, not the whole 32 MiB (issue 6: a backup's
/// peak memory no higher than restic's).
const PACK_WRITE_PIECE: usize = 4 * 1024 * 1024;

const SEALED_SLACK: usize = crate::format::crypto::SEAL_OVERHEAD;
/// How many times an index sync lists again after a listed index file
/// vanished (a prune beside us deleted it after superseding it).
const INDEX_SYNC_RETRIES: usize = 5;

/// zstd level of new repositories, measured on four kinds of input (a
/// text-heavy SQL dump, a tarball of compressed files, a tree of small
/// files, a Redis RDB; `scripts/bench.sh --corpora`): level 3 stores 2-6 %
/// less than level 1 on each of them, at or near restic's first-night size
/// (docs/FORMAT.md 5.3). Existing repositories keep the level in their config.
pub const ZSTD_LEVEL_DEFAULT: i32 = 3;

/// Choices made once, at `init`.
#[derive(Debug, Clone)]
pub struct InitOptions {
    pub chunker: ChunkerParams,
    pub zstd_level: i32,
    pub pack_size_target: u32,
    pub kdf: KdfParams,
    /// `Some(source.id_keys())`: dedup against `source` (`--copy-chunker-params`).
    pub id_keys: Option<IdKeys>,
}

impl Default for InitOptions {
    fn default() -> Self {
        InitOptions {
            chunker: ChunkerParams::DEFAULT,
            zstd_level: ZSTD_LEVEL_DEFAULT,
            pack_size_target: PACK_SIZE_TARGET_DEFAULT,
            kdf: KdfParams::DEFAULT,
            id_keys: None,
        }
    }
}

/// A repository opened with a password, before its index cache is synced
/// (`Repository::open`). Enough for keys, snapshots and `cat`.
pub struct Opened;

/// A repository whose index cache is synced (`Repository::load_index`):
/// only this state can look up, read or write blobs, so "the index was not
/// loaded" cannot happen at run time.
pub struct Indexed {
    db: IndexDb,
}

/// The repository in state `S`: `Repository<Opened>` after `open`, and
/// `Repository` (that is, `Repository<Indexed>`) after `load_index`.
pub struct Repository<S = Indexed> {
    backend: Arc<dyn Backend>,
    key: MasterKey,
    /// The key file the password opened.
    key_name: String,
    /// Its audit signing key; `None` for a version 1 key file.
    signing: Option<SigningKey>,
    config: Config,
    /// This repository's directory in the local cache; none when there is
    /// no private place for one (the index is then kept in memory).
    cache_dir: Option<PathBuf>,
    warnings: Vec<String>,
    /// The caller's interrupt flag and progress counters.
    ctx: Context,
    state: S,
}

impl Repository<Opened> {
    /// Creates a repository: directories, then the key file, then `config`
    /// (whose presence marks a finished repository).
    pub fn init(
        backend: Arc<dyn Backend>,
        password: &[u8],
        options: &InitOptions,
    ) -> Result<RepositoryId> {
        options.chunker.validate()?;
        let config = Config::new(
            options.chunker,
            options.zstd_level,
            options.pack_size_target,
        )
        .sharing(options.id_keys.clone());
        config
            .validate()
            .map_err(|e| Error::invalid(e.to_string()))?;
        let exists = || {
            Error::new(
                ErrorKind::RepositoryExists,
                format!("a repository already exists at {}", backend.location()),
            )
        };
        if backend.exists()? {
            return Err(exists());
        }
        backend.create()?;
        let key = MasterKey::generate();
        let signing = SigningKey::generate();
        let key_file = KeyFile::create_signing(
            &key,
            Some(&signing),
            password,
            options.kdf,
            &crate::sys::hostname(),
            &crate::sys::username(),
        )?
        .encode();
        backend.put(
            FileKind::Key,
            &KeyId(Id::of_file_bytes(&key_file)).to_hex(),
            &key_file,
        )?;
        // Never over another init's config: a conditional create.
        let sealed = key.seal(Domain::Config, &config.encode());
        if !backend.put_new(FileKind::Config, "config", &sealed)? {
            return Err(exists());
        }
        // The log's first entry, by the first key.
        crate::engine::audit::AuditWriter::new(backend, config.id, Some(signing)).append(
            &crate::engine::audit::Record {
                operation: "init".into(),
                ..Default::default()
            },
        )?;
        Ok(config.id)
    }

    /// Opens a repository with a password. The index cache is not synced
    /// until `load_index`.
    pub fn open(
        backend: Arc<dyn Backend>,
        password: &[u8],
        cache_root: Option<&Path>,
    ) -> Result<Repository<Opened>> {
        Self::open_with(
            backend,
            password,
            &OpenOptions {
                cache_root,
                key_hint: None,
            },
        )
    }

    /// `open` with a key hint. The key files are tried in this order: those
    /// the hint names, the one this user opened the repository with last,
    /// then the others; a hostile key file is skipped with a warning.
    pub fn open_with(
        backend: Arc<dyn Backend>,
        password: &[u8],
        options: &OpenOptions<'_>,
    ) -> Result<Repository<Opened>> {
        if !backend.exists()? {
            return Err(Error::new(
                ErrorKind::RepositoryNotFound,
                format!("repository {} does not exist", backend.location()),
            ));
        }
        let mut warnings = Vec::new();
        let cache_root = match open::cache_root(options.cache_root) {
            Ok(root) => Some(root),
            Err(why) => {
                warnings.push(format!("{why}; {NO_CACHE}"));
                None
            }
        };
        let remembered = cache_root
            .as_deref()
            .map(open::remembered_keys)
            .unwrap_or_default();
        let (key_name, key, signing) = open::open_key(
            backend.as_ref(),
            password,
            options.key_hint,
            &remembered,
            &mut warnings,
        )?;
        let (config, key) = open::open_config(backend.as_ref(), key)?;
        let cache_dir = cache_root.and_then(|root| {
            let dir = root.join(config.id.to_hex());
            match open::private_dir(&dir, true) {
                Ok(()) => {
                    open::mark_used(&root, &dir);
                    open::adopt_cache_dir(backend.as_ref(), &dir, &key_name);
                    Some(dir)
                }
                Err(why) => {
                    warnings.push(format!("{why}; {NO_CACHE}"));
                    None
                }
            }
        });
        let mut repo = Repository {
            backend,
            key,
            key_name,
            signing,
            config,
            cache_dir,
            warnings,
            ctx: Context::default(),
            state: Opened,
        };
        // Packs and snapshots written under a retention lock carry it on
        // object storage (S3 Object Lock).
        // A bucket that cannot keep the lock does not keep the repository
        // from being read (a restore must work); writers are told.
        match repo.apply_object_lock() {
            Ok(()) => {}
            Err(e) if e.kind() == ErrorKind::Refused => repo
                .warnings
                .push(format!("{e}; files are stored without Object Lock")),
            Err(e) => return Err(e),
        }
        Ok(repo)
    }

    /// Opens the local index cache and merges index files it has not seen.
    /// If an index file it merged has disappeared, the cache is rebuilt; a
    /// damaged cache is thrown away and rebuilt, never fatal.
    pub fn load_index(mut self) -> Result<Repository<Indexed>> {
        let mut db = match &self.cache_dir {
            Some(dir) => IndexDb::open(dir, self.config.id)?,
            None => IndexDb::in_memory(self.config.id)?,
        };
        if db.was_recreated() {
            self.warnings
                .push("the local index cache was damaged and is being rebuilt".into());
        }
        self.index_source().sync_or_rebuild(&mut db)?;
        let Repository {
            backend,
            key,
            key_name,
            signing,
            config,
            cache_dir,
            warnings,
            ctx,
            state: Opened,
        } = self;
        Ok(Repository {
            backend,
            key,
            key_name,
            signing,
            config,
            cache_dir,
            warnings,
            ctx,
            state: Indexed { db },
        })
    }
}

impl<S> Repository<S> {
    /// On storage that can keep files immutable (S3 Object Lock), has it
    /// keep the retained kinds written by this process for the lock in
    /// force. Only there is the lock read at all (it costs a listing of the
    /// audit log).
    fn apply_object_lock(&self) -> Result<()> {
        use crate::engine::retention_lock::rules;
        if !self.backend.can_retain() {
            return Ok(());
        }
        let signers: Vec<_> = self
            .list_keys()?
            .into_iter()
            .filter_map(|(_, k)| k.ok().and_then(|k| k.signer()))
            .collect();
        let now = chrono::Utc::now().fixed_offset();
        if let Some(lock) =
            rules::lock_in_force(self.backend.as_ref(), self.config.id, &signers, now)?
        {
            self.backend
                .retain_until(rules::retain_until(lock.duration, now))?;
        }
        Ok(())
    }
}

impl Repository<Indexed> {
    /// Syncs the cache again, after this process replaced index files
    /// (prune, repair).
    pub fn reload_index(&mut self) -> Result<()> {
        let Repository {
            backend,
            key,
            warnings,
            state,
            ..
        } = self;
        IndexSource {
            backend: backend.as_ref(),
            key,
            warnings,
        }
        .sync_or_rebuild(&mut state.db)
    }

    fn index(&self) -> &IndexDb {
        &self.state.db
    }

    pub fn locate(&self, kind: BlobKind, id: &BlobId) -> Result<Option<BlobLocation>> {
        self.index().get(kind, id)
    }

    /// Whether a backup may reference this blob without storing it: it is
    /// indexed in a pack that prune has not marked for deletion.
    pub fn has_live_blob(&self, kind: BlobKind, id: &BlobId) -> Result<bool> {
        self.index().contains(kind, id)
    }

    /// Whether this machine's cache knows every data blob of a snapshot to
    /// be indexed (see `IndexDb::mark_snapshot_complete`).
    pub fn snapshot_blobs_indexed(&self, id: &SnapshotId) -> bool {
        matches!(self.index().snapshot_complete(id), Ok(true))
    }

    /// Records that every data blob of a snapshot this process just wrote
    /// is indexed (best effort: the mark is only a shortcut).
    pub fn mark_snapshot_blobs_indexed(&self, id: &SnapshotId) {
        let _ = self.index().mark_snapshot_complete(id);
    }

    /// Reads, decrypts, decompresses and verifies one blob.
    pub fn read_blob(&self, kind: BlobKind, id: &BlobId) -> Result<Vec<u8>> {
        let location = self.locate(kind, id)?.ok_or_else(|| {
            Error::new(
                ErrorKind::NotFound,
                format!("{kind:?} blob {id} is not in the index"),
            )
        })?;
        let entry = &location.entry;
        let sealed = self
            .backend
            .get_blob_range(
                kind,
                &location.pack.to_hex(),
                u64::from(entry.offset),
                u64::from(entry.length),
            )
            .map_err(|e| e.context(format!("pack {}", location.pack)))?;
        pack::open_blob(&self.key, entry, &sealed)
            .map_err(|e| e.context(format!("pack {}", location.pack)))
    }

    pub fn load_tree(&self, id: &BlobId) -> Result<Tree> {
        Tree::decode(&self.read_blob(BlobKind::Tree, id)?)
            .map_err(|e| e.context(format!("tree {id}")))
    }
}

impl<S> Repository<S> {
    /// Runs this repository's operations under `ctx`: they stop when it is
    /// interrupted and report progress to it.
    pub fn with_context(mut self, ctx: Context) -> Repository<S> {
        self.ctx = ctx;
        self
    }

    /// The context operations on this repository report to and check.
    pub fn context(&self) -> &Context {
        &self.ctx
    }

    pub fn config(&self) -> &Config {
        &self.config
    }

    pub fn key(&self) -> &MasterKey {
        &self.key
    }

    /// The blob-id key and chunker seed (`InitOptions::id_keys`).
    pub fn id_keys(&self) -> IdKeys {
        self.key.id_keys()
    }

    pub fn backend(&self) -> &Arc<dyn Backend> {
        &self.backend
    }

    pub fn chunker(&self) -> Result<Chunker> {
        Chunker::new(self.config.chunker_params(), self.key.chunker_seed())
    }

    /// Problems met that did not stop the operation (e.g. a damaged index
    /// file that was skipped); the CLI prints them.
    pub fn take_warnings(&mut self) -> Vec<String> {
        std::mem::take(&mut self.warnings)
    }

    /// The index files in the repository now.
    pub fn list_index_ids(&self) -> Result<HashSet<IndexId>> {
        list_index_ids(self.backend.as_ref())
    }

    /// The cache directory of this repository (`<cache root>/<repo id>`),
    /// if it has one on disk.
    pub fn cache_dir(&self) -> Option<&Path> {
        self.cache_dir.as_deref()
    }

    pub fn load_index_file(&self, id: &IndexId) -> Result<IndexFile> {
        load_index_file(self.backend.as_ref(), &self.key, id)
    }

    fn index_source(&mut self) -> IndexSource<'_> {
        IndexSource {
            backend: self.backend.as_ref(),
            key: &self.key,
            warnings: &mut self.warnings,
        }
    }

    pub fn list_snapshot_ids(&self) -> Result<Vec<SnapshotId>> {
        Ok(self
            .backend
            .list(FileKind::Snapshot)?
            .into_iter()
            .filter_map(|(name, _)| SnapshotId::from_hex(&name).ok())
            .collect())
    }

    pub fn load_snapshot(&self, id: &SnapshotId) -> Result<Snapshot> {
        let what = format!("snapshot {id}");
        let plain = open_named(
            self.backend.as_ref(),
            &self.key,
            FileKind::Snapshot,
            Domain::Snapshot,
            &id.0,
            crate::format::snapshot::SNAPSHOT_SIZE_MAX,
            &what,
        )?;
        Snapshot::decode(&plain).map_err(|e| e.context(what))
    }

    /// Every readable snapshot matching `filter`, oldest first. Damaged
    /// snapshots are skipped with a warning.
    pub fn snapshots(&mut self, filter: &SnapshotFilter) -> Result<Vec<(SnapshotId, Snapshot)>> {
        let mut out = Vec::new();
        for id in self.list_snapshot_ids()? {
            match self.load_snapshot(&id) {
                Ok(s) if filter.matches(&s) => out.push((id, s)),
                Ok(_) => {}
                Err(e) if e.kind() == ErrorKind::Corrupt => {
                    self.warnings.push(format!("skipping {e}"))
                }
                Err(e) => return Err(e),
            }
        }
        out.sort_by(|a, b| a.1.time.cmp(&b.1.time).then(a.0.cmp(&b.0)));
        Ok(out)
    }

    /// Resolves `latest`, an id or a unique prefix among matching snapshots.
    pub fn find_snapshot(
        &mut self,
        selector: &str,
        filter: &SnapshotFilter,
    ) -> Result<(SnapshotId, Snapshot)> {
        let all = self.snapshots(filter)?;
        crate::format::snapshot::select(&all, selector).cloned()
    }

    /// Seals and stores one index file; returns its id. Every pack it names
    /// MUST be stored already.
    pub fn save_index_file(&self, file: &IndexFile, lock: &LockGuard) -> Result<IndexId> {
        self.store_index_file(file, lock)
            .map_err(|failed| failed.error)
    }

    /// `save_index_file`, whose failure also says whether the file became
    /// visible anyway (renamed into place, then its directory could not be
    /// synced): the packs it names are then no longer the writer's to
    /// delete.
    pub(crate) fn store_index_file(
        &self,
        file: &IndexFile,
        lock: &LockGuard,
    ) -> std::result::Result<IndexId, IndexNotStored> {
        let not_visible = |error| IndexNotStored {
            error,
            visible: false,
        };
        self.ensure_locked(lock).map_err(not_visible)?;
        let sealed = self.key.seal(Domain::Index, &file.encode());
        let id = IndexId(Id::of_file_bytes(&sealed));
        let name = id.to_hex();
        self.backend
            .put(FileKind::Index, &name, &sealed)
            .map_err(|error| IndexNotStored {
                error,
                visible: self
                    .backend
                    .size(FileKind::Index, &name)
                    .is_ok_and(|size| size == sealed.len() as u64),
            })?;
        Ok(id)
    }

    /// Deletes a snapshot file (`forget`). The trees and data it named stay
    /// in the packs; only a prune reclaims them.
    pub fn delete_snapshot(&self, id: &SnapshotId, lock: &ExclusiveLock) -> Result<()> {
        self.ensure_locked(lock)?;
        self.backend.delete(FileKind::Snapshot, &id.to_hex())
    }

    /// The id a blob with these plaintext bytes has in this repository
    /// (keyed BLAKE3).
    pub fn blob_id(&self, bytes: &[u8]) -> BlobId {
        self.key.blob_id(bytes)
    }

    /// Compresses (when that helps) and seals one blob under this
    /// repository's key, ready for a `BlobWriter`. Safe to call from many
    /// threads at once.
    pub fn seal_blob(
        &self,
        kind: BlobKind,
        id: BlobId,
        plaintext: &[u8],
        zstd_level: i32,
    ) -> SealedBlob {
        pack::seal_blob(&self.key, kind, id, plaintext, zstd_level)
    }

    /// The pack files in the repository, with their sizes.
    pub fn list_packs(&self) -> Result<Vec<(PackId, u64)>> {
        Ok(self
            .backend
            .list(FileKind::Pack)?
            .into_iter()
            .filter_map(|(name, size)| PackId::from_hex(&name).ok().map(|id| (id, size)))
            .collect())
    }

    /// A whole pack, as stored (prune and repair copy blobs out of it).
    pub fn read_pack(&self, id: &PackId) -> Result<Vec<u8>> {
        self.backend
            .get_bounded(FileKind::Pack, &id.to_hex(), pack::PACK_SIZE_MAX as usize)
    }

    /// Opens and verifies one sealed blob cut out of a pack.
    pub fn open_blob(&self, entry: &PackEntry, sealed: &[u8]) -> Result<Vec<u8>> {
        pack::open_blob(&self.key, entry, sealed)
    }

    /// The entries of a whole pack's sealed header.
    pub fn decode_pack_header(&self, pack_bytes: &[u8]) -> Result<Vec<PackEntry>> {
        pack::read_header(&self.key, pack_bytes)
    }

    /// Reads a pack's header alone: its trailer, then the sealed header
    /// (two ranged reads, not the whole pack).
    pub fn read_pack_header(&self, id: &PackId, size: u64) -> Result<Vec<PackEntry>> {
        let name = id.to_hex();
        let tail = self
            .backend
            .get_range(FileKind::Pack, &name, size.saturating_sub(4), 4)?;
        let (start, sealed_len) = pack::header_location(size, pack::trailer(&tail)?)?;
        let sealed = self
            .backend
            .get_range(FileKind::Pack, &name, start, u64::from(sealed_len))?;
        let plain = self.key.open(Domain::PackHeader, &sealed)?;
        pack::decode_header(&plain, start)
    }

    /// Seals a built pack's header and stores the pack whole; its index
    /// entry and its size. Not yet indexed: the caller MUST store an index
    /// file naming it before anything references its blobs.
    pub fn store_pack(&self, builder: PackBuilder, lock: &LockGuard) -> Result<(IndexPack, u64)> {
        self.ensure_locked(lock)?;
        let (id, bytes, entries) = builder.finish(&self.key);
        self.backend.put(FileKind::Pack, &id.to_hex(), &bytes)?;
        Ok((IndexPack { id, entries }, bytes.len() as u64))
    }

    /// Deletes a pack; one already gone is not an error. No index file
    /// may name it any more (prune and repair delete index files first).
    pub fn delete_pack(&self, id: &PackId, lock: &impl DeleteLock) -> Result<()> {
        self.ensure_locked(lock)?;
        match self.backend.delete(FileKind::Pack, &id.to_hex()) {
            Err(e) if e.kind() != ErrorKind::NotFound => Err(e),
            _ => Ok(()),
        }
    }

    /// Deletes an index file that a stored one supersedes.
    pub fn delete_index_file(&self, id: &IndexId, lock: &impl DeleteLock) -> Result<()> {
        self.ensure_locked(lock)?;
        self.backend.delete(FileKind::Index, &id.to_hex())
    }

    /// Deletes crashed writers' temporary files (with `dry_run`, counts
    /// them): safe only under an exclusive lock, when no writer runs.
    pub fn sweep_temp_files(&self, dry_run: bool, lock: &impl DeleteLock) -> Result<(u64, u64)> {
        self.ensure_locked(lock)?;
        self.backend.sweep_temp_files(dry_run)
    }

    /// Takes a shared lock (what a backup needs), waiting up to `retry_for`
    /// while an exclusive one is held.
    pub fn lock_shared(&self, retry_for: std::time::Duration) -> Result<LockGuard> {
        lock::acquire_shared_with_retry(self.backend.clone(), &self.key, retry_for, &self.ctx)
    }

    /// Takes a prune lock (what `prune` needs: backups go on), waiting up
    /// to `retry_for` while an exclusive or another prune lock is held.
    pub fn lock_prune(&self, retry_for: std::time::Duration) -> Result<lock::PruneLock> {
        lock::acquire_prune_with_retry(self.backend.clone(), &self.key, retry_for, &self.ctx)
    }

    /// The live locks other than `own` (`lock::live_locks`).
    pub fn live_locks(&self, own: &LockGuard) -> Result<lock::LiveLocks> {
        lock::live_locks(self.backend.as_ref(), &self.key, own)
    }

    /// Takes an exclusive lock (what forget, prune, repair, tag and key
    /// removal need), waiting up to `retry_for` while others hold locks.
    pub fn lock_exclusive(&self, retry_for: std::time::Duration) -> Result<ExclusiveLock> {
        lock::acquire_exclusive_with_retry(self.backend.clone(), &self.key, retry_for, &self.ctx)
    }

    /// Removes stale locks (or all, with `all`): how many, and the lock
    /// files left because they cannot be read.
    pub fn remove_locks(&self, all: bool) -> Result<lock::RemovedLocks> {
        lock::remove_locks(self.backend.as_ref(), &self.key, all)
    }

    /// Fails unless `lock` is held, and held on this repository's backend.
    pub fn ensure_locked(&self, lock: &LockGuard) -> Result<()> {
        if !lock.is_on(&self.backend) {
            return Err(Error::invalid(
                "the lock given is not held on this repository",
            ));
        }
        lock.ensure_held()
    }

    /// Decrypted bytes of a repository file, for `cat`.
    pub fn open_file(&self, kind: FileKind, name: &str) -> Result<Vec<u8>> {
        // The largest non-pack file the format allows is an index file.
        let sealed = self.backend.get_bounded(
            kind,
            name,
            SEALED_SLACK + crate::format::index_file::INDEX_FILE_SIZE_MAX,
        )?;
        match drills::domain(kind)? {
            Some(domain) => self.key.open(domain, &sealed),
            None => Ok(sealed),
        }
    }
}

/// What a cache sync reads: the index files, through the backend and key.
/// Kept apart from `Repository` so a sync can write the repository's own
/// database while it reads (`reload_index`).
struct IndexSource<'a> {
    backend: &'a dyn Backend,
    key: &'a MasterKey,
    warnings: &'a mut Vec<String>,
}

impl IndexSource<'_> {
    /// Syncs `db` with the index files; a cache that reads as damaged is
    /// cleared and synced again.
    fn sync_or_rebuild(&mut self, db: &mut IndexDb) -> Result<()> {
        // A prune running beside us (docs/FORMAT.md, section 15) deletes
        // index files it has superseded: one listed here may be gone when we
        // read it. The file superseding it was stored before, so listing
        // again finds a consistent set.
        let mut result = self.sync_index(db);
        for _ in 0..INDEX_SYNC_RETRIES {
            match &result {
                Err(e) if e.kind() == ErrorKind::NotFound => result = self.sync_index(db),
                _ => break,
            }
        }
        if let Err(e) = result {
            if e.kind() != ErrorKind::Corrupt {
                return Err(e);
            }
            self.warnings
                .push(format!("{e}; rebuilding the local index cache"));
            db.rebuild_empty()?;
            self.sync_index(db)?;
        }
        Ok(())
    }

    /// Brings the cache up to date with the index files listed now.
    /// Index files another one supersedes are skipped (docs/FORMAT.md: the
    /// superseding list is written last, so it is only ever complete).
    fn sync_index(&mut self, db: &mut IndexDb) -> Result<()> {
        let listed = self.list_index_ids()?;
        let merged = db.merged_index_files()?;
        if !merged.is_subset(&listed) {
            // An index file we merged is gone (replaced by repair or prune):
            // its entries may name deleted packs, so start over.
            return self.rebuild_index(db, &listed);
        }
        // Each new file is read once and merged; the files it supersedes
        // are recorded in the cache as it is merged.
        let known_superseded = db.superseded_index_files()?;
        let mut todo: Vec<IndexId> = listed
            .difference(&merged)
            .filter(|id| !known_superseded.contains(id))
            .copied()
            .collect();
        todo.sort();
        for id in todo {
            if let Some(file) = self.load_index_file_or_warn(&id)? {
                db.merge(id, &file)?;
            }
        }
        // A superseded file still present (an interrupted prune or repair)
        // must not count: rare, so simply rebuild without it.
        let superseded = db.superseded_index_files()?;
        if db
            .merged_index_files()?
            .iter()
            .any(|id| superseded.contains(id))
        {
            return self.rebuild_index(db, &listed);
        }
        Ok(())
    }

    /// Clears the cache and merges every listed index file that no other
    /// listed file supersedes (two reads of each file; only after a prune
    /// or repair replaced index files).
    fn rebuild_index(&mut self, db: &mut IndexDb, listed: &HashSet<IndexId>) -> Result<()> {
        db.clear()?;
        let mut ids: Vec<IndexId> = listed.iter().copied().collect();
        ids.sort();
        let mut superseded = HashSet::new();
        for id in &ids {
            if let Ok(file) = self.load_index_file(id) {
                superseded.extend(file.supersedes);
            }
        }
        for id in ids {
            if superseded.contains(&id) {
                continue;
            }
            if let Some(file) = self.load_index_file_or_warn(&id)? {
                db.merge(id, &file)?;
            }
        }
        Ok(())
    }

    /// An index file, or `None` with a warning when it is damaged (it is
    /// skipped and retried next time: it is not marked as merged).
    fn load_index_file_or_warn(&mut self, id: &IndexId) -> Result<Option<IndexFile>> {
        match self.load_index_file(id) {
            Ok(file) => Ok(Some(file)),
            Err(e) if e.kind() == ErrorKind::Corrupt => {
                self.warnings
                    .push(format!("skipping damaged index file {id}: {e}"));
                Ok(None)
            }
            Err(e) => Err(e),
        }
    }

    fn list_index_ids(&self) -> Result<HashSet<IndexId>> {
        list_index_ids(self.backend)
    }

    fn load_index_file(&self, id: &IndexId) -> Result<IndexFile> {
        load_index_file(self.backend, self.key, id)
    }
}

fn list_index_ids(backend: &dyn Backend) -> Result<HashSet<IndexId>> {
    Ok(backend
        .list(FileKind::Index)?
        .into_iter()
        .filter_map(|(name, _)| IndexId::from_hex(&name).ok())
        .collect())
}

fn load_index_file(backend: &dyn Backend, key: &MasterKey, id: &IndexId) -> Result<IndexFile> {
    let what = format!("index file {id}");
    let plain = open_named(
        backend,
        key,
        FileKind::Index,
        Domain::Index,
        &id.0,
        crate::format::index_file::INDEX_FILE_SIZE_MAX,
        &what,
    )?;
    IndexFile::decode(&plain).map_err(|e| e.context(what))
}

/// Reads a sealed file named by the hash of its bytes (at most
/// `plain_size_max` of plaintext plus the envelope), checks it against its
/// name, so damage reads as damage rather than as a failed decryption, and
/// opens it.
fn open_named(
    backend: &dyn Backend,
    key: &MasterKey,
    kind: FileKind,
    domain: Domain,
    id: &Id,
    plain_size_max: usize,
    what: &str,
) -> Result<Vec<u8>> {
    let sealed = backend.get_bounded(kind, &id.to_hex(), SEALED_SLACK + plain_size_max)?;
    if Id::of_file_bytes(&sealed) != *id {
        return Err(Error::corrupt(format!("{what} does not match its name")));
    }
    key.open(domain, &sealed).map_err(|e| e.context(what))
}

/// Why `Repository::store_index_file` failed, and whether the index file
/// can nonetheless be seen under its name.
pub(crate) struct IndexNotStored {
    pub(crate) error: Error,
    pub(crate) visible: bool,
}

mod drills;
mod keys;
mod manifests;
mod open;
mod reader;
mod uploads;
mod writer;
pub use open::{default_cache_root, OpenOptions};
pub use reader::BlobReader;
pub use writer::{BlobWriter, WriteStats, Written};

/// What happens without a cache directory, for the warnings.
const NO_CACHE: &str =
    "the index is kept in memory for this command (slower: it is read again every time)";

#[cfg(test)]
mod remote_tests;
#[cfg(test)]
mod tests;
