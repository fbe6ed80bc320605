//! The retention lock's rules, without a repository: which audit entries
//! set a lock, which lock is in force, and until when S3 Object Lock keeps
//! a file. `engine::repository` uses them when it opens a repository on
//! object storage, so they must not import it.

use crate::engine::audit::readable_entries;
use crate::error::Result;
use crate::format::audit::{Decoded, PublicKey, Signature};
use crate::format::id::{AuditId, RepositoryId};
use crate::format::retention::Duration;
use crate::storage::backend::Backend;
use chrono::{DateTime, FixedOffset};

/// The operation name of a lock entry.
pub const LOCK_OPERATION: &str = "retention-lock";

/// One lock entry: its duration, when it was set, and by which entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RetentionLock {
    pub duration: Duration,
    /// Seconds since the epoch, UTC.
    pub set_at: i64,
    pub entry: AuditId,
}

impl RetentionLock {
    /// The oldest snapshot time this lock no longer protects, seen from
    /// `now`; `None`: it protects everything.
    pub fn cutoff(&self, now: DateTime<FixedOffset>) -> Option<DateTime<FixedOffset>> {
        self.duration.before(now)
    }
}

/// The lock an entry sets, if it is a lock entry.
pub fn lock_of(d: &Decoded) -> Option<RetentionLock> {
    if d.entry.operation != LOCK_OPERATION
        || d.signature != Signature::Valid
        || d.entry.result != crate::format::audit::Outcome::Ok
    {
        return None;
    }
    let get = |name: &str| {
        d.entry
            .counts
            .iter()
            .find(|(n, _)| n == name)
            .and_then(|(_, v)| u32::try_from(*v).ok())
    };
    Some(RetentionLock {
        duration: Duration {
            years: get("lock_years")?,
            months: get("lock_months")?,
            days: get("lock_days")?,
            hours: get("lock_hours")?,
        },
        set_at: d.entry.time,
        entry: d.id,
    })
}

/// Every lock entry of this repository signed by one of `signers`.
pub fn locks(
    backend: &dyn Backend,
    repository: RepositoryId,
    signers: &[PublicKey],
) -> Result<Vec<RetentionLock>> {
    let mut out = Vec::new();
    for decoded in readable_entries(backend)? {
        if decoded.entry.repository != repository
            || !decoded.entry.signer.is_some_and(|s| signers.contains(&s))
        {
            continue;
        }
        out.extend(lock_of(&decoded));
    }
    Ok(out)
}

/// The lock in force among the entries of `repository` signed by one of
/// `signers` (the repository's key files), seen from `now`.
pub fn lock_in_force(
    backend: &dyn Backend,
    repository: RepositoryId,
    signers: &[PublicKey],
    now: DateTime<FixedOffset>,
) -> Result<Option<RetentionLock>> {
    Ok(strongest(locks(backend, repository, signers)?, now))
}

/// The lock with the earliest cutoff (none: protects everything).
pub fn strongest(
    locks: impl IntoIterator<Item = RetentionLock>,
    now: DateTime<FixedOffset>,
) -> Option<RetentionLock> {
    locks.into_iter().min_by(|a, b| {
        // `None` (protects everything) sorts first.
        match (a.cutoff(now), b.cutoff(now)) {
            (None, None) => std::cmp::Ordering::Equal,
            (None, _) => std::cmp::Ordering::Less,
            (_, None) => std::cmp::Ordering::Greater,
            (Some(x), Some(y)) => x.cmp(&y),
        }
        .then(a.entry.cmp(&b.entry))
    })
}

/// The date until which a file written at `now` stays under S3 Object
/// Lock for a lock of `duration`: the span the lock reaches back from
/// `now`, forward from `now`, plus a day for calendar differences (months
/// and leap days measured backwards and forwards differ by at most that).
/// At most a hundred years when the duration reaches past the calendar.
pub fn retain_until(duration: Duration, now: DateTime<FixedOffset>) -> std::time::SystemTime {
    const DAY: u64 = 86_400;
    let span = duration
        .before(now)
        .and_then(|cutoff| u64::try_from((now - cutoff).num_seconds()).ok())
        .unwrap_or(100 * 366 * DAY)
        .min(100 * 366 * DAY);
    std::time::SystemTime::from(now) + std::time::Duration::from_secs(span + DAY)
}
