//! `BlobWriter`: new blobs into packs, packs then index files, in the
//! order docs/FORMAT.md requires; and the `Written` token its `finish`
//! returns, without which no snapshot can be saved.

use super::uploads::{Uploaded, Uploads};
use super::*;
use std::time::{Duration, Instant};

/// Packs waiting for an index file are indexed once they hold this many
/// bytes, or once the oldest of them has waited `INDEX_AFTER`, whichever
/// comes first (as well as at `INDEX_FILE_BLOBS_TARGET` blobs). A backup
/// that is killed then leaves at most this much stored but unindexed: what
/// its index files name, the next backup deduplicates against instead of
/// storing it again. Both are far above what one index file costs (a few
/// KiB to a few MB, one write), so a large first backup writes one index
/// file per 256 MiB of packs or per five minutes: a 1 TB backup about
/// 4,000, which the next prune merges.
pub const INDEX_AFTER_PACK_BYTES: u64 = 256 * 1024 * 1024;
pub const INDEX_AFTER: Duration = Duration::from_secs(5 * 60);

/// `INDEX_AFTER_PACK_BYTES`, except in a build with the test hooks, where
/// `CAIRN_TEST_INDEX_AFTER_BYTES` lowers it so a test need not store
/// 256 MiB to see a backup index its packs on the way.
fn index_after_pack_bytes() -> u64 {
    #[cfg(feature = "failpoints")]
    if let Some(bytes) = std::env::var("CAIRN_TEST_INDEX_AFTER_BYTES")
        .ok()
        .and_then(|v| v.parse::<u64>().ok())
    {
        return bytes;
    }
    INDEX_AFTER_PACK_BYTES
}

/// The token a finished `BlobWriter` returns: everything it wrote is packed
/// and indexed. It cannot be built outside this module, so holding one
/// proves the write order up to the snapshot.
pub struct Written<'r> {
    pub stats: WriteStats,
    pub(super) lock: &'r LockGuard,
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
    pub(super) repo: &'r Repository,
    pub(super) lock: &'r LockGuard,
    pub(super) data: PackBuilder,
    pub(super) tree: PackBuilder,
    /// Where the open packs are being streamed, once they outgrew one piece.
    /// Dropped uncommitted (an error), they leave nothing in the repository.
    pub(super) data_file: Option<Box<dyn PendingFile + 'r>>,
    pub(super) tree_file: Option<Box<dyn PendingFile + 'r>>,
    /// Blobs in the open packs or in stored packs not yet indexed. Bounded by
    /// INDEX_FILE_BLOBS_TARGET plus two packs.
    pub(super) pending: HashSet<(BlobKind, BlobId)>,
    pub(super) unindexed: Vec<IndexPack>,
    pub(super) unindexed_blobs: usize,
    /// Bytes of the stored packs in `unindexed`, and when the first of them
    /// was stored.
    pub(super) unindexed_bytes: u64,
    pub(super) unindexed_since: Option<Instant>,
    pub stats: WriteStats,
    /// A remote backend's concurrent pack uploads (`uploads.rs`); `None`
    /// for a local one, where a pack is streamed to a temp file as it
    /// fills and stored in the calling thread.
    uploads: Option<Uploads>,
}

