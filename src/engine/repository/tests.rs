//! Unit tests of `Repository` on the in-memory backend.

use super::*;
use crate::storage::backend::MemoryBackend;
use std::time::Duration;

const PASSWORD: &[u8] = b"correct horse";

/// Choices for a quick `init`: the smallest Argon2 cost the format allows
/// for one lane, so a test does not spend its time deriving keys.
fn options() -> InitOptions {
    InitOptions {
        kdf: KdfParams {
            memory_kib: 8,
            iterations: 1,
            parallelism: 1,
        },
        ..InitOptions::default()
    }
}

/// A new repository in memory; its index cache, which needs a directory,
/// lives in the returned temp dir.
fn new_repository() -> (Arc<dyn Backend>, tempfile::TempDir) {
    let backend: Arc<dyn Backend> = Arc::new(MemoryBackend::new());
    Repository::init(backend.clone(), PASSWORD, &options()).unwrap();
    (backend, tempfile::tempdir().unwrap())
}

fn open(backend: &Arc<dyn Backend>, cache: &tempfile::TempDir) -> Repository {
    Repository::open(backend.clone(), PASSWORD, Some(cache.path()))
        .unwrap()
        .load_index()
        .unwrap()
}

/// Writes `blobs` as data blobs under `lock` and returns their ids.
fn write_blobs(repo: &Repository, lock: &LockGuard, blobs: &[&[u8]]) -> Vec<BlobId> {
    let mut writer = repo.blob_writer(lock);
    let mut ids = Vec::new();
    for bytes in blobs {
        let id = repo.blob_id(bytes);
        if writer.reserve(BlobKind::Data, id).unwrap() {
            writer
                .add(repo.seal_blob(BlobKind::Data, id, bytes, 1))
                .unwrap();
        }
        ids.push(id);
    }
    writer.finish().unwrap();
    ids
}

fn snapshot(tree: BlobId) -> Snapshot {
    Snapshot {
        version: crate::format::snapshot::SNAPSHOT_VERSION,
        time: chrono::DateTime::parse_from_rfc3339("2026-01-02T03:04:05.123456789+01:00").unwrap(),
        parent: None,
        original: None,
        tree,
        paths: vec!["/srv/data".into()],
        hostname: "host".into(),
        username: "user".into(),
        uid: 1000,
        gid: 1000,
        tags: vec!["nightly".into()],
        program_version: "cairn test".into(),
        source: crate::format::snapshot::SourceKind::Directory,
        command: None,
        summary: Default::default(),
    }
}

#[test]
fn an_initialised_repository_opens_with_its_config() {
    let backend: Arc<dyn Backend> = Arc::new(MemoryBackend::new());
    let cache = tempfile::tempdir().unwrap();
    let missing = Repository::open(backend.clone(), PASSWORD, Some(cache.path()));
    assert_eq!(
        missing.err().map(|e| e.kind()),
        Some(ErrorKind::RepositoryNotFound)
    );
    let id = Repository::init(backend.clone(), PASSWORD, &options()).unwrap();
    let repo = Repository::open(backend.clone(), PASSWORD, Some(cache.path())).unwrap();
    assert_eq!(repo.config().id, id);
    assert_eq!(
        repo.cache_dir(),
        Some(cache.path().join(id.to_hex()).as_path())
    );
    assert_eq!(repo.list_keys().unwrap().len(), 1);
    let again = Repository::init(backend, PASSWORD, &options());
    assert_eq!(again.unwrap_err().kind(), ErrorKind::RepositoryExists);
}

#[test]
fn a_wrong_password_is_refused_as_such() {
    let (backend, cache) = new_repository();
    let opened = Repository::open(backend, b"battery staple", Some(cache.path()));
    assert_eq!(
        opened.err().map(|e| e.kind()),
        Some(ErrorKind::WrongPassword)
    );
}

