//! Content-defined chunking with FastCDC (2020 variant, seeded gear table).
//! Pure: it finds cut points in bytes it is given and does no IO. Callers
//! stream through a buffer and carry the unfinished tail over (see `cut`).

use crate::error::{Error, Result};
use fastcdc::v2020::{FastCDC, Normalization};
use rayon::prelude::*;

/// Chunk size bounds, chosen at `init` and stored in the repository config.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct ChunkerParams {
    pub size_min: u32,
    pub size_avg: u32,
    pub size_max: u32,
}

impl ChunkerParams {
    /// Defaults measured on PostgreSQL dumps and file trees: see
    /// docs/FORMAT.md, "Chunk size defaults".
    pub const DEFAULT: ChunkerParams = ChunkerParams {
        size_min: 16 * 1024,
        size_avg: 64 * 1024,
        size_max: 256 * 1024,
    };

    /// The bounds fastcdc accepts (it asserts on anything else, so hostile or
    /// damaged configs must be rejected here, before the chunker is built).
    pub fn validate(&self) -> Result<()> {
        use fastcdc::v2020::{
            AVERAGE_MAX, AVERAGE_MIN, MAXIMUM_MAX, MAXIMUM_MIN, MINIMUM_MAX, MINIMUM_MIN,
        };
        let ok = (MINIMUM_MIN..=MINIMUM_MAX).contains(&self.size_min)
            && (AVERAGE_MIN..=AVERAGE_MAX).contains(&self.size_avg)
            && (MAXIMUM_MIN..=MAXIMUM_MAX).contains(&self.size_max)
            && self.size_min <= self.size_avg
            && self.size_avg <= self.size_max;
        if ok {
            Ok(())
        } else {
            Err(Error::invalid(format!(
                "chunk sizes out of range: {self:?}"
            )))
        }
    }
}

/// The chunks of an earlier version of a stream (its lengths and ids, in
/// order), for `Chunker::cut_guided`.
#[derive(Debug, Clone)]
pub struct Guide<T> {
    /// Only chunks that started at least `size_max` bytes before the end of
    /// the earlier stream: FastCDC cut those with the full window, as it
    /// will cut the same bytes anywhere else in a long enough stream.
    chunks: Vec<(usize, T)>,
    /// Where each id first occurs in `chunks`, to re-synchronise.
    positions: std::collections::HashMap<T, usize>,
    /// The chunk expected at the next cut point, if any.
    next: Option<usize>,
}

impl<T: Eq + std::hash::Hash + Clone> Guide<T> {
    /// `chunks` are the earlier stream's (length, id) pairs, all of them
    /// in order; `params` must be the chunker's.
    pub fn new(params: ChunkerParams, chunks: Vec<(usize, T)>) -> Guide<T> {
        let total: usize = chunks.iter().map(|c| c.0).sum();
        let max = params.size_max as usize;
        let mut start = 0;
        let confirmable = chunks
            .into_iter()
            .take_while(|(length, _)| {
                let ok = start + max <= total;
                start += length;
                ok
            })
            .collect::<Vec<_>>();
        let mut positions = std::collections::HashMap::with_capacity(confirmable.len());
        for (i, (_, id)) in confirmable.iter().enumerate() {
            positions.entry(id.clone()).or_insert(i);
        }
        Guide {
            next: (!confirmable.is_empty()).then_some(0),
            chunks: confirmable,
            positions,
        }
    }
}

/// A configured chunker. Cheap to clone; holds no buffers.
#[derive(Debug, Clone)]
pub struct Chunker {
    params: ChunkerParams,
    seed: u64,
}

impl Chunker {
    pub fn new(params: ChunkerParams, seed: u64) -> Result<Chunker> {
        params.validate()?;
        Ok(Chunker { params, seed })
    }

    pub fn params(&self) -> ChunkerParams {
        self.params
    }

    /// Chunk lengths for the start of `data`. When `at_end` is false more
    /// bytes follow, so a final piece that runs to the end of `data` may not
    /// be a real cut point: it is left out, and the caller prepends those
    /// bytes to the next buffer. Cuts found strictly inside `data` are final,
    /// because FastCDC decides a cut from at most `size_max` bytes after the
    /// chunk's start. This gives the same cuts as chunking the whole stream.
    pub fn cut(&self, data: &[u8], at_end: bool) -> Vec<usize> {
        let p = self.params;
        let cdc = FastCDC::with_level_and_seed(
            data,
            p.size_min,
            p.size_avg,
            p.size_max,
            Normalization::Level1,
            self.seed,
        );
        let mut lengths = Vec::with_capacity(data.len() / p.size_avg as usize + 1);
        for chunk in cdc {
            let end = chunk.offset + chunk.length;
            if end == data.len() && !at_end {
                break;
            }
            debug_assert!(chunk.length <= p.size_max as usize);
            lengths.push(chunk.length);
        }
        lengths
    }

