//! The malloc/free pair micro-benchmark (`tally_benches::micro`, its programs `micro_<allocator>`
//! and their runner `micro_runner`, `benches/run-micro.sh`) at its smallest settings: each round
//! runs every column at the round's stack phase, a program says which phase it ran at, and a
//! wrong phase is refused with one line. What is tested is that the runner works, not how fast
//! anything is: speed is measured by running it, never here.

use std::path::PathBuf;
use std::process::Command;

use tally_benches::criterion_suite::STACK_PHASE_VAR;
use tally_tests::{target_dir, ScratchDir};

/// A program of the micro-benchmark, which `scripts/test.sh` builds before the tests.
fn program(name: &str) -> PathBuf {
    let path = target_dir().join("release").join(name);
    assert!(
        path.is_file(),
        "{} not found: run `cargo build --release -p tally-benches --bin {name}` first",
        path.display()
    );
    path
}

/// `micro_tally` on one workload for a few milliseconds at `phase` (unset: `None`).
fn micro_tally(phase: Option<&str>) -> std::process::Output {
    let mut command = Command::new(program("micro_tally"));
    command
        .env("TALLY_BENCH_MEASURE_MS", "5")
        .env("TALLY_BENCH_WARMUP_MS", "1")
        .env("TALLY_BENCH_FILTER", "pair/1t/16,xthread/2t/64")
        .env_remove(STACK_PHASE_VAR);
    if let Some(phase) = phase {
        command.env(STACK_PHASE_VAR, phase);
    }
    command.output().expect("micro_tally runs")
}

#[test]
fn a_program_runs_at_the_phase_it_is_given_and_refuses_a_wrong_one() {
    for (phase, want) in [(None, "0"), (Some("0"), "0"), (Some("7"), "7")] {
        let out = micro_tally(phase);
        assert!(out.status.success(), "{phase:?}: {out:?}");
        let stdout = String::from_utf8_lossy(&out.stdout);
        let header = stdout.lines().next().unwrap_or("");
        assert!(
            header.starts_with("# micro allocator=tally ")
                && header.ends_with(&format!(" stack_phase={want}")),
            "{phase:?}: {stdout}"
        );
        for workload in ["pair/1t/16", "xthread/2t/64"] {
            let ns: f64 = stdout
                .lines()
                .find_map(|line| line.strip_prefix(&format!("{workload}\t")))
                .and_then(|rest| rest.split('\t').next()?.parse().ok())
                .unwrap_or_else(|| panic!("{phase:?}: no {workload} in {stdout}"));
            assert!(ns > 0.0, "{phase:?}: {stdout}");
        }
    }
    for bad in ["8", "-1", "x"] {
        let out = micro_tally(Some(bad));
        assert_eq!(out.status.code(), Some(2), "{bad}: {out:?}");
        assert!(out.stdout.is_empty(), "{bad}: {out:?}");
        assert_eq!(
            String::from_utf8_lossy(&out.stderr).trim_end(),
            format!("micro_tally: TALLY_BENCH_STACK_PHASE=\"{bad}\": not a stack phase (0 to 7)")
        );
    }
}

#[test]
fn the_runner_measures_every_column_in_every_round_at_the_rounds_phase() {
    let scratch = ScratchDir::new(env!("CARGO_TARGET_TMPDIR"), "micro_runner");
    let out_md = scratch.join("micro.md");
    let out = Command::new(program("micro_runner"))
        .args(["--rounds", "2", "--measure-ms", "5", "--warmup-ms", "1"])
        .args(["--filter", "pair/1t/16", "--allocators", "system,tally", "--out"])
        .arg(&out_md)
        .env_remove(STACK_PHASE_VAR)
        .output()
        .expect("micro_runner runs");
    assert!(out.status.success(), "{out:?}");
    let stderr = String::from_utf8_lossy(&out.stderr);
    for (round, phase) in [(1, 0), (2, 1)] {
        for column in ["system", "tally"] {
            assert!(
                stderr.lines().any(|line| {
                    line.starts_with(&format!("round {round}/2 (stack phase {phase}): {column} "))
                }),
                "round {round}, {column}: {stderr}"
            );
        }
    }
    let md = std::fs::read_to_string(&out_md).expect("the report");
    assert!(
        md.contains("every column of round r at stack phase r mod 8"),
        "{md}"
    );
    let row = md
        .lines()
        .find(|line| line.starts_with("| pair/1t/16 |"))
        .unwrap_or_else(|| panic!("no row in\n{md}"));
    assert!(!row.contains('–'), "a missing cell: {row}");
    // Two rounds of two columns, each a number of its own.
    let raw = std::fs::read_dir(scratch.path())
        .unwrap()
        .filter_map(|e| e.ok())
        .find(|e| e.file_name().to_string_lossy().ends_with(".tsv"))
        .map(|e| std::fs::read_to_string(e.path()).unwrap())
        .unwrap_or_else(|| panic!("no raw rounds beside {}", out_md.display()));
    let cells = raw.lines().filter(|line| line.contains("pair/1t/16")).count();
    assert_eq!(cells, 4, "{raw}");
}
