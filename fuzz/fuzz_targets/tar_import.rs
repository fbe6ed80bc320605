//! `cairn import-tar`'s decoder (`format::tar::read_members`) on arbitrary
//! bytes: plain or compressed tarballs, PAX records, GNU long names, GNU and
//! PAX sparse maps, hard links. It must return Ok or a clean error (never
//! panic), stay inside its limits (a decompression bomb or a sparse member
//! claiming exabytes of holes is stopped by `Limits`), and hand over only
//! members whose paths are safe to put in a tree and whose fields pass the
//! rules the tree reader applies (`tree::check_node_fields`), no deeper than
//! `Limits::max_depth`.
#![no_main]

use cairn::format::tar::{read_members, Limits, Member};
use cairn::format::tree::{check_node_fields, is_valid_name, NodeKind};
use cairn_fuzz::{TAR_MAX_CONTENT, TAR_MAX_DEPTH, TAR_MAX_HEADER, TAR_MAX_MEMBERS, TAR_MAX_STREAM};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let limits = Limits {
        max_stream_bytes: TAR_MAX_STREAM,
        max_content_bytes: TAR_MAX_CONTENT,
        max_header_bytes: TAR_MAX_HEADER,
        max_members: TAR_MAX_MEMBERS,
        max_depth: TAR_MAX_DEPTH,
    };
    let mut members = 0u64;
    let mut content = 0u64;
    let mut buf = vec![0u8; 64 * 1024];
    let result = read_members(&mut &data[..], "fuzz.tar", &limits, &mut |member, contents| {
        members += 1;
        assert!(members <= TAR_MAX_MEMBERS, "members past the limit");
        match member {
            Member::Node { parts, node } => {
                assert!(!parts.is_empty(), "a member with no path");
                assert!(parts.iter().all(|p| is_valid_name(p)), "unsafe path {parts:?}");
                assert!(parts.len() <= TAR_MAX_DEPTH, "a path past the depth limit");
                assert_eq!(check_node_fields(&node), Ok(()), "a field the reader refuses");
                assert_eq!(&node.name.0, parts.last().unwrap());
                assert_eq!(node.mode & !0o7777, 0);
                assert_eq!(node.link_target.is_some(), node.kind == NodeKind::Symlink);
                assert!(node.content.is_empty() && node.size == 0);
            }
            Member::HardLink { parts, target, .. } => {
                assert!(!parts.is_empty() && !target.is_empty());
                assert!(parts.iter().chain(&target).all(|p| is_valid_name(p)));
                assert!(parts.len() <= TAR_MAX_DEPTH && target.len() <= TAR_MAX_DEPTH);
            }
            Member::Skipped { .. } => {}
        }
        // A bounded sink: the decoder's content limit stops a bomb.
        loop {
            let n = contents.read(&mut buf).map_err(|e| cairn::Error::invalid(e.to_string()))?;
            if n == 0 {
                break;
            }
            content += n as u64;
            assert!(content <= TAR_MAX_CONTENT, "contents past the limit");
        }
        Ok(())
    });
    if let Ok(decoded) = result {
        assert_eq!(decoded.members, members);
        // Unread contents (there are none here) would count as well.
        assert!(decoded.content_bytes >= content);
        assert!(decoded.content_bytes <= TAR_MAX_CONTENT);
    }
});