    /// The same lengths as `cut`, found with up to `parts` threads. FastCDC
    /// is sequential (each cut depends on where the chunk began), so every
    /// part after the first is chunked speculatively from its own start,
    /// all parts at once. Then the true sequence is followed from the
    /// previous part into the next until it reaches one of that part's cut
    /// points: from a common cut point both sequences are identical, so the
    /// rest of the part's cuts are taken as they are. The sequences usually
    /// meet within a chunk or two; if they never do (e.g. long runs of equal
    /// bytes, where every chunk is the maximum size), the part is simply
    /// chunked again from where the previous one ended.
    pub fn cut_parallel(&self, data: &[u8], at_end: bool, parts: usize) -> Vec<usize> {
        let max = self.params.size_max as usize;
        // Parts several chunks long, so that re-synchronising (usually a
        // chunk or two) is small work compared to the part itself.
        let parts = parts.min(data.len() / (4 * max)).max(1);
        if parts == 1 {
            return self.cut(data, at_end);
        }
        let bounds: Vec<usize> = (0..=parts).map(|i| i * data.len() / parts).collect();
        // Cut points (chunk ends, absolute) of each part chunked from its
        // start, up to the part's end: one byte more is enough to make
        // those final, as they then lie strictly inside the slice given to
        // `cut` (a cut depends only on the bytes before it).
        let speculative: Vec<Vec<usize>> = (0..parts)
            .into_par_iter()
            .map(|k| {
                let (start, end) = (bounds[k], bounds[k + 1]);
                let last = k + 1 == parts;
                let slice_end = if last { data.len() } else { end + 1 };
                let slice_at_end = at_end && slice_end == data.len();
                let mut at = start;
                self.cut(&data[start..slice_end], slice_at_end)
                    .into_iter()
                    .map(|length| {
                        at += length;
                        at
                    })
                    .take_while(|&e| last || e <= end)
                    .collect()
            })
            .collect();
        let mut ends: Vec<usize> = speculative[0].clone();
        for (k, part) in speculative.iter().enumerate().skip(1) {
            let mut at = ends.last().copied().unwrap_or(0);
            loop {
                if let Ok(i) = part.binary_search(&at) {
                    ends.extend_from_slice(&part[i + 1..]);
                    break;
                }
                if at >= bounds[k + 1] && k + 1 < parts {
                    break; // walked past this part; try the next one
                }
                match self.next_cut(data, at, at_end) {
                    Some(end) => {
                        ends.push(end);
                        at = end;
                    }
                    None => break,
                }
            }
        }
        let mut previous = 0;
        ends.into_iter()
            .map(|end| {
                let length = end - previous;
                previous = end;
                length
            })
            .collect()
    }

