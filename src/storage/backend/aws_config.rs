//! AWS credentials and region, found the way AWS's own tools find them:
//! the environment (`AWS_ACCESS_KEY_ID`, `AWS_SECRET_ACCESS_KEY`,
//! `AWS_SESSION_TOKEN`, `AWS_REGION`, `AWS_DEFAULT_REGION`) first, then the
//! profile `AWS_PROFILE` names (else `default`) in the shared credentials
//! file (`AWS_SHARED_CREDENTIALS_FILE`, else `~/.aws/credentials`) and the
//! config file (`AWS_CONFIG_FILE`, else `~/.aws/config`), the credentials
//! file winning over the config file. `object_store` reads only the
//! environment, so the two INI files are parsed here.
//!
//! The files are the user's, but read as untrusted: at most
//! `AWS_FILE_SIZE_MAX` bytes, regular files only, and no message ever
//! quotes a line of them (a line may hold a secret).

use crate::error::{Error, Result};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

/// Far above any real credentials or config file.
pub const AWS_FILE_SIZE_MAX: u64 = 1 << 20;

/// What the S3 client is built with. `Debug` leaves the secrets out.
#[derive(Clone, Default, PartialEq, Eq)]
pub struct AwsSettings {
    pub access_key_id: Option<String>,
    pub secret_access_key: Option<String>,
    pub session_token: Option<String>,
    pub region: String,
}

impl std::fmt::Debug for AwsSettings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AwsSettings")
            .field("access_key_id", &self.access_key_id)
            .field(
                "secret_access_key",
                &self.secret_access_key.as_ref().map(|_| "…"),
            )
            .field("session_token", &self.session_token.as_ref().map(|_| "…"))
            .field("region", &self.region)
            .finish()
    }
}

/// Profile keys that name a way to get credentials cairn does not follow
/// (assumed roles, SSO, an external process): refused with a hint rather
/// than silently ignored.
const UNSUPPORTED: [&str; 5] = [
    "role_arn",
    "credential_process",
    "sso_session",
    "sso_start_url",
    "web_identity_token_file",
];

/// The settings from this process's environment and the user's files.
pub fn from_env() -> Result<AwsSettings> {
    resolve(&|name| std::env::var(name).ok().filter(|v| !v.is_empty()))
}

/// `from_env` with the environment as a function, for tests.
pub fn resolve(env: &dyn Fn(&str) -> Option<String>) -> Result<AwsSettings> {
    let env_key = env("AWS_ACCESS_KEY_ID");
    let env_secret = env("AWS_SECRET_ACCESS_KEY");
    if env_key.is_some() != env_secret.is_some() {
        let (set, unset) = match env_key {
            Some(_) => ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"),
            None => ("AWS_SECRET_ACCESS_KEY", "AWS_ACCESS_KEY_ID"),
        };
        return Err(Error::invalid(format!("{set} is set but {unset} is not")));
    }
    let env_region = env("AWS_REGION").or_else(|| env("AWS_DEFAULT_REGION"));
    let explicit = env("AWS_PROFILE");
    let mut settings = AwsSettings {
        region: env_region.clone().unwrap_or_default(),
        ..AwsSettings::default()
    };
    if let (Some(key), Some(secret)) = (env_key, env_secret) {
        settings.access_key_id = Some(key);
        settings.secret_access_key = Some(secret);
        settings.session_token = env("AWS_SESSION_TOKEN");
    }
    // The files matter only for what the environment left open, and
    // always for a profile named on purpose (a typo must not pass).
    if settings.access_key_id.is_some() && env_region.is_some() && explicit.is_none() {
        return Ok(settings);
    }
    let home = env("HOME").map(PathBuf::from);
    let file = |variable: &str, default: &str| {
        env(variable)
            .map(PathBuf::from)
            .or_else(|| home.as_ref().map(|h| h.join(".aws").join(default)))
    };
    let credentials_file = file("AWS_SHARED_CREDENTIALS_FILE", "credentials");
    let config_file = file("AWS_CONFIG_FILE", "config");
    let name = explicit.clone().unwrap_or_else(|| "default".to_string());
    let from_credentials = match &credentials_file {
        Some(path) => read_ini(path)?.remove(&name),
        None => None,
    };
    let from_config = match &config_file {
        Some(path) => {
            let mut sections = read_ini(path)?;
            sections.remove(&format!("profile {name}")).or_else(|| {
                (name == "default")
                    .then(|| sections.remove("default"))
                    .flatten()
            })
        }
        None => None,
    };
    if from_credentials.is_none() && from_config.is_none() {
        if explicit.is_some() {
            let files: Vec<String> = [&credentials_file, &config_file]
                .into_iter()
                .flatten()
                .map(|p| p.display().to_string())
                .collect();
            return Err(Error::invalid(format!(
                "AWS profile {name:?} (AWS_PROFILE) is in neither {}",
                files.join(" nor ")
            )));
        }
        settings.region = env_region.unwrap_or_else(|| "us-east-1".to_string());
        return Ok(settings);
    }
    // The credentials file wins over the config file, key by key.
    let mut profile = from_config.unwrap_or_default();
    profile.extend(from_credentials.unwrap_or_default());
    if settings.access_key_id.is_none() {
        match (
            profile.remove("aws_access_key_id"),
            profile.remove("aws_secret_access_key"),
        ) {
            (Some(key), Some(secret)) => {
                settings.access_key_id = Some(key);
                settings.secret_access_key = Some(secret);
                settings.session_token = profile.remove("aws_session_token");
            }
            (None, None) => {
                if let Some(key) = UNSUPPORTED.iter().find(|k| profile.contains_key(**k)) {
                    return Err(Error::invalid(format!(
                        "AWS profile {name:?} gets its credentials through {key}, which cairn does not follow: export AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY instead (aws configure export-credentials prints them)"
                    )));
                }
            }
            (Some(_), None) | (None, Some(_)) => {
                return Err(Error::invalid(format!(
                    "AWS profile {name:?} has only one of aws_access_key_id and aws_secret_access_key"
                )));
            }
        }
    }
    settings.region = env_region
        .or_else(|| profile.remove("region").filter(|r| !r.is_empty()))
        .unwrap_or_else(|| "us-east-1".to_string());
    Ok(settings)
}

