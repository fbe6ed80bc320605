//! What a check found, as types: each problem names the kind of object it
//! concerns and a status, notes carry what they are about, and the verdict
//! and the remedies are derived from those types alone. The library says
//! what would help (`Remedy`); the CLI turns that into command lines.

use crate::format::id::{BlobId, IndexId, PackId, SnapshotId};
use crate::format::pack::BlobKind;
use serde::{Serialize, Serializer};
use std::fmt;

/// Problems of one kind listed in full before the rest are only counted,
/// so a repository with a million missing blobs still gives a readable
/// report in bounded memory.
pub(crate) const LISTED_PER_KIND_MAX: usize = 1000;

/// How an object is damaged; serialized as the lowercase word.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Status {
    /// An index or a snapshot names it, but it is not there.
    Missing,
    /// It is there, but its bytes are wrong.
    Damaged,
    /// A pack file shorter than its index entries need.
    Truncated,
    /// Two descriptions of it disagree (index files, or an index file and a
    /// pack header).
    Mismatch,
}

impl Status {
    pub fn as_str(self) -> &'static str {
        match self {
            Status::Missing => "missing",
            Status::Damaged => "damaged",
            Status::Truncated => "truncated",
            Status::Mismatch => "mismatch",
        }
    }
}

impl fmt::Display for Status {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The kind of object a problem concerns.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ObjectKind {
    KeyFile,
    IndexFile,
    Snapshot,
    Pack,
    /// A data blob (file contents) or a tree blob (a directory listing).
    Blob(BlobKind),
}

impl ObjectKind {
    pub fn as_str(self) -> &'static str {
        match self {
            ObjectKind::KeyFile => "key file",
            ObjectKind::IndexFile => "index file",
            ObjectKind::Snapshot => "snapshot",
            ObjectKind::Pack => "pack",
            ObjectKind::Blob(BlobKind::Data) => "data blob",
            ObjectKind::Blob(BlobKind::Tree) => "tree blob",
        }
    }
}

/// What is damaged: its kind and its name (the full id, or the file name
/// when a keyless check found a file whose name is no id). Shown and
/// serialized as one string, e.g. `pack 3f2a91c0…` or `data blob 35f0…`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Object {
    pub kind: ObjectKind,
    pub name: String,
}

impl Object {
    pub fn new(kind: ObjectKind, name: impl Into<String>) -> Object {
        Object {
            kind,
            name: name.into(),
        }
    }

    pub fn index_file(id: &IndexId) -> Object {
        Object::new(ObjectKind::IndexFile, id.to_string())
    }

    pub fn snapshot(id: &SnapshotId) -> Object {
        Object::new(ObjectKind::Snapshot, id.to_string())
    }

    pub fn pack(id: &PackId) -> Object {
        Object::new(ObjectKind::Pack, id.to_string())
    }

    pub fn blob(kind: BlobKind, id: &BlobId) -> Object {
        Object::new(ObjectKind::Blob(kind), id.to_string())
    }
}

impl fmt::Display for Object {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {}", self.kind.as_str(), self.name)
    }
}

impl Serialize for Object {
    fn serialize<Z: Serializer>(&self, serializer: Z) -> Result<Z::Ok, Z::Error> {
        serializer.collect_str(self)
    }
}

/// One damaged or missing object.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct Problem {
    /// What is damaged, e.g. `pack 3f2a91c0…` (full id) or `index file …`.
    pub object: Object,
    pub status: Status,
    pub message: String,
}

/// A file or directory of a snapshot that cannot be restored in full.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct DamagedPath {
    pub snapshot: SnapshotId,
    pub path: String,
    /// e.g. `2 of 611 chunks unreadable` or `directory listing unreadable`.
    pub detail: String,
}

/// What a note is about, so that callers can act on it without reading
/// its words.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum NoteKind {
    /// Blobs no snapshot uses (pruning removes them).
    UnusedBlobs,
    /// Pack files no index file names (an index repair indexes them,
    /// pruning removes the unused ones).
    UnindexedPacks,
    /// Temporary files of interrupted or running writes (pruning removes
    /// them when no backup is running).
    TemporaryFiles,
    /// An index file that a newer one supersedes, left by an interrupted
    /// prune or repair.
    SupersededIndexFile,
    /// The local index cache could not be opened.
    CacheUnopenable,
    /// The local index cache disagreed with the index files and was rebuilt.
    CacheRebuilt,
    /// The check was keyless: nothing was decrypted.
    Keyless,
    /// Packs prune marked for deletion (two-phase delete), still readable.
    MarkedPacks,
}

/// A finding that is not damage. Its text says what was found; what to run
/// about it is the caller's to add (see `NoteKind`). Serialized as the text.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Note {
    pub kind: NoteKind,
    pub text: String,
}

impl fmt::Display for Note {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.text)
    }
}

