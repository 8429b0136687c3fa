//! Thread events: each thread's byte countdown, and the budgets it settles.
//!
//! Several things must happen every so many bytes a thread allocates: a decay tick (free pages
//! go back to the OS on time), a step of the thread cache's garbage collection, a profiler
//! sample, and the profiler's byte count for interval dumps. Rather than counting each on the
//! allocation fast path, each thread counts down one number, [`ThreadEvents::left`] (one
//! subtraction, one sign test shared with the bin's count test); when it goes below zero the
//! slow path calls [`on_event`], which hands the bytes spent to each budget, does what is due,
//! and arms the countdown to the nearest budget. (jemalloc's `thread_event` is the model.)
//!
//! The budgets:
//! - cache GC and decay's balance: every [`decay::TICK_BYTES`] (`tick_left`); decay's timed
//!   look (it reads the clock) every [`TICKS_PER_LOOK`]th time, the slow paths' ticks
//!   ([`slow_tick`]) counted in;
//! - sampling: the profiler draws each thread's distance ([`ThreadSampler`]); this module only
//!   passes the bytes on and asks whether the allocation is sampled;
//! - the profiler's interval byte count and due profiles (`prof_hooks::on_bytes`);
//! - guarded sampling ([`ThreadGuard`]): counts allocations, not bytes: it is given a way to read
//!   the thread cache's allocation count, which it reads only once the bytes it waits for are
//!   spent; near the guarded allocation it arms the countdown at 0, making every allocation an
//!   event.
//!
//! An allocation counts its size, except that while the tick is the only budget counting bytes
//! one above 16 KiB counts as 16 KiB ([`charge`]), and a block of a large class the thread cache
//! keeps (16-32 KiB) as 8 KiB ([`charge_cached`]); when the profiler or guarded sampling counts
//! it whole, the tick still takes only that share of it ([`credit_tick`]), and a countdown that
//! runs out with no budget overspent is armed again without an event ([`ran_out`]).
//!
//! An event's answer says what the allocation that ran the countdown out is to be: sampled
//! ([`SAMPLE`]), guarded ([`GUARD`]), both, or neither.
//!
//! This module owns the countdown and nothing else: no budget's policy lives here.
//!
//! The countdown lives in the thread's block of static TLS, right after the thread cache's
//! bins, so the fast path finds it at a fixed offset from the thread pointer. A new thread's
//! block is zero: its first allocation is an event, which arms the countdown.
//!
//! Invariant: `0 <= armed` and `left <= armed` once a thread had its first event (after which
//! `tick_left > 0`: a thread's first event is the one that finds `tick_left` 0); the bytes
//! spent since the last event are `armed - left`. `armed` is 0 only while guarded sampling
//! wants every allocation to be an event.

use tally_pal as pal;
use tally_profiler::{ThreadSampler, PROFILER};

use crate::guard::{self, ThreadGuard};
use crate::tcache::{self, ThreadBins};
use crate::{decay, prof_hooks};

/// An event's answer: the allocation is to be sampled by the profiler.
pub const SAMPLE: u8 = 1;
/// An event's answer: the allocation is to be guarded.
pub const GUARD: u8 = 2;

/// A thread's countdown and the budgets behind it. All zero is a valid start.
#[repr(C)]
pub struct ThreadEvents {
    /// Bytes this thread may still allocate before its next event; the allocation fast path
    /// subtracts and takes the slow path below zero.
    pub left: i64,
    /// What `left` was set to when the countdown was armed.
    armed: i64,
    /// Bytes left before the next decay tick and cache GC step: at most [`decay::TICK_BYTES`],
    /// plus what allocations counted since the last event beyond the tick's share of them
    /// ([`count_bytes`]).
    tick_left: i32,
    /// Ticks so far, of the countdown and of slow paths ([`slow_tick`]); decay's timed look
    /// comes every [`TICKS_PER_LOOK`]th. (With `tick_left` in one word: the thread block has no
    /// other room.)
    ticks: u32,
    /// Bytes left before the next sample (the profiler's).
    sampler: ThreadSampler,
    /// Allocations left before the next guarded one.
    guard: ThreadGuard,
}

