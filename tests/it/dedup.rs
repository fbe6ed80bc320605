//! Deduplication, change detection and the index cache.

use crate::common::*;
use std::path::{Path, PathBuf};

/// ~`total` bytes of varied files (text and noise, several sizes) in a
/// nested tree. Returns the number of files.
fn make_varied_tree(root: &Path, total: usize, seed: u64) -> u64 {
    let mut rng = Rng::new(seed);
    let mut written = 0usize;
    let mut files = 0u64;
    while written < total {
        let size = match rng.below(4) {
            0 => 1 + rng.below(4096) as usize,
            1 => 50_000 + rng.below(200_000) as usize,
            _ => 500_000 + rng.below(2_000_000) as usize,
        }
        .min(total - written + 1);
        let data = if rng.below(3) == 0 {
            random_bytes(seed * 1000 + files, size)
        } else {
            sql_bytes(seed * 1000 + files, size)
        };
        let dir = root
            .join(format!("d{}", files % 5))
            .join(format!("e{}", files % 3));
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join(format!("f{files}.dat")), &data).unwrap();
        written += size;
        files += 1;
    }
    files
}

fn source_bytes(root: &Path) -> u64 {
    walk_files(root)
        .iter()
        .map(|(_, p)| std::fs::metadata(p).unwrap().len())
        .sum()
}

fn assert_adds_under_one_percent(
    t: &TestRepo,
    summary: &serde_json::Value,
    size: u64,
    packs_before: u64,
    what: &str,
) {
    let grown = t.pack_bytes() - packs_before;
    let limit = size / 100;
    assert!(
        num(summary, "data_added") < limit,
        "{what}: data_added not under 1% of {size}: {summary}"
    );
    assert!(
        num(summary, "data_added_packed") < limit,
        "{what}: data_added_packed not under 1% of {size}: {summary}"
    );
    assert!(
        grown < limit,
        "{what}: packs on disk grew by {grown} bytes (limit {limit}): {summary}"
    );
}

#[test]
fn second_backup_of_unchanged_data_adds_under_one_percent() {
    let t = TestRepo::new();
    let src = t.path("src");
    let files = make_varied_tree(&src, 30 << 20, 5);
    let size = source_bytes(&src);

    let first = t.backup_json(&[&src]);
    assert_eq!(num(&first, "files_new"), files, "{first}");
    let packs_before = t.pack_bytes();
    assert!(
        packs_before > size / 4,
        "first backup stored only {packs_before} bytes of {size}"
    );

    let second = t.backup_json(&[&src]);
    assert_eq!(num(&second, "files_new"), 0, "{second}");
    assert_eq!(num(&second, "files_changed"), 0, "{second}");
    assert_eq!(num(&second, "files_unmodified"), files, "{second}");
    assert_eq!(
        second["parent"], first["snapshot_id"],
        "second backup should use the first as parent"
    );
    assert_adds_under_one_percent(&t, &second, size, packs_before, "directory");

    // Re-reading everything (--force) still dedups.
    let packs_before = t.pack_bytes();
    let forced = t.backup_json(&[src.as_os_str(), "--force".as_ref()]);
    assert_eq!(
        num(&forced, "files_unmodified"),
        0,
        "--force must re-read: {forced}"
    );
    assert_eq!(num(&forced, "total_bytes_processed"), size, "{forced}");
    assert_adds_under_one_percent(&t, &forced, size, packs_before, "directory --force");

    // The same 30 MB stream twice.
    let len = 30u64 << 20;
    let packs_before = t.pack_bytes();
    let s1 = t.backup_stdin_json("dump.sql", &[], &mut SqlStream::new(99, len));
    assert!(num(&s1, "data_added") >= len * 9 / 10, "{s1}");
    assert!(
        t.pack_bytes() - packs_before > len / 20,
        "first stream stored too little"
    );
    let packs_before = t.pack_bytes();
    let s2 = t.backup_stdin_json("dump.sql", &[], &mut SqlStream::new(99, len));
    assert_eq!(num(&s2, "total_bytes_processed"), len, "{s2}");
    assert_adds_under_one_percent(&t, &s2, len, packs_before, "stdin");
}

