//! Thread caches: each thread's private stacks of free small blocks, one per class.
//!
//! `malloc` of a small size pops from its class's stack and `free` pushes onto it: no lock, no
//! atomic; the only touch of the block's memory is its first word, the free mark (`freed.rs`),
//! which `free` checks and writes and `malloc` clears. An empty stack is refilled from the
//! thread's arena in one locked batch (growing up to 8 KiB of blocks, [`FILL_BYTES`]; for the
//! large classes up to 32 KiB one block from the page heap at first, then two; stacked so that
//! `malloc` hands the batch out lowest address first, as glibc and mimalloc do; the thread takes
//! its arena at its first refill, [`claim`], so a thread that only frees has none, and a bin it
//! never allocated from gathers what it frees only up to [`outbox_limit`]); a full one gives
//! its older half back in batches grouped by owning arena, one lock a batch (blocks freed by a
//! thread other than the one that allocated them go back to their own arena this way, never
//! through a global lock), or, in a thread that allocates the class too, grows its limit toward
//! its room ([`make_room`]).
//! Large blocks above the bins' classes have a cache of their own (`bigcache.rs`).
//!
//! The stacks are arrays of pointers kept in the cache itself, not lists threaded through the
//! free blocks, so a use-after-free write cannot corrupt the allocator.
//!
//! The part the fast paths touch, the [`ThreadBins`] (per class a top pointer, empty and full
//! marks, a capacity and the slot array), lives in the thread's block of static TLS; the slot
//! arrays live in a [`TCache`] from the metadata pool (every bin's usual limit side by side, and
//! after them the room a bin moves to while a burst makes it grow, [`PACKED_AT`]). The thread
//! block starts zeroed, and zero capacity everywhere means a thread that has no cache yet simply
//! misses on every operation: "not initialized" is not a branch.
//!
//! Invariant per bin: `count <= cap`, and `slots[0..count]` are distinct free blocks of the
//! bin's class that no thread but this one can reach; `cache` null implies `cap == 0` in every bin
//! (with a cache, only classes above `tcache_max` have `cap == 0`).

use core::cell::Cell;
use core::ptr;

use crate::arena::{self, Arena};
use crate::bigcache::{self, BigCache};
use crate::chunk::ChunkHeader;
use crate::list::{Adapter, Links, List};
use crate::pagemap::ChunkSeen;
use crate::size_class::{size_compute, SizeClass, CLASS_STRIDE, NCACHED, NSMALL};
use crate::{freed, meta, pagemap};
use core::sync::atomic::{AtomicPtr, AtomicU32, AtomicU64, AtomicUsize, Ordering};
use tally_pal as pal;
use tally_pal::sync::{Mutex, Rank};

/// Per-class cache capacity: for small classes 32 KiB worth of blocks, at least 16 and at most
/// 128; for the cached large classes (16-32 KiB) 256 KiB worth, at least 4. It was 256 KiB worth
/// for small classes too: a producer allocating messages of many sizes from 513 B to 4 KiB
/// refilled each bin up to half of that, 128 KiB of written blocks per class waiting for their
/// turn; the suite's `prodcons_many` peaked at 8.5 MiB, then 6.3 with 64 KiB worth, no slower
/// (docs/benchmarks.md). From 64 KiB worth to 32 (classes above 256 B hold half as many blocks;
/// a burst still grows a bin into its room, [`make_room`]): median peak RSS of `size_churn`
/// over 11 runs 2112 → 2072 KiB, `larson` and `prodcons_many` unchanged, `generations` and
/// `fragmentation` 0.4-1.3 MiB less (3 runs), callgrind's instruction counts of the suite's
/// small-block workloads within 0.1% (docs/benchmarks.md, eleventh pass).
/// A thread's cache holds at most [`full_cache_bytes`] (checked below).
const fn cap_compute(index: usize) -> usize {
    let size = size_compute(index);
    let by_bytes = if index < NSMALL { 32 * 1024 } else { 256 * 1024 } / size;
    let (min, max) = if index < NSMALL { (16, 128) } else { (4, 16) };
    if by_bytes < min {
        min
    } else if by_bytes > max {
        max
    } else {
        by_bytes
    }
}

const fn build_caps() -> [u32; NCACHED] {
    let mut caps = [0u32; NCACHED];
    let mut i = 0;
    while i < NCACHED {
        caps[i] = cap_compute(i) as u32;
        i += 1;
    }
    caps
}

/// A bin's usual limit (see [`cap_compute`]): the slots it has in the packed part of its cache's
/// storage, where it starts. One that grows past it moves to its [`ROOM`] ([`make_room`]).
const CAPS: [u32; NCACHED] = build_caps();
crate::hot::hot_data! {
    /// [`CAPS`], where the program reads it.
    fn caps() -> &'static [u32; NCACHED] = CAPS;
}

/// Slots a grown bin has (its room, [`GROWN_AT`]): for small classes its usual limit, 32 KiB
/// of blocks more and a refill's batch ([`FILL_MAX`]) more (at most 1024 slots), so that a
/// thread whose bursts of frees outgrow the limit can grow it ([`make_room`]: 64 blocks of 1 KiB
/// freed at once, a `Vec` of 1000 short `String`s dropped); the usual limit for large classes.
/// The refill's batch: the last refill of a burst of allocations leaves up to a batch less one
/// in the bin, and a burst as large as the room without it then overflowed it every time. 64
/// blocks of 1 KiB allocated and freed in a loop (Criterion's `batch64/1024`) grew the bin to 64
/// slots and still sent 32 blocks home and took them back in four refills every burst: 632 ns a
/// burst, 270 with the batch's room (docs/benchmarks.md, thirty-eighth pass). The growth costs the suite's small programs 0.2-0.4 MiB
/// of peak RSS (`larson`, `prodcons`, `false_sharing`, `size_churn`; twice the usual limit as
/// the room cost the same): their random walks touch empty and full by chance too.
const fn room_compute(index: usize, cap: u32) -> u32 {
    if index >= NSMALL {
        return cap;
    }
    let room = cap + (32 * 1024 / size_compute(index)) as u32 + FILL_MAX[index] as u32;
    if room > MAX_ROOM as u32 {
        MAX_ROOM as u32
    } else {
        room
    }
}

/// The most slots any bin has.
const MAX_ROOM: usize = 1024;

const fn build_room() -> [u32; NCACHED] {
    let mut room = [0u32; NCACHED];
    let mut i = 0;
    while i < NCACHED {
        room[i] = room_compute(i, CAPS[i]);
        i += 1;
    }
    room
}

/// The most slots a bin has (its capacity once grown): at least its usual limit [`CAPS`].
const ROOM: [u32; NCACHED] = build_room();
crate::hot::hot_data! {
    /// [`ROOM`], where the program reads it.
    fn room() -> &'static [u32; NCACHED] = ROOM;
}

/// Where each bin's slots start in its cache's storage: `(packed, grown)`. The usual limits of
/// all bins come first, side by side ([`CAPS`]); then, for each bin that can grow, its whole
/// [`ROOM`]. A bin lives in its packed slots and moves to its room only while a burst makes it
/// grow ([`make_room`]), and back when garbage collection takes its limit down ([`gc_step`]).
/// With every bin's room inline, each bin of a class up to 512 bytes had a page of slots to
/// itself (room for 32 KiB of blocks more): a thread using twenty classes touched 64 KiB of
/// slots where its usual limits fill 20 KiB, and a program with four threads paid that four
/// times (the suite's `size_churn`: 64 KiB of the cache resident, 32 packed).
const fn build_layout() -> ([u32; NCACHED], [u32; NCACHED], usize) {
    let (mut packed, mut grown) = ([0u32; NCACHED], [0u32; NCACHED]);
    let mut at = 0;
    let mut i = 0;
    while i < NCACHED {
        packed[i] = at;
        at += CAPS[i];
        i += 1;
    }
    i = 0;
    while i < NCACHED {
        grown[i] = at;
        if ROOM[i] > CAPS[i] {
            at += ROOM[i];
        }
        i += 1;
    }
    (packed, grown, at as usize)
}

const PACKED_AT: [u32; NCACHED] = build_layout().0;
const GROWN_AT: [u32; NCACHED] = build_layout().1;
crate::hot::hot_data! {
    /// [`PACKED_AT`], where the program reads it.
    fn packed_at() -> &'static [u32; NCACHED] = PACKED_AT;
}
crate::hot::hot_data! {
    /// [`GROWN_AT`], where the program reads it.
    fn grown_at() -> &'static [u32; NCACHED] = GROWN_AT;
}
/// Bytes of blocks a bin that only receives holds before they go home (see [`receive_limit`]).
const RECEIVE_BYTES: usize = 4 * 1024;

/// The limit of a bin the thread frees into but does not allocate from: 4 KiB of blocks, at
/// least 2, at most the capacity. A free that finds a bin full for the [`QUIET_FULLS`]th time in
/// a row with nothing taken from it in between sends all of it home and lowers its full mark to
/// this ([`make_room`]); the next refill, when the thread allocates the class again, raises it
/// back to the capacity.
/// Without it a thread that frees what another allocates from the same arena (a consumer)
/// keeps a full bin of every class it receives, blocks only the producer uses (the suite's
/// `prodcons_many` with two arenas: 10.8 MiB peak RSS). It was 16 KiB, at least 8: the suite's
/// `thread_churn`, whose main thread frees a quarter of every worker's blocks after it exits,
/// ended with 676 KiB of them in its bins (8 blocks of 8 KiB in one), each keeping a slab of the
/// workers' arenas alive; at 4 KiB its peak RSS is 6.0-6.3 MiB instead of 6.4-6.9 (5 interleaved
/// runs), the consumers of `prodcons` and `prodcons_many` within their spreads
/// (docs/benchmarks.md, seventeenth pass).
pub fn receive_limit(class: SizeClass) -> u16 {
    receive_limits()[class.index()]
}

/// Per class, the blocks that fit in `bytes`, at most its usual limit; `short` where fewer than
/// 2 fit.
const fn limits_by_bytes(bytes: usize, short: u16) -> [u16; NCACHED] {
    let mut t = [0u16; NCACHED];
    let mut i = 0;
    while i < NCACHED {
        let by_bytes = bytes / size_compute(i);
        let limit = if by_bytes < CAPS[i] as usize {
            by_bytes
        } else {
            CAPS[i] as usize
        };
        t[i] = if limit < 2 { short } else { limit as u16 };
        i += 1;
    }
    t
}

// At least 2 blocks (every usual limit is at least 2, asserted below).
const RECEIVE_LIMITS: [u16; NCACHED] = limits_by_bytes(RECEIVE_BYTES, 2);
crate::hot::hot_data! {
    /// [`RECEIVE_LIMITS`], where the program reads it.
    fn receive_limits() -> &'static [u16; NCACHED] = RECEIVE_LIMITS;
}

