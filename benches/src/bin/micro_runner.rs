//! Runs the `micro_<allocator>` binaries interleaved for several rounds and writes the
//! comparison table (see `docs/benchmarks.md`, `tally_benches::micro_report` and
//! `tally_benches::harness`).
//!
//! Round `r` runs every column at stack phase `r` modulo 8 (`TALLY_BENCH_STACK_PHASE`,
//! `tally_benches::criterion_suite::on_stack_phase`), so that every allocator meets the same
//! offsets of its frames from a page boundary.
//!
//! The binaries are looked up next to this one, so build them first:
//! `cargo build --release -p tally-benches --bins` (or run `benches/run-micro.sh`).

use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode, Stdio};
use std::time::{Duration, Instant};

use tally_benches::criterion_suite::{STACK_PHASES, STACK_PHASE_VAR};
use tally_benches::harness::{run_with_timeout, schedule, write_report, written_files, CommandLine, Machine};
use tally_benches::micro::Config;
use tally_benches::micro_report::{
    column, crates_of, markdown, parse_output, Column, Results, Settings, ALLOCATORS, BASELINE, COLUMNS,
};

const USAGE: &str = "\
usage: micro_runner [options]

Runs the micro_<allocator> binaries next to this one in interleaved rounds (the order rotated
each round) and prints a Markdown table of median ns per malloc+free pair, also written to --out
(and the raw rounds beside it).

options:
  --rounds N          interleaved rounds (default 7)
  --measure-ms N      measured time per workload (default: TALLY_BENCH_MEASURE_MS or 150)
  --warmup-ms N       warm-up per workload (default: TALLY_BENCH_WARMUP_MS or 50)
  --quick             smoke run: --rounds 1 --measure-ms 20 --warmup-ms 5
  --filter A,B        only workloads whose name contains A or B (default: TALLY_BENCH_FILTER)
  --allocators A,B    only these columns, of system,tally,tally+prof,tally+prof17,mimalloc,
                      jemalloc,stoolap (default: system,tally,mimalloc,jemalloc,stoolap, those built)
  --baseline NAME     the column of the ratios (default system)
  --out PATH          report file (default: <target dir>/bench/micro.md)
  --timeout-s N       kill a binary that runs longer than this (default 900)
";

struct Options {
    settings: Settings,
    columns: Vec<&'static Column>,
    baseline: String,
    out: Option<PathBuf>,
    timeout: Duration,
}

fn parse_args() -> Result<Options, String> {
    let config = Config::from_env()?;
    let mut options = Options {
        settings: Settings {
            rounds: 7,
            measure_ms: config.measure.as_millis(),
            warmup_ms: config.warmup.as_millis(),
            filter: config.filter,
        },
        columns: ALLOCATORS.iter().filter_map(|name| column(name)).collect(),
        baseline: BASELINE.to_string(),
        out: None,
        timeout: Duration::from_secs(900),
    };
    let mut args = CommandLine::new(std::env::args().skip(1));
    while let Some(arg) = args.next_flag() {
        match arg.as_str() {
            "--rounds" => options.settings.rounds = args.number(&arg)?.max(1) as usize,
            "--measure-ms" => options.settings.measure_ms = args.number(&arg)?.into(),
            "--warmup-ms" => options.settings.warmup_ms = args.number(&arg)?.into(),
            "--quick" => {
                options.settings.rounds = 1;
                options.settings.measure_ms = 20;
                options.settings.warmup_ms = 5;
            }
            "--filter" => options.settings.filter = args.list(&arg)?,
            "--allocators" => {
                options.columns = args
                    .list(&arg)?
                    .iter()
                    .map(|name| column(name).ok_or_else(|| format!("unknown allocator {name:?}")))
                    .collect::<Result<_, _>>()?;
            }
            "--baseline" => options.baseline = args.value(&arg)?,
            "--out" => options.out = Some(PathBuf::from(args.value(&arg)?)),
            "--timeout-s" => options.timeout = Duration::from_secs(args.number(&arg)?),
            "-h" | "--help" => {
                print!("{USAGE}");
                std::process::exit(0);
            }
            _ => return Err(format!("unknown argument {arg:?}\n\n{USAGE}")),
        }
    }
    if column(&options.baseline).is_none() {
        return Err(format!("unknown baseline {:?}", options.baseline));
    }
    // Tabulate in the canonical order, whatever order the list came in.
    options
        .columns
        .sort_by_key(|wanted| COLUMNS.iter().position(|known| known == *wanted));
    options.columns.dedup();
    Ok(options)
}

