//! The audit report: what someone without the password can verify from
//! the audit log and the names of the repository's files. Each check ends
//! pass, warn or fail and names the entries and ids that prove it.

use super::read_entry;
use crate::error::{ErrorKind, Result};
use crate::format::audit::{Decoded, IdKind, Outcome, PublicKey, Signature};
use crate::format::id::{AuditId, Id};
use crate::storage::backend::{Backend, FileKind};
use serde::Serialize;
use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};

/// How a check ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Status {
    Pass,
    Warn,
    Fail,
}

/// One check of the report.
#[derive(Debug, Clone, Serialize)]
pub struct Check {
    pub name: &'static str,
    pub status: Status,
    pub summary: String,
    /// The entries and ids that prove the status, one line each.
    pub evidence: Vec<String>,
}

/// What the auditor brings.
#[derive(Debug, Clone, Default)]
pub struct ReportOptions {
    /// Public keys the auditor pinned (`cairn audit keys`); `None`: any
    /// signer is accepted, with a warning.
    pub trusted: Option<Vec<PublicKey>>,
    /// The heads saved by an earlier report (`--state`).
    pub saved_heads: Option<Vec<AuditId>>,
    /// Only entries from this time on (seconds since the epoch) are listed
    /// under results and activity; integrity always covers the whole log.
    pub from: Option<i64>,
    pub to: Option<i64>,
    /// Packs to re-hash in the presence and integrity check.
    pub read_packs: Option<super::presence::ReadPacks>,
    /// The auditor's schedule (`--policy`): the schedule check runs only
    /// with one, up to `to` (or the time the report is made).
    pub policy: Option<super::schedule::Policy>,
}

/// The report: the checks, the verdict, and the heads to save for the
/// next rollback check.
#[derive(Debug, Clone, Serialize)]
pub struct AuditReport {
    pub verdict: Status,
    pub entries: usize,
    pub signers: Vec<String>,
    pub checks: Vec<Check>,
    pub heads: Vec<String>,
}

/// One entry as `audit log` shows it.
#[derive(Debug, Clone, Serialize)]
pub struct LogLine {
    pub id: String,
    /// "valid", "unsigned", "invalid signature" or why it is unreadable.
    pub status: String,
    pub time: Option<i64>,
    pub signer: Option<String>,
    pub seq: Option<u64>,
    pub links: Vec<String>,
    pub host: String,
    pub user: String,
    pub pid: Option<u32>,
    pub operation: String,
    pub result: String,
    pub detail: String,
    pub ids: Vec<(String, String)>,
    pub counts: Vec<(String, u64)>,
}

/// Every entry file: decoded, or why not.
fn read_all(backend: &dyn Backend) -> Result<Vec<(String, std::result::Result<Decoded, String>)>> {
    let mut out = Vec::new();
    for (name, _) in backend.list(FileKind::Audit)? {
        match read_entry(backend, &name) {
            Ok(read) => out.push((name, read)),
            Err(e) if e.kind() == ErrorKind::NotFound => continue,
            Err(e) => return Err(e),
        }
    }
    Ok(out)
}

/// The log in time order (then signer, then sequence), unreadable entries
/// last. Needs no password.
pub fn audit_log(backend: &dyn Backend) -> Result<Vec<LogLine>> {
    let mut lines: Vec<LogLine> = read_all(backend)?
        .into_iter()
        .map(|(name, read)| match read {
            Ok(d) => line(&d),
            Err(why) => LogLine {
                id: name,
                status: why,
                time: None,
                signer: None,
                seq: None,
                links: vec![],
                host: String::new(),
                user: String::new(),
                pid: None,
                operation: String::new(),
                result: String::new(),
                detail: String::new(),
                ids: vec![],
                counts: vec![],
            },
        })
        .collect();
    lines.sort_by(|a, b| {
        (a.time.is_none(), a.time, &a.signer, a.seq, &a.id).cmp(&(
            b.time.is_none(),
            b.time,
            &b.signer,
            b.seq,
            &b.id,
        ))
    });
    Ok(lines)
}

