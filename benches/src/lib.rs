//! Benchmarks that compare Tally with other allocators (see `docs/benchmarks.md`).
//!
//! Several runners, one harness:
//!
//! - [`harness`]: what every runner shares: interleaved rounds with the order rotated each round,
//!   medians and spreads, ratios to a baseline and their geometric means, the Markdown table,
//!   the machine description, and running a process with a time limit.
//! - [`suite`]: the suite (binary `suite`, run by `benches/run-suite.sh`): C workloads and real
//!   programs under every allocator through `LD_PRELOAD`, wall time and peak RSS.
//! - [`micro`] and [`micro_report`]: the malloc/free pair micro-benchmark. A binary has a
//!   single `#[global_allocator]`, so it is one small binary per allocator
//!   (`src/bin/micro_<allocator>.rs`) that installs its allocator and runs the workloads of
//!   [`micro`]; the runner binary (`micro_runner`) runs those binaries in rounds and writes the
//!   report of [`micro_report`].
//! - [`criterion_suite`]: the workloads of the Criterion benchmarks of the `GlobalAlloc` path,
//!   which the `criterion_<variant>` bench targets of package `tally-criterion` (`criterion/`)
//!   time, one per allocator and profiler setting.
//! - [`criterion_report`]: the comparison table of those benchmarks, from the files Criterion
//!   writes (binary `criterion_table`).
//! - [`rust_once`]: those workloads timed without Criterion, in the `criterion_once` programs
//!   (one per allocator) in interleaved rounds; what the next two runners share.
//! - [`prof_rust`]: what Tally's profiler costs those workloads, measured in one program
//!   (`criterion_once`) with the profiler off and on (binary `prof_rust`).
//! - [`rust_crates`]: Tally against the allocator crates on those workloads, each in its own
//!   `criterion_once` program (binary `rust_crates`).
//!
//! The allocator crates are re-exported (each with its feature) for `tally-criterion`, so that
//! their versions and features are set in this package's manifest only.

pub mod criterion_report;
pub mod criterion_suite;
pub mod harness;
pub mod micro;
pub mod micro_report;
pub mod prof_rust;
pub mod rust_crates;
pub mod rust_once;
pub mod suite;

#[cfg(feature = "mimalloc")]
pub use mimalloc;
#[cfg(feature = "stoolap")]
pub use stoolap_jemalloc;
#[cfg(feature = "tally")]
pub use tally;
#[cfg(feature = "jemalloc")]
pub use tikv_jemallocator;

/// The running binary's directory, the cargo target directory (its parent) and the workspace
/// root, for the runners' default input and output paths.
pub fn binary_target_and_workspace_dirs() -> (std::path::PathBuf, std::path::PathBuf, std::path::PathBuf) {
    let exe = std::env::current_exe().expect("current_exe");
    let bin_dir = exe.parent().expect("binary directory").to_path_buf();
    let target_dir = bin_dir.parent().unwrap_or(&bin_dir).to_path_buf();
    let workspace = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("workspace")
        .to_path_buf();
    (bin_dir, target_dir, workspace)
}
