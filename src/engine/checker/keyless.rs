//! The keyless check, for someone who holds no password: every file named
//! by the BLAKE3 of its bytes is read and compared with its name. It finds
//! damage but cannot say what depends on it.

use crate::context::Context;
use crate::engine::checker::report::{CheckReport, NoteKind, Object, ObjectKind, Problem, Status};
use crate::error::{ErrorKind, Result};
use crate::format::id::Id;
use crate::storage::backend::{Backend, FileKind};
use rayon::prelude::*;

/// Keyless check for someone who holds no password: every file named by
/// the BLAKE3 of its bytes (packs with `read_packs`, index files,
/// snapshots, key files) is read and compared with its name.
pub fn check_keyless(
    backend: &dyn Backend,
    read_packs: bool,
    ctx: &Context,
) -> Result<CheckReport> {
    let mut report = CheckReport {
        keyless: true,
        ..CheckReport::default()
    };
    let mut kinds = vec![FileKind::Key, FileKind::Index, FileKind::Snapshot];
    if read_packs {
        kinds.push(FileKind::Pack);
    }
    for kind in kinds {
        let files = backend.list(kind)?;
        let what = match kind {
            FileKind::Key => ObjectKind::KeyFile,
            FileKind::Index => ObjectKind::IndexFile,
            FileKind::Snapshot => ObjectKind::Snapshot,
            _ => ObjectKind::Pack,
        };
        let results: Vec<Result<Option<Problem>>> = files
            .par_iter()
            .map(|(name, _)| {
                ctx.check_interrupt()?;
                // Bounded like every other read: a planted /dev/zero or a
                // huge file is damage, not an allocation.
                let bytes = match backend.get_bounded(kind, name, size_max(kind)) {
                    Ok(bytes) => bytes,
                    Err(e) if e.kind() == ErrorKind::NotFound => return Ok(None),
                    Err(e) if e.kind() == ErrorKind::Corrupt => {
                        return Ok(Some(Problem {
                            object: Object::new(what, name.as_str()),
                            status: Status::Damaged,
                            message: e.to_string(),
                        }))
                    }
                    Err(e) => return Err(e),
                };
                let matches = Id::from_hex(name).is_ok_and(|id| Id::of_file_bytes(&bytes) == id);
                Ok((!matches).then(|| Problem {
                    object: Object::new(what, name.as_str()),
                    status: Status::Damaged,
                    message: format!(
                        "{} does not match its name (its bytes changed)",
                        what.as_str()
                    ),
                }))
            })
            .collect();
        for (result, (_, size)) in results.into_iter().zip(&files) {
            match kind {
                FileKind::Key => report.keys += 1,
                FileKind::Index => report.index_files += 1,
                FileKind::Snapshot => report.snapshots += 1,
                _ => {
                    report.packs += 1;
                    report.packs_read += 1;
                    report.bytes_read += size;
                }
            }
            if let Some(p) = result? {
                report.problem(p.object, p.status, p.message);
            }
        }
    }
    if !read_packs {
        report.packs = backend.list(FileKind::Pack)?.len() as u64;
    }
    report.note(
        NoteKind::Keyless,
        "keyless check: file contents were compared with their names; nothing was decrypted".into(),
    );
    Ok(report)
}

/// The largest file of a kind the format allows (sealed files: the
/// plaintext limit plus the envelope).
fn size_max(kind: FileKind) -> usize {
    let sealed = |plain: usize| plain + crate::format::crypto::SEAL_OVERHEAD;
    match kind {
        FileKind::Key => crate::format::key::KEY_FILE_SIZE_MAX,
        FileKind::Index => sealed(crate::format::index_file::INDEX_FILE_SIZE_MAX),
        FileKind::Snapshot => sealed(crate::format::snapshot::SNAPSHOT_SIZE_MAX),
        FileKind::Config => sealed(crate::format::config::CONFIG_SIZE_MAX),
        FileKind::Lock => sealed(crate::storage::lock::LOCK_SIZE_MAX),
        FileKind::Drill => sealed(crate::format::drill::DRILL_RECORD_SIZE_MAX),
        FileKind::Pack => crate::format::pack::PACK_SIZE_MAX as usize,
        FileKind::Audit => crate::format::audit::AUDIT_ENTRY_SIZE_MAX,
        FileKind::Manifest => crate::format::manifest::MANIFEST_SIZE_MAX,
    }
}
