//! Benchmarks that compare Tally with other allocators (see `docs/benchmarks.md`).
//!
//! A binary has a single `#[global_allocator]`, so each benchmark is one small binary per
//! allocator (`src/bin/micro_<allocator>.rs`) that installs its allocator and calls the shared
//! workload code here; a runner binary (`micro_runner`) runs those binaries in turn and writes
//! the comparison table.
//!
//! - [`micro`]: the workloads of the malloc/free pair micro-benchmark, run inside an allocator's
//!   binary.
//! - [`runner`]: what the runner needs besides processes: parsing the binaries' output, medians,
//!   the Markdown report and the machine description.

pub mod micro;
pub mod runner;
