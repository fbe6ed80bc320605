//! Writes realistic seed inputs for every fuzz target into
//! `<dir>/<target>/` (default dir: `fuzz/corpus`), using cairn's own encoders
//! and the fixed fuzz key, so sealed seeds open in the targets.
//!
//! Usage: make_seeds [DIR]

use cairn::format::chunker::ChunkerParams;
use cairn::format::config::{Config, PACK_SIZE_TARGET_DEFAULT};
use cairn::format::crypto::Domain;
use cairn::format::id::{BlobId, Id, IndexId, PackId, SnapshotId};
use cairn::format::index_file::{IndexFile, IndexPack};
use cairn::format::key::KeyFile;
use cairn::storage::lock::LockInfo;
use cairn::format::pack::{encode_header, seal_blob, BlobKind, PackBuilder, PackEntry};
use cairn::format::snapshot::{Snapshot, SourceKind, Summary};
use cairn::format::tree::{Bytes, Node, NodeKind, Tree, Xattr};
use cairn_fuzz::{
    blob_mode, fuzz_key, pack_mode, pseudo_random, Output, KEY_PASSWORD, TINY_KDF, ZSTD_LEVEL,
};
use chrono::DateTime;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::Command;

fn main() {
    let dir: PathBuf = std::env::args_os()
        .nth(1)
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("corpus"));
    let mut seeds = Seeds { dir, count: 0 };
    pack_header(&mut seeds);
    index_file(&mut seeds);
    snapshot(&mut seeds);
    tree(&mut seeds);
    key_file(&mut seeds);
    config(&mut seeds);
    lock(&mut seeds);
    blob_open(&mut seeds);
    chunker(&mut seeds);
    tar_import(&mut seeds);
    drill_record(&mut seeds);
    manifest(&mut seeds);
    println!("make_seeds: wrote {} seeds under {}", seeds.count, seeds.dir.display());
}

struct Seeds {
    dir: PathBuf,
    count: usize,
}

impl Seeds {
    fn put(&mut self, target: &str, name: &str, bytes: &[u8]) {
        let dir = self.dir.join(target);
        std::fs::create_dir_all(&dir).unwrap_or_else(|e| panic!("create {}: {e}", dir.display()));
        let path = dir.join(format!("seed-{name}"));
        std::fs::write(&path, bytes).unwrap_or_else(|e| panic!("write {}: {e}", path.display()));
        self.count += 1;
    }
}

/// Sample blob plaintexts: empty, compressible text, incompressible bytes,
/// and an encoded tree.
fn sample_blobs() -> Vec<(BlobKind, Vec<u8>)> {
    vec![
        (BlobKind::Data, Vec::new()),
        (BlobKind::Data, b"hello cairn ".repeat(40)),
        (BlobKind::Data, pseudo_random(300, 42)),
        (BlobKind::Tree, sample_tree().encode()),
    ]
}

fn sample_pack(blobs: &[(BlobKind, Vec<u8>)]) -> (Vec<u8>, Vec<PackEntry>) {
    let key = fuzz_key();
    let mut builder = PackBuilder::new();
    for (kind, plain) in blobs {
        builder.add(seal_blob(&key, *kind, key.blob_id(plain), plain, ZSTD_LEVEL));
    }
    let (_, bytes, entries) = builder.finish(&key);
    (bytes, entries)
}

fn pack_header(s: &mut Seeds) {
    let blobs = sample_blobs();
    for (name, blobs) in [("empty", &blobs[..0]), ("one", &blobs[1..2]), ("mixed", &blobs[..])] {
        let (pack, entries) = sample_pack(blobs);
        let data_len: u64 = entries.iter().map(|e| u64::from(e.length)).sum();
        let mut plain = Output::default();
        plain.u8(pack_mode::PLAIN).u64(data_len).bytes(&encode_header(&entries));
        s.put("pack_header", &format!("plain-{name}"), &plain.0);
        let mut whole = Output::default();
        whole.u8(pack_mode::WHOLE).bytes(&pack);
        s.put("pack_header", &format!("whole-{name}"), &whole.0);
    }
    // Structured: blobs, then a flip in a blob, a flip in the header, a cut.
    for (name, op, amount) in [("flip-blob", 0x03u8, 5u32), ("flip-header", 0x81, 100_000), ("cut", 0x00, 3)] {
        let mut o = Output::default();
        o.u8(pack_mode::BUILD).u8(blobs.len() as u8);
        for (kind, plain) in &blobs {
            let plain = &plain[..plain.len().min(2000)];
            o.u8(*kind as u8).u16(plain.len() as u16).bytes(plain);
        }
        o.u8(op).u32(amount);
        s.put("pack_header", &format!("build-{name}"), &o.0);
    }
}

