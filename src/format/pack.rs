//! Pack files: many sealed blobs followed by a sealed header that lists them.
//! Pure: builds and parses bytes; the repository stores them.
//!
//! Layout (docs/FORMAT.md, "Packs"):
//! `blob_1 || … || blob_n || seal(header) || header_sealed_len (u32 LE)`.

use crate::error::{Error, Result};
use crate::format::crypto::{Domain, MasterKey, SEAL_OVERHEAD};
use crate::format::id::{BlobId, Id, PackId};
use std::cell::RefCell;

/// Largest sealed pack header a reader accepts (bounds the allocation).
pub const PACK_HEADER_SIZE_MAX: usize = 16 * 1024 * 1024;
/// Largest raw (uncompressed) blob: a chunk or an encoded tree.
pub const BLOB_RAW_SIZE_MAX: u32 = 64 * 1024 * 1024;
/// Largest sealed blob (a blob stored raw plus envelope and slack).
pub const BLOB_SIZE_MAX: u32 = BLOB_RAW_SIZE_MAX + 1024;
/// Largest pack a reader accepts; offsets are u32.
pub const PACK_SIZE_MAX: u64 = 2 * 1024 * 1024 * 1024;
/// Most blobs one pack may hold, so its header stays under the limit.
pub const PACK_BLOBS_MAX: usize = 200_000;
/// Header plaintext magic and version.
pub const HEADER_MAGIC: &[u8; 4] = b"CPH\x01";
/// Encoded size of one header entry.
pub const ENTRY_LEN: usize = 1 + 1 + 32 + 4 + 4 + 4;

/// Data blobs hold file contents; tree blobs hold directory listings.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum BlobKind {
    Data = 0,
    Tree = 1,
}

impl BlobKind {
    pub fn from_byte(b: u8) -> Result<BlobKind> {
        match b {
            0 => Ok(BlobKind::Data),
            1 => Ok(BlobKind::Tree),
            _ => Err(Error::corrupt(format!("unknown blob kind {b}"))),
        }
    }
}

/// How a blob's plaintext was encoded before sealing; recorded per blob so
/// the codec can change later without rewriting old packs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Codec {
    /// Stored as is (incompressible data).
    Raw = 0,
    Zstd = 1,
}

impl Codec {
    pub fn from_byte(b: u8) -> Result<Codec> {
        match b {
            0 => Ok(Codec::Raw),
            1 => Ok(Codec::Zstd),
            _ => Err(Error::corrupt(format!("unknown blob codec {b}"))),
        }
    }
}

/// Where one blob lives inside a pack.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PackEntry {
    pub kind: BlobKind,
    pub codec: Codec,
    pub id: BlobId,
    /// Byte offset of the sealed blob in the pack.
    pub offset: u32,
    /// Sealed length in the pack.
    pub length: u32,
    /// Plaintext length after decoding.
    pub raw_length: u32,
}

impl PackEntry {
    pub fn encode_into(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(&self.encode());
    }

    /// The `ENTRY_LEN` bytes of a header entry (docs/FORMAT.md, 7.2).
    pub fn encode(&self) -> [u8; ENTRY_LEN] {
        let mut out = [0u8; ENTRY_LEN];
        out[0] = self.kind as u8;
        out[1] = self.codec as u8;
        out[2..34].copy_from_slice(self.id.as_bytes());
        out[34..38].copy_from_slice(&self.offset.to_le_bytes());
        out[38..42].copy_from_slice(&self.length.to_le_bytes());
        out[42..46].copy_from_slice(&self.raw_length.to_le_bytes());
        out
    }