/// Bytes of other threads' blocks a bin the thread never allocated from gathers before they go
/// home together (see [`outbox_limit`]).
const OUTBOX_BYTES: usize = 1024;

/// The limit of a bin the thread never allocated from, while it gathers the blocks of other
/// threads it frees (a consumer's, `free::free_foreign`): 1 KiB of blocks, at most
/// [`receive_limit`]; 0 for classes above 512 bytes, of which fewer than 2 would fit: those go
/// home one at a time. With 4 KiB of every class (the receive limit), the two consumers of the
/// suite's `prodcons_many` held about 28 classes × 4 KiB each, and its peak RSS rose by 240 KiB
/// (median of 16 interleaved runs: 5.37 MiB, 5.13 before, mimalloc's 5.0); at 1 KiB, 4.98, as
/// fast (0.32 s against 0.39 with every block home alone).
pub fn outbox_limit(class: SizeClass) -> u16 {
    outbox_limits()[class.index()]
}

// At most the receive limit, as it gathers less.
const _: () = assert!(OUTBOX_BYTES <= RECEIVE_BYTES);
const OUTBOX_LIMITS: [u16; NCACHED] = limits_by_bytes(OUTBOX_BYTES, 0);
crate::hot::hot_data! {
    /// [`OUTBOX_LIMITS`], where the program reads it.
    fn outbox_limits() -> &'static [u16; NCACHED] = OUTBOX_LIMITS;
}

/// Times in a row a free finds a bin full with nothing taken from it in between before the
/// bin counts as one that only receives. Three, not two: a burst of frees one and a half times
/// the capacity (64 blocks of 1 KiB freed together, then allocated again) fills a bin twice.
const QUIET_FULLS: u16 = 3;
/// [`ThreadBins::full_seen`]: the low 12 bits of `nmalloc`, the streak above them.
const FULL_SEEN_BITS: u32 = 12;
const FULL_SEEN_MASK: u16 = (1 << FULL_SEEN_BITS) - 1;

/// Makes room in a bin a free found full (the thread's own, with a cache): the older half goes
/// home, or, the [`QUIET_FULLS`]th time in a row it is full with nothing taken from it in
/// between, all of it, and its limit drops to [`receive_limit`]. A bin refilled since garbage
/// collection last looked at it (`missed`) belongs to a thread that allocates the class: it
/// never counts as only receiving. If, besides, fewer blocks were taken from it since that
/// refill than it holds, it grows its limit instead of flushing, by half its usual limit up to
/// its capacity ([`ROOM`]): the thread allocates and frees in bursts larger than the bin. (A
/// bin that fills by a random walk of allocations and frees takes about its limit squared on
/// the way; growing it only holds memory.) 64 blocks of 1 KiB allocated, then freed, where the
/// bin holds 64, cost a refill and a flush of 32 every burst (Criterion's `batch64/1024` 1.5 µs, 0.6 with the
/// growth); a `Vec` of 1000 short `String`s dropped at once filled the bin three times in a row
/// and sent it into the receiving state (`vec_string` 19 µs, 11 with the growth). Garbage
/// collection takes the limit back down when the bin goes idle ([`gc_step`]); tcmalloc's
/// thread caches grow their lists the same way.
///
/// # Safety
/// `tb` must be the calling thread's bins, with a cache; bin `class` must be full.
pub unsafe fn make_room(tb: *mut ThreadBins, class: SizeClass) {
    // SAFETY: per the contract the bins are ours; no reference to a bin is held across `flush`.
    unsafe {
        let i = class.index();
        let nmalloc = (*tb).bins[i].nmalloc.load(Ordering::Relaxed);
        let seen = nmalloc as u16 & FULL_SEEN_MASK;
        let last = (*tb).full_seen[i];
        // A bin refilled since garbage collection last looked at it belongs to a thread that
        // allocates the class: a long burst of frees fills it again and again, but it does not
        // only receive.
        let refilled = (*tb).missed & 1 << i != 0;
        // Full with fewer blocks taken since the last refill than it holds: the thread
        // allocated past the bin and is now freeing it all back (a burst). A bin that a thread
        // fills by a random walk of allocations and frees, as a server's mix of sizes does,
        // took many more on the way, and flushes as usual instead of growing.
        let taken = (nmalloc as u16).wrapping_sub((*(*tb).cache).refill_seen[i]) as u32;
        let limit = (*tb).bins[i].limit();
        let burst = refilled && taken < limit;
        let streak = if refilled {
            0
        } else if last & FULL_SEEN_MASK == seen {
            (last >> FULL_SEEN_BITS).saturating_add(1).min(QUIET_FULLS)
        } else {
            1
        };
        (*tb).full_seen[i] = streak << FULL_SEEN_BITS | seen;
        if streak >= QUIET_FULLS {
            flush(tb, class, 0);
            // (Never above what it was: a consumer's bin gathers less, [`outbox_limit`].)
            let limit = (*tb).bins[i].limit();
            (*tb).bins[i].set_limit(receive_limit(class).min(limit as u16));
            unpack_if_small(tb, i);
        } else if burst && limit < room()[i] {
            if ((*tb).bins[i].cap() as u32) < room()[i] {
                // Into its room, which no other bin uses and its packed slots are not part of.
                (*tb).bins[i].move_slots(grown_slots((*tb).cache, i), room()[i] as u16);
            }
            (*tb).bins[i].set_limit((limit + caps()[i] / 2).min(room()[i]) as u16);
        } else {
            flush(tb, class, (*tb).bins[i].count() as usize / 2);
        }
    }
}

/// Bytes of blocks a refill brings at most (but always 2 blocks, and never more than half the
/// bin's usual limit): a refill's batch doubles from [`first_fill`] each time the bin runs dry,
/// up to [`FILL_MAX`]. It was half the usual limit for every class, 32 KiB of blocks for the
/// classes from 512 B up: a thread allocating many sizes of those (the suite's `prodcons_many`
/// producers: 1 in 8 messages of 513 B-4 KiB, 20 classes) held a refill's worth of each, half of
/// it on average, while the consumers freed the blocks back to the slabs beside them. At 8 KiB,
/// `prodcons_many` peaks at 4.9-5.3 MiB instead of 5.9-6.1 (16 KiB: 5.9-6.0), `prodcons` at 3.4
/// instead of 3.6, with the fast paths' instructions unchanged (docs/benchmarks.md, ninth
/// pass). Classes up to 128 B keep their batches (8 KiB is 64 of them, half their limit).
const FILL_BYTES: usize = 8 * 1024;

const fn fill_max_compute(index: usize) -> u16 {
    let by_bytes = FILL_BYTES / size_compute(index);
    let most = if by_bytes < 2 { 2 } else { by_bytes };
    // At least 1: every usual limit is at least 2 (checked below).
    let half = CAPS[index] as usize / 2;
    (if most < half { most } else { half }) as u16
}

const fn build_fill_max() -> [u16; NCACHED] {
    let mut t = [0u16; NCACHED];
    let mut i = 0;
    while i < NCACHED {
        t[i] = fill_max_compute(i);
        i += 1;
    }
    t
}

/// The largest batch a bin's refill brings (see [`FILL_BYTES`]).
const FILL_MAX: [u16; NCACHED] = build_fill_max();
crate::hot::hot_data! {
    /// [`FILL_MAX`], where the program reads it.
    fn fill_max() -> &'static [u16; NCACHED] = FILL_MAX;
}

/// Blocks a bin's first refill asks for: four, fewer where four would pass 16 KiB (a class a
/// thread uses once then costs it one or two blocks, not a slab's worth), and never more than
/// [`FILL_MAX`]. Run once per bin when a thread's cache is made.
fn first_fill(index: usize) -> u16 {
    let by_bytes = 16 * 1024 / size_compute(index);
    let first = if by_bytes >= 4 {
        4
    } else if by_bytes == 0 {
        1
    } else {
        by_bytes as u16
    };
    first.min(fill_max()[index])
}
const TOTAL_SLOTS: usize = build_layout().2;

/// One class's stack of cached blocks: `slots[0..count]`, the top at `slots[count - 1]`.
///
/// The fast paths see the stack by its `top` pointer (`slots + count`, the next free slot) and
/// two 16-bit marks: `top`'s low 16 bits equal `empty`'s when the stack is empty and `full`'s
/// when it is full. A bin's slots span less than 64 KiB, so no other slot of it shares either
/// mark; a push is a load, a compare, a store of the block and a store of `top` (a pop the
/// same), with no count to scale and no capacity to widen. The full mark sits at the bin's
/// limit: its capacity, or less while the bin only receives ([`receive_limit`]).
///
/// `top` and `nmalloc` are atomics only so that a statistics reader on another thread may
/// read them; the owner uses plain relaxed loads and stores (no read-modify-write).
///
/// Invariant: `slots <= top <= slots + limit`, `limit <= cap`; `empty` and `full` are the low
/// 16 bits of `slots` and of `slots + limit` (so a bin of capacity 0 is both empty and full).
#[repr(C)]
pub struct TBin {
    /// `slots + count`.
    top: AtomicUsize,
    /// Low 16 bits of `slots`.
    empty: u16,
    /// Low 16 bits of `slots + limit`.
    full: u16,
    /// Capacity (0 while the thread has no cache, and for classes above `tcache_max`).
    cap: u16,
    /// Blocks the next refill asks for: starts small and doubles with each refill up to half
    /// the capacity, so a class a thread uses once costs it a few blocks, not a full bin.
    pub fill: u16,
    /// The bin's slot array (null without a cache): its packed slots or, grown, its room. An
    /// atomic only so that a statistics reader on another thread may read it while the owner
    /// moves the bin.
    slots: AtomicPtr<*mut u8>,
    /// Allocations of this class served through this bin (a statistic).
    pub nmalloc: AtomicU64,
}

const _: () = assert!(
    core::mem::size_of::<TBin>() == CLASS_STRIDE,
    "bins are found by a class's offset"
);
const _: () = assert!(
    (u16::MAX as usize + 1) / core::mem::size_of::<*mut u8>() > 1024,
    "a bin's slots span less than 64 KiB, so its marks are unique"
);

impl TBin {
    /// Cached blocks.
    #[inline(always)]
    pub fn count(&self) -> u32 {
        ((self.top.load(Ordering::Relaxed) - self.slots() as usize) / core::mem::size_of::<*mut u8>()) as u32
    }

    /// Cached blocks as another thread sees them: at most the largest room, whatever it read
    /// while the owner moved the bin (a statistic).
    fn count_seen(&self) -> u64 {
        let bytes = self
            .top
            .load(Ordering::Relaxed)
            .wrapping_sub(self.slots() as usize);
        (bytes / core::mem::size_of::<*mut u8>()).min(MAX_ROOM) as u64
    }

    /// Sets the number of cached blocks (owner only; `n <= cap`).
    #[inline(always)]
    pub fn set_count(&self, n: u32) {
        debug_assert!(n <= self.cap as u32);
        self.top
            .store(self.slots().wrapping_add(n as usize) as usize, Ordering::Relaxed);
    }

