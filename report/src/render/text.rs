//! `--text`: the flat/cumulative table of `jeprof --text`, column for column.
//!
//! ```text
//! Total: 9.2 MiB
//!      8.2  89.1%  89.1%      8.2  89.1% leak_a /tmp/leak.c:7
//! ```
//!
//! - *flat*: the value of the stacks whose innermost (non-allocator) frame is this row;
//! - *flat%*: flat as a percentage of the sum of the flat column; *sum%*: the running sum of
//!   flat% down the table;
//! - *cum*: the value of the stacks in which this row appears anywhere (once per stack, however
//!   often recursion repeats it); *cum%*: cum as a percentage of the same sum.
//!
//! As in jeprof, the `Total:` line is the whole dump (before `--focus`/`--ignore`), while the
//! percentages are of what the table shows (so after `--focus` they add up to 100%). Rows are
//! sorted by flat (by cum with `--cum`), then by name; rows with zero flat
//! and zero cum are left out. Bytes print in MiB with one decimal (jeprof's "MB" are MiB too), or
//! in bytes with `--show-bytes`; objects as whole numbers, truncated as jeprof's `%d` does.
//!
//! After the table, [`write_stacks`] lists the largest stacks and their hints
//! ([`crate::hints`]), so that the table's rows stay jeprof's:
//!
//! ```text
//!
//! Largest stacks, innermost frame first:
//!
//! Stack 1: 97.9% of the total shown, 1000.2 MiB
//!       deflateInit2_
//!       Java_java_util_zip_Deflater_init
//!       Hint: java.util.zip.Deflater not ended (GZIPOutputStream or DeflaterOutputStream not closed)
//!         Every java.util.zip.Deflater allocates about 260 KiB of native zlib state …
//! ```
//!
//! No line of that section starts with a number, so that tools reading jeprof's rows (a line
//! of five numbers and a name) skip it.

use std::io::{self, Write};

use crate::hints::Stack;
use crate::profile::{Row, SampleType};

/// How to print the table.
#[derive(Debug, Clone, Copy, Default)]
pub struct TextOptions {
    /// What the numbers count.
    pub sample: SampleType,
    /// Print at most this many rows.
    pub top: Option<usize>,
    /// Sort by cumulative value.
    pub sort_by_cumulative: bool,
    /// Print bytes as bytes, not MiB.
    pub show_bytes: bool,
}

/// The width hint paragraphs are wrapped to, indentation included.
pub const WIDTH: usize = 100;

impl TextOptions {
    /// A value as the table prints it.
    fn number(&self, value: f64) -> String {
        if self.sample.is_bytes() && !self.show_bytes {
            format!("{:.1}", value / 1_048_576.0)
        } else {
            format!("{}", value.trunc() as i64)
        }
    }

    /// The unit of [`Self::number`].
    fn units(&self) -> &'static str {
        if !self.sample.is_bytes() {
            "objects"
        } else if self.show_bytes {
            "B"
        } else {
            "MiB"
        }
    }
}

/// Writes the table for `rows` (in any order) under `Total: <total>`.
pub fn write(out: &mut dyn Write, mut rows: Vec<Row>, total: f64, options: &TextOptions) -> io::Result<()> {
    let shown: f64 = rows.iter().map(|row| row.flat).sum();
    let number = |value: f64| options.number(value);
    if total != 0.0 {
        writeln!(out, "Total: {} {}", number(total), options.units())?;
    }
    let key = |row: &Row| {
        if options.sort_by_cumulative {
            row.cumulative
        } else {
            row.flat
        }
    };
    rows.sort_by(|a, b| key(b).total_cmp(&key(a)).then_with(|| a.name.cmp(&b.name)));
    let mut running = 0.0;
    let mut printed = 0;
    for row in &rows {
        running += row.flat;
        if row.flat == 0.0 && row.cumulative == 0.0 {
            continue;
        }
        if options.top.is_some_and(|top| printed >= top) {
            break;
        }
        writeln!(
            out,
            "{:>8} {:>6} {:>6} {:>8} {:>6} {}",
            number(row.flat),
            percent(row.flat, shown),
            percent(running, shown),
            number(row.cumulative),
            percent(row.cumulative, shown),
            row.name
        )?;
        printed += 1;
    }
    Ok(())
}

