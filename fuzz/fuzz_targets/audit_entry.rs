//! Audit entries: the decoder never panics, and an entry it accepts
//! encodes back to the same bytes (unsigned) or keeps its signature state.
#![no_main]

use cairn::format::audit::{Entry, Signature};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(decoded) = Entry::decode(data) else { return };
    if decoded.signature == Signature::Unsigned {
        let encoded = decoded.entry.encode(None).expect("a decoded entry encodes");
        assert_eq!(encoded, data, "audit entry encoding is not canonical");
    }
    let again = Entry::decode(data).expect("decodes twice");
    assert_eq!(again.entry, decoded.entry);
    assert_eq!(again.signature, decoded.signature);
});