    /// Capacity.
    #[inline(always)]
    pub fn cap(&self) -> u16 {
        self.cap
    }

    /// Blocks the bin takes before a free finds it full: its capacity, or less while it only
    /// receives.
    #[inline(always)]
    pub fn limit(&self) -> u32 {
        self.full.wrapping_sub(self.empty) as u32 / core::mem::size_of::<*mut u8>() as u32
    }

    /// Moves the full mark to `limit` blocks (at most the capacity, at least the count).
    pub fn set_limit(&mut self, limit: u16) {
        debug_assert!(limit <= self.cap && limit as u32 >= self.count());
        self.full = self
            .empty
            .wrapping_add(limit.wrapping_mul(core::mem::size_of::<*mut u8>() as u16));
    }

    /// The slot array: `slots()[0..count]` are the cached blocks.
    #[inline(always)]
    pub fn slots(&self) -> *mut *mut u8 {
        self.slots.load(Ordering::Relaxed)
    }

    /// Gives the bin `cap` slots at `slots` (null and 0 to take them away), empty.
    fn set_slots(&mut self, slots: *mut *mut u8, cap: u16) {
        debug_assert!(cap as usize * core::mem::size_of::<*mut u8>() <= u16::MAX as usize);
        self.slots.store(slots, Ordering::Relaxed);
        self.cap = cap;
        self.empty = slots as usize as u16;
        self.full = slots.wrapping_add(cap as usize) as usize as u16;
        self.top.store(slots as usize, Ordering::Relaxed);
    }

    /// Moves the bin's blocks and marks to `cap` slots at `to` (owner only), keeping its count
    /// and limit (both at most `cap`).
    ///
    /// # Safety
    /// `to` must be `cap` slots of this bin's that no other bin uses and that do not overlap
    /// its current ones.
    unsafe fn move_slots(&mut self, to: *mut *mut u8, cap: u16) {
        let (count, limit) = (self.count(), self.limit());
        debug_assert!(count <= limit && limit <= cap as u32);
        // SAFETY: per the contract `to` has room for the `count` blocks, apart from the slots
        // they are in now.
        unsafe { ptr::copy_nonoverlapping(self.slots(), to, count as usize) };
        self.set_slots(to, cap);
        self.set_limit(limit as u16);
        self.set_count(count);
    }

    /// Pushes `p` if the bin has room (owner only). The free fast path.
    #[inline(always)]
    pub fn try_push(&self, p: *mut u8) -> bool {
        let top = self.top.load(Ordering::Relaxed);
        if top as u16 == self.full {
            return false;
        }
        // SAFETY: `top` is below `slots + cap` (it is not at the full mark, and the invariant
        // keeps it at or below it), so it is a slot of this bin.
        unsafe { *(top as *mut *mut u8) = p };
        self.top
            .store(top + core::mem::size_of::<*mut u8>(), Ordering::Relaxed);
        true
    }

    /// Pops the top block if `go` and the bin is not empty (owner only). The malloc fast path;
    /// `go` is the caller's other condition, tested with the same branch.
    #[inline(always)]
    pub fn pop_if(&self, go: bool) -> Option<*mut u8> {
        let top = self.top.load(Ordering::Relaxed);
        if (top as u16 == self.empty) | !go {
            return None;
        }
        let top = top - core::mem::size_of::<*mut u8>();
        self.top.store(top, Ordering::Relaxed);
        self.count_malloc();
        // SAFETY: the bin was not empty, so `top` is now `slots[count - 1]`, a cached block.
        Some(unsafe { *(top as *const *mut u8) })
    }

    /// Counts one allocation (owner only).
    #[inline(always)]
    pub fn count_malloc(&self) {
        self.nmalloc
            .store(self.nmalloc.load(Ordering::Relaxed) + 1, Ordering::Relaxed);
    }
}

/// A thread's bins, in its thread block. See the module docs for the invariant.
#[repr(C)]
pub struct ThreadBins {
    /// Stacks by cached class (first, so that a bin's address is the thread block's plus the
    /// class times 32, which the fast paths fold into their loads and stores).
    pub bins: [TBin; NCACHED],
    /// Index of the cache's arena (meaningless without a cache): `free` tells this thread's
    /// blocks from other threads' by it. [`NO_ARENA`] until the thread first allocates
    /// ([`TCache::arena`] null), so that every block it frees before then is another thread's.
    pub arena: u32,
    /// The profiler's flags for this thread (`prof_hooks` owns them: whether the thread is
    /// inside the profiler, whether a sampled block is being resized), in what was padding: a
    /// `thread_local!` of a shared library costs a call to `__tls_get_addr`, and a sample made
    /// two (`size_churn` at `lg_prof_sample:14`: 1688 instructions a sample with them, 1677
    /// without).
    pub prof_flags: u8,
    /// The page map's tag of `arena`'s chunks (`pagemap::chunk_tag`), 0 (no chunk's) while
    /// the thread has no arena: `free` compares it with the byte the page map holds for a
    /// pointer's chunk, and so knows the block is the thread's without the chunk's header.
    pub arena_tag: u8,
    /// The cache holding the slot arrays and the arena, or null while the thread has none.
    pub cache: *mut TCache,
    /// The chunks `free` last found in the page map, one of `arena` and one of another arena,
    /// and the free mark's key (in the cache line of `arena_tag`, which `free` reads when the
    /// chunk is neither). Forgotten whenever `arena` changes.
    pub seen: ChunkSeen,
    /// Bit `i`: bin `i` was refilled from its arena since garbage collection last looked at it
    /// (which then leaves it alone), and so belongs to a thread that allocates the class
    /// ([`make_room`]).
    pub missed: u64,
    /// The bin garbage collection looks at next. Invariant: below [`NCACHED`].
    pub gc_next: u32,
    /// Per bin, the low 12 bits of its `nmalloc` when a free last found it full (the same value
    /// at the next full bin means the thread took nothing from it meanwhile) and, above them,
    /// how many times in a row that was so ([`make_room`]).
    pub full_seen: [u16; NCACHED],
}

const _: () = assert!(core::mem::size_of::<ThreadBins>() <= pal::thread::THREAD_BLOCK_BYTES);
const _: () = assert!(
    core::mem::offset_of!(ThreadBins, prof_flags) < core::mem::offset_of!(ThreadBins, cache)
        && core::mem::offset_of!(ThreadBins, cache) == core::mem::offset_of!(ThreadBins, arena) + 8,
    "the profiler's flags sit in the padding before `cache`: the thread block has no other room"
);
const _: () = assert!(NCACHED <= u64::BITS as usize, "one `missed` bit per cached class");
const _: () = assert!(
    core::mem::offset_of!(ThreadBins, seen) + core::mem::size_of::<ChunkSeen>()
        <= core::mem::offset_of!(ThreadBins, arena_tag) / 64 * 64 + 64,
    "`free` reads `seen` and `arena_tag` from one cache line"
);

/// The calling thread's bins.
#[inline(always)]
pub fn thread_bins() -> *mut ThreadBins {
    pal::thread::thread_block().cast()
}

/// The bin of `tb` at offset `at`, a cached class's [`SizeClass::offset`] (the fast paths have
/// the offset, not the class).
///
/// # Safety
/// `tb` must be a thread's bins and `at` a cached class's offset.
#[inline(always)]
pub unsafe fn bin_at(tb: *mut ThreadBins, at: usize) -> *mut TBin {
    debug_assert!(at % CLASS_STRIDE == 0 && at / CLASS_STRIDE < NCACHED);
    // SAFETY: per the contract, `at` bytes into the bins array, which starts the block.
    unsafe { tb.cast::<u8>().add(at).cast() }
}

/// The calling thread's big cache (`bigcache.rs`), if it has a thread cache. Only this thread
/// reaches it (statistics readers only read its counts); the caller must not hold it across
/// another call that takes it.
pub fn big_cache() -> Option<&'static mut BigCache> {
    let tb = thread_bins();
    // SAFETY: the thread's own bins; a non-null `cache` is its live cache, which only this
    // thread changes.
    unsafe {
        let tc = (*tb).cache;
        if tc.is_null() {
            return None;
        }
        Some(&mut *ptr::addr_of_mut!((*tc).big))
    }
}

/// [`ThreadBins::arena`] of a thread that has not allocated since it got its cache: no chunk's
/// arena (arenas are numbered below `MAX_ARENAS`).
pub const NO_ARENA: u32 = u32::MAX;

/// The slot storage and arena of one thread's cache.
#[repr(C)]
pub struct TCache {
    /// The arena this thread fills from: null until the thread first allocates ([`claim`]),
    /// then one of the static arenas, counted as used by this thread until the cache is
    /// detached. Written only by the owner, under the registry lock (statistics read it).
    pub arena: *const Arena,
    /// The owning thread's bins (in its thread block), while attached.
    owner: *mut ThreadBins,
    /// Its place in the pool (detached) or in the list of attached caches.
    links: Links<TCache>,
    /// Its whole large blocks above the bins' classes (`bigcache.rs`).
    pub big: BigCache,
    /// Per bin, the low 16 bits of its `nmalloc` at its last refill: a bin that is full with
    /// fewer blocks taken since then than it holds is in a burst ([`make_room`]). (Here, not in
    /// the thread block, which has no room for it.)
    refill_seen: [u16; NCACHED],
    /// Per bin, blocks that came into it from arenas less those it sent back (refills minus
    /// flushes) since the cache was attached: with the bin's count and `nmalloc` this gives the
    /// blocks the thread freed into it ([`thread_bytes`]).
    moved: [i64; NCACHED],
    /// Bytes allocated and freed by the owner past its bins since the cache was attached
    /// ([`count_slow`]; the thread's own `SLOW_BYTES` hold what it counted without a cache).
    slow: (u64, u64),
    storage: [*mut u8; TOTAL_SLOTS],
}

/// A cache's place in the pool or the attached list.
struct CacheLinks;
// SAFETY: returns the address of the cache's `links` field.
unsafe impl Adapter for CacheLinks {
    type Node = TCache;
    unsafe fn links(node: *mut TCache) -> *mut Links<TCache> {
        // SAFETY: per the contract `node` points at a cache.
        unsafe { ptr::addr_of_mut!((*node).links) }
    }
}

/// Detached caches for reuse, and the list of attached ones (which statistics walk).
struct Caches {
    pool: List<CacheLinks>,
    attached: List<CacheLinks>,
}
// SAFETY: the caches live in the metadata pool forever; the lists are only touched under the lock.
unsafe impl Send for Caches {}

static CACHES: Mutex<Caches> = Mutex::new(
    Rank::CacheRegistry,
    Caches {
        pool: List::new(),
        attached: List::new(),
    },
);

