//! A repository in memory: the `Backend` contract without any IO, for unit
//! tests of the layers above storage (and for trying the library out). It
//! behaves as `LocalBackend` does wherever a caller can tell: the same name
//! checks, `NotFound` for missing files, `put` replacing a file, bounds on
//! `get_range`, nothing visible of an uncommitted `create_pending`.

use super::{Backend, FileKind};
use crate::error::{Error, ErrorKind, Result};
use std::collections::BTreeMap;
use std::sync::{Mutex, MutexGuard};
use std::time::SystemTime;

/// Files keyed by kind and name, behind one mutex: every method is one
/// short critical section, so concurrent writers and readers (a backup's
/// pack writers, the lock refresher) see each file whole or not at all.
#[derive(Default)]
pub struct MemoryBackend {
    state: Mutex<State>,
    /// What `Backend::connections` answers: set by tests that want the
    /// remote data path (IO threads, concurrent uploads) without a server.
    connections: Option<usize>,
}

#[derive(Default)]
struct State {
    /// `create` was called: a local repository's directories exist.
    created: bool,
    files: BTreeMap<(FileKind, String), Vec<u8>>,
    /// When each file was last put (`Backend::modified`).
    modified: BTreeMap<(FileKind, String), SystemTime>,
}

impl MemoryBackend {
    /// An empty location, like an empty directory: `create` (which
    /// `Repository::init` calls) prepares it for files.
    pub fn new() -> MemoryBackend {
        MemoryBackend::default()
    }

    /// A memory backend that asks for `n` concurrent requests, as a remote
    /// one does: the engine then reads and uploads on IO threads.
    pub fn with_connections(n: usize) -> MemoryBackend {
        MemoryBackend {
            connections: Some(n.max(1)),
            ..MemoryBackend::default()
        }
    }

    /// The state, also after a thread panicked holding it: each method
    /// changes at most one entry, so the map is never half updated.
    fn state(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The state once `create` was called; before, every file operation
    /// fails as it does on a local directory without its subdirectories.
    fn created(&self, kind: FileKind) -> Result<MutexGuard<'_, State>> {
        let state = self.state();
        if !state.created && kind != FileKind::Config {
            return Err(not_found(format!(
                "cannot use {}: no repository was created",
                kind_dir(kind)
            )));
        }
        Ok(state)
    }
}

/// The map key of a file, after `LocalBackend`'s checks on its name: a
/// name must not be empty, contain `/` or start with `.`, and a pack's has
/// at least the two characters of its subdirectory. The config has one
/// name whatever the caller passes.
fn key(kind: FileKind, name: &str) -> Result<(FileKind, String)> {
    if name.is_empty() || name.contains('/') || name.starts_with('.') {
        return Err(Error::invalid(format!(
            "invalid repository file name {name:?}"
        )));
    }
    if kind == FileKind::Pack && name.len() < 2 {
        return Err(Error::invalid(format!("invalid pack name {name:?}")));
    }
    let name = if kind == FileKind::Config {
        "config"
    } else {
        name
    };
    Ok((kind, name.to_string()))
}

/// A kind's directory as a name for messages (the config's is empty).
fn kind_dir(kind: FileKind) -> &'static str {
    match kind {
        FileKind::Config => "config",
        _ => kind.dir(),
    }
}

fn not_found(message: String) -> Error {
    Error::new(ErrorKind::NotFound, message)
}

fn missing(kind: FileKind, name: &str) -> Error {
    not_found(format!("{}/{name} does not exist", kind_dir(kind)))
}

impl Backend for MemoryBackend {
    fn location(&self) -> String {
        "memory".into()
    }

    fn connections(&self) -> Option<usize> {
        self.connections
    }

    fn exists(&self) -> Result<bool> {
        Ok(self
            .state()
            .files
            .contains_key(&(FileKind::Config, "config".to_string())))
    }

    fn create(&self) -> Result<()> {
        let mut state = self.state();
        if !state.files.is_empty() {
            return Err(Error::new(
                ErrorKind::RepositoryExists,
                format!("{} exists and is not empty", self.location()),
            ));
        }
        state.created = true;
        Ok(())
    }

    fn put(&self, kind: FileKind, name: &str, bytes: &[u8]) -> Result<()> {
        let key = key(kind, name)?;
        let mut state = self.created(kind)?;
        state.modified.insert(key.clone(), SystemTime::now());
        state.files.insert(key, bytes.to_vec());
        Ok(())
    }

    fn get(&self, kind: FileKind, name: &str) -> Result<Vec<u8>> {
        let key = key(kind, name)?;
        self.created(kind)?
            .files
            .get(&key)
            .cloned()
            .ok_or_else(|| missing(kind, name))
    }

    fn get_range(&self, kind: FileKind, name: &str, offset: u64, length: u64) -> Result<Vec<u8>> {
        let key = key(kind, name)?;
        let state = self.created(kind)?;
        let bytes = state.files.get(&key).ok_or_else(|| missing(kind, name))?;
        let size = bytes.len() as u64;
        match offset.checked_add(length) {
            Some(end) if end <= size => Ok(bytes[offset as usize..end as usize].to_vec()),
            _ => Err(Error::corrupt(format!(
                "{}/{name} is truncated: wanted bytes {offset}..{} of {size}",
                kind_dir(kind),
                offset.saturating_add(length)
            ))),
        }
    }

    fn size(&self, kind: FileKind, name: &str) -> Result<u64> {
        let key = key(kind, name)?;
        self.created(kind)?
            .files
            .get(&key)
            .map(|bytes| bytes.len() as u64)
            .ok_or_else(|| missing(kind, name))
    }

    fn list(&self, kind: FileKind) -> Result<Vec<(String, u64)>> {
        if kind == FileKind::Config {
            return Ok(Vec::new());
        }
        // Keys sort by kind, then name: the range is this kind's files, in
        // name order, as `LocalBackend::list` sorts them.
        Ok(self
            .created(kind)?
            .files
            .range((kind, String::new())..)
            .take_while(|((k, _), _)| *k == kind)
            .map(|((_, name), bytes)| (name.clone(), bytes.len() as u64))
            .collect())
    }

    fn delete(&self, kind: FileKind, name: &str) -> Result<()> {
        let key = key(kind, name)?;
        let mut state = self.created(kind)?;
        state.modified.remove(&key);
        state
            .files
            .remove(&key)
            .map(|_| ())
            .ok_or_else(|| missing(kind, name))
    }

    fn modified(&self, kind: FileKind, name: &str) -> Result<Option<SystemTime>> {
        let key = key(kind, name)?;
        let state = self.created(kind)?;
        if !state.files.contains_key(&key) {
            return Err(missing(kind, name));
        }
        Ok(state.modified.get(&key).copied())
    }
}
