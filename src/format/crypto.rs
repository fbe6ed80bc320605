//! Key derivation, authenticated encryption and keyed hashing. Pure: no IO.
//!
//! Every sealed object is `version (1) || nonce (24) || ciphertext || tag (16)`
//! under XChaCha20-Poly1305. The 192-bit nonce is drawn at random for every
//! seal, which stays safe at billions of objects per key (a 96-bit random
//! nonce would not past ~2^32 seals). The associated data binds each object
//! to its role (and blobs to their id), so one object cannot be swapped in for
//! another of a different kind without the swap being detected.

use crate::error::{Error, ErrorKind, Result};
use crate::format::id::BlobId;
use chacha20poly1305::aead::{Aead, AeadInPlace, KeyInit, Payload};
use chacha20poly1305::{XChaCha20Poly1305, XNonce};
use zeroize::{Zeroize, ZeroizeOnDrop, Zeroizing};

/// Envelope version byte written before every nonce.
pub const ENVELOPE_VERSION: u8 = 1;
pub const NONCE_LEN: usize = 24;
pub const TAG_LEN: usize = 16;
/// Bytes a sealed object is longer than its plaintext.
pub const SEAL_OVERHEAD: usize = 1 + NONCE_LEN + TAG_LEN;
/// Bytes before the ciphertext: the version and the nonce.
pub const SEAL_HEADER_LEN: usize = 1 + NONCE_LEN;

/// What a sealed object is; part of the associated data.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Domain {
    Config,
    Snapshot,
    Index,
    Lock,
    PackHeader,
    /// The master key inside a key file, sealed with the password key.
    KeyFile,
    /// A restore drill's record (`drills/`).
    Drill,
}

impl Domain {
    fn label(self) -> &'static [u8] {
        match self {
            Domain::Config => b"cairn/v1/config",
            Domain::Snapshot => b"cairn/v1/snapshot",
            Domain::Index => b"cairn/v1/index",
            Domain::Lock => b"cairn/v1/lock",
            Domain::PackHeader => b"cairn/v1/pack-header",
            Domain::KeyFile => b"cairn/v1/key",
            Domain::Drill => b"cairn/v1/drill",
        }
    }
}

use crate::sys::memory::KdfMemory;
use crate::sys::random_bytes;

/// The repository's master secret and the sub-keys derived from it.
#[derive(Clone, Zeroize, ZeroizeOnDrop)]
pub struct MasterKey {
    secret: [u8; 32],
    encryption: [u8; 32],
    blob_id: [u8; 32],
    chunker_seed: u64,
}

impl std::fmt::Debug for MasterKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("MasterKey(redacted)")
    }
}

impl MasterKey {
    pub fn generate() -> MasterKey {
        MasterKey::from_secret(&Zeroizing::new(random_bytes()))
    }

    /// Borrowed, not moved: a moved array leaves a copy on the caller's
    /// stack that nothing wipes; the caller's `Zeroizing` wipes the one it
    /// lends.
    pub fn from_secret(secret: &[u8; 32]) -> MasterKey {
        MasterKey {
            secret: *secret,
            encryption: blake3::derive_key("cairn v1 encryption key", secret),
            blob_id: blake3::derive_key("cairn v1 blob id key", secret),
            chunker_seed: {
                let bytes = blake3::derive_key("cairn v1 chunker seed", secret);
                u64::from_le_bytes(bytes[..8].try_into().expect("8 bytes"))
            },
        }
    }

    /// The keys that make blob ids and chunk boundaries, for a repository
    /// that is to share them (`init --copy-chunker-params`).
    pub fn id_keys(&self) -> IdKeys {
        IdKeys {
            blob_id_key: self.blob_id,
            chunker_seed: self.chunker_seed,
        }
    }

    /// This key with another repository's blob-id key and chunker seed (its
    /// config's `id_keys`); the encryption key stays this one's.
    pub fn with_id_keys(mut self, keys: &IdKeys) -> MasterKey {
        self.blob_id = keys.blob_id_key;
        self.chunker_seed = keys.chunker_seed;
        self
    }

    pub fn secret(&self) -> &[u8; 32] {
        &self.secret
    }

