//! Drill records: what a restore drill (`cairn drill`) found, stored in the
//! repository as small sealed JSON objects under `drills/` (docs/FORMAT.md,
//! "Drill records"). A record is written once and never changed; the next
//! drill of the same source compares its figures with the last passed one.

use crate::error::{Error, ErrorKind, Result};
use crate::format::id::SnapshotId;
use chrono::{DateTime, FixedOffset};
use serde::{Deserialize, Serialize};

/// The record version this build writes and reads.
pub const DRILL_RECORD_VERSION: u32 = 1;
/// Largest record plaintext a reader accepts.
pub const DRILL_RECORD_SIZE_MAX: usize = 256 * 1024;
/// Most figures one record carries (tables, key types, files); a drill of
/// a database with more tables records the first ones by name and says so.
pub const DRILL_FIGURES_MAX: usize = 2000;
/// Longest text field (source, figure name, message), in bytes.
pub const DRILL_TEXT_MAX: usize = 4096;

/// What a drill restores and how it verifies it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum DrillKind {
    /// A pg_dump (plain, custom, directory or tar format) loaded into a
    /// throwaway PostgreSQL cluster.
    Postgres,
    /// A Redis RDB file checked and loaded by redis-server.
    Redis,
    /// A tarball whose members are all read back.
    Tar,
    /// Every file of the snapshot read back and compared with its size.
    Files,
}

impl DrillKind {
    pub fn name(self) -> &'static str {
        match self {
            DrillKind::Postgres => "postgres",
            DrillKind::Redis => "redis",
            DrillKind::Tar => "tar",
            DrillKind::Files => "files",
        }
    }

    pub fn parse(text: &str) -> Result<DrillKind> {
        Ok(match text {
            "postgres" => DrillKind::Postgres,
            "redis" => DrillKind::Redis,
            "tar" => DrillKind::Tar,
            "files" => DrillKind::Files,
            other => {
                return Err(Error::invalid(format!(
                    "unknown drill kind {other:?} (postgres, redis, tar or files)"
                )))
            }
        })
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Verdict {
    Passed,
    Failed,
}

/// One counted thing: a table's rows, a key type's keys, the files.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Figure {
    /// `schema.table` (`database/schema.table` outside the dump's own
    /// database), `db0 keys`, `db0 string`, `files`, `bytes`, …
    pub name: String,
    pub count: u64,
    /// A checksum of a sample of the rows (PostgreSQL: md5 of the first
    /// 100 rows in text order), to tell one night's data from another's.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sample: Option<String>,
}

/// One drill's result.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DrillRecord {
    pub version: u32,
    pub snapshot: SnapshotId,
    /// The snapshot's source: `host:path[,path…]`.
    pub source: String,
    pub kind: DrillKind,
    pub started: DateTime<FixedOffset>,
    pub restore_seconds: f64,
    pub verify_seconds: f64,
    /// Bytes restored.
    pub bytes: u64,
    pub figures: Vec<Figure>,
    pub verdict: Verdict,
    /// Why the drill failed (the loader's first error line, the table that
    /// shrank, …); none when it passed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub failure: Option<String>,
}

impl DrillRecord {
    pub fn passed(&self) -> bool {
        self.verdict == Verdict::Passed
    }

    pub fn figure(&self, name: &str) -> Option<&Figure> {
        self.figures.iter().find(|f| f.name == name)
    }

    pub fn encode(&self) -> Vec<u8> {
        serde_json::to_vec(self).expect("drill record serializes")
    }

    /// Decodes a record's plaintext: the length first, then the fields,
    /// then every count and text length against the limits above.
    pub fn decode(plain: &[u8]) -> Result<DrillRecord> {
        if plain.len() > DRILL_RECORD_SIZE_MAX {
            return Err(Error::corrupt(
                "drill record is larger than the format allows",
            ));
        }
        let record: DrillRecord = serde_json::from_slice(plain)
            .map_err(|e| Error::corrupt(format!("drill record is not valid: {e}")))?;
        if record.version != DRILL_RECORD_VERSION {
            return Err(Error::new(
                ErrorKind::UnsupportedVersion,
                format!("drill record version {} is not supported", record.version),
            ));
        }
        record.validate().map_err(Error::corrupt)?;
        Ok(record)
    }

    /// The limits a writer keeps and a reader checks.
    pub fn validate(&self) -> std::result::Result<(), String> {
        if self.figures.len() > DRILL_FIGURES_MAX {
            return Err(format!(
                "drill record has {} figures, more than {DRILL_FIGURES_MAX}",
                self.figures.len()
            ));
        }
        let texts = [Some(&self.source), self.failure.as_ref()]
            .into_iter()
            .flatten()
            .chain(self.figures.iter().map(|f| &f.name))
            .chain(self.figures.iter().filter_map(|f| f.sample.as_ref()));
        for text in texts {
            if text.len() > DRILL_TEXT_MAX {
                return Err(format!(
                    "drill record has a text of {} bytes, more than {DRILL_TEXT_MAX}",
                    text.len()
                ));
            }
        }
        for seconds in [self.restore_seconds, self.verify_seconds] {
            if !seconds.is_finite() || seconds < 0.0 {
                return Err(format!("drill record has a duration of {seconds} seconds"));
            }
        }
        Ok(())
    }
}

