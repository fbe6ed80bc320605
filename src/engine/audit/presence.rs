//! Presence and integrity, without the password (docs/FORMAT.md 18.2):
//! every snapshot the log says is alive has a manifest signed by a known
//! signer, every pack that manifest names is present at its size, and with
//! `--read-packs` the packs' bytes still hash to their names.

use super::report::{Check, ReportOptions, Status};
use crate::error::{Error, ErrorKind, Result};
use crate::format::audit::{Decoded, IdKind, PublicKey, Signature};
use crate::format::id::{Id, ManifestId, PackId, SnapshotId};
use crate::format::manifest::{DecodedManifest, Manifest, MANIFEST_SIZE_MAX};
use crate::storage::backend::{Backend, FileKind};
use rayon::prelude::*;
use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};

/// Which packs `--read-packs` re-hashes. The choice depends only on the
/// pack ids, so the same repository gives the same report.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum ReadPacks {
    All,
    /// About this percentage of the packs: those whose id's first 8 bytes,
    /// read as a big-endian number, fall in the first part of the range.
    Percent(f64),
    /// Group `n` of `m` (1-based): the packs whose id's first 4 bytes, read
    /// as a big-endian number, are `n - 1` modulo `m`. Groups 1..=m
    /// together cover every pack once.
    Subset(u32, u32),
}

impl std::str::FromStr for ReadPacks {
    type Err = Error;

    fn from_str(text: &str) -> Result<ReadPacks> {
        let bad = || {
            Error::invalid(format!(
                "a choice of packs is all, a percentage (5%) or a group n/m (1/7), not {text:?}"
            ))
        };
        if text == "all" {
            return Ok(ReadPacks::All);
        }
        if let Some(percent) = text.strip_suffix('%') {
            let p: f64 = percent.parse().map_err(|_| bad())?;
            if p.is_nan() || p <= 0.0 || p > 100.0 {
                return Err(bad());
            }
            return Ok(ReadPacks::Percent(p));
        }
        let (n, m) = text.split_once('/').ok_or_else(bad)?;
        let (n, m): (u32, u32) = (n.parse().map_err(|_| bad())?, m.parse().map_err(|_| bad())?);
        if n == 0 || m == 0 || n > m {
            return Err(bad());
        }
        Ok(ReadPacks::Subset(n, m))
    }
}

impl ReadPacks {
    fn selects(self, id: &Id) -> bool {
        match self {
            ReadPacks::All => true,
            // Not by the comparison below: ids near the top of the range
            // round up to 2^64 as floats.
            ReadPacks::Percent(p) if p >= 100.0 => true,
            ReadPacks::Percent(p) => {
                let at = u64::from_be_bytes(id.0[..8].try_into().expect("8 bytes"));
                (at as f64) < p / 100.0 * (u64::MAX as f64)
            }
            ReadPacks::Subset(n, m) => {
                let at = u32::from_be_bytes(id.0[..4].try_into().expect("4 bytes"));
                at % m == n - 1
            }
        }
    }

    fn describe(self) -> String {
        match self {
            ReadPacks::All => "every pack".into(),
            ReadPacks::Percent(p) => format!("{p}% of the packs"),
            ReadPacks::Subset(n, m) => format!("group {n}/{m} of the packs"),
        }
    }
}

/// One manifest file: decoded (its signature's state inside), or why it
/// cannot be.
pub(crate) fn read_manifest(
    backend: &dyn Backend,
    name: &str,
) -> Result<std::result::Result<DecodedManifest, String>> {
    let bytes = match backend.get_bounded(FileKind::Manifest, name, MANIFEST_SIZE_MAX) {
        Ok(bytes) => bytes,
        Err(e) if e.kind() == ErrorKind::Corrupt => return Ok(Err(e.to_string())),
        Err(e) => return Err(e),
    };
    if Id::from_hex(name).ok() != Some(Id::of_file_bytes(&bytes)) {
        return Ok(Err("does not match its name (its bytes changed)".into()));
    }
    Ok(Manifest::decode(&bytes).map_err(|e| e.to_string()))
}

