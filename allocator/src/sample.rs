//! The profiler's hooks in the allocator: sampling, sampled blocks, and when profiles are
//! written.
//!
//! # Sampling
//! Every thread counts down the bytes it allocates (`ThreadBins::event`, one subtraction on the
//! allocation fast path, shared with the decay tick). When the count crosses zero, [`on_event`]
//! settles both budgets: the decay tick every 64 KiB, and the sampling distance, drawn from an
//! exponential distribution with mean `2^lg_prof_sample` bytes. The allocation that crossed the
//! sampling budget is sampled: [`alloc_sampled`] captures its stack (with no allocator lock held),
//! serves it from a page run of its own whose pages say [`SAMPLED`] in the page map, and records
//! it in the profiler's live-block table. So `free` of an ordinary block never looks anything up;
//! only frees of sampled pages (which fail the fast path's class check) reach
//! [`free_sampled`]. A thread-local guard keeps allocations made while capturing or dumping
//! (libgcc's unwinder may allocate on first use) from being sampled themselves.
//!
//! # Profiles
//! Dumps are written by the thread whose event notices they are due, outside any allocator lock:
//! every `2^lg_prof_interval` bytes allocated (all threads together), on a new high of mapped
//! memory (`prof_gdump`), at the first allocation after `prof_signal` arrived, at exit
//! (`prof_final`), and on request ([`dump_to`], `tally::prof::dump`, `tally_prof_dump`).

use core::cell::Cell;
use core::sync::atomic::{AtomicBool, AtomicI64, AtomicU32, AtomicU64, AtomicU8, AtomicUsize, Ordering};

use tally_profiler::{self as profiler, DumpKind, MAX_FRAMES};

use crate::arena::{self, Arena};
use crate::chunk::{RunState, Span, CHUNK};
use crate::options::Options;
use crate::pal::{self, PAGE};
use crate::size_class::{SizeClass, NCLASSES};
use crate::tcache::ThreadBins;
use crate::{chunk, decay, huge, pagemap};

/// Page-map class byte of a sampled block's pages.
pub const SAMPLED: u8 = 0xFD;
const _: () = assert!((SAMPLED as usize) >= NCLASSES && SAMPLED < chunk::FREE_RUN);

/// Whether the profiler is on (`prof:true`): sampled blocks may exist.
pub static PROF_ON: AtomicBool = AtomicBool::new(false);

/// Whether the page-aligned block `p` of a class up to `LARGE_MAX` is a sampled block: one load
/// of its page's info word, no page-map walk (such a block always lies in a chunk).
///
/// # Safety
/// `p` must be a live block of Tally's of a class (not huge).
#[inline(always)]
pub unsafe fn is_sampled_class_block(p: *mut u8) -> bool {
    let chunk = chunk::ChunkHeader::of(p as usize);
    // SAFETY: per the contract `p` lies in a live chunk, so its page index is in bounds.
    unsafe {
        let info = (*chunk).page_info[(*chunk).page_index(p as usize)].load(Ordering::Relaxed);
        chunk::info_class(info) == SAMPLED
    }
}
/// Whether sampling is active now.
static ACTIVE: AtomicBool = AtomicBool::new(false);
/// `lg_prof_sample` in force.
static LG_SAMPLE: AtomicU32 = AtomicU32::new(19);
/// Bumped when sampling is switched or its rate changes; threads redraw their distance when
/// they see a new epoch.
static EPOCH: AtomicU32 = AtomicU32::new(1);
static LG_INTERVAL: AtomicI64 = AtomicI64::new(-1);
static GDUMP: AtomicBool = AtomicBool::new(false);

/// Sampled blocks allocated / freed so far, per class (statistics).
pub static SAMPLED_OUT: [AtomicU64; NCLASSES] = [const { AtomicU64::new(0) }; NCLASSES];
/// See [`SAMPLED_OUT`].
pub static SAMPLED_IN: [AtomicU64; NCLASSES] = [const { AtomicU64::new(0) }; NCLASSES];

