//! Throughput of the CPU stages of a backup, one thread each, on 256 MiB of
//! compressible text-like data: chunking, keyed BLAKE3 blob ids, and
//! compress+seal. Run with `cargo bench --no-default-features --bench pipeline`
//! (the bench needs no RocksDB, so this avoids a release build of it). Comparisons with
//! restic and borg on the same data belong in scripts/bench.sh (issue 6).

use cairn::chunker::{Chunker, ChunkerParams};
use cairn::crypto::MasterKey;
use cairn::pack::{seal_blob, BlobKind};
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

fn report(stage: &str, bytes: usize, started: Instant) {
    let secs = started.elapsed().as_secs_f64();
    println!(
        "{stage:<28} {:>8.0} MB/s  ({:.3} s)",
        bytes as f64 / secs / 1e6,
        secs
    );
}

fn main() {
    let data = text_like(256 * 1024 * 1024);
    let key = MasterKey::generate();
    let chunker = Chunker::new(ChunkerParams::DEFAULT, key.chunker_seed()).expect("default params");

    let started = Instant::now();
    let lengths = chunker.cut(&data, true);
    report("chunk (FastCDC v2020)", data.len(), started);

    let mut spans = Vec::with_capacity(lengths.len());
    let mut at = 0;
    for l in &lengths {
        spans.push(at..at + l);
        at += l;
    }
    let started = Instant::now();
    let ids: Vec<_> = spans
        .iter()
        .map(|s| key.blob_id(&data[s.clone()]))
        .collect();
    report("blob id (keyed BLAKE3)", data.len(), started);

    for level in [1, 3] {
        let started = Instant::now();
        let mut stored = 0usize;
        for (span, id) in spans.iter().zip(&ids) {
            stored += seal_blob(&key, BlobKind::Data, *id, &data[span.clone()], level)
                .bytes
                .len();
        }
        report(
            &format!("zstd {level} + XChaCha20 seal"),
            data.len(),
            started,
        );
        println!(
            "{:<28} {:>8.2} x  ({} chunks, mean {} KiB)",
            "  ratio",
            data.len() as f64 / stored as f64,
            lengths.len(),
            data.len() / lengths.len() / 1024
        );
    }
}
