//! The mount's top levels, built from the snapshot list alone (no tree is
//! read for them): `snapshots/<time>/`, `snapshots/latest` (a symlink to
//! the newest), `ids/<short id>/`, `hosts/<host>/<time>/` and
//! `tags/<tag>/<time>/`, as restic lays them out. A host or tag that cannot
//! be a file name (empty, `.`, `..`, containing `/` or NUL) is left out.

use crate::format::id::SnapshotId;
use crate::format::snapshot::Snapshot;
use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

/// A directory the mount makes up (not a snapshot's tree).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum Dir {
    Root,
    Snapshots,
    Ids,
    Hosts,
    Host(String),
    Tags,
    Tag(String),
}

/// What a name in a made-up directory stands for.
#[derive(Debug, Clone)]
pub(super) enum Child {
    Dir(Dir),
    /// A snapshot's root directory: index into `Snapshots::list`.
    Snapshot(usize),
    /// `latest`: a symlink to the newest snapshot's directory beside it.
    Latest {
        target: String,
        snapshot: usize,
    },
}

/// One consistent view of the snapshot list, oldest first, each with the
/// directory name it has under `snapshots/`, `hosts/…` and `tags/…`.
pub(super) struct Snapshots {
    pub(super) list: Vec<(SnapshotId, Arc<Snapshot>, String)>,
}

/// The name of a snapshot's directory: its time with the offset it was
/// taken in (as `snapshots` prints it), unique within one list.
fn time_name(snapshot: &Snapshot) -> String {
    snapshot.time.format("%Y-%m-%dT%H:%M:%S%:z").to_string()
}

fn usable_name(name: &str) -> bool {
    !name.is_empty() && name != "." && name != ".." && !name.contains(['/', '\0'])
}

impl Snapshots {
    /// `list` is sorted here (time, then id). Two snapshots taken in the
    /// same second get `-1`, `-2`, … after the later ones' names.
    pub(super) fn new(mut list: Vec<(SnapshotId, Arc<Snapshot>)>) -> Snapshots {
        list.sort_by(|a, b| a.1.time.cmp(&b.1.time).then(a.0.cmp(&b.0)));
        let mut seen: BTreeMap<String, u32> = BTreeMap::new();
        let list = list
            .into_iter()
            .map(|(id, s)| {
                let base = time_name(&s);
                let count = seen.entry(base.clone()).or_insert(0);
                let name = if *count == 0 {
                    base
                } else {
                    format!("{base}-{count}")
                };
                *count += 1;
                (id, s, name)
            })
            .collect();
        Snapshots { list }
    }

    /// The entries of a made-up directory, sorted by name.
    pub(super) fn children(&self, dir: &Dir) -> Vec<(String, Child)> {
        let mut out: Vec<(String, Child)> = match dir {
            Dir::Root => vec![
                ("hosts".into(), Child::Dir(Dir::Hosts)),
                ("ids".into(), Child::Dir(Dir::Ids)),
                ("snapshots".into(), Child::Dir(Dir::Snapshots)),
                ("tags".into(), Child::Dir(Dir::Tags)),
            ],
            Dir::Snapshots => self.by_time(|_| true),
            Dir::Host(host) => self.by_time(|s| &s.hostname == host),
            Dir::Tag(tag) => self.by_time(|s| s.tags.iter().any(|t| t == tag)),
            Dir::Ids => {
                let mut names: BTreeMap<String, usize> = BTreeMap::new();
                let mut clashes = BTreeSet::new();
                for (i, (id, _, _)) in self.list.iter().enumerate() {
                    if names.insert(id.short(), i).is_some() {
                        clashes.insert(id.short());
                    }
                }
                // Two ids with one short form: both by their full id.
                let mut out: Vec<_> = names
                    .into_iter()
                    .filter(|(short, _)| !clashes.contains(short))
                    .map(|(short, i)| (short, Child::Snapshot(i)))
                    .collect();
                for (i, (id, _, _)) in self.list.iter().enumerate() {
                    if clashes.contains(&id.short()) {
                        out.push((id.to_hex(), Child::Snapshot(i)));
                    }
                }
                out
            }
            Dir::Hosts => {
                let hosts: BTreeSet<&str> = self
                    .list
                    .iter()
                    .map(|(_, s, _)| s.hostname.as_str())
                    .filter(|h| usable_name(h))
                    .collect();
                hosts
                    .into_iter()
                    .map(|h| (h.to_string(), Child::Dir(Dir::Host(h.to_string()))))
                    .collect()
            }
            Dir::Tags => {
                let tags: BTreeSet<&str> = self
                    .list
                    .iter()
                    .flat_map(|(_, s, _)| s.tags.iter().map(String::as_str))
                    .filter(|t| usable_name(t))
                    .collect();
                tags.into_iter()
                    .map(|t| (t.to_string(), Child::Dir(Dir::Tag(t.to_string()))))
                    .collect()
            }
        };
        out.sort_by(|a, b| a.0.cmp(&b.0));
        out
    }

