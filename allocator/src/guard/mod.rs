//! Guarded sampling (GWP-ASan): one allocation in `guard_rate`, on average, is served from a
//! slot of pages of its own between inaccessible guard pages, so that an overflow past its end,
//! an underflow before its start, or a use after it was freed faults at once; the fault
//! handler ([`report`]) recognizes the address and writes one report with the block's
//! allocation and free stacks. A double or invalid free of a guarded block is reported the
//! same way from `free`.
//!
//! # The region
//! One reservation, made at initialization when `guard_rate` is above 0 (asked for at [`POOL_AT`],
//! low, so that Rust's `dealloc` tells guarded blocks by their address with the same mask test as
//! sampled ones: `prof_hooks::SPECIAL_MASK`), all `PROT_NONE`: a guard page, then for each of
//! `guard_slots` slots [`SLOT_PAGES`] data pages and a guard page after them. A guarded block opens
//! only the pages it covers (`mprotect`), placed against the slot's end (its first byte past the
//! end is in the guard page: overflows fault) or, every other time, at the slot's start (the byte
//! before it is in the guard page before: underflows fault). Alignment is kept: a block at the end
//! starts at the highest address of its alignment that leaves room, so a few bytes of slack may
//! follow it (`malloc_usable_size` counts them; a request rounded to 16 bytes, or its alignment,
//! has none). Requests above [`MAX_GUARDED`] bytes or aligned above a page are not guarded.
//!
//! # Slots
//! A slot is empty (never used), live, or freed. Freeing a guarded block makes its pages
//! inaccessible again (`mprotect`) and gives them back (`MADV_DONTNEED`: a slot in quarantine
//! holds no memory; keeping them resident saved 3 µs of the 10 a guarded allocation and its free
//! cost, which nothing sees at the rates guarding runs at, but held up to `guard_slots` × 8 KiB),
//! records the free stack, and queues the slot at the tail of [`Pool::queue`]; a new
//! guarded block takes the slot at its head: empty slots first, then the one freed longest ago,
//! so a freed block stays a trap as long as possible. When every slot is live, allocations are
//! simply not guarded.
//!
//! # Which allocations
//! The allocation fast path stays as it is: each thread's byte countdown (`thread_event`) has
//! one budget more, [`ThreadGuard`], which counts allocations (the thread cache's per-bin
//! counts, read once the bytes the allocations it waits for take on average are spent; until
//! then an event costs it a subtraction) and arms the countdown to that many bytes; for the last
//! few it arms the countdown at 0, so every allocation is an event and the count is exact. `guard_rate:1` guards every allocation while
//! slots last.
//!
//! # Invariants
//! - [`Pool`]: the region, the slot table and the queue are set once, at initialization, before
//!   [`RATE`] is published (Release); nothing reads them before seeing `RATE` above 0 or a
//!   pointer inside the region (which only a guarded allocation, made after, can hand out).
//! - [`Slot`]: its fields are written by the one thread that owns it: the thread that took it
//!   from the queue (state `BUSY` until live), or the thread whose free moved it from `LIVE` to
//!   `BUSY` (until freed and queued). The state is stored with Release after the fields, and
//!   read with Acquire before them. The fault handler reads without owning (a report about a
//!   slot being reused at that instant may mix two blocks: it is a crash report, not state).

mod report;
mod symbols;

use core::cell::UnsafeCell;
use core::sync::atomic::{AtomicU64, AtomicU8, AtomicUsize, Ordering};

use tally_pal::sync::{Mutex, Rank};
use tally_pal::{self as pal, PAGE};
use tally_profiler::MAX_FRAMES;

use crate::options::Options;
use crate::prof_hooks;

/// Data pages of a slot.
pub const SLOT_PAGES: usize = 2;
/// The largest request guarded.
pub const MAX_GUARDED: usize = SLOT_PAGES * PAGE;
/// Address space of a slot and the guard page after it.
const STRIDE: usize = (SLOT_PAGES + 1) * PAGE;
/// Frames kept of each stack of a slot.
pub const GUARD_FRAMES: usize = 64;
/// The allocations before the guarded one below which a thread's countdown runs at 0 (each
/// allocation an event), so the count is exact.
const EXACT: i64 = 8;

