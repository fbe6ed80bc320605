//! The retention lock (docs/FORMAT.md section 18.1): a duration for which
//! `forget` removes no snapshot, stored as a signed audit entry. It can be
//! set and lengthened, never shortened: the lock in force is the longest
//! of all lock entries, so deleting or forging one cannot shorten it.

pub(crate) mod rules;

pub use rules::{
    lock_in_force, lock_of, locks, retain_until, strongest, RetentionLock, LOCK_OPERATION,
};

use crate::engine::audit::{AuditWriter, Record};
use crate::engine::repository::Repository;
use crate::error::{Error, ErrorKind, Result};
use crate::format::audit::PublicKey;
use crate::format::retention::Duration;
use chrono::{DateTime, FixedOffset};

/// The lock's duration as an entry's counts.
fn counts(d: Duration) -> Vec<(String, u64)> {
    vec![
        ("lock_years".into(), u64::from(d.years)),
        ("lock_months".into(), u64::from(d.months)),
        ("lock_days".into(), u64::from(d.days)),
        ("lock_hours".into(), u64::from(d.hours)),
    ]
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
    lock_in_force(repo.backend().as_ref(), repo.config().id, &signers, now)
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
