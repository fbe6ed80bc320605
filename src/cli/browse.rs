//! CLI side of `ls`, `find`, `diff` and `tag`: arguments and printing. The
//! work is in the library (`cairn::browse`, `cairn::tag`).

use super::args::{split_selector, tag_list, Cli, FilterArgs};
use super::output::{emit, human_bytes, term_safe};
use super::repo::{lock_exclusive, open, warn_all};
use cairn::format::tree::{Node, NodeKind};
use clap::Args;
use std::io::Write;

#[derive(Args)]
pub(crate) struct LsArgs {
    /// SNAPSHOT or SNAPSHOT:SUBPATH.
    snapshot: String,
    /// Only this directory or file of the snapshot.
    path: Option<String>,
    /// Long listing: type and mode, owner, size, mtime.
    #[arg(short, long)]
    long: bool,
    #[command(flatten)]
    filter: FilterArgs,
}

#[derive(Args)]
pub(crate) struct FindArgs {
    /// Glob patterns (`*`, `?`, `[..]`, `**`): without `/` matched against
    /// names, with `/` against whole paths.
    #[arg(required = true)]
    patterns: Vec<String>,
    /// Match case-insensitively.
    #[arg(short, long)]
    ignore_case: bool,
    /// Only in these snapshots (repeatable; default: all matching filters).
    #[arg(short, long = "snapshot")]
    snapshots: Vec<String>,
    #[command(flatten)]
    filter: FilterArgs,
}

#[derive(Args)]
pub(crate) struct DiffArgs {
    first: String,
    second: String,
}

#[derive(Args)]
pub(crate) struct TagArgs {
    /// Add this tag (repeatable, or comma-separated).
    #[arg(long)]
    add: Vec<String>,
    /// Remove this tag.
    #[arg(long)]
    remove: Vec<String>,
    /// Replace all tags with these (`--set ""` removes all).
    #[arg(long)]
    set: Vec<String>,
    /// Snapshots to change (default: all matching --host/--tag/--path).
    snapshots: Vec<String>,
    #[command(flatten)]
    filter: FilterArgs,
}

/// `drwxr-xr-x`-style type and permission bits.
fn mode_string(node: &Node) -> String {
    let kind = match node.kind {
        NodeKind::Dir => 'd',
        NodeKind::Symlink => 'l',
        NodeKind::Fifo => 'p',
        NodeKind::Chardev => 'c',
        NodeKind::Blockdev => 'b',
        NodeKind::Socket => 's',
        NodeKind::File => '-',
    };
    let mut out = String::from(kind);
    for (shift, special, special_char) in [(6, 0o4000, 's'), (3, 0o2000, 's'), (0, 0o1000, 't')] {
        let bits = (node.mode >> shift) & 7;
        out.push(if bits & 4 != 0 { 'r' } else { '-' });
        out.push(if bits & 2 != 0 { 'w' } else { '-' });
        let exec = bits & 1 != 0;
        out.push(match (node.mode & special != 0, exec) {
            (true, true) => special_char,
            (true, false) => special_char.to_ascii_uppercase(),
            (false, true) => 'x',
            (false, false) => '-',
        });
    }
    out
}

/// A node time (ns since the epoch) as chrono's UTC time.
fn time_of(ns: i64) -> Option<chrono::DateTime<chrono::Utc>> {
    chrono::DateTime::from_timestamp(
        ns.div_euclid(1_000_000_000),
        ns.rem_euclid(1_000_000_000) as u32,
    )
}

/// For people: local time, to the second.
fn local_time(ns: i64) -> String {
    time_of(ns)
        .map(|t| {
            t.with_timezone(&chrono::Local)
                .format("%Y-%m-%d %H:%M:%S")
                .to_string()
        })
        .unwrap_or_else(|| "?".into())
}

