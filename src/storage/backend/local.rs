//! A repository in a local directory. Writes go to a temp file in the target
//! directory, are fsynced, renamed into place, and the directory is fsynced,
//! so a crash leaves either the whole file or none of it.

use super::{Backend, FileKind, PendingFile};
use crate::error::{Error, ErrorKind, Result};
use std::fs::{self, File, OpenOptions};
use std::io::Write;
use std::os::unix::fs::{FileExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// Temp files start with this; `list` skips them, `check` may report them.
pub const TEMP_PREFIX: &str = ".tmp-";

pub struct LocalBackend {
    root: PathBuf,
    /// Recently read packs, open, with their sizes. A restore reads
    /// thousands of blobs from the same few packs; opening and stat'ing the
    /// pack for each blob cost a fifth of a restore's system time. Packs
    /// never change under their name, so a handle stays valid until the
    /// pack is deleted (which drops it).
    open_packs: std::sync::Mutex<std::collections::VecDeque<(String, Arc<File>, u64)>>,
}

/// How many pack handles `LocalBackend` keeps open.
const OPEN_PACKS_MAX: usize = 16;

impl LocalBackend {
    pub fn new(root: impl Into<PathBuf>) -> LocalBackend {
        LocalBackend {
            root: root.into(),
            open_packs: Default::default(),
        }
    }

    /// An open handle and the size of a file to read ranges of.
    fn open_for_ranges(&self, kind: FileKind, name: &str, path: &Path) -> Result<(Arc<File>, u64)> {
        let cached = kind == FileKind::Pack;
        if cached {
            let open = self.open_packs.lock().unwrap_or_else(|e| e.into_inner());
            if let Some((_, file, size)) = open.iter().find(|(n, _, _)| n == name) {
                return Ok((file.clone(), *size));
            }
        }
        let (file, size) = self.open_regular(kind, name, path)?;
        let file = Arc::new(file);
        if cached {
            let mut open = self.open_packs.lock().unwrap_or_else(|e| e.into_inner());
            if open.len() >= OPEN_PACKS_MAX {
                open.pop_front();
            }
            open.push_back((name.to_string(), file.clone(), size));
        }
        Ok((file, size))
    }

    fn forget_open(&self, kind: FileKind, name: &str) {
        if kind == FileKind::Pack {
            let mut open = self.open_packs.lock().unwrap_or_else(|e| e.into_inner());
            open.retain(|(n, _, _)| n != name);
        }
    }

    /// Opens a repository file to read: no symbolic link followed below
    /// the root, no FIFO waited on, only a regular file (`open_regular_beneath`).
    fn open_regular(&self, kind: FileKind, name: &str, path: &Path) -> Result<(File, u64)> {
        let packs_dir;
        let dirs: &[&str] = match kind {
            FileKind::Config => &[],
            FileKind::Pack => {
                packs_dir = [kind.dir(), name.get(..2).unwrap_or(name)];
                &packs_dir
            }
            _ => &[kind.dir()],
        };
        let file_name = match kind {
            FileKind::Config => "config",
            _ => name,
        };
        crate::sys::fs::open_regular_beneath(&self.root, dirs, file_name)
            .map_err(|e| read_error(path, "open", e))
    }

    fn path(&self, kind: FileKind, name: &str) -> Result<PathBuf> {
        // Names come from our own code or from user-given ids; refuse anything
        // that could escape the repository.
        if name.is_empty() || name.contains('/') || name.starts_with('.') {
            return Err(Error::invalid(format!(
                "invalid repository file name {name:?}"
            )));
        }
        Ok(match kind {
            FileKind::Config => self.root.join("config"),
            FileKind::Pack => {
                // `get`, not slicing: a planted name listed from a pack
                // directory may start with a multi-byte character.
                let Some(prefix) = name.get(..2) else {
                    return Err(Error::invalid(format!("invalid pack name {name:?}")));
                };
                self.root.join("packs").join(prefix).join(name)
            }
            _ => self.root.join(kind.dir()).join(name),
        })
    }
}

/// A read that failed: a planted symlink, FIFO or device, or a file larger
/// than it may be, is damage (`Corrupt`, naming the file); anything else is
/// the OS error (`NotFound` for a missing file).
fn read_error(path: &Path, verb: &str, e: std::io::Error) -> Error {
    if e.kind() == std::io::ErrorKind::InvalidData {
        Error::corrupt(format!("{} is {e}", path.display()))
    } else {
        Error::storage_io(format!("cannot {verb} {}", path.display()), e)
    }
}

/// Repository directories are the owner's alone, as restic makes them:
/// the names and sizes of packs tell other local users how much changed.
fn create_private_dir(path: &Path) -> Result<()> {
    use std::os::unix::fs::DirBuilderExt;
    fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(path)
        .map_err(|e| Error::storage_io(format!("cannot create {}", path.display()), e))
}

fn temp_path(dir: &Path) -> PathBuf {
    dir.join(format!(
        "{TEMP_PREFIX}{}",
        hex::encode(crate::sys::random_bytes::<8>())
    ))
}

fn create_temp(path: &Path) -> std::io::Result<File> {
    // Owner-only, as restic: key files and metadata sizes are private.
    OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
}

/// Test hook: a full disk for pack writes, for machines where the tests
/// cannot mount a small filesystem (`CAIRN_FAILPOINT=enospc`).
fn full_disk_hook(kind: FileKind) -> std::io::Result<()> {
    if kind == FileKind::Pack && crate::failpoint::is_set!("enospc") {
        return Err(crate::sys::fs::full_disk_error());
    }
    Ok(())
}

/// A file streamed to a temp file in its kind's directory (`packs/` for
/// packs, whose final subdirectory depends on the name) and renamed into
/// place on commit. Dropped uncommitted, it deletes the temp file; after a
/// crash the temp file stays, and `list` skips it.
struct LocalPending<'b> {
    backend: &'b LocalBackend,
    kind: FileKind,
    temp: PathBuf,
    file: Option<File>,
    /// Bytes written so far, and how many of them were written before the
    /// last `write` (the previous piece ends there).
    written: u64,
    piece_start: u64,
    /// Bytes on disk whose pages were dropped from the page cache.
    dropped: u64,
    /// The file system cannot wait for a range's writeback.
    no_wait: bool,
}

