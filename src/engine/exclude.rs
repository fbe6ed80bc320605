//! Which source paths a directory backup leaves out: `--exclude` /
//! `--iexclude` / `--exclude-file` patterns (gitignore style), and the
//! names of marker files for `--exclude-if-present` / `--exclude-caches`.
//! Pure: the archiver does the stat calls and asks this module.
//!
//! Pattern rules (as gitignore and restic):
//! - `*` and `?` do not cross `/`; `**` does; `[abc]` classes.
//! - A pattern starting with `/` is matched against the whole absolute
//!   path; any other pattern against every trailing run of components
//!   (`*.log` and `cache/tmp` match at any depth).
//! - A trailing `/` matches directories only.
//! - A leading `!` re-includes what an earlier pattern excluded; the last
//!   matching pattern wins.
//! - An excluded directory is not descended into.
//! - Empty lines and lines starting with `#` in exclude files are ignored.

use crate::error::{Error, Result};
use globset::{GlobBuilder, GlobMatcher};
use std::path::Path;

/// `CACHEDIR.TAG` files start with this (https://bford.info/cachedir/).
pub const CACHEDIR_TAG_SIGNATURE: &[u8] = b"Signature: 8a477f597d28d172789f06886806bc55";

#[derive(Debug)]
struct Rule {
    glob: GlobMatcher,
    negate: bool,
    dir_only: bool,
}

#[derive(Debug, Default)]
pub struct Excluder {
    rules: Vec<Rule>,
    /// `--exclude-if-present`: a directory holding one of these is left out.
    pub markers: Vec<String>,
    /// `--exclude-caches`: a directory holding a valid CACHEDIR.TAG is left
    /// out (all but the tag file itself, as GNU tar and restic do).
    pub exclude_caches: bool,
    /// `--one-file-system`: do not descend into other file systems.
    pub one_file_system: bool,
}

impl Excluder {
    /// Adds patterns; `ignore_case` for `--iexclude`.
    pub fn add_patterns(&mut self, patterns: &[String], ignore_case: bool) -> Result<()> {
        for raw in patterns {
            let mut pattern = raw.trim_end_matches(['\r', '\n']).to_string();
            if pattern.trim().is_empty() || pattern.starts_with('#') {
                continue;
            }
            let negate = pattern.starts_with('!');
            if negate {
                pattern.remove(0);
            }
            let dir_only = pattern.len() > 1 && pattern.ends_with('/');
            if dir_only {
                pattern.pop();
            }
            let anchored = if pattern.starts_with('/') {
                pattern
            } else {
                format!("**/{pattern}")
            };
            let glob = GlobBuilder::new(&anchored)
                .literal_separator(true)
                .case_insensitive(ignore_case)
                .backslash_escape(true)
                .build()
                .map_err(|e| Error::invalid(format!("bad exclude pattern {raw:?}: {e}")))?;
            self.rules.push(Rule {
                glob: glob.compile_matcher(),
                negate,
                dir_only,
            });
        }
        Ok(())
    }

    /// Whether any path pattern was given.
    pub fn has_patterns(&self) -> bool {
        !self.rules.is_empty()
    }

    /// Whether nothing would ever be excluded.
    pub fn is_empty(&self) -> bool {
        self.rules.is_empty()
            && self.markers.is_empty()
            && !self.exclude_caches
            && !self.one_file_system
    }

    /// Whether the patterns exclude this absolute path.
    pub fn excludes(&self, path: &Path, is_dir: bool) -> bool {
        let mut excluded = false;
        for rule in &self.rules {
            if rule.dir_only && !is_dir {
                continue;
            }
            if rule.glob.is_match(path) {
                excluded = !rule.negate;
            }
        }
        excluded
    }

    /// `--exclude` patterns for an entry (a stat only when a rule is for
    /// directories).
    pub fn excludes_entry(&self, path: &Path) -> bool {
        if !self.has_patterns() {
            return false;
        }
        let is_dir = std::fs::symlink_metadata(path).is_ok_and(|m| m.is_dir());
        self.excludes(path, is_dir)
    }

