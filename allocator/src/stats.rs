//! Statistics. For now: counters of slow-path events, which show that a process really ran on
//! Tally, and their one-line print at exit (`stats_print:true`).

use core::sync::atomic::Ordering;

use crate::{arena, bin, chunk, huge, pal};

/// Counters of slow-path events since the process started.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Counters {
    /// 4 MiB chunks mapped for slabs and large blocks.
    pub chunks_mapped: u64,
    /// Small blocks handed from arenas to thread caches (or to threads without one).
    pub tcache_fills: u64,
    /// Batches of small blocks returned from thread caches to arenas.
    pub tcache_flushes: u64,
    /// Large blocks allocated.
    pub large_allocs: u64,
    /// Huge blocks mapped.
    pub huge_allocs: u64,
    /// Huge blocks resized by `mremap` (no copy).
    pub huge_remaps: u64,
}

/// The counters now.
pub fn counters() -> Counters {
    Counters {
        chunks_mapped: chunk::CHUNKS_MAPPED.load(Ordering::Relaxed),
        tcache_fills: bin::FILLS.load(Ordering::Relaxed),
        tcache_flushes: bin::FLUSHES.load(Ordering::Relaxed),
        large_allocs: arena::LARGE_ALLOCS.load(Ordering::Relaxed),
        huge_allocs: huge::HUGE_ALLOCS.load(Ordering::Relaxed),
        huge_remaps: huge::HUGE_REMAPS.load(Ordering::Relaxed),
    }
}

/// Prints the counters as one line, `tally: stats: key=value ...`, to stderr.
pub fn print() {
    let c = counters();
    // SAFETY: getpid has no preconditions.
    let pid = unsafe { libc::getpid() };
    pal::print(format_args!(
        "tally: stats: pid={} chunks_mapped={} tcache_fills={} tcache_flushes={} large_allocs={} huge_allocs={} huge_remaps={} narenas={}\n",
        pid,
        c.chunks_mapped,
        c.tcache_fills,
        c.tcache_flushes,
        c.large_allocs,
        c.huge_allocs,
        c.huge_remaps,
        arena::arena_count()
    ));
}

extern "C" fn at_exit() {
    if crate::heap::options().stats_print {
        print();
    }
}

/// Runs [`at_exit`] when the process exits (or the library is unloaded), without registering
/// anything through `atexit` (which may allocate).
#[used]
#[link_section = ".fini_array"]
static AT_EXIT: extern "C" fn() = at_exit;
