//! The chunker: cuts cover the input, respect the size bounds, and streaming
//! the input in pieces gives the same cuts as chunking it whole (the
//! archiver streams; see the property test in src/chunker.rs).
#![no_main]

use cairn::format::chunker::{Chunker, ChunkerParams};
use cairn_fuzz::{pseudo_random, Input};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let mut input = Input::new(data);
    let flags = input.u8();
    let params = if flags & 1 == 0 {
        // Small sizes, so short inputs hold many chunks.
        ChunkerParams {
            size_min: 64 + u32::from(input.u16()) % 960,
            size_avg: 256 + u32::from(input.u16()) % 3840,
            size_max: 1024 + u32::from(input.u16()) % 15360,
        }
    } else {
        // Any sizes: bad ones must be errors, never fastcdc's asserts.
        ChunkerParams { size_min: input.u32(), size_avg: input.u32(), size_max: input.u32() }
    };
    let seed = input.u64();
    let split = input.u32() as usize;
    let step = input.u16() as usize;
    let generated;
    let bytes = if flags & 2 != 0 {
        // Long pseudo-random input (up to 64 KiB) from a short fuzz input.
        let len = input.u16() as usize;
        generated = pseudo_random(len, input.u64());
        &generated[..]
    } else {
        input.rest()
    };
    let Ok(chunker) = Chunker::new(params, seed) else { return };
    assert_eq!(chunker.params(), params);
    check(&chunker, bytes, split, step);
});

fn check(chunker: &Chunker, data: &[u8], split: usize, step: usize) {
    let p = chunker.params();
    let whole = chunker.cut(data, true);
    assert_eq!(whole.iter().sum::<usize>(), data.len(), "cuts do not cover the input");
    for (i, &length) in whole.iter().enumerate() {
        assert!(length > 0, "empty chunk");
        assert!(length <= p.size_max as usize, "chunk {length} longer than max {}", p.size_max);
        // docs/FORMAT.md: every chunk but the last is at least size_min
        // bytes (size_min - 1 if size_min is odd: fastcdc steps in pairs).
        if i + 1 < whole.len() {
            let floor = (p.size_min & !1) as usize;
            assert!(length >= floor, "inner chunk {length} shorter than min {}", p.size_min);
        }
    }

    // Two pieces: cut a prefix as unfinished, carry the tail over.
    let at = split % (data.len() + 1);
    let mut first = chunker.cut(&data[..at], false);
    let used: usize = first.iter().sum();
    assert!(used <= at);
    first.extend(chunker.cut(&data[used..], true));
    assert_eq!(first, whole, "two-piece streaming (split at {at}) differs from whole");

    // Many pieces of `step` bytes, as the archiver feeds its buffer.
    // At most ~32 pieces, so long inputs stay cheap.
    let step = (64 + step % 8192).max(data.len() / 32);
    let mut out = Vec::new();
    let mut buffer: Vec<u8> = Vec::new();
    let mut fed = 0;
    loop {
        let take = step.min(data.len() - fed);
        buffer.extend_from_slice(&data[fed..fed + take]);
        fed += take;
        let at_end = fed == data.len();
        let lengths = chunker.cut(&buffer, at_end);
        let used: usize = lengths.iter().sum();
        assert!(used <= buffer.len());
        out.extend(lengths);
        buffer.drain(..used);
        if at_end {
            assert!(buffer.is_empty(), "bytes left over at the end");
            break;
        }
    }
    assert_eq!(out, whole, "streaming in steps of {step} differs from whole");
}
