//! Snapshot manifests (docs/FORMAT.md section 18.2): one plaintext file per
//! snapshot listing the packs it reaches, signed with Ed25519 like the
//! audit entries. Packs are named by the hash of their bytes, so with a
//! manifest someone without the password can prove that everything a
//! snapshot needs is present and intact.
//!
//! Plaintext on purpose: the auditor has no key. A manifest holds pack ids,
//! sizes and counts; no names, no blob ids, no contents.

use crate::error::{Error, ErrorKind, Result};
use crate::format::audit::{PublicKey, Reader, SigningKey, SIGNATURE_LEN};
use crate::format::id::{Id, ManifestId, PackId, RepositoryId, SnapshotId, ID_LEN};

/// First bytes of every manifest.
pub const MANIFEST_MAGIC: &[u8; 8] = b"CAIRNMAN";
pub const MANIFEST_VERSION: u8 = 1;
/// Most packs one manifest names: 2^20 packs are 32 TiB at the default
/// pack size.
pub const MANIFEST_PACKS_MAX: usize = 1 << 20;
/// Most earlier manifests one replacement supersedes.
pub const MANIFEST_SUPERSEDES_MAX: usize = 64;
/// Bytes of one pack's record: id, size, blobs used.
const PACK_LEN: usize = ID_LEN + 8 + 4;
/// Magic, version, repository, signer, snapshot, time, supersedes count.
const FIXED_LEN: usize = 8 + 1 + ID_LEN + ID_LEN + ID_LEN + 8 + 2;
/// Largest manifest a reader accepts: checked before anything is read.
pub const MANIFEST_SIZE_MAX: usize = FIXED_LEN
    + MANIFEST_SUPERSEDES_MAX * ID_LEN
    + 4
    + MANIFEST_PACKS_MAX * PACK_LEN
    + SIGNATURE_LEN;
/// What a signature covers before the manifest's bytes, so it can never be
/// presented as a signature over an audit entry or anything else.
const MANIFEST_CONTEXT: &[u8] = b"cairn/v1/snapshot-manifest\0";

/// One pack a snapshot reaches.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ManifestPack {
    pub id: PackId,
    /// The pack file's size in bytes.
    pub size: u64,
    /// How many distinct blobs of the pack the snapshot uses.
    pub blobs: u32,
}

/// A snapshot's manifest. Always signed: a key file without a signing key
/// writes none.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Manifest {
    pub repository: RepositoryId,
    pub signer: PublicKey,
    pub snapshot: SnapshotId,
    /// Seconds since the Unix epoch, UTC, when it was written.
    pub time: i64,
    /// Earlier manifests of the same snapshot this one replaces (after a
    /// prune moved blobs to new packs), sorted.
    pub supersedes: Vec<ManifestId>,
    /// Sorted by pack id, each pack once.
    pub packs: Vec<ManifestPack>,
}

/// A decoded manifest, its name (the hash of its bytes) and whether its
/// signature holds.
#[derive(Debug, Clone)]
pub struct DecodedManifest {
    pub id: ManifestId,
    pub manifest: Manifest,
    pub signature_valid: bool,
}

impl Manifest {
    /// The manifest's bytes, signed with `key` (whose public key must be
    /// `self.signer`).
    pub fn encode(&self, key: &SigningKey) -> Result<Vec<u8>> {
        if key.public() != self.signer {
            return Err(Error::invalid("manifest signer does not match its key"));
        }
        if self.packs.len() > MANIFEST_PACKS_MAX {
            return Err(Error::invalid(format!(
                "a snapshot reaching {} packs is more than a manifest lists ({MANIFEST_PACKS_MAX})",
                self.packs.len()
            )));
        }
        if self.supersedes.len() > MANIFEST_SUPERSEDES_MAX {
            return Err(Error::invalid("manifest supersedes too many manifests"));
        }
        if !self.packs.windows(2).all(|w| w[0].id < w[1].id)
            || !self.supersedes.windows(2).all(|w| w[0] < w[1])
        {
            return Err(Error::invalid("manifest lists are not sorted and unique"));
        }
        let mut out = Vec::with_capacity(
            FIXED_LEN + self.supersedes.len() * ID_LEN + 4 + self.packs.len() * PACK_LEN + 64,
        );
        out.extend_from_slice(MANIFEST_MAGIC);
        out.push(MANIFEST_VERSION);
        out.extend_from_slice(self.repository.as_bytes());
        out.extend_from_slice(&self.signer.0);
        out.extend_from_slice(self.snapshot.as_bytes());
        out.extend_from_slice(&self.time.to_le_bytes());
        out.extend_from_slice(&(self.supersedes.len() as u16).to_le_bytes());
        for id in &self.supersedes {
            out.extend_from_slice(id.as_bytes());
        }
        out.extend_from_slice(&(self.packs.len() as u32).to_le_bytes());
        for pack in &self.packs {
            out.extend_from_slice(pack.id.as_bytes());
            out.extend_from_slice(&pack.size.to_le_bytes());
            out.extend_from_slice(&pack.blobs.to_le_bytes());
        }
        let signature = key.sign_parts(&[MANIFEST_CONTEXT, &out]);
        out.extend_from_slice(&signature);
        Ok(out)
    }

