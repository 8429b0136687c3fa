//! `tally leaks`: over a series of dumps of one process, the stacks whose live bytes grow
//! steadily, which is what a leak looks like, fastest first.
//!
//! Every dump is read as `--text` reads it (live bytes, jeprof's unbiasing, allocator frames
//! removed); stacks are compared by their symbolized frames, JIT code named from a perf map
//! ([`tally_format::perf_map`]), each run of unnamed frames in anonymous memory
//! ([`crate::symbolize::Location::is_anonymous`]) folded into one `[anonymous code]` frame
//! ([`crate::profile::Profile::fold_anonymous_frames`]): in a JVM without a perf map that is
//! compiled or interpreted Java code, whose address changes when the JIT compiles the method
//! again, which must not split one leak into several stacks. Named or not, the versions of one
//! Java call site (interpreted, compiled, compiled again with its callees inlined) are different
//! stacks that each grow only while they run, so stacks through JIT code are followed together
//! by their native part ([`group_jit_callers`]) and shown by the largest of them. For each stack, with `y_i` its live
//! bytes in dump `i` and `x_i` the dump's position on the [`Axis`] (bytes allocated so far, when
//! known), the least-squares line `y = a + b·x` gives:
//!
//! - the **slope** `b`: live bytes gained per byte allocated (printed per GiB allocated), or per
//!   dump when the axis has no byte count;
//! - **R²**, the share of the variance of `y` the line explains: 1 for growth at a constant
//!   rate, near 0 for a flat or erratic stack.
//!
//! A stack is a *steady grower* when all of these hold (the numbers are [`Thresholds`]):
//! 1. it grew: `b > 0`, and its last value exceeds its first by at least two sampling periods
//!    (less is within the noise of sampling);
//! 2. the line fits: `R² ≥ 0.8`;
//! 3. it grew often: in at least half of the steps from one dump to the next;
//! 4. it did not fall back: its last value is at least 80% of its largest;
//! 5. it is still growing: over the second half of the series it gained at least half of what
//!    the line predicts there. Growth that stops (a cache warming up, a program loading its
//!    classes) fails this even when the line fits well enough.
//!
//! Steady growers are ranked by slope. Under each suspect's stack comes the hint of
//! [`crate::hints`] that it matches, if any: a steady grower is significant by itself, so no
//! share of the total is asked of it.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write as _;
use std::io::{self, Write};

use crate::hints::{self, Hints, ShownHint};
use crate::profile::{location_names, Granularity, Profile};
use crate::render::xml::escape;
use crate::render::{chart, text};
use crate::series::{format_bytes, Axis, AxisUnit};
use crate::symbolize::{LocationId, Symbolizer};

/// The limits of a steady grower (module docs).
#[derive(Debug, Clone, Copy)]
pub struct Thresholds {
    /// Least R² of the line.
    pub min_r2: f64,
    /// Least share of steps that grew.
    pub min_grew: f64,
    /// Least last/largest value.
    pub min_last_of_peak: f64,
    /// Least share of the predicted gain over the second half that happened.
    pub min_late_growth: f64,
    /// Least gain from first to last, in sampling periods.
    pub min_periods: f64,
}

impl Default for Thresholds {
    fn default() -> Thresholds {
        Thresholds {
            min_r2: 0.8,
            min_grew: 0.5,
            min_last_of_peak: 0.8,
            min_late_growth: 0.5,
            min_periods: 2.0,
        }
    }
}

/// One stack's live bytes over the series and its fit.
#[derive(Debug, Clone, PartialEq)]
pub struct Trend {
    /// The stack (innermost first, allocator frames removed); for stacks through JIT code, the
    /// largest of those followed together ([`group_jit_callers`]).
    pub stack: Vec<LocationId>,
    /// How many stacks were followed together as this one (1 but for JIT callers).
    pub stacks: usize,
    /// Live bytes in each dump.
    pub live: Vec<f64>,
    /// Least-squares slope: bytes per unit of the axis.
    pub slope: f64,
    /// R² of the line (0 when the values do not vary).
    pub r2: f64,
    /// In how many steps from one dump to the next the value grew.
    pub grew: usize,
}

