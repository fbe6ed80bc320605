//! The audit log (docs/FORMAT.md section 18): `AuditWriter` appends one
//! signed entry per operation; `report` verifies the log without the
//! password.
//!
//! Chains and concurrency: the entries of one signer form a hash DAG. A
//! writer's first entry links every head (entry no later entry links) of
//! its signer that it finds in `audit/`; its later entries link its own
//! previous one. Two processes of one key appending at once each link the
//! heads they saw, so the log branches; the next operation of that key
//! sees both branches and links both heads, merging them. No entry is ever
//! rewritten or deleted, and no lock is needed: an entry is a new file
//! named by its hash.

mod checks;
mod heads_cache;
pub mod presence;
pub mod render;
pub mod report;
pub mod schedule;

use crate::error::{ErrorKind, Result};
use crate::format::audit::{Entry, IdKind, Outcome, PublicKey, SigningKey, AUDIT_LINKS_MAX};
use crate::format::audit::{AUDIT_DETAIL_MAX, AUDIT_ENTRY_SIZE_MAX, AUDIT_IDS_MAX};
use crate::format::id::{AuditId, Id, RepositoryId};
use crate::storage::backend::{Backend, FileKind};
use std::collections::HashSet;
use std::sync::Arc;

/// What one operation did, for its entry.
#[derive(Debug, Clone, Default)]
pub struct Record {
    pub operation: String,
    pub result: Option<Outcome>,
    pub detail: String,
    pub ids: Vec<(IdKind, Id)>,
    pub counts: Vec<(String, u64)>,
}

/// Appends entries to one repository's audit log, signed with the key
/// file that opened it (unsigned when that file has no signing key).
pub struct AuditWriter {
    backend: Arc<dyn Backend>,
    repository: RepositoryId,
    signing: Option<SigningKey>,
    host: String,
    user: String,
    /// (links, seq) for the next entry; read from the log at the first
    /// append.
    next: Option<(Vec<AuditId>, u64)>,
    /// The repository's cache directory, where the signer's chain heads
    /// are kept between commands (`heads_cache`), and what it holds.
    cache: Option<std::path::PathBuf>,
    cached: Option<heads_cache::Heads>,
}

impl AuditWriter {
    pub fn new(
        backend: Arc<dyn Backend>,
        repository: RepositoryId,
        signing: Option<SigningKey>,
    ) -> AuditWriter {
        AuditWriter {
            backend,
            repository,
            signing,
            host: crate::sys::hostname(),
            user: crate::sys::username(),
            next: None,
            cache: None,
            cached: None,
        }
    }

    /// Keeps the signer's chain heads in `dir` (the repository's cache
    /// directory), so the next command reads only entries it has not seen
    /// instead of the whole log.
    pub fn with_cache(mut self, dir: Option<&std::path::Path>) -> AuditWriter {
        self.cache = dir.map(std::path::Path::to_path_buf);
        self
    }

    /// The public key entries are signed with, if any.
    pub fn signer(&self) -> Option<PublicKey> {
        self.signing.as_ref().map(SigningKey::public)
    }