fn line(d: &Decoded) -> LogLine {
    let e = &d.entry;
    LogLine {
        id: d.id.to_hex(),
        status: match d.signature {
            Signature::Valid => "valid",
            Signature::Unsigned => "unsigned",
            Signature::Invalid => "invalid signature",
        }
        .into(),
        time: Some(e.time),
        signer: e.signer.map(|s| s.to_hex()),
        seq: e.signer.map(|_| e.seq),
        links: e.links.iter().map(|l| l.to_hex()).collect(),
        host: e.host.clone(),
        user: e.user.clone(),
        pid: Some(e.pid),
        operation: e.operation.clone(),
        result: e.result.as_str().into(),
        detail: e.detail.clone(),
        ids: e
            .ids
            .iter()
            .map(|(k, id)| (k.as_str().to_string(), id.to_hex()))
            .collect(),
        counts: e.counts.clone(),
    }
}

/// A date as reports print it (UTC, seconds).
pub fn format_time(time: i64) -> String {
    chrono::DateTime::from_timestamp(time, 0)
        .map(|t| t.format("%Y-%m-%dT%H:%M:%SZ").to_string())
        .unwrap_or_else(|| format!("@{time}"))
}

fn short(id: &str) -> &str {
    id.get(..12).unwrap_or(id)
}

fn describe(d: &Decoded) -> String {
    let e = &d.entry;
    format!(
        "entry {} ({} {} by {}@{} at {}{})",
        short(&d.id.to_hex()),
        e.operation,
        e.result.as_str(),
        e.user,
        e.host,
        format_time(e.time),
        e.signer
            .map(|s| format!(", signer {} seq {}", s.short(), e.seq))
            .unwrap_or_default()
    )
}

fn check(name: &'static str, evidence_fail: Vec<String>, warn: Vec<String>, ok: &str) -> Check {
    let (status, summary, evidence) = if !evidence_fail.is_empty() {
        (
            Status::Fail,
            format!("{} problem(s)", evidence_fail.len()),
            evidence_fail.into_iter().chain(warn).collect(),
        )
    } else if !warn.is_empty() {
        (Status::Warn, format!("{} note(s)", warn.len()), warn)
    } else {
        (Status::Pass, ok.to_string(), vec![])
    };
    Check {
        name,
        status,
        summary,
        evidence,
    }
}

