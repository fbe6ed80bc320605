//! Key files: the master secret sealed under a password-derived key. Plain
//! JSON (not sealed with the master key: it is what unlocks the master key).
//! Several key files let several passwords open one repository.

use crate::error::{Error, Result};
use crate::format::audit::{PublicKey, SigningKey};
use crate::format::crypto::{self, KdfParams, MasterKey};
use serde::{Deserialize, Serialize};

/// Largest key file a reader accepts.
pub const KEY_FILE_SIZE_MAX: usize = 64 * 1024;
/// Version 2 adds the Ed25519 signing key (`signing_public`, `signing`);
/// version 1 files, without one, are still read.
pub const KEY_FILE_VERSION: u32 = 2;
const SALT_LEN: usize = 32;

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KeyFile {
    pub version: u32,
    pub created: String,
    pub hostname: String,
    pub username: String,
    /// Always "argon2id" in version 1.
    pub kdf: String,
    pub kdf_params: KdfParams,
    /// Hex, 32 bytes.
    pub salt: String,
    /// Hex of the sealed 32-byte master secret.
    pub data: String,
    /// Hex of the Ed25519 public key this key file signs audit entries
    /// with (version 2).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub signing_public: Option<String>,
    /// Hex of its sealed 32-byte seed, under the same password key.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub signing: Option<String>,
}

impl KeyFile {
    /// A key file for `password`, with `signing` as its signing key (a
    /// new one when `None`: every key file cairn writes now has one).
    pub fn create(
        master: &MasterKey,
        password: &[u8],
        params: KdfParams,
        hostname: &str,
        username: &str,
    ) -> Result<KeyFile> {
        Self::create_signing(master, None, password, params, hostname, username)
    }

    /// `create` keeping a signing key (`key passwd`: the same signer, so
    /// its audit chain goes on).
    pub fn create_signing(
        master: &MasterKey,
        signing: Option<&SigningKey>,
        password: &[u8],
        params: KdfParams,
        hostname: &str,
        username: &str,
    ) -> Result<KeyFile> {
        let salt: [u8; SALT_LEN] = crate::sys::random_bytes();
        let password_key = crypto::derive_password_key(password, &salt, &params)?;
        let fresh;
        let signing = match signing {
            Some(key) => key,
            None => {
                fresh = SigningKey::generate();
                &fresh
            }
        };
        Ok(KeyFile {
            signing_public: Some(signing.public().to_hex()),
            signing: Some(hex::encode(crypto::seal_signing_seed(
                &password_key,
                &signing.seed(),
            ))),
            version: KEY_FILE_VERSION,
            created: chrono::Local::now().to_rfc3339(),
            hostname: hostname.into(),
            username: username.into(),
            kdf: "argon2id".into(),
            kdf_params: params,
            salt: hex::encode(salt),
            data: hex::encode(crypto::seal_secret(&password_key, master.secret())),
        })
    }

    /// Derives the password key and opens the master secret. A wrong
    /// password gives `ErrorKind::WrongPassword`.
    pub fn open(&self, password: &[u8]) -> Result<MasterKey> {
        self.open_signing(password).map(|(master, _)| master)
    }

    /// `open`, and the signing key too (`None` for a version 1 file). A
    /// signing key whose public half is not the one the file names is
    /// damage.
    pub fn open_signing(&self, password: &[u8]) -> Result<(MasterKey, Option<SigningKey>)> {
        let salt =
            hex::decode(&self.salt).map_err(|_| Error::corrupt("key file salt is not hex"))?;
        let sealed =
            hex::decode(&self.data).map_err(|_| Error::corrupt("key file data is not hex"))?;
        let password_key = crypto::derive_password_key(password, &salt, &self.kdf_params)?;
        let master = MasterKey::from_secret(&*crypto::open_secret(&password_key, &sealed)?);
        let (Some(public), Some(sealed)) = (&self.signing_public, &self.signing) else {
            return Ok((master, None));
        };
        let sealed =
            hex::decode(sealed).map_err(|_| Error::corrupt("key file signing key is not hex"))?;
        let signing = SigningKey::from_seed(&*crypto::open_signing_seed(&password_key, &sealed)?);
        if signing.public() != PublicKey::from_hex(public)? {
            return Err(Error::corrupt(
                "key file signing key does not match its public key",
            ));
        }
        Ok((master, Some(signing)))
    }

