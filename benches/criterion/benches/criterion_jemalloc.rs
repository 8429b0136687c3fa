//! The Criterion benchmarks of the `GlobalAlloc` path under jemalloc (crate `tikv-jemallocator`)
//! (see `tally_benches::criterion_suite`).

mod driver;

use tally_benches::tikv_jemallocator;

#[global_allocator]
static ALLOCATOR: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

fn main() {
    driver::run("jemalloc");
}
