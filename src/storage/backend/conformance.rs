//! The written contract of `Backend` as assertions, run against every
//! backend: `LocalBackend` and `MemoryBackend` in the unit tests, and
//! `S3Backend` on real servers in the integration tests (tests/it/s3.rs).
//! Test code: built only for tests and with the `failpoints` feature.

use super::{Backend, FileKind};
use crate::error::ErrorKind;

/// The assertions every backend must pass: the written contract of
/// `Backend`, and what `LocalBackend` does where the contract is silent
/// (a put over an existing name, name checks, error kinds).
pub fn conforms(backend: &dyn Backend) {
    // Before `create`, nothing is there to list.
    assert!(!backend.exists().unwrap());
    assert_eq!(
        backend.list(FileKind::Index).unwrap_err().kind(),
        ErrorKind::NotFound
    );
    backend.create().unwrap();
    assert!(!backend.exists().unwrap());
    for kind in [FileKind::Key, FileKind::Snapshot, FileKind::Pack] {
        assert_eq!(backend.list(kind).unwrap(), vec![]);
    }

    backend
        .put(FileKind::Config, "config", b"sealed config")
        .unwrap();
    assert!(backend.exists().unwrap());
    assert_eq!(
        backend.get(FileKind::Config, "config").unwrap(),
        b"sealed config"
    );
    assert_eq!(backend.list(FileKind::Config).unwrap(), vec![]);
    // A create-if-absent never replaces the config.
    assert!(!backend
        .put_new(FileKind::Config, "config", b"another config")
        .unwrap());
    assert_eq!(
        backend.get(FileKind::Config, "config").unwrap(),
        b"sealed config"
    );
    assert!(backend.put_new(FileKind::Key, "k1", b"key").unwrap());
    assert_eq!(backend.get(FileKind::Key, "k1").unwrap(), b"key");
    assert_eq!(
        backend.create().unwrap_err().kind(),
        ErrorKind::RepositoryExists
    );

    // A put over an existing name replaces the file.
    backend.put(FileKind::Snapshot, "s1", b"first").unwrap();
    backend.put(FileKind::Snapshot, "s1", b"second!").unwrap();
    assert_eq!(backend.get(FileKind::Snapshot, "s1").unwrap(), b"second!");
    assert_eq!(backend.size(FileKind::Snapshot, "s1").unwrap(), 7);

    // Each kind is its own namespace, listed in name order with sizes.
    backend.put(FileKind::Pack, "ff01", b"pack two").unwrap();
    backend.put(FileKind::Pack, "00ab", b"pack").unwrap();
    backend.put(FileKind::Index, "00ab", b"index").unwrap();
    assert_eq!(
        backend.list(FileKind::Pack).unwrap(),
        vec![("00ab".to_string(), 4), ("ff01".to_string(), 8)]
    );
    assert_eq!(
        backend.list(FileKind::Index).unwrap(),
        vec![("00ab".to_string(), 5)]
    );
    assert_eq!(
        backend.list(FileKind::Snapshot).unwrap(),
        vec![("s1".to_string(), 7)]
    );

    // Ranges: exactly the bytes asked for, or Corrupt past the end.
    assert_eq!(
        backend.get_range(FileKind::Pack, "ff01", 5, 3).unwrap(),
        b"two"
    );
    assert_eq!(
        backend.get_range(FileKind::Pack, "ff01", 8, 0).unwrap(),
        b""
    );
    for (offset, length) in [(5, 4), (9, 0), (1, u64::MAX)] {
        assert_eq!(
            backend
                .get_range(FileKind::Pack, "ff01", offset, length)
                .unwrap_err()
                .kind(),
            ErrorKind::Corrupt,
            "{offset}+{length}"
        );
    }
    assert_eq!(
        backend
            .get_bounded(FileKind::Pack, "ff01", 7)
            .unwrap_err()
            .kind(),
        ErrorKind::Corrupt
    );
    assert_eq!(
        backend.get_bounded(FileKind::Pack, "ff01", 8).unwrap(),
        b"pack two"
    );

    // Missing files are NotFound, whatever is asked of them.
    let missing = "0123";
    assert_eq!(
        backend.get(FileKind::Pack, missing).unwrap_err().kind(),
        ErrorKind::NotFound
    );
    assert_eq!(
        backend
            .get_range(FileKind::Pack, missing, 0, 1)
            .unwrap_err()
            .kind(),
        ErrorKind::NotFound
    );
    assert_eq!(
        backend.size(FileKind::Pack, missing).unwrap_err().kind(),
        ErrorKind::NotFound
    );
    assert_eq!(
        backend.delete(FileKind::Pack, missing).unwrap_err().kind(),
        ErrorKind::NotFound
    );
    assert_eq!(
        backend
            .modified(FileKind::Pack, missing)
            .unwrap_err()
            .kind(),
        ErrorKind::NotFound
    );
    // A stored file's time is known (prune's minimum age needs it).
    let written = backend.modified(FileKind::Pack, "ff01").unwrap().unwrap();
    assert!(written <= std::time::SystemTime::now());

    // Names that could escape a directory, or name no pack directory.
    for (kind, name) in [
        (FileKind::Snapshot, ""),
        (FileKind::Snapshot, "a/b"),
        (FileKind::Index, ".hidden"),
        (FileKind::Pack, "a"),
    ] {
        assert_eq!(
            backend.put(kind, name, b"x").unwrap_err().kind(),
            ErrorKind::InvalidInput,
            "{name:?}"
        );
        assert_eq!(
            backend.get(kind, name).unwrap_err().kind(),
            ErrorKind::InvalidInput,
            "{name:?}"
        );
    }

    // A pending file is visible only once committed, whole.
    let mut pending = backend.create_pending(FileKind::Pack).unwrap();
    pending.write(b"in ").unwrap();
    pending.write(b"pieces").unwrap();
    assert_eq!(backend.list(FileKind::Pack).unwrap().len(), 2);
    pending.commit("abcd").unwrap();
    assert_eq!(backend.get(FileKind::Pack, "abcd").unwrap(), b"in pieces");
    let mut dropped = backend.create_pending(FileKind::Pack).unwrap();
    dropped.write(b"never named").unwrap();
    drop(dropped);
    assert_eq!(
        backend.list(FileKind::Pack).unwrap(),
        vec![
            ("00ab".to_string(), 4),
            ("abcd".to_string(), 9),
            ("ff01".to_string(), 8)
        ]
    );
    let pending = backend.create_pending(FileKind::Pack).unwrap();
    assert_eq!(
        pending.commit("").unwrap_err().kind(),
        ErrorKind::InvalidInput
    );
    // Nothing a crashed writer left behind: no temp files to sweep.
    assert_eq!(backend.sweep_temp_files(true).unwrap(), (0, 0));

    // Delete removes the file and only it.
    backend.delete(FileKind::Pack, "00ab").unwrap();
    assert_eq!(
        backend.get(FileKind::Pack, "00ab").unwrap_err().kind(),
        ErrorKind::NotFound
    );
    assert_eq!(backend.get(FileKind::Index, "00ab").unwrap(), b"index");
}
