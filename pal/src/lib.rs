//! Tally's platform layer: the whole contract between Tally and the operating system, and the
//! one lock type, shared by the allocator (`tally`) and the profiler (`tally-profiler`), which
//! both stand on it.
//!
//! Every system call either crate makes lives here, split by capability. The modules, bottom
//! up, each using only those above it (`tests/tests/layers.rs` checks it):
//!
//! 1. `elf` — a loaded object's dynamic symbols read in place; the vDSO's functions by name.
//! 2. `time` — monotonic clocks (through the vDSO) and sleeping.
//! 3. `memory` — mapping, unmapping, advice, `mremap`, `mincore`, protection; the page size.
//! 4. `process` — the environment, CPU count, pid and thread id, `errno`, `fork` and signal
//!    hooks (fault handlers chained to the ones before), signal names, random bits, the range
//!    of Tally's own code, the loaded object holding an address.
//! 5. `thread` — the static-TLS thread block, thread creation, thread-exit hooks, yielding,
//!    futexes.
//! 6. `file` — the few file operations a profile dump needs.
//! 7. `stderr` — diagnostics without allocating (`print`, `fatal`), `errno` in words
//!    ([`OsError`]).
//! 8. `sync` — [`sync::Mutex`], a futex lock that carries its [`sync::Rank`] in the lock order.
//!
//! The contract every function here keeps: it never allocates through any allocator (it is
//! called from inside `malloc`, sometimes before Tally is initialized), never panics, and
//! reports failure as a value (null, `false`, `Err(errno)`).
//!
//! Why a crate of its own: the profiler stands below the allocator and must not call back into
//! it, yet both need the same system calls and the same lock (one lock order, checked in one
//! place, taken across `fork` by one set of handlers). A crate below both is the only place
//! both can reach.
#![no_std]

// For `thread_local!` only (the lock-rank checker, the thread block off x86-64): native TLS
// with a constant initializer and no destructor, which never allocates.
extern crate std;

pub mod elf;
pub mod file;
pub mod memory;
pub mod process;
pub mod stderr;
pub mod sync;
pub mod thread;
pub mod time;

pub use memory::{
    advise_huge_pages, discard, discard_lazily, map, map_accounted, map_aligned, map_aligned_accounted,
    protect_none, protect_rw, remap_in_place, remap_to, reserve, reserve_near, unmap, HugePages, PAGE,
    PAGE_SHIFT,
};
pub use process::{cpu_count, errno, getenv, kernel_page_size, pid, set_errno};
pub use stderr::{fatal, print, write_stderr, LineBuf, OsError};
pub use time::{now_ms, now_ns, sleep_ms};