type Sections = BTreeMap<String, BTreeMap<String, String>>;

/// Reads and parses one INI file; a missing file has no sections.
fn read_ini(path: &Path) -> Result<Sections> {
    let (dir, name) = match (path.parent(), path.file_name().and_then(|n| n.to_str())) {
        (Some(dir), Some(name)) => (
            if dir.as_os_str().is_empty() {
                Path::new(".")
            } else {
                dir
            },
            name,
        ),
        _ => {
            return Err(Error::invalid(format!(
                "bad AWS file name {}",
                path.display()
            )))
        }
    };
    let cannot =
        |e: std::io::Error| Error::invalid(format!("cannot read AWS file {}: {e}", path.display()));
    // The directory may be a symbolic link (a dotfiles checkout); the file
    // itself must be a regular file, read with a bound.
    let (file, size) = match crate::sys::fs::open_regular_beneath(dir, &[], name) {
        Ok(opened) => opened,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Sections::new()),
        Err(e) => return Err(cannot(e)),
    };
    let bytes = crate::sys::fs::read_bounded(&file, size, AWS_FILE_SIZE_MAX).map_err(cannot)?;
    let text = String::from_utf8(bytes)
        .map_err(|_| Error::invalid(format!("AWS file {} is not UTF-8", path.display())))?;
    parse_ini(&text).map_err(|line| {
        Error::invalid(format!(
            "cannot parse AWS file {} at line {line}",
            path.display()
        ))
    })
}