impl Serialize for Note {
    fn serialize<Z: Serializer>(&self, serializer: Z) -> Result<Z::Ok, Z::Error> {
        serializer.serialize_str(&self.text)
    }
}

/// What would mend what a check found, in the order a user should do it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Remedy {
    /// Rebuild the index from the packs that exist: drops packs that are
    /// gone, adds packs no index names.
    RepairIndex,
    /// Rebuild the index reading every pack: moves the intact blobs of
    /// damaged packs into new packs and drops the damaged ones.
    RepairIndexReadData,
    /// Rewrite the damaged snapshots without their unrestorable files.
    RepairSnapshotsForget,
}

/// The last line of the report, as data; `Display` gives the line.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    Clean {
        snapshots: u64,
        packs: u64,
        packs_read: u64,
    },
    /// A keyless check found every file it read to match its name. It
    /// cannot see what is missing or what the sealed files say, so this is
    /// not `Clean`.
    KeylessClean {
        snapshots: u64,
        packs: u64,
        packs_read: u64,
    },
    /// A keyless check found files whose bytes do not match their names.
    KeylessDamaged { files: u64 },
    Damaged {
        problems: u64,
        damaged_snapshots: u64,
        snapshots: u64,
    },
}

impl fmt::Display for Verdict {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            Verdict::Clean {
                snapshots,
                packs,
                packs_read,
            } => {
                write!(f, "no errors were found: {snapshots} snapshots, {packs} packs")?;
                if packs_read > 0 {
                    write!(f, ", {packs_read} packs read in full")?;
                }
                Ok(())
            }
            Verdict::KeylessClean {
                snapshots,
                packs,
                packs_read,
            } => {
                write!(
                    f,
                    "no file differs from its name: {snapshots} snapshots, {packs} packs"
                )?;
                if packs_read > 0 {
                    write!(f, ", {packs_read} packs read in full")?;
                }
                write!(
                    f,
                    "; not verified without the password: missing packs, whether snapshots are complete, the config's contents"
                )
            }
            Verdict::KeylessDamaged { files } => write!(
                f,
                "repository damaged: {files} file(s) do not match their names (check with the password to see what depends on them)"
            ),
            Verdict::Damaged {
                problems,
                damaged_snapshots,
                snapshots,
            } => write!(
                f,
                "repository damaged: {problems} problem(s); {damaged_snapshots} of {snapshots} snapshots cannot be restored in full"
            ),
        }
    }
}

#[derive(Debug, Default, Clone, Serialize)]
pub struct CheckReport {
    pub keys: u64,
    pub index_files: u64,
    pub packs: u64,
    pub snapshots: u64,
    pub trees: u64,
    pub blobs_indexed: u64,
    pub packs_read: u64,
    pub bytes_read: u64,
    pub problems: Vec<Problem>,
    /// Problems beyond the listed ones, only counted.
    pub problems_unlisted: u64,
    pub damaged_paths: Vec<DamagedPath>,
    pub damaged_paths_unlisted: u64,
    /// Snapshots that cannot be restored in full (damaged or missing data).
    pub damaged_snapshots: Vec<SnapshotId>,
    /// Findings that are not damage: unused blobs, packs no index names,
    /// a local cache that was rebuilt.
    pub notes: Vec<Note>,
    pub unused_blobs: u64,
    pub unused_bytes: u64,
    /// What would mend what was found, when something was. Not serialized:
    /// how to run a remedy is the caller's to say.
    #[serde(skip)]
    pub remedies: Vec<Remedy>,
    /// Checked without the key: damage is found, dependents are not known.
    pub keyless: bool,
}

impl CheckReport {
    pub fn is_clean(&self) -> bool {
        self.problems.is_empty() && self.problems_unlisted == 0 && self.damaged_paths.is_empty()
    }

    /// The last line of the report.
    pub fn verdict(&self) -> Verdict {
        let problems = self.problems.len() as u64 + self.problems_unlisted;
        if self.is_clean() && self.keyless {
            Verdict::KeylessClean {
                snapshots: self.snapshots,
                packs: self.packs,
                packs_read: self.packs_read,
            }
        } else if self.is_clean() {
            Verdict::Clean {
                snapshots: self.snapshots,
                packs: self.packs,
                packs_read: self.packs_read,
            }
        } else if self.keyless {
            Verdict::KeylessDamaged { files: problems }
        } else {
            Verdict::Damaged {
                problems,
                damaged_snapshots: self.damaged_snapshots.len() as u64,
                snapshots: self.snapshots,
            }
        }
    }

    pub(crate) fn problem(&mut self, object: Object, status: Status, message: String) {
        if self.problems.len() < LISTED_PER_KIND_MAX * 4 {
            self.problems.push(Problem {
                object,
                status,
                message,
            });
        } else {
            self.problems_unlisted += 1;
        }
    }

