//! The benchmark harness every runner shares: the order of runs, the arithmetic over them, the
//! Markdown they are reported in and the machine they ran on, and the runners' command lines
//! ([`CommandLine`]) and report files ([`write_report`]). Five runners use it: the suite
//! (`suite`, programs under `LD_PRELOAD`), the malloc/free pair micro-benchmark (`micro_runner`),
//! the Criterion table (`criterion_table`), and, on the Criterion workloads without Criterion
//! (`crate::rust_once`), the profiler's cost (`prof_rust`) and Tally against the allocator crates
//! (`rust_crates`); each keeps only what is its own (what to run, how to read one run's output,
//! the prose of its report).
//!
//! # Why interleaved, rotated rounds and medians
//!
//! A 2-core machine shared with compilers and editors drifts over minutes (frequency, other
//! load, page cache). Running every column (allocator or setting) once per round, in turn, for
//! several rounds spreads that drift over all columns alike, and the median over rounds drops the
//! rounds that a burst of other load hit. Rotating the order each round ([`schedule`]) keeps any
//! column from always running first (cold caches) or always right after the same neighbour (whose
//! freed memory the kernel may still be reclaiming). The report gives the spread over rounds
//! ([`Summary::spread`], [`Samples::noise`]), so a reader can tell a difference from noise.
//!
//! # Two modes
//!
//! On the project's VM a threaded workload's round runs either fast or about three times slower
//! whatever the allocator (`larson`: 1.3-1.9 s or 3.9-7.1 s in one suite run), most likely by
//! where the host places the two vCPUs. A median of five such rounds compares how many rounds
//! fell in each mode. The report names the rows where several columns' rounds split so
//! ([`two_mode_rows`]).
//!
//! # Ratios and their geometric mean
//!
//! Every cell is reported against the same row's *baseline* column (glibc or `System`): a ratio
//! below 1 is better. Rows differ in scale by orders of magnitude, so the summary of a column is
//! the geometric mean of its ratios, which weighs a 2× win on one row the same as a 2× loss on
//! another (an arithmetic mean of ratios would not).
//!
//! Glossary: *column* = what is compared (an allocator, or an allocator with a setting); *row* =
//! what it is compared on (a workload or benchmark); *cell* = one column's samples on one row;
//! *round* = one pass over every column.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::io::Read;
use std::path::Path;
use std::process::{Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

/// What a cell with no value shows.
pub const MISSING: &str = "–";

/// One run of an interleaved benchmark: in `round`, row group `group` under column `column`
/// (indexes, all from 0).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Slot {
    /// The round, `0..rounds`.
    pub round: usize,
    /// The group of rows run together (a workload of the suite; the micro-benchmark's binaries
    /// run all their rows at once, so it has one group), `0..groups`.
    pub group: usize,
    /// The column, `0..columns`.
    pub column: usize,
}

/// Every run of `rounds` interleaved rounds over `groups` groups and `columns` columns, in the
/// order to run them: round by round, group by group, and within a group every column once,
/// rotated left by `round + group`. So over any `columns` consecutive rounds each column runs
/// once in each position of every group, and two groups of one round start with different
/// columns.
pub fn schedule(rounds: usize, groups: usize, columns: usize) -> Vec<Slot> {
    let mut slots = Vec::with_capacity(rounds * groups * columns);
    for round in 0..rounds {
        for group in 0..groups {
            for position in 0..columns {
                let column = (round + group + position) % columns;
                slots.push(Slot { round, group, column });
            }
        }
    }
    slots
}

/// The median of `values` (the mean of the middle two for an even count); `None` if empty.
pub fn median(values: &[f64]) -> Option<f64> {
    let mut sorted = values.to_vec();
    sorted.sort_by(f64::total_cmp);
    let n = sorted.len();
    match n {
        0 => None,
        _ if n % 2 == 1 => Some(sorted[n / 2]),
        _ => Some((sorted[n / 2 - 1] + sorted[n / 2]) / 2.0),
    }
}

/// The geometric mean of `values`; `None` if there are none or one is not finite and positive
/// (a ratio never is, so that is a bug upstream rather than something to average over).
pub fn geometric_mean(values: &[f64]) -> Option<f64> {
    if values.is_empty() || values.iter().any(|value| !(value.is_finite() && *value > 0.0)) {
        return None;
    }
    let log_sum: f64 = values.iter().map(|value| value.ln()).sum();
    Some((log_sum / values.len() as f64).exp())
}

/// The median and range of one cell's samples. Invariant: `min <= median <= max`, `count >= 1`.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Summary {
    /// [`median`] of the samples.
    pub median: f64,
    /// Smallest sample.
    pub min: f64,
    /// Largest sample.
    pub max: f64,
    /// Number of samples.
    pub count: usize,
}

impl Summary {
    /// The summary of `values`; `None` if empty.
    pub fn of(values: &[f64]) -> Option<Summary> {
        Some(Summary {
            median: median(values)?,
            min: values.iter().copied().fold(f64::INFINITY, f64::min),
            max: values.iter().copied().fold(f64::NEG_INFINITY, f64::max),
            count: values.len(),
        })
    }

    /// `(max - min) / median`; `None` with fewer than two samples.
    pub fn spread(&self) -> Option<f64> {
        (self.count >= 2).then(|| (self.max - self.min) / self.median)
    }
}

/// The noise of a table: the spread of its median cell and of its worst cell.
#[derive(Clone, Debug, PartialEq)]
pub struct Noise {
    /// The median of the cells' spreads.
    pub typical: f64,
    /// The largest spread.
    pub worst: f64,
    /// The column of the cell with the largest spread.
    pub column: String,
    /// The row of the cell with the largest spread.
    pub row: String,
}

