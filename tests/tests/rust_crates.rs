//! The runner of Tally against the allocator crates on the Rust micro workloads
//! (`tally_benches::rust_crates`, binary `rust_crates`, `benches/run-rust-crates.sh`) end to end
//! on a light workload and a heavy one with its smallest settings: it calibrates in Tally's
//! `criterion_once`, runs both workloads in all five real `criterion_once` programs in every
//! round, and reports every cell, the verdict against the fastest crate and the heavy workload's
//! peak RSS. What is tested is that the runner works and what each program reports, not how
//! fast anything is: speed is measured by running it, never here.

use std::path::PathBuf;
use std::process::Command;
use std::time::Duration;

use tally_benches::harness::Machine;
use tally_benches::rust_crates::{report, BASELINE, VARIANTS};
use tally_benches::rust_once::{measure, programs, Settings};
use tally_tests::target_dir;

/// Where `scripts/test.sh` builds the `criterion_once` programs before the tests.
fn bin_dir() -> PathBuf {
    target_dir().join("release")
}

#[test]
fn every_program_runs_every_workload_in_every_round() {
    let programs = programs(&bin_dir(), &VARIANTS).unwrap_or_else(|error| panic!("{error}"));
    let settings = Settings {
        rounds: 2,
        run_ms: 10,
        filter: vec!["alloc_free/16".into(), "vec_extend".into()],
        timeout: Duration::from_secs(120),
        ..Settings::default()
    };
    let measured = measure(&programs, BASELINE, &settings);
    assert!(measured.failures.is_empty(), "{:?}", measured.failures);
    let rows = measured.samples.rows().to_vec();
    assert_eq!(rows, ["alloc_free/16", "vec_extend/67108864"]);
    for row in &rows {
        for variant in VARIANTS {
            let values = measured.samples.values(variant.column, row);
            assert_eq!(
                values.len(),
                settings.rounds,
                "{} {row}: {values:?}",
                variant.column
            );
            assert!(
                values.iter().all(|ns| *ns > 0.0),
                "{} {row}: {values:?}",
                variant.column
            );
            // Every run reports its peak RSS; growing a vector to 64 MiB takes at least that.
            let rss = measured.peak_rss_kib.values(variant.column, row);
            assert_eq!(rss.len(), settings.rounds, "{} {row}: {rss:?}", variant.column);
            if row.starts_with("vec_extend") {
                assert!(
                    rss.iter().all(|kib| *kib >= 64.0 * 1024.0),
                    "{} {row}: {rss:?}",
                    variant.column
                );
            }
        }
    }
    let md = report(&measured, &Machine::default(), &settings);
    for row in &rows {
        let line = md
            .lines()
            .find(|line| {
                line.starts_with(&format!("| {row} | "))
                    && (line.ends_with(" | yes |") || line.ends_with(" | **no** |"))
            })
            .unwrap_or_else(|| panic!("no verdict for {row} in\n{md}"));
        assert!(!line.contains('–'), "a missing cell: {line}");
    }
    assert!(
        md.contains("- At or below the fastest crate on ") && md.contains(" of 2"),
        "{md}"
    );
    assert!(md.contains("### Peak RSS of the heavy workloads"), "{md}");
}

#[test]
fn each_program_runs_under_its_own_allocator() {
    // Tally reads TALLY_CONF and names an unknown option in a one-line warning; a program with
    // another global allocator never reads it. So only Tally's program warns.
    let programs = programs(&bin_dir(), &VARIANTS).unwrap_or_else(|error| panic!("{error}"));
    for (variant, exe) in &programs {
        let out = Command::new(exe)
            .args(["alloc_free/16", "1", "alloc_free/16", "1000"])
            .env("TALLY_CONF", "no_such_option:1")
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(out.status.success(), "{}: {stderr}", variant.column);
        let warned = stderr.contains("TALLY_CONF: unknown option \"no_such_option\"");
        assert_eq!(
            warned,
            !variant.tally_conf.is_empty(),
            "{}: {stderr}",
            variant.column
        );
        assert!(stderr.contains("alloc_free/16: "), "{}: {stderr}", variant.column);
    }
}
