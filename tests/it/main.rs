//! The one integration test binary: runs the real `cairn` binary against
//! real repositories on disk.

mod common;
mod crash;
mod dedup;
mod dumps;
mod errors;
mod kdf;
mod metadata;
mod oracle;
mod privacy;
mod selectors;
mod stdin;
mod tarball;