/// Verifies the log and what it says about the repository's snapshots,
/// without the password. Deterministic: the same repository and options
/// give the same report.
pub fn audit_report(backend: &dyn Backend, options: &ReportOptions) -> Result<AuditReport> {
    let all = read_all(backend)?;
    let mut fail = Vec::new();
    let mut warn = Vec::new();
    let mut good: Vec<Decoded> = Vec::new();
    for (name, read) in all {
        match read {
            Ok(d) if d.signature == Signature::Invalid => fail.push(format!(
                "entry {}: its signature does not hold (altered after signing)",
                short(&name)
            )),
            Ok(d) => {
                if d.signature == Signature::Unsigned {
                    warn.push(format!(
                        "{}: unsigned (its key file has no signing key); anyone who can write the repository could have written it",
                        describe(&d)
                    ));
                }
                good.push(d);
            }
            Err(why) => fail.push(format!("entry {}: {why}", short(&name))),
        }
    }
    let repositories: BTreeSet<String> = good.iter().map(|d| d.entry.repository.to_hex()).collect();
    if repositories.len() > 1 {
        fail.push(format!(
            "entries name {} repositories ({}): entries were copied in from elsewhere",
            repositories.len(),
            repositories
                .iter()
                .map(|r| short(r))
                .collect::<Vec<_>>()
                .join(", ")
        ));
    }
    let integrity = check(
        "log integrity",
        fail,
        warn,
        &format!("{} entries, every signature holds", good.len()),
    );
    let by_id: HashMap<AuditId, &Decoded> = good.iter().map(|d| (d.id, d)).collect();
    let chains = chain_check(&good, &by_id);
    let signers: BTreeSet<PublicKey> = good.iter().filter_map(|d| d.entry.signer).collect();
    let signer_check = signer_check(&signers, &good, options);
    let heads = heads_of(&good);
    let rollback = rollback_check(&by_id, &heads, options);
    let snapshots = snapshot_check(backend, &good)?;
    let presence = super::presence::presence_check(backend, &good, options)?;
    let mut retention = retention_check(&good);
    let gone = super::checks::deletions_attributable(backend, &good, describe)?;
    if !gone.is_empty() {
        retention.status = Status::Fail;
        retention.summary = format!("{} problem(s)", gone.len() + retention.evidence.len());
        retention.evidence.splice(0..0, gone);
    }
    let present = super::checks::log_expected(backend, &good, options.trusted.as_deref())?;
    let schedule = options.policy.as_ref().map(|policy| {
        let end = options.to.unwrap_or_else(|| chrono::Utc::now().timestamp());
        super::schedule::schedule_check(policy, &good, options.from, end, describe)
    });
    let in_range = |d: &&Decoded| {
        options.from.is_none_or(|from| d.entry.time >= from)
            && options.to.is_none_or(|to| d.entry.time <= to)
    };
    let mut listed: Vec<&Decoded> = good.iter().filter(in_range).collect();
    listed.sort_by_key(|d| (d.entry.time, d.entry.signer, d.entry.seq, d.id));
    let results = check(
        "operation results",
        vec![],
        listed
            .iter()
            .filter(|d| d.entry.result != Outcome::Ok)
            .map(|d| format!("{}: {}", describe(d), d.entry.detail))
            .collect(),
        "every logged operation succeeded",
    );
    let activity = Check {
        name: "activity",
        status: Status::Pass,
        summary: "reads of data, key and lock changes: who and when".into(),
        evidence: listed
            .iter()
            .filter(|d| {
                matches!(
                    d.entry.operation.as_str(),
                    "restore"
                        | "dump"
                        | "export-tar"
                        | "ls"
                        | "find"
                        | "cat"
                        | "key add"
                        | "key remove"
                        | "key passwd"
                        | "retention-lock set"
                        | "retention-lock"
                        | "mount"
                        | "drill"
                        | "copy"
                        | "unlock"
                )
            })
            .map(|d| describe(d))
            .collect(),
    };
    let cadence = cadence_check(&good);
    let checks = [integrity, present, chains, signer_check, rollback]
        .into_iter()
        .chain(schedule)
        .chain([snapshots, presence, retention, results, cadence, activity])
        .collect::<Vec<_>>();
    let verdict = if checks.iter().any(|c| c.status == Status::Fail) {
        Status::Fail
    } else {
        Status::Pass
    };
    Ok(AuditReport {
        verdict,
        entries: good.len(),
        signers: signers.iter().map(|s| s.to_hex()).collect(),
        checks,
        heads: heads.iter().map(|h| h.to_hex()).collect(),
    })
}

/// Entries no other entry of the same signer links: the newest of each
/// branch.
fn heads_of(good: &[Decoded]) -> Vec<AuditId> {
    let linked: HashSet<AuditId> = good
        .iter()
        .flat_map(|d| d.entry.links.iter().copied())
        .collect();
    let mut heads: Vec<AuditId> = good
        .iter()
        .filter(|d| d.entry.signer.is_some() && !linked.contains(&d.id))
        .map(|d| d.id)
        .collect();
    heads.sort();
    heads
}