/// Makes every thread forget the chunks it remembered (`pagemap::ChunkSeen`): step 3 of the
/// protocol by which chunks are unmapped (`decay::unmap_retired`). The memories that can
/// hold a chunk are those of the attached caches' owners (a memory remembers only while
/// listed, and is listed with its cache, under this lock).
pub fn forget_chunks_everywhere() {
    let caches = CACHES.lock();
    let mut tc = caches.attached.head();
    while !tc.is_null() {
        // SAFETY: attached caches and their owners' bins stay live while in the list, which the
        // lock we hold guards; `forget` only stores to the memory's atomics.
        unsafe {
            (*(*tc).owner).seen.forget();
            tc = List::<CacheLinks>::next(tc);
        }
    }
}

/// Allocations counted by bins of caches that were detached since (and by calls served without
/// a cache), per class.
pub static MERGED_NMALLOC: [AtomicU64; NCACHED] = [const { AtomicU64::new(0) }; NCACHED];

/// Largest cached class under `tcache_max` (set at initialization; classes above get capacity 0).
static CACHED_CLASSES: AtomicU32 = AtomicU32::new(NCACHED as u32);

/// Applies `tcache_max` (bytes): classes larger than it are not cached.
pub fn configure(tcache_max: usize) {
    let n = (0..NCACHED)
        .take_while(|&i| size_compute(i) <= tcache_max)
        .count();
    CACHED_CLASSES.store(n as u32, Ordering::Relaxed);
}

impl TCache {
    /// Gives the calling thread (whose bins are `tb`, with no cache yet) a cache, with no arena
    /// until the thread first allocates ([`claim`]). Returns it, or null when out of memory.
    ///
    /// The arena waits because a thread's first call may be a `free`: a thread that only frees
    /// what others allocate (a consumer) would take an arena's turn it never fills from, the
    /// next allocating thread would get the other arena, and the blocks the consumer frees of
    /// the allocating thread that shares its arena would count as its own, kept in its bins
    /// rather than sent home. The suite's `prodcons_many` (two producers, two consumers, two
    /// arenas) peaked at 7.6-8.4 MiB when a consumer had a producer's arena, 4.7-5.1 when both
    /// consumers had the main thread's.
    ///
    /// # Safety
    /// `tb` must be the calling thread's bins, with a null `cache`.
    pub unsafe fn attach(tb: *mut ThreadBins) -> *mut TCache {
        let mut caches = CACHES.lock();
        // SAFETY: pooled caches are unused caches in the metadata pool.
        let mut tc = unsafe { caches.pool.pop_front() };
        if tc.is_null() {
            drop(caches);
            tc = meta::alloc(core::mem::size_of::<TCache>(), 64).cast();
            if tc.is_null() {
                return tc;
            }
            caches = CACHES.lock();
        }
        let cached = CACHED_CLASSES.load(Ordering::Relaxed) as usize;
        // SAFETY: `tc` is unused memory of the right size and alignment that we own; `tb` is the
        // caller's own bins; the attached list is guarded by the lock we hold.
        unsafe {
            ptr::addr_of_mut!((*tc).arena).write(ptr::null());
            (*tb).arena = NO_ARENA;
            (*tb).arena_tag = 0;
            // Listed with the cache, under the registry's lock: `forget_chunks_everywhere`
            // walks these memories.
            (*tb).seen.set_listed(true);
            ptr::addr_of_mut!((*tc).owner).write(tb);
            ptr::addr_of_mut!((*tc).big).write(BigCache::empty());
            ptr::addr_of_mut!((*tc).moved).write([0; NCACHED]);
            ptr::addr_of_mut!((*tc).slow).write((0, 0));
            for (i, &usual) in caps().iter().enumerate() {
                let bin = &mut (*tb).bins[i];
                let kept = i < cached;
                bin.set_slots(packed_slots(tc, i), if kept { usual as u16 } else { 0 });
                bin.set_limit(if kept { usual as u16 } else { 0 });
                bin.fill = first_fill(i).min(bin.limit() as u16 / 2).max(1);
            }
            (*tb).cache = tc;
            caches.attached.push_front(tc);
        }
        tc
    }

    /// Returns every block cached in `tb` to its arena, detaches the cache (every bin back to
    /// capacity 0) and puts it in the pool.
    ///
    /// # Safety
    /// `tb` must be the calling thread's bins, with a cache.
    pub unsafe fn detach(tb: *mut ThreadBins) {
        // SAFETY: per the contract, the bins and their cache are ours alone; the lists are
        // guarded by the lock.
        unsafe {
            let tc = (*tb).cache;
            {
                let mut caches = CACHES.lock();
                caches.attached.remove(tc);
                // No longer walked by `forget_chunks_everywhere`: remember nothing from now on.
                (*tb).seen.set_listed(false);
                for (bin, merged) in (*tb).bins.iter().zip(&MERGED_NMALLOC) {
                    merged.fetch_add(bin.nmalloc.swap(0, Ordering::Relaxed), Ordering::Relaxed);
                }
                (*tc).big.merge_hits();
            }
            (*tc).big.flush();
            for i in 0..NCACHED {
                flush(tb, SizeClass(i as u8), 0);
                let bin = &mut (*tb).bins[i];
                bin.set_slots(ptr::null_mut(), 0);
                bin.fill = 0;
            }
            (*tb).cache = ptr::null_mut();
            if !(*tc).arena.is_null() {
                arena::leave_arena(&*(*tc).arena);
            }
            CACHES.lock().pool.push_front(tc);
        }
    }
}

std::thread_local! {
    /// Bytes the calling thread allocated and freed (usable sizes) past its bins while it had
    /// no cache ([`count_slow`]; with one, its cache counts them).
    static SLOW_BYTES: Cell<(u64, u64)> = const { Cell::new((0, 0)) };
}

/// Counts `allocated` and `freed` bytes of the calling thread that did not pass through its
/// bins (large and huge blocks, sampled and guarded ones, calls served without a cache, blocks
/// sent straight home, resizing in place).
pub fn count_slow(allocated: usize, freed: usize) {
    let tb = thread_bins();
    // SAFETY: the thread's own bins; a non-null `cache` is its live cache, which only this
    // thread changes. (Through the cache when there is one: the thread block is at a fixed
    // offset from the thread pointer, a `thread_local!` of a shared library is a call away.)
    unsafe {
        let tc = (*tb).cache;
        if !tc.is_null() {
            (*tc).slow.0 += allocated as u64;
            (*tc).slow.1 += freed as u64;
            return;
        }
    }
    let (a, f) = SLOW_BYTES.get();
    SLOW_BYTES.set((a + allocated as u64, f + freed as u64));
}

/// Bytes the calling thread allocated and freed so far, usable sizes (jemalloc's
/// `thread.allocated` and `thread.deallocated`). Nothing on the fast paths counts bytes: a bin's
/// allocations are its `nmalloc`, and the blocks freed into it follow from what it holds, what
/// was taken, and what came from and went to arenas (`count + nmalloc - moved`); the rest was
/// counted by the slow paths ([`count_slow`]).
pub fn thread_bytes() -> (u64, u64) {
    let (mut allocated, mut freed) = SLOW_BYTES.get();
    let tb = thread_bins();
    // SAFETY: the thread's own bins; a non-null `cache` is its live cache.
    unsafe {
        let tc = (*tb).cache;
        if !tc.is_null() {
            allocated += (*tc).slow.0;
            freed += (*tc).slow.1;
            for (i, bin) in (*tb).bins.iter().enumerate() {
                let size = size_compute(i) as u64;
                let taken = bin.nmalloc.load(Ordering::Relaxed);
                let pushed = bin.count() as i64 + taken as i64 - (*tc).moved[i];
                allocated += taken * size;
                freed += pushed.max(0) as u64 * size;
            }
        }
    }
    (allocated, freed)
}

/// What the thread caches hold now, per class, and the allocations they counted: calls
/// The allocations the bins of `tb` served so far (the sum of their counts): guarded
/// sampling counts a thread's allocations with it.
///
/// # Safety
/// `tb` must be the calling thread's bins.
pub unsafe fn allocations(tb: *const ThreadBins) -> u64 {
    // SAFETY: per the contract; the counts are atomics the owner alone writes.
    unsafe { (*tb).bins.iter().map(|b| b.nmalloc.load(Ordering::Relaxed)).sum() }
}

/// `visit(class, cached, nmalloc)` for every class of every attached cache (the bins', then
/// the big cache's, `bigcache.rs`), plus the merged counts of detached ones (with `cached` 0).
/// Returns the number of attached caches and, per arena index, the number of threads using it
/// (in `threads`).
pub fn visit_caches(threads: &mut [u32], visit: &mut dyn FnMut(usize, u64, u64)) -> usize {
    let caches = CACHES.lock();
    let mut n = 0;
    let mut tc = caches.attached.head();
    while !tc.is_null() {
        // SAFETY: attached caches and their owners' bins stay live while in the list, which the
        // lock guards (a thread detaches under the lock before its thread block goes away).
        unsafe {
            let tb = (*tc).owner;
            for i in 0..NCACHED {
                let bin = &(*tb).bins[i];
                visit(i, bin.count_seen(), bin.nmalloc.load(Ordering::Relaxed));
            }
            (*tc).big.visit(visit);
            // A thread that has not allocated yet uses no arena.
            if !(*tc).arena.is_null() {
                if let Some(t) = threads.get_mut((*(*tc).arena).index() as usize) {
                    *t += 1;
                }
            }
            tc = List::<CacheLinks>::next(tc);
        }
        n += 1;
    }
    for (i, merged) in MERGED_NMALLOC.iter().enumerate() {
        visit(i, 0, merged.load(Ordering::Relaxed));
    }
    for (k, merged) in bigcache::MERGED_HITS.iter().enumerate() {
        visit(NCACHED + k, 0, merged.load(Ordering::Relaxed));
    }
    n
}

/// The arena of the calling thread's cache, which the thread takes now if it has none yet: the
/// one with the fewest threads ([`arena::next_arena`]).
///
/// # Safety
/// `tb` must be the calling thread's bins, with a cache.
#[inline]
pub unsafe fn claim(tb: *mut ThreadBins) -> &'static Arena {
    // SAFETY: per the contract the cache is ours; a non-null arena is a static arena.
    unsafe {
        let tc = (*tb).cache;
        if (*tc).arena.is_null() {
            set_arena(tb, arena::next_arena());
        }
        &*(*tc).arena
    }
}

/// Makes `arena` the arena of the calling thread's cache (the caller counts it as used by this
/// thread, and the one it replaces, if any, as no longer used).
///
/// # Safety
/// `tb` must be the calling thread's bins, with a cache.
#[cold]
#[link_section = ".text.hot.tally"]
pub unsafe fn set_arena(tb: *mut ThreadBins, arena: &'static Arena) {
    let _registry = CACHES.lock();
    // SAFETY: per the contract; the registry lock orders the write with statistics' reads.
    unsafe {
        (*(*tb).cache).arena = arena;
        (*tb).arena = arena.index();
        (*tb).arena_tag = pagemap::chunk_tag(arena.index());
        (*tb).seen.forget();
    }
}

