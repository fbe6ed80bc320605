//! Prometheus textfile metrics (node_exporter's textfile collector): parse
//! an existing `.prom` file, replace the samples one run owns, and write it
//! back atomically. One file can serve several jobs and hosts because a run
//! only replaces the samples with its own names and label sets; everything
//! else in the file is kept. The metric names and labels cairn writes are
//! documented in `docs/monitoring.md`; this module knows none of them.

use crate::error::{Error, Result};
use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};

/// One metric family: its HELP and TYPE lines and its samples, keyed by the
/// rendered label set (`{a="1",b="2"}`, labels sorted by name).
#[derive(Debug, Clone, Default, PartialEq)]
struct Family {
    help: Option<String>,
    kind: Option<String>,
    samples: BTreeMap<String, String>,
}

/// The contents of a textfile, in a form that renders deterministically:
/// families sorted by name, each family's samples together (the exposition
/// format requires that; node_exporter rejects a file that splits them).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct TextFile {
    families: BTreeMap<String, Family>,
}

fn valid_name(name: &str) -> bool {
    let mut chars = name.chars();
    chars
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_' || c == ':')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_' || c == ':')
}

fn escape_value(v: &str) -> String {
    v.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

/// Renders a label set in canonical form; empty values are left out, as
/// Prometheus treats `l=""` like a missing label.
fn render_labels(labels: &[(&str, &str)]) -> String {
    let mut sorted: Vec<_> = labels.iter().filter(|(_, v)| !v.is_empty()).collect();
    sorted.sort();
    if sorted.is_empty() {
        return String::new();
    }
    let parts: Vec<String> = sorted
        .iter()
        .map(|(k, v)| format!("{k}=\"{}\"", escape_value(v)))
        .collect();
    format!("{{{}}}", parts.join(","))
}

/// Parses `{a="x",b="y"}` (the braces included) into pairs.
fn parse_labels(text: &str) -> Option<Vec<(String, String)>> {
    let inner: Vec<char> = text.strip_prefix('{')?.strip_suffix('}')?.chars().collect();
    let mut out = Vec::new();
    let mut i = 0;
    let skip_space = |i: &mut usize| {
        while inner.get(*i).is_some_and(|c| c.is_whitespace()) {
            *i += 1;
        }
    };
    loop {
        skip_space(&mut i);
        if i == inner.len() {
            return Some(out);
        }
        let name_start = i;
        while inner
            .get(i)
            .is_some_and(|&c| c != '=' && !c.is_whitespace())
        {
            i += 1;
        }
        let name: String = inner[name_start..i].iter().collect();
        if !valid_name(&name) {
            return None;
        }
        skip_space(&mut i);
        if inner.get(i) != Some(&'=') {
            return None;
        }
        i += 1;
        skip_space(&mut i);
        if inner.get(i) != Some(&'"') {
            return None;
        }
        i += 1;
        let mut value = String::new();
        loop {
            match *inner.get(i)? {
                '\\' => {
                    i += 1;
                    match *inner.get(i)? {
                        'n' => value.push('\n'),
                        other => value.push(other),
                    }
                }
                '"' => break,
                c => value.push(c),
            }
            i += 1;
        }
        i += 1;
        out.push((name, value));
        skip_space(&mut i);
        match inner.get(i) {
            None => return Some(out),
            Some(',') => i += 1,
            Some(_) => return None,
        }
    }
}

/// Splits a sample line into name, label text (with braces, possibly empty)
/// and value; a trailing timestamp is dropped.
fn parse_sample(line: &str) -> Option<(String, String, String)> {
    let name_end = line
        .find(|c: char| c == '{' || c.is_whitespace())
        .unwrap_or(line.len());
    let name = &line[..name_end];
    if !valid_name(name) {
        return None;
    }
    let rest = &line[name_end..];
    let (labels, rest) = if rest.starts_with('{') {
        // The closing brace is the first '}' outside a quoted value.
        let mut quoted = false;
        let mut escaped = false;
        let mut close = None;
        for (i, c) in rest.char_indices() {
            match c {
                _ if escaped => escaped = false,
                '\\' if quoted => escaped = true,
                '"' => quoted = !quoted,
                '}' if !quoted => {
                    close = Some(i);
                    break;
                }
                _ => {}
            }
        }
        let close = close?;
        (&rest[..=close], &rest[close + 1..])
    } else {
        ("", rest)
    };
    let mut fields = rest.split_whitespace();
    let value = fields.next()?;
    value.parse::<f64>().ok()?;
    if let Some(ts) = fields.next() {
        ts.parse::<i64>().ok()?;
    }
    if fields.next().is_some() {
        return None;
    }
    let pairs = parse_labels(if labels.is_empty() { "{}" } else { labels })?;
    let refs: Vec<(&str, &str)> = pairs
        .iter()
        .map(|(k, v)| (k.as_str(), v.as_str()))
        .collect();
    Some((name.to_string(), render_labels(&refs), value.to_string()))
}

/// Formats a value the way Prometheus reads it: integers without a
/// fraction, everything else in Rust's shortest round-trip form.
pub fn format_value(v: f64) -> String {
    if v.is_nan() {
        "NaN".into()
    } else if v.is_infinite() {
        if v > 0.0 { "+Inf" } else { "-Inf" }.into()
    } else if v.fract() == 0.0 && v.abs() < 9.007_199_254_740_992e15 {
        format!("{}", v as i64)
    } else {
        format!("{v}")
    }
}

impl TextFile {
    /// Parses a textfile. Lines that are not valid exposition format are
    /// dropped and returned, so that one damaged line does not stop every
    /// later run from writing metrics.
    pub fn parse(text: &str) -> (TextFile, Vec<String>) {
        let mut file = TextFile::default();
        let mut rejected = Vec::new();
        for line in text.lines() {
            let line = line.trim();
            if line.is_empty() {
                continue;
            }
            if let Some(comment) = line.strip_prefix('#') {
                let mut words = comment.trim_start().splitn(3, ' ');
                match (words.next(), words.next(), words.next()) {
                    (Some("HELP"), Some(name), help) if valid_name(name) => {
                        file.families.entry(name.to_string()).or_default().help =
                            Some(help.unwrap_or("").to_string());
                    }
                    (Some("TYPE"), Some(name), Some(kind)) if valid_name(name) => {
                        file.families.entry(name.to_string()).or_default().kind =
                            Some(kind.trim().to_string());
                    }
                    _ => {} // other comments carry nothing
                }
                continue;
            }
            match parse_sample(line) {
                Some((name, labels, value)) => {
                    file.families
                        .entry(name)
                        .or_default()
                        .samples
                        .insert(labels, value);
                }
                None => rejected.push(line.to_string()),
            }
        }
        // A HELP or TYPE line whose samples are all gone says nothing.
        file.families.retain(|_, f| !f.samples.is_empty());
        (file, rejected)
    }

    /// Sets one sample, replacing the sample with the same name and labels.
    pub fn set(&mut self, name: &str, help: &str, kind: &str, labels: &[(&str, &str)], value: f64) {
        debug_assert!(valid_name(name));
        let family = self.families.entry(name.to_string()).or_default();
        family.help = Some(help.to_string());
        family.kind = Some(kind.to_string());
        family
            .samples
            .insert(render_labels(labels), format_value(value));
    }

    /// The value of one sample, if present.
    pub fn get(&self, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
        self.families
            .get(name)?
            .samples
            .get(&render_labels(labels))?
            .parse()
            .ok()
    }

    /// The exposition text: HELP and TYPE, then the samples, per family.
    pub fn render(&self) -> String {
        let mut out = String::new();
        for (name, family) in &self.families {
            if let Some(help) = &family.help {
                let help = help.replace('\\', "\\\\").replace('\n', "\\n");
                out.push_str(&format!("# HELP {name} {help}\n"));
            }
            if let Some(kind) = &family.kind {
                out.push_str(&format!("# TYPE {name} {kind}\n"));
            }
            for (labels, value) in &family.samples {
                out.push_str(&format!("{name}{labels} {value}\n"));
            }
        }
        out
    }
}

/// Holds an exclusive `flock` on `PATH.lock` (beside the textfile; the
/// collector reads only `*.prom`) so that two jobs finishing together do
/// not lose each other's update.
struct FileLock(#[allow(dead_code)] std::fs::File);

impl FileLock {
    fn acquire(path: &Path) -> Result<FileLock> {
        let file = std::fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(path)
            .map_err(|e| Error::io(format!("cannot open {}", path.display()), e))?;
        crate::sys::fs::lock_exclusive(&file)
            .map_err(|e| Error::io(format!("cannot lock {}", path.display()), e))?;
        Ok(FileLock(file))
    }
}

fn with_suffix(path: &Path, suffix: &str) -> PathBuf {
    let mut name = path.file_name().unwrap_or_default().to_os_string();
    name.push(suffix);
    path.with_file_name(name)
}

/// Reads the textfile at `path` (a missing one is empty), lets `update`
/// change it, and replaces it atomically: a temporary file in the same
/// directory, fsync, rename. Returns the lines of the old file that were
/// dropped as unparseable.
pub fn update_file(path: &Path, update: impl FnOnce(&mut TextFile)) -> Result<Vec<String>> {
    let _lock = FileLock::acquire(&with_suffix(path, ".lock"))?;
    let old = match std::fs::read_to_string(path) {
        Ok(text) => text,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => String::new(),
        Err(e) => return Err(Error::io(format!("cannot read {}", path.display()), e)),
    };
    let (mut file, rejected) = TextFile::parse(&old);
    update(&mut file);
    // A dot-name without the .prom suffix: the collector never reads it.
    let dir = path.parent().filter(|d| !d.as_os_str().is_empty());
    let tmp_name = format!(
        ".{}.tmp-{}",
        path.file_name().unwrap_or_default().to_string_lossy(),
        std::process::id()
    );
    let tmp = dir.map_or_else(|| PathBuf::from(&tmp_name), |d| d.join(&tmp_name));
    let write = || -> std::io::Result<()> {
        let mut f = std::fs::File::create(&tmp)?;
        f.write_all(file.render().as_bytes())?;
        f.sync_all()?;
        std::fs::rename(&tmp, path)?;
        if let Some(d) = dir {
            std::fs::File::open(d)?.sync_all()?;
        }
        Ok(())
    };
    write().map_err(|e| {
        let _ = std::fs::remove_file(&tmp);
        Error::io(format!("cannot write {}", path.display()), e)
    })?;
    Ok(rejected)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_replace() {
        let mut f = TextFile::default();
        f.set(
            "cairn_x",
            "An x.",
            "gauge",
            &[("host", "a"), ("command", "backup")],
            1.0,
        );
        f.set(
            "cairn_x",
            "An x.",
            "gauge",
            &[("command", "check"), ("host", "a")],
            2.5,
        );
        f.set("cairn_y", "A y.", "gauge", &[], 1_700_000_000.25);
        let text = f.render();
        assert_eq!(
            text,
            "# HELP cairn_x An x.\n# TYPE cairn_x gauge\n\
             cairn_x{command=\"backup\",host=\"a\"} 1\n\
             cairn_x{command=\"check\",host=\"a\"} 2.5\n\
             # HELP cairn_y A y.\n# TYPE cairn_y gauge\ncairn_y 1700000000.25\n"
        );
        let (mut back, rejected) = TextFile::parse(&text);
        assert!(rejected.is_empty());
        assert_eq!(back, f);
        back.set(
            "cairn_x",
            "An x.",
            "gauge",
            &[("host", "a"), ("command", "backup")],
            7.0,
        );
        assert_eq!(
            back.get("cairn_x", &[("command", "backup"), ("host", "a")]),
            Some(7.0)
        );
        assert_eq!(
            back.get("cairn_x", &[("command", "check"), ("host", "a")]),
            Some(2.5)
        );
    }

    #[test]
    fn label_values_are_escaped_and_parsed_back() {
        let mut f = TextFile::default();
        let odd = "a \"quoted\" } back\\slash\nnewline, x=\"y\"";
        f.set("m", "h", "gauge", &[("tags", odd), ("empty", "")], 3.0);
        let text = f.render();
        assert!(!text.contains("empty="), "{text}");
        let (back, rejected) = TextFile::parse(&text);
        assert!(rejected.is_empty(), "{rejected:?}");
        assert_eq!(back.get("m", &[("tags", odd)]), Some(3.0));
    }

    #[test]
    fn foreign_lines_survive_and_bad_lines_are_reported() {
        let text =
            "# a comment\n# TYPE other_total counter\nother_total{job=\"x\"} 5 1700000000000\n\
                    broken line here\nno_value{a=\"b\"}\n";
        let (f, rejected) = TextFile::parse(text);
        assert_eq!(rejected, vec!["broken line here", "no_value{a=\"b\"}"]);
        assert_eq!(
            f.render(),
            "# TYPE other_total counter\nother_total{job=\"x\"} 5\n"
        );
    }

    #[test]
    fn update_file_is_atomic_and_leaves_no_temp_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("cairn.prom");
        update_file(&path, |f| f.set("a", "h", "gauge", &[("k", "1")], 1.0)).unwrap();
        update_file(&path, |f| f.set("a", "h", "gauge", &[("k", "2")], 2.0)).unwrap();
        let text = std::fs::read_to_string(&path).unwrap();
        assert_eq!(
            text,
            "# HELP a h\n# TYPE a gauge\na{k=\"1\"} 1\na{k=\"2\"} 2\n"
        );
        let names: Vec<_> = std::fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect();
        assert!(
            names
                .iter()
                .all(|n| n == "cairn.prom" || n == "cairn.prom.lock"),
            "{names:?}"
        );
    }
}
