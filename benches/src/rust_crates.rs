//! Tally against the allocator crates on the Criterion workloads of the `GlobalAlloc` path
//! ([`crate::criterion_suite`]): each allocator's `criterion_once` program (Tally's with the
//! profiler off, `System`'s, mimalloc's, tikv-jemallocator's and stoolap-jemalloc's), every
//! workload in every program in interleaved rounds ([`crate::rust_once`]; binary
//! `rust_crates`, `benches/run-rust-crates.sh`; see `docs/benchmarks.md`).
//!
//! Issue 13's target for these workloads: Tally's time at or below the fastest crate's
//! (mimalloc, tikv-jemallocator, stoolap-jemalloc; `System` is the baseline of the ratios, not
//! a crate), and on the heavy workloads a peak RSS no higher than the leanest crate's × 1.05.
//! The report gives both verdicts for every workload. Criterion's own table
//! (`benches/run-criterion.sh`) runs one program after another, a variant's every benchmark
//! before the next variant's; its columns are minutes apart.
//!
//! A run's peak RSS is its process's (`VmHWM` from just before its warm-up pass to its end):
//! the workload's peak over both passes plus the few MiB of the program, as in Criterion's table.

use std::fmt::Write as _;

use crate::criterion_suite::{benches, STACK_PHASES};
use crate::harness::{comparison_table, noise_sentence, two_mode_sentence, Machine, MarkdownTable, MISSING};
use crate::rust_once::{self, count_sentence, failures_section, Measured, Settings, Variant};

/// The columns: Tally first (the column calibrated), then `System`, the baseline of the ratios,
/// then the crates.
pub const VARIANTS: [Variant; 5] = [
    Variant {
        column: "tally",
        program: "criterion_once",
        tally_conf: "prof:false",
    },
    Variant {
        column: "system",
        program: "criterion_once_system",
        tally_conf: "",
    },
    Variant {
        column: "mimalloc",
        program: "criterion_once_mimalloc",
        tally_conf: "",
    },
    Variant {
        column: "jemalloc",
        program: "criterion_once_jemalloc",
        tally_conf: "",
    },
    Variant {
        column: "stoolap",
        program: "criterion_once_stoolap",
        tally_conf: "",
    },
];

/// The column the ratios are taken against.
pub const BASELINE: &str = "system";

/// Tally's column.
pub const TALLY: &str = "tally";

/// The columns the target compares Tally with.
pub const CRATES: [&str; 3] = ["mimalloc", "jemalloc", "stoolap"];

/// The heavy workloads' peak RSS may be at most the leanest crate's times this.
pub const RSS_BOUND: f64 = 1.05;

/// A time in ns: 3 decimals below 1000 ns (the micro workloads), none above.
fn ns_cell(ns: f64) -> String {
    if ns < 1000.0 {
        format!("{ns:.3}")
    } else {
        format!("{ns:.0}")
    }
}

