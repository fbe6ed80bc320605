//! `forget`: removes snapshots, named by id or chosen by a retention policy
//! (`crate::retention`). Only snapshot files are deleted; the data they
//! referenced stays in the packs until a prune. Callers hold an exclusive
//! lock (restic's forget takes one too).

use crate::engine::repository::Repository;
use crate::error::{Error, Result};
use crate::format::id::SnapshotId;
use crate::format::retention::{self, GroupBy, GroupKey, Policy, Reason};
use crate::format::snapshot::{Snapshot, SnapshotFilter};
use crate::storage::lock::ExclusiveLock;

#[derive(Debug, Clone, Default)]
pub struct ForgetOptions {
    /// Snapshot selectors (`latest`, ids, unique prefixes) to remove; when
    /// given, no policy may be.
    pub ids: Vec<String>,
    pub policy: Policy,
    pub group_by: GroupBy,
    /// Only these snapshots are considered (and, with ids, selectable).
    pub filter: SnapshotFilter,
    /// Report what would be removed without removing it.
    pub dry_run: bool,
    /// With an empty policy and a non-empty filter, remove every matching
    /// snapshot (restic's `--unsafe-allow-remove-all`).
    pub unsafe_allow_remove_all: bool,
}

/// One group's verdict. With ids there is a single group with an empty key.
#[derive(Debug, Clone)]
pub struct ForgetGroup {
    pub key: GroupKey,
    /// Newest first, each with the rules that kept it.
    pub keep: Vec<(SnapshotId, Snapshot, Vec<Reason>)>,
    /// Newest first.
    pub remove: Vec<(SnapshotId, Snapshot)>,
}

#[derive(Debug, Clone)]
pub struct ForgetOutcome {
    pub groups: Vec<ForgetGroup>,
    /// Snapshots deleted (or, with `dry_run`, that would have been).
    pub removed: Vec<SnapshotId>,
}

/// Decides, then (unless `dry_run`) deletes. Every refusal happens before
/// the first deletion.
pub fn forget<S>(
    repo: &mut Repository<S>,
    lock: &ExclusiveLock,
    options: &ForgetOptions,
) -> Result<ForgetOutcome> {
    let ctx = repo.context().clone();
    let groups = if options.ids.is_empty() {
        by_policy(repo, options)?
    } else {
        by_ids(repo, options)?
    };
    let mut groups = groups;
    apply_retention_lock(repo, &mut groups, !options.ids.is_empty())?;
    let removed: Vec<SnapshotId> = groups
        .iter()
        .flat_map(|g| g.remove.iter().map(|(id, _)| *id))
        .collect();
    if !options.dry_run {
        for id in &removed {
            ctx.check_interrupt()?;
            repo.delete_snapshot(id, lock)?;
        }
    }
    // HOOK(prune): restic's `forget --prune` runs prune here on the removed
    // ids (a prune dry run with `dry_run`). The CLI refuses `--prune` until
    // the prune library function exists.
    Ok(ForgetOutcome { groups, removed })
}

/// Keeps what the retention lock protects: a policy's choice moves to
/// `keep` (reason `Locked`); a snapshot named by id is refused, before
/// anything is deleted.
fn apply_retention_lock<S>(
    repo: &Repository<S>,
    groups: &mut [ForgetGroup],
    by_id: bool,
) -> Result<()> {
    let now = chrono::Utc::now().fixed_offset();
    let Some(lock) = crate::engine::retention_lock::retention_lock(repo, now)? else {
        return Ok(());
    };
    let cutoff = lock.cutoff(now);
    let locked = |s: &Snapshot| cutoff.is_none_or(|c| s.time > c);
    for group in groups.iter_mut() {
        if by_id {
            if let Some((id, s)) = group.remove.iter().find(|(_, s)| locked(s)) {
                return Err(Error::new(
                    crate::error::ErrorKind::Refused,
                    format!(
                        "snapshot {} ({}) is younger than the retention lock ({}): refusing to forget it",
                        id.short(),
                        s.time.format("%Y-%m-%d %H:%M:%S"),
                        lock.duration
                    ),
                ));
            }
            continue;
        }
        let (kept, removed): (Vec<_>, Vec<_>) = std::mem::take(&mut group.remove)
            .into_iter()
            .partition(|(_, s)| locked(s));
        group.remove = removed;
        for (id, s) in kept {
            group
                .keep
                .push((id, s, vec![Reason::Locked(lock.duration)]));
        }
        group
            .keep
            .sort_by(|a, b| b.1.time.cmp(&a.1.time).then(b.0.cmp(&a.0)));
    }
    Ok(())
}

fn by_ids<S>(repo: &mut Repository<S>, options: &ForgetOptions) -> Result<Vec<ForgetGroup>> {
    if !options.policy.is_empty() {
        return Err(Error::invalid(
            "give snapshot ids or a retention policy, not both",
        ));
    }
    let candidates = repo.snapshots(&options.filter)?;
    let mut remove: Vec<(SnapshotId, Snapshot)> = Vec::new();
    for selector in &options.ids {
        let found = crate::format::snapshot::select(&candidates, selector)?;
        if !remove.iter().any(|(id, _)| *id == found.0) {
            remove.push(found.clone());
        }
    }
    remove.sort_by(|a, b| b.1.time.cmp(&a.1.time).then(b.0.cmp(&a.0)));
    Ok(vec![ForgetGroup {
        key: GroupKey::default(),
        keep: Vec::new(),
        remove,
    }])
}

fn by_policy<S>(repo: &mut Repository<S>, options: &ForgetOptions) -> Result<Vec<ForgetGroup>> {
    let policy = &options.policy;
    if policy.is_empty() {
        if !options.unsafe_allow_remove_all {
            return Err(Error::invalid(
                "no policy was specified, no snapshots will be removed (give a retention policy or snapshot ids)",
            ));
        }
        let f = &options.filter;
        if f.hosts.is_empty() && f.tags.is_empty() && f.paths.is_empty() {
            return Err(Error::invalid(
                "removing every snapshot is allowed only together with a snapshot filter (host, tag or path)",
            ));
        }
    }
    let snapshots = repo.snapshots(&options.filter)?;
    let now = chrono::Local::now().fixed_offset();
    let plan = retention::plan(&snapshots, policy, options.group_by, now);
    let mut groups = Vec::with_capacity(plan.len());
    for g in plan {
        if !policy.is_empty() && g.keep.is_empty() {
            return Err(Error::invalid(format!(
                "refusing to delete last snapshot of snapshot group \"{}\"",
                g.key
            )));
        }
        groups.push(ForgetGroup {
            key: g.key,
            keep: g
                .keep
                .into_iter()
                .map(|(i, reasons)| (snapshots[i].0, snapshots[i].1.clone(), reasons))
                .collect(),
            remove: g.remove.into_iter().map(|i| snapshots[i].clone()).collect(),
        });
    }
    Ok(groups)
}