impl PendingFile for LocalPending<'_> {
    fn write(&mut self, bytes: &[u8]) -> Result<()> {
        let file = self.file.as_mut().expect("written only before commit");
        full_disk_hook(self.kind)
            .and_then(|()| file.write_all(bytes))
            .map_err(|e| Error::storage_io(format!("cannot write {}", self.temp.display()), e))?;
        self.piece_start = self.written;
        self.written += bytes.len() as u64;
        // Start writing what is dirty to disk now, without waiting, so the
        // fsync at commit has little left to do and does not stall the
        // backup for a whole pack's worth of writeback. Advisory: without
        // waiting it reports no writeback error, which the next wait or the
        // fsync at commit does.
        crate::sys::fs::start_writeback(file);
        // The pieces before this one were sent to disk a write ago: wait
        // for them (usually done already) and drop their pages from the page
        // cache. A night's packs then do not push the host's working set (a
        // database's pages) out of memory, and each piece reuses the pages
        // of the one before instead of taking fresh ones: on a VM whose host
        // reclaims free guest memory, fresh pages were most of the system
        // time of a pack write. The fsync at commit stays.
        let (start, length) = (self.dropped, self.piece_start - self.dropped);
        if length > 0 && !self.no_wait {
            match crate::sys::fs::wait_writeback(file, start, length) {
                // Advisory: pages that stay cached cost only memory.
                Ok(true) => {
                    crate::sys::fs::drop_cached_pages(file, start, length);
                    self.dropped = self.piece_start;
                }
                // The file system cannot do this: keep the pages.
                Ok(false) => self.no_wait = true,
                // A writeback error (EIO, ENOSPC, ...). Waiting consumed
                // it: the fsync at commit would no longer report it, so
                // it fails the pack here.
                Err(e) => {
                    return Err(Error::storage_io(
                        format!("cannot write {}", self.temp.display()),
                        e,
                    ))
                }
            }
        }
        Ok(())
    }

    fn commit(mut self: Box<Self>, name: &str) -> Result<()> {
        let target = self.backend.path(self.kind, name)?;
        let dir = target
            .parent()
            .expect("repository files live in a directory");
        let file = self.file.take().expect("committed once");
        let result = file
            .sync_all()
            .and_then(|()| fs::rename(&self.temp, &target))
            .map_err(|e| Error::storage_io(format!("cannot write {}", target.display()), e));
        drop(file);
        result?;
        // Renamed: nothing left for Drop to delete.
        self.temp = PathBuf::new();
        sync_dir(dir)
    }
}

