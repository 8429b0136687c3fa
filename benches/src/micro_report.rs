//! The malloc/free pair micro-benchmark's own part of its report: which columns there are, how to
//! read an allocator binary's output, and the report's prose. Running the binaries is the runner
//! binary's business (`src/bin/micro_runner.rs`); rounds, medians, ratios, the table and the
//! machine description are [`crate::harness`]'s.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use crate::criterion_suite::STACK_PHASES;
use crate::harness::{comparison_table, noise_sentence, Machine, Samples};

/// One column of the report: an allocator binary, maybe with Tally's profiler switched on.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Column {
    /// The column's name, as `--allocators` and the report give it.
    pub name: &'static str,
    /// The allocator, whose binary is `micro_<allocator>`.
    pub allocator: &'static str,
    /// `TALLY_CONF` for the run; `None` leaves the environment's.
    pub tally_conf: Option<&'static str>,
    /// What it is, for the report's legend.
    pub description: &'static str,
}

/// Every column, in run and report order.
pub const COLUMNS: [Column; 7] = [
    Column {
        name: "system",
        allocator: "system",
        tally_conf: None,
        description: "`std::alloc::System` (glibc malloc)",
    },
    Column {
        name: "tally",
        allocator: "tally",
        tally_conf: None,
        description: "`tally::Tally` (this workspace, `default-features = false`)",
    },
    Column {
        name: "tally+prof",
        allocator: "tally",
        tally_conf: Some("prof:true"),
        description: "`tally::Tally` with `TALLY_CONF=prof:true` (default `lg_prof_sample:19`)",
    },
    Column {
        name: "tally+prof17",
        allocator: "tally",
        tally_conf: Some("prof:true,lg_prof_sample:17"),
        description: "`tally::Tally` with `TALLY_CONF=prof:true,lg_prof_sample:17`",
    },
    Column {
        name: "mimalloc",
        allocator: "mimalloc",
        tally_conf: None,
        description: "`mimalloc::MiMalloc` (crate `mimalloc`)",
    },
    Column {
        name: "jemalloc",
        allocator: "jemalloc",
        tally_conf: None,
        description: "`tikv_jemallocator::Jemalloc` (crate `tikv-jemallocator`)",
    },
    Column {
        name: "stoolap",
        allocator: "stoolap",
        tally_conf: None,
        description: "`stoolap_jemalloc::Jemalloc` (crate `stoolap-jemalloc`, pure Rust)",
    },
];

/// The allocators, one binary each (`micro_<name>`); without `--allocators` the runner runs the
/// column of each, profilers off.
pub const ALLOCATORS: [&str; 5] = ["system", "tally", "mimalloc", "jemalloc", "stoolap"];

/// The column the ratios are taken against unless `--baseline` names another.
pub const BASELINE: &str = "system";

/// The column called `name`.
pub fn column(name: &str) -> Option<&'static Column> {
    COLUMNS.iter().find(|column| column.name == name)
}

/// The crates.io crates that make up an allocator, whose versions the report gives.
pub fn crates_of(allocator: &str) -> &'static [&'static str] {
    match allocator {
        "mimalloc" => &["mimalloc", "libmimalloc-sys"],
        "jemalloc" => &["tikv-jemallocator", "tikv-jemalloc-sys"],
        "stoolap" => &["stoolap-jemalloc"],
        _ => &[],
    }
}

/// Parses an allocator binary's output into `(workload, ns per pair)` in output order, skipping
/// `#` comment lines and blank lines.
///
/// # Errors
///
/// A line that is not `<workload>\t<ns per pair>\t<pairs>` with a finite positive time.
pub fn parse_output(text: &str) -> Result<Vec<(String, f64)>, String> {
    let mut results = Vec::new();
    for line in text.lines() {
        let line = line.trim_end();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let mut fields = line.split('\t');
        let (Some(name), Some(ns), Some(_pairs), None) =
            (fields.next(), fields.next(), fields.next(), fields.next())
        else {
            return Err(format!("not `workload<TAB>ns<TAB>pairs`: {line:?}"));
        };
        match ns.parse::<f64>() {
            Ok(ns) if ns.is_finite() && ns > 0.0 => results.push((name.to_string(), ns)),
            _ => return Err(format!("bad time in {line:?}")),
        }
    }
    Ok(results)
}

/// Every measurement of a run of the runner, and what went wrong.
#[derive(Clone, Debug, Default)]
pub struct Results {
    /// ns per pair, by column (those that were run, in report order) and workload (in the order
    /// the binaries print them).
    pub samples: Samples,
    /// Why some runs failed, by column, one entry per failed run.
    pub failures: BTreeMap<String, Vec<String>>,
    /// Columns not run, with the reason (e.g. binary not built).
    pub skipped: Vec<(String, String)>,
}

impl Results {
    /// No results yet; `columns` in report order, ratios against `baseline`.
    pub fn new(columns: &[String], baseline: &str) -> Results {
        Results {
            samples: Samples::new(columns.iter().cloned(), baseline),
            ..Results::default()
        }
    }

    /// Records the measurements of one run of `column`'s binary in `round` (from 0).
    pub fn add_run(&mut self, column: &str, round: usize, run: &[(String, f64)]) {
        for (workload, ns) in run {
            self.samples.add(column, workload, round, *ns);
        }
    }