/// One allocation in `RATE` is guarded, on average; 0: off.
static RATE: AtomicU64 = AtomicU64::new(0);

/// Whether guarding is on (`guard_rate` above 0).
#[inline]
pub fn is_on() -> bool {
    rate() != 0
}

/// `guard_rate` (0: off).
#[inline]
pub fn rate() -> u64 {
    RATE.load(Ordering::Relaxed)
}

/// A slot's state.
const EMPTY: u8 = 0;
const LIVE: u8 = 1;
const FREED: u8 = 2;
const BUSY: u8 = 3;

/// A stack kept for a report: frames (return addresses, innermost first) and the thread.
#[derive(Clone, Copy)]
pub struct Stack {
    /// The thread (kernel thread id).
    pub tid: u32,
    /// Frames used.
    pub len: u32,
    /// Return addresses, innermost first.
    pub frames: [usize; GUARD_FRAMES],
}

impl Stack {
    const EMPTY: Stack = Stack {
        tid: 0,
        len: 0,
        frames: [0; GUARD_FRAMES],
    };

    /// The calling thread's stack, from the caller of Tally's entry point on (when Tally is a
    /// library of its own; linked into the program, its frames stay).
    fn here() -> Stack {
        let mut frames = [0usize; MAX_FRAMES];
        let (first, n) = prof_hooks::capture_caller_stack(&mut frames);
        let mut stack = Stack {
            tid: thread_id(),
            len: 0,
            frames: [0; GUARD_FRAMES],
        };
        let kept = &frames[first..n];
        let len = kept.len().min(GUARD_FRAMES);
        stack.frames[..len].copy_from_slice(&kept[..len]);
        stack.len = len as u32;
        stack
    }

    /// The frames used.
    pub fn frames(&self) -> &[usize] {
        &self.frames[..(self.len as usize).min(GUARD_FRAMES)]
    }
}

std::thread_local! {
    /// The calling thread's kernel thread id and the fork generation it was read in (a thread
    /// of a child has the id of the thread that forked until it asks again).
    static TID: core::cell::Cell<(u32, u32)> = const { core::cell::Cell::new((0, 0)) };
}

/// Forks so far, in this process's line: a child's is its parent's plus one.
static GENERATION: core::sync::atomic::AtomicU32 = core::sync::atomic::AtomicU32::new(1);

/// The calling thread's kernel thread id, asked once per thread and fork (`gettid` is a system
/// call, and a guarded allocation and its free each need the id).
fn thread_id() -> u32 {
    let generation = GENERATION.load(Ordering::Relaxed);
    let (seen, tid) = TID.get();
    if seen == generation {
        return tid;
    }
    let tid = pal::process::tid();
    TID.set((generation, tid));
    tid
}

/// What a slot holds. See the module docs for who writes it.
struct SlotData {
    /// The block's address.
    block: usize,
    /// The size asked for.
    size: usize,
    /// What `malloc_usable_size` says: from the block to the end of its alignment slack.
    usable: usize,
    /// The profiler sampled it too (its free tells the profiler).
    sampled: bool,
    /// Where it was allocated.
    alloc: Stack,
    /// Where it was freed (while freed).
    free: Stack,
}

/// A slot of the region: its state and what it holds.
pub struct Slot {
    state: AtomicU8,
    data: UnsafeCell<SlotData>,
}

/// The queue of slots a guarded allocation may take: a ring of slot indices, empty slots first,
/// then freed ones in the order they were freed.
struct Queue {
    ring: *mut u32,
    head: usize,
    count: usize,
    cap: usize,
}

// SAFETY: the ring is a private mapping only reached under the queue's lock.
unsafe impl Send for Queue {}

