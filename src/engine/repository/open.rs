//! What opening a repository needs besides the repository: the key files,
//! tried in a useful order with hostile ones skipped, and the local cache
//! directory, which must be private or is not used.

use crate::error::{Error, ErrorKind, Result};
use crate::format::audit::SigningKey;
use crate::format::config::Config;
use crate::format::crypto::{Domain, MasterKey};
use crate::format::id::Id;
use crate::format::key::{KeyFile, KEY_FILE_SIZE_MAX};
use crate::storage::backend::{Backend, FileKind};
use std::path::{Path, PathBuf};

/// How to open a repository, beyond the password.
#[derive(Debug, Clone, Copy, Default)]
pub struct OpenOptions<'a> {
    /// The cache root; `None` for `default_cache_root`.
    pub cache_root: Option<&'a Path>,
    /// A key file id, or a prefix of one, to try before the others.
    pub key_hint: Option<&'a str>,
}

/// `$XDG_CACHE_HOME/cairn`, else `$HOME/.cache/cairn`; none without
/// either. Never a shared directory such as /tmp, where another user could
/// plant a forged cache that later backups would trust.
pub fn default_cache_root() -> Option<PathBuf> {
    let var = |name: &str| {
        std::env::var_os(name)
            .filter(|v| !v.is_empty())
            .map(PathBuf::from)
            .filter(|p| p.is_absolute())
    };
    var("XDG_CACHE_HOME")
        .map(|dir| dir.join("cairn"))
        .or_else(|| var("HOME").map(|home| home.join(".cache").join("cairn")))
}

/// The cache root to use, created if missing, or why there is none.
pub(super) fn cache_root(explicit: Option<&Path>) -> std::result::Result<PathBuf, String> {
    let root = match explicit {
        Some(root) => root.to_path_buf(),
        None => default_cache_root().ok_or_else(|| {
            "no cache directory (neither XDG_CACHE_HOME nor HOME is set, and none was given)"
                .to_string()
        })?,
    };
    private_dir(&root, false)?;
    Ok(root)
}

/// Marks the repository's cache directory `dir` used now, and removes the
/// caches under `root` unused for 30 days (`engine::cache`).
pub(super) fn mark_used(root: &Path, dir: &Path) {
    crate::engine::cache::touch(dir);
    let _ = crate::engine::cache::remove_old_caches(
        root,
        crate::engine::cache::CACHE_MAX_AGE_DEFAULT,
        Some(dir),
    );
}

/// Creates `dir` (0700) if missing and checks that no one else can write
/// to it: owned by this process's effective user, not writable by group or
/// others. A cache someone else controls could hold a forged index, and
/// then a backup would skip blobs that are not in the repository. `own`:
/// the directory is cairn's alone (a repository's cache), so it may not be
/// a symbolic link and is made 0700 if an older version left it open.
pub(super) fn private_dir(dir: &Path, own: bool) -> std::result::Result<(), String> {
    use std::os::unix::fs::{DirBuilderExt, MetadataExt, PermissionsExt};
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
        .map_err(|e| format!("cannot create cache directory {}: {e}", dir.display()))?;
    let meta = if own {
        std::fs::symlink_metadata(dir)
    } else {
        std::fs::metadata(dir)
    }
    .map_err(|e| format!("cannot read cache directory {}: {e}", dir.display()))?;
    let (euid, _) = crate::sys::current_ids();
    if !meta.is_dir() {
        return Err(format!(
            "cache directory {} is not a directory",
            dir.display()
        ));
    }
    if meta.uid() != euid {
        return Err(format!(
            "cache directory {} belongs to user {}, not to this user ({euid})",
            dir.display(),
            meta.uid()
        ));
    }
    if meta.mode() & 0o022 != 0 {
        return Err(format!(
            "cache directory {} can be written by other users (mode {:o})",
            dir.display(),
            meta.mode() & 0o7777
        ));
    }
    if own && meta.mode() & 0o077 != 0 {
        std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700))
            .map_err(|e| format!("cannot make {} private: {e}", dir.display()))?;
    }
    Ok(())
}

/// Reads and opens the config. A repository made with `init
/// --copy-chunker-params` names blobs and cuts chunks with its source's
/// keys (docs/FORMAT.md 12): the key returned carries them.
pub(super) fn open_config(backend: &dyn Backend, key: MasterKey) -> Result<(Config, MasterKey)> {
    let sealed = backend.get_bounded(
        FileKind::Config,
        "config",
        crate::format::crypto::SEAL_OVERHEAD + crate::format::config::CONFIG_SIZE_MAX,
    )?;
    let config = Config::decode(
        &key.open(Domain::Config, &sealed)
            .map_err(|e| e.context("config"))?,
    )?;
    let key = match &config.id_keys {
        Some(keys) => key.with_id_keys(keys),
        None => key,
    };
    Ok((config, key))
}

/// The file in a repository's cache directory naming the key file that
/// opened it last.
const LAST_KEY: &str = "last-key";