fn chain_check(good: &[Decoded], by_id: &HashMap<AuditId, &Decoded>) -> Check {
    let mut fail = Vec::new();
    let mut warn = Vec::new();
    let mut roots: BTreeMap<PublicKey, Vec<&Decoded>> = BTreeMap::new();
    let mut branches: BTreeMap<PublicKey, usize> = BTreeMap::new();
    let mut linked_by: HashMap<AuditId, usize> = HashMap::new();
    for d in good {
        let Some(signer) = d.entry.signer else {
            continue;
        };
        if d.entry.links.is_empty() {
            roots.entry(signer).or_default().push(d);
            if d.entry.seq != 0 {
                fail.push(format!(
                    "{}: links no earlier entry but has sequence {} (entries before it were removed)",
                    describe(d),
                    d.entry.seq
                ));
            }
        }
        let mut highest = None;
        for link in &d.entry.links {
            *linked_by.entry(*link).or_default() += 1;
            let Some(prev) = by_id.get(link) else {
                fail.push(format!(
                    "{} links entry {}, which is missing (removed or damaged)",
                    describe(d),
                    short(&link.to_hex())
                ));
                continue;
            };
            if prev.entry.signer != Some(signer) {
                fail.push(format!(
                    "{} links entry {} of another signer",
                    describe(d),
                    short(&link.to_hex())
                ));
                continue;
            }
            if prev.entry.time > d.entry.time {
                fail.push(format!(
                    "{} is older than the entry {} it extends (time runs backwards: reordered)",
                    describe(d),
                    short(&link.to_hex())
                ));
            }
            highest = highest.max(Some(prev.entry.seq));
        }
        if let Some(highest) = highest {
            if d.entry.seq != highest + 1 {
                fail.push(format!(
                    "{} has sequence {} after {highest}",
                    describe(d),
                    d.entry.seq
                ));
            }
        }
    }
    for d in good {
        if let Some(signer) = d.entry.signer {
            if linked_by.get(&d.id).copied().unwrap_or(0) == 0 {
                *branches.entry(signer).or_default() += 1;
            }
        }
    }
    for (signer, roots) in &roots {
        if roots.len() > 1 {
            warn.push(format!(
                "signer {} started {} chains (entries {}): its writers saw none of its earlier entries",
                signer.short(),
                roots.len(),
                roots
                    .iter()
                    .map(|d| short_owned(&d.id))
                    .collect::<Vec<_>>()
                    .join(", ")
            ));
        }
    }
    for (signer, heads) in &branches {
        if *heads > 1 {
            warn.push(format!(
                "signer {} has {heads} unmerged branches (concurrent operations; the next operation of this key merges them)",
                signer.short()
            ));
        }
    }
    check(
        "chains",
        fail,
        warn,
        &format!(
            "{} signer chain(s), every link present, sequence and time in order",
            roots.len()
        ),
    )
}

fn short_owned(id: &AuditId) -> String {
    short(&id.to_hex()).to_string()
}

fn signer_check(signers: &BTreeSet<PublicKey>, good: &[Decoded], options: &ReportOptions) -> Check {
    let count = |s: &PublicKey| good.iter().filter(|d| d.entry.signer == Some(*s)).count();
    match &options.trusted {
        None => check(
            "signers known",
            vec![],
            std::iter::once(
                "no trusted keys given: someone with write access to the repository could have replaced the whole log with one signed by a key of their own (pin keys with --trusted-keys)".to_string(),
            )
            .chain(
                signers
                    .iter()
                    .map(|s| format!("signer {} signed {} entries", s.to_hex(), count(s))),
            )
            .collect(),
            "",
        ),
        Some(trusted) => check(
            "signers known",
            signers
                .iter()
                .filter(|s| !trusted.contains(s))
                .map(|s| {
                    format!(
                        "signer {} ({} entries) is not among the trusted keys",
                        s.to_hex(),
                        count(s)
                    )
                })
                .collect(),
            vec![],
            &format!("{} signer(s), all trusted", signers.len()),
        ),
    }
}

