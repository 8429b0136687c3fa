//! The profiler-cost runner of the Rust micro workloads (`tally_benches::prof_rust`, binary
//! `prof_rust`, `benches/run-prof-rust.sh`) end to end on two workloads with its smallest
//! settings: it calibrates each workload in the real `criterion_once` (Tally as its global
//! allocator), runs it with the profiler off and on in every round, and reports a number for
//! every cell. What is tested is that the runner works, not how fast anything is: speed is
//! measured by running it, never here.

use std::path::PathBuf;
use std::time::Duration;

use tally_benches::criterion_suite::{STACK_PHASES, STACK_PHASE_VAR};
use tally_benches::harness::Machine;
use tally_benches::prof_rust::{measure, report, VARIANTS};
use tally_benches::rust_once::{calibrate, run_once, Settings};
use tally_tests::target_dir;

/// `criterion_once`, which `scripts/test.sh` builds before the tests.
fn criterion_once() -> PathBuf {
    let path = target_dir().join("release").join("criterion_once");
    assert!(
        path.is_file(),
        "{} not found: run `cargo build --release -p tally-benches --bin criterion_once` first",
        path.display()
    );
    path
}

fn quick() -> Settings {
    Settings {
        rounds: 2,
        run_ms: 10,
        filter: vec!["alloc_free/16".into(), "vec_push/1000".into()],
        timeout: Duration::from_secs(120),
        ..Settings::default()
    }
}

#[test]
fn every_workload_runs_with_the_profiler_off_and_on_in_every_round() {
    let settings = quick();
    let measured = measure(&criterion_once(), &settings);
    assert!(measured.failures.is_empty(), "{:?}", measured.failures);
    let rows = measured.samples.rows().to_vec();
    assert_eq!(rows, ["alloc_free/16", "vec_push/1000"]);
    for row in &rows {
        for column in VARIANTS.map(|variant| variant.column) {
            let values = measured.samples.values(column, row);
            assert_eq!(values.len(), settings.rounds, "{column} {row}: {values:?}");
            assert!(values.iter().all(|ns| *ns > 0.0), "{column} {row}: {values:?}");
        }
        let (_, n) = measured.iterations.iter().find(|(name, _)| name == row).unwrap();
        assert!(*n > 1, "{row}: {n} iterations for {} ms", settings.run_ms);
    }
    let md = report(&measured, &Machine::default(), &settings);
    for row in &rows {
        let line = md
            .lines()
            .find(|line| line.starts_with(&format!("| {row} |")))
            .unwrap_or_else(|| panic!("no row {row} in\n{md}"));
        assert!(!line.contains('–'), "a missing cell: {line}");
    }
    assert!(md.contains("- Within 3% on ") && md.contains(" of 2"), "{md}");
}

#[test]
fn a_run_that_fails_says_which_and_why() {
    let settings = quick();
    let exe = criterion_once();
    let error = run_once(&exe, "prof:false", "no_such/1", (1, 1), 0, settings.timeout)
        .expect_err("an unknown workload");
    assert!(error.contains("no_such/1"), "{error}");
    assert!(error.contains("no benchmark"), "{error}");
    // The calibration passes the error on.
    assert!(calibrate(&exe, "prof:false", "no_such/1", &settings).is_err());
}

#[test]
fn every_stack_phase_runs_and_a_wrong_one_is_refused() {
    let settings = quick();
    let exe = criterion_once();
    for phase in 0..STACK_PHASES + 1 {
        let run = run_once(
            &exe,
            "prof:false",
            "vec_push/1000",
            (1, 10),
            phase,
            settings.timeout,
        )
        .unwrap_or_else(|e| panic!("phase {phase}: {e}"));
        assert!(run.ns > 0.0, "phase {phase}: {run:?}");
    }
    let out = std::process::Command::new(&exe)
        .args(["vec_push/1000", "1"])
        .env(STACK_PHASE_VAR, "8")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(
        stderr.trim_end(),
        "criterion_once: TALLY_BENCH_STACK_PHASE=\"8\": not a stack phase (0 to 7)"
    );
}
