//! Audit entries (docs/FORMAT.md section 18): one plaintext file per
//! operation, signed with Ed25519 by the key file that opened the
//! repository and chained to that signer's earlier entries, so an auditor
//! without the password can verify who did what and see history removed.
//!
//! Plaintext on purpose: the auditor has no key. An entry therefore holds
//! no file names or contents, only times, names of hosts and users,
//! operation names, repository ids and counts.

use crate::error::{Error, Result};
use crate::format::id::{AuditId, Id, RepositoryId, ID_LEN};
use ed25519_dalek::Signer;

/// First bytes of every audit entry.
pub const AUDIT_MAGIC: &[u8; 8] = b"CAIRNAUD";
pub const AUDIT_VERSION: u8 = 1;
/// Largest audit entry a reader accepts.
pub const AUDIT_ENTRY_SIZE_MAX: usize = 256 * 1024;
/// Most links (earlier entries of the same signer) one entry names.
pub const AUDIT_LINKS_MAX: usize = 64;
/// Most ids one entry names; an operation that touched more records the
/// first ones and the true number in its counts.
pub const AUDIT_IDS_MAX: usize = 4096;
/// Most named counts in one entry.
pub const AUDIT_COUNTS_MAX: usize = 64;
/// Longest host, user or operation name, and longest count name.
pub const AUDIT_NAME_MAX: usize = 256;
/// Longest detail text.
pub const AUDIT_DETAIL_MAX: usize = 1024;
/// Bytes of an Ed25519 signature.
pub const SIGNATURE_LEN: usize = 64;
/// What a signature covers before the entry's bytes, so a signature made
/// for an audit entry can never be presented as one over anything else.
const ENTRY_CONTEXT: &[u8] = b"cairn/v1/audit-entry\0";
/// The fixed part: magic, version, flags, repository, signer, seq, time,
/// pid, result, link count.
const FIXED_LEN: usize = 8 + 1 + 1 + ID_LEN + ID_LEN + 8 + 8 + 4 + 1 + 2;
const FLAG_SIGNED: u8 = 1;

/// An Ed25519 signing key (the secret half), as a key file carries it.
#[derive(Clone)]
pub struct SigningKey(ed25519_dalek::SigningKey);

impl SigningKey {
    pub fn generate() -> SigningKey {
        SigningKey::from_seed(&crate::sys::random_bytes())
    }

    pub fn from_seed(seed: &[u8; 32]) -> SigningKey {
        SigningKey(ed25519_dalek::SigningKey::from_bytes(seed))
    }

    /// The 32-byte seed (RFC 8032's private key), for sealing.
    pub fn seed(&self) -> zeroize::Zeroizing<[u8; 32]> {
        zeroize::Zeroizing::new(self.0.to_bytes())
    }

    pub fn public(&self) -> PublicKey {
        PublicKey(self.0.verifying_key().to_bytes())
    }

    /// Signs `message` with this key, under a domain context: callers pass
    /// the context (`ENTRY_CONTEXT`, a manifest's) as the first part.
    pub fn sign_parts(&self, parts: &[&[u8]]) -> [u8; SIGNATURE_LEN] {
        self.0.sign(&parts.concat()).to_bytes()
    }
}

impl std::fmt::Debug for SigningKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "SigningKey({})", self.public().short())
    }
}

/// An Ed25519 public key: who signed an entry.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct PublicKey(pub [u8; 32]);

impl PublicKey {
    pub fn to_hex(&self) -> String {
        hex::encode(self.0)
    }

    pub fn from_hex(text: &str) -> Result<PublicKey> {
        Id::from_hex(text)
            .map(|id| PublicKey(id.0))
            .map_err(|_| Error::invalid(format!("not a 64-digit hex public key: {text:?}")))
    }

    /// The first 16 hex digits, as reports show a signer.
    pub fn short(&self) -> String {
        self.to_hex()[..16].to_string()
    }

