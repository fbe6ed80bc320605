//! Makes a repository whose index names `BLOBS` blobs (default 5 million),
//! cheaply: the index files list fake blobs in packs that do not exist, which
//! a backup never reads (it only asks the index whether a blob is known).
//! The local cache is synced before exiting, so a later `cairn backup` with
//! the same cache directory measures the backup, not the first cache merge.
//! scripts/bench.sh --scaling uses it to compare a backup's peak memory into
//! this repository with the same backup into an empty one.
//!
//! With `--packs` the packs exist too, as sparse files of exactly the size
//! their index entries imply (no disk space, no data), and one snapshot
//! uses every fourth fake blob through trees of file nodes: `check` is then
//! clean and `prune --dry-run` has a plan, so scripts/measure/check_memory.sh
//! can measure their memory at millions of blobs (nothing reads the blobs).
//!
//!     cargo bench --bench index_scaling -- REPO CACHE_DIR PASSWORD_FILE [BLOBS] [--packs]

use cairn::engine::checker::expected_pack_size;
use cairn::format::id::{BlobId, Id, PackId};
use cairn::format::index_file::INDEX_FILE_BLOBS_TARGET;
use cairn::format::index_file::{IndexFile, IndexPack};
use cairn::format::pack::{BlobKind, Codec, PackEntry};
use cairn::format::snapshot::{Snapshot, SourceKind, Summary, SNAPSHOT_VERSION};
use cairn::format::tree::{Node, NodeKind, Tree};
use cairn::storage::backend::LocalBackend;
use cairn::{InitOptions, Repository};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Instant;

/// Blobs per fake pack (the writer stores about 100 chunks of 256 KiB and
/// more per 32 MiB pack) and per index file: the writer's own target, as
/// larger files would make the cache sync hold larger batches in memory than
/// cairn ever does.
const BLOBS_PER_PACK: usize = 100;
const BLOBS_PER_INDEX_FILE: usize = INDEX_FILE_BLOBS_TARGET;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args: Vec<String> = std::env::args()
        .skip(1)
        .filter(|a| a != "--bench")
        .collect();
    let packs = args.iter().any(|a| a == "--packs");
    args.retain(|a| a != "--packs");
    if args.len() < 3 {
        eprintln!("usage: index_scaling REPO CACHE_DIR PASSWORD_FILE [BLOBS]");
        std::process::exit(2);
    }
    let repo_dir = PathBuf::from(&args[0]);
    let cache = PathBuf::from(&args[1]);
    let password = std::fs::read_to_string(&args[2])?;
    let password = password.lines().next().unwrap_or("").as_bytes().to_vec();
    let blobs: usize = args
        .get(3)
        .map(|b| b.parse())
        .transpose()?
        .unwrap_or(5_000_000);

    let started = Instant::now();
    let backend = Arc::new(LocalBackend::new(&repo_dir));
    Repository::init(backend.clone(), &password, &InitOptions::default())?;
    let repo = Repository::open(backend, &password, Some(&cache))?;
    let lock = repo.lock_shared(std::time::Duration::ZERO)?;
    let mut n = 0usize;
    // Every fourth blob, for the snapshot of `--packs`.
    let mut used: Vec<BlobId> = Vec::new();
    while n < blobs {
        let mut file = IndexFile::default();
        while n < blobs && file.blob_count() < BLOBS_PER_INDEX_FILE {
            let count = BLOBS_PER_PACK.min(blobs - n);
            let entries = (0..count)
                .map(|i| PackEntry {
                    kind: BlobKind::Data,
                    codec: Codec::Zstd,
                    // Random ids: no real chunk will ever match one.
                    id: BlobId(Id::random()),
                    offset: (i * 100_000) as u32,
                    length: 100_000,
                    raw_length: 400_000,
                })
                .collect::<Vec<PackEntry>>();
            n += count;
            let id = PackId(Id::random());
            if packs {
                let bytes: u64 = entries.iter().map(|e| u64::from(e.length)).sum();
                let hex = id.to_hex();
                let dir = repo_dir.join("packs").join(&hex[..2]);
                std::fs::create_dir_all(&dir)?;
                let f = std::fs::File::create(dir.join(&hex))?;
                f.set_len(expected_pack_size(bytes, entries.len() as u64))?;
                used.extend(entries.iter().step_by(4).map(|e| e.id));
            }
            file.packs.push(IndexPack { id, entries });
        }
        repo.save_index_file(&file, &lock)?;
    }
    drop(lock);
    let written = started.elapsed().as_secs_f64();
    let repo = repo.load_index()?;
    if packs {
        let lock = repo.lock_shared(std::time::Duration::ZERO)?;
        save_snapshot_of(&repo, &lock, &used)?;
    }
    println!(
        "{}: {blobs} fake blobs indexed (index files {written:.1} s, cache sync {:.1} s)",
        repo_dir.display(),
        started.elapsed().as_secs_f64() - written
    );
    Ok(())
}

/// One snapshot whose files list `used`: 1,000 chunks per file, 100 files
/// per directory, every directory in the root.
fn save_snapshot_of(
    repo: &Repository,
    lock: &cairn::LockGuard,
    used: &[BlobId],
) -> Result<(), Box<dyn std::error::Error>> {
    let mut writer = repo.blob_writer(lock);
    let mut dirs = Vec::new();
    for (d, group) in used.chunks(100_000).enumerate() {
        let files = group
            .chunks(1_000)
            .enumerate()
            .map(|(f, content)| {
                let mut node = Node::new(format!("f{f:05}").as_bytes(), NodeKind::File);
                node.content = content.to_vec();
                node.size = content.len() as u64 * 400_000;
                node
            })
            .collect();
        let mut dir = Node::new(format!("d{d:05}").as_bytes(), NodeKind::Dir);
        dir.subtree = Some(writer.save_tree(&Tree::new(files))?);
        dirs.push(dir);
    }
    let root = writer.save_tree(&Tree::new(dirs))?;
    let written = writer.finish()?;
    let snapshot = Snapshot {
        version: SNAPSHOT_VERSION,
        time: chrono::Local::now().fixed_offset(),
        parent: None,
        original: None,
        tree: root,
        paths: vec!["/fake".into()],
        hostname: "bench".into(),
        username: "bench".into(),
        uid: 0,
        gid: 0,
        tags: Vec::new(),
        program_version: "index_scaling".into(),
        source: SourceKind::Directory,
        command: None,
        summary: Summary::default(),
    };
    repo.save_snapshot(&snapshot, &written)?;
    Ok(())
}
