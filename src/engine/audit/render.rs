//! The audit report as text, Markdown or one self-contained HTML page.
//! Rendering adds nothing the report does not hold (no time of making):
//! the same report gives the same bytes.

use super::report::{AuditReport, Status};
use std::fmt::Write;

/// How the report is written out.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReportFormat {
    Text,
    Markdown,
    /// One page with inline CSS: no scripts, no external resources, so an
    /// auditor can file it and open it anywhere.
    Html,
}

fn word(s: Status) -> &'static str {
    match s {
        Status::Pass => "PASS",
        Status::Warn => "WARN",
        Status::Fail => "FAIL",
    }
}

/// The report in `format`.
pub fn render(report: &AuditReport, format: ReportFormat) -> String {
    match format {
        ReportFormat::Text => text(report),
        ReportFormat::Markdown => markdown(report),
        ReportFormat::Html => html(report),
    }
}

fn text(report: &AuditReport) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "verdict: {} ({} entries, {} signer(s))",
        word(report.verdict),
        report.entries,
        report.signers.len()
    );
    for c in &report.checks {
        let _ = writeln!(out, "{}  {}: {}", word(c.status), c.name, c.summary);
        for e in &c.evidence {
            let _ = writeln!(out, "      {e}");
        }
    }
    out
}

/// Markdown: text that could be read as markup is escaped, so evidence
/// (host and user names come from the log) cannot forge table cells or
/// links.
fn md_escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '\\' | '`' | '*' | '_' | '[' | ']' | '<' | '>' | '|' | '#' => {
                out.push('\\');
                out.push(c);
            }
            '\n' | '\r' => out.push(' '),
            c => out.push(c),
        }
    }
    out
}

fn markdown(report: &AuditReport) -> String {
    let mut out = String::new();
    let _ = writeln!(out, "# cairn audit report\n");
    let _ = writeln!(
        out,
        "**Verdict: {}** ({} entries, {} signer(s))\n",
        word(report.verdict),
        report.entries,
        report.signers.len()
    );
    let _ = writeln!(out, "| check | status | summary |\n|---|---|---|");
    for c in &report.checks {
        let _ = writeln!(
            out,
            "| {} | {} | {} |",
            md_escape(c.name),
            word(c.status),
            md_escape(&c.summary)
        );
    }
    for c in report.checks.iter().filter(|c| !c.evidence.is_empty()) {
        let _ = writeln!(out, "\n## {}\n", md_escape(c.name));
        for e in &c.evidence {
            let _ = writeln!(out, "- {}", md_escape(e));
        }
    }
    out
}

/// HTML text and attribute escaping.
fn esc(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

const CSS: &str = "body{font-family:system-ui,sans-serif;max-width:60rem;margin:2rem auto;padding:0 1rem;color:#222}\
h1{font-size:1.5rem}table{border-collapse:collapse;width:100%}\
th,td{border:1px solid #ccc;padding:.3rem .5rem;text-align:left;vertical-align:top}\
.pass{background:#e6f4e6}.warn{background:#fff6d6}.fail{background:#fbe0e0}\
#verdict{font-size:1.3rem;font-weight:bold;padding:.5rem;border:1px solid #999}\
ul{font-family:ui-monospace,monospace;font-size:.85rem}code{font-size:.85rem}";

fn class(s: Status) -> &'static str {
    match s {
        Status::Pass => "pass",
        Status::Warn => "warn",
        Status::Fail => "fail",
    }
}

fn html(report: &AuditReport) -> String {
    let mut out = String::new();
    let _ = write!(
        out,
        "<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n\
<meta http-equiv=\"Content-Security-Policy\" content=\"default-src 'none'; style-src 'unsafe-inline'\">\n\
<title>cairn audit report: {}</title>\n<style>{CSS}</style>\n</head>\n<body>\n\
<h1>cairn audit report</h1>\n",
        word(report.verdict)
    );
    let _ = writeln!(
        out,
        "<p id=\"verdict\" class=\"{}\" data-verdict=\"{}\">Verdict: {}</p>",
        class(report.verdict),
        class(report.verdict),
        word(report.verdict)
    );
    let _ = writeln!(
        out,
        "<p>{} entries, {} signer(s).</p>",
        report.entries,
        report.signers.len()
    );
    if !report.signers.is_empty() {
        let _ = writeln!(out, "<p>Signers:</p>\n<ul>");
        for s in &report.signers {
            let _ = writeln!(out, "<li><code>{}</code></li>", esc(s));
        }
        let _ = writeln!(out, "</ul>");
    }
    let _ = writeln!(
        out,
        "<table>\n<thead><tr><th>check</th><th>status</th><th>summary</th></tr></thead>\n<tbody>"
    );
    for c in &report.checks {
        let _ = writeln!(
            out,
            "<tr class=\"{}\"><td><a href=\"#{}\">{}</a></td><td>{}</td><td>{}</td></tr>",
            class(c.status),
            anchor(c.name),
            esc(c.name),
            word(c.status),
            esc(&c.summary)
        );
    }
    let _ = writeln!(out, "</tbody>\n</table>");
    for c in &report.checks {
        let _ = writeln!(
            out,
            "<h2 id=\"{}\" class=\"{}\">{}: {}</h2>",
            anchor(c.name),
            class(c.status),
            esc(c.name),
            word(c.status)
        );
        let _ = writeln!(out, "<p>{}</p>", esc(&c.summary));
        if !c.evidence.is_empty() {
            let _ = writeln!(out, "<ul>");
            for e in &c.evidence {
                let _ = writeln!(out, "<li>{}</li>", esc(e));
            }
            let _ = writeln!(out, "</ul>");
        }
    }
    if !report.heads.is_empty() {
        let _ = writeln!(out, "<h2>Chain heads</h2>\n<p>Save these (<code>--state</code>) to detect a rollback next time.</p>\n<ul>");
        for h in &report.heads {
            let _ = writeln!(out, "<li><code>{}</code></li>", esc(h));
        }
        let _ = writeln!(out, "</ul>");
    }
    let _ = writeln!(out, "</body>\n</html>");
    out
}

/// A check's name as an element id: letters and dashes only.
fn anchor(name: &str) -> String {
    name.chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() {
                c.to_ascii_lowercase()
            } else {
                '-'
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::audit::report::Check;

    #[test]
    fn hostile_evidence_is_escaped_in_html_and_markdown() {
        let report = AuditReport {
            verdict: Status::Fail,
            entries: 1,
            signers: vec![],
            checks: vec![Check {
                name: "activity",
                status: Status::Fail,
                summary: "x".into(),
                evidence: vec!["<script>alert(1)</script> by \"a\"@'b' & | [l](http://x)".into()],
            }],
            heads: vec![],
        };
        let page = render(&report, ReportFormat::Html);
        assert!(!page.contains("<script"), "{page}");
        assert!(page
            .contains("&lt;script&gt;alert(1)&lt;/script&gt; by &quot;a&quot;@&#39;b&#39; &amp;"));
        assert!(!page.contains("http-equiv=\"refresh\""));
        let md = render(&report, ReportFormat::Markdown);
        assert!(md.contains("\\<script\\>"), "{md}");
        assert!(md.contains("\\| \\[l\\](http://x)"), "{md}");
    }
}
