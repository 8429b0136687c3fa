//! The `tally` report tool: heap dumps in jemalloc's `heap_v2` format (what Tally's profiler and
//! jemalloc's write, what Debian's `jeprof` reads) to reports of where live memory was allocated,
//! symbolized natively and offline from the memory map each dump carries.
//!
//! It links neither the allocator nor the profiler. Names are demangled, the allocator's
//! entry points known and perf maps read by `tally_format::demangle`, `tally_format::frames` and
//! `tally_format::perf_map`, shared with the
//! allocator's in-process pprof profiles. The modules, bottom-up, each using only
//! those above it in this list:
//!
//! 1. [`error`] — the one error type: `FILE:LINE: what is wrong`, one line, exit code 2.
//! 2. [`dump`] — reading a dump (the format crate's parser) and jeprof's unbiasing.
//! 3. [`memory_map`] — which mapping, file and file offset an address falls in.
//! 4. [`object_file`] — one ELF file: segments, symbol tables, DWARF, separate debug files.
//! 5. [`symbolize`] — addresses to interned locations, with every file and lookup cached.
//! 6. [`guard_report`] — the frames of a guarded-sampling report (use-after-free, overflow, bad
//!    free) named with functions, files and lines, for `tally symbolize` and `tally run --guard`.
//! 7. [`profile`] — numbers per symbolized stack; base subtraction, filters, flat and cumulative.
//! 8. [`hints`] — the largest stacks of a profile, and hints from a bundled table
//!    (`data/known-leaks.txt`) about the well-known native leaks they match.
//! 9. [`series`] — a series of dumps of one process: their order and positions (the HTML
//!    report's growth chart draws on its axis).
//! 10. [`perf_map_finder`] — which perf map names a dump's JIT code, its staleness checks, and
//!     asking a running JVM for one.
//! 11. [`render`] — the output formats (`--text`, `--collapsed`, `--pprof`, `--dot`/`--svg`,
//!     `--flame`, `--html`); its own modules' order is in its docs.
//! 12. [`leaks`](mod@leaks) — steady growth over a series, for `tally leaks`.
//! 13. [`pipeline`] — the whole `tally report` and `tally leaks` commands, from files to output
//!     ([`report`] and [`leaks()`], re-exported here).
//! 14. [`signal`] — signals by name (`SIGSEGV`, `SIGRTMIN+3`) and back.
//! 15. [`supervise`] — the program `tally run` starts: its own process group, the terminal, and
//!     interrupts passed on after asking it for a profile.
//! 16. [`run`] — running a program under `libtally.so` and reporting on its dumps with
//!     [`report`], for `tally run`.

pub mod dump;
pub mod error;
pub mod guard_report;
pub mod hints;
pub mod leaks;
pub mod memory_map;
pub mod object_file;
pub mod perf_map_finder;
pub mod pipeline;
pub mod profile;
pub mod render;
pub mod run;
pub mod series;
pub mod signal;
pub mod supervise;
pub mod symbolize;

pub use error::Error;
pub use pipeline::*;
