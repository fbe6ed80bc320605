//! chunk-measure: measure FastCDC v2020 dedup between two "nights" of a backup
//! source, and pack-file write cost. Used to pick cairn's default chunk params.
//!
//! Usage:
//!   chunk-measure chunk <old> <new> <label>      # all candidate sets
//!   chunk-measure pack <dir> <pack_mib> <total_mib>
use fastcdc::v2020::{FastCDC, Normalization};
use std::collections::HashSet;
use std::fs;
use std::io::Write;
use std::time::Instant;

const SEED: u64 = 0x6361_6972_6e5f_7631; // "cairn_v1" - fixed per-repo seed stand-in
const KIB: u32 = 1024;
const MIB: u32 = 1024 * 1024;
const META_BYTES_PER_CHUNK: f64 = 80.0;

fn candidates() -> Vec<(&'static str, u32, u32, u32)> {
    let mut v = Vec::new();
    // Diagnostic (non-candidate) small sizes, only with DIAG=1, to show where dedup starts.
    if std::env::var("DIAG").is_ok() {
        v.push(("(diag) 2K/8K/32K", 2 * KIB, 8 * KIB, 32 * KIB));
        v.push(("(diag) 16K/64K/256K", 16 * KIB, 64 * KIB, 256 * KIB));
    }
    v.extend([
        ("64K/256K/1M", 64 * KIB, 256 * KIB, MIB),
        ("128K/512K/2M", 128 * KIB, 512 * KIB, 2 * MIB),
        ("256K/1M/4M", 256 * KIB, MIB, 4 * MIB),
        ("512K/1M/8M", 512 * KIB, MIB, 8 * MIB),
        ("512K/2M/8M", 512 * KIB, 2 * MIB, 8 * MIB),
    ]);
    v
}

fn chunker(data: &[u8], min: u32, avg: u32, max: u32) -> FastCDC<'_> {
    FastCDC::with_level_and_seed(data, min, avg, max, Normalization::Level1, SEED)
}

fn chunk_ids(data: &[u8], min: u32, avg: u32, max: u32) -> Vec<(usize, usize, [u8; 32])> {
    chunker(data, min, avg, max)
        .map(|c| {
            let h = blake3::hash(&data[c.offset..c.offset + c.length]);
            (c.offset, c.length, *h.as_bytes())
        })
        .collect()
}

/// Split a file into segments to chunk independently. With PER_FILE=1 the input
/// is read as a (GNU/ustar) tar and each regular member's content is one segment,
/// which models a backup tool that walks a directory tree and chunks each file
/// separately. Otherwise the whole file is one segment (a tarball/dump as a stream).
fn segments(data: &[u8]) -> Vec<(usize, usize)> {
    if std::env::var("PER_FILE").is_err() {
        return vec![(0, data.len())];
    }
    let mut v = Vec::new();
    let mut off = 0usize;
    while off + 512 <= data.len() {
        let h = &data[off..off + 512];
        if h.iter().all(|&b| b == 0) {
            break;
        }
        let sz_field = std::str::from_utf8(&h[124..136]).unwrap();
        let sz = usize::from_str_radix(sz_field.trim_matches(|c: char| c == '\0' || c == ' '), 8).unwrap_or(0);
        let typ = h[156];
        let body = off + 512;
        if (typ == b'0' || typ == 0) && sz > 0 {
            v.push((body, sz));
        }
        off = body + sz.div_ceil(512) * 512;
    }
    v
}

fn chunk_all(data: &[u8], segs: &[(usize, usize)], min: u32, avg: u32, max: u32) -> Vec<(usize, usize, [u8; 32])> {
    let mut out = Vec::new();
    for &(s, l) in segs {
        for (o, len, h) in chunk_ids(&data[s..s + l], min, avg, max) {
            out.push((s + o, len, h));
        }
    }
    out
}

fn mb(x: f64) -> f64 {
    x / 1e6
}

