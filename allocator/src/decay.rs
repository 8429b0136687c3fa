//! Decay: freed pages go back to the OS on a schedule.
//!
//! The page heaps (`extent.rs`) know which free runs are dirty and since when; this module
//! decides when they look. Allocator activity calls [`tick`] (from slow paths, and every
//! [`TICK_BYTES`] allocated by a thread), which at most once per [`interval_ms`] purges every
//! arena whose lock is free. With `background_thread:true` a thread of Tally's own does the same
//! on time while the program is idle; after `fork` it is started again in the child on the first
//! tick. `malloc_trim(0)` purges everything at once ([`purge_all`]).

use core::ffi::c_void;
use core::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};

use crate::arena::{self, ARENAS};
use crate::extent::{DIRTY_DECAY_MS, MUZZY_DECAY_MS};
use crate::options::Options;
use tally_pal as pal;

/// A thread calls [`tick`] after allocating this many bytes.
pub const TICK_BYTES: i64 = 64 * 1024;

static NEXT_TICK_MS: AtomicU64 = AtomicU64::new(0);
static BACKGROUND: AtomicBool = AtomicBool::new(false);
/// The process the background thread runs in (0: none yet).
static BACKGROUND_PID: AtomicU32 = AtomicU32::new(0);
/// Purge passes run so far (a statistic).
pub static PASSES: AtomicU64 = AtomicU64::new(0);

/// Takes the decay settings from the options (at initialization).
pub fn configure(opts: &Options) {
    DIRTY_DECAY_MS.store(opts.dirty_decay_ms, Ordering::Relaxed);
    MUZZY_DECAY_MS.store(opts.muzzy_decay_ms, Ordering::Relaxed);
    BACKGROUND.store(opts.background_thread, Ordering::Relaxed);
}

/// How often purging looks: a tenth of the shortest positive decay time, between 1 ms and 1 s;
/// `None` when nothing ever decays.
pub fn interval_ms() -> Option<u64> {
    let dirty = DIRTY_DECAY_MS.load(Ordering::Relaxed);
    let muzzy = MUZZY_DECAY_MS.load(Ordering::Relaxed);
    let shortest = [dirty, muzzy].into_iter().filter(|&d| d > 0).min();
    match shortest {
        Some(d) => Some((d as u64 / 10).clamp(1, 1000)),
        // Decay 0 purges at free time; only muzzy pages from that may wait for a pass.
        None if dirty == 0 && muzzy > 0 => Some(1),
        None => None,
    }
}

/// Allocator activity: purges decayed pages if a pass is due. Cheap when it is not (one read of
/// the coarse clock).
pub fn tick() {
    let Some(interval) = interval_ms() else { return };
    let now = pal::now_ms();
    let next = NEXT_TICK_MS.load(Ordering::Relaxed);
    if now < next
        || NEXT_TICK_MS
            .compare_exchange(next, now + interval, Ordering::Relaxed, Ordering::Relaxed)
            .is_err()
    {
        return;
    }
    purge_arenas(now, false, false);
    if BACKGROUND.load(Ordering::Relaxed) && BACKGROUND_PID.load(Ordering::Relaxed) != pal::pid() {
        start_background_thread();
    }
}

/// Purges every arena now: decayed pages only, or everything when `everything`. Returns the
/// pages given back.
pub fn purge_all(everything: bool) -> u64 {
    purge_arenas(pal::now_ms(), everything, true)
}

fn purge_arenas(now: u64, everything: bool, wait: bool) -> u64 {
    PASSES.fetch_add(1, Ordering::Relaxed);
    let mut released = 0;
    for arena in &ARENAS[..arena::arena_count()] {
        if wait {
            released += arena.pages.lock().purge(now, everything);
        } else if let Some(mut heap) = arena.pages.try_lock() {
            released += heap.purge(now, everything);
        }
    }
    released + crate::huge::purge(now, everything)
}

/// Starts the background thread if `background_thread:true` and it is not running in this
/// process. Called once initialization is complete (it creates a thread, which allocates).
pub fn start_background_thread() {
    if !BACKGROUND.load(Ordering::Relaxed) {
        return;
    }
    let pid = pal::pid();
    let old = BACKGROUND_PID.swap(pid, Ordering::Relaxed);
    if old != pid && !pal::thread::spawn(background_main) {
        BACKGROUND_PID.store(old, Ordering::Relaxed);
    }
}

/// Whether a background thread is running in this process.
pub fn background_running() -> bool {
    BACKGROUND_PID.load(Ordering::Relaxed) == pal::pid()
}

extern "C" fn background_main(_: *mut c_void) -> *mut c_void {
    let pid = pal::pid();
    loop {
        pal::sleep_ms(interval_ms().unwrap_or(1000));
        if BACKGROUND_PID.load(Ordering::Relaxed) != pid {
            // A fork child got a copy of this variable, not of this thread.
            return core::ptr::null_mut();
        }
        purge_arenas(pal::now_ms(), false, true);
    }
}
