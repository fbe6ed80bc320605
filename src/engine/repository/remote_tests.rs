//! Unit tests of the remote data path (`BlobReader` on IO threads, the
//! writer's concurrent uploads), on a memory backend that asks for several
//! connections as a remote one does.

use super::*;
use crate::engine::checker::{check, CheckOptions, ReadData};
use crate::storage::backend::MemoryBackend;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

const PASSWORD: &[u8] = b"correct horse";

/// A quick `init` with 1 MiB packs, so a few MiB of blobs fill several.
fn small_packs() -> InitOptions {
    InitOptions {
        kdf: KdfParams {
            memory_kib: 8,
            iterations: 1,
            parallelism: 1,
        },
        pack_size_target: 1 << 20,
        ..InitOptions::default()
    }
}

fn open(backend: Arc<dyn Backend>, cache: &tempfile::TempDir) -> Repository {
    Repository::open(backend, PASSWORD, Some(cache.path()))
        .unwrap()
        .load_index()
        .unwrap()
}

/// `count` incompressible blobs of 50 to 250 KB.
fn blobs(seed: u64, count: usize) -> Vec<Vec<u8>> {
    let mut state = seed | 1;
    (0..count)
        .map(|i| {
            (0..50_000 + (i * 37_003) % 200_000)
                .map(|_| {
                    state ^= state << 13;
                    state ^= state >> 7;
                    state ^= state << 17;
                    state as u8
                })
                .collect()
        })
        .collect()
}

/// Adds `blobs` through one writer; `finish`'s result.
fn write(repo: &Repository, lock: &LockGuard, blobs: &[Vec<u8>]) -> Result<Vec<BlobId>> {
    let mut writer = repo.blob_writer(lock);
    let mut ids = Vec::new();
    for bytes in blobs {
        let id = repo.blob_id(bytes);
        if writer.reserve(BlobKind::Data, id)? {
            writer.add(repo.seal_blob(BlobKind::Data, id, bytes, 1))?;
        }
        ids.push(id);
    }
    writer.finish()?;
    Ok(ids)
}

/// Packs uploaded by several threads are all indexed, and a batch read
/// on IO threads (repeats, any order, across packs) returns each blob as
/// written, as the local path does.
#[test]
fn blobs_written_by_concurrent_uploads_read_back_in_batches() {
    for connections in [1, 4] {
        let backend: Arc<dyn Backend> = Arc::new(MemoryBackend::with_connections(connections));
        Repository::init(backend.clone(), PASSWORD, &small_packs()).unwrap();
        let cache = tempfile::tempdir().unwrap();
        let repo = open(backend.clone(), &cache);
        let lock = repo.lock_shared(Duration::ZERO).unwrap();
        let data = blobs(connections as u64, 60);
        let ids = write(&repo, &lock, &data).unwrap();
        assert!(repo.list_packs().unwrap().len() >= 5);
        assert!(repo.blob_reader().remote());
        // Every blob, backwards, with the first three again at the end.
        let mut order: Vec<usize> = (0..ids.len()).rev().collect();
        order.extend([0, 1, 2]);
        let wanted: Vec<BlobId> = order.iter().map(|&i| ids[i]).collect();
        let read = repo.blob_reader().read(BlobKind::Data, &wanted).unwrap();
        assert_eq!(read.len(), wanted.len());
        for (got, &i) in read.iter().zip(&order) {
            assert!(*got == data[i], "blob {i}");
        }
        let report = check(
            &repo,
            &CheckOptions {
                read_data: ReadData::All,
                ..CheckOptions::default()
            },
        )
        .unwrap();
        assert!(report.is_clean(), "{report:?}");
        assert_eq!(report.packs_read, repo.list_packs().unwrap().len() as u64);
    }
}

/// A memory backend (four connections) whose third pack upload fails.
struct FailingUploads {
    inner: MemoryBackend,
    packs: AtomicUsize,
}

impl Backend for FailingUploads {
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
        if kind == FileKind::Pack && self.packs.fetch_add(1, Ordering::SeqCst) == 2 {
            // Slow enough that uploads started after it succeed first.
            std::thread::sleep(Duration::from_millis(50));
            return Err(Error::new(ErrorKind::Io, "injected: 503 Slow Down"));
        }
        self.inner.put(kind, name, bytes)
    }
    fn get(&self, kind: FileKind, name: &str) -> Result<Vec<u8>> {
        self.inner.get(kind, name)
    }
    fn get_range(&self, kind: FileKind, name: &str, offset: u64, length: u64) -> Result<Vec<u8>> {
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
    fn connections(&self) -> Option<usize> {
        Some(4)
    }
}

/// One failed upload among several concurrent ones fails the writer with
/// that upload's error; the dropped writer waits for the others and
/// deletes every pack it stored, so nothing is indexed and `check` finds
/// the repository clean.
#[test]
fn a_failed_upload_among_concurrent_ones_fails_the_writer_and_leaves_nothing() {
    let backend = Arc::new(FailingUploads {
        inner: MemoryBackend::new(),
        packs: AtomicUsize::new(0),
    });
    let dyn_backend: Arc<dyn Backend> = backend.clone();
    Repository::init(dyn_backend.clone(), PASSWORD, &small_packs()).unwrap();
    let cache = tempfile::tempdir().unwrap();
    let repo = open(dyn_backend, &cache);
    let lock = repo.lock_shared(Duration::ZERO).unwrap();
    let err = write(&repo, &lock, &blobs(7, 80)).unwrap_err();
    assert!(err.to_string().contains("injected: 503 Slow Down"), "{err}");
    assert!(!err.to_string().contains('\n'), "{err}");
    assert!(
        backend.packs.load(Ordering::SeqCst) > 3,
        "several uploads ran"
    );
    assert!(
        repo.list_packs().unwrap().is_empty(),
        "uploaded packs deleted"
    );
    assert!(repo.list_index_ids().unwrap().is_empty());
    drop(lock);
    let report = check(&repo, &CheckOptions::default()).unwrap();
    assert!(report.is_clean() && report.notes.is_empty(), "{report:?}");
}