fn cmd_chunk(old_path: &str, new_path: &str, label: &str) {
    let old = fs::read(old_path).expect("read old");
    let new = fs::read(new_path).expect("read new");
    let oseg = segments(&old);
    let nseg = segments(&new);
    let nlen: f64 = nseg.iter().map(|s| s.1 as f64).sum();
    println!("segments: old={} new={} (PER_FILE={})", oseg.len(), nseg.len(), std::env::var("PER_FILE").is_ok());
    println!(
        "## {label}: old={} ({:.1} MB), new={} ({:.1} MB)\n",
        old_path,
        mb(old.len() as f64),
        new_path,
        mb(nlen)
    );
    // zstd-3 of the whole new file (chunk-wise), for reference of compressibility
    println!("| params (min/avg/max) | chunks (new) | mean chunk | chunks at max | new-chunk bytes | % of new | new chunks | new bytes zstd-3 | meta (chunks x 80 B) | meta % | chunking MB/s (noisy, under load) |");
    println!("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|");
    for (name, min, avg, max) in candidates() {
        // throughput: cut points only (no hashing), on the new file
        let t = Instant::now();
        let mut n = 0usize;
        let mut s = 0usize;
        for &(so, sl) in &nseg {
            for c in chunker(&new[so..so + sl], min, avg, max) {
                n += 1;
                s += c.length;
            }
        }
        let secs = t.elapsed().as_secs_f64();
        assert_eq!(s as f64, nlen);
        let _ = n;
        let thr = mb(nlen) / secs;

        let old_ids: HashSet<[u8; 32]> = chunk_all(&old, &oseg, min, avg, max)
            .into_iter()
            .map(|(_, _, h)| h)
            .collect();
        let new_chunks = chunk_all(&new, &nseg, min, avg, max);
        let mut seen: HashSet<[u8; 32]> = HashSet::new();
        let mut new_bytes = 0usize;
        let mut new_cnt = 0usize;
        let mut zsz = 0usize;
        let mut at_max = 0usize;
        for (off, len, h) in &new_chunks {
            if *len == max as usize {
                at_max += 1;
            }
            if old_ids.contains(h) || !seen.insert(*h) {
                continue;
            }
            new_bytes += len;
            new_cnt += 1;
            let z = zstd::bulk::compress(&new[*off..off + len], 3).expect("zstd");
            zsz += z.len();
        }
        let cnt = new_chunks.len();
        let meta = cnt as f64 * META_BYTES_PER_CHUNK;
        println!(
            "| {name} | {cnt} | {:.0} KiB | {at_max} | {:.2} MB | {:.2}% | {new_cnt} | {:.2} MB | {:.1} KB | {:.4}% | {:.0} |",
            nlen / cnt as f64 / 1024.0,
            mb(new_bytes as f64),
            100.0 * new_bytes as f64 / nlen,
            mb(zsz as f64),
            meta / 1e3,
            100.0 * meta / nlen,
            thr
        );
    }
    println!();
}

fn cmd_pack(dir: &str, pack_mib: usize, total_mib: usize) {
    fs::create_dir_all(dir).unwrap();
    // incompressible-ish payload (xorshift), built once
    let size = pack_mib * 1024 * 1024;
    let mut buf = vec![0u8; size];
    let mut x: u64 = 0x9E37_79B9_7F4A_7C15;
    for b in buf.chunks_mut(8) {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        let bytes = x.to_le_bytes();
        b.copy_from_slice(&bytes[..b.len()]);
    }
    let n = total_mib / pack_mib;
    let dirf = fs::File::open(dir).unwrap();
    let t = Instant::now();
    for i in 0..n {
        buf[0] = i as u8; // make each pack distinct
        let tmp = format!("{dir}/pack-{i:06}.tmp");
        let fin = format!("{dir}/pack-{i:06}");
        let mut f = fs::File::create(&tmp).unwrap();
        f.write_all(&buf).unwrap();
        f.sync_all().unwrap();
        drop(f);
        fs::rename(&tmp, &fin).unwrap();
        dirf.sync_all().unwrap();
    }
    let secs = t.elapsed().as_secs_f64();
    let total = (n * size) as f64;
    let packs_per_tb = 1e12 / size as f64;
    println!(
        "| {pack_mib} MiB | {n} | {:.2} s | {:.1} | {:.0} | {:.0} |",
        secs,
        n as f64 / secs,
        total / 1e6 / secs,
        packs_per_tb
    );
    for i in 0..n {
        let _ = fs::remove_file(format!("{dir}/pack-{i:06}"));
    }
}

fn main() {
    let a: Vec<String> = std::env::args().collect();
    match a.get(1).map(|s| s.as_str()) {
        Some("chunk") => cmd_chunk(&a[2], &a[3], &a[4]),
        Some("pack") => cmd_pack(&a[2], a[3].parse().unwrap(), a[4].parse().unwrap()),
        _ => {
            eprintln!("usage: chunk-measure chunk <old> <new> <label> | pack <dir> <pack_mib> <total_mib>");
            std::process::exit(2);
        }
    }
}
