//! Snapshot plaintexts (JSON): what decodes re-encodes to an equal snapshot,
//! and the encoding is canonical.
#![no_main]

use cairn::format::snapshot::{select, Snapshot, SnapshotFilter};
use cairn::SnapshotId;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(snapshot) = Snapshot::decode(data) else { return };
    let encoded = snapshot.encode();
    let again = Snapshot::decode(&encoded).expect("an encoded snapshot decodes");
    assert_eq!(again, snapshot, "snapshot changed in a round trip");
    assert_eq!(again.encode(), encoded, "snapshot encoding is not canonical");

    // The selection helpers cope with whatever a snapshot holds.
    let filter = SnapshotFilter {
        hosts: vec![snapshot.hostname.clone()],
        tags: Vec::new(),
        paths: snapshot.paths.clone(),
    };
    assert!(filter.matches(&snapshot));
    for tag in &snapshot.tags {
        assert!(snapshot.has_tag(tag));
    }
    let list = vec![(SnapshotId::default(), snapshot)];
    assert!(select(&list, "latest").is_ok());
});