impl Trend {
    /// Fits a line to `live` over `x`.
    pub fn fit(stack: Vec<LocationId>, live: Vec<f64>, x: &[f64]) -> Trend {
        let (slope, r2) = least_squares(x, &live);
        let grew = live.windows(2).filter(|w| w[1] > w[0]).count();
        Trend {
            stack,
            stacks: 1,
            live,
            slope,
            r2,
            grew,
        }
    }

    /// Whether this is a steady grower (module docs), sampled at mean `period` bytes.
    pub fn is_steady(&self, x: &[f64], period: f64, limits: &Thresholds) -> bool {
        let n = self.live.len();
        if n < 3 || x.len() != n {
            return false;
        }
        let (first, last) = (self.live[0], self.live[n - 1]);
        let peak = self.live.iter().copied().fold(f64::NEG_INFINITY, f64::max);
        let middle = n / 2;
        let predicted_late = self.slope * (x[n - 1] - x[middle]);
        let late = last - self.live[middle];
        self.slope > 0.0
            && last - first >= limits.min_periods * period
            && self.r2 >= limits.min_r2
            && self.grew as f64 >= limits.min_grew * (n - 1) as f64
            && last >= limits.min_last_of_peak * peak
            && late >= limits.min_late_growth * predicted_late
    }
}

/// Slope and R² of the least-squares line through `(x_i, y_i)`.
pub fn least_squares(x: &[f64], y: &[f64]) -> (f64, f64) {
    let n = x.len().min(y.len()) as f64;
    if n < 2.0 {
        return (0.0, 0.0);
    }
    let mean_x = x.iter().sum::<f64>() / n;
    let mean_y = y.iter().sum::<f64>() / n;
    let (mut sxx, mut sxy, mut syy) = (0.0, 0.0, 0.0);
    for (&xi, &yi) in x.iter().zip(y) {
        sxx += (xi - mean_x) * (xi - mean_x);
        sxy += (xi - mean_x) * (yi - mean_y);
        syy += (yi - mean_y) * (yi - mean_y);
    }
    if sxx == 0.0 {
        return (0.0, 0.0);
    }
    let slope = sxy / sxx;
    let r2 = if syy == 0.0 {
        0.0
    } else {
        (sxy * sxy) / (sxx * syy)
    };
    (slope, r2)
}

/// Per group of [`group_jit_callers`]: the stack shown for it and how many stacks it holds.
pub type ShownStacks = BTreeMap<Vec<LocationId>, (Vec<LocationId>, usize)>;

/// Stacks through JIT code, followed together by their native part.
///
/// The frames of one Java (or JavaScript) call site change while the program runs: interpreted
/// at first, then compiled once, then again with its callees inlined, each version at other
/// addresses with other names. Every version's stack grows only while it is the one running, so
/// none grows steadily over the series, though their sum does. So a stack is followed under its
/// frames up to its first frame of JIT code ([`crate::symbolize::Location::is_jit_code`]), that
/// frame and the rest standing as one `marker` frame; stacks without JIT code stay as they are.
/// Returns the grouped profiles and, per group, the stack shown for it (the member with the
/// most live bytes in the latest dump that has any) and how many stacks it holds.
pub fn group_jit_callers(
    profiles: &[Profile],
    symbolizer: &Symbolizer,
    marker: LocationId,
) -> (Vec<Profile>, ShownStacks) {
    let key_of = |stack: &Vec<LocationId>| -> Option<Vec<LocationId>> {
        let at = stack
            .iter()
            .position(|&id| symbolizer.location(id).is_jit_code())?;
        let mut key = stack[..at].to_vec();
        key.push(marker);
        Some(key)
    };
    let mut members: BTreeMap<Vec<LocationId>, BTreeSet<&Vec<LocationId>>> = BTreeMap::new();
    let grouped = profiles
        .iter()
        .map(|profile| {
            let mut out = Profile::default();
            for (stack, &value) in &profile.stacks {
                match key_of(stack) {
                    Some(key) => {
                        members.entry(key.clone()).or_default().insert(stack);
                        *out.stacks.entry(key).or_insert(0.0) += value;
                    }
                    None => *out.stacks.entry(stack.clone()).or_insert(0.0) += value,
                }
            }
            out
        })
        .collect();
    let shown = members
        .into_iter()
        .map(|(key, stacks)| {
            let value = |stack: &Vec<LocationId>| {
                profiles
                    .iter()
                    .rev()
                    .find_map(|p| p.stacks.get(stack).copied().filter(|&v| v > 0.0))
                    .unwrap_or(0.0)
            };
            let largest = stacks
                .iter()
                .max_by(|a, b| value(a).total_cmp(&value(b)).then_with(|| b.cmp(a)))
                .map(|s| (*s).clone())
                .unwrap_or_default();
            (key, (largest, stacks.len()))
        })
        .collect();
    (grouped, shown)
}

