//! The malloc/free pair micro-benchmark under glibc malloc, through `std::alloc::System` (see `tally_benches::micro`).

#[global_allocator]
static ALLOCATOR: std::alloc::System = std::alloc::System;

fn main() {
    tally_benches::micro::run_all("system");
}
