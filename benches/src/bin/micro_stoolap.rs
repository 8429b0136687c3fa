//! The malloc/free pair micro-benchmark under stoolap-jemalloc, a pure-Rust jemalloc (see `tally_benches::micro`).

#[global_allocator]
static ALLOCATOR: stoolap_jemalloc::Jemalloc = stoolap_jemalloc::Jemalloc::new();

fn main() {
    tally_benches::micro::run_all("stoolap");
}
