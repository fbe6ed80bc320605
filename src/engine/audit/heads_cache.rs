//! A local cache of one signer's chain heads, so a command does not read
//! the whole audit log to find where its chain ends (one GET per entry on
//! object storage). It holds the names of the entries already read and
//! the signer's heads among them; the next command lists `audit/`, reads
//! only the names it has not seen, and folds the new entries of its
//! signer in (a new entry replaces the heads it links).
//!
//! Verified against the listing: a seen name or head that is no longer
//! listed (the log was damaged or rolled back), a file that does not parse
//! or whose checksum does not hold, or one for another repository or
//! signer, and the cache is rebuilt from the whole log. Safe to delete.
//! It is the local user's file, like the rest of the cache: someone who
//! can rewrite it can make this user's next entry link the wrong heads,
//! which the report then shows as a broken chain; nothing is hidden.

use super::read_entry;
use crate::error::{ErrorKind, Result};
use crate::format::audit::{Decoded, PublicKey, Signature};
use crate::format::id::{AuditId, RepositoryId};
use crate::storage::backend::{Backend, FileKind};
use std::collections::{BTreeMap, BTreeSet, HashSet};
use std::path::{Path, PathBuf};

const MAGIC: &str = "cairn audit heads 1";
/// The largest cache file read back (a million seen entries).
const CACHE_SIZE_MAX: u64 = 80 * 1024 * 1024;

/// What one signer's cache holds.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct Heads {
    /// Entry names already read (any signer).
    pub seen: BTreeSet<String>,
    /// The signer's heads among them, with their sequence numbers.
    pub heads: BTreeMap<AuditId, u64>,
}

impl Heads {
    /// Folds in entries not seen before: each of `signer`'s new entries
    /// becomes a head and replaces the heads it links.
    fn add(
        &mut self,
        name: String,
        decoded: Option<&Decoded>,
        repository: RepositoryId,
        signer: PublicKey,
    ) {
        self.seen.insert(name);
        let Some(d) = decoded else { return };
        if d.entry.signer == Some(signer)
            && d.entry.repository == repository
            && d.signature == Signature::Valid
        {
            self.link(d.id, d.entry.seq, &d.entry.links);
        }
    }

    /// Records entry `id` (sequence `seq`) that links `links`.
    pub fn link(&mut self, id: AuditId, seq: u64, links: &[AuditId]) {
        self.seen.insert(id.to_hex());
        for l in links {
            self.heads.remove(l);
        }
        self.heads.insert(id, seq);
    }

    /// The links and sequence number of the signer's next entry: at most
    /// `AUDIT_LINKS_MAX` heads, the highest first (a later writer merges
    /// the rest).
    pub fn next(&self) -> (Vec<AuditId>, u64) {
        let mut heads: Vec<(u64, AuditId)> =
            self.heads.iter().map(|(id, seq)| (*seq, *id)).collect();
        heads.sort_by(|a, b| b.cmp(a));
        heads.truncate(crate::format::audit::AUDIT_LINKS_MAX);
        let next = heads
            .iter()
            .map(|(seq, _)| seq.saturating_add(1))
            .max()
            .unwrap_or(0);
        let mut links: Vec<AuditId> = heads.into_iter().map(|(_, id)| id).collect();
        links.sort();
        (links, next)
    }
}

/// Where `signer`'s cache lives in the repository's cache directory.
pub(crate) fn path(dir: &Path, signer: PublicKey) -> PathBuf {
    dir.join(file_name(signer))
}

fn file_name(signer: PublicKey) -> String {
    format!("audit-heads-{}", signer.to_hex())
}

fn encode(heads: &Heads, repository: RepositoryId, signer: PublicKey) -> String {
    let mut body = format!("{MAGIC}\n{} {}\n", repository.to_hex(), signer.to_hex());
    for (id, seq) in &heads.heads {
        body.push_str(&format!("h {seq} {}\n", id.to_hex()));
    }
    for name in &heads.seen {
        body.push_str(&format!("s {name}\n"));
    }
    let sum = blake3::hash(body.as_bytes()).to_hex();
    format!("{body}{sum}\n")
}

