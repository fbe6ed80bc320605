//! Storage backends: a small trait over where repository files live. Nothing
//! above this module touches repository files directly, and a backend only
//! ever sees sealed bytes (except key files, which hold no plaintext secret).

#[cfg(feature = "s3")]
pub mod aws_config;
pub mod cached;
pub mod local;
pub mod memory;
// The contract as assertions, for the unit tests here and for the
// integration tests that run it against real S3 servers.
#[cfg(any(test, feature = "failpoints"))]
#[doc(hidden)]
pub mod conformance;
#[cfg(feature = "s3")]
pub mod s3;

use crate::error::{Error, Result};
pub use cached::CachedBackend;
pub use local::LocalBackend;
pub use memory::MemoryBackend;
#[cfg(feature = "s3")]
pub use s3::{S3Backend, S3Location};

/// The kinds of repository file, each in its own namespace. Ordered so a
/// `MemoryBackend` can key its files by kind and name.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum FileKind {
    Config,
    Key,
    Snapshot,
    Index,
    Pack,
    Lock,
    /// Audit entries: plaintext, signed, named by the BLAKE3 of their
    /// bytes, never deleted (docs/FORMAT.md 18).
    Audit,
    /// Restore drills' records (`cairn drill`), added after the first
    /// release: a repository from before has no `drills/` directory.
    Drill,
    /// Snapshot manifests: plaintext, signed, named by the BLAKE3 of their
    /// bytes (docs/FORMAT.md 18.2). A repository from before has no
    /// `manifests/` directory.
    Manifest,
}

impl FileKind {
    pub fn dir(self) -> &'static str {
        match self {
            FileKind::Config => "",
            FileKind::Key => "keys",
            FileKind::Snapshot => "snapshots",
            FileKind::Index => "index",
            FileKind::Pack => "packs",
            FileKind::Lock => "locks",
            FileKind::Drill => "drills",
            FileKind::Audit => "audit",
            FileKind::Manifest => "manifests",
        }
    }
    /// The kinds a retention lock keeps on object storage (S3 Object Lock,
    /// compliance mode): files never rewritten once written, which a
    /// snapshot under the lock needs or which prove it existed (packs,
    /// snapshots, audit entries and manifests). Index files are not among
    /// them: prune rewrites them, and they can be rebuilt from the packs.
    pub fn is_retained(self) -> bool {
        matches!(
            self,
            FileKind::Pack | FileKind::Snapshot | FileKind::Audit | FileKind::Manifest
        )
    }
}

/// Does the storage refuse a second create-if-absent (`put_new`) of one
/// name, so that of two racing writers exactly one wins? Object stores
/// differ silently, so S3 servers are probed (`S3Backend`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ConditionalWrites {
    Enforced,
    Ignored,
}

impl ConditionalWrites {
    pub fn as_str(self) -> &'static str {
        match self {
            ConditionalWrites::Enforced => "enforced",
            ConditionalWrites::Ignored => "ignored",
        }
    }
}

/// A repository file being written by `Backend::create_pending`.
pub trait PendingFile: Send {
    /// Appends bytes.
    fn write(&mut self, bytes: &[u8]) -> Result<()>;
    /// Makes the file durable and visible under `name`.
    fn commit(self: Box<Self>, name: &str) -> Result<()>;
}

struct BufferedPending<'b, B: ?Sized> {
    backend: &'b B,
    kind: FileKind,
    bytes: Vec<u8>,
}

impl<B: Backend + ?Sized> PendingFile for BufferedPending<'_, B> {
    fn write(&mut self, bytes: &[u8]) -> Result<()> {
        self.bytes.extend_from_slice(bytes);
        Ok(())
    }

    fn commit(self: Box<Self>, name: &str) -> Result<()> {
        self.backend.put(self.kind, name, &self.bytes)
    }
}

/// Where repository files are stored. Contracts every implementation keeps:
/// - `put` is atomic and durable: after it returns `Ok` the whole file is
///   stored and survives a crash; after a crash mid-put, no partial file is
///   visible under `name`. Putting an existing name again with the same
///   bytes is harmless (names are content hashes).
/// - `get_range` returns exactly `length` bytes or an error.
/// - `list` never returns files still being written.
pub trait Backend: Send + Sync {
    /// Human-readable location, for messages.
    fn location(&self) -> String;
    /// Does a repository (a `config` file) exist here?
    fn exists(&self) -> Result<bool>;
    /// Prepares an empty location for a new repository.
    fn create(&self) -> Result<()>;
    fn put(&self, kind: FileKind, name: &str, bytes: &[u8]) -> Result<()>;
    /// Stores a file only if none has that name yet: `Ok(false)` when one
    /// had. For the one file whose name is not the hash of its bytes
    /// (`config`), which must never be replaced. This default checks and
    /// then puts, which two writers can race; `S3Backend` uses a
    /// conditional PUT where the server enforces it (docs/FORMAT.md,
    /// section 3, "On object storage").
    fn put_new(&self, kind: FileKind, name: &str, bytes: &[u8]) -> Result<bool> {
        match self.size(kind, name) {
            Ok(_) => return Ok(false),
            Err(e) if e.kind() == crate::error::ErrorKind::NotFound => {}
            Err(e) => return Err(e),
        }
        self.put(kind, name, bytes)?;
        Ok(true)
    }
    fn get(&self, kind: FileKind, name: &str) -> Result<Vec<u8>>;
    fn get_range(&self, kind: FileKind, name: &str, offset: u64, length: u64) -> Result<Vec<u8>>;
    /// File size in bytes.
    fn size(&self, kind: FileKind, name: &str) -> Result<u64>;
    /// (name, size) of every file of a kind.
    fn list(&self, kind: FileKind) -> Result<Vec<(String, u64)>>;
    fn delete(&self, kind: FileKind, name: &str) -> Result<()>;

