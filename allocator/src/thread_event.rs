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
//! - decay and cache GC: every [`decay::TICK_BYTES`] (`tick_left`);
//! - sampling: the profiler draws each thread's distance ([`ThreadSampler`]); this module only
//!   passes the bytes on and asks whether the allocation is sampled;
//! - the profiler's interval byte count and due profiles (`prof_hooks::on_bytes`).
//!
//! This module owns the countdown and nothing else: no budget's policy lives here.
//!
//! The countdown lives in the thread's block of static TLS, right after the thread cache's
//! bins, so the fast path finds it at a fixed offset from the thread pointer. A new thread's
//! block is zero: its first allocation is an event, which arms the countdown.
//!
//! Invariant: `0 < armed` and `left <= armed` once a thread had its first event; the bytes
//! spent since the last event are `armed - left`.

use tally_pal as pal;
use tally_profiler::{ThreadSampler, PROFILER};

use crate::tcache::{self, ThreadBins};
use crate::{decay, prof_hooks};

/// A thread's countdown and the budgets behind it. All zero is a valid start.
#[repr(C)]
pub struct ThreadEvents {
    /// Bytes this thread may still allocate before its next event; the allocation fast path
    /// subtracts and takes the slow path below zero.
    pub left: i64,
    /// What `left` was set to when the countdown was armed.
    armed: i64,
    /// Bytes left before the next decay tick and cache GC step.
    tick_left: i64,
    /// Bytes left before the next sample (the profiler's).
    sampler: ThreadSampler,
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

/// Counts `size` bytes against the calling thread's countdown for an allocation that does not
/// go through the small fast path; returns whether this allocation is to be sampled.
pub fn count(size: usize) -> bool {
    let ev = thread_events();
    // SAFETY: the thread's own events.
    unsafe {
        (*ev).left -= size.min(i64::MAX as usize) as i64;
        (*ev).left < 0 && on_event(ev)
    }
}

/// The calling thread's countdown ran out: settles every budget, does what is due, and arms the
/// countdown again. Returns whether the allocation that ran it out is to be sampled.
///
/// # Safety
/// `ev` must be the calling thread's events, and no allocation or free of this thread may be in
/// progress on its thread cache (the cache GC step may flush a bin).
#[cold]
#[inline(never)]
pub unsafe fn on_event(ev: *mut ThreadEvents) -> bool {
    // SAFETY: the thread's own events.
    let ev = unsafe { &mut *ev };
    let spent = ev.armed - ev.left;
    if ev.armed == 0 {
        // The thread's first event: start the tick budget rather than tick at once.
        ev.tick_left = decay::TICK_BYTES;
    }
    let addr = ev as *const ThreadEvents as u64;
    let seed = move || addr ^ pal::now_ms().wrapping_mul(0x9E37_79B9_7F4A_7C15);
    let sample = PROFILER.sampling.settle(&mut ev.sampler, spent, seed) && !prof_hooks::in_profiler();
    ev.tick_left -= spent;
    if ev.tick_left <= 0 {
        ev.tick_left = decay::TICK_BYTES;
        decay::tick();
        // SAFETY: the thread's own bins; per the contract no operation on them is in progress.
        unsafe { tcache::gc_step(tcache::thread_bins()) };
    }
    prof_hooks::on_bytes(spent.max(0) as u64);
    let next = ev.sampler.left().min(ev.tick_left).max(1);
    ev.armed = next;
    ev.left = next;
    sample
}
