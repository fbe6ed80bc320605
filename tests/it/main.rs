//! The one integration test binary: runs the real `cairn` binary against
//! real repositories on disk.

mod browse;
mod check;
mod common;
mod crash;
mod dedup;
mod dumps;
mod errors;
mod exclude;
mod faults;
mod forget;
mod json;
mod kdf;
mod metadata;
mod metrics;
mod oracle;
mod pipeline;
mod privacy;
mod profile;
mod progress;
mod prune;
mod selectors;
mod shell;
mod stdin;
mod tarball;
