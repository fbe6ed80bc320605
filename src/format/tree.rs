//! Trees: one directory's sorted entries with their metadata, stored as a
//! tree blob (JSON, then compressed and sealed like any blob). Pure.

use crate::error::{Error, Result};
use crate::format::id::BlobId;
use crate::format::pack::BLOB_RAW_SIZE_MAX;
use serde::{Deserialize, Serialize};

pub const TREE_VERSION: u32 = 1;
/// Largest encoded tree a reader accepts (it is a blob: the blob limit).
pub const TREE_SIZE_MAX: usize = BLOB_RAW_SIZE_MAX as usize;
/// Largest name, symlink target, user or group name a tree may carry.
pub const NAME_LEN_MAX: usize = 4096;
/// Largest xattr name (Linux `XATTR_NAME_MAX`: no file system can hold a
/// longer one, so no backup of one has it).
pub const XATTR_NAME_LEN_MAX: usize = 255;
/// Largest xattr value (Linux `XATTR_SIZE_MAX`).
pub const XATTR_VALUE_LEN_MAX: usize = 64 * 1024;
/// Most bytes of xattr names on one node, each counted with its NUL (Linux
/// `XATTR_LIST_MAX`: the most `listxattr` can return).
pub const XATTR_NAMES_LEN_MAX: usize = 64 * 1024;
/// Largest file size a node may claim (`off_t` is signed).
pub const FILE_SIZE_MAX: u64 = i64::MAX as u64;
/// Most levels of trees below a snapshot's root tree that readers walk
/// (the root tree is level 1). A path through 2048 directories with
/// one-byte names is 4095 bytes, the longest path Linux accepts
/// (`PATH_MAX`), so no directory tree that tools can name by path is
/// deeper; the bound keeps every walk's memory and time finite.
pub const TREE_DEPTH_MAX: usize = 2048;

/// Bytes that are usually text: a JSON string when valid UTF-8, else
/// `{"hex": "..."}`, so no file name is ever mangled.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct Bytes(pub Vec<u8>);

impl Serialize for Bytes {
    fn serialize<S: serde::Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        match std::str::from_utf8(&self.0) {
            Ok(text) => s.serialize_str(text),
            Err(_) => {
                use serde::ser::SerializeMap;
                let mut map = s.serialize_map(Some(1))?;
                map.serialize_entry("hex", &hex::encode(&self.0))?;
                map.end()
            }
        }
    }
}