/// `[section]` headers and `key = value` lines; `#` and `;` comments;
/// indented lines under a key are its nested settings (`s3 =` then
/// `  max_concurrent_requests = 20`), which cairn does not use. The error
/// is the number of the first line that is none of these (never its text).
fn parse_ini(text: &str) -> std::result::Result<Sections, usize> {
    let mut sections = Sections::new();
    let mut current: Option<String> = None;
    for (number, line) in text.lines().enumerate() {
        let trimmed = line.trim();
        if trimmed.is_empty() || trimmed.starts_with('#') || trimmed.starts_with(';') {
            continue;
        }
        if line.starts_with([' ', '\t']) && current.is_some() {
            continue;
        }
        if let Some(header) = trimmed.strip_prefix('[') {
            let name = header.strip_suffix(']').ok_or(number + 1)?.trim();
            // `[profile  x]` is `profile x`.
            let name = name.split_whitespace().collect::<Vec<_>>().join(" ");
            sections.entry(name.clone()).or_default();
            current = Some(name);
            continue;
        }
        let (Some(section), Some((key, value))) = (&current, trimmed.split_once('=')) else {
            return Err(number + 1);
        };
        let key = key.trim().to_ascii_lowercase();
        if key.is_empty() {
            return Err(number + 1);
        }
        sections
            .entry(section.clone())
            .or_default()
            .insert(key, value.trim().to_string());
    }
    Ok(sections)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::error::ErrorKind;

    fn with(dir: &Path, vars: &[(&str, &str)]) -> Result<AwsSettings> {
        let mut map: BTreeMap<String, String> = vars
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        map.insert("HOME".into(), dir.display().to_string());
        resolve(&|name| map.get(name).cloned())
    }

    fn files(credentials: &str, config: &str) -> tempfile::TempDir {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir(dir.path().join(".aws")).unwrap();
        std::fs::write(dir.path().join(".aws/credentials"), credentials).unwrap();
        std::fs::write(dir.path().join(".aws/config"), config).unwrap();
        dir
    }

    const CREDENTIALS: &str = "# comment\n[default]\naws_access_key_id = AKDEFAULT\naws_secret_access_key = sdefault\n\n[work]\naws_access_key_id=AKWORK\naws_secret_access_key=swork\naws_session_token = twork\n";
    const CONFIG: &str = "[default]\nregion = eu-west-1\n[profile work]\nregion = eu-central-1\ns3 =\n  max_concurrent_requests = 20\n[profile sso]\nsso_session = corp\nregion = us-west-2\n";

    #[test]
    fn the_default_profile_gives_keys_and_region() {
        let dir = files(CREDENTIALS, CONFIG);
        let s = with(dir.path(), &[]).unwrap();
        assert_eq!(s.access_key_id.as_deref(), Some("AKDEFAULT"));
        assert_eq!(s.secret_access_key.as_deref(), Some("sdefault"));
        assert_eq!(s.session_token, None);
        assert_eq!(s.region, "eu-west-1");
        assert!(!format!("{s:?}").contains("sdefault"));
    }

    #[test]
    fn aws_profile_picks_a_profile_and_the_environment_wins() {
        let dir = files(CREDENTIALS, CONFIG);
        let s = with(dir.path(), &[("AWS_PROFILE", "work")]).unwrap();
        assert_eq!(s.access_key_id.as_deref(), Some("AKWORK"));
        assert_eq!(s.session_token.as_deref(), Some("twork"));
        assert_eq!(s.region, "eu-central-1");
        let s = with(
            dir.path(),
            &[
                ("AWS_PROFILE", "work"),
                ("AWS_ACCESS_KEY_ID", "AKENV"),
                ("AWS_SECRET_ACCESS_KEY", "senv"),
                ("AWS_DEFAULT_REGION", "ap-south-1"),
            ],
        )
        .unwrap();
        assert_eq!(s.access_key_id.as_deref(), Some("AKENV"));
        assert_eq!(
            s.session_token, None,
            "a profile's token never joins env keys"
        );
        assert_eq!(s.region, "ap-south-1");
        let s = with(
            dir.path(),
            &[
                ("AWS_REGION", "sa-east-1"),
                ("AWS_DEFAULT_REGION", "ap-south-1"),
            ],
        )
        .unwrap();
        assert_eq!(s.region, "sa-east-1", "AWS_REGION first, as AWS's tools");
    }

    #[test]
    fn other_file_locations_come_from_the_environment() {
        let dir = files("", "");
        let other = dir.path().join("elsewhere");
        std::fs::create_dir(&other).unwrap();
        std::fs::write(other.join("c"), CREDENTIALS).unwrap();
        std::fs::write(other.join("f"), CONFIG).unwrap();
        let s = with(
            dir.path(),
            &[
                (
                    "AWS_SHARED_CREDENTIALS_FILE",
                    other.join("c").to_str().unwrap(),
                ),
                ("AWS_CONFIG_FILE", other.join("f").to_str().unwrap()),
            ],
        )
        .unwrap();
        assert_eq!(s.access_key_id.as_deref(), Some("AKDEFAULT"));
        assert_eq!(s.region, "eu-west-1");
    }

    #[test]
    fn no_files_and_no_variables_is_no_credentials() {
        let dir = tempfile::tempdir().unwrap();
        let s = with(dir.path(), &[]).unwrap();
        assert_eq!(s.access_key_id, None);
        assert_eq!(s.region, "us-east-1");
    }

    #[test]
    fn bad_profiles_and_files_are_one_line_errors_without_secrets() {
        let dir = files(CREDENTIALS, CONFIG);
        let e = with(dir.path(), &[("AWS_PROFILE", "nope")]).unwrap_err();
        assert_eq!(e.kind(), ErrorKind::InvalidInput);
        assert!(e.to_string().contains("\"nope\""), "{e}");
        let e = with(dir.path(), &[("AWS_PROFILE", "sso")]).unwrap_err();
        assert!(e.to_string().contains("sso_session"), "{e}");
        let e = with(dir.path(), &[("AWS_ACCESS_KEY_ID", "AK")]).unwrap_err();
        assert!(
            e.to_string().contains("AWS_SECRET_ACCESS_KEY is not"),
            "{e}"
        );

        let broken = files("[default]\naws_secret_access_key hunter2\n", "");
        let e = with(broken.path(), &[]).unwrap_err();
        assert!(e.to_string().contains("line 2"), "{e}");
        assert!(!e.to_string().contains("hunter2"), "{e}");
        assert_eq!(e.to_string().lines().count(), 1);

        let huge = files("", "");
        let f = std::fs::File::create(huge.path().join(".aws/credentials")).unwrap();
        f.set_len(AWS_FILE_SIZE_MAX + 1).unwrap();
        let e = with(huge.path(), &[]).unwrap_err();
        assert!(e.to_string().contains("larger than"), "{e}");

        let fifo = files("", "");
        std::fs::remove_file(fifo.path().join(".aws/credentials")).unwrap();
        std::os::unix::fs::symlink("/dev/zero", fifo.path().join(".aws/credentials")).unwrap();
        let e = with(fifo.path(), &[]).unwrap_err();
        assert!(e.to_string().contains("symbolic link"), "{e}");
    }
}
