//! The configuration file (`cairn.toml`) and its named profiles: everything
//! a scheduled job would otherwise spell out in flags and environment
//! variables (repository, password source, sources to back up, retention
//! policy, metrics file). Pure parsing and validation: the CLI decides how a
//! profile combines with flags and environment (flags > environment >
//! profile) and runs it. Format and examples: `docs/cairn.example.toml`.

use crate::error::{Error, Result};
use crate::format::retention::{parse_tag_list, Count, Duration, GroupBy, Policy};
use serde::Deserialize;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

/// The profile used when `--config` is given without `--profile`.
pub const DEFAULT_PROFILE: &str = "default";

/// A parsed and validated configuration file.
#[derive(Debug, Clone)]
pub struct ConfigFile {
    pub path: PathBuf,
    pub profiles: BTreeMap<String, Profile>,
}

/// One `[profile.NAME]` table, validated, with relative paths resolved
/// against the configuration file's directory.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Profile {
    pub name: String,
    pub repository: Option<PathBuf>,
    pub password_file: Option<PathBuf>,
    pub password_command: Option<String>,
    pub cache_dir: Option<PathBuf>,
    /// As written (`30m`); the CLI parses it like `--retry-lock`.
    pub retry_lock: Option<String>,
    pub metrics_file: Option<PathBuf>,
    /// Requests run at once against an S3 repository (`--connections`).
    pub connections: Option<u16>,
    /// Hostname recorded in this profile's snapshots.
    pub host: Option<String>,
    /// Tags of every snapshot this profile writes.
    pub tags: Vec<String>,
    /// Exclude patterns for every path source (not supported by the
    /// archiver yet: the CLI refuses to back up with a non-empty list).
    pub exclude: Vec<String>,
    pub sources: Vec<Source>,
    /// The `forget` policy used when no `--keep-*` flag is given.
    pub retention: Option<Retention>,
    /// The steps of `cairn --profile NAME run`, each a command line split
    /// on whitespace, e.g. `["backup", "forget --prune", "check"]`.
    pub run: Vec<Vec<String>>,
}

/// One `[[profile.NAME.source]]`: a snapshot per run.
#[derive(Debug, Clone, PartialEq)]
pub struct Source {
    pub input: SourceInput,
    /// Added to the profile's tags.
    pub tags: Vec<String>,
    /// Added to the profile's exclude patterns (path sources only).
    pub exclude: Vec<String>,
}

#[derive(Debug, Clone, PartialEq)]
pub enum SourceInput {
    /// Directories and files, backed up together as one snapshot.
    Paths(Vec<PathBuf>),
    /// A command run without a shell whose standard output is stored as
    /// `filename` (`backup --stdin-from-command`).
    Command { argv: Vec<String>, filename: String },
}

impl Source {
    /// A short name for messages: the paths, or the file name.
    pub fn describe(&self) -> String {
        match &self.input {
            SourceInput::Paths(paths) => paths
                .iter()
                .map(|p| p.display().to_string())
                .collect::<Vec<_>>()
                .join(" "),
            SourceInput::Command { filename, .. } => filename.clone(),
        }
    }
}

/// `[profile.NAME.retention]`.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Retention {
    pub policy: Policy,
    pub group_by: Option<GroupBy>,
}

