//! Runs the `micro_<allocator>` binaries interleaved for several rounds and writes the
//! comparison table (see `docs/benchmarks.md` and `tally_benches::runner`).
//!
//! The binaries are looked up next to this one, so build them first:
//! `cargo build --release -p tally-benches --bins` (or run `benches/run-micro.sh`).

use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode, Stdio};
use std::time::{Duration, Instant};

use tally_benches::micro::Config;
use tally_benches::runner::{markdown, parse_output, Machine, Results, Settings, ALLOCATORS};

const USAGE: &str = "\
usage: micro_runner [options]

Runs the micro_<allocator> binaries next to this one in interleaved rounds and prints a Markdown
table of median ns per malloc+free pair, also written to --out (and the raw rounds beside it).

options:
  --rounds N          interleaved rounds (default 7)
  --measure-ms N      measured time per workload (default: TALLY_BENCH_MEASURE_MS or 150)
  --warmup-ms N       warm-up per workload (default: TALLY_BENCH_WARMUP_MS or 50)
  --quick             smoke run: --rounds 1 --measure-ms 20 --warmup-ms 5
  --filter A,B        only workloads whose name contains A or B (default: TALLY_BENCH_FILTER)
  --allocators A,B    only these, of system,tally,mimalloc,jemalloc,stoolap (default: all built)
  --out PATH          report file (default: <target dir>/bench/micro.md)
  --timeout-s N       kill a binary that runs longer than this (default 900)
";

struct Options {
    settings: Settings,
    allocators: Vec<String>,
    out: Option<PathBuf>,
    timeout: Duration,
}

fn parse_args() -> Result<Options, String> {
    let config = Config::from_env();
    let mut options = Options {
        settings: Settings {
            rounds: 7,
            measure_ms: config.measure.as_millis(),
            warmup_ms: config.warmup.as_millis(),
            filter: config.filter,
        },
        allocators: ALLOCATORS.iter().map(|name| name.to_string()).collect(),
        out: None,
        timeout: Duration::from_secs(900),
    };
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        let mut value = |flag: &str| args.next().ok_or_else(|| format!("{flag} needs a value"));
        let number = |flag: &str, text: String| {
            text.parse::<u64>()
                .map_err(|_| format!("{flag}: {text:?} is not a number"))
        };
        let list = |text: String| -> Vec<String> {
            text.split(',')
                .map(str::trim)
                .filter(|part| !part.is_empty())
                .map(String::from)
                .collect()
        };
        match arg.as_str() {
            "--rounds" => options.settings.rounds = number(&arg, value(&arg)?)?.max(1) as usize,
            "--measure-ms" => options.settings.measure_ms = number(&arg, value(&arg)?)?.into(),
            "--warmup-ms" => options.settings.warmup_ms = number(&arg, value(&arg)?)?.into(),
            "--quick" => {
                options.settings.rounds = 1;
                options.settings.measure_ms = 20;
                options.settings.warmup_ms = 5;
            }
            "--filter" => options.settings.filter = list(value(&arg)?),
            "--allocators" => {
                options.allocators = list(value(&arg)?);
                if let Some(unknown) = options
                    .allocators
                    .iter()
                    .find(|name| !ALLOCATORS.contains(&name.as_str()))
                {
                    return Err(format!("unknown allocator {unknown:?}"));
                }
            }
            "--out" => options.out = Some(PathBuf::from(value(&arg)?)),
            "--timeout-s" => options.timeout = Duration::from_secs(number(&arg, value(&arg)?)?),
            "-h" | "--help" => {
                print!("{USAGE}");
                std::process::exit(0);
            }
            _ => return Err(format!("unknown argument {arg:?}\n\n{USAGE}")),
        }
    }
    // Run (and tabulate) in the canonical order, whatever order the list came in.
    options
        .allocators
        .sort_by_key(|name| ALLOCATORS.iter().position(|known| known == name));
    options.allocators.dedup();
    Ok(options)
}

