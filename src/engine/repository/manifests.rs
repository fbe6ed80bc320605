//! Snapshot manifests (docs/FORMAT.md 18.2): written with each snapshot,
//! and again after a prune moved what a snapshot reaches to other packs,
//! naming the manifests they supersede. Manifests are never deleted.

use super::{Indexed, Repository, Written};
use crate::engine::audit::presence::{current, read_manifests};
use crate::error::{Error, ErrorKind, Result};
use crate::format::crypto::Domain;
use crate::format::id::{BlobId, Id, ManifestId, PackId, SnapshotId};
use crate::format::manifest::{Manifest, ManifestPack, MANIFEST_SUPERSEDES_MAX};
use crate::format::pack::BlobKind;
use crate::format::snapshot::Snapshot;
use crate::format::tree::Tree;
use crate::storage::backend::{Backend, FileKind};
use crate::storage::lock::DeleteLock;
use std::collections::{BTreeMap, HashMap, HashSet};

/// Trees read at once while walking a snapshot: one batch of requests on
/// a remote backend, a bounded amount of tree bytes in memory.
const TREE_BATCH: usize = 64;

/// Every stored pack and its size: one listing.
fn pack_sizes(backend: &dyn Backend) -> Result<HashMap<PackId, u64>> {
    Ok(backend
        .list(FileKind::Pack)?
        .into_iter()
        .filter_map(|(name, size)| PackId::from_hex(&name).ok().map(|id| (id, size)))
        .collect())
}

impl Repository<Indexed> {
    /// Writes a snapshot and, first, its manifest. Every blob it references
    /// MUST be indexed first (packs, then index files, then the snapshot):
    /// `written` is the token only `BlobWriter::finish` hands out, and it
    /// carries the writer's lock.
    pub fn save_snapshot(&self, snapshot: &Snapshot, written: &Written<'_>) -> Result<SnapshotId> {
        self.ensure_locked(written.lock)?;
        let sealed = self.key.seal(Domain::Snapshot, &snapshot.encode());
        let id = SnapshotId(Id::of_file_bytes(&sealed));
        // The manifest first: a crash between the two leaves a manifest of
        // no snapshot (ignored), never a snapshot without its manifest.
        self.write_manifest(id, snapshot.tree, Vec::new(), None)?;
        self.backend
            .put(FileKind::Snapshot, &id.to_hex(), &sealed)?;
        Ok(id)
    }

    /// Signs and stores the manifest of `snapshot` (whose root tree is
    /// `tree`); `None` when the key file has no signing key (a version 1
    /// key file writes no manifests). `sizes`: the stored packs, when the
    /// caller has listed them already.
    fn write_manifest(
        &self,
        snapshot: SnapshotId,
        tree: BlobId,
        supersedes: Vec<ManifestId>,
        sizes: Option<&HashMap<PackId, u64>>,
    ) -> Result<Option<ManifestId>> {
        let Some(key) = &self.signing else {
            return Ok(None);
        };
        let reached = self.reached_packs(tree)?;
        let listed;
        let sizes = match sizes {
            Some(sizes) => sizes,
            None => {
                listed = pack_sizes(self.backend.as_ref())?;
                &listed
            }
        };
        let mut packs = Vec::with_capacity(reached.len());
        for (id, blobs) in reached {
            let size = *sizes.get(&id).ok_or_else(|| {
                Error::new(
                    ErrorKind::NotFound,
                    format!("pack {id}, which snapshot {snapshot} reaches, is not stored"),
                )
            })?;
            packs.push(ManifestPack { id, size, blobs });
        }
        let manifest = Manifest {
            repository: self.config.id,
            signer: key.public(),
            snapshot,
            time: chrono::Utc::now().timestamp(),
            supersedes,
            packs,
        };
        let bytes = manifest.encode(key)?;
        let id = ManifestId(Id::of_file_bytes(&bytes));
        // Create-if-absent: a stored manifest is never written over (on
        // object storage under a retention lock, not even with equal bytes).
        self.backend
            .put_new(FileKind::Manifest, &id.to_hex(), &bytes)?;
        Ok(Some(id))
    }

