//! Key files (JSON): round trip, and opening with the seed password only when
//! the (fuzzed) Argon2 parameters are tiny.
#![no_main]

use cairn::format::key::KeyFile;
use cairn_fuzz::{FUZZ_SECRET, KEY_PASSWORD};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(file) = KeyFile::decode(data) else { return };
    let encoded = file.encode();
    let again = KeyFile::decode(&encoded).expect("an encoded key file decodes");
    assert_eq!(again, file, "key file changed in a round trip");
    assert_eq!(again.encode(), encoded, "key file encoding is not canonical");

    let p = file.kdf_params;
    if p.memory_kib <= 64 && p.iterations <= 1 {
        // Only the seed key file can open (forging the AEAD tag is out of
        // reach), and then it must yield the seed's master secret.
        if let Ok(master) = file.open(KEY_PASSWORD) {
            assert_eq!(master.secret(), &FUZZ_SECRET, "key file opened to another secret");
        }
        assert!(file.open(b"not the password").is_err(), "wrong password accepted");
    }
});
