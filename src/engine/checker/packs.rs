//! The pack files: each indexed pack's size against what its index entries
//! imply, packs no index names, and with `--read-data` (or a subset of
//! it) every blob of the chosen packs read, decrypted and re-hashed.

use crate::engine::checker::report::{CheckReport, NoteKind, Object, Problem, Status};
use crate::engine::checker::table::{Table, DAMAGED};
use crate::engine::checker::{CheckOptions, ReadData};
use crate::engine::repository::Repository;
use crate::error::{Error, ErrorKind, Result};
use crate::format::id::{BlobId, Id, PackId};
use crate::format::pack::{self, BlobKind, PackEntry};
use crate::storage::backend::FileKind;
use rayon::prelude::*;
use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::mpsc;

/// Compares the pack files with the table: missing and wrongly sized packs
/// are problems (their blobs that do not lie inside the file are marked
/// damaged), packs no index names and temporary files are notes. Returns
/// the pack files listed, with their sizes.
pub(crate) fn check_pack_files<S: Sync>(
    repo: &Repository<S>,
    table: &mut Table,
    report: &mut CheckReport,
) -> Result<HashMap<PackId, u64>> {
    let listed: HashMap<PackId, u64> = repo.list_packs()?.into_iter().collect();
    report.packs = listed.len() as u64;
    // Usable length of each indexed pack: 0 when missing. A blob that does
    // not lie wholly inside its pack cannot be read.
    let mut usable = vec![u64::MAX; table.packs.len()];
    for (n, pack) in table.packs.iter().enumerate() {
        match listed.get(pack) {
            None => {
                usable[n] = 0;
                report.problem(
                    Object::pack(pack),
                    Status::Missing,
                    "pack file is missing".into(),
                )
            }
            Some(&size) if size != table.pack_sizes[n] => {
                usable[n] = size;
                report.problem(
                    Object::pack(pack),
                    if size < table.pack_sizes[n] {
                        Status::Truncated
                    } else {
                        Status::Damaged
                    },
                    format!(
                        "pack file has {size} bytes, its index entries need {}",
                        table.pack_sizes[n]
                    ),
                )
            }
            Some(_) => {}
        }
    }
    if usable.iter().any(|&u| u != u64::MAX) {
        table.mark_where(DAMAGED, |row| {
            let end = u64::from(row.entry.offset) + u64::from(row.entry.length);
            end > usable[row.pack as usize]
        })?;
    }
    let unindexed: Vec<(&PackId, &u64)> = listed
        .iter()
        .filter(|(id, _)| !table.pack_numbers.contains_key(id))
        .collect();
    if !unindexed.is_empty() {
        let bytes: u64 = unindexed.iter().map(|(_, s)| **s).sum();
        report.note(
            NoteKind::UnindexedPacks,
            format!(
                "{} pack(s) ({bytes} bytes) are not in any index (left by an interrupted backup, \
                 or their index file is damaged)",
                unindexed.len()
            ),
        );
    }
    // Counted, never deleted: the checker does not write, and a temporary
    // file may belong to a backup running now. (`Repository::sweep_temp_files`
    // wants an exclusive lock even to count, so the backend is asked.)
    if let Ok((files, bytes)) = repo.backend().sweep_temp_files(true) {
        if files > 0 {
            report.note(
                NoteKind::TemporaryFiles,
                format!(
                    "{files} temporary file(s) ({bytes} bytes) of interrupted or running writes"
                ),
            );
        }
    }
    Ok(listed)
}

/// The packs `--read-data` reads: indexed packs that exist, by selection.
fn select_packs(options: &CheckOptions, table: &Table, listed: &HashMap<PackId, u64>) -> Vec<u32> {
    let mut candidates: Vec<u32> = (0..table.packs.len() as u32)
        .filter(|&n| listed.contains_key(&table.packs[n as usize]))
        .collect();
    match options.read_data {
        ReadData::None => Vec::new(),
        ReadData::All => candidates,
        ReadData::Slice { n, of } => candidates
            .into_iter()
            .filter(|&p| {
                let id = table.packs[p as usize];
                let prefix = u64::from_be_bytes(id.as_bytes()[..8].try_into().expect("8"));
                prefix % u64::from(of) == u64::from(n - 1)
            })
            .collect(),
        ReadData::Fraction(share) => {
            shuffle(&mut candidates);
            let count = ((candidates.len() as f64) * share).ceil() as usize;
            candidates.truncate(count.max(1).min(candidates.len()));
            candidates
        }
        ReadData::Bytes(budget) => {
            shuffle(&mut candidates);
            let mut total = 0u64;
            candidates
                .into_iter()
                .take_while(|&p| {
                    let before = total;
                    total += listed[&table.packs[p as usize]];
                    before < budget
                })
                .collect()
        }
    }
}

fn shuffle(items: &mut [u32]) {
    let seed = Id::random();
    let mut state = u64::from_le_bytes(seed.0[..8].try_into().expect("8")) | 1;
    for i in (1..items.len()).rev() {
        // xorshift64: a sample only needs to differ from run to run.
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        items.swap(i, (state % (i as u64 + 1)) as usize);
    }
}