/// The report: the medians of every column (ratio to `System`), then per workload the fastest
/// crate, Tally over it and the verdict, with their count; then the heavy workloads' peak RSS
/// against the leanest crate's × [`RSS_BOUND`]; then the noise and any failures.
pub fn report(measured: &Measured, machine: &Machine, settings: &Settings) -> String {
    let samples = &measured.samples;
    let mut out =
        String::from("## Tally against the allocator crates on the Rust micro workloads (interleaved)\n\n");
    out.push_str(&machine.markdown_lines());
    out.push_str(&rust_once::build_line(settings));
    let _ = writeln!(
        out,
        "- settings: {} interleaved rounds; each run about {} ms of iterations (Tally's, the \
         same count in every column) after a quarter as many unmeasured, every column of round r \
         at stack phase r mod {}; one `criterion_once` program per allocator: `tally` \
         (`TALLY_CONF=prof:false`), `system` (glibc), `mimalloc`, `jemalloc` (tikv-jemallocator), \
         `stoolap` (stoolap-jemalloc, profiler never activated)\n",
        settings.rounds, settings.run_ms, STACK_PHASES
    );
    out.push_str("Median ns an iteration (ratio to `system`).\n\n");
    out.push_str(&comparison_table(samples, "workload", ns_cell).render());

    out.push_str("\n### Tally against the fastest crate\n\n");
    let mut table = MarkdownTable::new([
        "workload",
        "fastest crate",
        "its ns",
        "tally ns",
        "tally / fastest",
        "at or below",
    ]);
    let (mut rows, mut over) = (0, Vec::new());
    for row in samples.rows() {
        let fastest = samples.lowest_median(&CRATES, row);
        let tally = samples.median(TALLY, row);
        let (ratio, verdict) = match (fastest, tally) {
            (Some((_, crate_ns)), Some(tally_ns)) if crate_ns > 0.0 => {
                rows += 1;
                let ratio = tally_ns / crate_ns;
                let verdict = if ratio <= 1.0 {
                    "yes".to_string()
                } else {
                    over.push(format!("`{row}` {ratio:.3}×"));
                    "**no**".to_string()
                };
                (format!("{ratio:.3}×"), verdict)
            }
            _ => (MISSING.to_string(), MISSING.to_string()),
        };
        table.row([
            row.clone(),
            fastest.map_or_else(|| MISSING.to_string(), |(name, _)| name.to_string()),
            fastest.map_or_else(|| MISSING.to_string(), |(_, ns)| ns_cell(ns)),
            tally.map_or_else(|| MISSING.to_string(), ns_cell),
            ratio,
            verdict,
        ]);
    }
    out.push_str(&table.render());
    out.push_str(&count_sentence("At or below the fastest crate", rows, &over));
    if let Some(mean) = samples.geometric_mean_ratio(TALLY) {
        let _ = writeln!(out, "- Tally's geometric mean of ratios to `system`: {mean:.3}×.");
    }
    if let Some(noise) = noise_sentence(samples) {
        let _ = writeln!(out, "- {noise}");
    }
    if let Some(modes) = two_mode_sentence(samples) {
        let _ = writeln!(out, "- {modes}");
    }
    out.push_str(&rss_section(measured));
    out.push_str(&failures_section(&measured.failures));
    out
}