/// A thread's ticks per timed look of decay ([`decay::tick`], which reads the clock: 5% of an
/// unprofiled loop of 4 KiB blocks when it looked at every tick, 16 blocks apart). The thread
/// cache's GC step and decay's balance of fresh pages against idle ones stay at every tick
/// (every 64 KiB); the purge a look may start is due at most every `interval_ms` anyway, so a
/// thread looks every 512 KiB instead of 64 (jemalloc's decay looks every 1000 events).
pub const TICKS_PER_LOOK: u32 = 8;

/// Decay's call from a slow path of the allocator (a refill, a flush, a large or huge block to
/// or from its arena or mapping, a block freed past the cache): [`decay::balance`] every time,
/// and every [`TICKS_PER_LOOK`]th time, counted with the thread's event ticks, the timed look
/// ([`decay::tick`], which reads the clock). Each slow path looked, and read the clock: of a
/// batch of 64 blocks of 32 KiB, each through the page heap, a sixth of the time went to
/// decay, most of it to the clock (jemalloc's slow paths tick too, reading the clock every
/// 1000th time).
#[link_section = ".text.hot.tally"]
pub fn slow_tick() {
    // SAFETY: the calling thread's own events; nothing else of the thread is using them (an
    // event does not free, and a slow path is not an event's).
    unsafe { decay_tick(&mut *thread_events()) };
}

/// Counts one of the thread's ticks (the countdown's or a slow path's): decay's balance, or at
/// every [`TICKS_PER_LOOK`]th its timed look.
#[inline(always)]
fn decay_tick(ev: &mut ThreadEvents) {
    ev.ticks = ev.ticks.wrapping_add(1);
    if ev.ticks % TICKS_PER_LOOK == 0 {
        decay::tick();
    } else {
        decay::balance();
    }
}

/// Where the events sit in the thread block: after the thread cache's bins, 8-byte aligned.
const OFFSET: usize = core::mem::size_of::<ThreadBins>().next_multiple_of(8);
const _: () = assert!(OFFSET + core::mem::size_of::<ThreadEvents>() <= pal::thread::THREAD_BLOCK_BYTES);
const _: () = assert!(core::mem::align_of::<ThreadEvents>() <= 8);

/// The calling thread's events.
#[inline(always)]
pub fn thread_events() -> *mut ThreadEvents {
    // SAFETY: OFFSET + the size of ThreadEvents lies inside the thread block (asserted above).
    unsafe { pal::thread::thread_block().add(OFFSET).cast() }
}

/// Most bytes one allocation counts: with `left <= 2^40` (the profiler's idle distance) and at
/// most this subtracted, neither `left` nor `armed - left` can overflow. A request this large
/// fails anyway.
const MAX_COUNTED: usize = 1 << 61;

/// Most bytes an allocation counts against the countdown while the tick is the only budget that
/// counts bytes (the profiler off, guarded sampling off): [`charge`].
pub const TICK_CHARGE_MAX: usize = 16 * 1024;

/// The bytes an allocation of `size` counts against the countdown: `size` while the profiler or
/// guarded sampling is on (their budgets are bytes of requests), else at most
/// [`TICK_CHARGE_MAX`]. With only the tick counting, a block above 16 KiB counts as one of
/// 16 KiB: the cache GC step and decay's balance come every 64 KiB ([`decay::TICK_BYTES`]) of
/// small blocks, and a loop of 256 KiB blocks ran them, and the event around them, at every
/// allocation (150 of its 496 instructions a `malloc`/`free` pair; at 32 KiB every other
/// allocation). A large block the big cache serves touches no page heap, and one that misses
/// ticks decay on its own way to the page heap. Counted so, a pair of 256 KiB is 375
/// instructions, and Criterion's `alloc_free/262144` 21 ns instead of 52-55, `/32768` 13.6
/// instead of 16-17 (docs/benchmarks.md). A cap of 4 KiB was faster still at 32 KiB, but
/// `realloc_growth` peaked 256 KiB higher (its garbage collection came later).
#[inline(always)]
pub fn charge(size: usize) -> usize {
    charge_at_most(size, TICK_CHARGE_MAX)
}

