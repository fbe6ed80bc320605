//! `cairn key add|list|remove|passwd`: the passwords (key files) that open
//! the repository.

use super::args::{Cli, KeyCommand};
use super::output::{emit, emit_text_even_quiet};
use super::repo::{lock_exclusive, open};
use anyhow::{anyhow, Context};
use cairn::KdfParams;
use std::io::IsTerminal;

pub(crate) fn key(cli: &Cli, command: &KeyCommand) -> anyhow::Result<i32> {
    match command {
        KeyCommand::Add { new_password_file } => add(cli, new_password_file.as_deref()),
        KeyCommand::Remove { id } => remove(cli, id),
        KeyCommand::Passwd { new_password_file } => passwd(cli, new_password_file.as_deref()),
        KeyCommand::List => list(cli),
    }
}

fn add(cli: &Cli, new_password_file: Option<&std::path::Path>) -> anyhow::Result<i32> {
    let repo = open(cli)?;
    let new = new_password(new_password_file)?;
    let id = repo.add_key(new.as_bytes(), KdfParams::DEFAULT)?;
    super::audit::note_id(cairn::IdKind::KeyAdded, id.0);
    emit(
        cli,
        || Ok(serde_json::json!({"added": id.to_hex()})),
        || {
            println!("added key {}", id.short());
            Ok(())
        },
    )?;
    Ok(0)
}

fn remove(cli: &Cli, id: &str) -> anyhow::Result<i32> {
    let repo = open(cli)?;
    let lock = lock_exclusive(cli, &repo)?;
    let removed = repo.remove_key(id, &lock)?;
    super::audit::note_key_removed(&removed);
    emit(
        cli,
        || Ok(serde_json::json!({"removed": removed})),
        || {
            println!("removed key {}", &removed[..8]);
            Ok(())
        },
    )?;
    Ok(0)
}

fn passwd(cli: &Cli, new_password_file: Option<&std::path::Path>) -> anyhow::Result<i32> {
    let mut repo = open(cli)?;
    let lock = lock_exclusive(cli, &repo)?;
    let new = new_password(new_password_file)?;
    let old = repo.current_key().to_string();
    let id = repo.change_password(new.as_bytes(), KdfParams::DEFAULT, &lock)?;
    super::audit::note_id(cairn::IdKind::KeyAdded, id.0);
    super::audit::note_key_removed(&old);
    emit(
        cli,
        || Ok(serde_json::json!({"added": id.to_hex(), "removed": old})),
        || {
            println!("password changed: key {} replaces the old one", id.short());
            Ok(())
        },
    )?;
    Ok(0)
}

fn list(cli: &Cli) -> anyhow::Result<i32> {
    let repo = open(cli)?;
    let keys = repo.list_keys()?;
    emit_text_even_quiet(
        cli,
        || {
            let values: Vec<_> = keys
                .iter()
                .map(|(name, k)| match k {
                    Ok(k) => serde_json::json!({"id": name, "current": name == repo.current_key(),
                        "created": k.created, "hostname": k.hostname,
                        "username": k.username, "kdf": k.kdf, "kdf_params": k.kdf_params}),
                    Err(e) => {
                        serde_json::json!({"id": name, "current": false, "error": e.to_string()})
                    }
                })
                .collect();
            Ok(values)
        },
        || {
            for (name, k) in &keys {
                match k {
                    Ok(k) => println!(
                        "{}{} {}  {}@{}",
                        if name == repo.current_key() { "*" } else { " " },
                        &name[..8.min(name.len())],
                        k.created,
                        k.username,
                        k.hostname
                    ),
                    Err(e) => println!("{}  damaged: {e}", &name[..8.min(name.len())]),
                }
            }
            Ok(())
        },
    )?;
    Ok(0)
}

/// A new password from a file's first line, or prompted twice.
fn new_password(file: Option<&std::path::Path>) -> anyhow::Result<zeroize::Zeroizing<String>> {
    let new = match file {
        Some(file) => {
            let text = std::fs::read_to_string(file)
                .with_context(|| format!("cannot read {}", file.display()))?;
            text.lines().next().unwrap_or("").to_string()
        }
        None if std::io::stdin().is_terminal() => {
            let first = rpassword::prompt_password("enter new password: ")?;
            if first != rpassword::prompt_password("enter new password again: ")? {
                return Err(anyhow!("passwords do not match"));
            }
            first
        }
        None => {
            return Err(anyhow!(
                "a new password needs --new-password-file or a terminal"
            ))
        }
    };
    if new.is_empty() {
        return Err(anyhow!("an empty password is not allowed"));
    }
    Ok(zeroize::Zeroizing::new(new))
}
