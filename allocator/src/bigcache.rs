//! The thread cache of large blocks above the bins' classes: a few freed blocks of 40 KiB to
//! 256 KiB per thread, kept whole for the thread's next request of the same class.
//!
//! The bins (`tcache.rs`) stop at 32 KiB: their fast paths index a table by class, and a bin
//! of blocks this large would hold megabytes. Above that every `malloc` went to the arena's
//! page heap and every `free` back (a lock each, a page-info word written per page, the
//! neighbours merged): 195 ns for a `malloc(256 KiB)`/`free` pair, where glibc, whose
//! threshold for `mmap` rises to such sizes, and mimalloc, which keeps them in thread-local
//! pages, take about 45 (Criterion's `alloc_free/262144`). tcmalloc caches up to 256 KiB in
//! its thread caches too.
//!
//! A thread keeps at most [`BIG_SLOTS`] blocks and [`BIG_BYTES`] bytes in its thread cache
//! (`tcache::TCache::big`, reached with `tcache::big_cache`; not in its thread block, which has
//! no room): `malloc` takes the newest block of the
//! class after the profiler's countdown had its say, so sampling sees every request; `free`
//! puts a block in and sends the oldest home when it would not fit. A cached block carries the
//! free mark in its first word like a block in a bin (`freed.rs`), so freeing it twice, from
//! any thread, aborts; every large block the arena hands out has the word cleared. The cache
//! goes home whole when its thread exits or gives its cache back (`malloc_trim`), and when
//! garbage collection finds it unused since the last round over the bins. A small block that
//! `realloc` grows into a large class takes the newest cached block too, if that has room for it
//! to grow to four times its size (`take_with_room`; the run is shrunk to the block, and it
//! grows in place over the rest): a buffer built and freed again and again starts in its last
//! copy instead of moving into it at the last step.
//!
//! Invariant: `blocks[..n]` are distinct live large runs' blocks of classes `classes[..n]`,
//! oldest first, each marked free, reachable by no thread but the owner; `bytes` is the sum of
//! their classes' sizes, at most [`BIG_BYTES`].

use core::sync::atomic::{AtomicU64, AtomicU8, AtomicUsize, Ordering};

use crate::arena;
use crate::freed;
use crate::size_class::{size_compute, SizeClass, NCACHED, NCLASSES, TCACHE_MAX};

/// Blocks a thread keeps at most.
pub const BIG_SLOTS: usize = 4;
/// Bytes a thread keeps at most: one block of the largest class, enough for a thread that
/// reuses one buffer of any of these sizes. What it costs: the suite's `realloc_growth` (16
/// buffers growing to 256 KiB) peaks at 8.9 MiB against 8.5 without the cache (with twice
/// this, 8.9 too).
pub const BIG_BYTES: usize = BIG_MAX;
/// The largest class the cache keeps (`tcache_max` may lower it).
pub const BIG_MAX: usize = 256 * 1024;

/// Classes from [`NCACHED`] up to [`BIG_MAX`].
pub const NBIG: usize = {
    let mut n = 0;
    while NCACHED + n < NCLASSES && size_compute(NCACHED + n) <= BIG_MAX {
        n += 1;
    }
    n
};
const _: () = assert!(size_compute(NCACHED - 1) == TCACHE_MAX && size_compute(NCACHED + NBIG - 1) == BIG_MAX);
const _: () = assert!(BIG_BYTES <= u32::MAX as usize);

/// The largest size kept, from `tcache_max` (0: none).
static LIMIT: AtomicUsize = AtomicUsize::new(BIG_MAX);

/// Applies `tcache_max` (bytes): classes above it are not kept.
pub fn configure(tcache_max: usize) {
    LIMIT.store(tcache_max.min(BIG_MAX), Ordering::Relaxed);
}

/// Allocations served by caches detached since, per class from [`NCACHED`] (a statistic).
pub static MERGED_HITS: [AtomicU64; NBIG] = [const { AtomicU64::new(0) }; NBIG];

/// One thread's cached large blocks. See the module docs for the invariant.
pub struct BigCache {
    blocks: [*mut u8; BIG_SLOTS],
    classes: [u8; BIG_SLOTS],
    n: u8,
    /// A block was taken since garbage collection last looked.
    used: bool,
    bytes: u32,
    /// Blocks held, per class from [`NCACHED`] (for a statistics reader on another thread;
    /// the owner stores, never read-modify-writes).
    held: [AtomicU8; NBIG],
    /// Allocations served, per class from [`NCACHED`] (a statistic, like `held`).
    hits: [AtomicU64; NBIG],
}

