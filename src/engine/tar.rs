//! Tarballs in and out of a repository. `import_tar` stores each member
//! of a tarball as a node of a snapshot's tree (`import`); `export_tar`
//! writes a snapshot, or a part of one, as a tarball (`export`). Decoding a
//! tarball needs no repository: that is `format::tar`.

mod export;
mod import;

pub use crate::format::tar::{Compression, Limits as TarLimits};
pub use export::{export_tar, ExportOutcome};
pub use import::{import_tar, import_tar_with_limits};
