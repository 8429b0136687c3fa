//! Times the Criterion workloads of the `GlobalAlloc` path ([`crate::criterion_suite`]) in the
//! `criterion_once` programs, in interleaved rounds, without Criterion: what [`crate::prof_rust`]
//! (Tally's profiler off and on) and [`crate::rust_crates`] (Tally against the allocator crates)
//! share. Each keeps only its columns and its report.
//!
//! # Why not Criterion
//!
//! Criterion runs its targets one after the other, a variant's every benchmark before the next
//! variant's, so two columns of its table are minutes apart and the VM's speed drifts between
//! them (its hosts make every program 2-3× slower for a minute now and then). Here each round
//! runs every column of a workload one right after the other, the order rotated each round
//! ([`crate::harness::schedule`]), and the table gives medians over the rounds.
//!
//! # One run
//!
//! A column is a [`Variant`]: a `criterion_once` program (Tally's, or a twin built with another
//! allocator as its `#[global_allocator]`) and the `TALLY_CONF` it runs with.
//! `criterion_once W WARM W N` runs workload `W` for `WARM` iterations (caches fill, pages fault
//! in), then `N` more, and prints on stderr the time of each pass an iteration, then the peak
//! RSS of both passes; the second pass is the time sample. `N` comes from a calibration in the
//! first column, so that its measured pass takes about the run time asked for (`--run-ms`), and
//! every column runs the same iterations; `WARM` is a quarter of it, at least one. The time is
//! taken inside the process: start-up and exit are not in it.
//!
//! Round `r` runs every column at stack phase `r` modulo [`STACK_PHASES`] (the variable
//! [`STACK_PHASE_VAR`]): where the workload's frames fall relative to a page is the same for
//! every column of a round, and steps through eight offsets over the rounds. With the kernel's
//! random offset instead, `vec_push/1000` ran 650 or 850 ns by the process under every
//! allocator, and a median of 7 rounds said which mode each column's processes happened to fall
//! in.

use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode, Stdio};
use std::time::Duration;

use crate::criterion_suite::{benches, STACK_PHASES, STACK_PHASE_VAR};
use crate::harness::{
    run_with_timeout, schedule, write_report, written_files, CommandLine, Machine, Samples,
};

/// A calibration run is long enough to scale from once it takes this long.
const CALIBRATION_NS: f64 = 20e6;
/// Each calibration run has this many times the iterations of the one before.
const CALIBRATION_STEP: u64 = 16;

/// One column: a `criterion_once` program and how it runs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Variant {
    /// The column's name in the report.
    pub column: &'static str,
    /// The program's file name, next to the runner.
    pub program: &'static str,
    /// `TALLY_CONF` for the run; empty leaves it unset (the other allocators' programs).
    pub tally_conf: &'static str,
}

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
    /// How the programs were built, if not as usual: a line of the report's head.
    pub build_note: String,
}

impl Default for Settings {
    fn default() -> Settings {
        Settings {
            rounds: 7,
            run_ms: 300,
            filter: Vec::new(),
            timeout: Duration::from_secs(300),
            build_note: String::new(),
        }
    }
}

impl Settings {
    /// Whether the workload `name` is one to run.
    pub fn selects(&self, name: &str) -> bool {
        self.filter.is_empty() || self.filter.iter().any(|part| name.contains(part.as_str()))
    }
}

/// The programs of `variants` in `bin_dir`, each with its variant; an error naming the first
/// one missing and how to build it.
pub fn programs(bin_dir: &Path, variants: &[Variant]) -> Result<Vec<(Variant, PathBuf)>, String> {
    variants
        .iter()
        .map(|variant| {
            let exe = bin_dir.join(variant.program);
            if exe.is_file() {
                Ok((*variant, exe))
            } else {
                Err(format!(
                    "no {}: build it first (cargo build --release -p tally-benches --bin {})",
                    exe.display(),
                    variant.program
                ))
            }
        })
        .collect()
}

/// The time an iteration of `name`'s last pass took, in ns, from what a `criterion_once`
/// program printed on stderr (`<name>: <ns> ns an iteration`, one line a pass).
pub fn parse_time(stderr: &str, name: &str) -> Option<f64> {
    let prefix = format!("{name}: ");
    stderr
        .lines()
        .rev()
        .find_map(|line| line.strip_prefix(&prefix)?.strip_suffix(" ns an iteration"))
        .and_then(|ns| ns.trim().parse::<f64>().ok())
        .filter(|ns| ns.is_finite() && *ns >= 0.0)
}