/// For JSON: RFC 3339 in UTC, like snapshot times (unambiguous anywhere).
fn rfc3339(ns: i64) -> String {
    time_of(ns)
        .map(|t| t.to_rfc3339_opts(chrono::SecondsFormat::Nanos, true))
        .unwrap_or_default()
}

fn node_json(path: &str, node: &Node) -> serde_json::Value {
    let mut v = serde_json::json!({
        "path": path, "name": node.name_str(), "type": node.kind, "size": node.size,
        "mode": node.mode, "permissions": mode_string(node), "uid": node.uid, "gid": node.gid,
        "mtime_ns": node.mtime_ns, "mtime": rfc3339(node.mtime_ns),
    });
    if let Some(u) = &node.user {
        v["user"] = u.clone().into();
    }
    if let Some(g) = &node.group {
        v["group"] = g.clone().into();
    }
    if let Some(t) = &node.link_target {
        v["link_target"] = String::from_utf8_lossy(&t.0).into_owned().into();
    }
    v
}

fn long_line(path: &str, node: &Node) -> String {
    let user = node.user.clone().unwrap_or_else(|| node.uid.to_string());
    let group = node.group.clone().unwrap_or_else(|| node.gid.to_string());
    let mut line = format!(
        "{} {:>8} {:>8} {:>12} {} {path}",
        mode_string(node),
        user,
        group,
        node.size,
        local_time(node.mtime_ns)
    );
    if let Some(t) = &node.link_target {
        line.push_str(" -> ");
        line.push_str(&String::from_utf8_lossy(&t.0));
    }
    line
}

pub(crate) fn ls(cli: &Cli, args: &LsArgs) -> anyhow::Result<i32> {
    let mut repo = open(cli)?;
    let (sel, sub) = split_selector(&args.snapshot);
    let subpath = args.path.as_deref().unwrap_or(sub).to_string();
    let (id, snapshot) = repo.find_snapshot(sel, &args.filter.filter())?;
    super::audit::note_read(&id);
    let repo = repo.load_index()?;
    let mut out = std::io::stdout().lock();
    let mut print = |path: &str, node: &Node| -> cairn::Result<()> {
        let line = if cli.json {
            node_json(path, node).to_string()
        } else if args.long {
            long_line(path, node)
        } else {
            path.to_string()
        };
        writeln!(out, "{}", term_safe(&line))
            .map_err(|e| cairn::Error::io("cannot write to stdout", e))
    };
    let prefix = subpath.trim_end_matches('/');
    match cairn::engine::browse::find_node(&repo, &snapshot, &subpath)? {
        None => cairn::walk(&repo, snapshot.tree, "", &mut print)?,
        Some(node) => {
            let shown = format!("/{}", prefix.trim_start_matches('/'));
            print(&shown, &node)?;
            if let (NodeKind::Dir, Some(sub)) = (node.kind, node.subtree) {
                cairn::walk(&repo, sub, shown.trim_end_matches('/'), &mut print)?;
            }
        }
    }
    Ok(0)
}

