//! What Tally's profiler costs the Criterion workloads of the `GlobalAlloc` path
//! ([`crate::criterion_suite`]), measured with one program: `criterion_once`, Tally as its
//! global allocator, run with `TALLY_CONF=prof:false` and with `prof:true` (the default rate) in
//! interleaved rounds (binary `prof_rust`, `benches/run-prof-rust.sh`; see
//! `docs/benchmarks.md`).
//!
//! # Why not Criterion's two columns
//!
//! Criterion's `tally` and `tally+prof` columns are one program (`criterion_tally`) run twice,
//! minutes apart, and the VM's speed drifts between the two runs. (Until the thirty-seventh pass
//! of issue 13 they were two programs, whose code lay at different addresses, which alone moved
//! `btree_map/1000` by 1.45× on the Intel VM.) Here each round runs both settings, one right
//! after the other (the order rotated each round), and the time is taken inside the process.
//!
//! # One run
//!
//! `criterion_once W WARM W N` runs workload `W` for `WARM` iterations (caches fill, pages fault
//! in), then `N` more, and prints on stderr the time of each pass an iteration; the second is
//! the sample. `N` comes from a calibration with the profiler off, so that the measured pass
//! takes about the run time asked for (`--run-ms`); `WARM` is a quarter of it, at least one.
//! The time is taken inside the process: start-up, the profiler's initialization and exit are
//! not in it.

use std::fmt::Write as _;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

use crate::criterion_suite::benches;
use crate::harness::{noise_sentence, run_with_timeout, schedule, Machine, MarkdownTable, Samples, MISSING};

/// The two columns: name and `TALLY_CONF`. The first is the baseline of the ratios.
pub const COLUMNS: [(&str, &str); 2] = [("tally", "prof:false"), ("tally+prof", "prof:true")];

/// The target: the profiler at the default rate costs at most 3% (issue 13).
pub const TARGET: f64 = 1.03;

/// A calibration run is long enough to scale from once it takes this long.
const CALIBRATION_NS: f64 = 20e6;
/// Each calibration run has this many times the iterations of the one before.
const CALIBRATION_STEP: u64 = 16;

/// How the runs are made.
#[derive(Clone, Debug)]
pub struct Settings {
    /// Interleaved rounds.
    pub rounds: usize,
    /// About how long the measured pass of one run takes, in milliseconds.
    pub run_ms: u64,
    /// Only workloads whose name contains one of these (all if empty).
    pub filter: Vec<String>,
    /// A run that takes longer is killed and counts as failed.
    pub timeout: Duration,
}

impl Default for Settings {
    fn default() -> Settings {
        Settings {
            rounds: 7,
            run_ms: 300,
            filter: Vec::new(),
            timeout: Duration::from_secs(300),
        }
    }
}

impl Settings {
    fn selects(&self, name: &str) -> bool {
        self.filter.is_empty() || self.filter.iter().any(|part| name.contains(part.as_str()))
    }
}

/// The time an iteration of `name`'s last pass took, in ns, from what `criterion_once` printed
/// on stderr (`<name>: <ns> ns an iteration`, one line a pass).
pub fn parse_time(stderr: &str, name: &str) -> Option<f64> {
    let prefix = format!("{name}: ");
    stderr
        .lines()
        .rev()
        .find_map(|line| line.strip_prefix(&prefix)?.strip_suffix(" ns an iteration"))
        .and_then(|ns| ns.trim().parse::<f64>().ok())
        .filter(|ns| ns.is_finite() && *ns >= 0.0)
}

/// Iterations for a measured pass of about `run_ms` at `ns` an iteration: at least 1.
pub fn iterations_for(ns: f64, run_ms: u64) -> u64 {
    let iterations = run_ms as f64 * 1e6 / ns.max(0.01);
    (iterations as u64).max(1)
}

/// Runs `criterion_once` (`exe`) with `TALLY_CONF=conf`: `warm` iterations of `name`, then `n`
/// timed; returns the timed pass's ns an iteration, or why there is none.
pub fn run_once(
    exe: &Path,
    conf: &str,
    name: &str,
    warm: u64,
    n: u64,
    timeout: Duration,
) -> Result<f64, String> {
    let mut command = Command::new(exe);
    command
        .args([name, &warm.to_string(), name, &n.to_string()])
        .env("TALLY_CONF", conf)
        .env_remove("MALLOC_CONF")
        .stdin(Stdio::null());
    let done = run_with_timeout(&mut command, timeout);
    match done.status {
        Ok(status) if status.success() => parse_time(&done.stderr, name)
            .ok_or_else(|| format!("{name}: no time in the output of {}", exe.display())),
        Ok(status) => Err(format!(
            "{name} ({conf}): {status}: {}",
            done.stderr.lines().last().unwrap_or("")
        )),
        Err(reason) => Err(format!("{name} ({conf}): {reason}")),
    }
}

/// Iterations of `name` for a measured pass of about `settings.run_ms`, from runs with the
/// profiler off of 1, 16, 256, ... iterations until one takes 20 ms or more.
pub fn calibrate(exe: &Path, name: &str, settings: &Settings) -> Result<u64, String> {
    let mut n = 1u64;
    loop {
        let ns = run_once(exe, COLUMNS[0].1, name, 1, n, settings.timeout)?;
        if ns * n as f64 >= CALIBRATION_NS || n >= u64::MAX / CALIBRATION_STEP {
            return Ok(iterations_for(ns, settings.run_ms));
        }
        n *= CALIBRATION_STEP;
    }
}

