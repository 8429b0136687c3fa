//! `--collapsed`: folded stacks, one line per distinct stack, `root;caller;…;callee value`, the
//! input of flame graph tools (`flamegraph.pl`, `inferno-flamegraph`).
//!
//! Names are those of the text report (inline levels expanded, `(inline)` on inlined callees,
//! ` file:line` with `--lines`), outermost first. Stacks that read the same once symbolized are
//! merged; values are rounded to whole bytes (or objects); zero lines are left out; lines are
//! sorted, so equal dumps give equal files. A `;` inside a name would split a frame, so it is
//! written as `:`.

use std::collections::BTreeMap;
use std::io::{self, Write};

use crate::profile::{location_names, Granularity, Profile};
use crate::symbolize::Symbolizer;

/// Writes `profile` as folded stacks.
pub fn write(
    out: &mut dyn Write,
    profile: &Profile,
    symbolizer: &Symbolizer,
    granularity: Granularity,
) -> io::Result<()> {
    for (line, value) in folded(profile, symbolizer, granularity) {
        writeln!(out, "{line} {value}")?;
    }
    Ok(())
}

/// The folded stacks of `profile` (without their values) and their values, rounded, sorted, the
/// zero ones left out.
pub fn folded(profile: &Profile, symbolizer: &Symbolizer, granularity: Granularity) -> Vec<(String, i64)> {
    let mut lines: BTreeMap<String, f64> = BTreeMap::new();
    for (stack, &value) in &profile.stacks {
        let mut names: Vec<String> = Vec::new();
        for &id in stack.iter().rev() {
            let location = symbolizer.location(id);
            names.extend(location_names(location, granularity).into_iter().rev());
        }
        if names.is_empty() {
            continue;
        }
        let line = names
            .iter()
            .map(|name| name.replace(';', ":"))
            .collect::<Vec<_>>()
            .join(";");
        *lines.entry(line).or_insert(0.0) += value;
    }
    lines
        .into_iter()
        .map(|(line, value)| (line, value.round() as i64))
        .filter(|&(_, value)| value != 0)
        .collect()
}
