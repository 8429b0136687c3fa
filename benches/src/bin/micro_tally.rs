//! The malloc/free pair micro-benchmark under Tally (see `tally_benches::micro`).

#[global_allocator]
static ALLOCATOR: tally::Tally = tally::Tally;

fn main() {
    tally_benches::micro::run_all("tally");
}
