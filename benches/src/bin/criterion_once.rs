//! Runs one Criterion workload of `tally_benches::criterion_suite` a given number of iterations
//! under Tally, without Criterion: for counting its instructions with callgrind, with the
//! profiler off and on (`benches/run-prof-cost.sh`).
//!
//! Usage: `criterion_once <workload>/<parameter> ITERATIONS` (e.g. `alloc_free/1024 1000000`);
//! the profiler is whatever `TALLY_CONF` says.

use tally_benches::criterion_suite::benches;

#[global_allocator]
static ALLOCATOR: tally::Tally = tally::Tally;

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let (Some(name), Some(iterations)) = (args.get(1), args.get(2).and_then(|n| n.parse().ok())) else {
        eprintln!("usage: criterion_once <workload>/<parameter> ITERATIONS");
        std::process::exit(2);
    };
    let Some(bench) = benches().into_iter().find(|b| b.name() == *name) else {
        eprintln!("criterion_once: no benchmark {name}");
        std::process::exit(2);
    };
    bench.run(iterations);
}