    /// Checks an Ed25519 signature over the concatenated parts (strict
    /// verification: no small-order keys, no malleable signatures).
    pub fn verify_parts(&self, parts: &[&[u8]], signature: &[u8; SIGNATURE_LEN]) -> bool {
        let Ok(key) = ed25519_dalek::VerifyingKey::from_bytes(&self.0) else {
            return false;
        };
        let signature = ed25519_dalek::Signature::from_bytes(signature);
        key.verify_strict(&parts.concat(), &signature).is_ok()
    }
}

impl std::fmt::Debug for PublicKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "PublicKey({})", self.short())
    }
}

/// How an operation ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    Ok,
    Failed,
    /// Refused before doing anything (a retention lock, a lost lock).
    Refused,
}

impl Outcome {
    fn byte(self) -> u8 {
        match self {
            Outcome::Ok => 0,
            Outcome::Failed => 1,
            Outcome::Refused => 2,
        }
    }

    fn from_byte(b: u8) -> Result<Outcome> {
        Ok(match b {
            0 => Outcome::Ok,
            1 => Outcome::Failed,
            2 => Outcome::Refused,
            _ => return Err(Error::corrupt("audit entry has an unknown result")),
        })
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Outcome::Ok => "ok",
            Outcome::Failed => "failed",
            Outcome::Refused => "refused",
        }
    }
}

/// What an id in an entry names.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum IdKind {
    /// A snapshot the operation wrote.
    SnapshotAdded,
    /// A snapshot the operation deleted.
    SnapshotRemoved,
    /// A snapshot the operation read.
    SnapshotRead,
    /// A pack the operation wrote.
    PackAdded,
    /// A pack the operation deleted.
    PackRemoved,
    /// A key file the operation added.
    KeyAdded,
    /// A key file the operation removed.
    KeyRemoved,
    /// A snapshot manifest the operation wrote.
    Manifest,
}

impl IdKind {
    const ALL: [IdKind; 8] = [
        IdKind::SnapshotAdded,
        IdKind::SnapshotRemoved,
        IdKind::SnapshotRead,
        IdKind::PackAdded,
        IdKind::PackRemoved,
        IdKind::KeyAdded,
        IdKind::KeyRemoved,
        IdKind::Manifest,
    ];

    fn byte(self) -> u8 {
        IdKind::ALL.iter().position(|k| *k == self).expect("listed") as u8 + 1
    }

    fn from_byte(b: u8) -> Result<IdKind> {
        IdKind::ALL
            .get(usize::from(b).wrapping_sub(1))
            .copied()
            .ok_or_else(|| Error::corrupt("audit entry names an id of unknown kind"))
    }

    pub fn as_str(self) -> &'static str {
        match self {
            IdKind::SnapshotAdded => "snapshot-added",
            IdKind::SnapshotRemoved => "snapshot-removed",
            IdKind::SnapshotRead => "snapshot-read",
            IdKind::PackAdded => "pack-added",
            IdKind::PackRemoved => "pack-removed",
            IdKind::KeyAdded => "key-added",
            IdKind::KeyRemoved => "key-removed",
            IdKind::Manifest => "manifest",
        }
    }
}

/// One audit entry. `signer` is `None` for an entry written by a key file
/// without a signing key (older key files): such entries have no chain.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    pub repository: RepositoryId,
    pub signer: Option<PublicKey>,
    /// 1 + the highest `seq` among `links`; 0 for a signer's first entry.
    pub seq: u64,
    /// The signer's entries this one extends: the heads its writer saw.
    pub links: Vec<AuditId>,
    /// Seconds since the Unix epoch, UTC, when the operation ended.
    pub time: i64,
    pub host: String,
    pub user: String,
    pub pid: u32,
    /// e.g. "backup", "forget", "key add".
    pub operation: String,
    pub result: Outcome,
    /// Why it failed or was refused: the error's kind, no file names.
    pub detail: String,
    pub ids: Vec<(IdKind, Id)>,
    pub counts: Vec<(String, u64)>,
}

/// Whether an entry's signature holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Signature {
    Unsigned,
    Valid,
    Invalid,
}

