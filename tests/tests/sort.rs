//! GNU sort under Tally: sorting a large generated file gives exactly the expected bytes.
//!
//! Two runs: an in-memory byte-order sort, checked against the order Rust computes, and a
//! numeric-key sort with a 1 MiB buffer and two threads, which forces sort to spill sorted runs
//! to temporary files and merge them (big buffers allocated, freed and reallocated, work split
//! across threads). Both must match the plain run and the independently computed answer.

use std::fmt::Write as _;
use std::process::Command;
use tally_tests::{require_tool, run_both, Rng, ScratchDir, DEFAULT_TIMEOUT};

const LINES: usize = 200_000;

/// `LINES` lines of `<word> <number> <hex>`, deterministic.
fn generate() -> Vec<String> {
    let mut rng = Rng::new(2024);
    (0..LINES)
        .map(|_| {
            let len = 1 + rng.below(20) as usize;
            let word: String = (0..len).map(|_| char::from(b'a' + rng.below(26) as u8)).collect();
            let mut line = word;
            let _ = write!(line, " {} {:x}", rng.below(1_000_000), rng.next_u64());
            line
        })
        .collect()
}

fn joined(lines: &[String]) -> Vec<u8> {
    let mut bytes = Vec::new();
    for line in lines {
        bytes.extend_from_slice(line.as_bytes());
        bytes.push(b'\n');
    }
    bytes
}

#[test]
fn sort_output_is_identical_under_tally() {
    let sort = require_tool("sort", "coreutils");
    let scratch = ScratchDir::new(env!("CARGO_TARGET_TMPDIR"), "sort");
    let input = scratch.join("input.txt");
    let lines = generate();
    std::fs::write(&input, joined(&lines)).unwrap();

    // 1. Plain byte order (LC_ALL=C); sort's result must be Rust's byte-wise sort.
    let mut expected = lines.clone();
    expected.sort();
    let (plain, _) = run_both(
        || {
            let mut cmd = Command::new(&sort);
            cmd.arg(&input).env("LC_ALL", "C");
            cmd
        },
        DEFAULT_TIMEOUT,
    );
    assert!(
        plain.stdout == joined(&expected),
        "plain `sort` disagrees with the expected byte order"
    );

    // 2. Numeric second field, ties broken by sort's last-resort whole-line comparison; small
    //    buffer and two threads force temporary files and a multi-way merge.
    let tmp = scratch.subdir("sort-tmp");
    let mut expected = lines;
    expected.sort_by(|a, b| {
        let key = |line: &String| -> u64 { line.split(' ').nth(1).unwrap().parse().unwrap() };
        key(a).cmp(&key(b)).then_with(|| a.cmp(b))
    });
    let (plain, _) = run_both(
        || {
            let mut cmd = Command::new(&sort);
            cmd.args(["-t", " ", "-k2,2n", "-S", "1M", "--parallel=2", "-T"])
                .arg(&tmp)
                .arg(&input)
                .env("LC_ALL", "C");
            cmd
        },
        DEFAULT_TIMEOUT,
    );
    assert!(
        plain.stdout == joined(&expected),
        "plain `sort -k2,2n` disagrees with the expected order"
    );
}