/// The peak RSS a `criterion_once` program printed on stderr (`peak RSS: <KiB> KiB`), in KiB.
pub fn parse_peak_rss(stderr: &str) -> Option<u64> {
    stderr
        .lines()
        .rev()
        .find_map(|line| line.strip_prefix("peak RSS: ")?.strip_suffix(" KiB"))
        .and_then(|kib| kib.trim().parse().ok())
}

/// Iterations for a measured pass of about `run_ms` at `ns` an iteration: at least 1.
pub fn iterations_for(ns: f64, run_ms: u64) -> u64 {
    let iterations = run_ms as f64 * 1e6 / ns.max(0.01);
    (iterations as u64).max(1)
}

/// What one run gave.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Run {
    /// The measured pass's ns an iteration.
    pub ns: f64,
    /// The process's peak RSS over both passes, in KiB, if it could tell.
    pub peak_rss_kib: Option<u64>,
}

/// Runs the `criterion_once` program `exe` with `TALLY_CONF=tally_conf` (unset if empty) at
/// stack phase `phase` ([`STACK_PHASE_VAR`]): `warm` iterations of `name`, then `n` timed;
/// returns the run, or why there is none.
pub fn run_once(
    exe: &Path,
    tally_conf: &str,
    name: &str,
    (warm, n): (u64, u64),
    phase: usize,
    timeout: Duration,
) -> Result<Run, String> {
    let mut command = Command::new(exe);
    command
        .args([name, &warm.to_string(), name, &n.to_string()])
        .env(STACK_PHASE_VAR, (phase % STACK_PHASES).to_string())
        .env_remove("MALLOC_CONF")
        .stdin(Stdio::null());
    if tally_conf.is_empty() {
        command.env_remove("TALLY_CONF");
    } else {
        command.env("TALLY_CONF", tally_conf);
    }
    let program = exe
        .file_name()
        .map_or_else(|| exe.display().to_string(), |f| f.to_string_lossy().into_owned());
    let done = run_with_timeout(&mut command, timeout);
    match done.status {
        Ok(status) if status.success() => match parse_time(&done.stderr, name) {
            Some(ns) => Ok(Run {
                ns,
                peak_rss_kib: parse_peak_rss(&done.stderr),
            }),
            None => Err(format!("{name}: no time in the output of {}", exe.display())),
        },
        Ok(status) => Err(format!(
            "{name} ({program} {tally_conf}): {status}: {}",
            done.stderr.lines().last().unwrap_or("")
        )),
        Err(reason) => Err(format!("{name} ({program} {tally_conf}): {reason}")),
    }
}

/// Iterations of `name` for a measured pass of about `settings.run_ms` in `exe` with
/// `tally_conf`, from runs of 1, 16, 256, ... iterations until one takes 20 ms or more.
pub fn calibrate(exe: &Path, tally_conf: &str, name: &str, settings: &Settings) -> Result<u64, String> {
    let mut n = 1u64;
    loop {
        let ns = run_once(exe, tally_conf, name, (1, n), 0, settings.timeout)?.ns;
        if ns * n as f64 >= CALIBRATION_NS || n >= u64::MAX / CALIBRATION_STEP {
            return Ok(iterations_for(ns, settings.run_ms));
        }
        n *= CALIBRATION_STEP;
    }
}

/// What a measurement gives: the samples by column and workload, the iterations each workload
/// ran, and the runs that failed.
#[derive(Debug, Default)]
pub struct Measured {
    /// ns an iteration, a column per variant, the first the baseline.
    pub samples: Samples,
    /// Peak RSS in KiB of each run, the same columns.
    pub peak_rss_kib: Samples,
    /// The workloads calibrated, in the order run, and the measured iterations of each run.
    pub iterations: Vec<(String, u64)>,
    /// One line per failed run.
    pub failures: Vec<String>,
}