impl Queue {
    fn pop(&mut self) -> Option<usize> {
        if self.count == 0 {
            return None;
        }
        // SAFETY: `head < cap`, the ring's length.
        let i = unsafe { *self.ring.add(self.head) } as usize;
        self.head = (self.head + 1) % self.cap;
        self.count -= 1;
        Some(i)
    }

    fn push(&mut self, i: usize) {
        debug_assert!(self.count < self.cap, "a slot is queued once at a time");
        // SAFETY: the index is below `cap`, the ring's length.
        unsafe { *self.ring.add((self.head + self.count) % self.cap) = i as u32 };
        self.count += 1;
    }
}

/// The region and its slots (see the module docs' invariants).
struct Pool {
    /// The region's first address (its first guard page); 0 until set.
    base: AtomicUsize,
    /// The region's length in bytes.
    len: AtomicUsize,
    /// The slot table (`len / STRIDE` slots).
    slots: AtomicUsize,
    queue: Mutex<Queue>,
    /// Guarded blocks placed so far: even ones go against the slot's end.
    placed: AtomicU64,
}

static POOL: Pool = Pool {
    base: AtomicUsize::new(0),
    len: AtomicUsize::new(0),
    slots: AtomicUsize::new(0),
    queue: Mutex::new(
        Rank::GuardSlots,
        Queue {
            ring: core::ptr::null_mut(),
            head: 0,
            count: 0,
            cap: 0,
        },
    ),
    placed: AtomicU64::new(0),
};

/// Guarded allocations and frees so far (statistics and tests).
pub static GUARDED_OUT: AtomicU64 = AtomicU64::new(0);
/// See [`GUARDED_OUT`].
pub static GUARDED_IN: AtomicU64 = AtomicU64::new(0);

/// The number of slots.
fn slot_count() -> usize {
    let len = POOL.len.load(Ordering::Relaxed);
    len.saturating_sub(PAGE) / STRIDE
}

/// Slot `i`. `i` must be below [`slot_count`].
fn slot(i: usize) -> &'static Slot {
    debug_assert!(i < slot_count());
    // SAFETY: the table has `slot_count()` slots, set before any pointer into the region (the
    // only way to an index) existed; it lives for the process.
    unsafe { &*(POOL.slots.load(Ordering::Acquire) as *const Slot).add(i) }
}

/// The first data page of slot `i`.
fn slot_start(i: usize) -> usize {
    POOL.base.load(Ordering::Relaxed) + PAGE + i * STRIDE
}

/// Where the guarded region is asked for: at 96 GiB, low in the address space with the sampled
/// region (`prof_hooks::SAMPLED_REGION_AT`), so that Rust's `dealloc` tells a guarded block by the
/// same mask test (`prof_hooks::SPECIAL_MASK`).
pub const POOL_AT: usize = 96 << 30;

/// The guarded region's first address and length, if guarding is on.
pub fn bounds() -> Option<(usize, usize)> {
    is_on().then(|| {
        (
            POOL.base.load(Ordering::Relaxed),
            POOL.len.load(Ordering::Relaxed),
        )
    })
}