/// `data_added_packed` is documented as the bytes this backup added to pack
/// files: it must match what appeared on disk (not just pack overhead).
#[test]
fn data_added_packed_counts_the_pack_bytes_written() {
    let t = TestRepo::new();
    let src = t.path("src");
    std::fs::write(src.join("noise.bin"), random_bytes(8, 4 << 20)).unwrap();
    std::fs::write(src.join("text.sql"), sql_bytes(9, 4 << 20)).unwrap();
    let before = t.pack_bytes();
    let s = t.backup_json(&[&src]);
    let grown = t.pack_bytes() - before;
    let packed = num(&s, "data_added_packed");
    assert!(num(&s, "data_added") >= 8 << 20, "{s}");
    assert!(
        packed <= grown && packed >= grown * 9 / 10,
        "data_added_packed = {packed}, but packs on disk grew by {grown}: {s}"
    );
}

#[test]
fn changed_file_with_same_size_and_mtime_is_reread() {
    let t = TestRepo::new();
    let src = t.path("src");
    let file = src.join("data.txt");
    std::fs::write(&file, b"original content, version one\n").unwrap();
    std::fs::write(src.join("other.txt"), b"unchanged\n").unwrap();
    run_tool(
        "touch",
        &[
            "-d".as_ref(),
            "@1500000000.123456789".as_ref(),
            file.as_os_str(),
        ],
    );
    let before = std::fs::metadata(&file).unwrap();

    let first = t.backup_json(&[&src]);
    assert_eq!(num(&first, "files_new"), 2, "{first}");

    // Same size, same mtime, different bytes; rewritten in place.
    std::thread::sleep(std::time::Duration::from_millis(20));
    {
        use std::io::Write;
        let mut f = std::fs::OpenOptions::new().write(true).open(&file).unwrap();
        f.write_all(b"ORIGINAL CONTENT, VERSION TWO\n").unwrap();
    }
    run_tool(
        "touch",
        &[
            "-d".as_ref(),
            "@1500000000.123456789".as_ref(),
            file.as_os_str(),
        ],
    );
    let after = std::fs::metadata(&file).unwrap();
    {
        use std::os::unix::fs::MetadataExt;
        assert_eq!(before.len(), after.len());
        assert_eq!(
            (before.mtime(), before.mtime_nsec()),
            (after.mtime(), after.mtime_nsec())
        );
        assert_ne!(
            (before.ctime(), before.ctime_nsec()),
            (after.ctime(), after.ctime_nsec()),
            "ctime did not change"
        );
    }

    let second = t.backup_json(&[&src]);
    assert!(
        num(&second, "files_changed") >= 1,
        "the rewritten file was not re-read: {second}"
    );
    assert_eq!(num(&second, "files_unmodified"), 1, "{second}");
    let dumped = t.ok_bytes(&["dump", "latest", &format!("{}/data.txt", path_str(&src))]);
    assert_eq!(dumped, b"ORIGINAL CONTENT, VERSION TWO\n");
    let target = t.restore(&format!("latest:{}", path_str(&src)), "restored");
    assert_eq!(
        std::fs::read(target.join("data.txt")).unwrap(),
        b"ORIGINAL CONTENT, VERSION TWO\n"
    );
    assert_trees_equal(&src, &target);
}

#[test]
fn deleted_cache_is_rebuilt() {
    let t = TestRepo::new();
    let src = t.path("src");
    make_varied_tree(&src, 8 << 20, 13);
    let size = source_bytes(&src);
    t.backup_json(&[&src]);
    assert!(
        t.cache.is_dir(),
        "cache dir was not created at {}",
        t.cache.display()
    );

    std::fs::remove_dir_all(&t.cache).unwrap();
    let target = t.restore(&format!("latest:{}", path_str(&src)), "restored");
    assert_trees_equal(&src, &target);

    std::fs::remove_dir_all(&t.cache).unwrap();
    let before = t.pack_bytes();
    let again = t.backup_json(&[&src]);
    assert_adds_under_one_percent(&t, &again, size, before, "after cache deletion");

    std::fs::remove_dir_all(&t.cache).unwrap();
    let before = t.pack_bytes();
    let forced = t.backup_json(&[src.as_os_str(), "--force".as_ref()]);
    assert_eq!(num(&forced, "total_bytes_processed"), size, "{forced}");
    assert_adds_under_one_percent(&t, &forced, size, before, "--force after cache deletion");

    let target2: PathBuf = t.restore(&format!("latest:{}", path_str(&src)), "restored2");
    assert_trees_equal(&src, &target2);
}

