//! The `tally` command. `tally report` reads a heap dump and prints where live memory was
//! allocated, `tally leaks` ranks the stacks of a series of dumps by steady growth, `tally run`
//! runs a program under Tally's profiler and reports its final dump (and, with `--guard`, the
//! guarded-sampling report of a use-after-free, overflow or bad free it made); see
//! `docs/report.md`. Errors print as one line, `tally: FILE:LINE: what is wrong`, and exit with
//! code 2; warnings (a mapped file that is gone) print as `tally: warning: …` and do not stop the
//! report.
//!
//! `tally symbolize [FILE]` names the frames of a guarded-sampling report (see
//! [`tally_report::guard_report`]) with functions, files and lines. It is a filter: the report
//! from FILE or standard input to standard output. Its errors (an unreadable FILE, no frames in
//! it) print as `tally symbolize: …` and exit with code 1; an object it cannot read leaves its
//! frames as they were and is named in a warning at the end, `tally symbolize: cannot read
//! OBJECT: reason`.

// The doc comments of the argument structs are the command's `--help` text, written for a
// terminal (`<pid>`, `[BINARY]`), not for rustdoc.
#![allow(rustdoc::invalid_html_tags, rustdoc::broken_intra_doc_links)]

use std::ffi::OsString;
use std::io::{Read, Write};
use std::path::PathBuf;
use std::process::ExitCode;

use clap::{ArgGroup, Args, Parser, Subcommand};
use regex::Regex;
use tally_report::guard_report::symbolize_report;
use tally_report::profile::{Granularity, SampleType};
use tally_report::run::{run, RunOptions};
use tally_report::{leaks, report, split_binary, Error, LeaksOptions, Output, ReportOptions, BROKEN_PIPE};

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
    /// Rank the stacks of a series of dumps of one process by steady growth of live bytes.
    Leaks(LeaksArgs),
    /// Run a program under libtally.so with the profiler on, then report its final dump.
    Run(RunArgs),
    /// Name the frames of a guarded-sampling report (use-after-free, overflow, bad free) with
    /// functions, files and lines.
    #[command(long_about = SYMBOLIZE_ABOUT)]
    Symbolize(SymbolizeArgs),
    /// Write the manual pages, `tally.1` and `tally-<command>.1`, into DIR (for installing
    /// them: `scripts/install.sh`, the Debian package).
    #[command(hide = true)]
    GenerateMan {
        /// The directory to write them into (made if missing).
        dir: PathBuf,
    },
}

/// `tally symbolize --help`'s text (clap does not wrap it: its lines are short).
const SYMBOLIZE_ABOUT: &str = "\
Name the frames of a guarded-sampling report (use-after-free, overflow, bad free) with
functions, files and lines.

The allocator writes such a report to standard error (and to <prefix>.<pid>.guard with
guard_report:<prefix>), naming frames by their dynamic symbols only. Each frame line,
  #N 0xADDR [in SYMBOL+0xOFF] (OBJECT+0xVADDR)
found anywhere in a line, is looked up at VADDR-1 (the call; at VADDR for the faulting
instruction under `access at:`) in OBJECT's DWARF, or its
separate debug file, and symbol tables, and printed as
  #N 0xADDR in FUNCTION at FILE:LINE (OBJECT+0xVADDR)
after one line per inlined call, innermost first, ending in (inlined) instead of the object.
Every other line, and every frame that cannot be resolved, is copied unchanged; objects that
cannot be read are named on standard error at the end.

Exit status: 0; 1 when FILE cannot be read or holds no frame line.";