fn decode(text: &str, repository: RepositoryId, signer: PublicKey) -> Option<Heads> {
    let body_end = text.strip_suffix('\n')?.rfind('\n')? + 1;
    let (body, sum) = text.split_at(body_end);
    if blake3::hash(body.as_bytes()).to_hex().as_str() != sum.trim_end() {
        return None;
    }
    let mut lines = body.lines();
    if lines.next()? != MAGIC
        || lines.next()? != format!("{} {}", repository.to_hex(), signer.to_hex())
    {
        return None;
    }
    let mut heads = Heads::default();
    for line in lines {
        match line.split_once(' ')? {
            ("h", rest) => {
                let (seq, id) = rest.split_once(' ')?;
                heads
                    .heads
                    .insert(AuditId::from_hex(id).ok()?, seq.parse().ok()?);
            }
            ("s", name) => {
                heads.seen.insert(name.to_string());
            }
            _ => return None,
        }
    }
    Some(heads)
}

/// Reads the cache back, or `None` when it is missing or unusable (a
/// symlink or anything but a regular file counts as unusable).
fn load(dir: &Path, signer: PublicKey, repository: RepositoryId) -> Option<Heads> {
    let name = file_name(signer);
    let (file, size) = crate::sys::fs::open_regular_beneath(dir, &[], &name).ok()?;
    let bytes = crate::sys::fs::read_bounded(&file, size, CACHE_SIZE_MAX).ok()?;
    decode(std::str::from_utf8(&bytes).ok()?, repository, signer)
}

/// Writes the cache (a temporary file renamed over it, so a reader sees
/// a whole file). A failure only costs the next command a full read.
pub(crate) fn save(file: &Path, heads: &Heads, repository: RepositoryId, signer: PublicKey) {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let temp = file.with_extension(format!("tmp-{}", std::process::id()));
    // Private like the rest of the cache: it names the log's entries.
    let written = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(&temp)
        .and_then(|mut f| f.write_all(encode(heads, repository, signer).as_bytes()))
        .and_then(|()| std::fs::rename(&temp, file));
    if written.is_err() {
        let _ = std::fs::remove_file(&temp);
    }
}

