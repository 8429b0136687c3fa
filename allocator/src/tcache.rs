//! Thread caches: each thread's private stacks of free small blocks, one per class.
//!
//! `malloc` of a small size pops from its class's stack and `free` pushes onto it: no lock, no
//! atomic, no touch of the block's memory. An empty stack is refilled from the thread's arena
//! with half its capacity in one locked batch; a full one gives its older half back in batches
//! grouped by owning arena (blocks freed by a thread other than the one that allocated them go
//! back to their own arena this way, never through a global lock).
//!
//! The stacks are arrays of pointers kept in the cache itself, not lists threaded through the
//! free blocks, so a use-after-free write cannot corrupt the allocator.
//!
//! The part the fast paths touch, the [`ThreadBins`] (a count, a capacity and a slot pointer per
//! class), lives in the thread's block of static TLS; the slot arrays live in a [`TCache`] from
//! the metadata pool. The thread block starts zeroed, and zero capacity everywhere means a thread
//! that has no cache yet simply misses on every operation: "not initialized" is not a branch.
//!
//! Invariant per bin: `count <= cap`, and `slots[0..count]` are distinct free blocks of the
//! bin's class that no thread but this one can reach; `cap == 0` iff `cache` is null.

use core::ptr;

use crate::arena::{self, Arena};
use crate::chunk::ChunkHeader;
use crate::meta;
use crate::size_class::{size_compute, SizeClass, NCACHED, NSMALL};
use core::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use tally_pal as pal;
use tally_pal::sync::{Mutex, Rank};

/// Per-class cache capacity: 256 KiB worth of blocks, at least 16 and at most 128 blocks for
/// small classes, at least 4 for the cached large classes. (A thread caches at most about 4 MiB.)
const fn cap_compute(index: usize) -> usize {
    let size = size_compute(index);
    let by_bytes = 256 * 1024 / size;
    let (min, max) = if index < NSMALL { (16, 128) } else { (4, 16) };
    if by_bytes < min {
        min
    } else if by_bytes > max {
        max
    } else {
        by_bytes
    }
}

const fn build_caps() -> ([u32; NCACHED], usize) {
    let mut caps = [0u32; NCACHED];
    let mut total = 0;
    let mut i = 0;
    while i < NCACHED {
        caps[i] = cap_compute(i) as u32;
        total += caps[i] as usize;
        i += 1;
    }
    (caps, total)
}

const CAPS: [u32; NCACHED] = build_caps().0;
/// Blocks a bin's first refill asks for: four, fewer where four would pass 16 KiB (a class a
/// thread uses once then costs it one or two blocks, not a slab's worth).
const fn first_fill(index: usize) -> u16 {
    let by_bytes = 16 * 1024 / size_compute(index);
    if by_bytes >= 4 {
        4
    } else if by_bytes == 0 {
        1
    } else {
        by_bytes as u16
    }
}
const TOTAL_SLOTS: usize = build_caps().1;

/// One class's stack of cached blocks.
///
/// `count` and `nmalloc` are atomics only so that a statistics reader on another thread may
/// read them; the owner uses plain relaxed loads and stores (no read-modify-write).
#[repr(C)]
pub struct TBin {
    /// Blocks cached.
    pub count: AtomicU32,
    /// Capacity (0 while the thread has no cache, and for classes above `tcache_max`).
    pub cap: u16,
    /// Blocks the next refill asks for: starts small and doubles with each refill up to half
    /// the capacity, so a class a thread uses once costs it a few blocks, not a full bin.
    pub fill: u16,
    /// `slots[0..count]` are the cached blocks; the top is `slots[count - 1]`.
    pub slots: *mut *mut u8,
    /// Allocations of this class served through this bin (a statistic).
    pub nmalloc: AtomicU64,
}

impl TBin {
    /// Cached blocks.
    #[inline(always)]
    pub fn count(&self) -> u32 {
        self.count.load(Ordering::Relaxed)
    }

