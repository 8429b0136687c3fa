//! The runner's arithmetic and report: parsing the allocator binaries' output, medians over
//! rounds, the machine description and the Markdown table. Processes are the runner binary's
//! business (`src/bin/micro_runner.rs`); everything here is plain data, so it is tested here.
//!
//! # Why interleaved rounds and medians
//!
//! A 2-core machine shared with compilers and editors drifts over minutes (frequency, other
//! load, page cache). Running every allocator once per round, in turn, for several rounds spreads
//! that drift over all allocators alike, and the median over rounds drops the rounds that a burst
//! of other load hit. The report gives the spread over rounds, so a reader can tell a difference
//! from noise.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::Path;
use std::process::Command;

/// The allocators compared, in run and column order; `micro_<name>` is each one's binary.
pub const ALLOCATORS: [&str; 5] = ["system", "tally", "mimalloc", "jemalloc", "stoolap"];

/// The allocator the ratios are taken against.
pub const BASELINE: &str = "system";

/// What each allocator is, for the report's legend.
pub fn describe(allocator: &str) -> &'static str {
    match allocator {
        "system" => "`std::alloc::System` (glibc malloc)",
        "tally" => "`tally::Tally` (this workspace, `default-features = false`)",
        "mimalloc" => "`mimalloc::MiMalloc` (crate `mimalloc`)",
        "jemalloc" => "`tikv_jemallocator::Jemalloc` (crate `tikv-jemallocator`)",
        "stoolap" => "`stoolap_jemalloc::Jemalloc` (crate `stoolap-jemalloc`, pure Rust)",
        _ => "unknown",
    }
}