    /// The public key this key file signs with, if it has one.
    pub fn signer(&self) -> Option<PublicKey> {
        self.signing_public
            .as_deref()
            .and_then(|hex| PublicKey::from_hex(hex).ok())
    }

    pub fn encode(&self) -> Vec<u8> {
        serde_json::to_vec_pretty(self).expect("key file serializes")
    }

    pub fn decode(bytes: &[u8]) -> Result<KeyFile> {
        let is_hex = |s: &str| s.bytes().all(|b| b.is_ascii_hexdigit());
        if bytes.len() > KEY_FILE_SIZE_MAX {
            return Err(Error::corrupt("key file is larger than the format allows"));
        }
        let key: KeyFile = serde_json::from_slice(bytes)
            .map_err(|e| Error::corrupt(format!("key file is not valid: {e}")))?;
        if !(1..=KEY_FILE_VERSION).contains(&key.version) || key.kdf != "argon2id" {
            return Err(Error::corrupt("key file has an unknown version or KDF"));
        }
        // Version 1 has no signing key; version 2 has both halves.
        let signing_ok = match (&key.signing_public, &key.signing) {
            (None, None) => key.version == 1,
            (Some(public), Some(sealed)) => {
                key.version == 2
                    && public.len() == 64
                    && sealed.len() == (32 + crypto::SEAL_OVERHEAD) * 2
                    && is_hex(public)
                    && is_hex(sealed)
            }
            _ => false,
        };
        if !signing_ok {
            return Err(Error::corrupt(
                "key file signing key does not fit its version",
            ));
        }
        key.kdf_params.validate()?;
        if key.salt.len() != SALT_LEN * 2
            || key.data.len() != (32 + crypto::SEAL_OVERHEAD) * 2
            || !is_hex(&key.salt)
            || !is_hex(&key.data)
        {
            return Err(Error::corrupt("key file salt or data has the wrong length"));
        }
        Ok(key)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::error::ErrorKind;
    use proptest::prelude::*;

    const FAST: KdfParams = KdfParams {
        memory_kib: 64,
        iterations: 1,
        parallelism: 1,
    };

    #[test]
    fn key_file_round_trip_and_wrong_password() {
        let master = MasterKey::generate();
        let file = KeyFile::create(&master, b"secret", FAST, "host", "user").unwrap();
        let decoded = KeyFile::decode(&file.encode()).unwrap();
        assert_eq!(decoded, file);
        assert_eq!(decoded.open(b"secret").unwrap().secret(), master.secret());
        let (_, signing) = decoded.open_signing(b"secret").unwrap();
        assert_eq!(signing.unwrap().public(), decoded.signer().unwrap());
        assert_eq!(
            decoded.open(b"wrong").unwrap_err().kind(),
            ErrorKind::WrongPassword
        );
    }

    #[test]
    fn hostile_kdf_parameters_are_refused_before_allocating() {
        let master = MasterKey::generate();
        let mut file = KeyFile::create(&master, b"pw", FAST, "h", "u").unwrap();
        file.kdf_params.memory_kib = u32::MAX;
        assert!(KeyFile::decode(&file.encode()).is_err());
    }

    #[test]
    fn a_version_1_key_file_without_a_signing_key_still_opens() {
        let master = MasterKey::generate();
        let mut file = KeyFile::create(&master, b"pw", FAST, "h", "u").unwrap();
        file.version = 1;
        file.signing = None;
        file.signing_public = None;
        let decoded = KeyFile::decode(&file.encode()).unwrap();
        let (opened, signing) = decoded.open_signing(b"pw").unwrap();
        assert_eq!(opened.secret(), master.secret());
        assert!(signing.is_none());
        // A version 2 file must carry one; a swapped public key is damage.
        file.version = 2;
        assert!(KeyFile::decode(&file.encode()).is_err());
        let mut swapped = KeyFile::create(&master, b"pw", FAST, "h", "u").unwrap();
        swapped.signing_public = Some(SigningKey::from_seed(&[1; 32]).public().to_hex());
        let e = swapped.open_signing(b"pw").unwrap_err();
        assert_eq!(e.kind(), ErrorKind::Corrupt);
    }

    proptest! {
        #[test]
        fn key_decoder_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..400)) {
            let _ = KeyFile::decode(&bytes);
        }
    }
}
