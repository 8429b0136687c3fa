//! The Criterion benchmarks of the `GlobalAlloc` path under Tally with its profiler on (see
//! `tally_benches::criterion_suite`).

mod driver;

use tally_benches::tally;

#[global_allocator]
static ALLOCATOR: tally::Tally = tally::Tally;

fn main() {
    // Tally reads TALLY_CONF once, at the process's first allocation, which comes before `main`.
    // `activate` starts sampling (also under `prof_active:false`) and returns false if that read
    // left the profiler off: then run again with `prof:true` added, at the default rate unless
    // TALLY_CONF sets `lg_prof_sample`.
    if !tally::prof::activate() {
        tally_benches::criterion_suite::rerun_with_option("TALLY_CONF", "prof:true");
    }
    driver::run("tally+prof");
}
