//! The blob index: which pack holds each blob.
//!
//! `index/<id>` files in the repository are the source of truth (format in
//! `file`). The local RocksDB database in `db` is derived state synced from
//! them; deleting it loses nothing.

#[cfg(feature = "cache")]
pub mod db;
pub mod file;

#[cfg(feature = "cache")]
pub use db::{BlobLocation, IndexDb};
pub use file::{IndexFile, IndexPack};