impl Repository<Indexed> {
    /// A writer for new blobs, under `lock` (shared or exclusive).
    pub fn blob_writer<'r>(&'r self, lock: &'r LockGuard) -> BlobWriter<'r> {
        BlobWriter {
            repo: self,
            lock,
            data: PackBuilder::new(),
            tree: PackBuilder::new(),
            data_file: None,
            tree_file: None,
            pending: HashSet::new(),
            unindexed: Vec::new(),
            unindexed_blobs: 0,
            unindexed_bytes: 0,
            unindexed_since: None,
            stats: WriteStats::default(),
            uploads: self
                .backend
                .connections()
                .map(|n| Uploads::new(self.backend.clone(), n)),
        }
    }
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
        } else if builder.buffered_len() >= PACK_WRITE_PIECE && self.uploads.is_none() {
            // Uploads take whole packs: nothing is streamed to a remote one.
            if file.is_none() {
                *file = Some(self.repo.backend.create_pending(FileKind::Pack)?);
            }
            let file = file.as_mut().expect("just created");
            builder.flush_to(|bytes| file.write(bytes))?;
            crate::failpoint::hit!("after-pack-piece");
        }
        Ok(())
    }

    /// Encodes, seals and adds a tree unless the repository has it.
    pub fn save_tree(&mut self, tree: &Tree) -> Result<BlobId> {
        let bytes = tree.encode();
        if bytes.len() > crate::format::tree::TREE_SIZE_MAX {
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
        // A lost lock stops the backup here already, before the pack; the
        // check before the index file is the one that keeps it safe.
        self.repo.ensure_locked(self.lock)?;
        let flushed_len = builder.len() - builder.buffered_len();
        let (id, tail, entries) = builder.finish(&self.repo.key);
        self.stats.packs += 1;
        // The header and trailer; the blobs were counted by `add`.
        self.stats.bytes_packed += (flushed_len + tail.len()
            - entries.iter().map(|e| e.length as usize).sum::<usize>())
            as u64;
        let len = (flushed_len + tail.len()) as u64;
        let pack = IndexPack { id, entries };
        if let Some(uploads) = &mut self.uploads {
            // Indexed once uploaded, here or at a later flush or `finish`.
            let finished = uploads.submit(pack, tail)?;
            return self.uploaded(finished);
        }
        match file {
            Some(mut file) => {
                file.write(&tail)?;
                file.commit(&id.to_hex())?;
            }
            // A pack smaller than one piece is written in one go.
            None => self.repo.backend.put(FileKind::Pack, &id.to_hex(), &tail)?,
        }
        self.stored(pack, len)
    }

    /// Records finished uploads as stored packs; the first failed one is
    /// the writer's error (the rest of the finished ones are recorded
    /// first, so that `Drop` deletes them).
    fn uploaded(&mut self, finished: Vec<Uploaded>) -> Result<()> {
        let mut failed = None;
        for upload in finished {
            match upload.result {
                Ok(()) if failed.is_none() => self.stored(upload.pack, upload.len)?,
                Ok(()) => self.unindexed.push(upload.pack),
                Err(e) => {
                    failed.get_or_insert(e);
                }
            }
        }
        failed.map_or(Ok(()), Err)
    }

    /// A pack is stored: it waits for an index file, which is written once
    /// enough packs or time have gathered.
    fn stored(&mut self, pack: IndexPack, len: u64) -> Result<()> {
        crate::failpoint::hit!("after-pack");
        self.unindexed_blobs += pack.entries.len();
        self.unindexed_bytes += len;
        let since = *self.unindexed_since.get_or_insert_with(Instant::now);
        self.unindexed.push(pack);
        if self.unindexed_blobs >= INDEX_FILE_BLOBS_TARGET
            || self.unindexed_bytes >= index_after_pack_bytes()
            || since.elapsed() >= INDEX_AFTER
        {
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
        let file = IndexFile {
            supersedes: Vec::new(),
            packs: self.unindexed.clone(),
            marked_at: None,
        };
        // Tests stop here to suspend the backup or remove its lock.
        crate::failpoint::pause!("before-index");
        let id = match self.repo.store_index_file(&file, self.lock) {
            Ok(id) => id,
            Err(failed) => {
                // Visible, though perhaps not durable: an index names these
                // packs, so deleting them (Drop) would leave it pointing at
                // nothing. Kept, they are at worst unindexed, which prune
                // cleans up.
                if failed.visible {
                    self.unindexed.clear();
                }
                return Err(failed.error);
            }
        };
        self.unindexed.clear();
        crate::failpoint::hit!("after-index");
        self.repo.index().merge(id, &file)?;
        for pack in &file.packs {
            for e in &pack.entries {
                self.pending.remove(&(e.kind, e.id));
            }
        }
        self.unindexed_blobs = 0;
        self.unindexed_bytes = 0;
        self.unindexed_since = None;
        self.stats.index_files += 1;
        Ok(())
    }

    /// Stores the open packs and the remaining index entries. Only after
    /// this returns may a snapshot referencing these blobs be written: the
    /// `Written` it returns is what `Repository::save_snapshot` asks for.
    pub fn finish(mut self) -> Result<Written<'r>> {
        self.flush_pack(BlobKind::Data)?;
        self.flush_pack(BlobKind::Tree)?;
        if let Some(uploads) = &mut self.uploads {
            let finished = uploads.wait_all();
            self.uploaded(finished)?;
        }
        self.write_index()?;
        debug_assert!(self.pending.is_empty());
        Ok(Written {
            stats: std::mem::take(&mut self.stats),
            lock: self.lock,
        })
    }
}

impl Drop for BlobWriter<'_> {
    /// A writer dropped before `finish` (an error, an interrupt) deletes the
    /// packs it stored but never indexed. No other process can reference
    /// them (blobs become visible only through index files), and on a full
    /// disk the space is what the next backup needs.
    ///
    /// Not once the lock is lost: whoever took it meanwhile may have
    /// indexed them (`repair index` indexes every pack it finds), and a pack
    /// an index file names must stay. A later prune deletes them.
    fn drop(&mut self) {
        // Uploads still running are waited for: one that succeeds is a
        // stored, unindexed pack like the others.
        if let Some(mut uploads) = self.uploads.take() {
            for upload in uploads.wait_all() {
                if upload.result.is_ok() {
                    self.unindexed.push(upload.pack);
                }
            }
        }
        if self.unindexed.is_empty() || self.repo.ensure_locked(self.lock).is_err() {
            return;
        }
        for pack in &self.unindexed {
            let _ = self.repo.backend.delete(FileKind::Pack, &pack.id.to_hex());
        }
    }
}
