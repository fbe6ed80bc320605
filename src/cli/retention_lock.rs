//! `cairn retention-lock set|show` and `init --retention-lock`: the
//! duration for which `forget` removes no snapshot (docs/FORMAT.md 18.1).

use super::args::{Cli, RetentionLockCommand};
use super::output::emit;
use super::repo::{lock_exclusive, open};
use cairn::RetentionDuration;

pub(crate) fn retention_lock(cli: &Cli, command: &RetentionLockCommand) -> anyhow::Result<i32> {
    let repo = open(cli)?;
    match command {
        RetentionLockCommand::Set { duration } => {
            let duration = RetentionDuration::parse(duration)?;
            // One setter at a time, so two cannot both pass the check
            // against the lock in force.
            let _lock = lock_exclusive(cli, &repo)?;
            let set = cairn::engine::retention_lock::set_retention_lock(&repo, duration)?;
            emit(
                cli,
                || {
                    Ok(
                        serde_json::json!({"retention_lock": set.duration.to_string(), "entry": set.entry.to_hex()}),
                    )
                },
                || {
                    println!("retention lock set to {}", set.duration);
                    Ok(())
                },
            )?;
        }
        RetentionLockCommand::Show => {
            let now = chrono::Utc::now().fixed_offset();
            let lock = cairn::engine::retention_lock::retention_lock(&repo, now)?;
            emit(
                cli,
                || {
                    Ok(
                        serde_json::json!({"retention_lock": lock.as_ref().map(|l| l.duration.to_string()),
                        "set_at": lock.as_ref().map(|l| cairn::engine::audit::report::format_time(l.set_at))}),
                    )
                },
                || {
                    match &lock {
                        Some(l) => println!(
                            "retention lock {} (set {})",
                            l.duration,
                            cairn::engine::audit::report::format_time(l.set_at)
                        ),
                        None => println!("no retention lock"),
                    }
                    Ok(())
                },
            )?;
        }
    }
    Ok(0)
}

/// `init --retention-lock`: the new repository opened once more with its
/// password, and the lock set by its first key.
pub(crate) fn after_init(
    cli: &Cli,
    backend: std::sync::Arc<dyn cairn::Backend>,
    password: &[u8],
    duration: &str,
) -> anyhow::Result<()> {
    let duration = RetentionDuration::parse(duration)?;
    let options = cairn::OpenOptions {
        cache_root: cli.cache_dir.as_deref(),
        key_hint: None,
    };
    let repo = cairn::Repository::open_with(backend, password, &options)?;
    cairn::engine::retention_lock::set_retention_lock(&repo, duration)?;
    Ok(())
}
