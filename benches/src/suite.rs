//! The benchmark suite (issue 6; `benches/run-suite.sh` builds what it needs and runs the binary
//! `suite`, which is [`main`]): every workload under every allocator through `LD_PRELOAD`, in
//! interleaved rounds with the order rotated each round ([`crate::harness::schedule`]). Each run
//! must exit 0 and print its workload's checksum line, and the checksum must be the same under
//! every allocator. It writes:
//!
//! - `<out>/suite.md`: median wall time and median peak RSS per workload and allocator, with
//!   ratios against glibc and their geometric means;
//! - `<out>/suite.svg`: the same ratios as a bar chart;
//! - `<out>/suite.raw.tsv`: every run (allocator, workload, round, seconds, peak RSS KiB, extra).
//!
//! # Why a launcher
//!
//! Each run goes through `workloads/measure.c`, a small C launcher that sets `LD_PRELOAD` in the
//! child only, so the runner itself never runs under the allocator measured, and reports the
//! child's wall time and `ru_maxrss` (peak RSS) from `wait4`. A child's `ru_maxrss` counts what
//! it had mapped before `exec`, so the process that forks it must be small: `measure` is about
//! 1 MiB.
//!
//! Glossary: *alt* = a second `libtally.so` given with `--alt-so`, the column `tally-alt`, to
//! compare two builds; *quick* = each workload's tiny arguments and one round, a smoke test.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode};
use std::time::Duration;

use crate::harness::{
    comparison_table, content_hash, library_line, noise_sentence, run_with_timeout, schedule,
    two_mode_sentence, Machine, MarkdownTable, Samples, MISSING,
};

/// Where Debian puts the peer allocators.
const LIBDIR: &str = "/usr/lib/x86_64-linux-gnu";

/// The column every ratio is taken against.
pub const BASELINE: &str = "glibc";

/// The library an allocator preloads.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Preload {
    /// Nothing: glibc's own malloc.
    Nothing,
    /// The `libtally.so` of `--tally-so`.
    Tally,
    /// The `libtally.so` of `--alt-so`.
    AltTally,
    /// A Debian package's library, a file name in `LIBDIR`.
    Peer(&'static str),
}

/// A column of the suite.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Allocator {
    /// The column's name.
    pub name: &'static str,
    /// What it preloads.
    pub preload: Preload,
    /// `TALLY_CONF` for its runs, if any (otherwise `TALLY_CONF` is unset).
    pub tally_conf: Option<&'static str>,
}

/// `TALLY_CONF` of the `tally-guard` column: guarded sampling at the rate `docs/guard.md`
/// recommends for production.
pub const GUARD_CONF: &str = "guard_rate:200000";

/// `TALLY_CONF` of the `tally-prof-http` column: the profiler with its HTTP endpoint on and
/// idle (nothing fetches from it during the runs), on a fixed loopback port.
pub const PROF_HTTP_CONF: &str = "prof:true,prof_http:127.0.0.1:46060";

/// Every allocator, in column order. `tally-alt` and `tally-alt-prof` run only with `--alt-so`
/// (the second only when listed); `tally-prof-http` only when listed.
pub const ALLOCATORS: [Allocator; 11] = [
    Allocator {
        name: "glibc",
        preload: Preload::Nothing,
        tally_conf: None,
    },
    Allocator {
        name: "tally",
        preload: Preload::Tally,
        tally_conf: None,
    },
    Allocator {
        name: "tally-prof",
        preload: Preload::Tally,
        tally_conf: Some("prof:true"),
    },
    Allocator {
        name: "tally-prof17",
        preload: Preload::Tally,
        tally_conf: Some("prof:true,lg_prof_sample:17"),
    },
    Allocator {
        name: "tally-guard",
        preload: Preload::Tally,
        tally_conf: Some(GUARD_CONF),
    },
    Allocator {
        name: "tally-prof-http",
        preload: Preload::Tally,
        tally_conf: Some(PROF_HTTP_CONF),
    },
    Allocator {
        name: "jemalloc",
        preload: Preload::Peer("libjemalloc.so.2"),
        tally_conf: None,
    },
    Allocator {
        name: "tally-alt",
        preload: Preload::AltTally,
        tally_conf: None,
    },
    Allocator {
        name: "tally-alt-prof",
        preload: Preload::AltTally,
        tally_conf: Some("prof:true"),
    },
    Allocator {
        name: "mimalloc",
        preload: Preload::Peer("libmimalloc.so.2"),
        tally_conf: None,
    },
    Allocator {
        name: "tcmalloc",
        preload: Preload::Peer("libtcmalloc_minimal.so.4"),
        tally_conf: None,
    },
];

/// How a workload runs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    /// A C program in `benches/workloads/`, built with `cc -O2 -pthread`.
    C,
    /// A script in `benches/programs/` run by `python3` with `PYTHONMALLOC=malloc`, so every
    /// object goes through the allocator under test.
    Python,
    /// An SQL script in `benches/programs/` fed to `sqlite3 :memory:` on stdin.
    Sqlite,
}

/// A row of the suite.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Workload {
    /// The row's name (and the C program's binary name).
    pub name: &'static str,
    /// How it runs.
    pub kind: Kind,
    /// Its source file.
    pub source: &'static str,
    /// Its arguments: each runs about 1-4 s under glibc on the project's 2-core VM.
    pub args: &'static [&'static str],
    /// Its arguments with `--quick`: a fraction of that, for smoke tests.
    pub quick_args: &'static [&'static str],
}

/// Every workload, in row order.
pub const WORKLOADS: [Workload; 13] = [
    Workload {
        name: "small_objects",
        kind: Kind::C,
        source: "small_objects.c",
        args: &["300", "20000"],
        quick_args: &["20", "5000"],
    },
    // Two threads (the cores of the reference VM): with four, which pairs share a core decided
    // the time more than the allocator did (0.56-1.30 s for one allocator).
    Workload {
        name: "larson",
        kind: Kind::C,
        source: "larson.c",
        args: &["2", "16000000", "2000"],
        quick_args: &["2", "200000", "500"],
    },
    Workload {
        name: "prodcons",
        kind: Kind::C,
        source: "prodcons.c",
        args: &["2", "4000000", "64"],
        quick_args: &["2", "100000", "64"],
    },
    Workload {
        name: "false_sharing",
        kind: Kind::C,
        source: "false_sharing.c",
        args: &["2", "1000", "100000"],
        quick_args: &["2", "50", "10000"],
    },
    Workload {
        name: "realloc_growth",
        kind: Kind::C,
        source: "realloc_growth.c",
        args: &["1000", "262144"],
        quick_args: &["50", "65536"],
    },
    Workload {
        name: "large_blocks",
        kind: Kind::C,
        source: "large_blocks.c",
        args: &["300", "300"],
        quick_args: &["20", "20"],
    },
    Workload {
        name: "fragmentation",
        kind: Kind::C,
        source: "fragmentation.c",
        args: &["4", "2000000"],
        quick_args: &["2", "100000"],
    },
    Workload {
        name: "thread_churn",
        kind: Kind::C,
        source: "thread_churn.c",
        args: &["8000", "4", "2000"],
        quick_args: &["300", "4", "500"],
    },
    // Peak RSS matters here as much as time: blocks outlive the thread that allocated them.
    Workload {
        name: "generations",
        kind: Kind::C,
        source: "generations.c",
        args: &["80", "4", "10000"],
        quick_args: &["4", "4", "1000"],
    },
    Workload {
        name: "size_churn",
        kind: Kind::C,
        source: "size_churn.c",
        args: &["32000000", "256"],
        quick_args: &["500000", "256"],
    },
    Workload {
        name: "prodcons_many",
        kind: Kind::C,
        source: "prodcons_many.c",
        args: &["2", "2", "2000000", "64"],
        quick_args: &["2", "2", "50000", "64"],
    },
    Workload {
        name: "python",
        kind: Kind::Python,
        source: "python_objects.py",
        args: &["4", "20000"],
        quick_args: &["1", "2000"],
    },
    Workload {
        name: "sqlite",
        kind: Kind::Sqlite,
        source: "sqlite_workload.sql",
        args: &[],
        quick_args: &[],
    },
];

/// The Debian packages whose versions the report gives.
const PACKAGES: [&str; 5] = [
    "libjemalloc2",
    "libmimalloc2.0",
    "libtcmalloc-minimal4",
    "python3",
    "sqlite3",
];

const USAGE: &str = "\
usage: suite [options]