/// Every manifest file, by name: decoded, or why not. Files that vanish
/// while listed are skipped.
pub(crate) fn read_manifests(
    backend: &dyn Backend,
) -> Result<Vec<(String, std::result::Result<DecodedManifest, String>)>> {
    let mut out = Vec::new();
    for (name, _) in backend.list(FileKind::Manifest)? {
        match read_manifest(backend, &name) {
            Ok(read) => out.push((name, read)),
            Err(e) if e.kind() == ErrorKind::NotFound => {}
            Err(e) => return Err(e),
        }
    }
    Ok(out)
}

/// The manifests in force for each snapshot among `accepted`: those no
/// other accepted manifest of the same snapshot supersedes.
pub(crate) fn current(accepted: &[DecodedManifest]) -> BTreeMap<SnapshotId, Vec<&DecodedManifest>> {
    let superseded: HashSet<(SnapshotId, ManifestId)> = accepted
        .iter()
        .flat_map(|d| {
            d.manifest
                .supersedes
                .iter()
                .map(|old| (d.manifest.snapshot, *old))
        })
        .collect();
    let mut out: BTreeMap<SnapshotId, Vec<&DecodedManifest>> = BTreeMap::new();
    for d in accepted {
        if !superseded.contains(&(d.manifest.snapshot, d.id)) {
            out.entry(d.manifest.snapshot).or_default().push(d);
        }
    }
    for list in out.values_mut() {
        list.sort_by_key(|d| d.id);
    }
    out
}

fn short(hex: &str) -> &str {
    hex.get(..12).unwrap_or(hex)
}

fn list_snapshots(snapshots: &BTreeSet<SnapshotId>) -> String {
    if snapshots.is_empty() {
        return "no logged snapshot".into();
    }
    let names: Vec<String> = snapshots
        .iter()
        .map(|s| short(&s.to_hex()).to_string())
        .collect();
    format!("snapshot(s) {}", names.join(", "))
}

/// What one pack is expected to be, by the manifests naming it.
#[derive(Default)]
struct Expected {
    sizes: BTreeSet<u64>,
    snapshots: BTreeSet<SnapshotId>,
}

