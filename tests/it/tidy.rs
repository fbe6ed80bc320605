//! Tidy checks: the layering that ARCHITECTURE.md states, checked against
//! the source instead of trusted (rust-analyzer's tidy tests are the model).
//! They read `src/` as text, so they run in milliseconds.
//!
//! - Every library file sits in a layer, and imports only from its own
//!   layer or the layers below it.
//! - No two library modules import each other, directly or around a circle.
//! - `lib.rs` only declares modules and re-exports; `main.rs` stays short.
//! - No source file is longer than `FILE_LINES_MAX` before its tests.
//! - `unsafe` and libc live in `sys.rs` alone.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

/// The layers, lowest first. A file may import from its own layer and from
/// those listed for it.
const LAYERS: &[(&str, &[&str])] = &[
    ("base", &[]),
    ("format", &["base"]),
    ("storage", &["base", "format"]),
    ("ops", &["base", "format"]),
    ("engine", &["base", "format", "storage"]),
];

/// Lines a source file may have before its `#[cfg(test)] mod tests`.
const FILE_LINES_MAX: usize = 900;

/// Lines `main.rs` may have: allocator settings, signals, parse, dispatch.
const MAIN_LINES_MAX: usize = 200;

fn src() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("src")
}

/// The layer of a module path's first segment (`crate::<first>::…`).
fn layer_of_module(first: &str) -> Option<&'static str> {
    Some(match first {
        "error" | "sys" | "failpoint" | "units" | "context" => "base",
        "format" => "format",
        "storage" => "storage",
        "engine" => "engine",
        "ops" => "ops",
        _ => return None,
    })
}

/// Library source files with their module path (`engine::archiver::ahead`).
fn library_files() -> Vec<(PathBuf, String)> {
    let mut out = Vec::new();
    let mut stack = vec![src()];
    while let Some(dir) = stack.pop() {
        for entry in std::fs::read_dir(&dir).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                stack.push(path);
                continue;
            }
            if path.extension().is_none_or(|e| e != "rs") {
                continue;
            }
            let rel = path.strip_prefix(src()).unwrap().with_extension("");
            let module = rel
                .components()
                .map(|c| c.as_os_str().to_string_lossy().into_owned())
                .collect::<Vec<_>>()
                .join("::");
            // The binary's files: main.rs and the cli folder.
            if module == "main" || module == "cli" || module.starts_with("cli::") {
                continue;
            }
            out.push((path, module));
        }
    }
    out.sort();
    out
}

/// The code of a file without comments and string literals, so that a
/// path named in prose or in a message is not taken for an import.
fn code_only(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let bytes = text.as_bytes();
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i..].starts_with(b"//") {
            while i < bytes.len() && bytes[i] != b'\n' {
                i += 1;
            }
        } else if bytes[i..].starts_with(b"/*") {
            i += 2;
            while i < bytes.len() && !bytes[i..].starts_with(b"*/") {
                i += 1;
            }
            i += 2;
        } else if bytes[i] == b'"' {
            i += 1;
            while i < bytes.len() && bytes[i] != b'"' {
                i += if bytes[i] == b'\\' { 2 } else { 1 };
            }
            i += 1;
            out.push_str("\"\"");
        } else if bytes[i] == b'\''
            && i + 2 < bytes.len()
            && (bytes[i + 2] == b'\'' || bytes[i + 1] == b'\\')
        {
            // A char literal ('"', '\''); lifetimes have no closing quote.
            let end = text[i + 1..].find('\'').map(|e| i + 1 + e + 1);
            match end {
                Some(end) if end - i <= 12 => {
                    out.push_str("' '");
                    i = end;
                }
                _ => {
                    out.push('\'');
                    i += 1;
                }
            }
        } else {
            let ch = text[i..].chars().next().unwrap();
            out.push(ch);
            i += ch.len_utf8();
        }
    }
    out
}

