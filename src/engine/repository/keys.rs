//! The key files of an opened repository: adding, removing, listing them
//! and changing this session's password.

use super::{open, Repository};
use crate::error::{Error, ErrorKind, Result};
use crate::format::audit::SigningKey;
use crate::format::crypto::KdfParams;
use crate::format::id::{Id, KeyId};
use crate::format::key::KeyFile;
use crate::storage::backend::FileKind;
use crate::storage::lock::ExclusiveLock;

impl<S> Repository<S> {
    /// Adds a key file so that `password` also opens this repository.
    /// The new key file has a signing key of its own: its entries are
    /// attributable to its password.
    pub fn add_key(&self, password: &[u8], kdf: KdfParams) -> Result<KeyId> {
        self.add_key_signing(password, kdf, None)
    }

    fn add_key_signing(
        &self,
        password: &[u8],
        kdf: KdfParams,
        signing: Option<&SigningKey>,
    ) -> Result<KeyId> {
        let key_file = KeyFile::create_signing(
            &self.key,
            signing,
            password,
            kdf,
            &crate::sys::hostname(),
            &crate::sys::username(),
        )?
        .encode();
        let id = KeyId(Id::of_file_bytes(&key_file));
        self.backend.put(FileKind::Key, &id.to_hex(), &key_file)?;
        Ok(id)
    }

    /// The key file this session's password opened.
    pub fn current_key(&self) -> &str {
        &self.key_name
    }

    /// Removes a key file (a password). Refuses the key this session was
    /// opened with and the last intact key: either would lock users out.
    /// The master key and the data are unchanged; nothing is re-encrypted.
    pub fn remove_key(&self, prefix: &str, lock: &ExclusiveLock) -> Result<String> {
        let keys = self.list_keys()?;
        let matching: Vec<&String> = keys
            .iter()
            .map(|(name, _)| name)
            .filter(|name| name.starts_with(prefix))
            .collect();
        let name = match matching.as_slice() {
            [one] if prefix.len() >= 4 => (*one).clone(),
            [] => {
                return Err(Error::new(
                    ErrorKind::NotFound,
                    format!("no key file {prefix:?}"),
                ))
            }
            [_] => return Err(Error::invalid("give at least 4 hex digits of the key id")),
            _ => return Err(Error::invalid(format!("key id {prefix:?} is ambiguous"))),
        };
        if name == self.key_name {
            return Err(Error::invalid(
                "refusing to remove the key this password opened (use `key passwd` to change it)",
            ));
        }
        let intact_others = keys
            .iter()
            .filter(|(other, k)| *other != name && k.is_ok())
            .count();
        if intact_others == 0 {
            return Err(Error::invalid("refusing to remove the last intact key"));
        }
        self.ensure_locked(lock)?;
        self.backend.delete(FileKind::Key, &name)?;
        Ok(name)
    }

    /// Changes this session's password: adds a key file for `new_password`,
    /// then removes the one the old password opened. The new file keeps
    /// the old one's signing key (its audit chain goes on), or gets its
    /// first one if the old file had none.
    pub fn change_password(
        &mut self,
        new_password: &[u8],
        kdf: KdfParams,
        lock: &ExclusiveLock,
    ) -> Result<KeyId> {
        self.ensure_locked(lock)?;
        if self.signing.is_none() {
            self.signing = Some(SigningKey::generate());
        }
        let id = self.add_key_signing(new_password, kdf, self.signing.as_ref())?;
        let old = std::mem::replace(&mut self.key_name, id.to_hex());
        self.backend.delete(FileKind::Key, &old)?;
        Ok(id)
    }

    /// The key files, readable ones decoded (damaged ones as errors).
    pub fn list_keys(&self) -> Result<Vec<(String, Result<KeyFile>)>> {
        let mut out = Vec::new();
        for (name, _) in self.backend.list(FileKind::Key)? {
            let decoded = self
                .backend
                .get_bounded(FileKind::Key, &name, crate::format::key::KEY_FILE_SIZE_MAX)
                .and_then(|bytes| open::decode_key_file(&name, &bytes));
            out.push((name, decoded));
        }
        Ok(out)
    }

    /// This session's audit signing key, if its key file has one.
    pub fn signing_key(&self) -> Option<&SigningKey> {
        self.signing.as_ref()
    }
}