    /// Appends the entry for `record`; its name.
    pub fn append(&mut self, record: &Record) -> Result<AuditId> {
        let signer = self.signer();
        let (links, seq) = match (&self.next, signer) {
            (_, None) => (Vec::new(), 0),
            (Some(next), Some(_)) => next.clone(),
            (None, Some(signer)) => match &self.cache {
                Some(dir) => {
                    let cached =
                        heads_cache::heads(self.backend.as_ref(), self.repository, signer, dir)?;
                    let next = cached.next();
                    self.cached = Some(cached);
                    next
                }
                None => heads(self.backend.as_ref(), self.repository, signer)?,
            },
        };
        let mut ids = record.ids.clone();
        ids.truncate(AUDIT_IDS_MAX);
        let mut counts = record.counts.clone();
        if record.ids.len() > AUDIT_IDS_MAX {
            counts.push(("ids".into(), record.ids.len() as u64));
        }
        counts.truncate(crate::format::audit::AUDIT_COUNTS_MAX);
        let clip = |s: &str, max: usize| -> String {
            let mut end = s.len().min(max);
            while !s.is_char_boundary(end) {
                end -= 1;
            }
            s[..end].to_string()
        };
        let entry = Entry {
            repository: self.repository,
            signer,
            seq,
            links,
            time: crate::failpoint::audit_time(),
            host: clip(&self.host, crate::format::audit::AUDIT_NAME_MAX),
            user: clip(&self.user, crate::format::audit::AUDIT_NAME_MAX),
            pid: std::process::id(),
            operation: clip(&record.operation, crate::format::audit::AUDIT_NAME_MAX),
            result: record.result.unwrap_or(Outcome::Ok),
            detail: clip(&record.detail, AUDIT_DETAIL_MAX),
            ids,
            counts,
        };
        let bytes = entry.encode(self.signing.as_ref())?;
        let id = AuditId(Id::of_file_bytes(&bytes));
        self.backend.put(FileKind::Audit, &id.to_hex(), &bytes)?;
        if let Some(signer) = signer {
            self.next = Some((vec![id], seq + 1));
            if let (Some(dir), Some(cached)) = (&self.cache, &mut self.cached) {
                cached.link(id, seq, &entry.links);
                heads_cache::save(
                    &heads_cache::path(dir, signer),
                    cached,
                    self.repository,
                    signer,
                );
            }
        }
        Ok(id)
    }
}

/// One readable entry of the log, with its name and size.
pub(crate) fn read_entry(
    backend: &dyn Backend,
    name: &str,
) -> Result<std::result::Result<crate::format::audit::Decoded, String>> {
    let bytes = match backend.get_bounded(FileKind::Audit, name, AUDIT_ENTRY_SIZE_MAX) {
        Ok(bytes) => bytes,
        Err(e) if e.kind() == ErrorKind::Corrupt => return Ok(Err(e.to_string())),
        Err(e) => return Err(e),
    };
    if Id::from_hex(name).ok() != Some(Id::of_file_bytes(&bytes)) {
        return Ok(Err("does not match its name (its bytes changed)".into()));
    }
    Ok(Entry::decode(&bytes).map_err(|e| e.to_string()))
}

/// Every entry of the log that can be read and decoded. Damaged or
/// vanished entries are skipped: they are the report's business.
pub(crate) fn readable_entries(
    backend: &dyn Backend,
) -> Result<Vec<crate::format::audit::Decoded>> {
    let mut out = Vec::new();
    for (name, _) in backend.list(FileKind::Audit)? {
        match read_entry(backend, &name) {
            Ok(Ok(decoded)) => out.push(decoded),
            Ok(Err(_)) => {}
            Err(e) if e.kind() == ErrorKind::NotFound => {}
            Err(e) => return Err(e),
        }
    }
    Ok(out)
}

/// The heads of `signer`'s entries (validly signed, this repository's)
/// and the sequence number after the highest of them.
fn heads(
    backend: &dyn Backend,
    repository: RepositoryId,
    signer: PublicKey,
) -> Result<(Vec<AuditId>, u64)> {
    let mut mine = Vec::new();
    for decoded in readable_entries(backend)? {
        if decoded.entry.signer == Some(signer)
            && decoded.entry.repository == repository
            && decoded.signature == crate::format::audit::Signature::Valid
        {
            mine.push(decoded);
        }
    }
    let linked: HashSet<AuditId> = mine
        .iter()
        .flat_map(|d| d.entry.links.iter().copied())
        .collect();
    let mut heads: Vec<(u64, AuditId)> = mine
        .iter()
        .filter(|d| !linked.contains(&d.id))
        .map(|d| (d.entry.seq, d.id))
        .collect();
    // Highest first; past the limit the oldest heads stay unmerged (a
    // later writer merges them).
    heads.sort_by(|a, b| b.cmp(a));
    heads.truncate(AUDIT_LINKS_MAX);
    let next = heads
        .iter()
        .map(|(seq, _)| seq.saturating_add(1))
        .max()
        .unwrap_or(0);
    let mut links: Vec<AuditId> = heads.into_iter().map(|(_, id)| id).collect();
    links.sort();
    Ok((links, next))
}