    /// Temporary files left by writers that crashed (`.tmp-*`) among packs,
    /// index files and snapshots: how many and their bytes, deleted unless
    /// `dry_run`. Only safe under an exclusive lock, which keeps out every
    /// writer of those (keys and locks are written without one, so their
    /// directories are left alone). Backends without temporary files have
    /// none.
    fn sweep_temp_files(&self, _dry_run: bool) -> Result<(u64, u64)> {
        Ok((0, 0))
    }

    /// Starts a file that is written in pieces and named only when it is
    /// complete (a pack is named by the hash of its bytes), so a writer need
    /// not hold a whole pack in memory. `commit` gives `put`'s guarantees;
    /// dropped without `commit`, the file leaves nothing visible. This
    /// default buffers the pieces and `put`s them on commit; `LocalBackend`
    /// streams them to a temp file.
    fn create_pending(&self, kind: FileKind) -> Result<Box<dyn PendingFile + '_>> {
        Ok(Box::new(BufferedPending {
            backend: self,
            kind,
            bytes: Vec::new(),
        }))
    }

    /// Reads a whole file after checking its size against `size_max`, so a
    /// damaged or hostile repository cannot make us allocate without bound.
    fn get_bounded(&self, kind: FileKind, name: &str, size_max: usize) -> Result<Vec<u8>> {
        let size = self.size(kind, name)?;
        if size > size_max as u64 {
            return Err(too_large(kind, name, size, size_max));
        }
        self.get(kind, name)
    }

    /// When a file was last written, by the storage's clock, or `None` when
    /// this backend cannot tell. `prune` keeps an unindexed pack younger than
    /// its minimum age (docs/FORMAT.md, section 13), and one whose age it
    /// cannot tell.
    fn modified(&self, _kind: FileKind, _name: &str) -> Result<Option<std::time::SystemTime>> {
        Ok(None)
    }

    /// Whether `put_new` holds against a racing writer here, where that
    /// has to be found out by asking the storage (one probe per process);
    /// `None` where it is not a question (a local file system).
    fn probe_conditional_writes(&self) -> Result<Option<ConditionalWrites>> {
        Ok(None)
    }

    /// Can this storage keep files immutable until a date (S3 Object
    /// Lock)? Only then is the retention lock read when opening, to pass
    /// it to `retain_until`.
    fn can_retain(&self) -> bool {
        false
    }

    /// Files of the retained kinds (`FileKind::is_retained`) written from
    /// now on cannot be deleted or overwritten before `until`, where the
    /// storage can enforce that (`can_retain`); elsewhere a no-op. An error
    /// in one line when the storage should and cannot (a bucket without
    /// Object Lock, a server without it).
    fn retain_until(&self, _until: std::time::SystemTime) -> Result<()> {
        Ok(())
    }

    /// `get_range` of one blob of `kind` out of a pack. A backend that
    /// keeps copies of the packs holding trees (`CachedBackend`) serves
    /// those from its copy; this default reads the pack.
    fn get_blob_range(
        &self,
        _kind: crate::format::pack::BlobKind,
        pack: &str,
        offset: u64,
        length: u64,
    ) -> Result<Vec<u8>> {
        self.get_range(FileKind::Pack, pack, offset, length)
    }

    /// The repository's private cache directory, once opening found one
    /// (`<cache root>/<repository id>`): a backend that keeps copies of
    /// remote files (`CachedBackend`) keeps them there. Others ignore it.
    fn use_cache_dir(&self, _dir: &std::path::Path) {}

    /// How many requests to keep running at once against this backend when
    /// there are many (pack uploads in a backup, ranged reads in a restore
    /// or `check --read-data`), on IO threads of their own: `Some(n)` for a
    /// remote backend, where each request waits on the network far longer
    /// than it computes. `None` (the default) for a local one, whose reads
    /// and writes are system calls made on the CPU pool's threads as they
    /// always were.
    fn connections(&self) -> Option<usize> {
        None
    }
}

/// The error of `get_bounded` for a file over its bound, the same from
/// every backend.
pub(crate) fn too_large(kind: FileKind, name: &str, size: u64, size_max: usize) -> Error {
    Error::corrupt(format!(
        "{} {name} is {size} bytes, more than the {size_max} the format allows",
        kind.dir()
    ))
}

#[cfg(test)]
mod tests {
    use super::conformance::conforms;
    use super::*;

    #[test]
    fn local_backend_keeps_the_backend_contract() {
        let dir = tempfile::tempdir().unwrap();
        conforms(&LocalBackend::new(dir.path().join("repo")));
    }

    #[test]
    fn memory_backend_keeps_the_backend_contract() {
        conforms(&MemoryBackend::new());
    }

    /// Writers on many threads at once (a backup's pack writers and the
    /// lock refresher) each see their own files whole.
    #[test]
    fn memory_backend_is_shared_between_threads() {
        let backend = std::sync::Arc::new(MemoryBackend::new());
        backend.create().unwrap();
        std::thread::scope(|scope| {
            for t in 0..4u8 {
                let backend = &backend;
                scope.spawn(move || {
                    for i in 0..50u8 {
                        let name = format!("{t:02x}{i:02x}");
                        backend.put(FileKind::Pack, &name, &[t, i]).unwrap();
                        assert_eq!(backend.get(FileKind::Pack, &name).unwrap(), [t, i]);
                    }
                });
            }
        });
        assert_eq!(backend.list(FileKind::Pack).unwrap().len(), 200);
    }
}
