//! Blob opening with the fuzz key. Raw mode: a fuzzed pack entry and sealed
//! bytes (seeds are real blobs). Seal mode: a fuzzed plaintext sealed with
//! `seal_blob`, then fuzzer-chosen bytes of the sealed blob and fields of the
//! entry damaged: opening must fail or give back exactly the plaintext.
#![no_main]

use cairn::format::id::{BlobId, Id};
use cairn::format::pack::{open_blob, seal_blob, BlobKind, Codec, PackEntry, ENTRY_LEN};
use cairn_fuzz::{blob_mode, fuzz_key, Input};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let mut input = Input::new(data);
    let flags = input.u8();
    if flags & 1 == blob_mode::RAW {
        raw(flags & 2 != 0, &mut input);
    } else {
        sealed(&mut input);
    }
});

fn raw(fix_length: bool, input: &mut Input) {
    let key = fuzz_key();
    let entry_bytes = input.bytes(ENTRY_LEN);
    let Ok(mut entry) = PackEntry::decode(entry_bytes) else { return };
    let mut again = Vec::new();
    entry.encode_into(&mut again);
    assert_eq!(again, entry_bytes, "pack entry does not re-encode to its bytes");
    let sealed = input.rest();
    if fix_length {
        entry.length = sealed.len() as u32;
    }
    if let Ok(plain) = open_blob(&key, &entry, sealed) {
        assert_eq!(plain.len(), entry.raw_length as usize);
        assert_eq!(key.blob_id(&plain), entry.id);
    }
}

fn sealed(input: &mut Input) {
    let key = fuzz_key();
    let setup = input.u8();
    let kind = if setup & 1 == 1 { BlobKind::Tree } else { BlobKind::Data };
    let level = [1, 3, -1, 7][(setup as usize >> 1) & 3];
    let len = input.u16() as usize % 8192;
    let plain = input.bytes(len).to_vec();
    let blob = seal_blob(&key, kind, key.blob_id(&plain), &plain, level);
    assert_eq!(blob.raw_length as usize, plain.len());
    let mut entry = PackEntry {
        kind: blob.kind,
        codec: blob.codec,
        id: blob.id,
        offset: 0,
        length: blob.bytes.len() as u32,
        raw_length: blob.raw_length,
    };
    let mut sealed = blob.bytes;
    assert_eq!(&open_blob(&key, &entry, &sealed).expect("fresh blob opens"), &plain);
    let (fresh_entry, fresh_sealed) = (entry, sealed.clone());

    // Damage: up to 3 byte flips, then entry fields.
    let flips = input.u8() % 4;
    for _ in 0..flips {
        let at = input.u32() as usize % sealed.len();
        let mask = input.u8();
        sealed[at] ^= mask;
    }
    let fields = input.u8();
    if fields & 1 != 0 {
        entry.kind = if entry.kind == BlobKind::Data { BlobKind::Tree } else { BlobKind::Data };
    }
    if fields & 2 != 0 {
        entry.codec = if entry.codec == Codec::Raw { Codec::Zstd } else { Codec::Raw };
    }
    if fields & 4 != 0 {
        entry.raw_length ^= u32::from(input.u8()) | 1;
    }
    if fields & 8 != 0 {
        let mut id = *entry.id.as_bytes();
        id[input.u8() as usize % 32] ^= input.u8() | 1;
        entry.id = BlobId(Id(id));
    }
    if fields & 16 != 0 {
        // Truncate (or pad) the sealed bytes, keeping the entry's length.
        let cut = input.u8() as usize;
        if cut % 2 == 0 {
            sealed.truncate(sealed.len().saturating_sub(1 + cut / 2));
        } else {
            sealed.extend(std::iter::repeat(0).take(1 + cut / 2));
        }
    }
    // Flips may cancel out, and a zero-length cut changes nothing: compare.
    let damaged = entry != fresh_entry || sealed != fresh_sealed;
    match open_blob(&key, &entry, &sealed) {
        Ok(opened) => {
            assert!(!damaged, "damaged blob opened");
            assert_eq!(opened, plain, "blob opened to other bytes");
        }
        Err(e) => assert!(damaged, "undamaged blob failed to open: {e}"),
    }
}