    pub(crate) fn note(&mut self, kind: NoteKind, text: String) {
        self.notes.push(Note { kind, text });
    }

    pub(crate) fn damaged_path(&mut self, snapshot: SnapshotId, path: String, detail: String) {
        if !self.damaged_snapshots.contains(&snapshot) {
            self.damaged_snapshots.push(snapshot);
        }
        if self.damaged_paths.len() < LISTED_PER_KIND_MAX {
            self.damaged_paths.push(DamagedPath {
                snapshot,
                path,
                detail,
            });
        } else {
            self.damaged_paths_unlisted += 1;
        }
    }

    /// What would mend the problems found, derived from their kinds and
    /// statuses alone, in the order to apply them.
    pub(crate) fn find_remedies(&self) -> Vec<Remedy> {
        let mut remedies = Vec::new();
        let index_trouble = self.problems.iter().any(|p| {
            p.object.kind == ObjectKind::IndexFile
                || p.status == Status::Missing
                || p.status == Status::Mismatch
        }) || self
            .notes
            .iter()
            .any(|n| n.kind == NoteKind::UnindexedPacks);
        if index_trouble {
            remedies.push(Remedy::RepairIndex);
        }
        let blob_damage = self.problems.iter().any(|p| {
            p.status == Status::Damaged
                && matches!(p.object.kind, ObjectKind::Pack | ObjectKind::Blob(_))
        });
        if blob_damage {
            remedies.push(Remedy::RepairIndexReadData);
        }
        if !self.damaged_paths.is_empty() {
            remedies.push(Remedy::RepairSnapshotsForget);
        }
        remedies
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::format::id::Id;

    #[test]
    fn objects_and_statuses_serialize_as_the_words_shown() {
        let problem = Problem {
            object: Object::blob(BlobKind::Tree, &BlobId(Id([0xab; 32]))),
            status: Status::Truncated,
            message: "m".into(),
        };
        let json = serde_json::to_string(&problem).unwrap();
        assert_eq!(
            json,
            format!(
                "{{\"object\":\"tree blob {}\",\"status\":\"truncated\",\"message\":\"m\"}}",
                "ab".repeat(32)
            )
        );
        let note = Note {
            kind: NoteKind::Keyless,
            text: "t".into(),
        };
        assert_eq!(serde_json::to_string(&note).unwrap(), "\"t\"");
        for status in [
            Status::Missing,
            Status::Damaged,
            Status::Truncated,
            Status::Mismatch,
        ] {
            assert_eq!(
                serde_json::to_string(&status).unwrap(),
                format!("\"{status}\"")
            );
        }
    }

    #[test]
    fn verdicts_read_as_before() {
        let mut report = CheckReport {
            snapshots: 5,
            packs: 9,
            ..CheckReport::default()
        };
        assert_eq!(
            report.verdict().to_string(),
            "no errors were found: 5 snapshots, 9 packs"
        );
        report.packs_read = 2;
        assert_eq!(
            report.verdict().to_string(),
            "no errors were found: 5 snapshots, 9 packs, 2 packs read in full"
        );
        report.keyless = true;
        assert_eq!(
            report.verdict().to_string(),
            "no file differs from its name: 5 snapshots, 9 packs, 2 packs read in full; \
             not verified without the password: missing packs, whether snapshots are complete, \
             the config's contents"
        );
        report.keyless = false;
        report.problem(
            Object::new(ObjectKind::KeyFile, "k"),
            Status::Damaged,
            String::new(),
        );
        report.damaged_snapshots.push(SnapshotId(Id([1; 32])));
        assert_eq!(
            report.verdict().to_string(),
            "repository damaged: 1 problem(s); 1 of 5 snapshots cannot be restored in full"
        );
        report.keyless = true;
        assert_eq!(
            report.verdict().to_string(),
            "repository damaged: 1 file(s) do not match their names (check with the password to see what depends on them)"
        );
    }

    #[test]
    fn remedies_follow_the_kinds_of_problems() {
        let mut report = CheckReport::default();
        assert!(report.find_remedies().is_empty());
        report.problem(
            Object::new(ObjectKind::KeyFile, "k"),
            Status::Damaged,
            String::new(),
        );
        assert!(report.find_remedies().is_empty());
        report.problem(
            Object::blob(BlobKind::Data, &BlobId(Id([2; 32]))),
            Status::Damaged,
            String::new(),
        );
        assert_eq!(report.find_remedies(), [Remedy::RepairIndexReadData]);
        report.note(NoteKind::UnindexedPacks, String::new());
        report.damaged_path(SnapshotId(Id([1; 32])), "/a".into(), String::new());
        assert_eq!(
            report.find_remedies(),
            [
                Remedy::RepairIndex,
                Remedy::RepairIndexReadData,
                Remedy::RepairSnapshotsForget
            ]
        );
    }
}
