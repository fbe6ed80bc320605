//! The storage layer: where the format's bytes live. The `Backend` trait and
//! its implementations store opaque, already sealed files under names they
//! did not choose; locks coordinate processes sharing a repository; the
//! index cache (RocksDB) is derived state rebuilt from index files.

pub mod backend;
#[cfg(feature = "cache")]
pub mod index_cache;
pub mod lock;
