//! The Criterion benchmarks of the `GlobalAlloc` path under Tally (see
//! `tally_benches::criterion_suite`): with its profiler off, the variant `tally`, or on, the
//! variant `tally+prof`, when `TALLY_CONF` (or `MALLOC_CONF`) says `prof:true`.
//! `benches/run-criterion.sh` runs this one program both ways, so that the two columns differ
//! by the profiler alone and not by where the linker put the code of two programs (which moved
//! `btree_map/1000` by 1.45×, docs/benchmarks.md).

mod driver;

use tally_benches::tally;

#[global_allocator]
static ALLOCATOR: tally::Tally = tally::Tally;

fn main() {
    // Tally reads its options once, at the process's first allocation, which comes before
    // `main`. `activate` starts sampling (also under `prof_active:false`) and returns false when
    // those options left the profiler off.
    let variant = if tally::prof::activate() {
        "tally+prof"
    } else {
        "tally"
    };
    driver::run(variant);
}