/// Every sample of a benchmark, by column and row, with the baseline column the ratios are
/// taken against. Columns and rows keep the order they were declared or first seen in, which is
/// the order of the report.
#[derive(Clone, Debug, Default)]
pub struct Samples {
    columns: Vec<String>,
    rows: Vec<String>,
    baseline: String,
    /// `(round, value)` of each sample, by `(column, row)`.
    cells: BTreeMap<(String, String), Vec<(usize, f64)>>,
}

impl Samples {
    /// No samples yet; `columns` in report order, ratios against `baseline` (which need not be
    /// one of them: the ratios are then all missing).
    pub fn new<S: Into<String>>(columns: impl IntoIterator<Item = S>, baseline: &str) -> Samples {
        Samples {
            columns: columns.into_iter().map(Into::into).collect(),
            baseline: baseline.to_string(),
            ..Samples::default()
        }
    }

    /// Declares a row, so that it is reported (with missing cells) even if no run produced it.
    pub fn add_row(&mut self, row: &str) {
        if !self.rows.iter().any(|known| known == row) {
            self.rows.push(row.to_string());
        }
    }

    /// Records one sample; an unknown column or row is appended to the columns or rows.
    pub fn add(&mut self, column: &str, row: &str, round: usize, value: f64) {
        if !self.columns.iter().any(|known| known == column) {
            self.columns.push(column.to_string());
        }
        self.add_row(row);
        self.cells
            .entry((column.to_string(), row.to_string()))
            .or_default()
            .push((round, value));
    }

    /// The columns, in report order.
    pub fn columns(&self) -> &[String] {
        &self.columns
    }

    /// Whether `column` is one of the columns.
    pub fn has_column(&self, column: &str) -> bool {
        self.columns.iter().any(|c| c == column)
    }

    /// The rows, in report order.
    pub fn rows(&self) -> &[String] {
        &self.rows
    }

    /// The column the ratios are taken against.
    pub fn baseline(&self) -> &str {
        &self.baseline
    }

    /// The samples of one cell, in the order they were added.
    pub fn values(&self, column: &str, row: &str) -> Vec<f64> {
        self.cells
            .get(&(column.to_string(), row.to_string()))
            .map_or_else(Vec::new, |samples| {
                samples.iter().map(|&(_, value)| value).collect()
            })
    }

    /// The summary of one cell; `None` if it has no samples.
    pub fn summary(&self, column: &str, row: &str) -> Option<Summary> {
        Summary::of(&self.values(column, row))
    }

    /// The median of one cell.
    pub fn median(&self, column: &str, row: &str) -> Option<f64> {
        median(&self.values(column, row))
    }

    /// Of `columns`, the one whose median on `row` is the lowest, with that median; columns
    /// without samples there are passed over (`None` if all are).
    pub fn lowest_median<'a>(&self, columns: &[&'a str], row: &str) -> Option<(&'a str, f64)> {
        columns
            .iter()
            .filter_map(|&column| Some((column, self.median(column, row)?)))
            .min_by(|a, b| a.1.total_cmp(&b.1))
    }

    /// One cell's median divided by the median of column `reference` on the same row.
    pub fn ratio_to(&self, column: &str, reference: &str, row: &str) -> Option<f64> {
        Some(self.median(column, row)? / self.median(reference, row)?)
    }

    /// One cell's median divided by the baseline's on the same row.
    pub fn ratio(&self, column: &str, row: &str) -> Option<f64> {
        self.ratio_to(column, &self.baseline, row)
    }

    /// The geometric mean of a column's ratios to column `reference`, over the rows where both
    /// have a median.
    pub fn geometric_mean_ratio_to(&self, column: &str, reference: &str) -> Option<f64> {
        let ratios: Vec<f64> = self
            .rows
            .iter()
            .filter_map(|row| self.ratio_to(column, reference, row))
            .collect();
        geometric_mean(&ratios)
    }

    /// The geometric mean of a column's ratios to the baseline.
    pub fn geometric_mean_ratio(&self, column: &str) -> Option<f64> {
        self.geometric_mean_ratio_to(column, &self.baseline)
    }

    /// The spread of the median cell and of the worst cell, over the cells with two samples or
    /// more; `None` if there are none.
    pub fn noise(&self) -> Option<Noise> {
        let mut spreads: Vec<(f64, &str, &str)> = Vec::new();
        for column in &self.columns {
            for row in &self.rows {
                if let Some(spread) = self.summary(column, row).and_then(|s| s.spread()) {
                    spreads.push((spread, column, row));
                }
            }
        }
        let &(worst, column, row) = spreads.iter().max_by(|a, b| a.0.total_cmp(&b.0))?;
        Some(Noise {
            typical: median(&spreads.iter().map(|s| s.0).collect::<Vec<_>>())?,
            worst,
            column: column.to_string(),
            row: row.to_string(),
        })
    }

    /// Every sample as tab-separated lines `column row round value` (rounds from 1, values with
    /// `decimals` decimals), under a header whose first two names are `column_name` and
    /// `row_name` and whose last is `value_name`.
    pub fn raw_tsv(&self, column_name: &str, row_name: &str, value_name: &str, decimals: usize) -> String {
        let mut out = format!("{column_name}\t{row_name}\tround\t{value_name}\n");
        for column in &self.columns {
            for row in &self.rows {
                let Some(samples) = self.cells.get(&(column.clone(), row.clone())) else {
                    continue;
                };
                for &(round, value) in samples {
                    let _ = writeln!(out, "{column}\t{row}\t{}\t{value:.decimals$}", round + 1);
                }
            }
        }
        out
    }
}

/// The sentence a report gives its noise in, or `None` without a cell of two samples or more.
pub fn noise_sentence(samples: &Samples) -> Option<String> {
    let noise = samples.noise()?;
    Some(format!(
        "Noise, as (max − min) / median over the rounds of a cell: {:.0}% for the median cell, \
         {:.0}% at worst ({}, {}).",
        noise.typical * 100.0,
        noise.worst * 100.0,
        noise.column,
        noise.row
    ))
}