/// `signer`'s heads: from the cache plus the entries it has not seen, or
/// from the whole log when the cache is missing or does not fit the
/// listing. The cache is updated.
pub(crate) fn heads(
    backend: &dyn Backend,
    repository: RepositoryId,
    signer: PublicKey,
    dir: &Path,
) -> Result<Heads> {
    let file = path(dir, signer);
    let listed: HashSet<String> = backend
        .list(FileKind::Audit)?
        .into_iter()
        .map(|(n, _)| n)
        .collect();
    let fits = |h: &Heads| {
        h.seen.iter().all(|n| listed.contains(n))
            && h.heads.keys().all(|id| listed.contains(&id.to_hex()))
    };
    let mut heads = load(dir, signer, repository)
        .filter(fits)
        .unwrap_or_default();
    let mut new: Vec<&String> = listed.iter().filter(|n| !heads.seen.contains(*n)).collect();
    new.sort();
    // Entries in link order: an entry's links are folded before it, so a
    // head it links is never re-added after it.
    let mut read = Vec::new();
    for name in new {
        match read_entry(backend, name) {
            Ok(decoded) => read.push((name.clone(), decoded.ok())),
            Err(e) if e.kind() == ErrorKind::NotFound => {}
            Err(e) => return Err(e),
        }
    }
    read.sort_by_key(|(name, d)| (d.as_ref().map(|d| d.entry.seq), name.clone()));
    let linked: HashSet<AuditId> = read
        .iter()
        .filter_map(|(_, d)| d.as_ref())
        .filter(|d| d.entry.signer == Some(signer))
        .flat_map(|d| d.entry.links.iter().copied())
        .collect();
    for (name, decoded) in read {
        heads.add(name, decoded.as_ref(), repository, signer);
    }
    // An entry linked by a later one read in the same pass is no head,
    // whatever order they were folded in.
    heads.heads.retain(|id, _| !linked.contains(id));
    save(&file, &heads, repository, signer);
    Ok(heads)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::audit::{AuditWriter, Record};
    use crate::format::audit::SigningKey;
    use crate::storage::backend::MemoryBackend;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::Arc;

    /// A memory backend that counts reads of audit entries.
    #[derive(Default)]
    struct Counting {
        inner: MemoryBackend,
        reads: AtomicUsize,
    }

    impl Backend for Counting {
        fn location(&self) -> String {
            self.inner.location()
        }
        fn exists(&self) -> Result<bool> {
            self.inner.exists()
        }
        fn create(&self) -> Result<()> {
            self.inner.create()
        }
        fn put(&self, kind: FileKind, name: &str, bytes: &[u8]) -> Result<()> {
            self.inner.put(kind, name, bytes)
        }
        fn get(&self, kind: FileKind, name: &str) -> Result<Vec<u8>> {
            if kind == FileKind::Audit {
                self.reads.fetch_add(1, Ordering::SeqCst);
            }
            self.inner.get(kind, name)
        }
        fn get_bounded(&self, kind: FileKind, name: &str, size_max: usize) -> Result<Vec<u8>> {
            if kind == FileKind::Audit {
                self.reads.fetch_add(1, Ordering::SeqCst);
            }
            self.inner.get_bounded(kind, name, size_max)
        }
        fn get_range(
            &self,
            kind: FileKind,
            name: &str,
            offset: u64,
            length: u64,
        ) -> Result<Vec<u8>> {
            self.inner.get_range(kind, name, offset, length)
        }
        fn size(&self, kind: FileKind, name: &str) -> Result<u64> {
            self.inner.size(kind, name)
        }
        fn list(&self, kind: FileKind) -> Result<Vec<(String, u64)>> {
            self.inner.list(kind)
        }
        fn delete(&self, kind: FileKind, name: &str) -> Result<()> {
            self.inner.delete(kind, name)
        }
    }

    fn record(op: &str) -> Record {
        Record {
            operation: op.into(),
            ..Record::default()
        }
    }

    /// One command: a fresh writer appending one entry.
    fn command(
        backend: &Arc<Counting>,
        repo: RepositoryId,
        key: &SigningKey,
        cache: Option<&Path>,
    ) -> AuditId {
        let mut w = AuditWriter::new(backend.clone(), repo, Some(key.clone())).with_cache(cache);
        w.append(&record("snapshots")).unwrap()
    }

    fn reads(backend: &Counting) -> usize {
        backend.reads.swap(0, Ordering::SeqCst)
    }

    #[test]
    fn a_second_command_reads_only_the_new_entries_and_a_bad_cache_is_rebuilt() {
        let backend = Arc::new(Counting::default());
        backend.create().unwrap();
        let dir = tempfile::tempdir().unwrap();
        let cache = Some(dir.path());
        let repo = RepositoryId(crate::format::id::Id::of_file_bytes(b"repo"));
        let (a, b) = (
            SigningKey::from_seed(&[1; 32]),
            SigningKey::from_seed(&[2; 32]),
        );
        // Without a cache every command reads the whole log.
        for _ in 0..5 {
            command(&backend, repo, &b, None);
        }
        reads(&backend);
        command(&backend, repo, &b, None);
        assert_eq!(reads(&backend), 5);
        // A's first command builds the cache from the whole log (6 entries).
        let first = command(&backend, repo, &a, cache);
        assert_eq!(reads(&backend), 6);
        // Its next command reads nothing: its own entry is in the cache.
        let second = command(&backend, repo, &a, cache);
        assert_eq!(reads(&backend), 0);
        // Two entries of another signer since: exactly those are read.
        command(&backend, repo, &b, None);
        command(&backend, repo, &b, None);
        reads(&backend);
        let third = command(&backend, repo, &a, cache);
        assert_eq!(reads(&backend), 2);
        // The chain is the one the whole log gives.
        let (links, seq) = super::super::heads(backend.as_ref(), repo, a.public()).unwrap();
        assert_eq!((links, seq), (vec![third], 3));
        reads(&backend);
        let _ = (first, second);

        // Deleted, garbage, or describing entries no longer listed: rebuilt
        // from the whole log, with the same heads.
        let file = path(dir.path(), a.public());
        let total = backend.list(FileKind::Audit).unwrap().len();
        for damage in ["delete", "garbage", "flip", "gone"] {
            match damage {
                "delete" => std::fs::remove_file(&file).unwrap(),
                "garbage" => std::fs::write(&file, b"\0\xffnot a cache").unwrap(),
                "flip" => {
                    let mut bytes = std::fs::read(&file).unwrap();
                    bytes[30] ^= 1;
                    std::fs::write(&file, bytes).unwrap();
                }
                _ => {
                    // The newest entry of A removed behind the cache's back.
                    let newest = heads(backend.as_ref(), repo, a.public(), dir.path()).unwrap();
                    let (id, _) = newest.heads.iter().next().unwrap();
                    backend.inner.delete(FileKind::Audit, &id.to_hex()).unwrap();
                    reads(&backend);
                }
            }
            let before = backend.list(FileKind::Audit).unwrap().len();
            let h = heads(backend.as_ref(), repo, a.public(), dir.path()).unwrap();
            assert_eq!(reads(&backend), before, "{damage}");
            assert_eq!(h.seen.len(), before, "{damage}");
            let expected = super::super::heads(backend.as_ref(), repo, a.public()).unwrap();
            assert_eq!(h.next(), expected, "{damage}");
            reads(&backend);
            assert!(before <= total);
        }
    }
}