/// Cuts a text to `DRILL_TEXT_MAX` bytes on a character boundary, for a
/// writer whose message or name comes from outside (a loader's error line,
/// a table name).
pub fn bounded_text(text: &str) -> String {
    if text.len() <= DRILL_TEXT_MAX {
        return text.to_string();
    }
    let mut end = DRILL_TEXT_MAX - 3;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}...", &text[..end])
}

/// Compares a drill's figures with the previous passed drill's: the first
/// figure that dropped by more than `max_shrink_percent` of its earlier
/// value, as a message naming it.
pub fn shrinkage(
    previous: &DrillRecord,
    now: &[Figure],
    max_shrink_percent: f64,
) -> Option<String> {
    for before in &previous.figures {
        if before.count == 0 {
            continue;
        }
        let after = now
            .iter()
            .find(|f| f.name == before.name)
            .map_or(0, |f| f.count);
        if after >= before.count {
            continue;
        }
        let dropped = (before.count - after) as f64 * 100.0 / before.count as f64;
        if dropped > max_shrink_percent {
            let gone = if now.iter().any(|f| f.name == before.name) {
                ""
            } else {
                " (it is gone)"
            };
            return Some(format!(
                "{} shrank from {} to {after} ({dropped:.1}% fewer, more than --max-shrink {max_shrink_percent}%) since the drill of snapshot {}{gone}",
                before.name,
                before.count,
                previous.snapshot.short()
            ));
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn record(figures: Vec<Figure>) -> DrillRecord {
        DrillRecord {
            version: DRILL_RECORD_VERSION,
            snapshot: SnapshotId::default(),
            source: "db1:/app.sql".into(),
            kind: DrillKind::Postgres,
            started: DateTime::parse_from_rfc3339("2026-12-01T03:00:00+00:00").unwrap(),
            restore_seconds: 1.5,
            verify_seconds: 2.25,
            bytes: 1234,
            figures,
            verdict: Verdict::Passed,
            failure: None,
        }
    }

    fn figure(name: &str, count: u64) -> Figure {
        Figure {
            name: name.into(),
            count,
            sample: None,
        }
    }

    #[test]
    fn a_table_that_shrank_past_the_limit_is_named() {
        let before = record(vec![figure("public.orders", 1000), figure("public.t", 10)]);
        assert_eq!(
            shrinkage(
                &before,
                &[figure("public.orders", 950), figure("public.t", 10)],
                10.0
            ),
            None
        );
        let why = shrinkage(
            &before,
            &[figure("public.orders", 0), figure("public.t", 10)],
            10.0,
        )
        .unwrap();
        assert!(
            why.starts_with("public.orders shrank from 1000 to 0"),
            "{why}"
        );
        let why = shrinkage(&before, &[figure("public.orders", 1000)], 10.0).unwrap();
        assert!(why.contains("public.t") && why.contains("gone"), "{why}");
    }

    #[test]
    fn records_past_the_limits_are_refused() {
        let mut r = record(vec![figure("x", 1); DRILL_FIGURES_MAX + 1]);
        assert!(DrillRecord::decode(&r.encode()).is_err());
        r.figures = vec![figure(&"n".repeat(DRILL_TEXT_MAX + 1), 1)];
        assert!(DrillRecord::decode(&r.encode()).is_err());
        r.figures.clear();
        r.version = 2;
        assert_eq!(
            DrillRecord::decode(&r.encode()).unwrap_err().kind(),
            ErrorKind::UnsupportedVersion
        );
        assert!(DrillRecord::decode(&vec![b' '; DRILL_RECORD_SIZE_MAX + 1]).is_err());
        assert_eq!(
            bounded_text(&"é".repeat(DRILL_TEXT_MAX)).len(),
            DRILL_TEXT_MAX - 1
        );
    }

    proptest! {
        #[test]
        fn records_round_trip(
            names in proptest::collection::vec("[a-z_.]{1,20}", 0..20),
            counts in proptest::collection::vec(any::<u64>(), 20),
            failure in proptest::option::of(".{0,60}"),
            bytes in any::<u64>(),
        ) {
            let figures = names
                .iter()
                .zip(&counts)
                .map(|(n, c)| Figure { name: n.clone(), count: *c, sample: Some(format!("{c:x}")) })
                .collect();
            let mut r = record(figures);
            r.bytes = bytes;
            r.failure = failure;
            r.verdict = if r.failure.is_some() { Verdict::Failed } else { Verdict::Passed };
            prop_assert_eq!(DrillRecord::decode(&r.encode()).unwrap(), r);
        }

        #[test]
        fn the_decoder_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..512)) {
            let _ = DrillRecord::decode(&bytes);
        }

        #[test]
        fn damaged_records_never_panic(cut in 0usize..400, flip in any::<u8>()) {
            let mut bytes = record(vec![figure("public.orders", 7)]).encode();
            let at = cut % bytes.len();
            bytes[at] ^= flip;
            let _ = DrillRecord::decode(&bytes);
            let _ = DrillRecord::decode(&bytes[..at]);
        }
    }
}