/// Calibrates every selected workload in the first column, then runs each in every column in
/// interleaved rounds, printing progress on stderr. `baseline` is the column the samples' ratios
/// are taken against.
pub fn measure(programs: &[(Variant, PathBuf)], baseline: &str, settings: &Settings) -> Measured {
    let columns: Vec<&str> = programs.iter().map(|(variant, _)| variant.column).collect();
    let mut measured = Measured {
        samples: Samples::new(columns.iter().copied(), baseline),
        peak_rss_kib: Samples::new(columns.iter().copied(), baseline),
        ..Measured::default()
    };
    let Some((first, first_exe)) = programs.first() else {
        return measured;
    };
    for bench in benches() {
        let name = bench.name();
        if !settings.selects(&name) {
            continue;
        }
        measured.samples.add_row(&name);
        measured.peak_rss_kib.add_row(&name);
        match calibrate(first_exe, first.tally_conf, &name, settings) {
            Ok(n) => measured.iterations.push((name, n)),
            Err(reason) => measured.failures.push(format!("calibration: {reason}")),
        }
    }
    // The workloads calibrated, each a group of the schedule.
    for slot in schedule(settings.rounds, measured.iterations.len(), programs.len()) {
        let (name, n) = &measured.iterations[slot.group];
        let (variant, exe) = &programs[slot.column];
        let round = format!(
            "  round {}/{} {name:<22} {:<11}",
            slot.round + 1,
            settings.rounds,
            variant.column
        );
        // Every column of a round at the round's stack phase, so that each meets the same ones.
        match run_once(
            exe,
            variant.tally_conf,
            name,
            ((n / 4).max(1), *n),
            slot.round,
            settings.timeout,
        ) {
            Ok(run) => {
                eprintln!("{round} {:>14.3} ns", run.ns);
                measured.samples.add(variant.column, name, slot.round, run.ns);
                if let Some(kib) = run.peak_rss_kib {
                    measured
                        .peak_rss_kib
                        .add(variant.column, name, slot.round, kib as f64);
                }
            }
            Err(reason) => {
                eprintln!("{round} FAILED: {reason}");
                measured.failures.push(reason);
            }
        }
    }
    measured
}

/// A report's count of the workloads that meet its target: `- {what} on K of N.`, with the
/// ones over listed, on a line of its own after a blank one.
pub fn count_sentence(what: &str, rows: usize, over: &[String]) -> String {
    let listed = if over.is_empty() {
        String::new()
    } else {
        format!(" (over: {})", over.join(", "))
    };
    format!("\n- {what} on {} of {rows}{listed}.\n", rows - over.len())
}

/// The line of a report's head that says how the programs were built, if the settings say.
pub fn build_line(settings: &Settings) -> String {
    if settings.build_note.is_empty() {
        String::new()
    } else {
        format!("- build: {}\n", settings.build_note)
    }
}

/// A report's last section: the runs that failed, one a line; empty if none did.
pub fn failures_section(failures: &[String]) -> String {
    if failures.is_empty() {
        return String::new();
    }
    let lines: String = failures.iter().map(|failure| format!("- {failure}\n")).collect();
    format!("\n### Failures\n\n{lines}")
}

/// The options every runner of these workloads takes, for its usage text.
pub const OPTIONS: &str = "\
options:
  --rounds N       interleaved rounds (default 7)
  --run-ms N       about how long each run's measured pass takes (default 300)
  --filter A,B     only workloads whose name contains A or B
  --quick          smoke run: --rounds 1 --run-ms 20
  --out PATH       report file (default: <target dir>/bench/<runner>.md)
  --timeout-s N    kill a run that takes longer (default 300)
  --build-note T   how the programs were built, for the report's head
";

/// A runner's `main`: reads the [`OPTIONS`] (`usage` is the help text), finds the programs of
/// `variants` next to the running binary, measures (ratios against `baseline`), prints the
/// report that `report` makes and writes it to `--out` (default `<target>/bench/<file>`) with
/// the raw rounds beside it. Exit status 2 for a wrong argument or a missing program, 1 if a
/// run failed or the report could not be written.
pub fn runner_main(
    runner: &str,
    usage: &str,
    file: &str,
    variants: &[Variant],
    baseline: &str,
    report: impl Fn(&Measured, &Machine, &Settings) -> String,
) -> ExitCode {
    let (settings, out) = match parse_args(std::env::args().skip(1), usage) {
        Ok(parsed) => parsed,
        Err(message) => {
            eprintln!("{runner}: {message}");
            return ExitCode::from(2);
        }
    };
    let (bin_dir, target_dir, workspace) = crate::binary_target_and_workspace_dirs();
    let programs = match programs(&bin_dir, variants) {
        Ok(programs) => programs,
        Err(message) => {
            eprintln!("{runner}: {message}");
            return ExitCode::from(2);
        }
    };
    let out = out.unwrap_or_else(|| target_dir.join("bench").join(file));
    let measured = measure(&programs, baseline, &settings);
    // The crates' versions when their programs ran.
    let others = variants.iter().any(|variant| variant.tally_conf.is_empty());
    let crates: &[&str] = if others { &CRATES } else { &[] };
    let md = report(&measured, &Machine::probe(&workspace, crates, &[]), &settings);
    print!("{md}");
    let raw = measured.samples.raw_tsv("column", "workload", "ns", 3);
    match write_report(&out, &md, Some(&raw)) {
        Ok(files) => {
            eprintln!("{runner}: wrote {}", written_files(&files));
            if measured.failures.is_empty() {
                ExitCode::SUCCESS
            } else {
                ExitCode::FAILURE
            }
        }
        Err(error) => {
            eprintln!("{runner}: cannot write {}: {error}", out.display());
            ExitCode::FAILURE
        }
    }
}

