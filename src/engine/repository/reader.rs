//! `BlobReader`: many blobs read at once, grouped by pack into merged
//! ranges. On object storage every request costs a round trip (about 40 ms
//! for a ranged GET from Garage on loopback) whatever its size, so reading
//! a restore's 64 KiB blobs one GET each is what made it slow: here the
//! blobs one call needs are located, sorted by pack and offset, and blobs of
//! one pack that lie close together are fetched in one ranged read. On a
//! remote backend the reads run on `Backend::connections` IO threads of
//! their own while the CPU pool (rayon) decrypts, decompresses and verifies
//! what has arrived; on a local one both happen on the CPU pool.

use super::*;
use rayon::prelude::*;
use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::mpsc;

/// Two blobs of one pack at most this far apart are fetched in one ranged
/// read, and the bytes between them thrown away: 256 KiB take about 1 ms
/// to transfer on a 2 Gbit/s link, a request costs tens of ms.
pub const RANGE_GAP_MAX: u64 = 256 * 1024;

/// The most bytes one merged read fetches (a single blob larger than this
/// is still read whole): small enough that `connections` reads in flight
/// stay a bounded amount of memory, large enough that a request's latency
/// is small against its transfer.
pub const RANGE_LEN_MAX: u64 = 4 * 1024 * 1024;

/// One ranged read of a pack and the blobs it covers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Range {
    pub pack: PackId,
    pub offset: u64,
    pub length: u64,
    /// Indices into the locations `plan_ranges` was given.
    pub blobs: Vec<usize>,
}

/// Groups blob locations (pack, offset, length) into ranged reads: one
/// range never spans two packs, joins a blob to the range before it only
/// when the gap between them is at most `gap_max` and the range stays
/// within `len_max` bytes, and covers every location exactly once. Ranges
/// come out sorted by pack and offset.
pub(crate) fn plan_ranges(
    locations: &[(PackId, u64, u64)],
    gap_max: u64,
    len_max: u64,
) -> Vec<Range> {
    let mut order: Vec<usize> = (0..locations.len()).collect();
    order.sort_by_key(|&i| (locations[i].0, locations[i].1));
    let mut ranges: Vec<Range> = Vec::new();
    for i in order {
        let (pack, offset, length) = locations[i];
        let end = offset.saturating_add(length);
        if let Some(last) = ranges.last_mut() {
            let last_end = last.offset + last.length;
            let merged_end = end.max(last_end);
            if last.pack == pack
                && offset <= last_end.saturating_add(gap_max)
                && merged_end - last.offset <= len_max
            {
                last.length = merged_end - last.offset;
                last.blobs.push(i);
                continue;
            }
        }
        ranges.push(Range {
            pack,
            offset,
            length,
            blobs: vec![i],
        });
    }
    ranges
}

/// The blobs of one range, opened: (slot, plaintext).
type Opened = Vec<(usize, Vec<u8>)>;

/// Reads blobs in batches (see the module comment). Made by
/// `Repository::blob_reader`.
pub struct BlobReader<'r> {
    repo: &'r Repository,
    /// IO threads for a remote backend; `None`: read on the CPU pool.
    connections: Option<usize>,
}

impl Repository<Indexed> {
    /// A reader that fetches many blobs at once, with the backend's
    /// `connections` for a remote one.
    pub fn blob_reader(&self) -> BlobReader<'_> {
        BlobReader {
            repo: self,
            connections: self.backend.connections(),
        }
    }
}

