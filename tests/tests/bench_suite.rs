//! The benchmark suite's runner (`tally_benches::suite`, the binary `suite` that
//! `benches/run-suite.sh` runs; issue 6) end to end, with its smallest arguments: every workload,
//! the two real programs (CPython, sqlite3) and the Debian peers (jemalloc, mimalloc, tcmalloc)
//! must run, agree on every checksum (the runner reports a failure otherwise), and the report
//! must hold a number for every cell. The runner is called in this process with the command line
//! `run-suite.sh --quick` passes it. What is tested is that the suite works, not how fast anything
//! is: speed is measured by running the suite, never here.

use std::path::Path;

use tally_benches::suite;
use tally_tests::{libtally_so, require_tool, ScratchDir};

const WORKLOADS: [&str; 13] = [
    "small_objects",
    "larson",
    "prodcons",
    "false_sharing",
    "realloc_growth",
    "large_blocks",
    "fragmentation",
    "thread_churn",
    "generations",
    "size_churn",
    "prodcons_many",
    "python",
    "sqlite",
];
const ALLOCATORS: [&str; 8] = [
    "glibc",
    "tally",
    "tally-prof",
    "tally-prof17",
    "tally-guard",
    "jemalloc",
    "mimalloc",
    "tcmalloc",
];
const PEERS: [(&str, &str); 3] = [
    ("libjemalloc.so.2", "libjemalloc2"),
    ("libmimalloc.so.2", "libmimalloc2.0"),
    ("libtcmalloc_minimal.so.4", "libtcmalloc-minimal4"),
];

#[test]
fn suite_runs_every_workload_under_every_allocator() {
    require_tool("python3", "python3");
    require_tool("sqlite3", "sqlite3");
    require_tool("cc", "build-essential");
    for (lib, package) in PEERS {
        let path = Path::new("/usr/lib/x86_64-linux-gnu").join(lib);
        assert!(
            path.exists(),
            "{} missing: install the Debian package `{package}`",
            path.display()
        );
    }
    let scratch = ScratchDir::new(env!("CARGO_TARGET_TMPDIR"), "suite");
    let args = [
        "--tally-so".into(),
        libtally_so().display().to_string(),
        "--quick".into(),
        "--out".into(),
        scratch.path().display().to_string(),
    ];
    let options = suite::parse_args(args)
        .expect("the command line parses")
        .expect("not --help");
    assert_eq!(options.rounds, 1, "--quick runs one round");
    let passed = suite::run(&options).expect("the suite runs");
    let md = std::fs::read_to_string(scratch.path().join("suite.md")).expect("suite.md written");
    assert!(passed, "a run failed or checksums differ:\n{md}");

    assert!(!md.contains("failed") && !md.contains("## Failures"), "{md}");
    let header = format!("| workload | {} |", ALLOCATORS.join(" | "));
    assert_eq!(md.matches(&header).count(), 2, "a time and an RSS table:\n{md}");
    // The time and RSS tables come before the targets' and the profiling-overhead tables, which
    // have a row per workload too (checked below).
    let (tables, rest) = md
        .split_once("## Tally against the targets")
        .unwrap_or_else(|| panic!("no targets table:\n{md}"));
    let (targets, overhead) = rest
        .split_once("## Profiling and guarding overhead")
        .unwrap_or_else(|| panic!("no profiling-overhead table:\n{md}"));
    for w in WORKLOADS {
        let rows: Vec<&str> = tables
            .lines()
            .filter(|l| l.starts_with(&format!("| {w} |")))
            .collect();
        assert_eq!(rows.len(), 2, "{w}: one row per table:\n{md}");
        for row in rows {
            // Every cell is "<number> (<ratio>×)", and glibc's ratio is exactly 1.
            let cells: Vec<&str> = row.trim_matches('|').split('|').skip(1).collect();
            assert_eq!(cells.len(), ALLOCATORS.len(), "{row}");
            for cell in &cells {
                let (value, ratio) = cell.trim().split_once(" (").unwrap_or(("", ""));
                let value: f64 = value.parse().unwrap_or_else(|_| panic!("{w}: cell {cell:?}"));
                let ratio: f64 = ratio.trim_end_matches("×)").parse().unwrap_or(f64::NAN);
                assert!(value > 0.0 && ratio > 0.0, "{w}: cell {cell:?} in {row}");
            }
            assert!(cells[0].contains("(1.00×)"), "{row}");
        }
    }
    assert!(md.contains("RSS after everything is freed"), "{md}");

    // Tally against the targets: per workload the fastest peer and Tally's verdicts, then the
    // counts over every workload.
    for w in WORKLOADS {
        let row = targets
            .lines()
            .find(|l| l.starts_with(&format!("| {w} |")))
            .unwrap_or_else(|| panic!("{w}: no targets row:\n{targets}"));
        let cells: Vec<&str> = row.trim_matches('|').split('|').map(str::trim).collect();
        assert_eq!(cells.len(), 7, "{row}");
        for verdict in [cells[3], cells[6]] {
            assert!(verdict == "within" || verdict == "**over**", "{row}");
        }
    }
    let n = WORKLOADS.len();
    assert!(
        targets.contains("- Time within 5% of the fastest peer (of glibc, jemalloc, mimalloc, tcmalloc) on ")
            && targets.contains(&format!(" of {n}")),
        "{targets}"
    );
    assert!(targets.contains("- Peak RSS within its bound on "), "{targets}");
    assert!(targets.contains("- Time geometric mean "), "{targets}");

    // The profiler's and guarded sampling's cost: tally-prof, tally-prof17 and tally-guard over
    // tally, a positive ratio per workload.
    assert!(
        overhead.contains("| workload | tally-prof / tally | tally-prof17 / tally | tally-guard / tally |"),
        "{overhead}"
    );
    for w in WORKLOADS.iter().copied().chain(["geometric mean"]) {
        let row = overhead
            .lines()
            .find(|l| l.starts_with(&format!("| {w} |")))
            .unwrap_or_else(|| panic!("{w}: no overhead row:\n{overhead}"));
        let cells: Vec<&str> = row.trim_matches('|').split('|').skip(1).collect();
        assert_eq!(cells.len(), 3, "{row}");
        for cell in cells {
            let ratio: f64 = cell.trim().trim_end_matches('×').parse().unwrap_or(f64::NAN);
            assert!(ratio > 0.0, "{w}: overhead cell {cell:?}");
        }
    }

    // One raw line per run, and a plot with a bar per cell and per geometric mean, both panels.
    let raw = std::fs::read_to_string(scratch.path().join("suite.raw.tsv")).expect("raw TSV");
    assert_eq!(
        raw.lines().count(),
        1 + WORKLOADS.len() * ALLOCATORS.len(),
        "{raw}"
    );
    let svg = std::fs::read_to_string(scratch.path().join("suite.svg")).expect("suite.svg");
    assert!(svg.starts_with("<svg") && svg.trim_end().ends_with("</svg>"));
    let bars = svg.matches("<title>").count();
    assert_eq!(
        bars,
        2 * (WORKLOADS.len() + 1) * ALLOCATORS.len(),
        "bars in the plot"
    );
}