#[derive(Args)]
#[command(group(ArgGroup::new("output").args(["text", "collapsed", "pprof", "dot", "svg", "flame", "html"])))]
#[command(group(ArgGroup::new("sample").args(["inuse_space", "inuse_objects", "alloc_space", "alloc_objects"])))]
struct ReportArgs {
    /// Flat and cumulative table, like `jeprof --text` (the default).
    #[arg(long)]
    text: bool,
    /// Folded stacks (`root;caller;callee value`) for flame graph tools.
    #[arg(long)]
    collapsed: bool,
    /// Gzipped profile.proto for `go tool pprof`, Pyroscope, Parca (`-`: standard output).
    #[arg(long, value_name = "OUT.pb.gz")]
    pprof: Option<PathBuf>,
    /// The call graph in Graphviz's DOT language.
    #[arg(long, value_name = "OUT.dot")]
    dot: Option<PathBuf>,
    /// The call graph drawn as SVG by Graphviz's `dot`.
    #[arg(long, value_name = "OUT.svg")]
    svg: Option<PathBuf>,
    /// A flame graph SVG.
    #[arg(long, value_name = "OUT.svg")]
    flame: Option<PathBuf>,
    /// One self-contained HTML page: top table, flame graph, growth chart for a series.
    #[arg(long, value_name = "OUT.html")]
    html: Option<PathBuf>,
    /// Print at most N rows.
    #[arg(long, value_name = "N", value_parser = at_least_one, allow_negative_numbers = true)]
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
    /// lg_prof_interval of a series of interval dumps (--html's growth chart over bytes allocated).
    #[arg(long = "lg-interval", value_name = "N", value_parser = lg_interval, allow_negative_numbers = true)]
    lg_interval: Option<u32>,
    /// Where separate debug files live (repeatable; default /usr/lib/debug).
    #[arg(long = "debug-dir", value_name = "DIR")]
    debug_dirs: Vec<PathBuf>,
    /// The perf map naming JIT code (JVM, node), instead of /tmp/perf-<pid>.map of the dump's pid.
    #[arg(long = "perf-map", value_name = "FILE")]
    perf_map: Option<PathBuf>,
    /// [BINARY] DUMP...: the program (optional; the dump names its files) and the dump (several
    /// with --html: a series, the report on the last).
    #[arg(value_name = "[BINARY] DUMP", num_args = 1.., required = true)]
    files: Vec<PathBuf>,
}

#[derive(Args)]
struct LeaksArgs {
    /// Also write an HTML report with the chart of the suspects' live bytes.
    #[arg(long, value_name = "OUT.html")]
    html: Option<PathBuf>,
    /// lg_prof_interval of the interval dumps, for growth per GiB allocated (not needed when the
    /// dumps carry cumulative counts, prof_accum:true).
    #[arg(long = "lg-interval", value_name = "N", value_parser = lg_interval, allow_negative_numbers = true)]
    lg_interval: Option<u32>,
    /// Show at most N suspects.
    #[arg(long, value_name = "N", default_value_t = 10, value_parser = at_least_one, allow_negative_numbers = true)]
    top: usize,
    /// Show at most N frames of each suspect's stack.
    #[arg(long, value_name = "N", default_value_t = 12, value_parser = at_least_one, allow_negative_numbers = true)]
    depth: usize,
    /// Name frames by function and source line.
    #[arg(long)]
    lines: bool,
    /// Least R² of a steady grower's line.
    #[arg(long = "min-r2", value_name = "R2", default_value_t = 0.8, value_parser = fraction, allow_negative_numbers = true)]
    min_r2: f64,
    /// Where separate debug files live (repeatable; default /usr/lib/debug).
    #[arg(long = "debug-dir", value_name = "DIR")]
    debug_dirs: Vec<PathBuf>,
    /// The perf map naming JIT code (JVM, node), instead of /tmp/perf-<pid>.map of the dumps' pid.
    #[arg(long = "perf-map", value_name = "FILE")]
    perf_map: Option<PathBuf>,
    /// [BINARY] DUMP...: the program (optional) and the dumps, e.g. prefix.*.i*.heap.
    #[arg(value_name = "[BINARY] DUMP", num_args = 1.., required = true)]
    files: Vec<PathBuf>,
}