/// What a measurement gives: the samples (ns an iteration, by column and workload), the
/// iterations each workload ran, and the runs that failed.
#[derive(Debug, Default)]
pub struct Measured {
    /// ns an iteration, columns [`COLUMNS`], the first the baseline.
    pub samples: Samples,
    /// The workloads calibrated, in the order run, and the measured iterations of each run.
    pub iterations: Vec<(String, u64)>,
    /// One line per failed run.
    pub failures: Vec<String>,
}

/// Calibrates then measures every selected workload, printing progress on stderr.
pub fn measure(exe: &Path, settings: &Settings) -> Measured {
    let mut measured = Measured {
        samples: Samples::new(COLUMNS.map(|(name, _)| name), COLUMNS[0].0),
        ..Measured::default()
    };
    for bench in benches() {
        let name = bench.name();
        if !settings.selects(&name) {
            continue;
        }
        measured.samples.add_row(&name);
        match calibrate(exe, &name, settings) {
            Ok(n) => measured.iterations.push((name, n)),
            Err(reason) => measured.failures.push(format!("calibration: {reason}")),
        }
    }
    // The workloads calibrated, each a group of the schedule.
    for slot in schedule(settings.rounds, measured.iterations.len(), COLUMNS.len()) {
        let (name, n) = &measured.iterations[slot.group];
        let (column, conf) = COLUMNS[slot.column];
        let round = format!(
            "  round {}/{} {name:<22} {column:<11}",
            slot.round + 1,
            settings.rounds
        );
        match run_once(exe, conf, name, (n / 4).max(1), *n, settings.timeout) {
            Ok(ns) => {
                eprintln!("{round} {ns:>14.3} ns");
                measured.samples.add(column, name, slot.round, ns);
            }
            Err(reason) => {
                eprintln!("{round} FAILED: {reason}");
                measured.failures.push(reason);
            }
        }
    }
    measured
}

/// The report: per workload the two medians, their ratio and whether it is within
/// [`TARGET`]; then the count, the geometric mean, the noise and any failures.
pub fn report(measured: &Measured, machine: &Machine, settings: &Settings) -> String {
    let samples = &measured.samples;
    let (off, on) = (COLUMNS[0].0, COLUMNS[1].0);
    let mut out = String::from(
        "## Tally's profiler on the Rust micro workloads (one program, profiler off and on)\n\n",
    );
    out.push_str(&machine.markdown_lines());
    let _ = writeln!(
        out,
        "- settings: {} interleaved rounds; each run about {} ms of iterations after a quarter as \
         many unmeasured; `criterion_once` with `TALLY_CONF=prof:false` (`{off}`) and \
         `prof:true` (`{on}`, a sample every 512 KiB on average)\n",
        settings.rounds, settings.run_ms
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
    let _ = writeln!(
        out,
        "\n- Within 3% on {} of {rows}{}.",
        rows - over.len(),
        if over.is_empty() {
            String::new()
        } else {
            format!(" (over: {})", over.join(", "))
        }
    );
    if let Some(mean) = samples.geometric_mean_ratio(on) {
        let _ = writeln!(out, "- Geometric mean of the ratios: {mean:.3}×.");
    }
    if let Some(noise) = noise_sentence(samples) {
        let _ = writeln!(out, "- {noise}");
    }
    if !measured.failures.is_empty() {
        out.push_str("\n### Failures\n\n");
        for failure in &measured.failures {
            let _ = writeln!(out, "- {failure}");
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_time_is_the_last_pass_of_the_workload_named() {
        let stderr = "alloc_free/16: 5.412 ns an iteration\nalloc_free/16: 3.517 ns an iteration\n";
        assert_eq!(parse_time(stderr, "alloc_free/16"), Some(3.517));
        assert_eq!(parse_time(stderr, "alloc_free/64"), None);
        assert_eq!(
            parse_time("alloc_free/16: fast ns an iteration\n", "alloc_free/16"),
            None
        );
        assert_eq!(parse_time("", "alloc_free/16"), None);
        // Another workload's line after it is not taken for it.
        let mixed = "batch64/16: 270.000 ns an iteration\nbatch64/1: 1.000 ns an iteration\n";
        assert_eq!(parse_time(mixed, "batch64/16"), Some(270.0));
    }

    #[test]
    fn iterations_fill_the_run_and_never_drop_to_zero() {
        assert_eq!(iterations_for(4.0, 300), 75_000_000);
        assert_eq!(iterations_for(190e6, 300), 1);
        assert_eq!(iterations_for(0.0, 1), 100_000_000);
    }

    /// Samples of two workloads, one within the target and one over it.
    fn measured() -> Measured {
        let mut samples = Samples::new(COLUMNS.map(|(name, _)| name), COLUMNS[0].0);
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

    #[test]
    fn the_filter_selects_by_substring() {
        let settings = Settings {
            filter: vec!["batch64/".into(), "btree".into()],
            ..Settings::default()
        };
        assert!(settings.selects("batch64/16"));
        assert!(settings.selects("btree_strings/1000000"));
        assert!(!settings.selects("alloc_free/16"));
        assert!(Settings::default().selects("alloc_free/16"));
    }
}
