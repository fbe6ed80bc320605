//! Index file plaintexts: the decoder is strict, so anything it accepts must
//! re-encode to exactly the same bytes.
#![no_main]

use cairn::format::index_file::IndexFile;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(file) = IndexFile::decode(data) else { return };
    let encoded = file.encode();
    assert_eq!(encoded, data, "index file does not re-encode to its bytes");
    assert_eq!(IndexFile::decode(&encoded).expect("re-decodes"), file);
    assert_eq!(file.blob_count(), file.packs.iter().map(|p| p.entries.len()).sum::<usize>());
    // Any shorter prefix is damage.
    assert!(IndexFile::decode(&data[..data.len() - 1]).is_err(), "truncated index file accepted");
});
