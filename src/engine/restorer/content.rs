//! File content: a restored file's blobs written with holes, and `dump`,
//! which streams one file's content.

use crate::engine::repository::{BlobReader, Repository};
use crate::error::{Error, Result};
use crate::format::id::BlobId;
use crate::format::pack::BlobKind;
use crate::format::snapshot::Snapshot;
use crate::format::tree::{Node, NodeKind};
use rayon::prelude::*;
use std::fs::File;
use std::io::{IoSlice, Seek, SeekFrom, Write};

/// Blobs of one file read, decrypted, decompressed and verified at once:
/// enough to keep every core busy, few enough to bound memory (32 blobs of
/// at most 1 MiB with the default chunk sizes).
const READ_WINDOW_BLOBS: usize = 32;

/// The same for a remote backend, where each window is fetched as merged
/// ranged reads (`BlobReader`) and a larger one keeps `connections` reads
/// busy: 128 blobs of 64 KiB on average (8 MiB), at most 32 MiB with the
/// default chunk sizes, and the next window is fetched while one is written.
const REMOTE_WINDOW_BLOBS: usize = 128;

/// How many blobs of a file are read at once (see above).
pub(super) fn window_blobs(reader: &BlobReader<'_>) -> usize {
    if reader.remote() {
        REMOTE_WINDOW_BLOBS
    } else {
        READ_WINDOW_BLOBS
    }
}

/// Reads a window of blobs in parallel, in order.
fn read_window(repo: &Repository, window: &[BlobId]) -> Result<Vec<Vec<u8>>> {
    let reader = repo.blob_reader();
    if reader.remote() {
        return reader.read(BlobKind::Data, window);
    }
    if window.len() == 1 {
        return Ok(vec![repo.read_blob(BlobKind::Data, &window[0])?]);
    }
    window
        .par_iter()
        .map(|id| repo.read_blob(BlobKind::Data, id))
        .collect()
}

/// Writes a file whose blobs were all read already (a batch of small
/// files read together from a remote backend).
pub(super) fn write_read_content(
    repo: &Repository,
    blobs: &[Vec<u8>],
    file: &mut File,
) -> Result<u64> {
    write_sparse(file, blobs, 0)?;
    let written: u64 = blobs.iter().map(|b| b.len() as u64).sum();
    repo.context().progress().add_bytes(written);
    file.set_len(written)
        .map_err(|e| Error::io("cannot set length", e))?;
    Ok(written)
}

/// Writes a file's blobs in order, leaving all-zero blocks as holes; the
/// final `set_len` gives the file its length even if it ends in a hole.
/// Each window of blobs is read in parallel while the previous one is
/// written, so the disk writes overlap decryption and decompression.
pub(super) fn write_content(repo: &Repository, content: &[BlobId], file: &mut File) -> Result<u64> {
    let ctx = repo.context();
    let mut written = 0u64;
    let mut ready: Vec<Vec<u8>> = Vec::new();
    // `offset`: where in the file the window starts.
    let write_all = |file: &mut File, blobs: &[Vec<u8>], offset: u64| -> Result<u64> {
        write_sparse(file, blobs, offset)?;
        let n: u64 = blobs.iter().map(|b| b.len() as u64).sum();
        ctx.progress().add_bytes(n);
        Ok(n)
    };
    for window in content.chunks(window_blobs(&repo.blob_reader())) {
        ctx.check_interrupt()?;
        if ready.is_empty() {
            // The first window (most files have only one): nothing to
            // write alongside, and a `join` per small file costs more in
            // thread wake-ups than the file itself.
            ready = read_window(repo, window)?;
            continue;
        }
        let (read, wrote) = rayon::join(
            || read_window(repo, window),
            || write_all(file, &ready, written),
        );
        written += wrote?;
        ready = read?;
    }
    written += write_all(file, &ready, written)?;
    file.set_len(written)
        .map_err(|e| Error::io("cannot set length", e))?;
    Ok(written)
}

/// File-system block size assumed for holes: zero runs are skipped in
/// whole 4 KiB blocks, which is what ext4, XFS and tmpfs allocate.
const HOLE_BLOCK_LEN: usize = 4096;

/// Most slices handed to one `writev`: a window of 32 blobs has 32 runs
/// of data unless it holds holes; Linux takes up to 1024 (IOV_MAX).
const WRITE_SLICES_MAX: usize = 64;

/// Most bytes handed to one `writev`. ext4 sizes the page-cache folios it
/// allocates for a write by the write's length. With whole 2 MiB windows,
/// 4 of 7 restores on this VM took 0.5–1.3 s of system time instead of
/// 0.2 s: huge folios come from the free memory the host has taken back
/// (virtio-balloon page reporting), which is slow to touch again. At
/// 512 KiB, 7 restores took 0.52–0.62 s (median 0.54), against 0.53–0.61 s
/// (median 0.55) with one `write` per blob, with less system time.
const WRITE_BYTES_MAX: usize = 512 * 1024;