    /// Decodes one entry from exactly `ENTRY_LEN` bytes and checks its limits.
    pub fn decode(bytes: &[u8]) -> Result<PackEntry> {
        if bytes.len() != ENTRY_LEN {
            return Err(Error::corrupt("pack entry has the wrong length"));
        }
        let u32_at = |at: usize| u32::from_le_bytes(bytes[at..at + 4].try_into().expect("4"));
        let entry = PackEntry {
            kind: BlobKind::from_byte(bytes[0])?,
            codec: Codec::from_byte(bytes[1])?,
            id: BlobId(Id(bytes[2..34].try_into().expect("32"))),
            offset: u32_at(34),
            length: u32_at(38),
            raw_length: u32_at(42),
        };
        if entry.length > BLOB_SIZE_MAX
            || entry.raw_length > BLOB_RAW_SIZE_MAX
            || (entry.length as usize) < SEAL_OVERHEAD
        {
            return Err(Error::corrupt(format!(
                "pack entry {} has impossible sizes",
                entry.id
            )));
        }
        Ok(entry)
    }
}

/// Encodes a header's plaintext.
pub fn encode_header(entries: &[PackEntry]) -> Vec<u8> {
    let mut out = Vec::with_capacity(8 + entries.len() * ENTRY_LEN);
    out.extend_from_slice(HEADER_MAGIC);
    out.extend_from_slice(&(entries.len() as u32).to_le_bytes());
    for e in entries {
        e.encode_into(&mut out);
    }
    out
}

/// Decodes a header's plaintext. Blobs MUST be contiguous from offset 0 and
/// end where the header starts (`data_len`), so any shifted or overlapping
/// entry is detected as damage.
pub fn decode_header(plain: &[u8], data_len: u64) -> Result<Vec<PackEntry>> {
    if plain.len() < 8 || plain[..3] != HEADER_MAGIC[..3] {
        return Err(Error::corrupt("pack header has a bad magic"));
    }
    if plain[3] != HEADER_MAGIC[3] {
        return Err(Error::new(
            crate::error::ErrorKind::UnsupportedVersion,
            format!("pack header version {} is not supported", plain[3]),
        ));
    }
    let count = u32::from_le_bytes(plain[4..8].try_into().expect("4")) as usize;
    if count > PACK_BLOBS_MAX
        || (plain.len() - 8) / ENTRY_LEN != count
        || !(plain.len() - 8).is_multiple_of(ENTRY_LEN)
    {
        return Err(Error::corrupt(
            "pack header count does not match its length",
        ));
    }
    let mut entries = Vec::with_capacity(count);
    let mut expected_offset = 0u64;
    for raw in plain[8..].chunks_exact(ENTRY_LEN) {
        let entry = PackEntry::decode(raw)?;
        if u64::from(entry.offset) != expected_offset {
            return Err(Error::corrupt("pack header entries are not contiguous"));
        }
        expected_offset += u64::from(entry.length);
        entries.push(entry);
    }
    if expected_offset != data_len {
        return Err(Error::corrupt(
            "pack header does not cover the pack's blobs",
        ));
    }
    Ok(entries)
}

/// Splits a whole pack file into its entries (opening the sealed header).
pub fn read_header(key: &MasterKey, pack: &[u8]) -> Result<Vec<PackEntry>> {
    let (header_start, sealed_len) = header_location(pack.len() as u64, trailer(pack)?)?;
    let sealed = &pack[header_start as usize..header_start as usize + sealed_len as usize];
    let plain = key.open(Domain::PackHeader, sealed)?;
    decode_header(&plain, header_start)
}

/// The trailing u32 of a pack: its sealed header length.
pub fn trailer(pack_tail: &[u8]) -> Result<u32> {
    if pack_tail.len() < 4 {
        return Err(Error::corrupt("pack is too short to have a header"));
    }
    let at = pack_tail.len() - 4;
    Ok(u32::from_le_bytes(pack_tail[at..].try_into().expect("4")))
}

/// Checks a header length read from a pack of `pack_len` bytes and returns
/// (header offset, sealed header length).
pub fn header_location(pack_len: u64, sealed_len: u32) -> Result<(u64, u32)> {
    if pack_len > PACK_SIZE_MAX {
        return Err(Error::corrupt("pack is larger than the format allows"));
    }
    let sealed = u64::from(sealed_len);
    if sealed as usize > PACK_HEADER_SIZE_MAX
        || sealed + 4 > pack_len
        || sealed < SEAL_OVERHEAD as u64
    {
        return Err(Error::corrupt("pack header length is out of range"));
    }
    Ok((pack_len - 4 - sealed, sealed_len))
}

