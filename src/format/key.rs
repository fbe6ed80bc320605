//! Key files: the master secret sealed under a password-derived key. Plain
//! JSON (not sealed with the master key: it is what unlocks the master key).
//! Several key files let several passwords open one repository.

use crate::error::{Error, Result};
use crate::format::crypto::{self, KdfParams, MasterKey};
use serde::{Deserialize, Serialize};

/// Largest key file a reader accepts.
pub const KEY_FILE_SIZE_MAX: usize = 64 * 1024;
pub const KEY_FILE_VERSION: u32 = 1;
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
}

impl KeyFile {
    pub fn create(
        master: &MasterKey,
        password: &[u8],
        params: KdfParams,
        hostname: &str,
        username: &str,
    ) -> Result<KeyFile> {
        let salt: [u8; SALT_LEN] = crate::sys::random_bytes();
        let password_key = crypto::derive_password_key(password, &salt, &params)?;
        Ok(KeyFile {
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
        let salt =
            hex::decode(&self.salt).map_err(|_| Error::corrupt("key file salt is not hex"))?;
        let sealed =
            hex::decode(&self.data).map_err(|_| Error::corrupt("key file data is not hex"))?;
        let password_key = crypto::derive_password_key(password, &salt, &self.kdf_params)?;
        Ok(MasterKey::from_secret(&*crypto::open_secret(
            &password_key,
            &sealed,
        )?))
    }

    pub fn encode(&self) -> Vec<u8> {
        serde_json::to_vec_pretty(self).expect("key file serializes")
    }

    pub fn decode(bytes: &[u8]) -> Result<KeyFile> {
        if bytes.len() > KEY_FILE_SIZE_MAX {
            return Err(Error::corrupt("key file is larger than the format allows"));
        }
        let key: KeyFile = serde_json::from_slice(bytes)
            .map_err(|e| Error::corrupt(format!("key file is not valid: {e}")))?;
        if key.version != KEY_FILE_VERSION || key.kdf != "argon2id" {
            return Err(Error::corrupt("key file has an unknown version or KDF"));
        }
        key.kdf_params.validate()?;
        let is_hex = |s: &str| s.bytes().all(|b| b.is_ascii_hexdigit());
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

    proptest! {
        #[test]
        fn key_decoder_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..400)) {
            let _ = KeyFile::decode(&bytes);
        }
    }
}
