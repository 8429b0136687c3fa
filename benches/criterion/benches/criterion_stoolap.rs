//! The Criterion benchmarks of the `GlobalAlloc` path under stoolap-jemalloc with its profiler
//! never activated (see `tally_benches::criterion_suite`).

mod driver;

use tally_benches::stoolap_jemalloc;

#[global_allocator]
static ALLOCATOR: stoolap_jemalloc::Jemalloc = stoolap_jemalloc::Jemalloc::new();

fn main() {
    driver::run("stoolap");
}