Runs every workload under every allocator (LD_PRELOAD) in interleaved rounds, the order rotated
each round, checks the checksums, and writes suite.md, suite.svg and suite.raw.tsv to --out.
Exits 1 if a run failed or two allocators disagreed on a checksum, 2 on a usage error.

options:
  --rounds N          interleaved rounds (default 5)
  --quick             tiny arguments, 1 round: a smoke test
  --workloads A,B     default: all of small_objects,larson,prodcons,false_sharing,realloc_growth,
                      large_blocks,fragmentation,thread_churn,generations,size_churn,
                      prodcons_many,python,sqlite
  --allocators A,B    default: glibc,tally,tally-prof,tally-prof17,tally-guard,jemalloc,mimalloc,
                      tcmalloc
                      (tally-alt, a second libtally.so from --alt-so, is added with --alt-so;
                      tally-alt-prof, the same with prof:true, when listed;
                      tally-prof-http, prof:true with an idle prof_http endpoint, when listed)
  --tally-so PATH     default: <target dir>/release/libtally.so
  --alt-so PATH       a second libtally.so, columns tally-alt and tally-alt-prof
  --out DIR           default: <target dir>/bench
  --timeout-s S       a run taking longer is killed and counts as failed (default 300)
  --commands          run nothing: build the workloads into --out and print one line per
                      workload, tab-separated: name, stdin file (or empty), environment
                      (space-separated K=V, or empty), then the command's words (without an
                      allocator: for other tools to run, benches/run-prof-cost.sh --suite)
  --report-from RAW   run nothing: print the report of the runs in RAW, a suite.raw.tsv
                      this program wrote (its tables, and Tally against the targets)
";

/// What to run, from the command line.
#[derive(Clone, Debug, PartialEq)]
pub struct Options {
    /// Interleaved rounds.
    pub rounds: usize,
    /// Tiny arguments (and one round).
    pub quick: bool,
    /// The rows, in order.
    pub workloads: Vec<&'static Workload>,
    /// The columns, in order; the first need not be glibc, but glibc must be there.
    pub allocators: Vec<&'static Allocator>,
    /// The `libtally.so` of the `tally*` columns.
    pub tally_so: PathBuf,
    /// The `libtally.so` of `tally-alt`, if any.
    pub alt_so: Option<PathBuf>,
    /// Where the reports go (and the built workloads, under `workloads/`).
    pub out: PathBuf,
    /// The time limit of one run.
    pub timeout: Duration,
    /// Print the workloads' commands instead of running them ([`commands`]).
    pub commands: bool,
    /// Run nothing: report again the runs of this `suite.raw.tsv` ([`markdown_again`]).
    pub report_from: Option<PathBuf>,
}

/// The workspace root, and the cargo target directory (`CARGO_TARGET_DIR`, else
/// `<workspace>/target`) that the default paths are in.
fn workspace_and_target() -> (PathBuf, PathBuf) {
    let workspace = Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("workspace")
        .to_path_buf();
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map_or_else(|| workspace.join("target"), |dir| workspace.join(dir));
    (workspace, target)
}

/// Parses the command line (without the program name).
///
/// # Errors
///
/// A usage error, with the message to print; `Ok(None)` for `--help`.
pub fn parse_args(args: impl IntoIterator<Item = String>) -> Result<Option<Options>, String> {
    let (_, target) = workspace_and_target();
    let mut rounds = 5;
    let mut quick = false;
    let mut workloads: Vec<String> = WORKLOADS.iter().map(|w| w.name.to_string()).collect();
    let mut allocators: Vec<String> = ALLOCATORS
        .iter()
        .filter(|a| a.preload != Preload::AltTally && a.name != "tally-prof-http")
        .map(|a| a.name.to_string())
        .collect();
    let mut tally_so = target.join("release").join("libtally.so");
    let mut alt_so = None;
    let mut out = target.join("bench");
    let mut timeout = Duration::from_secs(300);
    let mut commands = false;
    let mut report_from = None;
    let list = |text: &str| -> Vec<String> {
        text.split(',')
            .map(str::trim)
            .filter(|part| !part.is_empty())
            .map(String::from)
            .collect()
    };
    let mut args = args.into_iter();
    while let Some(arg) = args.next() {
        // `--flag value` or `--flag=value`.
        let (flag, inline) = match arg.split_once('=') {
            Some((flag, value)) if flag.starts_with("--") => (flag.to_string(), Some(value.to_string())),
            _ => (arg.clone(), None),
        };
        let mut value = || {
            inline
                .clone()
                .or_else(|| args.next())
                .ok_or_else(|| format!("{flag} needs a value"))
        };
        match flag.as_str() {
            "--rounds" => {
                let text = value()?;
                rounds = text
                    .parse()
                    .map_err(|_| format!("--rounds: {text:?} is not a number"))?;
            }
            "--quick" => quick = true,
            "--workloads" => workloads = list(&value()?),
            "--allocators" => allocators = list(&value()?),
            "--tally-so" => tally_so = PathBuf::from(value()?),
            "--alt-so" => alt_so = Some(PathBuf::from(value()?)).filter(|path| !path.as_os_str().is_empty()),
            "--out" => out = PathBuf::from(value()?),
            "--timeout-s" => {
                let text = value()?;
                timeout = text
                    .parse::<f64>()
                    .ok()
                    .and_then(|seconds| Duration::try_from_secs_f64(seconds).ok())
                    .ok_or_else(|| format!("--timeout-s: {text:?} is not a number of seconds"))?;
            }
            "--commands" => commands = true,
            "--report-from" => report_from = Some(PathBuf::from(value()?)),
            "-h" | "--help" => return Ok(None),
            _ => return Err(format!("unknown argument {arg:?}\n\n{USAGE}")),
        }
    }
    if quick {
        rounds = 1;
    }
    if alt_so.is_some() && !allocators.iter().any(|a| a == "tally-alt") {
        allocators.push("tally-alt".to_string());
    }
    if allocators.iter().any(|a| a.starts_with("tally-alt")) && alt_so.is_none() {
        return Err("tally-alt and tally-alt-prof need --alt-so PATH".to_string());
    }
    let workloads = workloads
        .iter()
        .map(|name| {
            WORKLOADS.iter().find(|w| w.name == name).ok_or_else(|| {
                let known: Vec<&str> = WORKLOADS.iter().map(|w| w.name).collect();
                format!("unknown workload '{name}' (known: {})", known.join(", "))
            })
        })
        .collect::<Result<Vec<_>, _>>()?;
    let allocators = allocators
        .iter()
        .map(|name| {
            ALLOCATORS.iter().find(|a| a.name == name).ok_or_else(|| {
                let known: Vec<&str> = ALLOCATORS.iter().map(|a| a.name).collect();
                format!("unknown allocator '{name}' (known: {})", known.join(", "))
            })
        })
        .collect::<Result<Vec<_>, _>>()?;
    if !allocators.iter().any(|a| a.name == BASELINE) {
        return Err("the glibc column is the baseline of every ratio; keep it in --allocators".to_string());
    }
    if rounds < 1 {
        return Err("--rounds must be at least 1".to_string());
    }
    Ok(Some(Options {
        rounds,
        quick,
        workloads,
        allocators,
        tally_so,
        alt_so,
        out,
        timeout,
        commands,
        report_from,
    }))
}

/// What the `measure` launcher reported about one run.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Measured {
    /// Wall time of the child.
    pub seconds: f64,
    /// Its peak RSS (`ru_maxrss`), in KiB.
    pub maxrss_kib: u64,
    /// Its exit code, or 128 + the signal that killed it.
    pub status: i32,
}

/// Splits the launcher's stderr into its report (the last line, `measure: seconds=… maxrss_kib=…
/// status=…`) and the child's stderr before it; `None` as the report if the last line is not one.
pub fn parse_measure(stderr: &str) -> (Option<Measured>, String) {
    let trimmed = stderr.trim_end_matches('\n');
    let (before, last) = trimmed.rsplit_once('\n').unwrap_or(("", trimmed));
    let Some(rest) = last.strip_prefix("measure: ") else {
        return (None, trimmed.to_string());
    };
    let fields = key_values(rest);
    let measured = (|| {
        Some(Measured {
            seconds: fields.get("seconds")?.parse().ok()?,
            maxrss_kib: fields.get("maxrss_kib")?.parse().ok()?,
            status: fields.get("status")?.parse().ok()?,
        })
    })();
    (measured, before.to_string())
}

/// The `key=value` words of a line.
fn key_values(line: &str) -> BTreeMap<&str, &str> {
    line.split_whitespace()
        .filter_map(|word| word.split_once('='))
        .collect()
}