    /// `--exclude-if-present` and `--exclude-caches` for a directory.
    pub fn excludes_dir_by_marker(&self, dir: &Path) -> bool {
        if self.markers.iter().any(|m| dir.join(m).exists()) {
            return true;
        }
        if self.exclude_caches {
            let mut head = [0u8; 43];
            if let Ok(mut f) = std::fs::File::open(dir.join("CACHEDIR.TAG")) {
                if std::io::Read::read_exact(&mut f, &mut head).is_ok() {
                    return Self::is_cachedir_tag(&head);
                }
            }
        }
        false
    }

    /// Whether the first bytes of a `CACHEDIR.TAG` file make it valid.
    pub fn is_cachedir_tag(head: &[u8]) -> bool {
        head.starts_with(CACHEDIR_TAG_SIGNATURE)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn ex(patterns: &[&str]) -> Excluder {
        let mut e = Excluder::default();
        e.add_patterns(
            &patterns.iter().map(|s| s.to_string()).collect::<Vec<_>>(),
            false,
        )
        .unwrap();
        e
    }

    #[test]
    fn gitignore_style_rules() {
        let e = ex(&[
            "*.log",
            "node_modules/",
            "/srv/app/tmp",
            "cache/*.bin",
            "!keep.log",
        ]);
        assert!(e.excludes(Path::new("/var/log/syslog.log"), false));
        assert!(e.excludes(Path::new("/a.log"), false));
        assert!(
            !e.excludes(Path::new("/var/log/keep.log"), false),
            "negation"
        );
        assert!(e.excludes(Path::new("/src/node_modules"), true));
        assert!(
            !e.excludes(Path::new("/src/node_modules"), false),
            "dir only"
        );
        assert!(e.excludes(Path::new("/srv/app/tmp"), true));
        assert!(
            !e.excludes(Path::new("/other/srv/app/tmp"), true),
            "anchored"
        );
        assert!(e.excludes(Path::new("/x/cache/a.bin"), false));
        assert!(
            !e.excludes(Path::new("/x/cache/sub/a.bin"), false),
            "* stops at /"
        );
        assert!(!e.excludes(Path::new("/x/logfile"), false));
    }

    #[test]
    fn double_star_and_case() {
        let e = ex(&["/srv/**/secret"]);
        assert!(e.excludes(Path::new("/srv/secret"), false));
        assert!(e.excludes(Path::new("/srv/a/b/secret"), false));
        let mut i = Excluder::default();
        i.add_patterns(&["*.JPG".into()], true).unwrap();
        assert!(i.excludes(Path::new("/p/holiday.jpg"), false));
        assert!(!ex(&["*.JPG"]).excludes(Path::new("/p/holiday.jpg"), false));
    }

    #[test]
    fn comments_blank_lines_and_bad_patterns() {
        let e = ex(&["# comment", "", "  "]);
        assert!(e.rules.is_empty());
        let mut bad = Excluder::default();
        assert!(bad.add_patterns(&["[z-a".into()], false).is_err());
        assert!(Excluder::is_cachedir_tag(
            b"Signature: 8a477f597d28d172789f06886806bc55\n# tag"
        ));
        assert!(!Excluder::is_cachedir_tag(b"Signature: wrong"));
    }

    proptest! {
        /// A name pattern excludes exactly the paths whose last component
        /// is that name, at any depth.
        #[test]
        fn literal_name_matches_last_component(
            dirs in proptest::collection::vec("[a-z]{1,6}", 0..5),
            name in "[a-z]{1,8}",
            other in "[a-z]{1,8}",
        ) {
            let e = ex(&[&name]);
            let path = format!("/{}", dirs.iter().chain([&name]).cloned().collect::<Vec<_>>().join("/"));
            prop_assert!(e.excludes(Path::new(&path), false));
            if other != name {
                let path = format!("/{}", dirs.iter().chain([&other]).cloned().collect::<Vec<_>>().join("/"));
                prop_assert!(!e.excludes(Path::new(&path), false));
            }
        }
    }
}
