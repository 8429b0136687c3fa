//! The comparison table of the Criterion benchmarks (`criterion_table`, which
//! `benches/run-criterion.sh` runs last): the median time of every benchmark under every variant,
//! with its ratio to [`BASELINE`], and the profilers' overhead. Files are the binary's business;
//! everything here is plain data, so it is tested here.
//!
//! # What Criterion leaves behind
//!
//! Criterion keeps the latest result of each benchmark in
//! `<criterion dir>/<group>/<function>/<parameter>/new/` (each part made file-name safe):
//! `benchmark.json` holds the id (`"full_id": "tally+prof/alloc_free/16"`) and `estimates.json`
//! the estimates of the time of one iteration, in nanoseconds. The table takes
//! `median.point_estimate`, and `median.confidence_interval` for the noise line. The id, not
//! the directory, names the cell, so directory names never have to be parsed back.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use serde_json::Value;

use crate::criterion_suite::{benches, describe, BASELINE, PROFILED, VARIANTS};
use crate::runner::{geometric_mean, median, Machine};

/// One benchmark's result under one variant.
#[derive(Clone, Debug, PartialEq)]
pub struct Estimate {
    /// The variant, e.g. `tally+prof`.
    pub variant: String,
    /// The benchmark without the variant, e.g. `alloc_free/16`.
    pub bench: String,
    /// Median time of one iteration, in ns.
    pub median_ns: f64,
    /// Lower and upper bound of the median's confidence interval, in ns.
    pub interval_ns: (f64, f64),
}

/// Reads one benchmark's `benchmark.json` and `estimates.json` texts.
///
/// # Errors
///
/// If either is not JSON, lacks a field, or has an id without a `/` or a time that is not a
/// finite positive number.
pub fn parse_estimate(benchmark_json: &str, estimates_json: &str) -> Result<Estimate, String> {
    let benchmark: Value =
        serde_json::from_str(benchmark_json).map_err(|error| format!("benchmark.json: {error}"))?;
    let estimates: Value =
        serde_json::from_str(estimates_json).map_err(|error| format!("estimates.json: {error}"))?;
    let full_id = benchmark["full_id"]
        .as_str()
        .ok_or("benchmark.json: no full_id")?;
    let (variant, bench) = full_id
        .split_once('/')
        .ok_or_else(|| format!("id {full_id:?} has no variant"))?;
    let median = &estimates["median"];
    let number = |value: &Value, what: &str| {
        value
            .as_f64()
            .filter(|ns| ns.is_finite() && *ns > 0.0)
            .ok_or_else(|| format!("estimates.json of {full_id}: bad {what}"))
    };
    Ok(Estimate {
        variant: variant.to_string(),
        bench: bench.to_string(),
        median_ns: number(&median["point_estimate"], "median")?,
        interval_ns: (
            number(&median["confidence_interval"]["lower_bound"], "lower bound")?,
            number(&median["confidence_interval"]["upper_bound"], "upper bound")?,
        ),
    })
}

/// The cells of the table, by variant and benchmark.
#[derive(Clone, Debug, Default)]
pub struct Table {
    /// Variants with at least one cell, in [`VARIANTS`] order.
    pub variants: Vec<String>,
    /// Benchmarks with at least one cell: the suite's in suite order, then any others sorted.
    pub benches: Vec<String>,
    /// The estimates, by `(variant, bench)`.
    pub cells: BTreeMap<(String, String), Estimate>,
}

impl Table {
    /// Lays out the estimates of known variants; those of other variants (benchmarks that are
    /// not part of this suite) are left out. A later estimate of the same cell replaces an
    /// earlier one.
    pub fn new(estimates: Vec<Estimate>) -> Table {
        let mut cells = BTreeMap::new();
        for estimate in estimates {
            if VARIANTS.contains(&estimate.variant.as_str()) {
                cells.insert((estimate.variant.clone(), estimate.bench.clone()), estimate);
            }
        }
        let variants = VARIANTS
            .iter()
            .filter(|variant| cells.keys().any(|(v, _)| v == *variant))
            .map(|variant| variant.to_string())
            .collect();
        let suite: Vec<String> = benches().iter().map(|bench| bench.name()).collect();
        let mut others: Vec<String> = cells
            .keys()
            .map(|(_, bench)| bench.clone())
            .filter(|bench| !suite.contains(bench))
            .collect();
        others.sort();
        others.dedup();
        let benches = suite
            .into_iter()
            .filter(|bench| cells.keys().any(|(_, b)| b == bench))
            .chain(others)
            .collect();
        Table {
            variants,
            benches,
            cells,
        }
    }

