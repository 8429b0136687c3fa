//! The Criterion benchmarks of the `GlobalAlloc` path under mimalloc (see
//! `tally_benches::criterion_suite`).

mod driver;

use tally_benches::mimalloc;

#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() {
    driver::run("mimalloc");
}
