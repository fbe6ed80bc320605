//! Unit tests of `copy` on the in-memory backend: both modes (shared and
//! independent blob-id keys), shared subtrees, and a hostile source.

use super::*;
use crate::engine::archiver::{new_snapshot, BackupOptions};
use crate::engine::repository::InitOptions;
use crate::error::ErrorKind;
use crate::format::crypto::KdfParams;
use crate::format::snapshot::SourceKind;
use crate::storage::backend::{Backend, MemoryBackend};
use std::sync::Arc;
use std::time::Duration;

fn repository(id_keys: Option<crate::format::crypto::IdKeys>) -> (tempfile::TempDir, Repository) {
    let backend: Arc<dyn Backend> = Arc::new(MemoryBackend::new());
    let options = InitOptions {
        kdf: KdfParams {
            memory_kib: 8,
            iterations: 1,
            parallelism: 1,
        },
        id_keys,
        ..InitOptions::default()
    };
    Repository::init(backend.clone(), b"pw", &options).unwrap();
    let cache = tempfile::tempdir().unwrap();
    let repo = Repository::open(backend, b"pw", Some(cache.path()))
        .unwrap()
        .load_index()
        .unwrap();
    (cache, repo)
}

fn file(name: &str, content: Vec<BlobId>) -> Node {
    let mut node = Node::new(name.as_bytes(), NodeKind::File);
    node.content = content;
    node
}

fn dir(name: &str, subtree: BlobId) -> Node {
    let mut node = Node::new(name.as_bytes(), NodeKind::Dir);
    node.subtree = Some(subtree);
    node
}

/// A snapshot whose two directories `a` and `b` are the same subtree (one
/// tree blob), with a file naming one chunk twice: 3 distinct data blobs.
fn source() -> (tempfile::TempDir, Repository, SnapshotId) {
    let (cache, repo) = repository(None);
    let lock = repo.lock_shared(Duration::ZERO).unwrap();
    let mut writer = repo.blob_writer(&lock);
    let mut data = |text: &str| {
        let bytes = text.repeat(1000).into_bytes();
        let id = repo.blob_id(&bytes);
        if writer.reserve(BlobKind::Data, id).unwrap() {
            writer
                .add(repo.seal_blob(BlobKind::Data, id, &bytes, 1))
                .unwrap();
        }
        id
    };
    let (x, y, z) = (data("x"), data("y"), data("z"));
    let inner = writer
        .save_tree(&Tree::new(vec![
            file("f", vec![x, y, x]),
            file("empty", vec![]),
        ]))
        .unwrap();
    let root = writer
        .save_tree(&Tree::new(vec![
            dir("a", inner),
            dir("b", inner),
            file("g", vec![z]),
        ]))
        .unwrap();
    let written = writer.finish().unwrap();
    let mut snapshot = new_snapshot(
        &BackupOptions::default(),
        vec!["/src".into()],
        SourceKind::Directory,
    );
    snapshot.tree = root;
    let id = repo.save_snapshot(&snapshot, &written).unwrap();
    drop(lock);
    (cache, repo, id)
}

/// Every file's bytes, by path, read through the repository's trees.
fn contents(repo: &Repository, root: BlobId) -> Vec<(String, Vec<u8>)> {
    let mut out = Vec::new();
    let mut todo = vec![(String::new(), root)];
    while let Some((path, id)) = todo.pop() {
        for node in repo.load_tree(&id).unwrap().nodes {
            let name = format!("{path}/{}", node.name_str());
            match node.subtree {
                Some(sub) => todo.push((name, sub)),
                None => {
                    let bytes = node
                        .content
                        .iter()
                        .flat_map(|b| repo.read_blob(BlobKind::Data, b).unwrap())
                        .collect();
                    out.push((name, bytes));
                }
            }
        }
    }
    out.sort();
    out
}

fn run(src: &mut Repository, dst: &mut Repository) -> CopyOutcome {
    let src_lock = src.lock_shared(Duration::ZERO).unwrap();
    let dst_lock = dst.lock_shared(Duration::ZERO).unwrap();
    copy(src, &src_lock, dst, &dst_lock, &CopyOptions::default()).unwrap()
}

#[test]
fn copies_into_independent_and_shared_repositories_keep_content_and_dedup() {
    let (_c1, mut src, id) = source();
    let tree = src.load_snapshot(&id).unwrap().tree;
    let expected = contents(&src, tree);
    let keys = src.id_keys();
    for shared in [false, true] {
        let (_c2, mut dst) = repository(shared.then(|| keys.clone()));
        let outcome = run(&mut src, &mut dst);
        assert_eq!(outcome.rehashed, !shared);
        let [one] = &outcome.snapshots[..] else {
            panic!("{outcome:?}")
        };
        assert!(!one.already_copied);
        // Three data blobs and two trees, each stored once.
        assert_eq!((one.stats.data_blobs, one.stats.tree_blobs), (3, 2));
        let copy = dst.load_snapshot(&one.copy).unwrap();
        assert_eq!(copy.original, Some(id));
        assert_eq!(copy.tree == tree, shared, "tree ids equal only when shared");
        assert_eq!(contents(&dst, copy.tree), expected);
        let again = run(&mut src, &mut dst);
        assert!(again.snapshots[0].already_copied);
        assert_eq!(again.snapshots[0].copy, one.copy);
    }
}

/// A test thread has a 2 MiB stack: the walk keeps its levels on the heap
/// and stops at the limit with an error.
#[test]
fn a_source_tree_nested_past_the_limit_is_damage_not_a_stack_overflow() {
    let (_c1, mut src) = repository(None);
    let lock = src.lock_shared(Duration::ZERO).unwrap();
    crate::engine::archiver::save_nested_snapshot(&src, &lock, TREE_DEPTH_MAX + 11);
    drop(lock);
    let (_c2, mut dst) = repository(None);
    let src_lock = src.lock_shared(Duration::ZERO).unwrap();
    let dst_lock = dst.lock_shared(Duration::ZERO).unwrap();
    let err = copy(
        &mut src,
        &src_lock,
        &mut dst,
        &dst_lock,
        &CopyOptions::default(),
    )
    .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Corrupt, "{err}");
    assert!(dst.list_snapshot_ids().unwrap().is_empty());
}
