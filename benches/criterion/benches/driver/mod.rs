//! The Criterion glue every `criterion_<variant>` target shares (`mod driver;`): Criterion's
//! settings, and one benchmark per entry of `tally_benches::criterion_suite::benches()`, timed
//! with `iter_custom` so that the workload's own loop runs the iterations.
//!
//! It lives here, not in the `tally_benches` library with the workloads, because Criterion is a
//! dev-dependency of this package: only its bench targets can use it.

use std::time::Instant;

use criterion::{BenchmarkId, Criterion};
use tally_benches::criterion_suite::{benches, MEASUREMENT, SAMPLE_SIZE, WARM_UP};

/// Runs every benchmark that the command line selects (a Criterion filter, e.g. `alloc_free/16`)
/// as `<variant>/<workload>/<parameter>`, with the suite's settings unless the command line
/// overrides them (`--quick`, `--warm-up-time`, `--measurement-time`, `--sample-size`).
pub fn run(variant: &str) {
    let mut criterion = Criterion::default()
        .warm_up_time(WARM_UP)
        .measurement_time(MEASUREMENT)
        .sample_size(SAMPLE_SIZE)
        .without_plots()
        .configure_from_args();
    let mut group = criterion.benchmark_group(variant);
    for bench in benches() {
        let id = BenchmarkId::new(bench.workload().name(), bench.parameter());
        group.bench_function(id, |bencher| {
            bencher.iter_custom(|iterations| {
                let start = Instant::now();
                bench.run(iterations);
                start.elapsed()
            })
        });
    }
    group.finish();
    criterion.final_summary();
}