/// Refills the empty bin of `class` from the cache's arena and pops one block (null when out of
/// memory).
///
/// # Safety
/// `tb` must be the calling thread's bins, with a cache, and `bins[class].count == 0`.
#[cold]
#[link_section = ".text.hot.tally"]
pub unsafe fn fill_and_pop(tb: *mut ThreadBins, class: SizeClass) -> *mut u8 {
    // SAFETY: per the contract the bins and their slot storage are ours.
    unsafe {
        let arena = claim(tb);
        (*tb).missed |= 1 << class.index();
        (*(*tb).cache).refill_seen[class.index()] =
            (*tb).bins[class.index()].nmalloc.load(Ordering::Relaxed) as u16;
        // The thread allocates the class again: a bin that only received gets its usual limit
        // back (one that grew keeps what it grew to).
        let bin = &mut (*tb).bins[class.index()];
        bin.set_limit(bin.limit().max(caps()[class.index()]) as u16);
        let bin = &mut (*tb).bins[class.index()];
        let want = bin.fill as usize;
        bin.fill = (bin.fill * 2).min(fill_max()[class.index()]);
        let out = core::slice::from_raw_parts_mut(bin.slots(), want);
        let n = if class.is_small() {
            arena.fill(class, out)
        } else {
            // Large blocks come from the page heap, as many as the bin's refill size under one
            // lock: one at first, two while the thread keeps missing (`FILL_MAX`).
            arena.alloc_large_batch(class, tally_pal::PAGE, out)
        };
        if n == 0 {
            return ptr::null_mut();
        }
        // The arena hands blocks out lowest address first, and the bin pops from its top:
        // reversed, the program gets them in ascending order, as glibc and mimalloc hand out
        // blocks. A structure built in order and walked in order then walks memory forwards,
        // which the processor's next-line prefetcher follows: the suite's CPython workload ran
        // 5-6% faster (docs/benchmarks.md, thirty-sixth pass).
        out[..n].reverse();
        if !class.is_small() {
            // A run may hold an old slab's mark where it starts, so those the bin keeps get
            // theirs (the one handed out now is unmarked below).
            for &kept in &out[..n - 1] {
                freed::mark(kept);
            }
        }
        (*(*tb).cache).moved[class.index()] += n as i64;
        bin.set_count(n as u32 - 1);
        bin.count_malloc();
        let p = *bin.slots().add(n - 1);
        freed::unmark(p);
        p
    }
}

/// One step of the thread cache's garbage collection, taken every [`crate::decay::TICK_BYTES`]
/// the thread allocates: looks at the next bin in turn (each one every 57 steps, 3.6 MiB), and
/// unless it was refilled since the last look, gives back the oldest quarter of its blocks and
/// halves its refill size. A bin a thread keeps drawing from misses now and then and is left
/// alone; one it stopped using drains, a quarter per look, instead of holding its blocks (and
/// the slabs under them) for the thread's lifetime. jemalloc does the same with low-water marks,
/// which cost the allocation fast path a compare; the miss bit is set on the slow path only.
///
/// # Safety
/// `tb` must be the calling thread's bins, not in use by an allocation or free in progress.
pub unsafe fn gc_step(tb: *mut ThreadBins) {
    // SAFETY: per the contract the bins are ours; no reference to a bin is held across `flush`.
    unsafe {
        if (*tb).cache.is_null() {
            return;
        }
        let i = (*tb).gc_next as usize;
        // A compare, not `% NCACHED` (58: a multiply and shifts on the tick's path).
        (*tb).gc_next = if i + 1 == NCACHED { 0 } else { i as u32 + 1 };
        if i == 0 {
            (*(*tb).cache).big.gc();
        }
        let bit = 1u64 << i;
        if (*tb).missed & bit != 0 {
            (*tb).missed &= !bit;
            return;
        }
        let count = {
            let bin = &mut (*tb).bins[i];
            bin.fill = (bin.fill / 2).max(1);
            bin.count() as usize
        };
        if count > 0 {
            flush(tb, SizeClass(i as u8), count - count.div_ceil(4));
            GC_FLUSHES.fetch_add(1, Ordering::Relaxed);
        }
        // An idle bin that grew goes back to its usual limit (or what it holds, if more), and
        // to its packed slots once that is all it holds.
        let bin = &mut (*tb).bins[i];
        if bin.limit() > caps()[i] && bin.cap() > 0 {
            bin.set_limit(bin.count().max(caps()[i]) as u16);
        }
        unpack_if_small(tb, i);
    }
}

/// Bin `i`'s packed slots in cache `tc` ([`PACKED_AT`]).
///
/// # Safety
/// `tc` must be a live cache.
unsafe fn packed_slots(tc: *mut TCache, i: usize) -> *mut *mut u8 {
    // SAFETY: per the contract; the offset is inside the storage (checked by the layout test).
    unsafe {
        ptr::addr_of_mut!((*tc).storage)
            .cast::<*mut u8>()
            .add(packed_at()[i] as usize)
    }
}

/// Bin `i`'s room in cache `tc` ([`GROWN_AT`]; only for a bin that can grow).
///
/// # Safety
/// `tc` must be a live cache.
unsafe fn grown_slots(tc: *mut TCache, i: usize) -> *mut *mut u8 {
    // SAFETY: as in `packed_slots`.
    unsafe {
        ptr::addr_of_mut!((*tc).storage)
            .cast::<*mut u8>()
            .add(grown_at()[i] as usize)
    }
}

/// Moves bin `i` of `tb` back to its packed slots if it is in its room and its limit and count
/// fit them again.
///
/// # Safety
/// `tb` must be the calling thread's bins, with a cache.
unsafe fn unpack_if_small(tb: *mut ThreadBins, i: usize) {
    // SAFETY: per the contract; a bin in its room is not in its packed slots, which no other
    // bin uses.
    unsafe {
        let bin = &mut (*tb).bins[i];
        if bin.cap() as u32 > caps()[i] && bin.limit() <= caps()[i] {
            bin.move_slots(packed_slots((*tb).cache, i), caps()[i] as u16);
        }
    }
}

/// Bins garbage collection took blocks from (a statistic).
pub static GC_FLUSHES: AtomicU64 = AtomicU64::new(0);

/// Gives back the oldest blocks of `class` so that `keep` remain (the newest ones).
///
/// # Safety
/// `tb` must be the calling thread's bins.
pub unsafe fn flush(tb: *mut ThreadBins, class: SizeClass, keep: usize) {
    // SAFETY: per the contract the bins and their slot storage are ours.
    unsafe {
        let bin = &mut (*tb).bins[class.index()];
        let count = bin.count() as usize;
        if count <= keep {
            return;
        }
        let n = count - keep;
        // A bin holds blocks only while its thread has a cache.
        (*(*tb).cache).moved[class.index()] -= n as i64;
        let victims = core::slice::from_raw_parts_mut(bin.slots(), n);
        return_grouped(class, victims);
        ptr::copy(bin.slots().add(n), bin.slots(), keep);
        bin.set_count(keep as u32);
    }
}

/// Returns `blocks` (of `class`) to their owning arenas, in one locked batch per arena: small
/// ones to their bin, large ones to the page heap. Reorders `blocks`.
///
/// # Safety
/// The blocks must be free blocks of `class` that only the caller can reach, each large one at
/// the start of its run.
#[link_section = ".text.hot.tally"]
pub unsafe fn return_grouped(class: SizeClass, blocks: &mut [*mut u8]) {
    let mut rest = blocks;
    let mut first = true;
    while !rest.is_empty() {
        // SAFETY: blocks lie in live chunks.
        let owner_arena = unsafe { (*ChunkHeader::of(rest[0] as usize)).arena };
        // The blocks of the first block's arena at the front. Small ones the first time: the
        // return itself stops at the first block of another arena (`Bin::return_batch`, which
        // looks once a slab): most batches are one arena's, and end there. Else this arena's
        // blocks move to the front, after one look at each.
        let same = if first && class.is_small() {
            rest.len()
        } else {
            // SAFETY: blocks lie in live chunks.
            unsafe { lead_with(rest, owner_arena) }
        };
        first = false;
        let arena = &arena::ARENAS[owner_arena as usize];
        let batch = &rest[..same];
        // SAFETY: per the contract the blocks are free blocks of `class`, those of arena
        // `owner_arena` from it (large ones at the start of their runs); `batch` holds only
        // that arena's blocks when large.
        let done = unsafe {
            if class.is_small() {
                arena.bins[class.index()].return_batch(class, &arena.pages, batch, owner_arena)
            } else {
                arena.free_large_batch(batch);
                same
            }
        };
        rest = &mut rest[done..];
    }
}

/// Moves the blocks of `blocks` that lie in chunks of arena `arena` to its front, keeping the
/// others after them; returns how many.
///
/// # Safety
/// Every block must lie in a live chunk.
#[inline(always)]
unsafe fn lead_with(blocks: &mut [*mut u8], arena: u32) -> usize {
    // SAFETY: per the contract.
    let arena_of = |p: *mut u8| unsafe { (*ChunkHeader::of(p as usize)).arena };
    let first_other = blocks
        .iter()
        .position(|&p| arena_of(p) != arena)
        .unwrap_or(blocks.len());
    let mut same = first_other;
    for i in first_other..blocks.len() {
        if arena_of(blocks[i]) == arena {
            blocks.swap(same, i);
            same += 1;
        }
    }
    same
}

pub(crate) fn lock_for_fork() {
    CACHES.lock_for_fork();
}

/// # Safety
/// The prepare handler must have taken the lock in this thread.
pub(crate) unsafe fn unlock_after_fork(child: bool) {
    // SAFETY: per the contract.
    unsafe {
        CACHES.unlock_after_fork(child);
        if child {
            // Only the forking thread lives on in the child: every other attached cache's owner
            // is gone. Its blocks leak (as with any allocator); its cache must leave the list.
            let caches = &mut *CACHES.lock();
            let own = (*thread_bins()).cache;
            caches.attached.forget_all();
            if !own.is_null() {
                caches.attached.push_front(own);
            }
        }
    }
}

const _: () = assert!(CAPS[0] >= 2 && CAPS[NCACHED - 1] >= 2);

/// Bytes a thread's cache holds when every bin is full to `limits`: 4.4 MiB at the usual
/// limits, 5.9 MiB with every small bin grown to its capacity (a thread whose bursts outgrow
/// every class at once; both bounds asserted below).
const fn full_cache_bytes(limits: &[u32; NCACHED]) -> usize {
    let mut total = 0;
    let mut i = 0;
    while i < NCACHED {
        total += limits[i] as usize * size_compute(i);
        i += 1;
    }
    total
}
const _: () = assert!(
    full_cache_bytes(&CAPS) <= 9 * 1024 * 1024 / 2,
    "a thread's full cache stays under 4.5 MiB (see cap_compute)"
);
const _: () = assert!(
    full_cache_bytes(&ROOM) <= 13 * 1024 * 1024 / 2,
    "a thread's cache grown everywhere stays under 6.5 MiB (see room_compute)"
);