/// A decoded entry, its name (the hash of its bytes) and its signature's
/// state.
#[derive(Debug, Clone)]
pub struct Decoded {
    pub id: AuditId,
    pub entry: Entry,
    pub signature: Signature,
}

impl Entry {
    /// The entry's bytes, signed with `key` (whose public key must be
    /// `self.signer`), or unsigned when `key` is `None`.
    pub fn encode(&self, key: Option<&SigningKey>) -> Result<Vec<u8>> {
        if key.map(SigningKey::public) != self.signer {
            return Err(Error::invalid("audit entry signer does not match its key"));
        }
        self.validate()?;
        let mut out = Vec::with_capacity(FIXED_LEN + 256);
        out.extend_from_slice(AUDIT_MAGIC);
        out.push(AUDIT_VERSION);
        out.push(if key.is_some() { FLAG_SIGNED } else { 0 });
        out.extend_from_slice(self.repository.as_bytes());
        out.extend_from_slice(&self.signer.map(|k| k.0).unwrap_or([0; 32]));
        out.extend_from_slice(&self.seq.to_le_bytes());
        out.extend_from_slice(&self.time.to_le_bytes());
        out.extend_from_slice(&self.pid.to_le_bytes());
        out.push(self.result.byte());
        out.extend_from_slice(&(self.links.len() as u16).to_le_bytes());
        for link in &self.links {
            out.extend_from_slice(link.as_bytes());
        }
        for text in [&self.host, &self.user, &self.operation, &self.detail] {
            out.extend_from_slice(&(text.len() as u16).to_le_bytes());
            out.extend_from_slice(text.as_bytes());
        }
        out.extend_from_slice(&(self.ids.len() as u16).to_le_bytes());
        for (kind, id) in &self.ids {
            out.push(kind.byte());
            out.extend_from_slice(&id.0);
        }
        out.push(self.counts.len() as u8);
        for (name, value) in &self.counts {
            out.push(name.len() as u8);
            out.extend_from_slice(name.as_bytes());
            out.extend_from_slice(&value.to_le_bytes());
        }
        if let Some(key) = key {
            let signature = key.sign_parts(&[ENTRY_CONTEXT, &out]);
            out.extend_from_slice(&signature);
        }
        Ok(out)
    }

    fn validate(&self) -> Result<()> {
        let long = |what: &str| Err(Error::invalid(format!("audit entry {what} is too long")));
        if self.links.len() > AUDIT_LINKS_MAX {
            return long("link list");
        }
        if self.ids.len() > AUDIT_IDS_MAX {
            return long("id list");
        }
        if self.counts.len() > AUDIT_COUNTS_MAX {
            return long("count list");
        }
        if [&self.host, &self.user, &self.operation]
            .iter()
            .any(|s| s.len() > AUDIT_NAME_MAX)
            || self.counts.iter().any(|(n, _)| n.len() > 255)
        {
            return long("name");
        }
        if self.detail.len() > AUDIT_DETAIL_MAX {
            return long("detail");
        }
        if self.signer.is_none() && (self.seq != 0 || !self.links.is_empty()) {
            return Err(Error::invalid("an unsigned audit entry has no chain"));
        }
        Ok(())
    }

