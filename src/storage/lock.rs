//! Repository locks: sealed JSON files in `locks/`. `backup` takes a shared
//! lock; commands that delete take an exclusive one. A lock is stale when it
//! was not refreshed for `STALE_AFTER`, or when its process on this host is
//! gone. Held locks are refreshed every `REFRESH_EVERY`.

use crate::context::Context;
use crate::error::{Error, ErrorKind, Result};
use crate::format::crypto::{Domain, MasterKey};
use crate::format::id::{Id, LockId};
use crate::storage::backend::{Backend, FileKind};
use chrono::{DateTime, FixedOffset, Local};
use serde::{Deserialize, Serialize};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

pub const STALE_AFTER: Duration = Duration::from_secs(30 * 60);
pub const REFRESH_EVERY: Duration = Duration::from_secs(5 * 60);
pub const LOCK_SIZE_MAX: usize = 64 * 1024;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LockInfo {
    pub time: DateTime<FixedOffset>,
    pub exclusive: bool,
    pub hostname: String,
    pub username: String,
    pub pid: u32,
}

impl LockInfo {
    pub fn decode(plain: &[u8]) -> Result<LockInfo> {
        if plain.len() > LOCK_SIZE_MAX {
            return Err(Error::corrupt("lock is larger than the format allows"));
        }
        serde_json::from_slice(plain).map_err(|e| Error::corrupt(format!("lock is not valid: {e}")))
    }

    pub fn is_stale(&self, now: DateTime<FixedOffset>) -> bool {
        let age = now.signed_duration_since(self.time);
        if age.to_std().map(|a| a > STALE_AFTER).unwrap_or(false) {
            return true;
        }
        self.hostname == crate::sys::hostname() && !crate::sys::process_alive(self.pid)
    }
}

/// A held lock; released (its file deleted) on drop. Writers take it as a
/// parameter, so nothing is stored in a repository without one.
pub struct LockGuard {
    backend: Arc<dyn Backend>,
    name: Arc<Mutex<String>>,
    exclusive: bool,
    /// Set by the refresher when this process can no longer trust that it
    /// holds the lock: the lock file was removed (`unlock --remove-all`) or
    /// not refreshed for so long that others may take it as stale. A prune
    /// that took the lock for stale may have deleted packs we are about to
    /// reference, so `ensure_held` fails from then on.
    lost: Arc<AtomicBool>,
    /// Dropped to stop the refresher at once (it waits on the other end).
    stop: Option<crossbeam_channel::Sender<()>>,
    refresher: Option<std::thread::JoinHandle<()>>,
}

impl LockGuard {
    /// Fails once the lock may have been lost (see `lost`). Writers call it
    /// before storing an index file or a snapshot and before every delete.
    pub fn ensure_held(&self) -> Result<()> {
        if self.lost.load(Ordering::SeqCst) {
            return Err(Error::new(
                ErrorKind::Locked,
                "the repository lock was lost (removed by another process, or not refreshed in time); stopping before writing anything that depends on it",
            ));
        }
        Ok(())
    }

    pub fn is_exclusive(&self) -> bool {
        self.exclusive
    }

    /// Whether this lock is held on `backend` (the same backend object the
    /// repository writes to), so a lock on one repository cannot authorise
    /// writes to another.
    pub fn is_on(&self, backend: &Arc<dyn Backend>) -> bool {
        std::ptr::addr_eq(Arc::as_ptr(&self.backend), Arc::as_ptr(backend))
    }
}

/// An exclusive lock: what forget, prune, repair, tag and key removal need.
/// Only `acquire_exclusive` makes one, so holding it proves exclusivity.
pub struct ExclusiveLock(LockGuard);

impl std::ops::Deref for ExclusiveLock {
    type Target = LockGuard;
    fn deref(&self) -> &LockGuard {
        &self.0
    }
}

fn write_lock(backend: &dyn Backend, key: &MasterKey, exclusive: bool) -> Result<String> {
    let info = LockInfo {
        time: Local::now().fixed_offset(),
        exclusive,
        hostname: crate::sys::hostname(),
        username: crate::sys::username(),
        pid: std::process::id(),
    };
    let sealed = key.seal(
        Domain::Lock,
        &serde_json::to_vec(&info).expect("lock serializes"),
    );
    let name = LockId(Id::of_file_bytes(&sealed)).to_hex();
    backend.put(FileKind::Lock, &name, &sealed)?;
    Ok(name)
}