impl Drop for LocalPending<'_> {
    fn drop(&mut self) {
        if !self.temp.as_os_str().is_empty() {
            let _ = fs::remove_file(&self.temp);
        }
    }
}

fn sync_dir(dir: &Path) -> Result<()> {
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(|e| Error::storage_io(format!("cannot sync directory {}", dir.display()), e))
}

/// A kind's directory that is a symbolic link would list (and, through
/// the same link, read) files from outside the repository.
fn refuse_symlinked_dir(dir: &Path) -> Result<()> {
    match fs::symlink_metadata(dir) {
        Ok(meta) if meta.file_type().is_symlink() => Err(Error::corrupt(format!(
            "{} is a symbolic link, where only directories belong",
            dir.display()
        ))),
        // A missing directory is reported by the listing itself.
        _ => Ok(()),
    }
}

impl Backend for LocalBackend {
    fn location(&self) -> String {
        self.root.display().to_string()
    }

    fn exists(&self) -> Result<bool> {
        Ok(self.root.join("config").is_file())
    }

    fn create(&self) -> Result<()> {
        if !self.root.exists() {
            create_private_dir(&self.root)?;
        } else {
            let mut entries = fs::read_dir(&self.root).map_err(|e| {
                Error::storage_io(format!("cannot read {}", self.root.display()), e)
            })?;
            if entries.next().is_some() {
                return Err(Error::new(
                    ErrorKind::RepositoryExists,
                    format!("{} exists and is not empty", self.root.display()),
                ));
            }
        }
        let mk = |p: PathBuf| create_private_dir(&p);
        for kind in [
            FileKind::Key,
            FileKind::Snapshot,
            FileKind::Index,
            FileKind::Lock,
            FileKind::Audit,
            FileKind::Drill,
            FileKind::Manifest,
        ] {
            mk(self.root.join(kind.dir()))?;
        }
        for prefix in 0..=255u8 {
            mk(self.root.join("packs").join(format!("{prefix:02x}")))?;
        }
        sync_dir(&self.root.join("packs"))?;
        sync_dir(&self.root)
    }

    fn put(&self, kind: FileKind, name: &str, bytes: &[u8]) -> Result<()> {
        let target = self.path(kind, name)?;
        let dir = target
            .parent()
            .expect("repository files live in a directory");
        // Repositories made before the audit log, drills or manifests have
        // no `audit/`, `drills/` or `manifests/` yet.
        if matches!(kind, FileKind::Audit | FileKind::Drill | FileKind::Manifest) && !dir.is_dir() {
            create_private_dir(dir)?;
            sync_dir(&self.root)?;
        }
        let temp = temp_path(dir);
        let write = || -> std::io::Result<()> {
            full_disk_hook(kind)?;
            let mut file = create_temp(&temp)?;
            file.write_all(bytes)?;
            file.sync_all()?;
            fs::rename(&temp, &target)
        };
        if let Err(e) = write() {
            let _ = fs::remove_file(&temp);
            return Err(Error::storage_io(
                format!("cannot write {}", target.display()),
                e,
            ));
        }
        // Renamed into place, then the directory sync fails: the file is
        // visible but perhaps not durable (tests/it/faults.rs).
        if kind == FileKind::Index && crate::failpoint::is_set!("index-dir-sync-error") {
            return Err(Error::storage_io(
                format!("cannot sync directory {}", dir.display()),
                std::io::Error::from_raw_os_error(5), // EIO
            ));
        }
        sync_dir(dir)
    }

