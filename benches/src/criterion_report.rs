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
//!
//! The heavy benchmarks' peak RSS is not Criterion's: the driver appends it to
//! [`PEAK_RSS_FILE`](crate::criterion_suite::PEAK_RSS_FILE) in the same directory
//! ([`parse_peak_rss`]).

use std::collections::BTreeMap;
use std::fmt::Write as _;

use serde_json::Value;

use crate::criterion_suite::{benches, describe, BASELINE, PROFILED, VARIANTS};
use crate::harness::{comparison_table, median, ratio_cell, Machine, MarkdownTable, Samples};

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

/// One heavy benchmark's peak RSS under one variant: a line of
/// [`PEAK_RSS_FILE`](crate::criterion_suite::PEAK_RSS_FILE).
#[derive(Clone, Debug, PartialEq)]
pub struct PeakRss {
    /// The variant, e.g. `tally+prof`.
    pub variant: String,
    /// The benchmark without the variant, e.g. `vec_extend/67108864`.
    pub bench: String,
    /// The process's peak RSS while the benchmark ran, in KiB.
    pub kib: u64,
}

/// The lines of a [`PEAK_RSS_FILE`](crate::criterion_suite::PEAK_RSS_FILE) written at or after
/// `since` (Unix seconds), in file order; lines that are not
/// `<seconds>\t<variant>/<bench>\t<KiB>` are skipped.
pub fn parse_peak_rss(text: &str, since: u64) -> Vec<PeakRss> {
    text.lines()
        .filter_map(|line| {
            let mut fields = line.split('\t');
            let (seconds, full_id, kib) = (fields.next()?, fields.next()?, fields.next()?);
            let (variant, bench) = full_id.split_once('/')?;
            (seconds.parse::<u64>().ok()? >= since).then_some(PeakRss {
                variant: variant.to_string(),
                bench: bench.to_string(),
                kib: kib.parse().ok()?,
            })
        })
        .collect()
}

/// The estimates of a run, laid out as the table shows them.
#[derive(Clone, Debug, Default)]
pub struct Table {
    /// Each cell's median as its one sample: columns are the variants with at least one cell,
    /// in [`VARIANTS`] order; rows the benchmarks with at least one cell, the suite's in suite
    /// order, then any others sorted; ratios against [`BASELINE`].
    pub samples: Samples,
    /// The estimates, by `(variant, bench)`.
    pub estimates: BTreeMap<(String, String), Estimate>,
    /// The heavy benchmarks' peak RSS in KiB, laid out like `samples` (the benchmarks and
    /// variants that have one).
    pub peak_rss_kib: Samples,
}

impl Table {
    /// Lays out the estimates and peak RSS of known variants; those of other variants
    /// (benchmarks that are not part of this suite) are left out. A later estimate or peak of
    /// the same cell replaces an earlier one.
    pub fn new(estimates: Vec<Estimate>, peaks: Vec<PeakRss>) -> Table {
        let mut cells = BTreeMap::new();
        for estimate in estimates {
            if VARIANTS.contains(&estimate.variant.as_str()) {
                cells.insert((estimate.variant.clone(), estimate.bench.clone()), estimate);
            }
        }
        let variants = VARIANTS
            .iter()
            .filter(|variant| cells.keys().any(|(v, _)| v == *variant));
        let mut samples = Samples::new(variants.copied(), BASELINE);
        let suite: Vec<String> = benches().iter().map(|bench| bench.name()).collect();
        let mut others: Vec<String> = cells
            .keys()
            .map(|(_, bench)| bench.clone())
            .filter(|bench| !suite.contains(bench))
            .collect();
        others.sort();
        for bench in suite.iter().chain(&others) {
            if cells.keys().any(|(_, b)| b == bench) {
                samples.add_row(bench);
            }
        }
        for ((variant, bench), estimate) in &cells {
            samples.add(variant, bench, 0, estimate.median_ns);
        }
        let peaks: BTreeMap<(&str, &str), u64> = peaks
            .iter()
            .filter(|peak| VARIANTS.contains(&peak.variant.as_str()))
            .map(|peak| ((peak.variant.as_str(), peak.bench.as_str()), peak.kib))
            .collect();
        let variants = VARIANTS
            .iter()
            .filter(|variant| peaks.keys().any(|(v, _)| v == *variant));
        let mut peak_rss_kib = Samples::new(variants.copied(), BASELINE);
        for bench in suite.iter().chain(&others) {
            for variant in VARIANTS {
                if let Some(&kib) = peaks.get(&(variant, bench.as_str())) {
                    peak_rss_kib.add(variant, bench, 0, kib as f64);
                }
            }
        }
        Table {
            samples,
            estimates: cells,
            peak_rss_kib,
        }
    }
}

/// A median as the table shows it: one decimal below 100 ns, none above.
fn nanoseconds(ns: f64) -> String {
    if ns < 100.0 {
        format!("{ns:.1}")
    } else {
        format!("{ns:.0}")
    }
}

