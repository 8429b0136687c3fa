//! `criterion_once` under stoolap-jemalloc, a pure-Rust jemalloc, its profiler never activated: the same workloads, arguments and
//! output, for `rust_crates` (`benches/run-rust-crates.sh`) to time against Tally's.

#[global_allocator]
static ALLOCATOR: stoolap_jemalloc::Jemalloc = stoolap_jemalloc::Jemalloc::new();

fn main() {
    tally_benches::criterion_suite::once_main("criterion_once_stoolap");
}
