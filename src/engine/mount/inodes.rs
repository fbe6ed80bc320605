//! The inode table. An inode exists only while the kernel holds it: a
//! `lookup` adds one reference, `forget` drops them, and an inode with none
//! left is removed. The kernel bounds what it holds (it forgets inodes it
//! evicts under memory pressure), so the table stays bounded however large
//! the trees are; trees themselves are loaded on demand and kept only in the
//! bounded tree cache. The root is never forgotten.

use super::layout::Dir;
use crate::format::tree::Node;
use std::collections::HashMap;
use std::sync::Arc;

pub(super) const ROOT: u64 = 1;

/// What an inode is.
// Always behind an `Arc`: boxing the node would only add an indirection.
#[allow(clippy::large_enum_variant)]
#[derive(Debug)]
pub(super) enum Entry {
    /// A made-up directory of the top levels.
    Dir(Dir),
    /// `latest`: a symlink, with the time of the snapshot it names.
    Latest { target: String, time_ns: i64 },
    /// A node of a snapshot's tree, or a snapshot's root directory (a node
    /// made from the snapshot, whose subtree is the snapshot's tree).
    Node(Node),
}

struct Inode {
    parent: u64,
    name: Vec<u8>,
    entry: Arc<Entry>,
    lookups: u64,
}

pub(super) struct Inodes {
    by_ino: HashMap<u64, Inode>,
    by_name: HashMap<(u64, Vec<u8>), u64>,
    next: u64,
}

impl Inodes {
    pub(super) fn new() -> Inodes {
        let mut by_ino = HashMap::new();
        by_ino.insert(
            ROOT,
            Inode {
                parent: ROOT,
                name: Vec::new(),
                entry: Arc::new(Entry::Dir(Dir::Root)),
                lookups: 1,
            },
        );
        Inodes {
            by_ino,
            by_name: HashMap::new(),
            next: ROOT + 1,
        }
    }

    /// The inode of `name` in `parent`, made from `entry` if there is none,
    /// with one more kernel reference. A made-up entry can change under the
    /// same name (`latest` after a new snapshot): the inode keeps its number
    /// and takes the new entry.
    pub(super) fn lookup(&mut self, parent: u64, name: &[u8], entry: Entry) -> (u64, Arc<Entry>) {
        let entry = Arc::new(entry);
        if let Some(&ino) = self.by_name.get(&(parent, name.to_vec())) {
            if let Some(inode) = self.by_ino.get_mut(&ino) {
                inode.lookups += 1;
                if !matches!(*entry, Entry::Node(_)) {
                    inode.entry = entry.clone();
                }
                return (ino, inode.entry.clone());
            }
        }
        let ino = self.next;
        self.next += 1;
        self.by_name.insert((parent, name.to_vec()), ino);
        self.by_ino.insert(
            ino,
            Inode {
                parent,
                name: name.to_vec(),
                entry: entry.clone(),
                lookups: 1,
            },
        );
        (ino, entry)
    }

    pub(super) fn get(&self, ino: u64) -> Option<(Arc<Entry>, u64)> {
        self.by_ino
            .get(&ino)
            .map(|inode| (inode.entry.clone(), inode.parent))
    }

    /// The number `readdir` shows for `name` in `parent`: its inode's if it
    /// has one, else a number from the high half that no inode gets (only
    /// `lookup` hands out inodes, so a listing allocates nothing).
    pub(super) fn listed_ino(&self, parent: u64, name: &[u8]) -> u64 {
        if let Some(&ino) = self.by_name.get(&(parent, name.to_vec())) {
            return ino;
        }
        use std::hash::{Hash, Hasher};
        let mut h = std::collections::hash_map::DefaultHasher::new();
        (parent, name).hash(&mut h);
        h.finish() | (1 << 63)
    }

    /// Drops `count` kernel references; the inode goes with the last.
    pub(super) fn forget(&mut self, ino: u64, count: u64) {
        if ino == ROOT {
            return;
        }
        let Some(inode) = self.by_ino.get_mut(&ino) else {
            return;
        };
        inode.lookups = inode.lookups.saturating_sub(count);
        if inode.lookups == 0 {
            let inode = self.by_ino.remove(&ino).expect("present");
            let key = (inode.parent, inode.name);
            if self.by_name.get(&key) == Some(&ino) {
                self.by_name.remove(&key);
            }
        }
    }

    #[cfg(test)]
    pub(super) fn len(&self) -> usize {
        self.by_ino.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::format::tree::NodeKind;

    #[test]
    fn an_inode_lives_until_the_kernel_forgets_every_lookup() {
        let mut table = Inodes::new();
        let node = || Entry::Node(Node::new(b"a", NodeKind::File));
        let (a, _) = table.lookup(ROOT, b"a", node());
        let (again, _) = table.lookup(ROOT, b"a", node());
        assert_eq!(a, again);
        assert_eq!(table.listed_ino(ROOT, b"a"), a);
        table.forget(a, 1);
        assert!(table.get(a).is_some());
        table.forget(a, 1);
        assert!(table.get(a).is_none());
        assert_eq!(table.len(), 1, "only the root is left");
        assert!(table.listed_ino(ROOT, b"a") >= 1 << 63);
        table.forget(ROOT, 5);
        assert!(table.get(ROOT).is_some());
    }

    #[test]
    fn latest_takes_its_new_target_under_the_same_number() {
        let mut table = Inodes::new();
        let latest = |t: &str| Entry::Latest {
            target: t.into(),
            time_ns: 0,
        };
        let (ino, _) = table.lookup(ROOT, b"latest", latest("one"));
        let (again, entry) = table.lookup(ROOT, b"latest", latest("two"));
        assert_eq!(ino, again);
        assert!(matches!(&*entry, Entry::Latest { target, .. } if target == "two"));
    }
}