    /// The median ns of one cell.
    pub fn median(&self, variant: &str, bench: &str) -> Option<f64> {
        self.cells
            .get(&(variant.to_string(), bench.to_string()))
            .map(|estimate| estimate.median_ns)
    }

    /// One cell's median divided by another variant's for the same benchmark.
    pub fn ratio(&self, variant: &str, to: &str, bench: &str) -> Option<f64> {
        Some(self.median(variant, bench)? / self.median(to, bench)?)
    }
}

/// A cell: the median, with the ratio in parentheses when there is one.
fn cell(ns: Option<f64>, ratio: Option<f64>) -> String {
    let ns = match ns {
        None => return "–".to_string(),
        Some(ns) if ns < 100.0 => format!("{ns:.1}"),
        Some(ns) => format!("{ns:.0}"),
    };
    match ratio {
        Some(ratio) => format!("{ns} ({ratio:.2}×)"),
        None => ns,
    }
}

/// The report: machine, settings, the table of medians with ratios to [`BASELINE`], the
/// profilers' overhead, and a noise line. `settings` says how Criterion ran (one line).
pub fn markdown(table: &Table, machine: &Machine, settings: &str) -> String {
    let mut out = String::new();
    let _ = writeln!(out, "## Criterion micro-benchmarks (Rust GlobalAlloc path)\n");
    out.push_str(&machine.markdown_lines());
    let _ = writeln!(out, "- settings: {settings}");
    let _ = writeln!(out, "\nVariants:");
    for variant in &table.variants {
        let _ = writeln!(out, "- `{variant}`: {}", describe(variant));
    }

    let _ = writeln!(
        out,
        "\nCriterion's median time of one iteration, in ns. In parentheses: the ratio to \
         `{BASELINE}`, below 1 is faster.\n"
    );
    let _ = write!(out, "| benchmark |");
    for variant in &table.variants {
        let _ = write!(out, " {variant} |");
    }
    let _ = write!(out, "\n|---|");
    for _ in &table.variants {
        let _ = write!(out, "---:|");
    }
    out.push('\n');
    for bench in &table.benches {
        let _ = write!(out, "| {bench} |");
        for variant in &table.variants {
            let ratio = (variant != BASELINE)
                .then(|| table.ratio(variant, BASELINE, bench))
                .flatten();
            let _ = write!(out, " {} |", cell(table.median(variant, bench), ratio));
        }
        out.push('\n');
    }
    if table.variants.iter().any(|variant| variant == BASELINE) && table.variants.len() > 1 {
        let _ = write!(out, "| geometric mean of ratios |");
        for variant in &table.variants {
            let ratios: Vec<f64> = table
                .benches
                .iter()
                .filter_map(|bench| table.ratio(variant, BASELINE, bench))
                .collect();
            let mean = geometric_mean(&ratios).map_or_else(|| "–".to_string(), |g| format!("{g:.2}×"));
            let _ = write!(out, " {mean} |");
        }
        out.push('\n');
    }

    let pairs: Vec<(&str, &str)> = PROFILED
        .into_iter()
        .filter(|(off, on)| table.variants.iter().any(|v| v == off) && table.variants.iter().any(|v| v == on))
        .collect();
    if !pairs.is_empty() {
        let _ = writeln!(
            out,
            "\nProfiler overhead: the profiler-on median over the profiler-off median of the same \
             allocator.\n"
        );
        let _ = write!(out, "| benchmark |");
        for (off, on) in &pairs {
            let _ = write!(out, " {on} / {off} |");
        }
        let _ = write!(out, "\n|---|");
        for _ in &pairs {
            let _ = write!(out, "---:|");
        }
        out.push('\n');
        for bench in &table.benches {
            let _ = write!(out, "| {bench} |");
            for (off, on) in &pairs {
                let ratio = table.ratio(on, off, bench);
                let text = ratio.map_or_else(|| "–".to_string(), |r| format!("{r:.2}×"));
                let _ = write!(out, " {text} |");
            }
            out.push('\n');
        }
        let _ = write!(out, "| geometric mean |");
        for (off, on) in &pairs {
            let ratios: Vec<f64> = table
                .benches
                .iter()
                .filter_map(|bench| table.ratio(on, off, bench))
                .collect();
            let mean = geometric_mean(&ratios).map_or_else(|| "–".to_string(), |g| format!("{g:.2}×"));
            let _ = write!(out, " {mean} |");
        }
        out.push('\n');
    }

    // Half the confidence interval's width, relative to the median.
    let mut widths: Vec<(f64, &Estimate)> = table
        .cells
        .values()
        .filter(|estimate| table.variants.contains(&estimate.variant))
        .map(|estimate| {
            let (low, high) = estimate.interval_ns;
            ((high - low) / 2.0 / estimate.median_ns, estimate)
        })
        .collect();
    widths.sort_by(|a, b| a.0.total_cmp(&b.0));
    if let Some(&(worst, estimate)) = widths.last() {
        let typical = median(&widths.iter().map(|w| w.0).collect::<Vec<_>>()).unwrap_or(0.0);
        let _ = writeln!(
            out,
            "\nNoise, as half the width of Criterion's confidence interval of a median, relative \
             to it: ±{:.1}% for the median cell, ±{:.1}% at worst ({}, {}).",
            typical * 100.0,
            worst * 100.0,
            estimate.variant,
            estimate.bench
        );
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn benchmark_json(full_id: &str) -> String {
        format!(
            r#"{{"group_id":"x","function_id":"y","value_str":"1","throughput":null,
                "full_id":"{full_id}","directory_name":"x/y/1","title":"{full_id}"}}"#
        )
    }

    fn estimates_json(median: f64) -> String {
        format!(
            r#"{{"mean":{{"confidence_interval":{{"confidence_level":0.95,"lower_bound":1.0,"upper_bound":2.0}},
                 "point_estimate":1.5,"standard_error":0.1}},
                "median":{{"confidence_interval":{{"confidence_level":0.95,"lower_bound":{},"upper_bound":{}}},
                 "point_estimate":{median},"standard_error":0.1}}}}"#,
            median * 0.9,
            median * 1.1
        )
    }

    fn estimate(variant: &str, bench: &str, median: f64) -> Estimate {
        parse_estimate(
            &benchmark_json(&format!("{variant}/{bench}")),
            &estimates_json(median),
        )
        .unwrap()
    }

    #[test]
    fn parses_criterion_files_and_rejects_garbage() {
        let parsed = estimate("tally+prof", "alloc_free/16", 3.25);
        assert_eq!(parsed.variant, "tally+prof");
        assert_eq!(parsed.bench, "alloc_free/16");
        assert_eq!(parsed.median_ns, 3.25);
        assert!(parse_estimate(&benchmark_json("noslash"), &estimates_json(1.0)).is_err());
        assert!(parse_estimate(&benchmark_json("a/b"), &estimates_json(f64::NAN)).is_err());
        assert!(parse_estimate("{", &estimates_json(1.0)).is_err());
        assert!(parse_estimate(&benchmark_json("a/b"), r#"{"median":{}}"#).is_err());
    }

    #[test]
    fn table_orders_rows_and_columns_and_drops_strangers() {
        let table = Table::new(vec![
            estimate("tally", "btree_map/1000", 20.0),
            estimate("system", "alloc_free/16", 10.0),
            estimate("tally", "alloc_free/16", 5.0),
            estimate("other", "alloc_free/16", 1.0),
            estimate("system", "zzz/1", 1.0),
        ]);
        assert_eq!(table.variants, ["system", "tally"]);
        assert_eq!(table.benches, ["alloc_free/16", "btree_map/1000", "zzz/1"]);
        assert_eq!(table.ratio("tally", "system", "alloc_free/16"), Some(0.5));
        assert_eq!(table.ratio("tally", "system", "btree_map/1000"), None);
    }

    #[test]
    fn report_has_medians_ratios_overhead_and_gaps() {
        let table = Table::new(vec![
            estimate("system", "alloc_free/16", 10.0),
            estimate("tally", "alloc_free/16", 5.0),
            estimate("tally+prof", "alloc_free/16", 6.0),
            estimate("system", "batch64/16", 400.0),
            estimate("tally", "batch64/16", 200.0),
        ]);
        let report = markdown(&table, &Machine::default(), "quick");
        assert!(
            report.contains("| alloc_free/16 | 10.0 | 5.0 (0.50×) | 6.0 (0.60×) |"),
            "{report}"
        );
        assert!(
            report.contains("| batch64/16 | 400 | 200 (0.50×) | – |"),
            "{report}"
        );
        assert!(
            report.contains("| geometric mean of ratios | 1.00× | 0.50× | 0.60× |"),
            "{report}"
        );
        assert!(report.contains("| tally+prof / tally |"), "{report}");
        assert!(report.contains("| alloc_free/16 | 1.20× |"), "{report}");
        assert!(report.contains("±10.0% for the median cell"), "{report}");
    }
}