/// Writes the section of the largest stacks (module docs), if there are any; `shown` is the
/// total their shares are of.
pub fn write_stacks(
    out: &mut dyn Write,
    stacks: &[Stack],
    shown: f64,
    options: &TextOptions,
) -> io::Result<()> {
    if stacks.is_empty() {
        return Ok(());
    }
    writeln!(out, "\nLargest stacks, innermost frame first:")?;
    let mut hinted: Vec<String> = Vec::new();
    for (i, stack) in stacks.iter().enumerate() {
        writeln!(
            out,
            "\nStack {}: {} of the total shown, {} {}",
            i + 1,
            percent(stack.value, shown),
            options.number(stack.value),
            options.units()
        )?;
        for name in &stack.names {
            writeln!(out, "      {name}")?;
        }
        if let Some(shown_hint) = &stack.hint {
            write_hint(out, shown_hint, shown, &mut hinted, |v| {
                format!("{} {}", options.number(v), options.units())
            })?;
        }
    }
    Ok(())
}

/// Writes a hint under a stack: `Hint: <title>`, how much it matches when that is more than the
/// stack, and its paragraph, or `(as above)` when `hinted` says it was written before.
pub fn write_hint(
    out: &mut dyn Write,
    hint: &crate::hints::ShownHint,
    shown: f64,
    hinted: &mut Vec<String>,
    value: impl Fn(f64) -> String,
) -> io::Result<()> {
    let title = hint.hint.title.as_str();
    if hinted.iter().any(|t| t == title) {
        return writeln!(out, "      Hint: {title} (as above)");
    }
    writeln!(out, "      Hint: {title}")?;
    if hint.stacks > 1 {
        writeln!(
            out,
            "        (it matches {} stacks, {} of the total shown, {})",
            hint.stacks,
            percent(hint.value, shown),
            value(hint.value)
        )?;
    }
    for line in wrap(&hint.hint.text, WIDTH - 8) {
        writeln!(out, "        {line}")?;
    }
    hinted.push(title.to_string());
    Ok(())
}

/// `text` in lines of at most `width` characters where words allow, no line starting with a
/// word that reads as a number (such a word stays on the line before).
pub fn wrap(text: &str, width: usize) -> Vec<String> {
    let mut lines: Vec<String> = Vec::new();
    for word in text.split_whitespace() {
        let numeric = word.parse::<f64>().is_ok();
        match lines.last_mut() {
            Some(line) if numeric || line.chars().count() + 1 + word.chars().count() <= width => {
                line.push(' ');
                line.push_str(word);
            }
            _ => lines.push(word.to_string()),
        }
    }
    lines
}

/// `12.3%`, or jeprof's `nan`, `+inf`, `-inf` when the total is zero.
fn percent(value: f64, total: f64) -> String {
    if total != 0.0 {
        format!("{:.1}%", value * 100.0 / total)
    } else if value == 0.0 {
        "nan".into()
    } else if value > 0.0 {
        "+inf".into()
    } else {
        "-inf".into()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(name: &str, flat: f64, cumulative: f64) -> Row {
        Row {
            name: name.into(),
            flat,
            cumulative,
        }
    }

    #[test]
    fn prints_jeprof_columns() {
        let rows = vec![
            row("main", 0.0, 3.0 * 1048576.0),
            row("b", 1048576.0, 1048576.0),
            row("a", 2.0 * 1048576.0, 2.0 * 1048576.0),
            row("gone", 0.0, 0.0),
        ];
        let mut out = Vec::new();
        write(&mut out, rows, 4.0 * 1048576.0, &TextOptions::default()).unwrap();
        assert_eq!(
            String::from_utf8(out).unwrap(),
            "Total: 4.0 MiB\n\
             \x20    2.0  66.7%  66.7%      2.0  66.7% a\n\
             \x20    1.0  33.3% 100.0%      1.0  33.3% b\n\
             \x20    0.0   0.0% 100.0%      3.0 100.0% main\n"
        );
    }

    #[test]
    fn wraps_without_a_line_starting_with_a_number() {
        let lines = wrap("about 260 KiB of native zlib state, 32 KiB", 12);
        assert_eq!(lines, ["about 260", "KiB of", "native zlib", "state, 32", "KiB"]);
        assert!(wrap("", 10).is_empty());
        assert_eq!(wrap("a-very-long-word b", 5), ["a-very-long-word", "b"]);
    }

    #[test]
    fn top_and_objects() {
        let rows = vec![row("a", 10.9, 10.9), row("b", -10.9, 7.0)];
        let options = TextOptions {
            sample: SampleType::InuseObjects,
            top: Some(1),
            ..Default::default()
        };
        let mut out = Vec::new();
        write(&mut out, rows, 0.0, &options).unwrap();
        assert_eq!(
            String::from_utf8(out).unwrap(),
            "      10   +inf   +inf       10   +inf a\n"
        );
    }
}
