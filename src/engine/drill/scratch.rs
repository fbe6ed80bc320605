//! The drill's private scratch directory: `cairn-drill-<pid>-<random>`
//! under the scratch parent (default: the temp directory), mode 0700,
//! removed on drop unless kept. A drill that was killed leaves its
//! directory behind; the next drill removes every one whose process is gone.

use crate::error::{Error, ErrorKind, Result};
use std::os::unix::fs::{DirBuilderExt, MetadataExt};
use std::path::{Path, PathBuf};

const PREFIX: &str = "cairn-drill-";
/// A file in a scratch directory kept with `--keep`: the next drill's
/// sweep leaves that directory alone.
const KEPT_MARK: &str = "KEPT";

pub(super) struct Scratch {
    pub dir: PathBuf,
    keep: bool,
}

impl Scratch {
    /// Creates the directory, ours and 0700. With `reachable` (a drill run
    /// as root, whose database server runs as an unprivileged user) it is
    /// 0711: that user may pass through to the subdirectory it is given,
    /// but can neither list nor change what is ours here (the restored
    /// files, logs, query files), so it cannot plant a symlink where root
    /// writes.
    pub fn create(parent: &Path, reachable: bool) -> Result<Scratch> {
        let id: [u8; 4] = crate::sys::random_bytes();
        let dir = parent.join(format!(
            "{PREFIX}{}-{}",
            std::process::id(),
            hex::encode(id)
        ));
        std::fs::DirBuilder::new()
            .mode(0o700)
            .create(&dir)
            .map_err(|e| Error::io(format!("cannot create {}", dir.display()), e))?;
        let scratch = Scratch { dir, keep: false };
        if reachable {
            use std::os::unix::fs::PermissionsExt;
            std::fs::set_permissions(&scratch.dir, std::fs::Permissions::from_mode(0o711))
                .map_err(|e| Error::io(format!("cannot open up {}", scratch.dir.display()), e))?;
        }
        Ok(scratch)
    }

    pub fn restore_dir(&self) -> PathBuf {
        self.dir.join("restore")
    }

    /// Leaves the directory in place (`--keep`); its path.
    pub fn keep(&mut self) -> PathBuf {
        self.keep = true;
        let _ = std::fs::write(self.dir.join(KEPT_MARK), b"kept by cairn drill --keep\n");
        self.dir.clone()
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        if !self.keep {
            let _ = std::fs::remove_dir_all(&self.dir);
        }
    }
}

/// Removes the scratch directories of drills that died (their process is
/// gone and they were not kept); the paths removed.
pub(super) fn sweep(parent: &Path) -> Vec<PathBuf> {
    let mut removed = Vec::new();
    let Ok(entries) = std::fs::read_dir(parent) else {
        return removed;
    };
    let (uid, _) = crate::sys::current_ids();
    for entry in entries.flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        let Some(pid) = name
            .strip_prefix(PREFIX)
            .and_then(|rest| rest.split('-').next())
            .and_then(|pid| pid.parse::<u32>().ok())
        else {
            continue;
        };
        let path = entry.path();
        // Not a symlink, and ours: someone else's directory is not ours to
        // remove.
        let Ok(meta) = std::fs::symlink_metadata(&path) else {
            continue;
        };
        if !meta.is_dir() || meta.uid() != uid {
            continue;
        }
        if pid == std::process::id()
            || crate::sys::process_alive(pid)
            || path.join(KEPT_MARK).exists()
        {
            continue;
        }
        if std::fs::remove_dir_all(&path).is_ok() {
            removed.push(path);
        }
    }
    removed
}

/// Refuses with one line when `parent` cannot hold `needed` bytes.
pub(super) fn check_space(parent: &Path, needed: u64, what: &str) -> Result<()> {
    let free = if crate::failpoint::is_set!("drill-no-space") {
        0
    } else {
        crate::sys::fs::free_space(parent).map_err(|e| {
            Error::io(
                format!("cannot read the free space of {}", parent.display()),
                e,
            )
        })?
    };
    if free < needed {
        return Err(Error::new(
            ErrorKind::Io,
            format!(
                "not enough space for the drill in {}: {} free, {what} needs about {}",
                parent.display(),
                mib(free),
                mib(needed)
            ),
        ));
    }
    Ok(())
}

fn mib(bytes: u64) -> String {
    format!("{:.1} MiB", bytes as f64 / (1024.0 * 1024.0))
}