/// The presence and integrity check of `cairn audit report`.
pub fn presence_check(
    backend: &dyn Backend,
    good: &[Decoded],
    options: &ReportOptions,
) -> Result<Check> {
    let mut fail = Vec::new();
    let mut warn = Vec::new();
    // The snapshots the signed log says are alive and that are present
    // (a missing one is the "snapshots present" check's failure).
    let mut added = BTreeSet::new();
    let mut removed = HashSet::new();
    for d in good.iter().filter(|d| d.signature == Signature::Valid) {
        for (kind, id) in &d.entry.ids {
            match kind {
                IdKind::SnapshotAdded => {
                    added.insert(SnapshotId(*id));
                }
                IdKind::SnapshotRemoved => {
                    removed.insert(SnapshotId(*id));
                }
                _ => {}
            }
        }
    }
    let present: HashSet<String> = backend
        .list(FileKind::Snapshot)?
        .into_iter()
        .map(|(name, _)| name)
        .collect();
    let live: BTreeSet<SnapshotId> = added
        .into_iter()
        .filter(|s| !removed.contains(s) && present.contains(&s.to_hex()))
        .collect();
    let repositories: HashSet<_> = good.iter().map(|d| d.entry.repository).collect();
    let known: BTreeSet<PublicKey> = match &options.trusted {
        Some(trusted) => trusted.iter().copied().collect(),
        None => good
            .iter()
            .filter(|d| d.signature == Signature::Valid)
            .filter_map(|d| d.entry.signer)
            .collect(),
    };
    let mut accepted = Vec::new();
    for (name, read) in read_manifests(backend)? {
        let d = match read {
            Ok(d) => d,
            Err(why) => {
                fail.push(format!("manifest {}: {why}", short(&name)));
                continue;
            }
        };
        let m = &d.manifest;
        let about = format!(
            "manifest {} of snapshot {}",
            short(&name),
            short(&m.snapshot.to_hex())
        );
        if !d.signature_valid {
            fail.push(format!(
                "{about}: its signature does not hold (altered after signing)"
            ));
        } else if !repositories.is_empty() && !repositories.contains(&m.repository) {
            fail.push(format!(
                "{about} names another repository ({}): copied in from elsewhere",
                short(&m.repository.to_hex())
            ));
        } else if !known.contains(&m.signer) {
            let what = format!(
                "{about} is signed by {}, not a known signer",
                m.signer.short()
            );
            if live.contains(&m.snapshot) {
                fail.push(what);
            } else {
                warn.push(what);
            }
        } else {
            accepted.push(d);
        }
    }
    let current = current(&accepted);
    let mut expected: BTreeMap<PackId, Expected> = BTreeMap::new();
    let mut manifests_checked = 0usize;
    for snapshot in &live {
        let Some(manifests) = current.get(snapshot) else {
            fail.push(format!(
                "snapshot {} has no manifest signed by a known signer: what it needs cannot be checked",
                short(&snapshot.to_hex())
            ));
            continue;
        };
        for d in manifests {
            manifests_checked += 1;
            for pack in &d.manifest.packs {
                let e = expected.entry(pack.id).or_default();
                e.sizes.insert(pack.size);
                e.snapshots.insert(*snapshot);
            }
        }
    }
    let listed: HashMap<String, u64> = backend.list(FileKind::Pack)?.into_iter().collect();
    for (pack, e) in &expected {
        let name = pack.to_hex();
        match listed.get(&name) {
            None => fail.push(format!(
                "pack {} is missing; it affects {}",
                short(&name),
                list_snapshots(&e.snapshots)
            )),
            Some(size) if !e.sizes.contains(size) => fail.push(format!(
                "pack {} is {size} bytes, its manifest says {} (truncated or replaced); it affects {}",
                short(&name),
                e.sizes
                    .iter()
                    .map(u64::to_string)
                    .collect::<Vec<_>>()
                    .join(" or "),
                list_snapshots(&e.snapshots)
            )),
            Some(_) => {}
        }
    }
    let mut read_summary = String::new();
    if let Some(read) = options.read_packs {
        let mut chosen: Vec<(&String, u64)> = listed
            .iter()
            .filter(|(name, _)| Id::from_hex(name).is_ok_and(|id| read.selects(&id)))
            .map(|(name, size)| (name, *size))
            .collect();
        chosen.sort();
        let bad: Vec<Result<Option<(String, String)>>> = chosen
            .par_iter()
            .map(|(name, _)| {
                let why = match backend.get_bounded(
                    FileKind::Pack,
                    name,
                    crate::format::pack::PACK_SIZE_MAX as usize,
                ) {
                    Ok(bytes) if Id::from_hex(name).ok() == Some(Id::of_file_bytes(&bytes)) => {
                        return Ok(None)
                    }
                    Ok(_) => "its bytes do not hash to its name (damaged)".to_string(),
                    Err(e) if matches!(e.kind(), ErrorKind::NotFound | ErrorKind::Corrupt) => {
                        e.to_string()
                    }
                    Err(e) => return Err(e),
                };
                Ok(Some(((*name).clone(), why)))
            })
            .collect();
        for result in bad {
            let Some((name, why)) = result? else { continue };
            let affected = PackId::from_hex(&name)
                .ok()
                .and_then(|id| expected.get(&id))
                .map(|e| list_snapshots(&e.snapshots))
                .unwrap_or_else(|| list_snapshots(&BTreeSet::new()));
            fail.push(format!(
                "pack {} re-hashed: {why}; it affects {affected}",
                short(&name)
            ));
        }
        let bytes: u64 = chosen.iter().map(|(_, size)| size).sum();
        read_summary = format!(
            "; {} pack(s), {bytes} bytes, re-hashed ({})",
            chosen.len(),
            read.describe()
        );
    }
    let status_ok = format!(
        "{} live logged snapshot(s), each with a manifest signed by a known signer ({} manifest(s)); the {} pack(s) they name are present at their sizes{read_summary}",
        live.len(),
        manifests_checked,
        expected.len()
    );
    Ok(if !fail.is_empty() {
        Check {
            name: "presence and integrity",
            status: Status::Fail,
            summary: format!("{} problem(s)", fail.len()),
            evidence: fail.into_iter().chain(warn).collect(),
        }
    } else if !warn.is_empty() {
        Check {
            name: "presence and integrity",
            status: Status::Warn,
            summary: format!("{status_ok}; {} note(s)", warn.len()),
            evidence: warn,
        }
    } else {
        Check {
            name: "presence and integrity",
            status: Status::Pass,
            summary: status_ok,
            evidence: vec![],
        }
    })
}