    /// Keyed BLAKE3 of a blob's plaintext. Keyed so that the repository does
    /// not reveal whether it holds a known file (no confirmation attacks).
    pub fn blob_id(&self, plaintext: &[u8]) -> BlobId {
        BlobId(crate::format::id::Id(
            *blake3::keyed_hash(&self.blob_id, plaintext).as_bytes(),
        ))
    }

    /// Seed for the chunker's gear table, so chunk boundaries (and hence chunk
    /// sizes) do not fingerprint known files either.
    pub fn chunker_seed(&self) -> u64 {
        self.chunker_seed
    }

    pub fn seal(&self, domain: Domain, plaintext: &[u8]) -> Vec<u8> {
        seal_with(&self.encryption, domain.label(), &[], plaintext)
    }

    pub fn open(&self, domain: Domain, sealed: &[u8]) -> Result<Vec<u8>> {
        open_with(&self.encryption, domain.label(), &[], sealed)
    }

    /// Seals a blob; its kind and id are bound as associated data.
    pub fn seal_blob(&self, kind_byte: u8, id: &BlobId, plaintext: &[u8]) -> Vec<u8> {
        let extra = blob_aad(kind_byte, id);
        seal_with(&self.encryption, b"cairn/v1/blob", &extra, plaintext)
    }

    /// `seal_blob` without a copy: `buf` holds `SEAL_HEADER_LEN` bytes of
    /// room, then the plaintext; it becomes the sealed blob (room for the
    /// tag is best reserved by the caller).
    pub fn seal_blob_in_place(&self, kind_byte: u8, id: &BlobId, buf: &mut Vec<u8>) {
        let extra = blob_aad(kind_byte, id);
        seal_in_place(&self.encryption, b"cairn/v1/blob", &extra, buf)
    }

    pub fn open_blob(&self, kind_byte: u8, id: &BlobId, sealed: &[u8]) -> Result<Vec<u8>> {
        let extra = blob_aad(kind_byte, id);
        open_with(&self.encryption, b"cairn/v1/blob", &extra, sealed)
    }
}

/// A blob-id key and chunker seed shared between repositories, stored in
/// the sealed config of the one made with `init --copy-chunker-params`
/// (docs/FORMAT.md 4.1, 12): blobs then get the same ids in both, so a copy
/// between them moves blobs by id. JSON: `{"blob_id_key": "<64 hex>",
/// "chunker_seed": <u64>}`.
#[derive(Clone, PartialEq, Eq, Zeroize, ZeroizeOnDrop)]
pub struct IdKeys {
    blob_id_key: [u8; 32],
    chunker_seed: u64,
}

impl std::fmt::Debug for IdKeys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("IdKeys(redacted)")
    }
}

#[derive(serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct IdKeysJson {
    blob_id_key: String,
    chunker_seed: u64,
}

impl serde::Serialize for IdKeys {
    fn serialize<S: serde::Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        IdKeysJson {
            blob_id_key: hex::encode(self.blob_id_key),
            chunker_seed: self.chunker_seed,
        }
        .serialize(s)
    }
}

impl<'de> serde::Deserialize<'de> for IdKeys {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        let json = IdKeysJson::deserialize(d)?;
        let mut blob_id_key = [0u8; 32];
        if json.blob_id_key.len() != 64 {
            return Err(serde::de::Error::custom("blob_id_key is not 64 hex digits"));
        }
        hex::decode_to_slice(&json.blob_id_key, &mut blob_id_key)
            .map_err(|_| serde::de::Error::custom("blob_id_key is not hex"))?;
        Ok(IdKeys {
            blob_id_key,
            chunker_seed: json.chunker_seed,
        })
    }
}

fn blob_aad(kind_byte: u8, id: &BlobId) -> [u8; 33] {
    let mut out = [0u8; 33];
    out[0] = kind_byte;
    out[1..].copy_from_slice(id.as_bytes());
    out
}

fn seal_with(key: &[u8; 32], label: &[u8], extra: &[u8], plaintext: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(SEAL_OVERHEAD + plaintext.len());
    out.resize(SEAL_HEADER_LEN, 0);
    out.extend_from_slice(plaintext);
    seal_in_place(key, label, extra, &mut out);
    debug_assert_eq!(out.len(), plaintext.len() + SEAL_OVERHEAD);
    out
}