impl BlobReader<'_> {
    /// Whether the backend is remote: callers then read in larger batches.
    pub fn remote(&self) -> bool {
        self.connections.is_some()
    }

    /// Reads, decrypts, decompresses and verifies the blobs `ids` of `kind`
    /// (repeats allowed), returned in the order of `ids`. Memory: the
    /// plaintext of every blob asked for, plus on a remote backend up to
    /// `connections` + cores ranges of at most `RANGE_LEN_MAX` bytes (being
    /// fetched or waiting for the CPU pool, and being opened); the caller
    /// bounds the first by the batches it asks for.
    pub fn read(&self, kind: BlobKind, ids: &[BlobId]) -> Result<Vec<Vec<u8>>> {
        let repo = self.repo;
        // Each distinct blob once: a file of zeros repeats one blob.
        let mut slot_of: HashMap<BlobId, usize> = HashMap::with_capacity(ids.len());
        let mut entries: Vec<BlobLocation> = Vec::new();
        let mut slots = Vec::with_capacity(ids.len());
        for id in ids {
            let slot = match slot_of.get(id) {
                Some(&slot) => slot,
                None => {
                    let location = repo.locate(kind, id)?.ok_or_else(|| {
                        Error::new(
                            ErrorKind::NotFound,
                            format!("{kind:?} blob {id} is not in the index"),
                        )
                    })?;
                    entries.push(location);
                    slot_of.insert(*id, entries.len() - 1);
                    entries.len() - 1
                }
            };
            slots.push(slot);
        }
        let locations: Vec<(PackId, u64, u64)> = entries
            .iter()
            .map(|l| (l.pack, u64::from(l.entry.offset), u64::from(l.entry.length)))
            .collect();
        let ranges = plan_ranges(&locations, RANGE_GAP_MAX, RANGE_LEN_MAX);
        let opened = match self.connections {
            Some(n) if ranges.len() > 1 => self.fetch_on_io_threads(kind, &ranges, &entries, n)?,
            _ => ranges
                .par_iter()
                .map(|range| {
                    let bytes = repo.fetch_range(kind, range)?;
                    repo.open_range(range, &bytes, &entries)
                })
                .collect::<Result<Vec<_>>>()?,
        };
        let mut plain: Vec<Option<Vec<u8>>> = vec![None; entries.len()];
        for (slot, data) in opened.into_iter().flatten() {
            plain[slot] = Some(data);
        }
        // The last use of a blob takes it, earlier ones copy it.
        let mut uses = vec![0usize; entries.len()];
        for &slot in &slots {
            uses[slot] += 1;
        }
        let mut out = Vec::with_capacity(slots.len());
        for slot in slots {
            uses[slot] -= 1;
            let data = if uses[slot] == 0 {
                plain[slot].take()
            } else {
                plain[slot].clone()
            };
            out.push(data.expect("every located blob is in one range"));
        }
        Ok(out)
    }

    /// Fetches `ranges` on `n` IO threads, handing each to the CPU pool as
    /// it arrives. The first error stops the IO threads at their next range.
    fn fetch_on_io_threads(
        &self,
        kind: BlobKind,
        ranges: &[Range],
        entries: &[BlobLocation],
        n: usize,
    ) -> Result<Vec<Opened>> {
        let repo = self.repo;
        let ctx = repo.context();
        let next = AtomicUsize::new(0);
        // A rendezvous channel: a fetched range waits on its IO thread until
        // the CPU pool takes it, so at most `n` wait and `n` are in flight.
        let (tx, rx) = mpsc::sync_channel::<Result<(usize, Vec<u8>)>>(0);
        std::thread::scope(|scope| {
            for _ in 0..n.min(ranges.len()) {
                let (tx, next) = (tx.clone(), &next);
                scope.spawn(move || loop {
                    let i = next.fetch_add(1, Ordering::Relaxed);
                    if i >= ranges.len() {
                        break;
                    }
                    let got = ctx
                        .check_interrupt()
                        .and_then(|()| repo.fetch_range(kind, &ranges[i]))
                        .map(|bytes| (i, bytes));
                    let failed = got.is_err();
                    // A closed channel: the reader stopped at an error.
                    if tx.send(got).is_err() || failed {
                        break;
                    }
                });
            }
            drop(tx);
            // `rx` is consumed here and dropped when the CPU pool is done,
            // early on an error, which ends the IO threads' sends.
            rx.into_iter()
                .par_bridge()
                .map(|got| {
                    let (i, bytes) = got?;
                    repo.open_range(&ranges[i], &bytes, entries)
                })
                .collect()
        })
    }
}

impl Repository<Indexed> {
    /// Through `get_blob_range`, so a backend that keeps copies of tree
    /// packs serves tree ranges from them.
    fn fetch_range(&self, kind: BlobKind, range: &Range) -> Result<Vec<u8>> {
        self.backend
            .get_blob_range(kind, &range.pack.to_hex(), range.offset, range.length)
            .map_err(|e| e.context(format!("pack {}", range.pack)))
    }

