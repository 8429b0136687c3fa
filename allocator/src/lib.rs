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
//! Each module uses only the ones above it in this list (`tests/layers.rs` reads this list and
//! every `crate::` path in the code, and fails on an import against it; see
//! `docs/architecture.md`). Below them all stands the crate `tally-pal`: the platform (every
//! system call) and the one lock type, shared with the profiler.
//!
//! 1. `size_class` — all size-class math.
//! 2. `options` — `TALLY_CONF` / `MALLOC_CONF`, parsed from one table.
//! 3. `meta` — memory for Tally's own bookkeeping.
//! 4. `pagemap` — address to owning metadata, one word per 4 MiB window.
//! 5. `chunk` — 4 MiB chunks and their page metadata.
//! 6. `extent` — page runs: each arena's page heap.
//! 7. `huge` — direct mappings and their cache.
//! 8. `bin` — slabs of small objects.
//! 9. `arena` — independent heaps: page runs plus bins.
//! 10. `tcache` — per-thread caches.
//! 11. `decay` — when free pages go back to the OS; the background thread.
//! 12. `prof_hooks` — sampled blocks and the profiler's guard.
//! 13. `thread_event` — each thread's byte countdown and the budgets it settles.
//! 14. `fork` — the `fork` handlers.
//! 15. `init` — process-wide initialization and the options in force.
//! 16. `thread` — thread states, cache set-up and tear-down.
//! 17. `block` — from a pointer to its block; `malloc_usable_size`.
//! 18. `alloc` — the allocation entry points and fast path.
//! 19. `free` — the free entry point and fast path.
//! 20. `realloc` — resizing.
//! 21. `stats` — statistics.
//! 22. `prof` — the profiler's Rust API.
//! 23. `api` — the malloc family with C semantics, callable from Rust.
//! 24. `global` — `GlobalAlloc`.
//! 25. `capi` — the exported C symbols (feature `c-abi`).

mod alloc;
mod arena;
mod bin;
mod block;
mod chunk;
mod decay;
mod extent;
mod fork;
mod free;
mod huge;
mod init;
mod meta;
mod pagemap;
mod prof_hooks;
mod realloc;
mod size_class;
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