/// Seals `buf[SEAL_HEADER_LEN..]` in place, fills in the header before it
/// and appends the tag: the same bytes as `seal_with`.
fn seal_in_place(key: &[u8; 32], label: &[u8], extra: &[u8], buf: &mut Vec<u8>) {
    assert!(buf.len() >= SEAL_HEADER_LEN, "no room for the seal header");
    let cipher = XChaCha20Poly1305::new(key.into());
    let nonce: [u8; NONCE_LEN] = random_bytes();
    let aad = [label, extra].concat();
    let tag = cipher
        .encrypt_in_place_detached(
            XNonce::from_slice(&nonce),
            &aad,
            &mut buf[SEAL_HEADER_LEN..],
        )
        .expect("XChaCha20-Poly1305 encryption cannot fail for in-memory sizes");
    buf[0] = ENVELOPE_VERSION;
    buf[1..SEAL_HEADER_LEN].copy_from_slice(&nonce);
    buf.extend_from_slice(&tag);
}

fn open_with(key: &[u8; 32], label: &[u8], extra: &[u8], sealed: &[u8]) -> Result<Vec<u8>> {
    if sealed.len() < SEAL_OVERHEAD {
        return Err(Error::corrupt("sealed object is shorter than its envelope"));
    }
    if sealed[0] != ENVELOPE_VERSION {
        return Err(Error::new(
            ErrorKind::UnsupportedVersion,
            format!("unknown envelope version {}", sealed[0]),
        ));
    }
    let cipher = XChaCha20Poly1305::new(key.into());
    let nonce = XNonce::from_slice(&sealed[1..1 + NONCE_LEN]);
    let aad = [label, extra].concat();
    cipher
        .decrypt(
            nonce,
            Payload {
                msg: &sealed[1 + NONCE_LEN..],
                aad: &aad,
            },
        )
        .map_err(|_| Error::corrupt("authentication failed (data damaged or not ours)"))
}

/// Argon2id cost parameters, stored in every key file.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct KdfParams {
    pub memory_kib: u32,
    pub iterations: u32,
    pub parallelism: u32,
}

impl KdfParams {
    /// RFC 9106's second recommended option: 64 MiB, 3 passes, 4 lanes.
    pub const DEFAULT: KdfParams = KdfParams {
        memory_kib: 64 * 1024,
        iterations: 3,
        parallelism: 4,
    };
    /// Upper limits a key file may ask for: a key file is written by
    /// whoever can write to `keys/`, and every command runs Argon2 for the
    /// key files it tries, so a planted one must not stall it (4 GiB × 64
    /// passes took minutes) or exhaust memory. The cost cap (memory ×
    /// passes) is about 21 times the default and takes about 2 s on a
    /// 2-core machine (1 GiB × 4 passes: 1.8 s, 1 GiB resident); a key file
    /// over any cap is skipped as damaged.
    pub const MEMORY_KIB_MAX: u32 = 1024 * 1024;
    pub const ITERATIONS_MAX: u32 = 16;
    pub const PARALLELISM_MAX: u32 = 64;
    /// `memory_kib × iterations` at most: 1 GiB × 4 passes.
    pub const COST_MAX: u64 = 4 * 1024 * 1024;

    pub fn validate(&self) -> Result<()> {
        let ok = (1..=Self::PARALLELISM_MAX).contains(&self.parallelism)
            && (1..=Self::ITERATIONS_MAX).contains(&self.iterations)
            && self.memory_kib >= 8 * self.parallelism
            && self.memory_kib <= Self::MEMORY_KIB_MAX
            && u64::from(self.memory_kib) * u64::from(self.iterations) <= Self::COST_MAX;
        if ok {
            Ok(())
        } else {
            Err(Error::corrupt(format!(
                "key file asks for Argon2 parameters beyond the limits \
                 (memory {} KiB, {} passes, {} lanes; at most {} KiB, {} passes, \
                 {} KiB × passes)",
                self.memory_kib,
                self.iterations,
                self.parallelism,
                Self::MEMORY_KIB_MAX,
                Self::ITERATIONS_MAX,
                Self::COST_MAX
            )))
        }
    }
}