/// Key files this user opened repositories with before (each repository's
/// `last-key` under `root`): tried first, so a planted key file, however
/// it sorts, costs nothing once the right key is known. Key ids are
/// hashes of files with a random salt: one repository's never name
/// another's key file.
pub(super) fn remembered_keys(root: &Path) -> Vec<String> {
    let Ok(entries) = std::fs::read_dir(root) else {
        return Vec::new();
    };
    let mut out = Vec::new();
    // A cache root holds one directory per repository; a bound keeps a
    // huge one from slowing every command.
    for entry in entries.flatten().take(1000) {
        let Some(dir) = entry.file_name().to_str().map(str::to_owned) else {
            continue;
        };
        if !entry.file_type().is_ok_and(|t| t.is_dir()) {
            continue;
        }
        let Ok((file, size)) = crate::sys::fs::open_regular_beneath(root, &[&dir], LAST_KEY) else {
            continue;
        };
        if let Ok(bytes) = crate::sys::fs::read_bounded(&file, size, 64) {
            if let Ok(name) = String::from_utf8(bytes) {
                if Id::from_hex(&name).is_ok() {
                    out.push(name);
                }
            }
        }
    }
    out
}

/// Takes `dir` as the repository's cache directory: the key that opened
/// it is remembered, and the backend may keep copies of remote files
/// there (`CachedBackend`).
pub(super) fn adopt_cache_dir(backend: &dyn Backend, dir: &Path, key_name: &str) {
    remember_key(dir, key_name);
    backend.use_cache_dir(dir);
}

/// Records the key file that opened the repository whose cache directory
/// is `dir`. Best effort: a failure costs only the order of a later open.
pub(super) fn remember_key(dir: &Path, name: &str) {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let path = dir.join(LAST_KEY);
    if crate::sys::fs::open_regular_beneath(dir, &[], LAST_KEY)
        .and_then(|(file, size)| crate::sys::fs::read_bounded(&file, size, 64))
        .is_ok_and(|bytes| bytes == name.as_bytes())
    {
        return;
    }
    let temp = dir.join(format!("{LAST_KEY}.tmp-{}", std::process::id()));
    let written = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(&temp)
        .and_then(|mut file| file.write_all(name.as_bytes()))
        .and_then(|()| std::fs::rename(&temp, &path));
    if written.is_err() {
        let _ = std::fs::remove_file(&temp);
    }
}

/// Decodes a key file after checking it against its name (the BLAKE3 of
/// its bytes), so a flipped bit reads as damage, not as a wrong password.
pub(super) fn decode_key_file(name: &str, bytes: &[u8]) -> Result<KeyFile> {
    if Id::of_file_bytes(bytes).to_hex() != name {
        return Err(Error::corrupt(format!(
            "key file {} does not match its name",
            short(name)
        )));
    }
    KeyFile::decode(bytes)
}

fn short(name: &str) -> &str {
    name.get(..8).unwrap_or(name)
}

/// Finds the key file `password` opens. Tried first: those whose id starts
/// with `hint`, then those in `remembered`, then the rest, cheapest Argon2
/// cost first.
/// A key file that is damaged, not a regular file, too large, or asks for
/// an Argon2 cost over the limits is skipped with a warning, without
/// running Argon2.
pub(super) fn open_key(
    backend: &dyn Backend,
    password: &[u8],
    hint: Option<&str>,
    remembered: &[String],
    warnings: &mut Vec<String>,
) -> Result<(String, MasterKey, Option<SigningKey>)> {
    let keys: Vec<String> = backend
        .list(FileKind::Key)?
        .into_iter()
        .map(|(name, _)| name)
        .collect();
    if keys.is_empty() {
        return Err(Error::corrupt("repository has no key files"));
    }
    let hint = hint.map(str::to_ascii_lowercase);
    if let Some(hint) = &hint {
        if !keys.iter().any(|name| name.starts_with(hint.as_str())) {
            warnings.push(format!("no key file id starts with the key hint {hint:?}"));
        }
    }
    let hinted = |name: &str| hint.as_ref().is_some_and(|h| name.starts_with(h.as_str()));
    let (mut first, rest): (Vec<String>, Vec<String>) = keys
        .into_iter()
        .partition(|name| hinted(name) || remembered.contains(name));
    // Stable: hinted, then remembered, each in name order.
    first.sort_by_key(|name| !hinted(name));
    let total = first.len() + rest.len();
    let mut damaged = 0;
    let mut first_damage = String::new();
    let mut decode = |name: &str| -> Result<Option<KeyFile>> {
        match backend
            .get_bounded(FileKind::Key, name, KEY_FILE_SIZE_MAX)
            .and_then(|bytes| decode_key_file(name, &bytes))
        {
            Ok(k) => Ok(Some(k)),
            Err(e) if e.kind() == ErrorKind::Corrupt => {
                warnings.push(format!("skipping key file {}: {e}", short(name)));
                if damaged == 0 {
                    first_damage = e.to_string();
                }
                damaged += 1;
                Ok(None)
            }
            Err(e) => Err(e),
        }
    };
    let try_open = |name: &str, key_file: &KeyFile| match key_file.open_signing(password) {
        Ok(keys) => Ok(Some(keys)),
        Err(e) if e.kind() == ErrorKind::WrongPassword => Ok(None),
        Err(e) => Err(e.context(format!("key file {name}"))),
    };
    for name in first {
        if let Some(key_file) = decode(&name)? {
            if let Some((key, signing)) = try_open(&name, &key_file)? {
                return Ok((name, key, signing));
            }
        }
    }
    // The others are read first (64 KiB each at most) and tried cheapest
    // first: the key files cairn writes have the default cost, so a
    // planted expensive one, however it sorts, is tried last.
    let mut others = Vec::new();
    for name in rest {
        if let Some(key_file) = decode(&name)? {
            others.push((name, key_file));
        }
    }
    cheapest_first(&mut others);
    for (name, key_file) in others {
        if let Some((key, signing)) = try_open(&name, &key_file)? {
            return Ok((name, key, signing));
        }
    }
    if damaged == total {
        return Err(Error::corrupt(format!(
            "every key file is damaged ({first_damage}); restore keys/ from a copy"
        )));
    }
    let note = if damaged > 0 {
        format!(" ({damaged} key file(s) damaged)")
    } else {
        String::new()
    };
    Err(Error::new(
        ErrorKind::WrongPassword,
        format!("wrong password or no key found{note}"),
    ))
}