/// Most bytes a block of a large class the thread cache keeps (above 16 KiB, up to
/// [`crate::size_class::TCACHE_MAX`]) counts against the tick: [`charge_cached`].
pub const CACHED_TICK_CHARGE_MAX: usize = 8 * 1024;

/// [`charge`] for a block of a large class the thread cache keeps: at most
/// [`CACHED_TICK_CHARGE_MAX`] while only the tick counts bytes. Such a block comes from the
/// thread's bin and goes back to it; at 16 KiB a loop of 32 KiB blocks ran an event every 4
/// allocations (a tick, decay's balance and a cache GC step: 176 instructions, 44 of the 150 a
/// Criterion `alloc_free/32768` iteration took), and ran 8.96-9.25 ns an iteration against
/// stoolap-jemalloc's 8.44-8.52; at 8 KiB 8.18-8.42. Its cost: the suite's `realloc_growth`,
/// whose builders grow through these classes, peaks 128 KiB higher (8184 or 8352 KiB in 15 runs
/// before, 8312 or 8480 after; at 4 KiB 8440-8608), its bins' blocks waiting longer for the GC.
#[inline(always)]
pub fn charge_cached(size: usize) -> usize {
    charge_at_most(size, CACHED_TICK_CHARGE_MAX)
}

/// `size`, or at most `max` while the tick is the only budget counting bytes.
#[inline(always)]
fn charge_at_most(size: usize, max: usize) -> usize {
    if PROFILER.sampling.is_on() || guard::rate() != 0 {
        size
    } else {
        size.min(max)
    }
}

/// Counts an allocation of `size` bytes ([`charge`]) against the calling thread's countdown
/// for an allocation that does not go through the small fast path; returns what this allocation
/// is to be ([`SAMPLE`], [`GUARD`], 0 for neither).
pub fn count(size: usize) -> u8 {
    count_bytes(charge(size))
}

/// Counts `bytes` against the calling thread's countdown, as [`count`] does once it has the
/// allocation's charge: the tick counts at most [`TICK_CHARGE_MAX`] of it ([`credit_tick`]).
fn count_bytes(bytes: usize) -> u8 {
    let bytes = bytes.min(MAX_COUNTED);
    // SAFETY: the thread's own events.
    let ev = unsafe { &mut *thread_events() };
    ev.left -= bytes as i64;
    if bytes > TICK_CHARGE_MAX {
        credit_tick(ev, bytes - TICK_CHARGE_MAX);
    }
    if ev.left >= 0 {
        return 0;
    }
    // SAFETY: the thread's own events; the allocation counted is not served yet.
    unsafe { ran_out(ev, false) }
}

/// Takes `excess` bytes of an allocation counted whole (the profiler or guarded sampling on:
/// [`charge`]) off the tick's count, as if it had counted what it counts with them off
/// ([`TICK_CHARGE_MAX`], or [`CACHED_TICK_CHARGE_MAX`] for a block the thread cache keeps): they
/// are credited to `tick_left`. The countdown, armed for the nearest budget at the last event,
/// cannot tell whose bytes run it out; [`ran_out`] tells. (With the whole charge against the
/// tick, a block of 64 KiB or more was an event, a decay tick and a cache GC step with the
/// profiler on: the suite's `generations` ran 2.6 times as many events, a third of what the
/// profiler added to it. Blocks of 16-32 KiB, which the thread cache serves, counted whole
/// against the tick until the twentieth pass of issue 13.)
#[inline(always)]
pub fn credit_tick(ev: &mut ThreadEvents, excess: usize) {
    // Not before the thread's first event, which starts the tick (`tick_left` 0 says it is due).
    if ev.tick_left != 0 {
        ev.tick_left = ev.tick_left.saturating_add(excess.min(i32::MAX as usize) as i32);
    }
}