fn sample_entry(i: u8, offset: u32, zstd: bool) -> PackEntry {
    PackEntry {
        kind: if i % 2 == 0 { BlobKind::Data } else { BlobKind::Tree },
        codec: if zstd { cairn::format::pack::Codec::Zstd } else { cairn::format::pack::Codec::Raw },
        id: BlobId(Id([i; 32])),
        offset,
        length: 41 + u32::from(i) * 10,
        raw_length: u32::from(i) * 7,
    }
}

fn index_file(s: &mut Seeds) {
    s.put("index_file", "empty", &IndexFile::default().encode());
    let (_, entries) = sample_pack(&sample_blobs());
    let file = IndexFile {
        supersedes: vec![IndexId(Id([1; 32])), IndexId(Id([2; 32]))],
        marked_at: None,
        packs: vec![
            IndexPack { id: PackId(Id([3; 32])), entries },
            IndexPack { id: PackId(Id([4; 32])), entries: vec![sample_entry(5, 0, true), sample_entry(6, 91, false)] },
            IndexPack { id: PackId(Id([5; 32])), entries: Vec::new() },
        ],
    };
    s.put("index_file", "packs", &file.encode());
    // A prune's mark file (two-phase delete): the same packs, marked.
    let marked = IndexFile { supersedes: Vec::new(), marked_at: Some(1_764_000_000_000), ..file };
    s.put("index_file", "marked", &marked.encode());
}

fn sample_snapshot() -> Snapshot {
    Snapshot {
        version: cairn::format::snapshot::SNAPSHOT_VERSION,
        time: DateTime::parse_from_rfc3339("2026-03-14T01:59:26.535897932+02:00").unwrap(),
        parent: Some(SnapshotId(Id([9; 32]))),
        original: None,
        tree: BlobId(Id([8; 32])),
        paths: vec!["/srv/data".into(), "/etc".into()],
        hostname: "backup-host".into(),
        username: "root".into(),
        uid: 0,
        gid: 0,
        tags: vec!["nightly".into(), "db:pg".into()],
        program_version: "cairn 0.1.0".into(),
        source: SourceKind::Directory,
        command: None,
        summary: Summary {
            backup_start: "2026-03-14T01:59:26+02:00".into(),
            backup_end: "2026-03-14T02:03:01+02:00".into(),
            duration_seconds: 215.125,
            files_new: 12,
            files_changed: 3,
            files_unmodified: 4000,
            files_unreadable: 1,
            dirs_new: 2,
            dirs_changed: 1,
            dirs_unmodified: 300,
            data_blobs: 20,
            tree_blobs: 5,
            data_added: 1 << 20,
            data_added_packed: 700_000,
            total_files_processed: 4016,
            total_bytes_processed: 1 << 33,
        },
    }
}

fn snapshot(s: &mut Seeds) {
    let full = sample_snapshot();
    s.put("snapshot", "full", &full.encode());
    let mut stdin = full.clone();
    stdin.parent = None;
    stdin.tags.clear();
    stdin.paths = vec!["/dump.sql".into()];
    stdin.source = SourceKind::Stdin;
    stdin.time = DateTime::parse_from_rfc3339("1969-12-31T23:59:59Z").unwrap();
    stdin.summary = Summary::default();
    s.put("snapshot", "stdin", &stdin.encode());
    // Compact (not pretty) JSON also decodes.
    s.put("snapshot", "compact", &serde_json::to_vec(&full).unwrap());
    // A duration as the archiver measures it: 17 significant digits.
    let mut measured = full.clone();
    measured.summary.duration_seconds = std::time::Duration::new(7, 595_042_302).as_secs_f64();
    s.put("snapshot", "measured-duration", &serde_json::to_vec(&measured).unwrap());
}

