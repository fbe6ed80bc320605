//! `cairn init`: creates a repository with the chosen compression, pack
//! and chunk sizes, and the first key.

use super::args::{Cli, InitArgs};
use super::output::emit;
use super::repo::{backend, password};
use anyhow::{anyhow, Context};
use cairn::{ChunkerParams, ErrorKind, InitOptions, KdfParams, Repository};

pub(crate) fn init(cli: &Cli, args: &InitArgs) -> anyhow::Result<i32> {
    let backend = backend(cli)?;
    let mut options = InitOptions {
        zstd_level: args.compression_level,
        pack_size_target: args
            .pack_size
            .checked_mul(1024 * 1024)
            .ok_or_else(|| anyhow!("--pack-size too large"))?,
        ..InitOptions::default()
    };
    if args.copy_chunker_params && args.chunk_sizes.is_some() {
        return Err(anyhow!(
            "--chunk-sizes and --copy-chunker-params exclude each other"
        ));
    }
    if let Some(sizes) = &args.chunk_sizes {
        let parts: Vec<u32> = sizes
            .split(',')
            .map(|p| {
                p.trim()
                    .parse::<u32>()
                    .ok()
                    .and_then(|k| k.checked_mul(1024))
            })
            .collect::<Option<_>>()
            .context("--chunk-sizes takes MIN,AVG,MAX in KiB")?;
        let [size_min, size_avg, size_max] = parts[..] else {
            return Err(anyhow!("--chunk-sizes takes MIN,AVG,MAX in KiB"));
        };
        options.chunker = ChunkerParams {
            size_min,
            size_avg,
            size_max,
        };
    }
    options.kdf = KdfParams {
        memory_kib: args.kdf_memory_kib.unwrap_or(KdfParams::DEFAULT.memory_kib),
        iterations: args.kdf_iterations.unwrap_or(KdfParams::DEFAULT.iterations),
        ..KdfParams::DEFAULT
    };
    if let Some(lock) = &args.retention_lock {
        // Before anything is created: a bad duration makes no repository.
        let duration = cairn::RetentionDuration::parse(lock)?;
        // On object storage, a bucket that can keep the lock (S3 Object
        // Lock; made so if `init` creates it), checked before anything is
        // written, and every retained file of the new repository under it.
        if backend.can_retain() {
            let now = chrono::Utc::now().fixed_offset();
            backend.retain_until(cairn::engine::retention_lock::retain_until(duration, now))?;
        }
    }
    if backend.exists()? {
        return Err(cairn::Error::new(
            ErrorKind::RepositoryExists,
            format!("a repository already exists at {}", backend.location()),
        )
        .into());
    }
    if args.copy_chunker_params {
        // The source's chunker and keys, so that blobs get the same ids in
        // both repositories (docs/FORMAT.md 12).
        let source = super::repo::open_source(cli, &args.from)?;
        options.chunker = source.config().chunker_params();
        options.id_keys = Some(source.id_keys());
    }
    let password = password(cli, true)?;
    if password.is_empty() {
        return Err(anyhow!("an empty password is not allowed"));
    }
    let id = Repository::init(backend.clone(), password.as_bytes(), &options)?;
    // Found by `create` (no second probe): S3 servers differ silently.
    let conditional = backend.probe_conditional_writes()?;
    if let Some(lock) = &args.retention_lock {
        super::retention_lock::after_init(cli, backend.clone(), password.as_bytes(), lock)?;
    }
    emit(
        cli,
        || {
            let mut v = serde_json::json!({"message_type": "initialized", "id": id.to_hex(), "repository": backend.location()});
            if let Some(mode) = conditional {
                v["conditional_writes"] = mode.as_str().into();
            }
            Ok(v)
        },
        || {
            println!(
                "created cairn repository {} at {}",
                id.short(),
                backend.location()
            );
            match conditional {
                Some(cairn::storage::backend::ConditionalWrites::Enforced) => println!(
                    "conditional writes: enforced (the server refuses to overwrite the config: of two racing inits exactly one wins)"
                ),
                Some(cairn::storage::backend::ConditionalWrites::Ignored) => println!(
                    "conditional writes: ignored (the server overwrites: two inits racing within one request's time can both appear to win; run one init per bucket prefix)"
                ),
                None => {}
            }
            println!("Without the password the data cannot be read: keep it safe.");
            Ok(())
        },
    )?;
    Ok(0)
}