/// What reading one pack found.
struct PackRead {
    pack: u32,
    bytes: u64,
    problems: Vec<Problem>,
    /// Blobs whose sealed bytes fail to open or verify.
    damaged: Vec<(BlobKind, BlobId)>,
    /// The whole pack is unusable (hash or header failed).
    unusable: bool,
}

/// Reads the packs `options` selects, on `options.read_threads` threads,
/// reports what is damaged and marks the damaged blobs in the table.
pub(crate) fn read_packs<S: Sync>(
    repo: &Repository<S>,
    options: &CheckOptions,
    listed: &HashMap<PackId, u64>,
    table: &mut Table,
    report: &mut CheckReport,
) -> Result<()> {
    let ctx = repo.context();
    let selected = select_packs(options, table, listed);
    let selected_bytes = selected
        .iter()
        .map(|&n| listed.get(&table.packs[n as usize]).copied().unwrap_or(0))
        .sum();
    ctx.progress()
        .start("reading packs", selected_bytes, selected.len() as u64);
    let shared: &Table = table;
    let counted = |read: Result<PackRead>| {
        let progress = ctx.progress();
        progress.add_items(1);
        progress.add_bytes(read.as_ref().map_or(0, |r| r.bytes));
        read
    };
    let results: Vec<Result<PackRead>> = match repo.backend().connections() {
        Some(connections) => read_remote_packs(repo, shared, &selected, connections)
            .into_iter()
            .map(counted)
            .collect(),
        None => {
            let pool = rayon::ThreadPoolBuilder::new()
                .num_threads(options.read_threads.max(1))
                .build()
                .map_err(|e| {
                    Error::new(ErrorKind::Io, format!("cannot start reader threads: {e}"))
                })?;
            pool.install(|| {
                selected
                    .par_iter()
                    .map(|&n| {
                        ctx.check_interrupt()?;
                        counted(read_pack(repo, shared, n))
                    })
                    .collect()
            })
        }
    };
    let mut unusable = Vec::new();
    let mut damaged = Vec::new();
    for result in results {
        let read = result?;
        report.packs_read += 1;
        report.bytes_read += read.bytes;
        for p in read.problems {
            report.problem(p.object, p.status, p.message);
        }
        if read.unusable {
            unusable.push(read.pack);
        }
        damaged.extend(read.damaged.into_iter().map(|b| (read.pack, b)));
    }
    for (pack, (kind, id)) in damaged {
        table.mark_copy(kind, &id, pack, DAMAGED);
    }
    let unusable: HashSet<u32> = unusable.into_iter().collect();
    if !unusable.is_empty() {
        table.mark_where(DAMAGED, |row| unusable.contains(&row.pack))?;
    }
    Ok(())
}

/// Reads the selected packs of a remote repository: `connections` IO
/// threads fetch whole packs while the CPU pool verifies the ones fetched.
/// Memory: at most `connections` packs being fetched or waiting, plus one
/// being verified per core. The first error stops the IO threads at their
/// next pack.
fn read_remote_packs<S: Sync>(
    repo: &Repository<S>,
    table: &Table,
    selected: &[u32],
    connections: usize,
) -> Vec<Result<PackRead>> {
    let ctx = repo.context();
    let next = AtomicUsize::new(0);
    // Rendezvous: a fetched pack waits on its IO thread for the CPU pool.
    let (tx, rx) = mpsc::sync_channel::<Result<(u32, Fetched)>>(0);
    std::thread::scope(|scope| {
        for _ in 0..connections.min(selected.len()) {
            let (tx, next) = (tx.clone(), &next);
            scope.spawn(move || {
                while let Some(&n) = selected.get(next.fetch_add(1, Ordering::Relaxed)) {
                    let got = ctx
                        .check_interrupt()
                        .and_then(|()| fetch_pack(repo, table, n))
                        .map(|fetched| (n, fetched));
                    let failed = got.is_err();
                    if tx.send(got).is_err() || failed {
                        break;
                    }
                }
            });
        }
        drop(tx);
        let mut results: Vec<Result<PackRead>> = rx
            .into_iter()
            .par_bridge()
            .map(|got| got.and_then(|(n, fetched)| verify_pack(repo, table, n, fetched)))
            .collect();
        // Errors first, so the caller stops at one of them.
        results.sort_by_key(|r| r.is_ok());
        results
    })
}

/// A pack's bytes, or what reading it found when there are none to verify.
type Fetched = std::result::Result<Vec<u8>, PackRead>;

fn read_pack<S: Sync>(repo: &Repository<S>, table: &Table, n: u32) -> Result<PackRead> {
    let fetched = fetch_pack(repo, table, n)?;
    verify_pack(repo, table, n, fetched)
}