/// For tests: a fresh directory named after `tag` and the process, holding `one.so`, `same.so`
/// (the same bytes as `one`) and `other.so` written with `one` and `other`; the caller removes
/// the directory.
#[cfg(test)]
pub(crate) fn test_libraries(
    tag: &str,
    one: &[u8],
    other: &[u8],
) -> (std::path::PathBuf, [std::path::PathBuf; 3]) {
    let dir = std::env::temp_dir().join(format!("tally-{tag}-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let files = [dir.join("one.so"), dir.join("same.so"), dir.join("other.so")];
    for (file, bytes) in files.iter().zip([one, one, other]) {
        std::fs::write(file, bytes).unwrap();
    }
    (dir, files)
}

/// How far apart (a ratio) two of a cell's samples must lie, with none between them, for the
/// cell to count as run in two modes ([`two_mode_rows`]).
pub const MODE_GAP: f64 = 1.8;

/// Whether `values` fall into two groups with no value between `x` and `MODE_GAP * x`: the
/// rounds of the cell ran in two modes (as a threaded program on this VM's two vCPUs does,
/// depending on where the host places them), not a spread around one value.
fn has_mode_gap(values: &[f64]) -> bool {
    let mut sorted: Vec<f64> = values.iter().copied().filter(|v| *v > 0.0).collect();
    sorted.sort_by(f64::total_cmp);
    sorted.windows(2).any(|pair| pair[1] >= MODE_GAP * pair[0])
}

/// The rows in which at least two columns' cells ran in two modes (two samples [`MODE_GAP`]×
/// apart with none between), each with how many columns did: a property of the row on this
/// machine rather than of one column, and the rows whose medians compare how many rounds fell
/// in each mode more than the columns themselves.
pub fn two_mode_rows(samples: &Samples) -> Vec<(String, usize)> {
    samples
        .rows()
        .iter()
        .filter_map(|row| {
            let split = samples
                .columns()
                .iter()
                .filter(|column| has_mode_gap(&samples.values(column, row)))
                .count();
            (split >= 2).then(|| (row.clone(), split))
        })
        .collect()
}

/// The sentence a report names its two-mode rows in ([`two_mode_rows`]), or `None` if none.
pub fn two_mode_sentence(samples: &Samples) -> Option<String> {
    let rows = two_mode_rows(samples);
    if rows.is_empty() {
        return None;
    }
    let listed: Vec<String> = rows
        .iter()
        .map(|(row, split)| format!("{row} ({split} of {} columns)", samples.columns().len()))
        .collect();
    Some(format!(
        "Two modes: in {} the rounds of several columns fall into a fast and a slow group at \
         least {MODE_GAP}× apart, so a median there says how many rounds fell in each mode more \
         than how the columns compare; see the raw samples.",
        listed.join(", ")
    ))
}

/// A runner's command line after the program's name, read flag by flag: `--flag value` pairs
/// and lone flags, with one-line errors that name the flag.
pub struct CommandLine<I> {
    args: I,
}

impl<I: Iterator<Item = String>> CommandLine<I> {
    /// The arguments to read (the program's name already skipped).
    pub fn new(args: I) -> CommandLine<I> {
        CommandLine { args }
    }

    /// The next argument: a flag, or `None` at the end.
    pub fn next_flag(&mut self) -> Option<String> {
        self.args.next()
    }

    /// The value after `flag`.
    pub fn value(&mut self, flag: &str) -> Result<String, String> {
        self.args.next().ok_or_else(|| format!("{flag} needs a value"))
    }

    /// The value after `flag`, a whole number.
    pub fn number(&mut self, flag: &str) -> Result<u64, String> {
        let text = self.value(flag)?;
        text.parse::<u64>()
            .map_err(|_| format!("{flag}: {text:?} is not a number"))
    }

    /// The value after `flag`, a comma-separated list (spaces around the parts and empty parts
    /// dropped).
    pub fn list(&mut self, flag: &str) -> Result<Vec<String>, String> {
        Ok(self
            .value(flag)?
            .split(',')
            .map(str::trim)
            .filter(|part| !part.is_empty())
            .map(String::from)
            .collect())
    }
}

/// Writes a runner's report to `out`, making its directory, and, when there are any, the raw
/// rounds beside it (`out` with the extension `raw.tsv`). Returns the files written, for the
/// runner's "wrote ..." line.
pub fn write_report(out: &Path, report: &str, raw: Option<&str>) -> std::io::Result<Vec<std::path::PathBuf>> {
    if let Some(dir) = out.parent() {
        std::fs::create_dir_all(dir)?;
    }
    std::fs::write(out, report)?;
    let mut written = vec![out.to_path_buf()];
    if let Some(raw) = raw {
        let path = out.with_extension("raw.tsv");
        std::fs::write(&path, raw)?;
        written.push(path);
    }
    Ok(written)
}

/// The files [`write_report`] wrote, as its runner names them: `a` or `a and b`.
pub fn written_files(files: &[std::path::PathBuf]) -> String {
    files
        .iter()
        .map(|file| file.display().to_string())
        .collect::<Vec<_>>()
        .join(" and ")
}

/// A ratio as a table shows it, e.g. `0.87×`, or [`MISSING`].
pub fn ratio_cell(ratio: Option<f64>) -> String {
    ratio.map_or_else(|| MISSING.to_string(), |ratio| format!("{ratio:.2}×"))
}

/// A Markdown table: a header, rows of cells, the first `label_columns` columns left-aligned and
/// the others (numbers) right-aligned. Invariant: every row has as many cells as the header.
#[derive(Clone, Debug, PartialEq)]
pub struct MarkdownTable {
    header: Vec<String>,
    label_columns: usize,
    rows: Vec<Vec<String>>,
}

impl MarkdownTable {
    /// A table whose first column labels the rows.
    pub fn new<S: Into<String>>(header: impl IntoIterator<Item = S>) -> MarkdownTable {
        MarkdownTable {
            header: header.into_iter().map(Into::into).collect(),
            label_columns: 1,
            rows: Vec::new(),
        }
    }

    /// A table of numbers only, every column right-aligned.
    pub fn numbers<S: Into<String>>(header: impl IntoIterator<Item = S>) -> MarkdownTable {
        MarkdownTable {
            label_columns: 0,
            ..MarkdownTable::new(header)
        }
    }

    /// Appends a row.
    ///
    /// # Panics
    ///
    /// If it does not have one cell per column of the header.
    pub fn row<S: Into<String>>(&mut self, cells: impl IntoIterator<Item = S>) {
        let cells: Vec<String> = cells.into_iter().map(Into::into).collect();
        assert_eq!(
            cells.len(),
            self.header.len(),
            "a row of {cells:?} in a table of {:?}",
            self.header
        );
        self.rows.push(cells);
    }

    /// The table's lines, each ending in a newline.
    pub fn render(&self) -> String {
        let line = |cells: &[String]| format!("| {} |\n", cells.join(" | "));
        let mut out = line(&self.header);
        out.push('|');
        for column in 0..self.header.len() {
            out.push_str(if column < self.label_columns {
                "---|"
            } else {
                "---:|"
            });
        }
        out.push('\n');
        for row in &self.rows {
            out.push_str(&line(row));
        }
        out
    }
}

/// The usual comparison table of `samples`: a row per row of the samples, labelled under
/// `row_header`, a column per column, each cell the median as `value` writes it with the ratio
/// to the baseline in parentheses (`1.234 (0.87×)`; the baseline's own is `1.00×`), and a last
/// row of each column's geometric mean of ratios. A cell without samples is [`MISSING`], and so
/// is a ratio without a baseline median.
pub fn comparison_table(samples: &Samples, row_header: &str, value: impl Fn(f64) -> String) -> MarkdownTable {
    let mut table =
        MarkdownTable::new(std::iter::once(row_header).chain(samples.columns().iter().map(String::as_str)));
    for row in samples.rows() {
        let cells = samples
            .columns()
            .iter()
            .map(|column| match samples.median(column, row) {
                None => MISSING.to_string(),
                Some(median) => format!("{} ({})", value(median), ratio_cell(samples.ratio(column, row))),
            });
        table.row(std::iter::once(row.clone()).chain(cells));
    }
    let means = samples
        .columns()
        .iter()
        .map(|column| ratio_cell(samples.geometric_mean_ratio(column)));
    table.row(std::iter::once("geometric mean".to_string()).chain(means));
    table
}

/// The machine and build a report was made on.
#[derive(Clone, Debug, Default)]
pub struct Machine {
    /// CPU model name from `/proc/cpuinfo`.
    pub cpu: String,
    /// Logical CPUs listed in `/proc/cpuinfo`, and those this process may run on.
    pub cores: (usize, usize),
    /// `MemTotal` from `/proc/meminfo`.
    pub memory: String,
    /// Kernel release.
    pub kernel: String,
    /// glibc version, which is what `System` and the suite's baseline are.
    pub libc: String,
    /// The kernel's transparent huge page policy and its `defrag` setting (`always (defrag
    /// madvise)`), which decide how much of a fresh mapping a first touch makes resident.
    pub thp: String,
    /// `rustc -V` of the compiler that built the benchmarks.
    pub rustc: String,
    /// Versions of crates from `Cargo.lock`.
    pub crates: Vec<(String, String)>,
    /// Versions of Debian packages from `dpkg-query` (`?` if not installed).
    pub packages: Vec<(String, String)>,
    /// `git describe --always --dirty` of the workspace.
    pub commit: String,
    /// When the report was made, UTC.
    pub date: String,
}

impl Machine {
    /// Reads the description from `/proc`, `getconf`, git, the workspace's `Cargo.lock` (the
    /// versions of `crates`) and `dpkg-query` (the versions of `packages`); anything unreadable
    /// reads as `unknown`.
    pub fn probe(workspace: &Path, crates: &[&str], packages: &[&str]) -> Machine {
        let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
        let cpu = cpuinfo
            .lines()
            .find_map(|line| line.strip_prefix("model name"))
            .and_then(|rest| rest.split_once(':'))
            .map_or_else(|| "unknown".to_string(), |(_, name)| name.trim().to_string());
        let listed = cpuinfo
            .lines()
            .filter(|line| line.starts_with("processor"))
            .count();
        let usable = std::thread::available_parallelism().map_or(0, usize::from);
        let memory = std::fs::read_to_string("/proc/meminfo")
            .unwrap_or_default()
            .lines()
            .find_map(|line| line.strip_prefix("MemTotal:"))
            .and_then(|rest| rest.trim().strip_suffix(" kB")?.trim().parse::<u64>().ok())
            .map_or_else(
                || "unknown".to_string(),
                |kib| format!("{:.1} GiB", kib as f64 / (1024.0 * 1024.0)),
            );
        let kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease")
            .map_or_else(|_| "unknown".to_string(), |text| text.trim().to_string());
        let lock = std::fs::read_to_string(workspace.join("Cargo.lock")).unwrap_or_default();
        let crates = crates
            .iter()
            .filter_map(|name| Some((name.to_string(), locked_version(&lock, name)?)))
            .collect();
        let packages = packages
            .iter()
            .map(|name| {
                let version = command_line("dpkg-query", &["-W", "-f", "${Version}", name], workspace);
                let version = if version == "unknown" {
                    "?".to_string()
                } else {
                    version
                };
                (name.to_string(), version)
            })
            .collect();
        Machine {
            cpu,
            cores: (listed, usable),
            memory,
            kernel,
            libc: command_line("getconf", &["GNU_LIBC_VERSION"], workspace),
            thp: thp_policy(|name| {
                std::fs::read_to_string(Path::new("/sys/kernel/mm/transparent_hugepage").join(name)).ok()
            }),
            rustc: env!("TALLY_BENCH_RUSTC").to_string(),
            crates,
            packages,
            commit: command_line("git", &["describe", "--always", "--dirty"], workspace),
            date: utc_date(
                std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .map_or(0, |since| since.as_secs()),
            ),
        }
    }

    /// The description as Markdown list items (date, CPU, kernel and libc, rustc, crates,
    /// packages, workspace), one per line, for the head of a report.
    pub fn markdown_lines(&self) -> String {
        let list = |items: &[(String, String)]| {
            items
                .iter()
                .map(|(name, version)| format!("{name} {version}"))
                .collect::<Vec<_>>()
                .join(", ")
        };
        let mut out = String::new();
        let _ = writeln!(out, "- date: {}", self.date);
        let _ = writeln!(
            out,
            "- CPU: {} ({} logical CPUs listed, {} usable), {} memory",
            self.cpu, self.cores.0, self.cores.1, self.memory
        );
        let _ = writeln!(
            out,
            "- kernel: Linux {}; libc: {}; transparent huge pages: {}",
            self.kernel, self.libc, self.thp
        );
        let _ = writeln!(out, "- rustc: {}", self.rustc);
        if !self.crates.is_empty() {
            let _ = writeln!(out, "- crates: {}", list(&self.crates));
        }
        if !self.packages.is_empty() {
            let _ = writeln!(out, "- Debian packages: {}", list(&self.packages));
        }
        let _ = writeln!(out, "- workspace: {}", self.commit);
        out
    }
}

/// The transparent huge page policy as `enabled (defrag d)`, from the files `enabled` and
/// `defrag` of `/sys/kernel/mm/transparent_hugepage` read by `read` (each lists the choices with
/// the one in force in brackets); `none` when the kernel has no such directory.
pub fn thp_policy(read: impl Fn(&str) -> Option<String>) -> String {
    let chosen = |name: &str| -> Option<String> {
        let text = read(name)?;
        let start = text.find('[')? + 1;
        let len = text[start..].find(']')?;
        Some(text[start..start + len].to_string())
    };
    match (chosen("enabled"), chosen("defrag")) {
        (Some(enabled), Some(defrag)) => format!("{enabled} (defrag {defrag})"),
        (Some(enabled), None) => enabled,
        (None, _) if read("enabled").is_none() => "none".to_string(),
        (None, _) => "unknown".to_string(),
    }
}

/// The first line a command prints, or `unknown`.
fn command_line(program: &str, args: &[&str], dir: &Path) -> String {
    Command::new(program)
        .args(args)
        .current_dir(dir)
        .output()
        .ok()
        .filter(|output| output.status.success())
        .and_then(|output| {
            let text = String::from_utf8_lossy(&output.stdout);
            Some(text.lines().next()?.trim().to_string())
        })
        .filter(|line| !line.is_empty())
        .unwrap_or_else(|| "unknown".to_string())
}

/// The version of package `name` in the text of a `Cargo.lock`.
pub fn locked_version(lock: &str, name: &str) -> Option<String> {
    let wanted = format!("name = \"{name}\"");
    let mut lines = lock.lines();
    while let Some(line) = lines.next() {
        if line.trim() == wanted {
            let version = lines.next()?.trim().strip_prefix("version = \"")?;
            return Some(version.trim_end_matches('"').to_string());
        }
    }
    None
}

/// `YYYY-MM-DD HH:MM UTC` for seconds since the Unix epoch (days to civil date after Howard
/// Hinnant's `civil_from_days`).
pub fn utc_date(unix_seconds: u64) -> String {
    let days = (unix_seconds / 86_400) as i64;
    let seconds_of_day = unix_seconds % 86_400;
    let shifted = days + 719_468; // days from 0000-03-01
    let era = shifted.div_euclid(146_097);
    let day_of_era = shifted.rem_euclid(146_097);
    let year_of_era = (day_of_era - day_of_era / 1460 + day_of_era / 36_524 - day_of_era / 146_096) / 365;
    let day_of_year = day_of_era - (365 * year_of_era + year_of_era / 4 - year_of_era / 100);
    let month_from_march = (5 * day_of_year + 2) / 153;
    let day = day_of_year - (153 * month_from_march + 2) / 5 + 1;
    let month = if month_from_march < 10 {
        month_from_march + 3
    } else {
        month_from_march - 9
    };
    let year = year_of_era + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02} {:02}:{:02} UTC",
        seconds_of_day / 3600,
        seconds_of_day % 3600 / 60
    )
}

