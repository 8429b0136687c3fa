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
//! Each module uses only the ones above it in this list (`tests/tests/layers.rs` reads this
//! list and every `crate::` path in the code, and fails on an import against it; see
//! `docs/architecture.md`). Below them all stands the crate `tally-pal`: the platform (every
//! system call) and the one lock type, shared with the profiler.
//!
//! 1. `hot` — the read-only data every program reads, beside the dynamic symbols.
//! 2. `list` — intrusive doubly linked lists, the one list of the allocator.
//! 3. `freed` — the free mark in a free block's first word (double-free detection).
//! 4. `size_class` — all size-class math.
//! 5. `options` — `TALLY_CONF` / `MALLOC_CONF`, parsed from one table.
//! 6. `meta` — memory for Tally's own bookkeeping.
//! 7. `pagemap` — address to owning metadata, one word per 4 MiB window.
//! 8. `chunk` — 4 MiB chunks and their page metadata.
//! 9. `extent` — page runs: each arena's page heap.
//! 10. `huge` — direct mappings and their cache.
//! 11. `bin` — slabs of small objects.
//! 12. `arena` — independent heaps: page runs plus bins.
//! 13. `bigcache` — each thread's few whole large blocks above the bins' classes.
//! 14. `tcache` — per-thread caches.
//! 15. `decay` — when free pages go back to the OS; the background thread.
//! 16. `prof_hooks` — sampled blocks and the profiler's guard.
//! 17. `guard` — guarded sampling: blocks between guard pages, the fault handler and its report.
//! 18. `thread_event` — each thread's byte countdown and the budgets it settles.
//! 19. `fork` — the `fork` handlers.
//! 20. `init` — process-wide initialization and the options in force.
//! 21. `thread` — thread states, cache set-up and tear-down.
//! 22. `block` — from a pointer to its block; `malloc_usable_size`.
//! 23. `alloc` — the allocation entry points and fast path.
//! 24. `free` — the free entry point and fast path.
//! 25. `realloc` — resizing.
//! 26. `stats` — statistics.
//! 27. `symbols` — function names for code addresses, from the objects' symbol tables.
//! 28. `pprof` — the live heap as a pprof profile, made in the process.
//! 29. `prof` — the profiler's Rust API.
//! 30. `ctl` — `mallctl`: jemalloc's tree of named settings and statistics.
//! 31. `prof_http` — `prof_http`: profiles and statistics served over HTTP.
//! 32. `api` — the malloc family with C semantics, callable from Rust.
//! 33. `global` — `GlobalAlloc`.
//! 34. `capi` — the exported C symbols (feature `c-abi`).

mod alloc;
mod arena;
mod bigcache;
mod bin;
mod block;
mod chunk;
pub mod ctl;
mod decay;
mod extent;
mod fork;
mod free;
mod freed;
mod guard;
mod hot;
mod huge;
mod init;
mod list;
mod meta;
mod pagemap;
mod pprof;
mod prof_hooks;
mod prof_http;
mod realloc;
mod size_class;
mod symbols;
mod tcache;
mod thread;
mod thread_event;

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
pub const MAX_REQUEST: usize = alloc::MAX_REQUEST;
