//! Makes a repository whose index names `BLOBS` blobs (default 5 million),
//! cheaply: the index files list fake blobs in packs that do not exist, which
//! a backup never reads (it only asks the index whether a blob is known).
//! The local cache is synced before exiting, so a later `cairn backup` with
//! the same cache directory measures the backup, not the first cache merge.
//! scripts/bench.sh --scaling uses it to compare a backup's peak memory into
//! this repository with the same backup into an empty one.
//!
//!     cargo bench --bench index_scaling -- REPO CACHE_DIR PASSWORD_FILE [BLOBS]

use cairn::format::id::{BlobId, Id, PackId};
use cairn::format::index_file::INDEX_FILE_BLOBS_TARGET;
use cairn::format::index_file::{IndexFile, IndexPack};
use cairn::format::pack::{BlobKind, Codec, PackEntry};
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
    let args: Vec<String> = std::env::args()
        .skip(1)
        .filter(|a| a != "--bench")
        .collect();
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
                .collect();
            n += count;
            file.packs.push(IndexPack {
                id: PackId(Id::random()),
                entries,
            });
        }
        repo.save_index_file(&file, &lock)?;
    }
    let written = started.elapsed().as_secs_f64();
    let _repo = repo.load_index()?;
    println!(
        "{}: {blobs} fake blobs indexed (index files {written:.1} s, cache sync {:.1} s)",
        repo_dir.display(),
        started.elapsed().as_secs_f64() - written
    );
    Ok(())
}