/// A flipped bit in the only key file must say "damaged", so nobody
/// hunts for a password that was right all along.
#[test]
fn a_damaged_key_file_reads_as_corrupt_not_as_a_wrong_password() {
    let (backend, cache) = new_repository();
    let keys = backend.list(FileKind::Key).unwrap();
    assert_eq!(keys.len(), 1);
    let name = &keys[0].0;
    let mut bytes = backend.get(FileKind::Key, name).unwrap();
    let middle = bytes.len() / 2;
    bytes[middle] ^= 0x01;
    backend.put(FileKind::Key, name, &bytes).unwrap();
    let opened = Repository::open(backend, PASSWORD, Some(cache.path()));
    assert_eq!(opened.err().map(|e| e.kind()), Some(ErrorKind::Corrupt));
}

#[test]
fn an_empty_repository_loads_an_empty_index() {
    let (backend, cache) = new_repository();
    let repo = open(&backend, &cache);
    assert!(repo.list_index_ids().unwrap().is_empty());
    assert!(repo.list_packs().unwrap().is_empty());
    let id = repo.blob_id(b"never stored");
    assert!(repo.locate(BlobKind::Data, &id).unwrap().is_none());
    assert_eq!(
        repo.read_blob(BlobKind::Data, &id).unwrap_err().kind(),
        ErrorKind::NotFound
    );
}

#[test]
fn a_written_blob_reads_back_and_is_not_written_twice() {
    let (backend, cache) = new_repository();
    let repo = open(&backend, &cache);
    let lock = repo.lock_shared(Duration::ZERO).unwrap();
    let bytes = b"the same bytes, twice".repeat(100);
    let id = repo.blob_id(&bytes);
    let mut writer = repo.blob_writer(&lock);
    assert!(writer.reserve(BlobKind::Data, id).unwrap());
    writer
        .add(repo.seal_blob(BlobKind::Data, id, &bytes, 1))
        .unwrap();
    // Reserved already: the writer knows it before any pack is stored.
    assert!(!writer.reserve(BlobKind::Data, id).unwrap());
    let written = writer.finish().unwrap();
    assert_eq!(written.stats.data_blobs, 1);
    assert_eq!(written.stats.packs, 1);
    assert_eq!(written.stats.index_files, 1);
    assert_eq!(repo.read_blob(BlobKind::Data, &id).unwrap(), bytes);
    assert_eq!(repo.list_packs().unwrap().len(), 1);
    assert_eq!(repo.list_index_ids().unwrap().len(), 1);
    // Indexed now: a later writer skips it.
    let mut writer = repo.blob_writer(&lock);
    assert!(!writer.reserve(BlobKind::Data, id).unwrap());
    // The same id as a tree is another blob.
    assert!(writer.reserve(BlobKind::Tree, id).unwrap());
}

#[test]
fn a_saved_snapshot_loads_back() {
    let (backend, cache) = new_repository();
    let repo = open(&backend, &cache);
    let lock = repo.lock_shared(Duration::ZERO).unwrap();
    let mut writer = repo.blob_writer(&lock);
    let tree = writer.save_tree(&Tree::new(Vec::new())).unwrap();
    let written = writer.finish().unwrap();
    let saved = snapshot(tree);
    let id = repo.save_snapshot(&saved, &written).unwrap();
    assert_eq!(repo.list_snapshot_ids().unwrap(), vec![id]);
    assert_eq!(repo.load_snapshot(&id).unwrap(), saved);
    assert_eq!(repo.load_tree(&tree).unwrap(), Tree::new(Vec::new()));
    // Readable by another process, from the repository alone.
    let other = open(&backend, &tempfile::tempdir().unwrap());
    assert_eq!(other.load_snapshot(&id).unwrap(), saved);
}

#[test]
fn a_lock_on_another_repository_authorises_nothing() {
    let (backend, cache) = new_repository();
    let repo = open(&backend, &cache);
    let (other_backend, other_cache) = new_repository();
    let other = open(&other_backend, &other_cache);
    let foreign = other.lock_exclusive(Duration::ZERO).unwrap();
    let refused = repo.ensure_locked(&foreign).unwrap_err();
    assert_eq!(refused.kind(), ErrorKind::InvalidInput);
    let index = IndexFile {
        supersedes: Vec::new(),
        packs: Vec::new(),
        marked_at: None,
    };
    assert_eq!(
        repo.save_index_file(&index, &foreign).unwrap_err().kind(),
        ErrorKind::InvalidInput
    );
    assert!(repo.list_index_ids().unwrap().is_empty());
    // The lock's own repository accepts it.
    other.ensure_locked(&foreign).unwrap();
}

