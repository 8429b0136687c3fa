//! `--html`: one self-contained page: the top table of `--text`, the flame graph inline, and,
//! for a series of dumps, the growth chart of total live bytes and of the top functions.
//!
//! Self-contained means no external resource at all (no script, stylesheet, font or image from
//! elsewhere): the page can be mailed, attached to a ticket or opened offline. It is also
//! well-formed XML (XHTML syntax in an HTML5 page), so tools can parse it as XML.

use std::fmt::Write as _;
use std::io::{self, Write};

use crate::profile::{Row, SampleType};
use crate::render::chart;
use crate::render::xml::escape;
use crate::series::{format_bytes, Axis};

/// The style sheet of every page.
const STYLE: &str = "body{font-family:sans-serif;margin:1.5em;color:#222}\
h1{font-size:1.4em}h2{font-size:1.15em;margin-top:1.5em}\
table{border-collapse:collapse;font-size:0.9em}\
th,td{padding:2px 8px;border-bottom:1px solid #ddd;text-align:right;vertical-align:top}\
td:last-child,th:last-child{text-align:left}\
code{font-family:monospace}.verdict{font-weight:bold}";

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
    /// The rows of the top table, sorted.
    pub rows: &'a [Row],
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
    body.push_str(
        "<h2>Top</h2><table id=\"top\"><thead><tr><th>flat</th><th>flat%</th><th>sum%</th>\
         <th>cum</th><th>cum%</th><th>function</th></tr></thead><tbody>",
    );
    let mut running = 0.0;
    for row in report.rows {
        running += row.flat;
        let _ = write!(
            body,
            "<tr><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td><code>{}</code></td></tr>",
            escape(&value(row.flat)),
            percent(row.flat),
            percent(running),
            escape(&value(row.cumulative)),
            percent(row.cumulative),
            escape(&row.name)
        );
    }
    body.push_str("</tbody></table>");
    body.push_str("<h2>Flame graph</h2><div class=\"flame\">");
    body.push_str(report.flame);
    body.push_str("</div>");
    page(out, &format!("tally report: {}", report.title), &body)
}