/// The allocator crates whose versions a report's head names.
const CRATES: [&str; 3] = ["mimalloc", "tikv-jemallocator", "stoolap-jemalloc"];

/// Reads the [`OPTIONS`]: the settings and the report path if given; `-h` prints `usage` and
/// exits.
pub fn parse_args(
    args: impl Iterator<Item = String>,
    usage: &str,
) -> Result<(Settings, Option<PathBuf>), String> {
    let mut settings = Settings::default();
    let mut out = None;
    let mut args = CommandLine::new(args);
    while let Some(arg) = args.next_flag() {
        match arg.as_str() {
            "--rounds" => settings.rounds = args.number(&arg)?.max(1) as usize,
            "--run-ms" => settings.run_ms = args.number(&arg)?.max(1),
            "--filter" => settings.filter = args.list(&arg)?,
            "--quick" => {
                settings.rounds = 1;
                settings.run_ms = 20;
            }
            "--out" => out = Some(PathBuf::from(args.value(&arg)?)),
            "--timeout-s" => settings.timeout = Duration::from_secs(args.number(&arg)?.max(1)),
            "--build-note" => settings.build_note = args.value(&arg)?,
            "-h" | "--help" => {
                print!("{usage}");
                std::process::exit(0);
            }
            other => return Err(format!("unknown argument {other:?}\n\n{usage}")),
        }
    }
    Ok((settings, out))
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
    fn the_peak_rss_is_read_from_its_line() {
        let stderr = "vec_extend/67108864: 4.000 ns an iteration\npeak RSS: 71680 KiB\n";
        assert_eq!(parse_peak_rss(stderr), Some(71680));
        assert_eq!(parse_peak_rss("peak RSS: lots KiB\n"), None);
        assert_eq!(parse_peak_rss("alloc_free/16: 3.000 ns an iteration\n"), None);
    }

    #[test]
    fn iterations_fill_the_run_and_never_drop_to_zero() {
        assert_eq!(iterations_for(4.0, 300), 75_000_000);
        assert_eq!(iterations_for(190e6, 300), 1);
        assert_eq!(iterations_for(0.0, 1), 100_000_000);
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

    #[test]
    fn the_options_set_the_settings_and_a_wrong_one_is_named() {
        let args = |list: &[&str]| list.iter().map(|s| s.to_string()).collect::<Vec<_>>().into_iter();
        let (settings, out) = parse_args(
            args(&[
                "--rounds",
                "3",
                "--run-ms",
                "50",
                "--filter",
                "btree,vec_",
                "--out",
                "x.md",
            ]),
            "usage",
        )
        .unwrap();
        assert_eq!((settings.rounds, settings.run_ms), (3, 50));
        assert_eq!(settings.filter, ["btree", "vec_"]);
        assert_eq!(out, Some(PathBuf::from("x.md")));
        let (noted, _) = parse_args(args(&["--build-note", "with RUSTFLAGS=x"]), "usage").unwrap();
        assert_eq!(build_line(&noted), "- build: with RUSTFLAGS=x\n");
        assert_eq!(build_line(&settings), "");
        let (quick, out) = parse_args(args(&["--quick"]), "usage").unwrap();
        assert_eq!((quick.rounds, quick.run_ms, out), (1, 20, None));
        let error = parse_args(args(&["--round", "3"]), "usage").unwrap_err();
        assert!(error.starts_with("unknown argument \"--round\""), "{error}");
        assert!(parse_args(args(&["--rounds", "many"]), "usage").is_err());
    }

    #[test]
    fn a_missing_program_is_named_with_its_build_command() {
        let dir = std::env::temp_dir().join(format!("tally-rust-once-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join("criterion_once"), b"").unwrap();
        let tally = Variant {
            column: "tally",
            program: "criterion_once",
            tally_conf: "prof:false",
        };
        let system = Variant {
            column: "system",
            program: "criterion_once_system",
            tally_conf: "",
        };
        let found = programs(&dir, &[tally]).unwrap();
        assert_eq!(found, [(tally, dir.join("criterion_once"))]);
        let error = programs(&dir, &[tally, system]).unwrap_err();
        std::fs::remove_dir_all(&dir).unwrap();
        assert!(error.contains("criterion_once_system"), "{error}");
        assert!(error.contains("--bin criterion_once_system"), "{error}");
    }
}