    /// Decodes an entry and checks its signature. Malformed bytes are
    /// `Corrupt`; a signature that does not hold is reported, not an error,
    /// so a report can name the entry.
    pub fn decode(bytes: &[u8]) -> Result<Decoded> {
        let bad = |what: &str| Error::corrupt(format!("audit entry {what}"));
        if bytes.len() > AUDIT_ENTRY_SIZE_MAX {
            return Err(bad("is larger than the format allows"));
        }
        let mut r = Reader { bytes, at: 0 };
        if r.take(8)? != AUDIT_MAGIC {
            return Err(bad("does not start with the audit magic"));
        }
        if r.u8()? != AUDIT_VERSION {
            return Err(Error::new(
                crate::error::ErrorKind::UnsupportedVersion,
                "audit entry has an unknown version",
            ));
        }
        let signed = match r.u8()? {
            0 => false,
            FLAG_SIGNED => true,
            _ => return Err(bad("has unknown flags")),
        };
        let repository = RepositoryId(r.id()?);
        let signer_bytes = r.id()?.0;
        let signer = if signed {
            Some(PublicKey(signer_bytes))
        } else if signer_bytes != [0; 32] {
            return Err(bad("is unsigned but names a signer"));
        } else {
            None
        };
        let seq = r.u64()?;
        let time = r.u64()? as i64;
        let pid = u32::from_le_bytes(r.array()?);
        let result = Outcome::from_byte(r.u8()?)?;
        let link_count = usize::from(r.u16()?);
        if link_count > AUDIT_LINKS_MAX {
            return Err(bad("has too many links"));
        }
        let mut links = Vec::with_capacity(link_count);
        for _ in 0..link_count {
            links.push(AuditId(r.id()?));
        }
        let host = r.text(AUDIT_NAME_MAX)?;
        let user = r.text(AUDIT_NAME_MAX)?;
        let operation = r.text(AUDIT_NAME_MAX)?;
        let detail = r.text(AUDIT_DETAIL_MAX)?;
        let id_count = usize::from(r.u16()?);
        if id_count > AUDIT_IDS_MAX {
            return Err(bad("names too many ids"));
        }
        // Bounded by the size check above too: each id takes 33 bytes.
        if id_count * (1 + ID_LEN) > bytes.len() - r.at {
            return Err(bad("is truncated"));
        }
        let mut ids = Vec::with_capacity(id_count);
        for _ in 0..id_count {
            let kind = IdKind::from_byte(r.u8()?)?;
            ids.push((kind, r.id()?));
        }
        let count_count = usize::from(r.u8()?);
        if count_count > AUDIT_COUNTS_MAX {
            return Err(bad("has too many counts"));
        }
        let mut counts = Vec::with_capacity(count_count);
        for _ in 0..count_count {
            let len = usize::from(r.u8()?);
            let name = std::str::from_utf8(r.take(len)?)
                .map_err(|_| bad("has a count name that is not UTF-8"))?
                .to_string();
            counts.push((name, r.u64()?));
        }
        let body_len = r.at;
        let signature = match signer {
            Some(key) => {
                let signature: [u8; SIGNATURE_LEN] = r.array()?;
                if key.verify_parts(&[ENTRY_CONTEXT, &bytes[..body_len]], &signature) {
                    Signature::Valid
                } else {
                    Signature::Invalid
                }
            }
            None => Signature::Unsigned,
        };
        if r.at != bytes.len() {
            return Err(bad("has bytes after its end"));
        }
        if signer.is_none() && (seq != 0 || !links.is_empty()) {
            return Err(bad("is unsigned but chained"));
        }
        Ok(Decoded {
            id: AuditId(Id::of_file_bytes(bytes)),
            entry: Entry {
                repository,
                signer,
                seq,
                links,
                time,
                host,
                user,
                pid,
                operation,
                result,
                detail,
                ids,
                counts,
            },
            signature,
        })
    }
}

/// A bounds-checked reader: every length is checked against what is left
/// before anything is allocated for it.
pub(crate) struct Reader<'a> {
    pub(crate) bytes: &'a [u8],
    pub(crate) at: usize,
}