/// Runs one allocator binary with the benchmark settings; returns its stdout, or why it failed
/// together with what it printed before failing.
fn run_binary(binary: &Path, settings: &Settings, timeout: Duration) -> Result<String, (String, String)> {
    let mut child = Command::new(binary)
        .env("TALLY_BENCH_MEASURE_MS", settings.measure_ms.to_string())
        .env("TALLY_BENCH_WARMUP_MS", settings.warmup_ms.to_string())
        .env("TALLY_BENCH_FILTER", settings.filter.join(","))
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|error| {
            (
                format!("cannot start {}: {error}", binary.display()),
                String::new(),
            )
        })?;
    let drain = |mut pipe: Box<dyn Read + Send>| {
        std::thread::spawn(move || {
            let mut text = String::new();
            let _ = pipe.read_to_string(&mut text);
            text
        })
    };
    let stdout = drain(Box::new(child.stdout.take().expect("piped stdout")));
    let stderr = drain(Box::new(child.stderr.take().expect("piped stderr")));
    let deadline = Instant::now() + timeout;
    let status = loop {
        match child.try_wait() {
            Ok(Some(status)) => break Ok(status),
            Ok(None) if Instant::now() >= deadline => {
                let _ = child.kill();
                let _ = child.wait();
                break Err(format!("killed after {} s", timeout.as_secs()));
            }
            Ok(None) => std::thread::sleep(Duration::from_millis(50)),
            Err(error) => break Err(format!("wait failed: {error}")),
        }
    };
    let stdout = stdout.join().unwrap_or_default();
    let stderr = stderr.join().unwrap_or_default();
    match status {
        Ok(status) if status.success() => Ok(stdout),
        Ok(status) => {
            let tail: Vec<&str> = stderr.lines().rev().take(3).collect();
            let tail: Vec<&str> = tail.into_iter().rev().collect();
            Err((format!("{status}; stderr: {:?}", tail.join(" / ")), stdout))
        }
        Err(reason) => Err((reason, stdout)),
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

    let mut results = Results::default();
    let mut binaries = Vec::new();
    for allocator in &options.allocators {
        let binary = bin_dir.join(format!("micro_{allocator}"));
        if binary.is_file() {
            results.allocators.push(allocator.clone());
            binaries.push((allocator.clone(), binary));
        } else {
            eprintln!("micro_runner: {} not built, skipping", binary.display());
            results
                .skipped
                .push((allocator.clone(), format!("`micro_{allocator}` not built")));
        }
    }
    if binaries.is_empty() {
        eprintln!("micro_runner: no allocator binary in {}", bin_dir.display());
        return ExitCode::FAILURE;
    }

    let settings = &options.settings;
    for round in 1..=settings.rounds {
        for (allocator, binary) in &binaries {
            let start = Instant::now();
            let (run, failure) = match run_binary(binary, settings, options.timeout) {
                Ok(stdout) => (parse_output(&stdout), None),
                Err((reason, stdout)) => (parse_output(&stdout), Some(reason)),
            };
            let failure = match run {
                Ok(run) => {
                    results.add_run(allocator, &run);
                    failure
                }
                Err(parse_error) => Some(failure.unwrap_or(parse_error)),
            };
            eprintln!(
                "round {round}/{}: {allocator:<9} {:6.1} s{}",
                settings.rounds,
                start.elapsed().as_secs_f64(),
                failure
                    .as_deref()
                    .map_or_else(String::new, |reason| format!("  FAILED: {reason}"))
            );
            if let Some(reason) = failure {
                results.add_failure(allocator, reason);
            }
        }
    }

    let report = markdown(
        &results,
        &Machine::probe(&workspace, &results.allocators),
        settings,
    );
    print!("{report}");
    let raw = out.with_extension("raw.tsv");
    let written = out
        .parent()
        .map_or(Ok(()), std::fs::create_dir_all)
        .and_then(|()| std::fs::write(&out, &report))
        .and_then(|()| std::fs::write(&raw, results.raw_tsv()));
    match written {
        Ok(()) => {
            eprintln!("micro_runner: wrote {} and {}", out.display(), raw.display());
            ExitCode::SUCCESS
        }
        Err(error) => {
            eprintln!("micro_runner: cannot write {}: {error}", out.display());
            ExitCode::FAILURE
        }
    }
}