/// The calling thread's countdown ran out (`left < 0`): an event ([`on_event`]) if a budget is
/// overspent, else (the countdown ran out at a tick budget that [`credit_tick`] moved since)
/// the countdown armed again for the nearest, the bytes spent since the event kept
/// (`armed - left`), and no event. A budget spent to exactly 0 is due at the next allocation,
/// as the countdown's 0 is. Not with guarded sampling on: its budget, counted in allocations,
/// may be the nearest. (Without this, small blocks after a credited large one ran the countdown
/// out at the tick's old budget: an event with nothing due, 3600 of `generations 20 4 10000`'s
/// 21 000 events with the profiler on.) Returns what the allocation is to be, as `on_event`.
///
/// # Safety
/// As for [`on_event`].
#[inline(always)]
pub unsafe fn ran_out(ev: &mut ThreadEvents, small: bool) -> u8 {
    if ev.tick_left != 0 && guard::rate() == 0 {
        let spent = ev.armed - ev.left;
        let next = nearest_byte_budget(ev);
        if next >= spent {
            ev.armed = next;
            ev.left = next - spent;
            return 0;
        }
    }
    // SAFETY: per the contract.
    unsafe { on_event(ev, small) }
}

/// Bytes left before the nearer of the sampler's distance and the tick's budget, as they stood
/// at the last event (guarded sampling's budget, counted in allocations, is not among them).
#[inline(always)]
fn nearest_byte_budget(ev: &ThreadEvents) -> i64 {
    ev.sampler.left().min(ev.tick_left as i64)
}

/// Makes the calling thread's next allocation an event (at initialization: the first
/// allocation armed the countdown before the options were read, so a budget they turn on,
/// guarded sampling, would otherwise wait for the first tick).
pub fn run_out_now() {
    let ev = thread_events();
    // SAFETY: the thread's own events; `left` at 0 keeps `left <= armed`.
    unsafe {
        if (*ev).tick_left != 0 {
            (*ev).left = 0;
        }
    }
}

