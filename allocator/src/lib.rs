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
//! 1. `list` — intrusive doubly linked lists, the one list of the allocator.
//! 2. `freed` — the free mark in a free block's first word (double-free detection).
//! 3. `size_class` — all size-class math.
//! 4. `options` — `TALLY_CONF` / `MALLOC_CONF`, parsed from one table.
//! 5. `meta` — memory for Tally's own bookkeeping.
//! 6. `pagemap` — address to owning metadata, one word per 4 MiB window.
//! 7. `chunk` — 4 MiB chunks and their page metadata.
//! 8. `extent` — page runs: each arena's page heap.
//! 9. `huge` — direct mappings and their cache.
//! 10. `bin` — slabs of small objects.
//! 11. `arena` — independent heaps: page runs plus bins.
//! 12. `bigcache` — each thread's few whole large blocks above the bins' classes.
//! 13. `tcache` — per-thread caches.
//! 14. `decay` — when free pages go back to the OS; the background thread.
//! 15. `prof_hooks` — sampled blocks and the profiler's guard.
//! 16. `guard` — guarded sampling: blocks between guard pages, the fault handler and its report.
//! 17. `thread_event` — each thread's byte countdown and the budgets it settles.
//! 18. `fork` — the `fork` handlers.
//! 19. `init` — process-wide initialization and the options in force.
//! 20. `thread` — thread states, cache set-up and tear-down.
//! 21. `block` — from a pointer to its block; `malloc_usable_size`.
//! 22. `alloc` — the allocation entry points and fast path.
//! 23. `free` — the free entry point and fast path.
//! 24. `realloc` — resizing.
//! 25. `stats` — statistics.
//! 26. `symbols` — function names for code addresses, from the objects' symbol tables.
//! 27. `pprof` — the live heap as a pprof profile, made in the process.
//! 28. `prof` — the profiler's Rust API.
//! 29. `ctl` — `mallctl`: jemalloc's tree of named settings and statistics.
//! 30. `prof_http` — `prof_http`: profiles and statistics served over HTTP.
//! 31. `api` — the malloc family with C semantics, callable from Rust.
//! 32. `global` — `GlobalAlloc`.
//! 33. `capi` — the exported C symbols (feature `c-abi`).

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