// The file's shape. Kebab-case keys, as the flags are spelled; every table
// refuses unknown keys so that a typo (`keep-dayly`) is an error, not a
// silently empty policy.

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawFile {
    #[serde(default)]
    profile: BTreeMap<String, RawProfile>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
struct RawProfile {
    repository: Option<PathBuf>,
    password_file: Option<PathBuf>,
    password_command: Option<String>,
    cache_dir: Option<PathBuf>,
    retry_lock: Option<String>,
    metrics_file: Option<PathBuf>,
    connections: Option<u16>,
    host: Option<String>,
    #[serde(default)]
    tags: Vec<String>,
    #[serde(default)]
    exclude: Vec<String>,
    #[serde(default)]
    source: Vec<RawSource>,
    retention: Option<RawRetention>,
    #[serde(default)]
    run: Vec<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
struct RawSource {
    paths: Option<Vec<PathBuf>>,
    command: Option<Vec<String>>,
    filename: Option<String>,
    #[serde(default)]
    tags: Vec<String>,
    #[serde(default)]
    exclude: Vec<String>,
}

/// A count as TOML writes it: `30`, `-1` or `"unlimited"`.
#[derive(Deserialize)]
#[serde(untagged)]
enum RawCount {
    Number(i64),
    Text(String),
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
struct RawRetention {
    keep_last: Option<RawCount>,
    keep_hourly: Option<RawCount>,
    keep_daily: Option<RawCount>,
    keep_weekly: Option<RawCount>,
    keep_monthly: Option<RawCount>,
    keep_yearly: Option<RawCount>,
    keep_within: Option<String>,
    keep_within_hourly: Option<String>,
    keep_within_daily: Option<String>,
    keep_within_weekly: Option<String>,
    keep_within_monthly: Option<String>,
    keep_within_yearly: Option<String>,
    #[serde(default)]
    keep_tag: Vec<String>,
    group_by: Option<String>,
}

/// Where the configuration file is looked for when `--config` is not given,
/// first match wins: `$XDG_CONFIG_HOME/cairn/cairn.toml` (or
/// `~/.config/cairn/cairn.toml`), then `/etc/cairn/cairn.toml`.
pub fn default_locations() -> Vec<PathBuf> {
    let mut out = Vec::new();
    let xdg = std::env::var_os("XDG_CONFIG_HOME")
        .filter(|v| !v.is_empty())
        .map(PathBuf::from)
        .filter(|p| p.is_absolute());
    // Relative values are ignored, as the XDG spec says: they would name
    // a file in whatever directory cairn was started in.
    let home = std::env::var_os("HOME")
        .filter(|v| !v.is_empty())
        .map(PathBuf::from)
        .filter(|p| p.is_absolute())
        .map(|h| h.join(".config"));
    if let Some(dir) = xdg.or(home) {
        out.push(dir.join("cairn").join("cairn.toml"));
    }
    out.push(PathBuf::from("/etc/cairn/cairn.toml"));
    out
}

/// Reads `explicit`, or the first existing default location.
pub fn load(explicit: Option<&Path>) -> Result<ConfigFile> {
    let path = match explicit {
        Some(p) => p.to_path_buf(),
        None => {
            let candidates = default_locations();
            candidates
                .iter()
                .find(|p| p.is_file())
                .cloned()
                .ok_or_else(|| {
                    Error::invalid(format!(
                        "no configuration file: looked for {}",
                        candidates
                            .iter()
                            .map(|p| p.display().to_string())
                            .collect::<Vec<_>>()
                            .join(", ")
                    ))
                })?
        }
    };
    let text = std::fs::read_to_string(&path)
        .map_err(|e| Error::io(format!("cannot read {}", path.display()), e))?;
    parse(&text, &path)
}

/// Parses the text of the file at `path` (used for messages and to resolve
/// relative paths).
pub fn parse(text: &str, path: &Path) -> Result<ConfigFile> {
    let raw: RawFile = toml::from_str(text).map_err(|e| {
        // One line: file, line, and toml's message (which names the key).
        let line = e
            .span()
            .map(|s| {
                format!(
                    ":{}",
                    1 + text[..s.start.min(text.len())].matches('\n').count()
                )
            })
            .unwrap_or_default();
        let message = e.message().trim().replace('\n', " ");
        Error::invalid(format!("{}{line}: {message}", path.display()))
    })?;
    let base = path.parent().unwrap_or(Path::new("."));
    let mut profiles = BTreeMap::new();
    for (name, p) in raw.profile {
        let context = format!("{}: profile {name:?}", path.display());
        let profile = p.validate(&name, base).map_err(|e| e.context(&context))?;
        profiles.insert(name, profile);
    }
    Ok(ConfigFile {
        path: path.to_path_buf(),
        profiles,
    })
}

impl ConfigFile {
    pub fn profile(&self, name: &str) -> Result<&Profile> {
        self.profiles.get(name).ok_or_else(|| {
            let known: Vec<_> = self.profiles.keys().map(String::as_str).collect();
            Error::invalid(format!(
                "{}: no profile {name:?} (profiles: {})",
                self.path.display(),
                if known.is_empty() {
                    "none".to_string()
                } else {
                    known.join(", ")
                }
            ))
        })
    }
}

fn resolve(base: &Path, p: PathBuf) -> PathBuf {
    if p.is_absolute() {
        p
    } else {
        base.join(p)
    }
}

fn count(key: &str, raw: Option<RawCount>) -> Result<Count> {
    match raw {
        None => Ok(Count::default()),
        Some(RawCount::Number(n)) => Count::parse(&n.to_string()),
        Some(RawCount::Text(t)) => Count::parse(&t),
    }
    .map_err(|e| e.context(key))
}

fn duration(key: &str, raw: Option<String>) -> Result<Duration> {
    raw.map_or(Ok(Duration::default()), |d| Duration::parse(&d))
        .map_err(|e| e.context(key))
}

impl RawRetention {
    fn validate(self) -> Result<Retention> {
        let policy = Policy {
            last: count("keep-last", self.keep_last)?,
            hourly: count("keep-hourly", self.keep_hourly)?,
            daily: count("keep-daily", self.keep_daily)?,
            weekly: count("keep-weekly", self.keep_weekly)?,
            monthly: count("keep-monthly", self.keep_monthly)?,
            yearly: count("keep-yearly", self.keep_yearly)?,
            within: duration("keep-within", self.keep_within)?,
            within_hourly: duration("keep-within-hourly", self.keep_within_hourly)?,
            within_daily: duration("keep-within-daily", self.keep_within_daily)?,
            within_weekly: duration("keep-within-weekly", self.keep_within_weekly)?,
            within_monthly: duration("keep-within-monthly", self.keep_within_monthly)?,
            within_yearly: duration("keep-within-yearly", self.keep_within_yearly)?,
            tags: self.keep_tag.iter().map(|t| parse_tag_list(t)).collect(),
        };
        if policy.is_empty() {
            // An empty policy would make forget refuse (or, with
            // --unsafe-allow-remove-all, remove everything): say so here.
            return Err(Error::invalid(
                "retention: no keep-* rule given (remove the table or add a rule)",
            ));
        }
        let group_by = self
            .group_by
            .map(|g| GroupBy::parse(&g).map_err(|e| e.context("group-by")))
            .transpose()?;
        Ok(Retention { policy, group_by })
    }
}

impl RawProfile {
    fn validate(self, name: &str, base: &Path) -> Result<Profile> {
        if self.password_file.is_some() && self.password_command.is_some() {
            return Err(Error::invalid(
                "give password-file or password-command, not both",
            ));
        }
        let mut sources = Vec::new();
        for (i, s) in self.source.into_iter().enumerate() {
            let n = i + 1;
            let input = match (s.paths, s.command, s.filename) {
                (Some(paths), None, None) => {
                    if paths.is_empty() {
                        return Err(Error::invalid(format!("source {n}: paths is empty")));
                    }
                    SourceInput::Paths(paths.into_iter().map(|p| resolve(base, p)).collect())
                }
                (None, Some(argv), Some(filename)) => {
                    if argv.is_empty() || argv[0].is_empty() {
                        return Err(Error::invalid(format!("source {n}: command is empty")));
                    }
                    if filename.is_empty() || filename.contains('/') {
                        return Err(Error::invalid(format!(
                            "source {n}: filename must be a plain file name"
                        )));
                    }
                    if !s.exclude.is_empty() {
                        return Err(Error::invalid(format!(
                            "source {n}: exclude applies to paths, not to a command"
                        )));
                    }
                    SourceInput::Command { argv, filename }
                }
                (None, Some(_), None) => {
                    return Err(Error::invalid(format!(
                    "source {n}: a command needs filename (the name of its output in the snapshot)"
                )))
                }
                (Some(_), Some(_), _) => {
                    return Err(Error::invalid(format!(
                        "source {n}: give paths or command, not both"
                    )))
                }
                (Some(_), None, Some(_)) => {
                    return Err(Error::invalid(format!(
                        "source {n}: filename belongs to a command source"
                    )))
                }
                (None, None, _) => {
                    return Err(Error::invalid(format!(
                        "source {n}: give paths = [...] or command = [...]"
                    )))
                }
            };
            sources.push(Source {
                input,
                tags: s.tags,
                exclude: s.exclude,
            });
        }
        if let Some(n) = self.connections {
            if !(1..=64).contains(&n) {
                return Err(Error::invalid("connections must be 1 to 64"));
            }
        }
        let mut run = Vec::new();
        for step in self.run {
            let words: Vec<String> = step.split_whitespace().map(String::from).collect();
            match words.first().map(String::as_str) {
                None => return Err(Error::invalid("run: empty step")),
                Some("run" | "init") => {
                    return Err(Error::invalid(format!(
                        "run: {:?} cannot be a step",
                        words[0]
                    )))
                }
                Some(_) => run.push(words),
            }
        }
        Ok(Profile {
            name: name.to_string(),
            repository: self.repository.map(|p| resolve(base, p)),
            password_file: self.password_file.map(|p| resolve(base, p)),
            password_command: self.password_command,
            cache_dir: self.cache_dir.map(|p| resolve(base, p)),
            retry_lock: self.retry_lock,
            metrics_file: self.metrics_file.map(|p| resolve(base, p)),
            connections: self.connections,
            host: self.host,
            tags: self.tags,
            exclude: self.exclude,
            sources,
            retention: self.retention.map(RawRetention::validate).transpose()?,
            run,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse_str(text: &str) -> Result<ConfigFile> {
        parse(text, Path::new("/etc/cairn/cairn.toml"))
    }

    #[test]
    fn full_profile() {
        let c = parse_str(
            r#"
[profile.nightly]
repository = "/srv/backup/repo"
password-file = "password"
retry-lock = "30m"
connections = 8
host = "db1"
tags = ["nightly"]
run = ["backup", "forget  --prune", "check --read-data-subset 1/7"]

[[profile.nightly.source]]
paths = ["/etc", "/srv"]
tags = ["files"]

[[profile.nightly.source]]
command = ["pg_dump", "-Fp", "app"]
filename = "app.sql"

[profile.nightly.retention]
keep-daily = 7
keep-weekly = "unlimited"
keep-within = "14d"
keep-tag = ["keep,important"]
group-by = "host"
"#,
        )
        .unwrap();
        let p = c.profile("nightly").unwrap();
        assert_eq!(p.repository, Some("/srv/backup/repo".into()));
        assert_eq!(p.password_file, Some("/etc/cairn/password".into()));
        assert_eq!(p.connections, Some(8));
        assert_eq!(p.sources.len(), 2);
        assert_eq!(
            p.sources[1].input,
            SourceInput::Command {
                argv: vec!["pg_dump".into(), "-Fp".into(), "app".into()],
                filename: "app.sql".into()
            }
        );
        assert_eq!(p.run[1], vec!["forget", "--prune"]);
        let r = p.retention.as_ref().unwrap();
        assert_eq!(r.policy.daily, Count::Limited(7));
        assert_eq!(r.policy.weekly, Count::Unlimited);
        assert_eq!(r.policy.within.days, 14);
        assert_eq!(r.policy.tags, vec![vec!["keep", "important"]]);
        assert!(c.profile("weekly").is_err());
    }

    #[test]
    fn unknown_key_names_file_line_and_key() {
        let e = parse_str(
            "[profile.a]\nrepository = \"/r\"\n\n[profile.a.retention]\nkeep-dayly = 3\n",
        )
        .unwrap_err()
        .to_string();
        assert!(!e.contains('\n'), "{e}");
        assert!(e.starts_with("/etc/cairn/cairn.toml:5:"), "{e}");
        assert!(e.contains("keep-dayly"), "{e}");
        let e = parse_str("[profile.a]\nrepo = \"/r\"\n")
            .unwrap_err()
            .to_string();
        assert!(e.contains("repo") && e.contains(":2:"), "{e}");
        let e = parse_str("[profiles.a]\n").unwrap_err().to_string();
        assert!(e.contains("profiles"), "{e}");
    }

    #[test]
    fn bad_values_are_refused() {
        for (text, needle) in [
            ("[profile.a.retention]\nkeep-daily = \"x\"", "keep-daily"),
            ("[profile.a.retention]\nkeep-within = \"3w\"", "keep-within"),
            ("[profile.a.retention]\ngroup-by = \"host\"", "no keep-*"),
            ("[[profile.a.source]]\ncommand = [\"pg_dump\"]", "filename"),
            ("[[profile.a.source]]\ntags = [\"x\"]", "paths = [...]"),
            ("[[profile.a.source]]\npaths = []", "empty"),
            (
                "[profile.a]\npassword-file = \"p\"\npassword-command = \"c\"",
                "not both",
            ),
            ("[profile.a]\nrun = [\"run\"]", "cannot be a step"),
            (
                "[profile.a]\nconnections = 0",
                "connections must be 1 to 64",
            ),
            (
                "[profile.a]\nconnections = 65",
                "connections must be 1 to 64",
            ),
        ] {
            let e = parse_str(text).unwrap_err().to_string();
            assert!(e.contains(needle), "{text}: {e}");
            assert!(e.contains("profile \"a\""), "{text}: {e}");
        }
    }

    #[test]
    fn drill_is_a_run_step() {
        let c = parse_str("[profile.p]\nrun = [\"backup\", \"drill --max-shrink 10%\"]\n").unwrap();
        let p = c.profile("p").unwrap();
        assert_eq!(p.run[1], vec!["drill", "--max-shrink", "10%"]);
    }
}