fn sample_tree() -> Tree {
    let mut file = Node::new(b"file.txt", NodeKind::File);
    file.content = vec![BlobId(Id([1; 32])), BlobId(Id([2; 32]))];
    file.size = 12345;
    file.mtime_ns = 1_700_000_000_123_456_789;
    file.ctime_ns = -5;
    file.user = Some("alice".into());
    file.group = Some("staff".into());
    file.xattrs = vec![
        Xattr { name: Bytes(b"user.comment".to_vec()), value: hex::encode(b"hi") },
        Xattr { name: Bytes(vec![0xff, b'x']), value: String::new() },
    ];
    let mut dir = Node::new(b"dir", NodeKind::Dir);
    dir.subtree = Some(BlobId(Id([3; 32])));
    let mut link = Node::new(&[0xc3, 0x28, b'l'], NodeKind::Symlink);
    link.link_target = Some(Bytes(vec![0xff, b'/', b'x']));
    let mut dev = Node::new(b"null", NodeKind::Chardev);
    dev.rdev = 0x103;
    Tree::new(vec![file, dir, link, dev, Node::new(b"fifo", NodeKind::Fifo)])
}

fn tree(s: &mut Seeds) {
    s.put("tree", "empty", &Tree::new(Vec::new()).encode());
    s.put("tree", "nodes", &sample_tree().encode());
    s.put("tree", "pretty", &serde_json::to_vec_pretty(&sample_tree()).unwrap());
}

fn key_file(s: &mut Seeds) {
    let file = KeyFile::create(&fuzz_key(), KEY_PASSWORD, TINY_KDF, "host", "user").expect("key file");
    assert_eq!(file.open(KEY_PASSWORD).expect("seed key opens").secret(), fuzz_key().secret());
    s.put("key_file", "tiny-kdf", &file.encode());
    let mut big = file.clone();
    big.kdf_params = cairn::KdfParams::DEFAULT;
    s.put("key_file", "default-kdf", &big.encode());
}

fn config(s: &mut Seeds) {
    s.put("config", "default", &Config::new(ChunkerParams::DEFAULT, 3, PACK_SIZE_TARGET_DEFAULT).encode());
    let small = ChunkerParams { size_min: 256, size_avg: 1024, size_max: 4096 };
    s.put("config", "small", &Config::new(small, -7, 1024 * 1024).encode());
}

fn lock(s: &mut Seeds) {
    let info = LockInfo {
        time: DateTime::parse_from_rfc3339("2026-03-14T01:59:26.5+02:00").unwrap(),
        exclusive: true,
        hostname: "backup-host".into(),
        username: "root".into(),
        pid: 4242,
        started: Some(DateTime::parse_from_rfc3339("2026-03-14T01:29:26.5+02:00").unwrap()),
        prune: false,
    };
    s.put("lock", "exclusive", &serde_json::to_vec(&info).unwrap());
    let shared = LockInfo { exclusive: false, pid: u32::MAX, ..info };
    s.put("lock", "shared", &serde_json::to_vec_pretty(&shared).unwrap());
    let prune = LockInfo { exclusive: false, prune: true, started: None, ..shared };
    s.put("lock", "prune", &serde_json::to_vec(&prune).unwrap());
}

