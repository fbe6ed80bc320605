//! Repository locks: sealed JSON files in `locks/`. `backup` takes a shared
//! lock; commands that delete take an exclusive one. A lock is stale when its
//! recorded time is more than `STALE_AFTER` behind the reader's wall clock,
//! or when its process on this host is gone. Held locks are refreshed every
//! `REFRESH_EVERY`, and a holder fails closed: it checks its own lock file
//! and the time since its last refresh (on a clock that counts suspend)
//! before every write that depends on the lock (docs/FORMAT.md, section 13).

use crate::context::Context;
use crate::error::{Error, ErrorKind, Result};
use crate::format::crypto::{Domain, MasterKey, SEAL_OVERHEAD};
use crate::format::id::{Id, LockId};
use crate::storage::backend::{Backend, FileKind};
use crate::sys::clock;
use chrono::{DateTime, FixedOffset, Local};
use serde::{Deserialize, Serialize};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

pub const STALE_AFTER: Duration = Duration::from_secs(30 * 60);
pub const REFRESH_EVERY: Duration = Duration::from_secs(5 * 60);
pub const LOCK_SIZE_MAX: usize = 64 * 1024;
/// `prune` deletes a pack that no index file names only once it is this
/// old: a backup whose lock was lost (suspended, or its lock removed) may
/// still be about to index it, and stops only at its next check.
pub const UNINDEXED_PACK_MIN_AGE: Duration = STALE_AFTER;

/// The lock timings in force. Always the constants above, except in a
/// build with the test hooks, where `CAIRN_TEST_LOCK_STALE_MS` shortens
/// them all in proportion so tests need not wait half an hour.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Timing {
    pub stale_after: Duration,
    pub refresh_every: Duration,
}

impl Timing {
    pub(crate) fn current() -> Timing {
        #[cfg(feature = "failpoints")]
        if let Some(ms) = std::env::var("CAIRN_TEST_LOCK_STALE_MS")
            .ok()
            .and_then(|v| v.parse::<u64>().ok())
        {
            let stale_after = Duration::from_millis(ms.max(60));
            return Timing {
                stale_after,
                refresh_every: stale_after / 6,
            };
        }
        Timing {
            stale_after: STALE_AFTER,
            refresh_every: REFRESH_EVERY,
        }
    }

    /// A holder that has not refreshed for this long declares its lock
    /// lost: two refresh periods before others may take it for stale.
    fn lost_after(self) -> Duration {
        self.stale_after.saturating_sub(2 * self.refresh_every)
    }
}

/// The minimum age of an unindexed pack that `prune` may delete
/// (`UNINDEXED_PACK_MIN_AGE`, or its test-shortened value).
pub fn unindexed_pack_min_age() -> Duration {
    Timing::current().stale_after
}

/// How far apart two hosts' clocks may be for the two-phase delete: a lock
/// that started up to this long after a mark still counts as older than
/// it. Section 13 asks hosts to keep clocks within a few minutes.
pub const MARK_CLOCK_MARGIN: Duration = Duration::from_secs(10 * 60);