#[cfg(test)]
mod tests {
    use super::*;
    use crate::arena::{arena_count, ARENAS, MAX_ARENAS};
    use crate::chunk::info_class;
    use crate::size_class::{class_for, NSMALL, TCACHE_MAX};
    use std::sync::{Mutex as TestLock, MutexGuard as TestGuard};

    /// Tests that attach caches or change `tcache_max` run one at a time: the capacities a cache
    /// gets depend on `tcache_max` when it is attached.
    static SERIAL: TestLock<()> = TestLock::new(());

    fn serial() -> TestGuard<'static, ()> {
        SERIAL.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// An arena no thread is given (see the tests in `arena.rs`): its bins' counts are exact.
    const SPARE: usize = MAX_ARENAS - 10;

    /// A thread's bins as a new thread block holds them (all zero), for one test alone. The
    /// calling thread's own bins would also serve its allocations (the test harness's, a
    /// failed assertion's), and its blocks would move under the test's feet; these bins are the
    /// test's only, which is what the functions' contracts ask of "the calling thread's bins".
    /// Leaked, so that an attached cache's owner stays valid even if a test fails.
    fn new_bins() -> *mut ThreadBins {
        // SAFETY: all zero bytes are a valid ThreadBins (a new thread's block is zero).
        std::boxed::Box::into_raw(std::boxed::Box::new(unsafe { core::mem::zeroed::<ThreadBins>() }))
    }

    /// The class byte of the page holding `p`, a block in a live chunk.
    fn class_of(p: *mut u8) -> usize {
        let chunk = ChunkHeader::of(p as usize);
        // SAFETY: per the caller `p` lies in a live chunk, so its page index is in bounds.
        unsafe {
            info_class((*chunk).page_info[(*chunk).page_index(p as usize)].load(Ordering::Relaxed)) as usize
        }
    }

    /// Checks the invariant in the module docs: `count <= cap`; the cached blocks distinct and of
    /// the bin's class; no cache, no capacity and no slots; a capacity is the class's or 0 (a
    /// class above `tcache_max`).
    fn check_invariants(tb: *const ThreadBins) {
        // SAFETY: the bins of the calling thread (which does not allocate meanwhile) or of the
        // test; cached blocks lie in live chunks.
        unsafe {
            let attached = !(*tb).cache.is_null();
            for (i, bin) in (*tb).bins.iter().enumerate() {
                let count = bin.count() as usize;
                assert!(
                    count <= bin.cap() as usize,
                    "bin {i}: count {count} > cap {}",
                    bin.cap()
                );
                assert_eq!(!bin.slots().is_null(), attached, "bin {i}: slots iff a cache");
                assert!(attached || bin.cap() == 0, "bin {i}: capacity without a cache");
                // A bin is in its packed slots with its usual limit as capacity, or in its room.
                let cap = bin.cap() as u32;
                assert!(
                    cap == 0 || cap == CAPS[i] || cap == ROOM[i],
                    "bin {i}: capacity {cap}"
                );
                if attached && cap > 0 {
                    let at = if cap == CAPS[i] {
                        packed_slots((*tb).cache, i)
                    } else {
                        grown_slots((*tb).cache, i)
                    };
                    assert_eq!(bin.slots(), at, "bin {i} with capacity {cap}");
                }
                for k in 0..count {
                    let p = *bin.slots().add(k);
                    assert_eq!(class_of(p), i, "bin {i}: a block of another class");
                    for j in 0..k {
                        assert_ne!(*bin.slots().add(j), p, "bin {i}: a block cached twice");
                    }
                }
            }
        }
    }

    /// Whether `tc` is in the list that starts at `head` (linked by `next`).
    fn listed(list: &List<CacheLinks>, tc: *mut TCache) -> bool {
        let mut node = list.head();
        while !node.is_null() {
            if node == tc {
                return true;
            }
            // SAFETY: list members are caches in the metadata pool; the caller holds the lock.
            node = unsafe { List::<CacheLinks>::next(node) };
        }
        false
    }

    /// Takes `out.len()` blocks of the small `class` as the allocation paths do: popped from the
    /// bin, which is refilled when empty. Leaves what the last refill brought in the bin.
    ///
    /// # Safety
    /// `tb` must be the test's bins, with a cache.
    unsafe fn take(tb: *mut ThreadBins, class: SizeClass, out: &mut [*mut u8]) {
        let i = class.index();
        for slot in out.iter_mut() {
            // SAFETY: per the contract; `fill_and_pop` is called on an empty bin only.
            unsafe {
                let count = (*tb).bins[i].count();
                *slot = if count == 0 {
                    fill_and_pop(tb, class)
                } else {
                    (*tb).bins[i].set_count(count - 1);
                    *(*tb).bins[i].slots().add(count as usize - 1)
                };
            }
            assert!(!slot.is_null());
        }
    }

    /// Pushes `blocks` onto the bin of `class` as `free` does (the last one on top).
    ///
    /// # Safety
    /// `tb` must be the test's bins, with a cache; the blocks free blocks of `class` that only
    /// the test holds.
    unsafe fn push(tb: *mut ThreadBins, class: SizeClass, blocks: &[*mut u8]) {
        // SAFETY: per the contract; the capacity is checked before each write.
        unsafe {
            let bin = &mut (*tb).bins[class.index()];
            for &p in blocks {
                let count = bin.count();
                assert!(count < bin.cap() as u32, "bin full");
                *bin.slots().add(count as usize) = p;
                bin.set_count(count + 1);
            }
        }
    }

    /// The first `n` cached blocks of `class`, oldest first.
    ///
    /// # Safety
    /// `tb` must be the test's bins, with at least `n` blocks of `class`.
    unsafe fn cached<const N: usize>(tb: *mut ThreadBins, class: SizeClass, n: usize) -> [*mut u8; N] {
        let mut out = [ptr::null_mut(); N];
        // SAFETY: per the contract.
        unsafe { ptr::copy_nonoverlapping((*tb).bins[class.index()].slots(), out.as_mut_ptr(), n) };
        out
    }

    #[test]
    fn attach_gives_every_class_its_capacity_and_detach_takes_it_back() {
        let _serial = serial();
        let tb = new_bins();
        check_invariants(tb);
        // SAFETY: the test's own bins, with no cache at first.
        unsafe {
            let tc = TCache::attach(tb);
            assert!(!tc.is_null());
            assert_eq!((*tb).cache, tc);
            // No arena until the thread allocates: every block is another thread's.
            assert!((*tc).arena.is_null());
            assert_eq!((*tb).arena, NO_ARENA);
            assert!(listed(&CACHES.lock().attached, tc));
            let cached = CACHED_CLASSES.load(Ordering::Relaxed) as usize;
            let storage = ptr::addr_of_mut!((*tc).storage).cast::<*mut u8>();
            let mut offset = 0;
            for (i, bin) in (*tb).bins.iter().enumerate() {
                let cap = if i < cached { CAPS[i] as u16 } else { 0 };
                assert_eq!((bin.cap(), bin.limit() as u16), (cap, cap), "bin {i}");
                assert_eq!(bin.count(), 0);
                assert_eq!(bin.fill, first_fill(i).min(cap / 2).max(1), "bin {i}");
                // Each bin's packed slots follow the previous bin's, at the storage's start.
                assert_eq!(bin.slots(), storage.add(offset), "bin {i}");
                offset += CAPS[i] as usize;
            }
            // Then the rooms of the bins that can grow, one after another, to the storage's end.
            for i in 0..NCACHED {
                if ROOM[i] > CAPS[i] {
                    assert_eq!(grown_slots(tc, i), storage.add(offset), "room of bin {i}");
                    offset += ROOM[i] as usize;
                }
            }
            assert_eq!(offset, TOTAL_SLOTS);
            check_invariants(tb);
            // The first claim takes an arena in use and counts it, the next returns the same.
            let arena = claim(tb);
            assert!(ptr::eq((*tc).arena, arena));
            assert_eq!((*tb).arena, arena.index());
            assert!((arena.index() as usize) < arena_count());
            assert!(ptr::eq(claim(tb), arena));

            TCache::detach(tb);
            assert!((*tb).cache.is_null());
            for bin in &(*tb).bins {
                assert_eq!((bin.cap(), bin.fill, bin.slots()), (0, 0, ptr::null_mut()));
            }
            check_invariants(tb);
            {
                let caches = CACHES.lock();
                assert!(!listed(&caches.attached, tc));
                assert!(listed(&caches.pool, tc), "a detached cache goes to the pool");
            }
            // The thread may have a cache again.
            assert!(!TCache::attach(tb).is_null());
            TCache::detach(tb);
        }
    }

    #[test]
    fn a_cache_counts_as_an_arenas_user_only_once_it_has_one() {
        let _serial = serial();
        let tb = new_bins();
        let spare = &ARENAS[SPARE];
        // SAFETY: the test's own bins; the spare arena is no other thread's, so its count is
        // the test's alone.
        unsafe {
            assert_eq!(spare.users(), 0);
            TCache::attach(tb);
            TCache::detach(tb);
            assert_eq!(spare.users(), 0);
            TCache::attach(tb);
            arena::join_arena(spare);
            set_arena(tb, spare);
            assert!(ptr::eq(claim(tb), spare), "a cache with an arena keeps it");
            assert_eq!((*tb).arena, SPARE as u32);
            assert_eq!(spare.users(), 1);
            TCache::detach(tb);
            assert_eq!(spare.users(), 0, "detach leaves the arena");
        }
    }

    #[test]
    fn fill_max_is_8_kib_of_blocks_at_least_2_at_most_half_the_usual_limit() {
        for i in 0..NSMALL {
            let (most, size) = (FILL_MAX[i] as usize, size_compute(i));
            assert!(most >= 1 && most <= (CAPS[i] as usize / 2).max(1), "class {i}");
            assert!(
                first_fill(i) as usize <= most,
                "class {i}: the first batch is no bigger"
            );
            assert!(
                most * size <= FILL_BYTES || most <= 2,
                "class {i}: {most} blocks of {size} B"
            );
            let twice = (2 * most).min(CAPS[i] as usize / 2);
            assert!(
                twice == most || twice * size > FILL_BYTES,
                "class {i}: {most} blocks of {size} B, could be more"
            );
        }
        // The small classes keep their batches; from 512 B up they bring 8 KiB at most.
        assert_eq!(
            FILL_MAX[class_for(64).unwrap().index()] as u32,
            CAPS[class_for(64).unwrap().index()] / 2
        );
        assert_eq!(FILL_MAX[class_for(4096).unwrap().index()], 2);
    }

