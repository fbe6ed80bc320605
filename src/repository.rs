//! The repository: backend + master key + config + index cache. The only
//! module that orders writes (MUST: packs, then index files, then the
//! snapshot) and the only one that seals or opens repository files.

use crate::backend::{Backend, FileKind, PendingFile};
use crate::chunker::{Chunker, ChunkerParams};
use crate::config::{Config, PACK_SIZE_TARGET_DEFAULT};
use crate::crypto::{Domain, KdfParams, MasterKey};
use crate::error::{Error, ErrorKind, Result};
use crate::id::{BlobId, Id, IndexId, KeyId, PackId, RepositoryId, SnapshotId};
use crate::index::file::INDEX_FILE_BLOBS_TARGET;
use crate::index::{BlobLocation, IndexDb, IndexFile, IndexPack};
use crate::key::KeyFile;
use crate::pack::{self, BlobKind, PackBuilder, SealedBlob};
use crate::snapshot::{Snapshot, SnapshotFilter};
use crate::tree::Tree;
use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// Envelope bytes a sealed file carries beyond its plaintext limit.
/// An open pack is written to the backend in pieces of this size, so a
/// writer holds a few MiB of it, not the whole 32 MiB (issue 6: a backup's
/// peak memory no higher than restic's).
const PACK_WRITE_PIECE: usize = 4 * 1024 * 1024;

const SEALED_SLACK: usize = crate::crypto::SEAL_OVERHEAD;

/// zstd level of new repositories: on this project's dumps level 1 stores
/// as little as level 3 with 64 KiB chunks for a fifth less CPU (docs/FORMAT.md
/// 5.3).
pub const ZSTD_LEVEL_DEFAULT: i32 = 1;

/// Choices made once, at `init`.
#[derive(Debug, Clone)]
pub struct InitOptions {
    pub chunker: ChunkerParams,
    pub zstd_level: i32,
    pub pack_size_target: u32,
    pub kdf: KdfParams,
}

impl Default for InitOptions {
    fn default() -> Self {
        InitOptions {
            chunker: ChunkerParams::DEFAULT,
            zstd_level: ZSTD_LEVEL_DEFAULT,
            pack_size_target: PACK_SIZE_TARGET_DEFAULT,
            kdf: KdfParams::DEFAULT,
        }
    }
}

pub struct Repository {
    backend: Arc<dyn Backend>,
    key: MasterKey,
    /// The key file the password opened.
    key_name: String,
    config: Config,
    cache_dir: PathBuf,
    index: Option<IndexDb>,
    warnings: Vec<String>,
}

/// `$XDG_CACHE_HOME/cairn`, else `~/.cache/cairn`.
pub fn default_cache_root() -> PathBuf {
    if let Some(dir) = std::env::var_os("XDG_CACHE_HOME").filter(|d| !d.is_empty()) {
        return PathBuf::from(dir).join("cairn");
    }
    let home = std::env::var_os("HOME").unwrap_or_else(|| "/tmp".into());
    PathBuf::from(home).join(".cache").join("cairn")
}