/// Every module path a file names through `crate::`, expanded from
/// grouped imports (`use crate::{a::B, c}`), as segments.
fn crate_paths(code: &str) -> Vec<Vec<String>> {
    let mut out = Vec::new();
    let mut rest = code;
    while let Some(at) = rest.find("crate::") {
        // `$crate::` in a macro is the same crate.
        rest = &rest[at + "crate::".len()..];
        if rest.starts_with('{') {
            let end = rest.find('}').unwrap_or(rest.len());
            for item in rest[1..end].split(',') {
                let path: Vec<String> = item
                    .trim()
                    .split("::")
                    .map(|s| s.trim().to_string())
                    .filter(|s| !s.is_empty())
                    .collect();
                if !path.is_empty() {
                    out.push(path);
                }
            }
            continue;
        }
        let path: Vec<String> = rest
            .split(|c: char| !(c.is_alphanumeric() || c == '_' || c == ':'))
            .next()
            .unwrap_or("")
            .split("::")
            .filter(|s| !s.is_empty())
            .map(str::to_string)
            .collect();
        if !path.is_empty() {
            out.push(path);
        }
    }
    out
}

/// The longest prefix of `path` that is a library module.
fn module_of(path: &[String], modules: &BTreeSet<String>) -> Option<String> {
    (1..=path.len())
        .rev()
        .map(|n| path[..n].join("::"))
        .find(|m| modules.contains(m))
}

#[test]
fn imports_run_down_the_layers_and_never_in_a_circle() {
    let files = library_files();
    let modules: BTreeSet<String> = files.iter().map(|(_, m)| m.clone()).collect();
    let mut upward = Vec::new();
    let mut graph: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for (path, module) in &files {
        if module == "lib" {
            continue;
        }
        let first = module.split("::").next().unwrap();
        let own = layer_of_module(first)
            .unwrap_or_else(|| panic!("{} is in no layer (see LAYERS)", path.display()));
        let allowed = LAYERS.iter().find(|(l, _)| *l == own).unwrap().1;
        let code = code_only(&std::fs::read_to_string(path).unwrap());
        for imported in crate_paths(&code) {
            let Some(layer) = layer_of_module(&imported[0]) else {
                upward.push(format!(
                    "{module} names crate::{}, which is in no layer (the facade?)",
                    imported.join("::")
                ));
                continue;
            };
            if layer != own && !allowed.contains(&layer) {
                upward.push(format!(
                    "{module} ({own}) imports crate::{} ({layer})",
                    imported.join("::")
                ));
            }
            if let Some(target) = module_of(&imported, &modules) {
                // A module and its own parent file are one unit here.
                if target != *module && !module.starts_with(&format!("{target}::")) {
                    graph.entry(module.clone()).or_default().insert(target);
                }
            }
        }
    }
    assert!(
        upward.is_empty(),
        "imports against the layering:\n{}",
        upward.join("\n")
    );
    let circles = find_circles(&graph);
    assert!(
        circles.is_empty(),
        "import circles:\n{}",
        circles.join("\n")
    );
}

/// Each strongly connected set of two or more modules, as one line.
fn find_circles(graph: &BTreeMap<String, BTreeSet<String>>) -> Vec<String> {
    // Reachability by depth-first search from each node: small graphs only
    // (about 50 modules), so the quadratic walk is fine.
    let reach = |from: &str| {
        let mut seen = BTreeSet::new();
        let mut stack = vec![from.to_string()];
        while let Some(n) = stack.pop() {
            for next in graph.get(&n).into_iter().flatten() {
                if seen.insert(next.clone()) {
                    stack.push(next.clone());
                }
            }
        }
        seen
    };
    let mut circles = BTreeSet::new();
    for node in graph.keys() {
        let from_node = reach(node);
        if !from_node.contains(node) {
            continue;
        }
        let members: Vec<String> = from_node
            .iter()
            .filter(|other| reach(other).contains(node))
            .cloned()
            .collect();
        circles.insert(members.join(" <-> "));
    }
    circles.into_iter().collect()
}