impl<'de> Deserialize<'de> for Bytes {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Repr {
            Text(String),
            Hex { hex: String },
        }
        match Repr::deserialize(d)? {
            Repr::Text(text) => Ok(Bytes(text.into_bytes())),
            Repr::Hex { hex } => hex::decode(hex)
                .map(Bytes)
                .map_err(serde::de::Error::custom),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum NodeKind {
    File,
    Dir,
    Symlink,
    Fifo,
    Chardev,
    Blockdev,
    Socket,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Xattr {
    pub name: Bytes,
    /// Hex: values are often binary.
    pub value: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Node {
    pub name: Bytes,
    #[serde(rename = "type")]
    pub kind: NodeKind,
    /// Permission bits including setuid, setgid and sticky (st_mode & 0o7777).
    pub mode: u32,
    pub uid: u32,
    pub gid: u32,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub group: Option<String>,
    /// Nanoseconds since the Unix epoch.
    pub mtime_ns: i64,
    pub ctime_ns: i64,
    pub inode: u64,
    pub device_id: u64,
    pub links: u64,
    pub size: u64,
    /// Data blobs of a file, in order.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub content: Vec<BlobId>,
    /// Tree blob of a directory.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub subtree: Option<BlobId>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub link_target: Option<Bytes>,
    /// Device number of a char or block device.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub rdev: u64,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub xattrs: Vec<Xattr>,
}

fn is_zero(v: &u64) -> bool {
    *v == 0
}

impl Node {
    /// A node with no metadata, for synthetic entries (stdin files, tests).
    pub fn new(name: &[u8], kind: NodeKind) -> Node {
        Node {
            name: Bytes(name.to_vec()),
            kind,
            mode: if kind == NodeKind::Dir { 0o755 } else { 0o644 },
            uid: 0,
            gid: 0,
            user: None,
            group: None,
            mtime_ns: 0,
            ctime_ns: 0,
            inode: 0,
            device_id: 0,
            links: 1,
            size: 0,
            content: Vec::new(),
            subtree: None,
            link_target: None,
            rdev: 0,
            xattrs: Vec::new(),
        }
    }

    pub fn name_str(&self) -> String {
        String::from_utf8_lossy(&self.name.0).into_owned()
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
pub struct Tree {
    pub version: u32,
    pub nodes: Vec<Node>,
}

/// Is `name` safe as one path component? Restore joins names onto the
/// target directory, so a hostile tree must not climb out of it.
pub fn is_valid_name(name: &[u8]) -> bool {
    !name.is_empty()
        && name.len() <= NAME_LEN_MAX
        && name != b"."
        && name != b".."
        && !name.contains(&b'/')
        && !name.contains(&0)
}

/// The rules every node's own fields obey, whoever wrote it: the tree
/// decoder applies them to what it reads and the tarball decoder to what it
/// hands to the importer, so that nothing is stored that a reader then
/// refuses as damage. What is wrong is returned as a phrase ("has …").
/// Structure (sorting, `subtree`, `content` per kind) is `Tree::decode`'s.
pub fn check_node_fields(node: &Node) -> std::result::Result<(), String> {
    if !is_valid_name(&node.name.0) {
        return Err("has an unsafe name".into());
    }
    if let Some(target) = &node.link_target {
        let t = &target.0;
        if t.is_empty() {
            return Err("has an empty symlink target".into());
        }
        if t.len() > NAME_LEN_MAX {
            return Err(format!(
                "has a symlink target longer than {NAME_LEN_MAX} bytes"
            ));
        }
        if t.contains(&0) {
            return Err("has a symlink target with a NUL byte".into());
        }
    }
    for (what, name) in [("user", &node.user), ("group", &node.group)] {
        if let Some(name) = name {
            if name.len() > NAME_LEN_MAX || name.contains('\0') {
                return Err(format!(
                    "has a {what} name that is too long or has a NUL byte"
                ));
            }
        }
    }
    if node.kind == NodeKind::File && node.size > FILE_SIZE_MAX {
        return Err(format!("claims a size over {FILE_SIZE_MAX} bytes"));
    }
    let mut names_len = 0usize;
    for x in &node.xattrs {
        let name = &x.name.0;
        if name.is_empty() || name.len() > XATTR_NAME_LEN_MAX || name.contains(&0) {
            return Err(format!(
                "has an xattr name that is empty, longer than {XATTR_NAME_LEN_MAX} bytes or has a NUL byte"
            ));
        }
        names_len += name.len() + 1;
        if x.value.len() > 2 * XATTR_VALUE_LEN_MAX
            || x.value.len() % 2 != 0
            || !x.value.bytes().all(|b| b.is_ascii_hexdigit())
        {
            return Err(format!(
                "has an xattr value that is not hex or is longer than {XATTR_VALUE_LEN_MAX} bytes"
            ));
        }
    }
    if names_len > XATTR_NAMES_LEN_MAX {
        return Err(format!(
            "has xattr names longer than {XATTR_NAMES_LEN_MAX} bytes together"
        ));
    }
    Ok(())
}

impl Tree {
    pub fn new(mut nodes: Vec<Node>) -> Tree {
        nodes.sort_by(|a, b| a.name.cmp(&b.name));
        Tree {
            version: TREE_VERSION,
            nodes,
        }
    }

    pub fn find(&self, name: &[u8]) -> Option<&Node> {
        self.nodes
            .binary_search_by(|n| n.name.0.as_slice().cmp(name))
            .ok()
            .map(|i| &self.nodes[i])
    }

    pub fn encode(&self) -> Vec<u8> {
        serde_json::to_vec(self).expect("tree serializes")
    }

    /// Decodes and validates: known version, sorted unique safe names, and
    /// per-kind fields that make sense.
    pub fn decode(bytes: &[u8]) -> Result<Tree> {
        if bytes.len() > TREE_SIZE_MAX {
            return Err(Error::corrupt("tree is larger than the format allows"));
        }
        let tree: Tree = serde_json::from_slice(bytes)
            .map_err(|e| Error::corrupt(format!("tree is not valid: {e}")))?;
        if tree.version != TREE_VERSION {
            return Err(Error::new(
                crate::error::ErrorKind::UnsupportedVersion,
                format!("tree version {} is not supported", tree.version),
            ));
        }
        for (i, node) in tree.nodes.iter().enumerate() {
            if let Err(what) = check_node_fields(node) {
                return Err(Error::corrupt(format!(
                    "tree node {:?} {what}",
                    node.name_str()
                )));
            }
            if i > 0 && tree.nodes[i - 1].name >= node.name {
                return Err(Error::corrupt("tree entries are not sorted and unique"));
            }
            if (node.kind == NodeKind::Dir) != node.subtree.is_some() {
                return Err(Error::corrupt(format!(
                    "tree node {:?} has a bad subtree",
                    node.name_str()
                )));
            }
            if node.kind != NodeKind::File && !node.content.is_empty() {
                return Err(Error::corrupt(format!(
                    "tree node {:?} has stray content",
                    node.name_str()
                )));
            }
        }
        Ok(tree)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::format::id::Id;
    use proptest::prelude::*;

    fn node_strategy() -> impl Strategy<Value = Node> {
        (
            proptest::collection::vec(1u8..=255, 1..20).prop_filter("valid", |n| is_valid_name(n)),
            0usize..4,
            any::<u32>(),
            any::<i64>(),
            proptest::collection::vec(any::<[u8; 32]>(), 0..4),
            proptest::collection::vec(
                (
                    proptest::collection::vec(1u8..=255, 1..10),
                    proptest::collection::vec(any::<u8>(), 0..10),
                ),
                0..3,
            ),
        )
            .prop_map(|(name, kind, mode, mtime, content, xattrs)| {
                let kind = [
                    NodeKind::File,
                    NodeKind::Dir,
                    NodeKind::Symlink,
                    NodeKind::Fifo,
                ][kind];
                let mut node = Node::new(&name, kind);
                node.mode = mode & 0o7777;
                node.mtime_ns = mtime;
                node.xattrs = xattrs
                    .into_iter()
                    .map(|(n, v)| Xattr {
                        name: Bytes(n),
                        value: hex::encode(v),
                    })
                    .collect();
                match kind {
                    NodeKind::File => {
                        node.content = content.into_iter().map(|b| BlobId(Id(b))).collect()
                    }
                    NodeKind::Dir => node.subtree = Some(BlobId(Id([7; 32]))),
                    NodeKind::Symlink => node.link_target = Some(Bytes(vec![0xff, b'/', b'x'])),
                    _ => {}
                }
                node
            })
    }

    proptest! {
        #[test]
        fn tree_round_trip(nodes in proptest::collection::vec(node_strategy(), 0..8)) {
            let mut nodes = nodes;
            nodes.sort_by(|a, b| a.name.cmp(&b.name));
            nodes.dedup_by(|a, b| a.name == b.name);
            let tree = Tree::new(nodes);
            prop_assert_eq!(Tree::decode(&tree.encode()).unwrap(), tree);
        }

        #[test]
        fn tree_decoder_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..300)) {
            let _ = Tree::decode(&bytes);
        }
    }

    #[test]
    fn names_that_escape_the_target_are_refused() {
        for bad in [&b".."[..], b".", b"a/b", b"", b"a\0b"] {
            let mut node = Node::new(b"x", NodeKind::File);
            node.name = Bytes(bad.to_vec());
            let tree = Tree {
                version: TREE_VERSION,
                nodes: vec![node],
            };
            assert!(Tree::decode(&tree.encode()).is_err(), "{bad:?} accepted");
        }
    }

    /// A tree of one node, as a reader sees it.
    fn decodes(node: &Node) -> bool {
        Tree::decode(&Tree::new(vec![node.clone()]).encode()).is_ok()
    }

    #[test]
    fn fields_a_reader_refuses_are_named_by_the_shared_rules() {
        let link = |target: &[u8]| {
            let mut node = Node::new(b"l", NodeKind::Symlink);
            node.link_target = Some(Bytes(target.to_vec()));
            node
        };
        let xattr = |name: &[u8], value: &str| {
            let mut node = Node::new(b"f", NodeKind::File);
            node.xattrs = vec![Xattr {
                name: Bytes(name.to_vec()),
                value: value.into(),
            }];
            node
        };
        let mut huge = Node::new(b"f", NodeKind::File);
        huge.size = u64::MAX;
        let mut user = Node::new(b"f", NodeKind::File);
        user.user = Some("a\0b".into());
        let mut many = Node::new(b"f", NodeKind::File);
        many.xattrs = (0..300)
            .map(|i| Xattr {
                name: Bytes(format!("user.{i:0>250}").into_bytes()),
                value: String::new(),
            })
            .collect();
        let bad = [
            link(b""),
            link(b"a\0b"),
            link(&vec![b'a'; NAME_LEN_MAX + 1]),
            xattr(b"", ""),
            xattr(b"user.a\0", ""),
            xattr(&vec![b'u'; XATTR_NAME_LEN_MAX + 1], ""),
            xattr(b"user.a", "abc"),
            xattr(b"user.a", "zz"),
            xattr(b"user.a", &"00".repeat(XATTR_VALUE_LEN_MAX + 1)),
            huge,
            user,
            many,
        ];
        for node in &bad {
            assert!(check_node_fields(node).is_err(), "{node:?} passed");
            assert!(!decodes(node), "{node:?} decoded");
        }
        let good = [
            link(b"../../etc/passwd"),
            link(&vec![b'a'; NAME_LEN_MAX]),
            xattr(
                &vec![b'u'; XATTR_NAME_LEN_MAX],
                &"00".repeat(XATTR_VALUE_LEN_MAX),
            ),
            xattr(b"user.\xff", "ff"),
        ];
        for node in &good {
            assert_eq!(check_node_fields(node), Ok(()));
            assert!(decodes(node), "{node:?} refused");
        }
    }

    proptest! {
        /// The decoder and the shared rules agree on every node's fields:
        /// what `check_node_fields` passes is what a reader accepts.
        #[test]
        fn the_reader_accepts_exactly_what_the_rules_pass(
            target in proptest::collection::vec(any::<u8>(), 0..6),
            xname in proptest::collection::vec(any::<u8>(), 0..6),
            xvalue in "[0-9a-fz]{0,5}",
            size in prop_oneof![Just(u64::MAX), 0u64..10, Just(FILE_SIZE_MAX)],
        ) {
            let mut node = Node::new(b"n", NodeKind::File);
            node.size = size;
            node.link_target = Some(Bytes(target));
            node.xattrs = vec![Xattr { name: Bytes(xname), value: xvalue }];
            prop_assert_eq!(check_node_fields(&node).is_ok(), decodes(&node));
        }
    }

    #[test]
    fn non_utf8_names_survive() {
        let tree = Tree::new(vec![Node::new(&[0xff, 0xfe, b'a'], NodeKind::File)]);
        let text = String::from_utf8(tree.encode()).unwrap();
        assert!(text.contains("\"hex\""));
        assert_eq!(Tree::decode(text.as_bytes()).unwrap(), tree);
    }
}
