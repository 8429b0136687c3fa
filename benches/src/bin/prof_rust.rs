//! Runs the Criterion workloads in `criterion_once` (next to this binary) with Tally's profiler
//! off and on, in interleaved rounds, and writes the table of what the profiler costs each
//! (`tally_benches::prof_rust`, `benches/run-prof-rust.sh`, `docs/benchmarks.md`).

use std::process::ExitCode;

use tally_benches::prof_rust::{report, VARIANTS};
use tally_benches::rust_once::{runner_main, OPTIONS};

fn main() -> ExitCode {
    let usage = format!(
        "\
usage: prof_rust [options]

Runs each Criterion workload of the GlobalAlloc path in criterion_once (built next to this
program) with TALLY_CONF=prof:false and prof:true, in interleaved rounds, and prints the table
of median ns an iteration and their ratio, also written to --out (the raw rounds beside it).

{OPTIONS}"
    );
    runner_main(
        "prof_rust",
        &usage,
        "prof-rust.md",
        &VARIANTS,
        VARIANTS[0].column,
        report,
    )
}