/// A 64-bit FNV-1a hash of the file at `path`'s bytes, or `None` if it cannot be read: tells two
/// builds of a library apart (or says they are one) whatever their paths and times.
pub fn content_hash(path: &Path) -> Option<u64> {
    let mut file = std::fs::File::open(path).ok()?;
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    let mut buffer = vec![0u8; 1 << 16];
    loop {
        let n = file.read(&mut buffer).ok()?;
        if n == 0 {
            return Some(hash);
        }
        for &byte in &buffer[..n] {
            hash = (hash ^ u64::from(byte)).wrapping_mul(0x0100_0000_01b3);
        }
    }
}

/// One line for the head of a report naming the library a column ran: `name`, its path, size,
/// when it was last written and `hash`, its [`content_hash`] (which the caller has, to compare
/// it with another's), so that a stale build (one a `cargo build` did not write again) shows by
/// its time and an alternate identical to the main one by its hash.
pub fn library_line(name: &str, path: &Path, hash: Option<u64>) -> String {
    let Ok(meta) = std::fs::metadata(path) else {
        return format!("{name}: {} (unreadable)", path.display());
    };
    let written = meta
        .modified()
        .ok()
        .and_then(|time| time.duration_since(std::time::UNIX_EPOCH).ok())
        .map_or_else(|| "unknown".to_string(), |since| utc_date(since.as_secs()));
    let hash = hash.map_or_else(|| "unknown".to_string(), |hash| format!("{hash:016x}"));
    format!(
        "{name}: {}, {} bytes, written {written}, content hash {hash}",
        path.display(),
        meta.len()
    )
}

