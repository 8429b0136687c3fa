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
//! 6. `thp` — the transparent huge page advice each kind of mapping gets.
//! 7. `meta` — memory for Tally's own bookkeeping.
//! 8. `pagemap` — address to owning metadata, one word per 4 MiB window.
//! 9. `mapcache` — freed huge mappings, kept for huge blocks and new chunks.
//! 10. `chunk` — 4 MiB chunks and their page metadata.
//! 11. `extent` — page runs: each arena's page heap.
//! 12. `huge` — blocks above the largest class, each in a mapping of its own.
//! 13. `bin` — slabs of small objects.
//! 14. `arena` — independent heaps: page runs plus bins.
//! 15. `bigcache` — each thread's few whole large blocks above the bins' classes.
//! 16. `tcache` — per-thread caches.
//! 17. `decay` — when free pages go back to the OS; the background thread.
//! 18. `prof_hooks` — sampled blocks and the profiler's guard.
//! 19. `guard` — guarded sampling: blocks between guard pages, the fault handler and its report.
//! 20. `thread_event` — each thread's byte countdown and the budgets it settles.
//! 21. `fork` — the `fork` handlers.
//! 22. `init` — process-wide initialization and the options in force.
//! 23. `thread` — thread states, cache set-up and tear-down.
//! 24. `block` — from a pointer to its block; `malloc_usable_size`.
//! 25. `alloc` — the allocation entry points and fast path.
//! 26. `free` — the free entry point and fast path.
//! 27. `realloc` — resizing.
//! 28. `stats` — statistics.
//! 29. `symbols` — function names for code addresses, from the objects' symbol tables.
//! 30. `pprof` — the live heap as a pprof profile, made in the process.
//! 31. `prof` — the profiler's Rust API.
//! 32. `ctl` — `mallctl`: jemalloc's tree of named settings and statistics.
//! 33. `prof_http` — `prof_http`: profiles and statistics served over HTTP.
//! 34. `api` — the malloc family with C semantics, callable from Rust.
//! 35. `global` — `GlobalAlloc`.
//! 36. `capi` — the exported C symbols (feature `c-abi`).

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
mod mapcache;
mod meta;
mod pagemap;
mod pprof;
mod prof_hooks;
mod prof_http;
mod realloc;
mod size_class;
mod symbols;
mod tcache;
mod thp;
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