/// Runs one column's binary with the benchmark settings; returns its stdout, or why it failed
/// together with what it printed before failing.
fn run_binary(
    binary: &Path,
    column: &Column,
    settings: &Settings,
    timeout: Duration,
    phase: usize,
) -> Result<String, (String, String)> {
    let mut command = Command::new(binary);
    command
        .env(STACK_PHASE_VAR, (phase % STACK_PHASES).to_string())
        .env("TALLY_BENCH_MEASURE_MS", settings.measure_ms.to_string())
        .env("TALLY_BENCH_WARMUP_MS", settings.warmup_ms.to_string())
        .env("TALLY_BENCH_FILTER", settings.filter.join(","))
        .stdin(Stdio::null());
    if let Some(conf) = column.tally_conf {
        command.env("TALLY_CONF", conf);
    }
    let done = run_with_timeout(&mut command, timeout);
    match done.status {
        Ok(status) if status.success() => Ok(done.stdout),
        Ok(status) => {
            let tail: Vec<&str> = done.stderr.lines().rev().take(3).collect();
            let tail: Vec<&str> = tail.into_iter().rev().collect();
            Err((format!("{status}; stderr: {:?}", tail.join(" / ")), done.stdout))
        }
        Err(reason) => Err((reason, done.stdout)),
    }
}

fn main() -> ExitCode {
    let options = match parse_args() {
        Ok(options) => options,
        Err(message) => {
            eprintln!("micro_runner: {message}");
            return ExitCode::from(2);
        }
    };
    let (bin_dir, target_dir, workspace) = tally_benches::binary_target_and_workspace_dirs();
    let out = options
        .out
        .clone()
        .unwrap_or_else(|| target_dir.join("bench").join("micro.md"));

    let mut runnable = Vec::new();
    let mut skipped = Vec::new();
    for column in &options.columns {
        let binary = bin_dir.join(format!("micro_{}", column.allocator));
        if binary.is_file() {
            runnable.push((*column, binary));
        } else {
            eprintln!(
                "micro_runner: {} not built, skipping {}",
                binary.display(),
                column.name
            );
            skipped.push((
                column.name.to_string(),
                format!("`micro_{}` not built", column.allocator),
            ));
        }
    }
    if runnable.is_empty() {
        eprintln!("micro_runner: no allocator binary in {}", bin_dir.display());
        return ExitCode::FAILURE;
    }
    let names: Vec<String> = runnable
        .iter()
        .map(|(column, _)| column.name.to_string())
        .collect();
    let mut results = Results::new(&names, &options.baseline);
    results.skipped = skipped;

    let settings = &options.settings;
    for slot in schedule(settings.rounds, 1, runnable.len()) {
        let (column, binary) = &runnable[slot.column];
        let start = Instant::now();
        // Every column of a round at the round's stack phase, so that each meets the same ones.
        let (run, failure) = match run_binary(binary, column, settings, options.timeout, slot.round) {
            Ok(stdout) => (parse_output(&stdout), None),
            Err((reason, stdout)) => (parse_output(&stdout), Some(reason)),
        };
        let failure = match run {
            Ok(run) => {
                results.add_run(column.name, slot.round, &run);
                failure
            }
            Err(parse_error) => Some(failure.unwrap_or(parse_error)),
        };
        eprintln!(
            "round {}/{} (stack phase {}): {:<12} {:6.1} s{}",
            slot.round + 1,
            settings.rounds,
            slot.round % STACK_PHASES,
            column.name,
            start.elapsed().as_secs_f64(),
            failure
                .as_deref()
                .map_or_else(String::new, |reason| format!("  FAILED: {reason}"))
        );
        if let Some(reason) = failure {
            results.add_failure(column.name, reason);
        }
    }

    let crates: Vec<&str> = runnable
        .iter()
        .flat_map(|(column, _)| crates_of(column.allocator).iter().copied())
        .collect();
    let report = markdown(&results, &Machine::probe(&workspace, &crates, &[]), settings);
    print!("{report}");
    let raw = results.samples.raw_tsv("allocator", "workload", "ns_per_pair", 2);
    let written = write_report(&out, &report, Some(&raw));
    match written {
        Ok(files) => {
            eprintln!("micro_runner: wrote {}", written_files(&files));
            ExitCode::SUCCESS
        }
        Err(error) => {
            eprintln!("micro_runner: cannot write {}: {error}", out.display());
            ExitCode::FAILURE
        }
    }
}
