//! Repository config (JSON): round trip, and a config that validates must
//! give a chunker that works (fastcdc asserts on bad sizes).
#![no_main]

use cairn::format::chunker::Chunker;
use cairn::format::config::Config;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(config) = Config::decode(data) else { return };
    config.validate().expect("a decoded config validates");
    let encoded = config.encode();
    let again = Config::decode(&encoded).expect("an encoded config decodes");
    assert_eq!(again, config, "config changed in a round trip");
    assert_eq!(again.encode(), encoded, "config encoding is not canonical");

    let params = config.chunker_params();
    let chunker = Chunker::new(params, 0).expect("validated chunker params build a chunker");
    let lengths = chunker.cut(data, true);
    assert_eq!(lengths.iter().sum::<usize>(), data.len());
    assert!(lengths.iter().all(|&l| l > 0 && l <= params.size_max as usize));
});
