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
        started: None,
        prune: false,
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
    // Sealed under another key: nobody can tell whose it is, so only
    // removing every lock removes it.
    let foreign = put_lock(&backend, &MasterKey::generate(), &other_host(false, 1));
    assert_eq!(lock_names(&backend).len(), 5);
    let outcome = remove_locks(backend.as_ref(), &key, false).unwrap();
    assert_eq!(outcome.removed, 2);
    assert_eq!(outcome.unreadable.len(), 1);
    assert!(outcome.unreadable[0].contains(&foreign), "{outcome:?}");
    let mut left = held_names.clone();
    left.push(live);
    left.push(foreign);
    left.sort();
    assert_eq!(lock_names(&backend), left);
    assert_eq!(
        remove_locks(backend.as_ref(), &key, true).unwrap().removed,
        3
    );
    assert!(lock_names(&backend).is_empty());
    // The held guard's file is gone: the guard sees its lock lost at once.
    let lost = held.ensure_held().unwrap_err();
    assert_eq!(lost.kind(), ErrorKind::Locked);
    assert!(lost.to_string().contains("was removed"), "{lost}");
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

/// A machine suspended mid-backup: every thread stopped, so the refresher
/// could not mark the lock lost before the holder's next write. The holder
/// sees the gap itself (on a clock that counts suspend), and for good.
#[test]
fn a_holder_that_was_suspended_past_the_threshold_has_lost_its_lock() {
    let (backend, key) = (backend(), MasterKey::generate());
    let guard = acquire_shared(backend.clone(), &key).unwrap();
    guard.ensure_held().unwrap();
    guard.pretend_suspended(STALE_AFTER - 2 * REFRESH_EVERY - Duration::from_secs(5));
    guard.ensure_held().unwrap();
    guard.pretend_suspended(Duration::from_secs(10));
    let lost = guard.ensure_held().unwrap_err();
    assert_eq!(lost.kind(), ErrorKind::Locked);
    assert!(lost.to_string().contains("not refreshed"), "{lost}");
    // Its file is still there and still its own; the lock stays lost.
    assert_eq!(lock_names(&backend).len(), 1);
    assert!(guard.ensure_held().is_err());
}

/// `ensure_held` compares the file with what it wrote: a file put under
/// the same name with other bytes is not this process's lock.
#[test]
fn a_lock_file_replaced_under_its_name_is_lost() {
    let (backend, key) = (backend(), MasterKey::generate());
    let guard = acquire_exclusive(backend.clone(), &key).unwrap();
    let name = lock_names(&backend).remove(0);
    backend.put(FileKind::Lock, &name, b"not the lock").unwrap();
    let lost = guard.ensure_held().unwrap_err();
    assert_eq!(lost.kind(), ErrorKind::Locked);
    assert!(lost.to_string().contains("was replaced"), "{lost}");
}

/// A lock file nobody can read may be a running backup's (another user's
/// file, a key this process does not have): it keeps out exclusive locks,
/// with a message naming it; shared locks are taken with a warning.
#[test]
fn an_unreadable_lock_file_blocks_exclusive_locks_and_warns_shared_ones() {
    for plant in ["garbage", "foreign key", "empty"] {
        let (backend, key) = (backend(), MasterKey::generate());
        let name = match plant {
            "garbage" => {
                backend.put(FileKind::Lock, "ab12", &[7u8; 200]).unwrap();
                "ab12".to_string()
            }
            "foreign key" => put_lock(&backend, &MasterKey::generate(), &other_host(true, 1)),
            _ => {
                backend.put(FileKind::Lock, "cd34", b"").unwrap();
                "cd34".to_string()
            }
        };
        let refused = acquire_exclusive(backend.clone(), &key).err().unwrap();
        assert_eq!(refused.kind(), ErrorKind::Locked, "{plant}");
        let message = refused.to_string();
        assert!(
            message.contains(&format!("locks/{name}")),
            "{plant}: {message}"
        );
        assert!(message.contains("no exclusive lock"), "{plant}: {message}");
        // The refused attempt left only the planted file.
        assert_eq!(lock_names(&backend), vec![name.clone()], "{plant}");
        let shared = acquire_shared(backend.clone(), &key).unwrap();
        assert_eq!(shared.warnings().len(), 1, "{plant}");
        assert!(shared.warnings()[0].contains(&name), "{plant}");
        shared.ensure_held().unwrap();
        drop(shared);
        // Plain unlock leaves it; removing every lock clears the way.
        let kept = remove_locks(backend.as_ref(), &key, false).unwrap();
        assert_eq!((kept.removed, kept.unreadable.len()), (0, 1), "{plant}");
        assert_eq!(
            remove_locks(backend.as_ref(), &key, true).unwrap().removed,
            1
        );
        acquire_exclusive(backend.clone(), &key).unwrap();
    }
}

/// A prune lock lets backups in and keeps other prunes and exclusive
/// commands out; backups' locks block a mark until they end.
#[test]
fn a_prune_lock_runs_beside_shared_ones_only() {
    let (backend, key) = (backend(), MasterKey::generate());
    let shared = acquire_shared(backend.clone(), &key).unwrap();
    let prune = acquire_prune(backend.clone(), &key).unwrap();
    let also = acquire_shared(backend.clone(), &key).unwrap();
    for refused in [
        acquire_prune(backend.clone(), &key).err().unwrap(),
        acquire_exclusive(backend.clone(), &key).err().unwrap(),
    ] {
        assert_eq!(refused.kind(), ErrorKind::Locked, "{refused}");
    }
    let now = Local::now().fixed_offset();
    let live = live_locks(backend.as_ref(), &key, &prune).unwrap();
    assert!(live.any());
    assert!(live.blocking(now).is_some(), "backups older than the mark");
    // Locks that started well after a mark (beyond the clock margin) do
    // not hold it back.
    let long_ago = now - chrono::Duration::hours(2);
    assert!(live.blocking(long_ago).is_none());
    drop((shared, also));
    let live = live_locks(backend.as_ref(), &key, &prune).unwrap();
    assert!(!live.any() && live.blocking(now).is_none());
    drop(prune);
    acquire_exclusive(backend.clone(), &key).unwrap();
}

/// A live lock that does not say when it started (an older build's) is
/// taken to be older than any mark; a stale one blocks nothing.
#[test]
fn a_lock_without_a_start_time_blocks_every_mark() {
    let (backend, key) = (backend(), MasterKey::generate());
    let prune = acquire_prune(backend.clone(), &key).unwrap();
    put_lock(&backend, &key, &other_host(false, 1));
    let live = live_locks(backend.as_ref(), &key, &prune).unwrap();
    let later = Local::now().fixed_offset() + chrono::Duration::days(1);
    assert!(live.blocking(later).is_some());
    let stale = put_lock(&backend, &key, &other_host(false, 120));
    let old = lock_names(&backend)
        .into_iter()
        .find(|n| *n != stale && *n != prune.file_name())
        .unwrap();
    backend.delete(FileKind::Lock, &old).unwrap();
    let live = live_locks(backend.as_ref(), &key, &prune).unwrap();
    assert!(live.blocking(later).is_none());
}
