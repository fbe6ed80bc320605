//! Lock plaintexts (JSON): round trip through the writer's encoding
//! (`serde_json::to_vec`, as `lock::write_lock` does), and the staleness
//! check copes with any time.
#![no_main]

use cairn::storage::lock::LockInfo;
use chrono::DateTime;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(info) = LockInfo::decode(data) else { return };
    let encoded = serde_json::to_vec(&info).expect("lock serializes");
    let again = LockInfo::decode(&encoded).expect("an encoded lock decodes");
    assert_eq!(again, info, "lock changed in a round trip");
    assert_eq!(serde_json::to_vec(&again).unwrap(), encoded, "lock encoding is not canonical");

    let now = DateTime::parse_from_rfc3339("2026-06-01T12:00:00+02:00").unwrap();
    let _ = info.is_stale(now);
    let _ = info.is_stale(DateTime::<chrono::Utc>::MIN_UTC.fixed_offset());
    let _ = info.is_stale(DateTime::<chrono::Utc>::MAX_UTC.fixed_offset());
});
