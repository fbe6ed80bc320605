//! cairn: content-addressed, deduplicating, encrypted backups.
//!
//! The library does all the work; the `cairn` binary parses arguments,
//! calls one function per command and maps errors to exit codes. The on-disk
//! format is specified in `docs/FORMAT.md`; the module map and the rules
//! between modules are in `ARCHITECTURE.md`.
//!
//! ```no_run
//! use cairn::{LocalBackend, Repository, InitOptions, BackupOptions};
//! use std::sync::Arc;
//! let backend = Arc::new(LocalBackend::new("/srv/backup/repo"));
//! Repository::init(backend.clone(), b"password", &InitOptions::default())?;
//! let mut repo = Repository::open(backend, b"password", None)?;
//! repo.load_index()?;
//! let done = cairn::backup_paths(&mut repo, &["/etc".into()], &BackupOptions::default())?;
//! println!("snapshot {}", done.id);
//! # Ok::<(), cairn::Error>(())
//! ```

#[cfg(feature = "cache")]
pub mod archiver;
pub mod backend;
#[cfg(feature = "cache")]
pub mod browse;
#[cfg(feature = "cache")]
pub mod checker;
pub mod chunker;
#[cfg(feature = "cache")]
pub mod command;
pub mod config;
pub mod crypto;
pub mod error;
pub mod exclude;
#[cfg(feature = "cache")]
pub mod forget;
pub mod id;
pub mod index;
pub mod key;
pub mod lock;
pub mod metadata;
pub mod metrics;
pub mod pack;
pub mod profile;
pub mod progress;
#[cfg(feature = "cache")]
pub mod prune;
#[cfg(feature = "cache")]
pub mod repair;
#[cfg(feature = "cache")]
pub mod repository;
#[cfg(feature = "cache")]
pub mod restorer;
pub mod retention;
pub mod snapshot;
#[cfg(feature = "cache")]
pub mod stats;
#[cfg(feature = "cache")]
pub mod tag;
#[cfg(feature = "tar-format")]
pub mod tarball;
pub mod tree;

#[cfg(feature = "cache")]
pub use archiver::{
    backup_paths, backup_stream, parse_backup_time, BackupOptions, BackupOutcome, ParentChoice,
    Unreadable,
};
pub use backend::{Backend, FileKind, LocalBackend, PendingFile};
#[cfg(feature = "cache")]
pub use browse::{diff, find, walk, Change, Diff, DiffEntry, Found, Pattern};
#[cfg(feature = "cache")]
pub use checker::{check, check_keyless, CheckOptions, CheckReport, ReadData};
pub use chunker::ChunkerParams;
#[cfg(feature = "cache")]
pub use command::backup_command;
pub use crypto::KdfParams;
pub use error::{Error, ErrorKind, Result};
#[cfg(feature = "cache")]
pub use forget::{forget, ForgetGroup, ForgetOptions, ForgetOutcome};
pub use id::{BlobId, IndexId, KeyId, PackId, RepositoryId, SnapshotId};
pub use lock::{acquire as lock_repository, acquire_with_retry, remove_locks, LockGuard};
#[cfg(feature = "cache")]
pub use prune::{prune, MaxUnused, PruneOptions, PruneOutcome};
#[cfg(feature = "cache")]
pub use repair::{repair_index, repair_snapshots, RepairIndexOutcome, RepairSnapshotsOutcome};
#[cfg(feature = "cache")]
pub use repository::{InitOptions, Repository};
#[cfg(feature = "cache")]
pub use restorer::{dump, restore, RestoreOutcome};
pub use retention::{Count, Duration as RetentionDuration, GroupBy, GroupKey, Policy, Reason};
pub use snapshot::{Snapshot, SnapshotFilter, SourceKind, Summary};
#[cfg(feature = "cache")]
pub use stats::{
    repository_stats, selection_stats, snapshot_stats, RepositoryStats, SelectionStats,
    SnapshotStats, StatsMode,
};
#[cfg(feature = "cache")]
pub use tag::{tag, TagChange};
#[cfg(feature = "cache")]
pub use tarball::{export_tar, import_tar, Compression, ExportOutcome};

use std::sync::atomic::{AtomicBool, Ordering};

static INTERRUPTED: AtomicBool = AtomicBool::new(false);

/// Asks running operations to stop at the next safe point (called from the
/// CLI's SIGINT/SIGTERM handler; async-signal-safe).
pub fn request_interrupt() {
    INTERRUPTED.store(true, Ordering::SeqCst);
}

/// Fails with `ErrorKind::Interrupted` once an interrupt was requested.
/// Long loops call this so that no snapshot is written after a Ctrl-C.
pub fn check_interrupt() -> Result<()> {
    if INTERRUPTED.load(Ordering::SeqCst) {
        Err(Error::new(ErrorKind::Interrupted, "interrupted"))
    } else {
        Ok(())
    }
}

/// This process's soft limit on open descriptors (RLIMIT_NOFILE), read
/// once. The walk ahead and the index cache each keep to a quarter of it,
/// so a backup under a low limit (a container, a `ulimit -n 64`) still
/// opens every file it has to read.
pub(crate) fn descriptor_limit() -> u64 {
    static LIMIT: std::sync::OnceLock<u64> = std::sync::OnceLock::new();
    *LIMIT.get_or_init(|| {
        let mut limit = libc::rlimit {
            rlim_cur: 0,
            rlim_max: 0,
        };
        // SAFETY: getrlimit writes into the struct it is given.
        if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) } != 0
            || limit.rlim_cur == libc::RLIM_INFINITY
        {
            return u64::MAX;
        }
        limit.rlim_cur
    })
}

/// Test hook: when the environment variable `CAIRN_FAILPOINT` equals `name`,
/// the process aborts on the spot, as a power cut or `kill -9` would stop it.
/// Integration tests use it to prove a crash at each step of a backup leaves
/// a valid repository. Costs one environment lookup per call.
pub fn failpoint(name: &str) {
    if failpoint_is(name) {
        std::process::abort();
    }
}

/// Whether the test hook `CAIRN_FAILPOINT` is set to `name` (for injected
/// errors such as `enospc`, where the process must go on and fail cleanly).
pub fn failpoint_is(name: &str) -> bool {
    std::env::var_os("CAIRN_FAILPOINT").is_some_and(|v| v == name)
}
