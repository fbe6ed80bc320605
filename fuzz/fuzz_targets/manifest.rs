//! Snapshot manifests: the decoder never panics, and a manifest it accepts
//! decodes the same way twice and keeps its signature state.
#![no_main]

use cairn::format::manifest::Manifest;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(decoded) = Manifest::decode(data) else {
        return;
    };
    let again = Manifest::decode(data).expect("decodes twice");
    assert_eq!(again.manifest, decoded.manifest);
    assert_eq!(again.signature_valid, decoded.signature_valid);
    assert_eq!(again.id, decoded.id);
});
