//! Runs Criterion workloads of `tally_benches::criterion_suite` a given number of iterations
//! each under Tally, in order, without Criterion: for counting their instructions with
//! callgrind, with the profiler off and on (`benches/run-prof-cost.sh`); for timing them with
//! the profiler off and on in one program (`prof_rust`, `benches/run-prof-rust.sh`, which runs a
//! workload twice, warm-up then measured); and for workloads whose time depends on the heap the
//! ones before them left. With several pairs, the time of each, in ns an iteration to 3
//! decimals, is printed on stderr.
//!
//! Usage: `criterion_once <workload>/<parameter> ITERATIONS [<workload>/<parameter> ITERATIONS
//! ...]` (e.g. `alloc_free/1024 1000000`); the profiler is whatever `TALLY_CONF` says.

use std::time::Instant;

use tally_benches::criterion_suite::benches;

#[global_allocator]
static ALLOCATOR: tally::Tally = tally::Tally;

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let usage =
        "usage: criterion_once <workload>/<parameter> ITERATIONS [<workload>/<parameter> ITERATIONS ...]";
    if args.is_empty() || !args.len().is_multiple_of(2) {
        eprintln!("{usage}");
        std::process::exit(2);
    }
    let all = benches();
    let mut runs = Vec::new();
    for pair in args.chunks(2) {
        let Some(iterations) = pair[1].parse::<u64>().ok() else {
            eprintln!("{usage}");
            std::process::exit(2);
        };
        let Some(bench) = all.iter().find(|b| b.name() == pair[0]) else {
            eprintln!("criterion_once: no benchmark {}", pair[0]);
            std::process::exit(2);
        };
        runs.push((bench, iterations));
    }
    let several = runs.len() > 1;
    for (bench, iterations) in runs {
        let start = Instant::now();
        bench.run(iterations);
        if several {
            let ns = start.elapsed().as_nanos() as f64 / iterations.max(1) as f64;
            eprintln!("{}: {ns:.3} ns an iteration", bench.name());
        }
    }
}