/// Sets guarding up from the options (at initialization, before any guarded allocation):
/// reserves the region, maps the slot table and the queue, installs the fault handler, and
/// publishes the rate. Prints one line and leaves guarding off if the memory is refused.
pub fn configure(opts: &Options) {
    if opts.guard_rate == 0 || RATE.load(Ordering::Relaxed) != 0 {
        return;
    }
    let n = opts.guard_slots.max(1);
    let len = PAGE + n * STRIDE;
    let base = pal::reserve_near(POOL_AT, len);
    let table_bytes = (n * core::mem::size_of::<Slot>() + n * 4).next_multiple_of(PAGE);
    let table = pal::map(table_bytes);
    if base.is_null() || table.is_null() {
        pal::print(format_args!(
            "tally: guard_rate: cannot reserve {} KiB for {n} guarded slots: guarding is off\n",
            len / 1024
        ));
        return;
    }
    let ring = table.wrapping_add(n * core::mem::size_of::<Slot>()) as *mut u32;
    // SAFETY: fresh zeroed mappings of the right sizes: an all-zero Slot is an EMPTY slot
    // (state 0, plain integers, empty stacks); the ring has `n` entries after the table.
    unsafe {
        for i in 0..n {
            *ring.add(i) = i as u32;
        }
    }
    {
        let mut q = POOL.queue.lock();
        q.ring = ring;
        q.head = 0;
        q.count = n;
        q.cap = n;
    }
    POOL.slots.store(table as usize, Ordering::Release);
    POOL.len.store(len, Ordering::Release);
    POOL.base.store(base as usize, Ordering::Release);
    report::configure(opts.guard_report());
    if let Err(e) = pal::process::on_faults(report::on_fault) {
        pal::print(format_args!(
            "tally: guard_rate: cannot handle SIGSEGV: {}: guarding is off\n",
            pal::OsError(e)
        ));
        return;
    }
    RATE.store(opts.guard_rate, Ordering::Release);
}

/// Whether `addr` lies in the guarded region (its slots and guard pages).
#[inline]
pub fn contains(addr: usize) -> bool {
    addr.wrapping_sub(POOL.base.load(Ordering::Relaxed)) < POOL.len.load(Ordering::Relaxed)
}

/// Allocates a guarded block of `size` bytes aligned to `align` (a power of two) if a slot is
/// free and the request qualifies; null otherwise (the caller allocates normally). `sampled`:
/// the profiler chose this allocation too; the block is recorded in its live-block table.
pub fn alloc(size: usize, align: usize, sampled: bool) -> *mut u8 {
    if size > MAX_GUARDED || align > PAGE || !is_on() {
        return core::ptr::null_mut();
    }
    let Some(i) = POOL.queue.lock().pop() else {
        return core::ptr::null_mut();
    };
    let s = slot(i);
    s.state.store(BUSY, Ordering::Relaxed);
    let size1 = size.max(1);
    let align = align.max(if size1 <= 8 { 8 } else { 16 });
    let start = slot_start(i);
    let end = start + MAX_GUARDED;
    let at_end = POOL.placed.fetch_add(1, Ordering::Relaxed) % 2 == 0;
    let (block, usable) = if at_end {
        let block = (end - size1) & !(align - 1);
        (block, end - block)
    } else {
        (start, size1.next_multiple_of(align))
    };
    let first = block & !(PAGE - 1);
    let last = (block + usable).next_multiple_of(PAGE);
    // SAFETY: the pages lie in slot `i`'s data pages, in our reservation; the slot is ours.
    if !unsafe { pal::protect_rw(first as *mut u8, last - first) } {
        s.state.store(EMPTY, Ordering::Relaxed);
        POOL.queue.lock().push(i);
        return core::ptr::null_mut();
    }
    let stack = Stack::here();
    // SAFETY: the slot is ours (BUSY, taken from the queue).
    unsafe {
        let d = &mut *s.data.get();
        d.block = block;
        d.size = size;
        d.usable = usable;
        d.sampled = sampled;
        d.alloc = stack;
        d.free = Stack::EMPTY;
    }
    if sampled {
        tally_profiler::on_sampled_alloc(block, size, stack.frames());
    }
    GUARDED_OUT.fetch_add(1, Ordering::Relaxed);
    s.state.store(LIVE, Ordering::Release);
    block as *mut u8
}

/// The slot of the live guarded block `p`, handed to `who` (`free`, `realloc`,
/// `malloc_usable_size`); `p` lies in the region. A pointer that is not a live guarded block's
/// start is reported (`double-free` or `invalid-free`, with the stacks) and the process aborts.
pub fn live_slot(p: *mut u8, who: &str) -> usize {
    let addr = p as usize;
    let off = addr.wrapping_sub(POOL.base.load(Ordering::Relaxed) + PAGE);
    let i = off / STRIDE;
    if i < slot_count() {
        let s = slot(i);
        let state = s.state.load(Ordering::Acquire);
        // SAFETY: read after the Acquire load of the state; see the module docs.
        let block = unsafe { (*s.data.get()).block };
        if block == addr {
            if state == LIVE {
                return i;
            }
            if state == FREED {
                report::bad_free(report::Kind::DoubleFree, addr, Some(i), who);
            }
        }
    }
    report::bad_free(report::Kind::InvalidFree, addr, nearest_slot(addr), who)
}

