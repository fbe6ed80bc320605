//! `tag`: changes the tags of snapshots. A snapshot file is immutable (it
//! is named by the hash of its bytes), so a retagged snapshot is a new file
//! whose `original` names the old one; the old file is deleted after the
//! new one is stored. The caller holds an exclusive lock.

use crate::engine::repository::Repository;
use crate::error::{Error, Result};
use crate::format::id::SnapshotId;
use crate::format::snapshot::Snapshot;
use crate::storage::lock::ExclusiveLock;

#[derive(Debug, Clone, Default)]
pub struct TagChange {
    pub add: Vec<String>,
    pub remove: Vec<String>,
    /// Replace all tags with these (applied before `add` and `remove`).
    pub set: Option<Vec<String>>,
}

impl TagChange {
    pub fn is_empty(&self) -> bool {
        self.add.is_empty() && self.remove.is_empty() && self.set.is_none()
    }

    /// The tags after the change: sorted, without duplicates or empties.
    pub fn apply(&self, tags: &[String]) -> Vec<String> {
        let mut out: Vec<String> = match &self.set {
            Some(set) => set.clone(),
            None => tags.to_vec(),
        };
        out.extend(self.add.iter().cloned());
        out.retain(|t| !t.is_empty() && !self.remove.contains(t));
        out.sort();
        out.dedup();
        out
    }
}

/// Retags `snapshots`; returns (old id, new id) for each one that changed.
pub fn tag(
    repo: &Repository,
    lock: &ExclusiveLock,
    snapshots: &[(SnapshotId, Snapshot)],
    change: &TagChange,
) -> Result<Vec<(SnapshotId, SnapshotId)>> {
    if change.is_empty() {
        return Err(Error::invalid(
            "nothing to do: the change adds, removes and sets no tags",
        ));
    }
    // A retagged copy references only trees and data that are already
    // indexed, so an empty writer's token stands for "nothing to write first".
    let written = repo.blob_writer(lock).finish()?;
    let mut out = Vec::new();
    for (id, snapshot) in snapshots {
        let tags = change.apply(&snapshot.tags);
        if tags == snapshot.tags {
            continue;
        }
        let mut copy = snapshot.clone();
        copy.tags = tags;
        // Keep pointing at the first snapshot of the chain.
        copy.original = Some(snapshot.original.unwrap_or(*id));
        let new = repo.save_snapshot(&copy, &written)?;
        repo.delete_snapshot(id, lock)?;
        out.push((*id, new));
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn v(items: &[&str]) -> Vec<String> {
        items.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn changes_apply_in_order_set_add_remove() {
        let c = TagChange {
            add: v(&["b", "a"]),
            remove: v(&["x"]),
            set: None,
        };
        assert_eq!(c.apply(&v(&["x", "c"])), v(&["a", "b", "c"]));
        let c = TagChange {
            add: v(&["z"]),
            remove: v(&["z2"]),
            set: Some(v(&["z2", "y", ""])),
        };
        assert_eq!(c.apply(&v(&["old"])), v(&["y", "z"]));
        assert!(TagChange::default().is_empty());
    }
}
