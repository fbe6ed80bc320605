//! The repository config: sealed JSON, written once at `init`.

use crate::error::{Error, ErrorKind, Result};
use crate::format::chunker::ChunkerParams;
use crate::format::crypto::IdKeys;
use crate::format::id::RepositoryId;
use serde::{Deserialize, Serialize};

/// The repository format version this build writes for repositories with
/// keys of their own.
pub const REPOSITORY_VERSION: u32 = 1;
/// Version 2 adds `id_keys` (`init --copy-chunker-params`), written only by
/// repositories that have it, so that older readers refuse them instead of
/// computing blob ids with the wrong key.
pub const REPOSITORY_VERSION_MAX: u32 = 2;
/// Largest config plaintext a reader accepts.
pub const CONFIG_SIZE_MAX: usize = 64 * 1024;
/// Default target pack size; see docs/FORMAT.md, "Pack size".
pub const PACK_SIZE_TARGET_DEFAULT: u32 = 32 * 1024 * 1024;

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    pub version: u32,
    pub id: RepositoryId,
    pub chunker: ChunkerConfig,
    pub compression: CompressionConfig,
    pub pack_size_target: u32,
    /// Another repository's blob-id key and chunker seed, used instead of
    /// this repository's own (version 2; docs/FORMAT.md 12).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub id_keys: Option<IdKeys>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ChunkerConfig {
    /// Always "fastcdc-v2020" in version 1.
    pub algorithm: String,
    pub size_min: u32,
    pub size_avg: u32,
    pub size_max: u32,
    /// FastCDC normalization level; always 1 in version 1.
    pub normalization: u8,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CompressionConfig {
    /// Always "zstd" in version 1; each blob also records its own codec.
    pub codec: String,
    pub level: i32,
}

impl Config {
    pub fn new(chunker: ChunkerParams, zstd_level: i32, pack_size_target: u32) -> Config {
        Config {
            version: REPOSITORY_VERSION,
            id: RepositoryId(crate::format::id::Id::random()),
            chunker: ChunkerConfig {
                algorithm: "fastcdc-v2020".into(),
                size_min: chunker.size_min,
                size_avg: chunker.size_avg,
                size_max: chunker.size_max,
                normalization: 1,
            },
            compression: CompressionConfig {
                codec: "zstd".into(),
                level: zstd_level,
            },
            pack_size_target,
            id_keys: None,
        }
    }

    /// This config sharing `keys` (a version 2 config), if there are any.
    pub fn sharing(mut self, keys: Option<IdKeys>) -> Config {
        if keys.is_some() {
            self.version = 2;
            self.id_keys = keys;
        }
        self
    }

    pub fn chunker_params(&self) -> ChunkerParams {
        ChunkerParams {
            size_min: self.chunker.size_min,
            size_avg: self.chunker.size_avg,
            size_max: self.chunker.size_max,
        }
    }

    pub fn validate(&self) -> Result<()> {
        if !(REPOSITORY_VERSION..=REPOSITORY_VERSION_MAX).contains(&self.version) {
            return Err(Error::new(
                ErrorKind::UnsupportedVersion,
                format!("repository version {} is not supported (this cairn reads {REPOSITORY_VERSION} to {REPOSITORY_VERSION_MAX})", self.version),
            ));
        }
        if (self.version == 2) != self.id_keys.is_some() {
            return Err(Error::corrupt(
                "config has id_keys without version 2, or version 2 without id_keys",
            ));
        }
        if self.chunker.algorithm != "fastcdc-v2020" || self.chunker.normalization != 1 {
            return Err(Error::new(
                ErrorKind::UnsupportedVersion,
                "unknown chunker in config",
            ));
        }
        self.chunker_params()
            .validate()
            .map_err(|e| Error::corrupt(e.to_string()))?;
        if self.compression.codec != "zstd" || !(-7..=22).contains(&self.compression.level) {
            return Err(Error::corrupt(
                "config has an unsupported compression setting",
            ));
        }
        if !(1024 * 1024..=512 * 1024 * 1024).contains(&self.pack_size_target) {
            return Err(Error::corrupt("config pack_size_target is out of range"));
        }
        Ok(())
    }

    pub fn encode(&self) -> Vec<u8> {
        serde_json::to_vec_pretty(self).expect("config serializes")
    }

    pub fn decode(plain: &[u8]) -> Result<Config> {
        if plain.len() > CONFIG_SIZE_MAX {
            return Err(Error::corrupt("config is larger than the format allows"));
        }
        let config: Config = serde_json::from_slice(plain)
            .map_err(|e| Error::corrupt(format!("config is not valid: {e}")))?;
        config.validate()?;
        Ok(config)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        #[test]
        fn config_round_trip(level in -7i32..=22, target in (1u32 << 20)..(1u32 << 29)) {
            let config = Config::new(ChunkerParams::DEFAULT, level, target);
            prop_assert_eq!(Config::decode(&config.encode()).unwrap(), config);
        }

        #[test]
        fn config_decoder_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..300)) {
            let _ = Config::decode(&bytes);
        }
    }

    #[test]
    fn a_newer_version_is_refused_by_kind() {
        let mut config = Config::new(ChunkerParams::DEFAULT, 3, PACK_SIZE_TARGET_DEFAULT);
        config.version = 3;
        let err = Config::decode(&config.encode()).unwrap_err();
        assert_eq!(err.kind(), ErrorKind::UnsupportedVersion);
    }

    #[test]
    fn shared_id_keys_round_trip_and_need_version_2() {
        let keys = crate::format::crypto::MasterKey::generate().id_keys();
        let config = Config::new(ChunkerParams::DEFAULT, 3, PACK_SIZE_TARGET_DEFAULT)
            .sharing(Some(keys.clone()));
        assert_eq!(config.version, 2);
        let decoded = Config::decode(&config.encode()).unwrap();
        assert_eq!(decoded.id_keys, Some(keys));
        let mut wrong = config.clone();
        wrong.version = 1;
        assert_eq!(
            Config::decode(&wrong.encode()).unwrap_err().kind(),
            ErrorKind::Corrupt
        );
        let mut plain = Config::new(ChunkerParams::DEFAULT, 3, PACK_SIZE_TARGET_DEFAULT);
        plain.version = 2;
        assert!(Config::decode(&plain.encode()).is_err());
    }
}