pub(crate) fn find(cli: &Cli, args: &FindArgs) -> anyhow::Result<i32> {
    let patterns = args
        .patterns
        .iter()
        .map(|p| cairn::Pattern::new(p, args.ignore_case))
        .collect::<cairn::Result<Vec<_>>>()?;
    let mut repo = open(cli)?;
    let filter = args.filter.filter();
    let snapshots = if args.snapshots.is_empty() {
        repo.snapshots(&filter)?
    } else {
        args.snapshots
            .iter()
            .map(|s| repo.find_snapshot(s, &filter))
            .collect::<cairn::Result<Vec<_>>>()?
    };
    let mut repo = repo.load_index()?;
    warn_all(cli, &mut repo);
    let found = cairn::find(&repo, &snapshots, &patterns)?;
    let mut out = std::io::stdout().lock();
    if cli.json {
        writeln!(out, "{}", serde_json::to_string(&found)?)?;
    } else {
        let mut current = None;
        for f in &found {
            if current != Some(f.snapshot) {
                let (_, s) = snapshots
                    .iter()
                    .find(|(id, _)| *id == f.snapshot)
                    .expect("searched");
                writeln!(
                    out,
                    "found in snapshot {} from {} ({}):",
                    f.snapshot.short(),
                    s.time.format("%Y-%m-%d %H:%M:%S"),
                    term_safe(&s.hostname)
                )?;
                current = Some(f.snapshot);
            }
            let when = local_time(f.mtime_ns);
            writeln!(
                out,
                "  {:>12}  {when}  {}",
                human_bytes(f.size),
                term_safe(&f.path)
            )?;
        }
        if !cli.quiet {
            writeln!(
                out,
                "{} match(es) in {} snapshot(s) searched",
                found.len(),
                snapshots.len()
            )?;
        }
    }
    // grep's convention: 1 when nothing matched, so scripts can test it.
    Ok(if found.is_empty() { 1 } else { 0 })
}

pub(crate) fn diff(cli: &Cli, args: &DiffArgs) -> anyhow::Result<i32> {
    let mut repo = open(cli)?;
    let all = cairn::SnapshotFilter::default();
    let (first_id, first) = repo.find_snapshot(&args.first, &all)?;
    let (second_id, second) = repo.find_snapshot(&args.second, &all)?;
    let repo = repo.load_index()?;
    let diff = cairn::diff(&repo, first.tree, second.tree)?;
    let mut out = std::io::stdout().lock();
    if cli.json {
        let v = serde_json::json!({
            "first": first_id.to_hex(), "second": second_id.to_hex(),
            "changes": diff.changes, "stats": diff.stats,
        });
        writeln!(out, "{v}")?;
        return Ok(0);
    }
    writeln!(
        out,
        "comparing snapshot {} to {}:",
        first_id.short(),
        second_id.short()
    )?;
    for c in &diff.changes {
        let slash = if c.kind == NodeKind::Dir { "/" } else { "" };
        writeln!(
            out,
            "{}    {}{slash}",
            c.change.symbol(),
            term_safe(&c.path)
        )?;
    }
    let s = &diff.stats;
    writeln!(
        out,
        "\nadded: {}, removed: {}, modified: {}, metadata changed: {}",
        s.added, s.removed, s.modified, s.metadata_changed
    )?;
    writeln!(
        out,
        "bytes added: {}, bytes removed: {}",
        human_bytes(s.bytes_added),
        human_bytes(s.bytes_removed)
    )?;
    Ok(0)
}

pub(crate) fn tag(cli: &Cli, args: &TagArgs) -> anyhow::Result<i32> {
    let change = cairn::TagChange {
        add: tag_list(&args.add),
        remove: tag_list(&args.remove),
        set: (!args.set.is_empty()).then(|| tag_list(&args.set)),
    };
    let repo = open(cli)?;
    let lock = lock_exclusive(cli, &repo)?;
    let mut repo = repo.load_index()?;
    let filter = args.filter.filter();
    let snapshots = if args.snapshots.is_empty() {
        repo.snapshots(&filter)?
    } else {
        args.snapshots
            .iter()
            .map(|s| repo.find_snapshot(s, &filter))
            .collect::<cairn::Result<Vec<_>>>()?
    };
    let changed = cairn::tag(&repo, &lock, &snapshots, &change)?;
    super::audit::note_replaced(&changed);
    emit(
        cli,
        || {
            let v: Vec<_> = changed
                .iter()
                .map(|(old, new)| serde_json::json!({"old": old.to_hex(), "new": new.to_hex()}))
                .collect();
            Ok(v)
        },
        || {
            for (old, new) in &changed {
                println!("snapshot {} is now {}", old.short(), new.short());
            }
            println!("{} snapshot(s) changed", changed.len());
            Ok(())
        },
    )?;
    Ok(0)
}