/// The usable size of the live guarded block of slot `i`.
pub fn usable(i: usize) -> usize {
    // SAFETY: the slot is live (the caller holds its block).
    unsafe { (*slot(i).data.get()).usable }
}

/// Frees the live guarded block of slot `i` (found by [`live_slot`]), given up by `who`.
pub fn free(i: usize, who: &str) {
    let s = slot(i);
    if s.state
        .compare_exchange(LIVE, BUSY, Ordering::Acquire, Ordering::Relaxed)
        .is_err()
    {
        // Another thread freed it between `live_slot` and here.
        // SAFETY: a plain read of a slot we do not own, for the report only.
        let block = unsafe { (*s.data.get()).block };
        report::bad_free(report::Kind::DoubleFree, block, Some(i), who);
    }
    let stack = Stack::here();
    // SAFETY: the slot is ours (BUSY, moved from LIVE by us).
    let (block, usable, sampled) = unsafe {
        let d = &mut *s.data.get();
        d.free = stack;
        (d.block, d.usable, d.sampled)
    };
    if sampled {
        tally_profiler::on_sampled_free(block);
    }
    let first = block & !(PAGE - 1);
    let last = (block + usable).next_multiple_of(PAGE);
    // SAFETY: the block's pages in slot `i`, ours; its contents are dead.
    unsafe {
        pal::protect_none(first as *mut u8, last - first);
        pal::discard(first as *mut u8, last - first);
    }
    GUARDED_IN.fetch_add(1, Ordering::Relaxed);
    s.state.store(FREED, Ordering::Release);
    POOL.queue.lock().push(i);
}

/// The slot whose block is nearest to `addr` (in the region): the slot `addr` lies in, else the
/// nearer of the two around the guard page it lies in, preferring slots that held a block.
fn nearest_slot(addr: usize) -> Option<usize> {
    let n = slot_count();
    if n == 0 || !contains(addr) {
        return None;
    }
    let base = POOL.base.load(Ordering::Relaxed) + PAGE;
    let off = addr as isize - base as isize;
    let i = off.div_euclid(STRIDE as isize);
    let candidates = [i - 1, i, i + 1];
    let mut best: Option<(usize, usize)> = None;
    for c in candidates {
        if c < 0 || c as usize >= n {
            continue;
        }
        let c = c as usize;
        let s = slot(c);
        if s.state.load(Ordering::Acquire) == EMPTY {
            continue;
        }
        // SAFETY: a plain read for a report (module docs).
        let (block, usable) = unsafe { ((*s.data.get()).block, (*s.data.get()).usable) };
        let distance = if addr < block {
            block - addr
        } else {
            addr.saturating_sub(block + usable.max(1) - 1)
        };
        if best.map_or(true, |(_, d)| distance < d) {
            best = Some((c, distance));
        }
    }
    best.map(|(c, _)| c)
}

/// A thread's guard budget, in its thread block next to the byte countdown: allocations left
/// before the next guarded one and what it needs to count them. All zero is a valid start.
#[repr(C)]
#[derive(Default)]
pub struct ThreadGuard {
    /// Allocations to go, this one included, before the guarded one, as of the last count; 0:
    /// not drawn yet.
    left: i64,
    /// Bytes the thread may allocate before the allocations are counted again ([`Self::far`]);
    /// 0 near the guarded allocation (every event counts).
    bytes: i64,
    /// Bytes allocated since the last count (saturating).
    spent: u32,
    /// The thread cache's allocation count at the last count (its low 32 bits: counts are at
    /// most `far` bytes apart, far fewer allocations than 2^32 at any rate that guards at all).
    seen: u32,
    /// Bytes an allocation of this thread takes, on average (0: not measured yet).
    mean: u32,
    /// The random state of the draws (xorshift32; 32 fields' worth of bytes is all the thread
    /// block has left).
    rng: u32,
}