/// The steady growers among the stacks of `profiles` (one per dump, in series order), fastest
/// first; `period` is the largest sampling period of the series.
pub fn rank(profiles: &[Profile], axis: &Axis, period: f64, limits: &Thresholds) -> Vec<Trend> {
    let stacks: BTreeSet<&Vec<LocationId>> = profiles.iter().flat_map(|p| p.stacks.keys()).collect();
    let mut growers: Vec<Trend> = stacks
        .into_iter()
        .map(|stack| {
            let live = profiles
                .iter()
                .map(|p| p.stacks.get(stack).copied().unwrap_or(0.0))
                .collect();
            Trend::fit(stack.clone(), live, &axis.values)
        })
        .filter(|trend| trend.is_steady(&axis.values, period, limits))
        .collect();
    growers.sort_by(|a, b| b.slope.total_cmp(&a.slope).then_with(|| a.stack.cmp(&b.stack)));
    growers
}

/// The growth rate of `trend` as printed: per GiB allocated, or per dump.
pub fn rate(trend: &Trend, axis: &Axis) -> String {
    match axis.unit {
        AxisUnit::AllocatedBytes => {
            format!("+{} per GiB allocated", format_bytes(trend.slope * 1073741824.0))
        }
        AxisUnit::Dumps => format!("+{} per dump", format_bytes(trend.slope)),
    }
}

/// The names of a stack, innermost first, one per inline level.
pub fn stack_names(stack: &[LocationId], symbolizer: &Symbolizer, granularity: Granularity) -> Vec<String> {
    stack
        .iter()
        .flat_map(|&id| location_names(symbolizer.location(id), granularity))
        .collect()
}

/// How the report reads.
pub struct LeakReport<'a> {
    /// The dumps' file names, in series order.
    pub names: &'a [String],
    /// Their positions.
    pub axis: &'a Axis,
    /// The steady growers, fastest first.
    pub growers: &'a [Trend],
    /// Total live bytes per dump (after allocator frames were removed).
    pub totals: &'a [f64],
    /// At most this many suspects.
    pub top: usize,
    /// At most this many frames per suspect.
    pub depth: usize,
    /// Function or line names.
    pub granularity: Granularity,
    /// The hints to match the suspects against.
    pub hints: &'a Hints,
}

/// The last frame of `trend`'s stack below its JIT code (what the stacks followed together
/// share), or `the allocation` when JIT code called the allocator itself.
fn jit_boundary(trend: &Trend, symbolizer: &Symbolizer, granularity: Granularity) -> String {
    let native: Vec<LocationId> = trend
        .stack
        .iter()
        .copied()
        .take_while(|&id| !symbolizer.location(id).is_jit_code())
        .collect();
    stack_names(&native, symbolizer, granularity)
        .pop()
        .unwrap_or_else(|| "the allocation".into())
}