fn rollback_check(
    by_id: &HashMap<AuditId, &Decoded>,
    heads: &[AuditId],
    options: &ReportOptions,
) -> Check {
    let Some(saved) = &options.saved_heads else {
        return check(
            "rollback",
            vec![],
            vec!["no saved state given: removing the newest entries cannot be detected (use --state)".into()],
            "",
        );
    };
    let fail = saved
        .iter()
        .filter(|h| !by_id.contains_key(h))
        .map(|h| {
            format!(
                "entry {}, a head when the state was saved, is gone: history was removed or replaced",
                short(&h.to_hex())
            )
        })
        .collect();
    check(
        "rollback",
        fail,
        vec![],
        &format!(
            "the log extends all {} head(s) saved last time ({} head(s) now)",
            saved.len(),
            heads.len()
        ),
    )
}

/// No snapshot was removed before the retention lock in force at its
/// removal allowed: its age is measured from the entry that wrote it.
#[cfg(feature = "cache")]
fn retention_check(good: &[Decoded]) -> Check {
    use crate::engine::retention_lock::lock_of;
    let locks: Vec<_> = good.iter().filter_map(lock_of).collect();
    let mut written: HashMap<Id, &Decoded> = HashMap::new();
    for d in good.iter().filter(|d| d.signature == Signature::Valid) {
        for (kind, id) in &d.entry.ids {
            if *kind == IdKind::SnapshotAdded {
                written.entry(*id).or_insert(d);
            }
        }
    }
    let mut fail = Vec::new();
    let mut sorted: Vec<&Decoded> = good.iter().collect();
    sorted.sort_by_key(|d| (d.entry.time, d.entry.signer, d.entry.seq, d.id));
    // `tag` and `repair snapshots` rewrite a snapshot (the old file goes,
    // a new one carries its contents): not a removal the lock forbids.
    let rewrite = |d: &Decoded| matches!(d.entry.operation.as_str(), "tag" | "repair snapshots");
    for d in sorted
        .iter()
        .filter(|d| d.signature == Signature::Valid && !rewrite(d))
    {
        let Some(removed_at) = chrono::DateTime::from_timestamp(d.entry.time, 0) else {
            continue;
        };
        let removed_at = removed_at.fixed_offset();
        let in_force = crate::engine::retention_lock::strongest(
            locks.iter().filter(|l| l.set_at <= d.entry.time).cloned(),
            removed_at,
        );
        let Some(lock) = in_force else { continue };
        for (kind, id) in &d.entry.ids {
            if *kind != IdKind::SnapshotRemoved {
                continue;
            }
            let Some(w) = written.get(id) else { continue };
            let protected = lock
                .cutoff(removed_at)
                .is_none_or(|c| w.entry.time > c.timestamp());
            if protected {
                fail.push(format!(
                    "snapshot {} written by {} was removed by {} inside the retention lock {} (entry {})",
                    short(&id.to_hex()),
                    describe(w),
                    describe(d),
                    lock.duration,
                    short_owned(&lock.entry)
                ));
            }
        }
    }
    // Seen from the newest entry, not from now: the same log gives the
    // same report.
    let newest = good.iter().map(|d| d.entry.time).max().unwrap_or(0);
    let newest = chrono::DateTime::from_timestamp(newest, 0)
        .unwrap_or_default()
        .fixed_offset();
    let summary = match crate::engine::retention_lock::strongest(locks.iter().cloned(), newest) {
        Some(l) => format!(
            "retention lock {} (entry {}, set {}); no snapshot removed inside it",
            l.duration,
            short_owned(&l.entry),
            format_time(l.set_at)
        ),
        None => "no retention lock is set".into(),
    };
    check("retention", fail, vec![], &summary)
}

#[cfg(not(feature = "cache"))]
fn retention_check(_: &[Decoded]) -> Check {
    check("retention", vec![], vec![], "not checked in this build")
}