impl Repository {
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
        );
        config
            .validate()
            .map_err(|e| Error::invalid(e.to_string()))?;
        if backend.exists()? {
            return Err(Error::new(
                ErrorKind::RepositoryExists,
                format!("a repository already exists at {}", backend.location()),
            ));
        }
        backend.create()?;
        let key = MasterKey::generate();
        let key_file = KeyFile::create(
            &key,
            password,
            options.kdf,
            &crate::metadata::hostname(),
            &crate::metadata::username(),
        )?
        .encode();
        backend.put(
            FileKind::Key,
            &KeyId(Id::of_file_bytes(&key_file)).to_hex(),
            &key_file,
        )?;
        backend.put(
            FileKind::Config,
            "config",
            &key.seal(Domain::Config, &config.encode()),
        )?;
        Ok(config.id)
    }

    /// Opens a repository with a password. The index cache is not synced
    /// until `load_index`.
    pub fn open(
        backend: Arc<dyn Backend>,
        password: &[u8],
        cache_root: Option<&Path>,
    ) -> Result<Repository> {
        if !backend.exists()? {
            return Err(Error::new(
                ErrorKind::RepositoryNotFound,
                format!(
                    "repository {} does not exist (run `cairn init`)",
                    backend.location()
                ),
            ));
        }
        let (key_name, key) = open_key(backend.as_ref(), password)?;
        let sealed = backend.get_bounded(
            FileKind::Config,
            "config",
            SEALED_SLACK + crate::config::CONFIG_SIZE_MAX,
        )?;
        let config = Config::decode(
            &key.open(Domain::Config, &sealed)
                .map_err(|e| e.context("config"))?,
        )?;
        let cache_dir = cache_root
            .map(Path::to_path_buf)
            .unwrap_or_else(default_cache_root)
            .join(config.id.to_hex());
        Ok(Repository {
            backend,
            key,
            key_name,
            config,
            cache_dir,
            index: None,
            warnings: Vec::new(),
        })
    }

    /// Adds a key file so that `password` also opens this repository.
    pub fn add_key(&self, password: &[u8], kdf: KdfParams) -> Result<KeyId> {
        let key_file = KeyFile::create(
            &self.key,
            password,
            kdf,
            &crate::metadata::hostname(),
            &crate::metadata::username(),
        )?
        .encode();
        let id = KeyId(Id::of_file_bytes(&key_file));
        self.backend.put(FileKind::Key, &id.to_hex(), &key_file)?;
        Ok(id)
    }

    /// The key file this session's password opened.
    pub fn current_key(&self) -> &str {
        &self.key_name
    }

    /// Removes a key file (a password). Refuses the key this session was
    /// opened with and the last intact key: either would lock users out.
    /// The master key and the data are unchanged; nothing is re-encrypted.
    pub fn remove_key(&self, prefix: &str) -> Result<String> {
        let keys = self.list_keys()?;
        let matching: Vec<&String> = keys
            .iter()
            .map(|(name, _)| name)
            .filter(|name| name.starts_with(prefix))
            .collect();
        let name = match matching.as_slice() {
            [one] if prefix.len() >= 4 => (*one).clone(),
            [] => {
                return Err(Error::new(
                    ErrorKind::NotFound,
                    format!("no key file {prefix:?}"),
                ))
            }
            [_] => return Err(Error::invalid("give at least 4 hex digits of the key id")),
            _ => return Err(Error::invalid(format!("key id {prefix:?} is ambiguous"))),
        };
        if name == self.key_name {
            return Err(Error::invalid(
                "refusing to remove the key this password opened (use `key passwd` to change it)",
            ));
        }
        let intact_others = keys
            .iter()
            .filter(|(other, k)| *other != name && k.is_ok())
            .count();
        if intact_others == 0 {
            return Err(Error::invalid("refusing to remove the last intact key"));
        }
        self.backend.delete(FileKind::Key, &name)?;
        Ok(name)
    }

    /// Changes this session's password: adds a key file for `new_password`,
    /// then removes the one the old password opened.
    pub fn change_password(&mut self, new_password: &[u8], kdf: KdfParams) -> Result<KeyId> {
        let id = self.add_key(new_password, kdf)?;
        let old = std::mem::replace(&mut self.key_name, id.to_hex());
        self.backend.delete(FileKind::Key, &old)?;
        Ok(id)
    }

    /// The key files, readable ones decoded (damaged ones as errors).
    pub fn list_keys(&self) -> Result<Vec<(String, Result<KeyFile>)>> {
        let mut out = Vec::new();
        for (name, _) in self.backend.list(FileKind::Key)? {
            let decoded = self
                .backend
                .get_bounded(FileKind::Key, &name, crate::key::KEY_FILE_SIZE_MAX)
                .and_then(|bytes| decode_key_file(&name, &bytes));
            out.push((name, decoded));
        }
        Ok(out)
    }

    pub fn config(&self) -> &Config {
        &self.config
    }

    pub fn key(&self) -> &MasterKey {
        &self.key
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

    /// Opens the local index cache and merges index files it has not seen.
    /// If an index file it merged has disappeared, the cache is rebuilt; a
    /// damaged cache is thrown away and rebuilt, never fatal.
    pub fn load_index(&mut self) -> Result<()> {
        let mut db = IndexDb::open(&self.cache_dir, self.config.id)?;
        if db.was_recreated() {
            self.warnings
                .push("the local index cache was damaged and is being rebuilt".into());
        }
        if let Err(e) = self.sync_index(&mut db) {
            if e.kind() != ErrorKind::Corrupt {
                return Err(e);
            }
            self.warnings
                .push(format!("{e}; rebuilding the local index cache"));
            db.rebuild_empty()?;
            self.sync_index(&mut db)?;
        }
        self.index = Some(db);
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

    /// The index files in the repository now.
    pub fn list_index_ids(&self) -> Result<HashSet<IndexId>> {
        Ok(self
            .backend
            .list(FileKind::Index)?
            .into_iter()
            .filter_map(|(name, _)| IndexId::from_hex(&name).ok())
            .collect())
    }

    /// The cache directory of this repository (`<cache root>/<repo id>`).
    pub fn cache_dir(&self) -> &Path {
        &self.cache_dir
    }

    pub fn load_index_file(&self, id: &IndexId) -> Result<IndexFile> {
        let sealed = self.backend.get_bounded(
            FileKind::Index,
            &id.to_hex(),
            SEALED_SLACK + crate::index::file::INDEX_FILE_SIZE_MAX,
        )?;
        if Id::of_file_bytes(&sealed) != id.0 {
            return Err(Error::corrupt(format!(
                "index file {id} does not match its name"
            )));
        }
        let plain = self
            .key
            .open(Domain::Index, &sealed)
            .map_err(|e| e.context(format!("index file {id}")))?;
        IndexFile::decode(&plain).map_err(|e| e.context(format!("index file {id}")))
    }

    fn index(&self) -> &IndexDb {
        self.index
            .as_ref()
            .expect("load_index must be called before blob access")
    }

    pub fn locate(&self, kind: BlobKind, id: &BlobId) -> Result<Option<BlobLocation>> {
        self.index().get(kind, id)
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
            .get_range(
                FileKind::Pack,
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

    pub fn list_snapshot_ids(&self) -> Result<Vec<SnapshotId>> {
        Ok(self
            .backend
            .list(FileKind::Snapshot)?
            .into_iter()
            .filter_map(|(name, _)| SnapshotId::from_hex(&name).ok())
            .collect())
    }

    pub fn load_snapshot(&self, id: &SnapshotId) -> Result<Snapshot> {
        let sealed = self.backend.get_bounded(
            FileKind::Snapshot,
            &id.to_hex(),
            SEALED_SLACK + crate::snapshot::SNAPSHOT_SIZE_MAX,
        )?;
        if Id::of_file_bytes(&sealed) != id.0 {
            return Err(Error::corrupt(format!(
                "snapshot {id} does not match its name"
            )));
        }
        let plain = self
            .key
            .open(Domain::Snapshot, &sealed)
            .map_err(|e| e.context(format!("snapshot {id}")))?;
        Snapshot::decode(&plain).map_err(|e| e.context(format!("snapshot {id}")))
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
        crate::snapshot::select(&all, selector).cloned()
    }

    /// Writes a snapshot. Callers MUST have finished their `BlobWriter`
    /// (packs and index written) first; the type system enforces that by
    /// consuming the writer in `BlobWriter::finish`.
    pub fn save_snapshot(&self, snapshot: &Snapshot) -> Result<SnapshotId> {
        crate::lock::ensure_held()?;
        let sealed = self.key.seal(Domain::Snapshot, &snapshot.encode());
        let id = SnapshotId(Id::of_file_bytes(&sealed));
        self.backend
            .put(FileKind::Snapshot, &id.to_hex(), &sealed)?;
        Ok(id)
    }

    /// Seals and stores one index file; returns its id.
    pub fn save_index_file(&self, file: &IndexFile) -> Result<IndexId> {
        let sealed = self.key.seal(Domain::Index, &file.encode());
        let id = IndexId(Id::of_file_bytes(&sealed));
        self.backend.put(FileKind::Index, &id.to_hex(), &sealed)?;
        Ok(id)
    }

    /// Deletes a snapshot file (`forget`). The trees and data it named stay
    /// in the packs; only a prune reclaims them.
    pub fn delete_snapshot(&self, id: &SnapshotId) -> Result<()> {
        self.backend.delete(FileKind::Snapshot, &id.to_hex())
    }

    /// Decrypted bytes of a repository file, for `cat`.
    pub fn open_file(&self, kind: FileKind, name: &str) -> Result<Vec<u8>> {
        // The largest non-pack file the format allows is an index file.
        let sealed = self.backend.get_bounded(
            kind,
            name,
            SEALED_SLACK + crate::index::file::INDEX_FILE_SIZE_MAX,
        )?;
        let domain = match kind {
            FileKind::Config => Domain::Config,
            FileKind::Snapshot => Domain::Snapshot,
            FileKind::Index => Domain::Index,
            FileKind::Lock => Domain::Lock,
            FileKind::Key => return Ok(sealed),
            FileKind::Pack => return Err(Error::invalid("packs are read blob by blob")),
        };
        self.key.open(domain, &sealed)
    }

    pub fn blob_writer(&self) -> BlobWriter<'_> {
        BlobWriter {
            repo: self,
            data: PackBuilder::new(),
            tree: PackBuilder::new(),
            data_file: None,
            tree_file: None,
            pending: HashSet::new(),
            unindexed: Vec::new(),
            unindexed_blobs: 0,
            stats: WriteStats::default(),
        }
    }
}

/// Decodes a key file after checking it against its name (the BLAKE3 of
/// its bytes), so a flipped bit reads as damage, not as a wrong password.
fn decode_key_file(name: &str, bytes: &[u8]) -> Result<KeyFile> {
    if Id::of_file_bytes(bytes).to_hex() != name {
        return Err(Error::corrupt(format!(
            "key file {} does not match its name",
            &name[..8.min(name.len())]
        )));
    }
    KeyFile::decode(bytes)
}

fn open_key(backend: &dyn Backend, password: &[u8]) -> Result<(String, MasterKey)> {
    let keys = backend.list(FileKind::Key)?;
    if keys.is_empty() {
        return Err(Error::corrupt("repository has no key files"));
    }
    let total = keys.len();
    let mut damaged = 0;
    let mut first_damage = String::new();
    for (name, _) in keys {
        let decoded = backend
            .get_bounded(FileKind::Key, &name, crate::key::KEY_FILE_SIZE_MAX)
            .and_then(|bytes| decode_key_file(&name, &bytes));
        let key_file = match decoded {
            Ok(k) => k,
            Err(e) if e.kind() == ErrorKind::Corrupt => {
                if damaged == 0 {
                    first_damage = e.to_string();
                }
                damaged += 1;
                continue;
            }
            Err(e) => return Err(e),
        };
        match key_file.open(password) {
            Ok(key) => return Ok((name, key)),
            Err(e) if e.kind() == ErrorKind::WrongPassword => continue,
            Err(e) => return Err(e.context(format!("key file {name}"))),
        }
    }
    if damaged == total {
        return Err(Error::corrupt(format!(
            "every key file is damaged ({first_damage}); restore keys/ from a copy"
        )));
    }
    let note = if damaged > 0 {
        format!(" ({damaged} key file(s) damaged)")
    } else {
        String::new()
    };
    Err(Error::new(
        ErrorKind::WrongPassword,
        format!("wrong password or no key found{note}"),
    ))
}

/// What a `BlobWriter` added to the repository.
#[derive(Debug, Clone, Default)]
pub struct WriteStats {
    pub data_blobs: u64,
    pub tree_blobs: u64,
    pub bytes_raw: u64,
    pub bytes_packed: u64,
    pub packs: u64,
    pub index_files: u64,
}

/// Collects new blobs into packs and writes packs, then index files. Blobs
/// become visible to the index cache only after their index file is stored,
/// so the cache never names a blob the repository's index files do not.
pub struct BlobWriter<'r> {
    repo: &'r Repository,
    data: PackBuilder,
    tree: PackBuilder,
    /// Where the open packs are being streamed, once they outgrew one piece.
    /// Dropped uncommitted (an error), they leave nothing in the repository.
    data_file: Option<Box<dyn PendingFile + 'r>>,
    tree_file: Option<Box<dyn PendingFile + 'r>>,
    /// Blobs in the open packs or in stored packs not yet indexed. Bounded by
    /// INDEX_FILE_BLOBS_TARGET plus two packs.
    pending: HashSet<(BlobKind, BlobId)>,
    unindexed: Vec<IndexPack>,
    unindexed_blobs: usize,
    pub stats: WriteStats,
}

impl<'r> BlobWriter<'r> {
    pub fn repository(&self) -> &'r Repository {
        self.repo
    }

    /// Marks a blob as about to be added. Returns false if the repository
    /// (or this writer) already has it, so it need not be sealed at all.
    pub fn reserve(&mut self, kind: BlobKind, id: BlobId) -> Result<bool> {
        if self.pending.contains(&(kind, id)) || self.repo.index().contains(kind, &id)? {
            return Ok(false);
        }
        self.pending.insert((kind, id));
        Ok(true)
    }

    /// Adds a reserved, sealed blob; stores the pack when it is full.
    pub fn add(&mut self, blob: SealedBlob) -> Result<()> {
        debug_assert!(self.pending.contains(&(blob.kind, blob.id)));
        let kind = blob.kind;
        match kind {
            BlobKind::Data => self.stats.data_blobs += 1,
            BlobKind::Tree => self.stats.tree_blobs += 1,
        }
        self.stats.bytes_raw += u64::from(blob.raw_length);
        self.stats.bytes_packed += blob.bytes.len() as u64;
        let (builder, file) = match kind {
            BlobKind::Data => (&mut self.data, &mut self.data_file),
            BlobKind::Tree => (&mut self.tree, &mut self.tree_file),
        };
        builder.add(blob);
        if builder.len() >= self.repo.config.pack_size_target as usize || builder.is_full() {
            self.flush_pack(kind)?;
        } else if builder.buffered_len() >= PACK_WRITE_PIECE {
            if file.is_none() {
                *file = Some(self.repo.backend.create_pending(FileKind::Pack)?);
            }
            let file = file.as_mut().expect("just created");
            builder.flush_to(|bytes| file.write(bytes))?;
            crate::failpoint("after-pack-piece");
        }
        Ok(())
    }

    /// Encodes, seals and adds a tree unless the repository has it.
    pub fn save_tree(&mut self, tree: &Tree) -> Result<BlobId> {
        let bytes = tree.encode();
        if bytes.len() > crate::tree::TREE_SIZE_MAX {
            return Err(Error::invalid(
                "a directory is too large to encode as one tree",
            ));
        }
        let id = self.repo.key.blob_id(&bytes);
        if self.reserve(BlobKind::Tree, id)? {
            let sealed = pack::seal_blob(
                &self.repo.key,
                BlobKind::Tree,
                id,
                &bytes,
                self.repo.config.compression.level,
            );
            self.add(sealed)?;
        }
        Ok(id)
    }

    fn flush_pack(&mut self, kind: BlobKind) -> Result<()> {
        let (builder, file) = match kind {
            BlobKind::Data => (std::mem::take(&mut self.data), self.data_file.take()),
            BlobKind::Tree => (std::mem::take(&mut self.tree), self.tree_file.take()),
        };
        if builder.is_empty() {
            return Ok(());
        }
        let flushed_len = builder.len() - builder.buffered_len();
        let (id, tail, entries) = builder.finish(&self.repo.key);
        match file {
            Some(mut file) => {
                file.write(&tail)?;
                file.commit(&id.to_hex())?;
            }
            // A pack smaller than one piece is written in one go.
            None => self.repo.backend.put(FileKind::Pack, &id.to_hex(), &tail)?,
        }
        crate::failpoint("after-pack");
        self.stats.packs += 1;
        // The header and trailer; the blobs were counted by `add`.
        self.stats.bytes_packed += (flushed_len + tail.len()
            - entries.iter().map(|e| e.length as usize).sum::<usize>())
            as u64;
        self.unindexed_blobs += entries.len();
        self.unindexed.push(IndexPack { id, entries });
        if self.unindexed_blobs >= INDEX_FILE_BLOBS_TARGET {
            self.write_index()?;
        }
        Ok(())
    }

    fn write_index(&mut self) -> Result<()> {
        if self.unindexed.is_empty() {
            return Ok(());
        }
        // Cloned, not taken: until the index file is stored, these packs
        // are ours to delete if the backup fails (see Drop).
        crate::lock::ensure_held()?;
        let file = IndexFile {
            supersedes: Vec::new(),
            packs: self.unindexed.clone(),
        };
        let id = self.repo.save_index_file(&file)?;
        self.unindexed.clear();
        crate::failpoint("after-index");
        self.repo.index().merge(id, &file)?;
        for pack in &file.packs {
            for e in &pack.entries {
                self.pending.remove(&(e.kind, e.id));
            }
        }
        self.unindexed_blobs = 0;
        self.stats.index_files += 1;
        Ok(())
    }

    /// Stores the open packs and the remaining index entries. Only after
    /// this returns may a snapshot referencing these blobs be written.
    pub fn finish(mut self) -> Result<WriteStats> {
        self.flush_pack(BlobKind::Data)?;
        self.flush_pack(BlobKind::Tree)?;
        self.write_index()?;
        debug_assert!(self.pending.is_empty());
        Ok(std::mem::take(&mut self.stats))
    }
}

impl Drop for BlobWriter<'_> {
    /// A writer dropped before `finish` (an error, an interrupt) deletes the
    /// packs it stored but never indexed. No other process can reference
    /// them (blobs become visible only through index files), and on a full
    /// disk the space is what the next backup needs.
    fn drop(&mut self) {
        for pack in &self.unindexed {
            let _ = self.repo.backend.delete(FileKind::Pack, &pack.id.to_hex());
        }
    }
}

/// Pack ids in the repository (for tests and later `check`).
pub fn list_packs(backend: &dyn Backend) -> Result<Vec<(PackId, u64)>> {
    Ok(backend
        .list(FileKind::Pack)?
        .into_iter()
        .filter_map(|(name, size)| PackId::from_hex(&name).ok().map(|id| (id, size)))
        .collect())
}