/// Derives the 32-byte key-file key from a password with Argon2id. The key
/// is wiped from memory when the caller drops it.
pub fn derive_password_key(
    password: &[u8],
    salt: &[u8],
    params: &KdfParams,
) -> Result<Zeroizing<[u8; 32]>> {
    params.validate()?;
    let argon_params = argon2::Params::new(
        params.memory_kib,
        params.iterations,
        params.parallelism,
        Some(32),
    )
    .map_err(|e| Error::corrupt(format!("bad Argon2 parameters: {e}")))?;
    let block_count = argon_params.block_count();
    let argon = argon2::Argon2::new(
        argon2::Algorithm::Argon2id,
        argon2::Version::V0x13,
        argon_params,
    );
    let mut out = Zeroizing::new([0u8; 32]);
    let result = match KdfMemory::new(block_count) {
        Some(mut memory) => {
            argon.hash_password_into_with_memory(password, salt, &mut *out, memory.blocks())
        }
        None => argon.hash_password_into(password, salt, &mut *out),
    };
    result.map_err(|e| Error::corrupt(format!("Argon2 failed: {e}")))?;
    Ok(out)
}

/// Seals the master secret under a password-derived key (key files).
pub fn seal_secret(password_key: &[u8; 32], secret: &[u8; 32]) -> Vec<u8> {
    seal_with(password_key, Domain::KeyFile.label(), &[], secret)
}

/// Opens a key file's sealed secret; failure means a wrong password (or a
/// damaged key file, which the caller cannot tell apart).
pub fn open_secret(password_key: &[u8; 32], sealed: &[u8]) -> Result<Zeroizing<[u8; 32]>> {
    let plain = Zeroizing::new(
        open_with(password_key, Domain::KeyFile.label(), &[], sealed)
            .map_err(|_| Error::new(ErrorKind::WrongPassword, "wrong password or no key found"))?,
    );
    if plain.len() != 32 {
        return Err(Error::corrupt("key file secret has the wrong length"));
    }
    let mut secret = Zeroizing::new([0u8; 32]);
    secret.copy_from_slice(&plain);
    Ok(secret)
}

/// Label of a key file's sealed Ed25519 signing seed (docs/FORMAT.md 4.4):
/// not the master secret's, so one sealed value cannot stand for the other.
const SIGNING_SEED_LABEL: &[u8] = b"cairn/v1/key-signing-seed";

/// Seals a key file's Ed25519 signing seed under its password key.
pub fn seal_signing_seed(password_key: &[u8; 32], seed: &[u8; 32]) -> Vec<u8> {
    seal_with(password_key, SIGNING_SEED_LABEL, &[], seed)
}

/// Opens a key file's sealed signing seed. The password already opened the
/// master secret, so a failure here is damage, not a wrong password.
pub fn open_signing_seed(password_key: &[u8; 32], sealed: &[u8]) -> Result<Zeroizing<[u8; 32]>> {
    let plain = Zeroizing::new(
        open_with(password_key, SIGNING_SEED_LABEL, &[], sealed)
            .map_err(|_| Error::corrupt("key file signing key does not open"))?,
    );
    if plain.len() != 32 {
        return Err(Error::corrupt("key file signing key has the wrong length"));
    }
    let mut seed = Zeroizing::new([0u8; 32]);
    seed.copy_from_slice(&plain);
    Ok(seed)
}

#[cfg(test)]
mod tests {
    /// Argon2id output pinned for fixed inputs: every existing key file
    /// depends on it, so a crate upgrade (or its parallel lanes) must not
    /// change it. Computed with argon2 0.5.3 and equal to the reference
    /// implementation (libargon2 through argon2-cffi).
    #[test]
    fn argon2id_output_is_stable() {
        let params = KdfParams {
            memory_kib: 1024,
            iterations: 3,
            parallelism: 4,
        };
        let key = derive_password_key(b"correct horse", &[7u8; 16], &params).unwrap();
        assert_eq!(hex::encode(*key), ARGON2ID_GOLDEN);
    }