/// The heavy workloads' peak RSS: each column's median in MiB, the bound and the verdict.
fn rss_section(measured: &Measured) -> String {
    let rss = &measured.peak_rss_kib;
    let heavy: Vec<String> = benches()
        .iter()
        .filter(|bench| bench.heavy())
        .map(|bench| bench.name())
        .filter(|name| rss.rows().contains(name))
        .collect();
    if heavy.is_empty() {
        return String::new();
    }
    let mut out = format!(
        "\n### Peak RSS of the heavy workloads (median MiB; bound: the leanest crate's × {RSS_BOUND:.2})\n\n"
    );
    let header: Vec<String> = ["workload".to_string()]
        .into_iter()
        .chain(rss.columns().iter().cloned())
        .chain(["bound".to_string(), "within".to_string()])
        .collect();
    let mut table = MarkdownTable::new(header);
    let mib = |kib: f64| format!("{:.1}", kib / 1024.0);
    for row in &heavy {
        let cells = rss
            .columns()
            .iter()
            .map(|column| rss.median(column, row).map_or_else(|| MISSING.to_string(), mib));
        let (bound, within) = match (rss.lowest_median(&CRATES, row), rss.median(TALLY, row)) {
            (Some((leanest, kib)), Some(tally)) => (
                format!("{} ({leanest})", mib(kib * RSS_BOUND)),
                if tally <= kib * RSS_BOUND { "yes" } else { "**no**" }.to_string(),
            ),
            _ => (MISSING.to_string(), MISSING.to_string()),
        };
        table.row(std::iter::once(row.clone()).chain(cells).chain([bound, within]));
    }
    out.push_str(&table.render());
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::harness::Samples;

    fn columns() -> [&'static str; 5] {
        VARIANTS.map(|variant| variant.column)
    }

    /// Three rounds of three workloads: Tally faster than every crate on one, slower than
    /// jemalloc on another, and the heavy one with its peak RSS.
    fn measured() -> Measured {
        let mut samples = Samples::new(columns(), BASELINE);
        let mut rss = Samples::new(columns(), BASELINE);
        let rows: [(&str, [f64; 5]); 3] = [
            ("alloc_free/16", [3.4, 6.6, 4.3, 3.2, 3.9]),
            ("batch64/16", [239.0, 566.0, 253.0, 258.0, 296.0]),
            (
                "btree_strings/1000000",
                [
                    174_851_324.0,
                    289_945_516.0,
                    178_827_468.0,
                    189_240_718.0,
                    183_730_374.0,
                ],
            ),
        ];
        for (row, medians) in rows {
            for (column, median) in columns().into_iter().zip(medians) {
                for (round, scale) in [0.99, 1.0, 1.02].into_iter().enumerate() {
                    samples.add(column, row, round, median * scale);
                }
            }
        }
        for (column, kib) in columns()
            .into_iter()
            .zip([159_846.0, 182_374.0, 167_936.0, 319_795.0, 157_389.0])
        {
            rss.add(column, "btree_strings/1000000", 0, kib);
        }
        Measured {
            samples,
            peak_rss_kib: rss,
            iterations: Vec::new(),
            failures: Vec::new(),
        }
    }

    fn line<'a>(md: &'a str, prefix: &str) -> &'a str {
        md.lines()
            .find(|line| line.starts_with(prefix))
            .unwrap_or_else(|| panic!("no line {prefix:?} in\n{md}"))
    }

    #[test]
    fn tally_is_held_against_the_fastest_crate_not_system() {
        let md = report(&measured(), &Machine::default(), &Settings::default());
        let expected = [
            "| alloc_free/16 | jemalloc | 3.200 | 3.400 | 1.062× | **no** |",
            "| batch64/16 | mimalloc | 253.000 | 239.000 | 0.945× | yes |",
            // Times of a microsecond and more without decimals.
            "| btree_strings/1000000 | mimalloc | 178827468 | 174851324 | 0.978× | yes |",
            "- At or below the fastest crate on 2 of 3 (over: `alloc_free/16` 1.062×).",
            // The medians' table has every column, ratios to `system`.
            "| alloc_free/16 | 3.400 (0.52×) | 6.600 (1.00×) | 4.300 (0.65×) | 3.200 (0.48×) | 3.900 (0.59×) |",
        ];
        for want in expected {
            assert!(md.lines().any(|line| line == want), "no line {want:?} in\n{md}");
        }
    }

    #[test]
    fn the_heavy_workloads_peak_rss_is_bounded_by_the_leanest_crate() {
        let md = report(&measured(), &Machine::default(), &Settings::default());
        // stoolap's 153.7 MiB is the leanest crate's: the bound is 161.4, and 156.1 is within.
        assert_eq!(
            line(&md, "| btree_strings/1000000 | 156.1"),
            "| btree_strings/1000000 | 156.1 | 178.1 | 164.0 | 312.3 | 153.7 | 161.4 (stoolap) | yes |"
        );
        let mut over = measured();
        over.peak_rss_kib
            .add(TALLY, "btree_strings/1000000", 1, 170_000.0);
        over.peak_rss_kib
            .add(TALLY, "btree_strings/1000000", 2, 170_000.0);
        let md = report(&over, &Machine::default(), &Settings::default());
        assert!(md.contains("| 161.4 (stoolap) | **no** |"), "{md}");
    }

    #[test]
    fn no_rss_section_without_a_heavy_workload() {
        let mut light = measured();
        light.peak_rss_kib = Samples::new(columns(), BASELINE);
        light.peak_rss_kib.add(TALLY, "alloc_free/16", 0, 3000.0);
        let md = report(&light, &Machine::default(), &Settings::default());
        assert!(!md.contains("Peak RSS"), "{md}");
    }
}