/// The calling thread's countdown ran out: settles every budget, does what is due, and arms the
/// countdown again. Returns what the allocation that ran it out is to be ([`SAMPLE`],
/// [`GUARD`], 0 for neither). `small`: that allocation will be served by the thread cache's bins
/// (and counted there).
///
/// # Safety
/// `ev` must be the calling thread's events, and no allocation or free of this thread may be in
/// progress on its thread cache (the cache GC step may flush a bin).
#[cold]
#[inline(never)]
#[link_section = ".text.hot.tally"]
pub unsafe fn on_event(ev: *mut ThreadEvents, small: bool) -> u8 {
    // SAFETY: the thread's own events.
    let ev = unsafe { &mut *ev };
    let spent = ev.armed - ev.left;
    if ev.tick_left == 0 {
        // The thread's first event: start the tick budget rather than tick at once.
        ev.tick_left = decay::TICK_BYTES as i32;
    }
    let addr = ev as *const ThreadEvents as u64;
    let seed = move || addr ^ pal::now_ms().wrapping_mul(0x9E37_79B9_7F4A_7C15);
    // Whether the profiler's own work is running on this thread is asked only of an allocation
    // that is due (a read of the thread block's profiler flags since the twenty-first pass; as
    // a `thread_local!` it was a call to `__tls_get_addr`, 25 instructions an event).
    let mut due = 0;
    if PROFILER.sampling.settle(&mut ev.sampler, spent, seed) && !prof_hooks::in_profiler() {
        due |= SAMPLE;
    }
    let rate = guard::rate();
    // SAFETY: the thread's own bins.
    let count = || unsafe { tcache::allocations(tcache::thread_bins()) };
    if rate != 0 && ev.guard.settle(rate, spent, small, count, seed) && !prof_hooks::in_profiler() {
        due |= GUARD;
    }
    if spent >= ev.tick_left as i64 {
        ev.tick_left = decay::TICK_BYTES as i32;
        decay_tick(ev);
        // SAFETY: the thread's own bins; per the contract no operation on them is in progress.
        unsafe { tcache::gc_step(tcache::thread_bins()) };
    } else {
        // At least 0 (`left <= armed`) and below `tick_left`, so it fits.
        ev.tick_left -= spent as i32;
    }
    prof_hooks::on_bytes(spent.max(0) as u64);
    let mut next = nearest_byte_budget(ev).max(1);
    if rate != 0 {
        next = next.min(ev.guard.bytes_left(rate));
    }
    ev.armed = next;
    ev.left = next;
    due
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::size_class::NCACHED;
    use tally_profiler::sampler::IDLE_DISTANCE;

    /// Runs `f` on a thread of its own: its thread block, and so its countdown, belongs to the
    /// test alone. `f` must not allocate between its calls and its checks (an allocation counts
    /// down too).
    fn on_new_thread(f: impl FnOnce() + Send + 'static) {
        std::thread::spawn(f).join().unwrap();
    }

    /// Makes the calling thread's countdown what a new thread's block holds: all zero.
    fn reset() {
        let ev = ThreadEvents {
            left: 0,
            armed: 0,
            tick_left: 0,
            ticks: 0,
            sampler: ThreadSampler::default(),
            guard: ThreadGuard::default(),
        };
        // SAFETY: the calling thread's own events, not borrowed anywhere.
        unsafe { thread_events().write(ev) };
    }

    /// (left, armed, tick_left, the sampler's distance) of the calling thread's countdown.
    fn state() -> (i64, i64, i64, i64) {
        let ev = thread_events();
        // SAFETY: the calling thread's own events, read between its calls.
        unsafe {
            (
                (*ev).left,
                (*ev).armed,
                (*ev).tick_left as i64,
                (*ev).sampler.left(),
            )
        }
    }

    /// The state right after an event: `left == armed == min(sampler, tick_left) >= 1`, within
    /// the tick budget.
    fn assert_just_armed() {
        let (left, armed, tick_left, sampler) = state();
        assert!(armed >= 1, "armed {armed}");
        assert_eq!(left, armed);
        assert_eq!(armed, sampler.min(tick_left));
        assert!(
            0 < tick_left && tick_left <= decay::TICK_BYTES,
            "tick_left {tick_left}"
        );
    }

    /// The cache GC steps the calling thread took so far (mod the number of bins).
    fn gc_steps() -> u32 {
        // SAFETY: the calling thread's own bins, read between its calls.
        unsafe { (*tcache::thread_bins()).gc_next }
    }

    #[test]
    fn a_new_threads_first_event_arms_the_countdown() {
        on_new_thread(|| {
            reset();
            assert_eq!(0, count_bytes(0));
            assert_eq!(state().1, 0, "zero bytes do not run the countdown out");
            assert_eq!(0, count_bytes(8));
            assert_just_armed();
            let (_, armed, tick_left, _) = state();
            assert_eq!(
                tick_left,
                decay::TICK_BYTES - 8,
                "the tick budget starts, less the first block"
            );
            assert_eq!(armed, tick_left, "the profiler is off: the tick is nearest");
        });
    }

    #[test]
    fn a_large_block_counts_as_16_kib_while_only_the_tick_counts_bytes() {
        assert!(!PROFILER.sampling.is_on(), "unit tests run with the profiler off");
        assert_eq!(guard::rate(), 0, "unit tests run with guarded sampling off");
        on_new_thread(|| {
            reset();
            assert_eq!(0, count(1));
            let (left, armed, tick_left, _) = state();
            assert!(left > TICK_CHARGE_MAX as i64 + 2);
            assert_eq!(0, count(TICK_CHARGE_MAX));
            assert_eq!(state().0, left - TICK_CHARGE_MAX as i64, "16 KiB counts in full");
            assert_eq!(0, count(256 * 1024));
            assert_eq!(
                state().0,
                left - 2 * TICK_CHARGE_MAX as i64,
                "256 KiB counts as 16 KiB"
            );
            assert_eq!(state().1, armed, "no event: a tick's budget was not spent");
            assert_eq!(tick_left, decay::TICK_BYTES - 1);
            // Two more spend the rest of the tick's 64 KiB: an event, and a fresh tick.
            assert_eq!(0, count(256 * 1024));
            assert_eq!(state().1, armed, "no event yet");
            assert_eq!(0, count(256 * 1024));
            assert_eq!(state().2, decay::TICK_BYTES);
            assert_just_armed();
        });
    }

    /// A block of a large class the thread cache keeps (16-32 KiB) counts 8 KiB against the
    /// countdown while only the tick counts bytes (`alloc_free/32768` ran an event every 4
    /// allocations at 16 KiB); one the cache does not keep counts 16 KiB, as before. Through
    /// `malloc` (`System` calls it, and the test binary's `malloc` is Tally's, `capi.rs`).
    #[test]
    fn a_block_the_thread_cache_keeps_counts_8_kib() {
        assert!(!PROFILER.sampling.is_on(), "unit tests run with the profiler off");
        // What the benchmark was measured with, not the constant: a test of the rule.
        const CACHED: i64 = 8 * 1024;
        use std::alloc::{GlobalAlloc, Layout, System};
        fn layout(size: usize) -> Layout {
            Layout::from_size_align(size, 8).unwrap()
        }
        fn alloc(size: usize) -> *mut u8 {
            // SAFETY: a layout of non-zero size.
            unsafe { System.alloc(layout(size)) }
        }
        fn free(p: *mut u8, size: usize) {
            // SAFETY: the tests pass a block `alloc(size)` gave, once.
            unsafe { System.dealloc(p, layout(size)) }
        }
        on_new_thread(|| {
            let first = armed_with_cache();
            let budget = state().0;
            assert!(budget > 2 * TICK_CHARGE_MAX as i64, "budget {budget}");
            let p = alloc(32 * 1024);
            assert!(!p.is_null());
            assert_eq!(budget - state().0, CACHED, "32 KiB counts 8 KiB");
            free(p, 32 * 1024);
            let p = alloc(17 * 1024);
            assert_eq!(budget - state().0, 2 * CACHED, "17 KiB too");
            free(p, 17 * 1024);
            let p = alloc(64 * 1024);
            assert_eq!(
                budget - state().0,
                2 * CACHED + TICK_CHARGE_MAX as i64,
                "64 KiB, past the thread cache, counts 16 KiB"
            );
            free(p, 64 * 1024);
            // A tick's budget of 32 KiB blocks: 8 of them to the event, not 4.
            let before = gc_steps();
            assert_eq!(before, first);
            let mut allocations = 0;
            while gc_steps() == before {
                free(alloc(32 * 1024), 32 * 1024);
                allocations += 1;
                assert!(allocations <= 16, "no tick in 16 blocks of 32 KiB");
            }
            let spent = 2 * CACHED as usize + TICK_CHARGE_MAX;
            let expected = (budget as usize - spent) / CACHED as usize + 1;
            assert_eq!(
                allocations, expected,
                "the tick after {expected} blocks of 32 KiB"
            );
        });
    }

    /// Gives the calling thread its cache (one allocation, so that its GC steps can be seen),
    /// starts its countdown afresh and runs its first event; returns its GC steps so far.
    fn armed_with_cache() -> u32 {
        drop(core::hint::black_box(std::boxed::Box::new(1u64)));
        reset();
        assert_eq!(0, count_bytes(1));
        gc_steps()
    }

    /// What the profiler's full charge of a large block does (`count` charges it whole while
    /// the profiler samples): the tick takes 16 KiB of it, so the countdown that ran out for
    /// the rest is armed again without an event, and the tick comes when its share is past
    /// 64 KiB, as it comes with the profiler off.
    #[test]
    fn a_charge_past_16_kib_counts_16_kib_against_the_tick() {
        on_new_thread(|| {
            let first = armed_with_cache();
            // Counted whole: 48 KiB of the tick's budget left.
            assert_eq!(0, count_bytes(TICK_CHARGE_MAX - 1));
            let small = TICK_CHARGE_MAX as i64 - 1;
            assert_eq!(state().0, 3 * TICK_CHARGE_MAX as i64);
            let big = 256 * 1024;
            for k in 1..=3 {
                assert_eq!(0, count_bytes(big));
                let (left, armed, tick_left, sampler) = state();
                assert_eq!(gc_steps(), first, "no tick after {k} large charges");
                assert_eq!(
                    left,
                    (3 - k) * TICK_CHARGE_MAX as i64,
                    "the tick's budget left after {k}"
                );
                assert_eq!(sampler, IDLE_DISTANCE, "no sample drawn: no event");
                assert_eq!(
                    armed - left,
                    small + k * big as i64,
                    "the bytes since the event, whole"
                );
                assert!(tick_left >= armed - left, "the tick's budget is not overspent");
            }
            // The budget is spent to 0, as the countdown would stop at 0: the next byte is the
            // event, a tick, and a fresh budget.
            assert_eq!(0, count_bytes(1));
            assert_eq!(gc_steps(), (first + 1) % NCACHED as u32, "one tick");
            assert_just_armed();
            assert_eq!(state().2, decay::TICK_BYTES);
        });
    }

    /// Small blocks after a large charge that did not run the countdown out (the thread cache's
    /// path, which calls `ran_out` as soon as the countdown runs out) bring no event with nothing
    /// due: the countdown runs out at the tick's budget from before the credit and is armed again
    /// for the credited one. Before, `on_event` ran there with nothing due (3600 of
    /// `generations 20 4 10000`'s 21 000 events with the profiler on).
    #[test]
    fn a_credited_charge_moves_the_countdown_with_the_tick() {
        on_new_thread(|| {
            let first = armed_with_cache();
            let budget = state().2;
            // Counted whole, as with the profiler on; the tick takes 16 KiB of it.
            let big = 40 * 1024;
            assert_eq!(0, count_bytes(big));
            // The fast path's count: down by each block, and `alloc_small_miss`'s call when it
            // runs out.
            let small = |bytes: i64| {
                // SAFETY: the thread's own events, as the fast path counts them.
                let ev = unsafe { &mut *thread_events() };
                ev.left -= bytes;
                if ev.left < 0 {
                    // SAFETY: the thread's own events; no cache operation in progress.
                    unsafe { ran_out(ev, true) };
                }
            };
            let rest = budget - TICK_CHARGE_MAX as i64;
            for _ in 0..rest / 1024 {
                small(1024);
            }
            small(rest % 1024);
            let (left, armed, _, _) = state();
            assert_eq!(armed - left, big as i64 + rest, "no event since the first");
            assert_eq!(left, 0, "the tick's budget spent to 0");
            assert_eq!(gc_steps(), first, "no tick yet");
            small(1);
            assert_eq!(gc_steps(), (first + 1) % NCACHED as u32, "one tick");
            assert_just_armed();
        });
    }

    #[test]
    fn count_runs_an_event_only_below_zero() {
        on_new_thread(|| {
            reset();
            assert_eq!(0, count_bytes(1));
            let (left, armed, tick_left, _) = state();
            // In charges the tick counts whole (`a_charge_past_16_kib_counts_16_kib_against_the_tick`).
            let mut rest = left as usize - 1;
            while rest > 0 {
                let bytes = rest.min(TICK_CHARGE_MAX);
                assert_eq!(0, count_bytes(bytes));
                rest -= bytes;
            }
            assert_eq!(state(), (1, armed, tick_left, state().3), "no event before zero");
            assert_eq!(0, count_bytes(1));
            assert_eq!(state().0, 0);
            assert_eq!(state().1, armed, "no event at zero");
            assert_eq!(0, count_bytes(1));
            // The event settled `armed + 1` bytes, the whole tick budget: a tick, and a fresh one.
            assert_just_armed();
            assert_eq!(state().2, decay::TICK_BYTES);
        });
    }

    #[test]
    fn the_tick_comes_every_tick_bytes() {
        on_new_thread(|| {
            // One allocation first, so this thread has its cache and its GC steps can be seen.
            drop(core::hint::black_box(std::boxed::Box::new(1u64)));
            // SAFETY: the calling thread's own bins.
            let has_cache = unsafe { !(*tcache::thread_bins()).cache.is_null() };
            assert!(has_cache, "this test needs thread caches (tcache:true)");
            reset();
            let first = gc_steps();
            const CHUNK: i64 = 64;
            const TICKS: i64 = 10;
            for _ in 0..TICKS * decay::TICK_BYTES / CHUNK {
                assert_eq!(0, count_bytes(CHUNK as usize));
            }
            let steps = (gc_steps() + NCACHED as u32 - first) % NCACHED as u32;
            // Each tick took one budget; an event overshoots by at most one chunk.
            let fewest = (TICKS * decay::TICK_BYTES / (decay::TICK_BYTES + CHUNK)) as u32;
            assert!((fewest..=TICKS as u32).contains(&steps), "{steps} ticks");
        });
    }

    /// Slow paths tick too, counted with the countdown's ticks: the clock is read at every
    /// eighth tick of either kind.
    #[test]
    fn slow_paths_look_every_eighth_tick_with_the_countdown() {
        on_new_thread(|| {
            reset();
            let before = looked();
            for _ in 0..4 * TICKS_PER_LOOK {
                slow_tick();
            }
            assert_eq!(looked() - before, 4, "one look every {TICKS_PER_LOOK} slow ticks");
            assert_eq!(state_ticks(), 4 * TICKS_PER_LOOK);
            // Ticks of both kinds, alternating: still one look in eight, of either kind.
            let before = looked();
            let mut slow = 0;
            while state_ticks() < 6 * TICKS_PER_LOOK {
                assert_eq!(0, count_bytes(decay::TICK_BYTES as usize));
                slow_tick();
                slow += 1;
            }
            let ticks = state_ticks() - 4 * TICKS_PER_LOOK;
            assert!(
                slow < ticks,
                "{slow} slow ticks of {ticks}: the countdown ticked too"
            );
            assert_eq!(
                looked() - before,
                (ticks / TICKS_PER_LOOK) as u64,
                "{ticks} ticks"
            );
        });
    }

    #[test]
    fn decay_looks_every_eighth_tick() {
        on_new_thread(|| {
            reset();
            let before = looked();
            const CHUNK: i64 = 64;
            const TICKS: i64 = 4 * TICKS_PER_LOOK as i64;
            for _ in 0..TICKS * decay::TICK_BYTES / CHUNK {
                assert_eq!(0, count_bytes(CHUNK as usize));
            }
            let ticks = state_ticks();
            let fewest = TICKS * decay::TICK_BYTES / (decay::TICK_BYTES + CHUNK);
            assert!((fewest..=TICKS).contains(&(ticks as i64)), "{ticks} ticks");
            assert_eq!(
                looked() - before,
                (ticks / TICKS_PER_LOOK) as u64,
                "{ticks} ticks"
            );
        });
    }

    /// Decay's timed looks on the calling thread so far.
    fn looked() -> u64 {
        decay::LOOKS.with(|looks| looks.get())
    }

    /// The calling thread's ticks so far.
    fn state_ticks() -> u32 {
        // SAFETY: the calling thread's own events, read between its calls.
        unsafe { (*thread_events()).ticks }
    }

    #[test]
    fn after_every_event_the_countdown_is_the_nearest_budget() {
        assert!(!PROFILER.sampling.is_on(), "unit tests run with the profiler off");
        on_new_thread(|| {
            reset();
            let mut seed = 0x2545_f491_4f6c_dd1du64;
            for round in 0..2000 {
                seed = seed
                    .wrapping_mul(6364136223846793005)
                    .wrapping_add(1442695040888963407);
                let size = match seed >> 60 {
                    0 => 1 << 62,
                    1 => decay::TICK_BYTES as usize * 3,
                    _ => 1 + (seed >> 33) as usize % 4096,
                };
                let (_, armed, _, _) = state();
                let due = count_bytes(size);
                assert_eq!(due, 0, "round {round}: the profiler is off, nothing is sampled");
                let (left, now_armed, tick_left, sampler) = state();
                if left == now_armed {
                    // An event (without one, `left` only goes down from `armed`).
                    assert_just_armed();
                    // An idle sampler counts down from far away (redrawing far away when it
                    // runs out) and is never the nearest budget here.
                    assert!(sampler <= IDLE_DISTANCE && sampler > IDLE_DISTANCE / 2);
                    assert_eq!(now_armed, tick_left);
                } else {
                    assert!(0 <= left && left < armed, "round {round}");
                }
            }
            // The largest size is clamped, not wrapped to a negative count.
            assert_eq!(0, count_bytes(usize::MAX));
            assert_just_armed();
        });
    }
}
