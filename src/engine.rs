//! The engine: the operations users run. `repository` composes a backend,
//! the key and the index cache, and is the one place that orders writes;
//! the other modules (backup, restore, check, prune, …) are built on it.

#[cfg(feature = "cache")]
pub mod archiver;
pub mod audit;
#[cfg(feature = "cache")]
pub mod browse;
#[cfg(feature = "cache")]
pub mod cache;
#[cfg(feature = "cache")]
pub mod checker;
#[cfg(feature = "cache")]
pub mod command;
#[cfg(feature = "cache")]
pub mod copy;
#[cfg(feature = "cache")]
pub mod drill;
pub mod exclude;
#[cfg(feature = "cache")]
pub mod forget;
pub mod metadata;
#[cfg(all(feature = "cache", feature = "mount"))]
pub mod mount;
#[cfg(feature = "cache")]
pub mod prune;
#[cfg(feature = "cache")]
pub mod repair;
#[cfg(feature = "cache")]
pub mod repository;
#[cfg(feature = "cache")]
pub mod restorer;
#[cfg(feature = "cache")]
pub mod retention_lock;
#[cfg(feature = "cache")]
pub mod stats;
#[cfg(feature = "cache")]
pub mod tag;
#[cfg(feature = "cache")]
pub mod tar;