/// Orders key files by their Argon2 cost (memory × passes), stable: name
/// order among equal costs.
fn cheapest_first(keys: &mut [(String, KeyFile)]) {
    keys.sort_by_key(|(_, k)| {
        u64::from(k.kdf_params.memory_kib) * u64::from(k.kdf_params.iterations)
    });
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::format::crypto::KdfParams;
    use std::os::unix::fs::PermissionsExt;

    #[test]
    fn the_key_files_nobody_named_are_tried_cheapest_first() {
        let master = MasterKey::generate();
        let key = |memory_kib, iterations| {
            let params = KdfParams {
                memory_kib,
                iterations,
                parallelism: 1,
            };
            KeyFile::create(&master, b"pw", params, "h", "u").unwrap()
        };
        let mut keys = vec![
            ("00".to_string(), key(64, 4)),
            ("11".to_string(), key(128, 1)),
            ("22".to_string(), key(64, 1)),
            ("33".to_string(), key(64, 1)),
        ];
        cheapest_first(&mut keys);
        let order: Vec<&str> = keys.iter().map(|(n, _)| n.as_str()).collect();
        assert_eq!(order, ["22", "33", "11", "00"]);
    }

    #[test]
    fn a_cache_directory_others_can_write_or_own_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let mine = dir.path().join("mine");
        private_dir(&mine, false).unwrap();
        let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o7777;
        assert_eq!(mode(&mine), 0o700);

        let open = dir.path().join("open");
        std::fs::create_dir(&open).unwrap();
        std::fs::set_permissions(&open, std::fs::Permissions::from_mode(0o1777)).unwrap();
        let why = private_dir(&open, false).unwrap_err();
        assert!(why.contains("written by other users"), "{why}");

        // A repository's own directory left 0755 by an older version is
        // made private; a symbolic link is not followed.
        let old = dir.path().join("old");
        std::fs::create_dir(&old).unwrap();
        std::fs::set_permissions(&old, std::fs::Permissions::from_mode(0o755)).unwrap();
        private_dir(&old, true).unwrap();
        assert_eq!(mode(&old), 0o700);
        let link = dir.path().join("link");
        std::os::unix::fs::symlink(&mine, &link).unwrap();
        assert!(private_dir(&link, true).is_err());
        assert!(private_dir(&link, false).is_ok());

        if crate::sys::is_root() {
            let theirs = dir.path().join("theirs");
            std::fs::create_dir(&theirs).unwrap();
            std::os::unix::fs::chown(&theirs, Some(4242), None).unwrap();
            let why = private_dir(&theirs, false).unwrap_err();
            assert!(why.contains("belongs to user 4242"), "{why}");
        }
    }

    #[test]
    fn the_key_that_opened_a_repository_is_remembered() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        let name = "ab".repeat(32);
        for repo in ["r1", "r2"] {
            private_dir(&root.join(repo), true).unwrap();
        }
        remember_key(&root.join("r1"), &name);
        remember_key(&root.join("r1"), &name);
        assert_eq!(remembered_keys(root), vec![name.clone()]);
        let meta = std::fs::metadata(root.join("r1").join(LAST_KEY)).unwrap();
        assert_eq!(meta.permissions().mode() & 0o777, 0o600);
        // Garbage or a link there is not a hint.
        std::fs::write(root.join("r2").join(LAST_KEY), b"not an id").unwrap();
        std::os::unix::fs::symlink(root.join("r1"), root.join("r3")).unwrap();
        assert_eq!(remembered_keys(root), vec![name]);
    }
}