/// Once the lock file is removed (`unlock --remove-all` by another
/// process), a prune may run: nothing may be stored or deleted any more.
#[test]
fn writes_and_deletes_are_refused_once_the_lock_is_gone() {
    let (backend, cache) = new_repository();
    let repo = open(&backend, &cache);
    let lock = repo.lock_exclusive(Duration::ZERO).unwrap();
    write_blobs(&repo, &lock, &[b"one", b"two"]);
    let (pack, _) = repo.list_packs().unwrap()[0];
    let index = *repo.list_index_ids().unwrap().iter().next().unwrap();
    for (name, _) in backend.list(FileKind::Lock).unwrap() {
        backend.delete(FileKind::Lock, &name).unwrap();
    }
    // Refused at once: `ensure_held` reads the lock file itself.
    assert_eq!(
        repo.ensure_locked(&lock).unwrap_err().kind(),
        ErrorKind::Locked
    );
    let mut builder = PackBuilder::new();
    let id = repo.blob_id(b"three");
    builder.add(repo.seal_blob(BlobKind::Data, id, b"three", 1));
    assert_eq!(
        repo.store_pack(builder, &lock).unwrap_err().kind(),
        ErrorKind::Locked
    );
    assert_eq!(
        repo.delete_pack(&pack, &lock).unwrap_err().kind(),
        ErrorKind::Locked
    );
    assert_eq!(
        repo.delete_index_file(&index, &lock).unwrap_err().kind(),
        ErrorKind::Locked
    );
    // Nothing was stored or deleted.
    assert_eq!(repo.list_packs().unwrap().len(), 1);
    assert_eq!(repo.list_index_ids().unwrap(), HashSet::from([index]));
}

/// A writer that fails deletes the packs it stored but never indexed,
/// unless its lock is lost: whoever took the lock meanwhile (a `repair
/// index`) may have indexed them, and an indexed pack must stay.
#[test]
fn a_failed_writer_leaves_its_unindexed_packs_once_its_lock_is_lost() {
    let backend: Arc<dyn Backend> = Arc::new(MemoryBackend::new());
    let small = InitOptions {
        pack_size_target: 1 << 20,
        ..options()
    };
    Repository::init(backend.clone(), PASSWORD, &small).unwrap();
    let cache = tempfile::tempdir().unwrap();
    let repo = open(&backend, &cache);
    // Incompressible blobs that fill a pack: it is stored, not indexed.
    let mut state = 0x9e37_79b9_7f4a_7c15u64;
    let mut blob = || -> Vec<u8> {
        (0..700_000)
            .map(|_| {
                state ^= state << 13;
                state ^= state >> 7;
                state ^= state << 17;
                state as u8
            })
            .collect()
    };
    let blobs = [blob(), blob()];
    fn stored_unindexed<'r>(
        repo: &'r Repository,
        lock: &'r LockGuard,
        blobs: &[Vec<u8>],
    ) -> BlobWriter<'r> {
        let mut writer = repo.blob_writer(lock);
        for bytes in blobs {
            let id = repo.blob_id(bytes);
            assert!(writer.reserve(BlobKind::Data, id).unwrap());
            writer
                .add(repo.seal_blob(BlobKind::Data, id, bytes, 1))
                .unwrap();
        }
        assert_eq!(repo.list_packs().unwrap().len(), 1);
        writer
    }
    let lock = repo.lock_shared(Duration::ZERO).unwrap();
    drop(stored_unindexed(&repo, &lock, &blobs));
    assert!(repo.list_packs().unwrap().is_empty(), "held: deleted");
    let writer = stored_unindexed(&repo, &lock, &blobs);
    for (name, _) in backend.list(FileKind::Lock).unwrap() {
        backend.delete(FileKind::Lock, &name).unwrap();
    }
    drop(writer);
    assert_eq!(repo.list_packs().unwrap().len(), 1, "lost: left");
}
