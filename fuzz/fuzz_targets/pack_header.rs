//! Pack headers: the plaintext decoder, whole (sealed) packs with the fuzz
//! key, and packs built from fuzzed blobs and then damaged.
#![no_main]

use cairn::format::crypto::Domain;
use cairn::format::pack::{
    decode_header, encode_header, header_location, open_blob, read_header, seal_blob, trailer,
    BlobKind, PackBuilder, PackEntry,
};
use cairn_fuzz::{fuzz_key, pack_mode, Input, BUILD_BLOBS_MAX, BUILD_BLOB_LEN_MAX, ZSTD_LEVEL};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let mut input = Input::new(data);
    match input.u8() % 3 {
        pack_mode::PLAIN => {
            let data_len = input.u64();
            plain(input.rest(), data_len);
        }
        pack_mode::WHOLE => whole(input.rest()),
        _ => build(&mut input),
    }
});

/// Checks a decoded header against its plaintext: the decoder is strict, so
/// re-encoding gives the same bytes, and the entries tile `[0, data_len)`.
fn check_entries(plain: &[u8], data_len: u64, entries: &[PackEntry]) {
    assert_eq!(encode_header(entries), plain, "header does not re-encode to its bytes");
    let mut at = 0u64;
    for e in entries {
        assert_eq!(u64::from(e.offset), at, "entries not contiguous");
        at += u64::from(e.length);
        let mut bytes = Vec::new();
        e.encode_into(&mut bytes);
        assert_eq!(&PackEntry::decode(&bytes).expect("entry re-decodes"), e);
    }
    assert_eq!(at, data_len, "entries do not cover the blobs");
}

fn plain(plain: &[u8], data_len: u64) {
    if let Ok(entries) = decode_header(plain, data_len) {
        check_entries(plain, data_len, &entries);
    }
}

fn whole(pack: &[u8]) {
    let key = fuzz_key();
    let Ok(entries) = read_header(&key, pack) else { return };
    // What read_header did, step by step, must agree with it.
    let (start, sealed_len) =
        header_location(pack.len() as u64, trailer(pack).expect("trailer")).expect("location");
    let start_usize = start as usize;
    let header = key
        .open(Domain::PackHeader, &pack[start_usize..start_usize + sealed_len as usize])
        .expect("header opens");
    check_entries(&header, start, &entries);
    for e in &entries {
        let sealed = &pack[e.offset as usize..e.offset as usize + e.length as usize];
        if let Ok(plain) = open_blob(&key, e, sealed) {
            assert_eq!(plain.len(), e.raw_length as usize);
            assert_eq!(key.blob_id(&plain), e.id);
        }
    }
}

/// Builds a pack from fuzzed blobs, checks it reads back, then applies one
/// damage: a cut at the end must be refused; a flipped byte in a blob must
/// leave the header readable and only that blob unreadable; a flipped byte
/// in the header or trailer must be refused.
fn build(input: &mut Input) {
    let key = fuzz_key();
    let count = input.u8() % (BUILD_BLOBS_MAX + 1);
    let mut blobs = Vec::new();
    let mut builder = PackBuilder::new();
    for _ in 0..count {
        let kind = if input.u8() & 1 == 1 { BlobKind::Tree } else { BlobKind::Data };
        let len = input.u16() as usize % BUILD_BLOB_LEN_MAX;
        let plain = input.bytes(len).to_vec();
        builder.add(seal_blob(&key, kind, key.blob_id(&plain), &plain, ZSTD_LEVEL));
        blobs.push(plain);
    }
    let (_, mut pack, entries) = builder.finish(&key);
    assert_eq!(read_header(&key, &pack).expect("fresh pack reads"), entries);
    let data_len: u64 = entries.iter().map(|e| u64::from(e.length)).sum();
    for (e, plain) in entries.iter().zip(&blobs) {
        let sealed = &pack[e.offset as usize..(e.offset + e.length) as usize];
        assert_eq!(&open_blob(&key, e, sealed).expect("fresh blob opens"), plain);
    }

    let op = input.u8();
    let amount = input.u32();
    if op & 1 == 0 {
        let cut = 1 + amount as usize % pack.len();
        assert!(read_header(&key, &pack[..pack.len() - cut]).is_err(), "truncated pack accepted");
        return;
    }
    let at = amount as usize % pack.len();
    let mask = (op >> 1) | 1;
    pack[at] ^= mask;
    let read = read_header(&key, &pack);
    if (at as u64) < data_len {
        assert_eq!(read.expect("blob damage leaves the header readable"), entries);
        for (e, plain) in entries.iter().zip(&blobs) {
            let range = e.offset as usize..(e.offset + e.length) as usize;
            let opened = open_blob(&key, e, &pack[range.clone()]);
            if range.contains(&at) {
                assert!(opened.is_err(), "damaged blob opened");
            } else {
                assert_eq!(&opened.expect("undamaged blob opens"), plain);
            }
        }
    } else {
        assert!(read.is_err(), "damaged header accepted");
    }
}
