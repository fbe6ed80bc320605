//! Drill records (`drills/`): sealed like snapshots, named by the hash of
//! their bytes, written under a lock, never changed (docs/FORMAT.md,
//! "Drill records").

use super::{open_named, Repository};
use crate::error::{Error, ErrorKind, Result};
use crate::format::crypto::Domain;
use crate::format::drill::{DrillRecord, DRILL_RECORD_SIZE_MAX};
use crate::format::id::{DrillId, Id};
use crate::storage::backend::FileKind;
use crate::storage::lock::LockGuard;

/// The sealing domain of a kind of repository file, for `open_file`; None
/// for key files (stored as they are) and an error for packs.
pub(super) fn domain(kind: FileKind) -> Result<Option<Domain>> {
    Ok(Some(match kind {
        FileKind::Config => Domain::Config,
        FileKind::Snapshot => Domain::Snapshot,
        FileKind::Index => Domain::Index,
        FileKind::Lock => Domain::Lock,
        FileKind::Drill => Domain::Drill,
        FileKind::Key | FileKind::Audit | FileKind::Manifest => return Ok(None),
        FileKind::Pack => return Err(Error::invalid("packs are read blob by blob")),
    }))
}

impl<S> Repository<S> {
    /// Seals and stores a drill record; its id.
    pub fn save_drill_record(&self, record: &DrillRecord, lock: &LockGuard) -> Result<DrillId> {
        record.validate().map_err(Error::invalid)?;
        let plain = record.encode();
        if plain.len() > DRILL_RECORD_SIZE_MAX {
            return Err(Error::invalid(
                "drill record is larger than the format allows",
            ));
        }
        self.ensure_locked(lock)?;
        let sealed = self.key.seal(Domain::Drill, &plain);
        let id = DrillId(Id::of_file_bytes(&sealed));
        self.backend.put(FileKind::Drill, &id.to_hex(), &sealed)?;
        Ok(id)
    }

    pub fn load_drill_record(&self, id: &DrillId) -> Result<DrillRecord> {
        let what = format!("drill record {id}");
        let plain = open_named(
            self.backend.as_ref(),
            &self.key,
            FileKind::Drill,
            Domain::Drill,
            &id.0,
            DRILL_RECORD_SIZE_MAX,
            &what,
        )?;
        DrillRecord::decode(&plain).map_err(|e| e.context(what))
    }

    /// Every readable drill record, oldest first. Damaged ones (and files
    /// not named by an id) are skipped with a warning.
    pub fn drill_records(&mut self) -> Result<Vec<(DrillId, DrillRecord)>> {
        let mut out = Vec::new();
        for (name, _) in self.backend.list(FileKind::Drill)? {
            let Ok(id) = DrillId::from_hex(&name) else {
                self.warnings
                    .push(format!("skipping drills/{name}: not a drill record name"));
                continue;
            };
            match self.load_drill_record(&id) {
                Ok(record) => out.push((id, record)),
                Err(e)
                    if matches!(e.kind(), ErrorKind::Corrupt | ErrorKind::UnsupportedVersion) =>
                {
                    self.warnings.push(format!("skipping {e}"))
                }
                Err(e) => return Err(e),
            }
        }
        out.sort_by(|a, b| a.1.started.cmp(&b.1.started).then(a.0.cmp(&b.0)));
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use crate::engine::repository::{InitOptions, Repository};
    use crate::format::crypto::KdfParams;
    use crate::format::drill::*;
    use crate::format::id::SnapshotId;
    use crate::storage::backend::{Backend, FileKind, MemoryBackend};
    use std::sync::Arc;

    #[test]
    fn drill_records_round_trip_and_damaged_ones_are_skipped() {
        let backend: Arc<dyn Backend> = Arc::new(MemoryBackend::new());
        let options = InitOptions {
            kdf: KdfParams {
                memory_kib: 8,
                iterations: 1,
                parallelism: 1,
            },
            ..InitOptions::default()
        };
        Repository::init(backend.clone(), b"pw", &options).unwrap();
        let mut repo = Repository::open(backend.clone(), b"pw", None).unwrap();
        let lock = repo.lock_shared(std::time::Duration::ZERO).unwrap();
        let record = DrillRecord {
            version: DRILL_RECORD_VERSION,
            snapshot: SnapshotId::default(),
            source: "h:/x.sql".into(),
            kind: DrillKind::Files,
            started: chrono::DateTime::parse_from_rfc3339("2026-12-01T03:00:00Z").unwrap(),
            restore_seconds: 0.5,
            verify_seconds: 0.25,
            bytes: 10,
            figures: vec![Figure {
                name: "files".into(),
                count: 1,
                sample: None,
            }],
            verdict: Verdict::Passed,
            failure: None,
        };
        let id = repo.save_drill_record(&record, &lock).unwrap();
        backend
            .put(FileKind::Drill, &"ab".repeat(32), b"garbage")
            .unwrap();
        let records = repo.drill_records().unwrap();
        assert_eq!(records, vec![(id, record)]);
        assert_eq!(repo.take_warnings().len(), 1);
        // The record is sealed: its plaintext is not in the stored bytes.
        let stored = backend.get(FileKind::Drill, &id.to_hex()).unwrap();
        assert!(!stored.windows(8).any(|w| w == b"h:/x.sql"));
    }
}
