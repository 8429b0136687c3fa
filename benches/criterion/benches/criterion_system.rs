//! The Criterion benchmarks of the `GlobalAlloc` path under glibc malloc, through
//! `std::alloc::System` (see `tally_benches::criterion_suite`).

mod driver;

#[global_allocator]
static ALLOCATOR: std::alloc::System = std::alloc::System;

fn main() {
    driver::run("system");
}