/// Bytes allocated by all threads, counted at their events (for `lg_prof_interval`).
static ALLOCATED: AtomicU64 = AtomicU64::new(0);
static INTERVALS_DONE: AtomicU64 = AtomicU64::new(0);
static INTERVAL_SEQ: AtomicU64 = AtomicU64::new(0);
static MANUAL_SEQ: AtomicU64 = AtomicU64::new(0);
static PEAK_SEQ: AtomicU64 = AtomicU64::new(0);
static PEAK_MAPPED: AtomicU64 = AtomicU64::new(0);
static SIGNAL_PENDING: AtomicBool = AtomicBool::new(false);

/// `prof_prefix`, copied at initialization.
struct Prefix {
    bytes: [AtomicU8; crate::options::TEXT_MAX],
    len: AtomicUsize,
}
static PREFIX: Prefix = Prefix {
    bytes: [const { AtomicU8::new(0) }; crate::options::TEXT_MAX],
    len: AtomicUsize::new(0),
};

/// Tally's own code range (0, 0 when linked into the executable), found on the first sample.
static CODE_LO: AtomicUsize = AtomicUsize::new(0);
static CODE_HI: AtomicUsize = AtomicUsize::new(0);
static PREPARED: AtomicU8 = AtomicU8::new(0);

std::thread_local! {
    /// Set while this thread captures a stack, records a sample or writes a profile.
    static IN_PROFILER: Cell<bool> = const { Cell::new(false) };
}

/// Distance with which threads start and which they keep while sampling is off.
const IDLE_DISTANCE: i64 = 1 << 40;

/// Takes the profiler's settings from the options (at initialization).
pub fn configure(opts: &Options) {
    if !opts.prof {
        return;
    }
    LG_SAMPLE.store(opts.lg_prof_sample, Ordering::Relaxed);
    LG_INTERVAL.store(opts.lg_prof_interval, Ordering::Relaxed);
    GDUMP.store(opts.prof_gdump, Ordering::Relaxed);
    let prefix = opts.prof_prefix();
    for (slot, &b) in PREFIX.bytes.iter().zip(prefix) {
        slot.store(b, Ordering::Relaxed);
    }
    PREFIX.len.store(prefix.len(), Ordering::Relaxed);
    profiler::PROFILER.set_lg_sample(opts.lg_prof_sample);
    profiler::PROFILER.set_accum(opts.prof_accum);
    if opts.prof_signal > 0 && !pal::on_signal(opts.prof_signal, on_prof_signal) {
        pal::print(format_args!(
            "tally: prof_signal: cannot handle signal {}\n",
            opts.prof_signal
        ));
    }
    PROF_ON.store(true, Ordering::Release);
    ACTIVE.store(opts.prof_active, Ordering::Relaxed);
    EPOCH.fetch_add(1, Ordering::Relaxed);
}

extern "C" fn on_prof_signal(_: i32) {
    SIGNAL_PENDING.store(true, Ordering::Relaxed);
}

/// Switches sampling on or off (with `prof:true`). Returns false if the profiler is off.
pub fn set_active(on: bool) -> bool {
    if !PROF_ON.load(Ordering::Acquire) {
        return false;
    }
    ACTIVE.store(on, Ordering::Relaxed);
    EPOCH.fetch_add(1, Ordering::Relaxed);
    true
}

/// Whether sampling is active.
pub fn is_active() -> bool {
    PROF_ON.load(Ordering::Acquire) && ACTIVE.load(Ordering::Relaxed)
}

/// Changes `lg_prof_sample` for the samples to come. Returns false if the profiler is off.
pub fn set_lg_sample(lg: u32) -> bool {
    if !PROF_ON.load(Ordering::Acquire) {
        return false;
    }
    let lg = lg.min(40);
    LG_SAMPLE.store(lg, Ordering::Relaxed);
    profiler::PROFILER.set_lg_sample(lg);
    EPOCH.fetch_add(1, Ordering::Relaxed);
    true
}