    /// Decodes a manifest and checks its signature. Malformed bytes are
    /// `Corrupt`; a signature that does not hold is reported, not an error,
    /// so a report can name the manifest.
    pub fn decode(bytes: &[u8]) -> Result<DecodedManifest> {
        let bad = |what: &str| Error::corrupt(format!("manifest {what}"));
        if bytes.len() > MANIFEST_SIZE_MAX {
            return Err(bad("is larger than the format allows"));
        }
        let mut r = Reader { bytes, at: 0 };
        if r.take(8)? != MANIFEST_MAGIC {
            return Err(bad("does not start with the manifest magic"));
        }
        if r.u8()? != MANIFEST_VERSION {
            return Err(Error::new(
                ErrorKind::UnsupportedVersion,
                "manifest has an unknown version",
            ));
        }
        let repository = RepositoryId(r.id()?);
        let signer = PublicKey(r.id()?.0);
        let snapshot = SnapshotId(r.id()?);
        let time = r.u64()? as i64;
        let supersedes_count = usize::from(r.u16()?);
        if supersedes_count > MANIFEST_SUPERSEDES_MAX {
            return Err(bad("supersedes too many manifests"));
        }
        let mut supersedes = Vec::with_capacity(supersedes_count);
        for _ in 0..supersedes_count {
            supersedes.push(ManifestId(r.id()?));
        }
        let pack_count = u32::from_le_bytes(r.array()?) as usize;
        if pack_count > MANIFEST_PACKS_MAX {
            return Err(bad("names too many packs"));
        }
        // Checked against the bytes left before allocating for them.
        if pack_count * PACK_LEN > bytes.len() - r.at {
            return Err(bad("is truncated"));
        }
        let mut packs = Vec::with_capacity(pack_count);
        for _ in 0..pack_count {
            let id = PackId(r.id()?);
            let size = r.u64()?;
            let blobs = u32::from_le_bytes(r.array()?);
            packs.push(ManifestPack { id, size, blobs });
        }
        if !packs.windows(2).all(|w| w[0].id < w[1].id)
            || !supersedes.windows(2).all(|w| w[0] < w[1])
        {
            return Err(bad("lists are not sorted and unique"));
        }
        let body_len = r.at;
        let signature: [u8; SIGNATURE_LEN] = r.array()?;
        if r.at != bytes.len() {
            return Err(bad("has bytes after its end"));
        }
        let signature_valid =
            signer.verify_parts(&[MANIFEST_CONTEXT, &bytes[..body_len]], &signature);
        Ok(DecodedManifest {
            id: ManifestId(Id::of_file_bytes(bytes)),
            manifest: Manifest {
                repository,
                signer,
                snapshot,
                time,
                supersedes,
                packs,
            },
            signature_valid,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn manifest(key: &SigningKey) -> Manifest {
        Manifest {
            repository: RepositoryId(Id([7; 32])),
            signer: key.public(),
            snapshot: SnapshotId(Id([9; 32])),
            time: 1_790_000_000,
            supersedes: vec![ManifestId(Id([1; 32])), ManifestId(Id([2; 32]))],
            packs: vec![
                ManifestPack {
                    id: PackId(Id([3; 32])),
                    size: 33_000_000,
                    blobs: 12,
                },
                ManifestPack {
                    id: PackId(Id([4; 32])),
                    size: 1234,
                    blobs: 1,
                },
            ],
        }
    }

    #[test]
    fn a_manifest_round_trips_and_any_changed_byte_is_caught() {
        let key = SigningKey::from_seed(&[5; 32]);
        let m = manifest(&key);
        let bytes = m.encode(&key).unwrap();
        let decoded = Manifest::decode(&bytes).unwrap();
        assert_eq!(decoded.manifest, m);
        assert!(decoded.signature_valid);
        assert_eq!(decoded.id, ManifestId(Id::of_file_bytes(&bytes)));
        for at in 0..bytes.len() {
            let mut damaged = bytes.clone();
            damaged[at] ^= 0x10;
            if let Ok(d) = Manifest::decode(&damaged) {
                assert!(!d.signature_valid, "byte {at} changed unnoticed");
            }
        }
        let other = SigningKey::from_seed(&[6; 32]);
        assert!(m.encode(&other).is_err());
    }

    /// A signature over an audit entry's bytes is no signature over a
    /// manifest with the same bytes: the contexts differ.
    #[test]
    fn an_audit_signature_does_not_sign_a_manifest() {
        let key = SigningKey::from_seed(&[5; 32]);
        let bytes = manifest(&key).encode(&key).unwrap();
        let body = &bytes[..bytes.len() - SIGNATURE_LEN];
        let mut forged = body.to_vec();
        forged.extend_from_slice(&key.sign_parts(&[b"cairn/v1/audit-entry\0", body]));
        assert!(!Manifest::decode(&forged).unwrap().signature_valid);
    }

    #[test]
    fn hostile_lengths_and_orders_are_refused_before_allocating() {
        let key = SigningKey::from_seed(&[5; 32]);
        let m = manifest(&key);
        let bytes = m.encode(&key).unwrap();
        let packs_at = FIXED_LEN + 2 * ID_LEN;
        let mut hostile = bytes.clone();
        hostile[packs_at..packs_at + 4].copy_from_slice(&u32::MAX.to_le_bytes());
        assert!(Manifest::decode(&hostile).is_err());
        let mut hostile = bytes.clone();
        hostile[packs_at..packs_at + 4].copy_from_slice(&(MANIFEST_PACKS_MAX as u32).to_le_bytes());
        assert!(Manifest::decode(&hostile).is_err());
        let mut hostile = bytes.clone();
        hostile[FIXED_LEN - 2..FIXED_LEN].copy_from_slice(&u16::MAX.to_le_bytes());
        assert!(Manifest::decode(&hostile).is_err());
        assert!(Manifest::decode(&vec![0; MANIFEST_SIZE_MAX + 1]).is_err());
        assert!(Manifest::decode(&bytes[..bytes.len() - 1]).is_err());
        let mut longer = bytes;
        longer.push(0);
        assert!(Manifest::decode(&longer).is_err());
        let mut unsorted = m.clone();
        unsorted.packs.reverse();
        assert!(unsorted.encode(&key).is_err());
    }

    fn arb_manifest() -> impl Strategy<Value = Manifest> {
        (
            any::<[u8; 32]>(),
            any::<i64>(),
            proptest::collection::btree_set(any::<[u8; 32]>(), 0..4),
            proptest::collection::btree_map(any::<[u8; 32]>(), (any::<u64>(), any::<u32>()), 0..20),
        )
            .prop_map(|(snapshot, time, supersedes, packs)| Manifest {
                repository: RepositoryId(Id([1; 32])),
                signer: SigningKey::from_seed(&[3; 32]).public(),
                snapshot: SnapshotId(Id(snapshot)),
                time,
                supersedes: supersedes.into_iter().map(|s| ManifestId(Id(s))).collect(),
                packs: packs
                    .into_iter()
                    .map(|(id, (size, blobs))| ManifestPack {
                        id: PackId(Id(id)),
                        size,
                        blobs,
                    })
                    .collect(),
            })
    }

    proptest! {
        #[test]
        fn manifests_round_trip(m in arb_manifest()) {
            let key = SigningKey::from_seed(&[3; 32]);
            let bytes = m.encode(&key).unwrap();
            let decoded = Manifest::decode(&bytes).unwrap();
            prop_assert!(decoded.signature_valid);
            prop_assert_eq!(decoded.manifest, m);
        }

        #[test]
        fn the_manifest_decoder_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..600)) {
            let _ = Manifest::decode(&bytes);
        }

        #[test]
        fn the_manifest_decoder_never_panics_on_a_damaged_manifest(
            m in arb_manifest(), at in any::<usize>(), value in any::<u8>()
        ) {
            let key = SigningKey::from_seed(&[3; 32]);
            let mut bytes = m.encode(&key).unwrap();
            let at = at % bytes.len();
            bytes[at] = value;
            let _ = Manifest::decode(&bytes);
        }
    }
}
