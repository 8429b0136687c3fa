//! Runs the Criterion workloads in `criterion_once` (next to this binary) with Tally's profiler
//! off and on, in interleaved rounds, and writes the table of what the profiler costs each
//! (`tally_benches::prof_rust`, `benches/run-prof-rust.sh`, `docs/benchmarks.md`).

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use tally_benches::harness::{write_report, written_files, CommandLine, Machine};
use tally_benches::prof_rust::{measure, report, Settings};

const USAGE: &str = "\
usage: prof_rust [options]

Runs each Criterion workload of the GlobalAlloc path in criterion_once (built next to this
program) with TALLY_CONF=prof:false and prof:true, in interleaved rounds, and prints the table
of median ns an iteration and their ratio, also written to --out (the raw rounds beside it).

options:
  --rounds N       interleaved rounds (default 7)
  --run-ms N       about how long each run's measured pass takes (default 300)
  --filter A,B     only workloads whose name contains A or B
  --quick          smoke run: --rounds 1 --run-ms 20
  --out PATH       report file (default: <target dir>/bench/prof-rust.md)
  --timeout-s N    kill a run that takes longer (default 300)
";

fn parse_args() -> Result<(Settings, Option<PathBuf>), String> {
    let mut settings = Settings::default();
    let mut out = None;
    let mut args = CommandLine::new(std::env::args().skip(1));
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
            "-h" | "--help" => {
                print!("{USAGE}");
                std::process::exit(0);
            }
            other => return Err(format!("unknown argument {other:?}\n\n{USAGE}")),
        }
    }
    Ok((settings, out))
}

fn main() -> ExitCode {
    let (settings, out) = match parse_args() {
        Ok(parsed) => parsed,
        Err(message) => {
            eprintln!("prof_rust: {message}");
            return ExitCode::from(2);
        }
    };
    let (bin_dir, target_dir, workspace) = tally_benches::binary_target_and_workspace_dirs();
    let exe = bin_dir.join("criterion_once");
    if !exe.is_file() {
        eprintln!(
            "prof_rust: no {}: build it first (cargo build --release -p tally-benches --bin criterion_once)",
            exe.display()
        );
        return ExitCode::from(2);
    }
    let out = out.unwrap_or_else(|| target_dir.join("bench").join("prof-rust.md"));
    let measured = measure(&exe, &settings);
    let md = report(&measured, &Machine::probe(&workspace, &[], &[]), &settings);
    print!("{md}");
    let raw = measured.samples.raw_tsv("column", "workload", "ns", 3);
    let written = write_report(&out, &md, Some(&raw));
    match written {
        Ok(files) => {
            eprintln!("prof_rust: wrote {}", written_files(&files));
            if measured.failures.is_empty() {
                ExitCode::SUCCESS
            } else {
                ExitCode::FAILURE
            }
        }
        Err(error) => {
            eprintln!("prof_rust: cannot write {}: {error}", out.display());
            ExitCode::FAILURE
        }
    }
}