    #[test]
    fn fill_and_pop_refills_with_batches_doubling_up_to_fill_max() {
        let _serial = serial();
        let tb = new_bins();
        let class = SizeClass(10);
        let i = class.index();
        let mut blocks = [ptr::null_mut(); 512];
        let mut n = 0;
        let arena_of = |tb: *mut ThreadBins| {
            // SAFETY: the test's own bins, attached to an arena below.
            let index = unsafe { (*tb).arena } as usize;
            &arena::ARENAS[index]
        };
        let mut fills = None;
        // SAFETY: the test's own bins; `fill_and_pop` is called on empty bins only; the blocks
        // taken are returned once, before the cache goes.
        unsafe {
            TCache::attach(tb);
            let most = FILL_MAX[i];
            for round in 0..8 {
                let want = (*tb).bins[i].fill;
                let nmalloc = (*tb).bins[i].nmalloc.load(Ordering::Relaxed);
                (*tb).missed = 0;
                let p = fill_and_pop(tb, class);
                assert!(!p.is_null());
                if round == 0 {
                    fills = Some((arena_of(tb).bins[i].counts().fills, arena_of(tb)));
                }
                ptr::write_bytes(p, 0x5a, class.size());
                blocks[n] = p;
                n += 1;
                let bin = &(*tb).bins[i];
                assert_eq!(bin.count(), want as u32 - 1, "round {round}: the refill's batch");
                assert_eq!(bin.fill, (want * 2).min(most), "round {round}: the next batch");
                assert_eq!((*tb).missed, 1 << i, "round {round}: the miss bit");
                assert_eq!(bin.nmalloc.load(Ordering::Relaxed), nmalloc + 1);
                check_invariants(tb);
                // Drain the bin, as allocations would.
                let count = bin.count() as usize;
                ptr::copy_nonoverlapping(bin.slots(), blocks.as_mut_ptr().add(n), count);
                n += count;
                bin.set_count(0);
            }
            assert_eq!((*tb).bins[i].fill, most, "the batch stops growing at its most");
            // The arena's bin counted every refill after the first (other tests' threads may
            // share the arena).
            let (after_first, arena) = fills.expect("refilled");
            assert!(core::ptr::eq(arena, arena_of(tb)), "one arena");
            assert!(arena.bins[i].counts().fills >= after_first + 7);
            for (k, &p) in blocks[..n].iter().enumerate() {
                assert_eq!(class_of(p), i);
                assert!(!blocks[..k].contains(&p), "a block handed out twice");
            }
            return_grouped(class, &mut blocks[..n]);

            // A large class: one block from the page heap at the first miss, then two under
            // one lock, the one kept in the bin marked free.
            let large = SizeClass(NSMALL as u8 + 1);
            assert!(large.index() < NCACHED);
            assert_eq!(fill_max()[large.index()], 2);
            (*tb).missed = 0;
            let allocated = |arena: &Arena| arena.pages.lock().large_allocated[large.index() - NSMALL];
            let before = allocated(arena);
            let p = fill_and_pop(tb, large);
            assert!(!p.is_null());
            assert_eq!(class_of(p), large.index());
            assert_eq!((*tb).bins[large.index()].count(), 0);
            assert_eq!((*tb).missed, 1 << large.index());
            // (Other tests' threads may share the arena.)
            assert!(allocated(arena) > before);
            let before = allocated(arena);
            let q = fill_and_pop(tb, large);
            assert!(allocated(arena) >= before + 2);
            assert_eq!((*tb).bins[large.index()].count(), 1);
            let kept = *(*tb).bins[large.index()].slots();
            assert_eq!(class_of(q), large.index());
            assert_eq!(class_of(kept), large.index());
            assert!(q != p && kept != p && kept != q);
            assert!(freed::is_marked(kept) && !freed::is_marked(q) && !freed::is_marked(p));
            (*tb).bins[large.index()].set_count(0);
            return_grouped(large, &mut [p, q, kept]);
            TCache::detach(tb);
        }
    }

    #[test]
    fn flush_keeps_the_newest_blocks_and_sends_the_rest_to_their_own_arenas() {
        let _serial = serial();
        let tb = new_bins();
        let class = SizeClass(20);
        let i = class.index();
        let spare = &ARENAS[SPARE];
        assert!(SPARE >= arena_count());
        const M: usize = 8;
        let mut own = [ptr::null_mut(); M];
        let mut foreign = [ptr::null_mut(); M];
        // SAFETY: the test's own bins, with a cache from `attach`; every block is a free block of
        // `class` that only the test holds, given back once.
        unsafe {
            TCache::attach(tb);
            take(tb, class, &mut own);
            flush(tb, class, 0);
            assert_eq!((*tb).bins[i].count(), 0, "flush to 0 empties the bin");
            let n = spare.bins[i].fill(class, &spare.pages, SPARE as u32, &mut foreign);
            assert_eq!(n, M);
            // Alternate: the cache's arena's blocks and the spare arena's.
            for k in 0..M {
                push(tb, class, &[own[k], foreign[k]]);
            }
            check_invariants(tb);
            let before: [*mut u8; 2 * M] = cached(tb, class, 2 * M);
            let spare_before = spare.bins[i].counts();
            let home = &ARENAS[(*tb).arena as usize];
            let home_returned = home.bins[i].counts().returned;

            flush(tb, class, 2 * M); // keeps everything
            assert_eq!((*tb).bins[i].count() as usize, 2 * M);
            flush(tb, class, M);
            assert_eq!((*tb).bins[i].count() as usize, M);
            let after: [*mut u8; M] = cached(tb, class, M);
            assert_eq!(after[..], before[M..], "the newest half stays, in order");
            // The oldest half, half of it the spare arena's, went back to the arenas they came
            // from (the spare arena is the test's alone: its counts are exact).
            let spare_after = spare.bins[i].counts();
            assert_eq!(
                (spare_after.handed_out, spare_after.returned, spare_after.batches),
                (
                    spare_before.handed_out,
                    spare_before.returned + M as u64 / 2,
                    spare_before.batches + 1
                )
            );
            assert!(home.bins[i].counts().returned >= home_returned + M as u64 / 2);
            check_invariants(tb);

            TCache::detach(tb);
            assert_eq!(
                spare.bins[i].counts().returned,
                spare_before.returned + M as u64,
                "every foreign block went home"
            );
            spare.bins[i].debug_check_invariants(class);
        }
    }

    #[test]
    fn gc_step_gives_back_a_quarter_of_a_bin_not_refilled_since_the_last_look() {
        let _serial = serial();
        let tb = new_bins();
        let class = SizeClass(7);
        let i = class.index();
        let mut blocks = [ptr::null_mut(); 24];
        // SAFETY: the test's own bins, with a cache from `attach`; no reference to a bin is held
        // across the calls that change it.
        unsafe {
            // No cache: nothing to look at.
            gc_step(tb);
            assert_eq!((*tb).gc_next, 0);

            TCache::attach(tb);
            take(tb, class, &mut blocks);
            flush(tb, class, 0);
            push(tb, class, &blocks);
            (*tb).bins[i].fill = 8;
            assert_ne!((*tb).missed & 1 << i, 0, "taking the blocks refilled the bin");

            // Refilled since the last look: left alone, but looked at.
            (*tb).gc_next = i as u32;
            gc_step(tb);
            assert_eq!((*tb).gc_next as usize, i + 1);
            assert_eq!((*tb).missed & 1 << i, 0);
            assert_eq!(((*tb).bins[i].count(), (*tb).bins[i].fill), (24, 8));

            // Not refilled since: the oldest quarter goes, the refill batch halves.
            let flushes = GC_FLUSHES.load(Ordering::Relaxed);
            (*tb).gc_next = i as u32;
            gc_step(tb);
            assert_eq!(((*tb).bins[i].count(), (*tb).bins[i].fill), (18, 4));
            let kept: [*mut u8; 18] = cached(tb, class, 18);
            assert_eq!(kept[..], blocks[6..], "the newest blocks stay");
            assert!(GC_FLUSHES.load(Ordering::Relaxed) > flushes);
            (*tb).gc_next = i as u32;
            gc_step(tb);
            assert_eq!(((*tb).bins[i].count(), (*tb).bins[i].fill), (18 - 5, 2));
            check_invariants(tb);

            // An empty bin: only the batch halves, never below 1.
            flush(tb, class, 0);
            for _ in 0..3 {
                (*tb).gc_next = i as u32;
                gc_step(tb);
            }
            assert_eq!(((*tb).bins[i].count(), (*tb).bins[i].fill), (0, 1));

            // The look goes round every bin.
            (*tb).gc_next = NCACHED as u32 - 1;
            gc_step(tb);
            assert_eq!((*tb).gc_next, 0);
            TCache::detach(tb);
        }
    }

    #[test]
    fn outbox_limits_are_1_kib_of_blocks_and_none_past_512_bytes() {
        for i in 0..NCACHED {
            let (class, size) = (SizeClass(i as u8), size_compute(i));
            let limit = outbox_limit(class) as usize;
            if size > 512 {
                assert_eq!(limit, 0, "{size} B: fewer than 2 blocks in 1 KiB");
            } else {
                assert!(
                    limit >= 2 && limit <= receive_limit(class) as usize,
                    "{size} B: {limit}"
                );
                assert_eq!(
                    limit,
                    (1024 / size).min(receive_limit(class) as usize),
                    "{size} B"
                );
            }
        }
        assert_eq!(outbox_limit(class_for(64).unwrap()), 16);
    }