impl BigCache {
    /// Empty.
    pub const fn empty() -> BigCache {
        BigCache {
            blocks: [core::ptr::null_mut(); BIG_SLOTS],
            classes: [0; BIG_SLOTS],
            n: 0,
            used: false,
            bytes: 0,
            held: [const { AtomicU8::new(0) }; NBIG],
            hits: [const { AtomicU64::new(0) }; NBIG],
        }
    }

    /// Calls `visit(class, cached, nmalloc)` for each class it keeps: the blocks it holds and
    /// the allocations it served. Any thread may call it while the cache is attached.
    pub fn visit(&self, visit: &mut dyn FnMut(usize, u64, u64)) {
        for k in 0..NBIG {
            let held = self.held[k].load(Ordering::Relaxed) as u64;
            visit(NCACHED + k, held, self.hits[k].load(Ordering::Relaxed));
        }
    }

    /// Moves its allocation counts to [`MERGED_HITS`] (the cache is being detached).
    pub fn merge_hits(&self) {
        for (hits, merged) in self.hits.iter().zip(&MERGED_HITS) {
            merged.fetch_add(hits.swap(0, Ordering::Relaxed), Ordering::Relaxed);
        }
    }

    /// Counts one block of `class` more (`up`) or less in `held`.
    ///
    /// # Safety
    /// `class` must be one the cache keeps: `NCACHED <= class < NCACHED + NBIG`.
    #[inline(always)]
    unsafe fn count(&self, class: u8, up: bool) {
        // SAFETY: per the contract the index is below NBIG.
        let held = unsafe { self.held.get_unchecked(class as usize - NCACHED) };
        let n = held.load(Ordering::Relaxed);
        held.store(if up { n + 1 } else { n - 1 }, Ordering::Relaxed);
    }

    /// Removes entry `i`, returning its block (owner only).
    ///
    /// # Safety
    /// `i < n`.
    #[inline(always)]
    unsafe fn remove(&mut self, i: usize) -> *mut u8 {
        let n = self.n as usize;
        // SAFETY: per the contract and the invariant, `i < n <= BIG_SLOTS`.
        let (p, class) = unsafe { (*self.blocks.get_unchecked(i), *self.classes.get_unchecked(i)) };
        self.bytes -= SizeClass(class).size() as u32;
        // The newer entries move down one by one, not with `copy_within`: that is a call to the
        // C library's `memmove` even for nothing to move (50 instructions of the 74 this took in
        // a loop of 256 KiB blocks). The newest, the usual one to take, moves nothing.
        for j in i..n - 1 {
            self.blocks[j] = self.blocks[j + 1];
            self.classes[j] = self.classes[j + 1];
        }
        self.n -= 1;
        // SAFETY: per the invariant every entry's class is one the cache keeps.
        unsafe { self.count(class, false) };
        p
    }

    /// Sends block `i` home to its arena.
    ///
    /// # Safety
    /// `i < n`.
    unsafe fn evict(&mut self, i: usize) {
        // SAFETY: per the contract.
        let p = unsafe { self.remove(i) };
        // SAFETY: per the invariant `p` is a live large run's block no one else reaches.
        unsafe { arena::free_large_at(p) };
    }

    /// Sends every block home.
    #[link_section = ".text.hot.tally"]
    pub fn flush(&mut self) {
        while self.n > 0 {
            // SAFETY: `n > 0`; `&mut self` is the owner's.
            unsafe { self.evict(0) };
        }
    }
}

/// Whether blocks of `class` (a large class) are kept. If so, `NCACHED <= class < NCACHED +
/// NBIG`: its size is at most `LIMIT`, which is at most [`BIG_MAX`], the largest of those.
#[inline]
fn keeps(class: SizeClass) -> bool {
    class.index() >= NCACHED && class.size() <= LIMIT.load(Ordering::Relaxed)
}

impl BigCache {
    /// The newest cached block of `class` (a large class), unmarked and the caller's; null
    /// when there is none.
    pub fn take(&mut self, class: SizeClass) -> *mut u8 {
        if !keeps(class) {
            return core::ptr::null_mut();
        }
        let Some(i) = (0..self.n as usize).rev().find(|&i| self.classes[i] == class.0) else {
            return core::ptr::null_mut();
        };
        let hits = &self.hits[class.index() - NCACHED];
        hits.store(hits.load(Ordering::Relaxed) + 1, Ordering::Relaxed);
        // SAFETY: `find` looked below `n`.
        unsafe { self.hand_out(i) }
    }