fn fetch_pack<S: Sync>(repo: &Repository<S>, table: &Table, n: u32) -> Result<Fetched> {
    let id = table.packs[n as usize];
    let mut read = PackRead {
        pack: n,
        bytes: 0,
        problems: Vec::new(),
        damaged: Vec::new(),
        unusable: false,
    };
    // Bounded by the largest pack the format allows, so that a huge file
    // is reported damaged rather than read (`Repository::read_pack` reads
    // whatever is there).
    match repo
        .backend()
        .get_bounded(FileKind::Pack, &id.to_hex(), pack::PACK_SIZE_MAX as usize)
    {
        Ok(bytes) => Ok(Ok(bytes)),
        Err(e) if e.kind() == ErrorKind::NotFound => Ok(Err(read)),
        Err(e) if e.kind() == ErrorKind::Corrupt => {
            read.problems.push(Problem {
                object: Object::pack(&id),
                status: Status::Damaged,
                message: e.to_string(),
            });
            read.unusable = true;
            Ok(Err(read))
        }
        Err(e) => Err(e),
    }
}

/// Verifies a fetched pack: its hash, its header against the index, and
/// every blob.
fn verify_pack<S: Sync>(
    repo: &Repository<S>,
    table: &Table,
    n: u32,
    fetched: Fetched,
) -> Result<PackRead> {
    let bytes = match fetched {
        Ok(bytes) => bytes,
        Err(read) => return Ok(read),
    };
    let id = table.packs[n as usize];
    let object = Object::pack(&id);
    let mut read = PackRead {
        pack: n,
        bytes: 0,
        problems: Vec::new(),
        damaged: Vec::new(),
        unusable: false,
    };
    read.bytes = bytes.len() as u64;
    if Id::of_file_bytes(&bytes) != id.0 {
        read.problems.push(Problem {
            object: object.clone(),
            status: Status::Damaged,
            message: "pack file does not match its name (its bytes changed)".into(),
        });
    }
    let header = match repo.decode_pack_header(&bytes) {
        Ok(header) => header,
        Err(e) => {
            read.problems.push(Problem {
                object,
                status: Status::Damaged,
                message: format!("pack header is unreadable: {e}"),
            });
            // Blobs may still be intact; judge each by its index entry.
            for row in table.rows_of_pack(n)? {
                if open_at(repo, &bytes, &row.entry).is_err() {
                    read.damaged.push((row.entry.kind, row.entry.id));
                }
            }
            return Ok(read);
        }
    };
    let mut matched = 0u32;
    for entry in &header {
        let indexed = table
            .range(entry.kind, &entry.id)
            .iter()
            .any(|r| r.pack == n && r.entry == *entry);
        if indexed {
            matched += 1;
        } else {
            read.problems.push(Problem {
                object: object.clone(),
                status: Status::Mismatch,
                message: format!(
                    "{:?} blob {} is in the pack header but not indexed at this place",
                    entry.kind, entry.id
                ),
            });
        }
        if let Err(e) = open_at(repo, &bytes, entry) {
            read.problems.push(Problem {
                object: Object::blob(entry.kind, &entry.id),
                status: Status::Damaged,
                message: format!("in pack {}: {e}", id.short()),
            });
            read.damaged.push((entry.kind, entry.id));
        }
    }
    if matched != table.pack_blobs[n as usize] {
        read.problems.push(Problem {
            object,
            status: Status::Mismatch,
            message: format!(
                "the index lists {} blobs in this pack, its header {} of them",
                table.pack_blobs[n as usize], matched
            ),
        });
    }
    Ok(read)
}

fn open_at<S: Sync>(repo: &Repository<S>, pack_bytes: &[u8], entry: &PackEntry) -> Result<Vec<u8>> {
    let start = entry.offset as usize;
    let end = start
        .checked_add(entry.length as usize)
        .filter(|&end| end <= pack_bytes.len())
        .ok_or_else(|| Error::corrupt("blob lies outside the pack"))?;
    repo.open_blob(entry, &pack_bytes[start..end])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slices_cover_every_pack_exactly_once() {
        let packs: Vec<PackId> = (0..500).map(|_| PackId(Id::random())).collect();
        let table = Table::of_packs(packs.clone());
        let listed: HashMap<PackId, u64> = packs.iter().map(|p| (*p, 1)).collect();
        let mut seen = vec![0u32; packs.len()];
        for n in 1..=7 {
            let options = CheckOptions {
                read_data: ReadData::Slice { n, of: 7 },
                ..CheckOptions::default()
            };
            for p in select_packs(&options, &table, &listed) {
                seen[p as usize] += 1;
            }
        }
        assert!(seen.iter().all(|&c| c == 1));
        let options = CheckOptions {
            read_data: ReadData::Fraction(0.1),
            ..CheckOptions::default()
        };
        assert_eq!(select_packs(&options, &table, &listed).len(), 50);
        let options = CheckOptions {
            read_data: ReadData::Bytes(20),
            ..CheckOptions::default()
        };
        assert_eq!(select_packs(&options, &table, &listed).len(), 20);
    }
}
