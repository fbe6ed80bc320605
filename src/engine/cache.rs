//! The local caches of repositories under a cache root (`<root>/<repository
//! id in hex>`): listed, and removed once unused for a while (restic's
//! cache cleanup). Opening a repository touches its cache directory, so
//! the directory's modification time says when it was last used; a cache
//! is derived state (docs/FORMAT.md), so removing one loses nothing but
//! the time to build it again.
//!
//! Only directories named like a repository id (64 hex digits), owned by
//! this user and not symbolic links are ever considered: the cache root
//! may hold other things (build directories, tools) that are not cairn's
//! caches.

use crate::error::{Error, Result};
use serde::Serialize;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

/// Caches unused for this long are removed when a repository is opened.
pub const CACHE_MAX_AGE_DEFAULT: Duration = Duration::from_secs(30 * 24 * 3600);

/// One repository's cache directory.
#[derive(Debug, Clone, Serialize)]
pub struct CacheDir {
    pub path: PathBuf,
    /// Days since it was last used (whole days, rounded down).
    pub age_days: u64,
    /// Bytes of the files in it.
    pub bytes: u64,
    /// Unused for longer than the age given to `list_caches`.
    pub old: bool,
}

/// Marks a repository's cache directory as used now.
pub(crate) fn touch(dir: &Path) {
    if let Ok(f) = std::fs::File::open(dir) {
        let _ = f.set_modified(SystemTime::now());
    }
}

/// Whether `name` is a repository id in hex, as cache directories are named.
fn is_cache_name(name: &str) -> bool {
    name.len() == 64 && name.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
}

/// The repository caches under `root`, oldest first; `old` marks those
/// unused for longer than `max_age`. A root that does not exist has none.
pub fn list_caches(root: &Path, max_age: Duration) -> Result<Vec<CacheDir>> {
    let entries = match std::fs::read_dir(root) {
        Ok(entries) => entries,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(Error::io(format!("cannot list {}", root.display()), e)),
    };
    let (euid, _) = crate::sys::current_ids();
    let now = SystemTime::now();
    let mut found = Vec::new();
    for entry in entries.flatten() {
        let name = entry.file_name();
        if !name.to_str().is_some_and(is_cache_name) {
            continue;
        }
        let path = entry.path();
        let Ok(meta) = std::fs::symlink_metadata(&path) else {
            continue;
        };
        if !meta.is_dir() || std::os::unix::fs::MetadataExt::uid(&meta) != euid {
            continue;
        }
        // A time in the future (clocks disagree) is not old.
        let age = meta
            .modified()
            .ok()
            .and_then(|m| now.duration_since(m).ok())
            .unwrap_or_default();
        found.push((
            age,
            CacheDir {
                bytes: bytes_under(&path),
                path,
                age_days: age.as_secs() / 86_400,
                old: age > max_age,
            },
        ));
    }
    found.sort_by(|a, b| b.0.cmp(&a.0).then_with(|| a.1.path.cmp(&b.1.path)));
    Ok(found.into_iter().map(|(_, c)| c).collect())
}

/// Removes the caches under `root` unused for longer than `max_age`, except
/// `keep`; returns those removed. A cache that cannot be removed is left.
pub fn remove_old_caches(
    root: &Path,
    max_age: Duration,
    keep: Option<&Path>,
) -> Result<Vec<CacheDir>> {
    let mut removed = Vec::new();
    for cache in list_caches(root, max_age)? {
        if !cache.old || Some(cache.path.as_path()) == keep {
            continue;
        }
        if std::fs::remove_dir_all(&cache.path).is_ok() {
            removed.push(cache);
        }
    }
    Ok(removed)
}

/// Bytes of the regular files under `dir`, symbolic links not followed.
/// Bytes of the files in one repository's cache directory (`stats`).
pub fn cache_size(dir: &Path) -> u64 {
    bytes_under(dir)
}

fn bytes_under(dir: &Path) -> u64 {
    let mut total = 0;
    let mut dirs = vec![dir.to_path_buf()];
    while let Some(d) = dirs.pop() {
        for entry in std::fs::read_dir(&d).into_iter().flatten().flatten() {
            let Ok(meta) = entry.metadata() else {
                continue;
            };
            if meta.is_dir() {
                dirs.push(entry.path());
            } else if meta.is_file() {
                total += meta.len();
            }
        }
    }
    total
}

#[cfg(test)]
mod tests {
    use super::*;

    fn age(path: &Path, days: u64) {
        let f = std::fs::File::open(path).unwrap();
        f.set_modified(SystemTime::now() - Duration::from_secs(days * 86_400))
            .unwrap();
    }

    /// Only old directories named like a repository id go; build
    /// directories, files, symbolic links and the cache in use stay.
    #[test]
    fn only_old_repository_caches_are_removed() {
        let root = tempfile::tempdir().unwrap();
        let r = root.path();
        let hex = |c: char| c.to_string().repeat(64);
        for name in [hex('a'), hex('b'), hex('c'), "target-release".into()] {
            std::fs::create_dir(r.join(&name)).unwrap();
            std::fs::write(r.join(&name).join("x"), b"12345").unwrap();
        }
        std::fs::write(r.join(hex('d')), b"a file").unwrap();
        let elsewhere = tempfile::tempdir().unwrap();
        std::os::unix::fs::symlink(elsewhere.path(), r.join(hex('e'))).unwrap();
        for name in [hex('a'), hex('c'), "target-release".into()] {
            age(&r.join(name), 40);
        }
        age(&r.join(hex('b')), 3);

        let listed = list_caches(r, CACHE_MAX_AGE_DEFAULT).unwrap();
        let names: Vec<_> = listed.iter().map(|c| c.path.clone()).collect();
        assert_eq!(
            names,
            [r.join(hex('a')), r.join(hex('c')), r.join(hex('b'))]
        );
        assert_eq!(listed[0].age_days, 40);
        assert!(listed[0].old && !listed[2].old);
        assert_eq!(listed[0].bytes, 5);

        let removed = remove_old_caches(r, CACHE_MAX_AGE_DEFAULT, Some(&r.join(hex('c')))).unwrap();
        assert_eq!(removed.len(), 1);
        assert!(!r.join(hex('a')).exists());
        for kept in [
            hex('b'),
            hex('c'),
            hex('d'),
            hex('e'),
            "target-release".into(),
        ] {
            assert!(r.join(&kept).symlink_metadata().is_ok(), "{kept} removed");
        }
        assert!(elsewhere.path().exists());

        touch(&r.join(hex('c')));
        assert!(!list_caches(r, CACHE_MAX_AGE_DEFAULT).unwrap()[0].old);
        assert!(list_caches(&r.join("missing"), CACHE_MAX_AGE_DEFAULT)
            .unwrap()
            .is_empty());
    }
}