    /// Sets the number of cached blocks (owner only).
    #[inline(always)]
    pub fn set_count(&self, n: u32) {
        self.count.store(n, Ordering::Relaxed);
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
    /// Index of the cache's arena (meaningless without a cache): `free` tells this thread's
    /// blocks from other threads' by it.
    pub arena: u32,
    /// Stacks by cached class.
    pub bins: [TBin; NCACHED],
    /// The cache holding the slot arrays and the arena, or null while the thread has none.
    pub cache: *mut TCache,
    /// Bit `i`: bin `i` was refilled from its arena since garbage collection last looked at it.
    pub missed: u64,
    /// The bin garbage collection looks at next.
    pub gc_next: u32,
}

const _: () = assert!(core::mem::size_of::<ThreadBins>() <= pal::thread::THREAD_BLOCK_BYTES);
const _: () = assert!(NCACHED <= u64::BITS as usize, "one `missed` bit per cached class");

/// The calling thread's bins.
#[inline(always)]
pub fn thread_bins() -> *mut ThreadBins {
    pal::thread::thread_block().cast()
}

/// The slot storage and arena of one thread's cache.
#[repr(C)]
pub struct TCache {
    /// The arena this thread fills from.
    pub arena: *const Arena,
    /// The owning thread's bins (in its thread block), while attached.
    owner: *mut ThreadBins,
    /// Next cache in the pool (detached) or in the list of attached caches.
    next: *mut TCache,
    /// Previous attached cache.
    prev: *mut TCache,
    storage: [*mut u8; TOTAL_SLOTS],
}

/// Detached caches for reuse, and the list of attached ones (which statistics walk).
struct Caches {
    pool: *mut TCache,
    attached: *mut TCache,
}
// SAFETY: the caches live in the metadata pool forever; the lists are only touched under the lock.
unsafe impl Send for Caches {}

static CACHES: Mutex<Caches> = Mutex::new(
    Rank::CacheRegistry,
    Caches {
        pool: ptr::null_mut(),
        attached: ptr::null_mut(),
    },
);

/// Allocations counted by bins of caches that were detached since (and by calls served without
/// a cache), per class.
pub static MERGED_NMALLOC: [AtomicU64; NCACHED] = [const { AtomicU64::new(0) }; NCACHED];
/// Refills of empty bins, per class (a statistic: the cache's misses).
pub static MISSES: [AtomicU64; NCACHED] = [const { AtomicU64::new(0) }; NCACHED];

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
    /// Gives the calling thread (whose bins are `tb`, with no cache yet) a cache filling from
    /// the next arena in turn. Returns it, or null when out of memory.
    ///
    /// # Safety
    /// `tb` must be the calling thread's bins, with a null `cache`.
    pub unsafe fn attach(tb: *mut ThreadBins) -> *mut TCache {
        let mut caches = CACHES.lock();
        let mut tc = caches.pool;
        if tc.is_null() {
            drop(caches);
            tc = meta::alloc(core::mem::size_of::<TCache>(), 64).cast();
            if tc.is_null() {
                return tc;
            }
            caches = CACHES.lock();
        } else {
            // SAFETY: pooled caches are unused.
            caches.pool = unsafe { (*tc).next };
        }
        let cached = CACHED_CLASSES.load(Ordering::Relaxed) as usize;
        // SAFETY: `tc` is unused memory of the right size and alignment that we own; `tb` is the
        // caller's own bins; the attached list is guarded by the lock we hold.
        unsafe {
            let arena = arena::next_arena();
            ptr::addr_of_mut!((*tc).arena).write(arena);
            (*tb).arena = arena.index();
            ptr::addr_of_mut!((*tc).owner).write(tb);
            let storage = ptr::addr_of_mut!((*tc).storage).cast::<*mut u8>();
            let mut offset = 0;
            for (i, &cap) in CAPS.iter().enumerate() {
                let bin = &mut (*tb).bins[i];
                bin.set_count(0);
                bin.cap = if i < cached { cap as u16 } else { 0 };
                bin.fill = first_fill(i).min(bin.cap / 2).max(1);
                bin.slots = storage.add(offset);
                offset += cap as usize;
            }
            (*tb).cache = tc;
            ptr::addr_of_mut!((*tc).prev).write(ptr::null_mut());
            ptr::addr_of_mut!((*tc).next).write(caches.attached);
            if !caches.attached.is_null() {
                (*caches.attached).prev = tc;
            }
            caches.attached = tc;
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
                let (prev, next) = ((*tc).prev, (*tc).next);
                if prev.is_null() {
                    caches.attached = next;
                } else {
                    (*prev).next = next;
                }
                if !next.is_null() {
                    (*next).prev = prev;
                }
                for (bin, merged) in (*tb).bins.iter().zip(&MERGED_NMALLOC) {
                    merged.fetch_add(bin.nmalloc.swap(0, Ordering::Relaxed), Ordering::Relaxed);
                }
            }
            for i in 0..NCACHED {
                flush(tb, SizeClass(i as u8), 0);
                let bin = &mut (*tb).bins[i];
                bin.cap = 0;
                bin.fill = 0;
                bin.slots = ptr::null_mut();
            }
            (*tb).cache = ptr::null_mut();
            arena::leave_arena(&*(*tc).arena);
            let mut caches = CACHES.lock();
            (*tc).next = caches.pool;
            caches.pool = tc;
        }
    }
}

