//! Index file encoding (docs/FORMAT.md, "Index files"). Pure.
//!
//! Plaintext: `magic "CIX\x01" || supersedes_count u32 || supersedes ids ||
//! pack_count u32 || { pack_id [32] || entry_count u32 || entries }*`,
//! entries as in the pack header. Sealed with the `index` domain.
//!
//! A mark file (prune's two-phase delete) is `magic "CIX\x02" || marked_at
//! i64 || ...` with the same fields after: its packs are marked for
//! deletion at `marked_at` (ms since the Unix epoch).

use crate::error::{Error, Result};
use crate::format::id::{Id, IndexId, PackId};
use crate::format::pack::{PackEntry, ENTRY_LEN};

pub const INDEX_MAGIC: &[u8; 4] = b"CIX\x01";
/// The magic of a mark file: an index file whose packs are marked for
/// deletion (docs/FORMAT.md, section 15, "Two-phase delete").
pub const MARK_MAGIC: &[u8; 4] = b"CIX\x02";
/// Largest index file plaintext a reader accepts.
pub const INDEX_FILE_SIZE_MAX: usize = 64 * 1024 * 1024;
/// Writers start a new index file after this many blobs (~4.6 MiB).
pub const INDEX_FILE_BLOBS_TARGET: usize = 100_000;

#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct IndexPack {
    pub id: PackId,
    pub entries: Vec<PackEntry>,
}

#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct IndexFile {
    /// Index files this one replaces (written by repair and prune).
    pub supersedes: Vec<IndexId>,
    pub packs: Vec<IndexPack>,
    /// A mark file: when prune marked its packs for deletion (ms since the
    /// Unix epoch, prune's wall clock). Readers still find its blobs;
    /// writers do not deduplicate against them.
    pub marked_at: Option<i64>,
}

impl IndexFile {
    pub fn blob_count(&self) -> usize {
        self.packs.iter().map(|p| p.entries.len()).sum()
    }

    pub fn encode(&self) -> Vec<u8> {
        let mut out =
            Vec::with_capacity(12 + 36 * self.packs.len() + ENTRY_LEN * self.blob_count());
        match self.marked_at {
            None => out.extend_from_slice(INDEX_MAGIC),
            Some(at) => {
                out.extend_from_slice(MARK_MAGIC);
                out.extend_from_slice(&at.to_le_bytes());
            }
        }
        out.extend_from_slice(&(self.supersedes.len() as u32).to_le_bytes());
        for id in &self.supersedes {
            out.extend_from_slice(id.as_bytes());
        }
        out.extend_from_slice(&(self.packs.len() as u32).to_le_bytes());
        for pack in &self.packs {
            out.extend_from_slice(pack.id.as_bytes());
            out.extend_from_slice(&(pack.entries.len() as u32).to_le_bytes());
            for e in &pack.entries {
                e.encode_into(&mut out);
            }
        }
        out
    }

    pub fn decode(plain: &[u8]) -> Result<IndexFile> {
        if plain.len() > INDEX_FILE_SIZE_MAX {
            return Err(Error::corrupt(
                "index file is larger than the format allows",
            ));
        }
        let mut r = Reader {
            bytes: plain,
            at: 0,
        };
        let magic = r.take(4)?;
        if magic[..3] != INDEX_MAGIC[..3] {
            return Err(Error::corrupt("index file has a bad magic"));
        }
        let marked_at = match magic[3] {
            1 => None,
            2 => Some(i64::from_le_bytes(r.take(8)?.try_into().expect("8"))),
            v => {
                return Err(Error::new(
                    crate::error::ErrorKind::UnsupportedVersion,
                    format!("index file version {v} is not supported"),
                ))
            }
        };
        let supersedes_count = r.count(32)?;
        let mut supersedes = Vec::with_capacity(supersedes_count);
        for _ in 0..supersedes_count {
            supersedes.push(IndexId(r.id()?));
        }
        let pack_count = r.count(36)?;
        let mut packs = Vec::with_capacity(pack_count);
        for _ in 0..pack_count {
            let id = PackId(r.id()?);
            let entry_count = r.count(ENTRY_LEN)?;
            let mut entries = Vec::with_capacity(entry_count);
            for _ in 0..entry_count {
                entries.push(PackEntry::decode(r.take(ENTRY_LEN)?)?);
            }
            packs.push(IndexPack { id, entries });
        }
        if r.at != plain.len() {
            return Err(Error::corrupt("index file has trailing bytes"));
        }
        if marked_at.is_some() && !supersedes.is_empty() {
            return Err(Error::corrupt("a mark file supersedes index files"));
        }
        Ok(IndexFile {
            supersedes,
            packs,
            marked_at,
        })
    }
}

