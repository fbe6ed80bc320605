//! Shared pieces of cairn's fuzz targets and of the seed generator: the fixed
//! fuzz key (so sealed seeds open in the targets), and the byte layouts of
//! the structured inputs, written by `make_seeds` and read by the targets.

use cairn::format::crypto::MasterKey;
use cairn::KdfParams;

/// Secret of the fixed master key every target and every seed uses.
pub const FUZZ_SECRET: [u8; 32] = [7u8; 32];
/// Password of the seed key file.
pub const KEY_PASSWORD: &[u8] = b"cairn-fuzz";
/// Argon2 parameters cheap enough to run on every fuzz input.
pub const TINY_KDF: KdfParams = KdfParams { memory_kib: 64, iterations: 1, parallelism: 1 };
/// zstd level used when sealing blobs in the targets and seeds.
pub const ZSTD_LEVEL: i32 = 1;

pub fn fuzz_key() -> MasterKey {
    MasterKey::from_secret(&FUZZ_SECRET)
}

/// `tar_import` limits: small enough that a decompression bomb or a huge
/// sparse member ends in well under a second.
pub const TAR_MAX_STREAM: u64 = 16 << 20;
pub const TAR_MAX_CONTENT: u64 = 16 << 20;
pub const TAR_MAX_HEADER: u64 = 1 << 20;
/// Members and path depth: small, so that the fuzzer reaches both limits.
pub const TAR_MAX_MEMBERS: u64 = 1_000;
pub const TAR_MAX_DEPTH: usize = 64;

/// `pack_header` input modes (first byte, modulo 3).
pub mod pack_mode {
    /// `data_len: u64 LE || header plaintext` through `decode_header`.
    pub const PLAIN: u8 = 0;
    /// A whole pack file through `read_header` with the fuzz key.
    pub const WHOLE: u8 = 1;
    /// Structured: blobs to pack, then one damage (see the target).
    pub const BUILD: u8 = 2;
}

/// `blob_open` input modes (first byte, low bit).
pub mod blob_mode {
    /// `entry (ENTRY_LEN bytes) || sealed` through `open_blob`. Bit 1 of the
    /// first byte set: the entry's length is replaced by the sealed length.
    pub const RAW: u8 = 0;
    /// Structured: plaintext sealed with `seal_blob`, then damage.
    pub const SEAL: u8 = 1;
}

/// A cursor over fuzz input that never fails: past the end it yields zeros
/// and empty slices, so every input is a valid structured input.
pub struct Input<'a> {
    data: &'a [u8],
    at: usize,
}

impl<'a> Input<'a> {
    pub fn new(data: &'a [u8]) -> Input<'a> {
        Input { data, at: 0 }
    }

    pub fn is_empty(&self) -> bool {
        self.at >= self.data.len()
    }

    /// Up to `n` bytes (fewer at the end of the input).
    pub fn bytes(&mut self, n: usize) -> &'a [u8] {
        let n = n.min(self.data.len() - self.at);
        let out = &self.data[self.at..self.at + n];
        self.at += n;
        out
    }

    pub fn rest(&mut self) -> &'a [u8] {
        let out = &self.data[self.at..];
        self.at = self.data.len();
        out
    }

    fn array<const N: usize>(&mut self) -> [u8; N] {
        let mut out = [0u8; N];
        let got = self.bytes(N);
        out[..got.len()].copy_from_slice(got);
        out
    }

    pub fn u8(&mut self) -> u8 {
        self.array::<1>()[0]
    }

    pub fn u16(&mut self) -> u16 {
        u16::from_le_bytes(self.array())
    }

    pub fn u32(&mut self) -> u32 {
        u32::from_le_bytes(self.array())
    }

    pub fn u64(&mut self) -> u64 {
        u64::from_le_bytes(self.array())
    }
}

/// Writes structured inputs in the layout `Input` reads them.
#[derive(Default)]
pub struct Output(pub Vec<u8>);

impl Output {
    pub fn u8(&mut self, v: u8) -> &mut Self {
        self.0.push(v);
        self
    }
    pub fn u16(&mut self, v: u16) -> &mut Self {
        self.0.extend_from_slice(&v.to_le_bytes());
        self
    }
    pub fn u32(&mut self, v: u32) -> &mut Self {
        self.0.extend_from_slice(&v.to_le_bytes());
        self
    }
    pub fn u64(&mut self, v: u64) -> &mut Self {
        self.0.extend_from_slice(&v.to_le_bytes());
        self
    }
    pub fn bytes(&mut self, v: &[u8]) -> &mut Self {
        self.0.extend_from_slice(v);
        self
    }
}

/// One blob of a structured pack input: `flags u8 (bit 0: tree) ||
/// len u16 (mod BUILD_BLOB_LEN_MAX) || len bytes`.
pub const BUILD_BLOB_LEN_MAX: usize = 2048;
/// Most blobs in a structured pack input.
pub const BUILD_BLOBS_MAX: u8 = 8;

/// Deterministic filler (xorshift), as in cairn's chunker tests.
pub fn pseudo_random(len: usize, seed: u64) -> Vec<u8> {
    let mut state = seed | 1;
    (0..len)
        .map(|_| {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state as u8
        })
        .collect()
}