/// Lists other processes' live locks that conflict with the one we want.
fn conflicts(
    backend: &dyn Backend,
    key: &MasterKey,
    exclusive: bool,
    own: &str,
) -> Result<Vec<LockInfo>> {
    let now = Local::now().fixed_offset();
    let mut out = Vec::new();
    for (name, _) in backend.list(FileKind::Lock)? {
        if name == own {
            continue;
        }
        let info = match backend
            .get_bounded(
                FileKind::Lock,
                &name,
                LOCK_SIZE_MAX + crate::format::crypto::SEAL_OVERHEAD,
            )
            .and_then(|b| key.open(Domain::Lock, &b))
        {
            Ok(plain) => match LockInfo::decode(&plain) {
                Ok(info) => info,
                Err(_) => continue,
            },
            // Deleted meanwhile, or not ours/damaged: it cannot be honoured.
            Err(_) => continue,
        };
        if !info.is_stale(now) && (exclusive || info.exclusive) {
            out.push(info);
        }
    }
    Ok(out)
}

/// Takes a shared lock (backups), failing at once if an exclusive one is held.
pub fn acquire_shared(backend: Arc<dyn Backend>, key: &MasterKey) -> Result<LockGuard> {
    acquire(backend, key, false)
}

/// Takes an exclusive lock, failing at once if any other lock is held.
pub fn acquire_exclusive(backend: Arc<dyn Backend>, key: &MasterKey) -> Result<ExclusiveLock> {
    acquire(backend, key, true).map(ExclusiveLock)
}

fn acquire(backend: Arc<dyn Backend>, key: &MasterKey, exclusive: bool) -> Result<LockGuard> {
    let found = conflicts(backend.as_ref(), key, exclusive, "")?;
    if let Some(other) = found.first() {
        return Err(locked_error(other));
    }
    let name = write_lock(backend.as_ref(), key, exclusive)?;
    // Re-check after writing: two processes that raced both see each other
    // and both back off, rather than both proceeding.
    let found = conflicts(backend.as_ref(), key, exclusive, &name)?;
    if let Some(other) = found.first() {
        let _ = backend.delete(FileKind::Lock, &name);
        return Err(locked_error(other));
    }
    let name = Arc::new(Mutex::new(name));
    let lost = Arc::new(AtomicBool::new(false));
    let (stop, stopped) = crossbeam_channel::bounded::<()>(0);
    let refresher = {
        let (backend, key, name, lost) = (backend.clone(), key.clone(), name.clone(), lost.clone());
        std::thread::spawn(move || refresh_loop(backend, key, exclusive, name, &lost, stopped))
    };
    Ok(LockGuard {
        backend,
        name,
        exclusive,
        lost,
        stop: Some(stop),
        refresher: Some(refresher),
    })
}

/// `acquire`, retried while another process holds a conflicting lock, for
/// up to `retry_for` (restic's `--retry-lock`). Waits grow from 0.5 s to
/// 10 s with jitter, so several waiting processes do not retry in step.
///
/// The exclusive variant is `acquire_exclusive_with_retry`; `ctx` ends the
/// wait when it is interrupted.
pub fn acquire_shared_with_retry(
    backend: Arc<dyn Backend>,
    key: &MasterKey,
    retry_for: Duration,
    ctx: &Context,
) -> Result<LockGuard> {
    acquire_with_retry(backend, key, false, retry_for, ctx)
}

/// `acquire_shared_with_retry` for an exclusive lock.
pub fn acquire_exclusive_with_retry(
    backend: Arc<dyn Backend>,
    key: &MasterKey,
    retry_for: Duration,
    ctx: &Context,
) -> Result<ExclusiveLock> {
    acquire_with_retry(backend, key, true, retry_for, ctx).map(ExclusiveLock)
}

fn acquire_with_retry(
    backend: Arc<dyn Backend>,
    key: &MasterKey,
    exclusive: bool,
    retry_for: Duration,
    ctx: &Context,
) -> Result<LockGuard> {
    let deadline = std::time::Instant::now() + retry_for;
    let mut wait = Duration::from_millis(500);
    loop {
        match acquire(backend.clone(), key, exclusive) {
            Err(e) if e.kind() == ErrorKind::Locked => {
                let now = std::time::Instant::now();
                if now >= deadline {
                    return Err(e);
                }
                ctx.check_interrupt()?;
                let jitter = u64::from(crate::sys::random_bytes::<2>()[0]) * 4;
                let sleep = (wait + Duration::from_millis(jitter)).min(deadline - now);
                std::thread::sleep(sleep);
                wait = (wait * 2).min(Duration::from_secs(10));
            }
            other => return other,
        }
    }
}

