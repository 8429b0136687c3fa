//! `criterion_once` under jemalloc (crate `tikv-jemallocator`): the same workloads, arguments and
//! output, for `rust_crates` (`benches/run-rust-crates.sh`) to time against Tally's.

#[global_allocator]
static ALLOCATOR: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

fn main() {
    tally_benches::criterion_suite::once_main("criterion_once_jemalloc");
}