/// A changed large file is chunked with its parent version as a guide.
/// Guided cuts must be exactly FastCDC's: a `--force` backup (no parent) of
/// the same tree then adds no data blob, and the file restores exactly.
#[test]
fn changed_large_file_is_guided_to_the_same_chunks() {
    let t = TestRepo::uninitialised();
    let mut init = FAST_KDF.to_vec();
    init.extend_from_slice(&["--chunk-sizes", "4,16,64"]);
    t.init(&init);
    let src = t.path("src");
    std::fs::create_dir_all(&src).unwrap();
    let file = src.join("table.dat");
    let mut bytes = sql_bytes(7, 12 << 20);
    std::fs::write(&file, &bytes).unwrap();
    let first = t.backup_json(&[path_str(&src)]);
    bytes.splice(3_000_000..3_000_000, b"a new row\n".iter().copied());
    bytes.drain(9_000_000..9_004_000);
    std::fs::write(&file, &bytes).unwrap();
    let second = t.backup_json(&[path_str(&src)]);
    assert_eq!(second["parent"], first["snapshot_id"], "{second}");
    assert_eq!(num(&second, "files_changed"), 1, "{second}");
    let added = num(&second, "data_blobs");
    assert!(
        added > 0 && added < 20,
        "only the chunks around the two edits are new: {second}"
    );
    let forced = t.backup_json(&["--force", path_str(&src)]);
    assert_eq!(
        num(&forced, "data_blobs"),
        0,
        "unguided chunking found chunks the guided backup did not store: {forced}"
    );
    let id = second["snapshot_id"].as_str().unwrap();
    let out = t.restore(id, "out");
    let restored =
        std::fs::read(out.join(src.strip_prefix("/").unwrap()).join("table.dat")).unwrap();
    assert!(restored == bytes, "restored file differs");
}

/// A backup trusts its parent's unchanged files only while their blobs are
/// indexed. After `repair index` dropped a lost pack, the files whose blobs
/// were in it are read and stored again, even though their metadata did not
/// change (and even though an earlier backup had marked the parent's blobs
/// as all indexed in the cache: that mark must go with the lost entries).
#[test]
fn unchanged_files_whose_blobs_were_lost_are_read_again() {
    let t = TestRepo::new();
    let src = t.path("src");
    std::fs::write(src.join("a.bin"), random_bytes(31, 300_000)).unwrap();
    std::fs::write(src.join("b.bin"), random_bytes(32, 300_000)).unwrap();
    t.backup_json(&[path_str(&src)]);
    let second = t.backup_json(&[path_str(&src)]);
    assert_eq!(num(&second, "files_unmodified"), 2, "{second}");

    // Lose the data pack (the largest; the tree pack is small), then let
    // repair rebuild the index without it.
    let packs = walk(&t.repo.join("packs"));
    let data_pack = packs
        .values()
        .filter(|p| p.is_file())
        .max_by_key(|p| std::fs::metadata(p).unwrap().len())
        .unwrap();
    std::fs::remove_file(data_pack).unwrap();
    t.ok(&["repair", "index"]);

    let third = t.backup_json(&[path_str(&src)]);
    assert_eq!(num(&third, "files_unmodified"), 0, "{third}");
    assert!(
        num(&third, "data_blobs") >= 2,
        "the lost blobs are stored again: {third}"
    );
    let id = third["snapshot_id"].as_str().unwrap();
    let out = t.restore(&format!("{id}:{}", path_str(&src)), "out");
    assert_trees_equal(&src, &out);
}
