//! What Tally's profiler costs the Criterion workloads of the `GlobalAlloc` path
//! ([`crate::criterion_suite`]), measured with one program: `criterion_once`, Tally as its
//! global allocator, run with `TALLY_CONF=prof:false` and with `prof:true` (the default rate) in
//! interleaved rounds ([`crate::rust_once`]; binary `prof_rust`, `benches/run-prof-rust.sh`; see
//! `docs/benchmarks.md`).
//!
//! # Why not Criterion's two columns
//!
//! Criterion's `tally` and `tally+prof` columns are one program (`criterion_tally`) run twice,
//! minutes apart, and the VM's speed drifts between the two runs. (Until the thirty-seventh pass
//! of issue 13 they were two programs, whose code lay at different addresses, which alone moved
//! `btree_map/1000` by 1.45× on the Intel VM.) Here each round runs both settings, one right
//! after the other (the order rotated each round), and the time is taken inside the process.

use std::fmt::Write as _;
use std::path::Path;

use crate::criterion_suite::STACK_PHASES;
use crate::harness::{noise_sentence, Machine, MarkdownTable, MISSING};
use crate::rust_once::{self, count_sentence, failures_section, Measured, Settings, Variant};

/// The two columns: Tally's `criterion_once` with the profiler off (the baseline of the ratios)
/// and on.
pub const VARIANTS: [Variant; 2] = [
    Variant {
        column: "tally",
        program: "criterion_once",
        tally_conf: "prof:false",
    },
    Variant {
        column: "tally+prof",
        program: "criterion_once",
        tally_conf: "prof:true",
    },
];

/// The target: the profiler at the default rate costs at most 3% (issue 13).
pub const TARGET: f64 = 1.03;

/// Calibrates then measures every selected workload with the profiler off and on in the
/// `criterion_once` at `exe`, printing progress on stderr.
pub fn measure(exe: &Path, settings: &Settings) -> Measured {
    let programs = VARIANTS.map(|variant| (variant, exe.to_path_buf()));
    rust_once::measure(&programs, VARIANTS[0].column, settings)
}

/// The report: per workload the two medians, their ratio and whether it is within
/// [`TARGET`]; then the count, the geometric mean, the noise and any failures.
pub fn report(measured: &Measured, machine: &Machine, settings: &Settings) -> String {
    let samples = &measured.samples;
    let (off, on) = (VARIANTS[0].column, VARIANTS[1].column);
    let mut out = String::from(
        "## Tally's profiler on the Rust micro workloads (one program, profiler off and on)\n\n",
    );
    out.push_str(&machine.markdown_lines());
    out.push_str(&rust_once::build_line(settings));
    let _ = writeln!(
        out,
        "- settings: {} interleaved rounds; each run about {} ms of iterations after a quarter as \
         many unmeasured, both columns of round r at stack phase r mod {}; `criterion_once` with \
         `TALLY_CONF=prof:false` (`{off}`) and `prof:true` (`{on}`, a sample every 512 KiB on \
         average)\n",
        settings.rounds, settings.run_ms, STACK_PHASES
    );
    out.push_str("Median ns an iteration; the ratio is the median with the profiler on over the median with it off.\n\n");
    let mut table = MarkdownTable::new(["workload", "iterations a run", off, on, "ratio", "within 3%"]);
    let (mut rows, mut over) = (0, Vec::new());
    for row in samples.rows() {
        let iterations = measured
            .iterations
            .iter()
            .find(|(name, _)| name == row)
            .map_or_else(|| MISSING.to_string(), |(_, n)| n.to_string());
        let cell = |column: &str| {
            samples
                .median(column, row)
                .map_or_else(|| MISSING.to_string(), |ns| format!("{ns:.3}"))
        };
        let ratio = samples.ratio(on, row);
        let verdict = match ratio {
            Some(ratio) => {
                rows += 1;
                if ratio <= TARGET {
                    "yes".to_string()
                } else {
                    over.push(format!("`{row}` {ratio:.3}×"));
                    "**no**".to_string()
                }
            }
            None => MISSING.to_string(),
        };
        let ratio = ratio.map_or_else(|| MISSING.to_string(), |ratio| format!("{ratio:.3}×"));
        table.row([row.clone(), iterations, cell(off), cell(on), ratio, verdict]);
    }
    out.push_str(&table.render());
    out.push_str(&count_sentence("Within 3%", rows, &over));
    if let Some(mean) = samples.geometric_mean_ratio(on) {
        let _ = writeln!(out, "- Geometric mean of the ratios: {mean:.3}×.");
    }
    if let Some(noise) = noise_sentence(samples) {
        let _ = writeln!(out, "- {noise}");
    }
    out.push_str(&failures_section(&measured.failures));
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::harness::Samples;

    /// Samples of two workloads, one within the target and one over it.
    fn measured() -> Measured {
        let mut samples = Samples::new(VARIANTS.map(|v| v.column), VARIANTS[0].column);
        for (round, (off, on)) in [(4.0, 4.04), (4.1, 4.08), (3.9, 4.0)].into_iter().enumerate() {
            samples.add("tally", "alloc_free/16", round, off);
            samples.add("tally+prof", "alloc_free/16", round, on);
        }
        for (round, (off, on)) in [(4.0, 5.0), (4.2, 5.4)].into_iter().enumerate() {
            samples.add("tally", "alloc_free/4096", round, off);
            samples.add("tally+prof", "alloc_free/4096", round, on);
        }
        samples.add_row("vec_push/1000");
        Measured {
            samples,
            peak_rss_kib: Samples::default(),
            iterations: vec![
                ("alloc_free/16".into(), 75_000_000),
                ("alloc_free/4096".into(), 70_000_000),
            ],
            failures: vec!["calibration: vec_push/1000 (prof:false): exit status: 1: boom".into()],
        }
    }

    #[test]
    fn the_report_counts_the_rows_within_three_percent() {
        let md = report(&measured(), &Machine::default(), &Settings::default());
        let line = |prefix: &str| {
            md.lines()
                .find(|line| line.starts_with(prefix))
                .unwrap_or_else(|| panic!("no line {prefix:?} in\n{md}"))
        };
        assert_eq!(
            line("| alloc_free/16 |"),
            "| alloc_free/16 | 75000000 | 4.000 | 4.040 | 1.010× | yes |"
        );
        assert_eq!(
            line("| alloc_free/4096 |"),
            "| alloc_free/4096 | 70000000 | 4.100 | 5.200 | 1.268× | **no** |"
        );
        // A workload without samples is shown, and not counted.
        assert_eq!(line("| vec_push/1000 |"), "| vec_push/1000 | – | – | – | – | – |");
        assert_eq!(
            line("- Within 3%"),
            "- Within 3% on 1 of 2 (over: `alloc_free/4096` 1.268×)."
        );
        assert_eq!(
            line("- Geometric mean"),
            "- Geometric mean of the ratios: 1.132×."
        );
        assert!(
            md.contains("### Failures\n\n- calibration: vec_push/1000"),
            "{md}"
        );
    }
}