/// The checksum of the run's `workload=<name> ops=<n> checksum=<hex>` line, or `None`.
pub fn checksum(stdout: &str) -> Option<String> {
    stdout
        .lines()
        .filter(|line| line.starts_with("workload="))
        .find_map(|line| key_values(line).get("checksum").map(|sum| sum.to_string()))
}

/// The run's extra measurements: `final_rss_kib=` and `peak_rss_kib=` anywhere in its output.
pub fn extra_fields(stdout: &str) -> BTreeMap<String, u64> {
    let mut extra = BTreeMap::new();
    for line in stdout.lines() {
        for (key, value) in key_values(line) {
            if key == "final_rss_kib" || key == "peak_rss_kib" {
                if let Ok(value) = value.parse() {
                    extra.insert(key.to_string(), value);
                }
            }
        }
    }
    extra
}

/// Everything measured by one run of the suite.
#[derive(Clone, Debug)]
pub struct Results {
    /// Median-able wall times, in seconds.
    pub seconds: Samples,
    /// Peak RSS, in KiB.
    pub maxrss_kib: Samples,
    /// RSS of the fragmentation workload after it freed everything, in KiB.
    pub final_rss_kib: Samples,
    /// What went wrong, one line each.
    pub failures: Vec<String>,
}

impl Results {
    /// No results yet, with every row and column declared in order.
    pub fn new(workloads: &[&str], allocators: &[&str]) -> Results {
        let samples = || {
            let mut samples = Samples::new(allocators.iter().copied(), BASELINE);
            for workload in workloads {
                samples.add_row(workload);
            }
            samples
        };
        Results {
            seconds: samples(),
            maxrss_kib: samples(),
            final_rss_kib: samples(),
            failures: Vec::new(),
        }
    }
}

/// The report. `settings` is the line that says how the suite ran.
pub fn markdown(results: &Results, machine: &Machine, settings: &str) -> String {
    let mut out = String::from("# Benchmark suite\n\n");
    out.push_str(&machine.markdown_lines());
    let _ = writeln!(out, "- settings: {settings}");
    out.push_str(&sections(results));
    out
}

/// The report of the runs in `raw`, a `suite.raw.tsv` read from `path` ([`results_from_raw`]):
/// the tables of [`markdown`] under a head that names the file instead of the machine.
///
/// # Errors
///
/// As [`results_from_raw`].
pub fn markdown_again(raw: &str, path: &Path) -> Result<String, String> {
    let results = results_from_raw(raw)?;
    let rounds = results
        .seconds
        .rows()
        .iter()
        .flat_map(|row| {
            results
                .seconds
                .columns()
                .iter()
                .map(|column| results.seconds.values(column, row).len())
        })
        .max()
        .unwrap_or(0);
    let mut out = String::from("# Benchmark suite\n\n");
    let _ = writeln!(
        out,
        "- from the runs in {} (up to {rounds} a cell); medians; ratios against glibc (lower is better)",
        path.display()
    );
    out.push_str(&sections(&results));
    Ok(out)
}

/// Everything of the report below its head.
fn sections(results: &Results) -> String {
    let mut out = String::new();
    let _ = writeln!(out, "\n## Wall time (median seconds, ratio to glibc)\n");
    out.push_str(&comparison_table(&results.seconds, "workload", |s| format!("{s:.3}")).render());
    if let Some(noise) = noise_sentence(&results.seconds) {
        let _ = writeln!(out, "\n{noise}");
    }
    if let Some(modes) = two_mode_sentence(&results.seconds) {
        let _ = writeln!(out, "\n{modes}");
    }
    let _ = writeln!(out, "\n## Peak RSS (median MiB, ratio to glibc)\n");
    out.push_str(
        &comparison_table(&results.maxrss_kib, "workload", |kib| {
            format!("{:.1}", kib / 1024.0)
        })
        .render(),
    );
    if let Some(section) = targets(results) {
        let _ = writeln!(
            out,
            "\n## Tally against the targets (time within 5% of the fastest peer; peak RSS at most glibc's × 1.10 or the leanest peer's)\n"
        );
        out.push_str(&section);
    }
    if results
        .final_rss_kib
        .rows()
        .iter()
        .any(|row| row == "fragmentation")
    {
        let _ = writeln!(
            out,
            "\n## Fragmentation workload: RSS after everything is freed (median MiB)\n"
        );
        let columns = results.final_rss_kib.columns();
        let mut table = MarkdownTable::numbers(columns.iter().map(String::as_str));
        table.row(columns.iter().map(|column| {
            results
                .final_rss_kib
                .median(column, "fragmentation")
                .map_or_else(|| MISSING.to_string(), |kib| format!("{:.1}", kib / 1024.0))
        }));
        out.push_str(&table.render());
    }
    if let Some(table) = profiling_overhead(&results.seconds) {
        let _ = writeln!(
            out,
            "\n## Profiling and guarding overhead (median wall time with the profiler or guarded sampling on / off)\n"
        );
        out.push_str(&table.render());
    }
    if !results.failures.is_empty() {
        let _ = writeln!(out, "\n## Failures\n");
        for failure in &results.failures {
            let _ = writeln!(out, "- {failure}");
        }
    }
    out
}

/// The allocators the issue's targets hold Tally against: the C library's and the three peers'.
const PEERS: [&str; 4] = ["glibc", "jemalloc", "mimalloc", "tcmalloc"];
/// The column the targets are about.
const SUBJECT: &str = "tally";
/// "Within 5% of the fastest peer's time or better."
const TIME_SLACK: f64 = 1.05;
/// "Peak RSS at most glibc's × 1.10 or the leanest peer's, whichever is higher", and the suite's
/// geometric mean of RSS ratios at most this too.
const RSS_SLACK: f64 = 1.10;

/// Tally's column against the targets of the suite (`docs/benchmarks.md`): per workload, its
/// median time over the fastest peer's (glibc counts as one) and its median peak RSS against
/// the bound, then a count of each and the geometric means. `None` without a `tally` column or
/// any peer's.
pub fn targets(results: &Results) -> Option<String> {
    let (seconds, rss) = (&results.seconds, &results.maxrss_kib);
    let has = |column: &str| seconds.has_column(column);
    let peers: Vec<&str> = PEERS.into_iter().filter(|peer| has(peer)).collect();
    if !has(SUBJECT) || peers.is_empty() {
        return None;
    }
    let others: Vec<&str> = peers.iter().copied().filter(|&peer| peer != BASELINE).collect();
    let mut table = MarkdownTable::new([
        "workload",
        "fastest peer (s)",
        "tally / it",
        "time",
        "RSS bound (MiB)",
        "tally (MiB)",
        "RSS",
    ]);
    let verdict = |within: bool| (if within { "within" } else { "**over**" }).to_string();
    let (mut time_over, mut rss_over) = (Vec::new(), Vec::new());
    let (mut time_rows, mut rss_rows) = (0, 0);
    for row in seconds.rows() {
        let mut cells = vec![row.clone()];
        match (seconds.lowest_median(&peers, row), seconds.median(SUBJECT, row)) {
            (Some((peer, fastest)), Some(time)) => {
                let ratio = time / fastest;
                time_rows += 1;
                let within = ratio <= TIME_SLACK;
                if !within {
                    time_over.push(format!("`{row}` {ratio:.2}× {peer}"));
                }
                cells.extend([
                    format!("{fastest:.3} ({peer})"),
                    format!("{ratio:.3}×"),
                    verdict(within),
                ]);
            }
            _ => cells.extend([MISSING; 3].map(String::from)),
        }
        // The bound: glibc's × 1.10, or the leanest other peer's if that is higher.
        let glibc = rss
            .median(BASELINE, row)
            .map(|kib| (kib * RSS_SLACK, "glibc × 1.10"));
        let leanest = rss.lowest_median(&others, row).map(|(peer, kib)| (kib, peer));
        let bound = match (glibc, leanest) {
            (Some(g), Some(l)) => Some(if l.0 > g.0 { l } else { g }),
            (g, l) => g.or(l),
        };
        match (bound, rss.median(SUBJECT, row)) {
            (Some((bound, by)), Some(kib)) => {
                rss_rows += 1;
                let within = kib <= bound;
                if !within {
                    rss_over.push(format!(
                        "`{row}` {:.2} MiB against {:.2} ({by})",
                        kib / 1024.0,
                        bound / 1024.0
                    ));
                }
                cells.extend([
                    format!("{:.2} ({by})", bound / 1024.0),
                    format!("{:.2}", kib / 1024.0),
                    verdict(within),
                ]);
            }
            _ => cells.extend([MISSING; 3].map(String::from)),
        }
        table.row(cells);
    }
    let mut out = table.render();
    let over = |list: &[String]| {
        if list.is_empty() {
            String::new()
        } else {
            format!(" (over: {})", list.join(", "))
        }
    };
    let _ = writeln!(
        out,
        "\n- Time within 5% of the fastest peer (of {}) on {} of {time_rows}{}.",
        peers.join(", "),
        time_rows - time_over.len(),
        over(&time_over)
    );
    let _ = writeln!(
        out,
        "- Peak RSS within its bound on {} of {rss_rows}{}.",
        rss_rows - rss_over.len(),
        over(&rss_over)
    );
    if let Some(mean) = rss.geometric_mean_ratio(SUBJECT) {
        let _ = writeln!(
            out,
            "- Peak RSS geometric mean {mean:.2}× glibc (target at most {RSS_SLACK:.2}×): {}.",
            if mean <= RSS_SLACK { "met" } else { "not met" }
        );
    }
    let mean = |column: &str| seconds.geometric_mean_ratio(column);
    if let Some(tally) = mean(SUBJECT) {
        let lowest_peer = peers
            .iter()
            .filter_map(|&peer| Some((peer, mean(peer)?)))
            .min_by(|a, b| a.1.total_cmp(&b.1));
        let verdict = match lowest_peer {
            Some((peer, m)) if m < tally => format!("not the lowest ({peer} {m:.2}×)"),
            Some((peer, m)) => format!("the lowest (next: {peer} {m:.2}×)"),
            None => "no peer to compare".to_string(),
        };
        let _ = writeln!(out, "- Time geometric mean {tally:.2}× glibc: {verdict}.");
    }
    Some(out)
}