fn refresh_loop(
    backend: Arc<dyn Backend>,
    key: MasterKey,
    exclusive: bool,
    name: Arc<Mutex<String>>,
    lost: &AtomicBool,
    stopped: crossbeam_channel::Receiver<()>,
) {
    let tick = Duration::from_millis(200);
    let mut waited = Duration::ZERO;
    let mut last_refresh = std::time::Instant::now();
    // A tick passes unless the guard is dropped: a command does not wait
    // out a sleep at exit.
    while let Err(crossbeam_channel::RecvTimeoutError::Timeout) = stopped.recv_timeout(tick) {
        waited += tick;
        // Leave a margin of two refresh periods before others see it stale.
        if last_refresh.elapsed() + 2 * REFRESH_EVERY > STALE_AFTER {
            lost.store(true, Ordering::SeqCst);
        }
        if waited < REFRESH_EVERY {
            continue;
        }
        waited = Duration::ZERO;
        let current_name = name.lock().expect("lock name mutex").clone();
        if lock_file_gone(backend.as_ref(), &current_name) {
            lost.store(true, Ordering::SeqCst);
            return;
        }
        if let Ok(new_name) = write_lock(backend.as_ref(), &key, exclusive) {
            let mut current = name.lock().expect("lock name mutex");
            let old = std::mem::replace(&mut *current, new_name);
            let _ = backend.delete(FileKind::Lock, &old);
            last_refresh = std::time::Instant::now();
        }
    }
}

/// Whether our lock file `name` was removed (`unlock --remove-all`): the
/// lock is lost then, and the refresher stops.
fn lock_file_gone(backend: &dyn Backend, name: &str) -> bool {
    matches!(backend.size(FileKind::Lock, name), Err(e) if e.kind() == ErrorKind::NotFound)
}

#[cfg(test)]
impl LockGuard {
    /// The refresher's check that the lock file is still there, now rather
    /// than after `REFRESH_EVERY`, so unit tests see a removed lock lost.
    pub(crate) fn check_held_now(&self) {
        let name = self.name.lock().expect("lock name mutex").clone();
        if lock_file_gone(self.backend.as_ref(), &name) {
            self.lost.store(true, Ordering::SeqCst);
        }
    }
}

fn locked_error(other: &LockInfo) -> Error {
    Error::new(
        ErrorKind::Locked,
        format!(
            "repository is locked{} by pid {} on {} (user {}) since {}",
            if other.exclusive { " exclusively" } else { "" },
            other.pid,
            other.hostname,
            other.username,
            other.time.format("%Y-%m-%d %H:%M:%S")
        ),
    )
}

impl Drop for LockGuard {
    fn drop(&mut self) {
        drop(self.stop.take());
        if let Some(handle) = self.refresher.take() {
            let _ = handle.join();
        }
        let name = self.name.lock().expect("lock name mutex").clone();
        let _ = self.backend.delete(FileKind::Lock, &name);
    }
}

/// Removes stale locks (or all, with `all`). Returns how many were removed.
pub fn remove_locks(backend: &dyn Backend, key: &MasterKey, all: bool) -> Result<usize> {
    let now = Local::now().fixed_offset();
    let mut removed = 0;
    for (name, _) in backend.list(FileKind::Lock)? {
        let stale = match backend
            .get_bounded(
                FileKind::Lock,
                &name,
                LOCK_SIZE_MAX + crate::format::crypto::SEAL_OVERHEAD,
            )
            .and_then(|b| key.open(Domain::Lock, &b))
        {
            Ok(plain) => LockInfo::decode(&plain)
                .map(|i| i.is_stale(now))
                .unwrap_or(true),
            Err(e) if e.kind() == ErrorKind::NotFound => continue,
            Err(_) => true,
        };
        if all || stale {
            backend.delete(FileKind::Lock, &name)?;
            removed += 1;
        }
    }
    Ok(removed)
}

#[cfg(test)]
mod tests;
