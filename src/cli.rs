//! The command-line interface: argument types, one module per command
//! group, and the printing of results. Only the binary uses these modules;
//! everything they do is a call into the library.

pub(crate) mod browse;
pub(crate) mod forget;
pub(crate) mod hints;
pub(crate) mod metrics;
pub(crate) mod profile;
pub(crate) mod progress;
pub(crate) mod shell;
