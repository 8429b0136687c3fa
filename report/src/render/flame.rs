//! `--flame`: a flame graph SVG, drawn by the `inferno` crate from the folded stacks of
//! `--collapsed` (the same names: inline levels expanded, `file:line` with `--lines`).
//!
//! Each frame's width is its share of the shown total; roots at the bottom. The file is the
//! interactive SVG of `flamegraph.pl` (click to zoom, Ctrl-F to search) unless it is to be
//! inlined in a page ([`FlameOptions::inline`]): then it has no script and no XML prolog, only
//! tooltips (`<title>`). A flame graph cannot draw negative widths, so after `--base` it shows
//! the stacks that grew and says so in its subtitle.

use std::io::{self, Write};

use inferno::flamegraph::color::{BasicPalette, Palette};
use inferno::flamegraph::{self, Options};

use crate::profile::{Granularity, Profile, SampleType};
use crate::render::collapsed;
use crate::symbolize::Symbolizer;

/// How to draw.
pub struct FlameOptions<'a> {
    /// The title (the dump's name).
    pub title: &'a str,
    /// What the widths count.
    pub sample: SampleType,
    /// Function or line frames.
    pub granularity: Granularity,
    /// For inclusion in an HTML page: no script, no prolog.
    pub inline: bool,
}

/// Writes the flame graph of `profile`.
pub fn write(
    out: &mut dyn Write,
    profile: &Profile,
    symbolizer: &Symbolizer,
    options: &FlameOptions,
) -> io::Result<()> {
    let folded = collapsed::folded(profile, symbolizer, options.granularity);
    let dropped = folded.iter().any(|&(_, value)| value < 0);
    let lines: Vec<String> = folded
        .into_iter()
        .filter(|&(_, value)| value > 0)
        .map(|(stack, value)| format!("{stack} {value}"))
        .collect();

    let mut flame = Options::default();
    flame.title = options.title.to_string();
    flame.subtitle =
        dropped.then(|| "only the stacks that grew (a flame graph has no negative widths)".to_string());
    flame.count_name = if options.sample.is_bytes() {
        "bytes".into()
    } else {
        "objects".into()
    };
    flame.colors = Palette::Basic(BasicPalette::Mem);
    flame.deterministic = true;
    flame.hash = true;
    flame.no_javascript = options.inline;
    if options.inline {
        flame.image_width = Some(1000);
    }

    let mut svg = Vec::new();
    if lines.is_empty() {
        write_empty(&mut svg, options.title)?;
    } else {
        flamegraph::from_lines(&mut flame, lines.iter().map(String::as_str), &mut svg)?;
    }
    if options.inline {
        out.write_all(without_prolog(&svg))
    } else {
        out.write_all(&svg)
    }
}

/// An SVG that says there is nothing to draw (inferno refuses empty input).
fn write_empty(out: &mut Vec<u8>, title: &str) -> io::Result<()> {
    writeln!(
        out,
        "<?xml version=\"1.0\" standalone=\"no\"?>\n\
         <svg version=\"1.1\" width=\"600\" height=\"60\" xmlns=\"http://www.w3.org/2000/svg\">\
         <text x=\"10\" y=\"30\">{}: no stacks to draw</text></svg>",
        crate::render::xml::escape(title)
    )
}

/// The SVG from its root element on: no `<?xml …?>`, no `<!DOCTYPE …>`.
fn without_prolog(svg: &[u8]) -> &[u8] {
    let start = svg.windows(4).position(|w| w == b"<svg").unwrap_or(0);
    &svg[start..]
}
