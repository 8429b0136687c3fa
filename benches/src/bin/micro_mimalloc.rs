//! The malloc/free pair micro-benchmark under mimalloc (see `tally_benches::micro`).

#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() {
    tally_benches::micro::run_all("mimalloc");
}