impl ThreadGuard {
    /// Settles an event after `spent` bytes: returns whether the allocation being made now is to
    /// be guarded. Far from the guarded allocation that is only a subtraction; once the bytes
    /// the allocations it waits for take on average are spent, the allocations are counted
    /// (`count`: the thread cache's allocation count now, read only then: summing the bins at
    /// every event cost 1% of `size_churn`'s instructions). `small`: this allocation will be
    /// counted in it (a small class served by the cache). `rate` is [`rate`] (a parameter for
    /// the tests).
    #[inline(always)]
    pub fn settle(
        &mut self,
        rate: u64,
        spent: i64,
        small: bool,
        count: impl FnOnce() -> u64,
        seed: impl FnOnce() -> u64,
    ) -> bool {
        if rate == 0 {
            return false;
        }
        self.spent = self.spent.saturating_add(spent.clamp(0, u32::MAX as i64) as u32);
        self.bytes -= spent;
        if self.bytes > 0 && self.left != 0 {
            return false;
        }
        self.count(rate, small, count(), seed)
    }

    /// [`Self::settle`] once the allocations are to be counted: `count` is the thread cache's
    /// allocation count now. Out of line, so that the far path inlined into the event is a few
    /// instructions (with it inline, an event cost 50 more).
    #[cold]
    #[inline(never)]
    fn count(&mut self, rate: u64, small: bool, count: u64, seed: impl FnOnce() -> u64) -> bool {
        let count = count as u32;
        // The wrapped difference, 0 if the count went back (a block the last count expected
        // was served by a guarded or sampled block instead).
        let done = match count.wrapping_sub(self.seen) {
            d if d > u32::MAX / 2 => 0,
            d => d,
        };
        self.seen = count.wrapping_add(small as u32);
        if self.rng == 0 {
            self.rng = seed() as u32 | 1;
        }
        if self.left == 0 {
            self.left = self.draw(rate);
        }
        if done > 0 && self.left > EXACT {
            // Bytes per allocation, smoothed over counts (the countdown's distance to the
            // guarded allocation is measured in bytes).
            let now = (self.spent.max(1) / done).clamp(8, 1 << 20);
            self.mean = if self.mean == 0 {
                now
            } else {
                (7 * self.mean + now) / 8
            };
        }
        self.spent = 0;
        self.left -= done as i64;
        let guard = self.left <= 1;
        if guard {
            self.left = self.draw(rate);
        } else {
            self.left -= 1;
        }
        self.bytes = self.far();
        guard
    }

    /// About as many bytes as the allocations still to go take, less [`EXACT`] of them; 0 (every
    /// allocation an event) for those.
    fn far(&self) -> i64 {
        if self.left <= EXACT {
            return 0;
        }
        let mean = if self.mean == 0 { 64 } else { self.mean as u64 };
        ((self.left - EXACT) as u64).saturating_mul(mean).min(1 << 40) as i64
    }

    /// The bytes the countdown may run before this budget needs an event; `i64::MAX` when
    /// guarding is off (`rate` 0).
    pub fn bytes_left(&self, rate: u64) -> i64 {
        if rate == 0 {
            return i64::MAX;
        }
        self.bytes.max(0)
    }

    /// A draw of the allocations to the next guarded one: geometric with mean `rate`, at least 1.
    fn draw(&mut self, rate: u64) -> i64 {
        if rate <= 1 {
            return 1;
        }
        // xorshift32
        let mut x = self.rng;
        x ^= x << 13;
        x ^= x >> 17;
        x ^= x << 5;
        self.rng = x;
        // −ln U for U = (x + 1)/2^32, uniform in (0, 1]: the sampler's draw, at 53 bits.
        let n = tally_profiler::neg_ln_unit(((x as u64 + 1) << 21) - 1) * rate as f64;
        (n as i64).clamp(1, 1 << 50)
    }
}