/// The hint of `trend`'s stack, if it matches one.
fn hint_of<'h>(trend: &Trend, hints: &'h Hints, symbolizer: &Symbolizer) -> Option<ShownHint<'h>> {
    let functions = hints::functions(&trend.stack, symbolizer);
    hints.matching(&functions).map(|hint| ShownHint {
        hint,
        stacks: 1,
        value: trend.live.last().copied().unwrap_or(0.0),
    })
}

/// Writes the text report.
pub fn write_text(out: &mut dyn Write, report: &LeakReport, symbolizer: &Symbolizer) -> io::Result<()> {
    let n = report.names.len();
    let span = match report.axis.unit {
        AxisUnit::AllocatedBytes => format!(
            ", {} allocated between the first and the last",
            format_bytes(report.axis.values[n - 1] - report.axis.values[0])
        ),
        AxisUnit::Dumps => String::new(),
    };
    writeln!(
        out,
        "{n} dumps, {} … {}{span}; live {} → {}",
        report.names[0],
        report.names[n - 1],
        format_bytes(report.totals[0]),
        format_bytes(report.totals[n - 1]),
    )?;
    if report.growers.is_empty() {
        writeln!(
            out,
            "No steady growth: no stack's live bytes grew steadily over the {n} dumps."
        )?;
        return Ok(());
    }
    writeln!(
        out,
        "Steady growth of live bytes, fastest first ({} stacks):",
        report.growers.len()
    )?;
    let mut hinted = Vec::new();
    for (rank, trend) in report.growers.iter().take(report.top).enumerate() {
        writeln!(out)?;
        writeln!(
            out,
            "{:>2}. {}; live {} → {}; R² {:.3}; grew in {} of {} steps",
            rank + 1,
            rate(trend, report.axis),
            format_bytes(trend.live[0]),
            format_bytes(trend.live[n - 1]),
            trend.r2,
            trend.grew,
            n - 1
        )?;
        let names = stack_names(&trend.stack, symbolizer, report.granularity);
        for name in names.iter().take(report.depth) {
            writeln!(out, "      {name}")?;
        }
        if names.len() > report.depth {
            writeln!(out, "      … {} more frames", names.len() - report.depth)?;
        }
        if trend.stacks > 1 {
            writeln!(
                out,
                "      (the largest of {} stacks through JIT code above {}, followed together)",
                trend.stacks,
                jit_boundary(trend, symbolizer, report.granularity)
            )?;
        }
        if let Some(hint) = hint_of(trend, report.hints, symbolizer) {
            text::write_hint(out, &hint, 0.0, &mut hinted, format_bytes)?;
        }
    }
    Ok(())
}

