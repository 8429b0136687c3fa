//! `--html`: one self-contained page: the top table of `--text`, the largest stacks with their
//! hints ([`crate::hints`]), the flame graph inline, and, for a series of dumps, the growth chart
//! of total live bytes and of the top functions.
//!
//! The table shows the first rows (20 unless `--top` says) and keeps the others, the rows whose
//! flat and cum are not both zero, behind a `<details>` element that opens on a click, with no
//! script. A row that is the innermost frame of a listed stack with a hint links to it.
//!
//! Self-contained means no external resource at all (no script, stylesheet, font or image from
//! elsewhere): the page can be mailed, attached to a ticket or opened offline. It is also
//! well-formed XML (XHTML syntax in an HTML5 page), so tools can parse it as XML.

use std::fmt::Write as _;
use std::io::{self, Write};

use crate::hints::{ShownHint, Stack};
use crate::profile::{Row, SampleType};
use crate::render::chart;
use crate::render::xml::escape;
use crate::series::{format_bytes, Axis};

/// Rows behind the toggle at most; the rest are left to `--text`.
pub const MORE_ROWS: usize = 2000;

/// The style sheet of every page.
const STYLE: &str = "body{font-family:sans-serif;margin:1.5em;color:#222}\
h1{font-size:1.4em}h2{font-size:1.15em;margin-top:1.5em}\
table{border-collapse:collapse;font-size:0.9em}\
th,td{padding:2px 8px;border-bottom:1px solid #ddd;text-align:right;vertical-align:top}\
td:last-child,th:last-child{text-align:left}\
code{font-family:monospace}.verdict{font-weight:bold}\
summary{cursor:pointer;margin:6px 0}ol.frames{margin:4px 0;font-size:0.9em}\
.hint{background:#fff8e0;border-left:4px solid #d09000;padding:2px 10px;margin:6px 0;max-width:60em}\
.hint p{margin:4px 0}";

/// Writes a whole page around `body` (already HTML).
pub fn page(out: &mut dyn Write, title: &str, body: &str) -> io::Result<()> {
    write!(
        out,
        "<!DOCTYPE html>\n<html xmlns=\"http://www.w3.org/1999/xhtml\" lang=\"en\">\n<head>\
         <meta charset=\"utf-8\"/><title>{}</title><style>{STYLE}</style></head>\n<body>\
         <h1>{}</h1>\n{body}\n</body>\n</html>\n",
        escape(title),
        escape(title)
    )
}

/// The growth of a series, for the chart.
pub struct Growth<'a> {
    /// Where each dump lies.
    pub axis: &'a Axis,
    /// Total live value per dump.
    pub totals: &'a [f64],
    /// Per function (up to a few), its flat value per dump.
    pub functions: Vec<(String, Vec<f64>)>,
}

/// What the page shows.
pub struct HtmlReport<'a> {
    /// The title (the dump's name).
    pub title: &'a str,
    /// What the numbers count.
    pub sample: SampleType,
    /// The whole dump's total.
    pub total: f64,
    /// The rows of the top table, sorted, none with zero flat and zero cum.
    pub rows: &'a [Row],
    /// How many of them show before the toggle.
    pub visible_rows: usize,
    /// The largest stacks and their hints.
    pub stacks: &'a [Stack<'a>],
    /// What the stacks' shares are of.
    pub shown: f64,
    /// The flame graph, an inline `<svg>`.
    pub flame: &'a str,
    /// The series' growth, when there is a series.
    pub growth: Option<Growth<'a>>,
}

