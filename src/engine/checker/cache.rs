//! The local index cache, compared with the checker's own table: the one
//! thing a check may write. A cache that cannot be read or disagrees with
//! the index files is rebuilt from them; the repository is never written.

use crate::engine::checker::report::{CheckReport, NoteKind};
use crate::engine::checker::table::Table;
use crate::engine::repository::Repository;
use crate::error::Result;
use crate::format::id::IndexId;
use crate::storage::index_cache::{BlobLocation, IndexDb};
use std::collections::HashSet;

/// Compares the local index cache with the checker's own table; a cache
/// that cannot be read or disagrees is rebuilt from the index files.
pub(crate) fn verify_cache<S: Sync>(
    repo: &Repository<S>,
    table: &Table,
    good_index_files: &[IndexId],
    report: &mut CheckReport,
) -> Result<()> {
    let Some(cache_dir) = repo.cache_dir() else {
        // No cache on disk: the one in memory was built from these files.
        return Ok(());
    };
    let mut db = match IndexDb::open(cache_dir, repo.config().id) {
        Ok(db) => db,
        Err(e) => {
            report.note(
                NoteKind::CacheUnopenable,
                format!("the local index cache cannot be opened: {e}"),
            );
            return Ok(());
        }
    };
    if db.is_temporary() {
        // Another process holds the cache; it keeps it in sync itself.
        return Ok(());
    }
    let listed: HashSet<IndexId> = good_index_files.iter().copied().collect();
    let mut trouble = if db.was_recreated() {
        Some("could not be opened (damaged)".to_string())
    } else {
        None
    };
    if trouble.is_none() {
        trouble = match db.merged_index_files() {
            Ok(merged) if !merged.is_subset(&listed) => None, // stale: load_index rebuilds it
            Ok(_) => {
                // Both are in (kind, id) order: one pass over each.
                let mut wrong = 0u64;
                let mut rows = table.cursor();
                let mut failed = None;
                let scan = db.for_each_blob(|kind, BlobLocation { pack, entry }| {
                    if failed.is_some() {
                        return;
                    }
                    let key = (kind, entry.id);
                    let mut ok = false;
                    loop {
                        match rows.peek() {
                            Ok(Some(r)) if (r.entry.kind, r.entry.id) < key => rows.advance(),
                            Ok(Some(r)) if (r.entry.kind, r.entry.id) == key => {
                                ok |= r.entry == entry && table.packs[r.pack as usize] == pack;
                                rows.advance();
                            }
                            Ok(_) => break,
                            Err(e) => {
                                failed = Some(e);
                                break;
                            }
                        }
                    }
                    if !ok {
                        wrong += 1;
                    }
                });
                if let Some(e) = failed {
                    return Err(e);
                }
                match scan {
                    Err(e) => Some(format!("is unreadable ({e})")),
                    Ok(()) if wrong > 0 => {
                        Some(format!("had {wrong} entries no index file contains"))
                    }
                    Ok(()) => None,
                }
            }
            Err(e) => Some(format!("is unreadable ({e})")),
        };
    }
    if let Some(trouble) = trouble {
        report.note(
            NoteKind::CacheRebuilt,
            format!("the local index cache {trouble}; it was rebuilt from the index files"),
        );
        db.rebuild_empty()?;
        for id in good_index_files {
            db.merge(*id, &repo.load_index_file(id)?)?;
        }
    }
    Ok(())
}
