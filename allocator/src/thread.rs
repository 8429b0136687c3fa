//! Each thread's life: its state, its cache, and what it is served from when it has none.
//!
//! Each thread is `Uninit` until its first call that misses, then `Initializing` while its cache
//! is made (calls made meanwhile, for example by `pthread_setspecific`, are served straight from
//! an arena), then `Ready`. At thread exit the cache is flushed and the thread is `TornDown`:
//! destructors that run after ours still allocate, straight from an arena. With `tcache:false`
//! threads stay `NoCache`. A thread without a cache has bins of capacity 0 (its thread block
//! starts zeroed), so "no cache" is just a miss on the fast path, never an extra branch.

use core::cell::Cell;
use core::ffi::c_void;
use core::ptr;
use core::sync::atomic::{AtomicU32, Ordering};

use tally_pal as pal;

use crate::arena::{self, Arena};
use crate::init::{ensure_global, options};
use crate::size_class::{SizeClass, NCACHED};
use crate::tcache::{self, thread_bins, TCache, ThreadBins};

#[derive(Clone, Copy, PartialEq, Eq)]
enum ThreadState {
    Uninit,
    Initializing,
    Ready,
    TornDown,
    NoCache,
}

std::thread_local! {
    static STATE: Cell<ThreadState> = const { Cell::new(ThreadState::Uninit) };
    /// Arena for calls served without a cache.
    static DIRECT_ARENA: Cell<*const Arena> = const { Cell::new(ptr::null()) };
}

/// The key whose destructor flushes an exiting thread's cache (`u32::MAX` until made; `u32::MAX
/// - 1` if it could not be made).
static THREAD_KEY: AtomicU32 = AtomicU32::new(u32::MAX);

/// The thread-exit key, made on first use (after initialization, which the caller ensured).
#[inline(always)]
fn exit_key() -> Option<pal::thread::ExitKey> {
    let key = THREAD_KEY.load(Ordering::Acquire);
    if key < u32::MAX - 1 {
        return Some(key);
    }
    if key == u32::MAX - 1 {
        return None;
    }
    let made = pal::thread::exit_key(thread_exit).unwrap_or(u32::MAX - 1);
    match THREAD_KEY.compare_exchange(u32::MAX, made, Ordering::AcqRel, Ordering::Acquire) {
        Ok(_) => (made < u32::MAX - 1).then_some(made),
        // Another thread made one first; ours is never armed (keys are a few hundred per process).
        Err(theirs) => (theirs < u32::MAX - 1).then_some(theirs),
    }
}

/// Gives the calling thread a cache if it may have one. Returns true if it now has one, false
/// when the thread is to be served without a cache.
#[cold]
#[inline(never)]
#[link_section = ".text.hot.tally"]
pub fn thread_start() -> bool {
    if STATE.get() != ThreadState::Uninit {
        return false;
    }
    STATE.set(ThreadState::Initializing);
    ensure_global();
    if !options().caches_enabled() {
        STATE.set(ThreadState::NoCache);
        return false;
    }
    let tb = thread_bins();
    // SAFETY: `tb` is this thread's bins; an Uninit thread has no cache.
    let tc = unsafe { TCache::attach(tb) };
    if tc.is_null() {
        STATE.set(ThreadState::Uninit);
        return false;
    }
    if let Some(key) = exit_key() {
        // SAFETY: the key's destructor, `thread_exit`, takes this thread's cache.
        unsafe { pal::thread::arm_exit(key, tc.cast()) };
    }
    STATE.set(ThreadState::Ready);
    true
}

/// Whether the calling thread has a cache.
#[inline]
pub fn has_cache(tb: *mut ThreadBins) -> bool {
    // SAFETY: the thread's own bins.
    unsafe { !(*tb).cache.is_null() }
}

/// Thread-exit destructor: flushes the thread's cache and returns it to the pool.
#[link_section = ".text.hot.tally"]
unsafe extern "C" fn thread_exit(tc: *mut c_void) {
    let tb = thread_bins();
    // SAFETY: the exiting thread's own bins.
    if tc.is_null() || unsafe { (*tb).cache } != tc.cast::<TCache>() {
        return;
    }
    STATE.set(ThreadState::TornDown);
    // What the thread allocates from now on (in later destructors) comes from the arena it
    // filled from (or, if it never allocated, the one `direct_arena` picks then).
    // SAFETY: the thread's own live cache; its arena is null or one of the static ARENAS.
    DIRECT_ARENA.set(unsafe { (*(*tb).cache).arena });
    // SAFETY: the cache belongs to this thread, which is exiting.
    unsafe { TCache::detach(tb) };
}