/// Writes the page.
pub fn write(out: &mut dyn Write, report: &HtmlReport) -> io::Result<()> {
    let value = |v: f64| -> String {
        if report.sample.is_bytes() {
            format_bytes(v)
        } else {
            format!("{}", v.trunc() as i64)
        }
    };
    let what = match report.sample {
        SampleType::InuseSpace => "live bytes",
        SampleType::InuseObjects => "live objects",
        SampleType::AllocSpace => "bytes allocated",
        SampleType::AllocObjects => "objects allocated",
    };
    let mut body = String::new();
    let _ = write!(body, "<p>Total {what}: {}</p>", escape(&value(report.total)));

    if let Some(growth) = &report.growth {
        let mut lines = vec![chart::Line {
            name: format!("all {what}"),
            points: growth
                .axis
                .values
                .iter()
                .copied()
                .zip(growth.totals.iter().copied())
                .collect(),
        }];
        for (name, values) in &growth.functions {
            lines.push(chart::Line {
                name: name.clone(),
                points: growth
                    .axis
                    .values
                    .iter()
                    .copied()
                    .zip(values.iter().copied())
                    .collect(),
            });
        }
        let x_format = |x: f64| growth.axis.format(x);
        let y_format = |y: f64| value(y);
        body.push_str("<h2>Growth over the series</h2>");
        body.push_str(&chart::svg(
            &lines,
            &chart::Axes {
                x_label: growth.axis.label(),
                y_label: what,
                x_format: &x_format,
                y_format: &y_format,
            },
        ));
    }

    let shown: f64 = report.rows.iter().map(|row| row.flat).sum();
    let percent = |v: f64| {
        if shown != 0.0 {
            format!("{:.1}%", v * 100.0 / shown)
        } else {
            "-".into()
        }
    };
    let header = "<thead><tr><th>flat</th><th>flat%</th><th>sum%</th><th>cum</th><th>cum%</th>\
                  <th>function</th></tr></thead><tbody>";
    let _ = write!(body, "<h2>Top</h2><table id=\"top\">{header}");
    // The stack (1-based) whose hint each innermost name links to.
    let linked = |name: &str| {
        report
            .stacks
            .iter()
            .position(|stack| stack.hint.is_some() && stack.names.first().is_some_and(|n| n == name))
            .map(|i| i + 1)
    };
    let mut running = 0.0;
    let hidden = report.rows.len().saturating_sub(report.visible_rows);
    for (i, row) in report
        .rows
        .iter()
        .take(report.visible_rows + MORE_ROWS)
        .enumerate()
    {
        if i == report.visible_rows {
            let _ = write!(
                body,
                "</tbody></table><details><summary>{hidden} more rows</summary><table>{header}"
            );
        }
        running += row.flat;
        let link = linked(&row.name).map_or_else(String::new, |stack| {
            format!(" <a href=\"#stack-{stack}\">(hint: stack {stack})</a>")
        });
        let _ = write!(
            body,
            "<tr><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td><code>{}</code>{link}</td></tr>",
            escape(&value(row.flat)),
            percent(row.flat),
            percent(running),
            escape(&value(row.cumulative)),
            percent(row.cumulative),
            escape(&row.name)
        );
    }
    body.push_str("</tbody></table>");
    if hidden > 0 {
        if hidden > MORE_ROWS {
            let _ = write!(
                body,
                "<p>{} rows more are left out (tally report --text lists them all).</p>",
                hidden - MORE_ROWS
            );
        }
        body.push_str("</details>");
    }

    if !report.stacks.is_empty() {
        body.push_str("<h2>Largest stacks</h2><p>Innermost frame first.</p>");
    }
    let stack_percent = |v: f64| format!("{:.1}%", v * 100.0 / report.shown);
    let mut hinted: Vec<&str> = Vec::new();
    for (i, stack) in report.stacks.iter().enumerate() {
        let _ = write!(
            body,
            "<div class=\"stack\" id=\"stack-{}\"><h3>Stack {}: {} of the total shown, {}</h3><ol class=\"frames\">",
            i + 1,
            i + 1,
            stack_percent(stack.value),
            escape(&value(stack.value))
        );
        for name in &stack.names {
            let _ = write!(body, "<li><code>{}</code></li>", escape(name));
        }
        body.push_str("</ol>");
        if let Some(shown_hint) = &stack.hint {
            let title = shown_hint.hint.title.as_str();
            let note = (shown_hint.stacks > 1).then(|| {
                format!(
                    "It matches {} stacks, {} of the total shown, {}.",
                    shown_hint.stacks,
                    stack_percent(shown_hint.value),
                    value(shown_hint.value)
                )
            });
            if hinted.contains(&title) {
                let _ = write!(
                    body,
                    "<div class=\"hint\"><p><b>Hint: {}</b> (as above)</p></div>",
                    escape(title)
                );
            } else {
                body.push_str(&hint(shown_hint, note.as_deref()));
                hinted.push(title);
            }
        }
        body.push_str("</div>");
    }
    body.push_str("<h2>Flame graph</h2><div class=\"flame\">");
    body.push_str(report.flame);
    body.push_str("</div>");
    page(out, &format!("tally report: {}", report.title), &body)
}

/// A hint as a block of HTML: its title, `note` if any, and its paragraph.
pub fn hint(hint: &ShownHint, note: Option<&str>) -> String {
    let note = note.map_or_else(String::new, |note| format!(" {}", escape(note)));
    format!(
        "<div class=\"hint\"><p><b>Hint: {}</b>{note}</p><p>{}</p></div>",
        escape(&hint.hint.title),
        escape(&hint.hint.text)
    )
}
