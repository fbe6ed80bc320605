//! `cairn snapshots`: the snapshot list, as a table or as JSON.

use super::args::{Cli, FilterArgs};
use super::output::{emit_text_even_quiet, snapshot_json, term_safe};
use super::repo::{open, warn_all};
use std::io::Write;

pub(crate) fn snapshots(cli: &Cli, filter: &FilterArgs) -> anyhow::Result<i32> {
    let mut repo = open(cli)?;
    let list = repo.snapshots(&filter.filter())?;
    warn_all(cli, &mut repo);
    emit_text_even_quiet(
        cli,
        || {
            let values: Vec<_> = list
                .iter()
                .map(|(id, s)| snapshot_json(id, s))
                .collect::<Result<_, _>>()?;
            Ok(values)
        },
        || {
            let mut out = std::io::stdout().lock();
            writeln!(
                out,
                "{:<8}  {:<19}  {:<15}  {:<20}  Paths",
                "ID", "Time", "Host", "Tags"
            )?;
            writeln!(out, "{}", "-".repeat(90))?;
            for (id, s) in &list {
                writeln!(
                    out,
                    "{:<8}  {:<19}  {:<15}  {:<20}  {}",
                    id.short(),
                    s.time.format("%Y-%m-%d %H:%M:%S"),
                    term_safe(&s.hostname),
                    term_safe(&s.tags.join(",")),
                    term_safe(&s.paths.join(" "))
                )?;
            }
            writeln!(out, "{}", "-".repeat(90))?;
            writeln!(
                out,
                "{} snapshot{}",
                list.len(),
                if list.len() == 1 { "" } else { "s" }
            )?;
            Ok(())
        },
    )?;
    Ok(0)
}
