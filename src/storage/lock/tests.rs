//! Unit tests of locks on the in-memory backend.

use super::*;
use crate::storage::backend::MemoryBackend;

fn backend() -> Arc<dyn Backend> {
    let backend = MemoryBackend::new();
    backend.create().unwrap();
    Arc::new(backend)
}

fn lock_names(backend: &Arc<dyn Backend>) -> Vec<String> {
    let list = backend.list(FileKind::Lock).unwrap();
    list.into_iter().map(|(name, _)| name).collect()
}

/// Stores a lock file as another process would have written it.
fn put_lock(backend: &Arc<dyn Backend>, key: &MasterKey, info: &LockInfo) -> String {
    let sealed = key.seal(Domain::Lock, &serde_json::to_vec(info).unwrap());
    let name = LockId(Id::of_file_bytes(&sealed)).to_hex();
    backend.put(FileKind::Lock, &name, &sealed).unwrap();
    name
}

/// A lock of a live process on another host, taken `age_minutes` ago.
fn other_host(exclusive: bool, age_minutes: i64) -> LockInfo {
    LockInfo {
        time: Local::now().fixed_offset() - chrono::Duration::minutes(age_minutes),
        exclusive,
        hostname: format!("not-{}", crate::sys::hostname()),
        username: "someone".into(),
        pid: 1,
    }
}

#[test]
fn shared_locks_coexist() {
    let (backend, key) = (backend(), MasterKey::generate());
    let first = acquire_shared(backend.clone(), &key).unwrap();
    let second = acquire_shared(backend.clone(), &key).unwrap();
    assert!(!first.is_exclusive() && !second.is_exclusive());
    assert_eq!(lock_names(&backend).len(), 2);
    first.ensure_held().unwrap();
    second.ensure_held().unwrap();
}

#[test]
fn an_exclusive_lock_conflicts_with_a_shared_one() {
    let (backend, key) = (backend(), MasterKey::generate());
    let shared = acquire_shared(backend.clone(), &key).unwrap();
    let refused = acquire_exclusive(backend.clone(), &key).err().unwrap();
    assert_eq!(refused.kind(), ErrorKind::Locked);
    // The refused attempt left no lock file behind.
    assert_eq!(lock_names(&backend).len(), 1);
    drop(shared);
    let exclusive = acquire_exclusive(backend.clone(), &key).unwrap();
    assert!(exclusive.is_exclusive());
}

#[test]
fn an_exclusive_lock_keeps_out_shared_and_exclusive_ones() {
    let (backend, key) = (backend(), MasterKey::generate());
    let _exclusive = acquire_exclusive(backend.clone(), &key).unwrap();
    let shared = acquire_shared(backend.clone(), &key).err().unwrap();
    assert_eq!(shared.kind(), ErrorKind::Locked);
    let exclusive = acquire_exclusive(backend.clone(), &key).err().unwrap();
    assert_eq!(exclusive.kind(), ErrorKind::Locked);
    assert!(exclusive.to_string().contains("locked exclusively"));
    assert_eq!(lock_names(&backend).len(), 1);
}

#[test]
fn another_hosts_live_lock_is_honoured_and_a_stale_one_is_not() {
    let (backend, key) = (backend(), MasterKey::generate());
    let live = put_lock(&backend, &key, &other_host(true, 1));
    let refused = acquire_shared(backend.clone(), &key).err().unwrap();
    assert_eq!(refused.kind(), ErrorKind::Locked);
    backend.delete(FileKind::Lock, &live).unwrap();
    put_lock(&backend, &key, &other_host(true, 31));
    acquire_exclusive(backend.clone(), &key).unwrap();
}

#[test]
fn dropping_a_guard_deletes_its_lock_file() {
    let (backend, key) = (backend(), MasterKey::generate());
    let kept = acquire_shared(backend.clone(), &key).unwrap();
    let kept_names = lock_names(&backend);
    let dropped = acquire_shared(backend.clone(), &key).unwrap();
    assert_eq!(lock_names(&backend).len(), 2);
    drop(dropped);
    assert_eq!(lock_names(&backend), kept_names);
    drop(kept);
    assert!(lock_names(&backend).is_empty());
}

#[test]
fn remove_locks_removes_stale_ones_and_with_all_every_one() {
    let (backend, key) = (backend(), MasterKey::generate());
    let held = acquire_shared(backend.clone(), &key).unwrap();
    let held_names = lock_names(&backend);
    let live = put_lock(&backend, &key, &other_host(false, 1));
    // Not refreshed for longer than STALE_AFTER.
    put_lock(&backend, &key, &other_host(false, 31));
    // This host, a process that does not exist.
    put_lock(
        &backend,
        &key,
        &LockInfo {
            hostname: crate::sys::hostname(),
            pid: u32::MAX,
            ..other_host(false, 1)
        },
    );
    // Sealed under another key: it cannot be honoured, so it is stale.
    put_lock(&backend, &MasterKey::generate(), &other_host(false, 1));
    assert_eq!(lock_names(&backend).len(), 5);
    assert_eq!(remove_locks(backend.as_ref(), &key, false).unwrap(), 3);
    let mut left = held_names.clone();
    left.push(live);
    left.sort();
    assert_eq!(lock_names(&backend), left);
    assert_eq!(remove_locks(backend.as_ref(), &key, true).unwrap(), 2);
    assert!(lock_names(&backend).is_empty());
    // The held guard's file is gone: the guard sees its lock lost.
    held.check_held_now();
    assert_eq!(held.ensure_held().unwrap_err().kind(), ErrorKind::Locked);
}

#[test]
fn a_lock_is_on_its_own_backend_only() {
    let (backend, other, key) = (backend(), backend(), MasterKey::generate());
    let guard = acquire_shared(backend.clone(), &key).unwrap();
    assert!(guard.is_on(&backend));
    assert!(guard.is_on(&backend.clone()));
    assert!(!guard.is_on(&other));
    // And the other way round.
    let exclusive = acquire_exclusive(other.clone(), &key).unwrap();
    assert!(exclusive.is_on(&other) && !exclusive.is_on(&backend));
}