/// The report: machine, settings, the table of medians with ratios to [`BASELINE`], the
/// profilers' overhead, and a noise line. `settings` says how Criterion ran (one line).
pub fn markdown(table: &Table, machine: &Machine, settings: &str) -> String {
    let samples = &table.samples;
    let mut out = String::new();
    let _ = writeln!(out, "## Criterion micro-benchmarks (Rust GlobalAlloc path)\n");
    out.push_str(&machine.markdown_lines());
    let _ = writeln!(out, "- settings: {settings}");
    let _ = writeln!(out, "\nVariants:");
    for variant in samples.columns() {
        let _ = writeln!(out, "- `{variant}`: {}", describe(variant));
    }

    let _ = writeln!(
        out,
        "\nCriterion's median time of one iteration, in ns. In parentheses: the ratio to \
         `{BASELINE}`, below 1 is faster.\n"
    );
    out.push_str(&comparison_table(samples, "benchmark", nanoseconds).render());

    if !table.peak_rss_kib.rows().is_empty() {
        let _ = writeln!(
            out,
            "\nPeak RSS while each heavy benchmark ran (its warm-up and samples), in MiB: each \
             ran in a process of its own, so this is the benchmark's peak plus the few MiB of \
             the benchmark program (`VmHWM`, reset just before it started). In parentheses: the \
             ratio to `{BASELINE}`.\n"
        );
        out.push_str(
            &comparison_table(&table.peak_rss_kib, "benchmark", |kib| {
                format!("{:.1}", kib / 1024.0)
            })
            .render(),
        );
    }

    let has = |variant: &str| samples.has_column(variant);
    let pairs: Vec<(&str, &str)> = PROFILED
        .into_iter()
        .filter(|(off, on)| has(off) && has(on))
        .collect();
    if !pairs.is_empty() {
        let _ = writeln!(
            out,
            "\nProfiler overhead: the profiler-on median over the profiler-off median of the same \
             allocator.\n"
        );
        let header = pairs.iter().map(|(off, on)| format!("{on} / {off}"));
        let mut overhead = MarkdownTable::new(std::iter::once("benchmark".to_string()).chain(header));
        for bench in samples.rows() {
            let ratios = pairs
                .iter()
                .map(|(off, on)| ratio_cell(samples.ratio_to(on, off, bench)));
            overhead.row(std::iter::once(bench.clone()).chain(ratios));
        }
        let means = pairs
            .iter()
            .map(|(off, on)| ratio_cell(samples.geometric_mean_ratio_to(on, off)));
        overhead.row(std::iter::once("geometric mean".to_string()).chain(means));
        out.push_str(&overhead.render());
    }

    // Half the confidence interval's width, relative to the median.
    let mut widths: Vec<(f64, &Estimate)> = table
        .estimates
        .values()
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
        let table = Table::new(
            vec![
                estimate("tally", "btree_map/1000", 20.0),
                estimate("system", "alloc_free/16", 10.0),
                estimate("tally", "alloc_free/16", 5.0),
                estimate("other", "alloc_free/16", 1.0),
                estimate("system", "zzz/1", 1.0),
            ],
            Vec::new(),
        );
        assert_eq!(table.samples.columns(), ["system", "tally"]);
        assert_eq!(table.samples.rows(), ["alloc_free/16", "btree_map/1000", "zzz/1"]);
        assert_eq!(table.samples.ratio("tally", "alloc_free/16"), Some(0.5));
        assert_eq!(table.samples.ratio("tally", "btree_map/1000"), None);
    }

    #[test]
    fn report_has_medians_ratios_overhead_and_gaps() {
        let table = Table::new(
            vec![
                estimate("system", "alloc_free/16", 10.0),
                estimate("tally", "alloc_free/16", 5.0),
                estimate("tally+prof", "alloc_free/16", 6.0),
                estimate("system", "batch64/16", 400.0),
                estimate("tally", "batch64/16", 200.0),
            ],
            Vec::new(),
        );
        let report = markdown(&table, &Machine::default(), "quick");
        assert!(
            report.contains("| alloc_free/16 | 10.0 (1.00×) | 5.0 (0.50×) | 6.0 (0.60×) |"),
            "{report}"
        );
        assert!(
            report.contains("| batch64/16 | 400 (1.00×) | 200 (0.50×) | – |"),
            "{report}"
        );
        assert!(
            report.contains("| geometric mean | 1.00× | 0.50× | 0.60× |"),
            "{report}"
        );
        assert!(report.contains("| tally+prof / tally |"), "{report}");
        assert!(report.contains("| alloc_free/16 | 1.20× |"), "{report}");
        assert!(report.contains("| batch64/16 | – |"), "{report}");
        assert!(report.contains("| geometric mean | 1.20× |"), "{report}");
        assert!(report.contains("±10.0% for the median cell"), "{report}");
        assert!(!report.contains("Peak RSS"), "{report}");
    }

    #[test]
    fn peak_rss_lines_become_a_table_of_their_own() {
        let text = "100\tsystem/vec_extend/67108864\t65536\n\
                    99\tsystem/btree_strings/1000000\t1\n\
                    100\ttally/vec_extend/67108864\t1\n\
                    101\ttally/vec_extend/67108864\t131072\n\
                    101\tother/vec_extend/67108864\t5\n\
                    garbage\n101\tnoslash\t5\n";
        let peaks = parse_peak_rss(text, 100);
        assert_eq!(peaks.len(), 4, "{peaks:?}");
        let table = Table::new(
            vec![
                estimate("system", "vec_extend/67108864", 1e7),
                estimate("tally", "vec_extend/67108864", 2e7),
            ],
            peaks,
        );
        assert_eq!(table.peak_rss_kib.columns(), ["system", "tally"]);
        assert_eq!(table.peak_rss_kib.rows(), ["vec_extend/67108864"]);
        let report = markdown(&table, &Machine::default(), "quick");
        let (_, rss) = report.split_once("Peak RSS").expect("a peak RSS table");
        assert!(
            rss.contains("| vec_extend/67108864 | 64.0 (1.00×) | 128.0 (2.00×) |"),
            "{report}"
        );
    }
}