/// Writes `blobs`, one after the other, at the current position (which is
/// `offset` in the file), seeking over all-zero blocks so they stay holes
/// (the caller sets the final length). Blocks are the file's 4 KiB blocks,
/// counted from the start of the file, not of each blob: a blob rarely
/// starts on a block boundary, and a zero block that straddles two of the
/// file system's blocks would leave neither a hole. The runs of data
/// between holes go out together, in `writev`s of up to `WRITE_BYTES_MAX`
/// (a 4 KiB `write` per block had cost more system time than everything
/// else in a restore).
fn write_sparse(file: &mut File, blobs: &[Vec<u8>], mut offset: u64) -> Result<()> {
    static ZERO_BLOCK: [u8; HOLE_BLOCK_LEN] = [0; HOLE_BLOCK_LEN];
    let mut pending: Vec<IoSlice<'_>> = Vec::new();
    let mut pending_len = 0usize;
    for data in blobs {
        // The end of the file block that `start` (in the blob) is in,
        // or the end of the blob.
        let block_end = |start: usize| {
            let into_block = ((offset + start as u64) % HOLE_BLOCK_LEN as u64) as usize;
            (start + HOLE_BLOCK_LEN - into_block).min(data.len())
        };
        // A slice comparison is a vectorised memcmp.
        let block_is_zero = |start: usize| {
            let block = &data[start..block_end(start)];
            block == &ZERO_BLOCK[..block.len()]
        };
        let mut at = 0;
        while at < data.len() {
            let zero = block_is_zero(at);
            let mut end = block_end(at);
            while end < data.len() && block_is_zero(end) == zero {
                end = block_end(end);
            }
            if zero {
                pending_len = 0;
                write_slices(file, &mut pending)?;
                file.seek(SeekFrom::Current((end - at) as i64))
                    .map_err(|e| Error::io("cannot seek", e))?;
            } else {
                let mut run = &data[at..end];
                while !run.is_empty() {
                    let (now, later) = run.split_at(run.len().min(WRITE_BYTES_MAX - pending_len));
                    pending.push(IoSlice::new(now));
                    pending_len += now.len();
                    run = later;
                    if pending.len() == WRITE_SLICES_MAX || pending_len == WRITE_BYTES_MAX {
                        pending_len = 0;
                        write_slices(file, &mut pending)?;
                    }
                }
            }
            at = end;
        }
        offset += data.len() as u64;
    }
    write_slices(file, &mut pending)
}

/// Writes all of `slices` at the current position and empties it.
fn write_slices(out: &mut impl Write, slices: &mut Vec<IoSlice<'_>>) -> Result<()> {
    let mut left = &mut slices[..];
    while !left.is_empty() {
        match out.write_vectored(left) {
            Ok(0) => {
                return Err(Error::io(
                    "cannot write",
                    std::io::Error::from(std::io::ErrorKind::WriteZero),
                ))
            }
            Ok(n) => IoSlice::advance_slices(&mut left, n),
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(Error::io("cannot write", e)),
        }
    }
    slices.clear();
    Ok(())
}

/// Writes the content of the file at `path` in a snapshot to `out`, counting
/// progress as the "restore" phase.
pub fn dump(
    repo: &Repository,
    snapshot: &Snapshot,
    path: &str,
    out: &mut dyn Write,
) -> Result<u64> {
    let ctx = repo.context();
    let node = crate::engine::browse::find_node(repo, snapshot, path)?
        .ok_or_else(|| Error::invalid("dump needs a file path inside the snapshot"))?;
    if node.kind != NodeKind::File {
        return Err(Error::invalid(format!(
            "{path:?} is not a regular file (it is a {:?})",
            node.kind
        )));
    }
    let progress = ctx.progress();
    progress.start("restore", node.size, 1);
    let result = dump_content(repo, &node, out);
    progress.finish();
    let written = result?;
    if written != node.size {
        return Err(Error::corrupt(format!(
            "{path}: dumped {written} bytes but the snapshot records {}",
            node.size
        )));
    }
    Ok(written)
}