    /// The newest cached block if it has at least `pages` pages, unmarked and the caller's; null
    /// otherwise. For a block that will grow (`alloc::alloc_moving`): a
    /// buffer that doubles to 256 KiB by `realloc`, freed and built again, finds its last copy
    /// here, and grows in place over it. Only the newest: taking any long enough block (the
    /// longest) raised the suite's `realloc_growth` peak RSS from 8.6 to 9.1 MiB, as growing
    /// buffers took the blocks later ones of their classes would have reused; the newest alone,
    /// to 8.9.
    #[link_section = ".text.hot.tally"]
    pub fn take_with_room(&mut self, pages: usize) -> *mut u8 {
        let Some(i) = (self.n as usize).checked_sub(1) else {
            return core::ptr::null_mut();
        };
        if SizeClass(self.classes[i]).pages() < pages {
            return core::ptr::null_mut();
        }
        // SAFETY: `i == n - 1`.
        unsafe { self.hand_out(i) }
    }

    /// Removes entry `i` and hands its block to the caller, unmarked; the cache counts as used
    /// (garbage collection leaves it be).
    ///
    /// # Safety
    /// `i < n`.
    #[inline(always)]
    unsafe fn hand_out(&mut self, i: usize) -> *mut u8 {
        // SAFETY: per the contract.
        let p = unsafe { self.remove(i) };
        self.used = true;
        // SAFETY: a cached block (at least 40 KiB, page-aligned), now the caller's.
        unsafe { freed::unmark(p) };
        p
    }

    /// Keeps `p`, a block of the large `class` the caller gives up, sending the oldest blocks
    /// home to make room. False when the class is not kept: the caller frees it.
    ///
    /// # Safety
    /// `p` must be a live block of `class` at the start of its run, not marked free, that the
    /// caller gives up.
    pub unsafe fn put(&mut self, p: *mut u8, class: SizeClass) -> bool {
        if !keeps(class) {
            return false;
        }
        let size = class.size() as u32;
        if self.n as usize == BIG_SLOTS || self.bytes + size > BIG_BYTES as u32 {
            self.make_room(size);
        }
        // SAFETY: per the contract `p` is ours to write, at least 8 bytes and 8-aligned;
        // `make_room` left `n < BIG_SLOTS`; `keeps` said the class is one the cache keeps.
        unsafe {
            freed::mark(p);
            let n = self.n as usize;
            *self.blocks.get_unchecked_mut(n) = p;
            *self.classes.get_unchecked_mut(n) = class.0;
            self.n += 1;
            self.bytes += size;
            self.count(class.0, true);
        }
        true
    }

    /// Sends the oldest blocks home until a block of `size` bytes fits: fewer than
    /// [`BIG_SLOTS`] blocks, at most [`BIG_BYTES`] bytes with it. Out of `put`'s way (its calls
    /// made `put` save six registers on every call).
    #[cold]
    #[inline(never)]
    #[link_section = ".text.hot.tally"]
    fn make_room(&mut self, size: u32) {
        while self.n as usize == BIG_SLOTS || self.bytes + size > BIG_BYTES as u32 {
            // SAFETY: the cache is full, so `n > 0`.
            unsafe { self.evict(0) };
        }
    }

    /// Whether it holds `p`.
    pub fn holds(&self, p: *mut u8) -> bool {
        self.blocks[..self.n as usize].contains(&p)
    }

    /// Sends home every block it holds that starts in `lo..hi`; whether there was one. For
    /// `realloc`: a block cached where a growing one would grow to keeps it from growing in
    /// place, whether it starts right after the growing block or past free pages after it (a
    /// buffer that doubled to 256 KiB from the 16 KiB block after the one that grows now).
    pub fn release(&mut self, lo: usize, hi: usize) -> bool {
        let mut released = false;
        let mut i = 0;
        while i < self.n as usize {
            if (lo..hi).contains(&(self.blocks[i] as usize)) {
                // SAFETY: `i < n`.
                unsafe { self.evict(i) };
                released = true;
            } else {
                i += 1;
            }
        }
        released
    }

    /// Garbage collection's look, once per round over the bins: a cache no
    /// allocation took from since the last look goes home.
    pub fn gc(&mut self) {
        if !self.used {
            self.flush();
        }
        self.used = false;
    }
}
