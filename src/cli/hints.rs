//! What the CLI tells a user to run after `check`: the remedies and notes
//! the library reports as types, turned into the command lines of this
//! binary. The library names no command; only this module does.

use cairn::engine::checker::{CheckReport, Note, NoteKind, Remedy};

/// The hint line for one remedy.
pub(crate) fn hint_text(remedy: Remedy) -> &'static str {
    match remedy {
        Remedy::RepairIndex => {
            "`cairn repair index` rebuilds the index from the packs that exist (it drops packs that are gone and adds packs no index names)"
        }
        Remedy::RepairIndexReadData => {
            "`cairn repair index --read-data` moves the intact blobs of damaged packs into new packs and drops the damaged ones from the index"
        }
        Remedy::RepairSnapshotsForget => {
            "`cairn repair snapshots --forget` rewrites the damaged snapshots without the unrestorable files (run `repair index` first); restore them from another copy if you have one"
        }
    }
}

/// What to run about a note, appended to its text; `None` when nothing.
fn note_command(kind: NoteKind) -> Option<&'static str> {
    match kind {
        NoteKind::UnusedBlobs => Some("`cairn prune` removes them"),
        NoteKind::UnindexedPacks => {
            Some("`cairn repair index` indexes them, `cairn prune` removes unused ones")
        }
        NoteKind::TemporaryFiles => Some("`cairn prune` removes them when no backup is running"),
        NoteKind::SupersededIndexFile
        | NoteKind::CacheUnopenable
        | NoteKind::CacheRebuilt
        | NoteKind::Keyless
        | NoteKind::MarkedPacks => None,
    }
}

/// A note as printed: its text, then what to run about it.
pub(crate) fn note_text(note: &Note) -> String {
    match note_command(note.kind) {
        Some(command) => format!("{}; {command}", note.text),
        None => note.text.clone(),
    }
}

/// The report's hints, in its remedies' order.
pub(crate) fn hint_texts(report: &CheckReport) -> Vec<&'static str> {
    report.remedies.iter().map(|&r| hint_text(r)).collect()
}

/// The report's notes as printed.
pub(crate) fn note_texts(report: &CheckReport) -> Vec<String> {
    report.notes.iter().map(note_text).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn notes_read_as_the_checker_wrote_them_before_the_split() {
        let note = |kind, text: &str| Note {
            kind,
            text: text.into(),
        };
        assert_eq!(
            note_text(&note(
                NoteKind::UnusedBlobs,
                "4 blobs (1171 bytes) are not used by any snapshot"
            )),
            "4 blobs (1171 bytes) are not used by any snapshot; `cairn prune` removes them"
        );
        assert_eq!(
            note_text(&note(
                NoteKind::TemporaryFiles,
                "1 temporary file(s) (9 bytes) of interrupted or running writes"
            )),
            "1 temporary file(s) (9 bytes) of interrupted or running writes; `cairn prune` removes them when no backup is running"
        );
        assert_eq!(
            note_text(&note(NoteKind::CacheRebuilt, "the local index cache x")),
            "the local index cache x"
        );
    }
}
