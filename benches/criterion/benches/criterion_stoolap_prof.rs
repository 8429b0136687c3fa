//! The Criterion benchmarks of the `GlobalAlloc` path under stoolap-jemalloc with its profiler on
//! (see `tally_benches::criterion_suite`).

mod driver;

use tally_benches::stoolap_jemalloc;

// stoolap-jemalloc reads no environment: `with_profiling` activates its profiler at the
// process's first allocation (as `stoolap_jemalloc::prof::activate()` would later), sampling once
// per 512 KiB allocated on average.
#[global_allocator]
static ALLOCATOR: stoolap_jemalloc::Jemalloc = stoolap_jemalloc::Jemalloc::new().with_profiling();

fn main() {
    assert!(
        stoolap_jemalloc::prof::is_active(),
        "stoolap-jemalloc's profiler is off"
    );
    driver::run("stoolap+prof");
}