/// Compresses (if it helps) and seals one blob. Pure CPU work, so callers run
/// it in parallel.
#[derive(Clone)]
pub struct SealedBlob {
    pub kind: BlobKind,
    pub codec: Codec,
    pub id: BlobId,
    pub raw_length: u32,
    pub bytes: Vec<u8>,
}

pub fn seal_blob(
    key: &MasterKey,
    kind: BlobKind,
    id: BlobId,
    plaintext: &[u8],
    zstd_level: i32,
) -> SealedBlob {
    assert!(
        plaintext.len() <= BLOB_RAW_SIZE_MAX as usize,
        "blob larger than the format allows"
    );
    // One allocation per blob: the header's room, the encoded bytes, then
    // the tag, sealed in place.
    let mut bytes = Vec::with_capacity(crate::format::crypto::SEAL_OVERHEAD + plaintext.len());
    bytes.resize(crate::format::crypto::SEAL_HEADER_LEN, 0);
    let codec = if !looks_compressed(plaintext) && compress_into(plaintext, zstd_level, &mut bytes)
    {
        Codec::Zstd
    } else {
        bytes.extend_from_slice(plaintext);
        Codec::Raw
    };
    let mut aad_kind = kind as u8;
    aad_kind |= (codec as u8) << 4;
    key.seal_blob_in_place(aad_kind, &id, &mut bytes);
    SealedBlob {
        kind,
        codec,
        id,
        raw_length: plaintext.len() as u32,
        bytes,
    }
}