    /// The snapshots that `keep` selects, by time name, and `latest`.
    fn by_time(&self, keep: impl Fn(&Snapshot) -> bool) -> Vec<(String, Child)> {
        let mut out: Vec<(String, Child)> = Vec::new();
        let mut newest = None;
        for (i, (_, s, name)) in self.list.iter().enumerate() {
            if keep(s) {
                out.push((name.clone(), Child::Snapshot(i)));
                newest = Some((i, name));
            }
        }
        if let Some((i, name)) = newest {
            out.push((
                "latest".into(),
                Child::Latest {
                    target: name.clone(),
                    snapshot: i,
                },
            ));
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::format::id::{BlobId, Id};

    fn snapshot(time: &str, host: &str, tags: &[&str]) -> Arc<Snapshot> {
        let json = serde_json::json!({
            "version": 1, "time": time, "tree": BlobId(Id([0; 32])), "paths": ["/x"],
            "hostname": host, "username": "u", "uid": 0, "gid": 0,
            "tags": tags, "program_version": "t", "source": "directory",
            "summary": crate::format::snapshot::Summary::default()
        });
        Arc::new(serde_json::from_value(json).unwrap())
    }

    fn names(children: &[(String, Child)]) -> Vec<&str> {
        children.iter().map(|(n, _)| n.as_str()).collect()
    }

    #[test]
    fn the_top_levels_list_snapshots_by_time_id_host_and_tag() {
        let snaps = Snapshots::new(vec![
            (
                SnapshotId(Id([2; 32])),
                snapshot("2026-01-02T10:00:00Z", "b", &["daily"]),
            ),
            (
                SnapshotId(Id([1; 32])),
                snapshot("2026-01-01T10:00:00Z", "a", &["x/y", "daily"]),
            ),
            (
                SnapshotId(Id([3; 32])),
                snapshot("2026-01-01T10:00:00Z", "..", &[]),
            ),
        ]);
        assert_eq!(
            names(&snaps.children(&Dir::Root)),
            ["hosts", "ids", "snapshots", "tags"]
        );
        assert_eq!(
            names(&snaps.children(&Dir::Snapshots)),
            [
                "2026-01-01T10:00:00+00:00",
                "2026-01-01T10:00:00+00:00-1",
                "2026-01-02T10:00:00+00:00",
                "latest"
            ]
        );
        let latest = snaps.children(&Dir::Snapshots).pop().unwrap().1;
        assert!(
            matches!(latest, Child::Latest { ref target, snapshot: 2 } if target == "2026-01-02T10:00:00+00:00")
        );
        assert_eq!(names(&snaps.children(&Dir::Hosts)), ["a", "b"]);
        assert_eq!(names(&snaps.children(&Dir::Tags)), ["daily"]);
        assert_eq!(
            names(&snaps.children(&Dir::Tag("daily".into()))),
            [
                "2026-01-01T10:00:00+00:00",
                "2026-01-02T10:00:00+00:00",
                "latest"
            ]
        );
        assert_eq!(
            names(&snaps.children(&Dir::Ids)),
            ["01010101", "02020202", "03030303"]
        );
    }
}
