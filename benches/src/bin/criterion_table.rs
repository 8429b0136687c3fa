//! Prints the comparison table of the Criterion benchmarks of the `GlobalAlloc` path from the
//! results Criterion wrote, and writes it to a file (see `docs/benchmarks.md` and
//! `tally_benches::criterion_report`). `benches/run-criterion.sh` runs it after the benchmarks.

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::{Duration, SystemTime};

use tally_benches::criterion_report::{markdown, parse_estimate, parse_peak_rss, Estimate, Table};
use tally_benches::criterion_suite::{
    allocator_of, HEAVY_SAMPLE_SIZE, MEASUREMENT, PEAK_RSS_FILE, SAMPLE_SIZE, WARM_UP,
};
use tally_benches::harness::{write_report, written_files, CommandLine, Machine};
use tally_benches::micro_report::crates_of;

const USAGE: &str = "\
usage: criterion_table [options]

Prints a Markdown table of Criterion's median time per iteration of every benchmark of the
criterion_<variant> targets, with ratios to system, also written to --out.

options:
  --dir PATH        Criterion's directory (default: $CRITERION_HOME, else <target dir>/criterion)
  --since SECONDS   only results written at or after this Unix time (those of one run)
  --args TEXT       the Criterion arguments of the run, for the report's settings line
  --out PATH        report file (default: <target dir>/bench/criterion.md)
";

struct Options {
    dir: Option<PathBuf>,
    since: Option<SystemTime>,
    args: String,
    out: Option<PathBuf>,
}

fn parse_args() -> Result<Options, String> {
    let mut options = Options {
        dir: std::env::var_os("CRITERION_HOME").map(PathBuf::from),
        since: None,
        args: String::new(),
        out: None,
    };
    let mut args = CommandLine::new(std::env::args().skip(1));
    while let Some(arg) = args.next_flag() {
        match arg.as_str() {
            "--dir" => options.dir = Some(PathBuf::from(args.value(&arg)?)),
            "--since" => {
                let text = args.value(&arg)?;
                let seconds = text
                    .parse::<u64>()
                    .map_err(|_| format!("--since: {text:?} is not a number of seconds"))?;
                options.since = Some(SystemTime::UNIX_EPOCH + Duration::from_secs(seconds));
            }
            "--args" => options.args = args.value(&arg)?,
            "--out" => options.out = Some(PathBuf::from(args.value(&arg)?)),
            "-h" | "--help" => {
                print!("{USAGE}");
                std::process::exit(0);
            }
            _ => return Err(format!("unknown argument {arg:?}\n\n{USAGE}")),
        }
    }
    Ok(options)
}

/// Every `new/` directory under `dir` that holds a result, read; unreadable results are reported
/// on stderr and skipped, and so are results older than `since`.
fn collect(dir: &Path, since: Option<SystemTime>, estimates: &mut Vec<Estimate>) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for entry in entries.flatten() {
        let path = entry.path();
        if !path.is_dir() {
            continue;
        }
        if path.file_name().is_some_and(|name| name == "new") {
            let estimates_path = path.join("estimates.json");
            let fresh = std::fs::metadata(&estimates_path)
                .and_then(|metadata| metadata.modified())
                .is_ok_and(|modified| since.is_none_or(|since| modified >= since));
            if !fresh {
                continue;
            }
            let read = |name: &str| std::fs::read_to_string(path.join(name)).map_err(|e| e.to_string());
            match read("benchmark.json")
                .and_then(|benchmark| parse_estimate(&benchmark, &read("estimates.json")?))
            {
                Ok(estimate) => estimates.push(estimate),
                Err(error) => eprintln!("criterion_table: skipping {}: {error}", path.display()),
            }
        } else {
            collect(&path, since, estimates);
        }
    }
}

fn main() -> ExitCode {
    let options = match parse_args() {
        Ok(options) => options,
        Err(message) => {
            eprintln!("criterion_table: {message}");
            return ExitCode::from(2);
        }
    };
    let (_, target_dir, workspace) = tally_benches::binary_target_and_workspace_dirs();
    let dir = options.dir.unwrap_or_else(|| target_dir.join("criterion"));
    let out = options
        .out
        .unwrap_or_else(|| target_dir.join("bench").join("criterion.md"));

    let mut estimates = Vec::new();
    collect(&dir, options.since, &mut estimates);
    let since = options.since.map_or(0, |since| {
        since
            .duration_since(SystemTime::UNIX_EPOCH)
            .map_or(0, |since| since.as_secs())
    });
    let peaks = std::fs::read_to_string(dir.join(PEAK_RSS_FILE))
        .map(|text| parse_peak_rss(&text, since))
        .unwrap_or_default();
    let table = Table::new(estimates, peaks);
    if table.estimates.is_empty() {
        eprintln!(
            "criterion_table: no results of the criterion_* targets in {}",
            dir.display()
        );
        return ExitCode::FAILURE;
    }

    let mut crates: Vec<&str> = table
        .samples
        .columns()
        .iter()
        .flat_map(|variant| crates_of(allocator_of(variant)).iter().copied())
        .collect();
    crates.dedup();
    let mut settings = format!(
        "Criterion, {} ms warm-up, {} ms measured, {SAMPLE_SIZE} samples per benchmark \
         ({HEAVY_SAMPLE_SIZE}, flat sampling, for the heavy ones)",
        WARM_UP.as_millis(),
        MEASUREMENT.as_millis()
    );
    let args = options.args.trim();
    if !args.is_empty() {
        settings.push_str(&format!(" unless these arguments change them: `{args}`"));
    }
    if args.split_whitespace().any(|arg| arg == "--quick") {
        settings.push_str(
            " (`--quick`: no warm-up, each benchmark until two timings agree within 5%, at least \
             100 ms, at most the measurement time)",
        );
    }
    let report = markdown(&table, &Machine::probe(&workspace, &crates, &[]), &settings);
    print!("{report}");
    match write_report(&out, &report, None) {
        Ok(files) => {
            eprintln!("criterion_table: wrote {}", written_files(&files));
            ExitCode::SUCCESS
        }
        Err(error) => {
            eprintln!("criterion_table: cannot write {}: {error}", out.display());
            ExitCode::FAILURE
        }
    }
}
