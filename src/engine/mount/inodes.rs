//! The inode table. An inode exists only while the kernel holds it: a
//! `lookup` adds one reference, `forget` drops them, and an inode with none
//! left is removed. The kernel bounds what it holds (it forgets inodes it
//! evicts under memory pressure), so the table stays bounded however large
//! the trees are; trees themselves are loaded on demand and kept only in the
//! bounded tree cache. The root is never forgotten.
//!
//! Files stored as hard links of each other (same stored device and inode,
//! more than one link) share one inode within a snapshot's directory, so
//! `stat` shows one inode number under each of their names, as the source
//! did.

use super::layout::Dir;
use crate::format::tree::{Node, NodeKind};
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
    /// The directory it was first found in (`..` of a directory).
    parent: u64,
    /// Every (directory, name) it is known by: more than one for a hard
    /// link found under several names.
    names: Vec<(u64, Vec<u8>)>,
    /// The snapshot directory it is in (0: a made-up entry).
    root: u64,
    /// (root, stored device, stored inode) of a hard-linked file.
    link: Option<LinkKey>,
    entry: Arc<Entry>,
    lookups: u64,
}

type LinkKey = (u64, u64, u64);

pub(super) struct Inodes {
    by_ino: HashMap<u64, Inode>,
    by_name: HashMap<(u64, Vec<u8>), u64>,
    by_link: HashMap<LinkKey, u64>,
    next: u64,
}

/// The stored identity of a file with other hard links, if it has one.
fn stored_link(entry: &Entry) -> Option<(u64, u64)> {
    match entry {
        Entry::Node(node) if node.kind != NodeKind::Dir && node.links > 1 && node.inode != 0 => {
            Some((node.device_id, node.inode))
        }
        _ => None,
    }
}

impl Inodes {
    pub(super) fn new() -> Inodes {
        let mut by_ino = HashMap::new();
        by_ino.insert(
            ROOT,
            Inode {
                parent: ROOT,
                names: Vec::new(),
                root: 0,
                link: None,
                entry: Arc::new(Entry::Dir(Dir::Root)),
                lookups: 1,
            },
        );
        Inodes {
            by_ino,
            by_name: HashMap::new(),
            by_link: HashMap::new(),
            next: ROOT + 1,
        }
    }

    /// The inode of `name` in `parent`, made from `entry` if there is none,
    /// with one more kernel reference. A made-up entry can change under the
    /// same name (`latest` after a new snapshot): the inode keeps its number
    /// and takes the new entry. A hard link of a file already known in the
    /// same snapshot gets that file's inode.
    pub(super) fn lookup(&mut self, parent: u64, name: &[u8], entry: Entry) -> (u64, Arc<Entry>) {
        if let Some(&ino) = self.by_name.get(&(parent, name.to_vec())) {
            if let Some(inode) = self.by_ino.get_mut(&ino) {
                inode.lookups += 1;
                if !matches!(entry, Entry::Node(_)) {
                    inode.entry = Arc::new(entry);
                }
                return (ino, inode.entry.clone());
            }
        }
        let ino = self.next;
        // A node right under a made-up directory is a snapshot's root.
        let root = match self.by_ino.get(&parent) {
            Some(p) if matches!(*p.entry, Entry::Dir(_)) => ino,
            Some(p) => p.root,
            None => 0,
        };
        let link = stored_link(&entry).map(|(dev, inode)| (root, dev, inode));
        if let Some(&shared) = link.as_ref().and_then(|k| self.by_link.get(k)) {
            if let Some(inode) = self.by_ino.get_mut(&shared) {
                inode.lookups += 1;
                inode.names.push((parent, name.to_vec()));
                self.by_name.insert((parent, name.to_vec()), shared);
                return (shared, inode.entry.clone());
            }
        }
        self.next += 1;
        let entry = Arc::new(entry);
        self.by_name.insert((parent, name.to_vec()), ino);
        if let Some(key) = link {
            self.by_link.insert(key, ino);
        }
        self.by_ino.insert(
            ino,
            Inode {
                parent,
                names: vec![(parent, name.to_vec())],
                root,
                link,
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
            for key in inode.names {
                if self.by_name.get(&key) == Some(&ino) {
                    self.by_name.remove(&key);
                }
            }
            if let Some(key) = inode.link {
                if self.by_link.get(&key) == Some(&ino) {
                    self.by_link.remove(&key);
                }
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

    #[test]
    fn hard_links_share_one_inode_within_a_snapshot_only() {
        let mut table = Inodes::new();
        let root = |t: &mut Inodes, name: &[u8]| {
            t.lookup(ROOT, name, Entry::Node(Node::new(b"", NodeKind::Dir)))
                .0
        };
        let linked = |name: &[u8], inode: u64| {
            let mut node = Node::new(name, NodeKind::File);
            (node.inode, node.device_id, node.links) = (inode, 9, 2);
            Entry::Node(node)
        };
        let (one, two) = (root(&mut table, b"one"), root(&mut table, b"two"));
        let (a, _) = table.lookup(one, b"a", linked(b"a", 77));
        let (b, _) = table.lookup(one, b"b", linked(b"b", 77));
        let (c, _) = table.lookup(one, b"c", linked(b"c", 78));
        let (other, _) = table.lookup(two, b"a", linked(b"a", 77));
        assert_eq!(a, b, "one inode for both names");
        assert_ne!(a, c);
        assert_ne!(a, other, "another snapshot's file is another inode");
        assert_eq!(table.listed_ino(one, b"b"), a);
        // Two references to the shared inode; it goes with the last.
        table.forget(a, 1);
        assert!(table.get(a).is_some());
        table.forget(a, 1);
        assert!(table.get(a).is_none());
        assert!(table.listed_ino(one, b"b") >= 1 << 63);
        let (again, _) = table.lookup(one, b"b", linked(b"b", 77));
        assert_ne!(again, a, "numbers are not reused");
    }
}