/// Runs `f` with the thread's profiler guard set.
fn guarded<R>(f: impl FnOnce() -> R) -> R {
    let was = IN_PROFILER.replace(true);
    let r = f();
    IN_PROFILER.set(was);
    r
}

/// A thread's allocation countdown crossed zero: settles the decay and sampling budgets, writes
/// any profile that is due, and starts a new countdown. Returns whether the allocation that
/// crossed it is to be sampled.
///
/// # Safety
/// `tb` must be the calling thread's bins.
#[cold]
#[inline(never)]
pub unsafe fn on_event(tb: *mut ThreadBins) -> bool {
    // SAFETY: the thread's own bins.
    let tb = unsafe { &mut *tb };
    let consumed = tb.armed - tb.event;
    let epoch = EPOCH.load(Ordering::Relaxed);
    if tb.epoch != epoch {
        tb.epoch = epoch;
        tb.sample_left = next_distance(tb);
        if tb.tick_left <= 0 {
            tb.tick_left = decay::TICK_BYTES;
        }
    } else {
        tb.sample_left -= consumed;
    }
    tb.tick_left -= consumed;
    let mut sample = false;
    if tb.sample_left <= 0 {
        sample = ACTIVE.load(Ordering::Relaxed) && !IN_PROFILER.get();
        tb.sample_left = next_distance(tb);
    }
    if tb.tick_left <= 0 {
        tb.tick_left = decay::TICK_BYTES;
        decay::tick();
        // SAFETY: `tb` is this thread's bins; events run before the allocation touches them.
        unsafe { crate::tcache::gc_step(tb) };
    }
    if PROF_ON.load(Ordering::Relaxed) {
        // Only interval dumps need the process-wide byte count: an atomic add on one cache line
        // from every thread at every event is measurable with several threads (larson).
        if LG_INTERVAL.load(Ordering::Relaxed) >= 0 {
            ALLOCATED.fetch_add(consumed.max(0) as u64, Ordering::Relaxed);
        }
        if !IN_PROFILER.get() {
            write_due_profiles();
        }
    }
    let next = tb.sample_left.min(tb.tick_left).max(1);
    tb.armed = next;
    tb.event = next;
    sample
}

fn next_distance(tb: &mut ThreadBins) -> i64 {
    if !ACTIVE.load(Ordering::Relaxed) {
        return IDLE_DISTANCE;
    }
    if tb.rng == 0 {
        tb.rng = (tb as *mut ThreadBins as u64) ^ pal::now_ms().wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    }
    profiler::next_sample_distance(&mut tb.rng, LG_SAMPLE.load(Ordering::Relaxed)).min(IDLE_DISTANCE as u64)
        as i64
}

/// Allocates a sampled block for a request of `size` bytes: of `class` from `arena`'s pages,
/// or huge when `class` is `None`. Records its stack. Null when out of memory.
#[cold]
#[inline(never)]
pub fn alloc_sampled(size: usize, class: Option<SizeClass>, arena: &Arena) -> *mut u8 {
    guarded(|| {
        prepare();
        let mut frames = [0usize; MAX_FRAMES];
        let n = profiler::capture_stack(&mut frames, 0);
        let first = first_caller_frame(&frames[..n]);
        let p = match class {
            Some(class) => {
                let pages = class.size().div_ceil(PAGE);
                let run = arena.pages.lock().alloc(pages, SAMPLED, RunState::Large);
                if run.is_null() {
                    return core::ptr::null_mut();
                }
                // SAFETY: the run was just allocated for us; `class` records the block's class
                // for `malloc_usable_size`, `realloc` and statistics.
                unsafe { (*run).class = class.0 };
                SAMPLED_OUT[class.index()].fetch_add(1, Ordering::Relaxed);
                Span::start(run) as *mut u8
            }
            None => {
                let p = huge::alloc(size, PAGE);
                if !p.is_null() {
                    let d = (pagemap::lookup(p as usize) & !pagemap::TAG_HUGE) as *mut huge::HugeBlock;
                    // SAFETY: the page map sends a fresh huge block to its live descriptor.
                    unsafe { (*d).sampled = true };
                }
                p
            }
        };
        if !p.is_null() {
            profiler::on_sampled_alloc(p as usize, size, &frames[first..n]);
        }
        p
    })
}