fn blob_open(s: &mut Seeds) {
    let key = fuzz_key();
    for (i, (kind, plain)) in sample_blobs().iter().enumerate() {
        let blob = seal_blob(&key, *kind, key.blob_id(plain), plain, ZSTD_LEVEL);
        let entry = PackEntry {
            kind: blob.kind,
            codec: blob.codec,
            id: blob.id,
            offset: 0,
            length: blob.bytes.len() as u32,
            raw_length: blob.raw_length,
        };
        assert_eq!(&cairn::format::pack::open_blob(&key, &entry, &blob.bytes).expect("seed blob opens"), plain);
        let mut o = Output::default();
        o.u8(blob_mode::RAW);
        entry.encode_into(&mut o.0);
        o.bytes(&blob.bytes);
        s.put("blob_open", &format!("raw-{i}"), &o.0);

        // Structured: the same plaintext, no damage / one flip / entry damage.
        let plain = &plain[..plain.len().min(4000)];
        for (name, flips, fields) in [("clean", 0u8, 0u8), ("flip", 1, 0), ("fields", 0, 0b1_1111)] {
            let mut o = Output::default();
            o.u8(blob_mode::SEAL).u8(*kind as u8).u16(plain.len() as u16).bytes(plain);
            o.u8(flips);
            for _ in 0..flips {
                o.u32(30).u8(0x10);
            }
            o.u8(fields).u8(3).u8(5).u8(9).u8(4);
            s.put("blob_open", &format!("seal-{i}-{name}"), &o.0);
        }
    }
    // Sealed with another domain: must not open as a blob.
    let mut o = Output::default();
    o.u8(blob_mode::RAW | 2);
    let sealed = key.seal(Domain::Snapshot, b"not a blob");
    PackEntry {
        kind: BlobKind::Data,
        codec: cairn::format::pack::Codec::Raw,
        id: key.blob_id(b"not a blob"),
        offset: 0,
        length: sealed.len() as u32,
        raw_length: 10,
    }
    .encode_into(&mut o.0);
    o.bytes(&sealed);
    s.put("blob_open", "other-domain", &o.0);
}

fn chunker(s: &mut Seeds) {
    // Small params, input bytes.
    let mut o = Output::default();
    o.u8(0).u16(192).u16(768).u16(3072).u64(7).u32(1500).u16(700);
    o.bytes(&pseudo_random(6000, 99));
    s.put("chunker", "small-bytes", &o.0);
    // Small params, generated input.
    let mut o = Output::default();
    o.u8(2).u16(0).u16(0).u16(0).u64(1).u32(77_777).u16(4000).u16(50_000).u64(12345);
    s.put("chunker", "small-generated", &o.0);
    // Default params through the raw u32 mode, generated input.
    let d = ChunkerParams::DEFAULT;
    let mut o = Output::default();
    o.u8(3).u32(d.size_min).u32(d.size_avg).u32(d.size_max).u64(5).u32(100_000).u16(9000).u16(65_535).u64(3);
    s.put("chunker", "default-generated", &o.0);
    // Zeros: no content-defined cuts, only max-size ones.
    let mut o = Output::default();
    o.u8(0).u16(0).u16(0).u16(0).u64(0).u32(3000).u16(100);
    o.bytes(&[0u8; 5000]);
    s.put("chunker", "zeros", &o.0);
}

/// Tarballs: made with the tar crate (always), and with GNU tar when it is
/// installed (old GNU and PAX 0.1/1.0 sparse members, as `tar -S` writes
/// them); plain and compressed every way `import-tar` detects.
fn tar_import(s: &mut Seeds) {
    let plain = crate_tarball();
    s.put("tar_import", "crate-plain", &plain);
    for (name, bytes) in compressed(&plain) {
        s.put("tar_import", &format!("crate-{name}"), &bytes);
    }
    s.put("tar_import", "pax-sparse-1.0", &pax_sparse_tarball());
    match gnu_tarballs() {
        Ok(tarballs) => {
            for (name, bytes) in tarballs {
                s.put("tar_import", &format!("gnutar-{name}"), &bytes);
                if name == "gnu-sparse" {
                    for (how, packed) in compressed(&bytes) {
                        s.put("tar_import", &format!("gnutar-{name}-{how}"), &packed);
                    }
                }
            }
        }
        Err(e) => eprintln!("make_seeds: no GNU tar seeds for tar_import ({e})"),
    }
}

fn compressed(plain: &[u8]) -> Vec<(&'static str, Vec<u8>)> {
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    gz.write_all(plain).unwrap();
    let mut xz = xz2::write::XzEncoder::new(Vec::new(), 1);
    xz.write_all(plain).unwrap();
    let mut bz = bzip2::write::BzEncoder::new(Vec::new(), bzip2::Compression::fast());
    bz.write_all(plain).unwrap();
    vec![
        ("gzip", gz.finish().unwrap()),
        ("zstd", zstd::encode_all(plain, 1).unwrap()),
        ("xz", xz.finish().unwrap()),
        ("bzip2", bz.finish().unwrap()),
    ]
}

