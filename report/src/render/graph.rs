//! `--dot` and `--svg`: the call graph of `jeprof --dot`/`--svg`, drawn by Graphviz's `dot`.
//!
//! Nodes are the rows of the text report (functions, or functions and lines with `--lines`);
//! an edge runs from caller to callee for every pair of adjacent names in a stack, weighted by
//! the stack's value. jeprof's choices, kept so that the pictures read alike:
//! - at most 80 nodes, those with the largest cumulative value, and none whose cumulative value
//!   is at most 0.5% of the shown total; edges at most 0.1% of it are dropped unless a node would
//!   lose its only incoming edge; at most 8 edges in and out of a node;
//! - a node's font size is `8 + 50·√(|flat| / total)`, so area follows the node's own share;
//!   its label is the name, split at `::` and spaces, then `flat (flat%)` and, where it
//!   differs, `of cum (cum%)`;
//! - an edge's width is `2·min(1, 3·value / total)` (at least 1), dashed into an inlined callee;
//! - a legend box names the dump and the totals.

use std::collections::HashMap;
use std::io::{self, Read, Write};
use std::process::{Command, Stdio};

use crate::profile::{location_names, Granularity, Profile, Row, SampleType};
use crate::symbolize::{LocationId, Symbolizer};

const NODE_COUNT: usize = 80;
const NODE_FRACTION: f64 = 0.005;
const EDGE_FRACTION: f64 = 0.001;
const MAX_DEGREE: usize = 8;

/// What the graph shows, besides the profile.
pub struct GraphOptions<'a> {
    /// The legend's first line (the dump's name).
    pub title: &'a str,
    /// What the numbers count.
    pub sample: SampleType,
    /// Function or line nodes.
    pub granularity: Granularity,
    /// The whole dump's total (the text report's `Total:`).
    pub total: f64,
}

/// Writes the graph in Graphviz's DOT language.
pub fn write_dot(
    out: &mut dyn Write,
    profile: &Profile,
    rows: &[Row],
    symbolizer: &Symbolizer,
    options: &GraphOptions,
) -> io::Result<()> {
    let shown: f64 = rows.iter().map(|row| row.flat).sum();
    let node_limit = NODE_FRACTION * shown.abs();
    let edge_limit = EDGE_FRACTION * shown.abs();

    let mut kept: Vec<&Row> = rows.iter().collect();
    kept.sort_by(|a, b| {
        b.cumulative
            .abs()
            .total_cmp(&a.cumulative.abs())
            .then_with(|| a.name.cmp(&b.name))
    });
    kept.truncate(NODE_COUNT);
    while kept.last().is_some_and(|row| row.cumulative.abs() <= node_limit) {
        kept.pop();
    }
    let node_of: HashMap<&str, usize> = kept
        .iter()
        .enumerate()
        .map(|(i, row)| (row.name.as_str(), i + 1))
        .collect();

    let value = |v: f64| format_value(v, options.sample);
    writeln!(out, "digraph \"{}\" {{", escape(options.title))?;
    writeln!(out, "node [width=0.375,height=0.25];")?;
    writeln!(
        out,
        "Legend [shape=box,fontsize=24,shape=plaintext,label=\"{}\\l{}\\l{}\\l{}\\l{}\\l\"];",
        escape(options.title),
        escape(&format!(
            "Total {}: {}",
            units(options.sample),
            value(options.total)
        )),
        escape(&format!("Focusing on: {}", value(shown))),
        escape(&format!(
            "Dropped nodes with <= {} abs({})",
            value(node_limit),
            units(options.sample)
        )),
        escape(&format!(
            "Dropped edges with <= {} {}",
            value(edge_limit),
            units(options.sample)
        )),
    )?;
    for (i, row) in kept.iter().enumerate() {
        let size = if shown != 0.0 {
            8.0 + 50.0 * (row.flat / shown).abs().sqrt()
        } else {
            8.0
        };
        let name = escape(&row.name).replace("::", "\\n").replace(' ', "\\n");
        let extra = if row.flat != row.cumulative {
            format!(
                "\\rof {} ({})",
                value(row.cumulative),
                percent(row.cumulative, shown)
            )
        } else {
            String::new()
        };
        writeln!(
            out,
            "N{} [label=\"{}\\n{} ({}){}\\r\",shape=box,fontsize={:.1}];",
            i + 1,
            name,
            value(row.flat),
            percent(row.flat, shown),
            extra,
            size
        )?;
    }

    // Edges: adjacent names of every stack, outer → inner, both kept as nodes.
    let mut names_of: HashMap<LocationId, Vec<String>> = HashMap::new();
    let mut edges: HashMap<(usize, usize), f64> = HashMap::new();
    for (stack, &v) in &profile.stacks {
        let mut names: Vec<usize> = Vec::new();
        for &id in stack {
            let location_names = names_of
                .entry(id)
                .or_insert_with(|| location_names(symbolizer.location(id), options.granularity));
            names.extend(
                location_names
                    .iter()
                    .map(|name| node_of.get(name.as_str()).copied().unwrap_or(0)),
            );
        }
        for pair in names.windows(2) {
            let (callee, caller) = (pair[0], pair[1]);
            if callee != 0 && caller != 0 {
                *edges.entry((caller, callee)).or_insert(0.0) += v;
            }
        }
    }
    let mut edges: Vec<((usize, usize), f64)> = edges.into_iter().collect();
    edges.sort_by(|a, b| b.1.abs().total_cmp(&a.1.abs()).then_with(|| a.0.cmp(&b.0)));
    let mut in_degree = vec![0usize; kept.len() + 1];
    let mut out_degree = vec![0usize; kept.len() + 1];
    for ((caller, callee), v) in edges {
        let keep = in_degree[callee] == 0
            || (v.abs() > edge_limit && out_degree[caller] < MAX_DEGREE && in_degree[callee] < MAX_DEGREE);
        if !keep {
            continue;
        }
        out_degree[caller] += 1;
        in_degree[callee] += 1;
        let fraction = if shown != 0.0 {
            (3.0 * v / shown).abs().min(1.0)
        } else {
            0.0
        };
        let width = (fraction * 2.0).max(1.0);
        let dashed = if kept[callee - 1].name.contains("(inline)") {
            ",dashed"
        } else {
            ""
        };
        writeln!(
            out,
            "N{caller} -> N{callee} [label=\"{}\", weight={}, style=\"setlinewidth({width:.6}){dashed}\"];",
            value(v),
            (v.abs().powf(0.7).min(100_000.0)) as u64
        )?;
    }
    writeln!(out, "}}")
}