    fn sweep_temp_files(&self, dry_run: bool) -> Result<(u64, u64)> {
        // Not keys/ or locks/: keys are added without a lock, and other
        // processes write lock files while an exclusive lock is held.
        let packs = self.root.join("packs");
        let mut dirs = vec![
            self.root.join("snapshots"),
            self.root.join("index"),
            self.root.join("manifests"),
            packs.clone(),
        ];
        if let Ok(entries) = fs::read_dir(&packs) {
            for entry in entries.flatten() {
                if entry.file_type().is_ok_and(|t| t.is_dir()) {
                    dirs.push(entry.path());
                }
            }
        }
        let (mut count, mut bytes) = (0, 0);
        for dir in dirs {
            let Ok(entries) = fs::read_dir(&dir) else {
                continue;
            };
            for entry in entries.flatten() {
                if !entry.file_name().to_string_lossy().starts_with(TEMP_PREFIX)
                    || !entry.file_type().is_ok_and(|t| t.is_file())
                {
                    continue;
                }
                let size = entry.metadata().map(|m| m.len()).unwrap_or(0);
                if !dry_run {
                    fs::remove_file(entry.path()).map_err(|e| {
                        Error::storage_io(format!("cannot delete {}", entry.path().display()), e)
                    })?;
                }
                count += 1;
                bytes += size;
            }
        }
        Ok((count, bytes))
    }

