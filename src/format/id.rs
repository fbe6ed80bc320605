//! Typed 32-byte identifiers. A raw `[u8; 32]` never crosses a module
//! boundary: the type says what the id names.

use crate::error::{Error, Result};
use std::fmt;

/// Length of every id in bytes.
pub const ID_LEN: usize = 32;

/// The untyped 32-byte value behind every id.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct Id(pub [u8; ID_LEN]);

impl Id {
    pub fn to_hex(&self) -> String {
        hex::encode(self.0)
    }

    pub fn from_hex(text: &str) -> Result<Id> {
        let mut bytes = [0u8; ID_LEN];
        if text.len() != ID_LEN * 2 {
            return Err(Error::invalid(format!("not a 64-digit hex id: {text:?}")));
        }
        hex::decode_to_slice(text, &mut bytes)
            .map_err(|_| Error::invalid(format!("not a hex id: {text:?}")))?;
        Ok(Id(bytes))
    }

    /// BLAKE3 (unkeyed) of a repository file's bytes: its storage name.
    pub fn of_file_bytes(bytes: &[u8]) -> Id {
        Id(*blake3::hash(bytes).as_bytes())
    }

    pub fn random() -> Id {
        Id(crate::sys::random_bytes())
    }
}

/// Reads an id from a JSON (or any serde) string of 64 hex digits.
struct HexIdVisitor;

impl serde::de::Visitor<'_> for HexIdVisitor {
    type Value = Id;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a 64-digit hex id")
    }

    fn visit_str<E: serde::de::Error>(self, text: &str) -> std::result::Result<Id, E> {
        Id::from_hex(text).map_err(E::custom)
    }
}

impl fmt::Debug for Id {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", &self.to_hex()[..16])
    }
}

impl fmt::Display for Id {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.to_hex())
    }
}

macro_rules! typed_id {
    ($(#[$doc:meta])* $name:ident) => {
        $(#[$doc])*
        #[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
        pub struct $name(pub Id);

        impl $name {
            pub fn to_hex(&self) -> String {
                self.0.to_hex()
            }
            pub fn from_hex(text: &str) -> Result<Self> {
                Id::from_hex(text).map($name)
            }
            /// The first 8 hex digits, as shown in tables.
            pub fn short(&self) -> String {
                self.0.to_hex()[..8].to_string()
            }
            pub fn as_bytes(&self) -> &[u8; ID_LEN] {
                &(self.0).0
            }
        }

        impl fmt::Debug for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                write!(f, "{}({:?})", stringify!($name), self.0)
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                fmt::Display::fmt(&self.0, f)
            }
        }

        impl serde::Serialize for $name {
            fn serialize<S: serde::Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
                let mut hex = [0u8; 2 * ID_LEN];
                hex::encode_to_slice(self.as_bytes(), &mut hex).expect("64 digits for 32 bytes");
                s.serialize_str(std::str::from_utf8(&hex).expect("hex digits are ASCII"))
            }
        }

        impl<'de> serde::Deserialize<'de> for $name {
            fn deserialize<D: serde::Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
                // A visitor rather than a `String`: a tree lists one id per
                // blob of each file, and restoring a 688 MB dump decoded
                // 10,500 of them, each into an allocation of its own.
                d.deserialize_str(HexIdVisitor).map($name)
            }
        }
    };
}

typed_id!(
    /// Names a blob: keyed BLAKE3 of its plaintext.
    BlobId
);
typed_id!(
    /// Names a pack file: BLAKE3 of its bytes.
    PackId
);
typed_id!(
    /// Names a snapshot file: BLAKE3 of its bytes.
    SnapshotId
);
typed_id!(
    /// Names an index file: BLAKE3 of its bytes.
    IndexId
);
typed_id!(
    /// Names a key file: BLAKE3 of its bytes.
    KeyId
);
typed_id!(
    /// Names a lock file: BLAKE3 of its bytes.
    LockId
);
typed_id!(
    /// The repository's random identity, stored in `config`.
    RepositoryId
);
typed_id!(
    /// Names an audit entry: BLAKE3 of its bytes.
    AuditId
);
typed_id!(
    /// Names a drill record (`drills/`): BLAKE3 of its bytes.
    DrillId
);
typed_id!(
    /// Names a snapshot manifest (`manifests/`): BLAKE3 of its bytes.
    ManifestId
);