#[derive(Args)]
struct RunArgs {
    /// More TALLY_CONF options, e.g. lg_prof_sample:12 (comma-separated).
    #[arg(long, value_name = "OPTS")]
    conf: Option<String>,
    /// Directory for the dumps (default: the current directory).
    #[arg(long, value_name = "DIR")]
    out: Option<PathBuf>,
    /// Print at most N rows.
    #[arg(long, value_name = "N", value_parser = at_least_one, allow_negative_numbers = true)]
    top: Option<usize>,
    /// One row per source line rather than per function.
    #[arg(long)]
    lines: bool,
    /// Do not add the flags that make a JVM (`java`) or node write perf maps and keep frame
    /// pointers (JAVA_TOOL_OPTIONS, NODE_OPTIONS).
    #[arg(long = "no-runtime-flags")]
    no_runtime_flags: bool,
    /// Guarded sampling: one allocation in N on average (default 100) between guard pages
    /// (guard_rate:N, guard_slots:512, guard_report:<DIR>/tally in TALLY_CONF, before --conf).
    /// The report of a use-after-free, overflow or bad free it catches
    /// (<DIR>/tally.<pid>.guard) is printed again to standard error with files and lines, as by
    /// `tally symbolize`, before the heap report.
    #[arg(
        long,
        value_name = "N",
        num_args = 0..=1,
        require_equals = true,
        default_missing_value = "100",
        value_parser = guard_rate,
    )]
    guard: Option<u64>,
    /// The program and its arguments.
    #[arg(
        value_name = "PROGRAM [ARGS]",
        required = true,
        trailing_var_arg = true,
        allow_hyphen_values = true
    )]
    command: Vec<OsString>,
}

#[derive(Args)]
struct SymbolizeArgs {
    /// Where separate debug files live (repeatable; default /usr/lib/debug).
    #[arg(long = "debug-dir", value_name = "DIR")]
    debug_dirs: Vec<PathBuf>,
    /// The report (standard input when absent or `-`).
    #[arg(value_name = "FILE")]
    file: Option<PathBuf>,
}

/// A `guard_rate` for `--guard`: a whole number, at least 1.
fn guard_rate(text: &str) -> Result<u64, String> {
    match text.trim().parse::<u64>() {
        Ok(0) => Err("0 would guard nothing: give a whole number of at least 1".into()),
        Ok(n) => Ok(n),
        Err(_) => Err("not a whole number of at least 1".into()),
    }
}

/// A count of rows, suspects or frames: a whole number, at least 1.
fn at_least_one(text: &str) -> Result<usize, String> {
    match text.trim().parse::<usize>() {
        Ok(0) => Err("0 would show nothing: give a whole number of at least 1".into()),
        Ok(n) => Ok(n),
        Err(_) => Err("not a whole number of at least 1".into()),
    }
}

/// An `lg_prof_interval`: 0 to 62, as the profiler's option takes it (dumps every 2^N bytes).
fn lg_interval(text: &str) -> Result<u32, String> {
    match text.trim().parse::<u32>() {
        Ok(n) if n <= 62 => Ok(n),
        _ => Err("not a whole number from 0 to 62 (a dump every 2^N bytes)".into()),
    }
}

/// An R² threshold: a number from 0 to 1 (NaN, infinities and anything outside are refused).
fn fraction(text: &str) -> Result<f64, String> {
    match text.trim().parse::<f64>() {
        Ok(x) if (0.0..=1.0).contains(&x) => Ok(x),
        _ => Err("not a number from 0 to 1".into()),
    }
}