/// A bounds-checked cursor: every count is checked against the bytes left
/// before anything is allocated for it.
struct Reader<'a> {
    bytes: &'a [u8],
    at: usize,
}

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8]> {
        if self.bytes.len() - self.at < n {
            return Err(Error::corrupt("index file is truncated"));
        }
        let out = &self.bytes[self.at..self.at + n];
        self.at += n;
        Ok(out)
    }

    fn id(&mut self) -> Result<Id> {
        Ok(Id(self.take(32)?.try_into().expect("32")))
    }

    /// Reads a u32 count of items of `item_len` bytes each.
    fn count(&mut self, item_len: usize) -> Result<usize> {
        let n = u32::from_le_bytes(self.take(4)?.try_into().expect("4")) as usize;
        if n.saturating_mul(item_len) > self.bytes.len() - self.at {
            return Err(Error::corrupt("index file count exceeds its length"));
        }
        Ok(n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::format::id::BlobId;
    use crate::format::pack::{BlobKind, Codec};
    use proptest::prelude::*;

    fn entry_strategy() -> impl Strategy<Value = PackEntry> {
        (
            any::<bool>(),
            any::<bool>(),
            any::<[u8; 32]>(),
            any::<u32>(),
            41u32..1000,
            0u32..1000,
        )
            .prop_map(|(tree, zstd, id, offset, length, raw_length)| PackEntry {
                kind: if tree { BlobKind::Tree } else { BlobKind::Data },
                codec: if zstd { Codec::Zstd } else { Codec::Raw },
                id: BlobId(Id(id)),
                offset,
                length,
                raw_length,
            })
    }

    proptest! {
        #[test]
        fn index_file_round_trip(
            supersedes in proptest::collection::vec(any::<[u8; 32]>(), 0..3),
            packs in proptest::collection::vec(
                (any::<[u8; 32]>(), proptest::collection::vec(entry_strategy(), 0..5)), 0..5),
            marked_at in proptest::option::of(any::<i64>()),
        ) {
            // A mark file supersedes nothing.
            let supersedes = if marked_at.is_some() { Vec::new() } else { supersedes };
            let file = IndexFile {
                supersedes: supersedes.into_iter().map(|b| IndexId(Id(b))).collect(),
                packs: packs.into_iter().map(|(id, entries)| IndexPack { id: PackId(Id(id)), entries }).collect(),
                marked_at,
            };
            let encoded = file.encode();
            prop_assert_eq!(IndexFile::decode(&encoded).unwrap(), file);
            for cut in 0..encoded.len() {
                prop_assert!(IndexFile::decode(&encoded[..cut]).is_err());
            }
        }

        #[test]
        fn a_mark_file_that_supersedes_is_corrupt(at in any::<i64>()) {
            let file = IndexFile {
                supersedes: vec![IndexId(Id([1; 32]))],
                packs: Vec::new(),
                marked_at: Some(at),
            };
            prop_assert!(IndexFile::decode(&file.encode()).is_err());
        }

        #[test]
        fn index_decoder_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..400)) {
            let mut with_magic = INDEX_MAGIC.to_vec();
            with_magic.extend_from_slice(&bytes);
            let _ = IndexFile::decode(&with_magic);
            let _ = IndexFile::decode(&bytes);
        }
    }
}