/// Parses an allocator binary's output into `(workload, ns per pair)` in output order, skipping
/// `#` comment lines and blank lines.
///
/// # Errors
///
/// A line that is not `<workload>\t<ns per pair>\t<pairs>` with a finite positive time.
pub fn parse_output(text: &str) -> Result<Vec<(String, f64)>, String> {
    let mut results = Vec::new();
    for line in text.lines() {
        let line = line.trim_end();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let mut fields = line.split('\t');
        let (Some(name), Some(ns), Some(_pairs), None) =
            (fields.next(), fields.next(), fields.next(), fields.next())
        else {
            return Err(format!("not `workload<TAB>ns<TAB>pairs`: {line:?}"));
        };
        match ns.parse::<f64>() {
            Ok(ns) if ns.is_finite() && ns > 0.0 => results.push((name.to_string(), ns)),
            _ => return Err(format!("bad time in {line:?}")),
        }
    }
    Ok(results)
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

/// The geometric mean of positive `values`; `None` if empty.
pub fn geometric_mean(values: &[f64]) -> Option<f64> {
    if values.is_empty() {
        return None;
    }
    let log_sum: f64 = values.iter().map(|value| value.ln()).sum();
    Some((log_sum / values.len() as f64).exp())
}

/// Every measurement of a run of the runner, by allocator and workload.
#[derive(Default, Debug)]
pub struct Results {
    /// Allocators in column order (those that were run).
    pub allocators: Vec<String>,
    /// Workloads in the order the binaries print them.
    pub workloads: Vec<String>,
    /// ns per pair of each round, by `(allocator, workload)`.
    pub samples: BTreeMap<(String, String), Vec<f64>>,
    /// Why some runs failed, by allocator, one entry per failed run.
    pub failures: BTreeMap<String, Vec<String>>,
    /// Allocators not run, with the reason (e.g. binary not built).
    pub skipped: Vec<(String, String)>,
}

impl Results {
    /// Records the measurements of one run of `allocator`'s binary.
    pub fn add_run(&mut self, allocator: &str, run: &[(String, f64)]) {
        for (workload, ns) in run {
            if !self.workloads.contains(workload) {
                self.workloads.push(workload.clone());
            }
            self.samples
                .entry((allocator.to_string(), workload.clone()))
                .or_default()
                .push(*ns);
        }
    }

    /// Records that one run of `allocator`'s binary failed.
    pub fn add_failure(&mut self, allocator: &str, reason: String) {
        self.failures
            .entry(allocator.to_string())
            .or_default()
            .push(reason);
    }

    /// The rounds of one cell.
    pub fn rounds(&self, allocator: &str, workload: &str) -> &[f64] {
        self.samples
            .get(&(allocator.to_string(), workload.to_string()))
            .map_or(&[], Vec::as_slice)
    }

    /// The median ns per pair of one cell.
    pub fn median(&self, allocator: &str, workload: &str) -> Option<f64> {
        median(self.rounds(allocator, workload))
    }

    /// The cell's median divided by the baseline's median for the same workload.
    pub fn ratio(&self, allocator: &str, workload: &str) -> Option<f64> {
        Some(self.median(allocator, workload)? / self.median(BASELINE, workload)?)
    }

    /// `(max - min) / median` over one cell's rounds; `None` with fewer than two rounds.
    pub fn spread(&self, allocator: &str, workload: &str) -> Option<f64> {
        let rounds = self.rounds(allocator, workload);
        if rounds.len() < 2 {
            return None;
        }
        let max = rounds.iter().copied().fold(f64::MIN, f64::max);
        let min = rounds.iter().copied().fold(f64::MAX, f64::min);
        Some((max - min) / median(rounds)?)
    }

    /// Every sample as tab-separated lines `allocator workload round ns_per_pair`, with a header.
    pub fn raw_tsv(&self) -> String {
        let mut out = String::from("allocator\tworkload\tround\tns_per_pair\n");
        for ((allocator, workload), rounds) in &self.samples {
            for (round, ns) in rounds.iter().enumerate() {
                let _ = writeln!(out, "{allocator}\t{workload}\t{}\t{ns:.2}", round + 1);
            }
        }
        out
    }
}

/// How the runner ran, for the report.
#[derive(Clone, Debug)]
pub struct Settings {
    /// Interleaved rounds.
    pub rounds: usize,
    /// Measured time per workload, in ms.
    pub measure_ms: u128,
    /// Warm-up per workload, in ms.
    pub warmup_ms: u128,
    /// Workload filter (`TALLY_BENCH_FILTER`), empty for all.
    pub filter: Vec<String>,
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
    /// glibc version, which is what `System` is.
    pub libc: String,
    /// `rustc -V` of the compiler that built the benchmarks.
    pub rustc: String,
    /// Versions of the peer allocator crates from `Cargo.lock`.
    pub crates: Vec<(String, String)>,
    /// `git describe --always --dirty` of the workspace.
    pub commit: String,
    /// When the report was made, UTC.
    pub date: String,
}

impl Machine {
    /// Reads the description from `/proc`, `getconf`, git and the workspace's `Cargo.lock` (the
    /// versions of the crates of `allocators`); anything unreadable reads as `unknown`.
    pub fn probe(workspace: &Path, allocators: &[String]) -> Machine {
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
        let crates = allocators
            .iter()
            .flat_map(|allocator| crates_of(allocator))
            .filter_map(|name| Some((name.to_string(), locked_version(&lock, name)?)))
            .collect();
        Machine {
            cpu,
            cores: (listed, usable),
            memory,
            kernel,
            libc: command_line("getconf", &["GNU_LIBC_VERSION"], workspace),
            rustc: env!("TALLY_BENCH_RUSTC").to_string(),
            crates,
            commit: command_line("git", &["describe", "--always", "--dirty"], workspace),
            date: utc_date(
                std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .map_or(0, |since| since.as_secs()),
            ),
        }
    }

    /// The description as Markdown list items (date, CPU, kernel and libc, rustc, crates,
    /// workspace), one per line, for the head of a report.
    pub fn markdown_lines(&self) -> String {
        let mut out = String::new();
        let _ = writeln!(out, "- date: {}", self.date);
        let _ = writeln!(
            out,
            "- CPU: {} ({} logical CPUs listed, {} usable), {} memory",
            self.cpu, self.cores.0, self.cores.1, self.memory
        );
        let _ = writeln!(out, "- kernel: Linux {}; libc: {}", self.kernel, self.libc);
        let _ = writeln!(out, "- rustc: {}", self.rustc);
        if !self.crates.is_empty() {
            let crates: Vec<String> = self
                .crates
                .iter()
                .map(|(name, version)| format!("{name} {version}"))
                .collect();
            let _ = writeln!(out, "- crates: {}", crates.join(", "));
        }
        let _ = writeln!(out, "- workspace: {}", self.commit);
        out
    }
}

/// The crates.io crates that make up an allocator, whose versions the report gives.
fn crates_of(allocator: &str) -> &'static [&'static str] {
    match allocator {
        "mimalloc" => &["mimalloc", "libmimalloc-sys"],
        "jemalloc" => &["tikv-jemallocator", "tikv-jemalloc-sys"],
        "stoolap" => &["stoolap-jemalloc"],
        _ => &[],
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

/// The report: machine, settings, the table of medians with ratios to [`BASELINE`], and notes on
/// noise and failures.
pub fn markdown(results: &Results, machine: &Machine, settings: &Settings) -> String {
    let mut out = String::new();
    let _ = writeln!(out, "## Micro-benchmark: malloc/free pairs\n");
    out.push_str(&machine.markdown_lines());
    let _ = writeln!(
        out,
        "- settings: {} interleaved round(s), {} ms measured after {} ms warm-up per workload{}",
        settings.rounds,
        settings.measure_ms,
        settings.warmup_ms,
        if settings.filter.is_empty() {
            String::new()
        } else {
            format!(", filter {:?}", settings.filter.join(","))
        }
    );
    let _ = writeln!(out, "\nAllocators:");
    for allocator in &results.allocators {
        let _ = writeln!(out, "- `{allocator}`: {}", describe(allocator));
    }
    for (allocator, reason) in &results.skipped {
        let _ = writeln!(out, "- `{allocator}`: not run ({reason})");
    }

    let _ = writeln!(
        out,
        "\nMedian ns per malloc+free pair over the rounds (wall clock; with several threads, of the \
         whole process). In parentheses: the ratio to `{BASELINE}`, below 1 is faster.\n"
    );
    let _ = write!(out, "| workload |");
    for allocator in &results.allocators {
        let _ = write!(out, " {allocator} |");
    }
    let _ = write!(out, "\n|---|");
    for _ in &results.allocators {
        let _ = write!(out, "---:|");
    }
    out.push('\n');
    for workload in &results.workloads {
        let _ = write!(out, "| {workload} |");
        for allocator in &results.allocators {
            let cell = match (
                results.median(allocator, workload),
                results.ratio(allocator, workload),
            ) {
                (None, _) => "–".to_string(),
                (Some(ns), Some(ratio)) if allocator != BASELINE => {
                    format!("{ns:.1} ({ratio:.2}×)")
                }
                (Some(ns), _) => format!("{ns:.1}"),
            };
            let _ = write!(out, " {cell} |");
        }
        out.push('\n');
    }
    let _ = write!(out, "| geometric mean of ratios |");
    for allocator in &results.allocators {
        let ratios: Vec<f64> = results
            .workloads
            .iter()
            .filter_map(|workload| results.ratio(allocator, workload))
            .collect();
        let cell = geometric_mean(&ratios).map_or_else(|| "–".to_string(), |g| format!("{g:.2}×"));
        let _ = write!(out, " {cell} |");
    }
    out.push('\n');

    let mut spreads: Vec<(f64, &str, &str)> = Vec::new();
    for allocator in &results.allocators {
        for workload in &results.workloads {
            if let Some(spread) = results.spread(allocator, workload) {
                spreads.push((spread, allocator, workload));
            }
        }
    }
    if let Some(&(worst, allocator, workload)) = spreads.iter().max_by(|a, b| a.0.total_cmp(&b.0)) {
        let typical = median(&spreads.iter().map(|s| s.0).collect::<Vec<_>>()).unwrap_or(0.0);
        let _ = writeln!(
            out,
            "\nNoise, as (max − min) / median over the rounds of a cell: {:.0}% for the median \
             cell, {:.0}% at worst ({allocator}, {workload}).",
            typical * 100.0,
            worst * 100.0
        );
    }
    for (allocator, reasons) in &results.failures {
        let _ = writeln!(
            out,
            "\n`{allocator}` failed {} run(s); its cells use the rounds that finished. First \
             failure: {}",
            reasons.len(),
            reasons[0]
        );
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_output_and_rejects_garbage() {
        let text = "# micro allocator=system measure_ms=5 warmup_ms=1\n\
                    pair/1t/16\t12.50\t1000\n\nxthread/2t/256K\t900.00\t10\n";
        let parsed = parse_output(text).unwrap();
        assert_eq!(
            parsed,
            vec![
                ("pair/1t/16".to_string(), 12.5),
                ("xthread/2t/256K".to_string(), 900.0)
            ]
        );
        assert!(parse_output("pair/1t/16 12.5 1000").is_err());
        assert!(parse_output("pair/1t/16\tNaN\t1000").is_err());
        assert!(parse_output("pair/1t/16\t1\t2\t3").is_err());
    }

    #[test]
    fn medians_and_means() {
        assert_eq!(median(&[]), None);
        assert_eq!(median(&[3.0, 1.0, 2.0]), Some(2.0));
        assert_eq!(median(&[4.0, 1.0, 3.0, 2.0]), Some(2.5));
        let g = geometric_mean(&[0.5, 2.0]).unwrap();
        assert!((g - 1.0).abs() < 1e-12);
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
    fn table_has_medians_ratios_and_gaps() {
        let mut results = Results {
            allocators: vec!["system".into(), "tally".into()],
            ..Results::default()
        };
        for round in [[10.0, 100.0], [12.0, 110.0], [11.0, 90.0]] {
            results.add_run("system", &[("a".into(), round[0]), ("b".into(), round[1])]);
        }
        results.add_run("tally", &[("a".into(), 5.5)]);
        results.add_failure("tally", "exit status: 11".into());
        let settings = Settings {
            rounds: 3,
            measure_ms: 5,
            warmup_ms: 1,
            filter: Vec::new(),
        };
        let report = markdown(&results, &Machine::default(), &settings);
        assert!(report.contains("| a | 11.0 | 5.5 (0.50×) |"), "{report}");
        assert!(report.contains("| b | 100.0 | – |"), "{report}");
        assert!(
            report.contains("| geometric mean of ratios | 1.00× | 0.50× |"),
            "{report}"
        );
        assert!(report.contains("`tally` failed 1 run(s)"), "{report}");
        assert!(results.raw_tsv().contains("system\tb\t2\t110.00\n"));
    }
}
