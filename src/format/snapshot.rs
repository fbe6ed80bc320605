//! Snapshots: sealed JSON naming a root tree and describing the backup.
//! Field names follow restic's where restic has the field.

use crate::error::{Error, Result};
use crate::format::id::{BlobId, SnapshotId};
use chrono::{DateTime, FixedOffset};
use serde::{Deserialize, Serialize};

/// The version of snapshots that use only version-1 fields (directory and
/// `--stdin` backups). Writers keep writing it for those, so that older
/// readers still list them.
pub const SNAPSHOT_VERSION: u32 = 1;
/// Version 2 adds the `command` field and the `tar` source (docs/FORMAT.md,
/// section 11). A writer uses it only for snapshots that need it.
pub const SNAPSHOT_VERSION_MAX: u32 = 2;
/// Largest snapshot plaintext a reader accepts.
pub const SNAPSHOT_SIZE_MAX: usize = 4 * 1024 * 1024;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum SourceKind {
    Directory,
    Stdin,
    /// `import-tar`: the tree is the tarball's contents (version 2).
    Tar,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
pub struct Summary {
    pub backup_start: String,
    pub backup_end: String,
    pub duration_seconds: f64,
    pub files_new: u64,
    pub files_changed: u64,
    pub files_unmodified: u64,
    pub files_unreadable: u64,
    pub dirs_new: u64,
    pub dirs_changed: u64,
    pub dirs_unmodified: u64,
    pub data_blobs: u64,
    pub tree_blobs: u64,
    /// Plaintext bytes of blobs this backup added to the repository.
    pub data_added: u64,
    /// Bytes this backup added to pack files (compressed and sealed).
    pub data_added_packed: u64,
    pub total_files_processed: u64,
    /// Bytes of file content read from the source.
    pub total_bytes_processed: u64,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Snapshot {
    pub version: u32,
    pub time: DateTime<FixedOffset>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub parent: Option<SnapshotId>,
    /// Set by `repair snapshots` on the rewritten copy: the damaged original.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub original: Option<SnapshotId>,
    pub tree: BlobId,
    pub paths: Vec<String>,
    pub hostname: String,
    pub username: String,
    pub uid: u32,
    pub gid: u32,
    #[serde(default)]
    pub tags: Vec<String>,
    pub program_version: String,
    pub source: SourceKind,
    /// The command whose standard output is the snapshot's one file
    /// (`backup --stdin-from-command`); version 2.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub command: Option<Vec<String>>,
    pub summary: Summary,
}

impl Snapshot {
    pub fn encode(&self) -> Vec<u8> {
        serde_json::to_vec_pretty(self).expect("snapshot serializes")
    }

    pub fn decode(plain: &[u8]) -> Result<Snapshot> {
        if plain.len() > SNAPSHOT_SIZE_MAX {
            return Err(Error::corrupt("snapshot is larger than the format allows"));
        }
        let snapshot: Snapshot = serde_json::from_slice(plain)
            .map_err(|e| Error::corrupt(format!("snapshot is not valid: {e}")))?;
        if !(SNAPSHOT_VERSION..=SNAPSHOT_VERSION_MAX).contains(&snapshot.version) {
            return Err(Error::new(
                crate::error::ErrorKind::UnsupportedVersion,
                format!("snapshot version {} is not supported", snapshot.version),
            ));
        }
        if snapshot.version < snapshot.required_version() {
            return Err(Error::corrupt(format!(
                "snapshot version {} cannot have a command or a tar source",
                snapshot.version
            )));
        }
        Ok(snapshot)
    }

    /// The lowest version that can carry this snapshot's fields.
    pub fn required_version(&self) -> u32 {
        if self.command.is_some() || self.source == SourceKind::Tar {
            2
        } else {
            SNAPSHOT_VERSION
        }
    }

    pub fn has_tag(&self, tag: &str) -> bool {
        self.tags.iter().any(|t| t == tag)
    }
}

/// `--host/--tag/--path` filters; empty lists match everything. A `--tag`
/// value may be a comma-separated list that must all be present (restic).
#[derive(Debug, Clone, Default)]
pub struct SnapshotFilter {
    pub hosts: Vec<String>,
    pub tags: Vec<String>,
    pub paths: Vec<String>,
}

impl SnapshotFilter {
    pub fn matches(&self, s: &Snapshot) -> bool {
        let host_ok = self.hosts.is_empty() || self.hosts.contains(&s.hostname);
        let tag_ok = self.tags.is_empty()
            || self
                .tags
                .iter()
                .any(|group| group.split(',').all(|t| s.has_tag(t)));
        let path_ok = self.paths.is_empty() || self.paths.iter().all(|p| s.paths.contains(p));
        host_ok && tag_ok && path_ok
    }
}

/// Picks one snapshot by `latest`, a full id, or a unique prefix of at least
/// four hex digits, among `candidates` (already filtered).
pub fn select<'a>(
    candidates: &'a [(SnapshotId, Snapshot)],
    selector: &str,
) -> Result<&'a (SnapshotId, Snapshot)> {
    if selector == "latest" {
        return candidates
            .iter()
            .max_by(|a, b| a.1.time.cmp(&b.1.time).then(a.0.cmp(&b.0)))
            .ok_or_else(|| {
                Error::new(
                    crate::error::ErrorKind::NotFound,
                    "no snapshot matched (latest)",
                )
            });
    }
    let prefix = selector.to_ascii_lowercase();
    if prefix.len() < 4 || prefix.len() > 64 || !prefix.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Err(Error::invalid(format!(
            "invalid snapshot {selector:?}: use latest, an id, or a prefix of at least 4 hex digits"
        )));
    }
    let mut found = candidates
        .iter()
        .filter(|(id, _)| id.to_hex().starts_with(&prefix));
    match (found.next(), found.next()) {
        (Some(one), None) => Ok(one),
        (None, _) => Err(Error::new(
            crate::error::ErrorKind::NotFound,
            format!("no snapshot matches {selector:?}"),
        )),
        (Some(_), Some(_)) => Err(Error::invalid(format!(
            "snapshot prefix {selector:?} is ambiguous"
        ))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::format::id::Id;
    use proptest::prelude::*;

    fn sample(time: &str, host: &str, tags: &[&str]) -> Snapshot {
        Snapshot {
            version: SNAPSHOT_VERSION,
            time: DateTime::parse_from_rfc3339(time).unwrap(),
            parent: None,
            original: None,
            tree: BlobId(Id([1; 32])),
            paths: vec!["/data".into()],
            hostname: host.into(),
            username: "root".into(),
            uid: 0,
            gid: 0,
            tags: tags.iter().map(|t| t.to_string()).collect(),
            program_version: "cairn test".into(),
            source: SourceKind::Directory,
            command: None,
            summary: Summary::default(),
        }
    }

    #[test]
    fn version_1_snapshot_with_a_command_is_refused() {
        let mut s = sample("2026-01-01T00:00:00Z", "h", &[]);
        s.command = Some(vec!["pg_dump".into()]);
        assert_eq!(
            Snapshot::decode(&s.encode()).unwrap_err().kind(),
            crate::error::ErrorKind::Corrupt
        );
        s.version = 3;
        assert_eq!(
            Snapshot::decode(&s.encode()).unwrap_err().kind(),
            crate::error::ErrorKind::UnsupportedVersion
        );
    }

    #[test]
    fn selectors_pick_latest_prefix_and_refuse_ambiguity() {
        let a = (
            SnapshotId(Id([0xab; 32])),
            sample("2026-01-01T00:00:00Z", "a", &[]),
        );
        let b = (
            SnapshotId(Id([0xac; 32])),
            sample("2026-01-02T00:00:00Z", "b", &["x"]),
        );
        let list = vec![a.clone(), b.clone()];
        assert_eq!(select(&list, "latest").unwrap().0, b.0);
        assert_eq!(select(&list, "abab").unwrap().0, a.0);
        assert!(select(&list, "ab").is_err());
        assert!(select(
            &[a.clone(), (SnapshotId(Id([0xab; 32])), a.1.clone())],
            "abab"
        )
        .is_err());
        let filter = SnapshotFilter {
            tags: vec!["x".into()],
            ..Default::default()
        };
        assert!(filter.matches(&b.1) && !filter.matches(&a.1));
    }

    proptest! {
        #[test]
        fn snapshot_round_trip(host in "[a-z]{1,10}", tags in proptest::collection::vec("[a-z:]{1,8}", 0..4), secs in 0i64..4_000_000_000) {
            let mut s = sample("2026-01-01T00:00:00+01:00", &host, &[]);
            s.tags = tags;
            s.time = DateTime::from_timestamp(secs, 123).unwrap().fixed_offset();
            prop_assert_eq!(Snapshot::decode(&s.encode()).unwrap(), s);
        }

        #[test]
        fn version_2_snapshot_round_trip(args in proptest::collection::vec("[ -~]{0,12}", 1..5), tar in any::<bool>()) {
            let mut s = sample("2026-01-01T00:00:00Z", "h", &[]);
            if tar {
                s.source = SourceKind::Tar;
            } else {
                s.source = SourceKind::Stdin;
                s.command = Some(args);
            }
            s.version = s.required_version();
            prop_assert_eq!(s.version, 2);
            prop_assert_eq!(Snapshot::decode(&s.encode()).unwrap(), s);
        }

        #[test]
        fn snapshot_decoder_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..300)) {
            let _ = Snapshot::decode(&bytes);
        }
    }
}
