//! `cairn cat`: prints one decrypted repository object (config, snapshot,
//! index, key, lock, or a tree), for debugging and for scripts.

use super::args::{split_selector, Cli};
use super::repo::open;
use anyhow::anyhow;
use cairn::{FileKind, SnapshotFilter};
use std::io::Write;

pub(crate) fn cat(cli: &Cli, kind: &str, id: Option<&str>) -> anyhow::Result<i32> {
    let mut repo = open(cli)?;
    let need_id = || id.ok_or_else(|| anyhow!("cat {kind} needs an id"));
    let (file_kind, name) = match kind {
        "config" => (FileKind::Config, "config".to_string()),
        "snapshot" => {
            let (sid, _) = repo.find_snapshot(need_id()?, &SnapshotFilter::default())?;
            (FileKind::Snapshot, sid.to_hex())
        }
        "index" => (FileKind::Index, need_id()?.to_string()),
        "key" => (FileKind::Key, need_id()?.to_string()),
        "lock" => (FileKind::Lock, need_id()?.to_string()),
        "tree" => {
            let (sel, subpath) = split_selector(need_id()?);
            let (_, snapshot) = repo.find_snapshot(sel, &SnapshotFilter::default())?;
            let repo = repo.load_index()?;
            let tree_id = match cairn::engine::browse::find_node(&repo, &snapshot, subpath)? {
                None => snapshot.tree,
                Some(node) => node
                    .subtree
                    .ok_or_else(|| anyhow!("{subpath} is not a directory"))?,
            };
            let tree = repo.load_tree(&tree_id)?;
            println!("{}", serde_json::to_string_pretty(&tree)?);
            return Ok(0);
        }
        other => {
            return Err(anyhow!(
                "cannot cat {other:?}: use config, snapshot, index, key, lock or tree"
            ))
        }
    };
    let plain = repo.open_file(file_kind, &name)?;
    if file_kind == FileKind::Index {
        let file = cairn::format::index_file::IndexFile::decode(&plain)?;
        let packs: Vec<_> = file
            .packs
            .iter()
            .map(|p| {
                serde_json::json!({"id": p.id.to_hex(), "blobs": p.entries.iter().map(|e| serde_json::json!({
                    "id": e.id.to_hex(), "type": if e.kind == cairn::format::pack::BlobKind::Tree { "tree" } else { "data" }, "offset": e.offset,
                    "length": e.length, "raw_length": e.raw_length, "codec": e.codec as u8})).collect::<Vec<_>>()})
            })
            .collect();
        println!(
            "{}",
            serde_json::to_string_pretty(
                &serde_json::json!({"supersedes": file.supersedes, "packs": packs})
            )?
        );
    } else {
        std::io::stdout().write_all(&plain)?;
        println!();
    }
    Ok(0)
}
