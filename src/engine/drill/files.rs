//! The `files` and `tar` verifiers: every restored file read back to its
//! end and compared with the size the snapshot records; a tarball's
//! members all read (the decompressor checks its trailer, the tar reader
//! a member cut short); `--require` globs that must match a file.

use super::Verified;
use crate::engine::repository::Repository;
use crate::error::{Error, Result};
use crate::format::drill::{bounded_text, Figure};
use crate::format::snapshot::Snapshot;
use crate::format::tree::NodeKind;
use std::io::Read;
use std::path::Path;

fn matcher(require: &[String]) -> Result<Vec<(String, globset::GlobMatcher)>> {
    require
        .iter()
        .map(|g| {
            globset::Glob::new(g)
                .map(|glob| (g.clone(), glob.compile_matcher()))
                .map_err(|e| Error::invalid(format!("bad --require pattern {g:?}: {e}")))
        })
        .collect()
}

fn missing(require: &[(String, globset::GlobMatcher)], found: &[bool]) -> Option<String> {
    require
        .iter()
        .zip(found)
        .find(|(_, hit)| !**hit)
        .map(|((g, _), _)| format!("no file matches --require {g:?}"))
}

/// Reads a file to its end; its length.
fn read_back(path: &Path) -> std::io::Result<u64> {
    let mut f = std::fs::File::open(path)?;
    let mut buf = vec![0u8; 1 << 20];
    let mut total = 0u64;
    loop {
        match f.read(&mut buf) {
            Ok(0) => return Ok(total),
            Ok(n) => total += n as u64,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
}

/// Every file of the snapshot, read back from `root`.
pub(super) fn verify_files(
    repo: &Repository,
    snapshot: &Snapshot,
    root: &Path,
    require: &[String],
) -> Result<Verified> {
    let globs = matcher(require)?;
    let mut found = vec![false; globs.len()];
    let (mut files, mut dirs, mut bytes) = (0u64, 0u64, 0u64);
    let mut failure = None;
    crate::engine::browse::walk(repo, snapshot.tree, "", &mut |path, node| {
        if failure.is_some() {
            return Ok(());
        }
        let relative = path.trim_start_matches('/');
        let restored = root.join(relative);
        match node.kind {
            NodeKind::File => {
                repo.context().check_interrupt()?;
                match read_back(&restored) {
                    Ok(n) if n == node.size => {
                        files += 1;
                        bytes += n;
                    }
                    Ok(n) => {
                        failure = Some(bounded_text(&format!(
                            "{path}: read back {n} bytes, the snapshot records {}",
                            node.size
                        )))
                    }
                    Err(e) => {
                        failure = Some(bounded_text(&format!("{path}: cannot read back: {e}")))
                    }
                }
                for (hit, (_, glob)) in found.iter_mut().zip(&globs) {
                    *hit |= glob.is_match(relative);
                }
            }
            NodeKind::Dir => dirs += 1,
            _ => {
                if std::fs::symlink_metadata(&restored).is_err() {
                    failure = Some(bounded_text(&format!("{path}: not restored")));
                }
            }
        }
        Ok(())
    })?;
    let failure = failure.or_else(|| missing(&globs, &found));
    Ok(Verified {
        figures: vec![
            figure("files", files),
            figure("directories", dirs),
            figure("bytes", bytes),
        ],
        failure,
    })
}

fn figure(name: &str, count: u64) -> Figure {
    Figure {
        name: name.into(),
        count,
        sample: None,
    }
}

/// Every member of the tarball at `path` read to its end.
pub(super) fn verify_tar(
    ctx: &crate::context::Context,
    path: &Path,
    require: &[String],
) -> Result<Verified> {
    let globs = matcher(require)?;
    let mut found = vec![false; globs.len()];
    let mut file = std::fs::File::open(path)
        .map_err(|e| Error::io(format!("cannot open {}", path.display()), e))?;
    let mut buf = vec![0u8; 1 << 20];
    let name = path.display().to_string();
    let limits = crate::format::tar::Limits::default();
    let result =
        crate::format::tar::read_members(&mut file, &name, &limits, &mut |member, content| {
            ctx.check_interrupt()?;
            if let crate::format::tar::Member::Node { parts, .. } = &member {
                let joined = parts
                    .iter()
                    .map(|p| String::from_utf8_lossy(p).into_owned())
                    .collect::<Vec<_>>()
                    .join("/");
                for (hit, (_, glob)) in found.iter_mut().zip(&globs) {
                    *hit |= glob.is_match(&joined);
                }
            }
            loop {
                match content.read(&mut buf) {
                    Ok(0) => return Ok(()),
                    Ok(_) => {}
                    Err(e) => return Err(Error::corrupt(format!("{name}: {e}"))),
                }
            }
        });
    match result {
        Ok(decoded) => Ok(Verified {
            figures: vec![
                figure("members", decoded.members),
                figure("member bytes", decoded.content_bytes),
            ],
            failure: missing(&globs, &found),
        }),
        Err(e) if e.kind() == crate::error::ErrorKind::Interrupted => Err(e),
        Err(e) => Ok(Verified {
            figures: Vec::new(),
            failure: Some(bounded_text(&format!(
                "the tarball does not read back: {e}"
            ))),
        }),
    }
}