thread_local! {
    /// One zstd compression context per thread (and level), reused: making
    /// a fresh one per blob cost as much as compressing a small file, 15 %
    /// of a backup of a tree of small files.
    static COMPRESSOR: RefCell<Option<(i32, zstd::bulk::Compressor<'static>)>> =
        const { RefCell::new(None) };
    /// Its output buffer, reused too (a fresh one per blob cost page
    /// faults), up to `COMPRESSED_KEEP_MAX`.
    static COMPRESSED: RefCell<Vec<u8>> = const { RefCell::new(Vec::new()) };
    static DECOMPRESSOR: RefCell<Option<zstd::bulk::Decompressor<'static>>> =
        const { RefCell::new(None) };
}

/// The largest zstd output buffer a thread keeps between blobs.
const COMPRESSED_KEEP_MAX: usize = 2 * 1024 * 1024;

/// Magic numbers of formats that are compressed already: gzip, bzip2, xz,
/// zstd, lz4, zip (and jar, docx …), 7z, PNG and JPEG.
const COMPRESSED_MAGICS: &[&[u8]] = &[
    &[0x1f, 0x8b],
    b"BZh",
    &[0xfd, b'7', b'z', b'X', b'Z', 0x00],
    &[0x28, 0xb5, 0x2f, 0xfd],
    &[0x04, 0x22, 0x4d, 0x18],
    b"PK\x03\x04",
    &[b'7', b'z', 0xbc, 0xaf, 0x27, 0x1c],
    &[0x89, b'P', b'N', b'G'],
    &[0xff, 0xd8, 0xff],
];

/// A blob that starts like a compressed file (a small `.gz` is one blob)
/// is stored raw without trying zstd, which would not shrink it: on a tree
/// like `/usr/share/doc` that was a tenth of the backup's CPU time. A blob
/// misjudged this way is only stored a little larger.
fn looks_compressed(plaintext: &[u8]) -> bool {
    COMPRESSED_MAGICS.iter().any(|m| plaintext.starts_with(m))
}

/// Appends `plaintext` compressed with zstd at `level` to `out` if that
/// makes it smaller; false (and `out` unchanged) if not, or if the codec
/// fails: the blob is then stored raw.
fn compress_into(plaintext: &[u8], level: i32, out: &mut Vec<u8>) -> bool {
    COMPRESSOR.with(|cell| {
        let mut cell = cell.borrow_mut();
        if cell.as_ref().is_none_or(|(l, _)| *l != level) {
            *cell = zstd::bulk::Compressor::new(level).ok().map(|c| (level, c));
        }
        let Some((_, compressor)) = cell.as_mut() else {
            return false;
        };
        COMPRESSED.with(|scratch| {
            let mut scratch = scratch.borrow_mut();
            scratch.clear();
            scratch.reserve(zstd::zstd_safe::compress_bound(plaintext.len()));
            let compressed = match compressor.compress_to_buffer(plaintext, &mut *scratch) {
                Ok(n) if n < plaintext.len() => {
                    out.extend_from_slice(&scratch[..n]);
                    true
                }
                _ => false,
            };
            // Kept for the next blob only up to the usual chunk sizes: a
            // large tree or chunk must not pin its buffer on every thread.
            if scratch.capacity() > COMPRESSED_KEEP_MAX {
                *scratch = Vec::new();
            }
            compressed
        })
    })
}

/// Decompresses at most `capacity` bytes (the entry's raw length).
fn decompress(encoded: &[u8], capacity: usize) -> std::io::Result<Vec<u8>> {
    DECOMPRESSOR.with(|cell| {
        let mut cell = cell.borrow_mut();
        if cell.is_none() {
            *cell = Some(zstd::bulk::Decompressor::new()?);
        }
        cell.as_mut()
            .expect("set just above")
            .decompress(encoded, capacity)
    })
}

/// Opens, decodes and verifies one blob read from a pack.
pub fn open_blob(key: &MasterKey, entry: &PackEntry, sealed: &[u8]) -> Result<Vec<u8>> {
    if sealed.len() != entry.length as usize {
        return Err(Error::corrupt(format!("blob {} is truncated", entry.id)));
    }
    let aad_kind = entry.kind as u8 | ((entry.codec as u8) << 4);
    let encoded = key
        .open_blob(aad_kind, &entry.id, sealed)
        .map_err(|e| e.context(format!("blob {}", entry.id)))?;
    let plain = match entry.codec {
        Codec::Raw => encoded,
        Codec::Zstd => decompress(&encoded, entry.raw_length as usize)
            .map_err(|e| Error::corrupt(format!("blob {} does not decompress: {e}", entry.id)))?,
    };
    if plain.len() != entry.raw_length as usize {
        return Err(Error::corrupt(format!(
            "blob {} has the wrong length",
            entry.id
        )));
    }
    if key.blob_id(&plain) != entry.id {
        return Err(Error::corrupt(format!(
            "blob {} does not match its id",
            entry.id
        )));
    }
    Ok(plain)
}

/// Collects sealed blobs of one kind into a pack. The bytes stay in memory
/// unless the caller moves them out as it goes (`flush_to`), which is how a
/// backup writes a 32 MiB pack with a few MiB of memory: the builder keeps
/// only the entries, the running length and the running hash.
pub struct PackBuilder {
    /// Bytes not yet handed to `flush_to`.
    bytes: Vec<u8>,
    /// Bytes already handed out, and their hash state.
    flushed: u64,
    hasher: blake3::Hasher,
    entries: Vec<PackEntry>,
}

impl Default for PackBuilder {
    fn default() -> Self {
        Self::new()
    }
}

impl PackBuilder {
    pub fn new() -> PackBuilder {
        PackBuilder {
            bytes: Vec::new(),
            flushed: 0,
            hasher: blake3::Hasher::new(),
            entries: Vec::new(),
        }
    }

    /// Length of the pack so far (blobs only; the header comes at `finish`).
    pub fn len(&self) -> usize {
        self.flushed as usize + self.bytes.len()
    }

    /// Bytes added but not yet handed to `flush_to`.
    pub fn buffered_len(&self) -> usize {
        self.bytes.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Full by count: one more blob would overflow the header limit.
    pub fn is_full(&self) -> bool {
        self.entries.len() >= PACK_BLOBS_MAX
    }

    pub fn add(&mut self, blob: SealedBlob) {
        let offset = self.len() as u32;
        assert!((self.len() as u64 + blob.bytes.len() as u64) < PACK_SIZE_MAX);
        self.entries.push(PackEntry {
            kind: blob.kind,
            codec: blob.codec,
            id: blob.id,
            offset,
            length: blob.bytes.len() as u32,
            raw_length: blob.raw_length,
        });
        self.bytes.extend_from_slice(&blob.bytes);
    }

    /// Hands the buffered bytes to `write` (the start of the pack, then each
    /// next piece) and forgets them once it succeeds.
    pub fn flush_to<E>(
        &mut self,
        write: impl FnOnce(&[u8]) -> std::result::Result<(), E>,
    ) -> std::result::Result<(), E> {
        write(&self.bytes)?;
        self.hasher.update(&self.bytes);
        self.flushed += self.bytes.len() as u64;
        self.bytes.clear();
        Ok(())
    }

    /// Appends the sealed header and trailer; the pack is named by the
    /// BLAKE3 of its bytes, so anyone can verify it without the key. Returns
    /// the bytes not yet flushed (the whole pack if `flush_to` was never
    /// called), which end the pack.
    pub fn finish(mut self, key: &MasterKey) -> (PackId, Vec<u8>, Vec<PackEntry>) {
        let sealed = key.seal(Domain::PackHeader, &encode_header(&self.entries));
        self.bytes.extend_from_slice(&sealed);
        self.bytes
            .extend_from_slice(&(sealed.len() as u32).to_le_bytes());
        self.hasher.update(&self.bytes);
        let id = PackId(Id(*self.hasher.finalize().as_bytes()));
        (id, self.bytes, self.entries)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        #[test]
        fn pack_round_trip(blobs in proptest::collection::vec(
            (any::<bool>(), proptest::collection::vec(any::<u8>(), 0..3000)), 0..12)) {
            let key = MasterKey::generate();
            let mut builder = PackBuilder::new();
            for (tree, data) in &blobs {
                let kind = if *tree { BlobKind::Tree } else { BlobKind::Data };
                builder.add(seal_blob(&key, kind, key.blob_id(data), data, 3));
            }
            let (id, bytes, entries) = builder.finish(&key);
            prop_assert_eq!(id.0, Id::of_file_bytes(&bytes));
            let decoded = read_header(&key, &bytes).unwrap();
            prop_assert_eq!(&decoded, &entries);
            for ((_, data), e) in blobs.iter().zip(&decoded) {
                let sealed = &bytes[e.offset as usize..(e.offset + e.length) as usize];
                prop_assert_eq!(&open_blob(&key, e, sealed).unwrap(), data);
            }
        }

        /// A pack flushed in pieces (as a backup streams it) has the same
        /// bytes and the same name as one built whole in memory.
        #[test]
        fn flushed_pack_equals_whole_pack(blobs in proptest::collection::vec(
            (proptest::collection::vec(any::<u8>(), 0..3000), any::<bool>()), 0..12)) {
            let key = MasterKey::generate();
            let sealed: Vec<SealedBlob> = blobs
                .iter()
                .map(|(data, _)| seal_blob(&key, BlobKind::Data, key.blob_id(data), data, 3))
                .collect();
            let mut whole = PackBuilder::new();
            let mut streamed = PackBuilder::new();
            let mut out = Vec::new();
            for (blob, (_, flush)) in sealed.into_iter().zip(&blobs) {
                whole.add(blob.clone());
                streamed.add(blob);
                if *flush {
                    streamed.flush_to(|b| { out.extend_from_slice(b); Ok::<(), ()>(()) }).unwrap();
                    prop_assert_eq!(streamed.buffered_len(), 0);
                }
                prop_assert_eq!(streamed.len(), whole.len());
            }
            let blobs_len = whole.len();
            // The headers differ only by their random nonces.
            let (_, bytes_whole, entries_whole) = whole.finish(&key);
            let (id, tail, entries) = streamed.finish(&key);
            out.extend_from_slice(&tail);
            prop_assert_eq!(&entries, &entries_whole);
            prop_assert_eq!(out.len(), bytes_whole.len());
            prop_assert_eq!(&out[..blobs_len], &bytes_whole[..blobs_len]);
            prop_assert_eq!(id.0, Id::of_file_bytes(&out));
            prop_assert_eq!(read_header(&key, &out).unwrap(), entries);
        }

        #[test]
        fn header_decoder_never_panics(plain in proptest::collection::vec(any::<u8>(), 0..600), len in any::<u64>()) {
            let _ = decode_header(&plain, len);
        }

        #[test]
        fn header_decoder_rejects_any_truncation(n in 1usize..5) {
            let key = MasterKey::generate();
            let mut builder = PackBuilder::new();
            for i in 0..5u8 { builder.add(seal_blob(&key, BlobKind::Data, key.blob_id(&[i]), &[i], 3)); }
            let (_, bytes, _) = builder.finish(&key);
            let truncated = &bytes[..bytes.len() - n];
            prop_assert!(read_header(&key, truncated).is_err());
        }
    }

    #[test]
    fn incompressible_blobs_are_stored_raw() {
        let key = MasterKey::generate();
        let data: Vec<u8> = crate::sys::random_bytes::<1024>().to_vec();
        let blob = seal_blob(&key, BlobKind::Data, key.blob_id(&data), &data, 3);
        assert_eq!(blob.codec, Codec::Raw);
        let text = vec![b'a'; 4096];
        let blob = seal_blob(&key, BlobKind::Data, key.blob_id(&text), &text, 3);
        assert_eq!(blob.codec, Codec::Zstd);
        assert!(blob.bytes.len() < 200);
    }

    /// The level reaches zstd, and a reader needs none: blobs written at
    /// the old default (1) and the new one (3) open alike (FORMAT.md 5.3).
    #[test]
    fn blobs_sealed_at_levels_1_and_3_differ_and_both_open() {
        let key = MasterKey::generate();
        let mut text = Vec::new();
        for i in 0..3000u32 {
            let word = ["alpha", "bravo", "charlie", "delta", "echo"][(i * 7 % 5) as usize];
            text.extend_from_slice(
                format!(
                    "INSERT INTO t VALUES ({i}, '{word}-{}', {});\n",
                    i * 37 % 1009,
                    i % 97
                )
                .as_bytes(),
            );
        }
        let id = key.blob_id(&text);
        let mut sizes = Vec::new();
        for level in [1, 3] {
            let blob = seal_blob(&key, BlobKind::Data, id, &text, level);
            assert_eq!(blob.codec, Codec::Zstd);
            let entry = PackEntry {
                kind: BlobKind::Data,
                codec: blob.codec,
                id,
                offset: 0,
                length: blob.bytes.len() as u32,
                raw_length: blob.raw_length,
            };
            assert_eq!(open_blob(&key, &entry, &blob.bytes).unwrap(), text);
            sizes.push(blob.bytes.len());
        }
        assert_ne!(sizes[0], sizes[1], "the level must change the frame");
    }

    #[test]
    fn blobs_that_start_like_a_compressed_file_are_stored_raw_and_open() {
        let key = MasterKey::generate();
        for magic in COMPRESSED_MAGICS {
            // Compressible after the magic, so only the sniffing keeps it raw.
            let mut data = magic.to_vec();
            data.extend_from_slice(&[b'a'; 4096]);
            let id = key.blob_id(&data);
            let blob = seal_blob(&key, BlobKind::Data, id, &data, 1);
            assert_eq!(blob.codec, Codec::Raw, "{magic:?}");
            assert_eq!(
                blob.bytes.len(),
                data.len() + crate::format::crypto::SEAL_OVERHEAD
            );
            let entry = PackEntry {
                kind: BlobKind::Data,
                codec: blob.codec,
                id,
                offset: 0,
                length: blob.bytes.len() as u32,
                raw_length: blob.raw_length,
            };
            let opened = open_blob(&key, &entry, &blob.bytes).unwrap();
            assert_eq!(opened, data);
        }
        // A magic number later in the blob changes nothing.
        let mut text = vec![b'a'; 4096];
        text.extend_from_slice(&[0x1f, 0x8b]);
        let blob = seal_blob(&key, BlobKind::Data, key.blob_id(&text), &text, 1);
        assert_eq!(blob.codec, Codec::Zstd);
    }
}