#[test]
fn the_layer_test_sees_an_upward_import() {
    // The checks above must not pass by seeing nothing.
    let code = code_only(
        "use crate::engine::repository::Repository; // crate::cli\nlet s = \"crate::ops\";",
    );
    let paths = crate_paths(&code);
    assert_eq!(
        paths,
        vec![vec![
            "engine".to_string(),
            "repository".into(),
            "Repository".into()
        ]]
    );
    let grouped = crate_paths("use crate::{format::id::BlobId, error};");
    assert_eq!(grouped.len(), 2);
    let mut graph = BTreeMap::new();
    graph.insert("a".to_string(), BTreeSet::from(["b".to_string()]));
    graph.insert("b".to_string(), BTreeSet::from(["a".to_string()]));
    assert_eq!(find_circles(&graph), vec!["a <-> b".to_string()]);
}

#[test]
fn lib_rs_only_declares_modules_and_reexports() {
    let code = code_only(&std::fs::read_to_string(src().join("lib.rs")).unwrap());
    for line in code.lines().map(str::trim).filter(|l| !l.is_empty()) {
        let allowed = line.starts_with("pub mod ")
            || line.starts_with("mod ")
            || line.starts_with("pub use ")
            || line.starts_with("#[")
            || line.starts_with("#![")
            || line.starts_with("compile_error!")
            // A string argument on a line of its own (strings are blanked).
            || line == "\"\""
            // The continuation lines of a multi-line `pub use`.
            || line.chars().all(|c| c.is_alphanumeric() || " _,:{}();".contains(c));
        assert!(
            allowed,
            "lib.rs holds more than modules and re-exports: {line}"
        );
    }
}

#[test]
fn main_rs_is_short_and_files_stay_readable() {
    let main = std::fs::read_to_string(src().join("main.rs")).unwrap();
    assert!(
        main.lines().count() <= MAIN_LINES_MAX,
        "main.rs has {} lines (at most {MAIN_LINES_MAX}): put commands in src/cli/",
        main.lines().count()
    );
    let mut long = Vec::new();
    let mut stack = vec![src()];
    while let Some(dir) = stack.pop() {
        for entry in std::fs::read_dir(&dir).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                stack.push(path);
            } else if path.extension().is_some_and(|e| e == "rs") {
                let text = std::fs::read_to_string(&path).unwrap();
                let before_tests = text
                    .find("#[cfg(test)]\nmod tests")
                    .map_or(text.as_str(), |at| &text[..at]);
                let lines = before_tests.lines().count();
                if lines > FILE_LINES_MAX {
                    long.push(format!("{}: {lines} lines", path.display()));
                }
            }
        }
    }
    assert!(
        long.is_empty(),
        "files over {FILE_LINES_MAX} lines before their tests:\n{}",
        long.join("\n")
    );
}

#[test]
fn unsafe_and_libc_live_in_sys_alone() {
    let mut found = Vec::new();
    let mut stack = vec![src()];
    while let Some(dir) = stack.pop() {
        for entry in std::fs::read_dir(&dir).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                stack.push(path);
                continue;
            }
            if path.extension().is_none_or(|e| e != "rs")
                || path.ends_with("src/sys.rs")
                || path.starts_with(src().join("sys"))
            {
                continue;
            }
            let code = code_only(&std::fs::read_to_string(&path).unwrap());
            for (n, line) in code.lines().enumerate() {
                // Tests may build odd files (fifos, sockets) with libc.
                if line.contains("mod tests") {
                    break;
                }
                if line.contains("unsafe ") || line.contains("libc::") {
                    found.push(format!("{}:{}: {}", path.display(), n + 1, line.trim()));
                }
            }
        }
    }
    assert!(
        found.is_empty(),
        "unsafe or libc outside src/sys.rs:\n{}",
        found.join("\n")
    );
}