/// Writes the HTML report: the chart of the suspects' live bytes over the series, then the list.
pub fn write_html(out: &mut dyn Write, report: &LeakReport, symbolizer: &Symbolizer) -> io::Result<()> {
    let n = report.names.len();
    let mut body = String::new();
    let _ = write!(
        body,
        "<p>{n} dumps, <code>{}</code> … <code>{}</code>; live {} → {}.</p>",
        escape(&report.names[0]),
        escape(&report.names[n - 1]),
        escape(&format_bytes(report.totals[0])),
        escape(&format_bytes(report.totals[n - 1]))
    );
    if report.growers.is_empty() {
        body.push_str("<p class=\"verdict\">No steady growth: no stack's live bytes grew steadily.</p>");
    }
    let shown: Vec<&Trend> = report.growers.iter().take(report.top).collect();
    let label = |trend: &Trend| -> String {
        stack_names(&trend.stack, symbolizer, report.granularity)
            .into_iter()
            .next()
            .unwrap_or_else(|| "(no frames)".into())
    };
    let mut lines: Vec<chart::Line> = shown
        .iter()
        .enumerate()
        .take(8)
        .map(|(i, trend)| chart::Line {
            name: format!("#{} {}", i + 1, label(trend)),
            points: report
                .axis
                .values
                .iter()
                .copied()
                .zip(trend.live.iter().copied())
                .collect(),
        })
        .collect();
    lines.push(chart::Line {
        name: "all live bytes".into(),
        points: report
            .axis
            .values
            .iter()
            .copied()
            .zip(report.totals.iter().copied())
            .collect(),
    });
    let x_format = |x: f64| report.axis.format(x);
    let y_format = |y: f64| format_bytes(y);
    body.push_str("<h2>Live bytes over the series</h2>");
    body.push_str(&chart::svg(
        &lines,
        &chart::Axes {
            x_label: report.axis.label(),
            y_label: "live bytes",
            x_format: &x_format,
            y_format: &y_format,
        },
    ));
    if !shown.is_empty() {
        body.push_str(
            "<h2>Steady growers, fastest first</h2><table><thead><tr><th>#</th><th>growth</th>\
             <th>live, first → last</th><th>R²</th><th>grew in</th><th>stack (innermost first)</th></tr></thead><tbody>",
        );
        for (i, trend) in shown.iter().enumerate() {
            let names = stack_names(&trend.stack, symbolizer, report.granularity);
            let frames: Vec<String> = names
                .iter()
                .take(report.depth)
                .map(|name| format!("<code>{}</code>", escape(name)))
                .collect();
            let mut hint = hint_of(trend, report.hints, symbolizer)
                .map(|hint| crate::render::html::hint(&hint, None))
                .unwrap_or_default();
            if trend.stacks > 1 {
                hint.insert_str(
                    0,
                    &format!(
                        "<p>The largest of {} stacks through JIT code above <code>{}</code>, \
                         followed together.</p>",
                        trend.stacks,
                        escape(&jit_boundary(trend, symbolizer, report.granularity))
                    ),
                );
            }
            let _ = write!(
                body,
                "<tr><td>{}</td><td>{}</td><td>{} → {}</td><td>{:.3}</td><td>{} of {}</td><td>{}{hint}</td></tr>",
                i + 1,
                escape(&rate(trend, report.axis)),
                escape(&format_bytes(trend.live[0])),
                escape(&format_bytes(trend.live[n - 1])),
                trend.r2,
                trend.grew,
                n - 1,
                frames.join("<br/>")
            );
        }
        body.push_str("</tbody></table>");
    }
    crate::render::html::page(out, "tally leaks", &body)
}