/// The first line of a `suite.raw.tsv`: its columns, one run a line after it.
const RAW_HEADER: &str = "allocator\tworkload\tround\tseconds\tpeak_rss_kib\textra";

/// The [`Results`] of a `suite.raw.tsv` (as [`run`] writes it: a header line, then one run a
/// line), for [`markdown`] to report again.
///
/// # Errors
///
/// The first line that is not a run, with its number.
pub fn results_from_raw(tsv: &str) -> Result<Results, String> {
    let mut runs = Vec::new();
    let mut lines = tsv.lines().enumerate();
    match lines.next() {
        Some((_, header)) if header == RAW_HEADER => {}
        _ => return Err("line 1: not the header of a suite.raw.tsv".to_string()),
    }
    for (index, line) in lines.filter(|(_, line)| !line.trim().is_empty()) {
        let fields: Vec<&str> = line.split('\t').collect();
        let parsed = (fields.len() >= 5)
            .then(|| {
                Some((
                    fields[0],
                    fields[1],
                    fields[2].parse::<usize>().ok().filter(|&round| round >= 1)?,
                    fields[3].parse::<f64>().ok()?,
                    fields[4].parse::<f64>().ok()?,
                    fields.get(5).copied().unwrap_or_default(),
                ))
            })
            .flatten();
        let Some(run) = parsed else {
            return Err(format!("line {}: not a run: {line:?}", index + 1));
        };
        runs.push(run);
    }
    let mut workloads: Vec<&str> = Vec::new();
    let mut allocators: Vec<&str> = Vec::new();
    for &(allocator, workload, ..) in &runs {
        if !workloads.contains(&workload) {
            workloads.push(workload);
        }
        if !allocators.contains(&allocator) {
            allocators.push(allocator);
        }
    }
    let mut results = Results::new(&workloads, &allocators);
    for (allocator, workload, round, seconds, kib, extra) in runs {
        results.seconds.add(allocator, workload, round - 1, seconds);
        results.maxrss_kib.add(allocator, workload, round - 1, kib);
        let final_kib = extra
            .split(',')
            .filter_map(|pair| pair.split_once('='))
            .find(|(key, _)| *key == "final_rss_kib")
            .and_then(|(_, value)| value.parse::<f64>().ok());
        if let Some(kib) = final_kib {
            results.final_rss_kib.add(allocator, workload, round - 1, kib);
        }
    }
    Ok(results)
}

/// The pairs of columns whose ratio is the profiler's or guarded sampling's cost: (on, off).
const PROFILER_PAIRS: [(&str, &str); 5] = [
    ("tally-prof", "tally"),
    ("tally-prof-http", "tally-prof"),
    ("tally-prof17", "tally"),
    ("tally-guard", "tally"),
    ("tally-alt-prof", "tally-alt"),
];

/// Per workload, the wall time with the profiler on over the time with it off, for every pair
/// of `PROFILER_PAIRS` that ran, and their geometric means; `None` when no pair ran.
pub fn profiling_overhead(seconds: &Samples) -> Option<MarkdownTable> {
    let has = |column: &str| seconds.has_column(column);
    let pairs: Vec<(&str, &str)> = PROFILER_PAIRS
        .into_iter()
        .filter(|&(on, off)| has(on) && has(off))
        .collect();
    if pairs.is_empty() {
        return None;
    }
    let ratio = |r: Option<f64>| r.map_or_else(|| MISSING.to_string(), |r| format!("{r:.3}×"));
    let header =
        std::iter::once("workload".to_string()).chain(pairs.iter().map(|(on, off)| format!("{on} / {off}")));
    let mut table = MarkdownTable::new(header);
    for row in seconds.rows() {
        table.row(
            std::iter::once(row.clone()).chain(
                pairs
                    .iter()
                    .map(|&(on, off)| ratio(seconds.ratio_to(on, off, row))),
            ),
        );
    }
    table.row(
        std::iter::once("geometric mean".to_string()).chain(
            pairs
                .iter()
                .map(|&(on, off)| ratio(seconds.geometric_mean_ratio_to(on, off))),
        ),
    );
    Some(table)
}