    #[test]
    fn a_bin_that_only_receives_sends_everything_home_and_holds_less_until_the_next_refill() {
        let _serial = serial();
        let tb = new_bins();
        let class = class_for(2048).unwrap();
        let i = class.index();
        let mut blocks = [ptr::null_mut(); 96];
        // SAFETY: the test's own bins, with a cache from `attach`; no reference to a bin is held
        // across the calls that change it; every block taken goes back through a flush, once.
        unsafe {
            TCache::attach(tb);
            let cap = CAPS[i] as usize;
            let limit = receive_limit(class) as usize;
            assert!(limit < cap && limit >= 2, "limit {limit}, usual limit {cap}");
            assert!(2 * cap <= blocks.len());
            let (blocks, extra) = blocks[..2 * cap].split_at_mut(cap);
            take(tb, class, blocks);
            take(tb, class, extra);
            let (extra, extra2) = extra.split_at_mut(cap / 2);
            assert_eq!((*tb).bins[i].limit() as usize, cap);
            flush(tb, class, 0);
            // Garbage collection looked since the refills (a bin refilled since then grows
            // instead: the next test).
            (*tb).missed = 0;

            // Full after the thread allocated from it: the older half goes, as always.
            push(tb, class, blocks);
            make_room(tb, class);
            assert_eq!((*tb).bins[i].count() as usize, cap / 2);
            assert_eq!((*tb).bins[i].limit() as usize, cap);
            let kept: [*mut u8; 64] = cached(tb, class, cap / 2);
            assert_eq!(kept[..cap / 2], blocks[cap / 2..], "the newest half stays");

            // Full a second time with nothing taken since: still the older half (a burst of
            // frees one and a half times the capacity does that).
            push(tb, class, extra);
            make_room(tb, class);
            assert_eq!((*tb).bins[i].count() as usize, cap / 2);
            assert_eq!((*tb).bins[i].limit() as usize, cap);

            // A third time: everything goes home, the limit drops.
            push(tb, class, extra2);
            assert_eq!((*tb).bins[i].count() as usize, cap);
            make_room(tb, class);
            assert_eq!((*tb).bins[i].count(), 0);
            assert_eq!((*tb).bins[i].limit() as usize, limit);
            check_invariants(tb);

            // The next allocation refills the bin and restores its capacity.
            take(tb, class, &mut blocks[..limit + 1]);
            assert_eq!(
                (*tb).bins[i].limit() as usize,
                cap,
                "a refill restores the capacity"
            );

            // While lowered, the fast path's full mark is at the limit.
            flush(tb, class, 0);
            (*tb).bins[i].set_limit(limit as u16);
            for (n, &p) in blocks[..limit + 1].iter().enumerate() {
                assert_eq!((*tb).bins[i].try_push(p), n < limit, "push {n}");
            }
            let last = blocks[limit];
            flush(tb, class, 0);
            return_grouped(class, &mut [last]);
            (*tb).bins[i].set_limit(cap as u16);
            check_invariants(tb);
            TCache::detach(tb);
        }
    }

    #[test]
    fn a_bin_refilled_since_the_last_look_grows_up_to_its_room_and_shrinks_when_idle() {
        let _serial = serial();
        let tb = new_bins();
        let class = class_for(1024).unwrap();
        let i = class.index();
        let mut blocks = [ptr::null_mut(); 256];
        // SAFETY: the test's own bins, with a cache from `attach`; no reference to a bin is held
        // across the calls that change it; every block taken goes back through a flush, once.
        unsafe {
            let tc = TCache::attach(tb);
            let (usual, room) = (CAPS[i] as usize, ROOM[i] as usize);
            assert_eq!(
                (*tb).bins[i].cap() as usize,
                usual,
                "a bin starts in its packed slots"
            );
            assert!(usual < room && room <= blocks.len(), "usual {usual}, room {room}");
            let blocks = &mut blocks[..room];
            take(tb, class, blocks);
            assert_ne!((*tb).missed & 1 << i, 0, "taking the blocks refilled the bin");
            flush(tb, class, 0);
            // Freed in one burst: every time the bin is full, its limit grows by half the usual
            // one instead of anything going home, however often in a row, up to its room.
            let mut limit = usual;
            let mut pushed = 0;
            while pushed < room {
                if (*tb).bins[i].try_push(blocks[pushed]) {
                    pushed += 1;
                    continue;
                }
                assert_eq!(pushed, limit, "full at its limit");
                make_room(tb, class);
                limit = (limit + usual / 2).min(room);
                assert_eq!((*tb).bins[i].limit() as usize, limit, "after {pushed} frees");
                assert_eq!((*tb).bins[i].count() as usize, pushed, "nothing went home");
                // Grown, it is in its room, its blocks with it in their order.
                assert_eq!((*tb).bins[i].slots(), grown_slots(tc, i));
                assert_eq!((*tb).bins[i].cap() as usize, room);
                let moved: [*mut u8; 256] = cached(tb, class, pushed);
                assert_eq!(moved[..pushed], blocks[..pushed], "after {pushed} frees");
            }
            assert_eq!(limit, room);
            // At its room the older half goes, as for any full bin.
            make_room(tb, class);
            assert_eq!((*tb).bins[i].count() as usize, room / 2);
            assert_eq!((*tb).bins[i].limit() as usize, room);
            check_invariants(tb);
            // Garbage collection finds it refilled since the last look and leaves it; at the
            // next look it is idle: a quarter goes, the limit comes back down.
            let held: [*mut u8; 256] = cached(tb, class, room / 2);
            assert_eq!((*tb).bins[i].cap() as usize, room, "still in its room");
            for look in 0..2 {
                (*tb).gc_next = i as u32;
                gc_step(tb);
                let expect = if look == 0 {
                    room
                } else {
                    usual.max(room / 2 - (room / 2).div_ceil(4))
                };
                assert_eq!((*tb).bins[i].limit() as usize, expect, "look {look}");
            }
            // With its usual limit back and no more blocks than that, it is in its packed slots
            // again, the newest blocks with it.
            let kept = (*tb).bins[i].count() as usize;
            assert!(kept <= usual, "kept {kept}");
            assert_eq!((*tb).bins[i].cap() as usize, usual);
            assert_eq!((*tb).bins[i].slots(), packed_slots(tc, i));
            let back: [*mut u8; 256] = cached(tb, class, kept);
            assert_eq!(
                back[..kept],
                held[room / 2 - kept..room / 2],
                "the newest blocks stay"
            );
            check_invariants(tb);
            flush(tb, class, 0);
            TCache::detach(tb);
        }
    }

    #[test]
    fn a_burst_of_twice_the_usual_limit_repeats_without_a_trip() {
        let _serial = serial();
        let tb = new_bins();
        // Criterion's `batch64/1024`: 64 blocks of 1 KiB allocated, then all freed, again and
        // again; the usual limit is 32.
        let class = class_for(1024).unwrap();
        let i = class.index();
        let burst = 2 * CAPS[i] as usize;
        // What the last refill of a burst may leave in the bin fits beside the burst.
        assert!(burst + FILL_MAX[i] as usize - 1 <= ROOM[i] as usize);
        let mut blocks = [ptr::null_mut(); 256];
        // SAFETY: the test's own bins, with a cache from `attach`; no reference to a bin is held
        // across the calls that change it; every block taken is pushed back once, and all go
        // home through the last flush.
        unsafe {
            TCache::attach(tb);
            for round in 0..4 {
                (*tb).missed = 0;
                let before = (*tb).bins[i].count();
                take(tb, class, &mut blocks[..burst]);
                let refilled = (*tb).missed & 1 << i != 0;
                let left = (*tb).bins[i].count();
                // Freed as `free` does: into the bin, making room when it is full.
                let mut trips = 0;
                for &p in &blocks[..burst] {
                    if !(*tb).bins[i].try_push(p) {
                        let count = (*tb).bins[i].count();
                        make_room(tb, class);
                        trips += usize::from((*tb).bins[i].count() < count);
                        assert!((*tb).bins[i].try_push(p), "round {round}: no room made");
                    }
                }
                if round >= 1 {
                    // The bin grew in the first round and holds a burst and a refill's rest.
                    assert!(!refilled, "round {round}: a refill ({before} blocks before)");
                    assert_eq!(trips, 0, "round {round}: blocks went home");
                    assert_eq!((*tb).bins[i].count(), left + burst as u32, "round {round}");
                }
            }
            check_invariants(tb);
            flush(tb, class, 0);
            TCache::detach(tb);
        }
    }

    #[test]
    fn a_bin_that_fills_by_a_random_walk_does_not_grow() {
        let _serial = serial();
        let tb = new_bins();
        let class = class_for(1024).unwrap();
        let i = class.index();
        let mut blocks = [ptr::null_mut(); 256];
        // SAFETY: the test's own bins, with a cache from `attach`; no reference to a bin is held
        // across the calls that change it; every block taken goes back through a flush, once.
        unsafe {
            TCache::attach(tb);
            let usual = CAPS[i] as usize;
            let blocks = &mut blocks[..usual];
            take(tb, class, blocks);
            assert_ne!((*tb).missed & 1 << i, 0, "taking the blocks refilled the bin");
            flush(tb, class, 0);
            // Allocations and frees in turn, as many as the bin holds: blocks taken since the
            // refill, all of them back.
            push(tb, class, &blocks[..1]);
            for _ in 0..usual {
                let p = (*tb).bins[i].pop_if(true).unwrap();
                assert!((*tb).bins[i].try_push(p));
            }
            push(tb, class, &blocks[1..]);
            assert_eq!((*tb).bins[i].count() as usize, usual, "full");
            make_room(tb, class);
            assert_eq!((*tb).bins[i].limit() as usize, usual, "the limit stays");
            assert_eq!(
                (*tb).bins[i].count() as usize,
                usual - usual / 2,
                "the older half went"
            );
            // Refilled again and freed back in a burst: it grows.
            flush(tb, class, 0);
            take(tb, class, blocks);
            let mut pushed = 0;
            while pushed < usual && (*tb).bins[i].try_push(blocks[pushed]) {
                pushed += 1;
            }
            assert_eq!((*tb).bins[i].count() as usize, usual, "full");
            make_room(tb, class);
            assert_eq!(
                (*tb).bins[i].limit() as usize,
                usual + usual / 2,
                "a burst grows it"
            );
            assert_eq!((*tb).bins[i].count() as usize, usual, "nothing went home");
            push(tb, class, &blocks[pushed..]);
            check_invariants(tb);
            flush(tb, class, 0);
            TCache::detach(tb);
        }
    }

    #[test]
    fn configure_leaves_classes_above_tcache_max_uncached() {
        let _serial = serial();
        let saved = CACHED_CLASSES.load(Ordering::Relaxed);
        configure(0);
        assert_eq!(CACHED_CLASSES.load(Ordering::Relaxed), 0);
        configure(usize::MAX);
        assert_eq!(CACHED_CLASSES.load(Ordering::Relaxed) as usize, NCACHED);
        configure(TCACHE_MAX);
        assert_eq!(CACHED_CLASSES.load(Ordering::Relaxed) as usize, NCACHED);
        configure(1024);
        let cached = (0..NCACHED).filter(|&i| size_compute(i) <= 1024).count();
        assert!(cached > 0 && cached < NCACHED);
        let tb = new_bins();
        // SAFETY: the test's own bins.
        unsafe {
            TCache::attach(tb);
            CACHED_CLASSES.store(saved, Ordering::Relaxed);
            for (i, bin) in (*tb).bins.iter().enumerate() {
                assert_eq!(bin.cap() != 0, i < cached, "bin {i}");
            }
            check_invariants(tb);
            TCache::detach(tb);
        }
    }

    #[test]
    fn a_threads_own_bins_keep_the_invariant() {
        let main = thread_bins() as usize;
        std::thread::spawn(move || {
            let tb = thread_bins();
            assert_ne!(tb as usize, main, "each thread has its own block");
            check_invariants(tb);
            for size in [8, 24, 100, 1000, 5000, 20_000] {
                let v: std::vec::Vec<u8> = std::vec![1; size];
                drop(core::hint::black_box(v));
            }
            check_invariants(tb);
        })
        .join()
        .unwrap();
    }
}