/// Parses the command line. A bad value prints as one line, `tally: invalid value 'NaN' for
/// '--min-r2 <R2>': not a number from 0 to 1`, with exit code 2; every other usage error, help
/// and version are clap's.
fn parse_command_line() -> Result<Cli, ExitCode> {
    use clap::error::ErrorKind;
    Cli::try_parse().map_err(|e| match e.kind() {
        ErrorKind::ValueValidation | ErrorKind::InvalidValue => {
            let text = e.to_string();
            let first = text.lines().next().unwrap_or("invalid value");
            eprintln!("tally: {}", first.trim_start_matches("error: "));
            ExitCode::from(2)
        }
        _ => e.exit(),
    })
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

fn granularity(lines: bool) -> Granularity {
    if lines {
        Granularity::Lines
    } else {
        Granularity::Functions
    }
}

fn report_options(args: ReportArgs) -> Result<ReportOptions, Error> {
    let (binary, dumps) = split_binary(args.files);
    let sample = if args.inuse_objects {
        SampleType::InuseObjects
    } else if args.alloc_space {
        SampleType::AllocSpace
    } else if args.alloc_objects {
        SampleType::AllocObjects
    } else {
        SampleType::InuseSpace
    };
    let (output, output_file) = if let Some(path) = args.pprof {
        (Output::Pprof, Some(path))
    } else if let Some(path) = args.dot {
        (Output::Dot, Some(path))
    } else if let Some(path) = args.svg {
        (Output::Svg, Some(path))
    } else if let Some(path) = args.flame {
        (Output::Flame, Some(path))
    } else if let Some(path) = args.html {
        (Output::Html, Some(path))
    } else if args.collapsed {
        (Output::Collapsed, None)
    } else {
        (Output::Text, None)
    };
    Ok(ReportOptions {
        dumps,
        binary,
        base: args.base,
        output,
        output_file,
        sample,
        granularity: granularity(args.lines),
        top: args.top,
        sort_by_cumulative: args.cum,
        show_bytes: args.show_bytes,
        focus: regex("--focus", args.focus)?,
        ignore: regex("--ignore", args.ignore)?,
        debug_dirs: args.debug_dirs,
        lg_interval: args.lg_interval,
        perf_map: args.perf_map,
    })
}

fn leaks_options(args: LeaksArgs) -> LeaksOptions {
    let (binary, dumps) = split_binary(args.files);
    LeaksOptions {
        dumps,
        binary,
        debug_dirs: args.debug_dirs,
        lg_interval: args.lg_interval,
        top: args.top,
        depth: args.depth,
        granularity: granularity(args.lines),
        html: args.html,
        thresholds: tally_report::leaks::Thresholds {
            min_r2: args.min_r2,
            ..Default::default()
        },
        perf_map: args.perf_map,
    }
}

/// `tally symbolize`: the report from `args.file` (or standard input) to `out`, frames named.
/// Its errors are one line each, `tally symbolize: …`, with exit code 1.
fn symbolize(args: &SymbolizeArgs, out: &mut dyn Write) -> ExitCode {
    let fail = |message: String| {
        eprintln!("tally symbolize: {}", tally_report::error::one_line(&message));
        ExitCode::from(1)
    };
    let file = args.file.as_ref().filter(|f| f.as_os_str() != "-");
    let (name, read) = match file {
        Some(path) => (path.display().to_string(), std::fs::read(path)),
        None => {
            let mut text = Vec::new();
            let read = std::io::stdin().lock().read_to_end(&mut text).map(|_| text);
            ("standard input".to_string(), read)
        }
    };
    let text = match read {
        Ok(text) => text,
        Err(e) => return fail(format!("{name}: {}", tally_report::object_file::io_message(e))),
    };
    let symbolized = symbolize_report(&text, &args.debug_dirs);
    if symbolized.frames == 0 {
        return fail(format!(
            "no frames of a Tally guard report in {name} (lines like `#0 0x55f1d2a011a9 in f+0x20 (/path/to/program+0x11a9)`)"
        ));
    }
    let written = out.write_all(&symbolized.text).and_then(|()| out.flush());
    for warning in &symbolized.warnings {
        eprintln!("tally symbolize: {}", tally_report::error::one_line(warning));
    }
    match written {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => ExitCode::SUCCESS,
        Err(e) => fail(format!(
            "standard output: {}",
            tally_report::object_file::io_message(e)
        )),
    }
}

/// Writes the manual pages of `tally` and of each of its commands into `dir`, from the same
/// definitions as `--help`.
fn generate_man(dir: &std::path::Path) -> Result<(), Error> {
    use clap::CommandFactory;
    std::fs::create_dir_all(dir)
        .and_then(|()| clap_mangen::generate_to(Cli::command(), dir))
        .map_err(|e| Error::file(dir, tally_report::object_file::io_message(e)))
}

fn main() -> ExitCode {
    let cli = match parse_command_line() {
        Ok(cli) => cli,
        Err(code) => return code,
    };
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
    let mut code = None;
    let result = match cli.command {
        Command::Report(args) => {
            report_options(args).and_then(|options| report(&options, &mut out, &mut warn))
        }
        Command::Leaks(args) => leaks(&leaks_options(args), &mut out, &mut warn),
        Command::Symbolize(args) => return symbolize(&args, &mut out),
        Command::GenerateMan { dir } => generate_man(&dir),
        Command::Run(args) => {
            let options = RunOptions {
                command: args.command,
                conf: args.conf,
                out_dir: args.out,
                top: args.top,
                granularity: granularity(args.lines),
                no_runtime_flags: args.no_runtime_flags,
                guard: args.guard,
            };
            run(&options, &mut out, &mut std::io::stderr(), &mut warn).and_then(|outcome| {
                code = Some(outcome.code);
                outcome.error.map_or(Ok(()), Err)
            })
        }
    };
    let _ = out.flush();
    let code = code.map(|c| c.clamp(0, 255) as u8);
    match result {
        Ok(()) => ExitCode::from(code.unwrap_or(0)),
        Err(e) if e.message == BROKEN_PIPE && e.path.is_none() => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("tally: {e}");
            ExitCode::from(code.filter(|&c| c != 0).unwrap_or(2))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn writes_a_manual_page_per_command_from_the_help() {
        let dir = tempfile::tempdir().unwrap();
        let out = dir.path().join("man1");
        generate_man(&out).unwrap();
        let mut names: Vec<String> = std::fs::read_dir(&out)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        names.sort();
        assert_eq!(
            names,
            [
                "tally-leaks.1",
                "tally-report.1",
                "tally-run.1",
                "tally-symbolize.1",
                "tally.1"
            ]
        );
        let run = std::fs::read_to_string(out.join("tally-run.1")).unwrap();
        assert!(run.contains("\n.TH tally-run 1 "), "{run}");
        assert!(run.contains("\\-\\-conf"), "{run}");
        let top = std::fs::read_to_string(out.join("tally.1")).unwrap();
        assert!(top.contains("tally\\-report(1)"), "{top}");
        assert!(!top.contains("generate"), "the hidden command is listed: {top}");
    }

    fn guard_of(args: &[&str]) -> (Option<u64>, Vec<OsString>) {
        let cli = Cli::try_parse_from(args).unwrap_or_else(|e| panic!("{args:?}: {e}"));
        match cli.command {
            Command::Run(run) => (run.guard, run.command),
            _ => panic!("{args:?}: not run"),
        }
    }

    #[test]
    fn guard_takes_its_rate_only_after_an_equals_sign() {
        let program = |args: &[&str]| args.iter().map(OsString::from).collect::<Vec<_>>();
        assert_eq!(
            guard_of(&["tally", "run", "--guard", "prog", "7"]),
            (
                Some(tally_report::run::DEFAULT_GUARD_RATE),
                program(&["prog", "7"])
            )
        );
        assert_eq!(
            guard_of(&["tally", "run", "--guard=7", "--conf", "guard_slots:8", "prog"]),
            (Some(7), program(&["prog"]))
        );
        assert_eq!(
            guard_of(&["tally", "run", "prog", "--guard"]),
            (None, program(&["prog", "--guard"]))
        );
        for bad in ["--guard=0", "--guard=x", "--guard="] {
            assert!(
                Cli::try_parse_from(["tally", "run", bad, "prog"]).is_err(),
                "{bad}"
            );
        }
    }
}