/// Total live bytes of each profile.
pub fn totals(profiles: &[Profile]) -> Vec<f64> {
    profiles.iter().map(Profile::total).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    const MIB: f64 = 1048576.0;

    fn steady(live: &[f64]) -> bool {
        let x: Vec<f64> = (1..=live.len()).map(|i| i as f64 * 64.0 * MIB).collect();
        let trend = Trend::fit(Vec::new(), live.to_vec(), &x);
        trend.is_steady(&x, 131072.0, &Thresholds::default())
    }

    #[test]
    fn stacks_through_jit_code_are_followed_by_their_native_part() {
        use crate::symbolize::{Symbolizer, SymbolizerOptions};
        let mut symbolizer = Symbolizer::new(SymbolizerOptions::default());
        let mut frame = |name: &str, jit: bool| symbolizer.placeholder(name, jit);
        let (zlib, jni) = (
            frame("deflateInit2_", false),
            frame("Java_java_util_zip_Deflater_init", false),
        );
        let (interpreter, compiled, inlined) = (
            frame("[java interpreter]", true),
            frame("GzipLogger.logLeaky", true),
            frame("GzipLogger.logLeaky (C2)", true),
        );
        let (main, other) = (frame("main", false), frame("cache_fill", false));
        let marker = frame("[JIT callers]", true);
        // The leak runs interpreted, then compiled, then compiled again: each version's stack
        // grows only while it runs. A native stack beside it grows steadily on its own.
        let tiers = [
            vec![zlib, jni, interpreter, main],
            vec![zlib, jni, compiled, interpreter, main],
            vec![zlib, jni, inlined, interpreter, main],
        ];
        let native = vec![other, main];
        let live = [
            [10.0, 20.0, 20.0, 20.0, 20.0, 20.0],
            [0.0, 0.0, 15.0, 30.0, 30.0, 30.0],
            [0.0, 0.0, 0.0, 0.0, 20.0, 40.0],
        ];
        let profiles: Vec<Profile> = (0..6)
            .map(|d| {
                let mut profile = Profile::default();
                for (stack, values) in tiers.iter().zip(&live) {
                    if values[d] > 0.0 {
                        profile.stacks.insert(stack.clone(), values[d] * MIB);
                    }
                }
                profile
                    .stacks
                    .insert(native.clone(), (d as f64 + 1.0) * 4.0 * MIB);
                profile
            })
            .collect();
        let axis = Axis {
            values: (1..=6).map(|i| i as f64 * 64.0 * MIB).collect(),
            unit: AxisUnit::AllocatedBytes,
        };
        let period = 131072.0;
        // Apart, no version of the leak grows steadily.
        let apart = rank(&profiles, &axis, period, &Thresholds::default());
        assert_eq!(apart.iter().map(|t| &t.stack).collect::<Vec<_>>(), vec![&native]);

        let (grouped, shown) = group_jit_callers(&profiles, &symbolizer, marker);
        let key = vec![zlib, jni, marker];
        assert_eq!(grouped[5].stacks[&key], 90.0 * MIB);
        assert_eq!(grouped[5].stacks[&native], 24.0 * MIB);
        // Shown by the largest version in the last dump, the inlined one.
        assert_eq!(shown[&key], (tiers[2].clone(), 3));
        assert!(!shown.contains_key(&native));
        let together = rank(&grouped, &axis, period, &Thresholds::default());
        assert_eq!(
            together.iter().map(|t| &t.stack).collect::<Vec<_>>(),
            vec![&key, &native]
        );
    }

    #[test]
    fn fits_a_line() {
        let (slope, r2) = least_squares(&[1.0, 2.0, 3.0], &[2.0, 4.0, 6.0]);
        assert!((slope - 2.0).abs() < 1e-12 && (r2 - 1.0).abs() < 1e-12);
        assert_eq!(least_squares(&[1.0, 2.0, 3.0], &[5.0, 5.0, 5.0]), (0.0, 0.0));
        assert_eq!(least_squares(&[1.0], &[5.0]), (0.0, 0.0));
    }

    #[test]
    fn tells_steady_growth_from_the_rest() {
        let m = |v: &[f64]| v.iter().map(|x| x * MIB).collect::<Vec<_>>();
        // Growth at a constant rate, with sampling noise.
        assert!(steady(&m(&[10.0, 26.0, 41.0, 59.0, 73.0, 90.0, 104.0, 121.0])));
        // Slow but steady, some steps without a new sample.
        assert!(steady(&m(&[1.0, 1.0, 2.0, 3.0, 3.0, 4.0, 5.0, 6.0])));
        // Flat, and flat with noise.
        assert!(!steady(&m(&[8.0; 8])));
        assert!(!steady(&m(&[8.0, 8.1, 7.9, 8.0, 8.2, 7.8, 8.0, 8.1])));
        // Grows, then falls back.
        assert!(!steady(&m(&[1.0, 20.0, 40.0, 60.0, 80.0, 100.0, 50.0, 2.0])));
        assert!(!steady(&m(&[1.0, 20.0, 40.0, 60.0, 80.0, 100.0, 120.0, 60.0])));
        // Warms up, then stays.
        assert!(!steady(&m(&[
            10.0, 50.0, 90.0, 100.0, 100.0, 101.0, 100.0, 100.0
        ])));
        assert!(!steady(&m(&[10.0, 30.0, 50.0, 70.0, 90.0, 91.0, 91.0, 91.0])));
        // Shrinks.
        assert!(!steady(&m(&[80.0, 70.0, 60.0, 50.0, 40.0, 30.0, 20.0, 10.0])));
        // Grows by less than the noise of sampling.
        assert!(!steady(&[
            0.0, 16384.0, 32768.0, 65536.0, 98304.0, 131072.0, 163840.0, 196608.0
        ]));
        // Too short a series says nothing.
        assert!(!steady(&m(&[1.0, 2.0])));
    }
}