    /// Cuts `data` as `cut_parallel` does and names every chunk with `hash`,
    /// but first tries the cuts of an earlier version of the same stream
    /// (`guide`): from a cut point, if the next `length` bytes hash to the
    /// earlier chunk's id and so do the bytes of the chunk after it, they
    /// are that chunk, and FastCDC would cut there too. A cut depends only on
    /// the bytes from the chunk's start up to and including the first byte
    /// after the cut (none after a forced cut at `size_max`), and on how many
    /// bytes remain (capped at `size_max`), so it holds whenever at least
    /// `size_max` bytes remain in both versions. An
    /// unchanged stream is then hashed but never chunked. At the first
    /// mismatch the rest of `data` is chunked normally; a chunk equal to one
    /// of the earlier version's re-synchronises the guide for the next call.
    /// Returns the same lengths as `cut` (property-tested), with their ids.
    pub fn cut_guided<T, H>(
        &self,
        data: &[u8],
        at_end: bool,
        parts: usize,
        guide: &mut Guide<T>,
        hash: H,
    ) -> (Vec<usize>, Vec<T>)
    where
        T: Eq + std::hash::Hash + Clone + Send,
        H: Fn(&[u8]) -> T + Sync,
    {
        let max = self.params.size_max as usize;
        let mut spans = Vec::new();
        let mut at = 0;
        let mut next = guide.next;
        while let Some(j) = next.filter(|&j| j < guide.chunks.len()) {
            let length = guide.chunks[j].0;
            if length == 0 || length > max || data.len() - at < max {
                break;
            }
            spans.push((at, length, j));
            at += length;
            next = Some(j + 1);
        }
        let guessed: Vec<T> = spans
            .par_iter()
            .map(|&(start, length, _)| hash(&data[start..start + length]))
            .collect();
        let mut matched = spans
            .iter()
            .zip(&guessed)
            .take_while(|(&(_, _, j), id)| **id == guide.chunks[j].1)
            .count();
        // FastCDC decides a cut shorter than `size_max` from one byte more
        // than the chunk: the first byte of the next chunk. So a matched
        // chunk holds only if the next one matched too (or it is
        // `size_max` long: a forced cut, which reads nothing after it).
        if matched > 0 && spans[matched - 1].1 < max {
            matched -= 1;
        }
        let resume = spans.get(matched).map(|s| s.2).or(guide.next);
        let mut lengths: Vec<usize> = spans[..matched].iter().map(|s| s.1).collect();
        let mut ids: Vec<T> = guessed.into_iter().take(matched).collect();
        let at: usize = lengths.iter().sum();
        // The rest of the buffer (after a mismatch, past the guide's end,
        // or the last chunk or two before the end of the buffer) is chunked
        // normally, so what is carried over is what `cut` carries over.
        let rest = &data[at..];
        let more = self.cut_parallel(rest, at_end, parts);
        let mut starts = Vec::with_capacity(more.len());
        let mut from = 0;
        for &length in &more {
            starts.push(from);
            from += length;
        }
        let more_ids: Vec<T> = starts
            .par_iter()
            .zip(&more)
            .map(|(&start, &length)| hash(&rest[start..start + length]))
            .collect();
        guide.next = match more_ids.last() {
            // Re-synchronise: a chunk equal to one of the earlier version's
            // is likely followed by that one's successor.
            Some(id) => guide.positions.get(id).map(|&j| j + 1),
            // Nothing cut: the next buffer starts where this one stopped.
            None => resume,
        };
        lengths.extend(more);
        ids.extend(more_ids);
        (lengths, ids)
    }