    /// The packs the snapshot with root tree `root` reaches, each with how
    /// many distinct blobs of it the snapshot uses. Reads every tree once;
    /// memory: the ids of the trees seen and an offset per blob used.
    fn reached_packs(&self, root: BlobId) -> Result<BTreeMap<PackId, u32>> {
        let reader = self.blob_reader();
        let mut used: HashMap<PackId, HashSet<u32>> = HashMap::new();
        let mut note = |kind: BlobKind, id: &BlobId| -> Result<()> {
            let location = self.locate(kind, id)?.ok_or_else(|| {
                Error::new(
                    ErrorKind::NotFound,
                    format!("{kind:?} blob {id} is not in the index"),
                )
            })?;
            used.entry(location.pack)
                .or_default()
                .insert(location.entry.offset);
            Ok(())
        };
        let mut seen = HashSet::from([root]);
        let mut level = vec![root];
        while !level.is_empty() {
            let mut next = Vec::new();
            for batch in level.chunks(TREE_BATCH) {
                self.ctx.check_interrupt()?;
                for id in batch {
                    note(BlobKind::Tree, id)?;
                }
                for (id, bytes) in batch.iter().zip(reader.read(BlobKind::Tree, batch)?) {
                    let tree = Tree::decode(&bytes).map_err(|e| e.context(format!("tree {id}")))?;
                    for node in &tree.nodes {
                        if let Some(sub) = node.subtree {
                            if seen.insert(sub) {
                                next.push(sub);
                            }
                        }
                        for blob in &node.content {
                            note(BlobKind::Data, blob)?;
                        }
                    }
                }
            }
            level = next;
        }
        Ok(used
            .into_iter()
            .map(|(pack, offsets)| (pack, offsets.len() as u32))
            .collect())
    }

    /// After prune: every snapshot whose manifests in force name a pack
    /// that is gone or has another size (or that has no manifest) gets a
    /// new manifest superseding them. Returns how many were written.
    ///
    /// Only `seen` are considered: the snapshots listed before this
    /// process last synced its index. A backup running beside a prune may
    /// store a snapshot after that, whose trees this index does not hold;
    /// that backup wrote its own manifest.
    pub fn refresh_manifests<L: DeleteLock>(
        &self,
        lock: &L,
        seen: &HashSet<SnapshotId>,
    ) -> Result<u64> {
        self.ensure_locked(lock)?;
        if self.signing.is_none() {
            return Ok(0);
        }
        let sizes = pack_sizes(self.backend.as_ref())?;
        let accepted: Vec<_> = read_manifests(self.backend.as_ref())?
            .into_iter()
            .filter_map(|(_, read)| read.ok())
            .filter(|d| d.signature_valid && d.manifest.repository == self.config.id)
            .collect();
        let in_force = current(&accepted);
        let mut written = 0;
        for id in self.list_snapshot_ids()? {
            self.ctx.check_interrupt()?;
            if !seen.contains(&id) {
                continue;
            }
            let old = in_force.get(&id).map(Vec::as_slice).unwrap_or_default();
            let whole = !old.is_empty()
                && old.iter().all(|d| {
                    d.manifest
                        .packs
                        .iter()
                        .all(|p| sizes.get(&p.id) == Some(&p.size))
                });
            if whole {
                continue;
            }
            let snapshot = match self.load_snapshot(&id) {
                Ok(snapshot) => snapshot,
                // A damaged snapshot has nothing a manifest could vouch for.
                Err(e) if e.kind() == ErrorKind::Corrupt => continue,
                Err(e) => return Err(e),
            };
            let mut supersedes: Vec<ManifestId> = old.iter().map(|d| d.id).collect();
            supersedes.sort();
            supersedes.dedup();
            supersedes.truncate(MANIFEST_SUPERSEDES_MAX);
            self.write_manifest(id, snapshot.tree, supersedes, Some(&sizes))?;
            written += 1;
        }
        Ok(written)
    }
}
