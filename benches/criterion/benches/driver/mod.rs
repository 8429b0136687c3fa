//! The Criterion glue every `criterion_<variant>` target shares (`mod driver;`): Criterion's
//! settings, and one benchmark per entry of `tally_benches::criterion_suite::benches()`, timed
//! with `iter_custom` so that the workload's own loop runs the iterations.
//!
//! The heavy benchmarks each run in a process of their own, this program run again with
//! [`HEAVY_ENV`] naming the benchmark, so that the peak RSS recorded for one is its own and not
//! what the benchmarks before it left in the allocator; they have their own sample count and
//! flat sampling.
//!
//! It lives here, not in the `tally_benches` library with the workloads, because Criterion is a
//! dev-dependency of this package: only its bench targets can use it.

use std::cell::Cell;
use std::time::Instant;

use criterion::measurement::WallTime;
use criterion::{BenchmarkGroup, BenchmarkId, Criterion, SamplingMode};
use tally_benches::criterion_suite::{
    benches, criterion_dir_of_bench, peak_rss_kib, record_peak_rss, reset_peak_rss, Bench, HEAVY_SAMPLE_SIZE,
    MEASUREMENT, SAMPLE_SIZE, WARM_UP,
};

/// Set in the environment of a process that runs one heavy benchmark: its name
/// (`<workload>/<parameter>`).
const HEAVY_ENV: &str = "TALLY_BENCH_HEAVY";

/// Runs every benchmark that the command line selects (a Criterion filter, e.g. `alloc_free/16`)
/// as `<variant>/<workload>/<parameter>`, with the suite's settings unless the command line
/// overrides them (`--quick`, `--warm-up-time`, `--measurement-time`, `--sample-size`; the
/// heavy benchmarks keep their sample count and flat sampling).
pub fn run(variant: &str) {
    let mut criterion = Criterion::default()
        .warm_up_time(WARM_UP)
        .measurement_time(MEASUREMENT)
        .sample_size(SAMPLE_SIZE)
        .without_plots()
        .configure_from_args();
    let (heavy, light): (Vec<Bench>, Vec<Bench>) = benches().into_iter().partition(Bench::heavy);
    if let Ok(name) = std::env::var(HEAVY_ENV) {
        let bench = heavy
            .into_iter()
            .find(|bench| bench.name() == name)
            .unwrap_or_else(|| panic!("{HEAVY_ENV}={name:?} is no heavy benchmark"));
        run_heavy(&mut criterion, variant, bench);
        return;
    }
    let mut group = criterion.benchmark_group(variant);
    for bench in light {
        add(&mut group, bench);
    }
    group.finish();
    criterion.final_summary();
    for bench in heavy {
        run_apart(bench);
    }
}

/// Runs this program again with the same arguments and [`HEAVY_ENV`] set to `bench`, and waits.
fn run_apart(bench: Bench) {
    let program = std::env::current_exe().expect("the path of this program");
    let status = std::process::Command::new(&program)
        .args(std::env::args_os().skip(1))
        .env(HEAVY_ENV, bench.name())
        .status()
        .unwrap_or_else(|error| panic!("cannot run {}: {error}", program.display()));
    assert!(
        status.success(),
        "{} for {}: {status}",
        program.display(),
        bench.name()
    );
}

/// Runs the heavy `bench` (if the command line selects it) with [`HEAVY_SAMPLE_SIZE`] samples
/// and flat sampling, and records the process's peak RSS while it ran.
fn run_heavy(criterion: &mut Criterion, variant: &str, bench: Bench) {
    let mut group = criterion.benchmark_group(variant);
    group
        .sample_size(HEAVY_SAMPLE_SIZE)
        .sampling_mode(SamplingMode::Flat);
    let reset = reset_peak_rss();
    let ran = add(&mut group, bench);
    group.finish();
    if !ran {
        return;
    }
    let full_id = format!("{variant}/{}", bench.name());
    match peak_rss_kib() {
        Some(kib) if reset => {
            if let Err(error) = record_peak_rss(&criterion_dir_of_bench(), &full_id, kib) {
                eprintln!("driver: cannot record the peak RSS of {full_id}: {error}");
            }
        }
        _ => eprintln!("driver: no peak RSS for {full_id} (/proc/self/clear_refs or VmHWM)"),
    }
}

/// Adds `bench` to `group`, which runs it now if the command line selects it; whether it ran.
fn add(group: &mut BenchmarkGroup<'_, WallTime>, bench: Bench) -> bool {
    let ran = Cell::new(false);
    let id = BenchmarkId::new(bench.workload().name(), bench.parameter());
    group.bench_function(id, |bencher| {
        ran.set(true);
        bencher.iter_custom(|iterations| {
            let start = Instant::now();
            bench.run(iterations);
            start.elapsed()
        })
    });
    ran.get()
}