/// What the thread caches hold now, per class, and the allocations they counted: calls
/// `visit(class, cached, nmalloc)` for every class of every attached cache, plus the merged
/// counts of detached ones (with `cached` 0). Returns the number of attached caches and, per
/// arena index, the number of threads using it (in `threads`).
pub fn visit_caches(threads: &mut [u32], visit: &mut dyn FnMut(usize, u64, u64)) -> usize {
    let caches = CACHES.lock();
    let mut n = 0;
    let mut tc = caches.attached;
    while !tc.is_null() {
        // SAFETY: attached caches and their owners' bins stay live while in the list, which the
        // lock guards (a thread detaches under the lock before its thread block goes away).
        unsafe {
            let tb = (*tc).owner;
            for i in 0..NCACHED {
                let bin = &(*tb).bins[i];
                visit(i, bin.count() as u64, bin.nmalloc.load(Ordering::Relaxed));
            }
            let arena = (*(*tc).arena).index() as usize;
            if let Some(t) = threads.get_mut(arena) {
                *t += 1;
            }
            tc = (*tc).next;
        }
        n += 1;
    }
    for (i, merged) in MERGED_NMALLOC.iter().enumerate() {
        visit(i, 0, merged.load(Ordering::Relaxed));
    }
    n
}

/// Refills the empty bin of `class` from the cache's arena and pops one block (null when out of
/// memory).
///
/// # Safety
/// `tb` must be the calling thread's bins, with a cache, and `bins[class].count == 0`.
#[cold]
pub unsafe fn fill_and_pop(tb: *mut ThreadBins, class: SizeClass) -> *mut u8 {
    // SAFETY: per the contract the bins and their slot storage are ours.
    unsafe {
        let arena = &*(*(*tb).cache).arena;
        (*tb).missed |= 1 << class.index();
        if !class.is_small() {
            // Large blocks are not prefetched: the cache only keeps what the thread frees.
            return arena.alloc_large(class, tally_pal::PAGE);
        }
        MISSES[class.index()].fetch_add(1, Ordering::Relaxed);
        let bin = &mut (*tb).bins[class.index()];
        let want = bin.fill as usize;
        bin.fill = (bin.fill * 2).min(bin.cap / 2).max(1);
        let out = core::slice::from_raw_parts_mut(bin.slots, want);
        let n = arena.bins[class.index()].fill(class, &arena.pages, arena.index(), out);
        if n == 0 {
            return ptr::null_mut();
        }
        bin.set_count(n as u32 - 1);
        bin.count_malloc();
        *bin.slots.add(n - 1)
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
        (*tb).gc_next = ((i + 1) % NCACHED) as u32;
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
        let victims = core::slice::from_raw_parts_mut(bin.slots, n);
        return_grouped(class, victims);
        ptr::copy(bin.slots.add(n), bin.slots, keep);
        bin.set_count(keep as u32);
    }
}

/// Returns `blocks` (of `class`) to their owning arenas, small ones in one locked batch per
/// arena. Reorders `blocks`.
///
/// # Safety
/// The blocks must be free blocks of `class` that only the caller can reach.
pub unsafe fn return_grouped(class: SizeClass, blocks: &mut [*mut u8]) {
    if !class.is_small() {
        for &p in blocks.iter() {
            let chunk = ChunkHeader::of(p as usize);
            // SAFETY: a large block starts its run, whose span is at its first page.
            unsafe {
                let span = ptr::addr_of_mut!((*chunk).spans[(*chunk).page_index(p as usize)]);
                arena::of_chunk(chunk).free_large(span);
            }
        }
        return;
    }
    let mut rest = blocks;
    while !rest.is_empty() {
        let owner = ChunkHeader::of(rest[0] as usize);
        // SAFETY: small blocks lie in live chunks.
        let owner_arena = unsafe { (*owner).arena };
        // Move this arena's blocks to the front.
        let mut same = 0;
        for i in 0..rest.len() {
            let chunk = ChunkHeader::of(rest[i] as usize);
            // SAFETY: as above.
            if unsafe { (*chunk).arena } == owner_arena {
                rest.swap(same, i);
                same += 1;
            }
        }
        let arena = &arena::ARENAS[owner_arena as usize];
        let (batch, tail) = rest.split_at_mut(same);
        // SAFETY: per the contract the blocks are free blocks of `class` from this arena.
        unsafe { arena.bins[class.index()].return_batch(class, &arena.pages, batch) };
        rest = tail;
    }
}

pub(crate) fn lock_for_fork() {
    CACHES.lock_for_fork();
}

/// # Safety
/// The prepare handler must have taken the lock in this thread.
pub(crate) unsafe fn unlock_after_fork(child: bool) {
    // SAFETY: per the contract.
    unsafe {
        if child {
            CACHES.reset_in_child();
            // Only the forking thread lives on in the child: every other attached cache's owner
            // is gone. Its blocks leak (as with any allocator); its cache must leave the list.
            let caches = &mut *CACHES.lock();
            let own = (*thread_bins()).cache;
            caches.attached = ptr::null_mut();
            if !own.is_null() {
                (*own).next = ptr::null_mut();
                (*own).prev = ptr::null_mut();
                caches.attached = own;
            }
        } else {
            CACHES.unlock_after_fork()
        }
    }
}

const _: () = assert!(CAPS[0] >= 2 && CAPS[NCACHED - 1] >= 2);
