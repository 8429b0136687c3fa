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
use crate::pal;
use crate::size_class::{size_compute, SizeClass, NCACHED, NSMALL};
use crate::sync::Mutex;

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
const TOTAL_SLOTS: usize = build_caps().1;

/// One class's stack of cached blocks.
#[repr(C)]
pub struct TBin {
    /// Blocks cached.
    pub count: u32,
    /// Capacity (0 while the thread has no cache).
    pub cap: u32,
    /// `slots[0..count]` are the cached blocks; the top is `slots[count - 1]`.
    pub slots: *mut *mut u8,
}

/// A thread's bins, in its thread block. See the module docs for the invariant.
#[repr(C)]
pub struct ThreadBins {
    /// Stacks by cached class.
    pub bins: [TBin; NCACHED],
    /// The cache holding the slot arrays and the arena, or null while the thread has none.
    pub cache: *mut TCache,
}

const _: () = assert!(core::mem::size_of::<ThreadBins>() <= pal::THREAD_BLOCK_BYTES);

/// The calling thread's bins.
#[inline(always)]
pub fn thread_bins() -> *mut ThreadBins {
    pal::thread_block().cast()
}

/// The slot storage and arena of one thread's cache.
#[repr(C)]
pub struct TCache {
    /// The arena this thread fills from.
    pub arena: *const Arena,
    next_free: *mut TCache,
    storage: [*mut u8; TOTAL_SLOTS],
}

struct Pool(*mut TCache);
// SAFETY: pooled caches are unused memory from the metadata pool; only touched under the lock.
unsafe impl Send for Pool {}

/// Caches of exited threads, for reuse.
static POOL: Mutex<Pool> = Mutex::new(Pool(ptr::null_mut()));

impl TCache {
    /// Gives the calling thread (whose bins are `tb`, with no cache yet) a cache filling from
    /// the next arena in turn. Returns it, or null when out of memory.
    ///
    /// # Safety
    /// `tb` must be the calling thread's bins, with a null `cache`.
    pub unsafe fn attach(tb: *mut ThreadBins) -> *mut TCache {
        let mut pool = POOL.lock();
        let mut tc = pool.0;
        if tc.is_null() {
            drop(pool);
            tc = meta::alloc(core::mem::size_of::<TCache>(), 64).cast();
            if tc.is_null() {
                return tc;
            }
        } else {
            // SAFETY: pooled caches are unused.
            pool.0 = unsafe { (*tc).next_free };
            drop(pool);
        }
        // SAFETY: `tc` is unused memory of the right size and alignment that we own; `tb` is the
        // caller's own bins.
        unsafe {
            ptr::addr_of_mut!((*tc).arena).write(arena::next_arena());
            ptr::addr_of_mut!((*tc).next_free).write(ptr::null_mut());
            let storage = ptr::addr_of_mut!((*tc).storage).cast::<*mut u8>();
            let mut offset = 0;
            for (i, &cap) in CAPS.iter().enumerate() {
                (*tb).bins[i] = TBin {
                    count: 0,
                    cap,
                    slots: storage.add(offset),
                };
                offset += cap as usize;
            }
            (*tb).cache = tc;
        }
        tc
    }

    /// Returns every block cached in `tb` to its arena, detaches the cache (every bin back to
    /// capacity 0) and puts it in the pool.
    ///
    /// # Safety
    /// `tb` must be the calling thread's bins, with a cache.
    pub unsafe fn detach(tb: *mut ThreadBins) {
        // SAFETY: per the contract, the bins and their cache are ours alone.
        unsafe {
            for i in 0..NCACHED {
                flush(tb, SizeClass(i as u8), 0);
                (*tb).bins[i] = TBin {
                    count: 0,
                    cap: 0,
                    slots: ptr::null_mut(),
                };
            }
            let tc = (*tb).cache;
            (*tb).cache = ptr::null_mut();
            let mut pool = POOL.lock();
            (*tc).next_free = pool.0;
            pool.0 = tc;
        }
    }
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
        if !class.is_small() {
            // Large blocks are not prefetched: the cache only keeps what the thread frees.
            return arena.alloc_large(class, crate::pal::PAGE);
        }
        let bin = &mut (*tb).bins[class.index()];
        let want = (bin.cap as usize).div_ceil(2);
        let out = core::slice::from_raw_parts_mut(bin.slots, want);
        let n = arena.bins[class.index()].fill(class, &arena.pages, out);
        if n == 0 {
            return ptr::null_mut();
        }
        bin.count = n as u32 - 1;
        *bin.slots.add(n - 1)
    }
}

/// Gives back the oldest blocks of `class` so that `keep` remain (the newest ones).
///
/// # Safety
/// `tb` must be the calling thread's bins.
pub unsafe fn flush(tb: *mut ThreadBins, class: SizeClass, keep: usize) {
    // SAFETY: per the contract the bins and their slot storage are ours.
    unsafe {
        let bin = &mut (*tb).bins[class.index()];
        let count = bin.count as usize;
        if count <= keep {
            return;
        }
        let n = count - keep;
        let victims = core::slice::from_raw_parts_mut(bin.slots, n);
        return_grouped(class, victims);
        ptr::copy(bin.slots.add(n), bin.slots, keep);
        bin.count = keep as u32;
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
    POOL.lock_for_fork();
}

/// # Safety
/// The prepare handler must have taken the lock in this thread.
pub(crate) unsafe fn unlock_after_fork(child: bool) {
    // SAFETY: per the contract.
    unsafe {
        if child {
            POOL.reset_in_child()
        } else {
            POOL.unlock_after_fork()
        }
    }
}

const _: () = assert!(CAPS[0] >= 2 && CAPS[NCACHED - 1] >= 2);
