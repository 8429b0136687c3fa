//! The malloc/free pair micro-benchmark under jemalloc (crate `tikv-jemallocator`) (see `tally_benches::micro`).

#[global_allocator]
static ALLOCATOR: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

fn main() {
    tally_benches::micro::run_all("jemalloc");
}