    fn create_pending(&self, kind: FileKind) -> Result<Box<dyn PendingFile + '_>> {
        // Packs start in `packs/` itself: their subdirectory depends on the
        // name, known only at commit.
        let temp = temp_path(&self.root.join(kind.dir()));
        let file = create_temp(&temp)
            .map_err(|e| Error::storage_io(format!("cannot create {}", temp.display()), e))?;
        Ok(Box::new(LocalPending {
            backend: self,
            kind,
            temp,
            file: Some(file),
            written: 0,
            piece_start: 0,
            dropped: 0,
            no_wait: false,
        }))
    }

    fn get(&self, kind: FileKind, name: &str) -> Result<Vec<u8>> {
        let path = self.path(kind, name)?;
        let (file, size) = self.open_regular(kind, name, &path)?;
        // Files are immutable once named: one that grew meanwhile is damage.
        crate::sys::fs::read_bounded(&file, size, size).map_err(|e| read_error(&path, "read", e))
    }

    fn get_bounded(&self, kind: FileKind, name: &str, size_max: usize) -> Result<Vec<u8>> {
        let path = self.path(kind, name)?;
        let (file, size) = self.open_regular(kind, name, &path)?;
        if size > size_max as u64 {
            return Err(super::too_large(kind, name, size, size_max));
        }
        crate::sys::fs::read_bounded(&file, size, size_max as u64)
            .map_err(|e| read_error(&path, "read", e))
    }

    fn get_range(&self, kind: FileKind, name: &str, offset: u64, length: u64) -> Result<Vec<u8>> {
        let path = self.path(kind, name)?;
        let (file, size) = self.open_for_ranges(kind, name, &path)?;
        if offset.checked_add(length).is_none_or(|end| end > size) {
            return Err(Error::corrupt(format!(
                "{} is truncated: wanted bytes {offset}..{} of {size}",
                path.display(),
                offset.saturating_add(length)
            )));
        }
        let mut buffer = vec![0u8; length as usize];
        file.read_exact_at(&mut buffer, offset)
            .map_err(|e| Error::storage_io(format!("cannot read {}", path.display()), e))?;
        Ok(buffer)
    }

    fn size(&self, kind: FileKind, name: &str) -> Result<u64> {
        let path = self.path(kind, name)?;
        self.open_regular(kind, name, &path).map(|(_, size)| size)
    }

    fn list(&self, kind: FileKind) -> Result<Vec<(String, u64)>> {
        let dirs: Vec<PathBuf> = match kind {
            FileKind::Config => return Ok(vec![]),
            FileKind::Pack => {
                let packs = self.root.join("packs");
                refuse_symlinked_dir(&packs)?;
                let mut dirs = Vec::new();
                for entry in fs::read_dir(&packs)
                    .map_err(|e| Error::storage_io(format!("cannot list {}", packs.display()), e))?
                {
                    let entry = entry.map_err(|e| Error::storage_io("cannot list packs", e))?;
                    // `file_type` does not follow a symlink: a linked
                    // subdirectory is not listed.
                    if entry.file_type().map(|t| t.is_dir()).unwrap_or(false) {
                        dirs.push(entry.path());
                    }
                }
                dirs
            }
            // Not yet made (a repository from before the audit log,
            // drills or manifests).
            FileKind::Audit | FileKind::Drill | FileKind::Manifest
                if fs::symlink_metadata(self.root.join(kind.dir())).is_err() =>
            {
                return Ok(vec![])
            }
            _ => {
                let dir = self.root.join(kind.dir());
                refuse_symlinked_dir(&dir)?;
                vec![dir]
            }
        };
        let mut out = Vec::new();
        for dir in dirs {
            let entries = match fs::read_dir(&dir) {
                Ok(entries) => entries,
                Err(e) => {
                    return Err(Error::storage_io(
                        format!("cannot list {}", dir.display()),
                        e,
                    ))
                }
            };
            for entry in entries {
                let entry = entry
                    .map_err(|e| Error::storage_io(format!("cannot list {}", dir.display()), e))?;
                let name = entry.file_name().to_string_lossy().into_owned();
                if name.starts_with('.') {
                    continue;
                }
                let size = entry.metadata().map(|m| m.len()).unwrap_or(0);
                out.push((name, size));
            }
        }
        out.sort();
        Ok(out)
    }

    fn delete(&self, kind: FileKind, name: &str) -> Result<()> {
        let path = self.path(kind, name)?;
        self.forget_open(kind, name);
        fs::remove_file(&path)
            .map_err(|e| Error::storage_io(format!("cannot delete {}", path.display()), e))?;
        sync_dir(path.parent().expect("in a directory"))
    }

    fn modified(&self, kind: FileKind, name: &str) -> Result<Option<std::time::SystemTime>> {
        let path = self.path(kind, name)?;
        // The entry itself, not what a planted symlink points to.
        let meta = fs::symlink_metadata(&path)
            .map_err(|e| Error::storage_io(format!("cannot stat {}", path.display()), e))?;
        Ok(meta.modified().ok())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    fn repo() -> (tempfile::TempDir, LocalBackend) {
        let dir = tempfile::tempdir().unwrap();
        let backend = LocalBackend::new(dir.path().join("repo"));
        backend.create().unwrap();
        (dir, backend)
    }

    fn mode(path: &Path) -> u32 {
        fs::symlink_metadata(path).unwrap().permissions().mode() & 0o7777
    }

    #[test]
    fn repository_directories_and_files_are_the_owners_alone() {
        let (dir, backend) = repo();
        backend.put(FileKind::Snapshot, "s1", b"x").unwrap();
        let mut pending = backend.create_pending(FileKind::Pack).unwrap();
        pending.write(b"pack").unwrap();
        pending.commit("abcd").unwrap();
        let root = dir.path().join("repo");
        for d in [
            "",
            "keys",
            "snapshots",
            "index",
            "locks",
            "packs",
            "packs/ab",
        ] {
            assert_eq!(mode(&root.join(d)), 0o700, "{d}");
        }
        assert_eq!(mode(&root.join("snapshots/s1")), 0o600);
        assert_eq!(mode(&root.join("packs/ab/abcd")), 0o600);
    }

    /// What a planted file does to every read: an error naming the file and
    /// what it is, at once (a FIFO is not waited on, /dev/zero not read).
    #[test]
    fn planted_fifos_symlinks_and_devices_are_damage_not_hangs() {
        let (dir, backend) = repo();
        let root = dir.path().join("repo");
        let fifo = root.join("locks/fifo");
        let c = std::ffi::CString::new(fifo.as_os_str().as_encoded_bytes()).unwrap();
        // SAFETY: a NUL-terminated path.
        assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o600) }, 0);
        std::os::unix::fs::symlink("/dev/zero", root.join("keys/zero")).unwrap();
        fs::write(dir.path().join("outside"), b"secret").unwrap();
        std::os::unix::fs::symlink(dir.path().join("outside"), root.join("snapshots/link"))
            .unwrap();
        fs::create_dir(root.join("index/adir")).unwrap();
        for (kind, name, what) in [
            (FileKind::Lock, "fifo", "a FIFO"),
            (FileKind::Key, "zero", "a symbolic link"),
            (FileKind::Snapshot, "link", "a symbolic link"),
            (FileKind::Index, "adir", "a directory"),
        ] {
            for result in [
                backend.get(kind, name),
                backend.get_bounded(kind, name, 1024),
                backend.get_range(kind, name, 0, 1),
                backend.size(kind, name).map(|_| Vec::new()),
            ] {
                let e = result.unwrap_err();
                assert_eq!(e.kind(), ErrorKind::Corrupt, "{name}: {e}");
                assert!(e.to_string().contains(name), "{e}");
                assert!(e.to_string().contains(what), "{e}");
            }
        }
    }

    /// A name listed from a pack directory is whatever was planted there.
    #[test]
    fn a_pack_name_starting_with_a_multibyte_character_is_refused_not_a_panic() {
        let (_dir, backend) = repo();
        for name in ["aé", "é", "éé"] {
            let e = backend.get(FileKind::Pack, name).unwrap_err();
            assert!(
                matches!(e.kind(), ErrorKind::InvalidInput | ErrorKind::NotFound),
                "{name}: {e}"
            );
        }
    }

    #[test]
    fn a_file_larger_than_its_bound_is_refused() {
        let (_dir, backend) = repo();
        backend.put(FileKind::Index, "i1", &[7; 100]).unwrap();
        assert_eq!(
            backend
                .get_bounded(FileKind::Index, "i1", 99)
                .unwrap_err()
                .kind(),
            ErrorKind::Corrupt
        );
        assert_eq!(
            backend
                .get_bounded(FileKind::Index, "i1", 100)
                .unwrap()
                .len(),
            100
        );
    }

    #[test]
    fn symlinked_directories_are_not_listed_or_read_through() {
        let (dir, backend) = repo();
        let root = dir.path().join("repo");
        let elsewhere = dir.path().join("elsewhere");
        fs::create_dir(&elsewhere).unwrap();
        fs::write(elsewhere.join("abcd"), b"not ours").unwrap();
        fs::remove_dir(root.join("packs/ab")).unwrap();
        std::os::unix::fs::symlink(&elsewhere, root.join("packs/ab")).unwrap();
        assert_eq!(backend.list(FileKind::Pack).unwrap(), vec![]);
        let e = backend.get(FileKind::Pack, "abcd").unwrap_err();
        assert_eq!(e.kind(), ErrorKind::Corrupt, "{e}");
        assert!(e.to_string().contains("symbolic link"), "{e}");

        fs::remove_dir(root.join("snapshots")).unwrap();
        std::os::unix::fs::symlink(&elsewhere, root.join("snapshots")).unwrap();
        assert_eq!(
            backend.list(FileKind::Snapshot).unwrap_err().kind(),
            ErrorKind::Corrupt
        );
        assert_eq!(
            backend.get(FileKind::Snapshot, "abcd").unwrap_err().kind(),
            ErrorKind::Corrupt
        );
    }
}
