//! Drill records (JSON, `drills/`): what decodes keeps the limits and
//! re-encodes to an equal record; the shrink comparison copes with any two.
#![no_main]

use cairn::format::drill::{shrinkage, DrillRecord, DRILL_FIGURES_MAX, DRILL_RECORD_SIZE_MAX};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(record) = DrillRecord::decode(data) else { return };
    assert!(data.len() <= DRILL_RECORD_SIZE_MAX);
    assert!(record.figures.len() <= DRILL_FIGURES_MAX);
    record.validate().expect("a decoded record validates");
    let encoded = record.encode();
    let again = DrillRecord::decode(&encoded).expect("an encoded record decodes");
    assert_eq!(again, record, "drill record changed in a round trip");
    assert_eq!(again.encode(), encoded, "drill record encoding is not canonical");
    let _ = shrinkage(&record, &record.figures, 0.0);
    let _ = shrinkage(&record, &[], 10.0);
});