/// When a check last read every pack (`check --read-data`), by the counts
/// its entry recorded.
fn cadence_check(good: &[Decoded]) -> Check {
    let count = |d: &Decoded, name: &str| {
        d.entry
            .counts
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| *v)
    };
    let full = good
        .iter()
        .filter(|d| {
            d.signature == Signature::Valid
                && d.entry.operation == "check"
                && d.entry.result == Outcome::Ok
                && count(d, "packs").is_some_and(|p| count(d, "packs_read") == Some(p))
        })
        .max_by_key(|d| (d.entry.time, d.id));
    // Restore drills (`cairn drill`) prove more than a read: that a backup
    // loads. Shown beside the check, not required by it.
    let drill = good
        .iter()
        .filter(|d| {
            d.signature == Signature::Valid
                && d.entry.operation == "drill"
                && count(d, "drills_passed").is_some_and(|n| n > 0)
        })
        .max_by_key(|d| (d.entry.time, d.id));
    let drill_summary = match drill {
        Some(d) => format!(
            "; last passed restore drill at {}",
            format_time(d.entry.time)
        ),
        None => "; no logged restore drill passed".into(),
    };
    match full {
        Some(d) => Check {
            name: "verification cadence",
            status: Status::Pass,
            summary: format!(
                "every pack was last read and verified at {}{drill_summary}",
                format_time(d.entry.time)
            ),
            evidence: std::iter::once(describe(d))
                .chain(drill.map(describe))
                .collect(),
        },
        None => check(
            "verification cadence",
            vec![],
            vec!["no logged check read every pack (run `cairn check --read-data`)".into()],
            "",
        ),
    }
}

/// Every snapshot a logged operation wrote is present, intact (its bytes
/// match its name) or removed by a logged operation.
fn snapshot_check(backend: &dyn Backend, good: &[Decoded]) -> Result<Check> {
    let present: HashMap<String, u64> = backend.list(FileKind::Snapshot)?.into_iter().collect();
    let mut removed: HashMap<Id, &Decoded> = HashMap::new();
    let mut added: BTreeMap<Id, &Decoded> = BTreeMap::new();
    for d in good.iter().filter(|d| d.signature == Signature::Valid) {
        for (kind, id) in &d.entry.ids {
            match kind {
                IdKind::SnapshotAdded => {
                    added.insert(*id, d);
                }
                IdKind::SnapshotRemoved => {
                    removed.insert(*id, d);
                }
                _ => {}
            }
        }
    }
    let mut fail = Vec::new();
    let mut warn = Vec::new();
    for (id, d) in &added {
        let name = id.to_hex();
        if removed.contains_key(id) {
            continue;
        }
        if !present.contains_key(&name) {
            fail.push(format!(
                "snapshot {} written by {} is missing, and no logged operation removed it",
                short(&name),
                describe(d)
            ));
            continue;
        }
        let limit =
            crate::format::snapshot::SNAPSHOT_SIZE_MAX + crate::format::crypto::SEAL_OVERHEAD;
        match backend.get_bounded(FileKind::Snapshot, &name, limit) {
            Ok(bytes) if Id::of_file_bytes(&bytes) == *id => {}
            Ok(_) => fail.push(format!(
                "snapshot {} written by {} does not match its name (its bytes changed)",
                short(&name),
                describe(d)
            )),
            Err(e) if matches!(e.kind(), ErrorKind::NotFound | ErrorKind::Corrupt) => {
                fail.push(format!("snapshot {}: {e}", short(&name)))
            }
            Err(e) => return Err(e),
        }
    }
    let mut unlogged: Vec<&String> = present
        .keys()
        .filter(|name| Id::from_hex(name).is_ok_and(|id| !added.contains_key(&id)))
        .collect();
    unlogged.sort();
    if !unlogged.is_empty() {
        warn.push(format!(
            "{} snapshot(s) present that no signed entry wrote (made before the audit log, or written around it): {}",
            unlogged.len(),
            unlogged.iter().map(|n| short(n)).collect::<Vec<_>>().join(", ")
        ));
    }
    Ok(check(
        "snapshots present",
        fail,
        warn,
        &format!(
            "{} logged snapshot(s) present and intact, {} removed by logged operations",
            added.len() - added.keys().filter(|id| removed.contains_key(id)).count(),
            removed.len()
        ),
    ))
}