    /// Opens each blob of a fetched range: (slot, plaintext).
    fn open_range(&self, range: &Range, bytes: &[u8], entries: &[BlobLocation]) -> Result<Opened> {
        range
            .blobs
            .iter()
            .map(|&slot| {
                let entry = &entries[slot].entry;
                let start = (u64::from(entry.offset) - range.offset) as usize;
                let sealed = &bytes[start..start + entry.length as usize];
                pack::open_blob(&self.key, entry, sealed)
                    .map(|plain| (slot, plain))
                    .map_err(|e| e.context(format!("pack {}", range.pack)))
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pack(n: u8) -> PackId {
        PackId(Id([n; 32]))
    }

    /// Every location is in exactly one range, and inside it.
    fn assert_covers(locations: &[(PackId, u64, u64)], ranges: &[Range]) {
        let mut seen = vec![0; locations.len()];
        for r in ranges {
            for &i in &r.blobs {
                seen[i] += 1;
                let (p, off, len) = locations[i];
                assert_eq!(p, r.pack);
                assert!(off >= r.offset && off + len <= r.offset + r.length);
            }
        }
        assert!(seen.iter().all(|&s| s == 1), "{seen:?}");
    }

    #[test]
    fn ranges_never_span_two_packs() {
        // Adjacent offsets, but in different packs (given out of order).
        let locations = vec![
            (pack(2), 0, 100),
            (pack(1), 100, 100),
            (pack(1), 0, 100),
            (pack(2), 100, 100),
        ];
        let ranges = plan_ranges(&locations, 1 << 20, 1 << 30);
        assert_covers(&locations, &ranges);
        assert_eq!(ranges.len(), 2);
        assert_eq!(
            (ranges[0].pack, ranges[0].offset, ranges[0].length),
            (pack(1), 0, 200)
        );
        assert_eq!(ranges[0].blobs, vec![2, 1]);
        assert_eq!(
            (ranges[1].pack, ranges[1].offset, ranges[1].length),
            (pack(2), 0, 200)
        );
    }

    #[test]
    fn ranges_merge_across_gaps_up_to_the_limit_only() {
        let locations = vec![
            (pack(1), 0, 100),
            (pack(1), 150, 100), // gap 50: merged
            (pack(1), 300, 100), // gap 50: merged
            (pack(1), 451, 100), // gap 51: a new range
        ];
        let ranges = plan_ranges(&locations, 50, 1 << 30);
        assert_covers(&locations, &ranges);
        assert_eq!(ranges.len(), 2);
        assert_eq!((ranges[0].offset, ranges[0].length), (0, 400));
        assert_eq!((ranges[1].offset, ranges[1].length), (451, 100));
        // No gap allowed: only touching blobs merge.
        let touching = vec![(pack(1), 0, 10), (pack(1), 10, 10), (pack(1), 21, 10)];
        let ranges = plan_ranges(&touching, 0, 1 << 30);
        assert_eq!(ranges.len(), 2);
        assert_eq!(ranges[0].length, 20);
    }

    #[test]
    fn ranges_stay_within_the_size_cap() {
        let locations: Vec<(PackId, u64, u64)> =
            (0..100).map(|i| (pack(1), i * 1000, 1000)).collect();
        let ranges = plan_ranges(&locations, 0, 10_000);
        assert_covers(&locations, &ranges);
        assert_eq!(ranges.len(), 10);
        assert!(ranges.iter().all(|r| r.length <= 10_000));
        // A blob larger than the cap is read alone, whole.
        let big = vec![
            (pack(1), 0, 10),
            (pack(1), 10, 50_000),
            (pack(1), 50_010, 10),
        ];
        let ranges = plan_ranges(&big, 0, 10_000);
        assert_covers(&big, &ranges);
        assert_eq!(ranges.len(), 3);
        assert_eq!(ranges[1].length, 50_000);
    }

    #[test]
    fn overlapping_and_repeated_locations_are_covered() {
        let locations = vec![(pack(1), 0, 100), (pack(1), 0, 100), (pack(1), 50, 10)];
        let ranges = plan_ranges(&locations, 0, 1000);
        assert_covers(&locations, &ranges);
        assert_eq!(ranges.len(), 1);
        assert_eq!(ranges[0].length, 100);
    }
}