/// Runs Graphviz's `dot -Tsvg` on `dot_text` and returns the SVG.
pub fn render_svg(dot_text: &[u8]) -> Result<Vec<u8>, String> {
    let mut child = Command::new("dot")
        .arg("-Tsvg")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| match e.kind() {
            io::ErrorKind::NotFound => {
                "--svg needs Graphviz's `dot` on the PATH (Debian: apt-get install graphviz); \
                 --dot writes the graph for another machine to draw"
                    .to_string()
            }
            _ => format!("running dot: {}", crate::object_file::io_message(e)),
        })?;
    let mut stdin = child.stdin.take().expect("piped");
    let input = dot_text.to_vec();
    // Feed dot from another thread, so that a large graph cannot deadlock on full pipes.
    let writer = std::thread::spawn(move || stdin.write_all(&input));
    let mut svg = Vec::new();
    let mut stderr = Vec::new();
    child
        .stdout
        .take()
        .expect("piped")
        .read_to_end(&mut svg)
        .map_err(|e| format!("reading dot's output: {e}"))?;
    child
        .stderr
        .take()
        .expect("piped")
        .read_to_end(&mut stderr)
        .map_err(|e| format!("reading dot's errors: {e}"))?;
    let status = child.wait().map_err(|e| format!("waiting for dot: {e}"))?;
    let _ = writer.join();
    if !status.success() {
        let message = String::from_utf8_lossy(&stderr);
        let first = message.lines().next().unwrap_or("").trim();
        return Err(format!("dot failed ({status}): {first}"));
    }
    Ok(svg)
}

fn units(sample: SampleType) -> &'static str {
    if sample.is_bytes() {
        "MiB"
    } else {
        "objects"
    }
}

fn format_value(value: f64, sample: SampleType) -> String {
    if sample.is_bytes() {
        format!("{:.1}", value / 1_048_576.0)
    } else {
        format!("{}", value.trunc() as i64)
    }
}

fn percent(value: f64, total: f64) -> String {
    if total != 0.0 {
        format!("{:.1}%", value * 100.0 / total)
    } else {
        "nan".into()
    }
}

/// A string as the inside of a DOT double-quoted string.
fn escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            c if c.is_control() => out.push(' '),
            c => out.push(c),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escapes_dot_strings() {
        assert_eq!(escape("a\"b\\c\nd"), "a\\\"b\\\\c d");
    }
}