fn header(kind: tar::EntryType, mode: u32, size: u64) -> tar::Header {
    let mut h = tar::Header::new_gnu();
    h.set_entry_type(kind);
    h.set_mode(mode);
    h.set_uid(1000);
    h.set_gid(1000);
    h.set_mtime(1_767_225_600);
    h.set_size(size);
    h
}

/// Every member type, a GNU long name and link, PAX mtime and xattrs.
fn crate_tarball() -> Vec<u8> {
    let mut b = tar::Builder::new(Vec::new());
    let mut h = header(tar::EntryType::Directory, 0o755, 0);
    b.append_data(&mut h, "dir/", std::io::empty()).unwrap();
    let text = b"hello cairn\n".repeat(20);
    b.append_pax_extensions([
        ("mtime", &b"1767225600.123456789"[..]),
        ("SCHILY.xattr.user.note", &b"\x00\x01binary"[..]),
        ("uname", &b"alice"[..]),
    ])
    .unwrap();
    let mut h = header(tar::EntryType::Regular, 0o4755, text.len() as u64);
    b.append_data(&mut h, "dir/file.txt", &text[..]).unwrap();
    let mut h = header(tar::EntryType::Regular, 0o644, 0);
    b.append_data(&mut h, "./empty", std::io::empty()).unwrap();
    let long = format!("{}/{}.txt", "d".repeat(90), "f".repeat(120));
    let mut h = header(tar::EntryType::Regular, 0o600, 5);
    b.append_data(&mut h, &long, &b"deep\n"[..]).unwrap();
    let mut h = header(tar::EntryType::Symlink, 0o777, 0);
    b.append_link(&mut h, "link", "dir/file.txt").unwrap();
    let mut h = header(tar::EntryType::Symlink, 0o777, 0);
    b.append_link(&mut h, "long-link", &long).unwrap();
    let mut h = header(tar::EntryType::Link, 0o644, 0);
    b.append_link(&mut h, "hard", "dir/file.txt").unwrap();
    let mut h = header(tar::EntryType::Link, 0o644, 0);
    b.append_link(&mut h, "hard-to-nothing", "missing").unwrap();
    let mut h = header(tar::EntryType::Char, 0o666, 0);
    h.set_device_major(1).unwrap();
    h.set_device_minor(3).unwrap();
    b.append_data(&mut h, "null", std::io::empty()).unwrap();
    let mut h = header(tar::EntryType::Fifo, 0o644, 0);
    b.append_data(&mut h, "fifo", std::io::empty()).unwrap();
    b.into_inner().unwrap()
}

/// A PAX 1.0 sparse member as GNU tar writes one: the map at the start of
/// the data, the real name and size in PAX records.
fn pax_sparse_tarball() -> Vec<u8> {
    let mut b = tar::Builder::new(Vec::new());
    b.append_pax_extensions([
        ("GNU.sparse.major", &b"1"[..]),
        ("GNU.sparse.minor", &b"0"[..]),
        ("GNU.sparse.name", &b"disk.img"[..]),
        ("GNU.sparse.realsize", &b"12"[..]),
    ])
    .unwrap();
    let mut data = b"2\n0\n3\n8\n2\n".to_vec();
    data.resize(512, 0);
    data.extend_from_slice(b"abcXY");
    let mut h = header(tar::EntryType::Regular, 0o644, data.len() as u64);
    b.append_data(&mut h, "GNUSparseFile.0/disk.img", &data[..]).unwrap();
    b.into_inner().unwrap()
}