fn dump_content(repo: &Repository, node: &Node, out: &mut dyn Write) -> Result<u64> {
    let ctx = repo.context();
    let progress = ctx.progress();
    let mut written = 0u64;
    for window in node.content.chunks(window_blobs(&repo.blob_reader())) {
        ctx.check_interrupt()?;
        for data in read_window(repo, window)? {
            out.write_all(&data)
                .map_err(|e| Error::io("cannot write output", e))?;
            written += data.len() as u64;
            progress.add_bytes(data.len() as u64);
        }
    }
    out.flush()
        .map_err(|e| Error::io("cannot write output", e))?;
    progress.add_items(1);
    Ok(written)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// More runs of data, or more bytes, than one `writev` takes: written
    /// in several.
    #[test]
    fn a_window_of_more_runs_than_one_writev_takes_is_written_whole() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("f");
        let mut file = File::create(&path).unwrap();
        let many: Vec<Vec<u8>> = (0..3 * WRITE_SLICES_MAX + 5)
            .map(|i| vec![(i % 250) as u8 + 1; 100 + i])
            .collect();
        let large: Vec<Vec<u8>> = (0..5)
            .map(|i| vec![i as u8 + 1; WRITE_BYTES_MAX / 2 + 4097 * i])
            .collect();
        // Runs longer than one call takes, with holes between them.
        let holed = vec![[
            vec![7u8; WRITE_BYTES_MAX + 100],
            vec![0u8; 3 * HOLE_BLOCK_LEN],
            vec![9u8; 2 * WRITE_BYTES_MAX + 5],
        ]
        .concat()];
        let mut offset = 0;
        for window in [&many, &large, &holed] {
            write_sparse(&mut file, window, offset).unwrap();
            offset += window.iter().map(|b| b.len() as u64).sum::<u64>();
        }
        let expected = [many.concat(), large.concat(), holed.concat()].concat();
        file.set_len(expected.len() as u64).unwrap();
        drop(file);
        assert!(std::fs::read(&path).unwrap() == expected);
    }

    /// Regression: zero blocks were counted from each blob's start, so in
    /// a blob that does not start on a block boundary (most do not) a zero
    /// block of the file straddled two blocks of the run and was written.
    #[test]
    fn zero_blocks_of_the_file_become_holes_wherever_blobs_start() {
        use std::os::unix::fs::MetadataExt;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("f");
        let mut file = File::create(&path).unwrap();
        // 64 file blocks, every other one zero, cut into blobs at offsets
        // that are not multiples of the block size.
        let mut content = Vec::new();
        for block in 0..64 {
            let byte = if block % 2 == 1 { 0 } else { 0x5a };
            content.extend(std::iter::repeat_n(byte, HOLE_BLOCK_LEN));
        }
        let cuts = [0, 1000, 13_000, 40_001, 100_000, 64 * HOLE_BLOCK_LEN];
        let blobs: Vec<Vec<u8>> = cuts
            .windows(2)
            .map(|w| content[w[0]..w[1]].to_vec())
            .collect();
        write_sparse(&mut file, &blobs, 0).unwrap();
        file.set_len(content.len() as u64).unwrap();
        drop(file);
        assert!(std::fs::read(&path).unwrap() == content);
        // 32 data blocks are allocated; the 32 zero blocks are holes (a
        // file system may allocate a little more, never the zero blocks).
        let allocated = std::fs::metadata(&path).unwrap().blocks() * 512;
        assert!(
            allocated < 40 * HOLE_BLOCK_LEN as u64,
            "{allocated} bytes allocated for 32 data blocks"
        );
    }

    /// A writer that takes at most 1,000 bytes per call, no more than one
    /// slice's worth, and is interrupted every third call.
    struct Grudging {
        written: Vec<u8>,
        calls: usize,
    }

    impl Write for Grudging {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            self.calls += 1;
            if self.calls.is_multiple_of(3) {
                return Err(std::io::ErrorKind::Interrupted.into());
            }
            let n = buf.len().min(1000);
            self.written.extend_from_slice(&buf[..n]);
            Ok(n)
        }

        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn short_and_interrupted_writes_are_carried_on() {
        let pieces: Vec<Vec<u8>> = (0..20).map(|i| vec![i as u8; 37 + 300 * i]).collect();
        let mut slices: Vec<IoSlice<'_>> = pieces.iter().map(|p| IoSlice::new(p)).collect();
        let mut out = Grudging {
            written: Vec::new(),
            calls: 0,
        };
        write_slices(&mut out, &mut slices).unwrap();
        assert!(slices.is_empty());
        assert!(out.written == pieces.concat());
        assert!(out.calls > 20);
    }

    proptest! {
        /// Blobs written with holes read back as they were, whatever mix of
        /// zero and data blocks (and partial blocks) they hold.
        #[test]
        fn sparse_writes_read_back_exactly(
            blobs in proptest::collection::vec(
                proptest::collection::vec((any::<bool>(), 1usize..9000), 0..6), 0..5),
            split in any::<bool>(),
            lead in 0usize..9000,
        ) {
            let dir = tempfile::tempdir().unwrap();
            let path = dir.path().join("f");
            let mut file = File::create(&path).unwrap();
            let mut expected = Vec::new();
            let mut window = Vec::new();
            for pieces in &blobs {
                let mut blob = Vec::new();
                for &(zero, len) in pieces {
                    let byte = if zero { 0 } else { (len % 251) as u8 | 1 };
                    blob.extend(std::iter::repeat_n(byte, len));
                }
                expected.extend_from_slice(&blob);
                window.push(blob);
            }
            // The window starts `lead` bytes into the file (a hole).
            file.seek(SeekFrom::Start(lead as u64)).unwrap();
            let mut offset = lead as u64;
            // Half the windows in one call, half blob by blob.
            if split {
                for blob in &window {
                    write_sparse(&mut file, std::slice::from_ref(blob), offset).unwrap();
                    offset += blob.len() as u64;
                }
            } else {
                write_sparse(&mut file, &window, offset).unwrap();
            }
            let expected = [vec![0u8; lead], expected].concat();
            file.set_len(expected.len() as u64).unwrap();
            drop(file);
            prop_assert_eq!(std::fs::read(&path).unwrap(), expected);
        }
    }
}