/// How a process run by [`run_with_timeout`] ended, with everything it printed.
#[derive(Debug)]
pub struct Finished {
    /// Its exit status, or why there is none (it could not start, or was killed at the time
    /// limit).
    pub status: Result<ExitStatus, String>,
    /// What it wrote to stdout.
    pub stdout: String,
    /// What it wrote to stderr.
    pub stderr: String,
}

/// Runs `command` with stdout and stderr captured, killing it if it runs longer than `timeout`.
/// Its stdin is whatever the caller set (the null device if nothing).
pub fn run_with_timeout(command: &mut Command, timeout: Duration) -> Finished {
    let spawned = command.stdout(Stdio::piped()).stderr(Stdio::piped()).spawn();
    let mut child = match spawned {
        Ok(child) => child,
        Err(error) => {
            return Finished {
                status: Err(format!("cannot start {:?}: {error}", command.get_program())),
                stdout: String::new(),
                stderr: String::new(),
            }
        }
    };
    // Drained on threads while the child runs, so a child that prints more than a pipe holds
    // never blocks.
    let drain = |mut pipe: Box<dyn Read + Send>| {
        std::thread::spawn(move || {
            let mut bytes = Vec::new();
            let _ = pipe.read_to_end(&mut bytes);
            String::from_utf8_lossy(&bytes).into_owned()
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
                break Err(format!("killed after {} s", timeout.as_secs_f64()));
            }
            Ok(None) => std::thread::sleep(Duration::from_millis(10)),
            Err(error) => break Err(format!("wait failed: {error}")),
        }
    };
    Finished {
        status,
        stdout: stdout.join().unwrap_or_default(),
        stderr: stderr.join().unwrap_or_default(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_huge_page_policy_is_the_bracketed_choice() {
        let files = |enabled: Option<&'static str>, defrag: Option<&'static str>| {
            move |name: &str| match name {
                "enabled" => enabled.map(str::to_string),
                "defrag" => defrag.map(str::to_string),
                _ => None,
            }
        };
        assert_eq!(
            thp_policy(files(
                Some("always [madvise] never\n"),
                Some("always defer defer+madvise [madvise] never\n")
            )),
            "madvise (defrag madvise)"
        );
        assert_eq!(
            thp_policy(files(
                Some("[always] madvise never\n"),
                Some("[always] defer never\n")
            )),
            "always (defrag always)"
        );
        assert_eq!(thp_policy(files(Some("[never]"), None)), "never");
        assert_eq!(thp_policy(files(None, None)), "none");
        assert_eq!(thp_policy(files(Some("garbled"), None)), "unknown");
        // This machine's own files, whatever their choice, read as one of the words.
        let here = thp_policy(|name| {
            std::fs::read_to_string(Path::new("/sys/kernel/mm/transparent_hugepage").join(name)).ok()
        });
        assert!(
            here == "none" || ["always", "madvise", "never"].iter().any(|w| here.starts_with(w)),
            "{here}"
        );
    }

    #[test]
    fn the_lowest_median_passes_over_columns_without_samples() {
        let mut samples = Samples::new(["a", "b", "c"], "a");
        for (round, (a, b)) in [(3.0, 2.0), (5.0, 2.5), (4.0, 9.0)].into_iter().enumerate() {
            samples.add("a", "r", round, a);
            samples.add("b", "r", round, b);
        }
        assert_eq!(samples.lowest_median(&["a", "b", "c"], "r"), Some(("b", 2.5)));
        assert_eq!(samples.lowest_median(&["a", "c"], "r"), Some(("a", 4.0)));
        assert_eq!(samples.lowest_median(&["c"], "r"), None);
        assert_eq!(samples.lowest_median(&[], "r"), None);
    }

    #[test]
    fn a_command_line_reads_values_numbers_and_lists_and_names_the_flag_in_errors() {
        let words = |line: &str| line.split(' ').map(String::from).collect::<Vec<_>>().into_iter();
        let mut args = CommandLine::new(words("--rounds 7 --filter a,,b ,c --out x.md --quick"));
        assert_eq!(args.next_flag().as_deref(), Some("--rounds"));
        assert_eq!(args.number("--rounds"), Ok(7));
        assert_eq!(args.next_flag().as_deref(), Some("--filter"));
        assert_eq!(args.list("--filter"), Ok(vec!["a".to_string(), "b".to_string()]));
        // The list's value ended at the space: ",c" is the next argument.
        assert_eq!(args.next_flag().as_deref(), Some(",c"));
        assert_eq!(args.next_flag().as_deref(), Some("--out"));
        assert_eq!(args.value("--out").as_deref(), Ok("x.md"));
        assert_eq!(args.next_flag().as_deref(), Some("--quick"));
        assert_eq!(args.next_flag(), None);
        assert_eq!(args.value("--out"), Err("--out needs a value".to_string()));
        let mut bad = CommandLine::new(words("seven"));
        assert_eq!(
            bad.number("--rounds"),
            Err("--rounds: \"seven\" is not a number".to_string())
        );
    }

    #[test]
    fn a_report_goes_where_asked_with_its_raw_rounds_beside_it() {
        let dir = std::env::temp_dir().join(format!("tally-write-report-{}", std::process::id()));
        let out = dir.join("bench").join("x.md");
        let files = write_report(&out, "# report\n", Some("a\tb\n")).unwrap();
        assert_eq!(files, [out.clone(), dir.join("bench").join("x.raw.tsv")]);
        assert_eq!(std::fs::read_to_string(&out).unwrap(), "# report\n");
        assert_eq!(std::fs::read_to_string(&files[1]).unwrap(), "a\tb\n");
        assert_eq!(
            written_files(&files),
            format!("{} and {}", files[0].display(), files[1].display())
        );
        let alone = dir.join("y.md");
        assert_eq!(
            write_report(&alone, "y", None).unwrap(),
            std::slice::from_ref(&alone)
        );
        assert!(!dir.join("y.raw.tsv").exists());
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn medians_of_odd_and_even_counts() {
        assert_eq!(median(&[]), None);
        assert_eq!(median(&[7.0]), Some(7.0));
        assert_eq!(median(&[3.0, 1.0, 2.0]), Some(2.0));
        // Even: the mean of the middle two after sorting, not either of them nor the input's
        // middle elements.
        assert_eq!(median(&[4.0, 1.0, 3.0, 2.0]), Some(2.5));
        assert_eq!(median(&[10.0, 1.0]), Some(5.5));
        let summary = Summary::of(&[5.0, 1.0, 9.0, 3.0]).unwrap();
        assert_eq!(
            summary,
            Summary {
                median: 4.0,
                min: 1.0,
                max: 9.0,
                count: 4
            }
        );
        assert_eq!(summary.spread(), Some(2.0));
        assert_eq!(Summary::of(&[3.0]).unwrap().spread(), None);
        assert_eq!(Summary::of(&[]), None);
    }

    #[test]
    fn geometric_means() {
        assert!((geometric_mean(&[0.5, 2.0]).unwrap() - 1.0).abs() < 1e-12);
        assert!((geometric_mean(&[1.0, 4.0, 16.0]).unwrap() - 4.0).abs() < 1e-12);
        assert!((geometric_mean(&[3.0]).unwrap() - 3.0).abs() < 1e-12);
        assert_eq!(geometric_mean(&[]), None);
        assert_eq!(geometric_mean(&[1.0, 0.0]), None);
        assert_eq!(geometric_mean(&[1.0, -2.0]), None);
        assert_eq!(geometric_mean(&[1.0, f64::NAN]), None);
    }

    #[test]
    fn rotation_puts_every_column_in_every_position() {
        for columns in 1..=7 {
            for groups in 1..=3 {
                let slots = schedule(columns, groups, columns);
                assert_eq!(slots.len(), columns * groups * columns);
                // seen[group][position] = columns that ran there, over the rounds.
                let mut seen = vec![vec![Vec::new(); columns]; groups];
                for (index, slot) in slots.iter().enumerate() {
                    let position = index % columns;
                    assert_eq!(slot.round, index / (columns * groups), "{slot:?}");
                    assert_eq!(slot.group, index / columns % groups, "{slot:?}");
                    seen[slot.group][position].push(slot.column);
                }
                for (group, positions) in seen.iter_mut().enumerate() {
                    for (position, ran) in positions.iter_mut().enumerate() {
                        ran.sort_unstable();
                        assert_eq!(
                            *ran,
                            (0..columns).collect::<Vec<_>>(),
                            "{columns} columns, group {group}, position {position}"
                        );
                    }
                }
                // Every round of every group runs each column exactly once.
                for chunk in slots.chunks(columns) {
                    let mut ran: Vec<usize> = chunk.iter().map(|slot| slot.column).collect();
                    ran.sort_unstable();
                    assert_eq!(ran, (0..columns).collect::<Vec<_>>());
                }
            }
        }
        let order = |round, group| -> Vec<usize> {
            schedule(3, 2, 3)
                .into_iter()
                .filter(|slot| slot.round == round && slot.group == group)
                .map(|slot| slot.column)
                .collect()
        };
        assert_eq!(order(0, 0), [0, 1, 2]);
        assert_eq!(order(0, 1), [1, 2, 0]);
        assert_eq!(order(1, 0), [1, 2, 0]);
        assert_eq!(order(2, 1), [0, 1, 2]);
    }

    fn two_column_samples() -> Samples {
        let mut samples = Samples::new(["base", "new"], "base");
        samples.add_row("a");
        samples.add_row("b");
        samples.add_row("never");
        for (round, (base, new)) in [(10.0, 5.0), (12.0, 6.5), (11.0, 5.5)].into_iter().enumerate() {
            samples.add("base", "a", round, base);
            samples.add("new", "a", round, new);
        }
        samples.add("base", "b", 0, 100.0);
        samples.add("base", "b", 1, 300.0);
        samples.add("new", "b", 0, 400.0);
        samples
    }

    #[test]
    fn samples_give_medians_ratios_and_noise() {
        let samples = two_column_samples();
        assert_eq!(samples.rows(), ["a", "b", "never"]);
        assert_eq!(samples.median("base", "a"), Some(11.0));
        assert_eq!(samples.median("base", "b"), Some(200.0));
        assert_eq!(samples.ratio("new", "a"), Some(0.5));
        assert_eq!(samples.ratio("new", "b"), Some(2.0));
        assert_eq!(samples.ratio("base", "a"), Some(1.0));
        assert_eq!(samples.ratio("new", "never"), None);
        assert_eq!(samples.ratio_to("base", "new", "b"), Some(0.5));
        assert!((samples.geometric_mean_ratio("new").unwrap() - 1.0).abs() < 1e-12);
        assert!((samples.geometric_mean_ratio_to("base", "new").unwrap() - 1.0).abs() < 1e-12);
        // Spreads: base/a 2/11, new/a 1.5/5.5, base/b 200/200 = 1; new/b has one sample.
        let noise = samples.noise().unwrap();
        assert_eq!((noise.column.as_str(), noise.row.as_str()), ("base", "b"));
        assert!((noise.worst - 1.0).abs() < 1e-12);
        assert!((noise.typical - 1.5 / 5.5).abs() < 1e-12, "{noise:?}");
        let raw = samples.raw_tsv("allocator", "workload", "ns", 1);
        assert!(raw.starts_with("allocator\tworkload\tround\tns\n"), "{raw}");
        assert!(raw.contains("base\tb\t2\t300.0\n"), "{raw}");
        assert_eq!(raw.lines().count(), 1 + 9);
    }

    #[test]
    fn tables_align_and_show_ratios_and_gaps() {
        let mut table = MarkdownTable::new(["row", "x", "y"]);
        table.row(["first", "1", "2"]);
        assert_eq!(
            table.render(),
            "| row | x | y |\n|---|---:|---:|\n| first | 1 | 2 |\n"
        );
        let mut numbers = MarkdownTable::numbers(["x", "y"]);
        numbers.row(["1", "2"]);
        assert_eq!(numbers.render(), "| x | y |\n|---:|---:|\n| 1 | 2 |\n");

        let text = comparison_table(&two_column_samples(), "workload", |v| format!("{v:.1}")).render();
        let expected = "\
| workload | base | new |
|---|---:|---:|
| a | 11.0 (1.00×) | 5.5 (0.50×) |
| b | 200.0 (1.00×) | 400.0 (2.00×) |
| never | – | – |
| geometric mean | 1.00× | 1.00× |
";
        assert_eq!(text, expected);
        // Without a baseline median the value stays and the ratio is missing.
        let mut orphan = Samples::new(["base", "new"], "base");
        orphan.add("new", "a", 0, 2.0);
        let text = comparison_table(&orphan, "w", |v| format!("{v:.1}")).render();
        assert!(text.contains("| a | – | 2.0 (–) |"), "{text}");
        assert!(text.contains("| geometric mean | – | – |"), "{text}");
    }

    #[test]
    #[should_panic(expected = "a row of")]
    fn a_short_row_is_a_bug() {
        MarkdownTable::new(["row", "x"]).row(["only"]);
    }

    #[test]
    fn rows_whose_columns_run_in_two_modes_are_named() {
        let mut samples = Samples::new(["a", "b", "c"], "a");
        // Row "split": a and b each have a fast and a slow group (1.3 and 4.4 s), c is steady.
        for (round, (a, b, c)) in [(1.3, 1.4, 2.0), (4.4, 4.5, 2.1), (4.3, 1.4, 2.0)]
            .into_iter()
            .enumerate()
        {
            samples.add("a", "split", round, a);
            samples.add("b", "split", round, b);
            samples.add("c", "split", round, c);
        }
        // Row "one": only column a splits: a column's quirk, not the row's.
        for (round, (a, b)) in [(1.0, 1.0), (2.0, 1.1)].into_iter().enumerate() {
            samples.add("a", "one", round, a);
            samples.add("b", "one", round, b);
        }
        // Row "spread": wide but without a gap of 1.8× between neighbours.
        for (round, a) in [1.0, 1.6, 2.5, 4.0].into_iter().enumerate() {
            samples.add("a", "spread", round, a);
            samples.add("b", "spread", round, a * 1.01);
        }
        assert!(has_mode_gap(&[1.3, 4.4, 4.3]));
        assert!(!has_mode_gap(&[1.0, 1.6, 2.5, 4.0]));
        assert!(!has_mode_gap(&[3.0]));
        assert_eq!(two_mode_rows(&samples), [("split".to_string(), 2)]);
        let sentence = two_mode_sentence(&samples).unwrap();
        assert!(
            sentence.starts_with("Two modes: in split (2 of 3 columns) the rounds"),
            "{sentence}"
        );
        assert_eq!(two_mode_sentence(&Samples::new(["a"], "a")), None);
    }

    #[test]
    fn a_library_line_tells_two_builds_apart_by_their_bytes() {
        let (dir, [one, same, other]) =
            test_libraries("harness-lib", b"\x7fELF one build", b"\x7fELF another build");
        let hash = content_hash(&one).unwrap();
        assert_eq!(content_hash(&same), Some(hash));
        assert_ne!(content_hash(&other), Some(hash));
        assert_eq!(content_hash(&dir.join("missing.so")), None);
        let line = library_line("tally", &one, Some(hash));
        assert!(
            line.starts_with(&format!("tally: {}, 14 bytes, written 20", one.display())),
            "{line}"
        );
        assert!(
            line.ends_with(&format!("UTC, content hash {hash:016x}")),
            "{line}"
        );
        let missing = dir.join("missing.so");
        assert!(library_line("tally-alt", &missing, None).ends_with("(unreadable)"));
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn dates_are_civil() {
        assert_eq!(utc_date(0), "1970-01-01 00:00 UTC");
        assert_eq!(utc_date(951_782_400 + 3_660), "2000-02-29 01:01 UTC");
        assert_eq!(utc_date(1_767_225_599), "2025-12-31 23:59 UTC");
    }

    #[test]
    fn finds_locked_versions() {
        let lock = "[[package]]\nname = \"mimalloc\"\nversion = \"0.1.52\"\n";
        assert_eq!(locked_version(lock, "mimalloc").as_deref(), Some("0.1.52"));
        assert_eq!(locked_version(lock, "libmimalloc-sys"), None);
    }

    #[test]
    fn timeouts_kill_and_output_is_kept() {
        let done = run_with_timeout(
            Command::new("sh").args(["-c", "echo out; echo err >&2; exit 3"]),
            Duration::from_secs(10),
        );
        assert_eq!(done.status.unwrap().code(), Some(3));
        assert_eq!((done.stdout.as_str(), done.stderr.as_str()), ("out\n", "err\n"));
        let start = Instant::now();
        let killed = run_with_timeout(Command::new("sleep").arg("10"), Duration::from_millis(100));
        assert!(killed.status.unwrap_err().starts_with("killed after"));
        assert!(start.elapsed() < Duration::from_secs(5));
        let missing = run_with_timeout(&mut Command::new("/nonexistent/program"), Duration::from_secs(1));
        assert!(missing.status.unwrap_err().starts_with("cannot start"));
    }
}