impl<'a> Reader<'a> {
    pub(crate) fn take(&mut self, n: usize) -> Result<&'a [u8]> {
        let end = self
            .at
            .checked_add(n)
            .filter(|end| *end <= self.bytes.len())
            .ok_or_else(|| Error::corrupt("signed file is truncated"))?;
        let out = &self.bytes[self.at..end];
        self.at = end;
        Ok(out)
    }

    pub(crate) fn array<const N: usize>(&mut self) -> Result<[u8; N]> {
        Ok(self.take(N)?.try_into().expect("took N bytes"))
    }

    pub(crate) fn u8(&mut self) -> Result<u8> {
        Ok(self.take(1)?[0])
    }

    pub(crate) fn u16(&mut self) -> Result<u16> {
        Ok(u16::from_le_bytes(self.array()?))
    }

    pub(crate) fn u64(&mut self) -> Result<u64> {
        Ok(u64::from_le_bytes(self.array()?))
    }

    pub(crate) fn id(&mut self) -> Result<Id> {
        Ok(Id(self.array()?))
    }

    pub(crate) fn text(&mut self, max: usize) -> Result<String> {
        let len = usize::from(self.u16()?);
        if len > max {
            return Err(Error::corrupt("signed file has a text that is too long"));
        }
        std::str::from_utf8(self.take(len)?)
            .map(str::to_string)
            .map_err(|_| Error::corrupt("signed file has a text that is not UTF-8"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn entry(signer: Option<PublicKey>) -> Entry {
        Entry {
            repository: RepositoryId(Id([7; 32])),
            signer,
            seq: if signer.is_some() { 3 } else { 0 },
            links: if signer.is_some() {
                vec![AuditId(Id([1; 32]))]
            } else {
                vec![]
            },
            time: 1_790_000_000,
            host: "host".into(),
            user: "user".into(),
            pid: 42,
            operation: "backup".into(),
            result: Outcome::Failed,
            detail: "Command".into(),
            ids: vec![(IdKind::SnapshotAdded, Id([9; 32]))],
            counts: vec![("files".into(), 12)],
        }
    }

    /// RFC 8032 section 7.1, TEST 1 and TEST 2: the signing code is the
    /// published Ed25519, so any implementation can check an entry.
    #[test]
    fn signatures_match_the_rfc_8032_test_vectors() {
        let cases = [
            (
                "9d61b19deffd5a60ba844af492ec2cc44449c5697b326919703bac031cae7f60",
                "d75a980182b10ab7d54bfed3c964073a0ee172f3daa62325af021a68f707511a",
                "",
                "e5564300c360ac729086e2cc806e828a84877f1eb8e5d974d873e065224901555fb8821590a33bacc61e39701cf9b46bd25bf5f0595bbe24655141438e7a100b",
            ),
            (
                "4ccd089b28ff96da9db6c346ec114e0f5b8a319f35aba624da8cf6ed4fb8a6fb",
                "3d4017c3e843895a92b70aa74d1b7ebc9c982ccf2ec4968cc0cd55f12af4660c",
                "72",
                "92a009a9f0d4cab8720e820b5f642540a2b27b5416503f8fb3762223ebdb69da085ac1e43e15996e458f3613d0f11d8c387b2eaeb4302aeeb00d291612bb0c00",
            ),
        ];
        for (seed, public, message, signature) in cases {
            let seed: [u8; 32] = hex::decode(seed).unwrap().try_into().unwrap();
            let key = SigningKey::from_seed(&seed);
            assert_eq!(key.public().to_hex(), public);
            let message = hex::decode(message).unwrap();
            let signed = key.sign_parts(&[&message]);
            assert_eq!(hex::encode(signed), signature);
            assert!(key.public().verify_parts(&[&message], &signed));
            let mut other = signed;
            other[0] ^= 1;
            assert!(!key.public().verify_parts(&[&message], &other));
        }
    }

    #[test]
    fn a_signed_entry_round_trips_and_any_changed_byte_is_caught() {
        let key = SigningKey::from_seed(&[5; 32]);
        let e = entry(Some(key.public()));
        let bytes = e.encode(Some(&key)).unwrap();
        let decoded = Entry::decode(&bytes).unwrap();
        assert_eq!(decoded.entry, e);
        assert_eq!(decoded.signature, Signature::Valid);
        assert_eq!(decoded.id, AuditId(Id::of_file_bytes(&bytes)));
        for at in 0..bytes.len() {
            let mut damaged = bytes.clone();
            damaged[at] ^= 0x10;
            if let Ok(d) = Entry::decode(&damaged) {
                assert_ne!(d.signature, Signature::Valid, "byte {at} changed unnoticed");
            }
        }
        // Signed by another key than the one it names: refused to encode.
        let other = SigningKey::from_seed(&[6; 32]);
        assert!(e.encode(Some(&other)).is_err());
    }

    #[test]
    fn an_unsigned_entry_has_no_chain() {
        let e = entry(None);
        let decoded = Entry::decode(&e.encode(None).unwrap()).unwrap();
        assert_eq!(decoded.signature, Signature::Unsigned);
        assert_eq!(decoded.entry, e);
        let mut chained = e.clone();
        chained.seq = 1;
        assert!(chained.encode(None).is_err());
    }

    #[test]
    fn hostile_lengths_are_refused_before_allocating() {
        let key = SigningKey::from_seed(&[5; 32]);
        let bytes = entry(Some(key.public())).encode(Some(&key)).unwrap();
        // The link count at its fixed offset, set to the most a u16 holds.
        let mut hostile = bytes.clone();
        hostile[FIXED_LEN - 2..FIXED_LEN].copy_from_slice(&u16::MAX.to_le_bytes());
        assert!(Entry::decode(&hostile).is_err());
        assert!(Entry::decode(&vec![0; AUDIT_ENTRY_SIZE_MAX + 1]).is_err());
        assert!(Entry::decode(&bytes[..bytes.len() - 1]).is_err());
        let mut longer = bytes;
        longer.push(0);
        assert!(Entry::decode(&longer).is_err());
    }

    fn arb_entry() -> impl Strategy<Value = (Entry, bool)> {
        (
            any::<bool>(),
            any::<u64>(),
            proptest::collection::vec(any::<[u8; 32]>(), 0..4),
            any::<i64>(),
            "[a-z\u{e9}]{0,12}",
            any::<u32>(),
            0u8..3,
            proptest::collection::vec((0u8..8, any::<[u8; 32]>()), 0..5),
            proptest::collection::vec(("[a-z]{0,8}", any::<u64>()), 0..4),
        )
            .prop_map(
                |(signed, seq, links, time, text, pid, result, ids, counts)| {
                    let key = SigningKey::from_seed(&[3; 32]);
                    let entry = Entry {
                        repository: RepositoryId(Id([1; 32])),
                        signer: signed.then(|| key.public()),
                        seq: if signed { seq } else { 0 },
                        links: if signed {
                            links.into_iter().map(|l| AuditId(Id(l))).collect()
                        } else {
                            vec![]
                        },
                        time,
                        host: text.clone(),
                        user: text.clone(),
                        pid,
                        operation: text.clone(),
                        result: Outcome::from_byte(result).unwrap(),
                        detail: text,
                        ids: ids
                            .into_iter()
                            .map(|(k, id)| (IdKind::ALL[usize::from(k)], Id(id)))
                            .collect(),
                        counts,
                    };
                    (entry, signed)
                },
            )
    }

    proptest! {
        #[test]
        fn entries_round_trip((entry, signed) in arb_entry()) {
            let key = SigningKey::from_seed(&[3; 32]);
            let bytes = entry.encode(signed.then_some(&key)).unwrap();
            let decoded = Entry::decode(&bytes).unwrap();
            prop_assert_eq!(decoded.entry, entry);
            prop_assert_eq!(
                decoded.signature,
                if signed { Signature::Valid } else { Signature::Unsigned }
            );
        }

        #[test]
        fn the_entry_decoder_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..600)) {
            let _ = Entry::decode(&bytes);
        }

        #[test]
        fn the_entry_decoder_never_panics_on_a_damaged_entry(
            (entry, signed) in arb_entry(), at in any::<usize>(), value in any::<u8>()
        ) {
            let key = SigningKey::from_seed(&[3; 32]);
            let mut bytes = entry.encode(signed.then_some(&key)).unwrap();
            let at = at % bytes.len();
            bytes[at] = value;
            let _ = Entry::decode(&bytes);
        }
    }
}
