//! Unit tests of repair on the in-memory backend.

use super::*;
use crate::engine::repository::InitOptions;
use crate::format::crypto::KdfParams;
use crate::storage::backend::{Backend, FileKind, MemoryBackend};
use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

const PASSWORD: &[u8] = b"correct horse";

/// A repository in memory with the quickest key derivation; its index
/// cache lives in the returned temp dir.
fn new_repository() -> (Arc<dyn Backend>, tempfile::TempDir, Repository) {
    let backend: Arc<dyn Backend> = Arc::new(MemoryBackend::new());
    let options = InitOptions {
        kdf: KdfParams {
            memory_kib: 8,
            iterations: 1,
            parallelism: 1,
        },
        ..InitOptions::default()
    };
    Repository::init(backend.clone(), PASSWORD, &options).unwrap();
    let cache = tempfile::tempdir().unwrap();
    let repo = Repository::open(backend.clone(), PASSWORD, Some(cache.path()))
        .unwrap()
        .load_index()
        .unwrap();
    (backend, cache, repo)
}

/// Writes each batch with its own writer, so each becomes its own pack and
/// index file. Returns every blob's id and bytes.
fn write_batches(
    repo: &Repository,
    lock: &LockGuard,
    batches: &[&[&str]],
) -> Vec<(BlobKind, BlobId, Vec<u8>)> {
    let mut blobs = Vec::new();
    for batch in batches {
        let mut writer = repo.blob_writer(lock);
        for text in *batch {
            let bytes = text.as_bytes().repeat(50);
            let id = repo.blob_id(&bytes);
            assert!(writer.reserve(BlobKind::Data, id).unwrap());
            writer
                .add(repo.seal_blob(BlobKind::Data, id, &bytes, 1))
                .unwrap();
            blobs.push((BlobKind::Data, id, bytes));
        }
        // The same empty tree in every batch: stored by the first only.
        let tree = Tree::new(Vec::new());
        let id = writer.save_tree(&tree).unwrap();
        if !blobs
            .iter()
            .any(|(kind, known, _)| *kind == BlobKind::Tree && *known == id)
        {
            blobs.push((BlobKind::Tree, id, tree.encode()));
        }
        writer.finish().unwrap();
    }
    blobs
}

#[test]
fn repair_index_after_every_index_file_is_lost_makes_every_blob_readable() {
    let (backend, _cache, mut repo) = new_repository();
    let lock = repo.lock_exclusive(Duration::ZERO).unwrap();
    let blobs = write_batches(&repo, &lock, &[&["alpha", "beta"], &["gamma"]]);
    assert_eq!(repo.list_packs().unwrap().len(), 3);
    for id in repo.list_index_ids().unwrap() {
        backend.delete(FileKind::Index, &id.to_hex()).unwrap();
    }
    repo.reload_index().unwrap();
    for (kind, id, _) in &blobs {
        assert_eq!(
            repo.read_blob(*kind, id).unwrap_err().kind(),
            ErrorKind::NotFound
        );
    }
    let outcome = repair_index(&mut repo, &lock, false).unwrap();
    assert_eq!(outcome.packs_indexed, 3);
    assert_eq!(outcome.blobs_indexed, blobs.len() as u64);
    assert!(outcome.packs_unreadable.is_empty());
    assert_eq!(outcome.index_files_removed, 0);
    for (kind, id, bytes) in &blobs {
        assert_eq!(&repo.read_blob(*kind, id).unwrap(), bytes);
    }
    assert_eq!(
        repo.list_index_ids().unwrap(),
        outcome.new_index_files.iter().copied().collect()
    );
}

#[test]
fn repair_index_deletes_the_index_files_it_supersedes() {
    let (_backend, _cache, mut repo) = new_repository();
    let lock = repo.lock_exclusive(Duration::ZERO).unwrap();
    let blobs = write_batches(&repo, &lock, &[&["one"], &["two", "three"]]);
    let old = repo.list_index_ids().unwrap();
    assert_eq!(old.len(), 2);
    let outcome = repair_index(&mut repo, &lock, false).unwrap();
    assert_eq!(outcome.index_files_removed, 2);
    assert_eq!(outcome.index_files_written, 1);
    let now = repo.list_index_ids().unwrap();
    assert!(now.is_disjoint(&old), "{now:?} still has one of {old:?}");
    assert_eq!(
        now,
        outcome
            .new_index_files
            .iter()
            .copied()
            .collect::<HashSet<_>>()
    );
    // The new file names the ones it replaced.
    let new = repo.load_index_file(&outcome.new_index_files[0]).unwrap();
    let mut supersedes = new.supersedes.clone();
    supersedes.sort();
    let mut old: Vec<_> = old.into_iter().collect();
    old.sort();
    assert_eq!(supersedes, old);
    for (kind, id, bytes) in &blobs {
        assert_eq!(&repo.read_blob(*kind, id).unwrap(), bytes);
    }
}

/// A snapshot nested deeper than readers walk is repaired by dropping the
/// part below the limit, without recursing per level; `check` is then
/// clean.
#[test]
fn repair_snapshots_drops_directories_nested_past_the_limit() {
    use crate::engine::checker::{check, CheckOptions};
    use crate::format::tree::TREE_DEPTH_MAX;
    let (_backend, _cache, mut repo) = new_repository();
    let lock = repo.lock_exclusive(Duration::ZERO).unwrap();
    crate::engine::archiver::save_nested_snapshot(&repo, &lock, TREE_DEPTH_MAX + 50);
    assert!(!check(&repo, &CheckOptions::default()).unwrap().is_clean());
    let outcome = repair_snapshots(&mut repo, &lock, true, false).unwrap();
    assert_eq!(outcome.snapshots.len(), 1);
    let dropped = &outcome.snapshots[0].dropped;
    assert_eq!(dropped.len(), 1, "{dropped:?}");
    assert!(
        dropped[0].reason.contains("nested more than"),
        "{dropped:?}"
    );
    assert_eq!(dropped[0].path.matches('/').count(), TREE_DEPTH_MAX);
    let report = check(&repo, &CheckOptions::default()).unwrap();
    assert!(
        report.is_clean(),
        "{:?} {:?}",
        report.problems,
        report.damaged_paths
    );
}
