//! Running cairn unattended: the configuration file's profiles and the
//! Prometheus textfile that a run's metrics go to. Neither knows the engine;
//! the CLI combines them with the commands.

pub mod metrics;
pub mod profile;
