//! Runs Criterion workloads of `tally_benches::criterion_suite` a given number of iterations
//! each under Tally, in order, without Criterion: for counting their instructions with
//! callgrind, with the profiler off and on (`benches/run-prof-cost.sh`); for timing them with
//! the profiler off and on in one program (`prof_rust`, `benches/run-prof-rust.sh`, which runs a
//! workload twice, warm-up then measured) and against the allocator crates' `criterion_once_*`
//! twins (`rust_crates`, `benches/run-rust-crates.sh`); and for workloads whose time depends on
//! the heap the ones before them left. With several pairs, the time of each, in ns an iteration
//! to 3 decimals, and the peak RSS of them all are printed on stderr
//! ([`tally_benches::criterion_suite::once_main`]).
//!
//! Usage: `criterion_once <workload>/<parameter> ITERATIONS [<workload>/<parameter> ITERATIONS
//! ...]` (e.g. `alloc_free/1024 1000000`); the profiler is whatever `TALLY_CONF` says.

#[global_allocator]
static ALLOCATOR: tally::Tally = tally::Tally;

fn main() {
    tally_benches::criterion_suite::once_main("criterion_once");
}
