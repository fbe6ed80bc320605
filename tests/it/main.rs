//! The one integration test binary: runs the real `cairn` binary against
//! real repositories on disk.

// The crash tests abort the binary at named steps, which only a build
// with the test hooks can do.
#[cfg(not(feature = "failpoints"))]
compile_error!("the integration tests need `--features failpoints` (scripts/test.sh turns it on)");

mod audit;
mod audit_manifest;
mod audit_report;
mod browse;
mod cache;
mod check;
mod common;
mod compression;
mod copy;
mod crash;
mod dedup;
mod drill;
mod dumps;
mod errors;
mod exclude;
mod faults;
mod forget;
mod hostile_repo;
mod hostile_tar;
mod json;
mod kdf;
mod locks;
mod metadata;
mod metrics;
mod mount;
mod oracle;
mod pipeline;
mod privacy;
mod profile;
mod progress;
mod prune;
mod prune_concurrent;
mod restore_safety;
mod s3;
mod s3_data;
mod s3_lock;
mod s3_ops;
mod s3_proxy;
mod s3_server;
mod secrets;
mod selectors;
mod shell;
mod stdin;
mod tarball;
mod tidy;
