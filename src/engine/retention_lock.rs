//! The retention lock (docs/FORMAT.md section 18.1): a duration for which
//! `forget` removes no snapshot, stored as a signed audit entry. It can be
//! set and lengthened, never shortened: the lock in force is the longest
//! of all lock entries, so deleting or forging one cannot shorten it.

use crate::engine::audit::{readable_entries, AuditWriter, Record};
use crate::engine::repository::Repository;
use crate::error::{Error, ErrorKind, Result};
use crate::format::audit::{Decoded, PublicKey, Signature};
use crate::format::id::AuditId;
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

/// The lock's duration as an entry's counts.
fn counts(d: Duration) -> Vec<(String, u64)> {
    vec![
        ("lock_years".into(), u64::from(d.years)),
        ("lock_months".into(), u64::from(d.months)),
        ("lock_days".into(), u64::from(d.days)),
        ("lock_hours".into(), u64::from(d.hours)),
    ]
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
fn locks(
    backend: &dyn Backend,
    repository: crate::format::id::RepositoryId,
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

/// The lock in force: the one that protects the most, seen from `now`.
/// Only entries signed by a key file of the repository count, so a planted
/// entry signed by some other key cannot lock the repository.
pub fn retention_lock<S>(
    repo: &Repository<S>,
    now: DateTime<FixedOffset>,
) -> Result<Option<RetentionLock>> {
    let signers: Vec<PublicKey> = repo
        .list_keys()?
        .into_iter()
        .filter_map(|(_, k)| k.ok().and_then(|k| k.signer()))
        .collect();
    let all = locks(repo.backend().as_ref(), repo.config().id, &signers)?;
    Ok(strongest(all, now))
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

/// On storage that can keep files immutable (S3 Object Lock), has it keep
/// the retained kinds written by this process for the lock in force. Only
/// there is the lock read at all (it costs a listing of the audit log).
pub(crate) fn apply_object_lock<S>(repo: &Repository<S>) -> Result<()> {
    if !repo.backend().can_retain() {
        return Ok(());
    }
    let now = chrono::Utc::now().fixed_offset();
    if let Some(lock) = retention_lock(repo, now)? {
        repo.backend()
            .retain_until(retain_until(lock.duration, now))?;
    }
    Ok(())
}

/// Sets or lengthens the lock; a lock shorter than the one in force is
/// refused (`ErrorKind::Refused`). Needs a key file with a signing key.
pub fn set_retention_lock<S>(repo: &Repository<S>, duration: Duration) -> Result<RetentionLock> {
    if duration.is_zero() {
        return Err(Error::invalid("a retention lock must be longer than zero"));
    }
    let Some(signing) = repo.signing_key() else {
        return Err(Error::new(
            ErrorKind::Refused,
            "this key file has no signing key, so it cannot sign a retention lock",
        ));
    };
    let now = chrono::Utc::now().fixed_offset();
    if let Some(current) = retention_lock(repo, now)? {
        let shorter = match (duration.before(now), current.cutoff(now)) {
            (_, None) => duration != current.duration,
            (None, Some(_)) => false,
            (Some(new), Some(old)) => new > old,
        };
        if shorter {
            return Err(Error::new(
                ErrorKind::Refused,
                format!(
                    "the retention lock is {}; it can be lengthened, not shortened to {duration}",
                    current.duration
                ),
            ));
        }
    }
    // On object storage, the bucket must be able to keep the lock (Object
    // Lock): checked before the lock entry is written, and the entry is
    // itself kept under it.
    if repo.backend().can_retain() {
        repo.backend().retain_until(retain_until(duration, now))?;
    }
    let mut writer = AuditWriter::new(
        repo.backend().clone(),
        repo.config().id,
        Some(signing.clone()),
    );
    let entry = writer.append(&Record {
        operation: LOCK_OPERATION.into(),
        detail: duration.to_string(),
        counts: counts(duration),
        ..Record::default()
    })?;
    Ok(RetentionLock {
        duration,
        set_at: now.timestamp(),
        entry,
    })
}