/// Frees the sampled block `p` of `class` whose run is `span`.
///
/// # Safety
/// `p` must be a live sampled block (not huge) that the caller gives up.
pub unsafe fn free_sampled(p: *mut u8, span: *mut Span, class: SizeClass) {
    profiler::on_sampled_free(p as usize);
    SAMPLED_IN[class.index()].fetch_add(1, Ordering::Relaxed);
    // SAFETY: `span` is the run of a dead sampled block; its chunk belongs to that arena.
    unsafe {
        let arena = arena::of_chunk(Span::chunk(span));
        arena.pages.lock().free(span);
    }
}

/// Forgets the sampled huge block at `p` (its memory is freed by the caller).
pub fn forget_sampled_huge(p: *mut u8) {
    profiler::on_sampled_free(p as usize);
}

/// First-sample set-up: warms the unwinder up and finds Tally's own code, so captured stacks
/// can start at the allocator's entry point.
fn prepare() {
    if PREPARED.load(Ordering::Acquire) == 2 {
        return;
    }
    if PREPARED
        .compare_exchange(0, 1, Ordering::Acquire, Ordering::Acquire)
        .is_ok()
    {
        profiler::prepare(
            LG_SAMPLE.load(Ordering::Relaxed),
            profiler::PROFILER.accum_enabled(),
        );
        if let Some((lo, hi)) = pal::own_code_range() {
            CODE_LO.store(lo, Ordering::Relaxed);
            CODE_HI.store(hi, Ordering::Relaxed);
        }
        PREPARED.store(2, Ordering::Release);
    }
}

/// Index of the first frame to keep: when Tally is a library of its own, its frames are dropped
/// but the outermost (its exported entry point, `malloc` or the like, which jeprof and the report
/// tool know to leave out); linked into the executable, all frames stay.
fn first_caller_frame(frames: &[usize]) -> usize {
    let (lo, hi) = (CODE_LO.load(Ordering::Relaxed), CODE_HI.load(Ordering::Relaxed));
    if lo == hi {
        return 0;
    }
    let inside = frames.iter().take_while(|&&pc| pc >= lo && pc < hi).count();
    inside.saturating_sub(1)
}

/// Writes the profiles that are due (interval, new peak, signal).
fn write_due_profiles() {
    let lg = LG_INTERVAL.load(Ordering::Relaxed);
    if lg >= 0 {
        let n = ALLOCATED.load(Ordering::Relaxed) >> lg;
        let done = INTERVALS_DONE.load(Ordering::Relaxed);
        if n > done
            && INTERVALS_DONE
                .compare_exchange(done, n, Ordering::Relaxed, Ordering::Relaxed)
                .is_ok()
        {
            dump_kind(DumpKind::Interval(INTERVAL_SEQ.fetch_add(1, Ordering::Relaxed)));
        }
    }
    if GDUMP.load(Ordering::Relaxed) {
        let mapped = mapped_bytes();
        let peak = PEAK_MAPPED.load(Ordering::Relaxed);
        if mapped > peak
            && PEAK_MAPPED
                .compare_exchange(peak, mapped, Ordering::Relaxed, Ordering::Relaxed)
                .is_ok()
        {
            dump_kind(DumpKind::Peak(PEAK_SEQ.fetch_add(1, Ordering::Relaxed)));
        }
    }
    // Read before writing: a swap on every event would bounce the line between threads.
    if SIGNAL_PENDING.load(Ordering::Relaxed) && SIGNAL_PENDING.swap(false, Ordering::Relaxed) {
        dump_kind(DumpKind::Manual(MANUAL_SEQ.fetch_add(1, Ordering::Relaxed)));
    }
}

