//! `cairn mount`: serves the snapshots as a read-only file system in the
//! foreground until it is unmounted or interrupted.

use super::args::{Cli, FilterArgs};
use super::repo::{open, read_lock, warn_all};
use std::path::PathBuf;

#[derive(clap::Args)]
pub(crate) struct MountArgs {
    /// An existing, empty directory to mount on.
    mountpoint: PathBuf,
    /// Let other users use the mount; the kernel then checks the stored
    /// owners and modes. Not root: needs user_allow_other in
    /// /etc/fuse.conf.
    #[arg(long)]
    allow_other: bool,
    /// Memory for file contents read through the mount, read-ahead
    /// included (e.g. 256M, 1G).
    #[arg(long, value_name = "SIZE", default_value = "256M")]
    cache_size: String,
    #[command(flatten)]
    filter: FilterArgs,
}

pub(crate) fn mount(cli: &Cli, args: &MountArgs) -> anyhow::Result<i32> {
    let options = cairn::MountOptions {
        filter: args.filter.filter(),
        allow_other: args.allow_other,
        cache_size: cairn::units::parse_size(&args.cache_size)?,
    };
    let repo = open(cli)?;
    // A shared lock for as long as the mount lives: prune waits, so the
    // packs being read stay.
    let _lock = read_lock(cli, &repo)?;
    let mut repo = repo.load_index()?;
    warn_all(cli, &mut repo);
    if !cli.quiet {
        eprintln!(
            "cairn: snapshots mounted at {}; Ctrl-C or `fusermount3 -u {}` unmounts",
            args.mountpoint.display(),
            args.mountpoint.display()
        );
    }
    cairn::mount(repo, &args.mountpoint, &options)?;
    Ok(0)
}