    /// Records that one run of `column`'s binary failed.
    pub fn add_failure(&mut self, column: &str, reason: String) {
        self.failures.entry(column.to_string()).or_default().push(reason);
    }
}

/// How the runner ran, for the report.
#[derive(Clone, Debug)]
pub struct Settings {
    /// Interleaved rounds.
    pub rounds: usize,
    /// Measured time per workload, in ms.
    pub measure_ms: u128,
    /// Warm-up per workload, in ms.
    pub warmup_ms: u128,
    /// Workload filter (`TALLY_BENCH_FILTER`), empty for all.
    pub filter: Vec<String>,
}

/// The report: machine, settings, the table of medians with ratios to the baseline, and notes on
/// noise and failures.
pub fn markdown(results: &Results, machine: &Machine, settings: &Settings) -> String {
    let samples = &results.samples;
    let mut out = String::new();
    let _ = writeln!(out, "## Micro-benchmark: malloc/free pairs\n");
    out.push_str(&machine.markdown_lines());
    let _ = writeln!(
        out,
        "- settings: {} interleaved round(s), the order rotated each round, every column of round \
         r at stack phase r mod {STACK_PHASES}, {} ms measured after {} ms warm-up per workload{}",
        settings.rounds,
        settings.measure_ms,
        settings.warmup_ms,
        if settings.filter.is_empty() {
            String::new()
        } else {
            format!(", filter {:?}", settings.filter.join(","))
        }
    );
    let _ = writeln!(out, "\nAllocators:");
    for name in samples.columns() {
        let description = column(name).map_or("unknown", |column| column.description);
        let _ = writeln!(out, "- `{name}`: {description}");
    }
    for (name, reason) in &results.skipped {
        let _ = writeln!(out, "- `{name}`: not run ({reason})");
    }

    let _ = writeln!(
        out,
        "\nMedian ns per malloc+free pair over the rounds (wall clock; with several threads, of the \
         whole process). In parentheses: the ratio to `{}`, below 1 is faster.\n",
        samples.baseline()
    );
    out.push_str(&comparison_table(samples, "workload", |ns| format!("{ns:.1}")).render());
    if let Some(noise) = noise_sentence(samples) {
        let _ = writeln!(out, "\n{noise}");
    }
    for (name, reasons) in &results.failures {
        let _ = writeln!(
            out,
            "\n`{name}` failed {} run(s); its cells use the rounds that finished. First failure: {}",
            reasons.len(),
            reasons[0]
        );
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_output_and_rejects_garbage() {
        let text = "# micro allocator=system measure_ms=5 warmup_ms=1\n\
                    pair/1t/16\t12.50\t1000\n\nxthread/2t/256K\t900.00\t10\n";
        let parsed = parse_output(text).unwrap();
        assert_eq!(
            parsed,
            vec![
                ("pair/1t/16".to_string(), 12.5),
                ("xthread/2t/256K".to_string(), 900.0)
            ]
        );
        assert!(parse_output("pair/1t/16 12.5 1000").is_err());
        assert!(parse_output("pair/1t/16\tNaN\t1000").is_err());
        assert!(parse_output("pair/1t/16\t1\t2\t3").is_err());
    }

    #[test]
    fn columns_are_named_once_and_run_built_binaries() {
        for (index, column) in COLUMNS.iter().enumerate() {
            assert!(COLUMNS[..index].iter().all(|earlier| earlier.name != column.name));
            assert!(ALLOCATORS.contains(&column.allocator), "{column:?}");
        }
        for allocator in ALLOCATORS {
            let column = column(allocator).expect("a column per allocator");
            assert_eq!((column.allocator, column.tally_conf), (allocator, None));
        }
        assert_eq!(column("tally+prof").unwrap().tally_conf, Some("prof:true"));
    }

    #[test]
    fn report_has_medians_ratios_noise_and_failures() {
        let columns = ["system".to_string(), "tally".to_string()];
        let mut results = Results::new(&columns, BASELINE);
        for (round, times) in [[10.0, 100.0], [12.0, 110.0], [11.0, 90.0]]
            .into_iter()
            .enumerate()
        {
            results.add_run("system", round, &[("a".into(), times[0]), ("b".into(), times[1])]);
        }
        results.add_run("tally", 0, &[("a".into(), 5.5)]);
        results.add_failure("tally", "exit status: 11".into());
        let settings = Settings {
            rounds: 3,
            measure_ms: 5,
            warmup_ms: 1,
            filter: Vec::new(),
        };
        let report = markdown(&results, &Machine::default(), &settings);
        assert!(report.contains("| a | 11.0 (1.00×) | 5.5 (0.50×) |"), "{report}");
        assert!(report.contains("| b | 100.0 (1.00×) | – |"), "{report}");
        assert!(report.contains("| geometric mean | 1.00× | 0.50× |"), "{report}");
        assert!(
            report.contains("19% for the median cell, 20% at worst (system, b)"),
            "{report}"
        );
        assert!(report.contains("`tally` failed 1 run(s)"), "{report}");
        let raw = results.samples.raw_tsv("allocator", "workload", "ns_per_pair", 2);
        assert!(raw.contains("system\tb\t2\t110.00\n"), "{raw}");
    }
}
