//! The format layer: every byte cairn stores, as pure functions from values
//! to bytes and back (`docs/FORMAT.md` is the specification). Nothing here
//! opens a file, a socket or a database; it may read the OS random source
//! and the clock, and map anonymous memory for Argon2. Every decoder bounds
//! its input before it allocates, never panics, and has a fuzz target.

pub mod audit;
pub mod chunker;
pub mod config;
pub mod crypto;
pub mod drill;
pub mod id;
pub mod index_file;
pub mod key;
pub mod manifest;
pub mod pack;
pub mod retention;
pub mod snapshot;
#[cfg(feature = "tar-format")]
pub mod tar;
pub mod tree;
