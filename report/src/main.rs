//! The `tally` command. `tally report` reads a heap dump and prints where live memory was
//! allocated; see `docs/report.md`. Errors print as one line, `tally: FILE:LINE: what is wrong`,
//! and exit with code 2; warnings (a mapped file that is gone) print as `tally: warning: …` and
//! do not stop the report.

use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::{ArgGroup, Args, Parser, Subcommand};
use regex::Regex;
use tally_report::profile::{Granularity, SampleType};
use tally_report::{report, Error, Output, ReportOptions, BROKEN_PIPE};

#[derive(Parser)]
#[command(name = "tally", version, about = "Tally's heap profile tool")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Report where the live memory of a heap dump (heap_v2, from Tally or jemalloc) was
    /// allocated.
    Report(ReportArgs),
}

#[derive(Args)]
#[command(group(ArgGroup::new("output").args(["text", "collapsed"])))]
#[command(group(ArgGroup::new("sample").args(["inuse_space", "inuse_objects", "alloc_space", "alloc_objects"])))]
struct ReportArgs {
    /// Flat and cumulative table, like `jeprof --text` (the default).
    #[arg(long)]
    text: bool,
    /// Folded stacks (`root;caller;callee value`) for flame graph tools.
    #[arg(long)]
    collapsed: bool,
    /// Print at most N rows.
    #[arg(long, value_name = "N")]
    top: Option<usize>,
    /// One row per source line rather than per function.
    #[arg(long)]
    lines: bool,
    /// Sort by cumulative rather than flat value.
    #[arg(long)]
    cum: bool,
    /// Live bytes (the default).
    #[arg(long, alias = "inuse_space")]
    inuse_space: bool,
    /// Live objects.
    #[arg(long, alias = "inuse_objects")]
    inuse_objects: bool,
    /// Bytes allocated over the run (needs prof_accum:true).
    #[arg(long, alias = "alloc_space")]
    alloc_space: bool,
    /// Objects allocated over the run (needs prof_accum:true).
    #[arg(long, alias = "alloc_objects")]
    alloc_objects: bool,
    /// Print bytes, not MiB.
    #[arg(long, alias = "show_bytes")]
    show_bytes: bool,
    /// Keep only stacks with a function or file:line matching RE.
    #[arg(long, value_name = "RE")]
    focus: Option<String>,
    /// Drop stacks with a function or file:line matching RE.
    #[arg(long, value_name = "RE")]
    ignore: Option<String>,
    /// Subtract this older dump and show the growth since.
    #[arg(long, value_name = "OLD.heap")]
    base: Option<PathBuf>,
    /// Where separate debug files live (repeatable; default /usr/lib/debug).
    #[arg(long = "debug-dir", value_name = "DIR")]
    debug_dirs: Vec<PathBuf>,
    /// [BINARY] DUMP: the program (optional; the dump names its files) and the dump.
    #[arg(value_name = "[BINARY] DUMP", num_args = 1..=2, required = true)]
    files: Vec<PathBuf>,
}

fn regex(option: &str, pattern: Option<String>) -> Result<Option<Regex>, Error> {
    pattern
        .map(|p| {
            Regex::new(&p).map_err(|e| {
                let first = e.to_string().lines().last().unwrap_or("").trim().to_string();
                Error::new(format!("{option} {p:?}: not a regular expression ({first})"))
            })
        })
        .transpose()
}

fn report_options(args: ReportArgs) -> Result<ReportOptions, Error> {
    let mut files = args.files;
    let dump = files.pop().expect("clap requires one file");
    let binary = files.pop();
    let sample = if args.inuse_objects {
        SampleType::InuseObjects
    } else if args.alloc_space {
        SampleType::AllocSpace
    } else if args.alloc_objects {
        SampleType::AllocObjects
    } else {
        SampleType::InuseSpace
    };
    Ok(ReportOptions {
        dump,
        binary,
        base: args.base,
        output: if args.collapsed {
            Output::Collapsed
        } else {
            Output::Text
        },
        sample,
        granularity: if args.lines {
            Granularity::Lines
        } else {
            Granularity::Functions
        },
        top: args.top,
        sort_by_cumulative: args.cum,
        show_bytes: args.show_bytes,
        focus: regex("--focus", args.focus)?,
        ignore: regex("--ignore", args.ignore)?,
        debug_dirs: args.debug_dirs,
    })
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Report(args) => report_options(args).and_then(|options| {
            let stdout = std::io::stdout();
            let mut out = std::io::BufWriter::new(stdout.lock());
            let stderr = std::io::stderr();
            let mut warn = |warning: &str| {
                let _ = writeln!(
                    stderr.lock(),
                    "tally: warning: {}",
                    tally_report::error::one_line(warning)
                );
            };
            report(&options, &mut out, &mut warn)
        }),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) if e.message == BROKEN_PIPE && e.path.is_none() => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("tally: {e}");
            ExitCode::from(2)
        }
    }
}
