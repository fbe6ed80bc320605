//! Tree blobs (JSON): what decodes re-encodes to an equal tree, the encoding
//! is canonical, and every accepted name is safe and findable.
#![no_main]

use cairn::format::tree::{is_valid_name, NodeKind, Tree};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(tree) = Tree::decode(data) else { return };
    let encoded = tree.encode();
    let again = Tree::decode(&encoded).expect("an encoded tree decodes");
    assert_eq!(again, tree, "tree changed in a round trip");
    assert_eq!(again.encode(), encoded, "tree encoding is not canonical");
    for node in &tree.nodes {
        assert!(is_valid_name(&node.name.0), "unsafe name accepted: {:?}", node.name);
        assert_eq!(tree.find(&node.name.0), Some(node), "node not found by its name");
        assert_eq!(node.kind == NodeKind::Dir, node.subtree.is_some());
        let _ = node.name_str();
    }
});
