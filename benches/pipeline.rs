//! Throughput of each stage of a backup and a restore, in MB/s of plaintext
//! (or lookups/s), on compressible text-like data (SQL INSERT lines) and on
//! random data: chunking, keyed BLAKE3 blob ids, zstd, XChaCha20-Poly1305
//! sealing, the whole seal (one core and all cores), opening, pack writing
//! (with fsync) and, with the `cache` feature, RocksDB index lookups.
//!
//!     cargo bench --no-default-features --bench pipeline   # no RocksDB needed
//!     cargo bench --bench pipeline                         # adds index lookups
//!
//! `BENCH_MIB` sets the data size (default 256). Each figure is the best of
//! `BENCH_REPS` runs (default 3): the machine is shared, and the best run is
//! the one least disturbed. Comparisons with restic and borg on the same data
//! are in scripts/bench.sh and docs/PERFORMANCE.md.

use cairn::format::chunker::{Chunker, ChunkerParams};
use cairn::format::crypto::MasterKey;
use cairn::format::id::{BlobId, Id};
use cairn::format::pack::{open_blob, seal_blob, BlobKind, PackBuilder, SealedBlob};
use cairn::storage::backend::{Backend, FileKind, LocalBackend};
use rayon::prelude::*;
use std::ops::Range;
use std::time::Instant;

fn text_like(len: usize) -> Vec<u8> {
    let mut out = Vec::with_capacity(len + 100);
    let mut state = 0x9e3779b97f4a7c15u64;
    while out.len() < len {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        let line = format!(
            "INSERT INTO orders VALUES ({}, {}, 'customer-{}@example.com', {}.{:02});\n",
            state % 10_000_000,
            (state >> 20) % 100_000,
            (state >> 30) % 5000,
            (state >> 40) % 1000,
            (state >> 50) % 100
        );
        out.extend_from_slice(line.as_bytes());
    }
    out.truncate(len);
    out
}

fn random_like(len: usize) -> Vec<u8> {
    let mut state = 0x2545f4914f6cdd1du64;
    let mut out = Vec::with_capacity(len + 8);
    while out.len() < len {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        out.extend_from_slice(&state.to_le_bytes());
    }
    out.truncate(len);
    out
}

