//! `fork` in a threaded process: the prepare handler takes every lock in rank order
//! (`tally_pal::sync::Rank`), the parent releases them and the child resets them, so the child
//! starts with a consistent heap. Other threads' caches are lost in the child (their blocks
//! leak, as in every allocator). The handlers are in the hot text (`hot-text.ld`): every program
//! that starts another (a shell, `system`, `subprocess`) runs them.

use core::sync::atomic::{AtomicU8, Ordering};

use tally_pal as pal;
use tally_profiler::PROFILER;

use crate::{arena, guard, huge, meta, tcache};

/// Registers the handlers (once, at initialization).
pub fn install() {
    pal::process::on_fork(prefork, postfork_parent, postfork_child);
}

static FORK_LOCKED: AtomicU8 = AtomicU8::new(0);

/// Takes every lock, in rank order: the profiler's tables, the cache registry, every bin of
/// every arena, every page heap, the huge-block locks, the metadata pool.
#[link_section = ".text.hot.tally"]
unsafe extern "C" fn prefork() {
    PROFILER.lock_for_fork();
    tcache::lock_for_fork();
    let arenas = &arena::ARENAS[..arena::arena_count()];
    for arena in arenas {
        arena.lock_bins_for_fork();
    }
    for arena in arenas {
        arena.pages.lock_for_fork();
    }
    huge::lock_for_fork();
    meta::lock_for_fork();
    guard::lock_for_fork();
    FORK_LOCKED.store(1, Ordering::Relaxed);
}

#[link_section = ".text.hot.tally"]
unsafe fn postfork(child: bool) {
    if FORK_LOCKED.swap(0, Ordering::Relaxed) == 0 {
        return;
    }
    let arenas = &arena::ARENAS[..arena::arena_count()];
    // SAFETY: prefork took every one of these locks in this thread; released in reverse.
    unsafe {
        guard::unlock_after_fork(child);
        meta::unlock_after_fork(child);
        huge::unlock_after_fork(child);
        for arena in arenas {
            arena.pages.unlock_after_fork(child);
        }
        for arena in arenas {
            arena.unlock_bins_after_fork(child);
        }
        tcache::unlock_after_fork(child);
        PROFILER.unlock_after_fork(child);
    }
}

#[link_section = ".text.hot.tally"]
unsafe extern "C" fn postfork_parent() {
    // SAFETY: called by fork after prefork, in the forking thread.
    unsafe { postfork(false) }
}

#[link_section = ".text.hot.tally"]
unsafe extern "C" fn postfork_child() {
    // SAFETY: called by fork after prefork, in the only thread of the child.
    unsafe { postfork(true) }
}
