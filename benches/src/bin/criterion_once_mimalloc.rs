//! `criterion_once` under mimalloc (crate `mimalloc`): the same workloads, arguments and
//! output, for `rust_crates` (`benches/run-rust-crates.sh`) to time against Tally's.

#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() {
    tally_benches::criterion_suite::once_main("criterion_once_mimalloc");
}