fn mapped_bytes() -> u64 {
    let chunks =
        chunk::CHUNKS_MAPPED.load(Ordering::Relaxed) - chunk::CHUNKS_UNMAPPED.load(Ordering::Relaxed);
    chunks * CHUNK as u64
        + huge::HUGE_BYTES.load(Ordering::Relaxed)
        + huge::HUGE_CACHED.load(Ordering::Relaxed)
}

fn prefix(buf: &mut [u8; crate::options::TEXT_MAX]) -> &[u8] {
    let len = PREFIX.len.load(Ordering::Relaxed);
    for (b, slot) in buf.iter_mut().zip(&PREFIX.bytes[..len]) {
        *b = slot.load(Ordering::Relaxed);
    }
    &buf[..len]
}

/// Writes a profile named `<prof_prefix>.<pid>.<seq>.<kind>.heap`; a failure is reported on one
/// line of stderr.
fn dump_kind(kind: DumpKind) {
    let mut buf = [0u8; crate::options::TEXT_MAX];
    let prefix = prefix(&mut buf);
    if let Err(e) = guarded(|| profiler::dump_with_prefix(prefix, kind)) {
        pal::print(format_args!(
            "tally: cannot write a heap profile with prefix {}: {e:?}\n",
            core::str::from_utf8(prefix).unwrap_or("?")
        ));
    }
}

/// Writes a profile to `path`. Errors if the profiler is off or the file cannot be written.
pub fn dump_to(path: &[u8]) -> Result<(), profiler::DumpError> {
    if !PROF_ON.load(Ordering::Acquire) {
        return Err(profiler::DumpError::Os(libc::ENOTSUP));
    }
    guarded(|| profiler::dump_to_path(path))
}

/// Writes a manual profile named after `prof_prefix` (`.m<n>.heap`).
pub fn dump_manual() -> Result<u64, profiler::DumpError> {
    if !PROF_ON.load(Ordering::Acquire) {
        return Err(profiler::DumpError::Os(libc::ENOTSUP));
    }
    let mut buf = [0u8; crate::options::TEXT_MAX];
    let prefix = prefix(&mut buf);
    guarded(|| {
        profiler::dump_with_prefix(
            prefix,
            DumpKind::Manual(MANUAL_SEQ.fetch_add(1, Ordering::Relaxed)),
        )
    })
}

/// At exit: the final profile (`prof_final`) and the leak summary (`prof_leak`).
pub fn at_exit(opts: &Options) {
    if !opts.prof {
        return;
    }
    if opts.prof_final {
        dump_kind(DumpKind::Final);
    }
    if opts.prof_leak {
        let (mut bytes, mut objects, mut stacks) = (0.0f64, 0.0f64, 0u64);
        for s in profiler::PROFILER.stacks.iter() {
            if s.live.bytes > 0.0 {
                bytes += s.live.bytes;
                objects += s.live.objects;
                stacks += 1;
            }
        }
        let mut buf = [0u8; crate::options::TEXT_MAX];
        let prefix = core::str::from_utf8(prefix(&mut buf)).unwrap_or("tally");
        pal::print(format_args!(
            "tally: leak summary: about {:.0} bytes in {:.0} objects still live at exit, from {} stacks (sampled)\n",
            bytes, objects, stacks
        ));
        if opts.prof_final {
            pal::print(format_args!(
                "tally: to see where: tally report --text {prefix}.{}.*.f.heap\n",
                pal::pid()
            ));
        } else {
            pal::print(format_args!(
                "tally: add prof_final:true to write the final profile, then run tally report on it\n"
            ));
        }
    }
}
