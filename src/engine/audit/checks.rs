//! Report checks that look past the log at the repository's key files and
//! snapshot names: whether a log must exist at all, and whether every
//! snapshot that went was removed by a logged forget.

use super::report::{Check, Status};
use crate::error::{ErrorKind, Result};
use crate::format::audit::{Decoded, IdKind, PublicKey, Signature};
use crate::format::id::Id;
use crate::format::key::{KeyFile, KEY_FILE_SIZE_MAX};
use crate::storage::backend::{Backend, FileKind};
use std::collections::{BTreeMap, HashSet};

/// Operations that may remove a snapshot: `forget` (and `repair
/// snapshots`, which forgets what it cannot repair); `tag` rewrites one
/// (its old file goes, a new one carries it on).
const REMOVERS: [&str; 3] = ["forget", "repair snapshots", "tag"];

fn short(id: &str) -> &str {
    id.get(..12).unwrap_or(id)
}

/// Fails where the repository itself says the log cannot be this short.
///
/// The rule: every version 2 key file (one that carries a signing key)
/// came from `init`, `key add` or `key passwd`, and each of those logs an
/// entry: `init` signed by the new key, `key add`/`key passwd` naming the
/// new file (key-added). So each such key file must either have signed a
/// valid entry or be named key-added by one; else the entries that wrote
/// it were removed (a deleted log is the extreme case). With pinned keys
/// (`--trusted-keys`) the auditor knows the log exists: at least one
/// entry must be signed by a pinned key. Key files are readable without
/// the password, but their plaintext fields are not authenticated: someone
/// with write access can strip the signing key from every key file (a
/// version 1 file still opens) and then delete the log. Only pinned keys
/// or a saved state (`--state`) catch that.
pub fn log_expected(
    backend: &dyn Backend,
    good: &[Decoded],
    trusted: Option<&[PublicKey]>,
) -> Result<Check> {
    let valid: Vec<&Decoded> = good
        .iter()
        .filter(|d| d.signature == Signature::Valid)
        .collect();
    let signers: HashSet<PublicKey> = valid.iter().filter_map(|d| d.entry.signer).collect();
    // An unsigned entry counts here: a version 1 key file adding a key
    // (`key add`, `key passwd`) writes one. Forging it needs only write
    // access, like stripping the signing keys does (see above), and the
    // integrity check warns about every unsigned entry.
    let added: HashSet<Id> = good
        .iter()
        .flat_map(|d| d.entry.ids.iter())
        .filter(|(kind, _)| *kind == IdKind::KeyAdded)
        .map(|(_, id)| *id)
        .collect();
    let mut fail = Vec::new();
    let mut warn = Vec::new();
    let mut version2 = 0;
    let mut names: Vec<String> = backend
        .list(FileKind::Key)?
        .into_iter()
        .map(|(n, _)| n)
        .collect();
    names.sort();
    for name in &names {
        let bytes = match backend.get_bounded(FileKind::Key, name, KEY_FILE_SIZE_MAX) {
            Ok(bytes) => bytes,
            Err(e) if matches!(e.kind(), ErrorKind::NotFound | ErrorKind::Corrupt) => {
                warn.push(format!("key file {}: {e}", short(name)));
                continue;
            }
            Err(e) => return Err(e),
        };
        let Ok(key) = KeyFile::decode(&bytes) else {
            warn.push(format!("key file {}: not a valid key file", short(name)));
            continue;
        };
        let Some(signer) = key.signer() else {
            continue;
        };
        version2 += 1;
        let named = Id::from_hex(name).is_ok_and(|id| added.contains(&id));
        if !signers.contains(&signer) && !named {
            fail.push(format!(
                "key file {} (signer {}, created {} by {}@{}) carries a signing key, but no entry it signed and no entry adding it is in the log: the entries were removed",
                short(name),
                signer.short(),
                key.created,
                key.username,
                key.hostname
            ));
        }
    }
    if let Some(trusted) = trusted {
        if !trusted.is_empty() && !signers.iter().any(|s| trusted.contains(s)) {
            fail.push(format!(
                "no entry is signed by any of the {} trusted key(s): the log was deleted or replaced",
                trusted.len()
            ));
        }
    }
    if version2 == 0 && valid.is_empty() && trusted.is_none() {
        warn.push(
            "no key file carries a signing key and no signed entry exists: nothing shows that a log should exist (pin keys with --trusted-keys, save --state)"
                .into(),
        );
    }
    let (status, summary, evidence) = if !fail.is_empty() {
        let n = fail.len();
        (
            Status::Fail,
            format!("{n} problem(s)"),
            fail.into_iter().chain(warn).collect(),
        )
    } else if !warn.is_empty() {
        (Status::Warn, format!("{} note(s)", warn.len()), warn)
    } else {
        (
            Status::Pass,
            format!("each of the {version2} signing key file(s) is accounted for in the log"),
            vec![],
        )
    };
    Ok(Check {
        name: "log present",
        status,
        summary,
        evidence,
    })
}

/// Every snapshot that went was removed by a logged forget: one written by
/// a logged operation and no longer present must be named removed by a
/// forget (or a tag's rewrite); a removal logged by any other operation is
/// not attributable. Returns the failures, for the retention check.
pub fn deletions_attributable(
    backend: &dyn Backend,
    good: &[Decoded],
    describe: impl Fn(&Decoded) -> String,
) -> Result<Vec<String>> {
    let present: HashSet<String> = backend
        .list(FileKind::Snapshot)?
        .into_iter()
        .map(|(n, _)| n)
        .collect();
    let mut written: BTreeMap<Id, &Decoded> = BTreeMap::new();
    let mut removed: BTreeMap<Id, &Decoded> = BTreeMap::new();
    let mut fail = Vec::new();
    for d in good.iter().filter(|d| d.signature == Signature::Valid) {
        for (kind, id) in &d.entry.ids {
            match kind {
                IdKind::SnapshotAdded => {
                    written.entry(*id).or_insert(d);
                }
                IdKind::SnapshotRemoved => {
                    removed.insert(*id, d);
                    if !REMOVERS.contains(&d.entry.operation.as_str()) {
                        fail.push(format!(
                            "snapshot {} was removed by {}, which is not a forget",
                            short(&id.to_hex()),
                            describe(d)
                        ));
                    }
                }
                _ => {}
            }
        }
    }
    for (id, d) in &written {
        if !removed.contains_key(id) && !present.contains(&id.to_hex()) {
            fail.push(format!(
                "snapshot {} written by {} is gone, and no logged forget removed it",
                short(&id.to_hex()),
                describe(d)
            ));
        }
    }
    Ok(fail)
}
