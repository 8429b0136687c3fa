//! Tally: a general-purpose memory allocator with a built-in sampling heap profiler.
//!
//! Use it from Rust as the global allocator:
//!
//! ```
//! #[global_allocator]
//! static A: tally::Tally = tally::Tally;
//! ```
//!
//! or under any program with `LD_PRELOAD=libtally.so`. With the default feature `c-abi` the
//! crate also exports the C malloc family, so C libraries in a Rust program use Tally too; turn
//! it off (`default-features = false`) to keep the system malloc for C code.
//!
//! # Layers
//! Each module uses only the ones above it in this list (see `docs/architecture.md`):
//!
//! 1. `pal` — the operating system: mmap, madvise, mremap, environment, thread and fork hooks.
//! 2. `sync` — locks.
//! 3. `size_class` — all size-class math.
//! 4. `options` — `TALLY_CONF` / `MALLOC_CONF`.
//! 5. `meta` — memory for Tally's own bookkeeping.
//! 6. `pagemap` — address to owning metadata.
//! 7. `chunk` — 4 MiB chunks and their page metadata.
//! 8. `extent` (page runs) and `huge` (direct mappings).
//! 9. `bin` — slabs of small objects.
//! 10. `arena` — independent heaps: page runs plus bins.
//! 11. `tcache` — per-thread caches.
//! 12. `heap` — the core entry points, thread states, initialization, fork.
//! 13. `decay` — when free pages go back to the OS; the background thread.
//! 14. `stats`, and the front ends `api`, `capi`, `global`.
mod arena;
mod bin;
mod chunk;
mod decay;
mod extent;
mod heap;
mod huge;
mod meta;
mod pagemap;
mod pal;
mod sample;
mod size_class;
mod sync;
mod tcache;

pub mod api;
#[cfg(feature = "c-abi")]
mod capi;
mod global;
pub mod options;
pub mod prof;
pub mod stats;

pub use global::Tally;
pub use stats::{stats, trim, Stats};

/// Requests larger than this fail with `ENOMEM`.
pub const MAX_REQUEST: usize = heap::MAX_REQUEST;
