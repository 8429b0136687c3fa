//! Runs the Criterion workloads in each allocator's `criterion_once` program (next to this
//! binary) in interleaved rounds and writes the table of Tally against the allocator crates
//! (`tally_benches::rust_crates`, `benches/run-rust-crates.sh`, `docs/benchmarks.md`).

use std::process::ExitCode;

use tally_benches::rust_crates::{report, BASELINE, VARIANTS};
use tally_benches::rust_once::{runner_main, OPTIONS};

fn main() -> ExitCode {
    let usage = format!(
        "\
usage: rust_crates [options]

Runs each Criterion workload of the GlobalAlloc path in criterion_once (Tally, profiler off)
and in criterion_once_system, _mimalloc, _jemalloc and _stoolap (built next to this program),
in interleaved rounds, and prints the table of median ns an iteration, Tally against the
fastest crate, and the heavy workloads' peak RSS, also written to --out (the raw rounds beside
it).

{OPTIONS}"
    );
    runner_main(
        "rust_crates",
        &usage,
        "rust-crates.md",
        &VARIANTS,
        BASELINE,
        report,
    )
}