/// The fork handlers' part: the queue's lock, taken last.
pub fn lock_for_fork() {
    POOL.queue.lock_for_fork();
}

/// # Safety
/// The prepare handler must have taken the lock in this thread.
pub unsafe fn unlock_after_fork(child: bool) {
    if child {
        GENERATION.fetch_add(1, Ordering::Relaxed);
    }
    // SAFETY: per the contract.
    unsafe { POOL.queue.unlock_after_fork(child) };
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Allocations as a thread makes them: `between` counted ones with no event, then one that
    /// runs the countdown out (an event), counted unless guarded; 64 bytes each, and other
    /// budgets' events every `between_far` allocations at most. Returns how many were guarded.
    fn simulate(g: &mut ThreadGuard, rate: u64, rounds: u64, between_far: u64) -> u64 {
        let (mut count, mut guarded, mut made) = (0u64, 0u64, 0u64);
        while made < rounds {
            let between = (g.bytes_left(rate) as u64 / 64).min(between_far);
            count += between;
            made += between + 1;
            if g.settle(rate, 64 * (between as i64 + 1), true, || count, || 7) {
                guarded += 1;
            } else {
                count += 1;
            }
        }
        guarded
    }

    #[test]
    fn the_budget_counts_allocations_and_guards_one_in_rate() {
        for between in [0, 5, 300, u64::MAX] {
            let mut g = ThreadGuard::default();
            let rounds = 2_000_000;
            let guarded = simulate(&mut g, 1000, rounds, between);
            let mean = rounds as f64 / guarded as f64;
            assert!(
                (900.0..1100.0).contains(&mean),
                "one in {mean:.0} guarded, 1000 asked ({between} between events)"
            );
        }
    }

    #[test]
    fn rate_one_guards_every_allocation_and_arms_at_zero() {
        let mut g = ThreadGuard::default();
        for n in 0..100 {
            assert!(g.settle(1, 16, false, || n, || 3), "allocation {n}");
            assert_eq!(g.bytes_left(1), 0);
        }
        assert!(!g.settle(0, 16, false, || 1000, || 3));
        assert_eq!(g.bytes_left(0), i64::MAX);
    }

    #[test]
    fn far_from_the_guarded_allocation_the_countdown_runs_in_bytes() {
        let mut g = ThreadGuard::default();
        let rate = 1 << 20;
        g.settle(rate, 0, false, || 0, || 11);
        // Far away, the allocations are not counted: the bytes count down.
        let first = g.bytes_left(rate);
        assert!(!g.settle(rate, 4800, false, || panic!("counted while far"), || 11));
        assert_eq!(g.bytes_left(rate), first - 4800);
        // Once the bytes are spent they are: 100 allocations of 48 bytes since.
        g.bytes = 1;
        g.spent = 0;
        g.settle(rate, 4800, false, || 100, || 11);
        let left = g.bytes_left(rate);
        assert!(left > 48 * 1000, "{left}");
        assert!(left < 48 * g.left, "{left} for {} allocations", g.left);
        // Near it, every allocation is an event.
        g.left = EXACT;
        assert_eq!(g.far(), 0);
    }

    #[test]
    fn the_queue_hands_out_empty_slots_then_the_oldest_freed() {
        let mut ring = [0u32; 4];
        let mut q = Queue {
            ring: ring.as_mut_ptr(),
            head: 0,
            count: 0,
            cap: 4,
        };
        for i in 0..4 {
            q.push(i);
        }
        assert_eq!((q.pop(), q.pop(), q.pop()), (Some(0), Some(1), Some(2)));
        q.push(1);
        q.push(0);
        assert_eq!(
            (q.pop(), q.pop(), q.pop(), q.pop()),
            (Some(3), Some(1), Some(0), None)
        );
    }
}
