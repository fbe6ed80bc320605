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
//! // Opened with the password, then its index cache synced: only a
//! // repository in the `Indexed` state can read or write blobs.
//! let mut repo = Repository::open(backend, b"password", None)?.load_index()?;
//! // Writers take the lock they hold as a parameter.
//! let lock = repo.lock_shared(std::time::Duration::ZERO)?;
//! let done = cairn::backup_paths(&mut repo, &lock, &["/etc".into()], &BackupOptions::default())?;
//! println!("snapshot {}", done.id);
//! # Ok::<(), cairn::Error>(())
//! ```

#![deny(clippy::undocumented_unsafe_blocks)]

// `sys` uses Linux calls (sync_file_range, fstatat with AT_* flags, O_PATH,
// madvise hints), and the tests run on Linux only.
#[cfg(not(target_os = "linux"))]
compile_error!("cairn supports Linux only; this target is not Linux");

pub mod context;
pub mod engine;
pub mod error;
mod failpoint;
pub mod format;
pub mod ops;
pub mod storage;
pub mod sys;
pub mod units;

#[cfg(feature = "cache")]
pub use engine::archiver::{
    backup_paths, backup_stream, parse_backup_time, BackupOptions, BackupOutcome, ParentChoice,
    Unreadable,
};
pub use engine::audit::presence::ReadPacks;
pub use engine::audit::report::{audit_log, audit_report, AuditReport, ReportOptions};
pub use engine::audit::{AuditWriter, Record};
#[cfg(feature = "cache")]
pub use engine::browse::{diff, find, walk, Change, Diff, DiffEntry, Found, Pattern};
#[cfg(feature = "cache")]
pub use engine::checker::{check, check_keyless, CheckOptions, CheckReport, ReadData};
#[cfg(feature = "cache")]
pub use engine::command::backup_command;
#[cfg(feature = "cache")]
pub use engine::copy::{copy, CopiedSnapshot, CopyOptions, CopyOutcome};
#[cfg(feature = "cache")]
pub use engine::drill::{drill, DrillOptions, DrillOutcome};
#[cfg(feature = "cache")]
pub use engine::forget::{forget, ForgetGroup, ForgetOptions, ForgetOutcome};
#[cfg(all(feature = "cache", feature = "mount"))]
pub use engine::mount::{mount, MountOptions};
#[cfg(feature = "cache")]
pub use engine::prune::{prune, MaxUnused, PruneOptions, PruneOutcome};
#[cfg(feature = "cache")]
pub use engine::repair::{
    repair_index, repair_snapshots, RepairIndexOutcome, RepairSnapshotsOutcome,
};
#[cfg(feature = "cache")]
pub use engine::repository::{
    Indexed, InitOptions, OpenOptions, Opened, Repository, WriteStats, Written,
};
#[cfg(feature = "cache")]
pub use engine::restorer::{dump, restore, RestoreOptions, RestoreOutcome};
#[cfg(feature = "cache")]
pub use engine::stats::{
    repository_stats, selection_stats, snapshot_stats, RepositoryStats, SelectionStats,
    SnapshotStats, StatsMode,
};
#[cfg(feature = "cache")]
pub use engine::tag::{tag, TagChange};
#[cfg(feature = "cache")]
pub use engine::tar::{
    export_tar, import_tar, import_tar_with_limits, Compression, ExportOutcome, TarLimits,
};
pub use error::{Error, ErrorKind, Result};
pub use format::audit::{IdKind, Outcome, PublicKey};
pub use format::chunker::ChunkerParams;
pub use format::crypto::{IdKeys, KdfParams};
pub use format::drill::{DrillKind, DrillRecord};
pub use format::id::{AuditId, BlobId, DrillId, IndexId, KeyId, PackId, RepositoryId, SnapshotId};
pub use format::retention::{
    Count, Duration as RetentionDuration, GroupBy, GroupKey, Policy, Reason,
};
pub use format::snapshot::{Snapshot, SnapshotFilter, SourceKind, Summary};
pub use storage::backend::{Backend, FileKind, LocalBackend, MemoryBackend, PendingFile};
pub use storage::lock::{ExclusiveLock, LockGuard};

pub use context::{Context, Progress};
pub use storage::lock::{DeleteLock, PruneLock};
