//! The Criterion benchmarks of the `GlobalAlloc` path under Tally with its profiler off (see
//! `tally_benches::criterion_suite`).

mod driver;

use tally_benches::tally;

#[global_allocator]
static ALLOCATOR: tally::Tally = tally::Tally;

fn main() {
    // `deactivate` reports whether the profiler is on (`prof:true` in TALLY_CONF or MALLOC_CONF):
    // then this would measure `tally+prof` under the name `tally`.
    assert!(
        !tally::prof::deactivate(),
        "the profiler is on: unset prof:true in TALLY_CONF and MALLOC_CONF for the `tally` \
         variant (criterion_tally_prof is the profiler on)"
    );
    driver::run("tally");
}
