//! `criterion_once` under the C library's malloc (`std::alloc::System`): the same workloads, arguments and
//! output, for `rust_crates` (`benches/run-rust-crates.sh`) to time against Tally's.

#[global_allocator]
static ALLOCATOR: std::alloc::System = std::alloc::System;

fn main() {
    tally_benches::criterion_suite::once_main("criterion_once_system");
}