fn env_usize(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// Runs `f` `reps` times and prints the best throughput of `bytes` per run.
fn measure<T>(stage: &str, bytes: usize, reps: usize, mut f: impl FnMut() -> T) -> T {
    let mut best = f64::INFINITY;
    let mut out = None;
    for _ in 0..reps {
        let started = Instant::now();
        let value = f();
        best = best.min(started.elapsed().as_secs_f64());
        out = Some(value);
    }
    println!(
        "{stage:<44} {:>8.0} MB/s  (best {:.3} s of {reps})",
        bytes as f64 / best / 1e6,
        best
    );
    out.expect("at least one rep")
}

fn spans_of(lengths: &[usize]) -> Vec<Range<usize>> {
    let mut spans = Vec::with_capacity(lengths.len());
    let mut at = 0;
    for l in lengths {
        spans.push(at..at + l);
        at += l;
    }
    spans
}

fn main() {
    let mib = env_usize("BENCH_MIB", 256);
    let reps = env_usize("BENCH_REPS", 3).max(1);
    let threads = rayon::current_num_threads();
    println!("data: {mib} MiB; {threads} rayon threads; best of {reps}\n");
    let text = text_like(mib << 20);
    let random = random_like((mib << 20) / 4);
    let key = MasterKey::generate();
    let chunker = Chunker::new(ChunkerParams::DEFAULT, key.chunker_seed()).expect("default params");

    let lengths = measure("chunk (FastCDC v2020, 1 core)", text.len(), reps, || {
        chunker.cut(&text, true)
    });
    let parallel = measure(
        "chunk (FastCDC v2020, cut_parallel, all cores)",
        text.len(),
        reps,
        || chunker.cut_parallel(&text, true, threads),
    );
    assert_eq!(parallel, lengths, "cut_parallel must equal cut");
    let spans = spans_of(&lengths);
    println!(
        "{:<44} {} chunks, mean {} KiB",
        "",
        lengths.len(),
        text.len() / lengths.len() / 1024
    );
    let ids: Vec<BlobId> = measure("blob id (keyed BLAKE3, 1 core)", text.len(), reps, || {
        spans
            .iter()
            .map(|s| key.blob_id(&text[s.clone()]))
            .collect()
    });
    measure(
        "blob id (keyed BLAKE3, all cores)",
        text.len(),
        reps,
        || {
            spans
                .par_iter()
                .map(|s| key.blob_id(&text[s.clone()]))
                .collect::<Vec<_>>()
        },
    );

    for level in [1, 3, 6] {
        let stored = measure(
            &format!("zstd {level} compress (1 core)"),
            text.len(),
            reps,
            || {
                spans
                    .iter()
                    .map(|s| zstd::bulk::compress(&text[s.clone()], level).unwrap().len())
                    .sum::<usize>()
            },
        );
        println!("{:<44} ratio {:.2}", "", text.len() as f64 / stored as f64);
    }
    let compressed: Vec<Vec<u8>> = spans
        .iter()
        .map(|s| zstd::bulk::compress(&text[s.clone()], 3).unwrap())
        .collect();
    measure("zstd 3 decompress (1 core)", text.len(), reps, || {
        compressed
            .iter()
            .zip(&spans)
            .map(|(c, s)| zstd::bulk::decompress(c, s.len()).unwrap().len())
            .sum::<usize>()
    });

    let random_lengths = chunker.cut(&random, true);
    let random_spans = spans_of(&random_lengths);
    measure(
        "XChaCha20-Poly1305 seal (random, 1 core)",
        random.len(),
        reps,
        || {
            random_spans
                .iter()
                .map(|s| {
                    key.seal_blob(0, &BlobId(Id([0; 32])), &random[s.clone()])
                        .len()
                })
                .sum::<usize>()
        },
    );
    measure(
        "seal_blob, zstd 3 (random: not stored, 1 core)",
        random.len(),
        reps,
        || {
            random_spans
                .iter()
                .map(|s| {
                    seal_blob(
                        &key,
                        BlobKind::Data,
                        BlobId(Id([0; 32])),
                        &random[s.clone()],
                        3,
                    )
                    .bytes
                    .len()
                })
                .sum::<usize>()
        },
    );

    let sealed: Vec<SealedBlob> =
        measure("seal_blob, zstd 3 (text, 1 core)", text.len(), reps, || {
            spans
                .iter()
                .zip(&ids)
                .map(|(s, id)| seal_blob(&key, BlobKind::Data, *id, &text[s.clone()], 3))
                .collect()
        });
    measure(
        "seal_blob, zstd 3 (text, all cores)",
        text.len(),
        reps,
        || {
            spans
                .par_iter()
                .zip(ids.par_iter())
                .map(|(s, id)| seal_blob(&key, BlobKind::Data, *id, &text[s.clone()], 3))
                .collect::<Vec<_>>()
        },
    );

    // Open (decrypt, decompress, re-hash), as restore and check do.
    let mut pack = PackBuilder::new();
    for blob in &sealed {
        pack.add(SealedBlob {
            kind: blob.kind,
            codec: blob.codec,
            id: blob.id,
            raw_length: blob.raw_length,
            bytes: blob.bytes.clone(),
        });
    }
    let (_, pack_bytes, entries) = pack.finish(&key);
    measure("open_blob (text, 1 core)", text.len(), reps, || {
        entries
            .iter()
            .map(|e| {
                let at = e.offset as usize;
                open_blob(&key, e, &pack_bytes[at..at + e.length as usize])
                    .unwrap()
                    .len()
            })
            .sum::<usize>()
    });
    measure("open_blob (text, all cores)", text.len(), reps, || {
        entries
            .par_iter()
            .map(|e| {
                let at = e.offset as usize;
                open_blob(&key, e, &pack_bytes[at..at + e.length as usize])
                    .unwrap()
                    .len()
            })
            .sum::<usize>()
    });
    drop(pack_bytes);

    // Pack writing: build 32 MiB packs of random (incompressible) sealed
    // blobs and store them with the local backend (temp file, fsync, rename,
    // directory fsync), as BlobWriter does.
    let dir = tempfile::tempdir_in(std::env::var_os("BENCH_DIR").unwrap_or_else(|| "/tmp".into()))
        .expect("temp dir");
    let backend = LocalBackend::new(dir.path().join("repo"));
    backend.create().expect("create repository directories");
    let random_sealed: Vec<SealedBlob> = random_spans
        .par_iter()
        .map(|s| {
            let bytes = &random[s.clone()];
            seal_blob(&key, BlobKind::Data, key.blob_id(bytes), bytes, 3)
        })
        .collect();
    let pack_target = 32 << 20;
    measure(
        "pack build + store (32 MiB packs, fsync)",
        random.len(),
        reps,
        || {
            let mut builder = PackBuilder::new();
            let mut stored = 0usize;
            for blob in &random_sealed {
                builder.add(SealedBlob {
                    kind: blob.kind,
                    codec: blob.codec,
                    id: blob.id,
                    raw_length: blob.raw_length,
                    bytes: blob.bytes.clone(),
                });
                if builder.len() >= pack_target {
                    let (id, bytes, _) = std::mem::take(&mut builder).finish(&key);
                    backend.put(FileKind::Pack, &id.to_hex(), &bytes).unwrap();
                    stored += bytes.len();
                }
            }
            if !builder.is_empty() {
                let (id, bytes, _) = builder.finish(&key);
                backend.put(FileKind::Pack, &id.to_hex(), &bytes).unwrap();
                stored += bytes.len();
            }
            stored
        },
    );

    #[cfg(feature = "cache")]
    index_lookups(&key, dir.path());
}

/// Lookups in the RocksDB index cache: `BENCH_INDEX_BLOBS` (default 1 M)
/// entries merged from index files, then random present and absent ids.
#[cfg(feature = "cache")]
fn index_lookups(key: &MasterKey, dir: &std::path::Path) {
    use cairn::format::id::{IndexId, PackId, RepositoryId};
    use cairn::format::index_file::{IndexFile, IndexPack};
    use cairn::format::pack::{Codec, PackEntry};
    use cairn::storage::index_cache::IndexDb;

    let blobs = env_usize("BENCH_INDEX_BLOBS", 1_000_000);
    let per_pack = 100;
    let db = IndexDb::open(&dir.join("cache"), RepositoryId(Id::random())).expect("open index");
    let id_of = |n: usize| key.blob_id(&(n as u64).to_le_bytes());
    let started = Instant::now();
    let mut n = 0;
    while n < blobs {
        let mut file = IndexFile::default();
        while n < blobs && file.blob_count() < 100_000 {
            let entries = (0..per_pack.min(blobs - n))
                .map(|i| PackEntry {
                    kind: BlobKind::Data,
                    codec: Codec::Zstd,
                    id: id_of(n + i),
                    offset: (i * 1000) as u32,
                    length: 1000,
                    raw_length: 4000,
                })
                .collect::<Vec<_>>();
            n += entries.len();
            file.packs.push(IndexPack {
                id: PackId(Id::random()),
                entries,
            });
        }
        db.merge(IndexId(Id::random()), &file).expect("merge");
    }
    let secs = started.elapsed().as_secs_f64();
    println!(
        "{:<44} {:>8.0} entries/s  ({blobs} entries, {secs:.2} s)",
        "index merge (RocksDB)",
        blobs as f64 / secs
    );
    let probes = 200_000;
    for (label, offset) in [("present", 0), ("absent", blobs)] {
        let started = Instant::now();
        let mut found = 0;
        for i in 0..probes {
            let n = offset + (i * 7919) % blobs;
            if db.contains(BlobKind::Data, &id_of(n)).expect("lookup") {
                found += 1;
            }
        }
        let secs = started.elapsed().as_secs_f64();
        println!(
            "{:<44} {:>8.0} lookups/s  ({found} of {probes} found)",
            format!("index lookup, {label} ids (1 thread)"),
            probes as f64 / secs
        );
    }
}