/// Returns every block in the calling thread's cache to its arena.
pub fn flush_thread_cache() {
    let tb = thread_bins();
    if has_cache(tb) {
        for i in 0..NCACHED {
            // SAFETY: the calling thread's own bins, with a cache.
            unsafe { tcache::flush(tb, SizeClass(i as u8), 0) };
        }
        if let Some(big) = tcache::big_cache() {
            big.flush();
        }
    }
}

/// Keeps the calling thread, which has not allocated yet, from ever getting a cache: its calls
/// are served straight from the arena a new thread would get now, without counting the thread
/// as one of its users. For Tally's own occasional threads (the `prof_http` server), so that an
/// idle one costs no cache, no slabs and no arena of its own, and the program's threads are
/// spread over the arenas as they would be without it. (Such a thread is never moved by
/// `mallctl("thread.arena")`: only the program's threads call it.) Returns false (and changes
/// nothing) if the thread has started already.
pub fn go_without_cache() -> bool {
    if STATE.get() != ThreadState::Uninit {
        return false;
    }
    ensure_global();
    STATE.set(ThreadState::NoCache);
    DIRECT_ARENA.set(arena::pick_arena());
    true
}

/// The arena for calls served without a cache. A thread with `tcache:false` counts as a user
/// of it for good (it has no exit hook); a thread whose cache is being made, or was torn down,
/// does not: it is counted with its cache's arena, or has left it, and counting it again here
/// would keep the arena from ever looking unused (`arena::leave_arena`).
pub fn direct_arena() -> &'static Arena {
    let a = DIRECT_ARENA.get();
    if !a.is_null() {
        // SAFETY: DIRECT_ARENA only ever holds pointers into the static ARENAS.
        return unsafe { &*a };
    }
    let a = match STATE.get() {
        ThreadState::NoCache => arena::next_arena(),
        _ => arena::pick_arena(),
    };
    DIRECT_ARENA.set(a);
    a
}

/// Moves the calling thread to `to` (`mallctl("thread.arena")` written): its cache is flushed
/// (the blocks go home to their own arenas) and fills from `to` from now on; calls served without
/// a cache are served from `to` too.
pub fn move_to_arena(to: &'static Arena) {
    let tb = thread_bins();
    if has_cache(tb) || thread_start() {
        flush_thread_cache();
        // SAFETY: the thread's own live cache, which only this thread changes; its arena is null
        // or one of the static ARENAS, counted as used by this thread until `leave_arena`.
        unsafe {
            let from = (*(*tb).cache).arena;
            if !ptr::eq(from, to) {
                arena::join_arena(to);
                tcache::set_arena(tb, to);
                // A thread that has not allocated yet used no arena.
                if !from.is_null() {
                    arena::leave_arena(&*from);
                }
            }
        }
    } else if STATE.get() == ThreadState::NoCache {
        // Such a thread counts as a user of its direct arena for good (see `direct_arena`).
        let from = direct_arena();
        if !ptr::eq(from, to) {
            arena::join_arena(to);
            arena::leave_arena(from);
        }
    }
    DIRECT_ARENA.set(to);
}

/// The calling thread's arena: its cache's, the cache made and the arena taken now if the thread
/// has neither yet (a thread whose first allocation is a large block takes it from the arena its
/// cache will use). Called, not inlined: the slow paths that need it are many, and each copy
/// took some 300 bytes of the first 64 KiB of the library's code (`scripts/check-hot-text.sh`).
#[inline(never)]
#[link_section = ".text.hot.tally"]
pub fn thread_arena() -> &'static Arena {
    let tb = thread_bins();
    if has_cache(tb) || thread_start() {
        // SAFETY: a thread's own live cache.
        unsafe { tcache::claim(tb) }
    } else {
        direct_arena()
    }
}