/// Tarballs written by GNU tar of a small tree with a sparse file, a hard
/// link, a symlink and a long name.
fn gnu_tarballs() -> std::io::Result<Vec<(&'static str, Vec<u8>)>> {
    let dir = std::env::temp_dir().join(format!("cairn-tar-seeds-{}", std::process::id()));
    let tree = dir.join("tree");
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(tree.join("sub"))?;
    std::fs::write(tree.join("sub/a.txt"), b"some text\n".repeat(10))?;
    std::fs::hard_link(tree.join("sub/a.txt"), tree.join("hard.txt"))?;
    std::os::unix::fs::symlink("sub/a.txt", tree.join("link"))?;
    std::fs::write(tree.join(format!("{}.txt", "n".repeat(150))), b"long\n")?;
    let sparse = std::fs::File::create(tree.join("sparse.img"))?;
    sparse.set_len(64 << 10)?;
    std::os::unix::fs::FileExt::write_all_at(&sparse, b"head", 0)?;
    std::os::unix::fs::FileExt::write_all_at(&sparse, b"middle", 32 << 10)?;
    drop(sparse);
    let mut out = Vec::new();
    for (name, args) in [
        ("gnu", &["--format=gnu"][..]),
        ("gnu-sparse", &["--format=gnu", "-S"][..]),
        ("pax", &["--format=posix"][..]),
        ("pax-sparse-0.1", &["--format=posix", "-S", "--sparse-version=0.1"][..]),
        ("pax-sparse-1.0", &["--format=posix", "-S", "--sparse-version=1.0"][..]),
    ] {
        let file = dir.join(format!("{name}.tar"));
        let status = Command::new("tar")
            .args(args)
            .args(["-b", "1", "--sort=name", "--owner=0", "--group=0", "--numeric-owner"])
            .arg("-cf")
            .arg(&file)
            .arg("-C")
            .arg(&tree)
            .arg(".")
            .status()?;
        if !status.success() {
            return Err(std::io::Error::other(format!("tar {args:?} failed")));
        }
        out.push((name, std::fs::read(&file)?));
    }
    std::fs::remove_dir_all(&dir)?;
    Ok(out)
}

fn drill_record(s: &mut Seeds) {
    use cairn::format::drill::{DrillKind, DrillRecord, Figure, Verdict, DRILL_RECORD_VERSION};
    let passed = DrillRecord {
        version: DRILL_RECORD_VERSION,
        snapshot: SnapshotId(Id([7; 32])),
        source: "db1:/app.sql".into(),
        kind: DrillKind::Postgres,
        started: DateTime::parse_from_rfc3339("2026-12-01T03:00:00.5+01:00").unwrap(),
        restore_seconds: 12.5,
        verify_seconds: std::time::Duration::new(7, 595_042_302).as_secs_f64(),
        bytes: 1 << 30,
        figures: vec![
            Figure { name: "public.orders".into(), count: 100_000, sample: Some("9e107d9d372bb6826bd81d3542a419d6".into()) },
            Figure { name: "app/public.customers".into(), count: 20_000, sample: None },
        ],
        verdict: Verdict::Passed,
        failure: None,
    };
    s.put("drill_record", "passed", &passed.encode());
    let mut failed = passed.clone();
    failed.kind = DrillKind::Redis;
    failed.figures = vec![Figure { name: "db0 keys".into(), count: 0, sample: None }];
    failed.verdict = Verdict::Failed;
    failed.failure = Some("redis-check-rdb failed: [offset 313] Unexpected EOF reading RDB file".into());
    s.put("drill_record", "failed", &failed.encode());
}

fn manifest(s: &mut Seeds) {
    use cairn::format::audit::SigningKey;
    use cairn::format::id::{ManifestId, RepositoryId};
    use cairn::format::manifest::{Manifest, ManifestPack};
    let key = SigningKey::from_seed(&[3; 32]);
    let mut m = Manifest {
        repository: RepositoryId(Id([1; 32])),
        signer: key.public(),
        snapshot: SnapshotId(Id([7; 32])),
        time: 1_790_000_000,
        supersedes: vec![],
        packs: vec![
            ManifestPack { id: PackId(Id([2; 32])), size: 33_554_432, blobs: 40 },
            ManifestPack { id: PackId(Id([5; 32])), size: 4_096, blobs: 1 },
        ],
    };
    s.put("manifest", "signed", &m.encode(&key).unwrap());
    m.supersedes = vec![ManifestId(Id([8; 32]))];
    s.put("manifest", "replacement", &m.encode(&key).unwrap());
}
