//! `cairn completions SHELL` and the hidden `cairn man`, both generated from
//! the clap definition in `args.rs`, so they cannot drift from the real
//! flags. The man pages are made by `scripts/man.sh` (a build script cannot
//! see the binary's `Cli`, which is part of the binary, not the library).

use super::args::Cli;
use clap::CommandFactory;
use std::io::Write;
use std::path::Path;

pub(crate) fn completions(shell: clap_complete::Shell) -> anyhow::Result<i32> {
    let mut cmd = Cli::command();
    let mut out = Vec::new();
    clap_complete::generate(shell, &mut cmd, "cairn", &mut out);
    std::io::stdout().write_all(&out)?;
    Ok(0)
}

/// Writes `cairn.1` to standard output, or with `dir` one page per command
/// (`cairn.1`, `cairn-backup.1`, …) into that directory.
pub(crate) fn man(dir: Option<&Path>) -> anyhow::Result<i32> {
    let cmd = Cli::command();
    match dir {
        Some(dir) => {
            std::fs::create_dir_all(dir)?;
            clap_mangen::generate_to(cmd, dir)?;
        }
        None => {
            let mut out = Vec::new();
            clap_mangen::Man::new(cmd).render(&mut out)?;
            std::io::stdout().write_all(&out)?;
        }
    }
    Ok(0)
}
