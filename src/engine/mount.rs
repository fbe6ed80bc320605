//! `mount`: every snapshot as a read-only FUSE file system, laid out as
//! restic lays it out (`snapshots/<time>/`, `snapshots/latest`,
//! `ids/<short id>/`, `hosts/<host>/<time>/`, `tags/<tag>/<time>/`).
//!
//! Parts: `layout` (the made-up top levels, from the snapshot list),
//! `inodes` (the inode table, bounded by what the kernel holds), `cache`
//! (trees and file contents, bounded in bytes) and `fs` (the requests).
//! Trees are loaded when a directory is looked up or listed and file
//! contents when they are read, through `Repository::load_tree` and
//! `Repository::read_blob`; sequential reads are read ahead on the rayon
//! pool. A blob that cannot be read (a damaged pack) fails that read with
//! EIO and nothing else. The FUSE protocol, and its unsafe code, is the
//! `fuser` crate's.

mod cache;
mod fs;
mod inodes;
mod layout;

use crate::engine::repository::Repository;
use crate::error::{Error, ErrorKind, Result};
use crate::format::snapshot::SnapshotFilter;
use std::path::Path;
use std::time::{Duration, Instant};

#[derive(Debug, Clone)]
pub struct MountOptions {
    /// Only the snapshots this matches are shown.
    pub filter: SnapshotFilter,
    /// Other users may use the mount (the kernel then checks the stored
    /// owners and modes); otherwise only the mounting user may.
    pub allow_other: bool,
    /// Bytes of file contents kept in memory, read-ahead included.
    pub cache_size: u64,
}

impl Default for MountOptions {
    fn default() -> Self {
        MountOptions {
            filter: SnapshotFilter::default(),
            allow_other: false,
            cache_size: 256 << 20,
        }
    }
}

/// How often the foreground loop looks at the interrupt flag and at
/// whether the mount is still there.
const POLL: Duration = Duration::from_millis(100);
/// How long an ending mount may take to let go of its last open files
/// before the process leaves anyway (the kernel then fails them).
const UNMOUNT_WAIT: Duration = Duration::from_secs(5);

/// Mounts the repository's snapshots on `mountpoint` and serves them until
/// the mount is unmounted (`fusermount3 -u`, `umount`) or the context is
/// interrupted, which unmounts it. Both end with `Ok`.
pub fn mount(repo: Repository, mountpoint: &Path, options: &MountOptions) -> Result<()> {
    let ctx = repo.context().clone();
    let mountpoint = mountpoint
        .canonicalize()
        .map_err(|e| Error::io(format!("mount point {}", mountpoint.display()), e))?;
    if !mountpoint.is_dir() {
        return Err(Error::invalid(format!(
            "mount point {} is not a directory",
            mountpoint.display()
        )));
    }
    let fs = fs::MountFs::new(repo, options)?;
    let mut config = fuser::Config::default();
    config.mount_options = vec![
        fuser::MountOption::RO,
        fuser::MountOption::NoDev,
        fuser::MountOption::NoSuid,
        fuser::MountOption::FSName("cairn".into()),
        fuser::MountOption::Subtype("cairn".into()),
    ];
    if options.allow_other {
        // Other users see the files as stored: the kernel checks the
        // stored owners and modes for them.
        config.acl = fuser::SessionACL::All;
        config
            .mount_options
            .push(fuser::MountOption::DefaultPermissions);
    }
    // Several request loops, so a slow pack read does not hold up listings.
    config.n_threads = Some(4);
    let session = fuser::spawn_mount(fs, &mountpoint, &config).map_err(|e| {
        Error::new(
            ErrorKind::Io,
            format!("cannot mount on {}: {e}", mountpoint.display()),
        )
    })?;
    loop {
        if session.guard.is_finished() {
            // Unmounted from outside.
            return session.join().map_err(|e| {
                Error::new(ErrorKind::Io, format!("the mount ended with an error: {e}"))
            });
        }
        if ctx.is_interrupted() {
            return unmount(session, &mountpoint);
        }
        std::thread::sleep(POLL);
    }
}

/// Unmounts lazily (files still open keep working until closed), then waits
/// a little for the request loops to end.
fn unmount(session: fuser::BackgroundSession, mountpoint: &Path) -> Result<()> {
    if crate::sys::mount::detach(mountpoint).is_err() {
        // Not permitted (not root): fuser goes through fusermount3.
        let _ = std::process::Command::new("fusermount3")
            .args(["-u", "-z"])
            .arg(mountpoint)
            .status();
    }
    let started = Instant::now();
    while !session.guard.is_finished() && started.elapsed() < UNMOUNT_WAIT {
        std::thread::sleep(Duration::from_millis(20));
    }
    if session.guard.is_finished() {
        let _ = session.join();
    }
    Ok(())
}
