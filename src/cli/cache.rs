//! `cairn cache`: the local caches of repositories, listed or cleaned up.

use super::args::Cli;
use super::output::{emit, human_bytes};
use anyhow::anyhow;
use std::time::Duration;

pub(crate) fn cache(cli: &Cli, cleanup: bool, max_age_days: u64) -> anyhow::Result<i32> {
    let root = match &cli.cache_dir {
        Some(dir) => dir.clone(),
        None => cairn::engine::repository::default_cache_root()
            .ok_or_else(|| anyhow!("no cache directory: neither XDG_CACHE_HOME nor HOME is set"))?,
    };
    let max_age = Duration::from_secs(max_age_days.saturating_mul(86_400));
    let caches = if cleanup {
        cairn::engine::cache::remove_old_caches(&root, max_age, None)?
    } else {
        cairn::engine::cache::list_caches(&root, max_age)?
    };
    emit(
        cli,
        || {
            Ok(serde_json::json!({
                "root": root,
                "removed": cleanup,
                "caches": caches,
            }))
        },
        || {
            for c in &caches {
                let state = match (cleanup, c.old) {
                    (true, _) => "removed",
                    (false, true) => "old",
                    (false, false) => "in use",
                };
                println!(
                    "{}  {:>10}  {:>4} days  {state}",
                    c.path.display(),
                    human_bytes(c.bytes),
                    c.age_days
                );
            }
            let bytes: u64 = caches.iter().map(|c| c.bytes).sum();
            if cleanup {
                println!("removed {} cache(s), {}", caches.len(), human_bytes(bytes));
            } else {
                let old = caches.iter().filter(|c| c.old).count();
                println!(
                    "{} cache(s), {}; {old} unused for more than {max_age_days} days (--cleanup removes them)",
                    caches.len(),
                    human_bytes(bytes)
                );
            }
            Ok(())
        },
    )?;
    Ok(0)
}
