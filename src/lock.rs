//! Repository locks: sealed JSON files in `locks/`. `backup` takes a shared
//! lock; commands that delete take an exclusive one. A lock is stale when it
//! was not refreshed for `STALE_AFTER`, or when its process on this host is
//! gone. Held locks are refreshed every `REFRESH_EVERY`.

use crate::backend::{Backend, FileKind};
use crate::crypto::{Domain, MasterKey};
use crate::error::{Error, ErrorKind, Result};
use crate::id::{Id, LockId};
use chrono::{DateTime, FixedOffset, Local};
use serde::{Deserialize, Serialize};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

pub const STALE_AFTER: Duration = Duration::from_secs(30 * 60);
pub const REFRESH_EVERY: Duration = Duration::from_secs(5 * 60);
pub const LOCK_SIZE_MAX: usize = 64 * 1024;

/// Set when this process can no longer trust that it holds its lock: the
/// lock file was removed (`unlock --remove-all`) or not refreshed for so
/// long that others may take it as stale. Writers check it (`ensure_held`)
/// before storing an index file or a snapshot, because a prune that took
/// our lock for stale may have deleted packs we are about to reference.
static LOCK_LOST: AtomicBool = AtomicBool::new(false);

/// Fails once this process's lock may have been lost (see `LOCK_LOST`).
pub fn ensure_held() -> Result<()> {
    if LOCK_LOST.load(Ordering::SeqCst) {
        return Err(Error::new(
            ErrorKind::Locked,
            "the repository lock was lost (removed by another process, or not refreshed in time); stopping before writing anything that depends on it",
        ));
    }
    Ok(())
}

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
        self.hostname == crate::metadata::hostname() && !process_alive(self.pid)
    }
}

/// Whether a process with this pid exists on this host.
pub(crate) fn process_alive(pid: u32) -> bool {
    let Ok(pid) = libc::pid_t::try_from(pid) else {
        return false;
    };
    // SAFETY: kill with signal 0 only checks whether the process exists.
    let rc = unsafe { libc::kill(pid, 0) };
    rc == 0 || std::io::Error::last_os_error().raw_os_error() == Some(libc::EPERM)
}

/// A held lock; released (its file deleted) on drop.
pub struct LockGuard {
    backend: Arc<dyn Backend>,
    name: Arc<Mutex<String>>,
    /// Dropped to stop the refresher at once (it waits on the other end).
    stop: Option<crossbeam_channel::Sender<()>>,
    refresher: Option<std::thread::JoinHandle<()>>,
}

fn write_lock(backend: &dyn Backend, key: &MasterKey, exclusive: bool) -> Result<String> {
    let info = LockInfo {
        time: Local::now().fixed_offset(),
        exclusive,
        hostname: crate::metadata::hostname(),
        username: crate::metadata::username(),
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
                LOCK_SIZE_MAX + crate::crypto::SEAL_OVERHEAD,
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

pub fn acquire(backend: Arc<dyn Backend>, key: &MasterKey, exclusive: bool) -> Result<LockGuard> {
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
    let (stop, stopped) = crossbeam_channel::bounded::<()>(0);
    let refresher = {
        let (backend, key, name) = (backend.clone(), key.clone(), name.clone());
        std::thread::spawn(move || refresh_loop(backend, key, exclusive, name, stopped))
    };
    Ok(LockGuard {
        backend,
        name,
        stop: Some(stop),
        refresher: Some(refresher),
    })
}

/// `acquire`, retried while another process holds a conflicting lock, for
/// up to `retry_for` (restic's `--retry-lock`). Waits grow from 0.5 s to
/// 10 s with jitter, so several waiting processes do not retry in step.
pub fn acquire_with_retry(
    backend: Arc<dyn Backend>,
    key: &MasterKey,
    exclusive: bool,
    retry_for: Duration,
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
                crate::check_interrupt()?;
                let jitter = u64::from(crate::crypto::random_bytes::<2>()[0]) * 4;
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
            LOCK_LOST.store(true, Ordering::SeqCst);
        }
        if waited < REFRESH_EVERY {
            continue;
        }
        waited = Duration::ZERO;
        let current_name = name.lock().expect("lock name mutex").clone();
        match backend.size(FileKind::Lock, &current_name) {
            Err(e) if e.kind() == ErrorKind::NotFound => {
                LOCK_LOST.store(true, Ordering::SeqCst);
                return;
            }
            _ => {}
        }
        if let Ok(new_name) = write_lock(backend.as_ref(), &key, exclusive) {
            let mut current = name.lock().expect("lock name mutex");
            let old = std::mem::replace(&mut *current, new_name);
            let _ = backend.delete(FileKind::Lock, &old);
            last_refresh = std::time::Instant::now();
        }
    }
}

fn locked_error(other: &LockInfo) -> Error {
    Error::new(
        ErrorKind::Locked,
        format!(
            "repository is locked{} by pid {} on {} (user {}) since {}; run `cairn unlock` if that process is gone",
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
                LOCK_SIZE_MAX + crate::crypto::SEAL_OVERHEAD,
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