    /// The huge-page memory of `KdfMemory` gives the same key as the
    /// memory Argon2 allocates itself, at the default cost (64 MiB, whole
    /// huge pages) and at a size that is not a whole number of them. The
    /// mapped memory is used directly, so a failed mapping cannot make the
    /// test compare Argon2 with itself.
    #[test]
    fn kdf_memory_of_our_own_gives_argon2s_result() {
        for params in [
            KdfParams::DEFAULT,
            KdfParams {
                memory_kib: 3 * 1024 + 8,
                iterations: 1,
                parallelism: 2,
            },
        ] {
            let argon_params = argon2::Params::new(
                params.memory_kib,
                params.iterations,
                params.parallelism,
                Some(32),
            )
            .unwrap();
            let mut memory = KdfMemory::new(argon_params.block_count()).unwrap();
            assert_eq!(memory.blocks().as_ptr() as usize % KdfMemory::HUGE_PAGE, 0);
            assert_eq!(memory.blocks().len(), argon_params.block_count());
            let argon = argon2::Argon2::new(
                argon2::Algorithm::Argon2id,
                argon2::Version::V0x13,
                argon_params,
            );
            let mut ours = [0u8; 32];
            argon
                .hash_password_into_with_memory(b"pw", &[9u8; 16], &mut ours, memory.blocks())
                .unwrap();
            let mut theirs = [0u8; 32];
            argon
                .hash_password_into(b"pw", &[9u8; 16], &mut theirs)
                .unwrap();
            assert_eq!(ours, theirs, "{params:?}");
            // And the library's path gives the same.
            let derived = derive_password_key(b"pw", &[9u8; 16], &params).unwrap();
            assert_eq!(*derived, theirs, "{params:?}");
        }
    }

    const ARGON2ID_GOLDEN: &str =
        "71374a3855dfbcbe56889c53d58d52f4c52a9cd0f48e2ce7aefc0d39d5f348d8";

    use super::*;

    #[test]
    fn argon2_cost_is_capped_below_what_stalls_a_command() {
        let at = |memory_kib, iterations| KdfParams {
            memory_kib,
            iterations,
            parallelism: 4,
        };
        assert!(KdfParams::DEFAULT.validate().is_ok());
        assert!(at(1024 * 1024, 4).validate().is_ok());
        assert!(at(256 * 1024, 16).validate().is_ok());
        for (m, t) in [
            (1024 * 1024, 5),
            (1024 * 1024 + 8, 1),
            (64, 17),
            (4 << 20, 64),
        ] {
            let e = at(m, t).validate().unwrap_err();
            assert_eq!(e.kind(), crate::error::ErrorKind::Corrupt);
            assert!(e.to_string().contains("beyond the limits"), "{e}");
        }
    }
    use proptest::prelude::*;

    proptest! {
        #[test]
        fn seal_open_round_trip_and_any_bit_flip_is_rejected(
            data in proptest::collection::vec(any::<u8>(), 0..2048),
            flip in any::<prop::sample::Index>(),
        ) {
            let key = MasterKey::generate();
            let sealed = key.seal(Domain::Snapshot, &data);
            prop_assert_eq!(key.open(Domain::Snapshot, &sealed).unwrap(), data);
            let mut damaged = sealed.clone();
            let bit = flip.index(damaged.len() * 8);
            damaged[bit / 8] ^= 1 << (bit % 8);
            prop_assert!(key.open(Domain::Snapshot, &damaged).is_err());
            // The same bytes do not open as another kind of object.
            prop_assert!(key.open(Domain::Index, &sealed).is_err());
        }
    }

    #[test]
    fn blob_sealed_under_one_id_does_not_open_under_another() {
        let key = MasterKey::generate();
        let id = key.blob_id(b"hello");
        let other = key.blob_id(b"world");
        let sealed = key.seal_blob(0, &id, b"hello");
        assert_eq!(key.open_blob(0, &id, &sealed).unwrap(), b"hello");
        assert!(key.open_blob(0, &other, &sealed).is_err());
        assert!(key.open_blob(1, &id, &sealed).is_err());
    }

    #[test]
    fn blob_ids_depend_on_the_key() {
        let a = MasterKey::generate();
        let b = MasterKey::generate();
        assert_ne!(a.blob_id(b"same"), b.blob_id(b"same"));
        assert_eq!(a.blob_id(b"same"), a.blob_id(b"same"));
    }
}