/// Two panels of grouped bars (time / glibc, peak RSS / glibc), log scale, a group per workload
/// and one for the geometric means, a bar per allocator.
pub fn svg(results: &Results) -> String {
    const COLORS: [&str; 7] = [
        "#888888", "#1f77b4", "#6baed6", "#9ecae1", "#d62728", "#2ca02c", "#ff7f0e",
    ];
    const BAR_HEIGHT: usize = 6;
    const GAP: usize = 10;
    const LABEL_WIDTH: f64 = 120.0;
    const PANEL_WIDTH: f64 = 360.0;
    const TOP: usize = 40;
    let allocators = results.seconds.columns();
    let mut rows: Vec<&str> = results.seconds.rows().iter().map(String::as_str).collect();
    rows.push("geomean");
    let group_height = BAR_HEIGHT * allocators.len() + GAP;
    let height = TOP + group_height * rows.len() + 40;
    let width = LABEL_WIDTH + 2.0 * PANEL_WIDTH + 80.0;
    let (low, high) = (0.125_f64.ln(), 8.0_f64.ln());
    let x_of =
        |ratio: f64, x0: f64| x0 + (ratio.clamp(0.125, 8.0).ln() - low) / (high - low) * (PANEL_WIDTH - 20.0);

    let mut parts = vec![
        format!(
            r#"<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" font-family="sans-serif" font-size="10">"#
        ),
        r#"<rect width="100%" height="100%" fill="white"/>"#.to_string(),
    ];
    let panels = [
        ("wall time / glibc (log scale, lower is better)", &results.seconds),
        (
            "peak RSS / glibc (log scale, lower is better)",
            &results.maxrss_kib,
        ),
    ];
    for (panel, (title, samples)) in panels.into_iter().enumerate() {
        let x0 = LABEL_WIDTH + panel as f64 * (PANEL_WIDTH + 20.0);
        parts.push(format!(r#"<text x="{x0}" y="14" font-size="12">{title}</text>"#));
        for tick in [0.25, 0.5, 1.0, 2.0, 4.0] {
            let x = x_of(tick, x0);
            let stroke = if tick == 1.0 { "#000" } else { "#ddd" };
            parts.push(format!(
                r#"<line x1="{x:.1}" y1="{}" x2="{x:.1}" y2="{}" stroke="{stroke}"/>"#,
                TOP - 8,
                height - 36
            ));
            parts.push(format!(
                r#"<text x="{x:.1}" y="{}" text-anchor="middle">{tick}×</text>"#,
                height - 24
            ));
        }
        for (index, row) in rows.iter().enumerate() {
            let y = TOP + index * group_height;
            if panel == 0 {
                parts.push(format!(
                    r#"<text x="{}" y="{:.1}" text-anchor="end">{row}</text>"#,
                    LABEL_WIDTH - 6.0,
                    y as f64 + group_height as f64 / 2.0
                ));
            }
            for (bar, allocator) in allocators.iter().enumerate() {
                let ratio = if *row == "geomean" {
                    samples.geometric_mean_ratio(allocator)
                } else {
                    samples.ratio(allocator, row)
                };
                let Some(ratio) = ratio.filter(|ratio| ratio.is_finite()) else {
                    continue;
                };
                let (x1, x2) = (x_of(1.0, x0), x_of(ratio, x0));
                parts.push(format!(
                    r#"<rect x="{:.1}" y="{}" width="{:.1}" height="{}" fill="{}"><title>{row} {allocator}: {ratio:.2}×</title></rect>"#,
                    x1.min(x2),
                    y + bar * BAR_HEIGHT,
                    (x2 - x1).abs().max(0.5),
                    BAR_HEIGHT - 1,
                    COLORS[bar % COLORS.len()]
                ));
            }
        }
    }
    let mut legend_x = LABEL_WIDTH;
    for (bar, allocator) in allocators.iter().enumerate() {
        parts.push(format!(
            r#"<rect x="{legend_x}" y="{}" width="10" height="8" fill="{}"/>"#,
            height - 14,
            COLORS[bar % COLORS.len()]
        ));
        parts.push(format!(
            r#"<text x="{}" y="{}">{allocator}</text>"#,
            legend_x + 13.0,
            height - 6
        ));
        legend_x += 14.0 + 7.0 * allocator.len() as f64 + 12.0;
    }
    parts.push("</svg>".to_string());
    parts.join("\n") + "\n"
}

/// The head of the report's lines on the two `libtally.so` files the run uses (`tally` for the
/// `tally*` columns, `tally-alt` for `--alt-so`): path, size, when written, content hash; and a
/// warning when the two are the same bytes, whose columns then compare a build with itself (a
/// build that did not write the alternate library again leaves it so, or stale: see its time).
fn library_lines(options: &Options) -> Vec<String> {
    let used = |kind: Preload| options.allocators.iter().any(|a| a.preload == kind);
    let mut lines = Vec::new();
    let tally_hash = if used(Preload::Tally) {
        let hash = content_hash(&options.tally_so);
        lines.push(library_line("tally", &options.tally_so, hash));
        hash
    } else {
        None
    };
    if let Some(alt) = options.alt_so.as_ref().filter(|_| used(Preload::AltTally)) {
        let hash = content_hash(alt);
        lines.push(library_line("tally-alt", alt, hash));
        if hash.is_some() && hash == tally_hash {
            lines.push(
                "warning: tally-alt is the same bytes as tally, so its columns compare a build with itself"
                    .to_string(),
            );
        }
    }
    lines
}

/// The library `allocator` preloads under `options`, or `None` for glibc.
fn preload(allocator: &Allocator, options: &Options) -> Option<PathBuf> {
    match allocator.preload {
        Preload::Nothing => None,
        Preload::Tally => Some(options.tally_so.clone()),
        Preload::AltTally => options.alt_so.clone(),
        Preload::Peer(file) => Some(Path::new(LIBDIR).join(file)),
    }
}

/// Builds `measure` and the C workloads of `workloads` into `bin_dir` with `$CC` (default `cc`).
fn build(workloads: &[&Workload], sources: &Path, bin_dir: &Path) -> Result<(), String> {
    std::fs::create_dir_all(bin_dir).map_err(|error| format!("{}: {error}", bin_dir.display()))?;
    let cc = std::env::var("CC").unwrap_or_else(|_| "cc".to_string());
    let programs = std::iter::once(("measure", "measure.c", false)).chain(
        workloads
            .iter()
            .filter(|w| w.kind == Kind::C)
            .map(|w| (w.name, w.source, true)),
    );
    for (name, source, threads) in programs {
        let mut command = Command::new(&cc);
        command.arg("-O2");
        if threads {
            command.arg("-pthread");
        }
        command
            .args(["-Wall", "-Wextra", "-Werror", "-o"])
            .arg(bin_dir.join(name))
            .arg(sources.join(source));
        let output = command
            .output()
            .map_err(|error| format!("cannot run {cc}: {error}"))?;
        if !output.status.success() {
            return Err(format!(
                "building {source} failed:\n{}",
                String::from_utf8_lossy(&output.stderr)
            ));
        }
    }
    Ok(())
}

/// The launcher's arguments after the preload and the stdin file, the stdin file, and the
/// workload's own environment.
fn command_of(
    workload: &Workload,
    workspace: &Path,
    bin_dir: &Path,
    quick: bool,
) -> (
    Vec<String>,
    Option<PathBuf>,
    &'static [(&'static str, &'static str)],
) {
    let args = if quick { workload.quick_args } else { workload.args };
    let args = args.iter().map(|arg| arg.to_string());
    let programs = workspace.join("benches").join("programs");
    match workload.kind {
        Kind::C => (
            std::iter::once(bin_dir.join(workload.name).display().to_string())
                .chain(args)
                .collect(),
            None,
            &[],
        ),
        Kind::Python => (
            [
                "python3".to_string(),
                programs.join(workload.source).display().to_string(),
            ]
            .into_iter()
            .chain(args)
            .collect(),
            None,
            &[("PYTHONMALLOC", "malloc"), ("PYTHONHASHSEED", "0")],
        ),
        Kind::Sqlite => (
            vec!["sqlite3".to_string(), ":memory:".to_string()],
            Some(programs.join(workload.source)),
            &[],
        ),
    }
}

/// Builds `options`' C workloads (and the launcher) into `workloads/` under `--out`; returns
/// that directory.
fn build_workloads(options: &Options, workspace: &Path) -> Result<PathBuf, String> {
    let bin_dir = options.out.join("workloads");
    build(
        &options.workloads,
        &workspace.join("benches").join("workloads"),
        &bin_dir,
    )?;
    Ok(bin_dir)
}

/// The `--commands` line of each of `options`' workloads (see the usage text), after building
/// them.
///
/// # Errors
///
/// If a workload does not build.
pub fn commands(options: &Options) -> Result<String, String> {
    let (workspace, _) = workspace_and_target();
    let bin_dir = build_workloads(options, &workspace)?;
    let mut lines = String::new();
    for workload in &options.workloads {
        let (argv, stdin, env) = command_of(workload, &workspace, &bin_dir, options.quick);
        let stdin = stdin.map(|path| path.display().to_string()).unwrap_or_default();
        let env: Vec<String> = env.iter().map(|(key, value)| format!("{key}={value}")).collect();
        let _ = writeln!(
            lines,
            "{}\t{stdin}\t{}\t{}",
            workload.name,
            env.join(" "),
            argv.join("\t")
        );
    }
    Ok(lines)
}

/// Drops `library`'s pages from the page cache (best effort), so that every allocator's library
/// is read from its file in the first round, as an installed one is. How a file came into the
/// cache decides how much of it a page fault maps: Linux (6.18 here) maps a whole large folio
/// around a fault, and a copy made with `cp` (a `--alt-so` kept aside) sits in large folios, so
/// its peak RSS counted 64 KiB windows of code the program never ran.
fn evict_from_page_cache(library: &Path) {
    let Ok(file) = std::fs::File::open(library) else {
        return;
    };
    // Dirty pages stay in the cache: write them first.
    let _ = file.sync_all();
    // SAFETY: `file` is an open descriptor for the whole call; the advice changes no data.
    unsafe {
        libc::posix_fadvise(
            std::os::fd::AsRawFd::as_raw_fd(&file),
            0,
            0,
            libc::POSIX_FADV_DONTNEED,
        );
    }
}

/// Runs the suite as `options` say; writes the reports and prints the Markdown. Returns whether
/// every run succeeded and every checksum agreed.
///
/// # Errors
///
/// If a preloaded library is missing, a workload does not build or a report cannot be written.
pub fn run(options: &Options) -> Result<bool, String> {
    let (workspace, _) = workspace_and_target();
    for allocator in &options.allocators {
        if let Some(library) = preload(allocator, options).filter(|library| !library.exists()) {
            return Err(format!(
                "{}: {} not found (benches/run-suite.sh builds Tally and installs the peers)",
                allocator.name,
                library.display()
            ));
        }
    }
    // Hashed before the eviction below: reading a library to hash it brings it into the page
    // cache again.
    let libraries = library_lines(options);
    for line in &libraries {
        eprintln!("{line}");
    }
    for library in options.allocators.iter().filter_map(|a| preload(a, options)) {
        evict_from_page_cache(&library);
    }
    let bin_dir = build_workloads(options, &workspace)?;

    let workload_names: Vec<&str> = options.workloads.iter().map(|w| w.name).collect();
    let allocator_names: Vec<&str> = options.allocators.iter().map(|a| a.name).collect();
    let mut results = Results::new(&workload_names, &allocator_names);
    let mut checksums: BTreeMap<&str, (String, &str)> = BTreeMap::new();
    let mut raw = format!("{RAW_HEADER}\n");
    for slot in schedule(options.rounds, options.workloads.len(), options.allocators.len()) {
        let (workload, allocator) = (options.workloads[slot.group], options.allocators[slot.column]);
        let (w, a, round) = (workload.name, allocator.name, slot.round + 1);
        let (argv, stdin, workload_env) = command_of(workload, &workspace, &bin_dir, options.quick);
        let mut command = Command::new(bin_dir.join("measure"));
        command
            .arg(preload(allocator, options).unwrap_or_default())
            .arg(stdin.unwrap_or_default())
            .args(argv)
            .env_remove("LD_PRELOAD")
            .env_remove("TALLY_CONF")
            .envs(workload_env.iter().copied());
        if let Some(conf) = allocator.tally_conf {
            command.env("TALLY_CONF", conf);
        }
        let done = run_with_timeout(&mut command, options.timeout);
        let (measured, child_stderr) = parse_measure(&done.stderr);
        let sum = checksum(&done.stdout);
        let failure = match (&done.status, measured, &sum) {
            (Err(reason), _, _) => Some(reason.clone()),
            (Ok(status), _, _) if !status.success() => Some(format!("launcher {status}")),
            (Ok(_), None, _) => Some("no report from the launcher".to_string()),
            (Ok(_), Some(measured), _) if measured.status != 0 => Some(format!("exit {}", measured.status)),
            (Ok(_), Some(_), None) => Some("no checksum line".to_string()),
            _ => None,
        };
        let (Some(measured), Some(sum), None) = (measured, sum, &failure) else {
            let why = failure.unwrap_or_default();
            let last = child_stderr.trim().lines().last().unwrap_or_default().to_string();
            results
                .failures
                .push(format!("{w} under {a}, round {round}: {why}: {last}"));
            eprintln!("  {w:15} {a:13} FAILED ({why})");
            continue;
        };
        let (first_sum, first_allocator) = checksums.entry(w).or_insert_with(|| (sum.clone(), a));
        if *first_sum != sum {
            results.failures.push(format!(
                "{w}: checksum {sum} under {a} but {first_sum} under {first_allocator}"
            ));
        }
        let extra = extra_fields(&done.stdout);
        results.seconds.add(a, w, slot.round, measured.seconds);
        results
            .maxrss_kib
            .add(a, w, slot.round, measured.maxrss_kib as f64);
        if let Some(&kib) = extra.get("final_rss_kib") {
            results.final_rss_kib.add(a, w, slot.round, kib as f64);
        }
        let extra: Vec<String> = extra
            .iter()
            .map(|(key, value)| format!("{key}={value}"))
            .collect();
        let _ = writeln!(
            raw,
            "{a}\t{w}\t{round}\t{:.4}\t{}\t{}",
            measured.seconds,
            measured.maxrss_kib,
            extra.join(",")
        );
        eprintln!(
            "  round {round}/{} {w:15} {a:13} {:7.3} s {:8.1} MiB",
            options.rounds,
            measured.seconds,
            measured.maxrss_kib as f64 / 1024.0
        );
    }

    let mut settings = format!(
        "{} interleaved round(s), the order rotated each round{}; medians; ratios against glibc \
         (lower is better)",
        options.rounds,
        if options.quick { " (--quick arguments)" } else { "" }
    );
    for line in &libraries {
        let _ = write!(settings, "\n- {line}");
    }
    let report = markdown(&results, &Machine::probe(&workspace, &[], &PACKAGES), &settings);
    let files = [
        ("suite.md", report.clone()),
        ("suite.raw.tsv", raw),
        ("suite.svg", svg(&results)),
    ];
    std::fs::create_dir_all(&options.out).map_err(|error| format!("{}: {error}", options.out.display()))?;
    for (name, text) in &files {
        let path = options.out.join(name);
        std::fs::write(&path, text).map_err(|error| format!("cannot write {}: {error}", path.display()))?;
    }
    print!("{report}");
    eprintln!(
        "written: {}",
        files
            .iter()
            .map(|(name, _)| options.out.join(name).display().to_string())
            .collect::<Vec<_>>()
            .join(", ")
    );
    Ok(results.failures.is_empty())
}

/// The `suite` binary: parses `args` (without the program name), runs, and says how it went:
/// 0 if every run passed, 1 if one failed, 2 on a usage or setup error.
pub fn main(args: impl IntoIterator<Item = String>) -> ExitCode {
    let options = match parse_args(args) {
        Ok(Some(options)) => options,
        Ok(None) => {
            print!("{USAGE}");
            return ExitCode::SUCCESS;
        }
        Err(message) => {
            eprintln!("suite: {message}");
            return ExitCode::from(2);
        }
    };
    if let Some(path) = &options.report_from {
        let report = std::fs::read_to_string(path)
            .map_err(|error| format!("{}: {error}", path.display()))
            .and_then(|raw| {
                markdown_again(&raw, path).map_err(|error| format!("{}: {error}", path.display()))
            });
        return match report {
            Ok(report) => {
                print!("{report}");
                ExitCode::SUCCESS
            }
            Err(message) => {
                eprintln!("suite: {message}");
                ExitCode::from(2)
            }
        };
    }
    if options.commands {
        return match commands(&options) {
            Ok(lines) => {
                print!("{lines}");
                ExitCode::SUCCESS
            }
            Err(message) => {
                eprintln!("suite: {message}");
                ExitCode::from(2)
            }
        };
    }
    match run(&options) {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::FAILURE,
        Err(message) => {
            eprintln!("suite: {message}");
            ExitCode::from(2)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Pages of `path` in the page cache, by `mincore` over a mapping of it.
    fn cached_pages(path: &Path) -> usize {
        let file = std::fs::File::open(path).unwrap();
        let len = file.metadata().unwrap().len() as usize;
        let page = 4096;
        let mut vec = vec![0u8; len.div_ceil(page)];
        // SAFETY: a private read-only mapping of an open file, unmapped before returning; `vec`
        // has a byte per page of it.
        unsafe {
            let fd = std::os::fd::AsRawFd::as_raw_fd(&file);
            let map = libc::mmap(
                std::ptr::null_mut(),
                len,
                libc::PROT_READ,
                libc::MAP_PRIVATE,
                fd,
                0,
            );
            assert_ne!(map, libc::MAP_FAILED);
            assert_eq!(libc::mincore(map, len, vec.as_mut_ptr()), 0);
            libc::munmap(map, len);
        }
        vec.iter().filter(|&&b| b & 1 != 0).count()
    }

    #[test]
    fn a_library_leaves_the_page_cache_before_the_rounds() {
        // Under the target directory, on a disk: a tmpfs file has no pages to give back.
        let dir = workspace_and_target()
            .1
            .join(format!("suite-evict-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("lib.so");
        std::fs::write(&path, vec![7u8; 1 << 20]).unwrap();
        assert!(
            cached_pages(&path) > 0,
            "a file just written is in the page cache"
        );
        evict_from_page_cache(&path);
        let left = cached_pages(&path);
        std::fs::remove_dir_all(&dir).unwrap();
        assert_eq!(left, 0, "pages of the file still cached");
        // A missing library is left to `run`'s check, not a panic here.
        evict_from_page_cache(&dir.join("missing.so"));
    }

    fn args(text: &str) -> Result<Option<Options>, String> {
        parse_args(text.split_whitespace().map(String::from))
    }

    #[test]
    fn the_report_names_each_library_and_says_when_the_alternate_is_the_same_build() {
        let (dir, [main, copy, other]) =
            crate::harness::test_libraries("suite-libs", b"one build", b"another build");
        let with = |alt: &Path, allocators: &str| {
            let text = format!(
                "--allocators {allocators} --tally-so {} --alt-so {}",
                main.display(),
                alt.display()
            );
            library_lines(&args(&text).unwrap().unwrap())
        };
        let same = with(&copy, "glibc,tally,tally-alt");
        assert_eq!(same.len(), 3, "{same:?}");
        assert!(same[0].starts_with(&format!("tally: {}, 9 bytes, written ", main.display())));
        assert!(same[1].starts_with(&format!("tally-alt: {}, 9 bytes, written ", copy.display())));
        assert!(same[2].starts_with("warning: tally-alt is the same bytes as tally"));
        let differ = with(&other, "glibc,tally,tally-alt");
        assert_eq!(differ.len(), 2, "{differ:?}");
        assert!(differ[1].starts_with(&format!("tally-alt: {}, 13 bytes", other.display())));
        // Only the libraries of the columns that run: glibc and the alternate alone.
        let alone = with(&copy, "glibc,tally-alt");
        assert_eq!(alone.len(), 1, "{alone:?}");
        assert!(alone[0].starts_with("tally-alt: "));
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn command_line_defaults_and_checks() {
        let options = args("").unwrap().unwrap();
        assert_eq!(options.rounds, 5);
        assert_eq!(options.workloads.len(), WORKLOADS.len());
        let names: Vec<&str> = options.allocators.iter().map(|a| a.name).collect();
        assert_eq!(
            names,
            [
                "glibc",
                "tally",
                "tally-prof",
                "tally-prof17",
                "tally-guard",
                "jemalloc",
                "mimalloc",
                "tcmalloc"
            ]
        );
        let quick = args("--rounds 9 --quick --workloads larson,sqlite --allocators=glibc,tally")
            .unwrap()
            .unwrap();
        assert_eq!((quick.rounds, quick.quick), (1, true));
        assert_eq!(
            quick.workloads.iter().map(|w| w.name).collect::<Vec<_>>(),
            ["larson", "sqlite"]
        );
        let alt = args("--allocators glibc --alt-so /x/libtally.so --timeout-s 2.5")
            .unwrap()
            .unwrap();
        assert_eq!(
            alt.allocators.iter().map(|a| a.name).collect::<Vec<_>>(),
            ["glibc", "tally-alt"]
        );
        assert_eq!(alt.timeout, Duration::from_millis(2500));
        assert!(args("--allocators glibc,tally-alt")
            .unwrap_err()
            .contains("--alt-so"));
        assert!(args("--allocators glibc,tally-alt-prof")
            .unwrap_err()
            .contains("--alt-so"));
        let both = args("--allocators glibc,tally-prof,tally-alt-prof --alt-so /x/libtally.so")
            .unwrap()
            .unwrap();
        let conf: Vec<_> = both.allocators.iter().map(|a| (a.name, a.tally_conf)).collect();
        assert_eq!(
            conf,
            [
                ("glibc", None),
                ("tally-prof", Some("prof:true")),
                ("tally-alt-prof", Some("prof:true")),
                ("tally-alt", None)
            ]
        );
        assert!(args("--allocators tally").unwrap_err().contains("baseline"));
        assert!(args("--workloads nope")
            .unwrap_err()
            .contains("unknown workload 'nope'"));
        assert!(args("--allocators glibc,nope")
            .unwrap_err()
            .contains("unknown allocator"));
        assert!(args("--rounds 0").unwrap_err().contains("at least 1"));
        assert!(args("--rounds").unwrap_err().contains("needs a value"));
        assert!(args("--bogus").is_err());
        assert_eq!(args("--help").unwrap(), None);
    }

    #[test]
    fn commands_name_each_workload_its_arguments_stdin_and_environment() {
        let out = std::env::temp_dir().join(format!("tally-suite-commands-{}", std::process::id()));
        let options = args(&format!(
            "--commands --quick --workloads larson,python,sqlite --out {}",
            out.display()
        ))
        .unwrap()
        .unwrap();
        assert!(options.commands);
        let text = commands(&options).unwrap();
        let lines: Vec<Vec<&str>> = text.lines().map(|line| line.split('\t').collect()).collect();
        assert_eq!(lines.len(), 3, "{text}");
        let larson = &lines[0];
        assert_eq!(larson[..3], ["larson", "", ""]);
        assert_eq!(
            larson[3],
            out.join("workloads").join("larson").display().to_string()
        );
        let quick = WORKLOADS.iter().find(|w| w.name == "larson").unwrap().quick_args;
        assert_eq!(larson[4..], *quick);
        // The printed command runs as it is, and prints the workload's checksum line.
        let ran = Command::new(larson[3]).args(&larson[4..]).output().unwrap();
        assert!(ran.status.success());
        assert!(checksum(&String::from_utf8_lossy(&ran.stdout)).is_some());
        let python = &lines[1];
        assert_eq!(python[0], "python");
        assert_eq!(python[2], "PYTHONMALLOC=malloc PYTHONHASHSEED=0");
        assert_eq!(python[3], "python3");
        assert!(Path::new(python[4]).is_file(), "{}", python[4]);
        let sqlite = &lines[2];
        assert_eq!(
            (sqlite[0], sqlite[3], sqlite[4]),
            ("sqlite", "sqlite3", ":memory:")
        );
        assert!(Path::new(sqlite[1]).is_file(), "stdin {}", sqlite[1]);
        std::fs::remove_dir_all(&out).unwrap();
    }

    #[test]
    fn reads_the_launcher_and_the_workload() {
        let (measured, before) =
            parse_measure("warning: x\nmeasure: seconds=1.250000 maxrss_kib=2048 status=0\n");
        assert_eq!(
            measured,
            Some(Measured {
                seconds: 1.25,
                maxrss_kib: 2048,
                status: 0
            })
        );
        assert_eq!(before, "warning: x");
        assert_eq!(parse_measure("measure: seconds=1 status=0\n").0, None);
        assert_eq!(
            parse_measure("Segmentation fault\n"),
            (None, "Segmentation fault".to_string())
        );
        let out =
            "noise checksum=1\nworkload=fragmentation ops=3 checksum=00ff peak_rss_kib=10 final_rss_kib=7\n";
        assert_eq!(checksum(out).as_deref(), Some("00ff"));
        assert_eq!(checksum("workload=x ops=1\n"), None);
        let extra = extra_fields(out);
        assert_eq!(extra.get("final_rss_kib"), Some(&7));
        assert_eq!(extra.get("peak_rss_kib"), Some(&10));
        assert_eq!(extra.len(), 2);
    }

    fn results() -> Results {
        let mut results = Results::new(&["larson", "fragmentation"], &["glibc", "tally"]);
        for (round, scale) in [1.0, 1.2].into_iter().enumerate() {
            results.seconds.add("glibc", "larson", round, 2.0 * scale);
            results.seconds.add("tally", "larson", round, 1.0 * scale);
            results.maxrss_kib.add("glibc", "larson", round, 1024.0);
            results.maxrss_kib.add("tally", "larson", round, 2048.0);
        }
        results.seconds.add("glibc", "fragmentation", 0, 1.0);
        results.maxrss_kib.add("glibc", "fragmentation", 0, 4096.0);
        results.final_rss_kib.add("glibc", "fragmentation", 0, 512.0);
        results
            .failures
            .push("fragmentation under tally, round 1: exit 139: ".to_string());
        results
    }

    #[test]
    fn report_tables_and_failures() {
        let md = markdown(&results(), &Machine::default(), "2 rounds");
        assert!(md.starts_with("# Benchmark suite\n"), "{md}");
        assert_eq!(md.matches("| workload | glibc | tally |").count(), 2, "{md}");
        assert!(md.contains("| larson | 2.200 (1.00×) | 1.100 (0.50×) |"), "{md}");
        assert!(md.contains("| fragmentation | 1.000 (1.00×) | – |"), "{md}");
        assert!(md.contains("| larson | 1.0 (1.00×) | 2.0 (2.00×) |"), "{md}");
        assert!(md.contains("| geometric mean | 1.00× | 0.50× |"), "{md}");
        assert!(
            md.contains("| glibc | tally |\n|---:|---:|\n| 0.5 | – |\n"),
            "{md}"
        );
        assert!(
            md.contains("\n## Failures\n\n- fragmentation under tally"),
            "{md}"
        );
        assert!(md.contains("Noise, as (max − min) / median"), "{md}");
    }

    #[test]
    fn profiling_overhead_is_on_over_off_per_pair_that_ran() {
        assert!(
            profiling_overhead(&results().seconds).is_none(),
            "no profiler column"
        );
        let mut results = Results::new(
            &["larson", "python"],
            &["glibc", "tally", "tally-prof", "tally-alt"],
        );
        for (column, larson, python) in [
            ("glibc", 4.0, 4.0),
            ("tally", 2.0, 1.0),
            ("tally-prof", 2.2, 1.0),
            ("tally-alt", 1.0, 1.0),
        ] {
            results.seconds.add(column, "larson", 0, larson);
            results.seconds.add(column, "python", 0, python);
        }
        let md = markdown(&results, &Machine::default(), "1 round");
        assert!(md.contains("## Profiling and guarding overhead"), "{md}");
        // Only tally-prof / tally ran (tally-prof17, tally-guard and tally-alt-prof did not).
        assert!(md.contains("| workload | tally-prof / tally |\n"), "{md}");
        assert!(md.contains("| larson | 1.100× |\n| python | 1.000× |\n"), "{md}");
        // The geometric mean of 1.1 and 1.0.
        assert!(
            md.contains(&format!("| geometric mean | {:.3}× |", 1.1f64.sqrt())),
            "{md}"
        );
    }

    /// Two workloads under the C library, Tally and the three peers, medians as given (one
    /// round): `slow` where glibc is the fastest and Tally 6% over it, its RSS over glibc's
    /// × 1.10; `quick` where Tally is 4% over mimalloc, its RSS under the leanest peer's.
    fn target_results() -> Results {
        let mut results = Results::new(
            &["slow", "quick"],
            &["glibc", "tally", "tally-prof", "jemalloc", "mimalloc", "tcmalloc"],
        );
        for (column, slow, quick) in [
            ("glibc", (1.0, 1000.0), (2.0, 1000.0)),
            ("tally", (1.06, 1120.0), (0.52, 1290.0)),
            // A Tally variant is not a peer: faster and leaner than all, it changes nothing.
            ("tally-prof", (0.1, 10.0), (0.1, 10.0)),
            ("jemalloc", (1.2, 1200.0), (0.9, 1400.0)),
            ("mimalloc", (1.3, 1050.0), (0.5, 1300.0)),
            ("tcmalloc", (1.1, 2000.0), (0.6, 1500.0)),
        ] {
            for (row, (seconds, kib)) in [("slow", slow), ("quick", quick)] {
                results.seconds.add(column, row, 0, seconds);
                results.maxrss_kib.add(column, row, 0, kib);
            }
        }
        results
    }

    #[test]
    fn targets_count_glibc_as_a_peer_and_bound_rss_by_the_higher_of_the_two() {
        let section = targets(&target_results()).unwrap();
        assert!(
            section.contains(
                "| slow | 1.000 (glibc) | 1.060× | **over** | 1.07 (glibc × 1.10) | 1.09 | **over** |"
            ),
            "{section}"
        );
        assert!(
            section
                .contains("| quick | 0.500 (mimalloc) | 1.040× | within | 1.27 (mimalloc) | 1.26 | within |"),
            "{section}"
        );
        assert!(
            section.contains(
                "- Time within 5% of the fastest peer (of glibc, jemalloc, mimalloc, tcmalloc) on 1 of 2 \
                 (over: `slow` 1.06× glibc)."
            ),
            "{section}"
        );
        assert!(
            section.contains(
                "- Peak RSS within its bound on 1 of 2 (over: `slow` 1.09 MiB against 1.07 (glibc × 1.10))."
            ),
            "{section}"
        );
        // RSS ratios 1.12 and 1.29; times 1.06 and 0.26 against mimalloc's 1.3 and 0.25
        // (tcmalloc's 1.1 and 0.3 make a higher mean).
        let rss = (1.12f64 * 1.29).sqrt();
        assert!(
            section.contains(&format!(
                "- Peak RSS geometric mean {rss:.2}× glibc (target at most 1.10×): not met."
            )),
            "{section}"
        );
        let (tally, mimalloc) = ((1.06f64 * 0.26).sqrt(), (1.3f64 * 0.25).sqrt());
        assert!(
            section.contains(&format!(
                "- Time geometric mean {tally:.2}× glibc: the lowest (next: mimalloc {mimalloc:.2}×)."
            )),
            "{section}"
        );
        // In the report, after the RSS table.
        let md = markdown(&target_results(), &Machine::default(), "1 round");
        let (rss_at, targets_at) = (
            md.find("## Peak RSS").unwrap(),
            md.find("## Tally against the targets").unwrap(),
        );
        assert!(rss_at < targets_at, "{md}");
    }

    #[test]
    fn targets_need_tally_and_a_peer() {
        let mut results = Results::new(&["slow"], &["glibc", "jemalloc"]);
        results.seconds.add("glibc", "slow", 0, 1.0);
        results.seconds.add("jemalloc", "slow", 0, 1.0);
        assert!(targets(&results).is_none());
        let mut results = Results::new(&["slow"], &["glibc", "tally"]);
        results.seconds.add("glibc", "slow", 0, 1.0);
        results.seconds.add("tally", "slow", 0, 0.5);
        results.maxrss_kib.add("glibc", "slow", 0, 1000.0);
        results.maxrss_kib.add("tally", "slow", 0, 1200.0);
        let section = targets(&results).unwrap();
        assert!(section.contains("on 1 of 1."), "{section}");
        assert!(
            section.contains("- Peak RSS within its bound on 0 of 1"),
            "{section}"
        );
    }

    #[test]
    fn a_raw_file_reports_again_as_it_was_measured() {
        let raw = "allocator\tworkload\tround\tseconds\tpeak_rss_kib\textra\n\
                   glibc\tfragmentation\t1\t1.0000\t4096\tfinal_rss_kib=512\n\
                   tally\tfragmentation\t1\t0.5000\t2048\tfinal_rss_kib=256,other=1\n\
                   glibc\tfragmentation\t2\t3.0000\t4096\tfinal_rss_kib=512\n\
                   tally\tfragmentation\t2\t0.7000\t3072\t\n\
                   glibc\tlarson\t1\t2.0000\t1024\t\n";
        let results = results_from_raw(raw).unwrap();
        assert_eq!(results.seconds.columns(), ["glibc", "tally"]);
        assert_eq!(results.seconds.rows(), ["fragmentation", "larson"]);
        assert_eq!(results.seconds.median("glibc", "fragmentation"), Some(2.0));
        assert_eq!(results.seconds.values("tally", "fragmentation"), [0.5, 0.7]);
        assert_eq!(results.maxrss_kib.median("tally", "fragmentation"), Some(2560.0));
        assert_eq!(results.final_rss_kib.values("tally", "fragmentation"), [256.0]);
        assert_eq!(results.seconds.median("tally", "larson"), None);
        let md = markdown_again(raw, Path::new("x/suite.raw.tsv")).unwrap();
        assert!(
            md.starts_with("# Benchmark suite\n\n- from the runs in x/suite.raw.tsv (up to 2 a cell)"),
            "{md}"
        );
        assert!(
            md.contains("| fragmentation | 2.000 (1.00×) | 0.600 (0.30×) |"),
            "{md}"
        );
        assert!(md.contains("## Tally against the targets"), "{md}");

        let bad =
            "allocator\tworkload\tround\tseconds\tpeak_rss_kib\textra\nglibc\tlarson\t1\tfast\t1024\t\n";
        assert_eq!(
            results_from_raw(bad).unwrap_err(),
            "line 2: not a run: \"glibc\\tlarson\\t1\\tfast\\t1024\\t\""
        );
        assert_eq!(
            results_from_raw("glibc\tlarson\t1\t1.0\t1024\t\n").unwrap_err(),
            "line 1: not the header of a suite.raw.tsv"
        );
        let truncated = "allocator\tworkload\tround\tseconds\tpeak_rss_kib\textra\nglibc\tlarson\t1\n";
        assert!(results_from_raw(truncated).unwrap_err().starts_with("line 2: "));
        assert_eq!(
            args("--report-from x.tsv").unwrap().unwrap().report_from,
            Some(PathBuf::from("x.tsv"))
        );
    }

    #[test]
    fn plot_has_a_bar_per_ratio() {
        let plot = svg(&results());
        assert!(plot.starts_with("<svg") && plot.ends_with("</svg>\n"));
        // Time: larson 2, fragmentation 1 (glibc), geomean 2; RSS the same.
        assert_eq!(plot.matches("<title>").count(), 10, "{plot}");
        assert!(plot.contains("<title>larson tally: 0.50×</title>"), "{plot}");
        assert!(plot.contains("<title>geomean tally: 2.00×</title>"), "{plot}");
        assert!(
            plot.contains(">1×</text>") && plot.contains(">0.25×</text>"),
            "{plot}"
        );
    }
}