    /// The end of the chunk starting at `start`, if it is a final cut.
    fn next_cut(&self, data: &[u8], start: usize, at_end: bool) -> Option<usize> {
        // A chunk is never longer than size_max, so one more byte than that
        // shows whether the cut is final.
        let slice_end = (start + self.params.size_max as usize + 1).min(data.len());
        let slice_at_end = at_end && slice_end == data.len();
        self.cut(&data[start..slice_end], slice_at_end)
            .first()
            .map(|length| start + length)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn small() -> Chunker {
        Chunker::new(
            ChunkerParams {
                size_min: 256,
                size_avg: 1024,
                size_max: 4096,
            },
            7,
        )
        .unwrap()
    }

    fn pseudo_random(len: usize, mut state: u64) -> Vec<u8> {
        (0..len)
            .map(|_| {
                state ^= state << 13;
                state ^= state >> 7;
                state ^= state << 17;
                state as u8
            })
            .collect()
    }

    /// Feeds `data` in pieces of `step` bytes to `cut` (buffer, at_end) and
    /// carries the unfinished tail over, as the archiver does.
    fn stream_through(
        data: &[u8],
        step: usize,
        mut cut: impl FnMut(&[u8], bool) -> Vec<usize>,
    ) -> Vec<usize> {
        let mut out = Vec::new();
        let mut buffer: Vec<u8> = Vec::new();
        let mut fed = 0;
        loop {
            let take = step.min(data.len() - fed);
            buffer.extend_from_slice(&data[fed..fed + take]);
            fed += take;
            let at_end = fed == data.len();
            let lengths = cut(&buffer, at_end);
            let used: usize = lengths.iter().sum();
            out.extend(lengths);
            buffer.drain(..used);
            if at_end {
                assert!(buffer.is_empty());
                return out;
            }
        }
    }

    /// Chunks `data` by feeding it in pieces of `step` bytes, as the archiver does.
    fn streamed(chunker: &Chunker, data: &[u8], step: usize) -> Vec<usize> {
        stream_through(data, step, |buffer, at_end| chunker.cut(buffer, at_end))
    }

    proptest! {
        #[test]
        fn chunks_cover_input_within_bounds_and_streaming_matches_whole(
            len in 0usize..40_000, seed in any::<u64>(), step in 4096usize..20_000,
        ) {
            let data = pseudo_random(len, seed | 1);
            let chunker = small();
            let whole = chunker.cut(&data, true);
            prop_assert_eq!(whole.iter().sum::<usize>(), data.len());
            for (i, &length) in whole.iter().enumerate() {
                prop_assert!(length <= 4096);
                if i + 1 < whole.len() { prop_assert!(length >= 256); }
            }
            prop_assert_eq!(streamed(&chunker, &data, step), whole);
        }
    }

    /// Data with long runs of one byte (where speculative parts may never
    /// meet the true sequence) between random stretches.
    fn runs_and_noise(len: usize, seed: u64) -> Vec<u8> {
        let mut data = pseudo_random(len, seed | 1);
        let mut state = seed | 1;
        let mut at = 0;
        while at < len {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            let run = (state % 40_000) as usize;
            let end = (at + run).min(len);
            if state.is_multiple_of(3) {
                data[at..end].fill((state >> 8) as u8);
            }
            at = end + (state >> 20) as usize % 30_000;
        }
        data
    }

    proptest! {
        #[test]
        fn parallel_cuts_equal_sequential_cuts(
            len in 0usize..400_000, seed in any::<u64>(), parts in 1usize..6,
            at_end in any::<bool>(), runs in any::<bool>(),
        ) {
            let data = if runs { runs_and_noise(len, seed) } else { pseudo_random(len, seed | 1) };
            let chunker = small();
            prop_assert_eq!(
                chunker.cut_parallel(&data, at_end, parts),
                chunker.cut(&data, at_end)
            );
        }
    }

    fn digest(bytes: &[u8]) -> [u8; 32] {
        *blake3::hash(bytes).as_bytes()
    }

    /// Streams `data` through `cut_guided` in pieces of `step` bytes, as the
    /// archiver does, guided by the chunks of `earlier`.
    fn streamed_guided(chunker: &Chunker, earlier: &[u8], data: &[u8], step: usize) -> Vec<usize> {
        let mut at = 0;
        let chunks = chunker
            .cut(earlier, true)
            .into_iter()
            .map(|length| {
                at += length;
                (length, digest(&earlier[at - length..at]))
            })
            .collect();
        let mut guide = Guide::new(chunker.params(), chunks);
        stream_through(data, step, |buffer, at_end| {
            let (lengths, ids) = chunker.cut_guided(buffer, at_end, 3, &mut guide, digest);
            let mut start = 0;
            for (&length, id) in lengths.iter().zip(&ids) {
                assert_eq!(*id, digest(&buffer[start..start + length]));
                start += length;
            }
            lengths
        })
    }

    /// FastCDC decides a cut from the first byte after it too: changing
    /// only that byte must not let the guide confirm the earlier cut.
    #[test]
    fn a_changed_byte_right_after_a_cut_is_not_confirmed() {
        let chunker = small();
        let earlier = pseudo_random(120_000, 77);
        let mut at = 0;
        for length in chunker.cut(&earlier, true) {
            at += length;
            if at >= earlier.len() {
                break;
            }
            for flip in [0x01u8, 0xff] {
                let mut data = earlier.clone();
                data[at] ^= flip;
                for step in [5000, 70_000] {
                    assert_eq!(
                        streamed_guided(&chunker, &earlier, &data, step),
                        chunker.cut(&data, true),
                        "byte {at} flipped by {flip:#x}, step {step}"
                    );
                }
            }
        }
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(1024))]
        /// Guided cuts are FastCDC's cuts, whatever the earlier version:
        /// the same stream, one with edits (insertions, deletions,
        /// overwrites), a shorter or a longer one, or an unrelated one.
        #[test]
        fn guided_cuts_equal_sequential_cuts(
            len in 0usize..300_000, seed in any::<u64>(), step in 4096usize..70_000,
            edits in proptest::collection::vec((any::<u32>(), 0u8..4, 1usize..9000), 0..6),
            runs in any::<bool>(),
        ) {
            let earlier = if runs { runs_and_noise(len, seed) } else { pseudo_random(len, seed | 1) };
            let mut data = earlier.clone();
            for (at, what, n) in edits {
                let at = at as usize % (data.len() + 1);
                match what {
                    0 => { data.splice(at..at, pseudo_random(n, at as u64 | 1)); }
                    1 => { data.drain(at..(at + n).min(data.len())); }
                    2 => { let end = (at + n).min(data.len()); data[at..end].fill(0xa5); }
                    _ => data.truncate(at),
                }
            }
            let chunker = small();
            let whole = chunker.cut(&data, true);
            prop_assert_eq!(&streamed_guided(&chunker, &earlier, &data, step), &whole);
            prop_assert_eq!(&streamed_guided(&chunker, &data, &data, step), &whole);
            let unrelated = pseudo_random(len / 2, seed ^ 0x55);
            prop_assert_eq!(&streamed_guided(&chunker, &unrelated, &data, step), &whole);
        }
    }

    /// An unchanged stream is hashed about once per chunk: every guess is
    /// right (a wrong guess would hash the span and then the real chunk).
    #[test]
    fn an_unchanged_stream_is_confirmed_by_the_guide() {
        use std::sync::atomic::{AtomicUsize, Ordering};
        let data = pseudo_random(500_000, 5);
        let chunker = small();
        let whole = chunker.cut(&data, true);
        let mut at = 0;
        let chunks = whole
            .iter()
            .map(|&length| {
                at += length;
                (length, digest(&data[at - length..at]))
            })
            .collect();
        let mut guide = Guide::new(chunker.params(), chunks);
        let calls = AtomicUsize::new(0);
        let (lengths, _) = chunker.cut_guided(&data, true, 2, &mut guide, |b| {
            calls.fetch_add(1, Ordering::Relaxed);
            digest(b)
        });
        assert_eq!(lengths, whole);
        // Only the last confirmed chunk is hashed twice: its cut is proven
        // by the chunk after it, which lies past the guided part.
        assert!(calls.load(Ordering::Relaxed) <= whole.len() + 1);
    }

    #[test]
    fn parallel_cuts_of_one_repeated_byte_equal_sequential_cuts() {
        // Every chunk is size_max from wherever chunking starts, so the
        // speculative parts never meet the true sequence by luck.
        let data = vec![7u8; 300_001];
        let chunker = small();
        for parts in 2..5 {
            for at_end in [false, true] {
                assert_eq!(
                    chunker.cut_parallel(&data, at_end, parts),
                    chunker.cut(&data, at_end)
                );
            }
        }
    }

    #[test]
    fn an_insertion_moves_only_nearby_cuts() {
        let data = pseudo_random(200_000, 99);
        let mut changed = data.clone();
        changed.splice(100_000..100_000, b"inserted!".iter().copied());
        let chunker = small();
        let ends = |d: &[u8]| -> Vec<usize> {
            chunker
                .cut(d, true)
                .iter()
                .scan(0, |at, l| {
                    *at += l;
                    Some(*at)
                })
                .collect()
        };
        let before = ends(&data);
        let after = ends(&changed);
        let same_before: Vec<_> = before.iter().filter(|&&e| e < 100_000).collect();
        let same_after: Vec<_> = after.iter().filter(|&&e| e < 100_000).collect();
        assert_eq!(same_before, same_after);
        let tail_before: std::collections::HashSet<_> = before
            .iter()
            .filter(|&&e| e > 110_000)
            .map(|e| e + 9)
            .collect();
        let tail_after: std::collections::HashSet<_> =
            after.iter().filter(|&&e| e > 110_000).copied().collect();
        assert_eq!(tail_before, tail_after);
    }

    /// Golden cut points: if these change, every existing repository would
    /// stop deduplicating against new backups. A fastcdc upgrade must keep them.
    #[test]
    fn golden_cut_points_are_stable() {
        let data = pseudo_random(50_000, 12345);
        let lengths = small().cut(&data, true);
        let digest = blake3::hash(
            &lengths
                .iter()
                .flat_map(|l| (*l as u64).to_le_bytes())
                .collect::<Vec<u8>>(),
        );
        assert_eq!(lengths.iter().sum::<usize>(), 50_000);
        assert_eq!(
            &digest.to_hex()[..16],
            GOLDEN_DIGEST,
            "cut points: {lengths:?}"
        );
    }

    const GOLDEN_DIGEST: &str = "6c0cadc77e6d0e79";

    #[test]
    fn out_of_range_sizes_are_errors_not_panics() {
        let bad = ChunkerParams {
            size_min: 1,
            size_avg: 2,
            size_max: 3,
        };
        assert!(Chunker::new(bad, 0).is_err());
        let inverted = ChunkerParams {
            size_min: 8192,
            size_avg: 4096,
            size_max: 65536,
        };
        assert!(Chunker::new(inverted, 0).is_err());
    }
}