/// `MARK_CLOCK_MARGIN`, or its test-shortened value (a third of the
/// shortened stale time).
pub fn mark_clock_margin() -> Duration {
    let timing = Timing::current();
    if timing.stale_after == STALE_AFTER {
        MARK_CLOCK_MARGIN
    } else {
        timing.stale_after / 3
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LockInfo {
    pub time: DateTime<FixedOffset>,
    pub exclusive: bool,
    pub hostname: String,
    pub username: String,
    pub pid: u32,
    /// When the holder took the lock: the same in every refreshed file, so
    /// prune can tell whether a lock existed when it marked packs
    /// (docs/FORMAT.md, section 15, "Two-phase delete"). Absent in locks
    /// written before it existed: such a lock counts as older than any mark.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub started: Option<DateTime<FixedOffset>>,
    /// A prune lock: conflicts with exclusive locks and other prune locks,
    /// not with shared ones. Older readers see `exclusive: false`, a shared
    /// lock, which their exclusive commands still wait for.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub prune: bool,
}

impl LockInfo {
    pub fn decode(plain: &[u8]) -> Result<LockInfo> {
        if plain.len() > LOCK_SIZE_MAX {
            return Err(Error::corrupt("lock is larger than the format allows"));
        }
        serde_json::from_slice(plain).map_err(|e| Error::corrupt(format!("lock is not valid: {e}")))
    }

    /// Whether the lock may be ignored: its time (the writer's wall clock)
    /// is more than the stale threshold behind `now` (ours), or its process
    /// on this host is gone. Wall clocks, not a process's own timers: a
    /// machine that was suspended wakes with its lock already stale to
    /// everyone else.
    pub fn is_stale(&self, now: DateTime<FixedOffset>) -> bool {
        let age = now.signed_duration_since(self.time);
        let stale_after = Timing::current().stale_after;
        if age.to_std().map(|a| a > stale_after).unwrap_or(false) {
            return true;
        }
        self.hostname == crate::sys::hostname() && !crate::sys::process_alive(self.pid)
    }
}

/// A held lock; released (its file deleted) on drop. Writers take it as a
/// parameter, so nothing is stored in a repository without one.
pub struct LockGuard {
    backend: Arc<dyn Backend>,
    held: Arc<Mutex<Held>>,
    exclusive: bool,
    /// Lock files that could not be read when this shared lock was taken.
    warnings: Vec<String>,
    /// Dropped to stop the refresher at once (it waits on the other end).
    stop: Option<crossbeam_channel::Sender<()>>,
    refresher: Option<std::thread::JoinHandle<()>>,
}

/// What the holder and its refresher share, behind one mutex: a check in
/// `ensure_held` and a refresh (new file, then the old one deleted) never
/// interleave, so a check never sees the old name after its file is gone.
struct Held {
    /// The current lock file, and the bytes this process wrote to it.
    name: String,
    sealed: Vec<u8>,
    /// CLOCK_BOOTTIME just before the current file was written. It counts
    /// suspend, which `std::time::Instant` does not.
    refreshed: Duration,
    /// Why the lock is lost, once it is. Never cleared: a prune that took
    /// the lock for stale may have deleted packs this process is about to
    /// reference.
    lost: Option<String>,
}

fn held(held: &Mutex<Held>) -> MutexGuard<'_, Held> {
    // Nothing that can panic runs while `Held` is half updated.
    held.lock().unwrap_or_else(|e| e.into_inner())
}

impl Held {
    /// Why the lock is lost because it was not refreshed in time, if it was
    /// not: a gap longer than `lost_after` since the last refresh (the
    /// machine slept, the process was stopped, or refreshes kept failing).
    fn gap_lost(&self, timing: Timing) -> Option<String> {
        let gap = clock::boottime().saturating_sub(self.refreshed);
        (gap > timing.lost_after()).then(|| {
            format!(
                "it was not refreshed for {:.1} s (more than {:.1} s: the machine was suspended or the process stalled), so other processes may have taken it for stale",
                gap.as_secs_f64(),
                timing.lost_after().as_secs_f64()
            )
        })
    }

    /// Why the lock is lost because its file is not what this process
    /// wrote, if it is: removed (`unlock --remove-all`), replaced, or
    /// unreadable. One small read. A read that fails for another reason
    /// (the storage is unreachable) is that error: nothing can be said
    /// about the lock, and the caller stops all the same.
    fn file_lost(&self, backend: &dyn Backend) -> Result<Option<String>> {
        let name = &self.name;
        match backend.get_bounded(FileKind::Lock, name, LOCK_SIZE_MAX + SEAL_OVERHEAD) {
            Ok(bytes) if bytes == self.sealed => Ok(None),
            Ok(_) => Ok(Some(format!("its file locks/{name} was replaced"))),
            Err(e) if e.kind() == ErrorKind::NotFound => Ok(Some(format!(
                "its file locks/{name} was removed by another process"
            ))),
            Err(e) if e.kind() == ErrorKind::Io => Err(e),
            Err(e) => Ok(Some(format!("its file locks/{name} cannot be read: {e}"))),
        }
    }
}

fn lost_error(reason: &str) -> Error {
    Error::new(
        ErrorKind::Locked,
        format!(
            "the repository lock was lost: {reason}; stopping before writing anything that depends on it"
        ),
    )
}

impl LockGuard {
    /// Fails once the lock may have been lost. Writers call it before
    /// storing a pack, an index file or a snapshot and before every delete.
    /// It looks for itself rather than trusting the refresher: the time
    /// since the last refresh (so a backup that wakes from suspend stops
    /// before the refresher could hide the gap), and the lock file, which
    /// must still hold what this process wrote.
    pub fn ensure_held(&self) -> Result<()> {
        let mut held = held(&self.held);
        if held.lost.is_none() {
            held.lost = match held.gap_lost(Timing::current()) {
                Some(reason) => Some(reason),
                None => held.file_lost(self.backend.as_ref())?,
            };
        }
        match &held.lost {
            Some(reason) => Err(lost_error(reason)),
            None => Ok(()),
        }
    }

    pub fn is_exclusive(&self) -> bool {
        self.exclusive
    }

    /// The name of this lock's current file (it changes on every refresh).
    pub fn file_name(&self) -> String {
        held(&self.held).name.clone()
    }

    /// Lock files that could not be read or opened when this lock was
    /// taken. A shared lock is taken all the same (such a file may be a
    /// lock of a process that is gone); an exclusive one is refused.
    pub fn warnings(&self) -> &[String] {
        &self.warnings
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

/// A prune lock: what `prune` takes so that backups go on (docs/FORMAT.md,
/// section 15, "Two-phase delete"). It conflicts with exclusive locks and
/// other prune locks. Only `acquire_prune` makes one.
pub struct PruneLock(LockGuard);

impl std::ops::Deref for PruneLock {
    type Target = LockGuard;
    fn deref(&self) -> &LockGuard {
        &self.0
    }
}

/// A lock under which files other than one's own may be deleted: an
/// exclusive lock, or prune's (which deletes only by the two-phase rule).
pub trait DeleteLock: std::ops::Deref<Target = LockGuard> {}
impl DeleteLock for ExclusiveLock {}
impl DeleteLock for PruneLock {}

/// What kind of lock is wanted or held.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Mode {
    Shared,
    Prune,
    Exclusive,
}

impl Mode {
    fn conflicts_with(self, other: &LockInfo) -> bool {
        match self {
            Mode::Exclusive => true,
            Mode::Prune => other.exclusive || other.prune,
            Mode::Shared => other.exclusive,
        }
    }
}

/// Writes a new lock file; its name and sealed bytes.
fn write_lock(
    backend: &dyn Backend,
    key: &MasterKey,
    mode: Mode,
    started: DateTime<FixedOffset>,
) -> Result<(String, Vec<u8>)> {
    let info = LockInfo {
        time: Local::now().fixed_offset(),
        exclusive: mode == Mode::Exclusive,
        hostname: crate::sys::hostname(),
        username: crate::sys::username(),
        pid: std::process::id(),
        started: Some(started),
        prune: mode == Mode::Prune,
    };
    let sealed = key.seal(
        Domain::Lock,
        &serde_json::to_vec(&info).expect("lock serializes"),
    );
    let name = LockId(Id::of_file_bytes(&sealed)).to_hex();
    backend.put(FileKind::Lock, &name, &sealed)?;
    Ok((name, sealed))
}

/// One lock file as a reader finds it.
enum Found {
    Lock(LockInfo),
    /// Deleted between the listing and the read (a refresh): nothing.
    Gone,
    /// Cannot be read, opened or decoded: what it says about the lock.
    Unreadable(String),
}

fn read_lock(backend: &dyn Backend, key: &MasterKey, name: &str) -> Found {
    let read = backend
        .get_bounded(FileKind::Lock, name, LOCK_SIZE_MAX + SEAL_OVERHEAD)
        .and_then(|sealed| key.open(Domain::Lock, &sealed))
        .and_then(|plain| LockInfo::decode(&plain));
    let path = format!("{}/locks/{name}", backend.location());
    match read {
        Ok(info) => Found::Lock(info),
        Err(e) if e.kind() == ErrorKind::NotFound => Found::Gone,
        Err(e) if e.kind() == ErrorKind::Io => {
            Found::Unreadable(format!("lock file {path} cannot be read ({e})"))
        }
        Err(e) => Found::Unreadable(format!(
            "lock file {path} cannot be opened with this repository's key or is damaged ({e})"
        )),
    }
}

/// The other processes' locks: the live ones that conflict with the one
/// we want, and the files that cannot be read.
struct Scan {
    conflicts: Vec<LockInfo>,
    unreadable: Vec<String>,
}

fn scan(backend: &dyn Backend, key: &MasterKey, mode: Mode, own: &str) -> Result<Scan> {
    let now = Local::now().fixed_offset();
    let mut out = Scan {
        conflicts: Vec::new(),
        unreadable: Vec::new(),
    };
    for (name, _) in backend.list(FileKind::Lock)? {
        if name == own {
            continue;
        }
        match read_lock(backend, key, &name) {
            Found::Lock(info) => {
                if !info.is_stale(now) && mode.conflicts_with(&info) {
                    out.conflicts.push(info);
                }
            }
            Found::Gone => {}
            Found::Unreadable(what) => out.unreadable.push(what),
        }
    }
    Ok(out)
}

/// Why a lock cannot be taken, if it cannot: a live conflicting lock, or,
/// for an exclusive one, a lock file nobody can vouch for. Such a file may
/// be the lock of a running backup that this process cannot read (another
/// user's, a backend error), so an exclusive operation that deletes data
/// does not run (restic refuses too).
fn refusal(scan: &Scan, mode: Mode) -> Option<Error> {
    if let Some(other) = scan.conflicts.first() {
        return Some(locked_error(other));
    }
    match scan.unreadable.first() {
        Some(what) if mode != Mode::Shared => Some(Error::new(
            ErrorKind::Locked,
            format!(
                "{what}: it may be the lock of a running process, so no exclusive lock can be taken"
            ),
        )),
        _ => None,
    }
}

/// Takes a shared lock (backups), failing at once if an exclusive one is held.
pub fn acquire_shared(backend: Arc<dyn Backend>, key: &MasterKey) -> Result<LockGuard> {
    acquire(backend, key, Mode::Shared)
}

/// Takes a prune lock, failing at once if an exclusive or another prune
/// lock is held or any lock file cannot be read.
pub fn acquire_prune(backend: Arc<dyn Backend>, key: &MasterKey) -> Result<PruneLock> {
    acquire(backend, key, Mode::Prune).map(PruneLock)
}

/// Takes an exclusive lock, failing at once if any other lock is held or
/// any lock file cannot be read.
pub fn acquire_exclusive(backend: Arc<dyn Backend>, key: &MasterKey) -> Result<ExclusiveLock> {
    acquire(backend, key, Mode::Exclusive).map(ExclusiveLock)
}

fn acquire(backend: Arc<dyn Backend>, key: &MasterKey, mode: Mode) -> Result<LockGuard> {
    if let Some(refused) = refusal(&scan(backend.as_ref(), key, mode, "")?, mode) {
        return Err(refused);
    }
    let refreshed = clock::boottime();
    let started = Local::now().fixed_offset();
    let (name, sealed) = write_lock(backend.as_ref(), key, mode, started)?;
    // Re-check after writing: two processes that raced both see each other
    // and both back off, rather than both proceeding.
    let found = match scan(backend.as_ref(), key, mode, &name) {
        Ok(found) => found,
        Err(e) => {
            let _ = backend.delete(FileKind::Lock, &name);
            return Err(e);
        }
    };
    if let Some(refused) = refusal(&found, mode) {
        let _ = backend.delete(FileKind::Lock, &name);
        return Err(refused);
    }
    let held = Arc::new(Mutex::new(Held {
        name,
        sealed,
        refreshed,
        lost: None,
    }));
    let (stop, stopped) = crossbeam_channel::bounded::<()>(0);
    let refresher = {
        let (backend, key, held) = (backend.clone(), key.clone(), held.clone());
        std::thread::spawn(move || refresh_loop(backend, key, mode, started, held, stopped))
    };
    Ok(LockGuard {
        backend,
        held,
        exclusive: mode == Mode::Exclusive,
        warnings: found.unreadable,
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
    acquire_with_retry(backend, key, Mode::Shared, retry_for, ctx)
}

/// `acquire_shared_with_retry` for a prune lock.
pub fn acquire_prune_with_retry(
    backend: Arc<dyn Backend>,
    key: &MasterKey,
    retry_for: Duration,
    ctx: &Context,
) -> Result<PruneLock> {
    acquire_with_retry(backend, key, Mode::Prune, retry_for, ctx).map(PruneLock)
}

/// `acquire_shared_with_retry` for an exclusive lock.
pub fn acquire_exclusive_with_retry(
    backend: Arc<dyn Backend>,
    key: &MasterKey,
    retry_for: Duration,
    ctx: &Context,
) -> Result<ExclusiveLock> {
    acquire_with_retry(backend, key, Mode::Exclusive, retry_for, ctx).map(ExclusiveLock)
}

fn acquire_with_retry(
    backend: Arc<dyn Backend>,
    key: &MasterKey,
    mode: Mode,
    retry_for: Duration,
    ctx: &Context,
) -> Result<LockGuard> {
    let deadline = std::time::Instant::now() + retry_for;
    let mut wait = Duration::from_millis(500);
    loop {
        match acquire(backend.clone(), key, mode) {
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

/// Refreshes the lock every `refresh_every` until the guard is dropped or
/// the lock is lost. Each refresh first checks the file is still ours,
/// then writes a new file and deletes the old one; an old file that is
/// already gone was removed by someone else, and the lock is lost.
fn refresh_loop(
    backend: Arc<dyn Backend>,
    key: MasterKey,
    mode: Mode,
    started: DateTime<FixedOffset>,
    shared: Arc<Mutex<Held>>,
    stopped: crossbeam_channel::Receiver<()>,
) {
    let timing = Timing::current();
    // Short, so a wake from suspend is noticed at once.
    let tick = (timing.refresh_every / 4).min(Duration::from_millis(200));
    let mut next_refresh = clock::boottime() + timing.refresh_every;
    // A tick passes unless the guard is dropped: a command does not wait
    // out a sleep at exit.
    while let Err(crossbeam_channel::RecvTimeoutError::Timeout) = stopped.recv_timeout(tick) {
        let mut held = held(&shared);
        if held.lost.is_some() {
            return;
        }
        // Before refreshing: a refresh after a long gap would hide it from
        // `ensure_held`, and a prune may already have run.
        if let Some(reason) = held.gap_lost(timing) {
            held.lost = Some(reason);
            return;
        }
        let now = clock::boottime();
        if now < next_refresh {
            continue;
        }
        // A failed refresh is retried a period later; `gap_lost` ends it.
        next_refresh = now + timing.refresh_every;
        // Unreadable for now (the storage is unreachable): like a failed
        // write, tried again a period later.
        match held.file_lost(backend.as_ref()) {
            Ok(Some(reason)) => {
                held.lost = Some(reason);
                return;
            }
            Ok(None) => {}
            Err(_) => continue,
        }
        let Ok((name, sealed)) = write_lock(backend.as_ref(), &key, mode, started) else {
            continue;
        };
        let old = std::mem::replace(&mut held.name, name);
        held.sealed = sealed;
        held.refreshed = now;
        if matches!(backend.delete(FileKind::Lock, &old), Err(e) if e.kind() == ErrorKind::NotFound)
        {
            held.lost = Some(format!(
                "its file locks/{old} was removed by another process"
            ));
            return;
        }
    }
}

#[cfg(test)]
impl LockGuard {
    /// Test hook: pretends the last refresh was `ago` earlier, as after a
    /// suspend that stopped every thread of the process.
    pub(crate) fn pretend_suspended(&self, ago: Duration) {
        let mut held = held(&self.held);
        held.refreshed = held.refreshed.saturating_sub(ago);
    }
}

fn locked_error(other: &LockInfo) -> Error {
    Error::new(
        ErrorKind::Locked,
        format!(
            "repository is locked{} by pid {} on {} (user {}) since {}",
            if other.exclusive {
                " exclusively"
            } else if other.prune {
                " by a prune"
            } else {
                ""
            },
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
        let name = held(&self.held).name.clone();
        let _ = self.backend.delete(FileKind::Lock, &name);
    }
}

/// The locks other than `own`'s that are live now, as prune sees them
/// when it decides which marks are due (docs/FORMAT.md, section 15,
/// "Two-phase delete").
pub struct LiveLocks {
    /// When each started (`None`: a lock that does not say) and who holds it.
    locks: Vec<(Option<DateTime<FixedOffset>>, String)>,
    /// A lock file that cannot be read: it may be a running backup's.
    unreadable: Option<String>,
}

impl LiveLocks {
    /// The first lock that keeps what was marked at `mark` from being
    /// deleted: one that started before `mark` plus `mark_clock_margin`,
    /// one that does not say when it started, or an unreadable lock file.
    pub fn blocking(&self, mark: DateTime<FixedOffset>) -> Option<String> {
        if let Some(what) = &self.unreadable {
            return Some(what.clone());
        }
        let margin = chrono::Duration::from_std(mark_clock_margin()).unwrap_or_default();
        let until = mark.checked_add_signed(margin).unwrap_or(mark);
        self.locks
            .iter()
            .find(|(started, _)| started.is_none_or(|started| started <= until))
            .map(|(_, who)| who.clone())
    }

    /// Whether any other process holds a live lock (or a lock file cannot
    /// be read).
    pub fn any(&self) -> bool {
        self.unreadable.is_some() || !self.locks.is_empty()
    }
}

/// The live locks other than `own`.
pub fn live_locks(backend: &dyn Backend, key: &MasterKey, own: &LockGuard) -> Result<LiveLocks> {
    // Held while the locks are read, so our own refresher (new file, then
    // the old one deleted, under this mutex) cannot rename our lock in
    // between: our own lock is exactly this name. Locks of other guards in
    // this process (a library caller's backup beside its prune) count.
    let own_held = held(&own.held);
    let own = own_held.name.clone();
    let now = Local::now().fixed_offset();
    let mut out = LiveLocks {
        locks: Vec::new(),
        unreadable: None,
    };
    for (name, _) in backend.list(FileKind::Lock)? {
        if name == own {
            continue;
        }
        match read_lock(backend, key, &name) {
            Found::Lock(info) if !info.is_stale(now) => {
                let who = format!(
                    "the lock of pid {} on {} (since {})",
                    info.pid,
                    info.hostname,
                    info.started
                        .unwrap_or(info.time)
                        .format("%Y-%m-%d %H:%M:%S")
                );
                out.locks.push((info.started, who));
            }
            Found::Lock(_) | Found::Gone => {}
            Found::Unreadable(what) => {
                out.unreadable.get_or_insert(what);
            }
        }
    }
    Ok(out)
}

/// What `remove_locks` did.
#[derive(Debug, Clone, Default)]
pub struct RemovedLocks {
    pub removed: usize,
    /// Lock files left in place because they cannot be read or opened
    /// (only removing every lock removes them): what each one is.
    pub unreadable: Vec<String>,
}

/// Removes stale locks (or all, with `all`). A lock file that cannot be
/// read or opened is not known to be stale: it stays unless `all`.
pub fn remove_locks(backend: &dyn Backend, key: &MasterKey, all: bool) -> Result<RemovedLocks> {
    let now = Local::now().fixed_offset();
    let mut out = RemovedLocks::default();
    for (name, _) in backend.list(FileKind::Lock)? {
        let remove = all
            || match read_lock(backend, key, &name) {
                Found::Lock(info) => info.is_stale(now),
                Found::Gone => continue,
                Found::Unreadable(what) => {
                    out.unreadable.push(what);
                    false
                }
            };
        if remove {
            backend.delete(FileKind::Lock, &name)?;
            out.removed += 1;
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests;
