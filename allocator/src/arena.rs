//! Arenas: independent heaps that threads are spread across, so threads rarely contend.
//!
//! An arena is a page heap (large blocks and slabs come from it) and one bin per small class.
//! A thread is assigned the arena with the fewest threads when its cache is made (the lowest
//! index on a tie), like jemalloc: a program that keeps four threads alive at a time, however
//! many it creates, touches four or five arenas, not all of them, and a freshly started thread
//! never shares an arena while another sits empty. Blocks always go back to the arena that owns
//! their chunk, whichever thread frees them.

use core::sync::atomic::{AtomicBool, AtomicPtr, AtomicU32, AtomicUsize, Ordering};

use crate::bin::{self, Bin};
use crate::chunk::{ChunkHeader, RunState, Span};
use crate::extent::PageHeap;
use crate::size_class::{class_compute, size_compute, SizeClass, NSMALL, TCACHE_MAX};
use tally_pal::sync::{Mutex, Rank};
use tally_pal::{self as pal, PAGE, PAGE_SHIFT};

/// Most arenas Tally will use.
pub use crate::options::MAX_ARENAS;

/// One arena. See the module docs. Its constant initializer is all zero bytes, so [`ARENAS`]
/// takes no space in the file and no memory until an arena is used: in `.data` (as it was while
/// each arena stored its index) the first read of arena 0 mapped 64 KiB of the file around it.
pub struct Arena {
    /// Page runs of this arena's chunks.
    pub pages: Mutex<PageHeap>,
    /// Slabs, by small class.
    pub bins: [Bin; NSMALL],
    /// Page runs of freed sampled blocks, for the next samples (see [`RunStash`]).
    pub stash: RunStash,
    /// Threads whose cache uses this arena now.
    threads: AtomicU32,
}

/// Longest run a [`RunStash`] keeps, in pages: that of the 64 KiB class. Up to 8 pages (32 KiB,
/// the largest class the thread cache keeps) so that every sampled block a Criterion-like loop
/// of cached sizes frees is kept; up to 16 so that a program's sampled blocks of 40-64 KiB take
/// no page-heap lock either: `generations` (blocks of 4-64 KiB, most samples in the largest
/// classes) spent 180 instructions a sample on the page heap (1595 → 1219 a sample when the
/// stash grew to 16 pages).
pub const STASH_PAGES: usize = 16;
/// Runs a [`RunStash`] keeps of each length. With two, a fifth of `size_churn`'s samples at
/// `lg_prof_sample:17` (a few sampled blocks alive at once, freed in random order) found the
/// row empty and took a run from the page heap and later gave it back: 66 instructions a sample
/// on average, none with four; `generations` 1297 instructions a sample with two runs of each
/// length past 32 KiB, 1219 with four. At most 4 × (36 + 52) = 352 pages wait in a stash (the
/// rows of the classes of 1-8 pages and of 10, 12, 14 and 16), and only while samples use them:
/// a purge pass gives back a stash no sample touched since the pass before (`generations`'
/// peak RSS with the profiler on: 67.8-70.5 MiB with two, 67.9-70.4 with four, 5 runs each).
pub const STASH_SLOTS: usize = 4;
/// Pages of the largest class the thread cache keeps: rows up to this length hold runs of those
/// classes, the rows past it runs of larger classes (see [`RunStash`]).
pub const STASH_CACHED_PAGES: usize = TCACHE_MAX / PAGE;
const _: () = assert!(
    size_compute(class_compute(TCACHE_MAX + 1).index()) > TCACHE_MAX + PAGE,
    "a run's length says whether its class is one the thread cache keeps"
);
const _: () = assert!(STASH_CACHED_PAGES < STASH_PAGES);

/// A few page runs of freed sampled blocks kept out of the page heap, so that the next sample
/// of the same page count takes one from here: no page-heap lock, no search, no split and merge,
/// and a page that is resident already (a fresh run may need a page fault). Up to
/// [`STASH_SLOTS`] runs of each length 1 ..= [`STASH_PAGES`].
///
/// Each slot is an atomic pointer, null or a run nobody else holds: a push puts a run into an
/// empty slot with a compare-exchange, a take swaps a slot to null, so a run is in one slot or
/// owned by one thread, never both, without a lock (and a `fork` child finds every slot in a
/// consistent state). A stashed run stays allocated as far as the page heap knows, its pages
/// still say `SAMPLED` (statistics count it as active pages, not as a live block), and its
/// first word carries the free mark of the block it held, so a second free of that block is
/// caught. Purge passes give back the runs of a stash that was not used since the previous
/// pass, and `malloc_trim` gives back all ([`RunStash::drain`]).
///
/// Invariant: every non-null slot of row `k` holds a run of `k + 1` pages of this arena, in no
/// page-heap list and no other slot. A run's length is its class's ([`STASH_CACHED_PAGES`]
/// pages at most for a class the thread cache keeps, more for any other), so a sample of a
/// cached class takes a run made for one (in the sampled region, where Rust's `dealloc` looks).
pub struct RunStash {
    slots: [[AtomicPtr<Span>; STASH_SLOTS]; STASH_PAGES],
    /// A run was taken or put since the last purge pass looked.
    used: AtomicBool,
}

impl RunStash {
    const fn new() -> Self {
        RunStash {
            slots: [const { [const { AtomicPtr::new(core::ptr::null_mut()) }; STASH_SLOTS] }; STASH_PAGES],
            used: AtomicBool::new(false),
        }
    }

    fn touch(&self) {
        if !self.used.load(Ordering::Relaxed) {
            self.used.store(true, Ordering::Relaxed);
        }
    }

    /// Takes a stashed run of `pages` pages, or null if there is none.
    pub fn take(&self, pages: usize) -> *mut Span {
        let Some(row) = self.slots.get(pages.wrapping_sub(1)) else {
            return core::ptr::null_mut();
        };
        for slot in row {
            if !slot.load(Ordering::Relaxed).is_null() {
                let run = slot.swap(core::ptr::null_mut(), Ordering::Acquire);
                if !run.is_null() {
                    self.touch();
                    return run;
                }
            }
        }
        core::ptr::null_mut()
    }

    /// Keeps `run` if it is short enough and a slot of its length is empty; returns whether it
    /// was kept (if not, the caller still owns it).
    ///
    /// # Safety
    /// `run` must be a used run of this arena that nothing uses any more and that the caller
    /// gives up if this returns true.
    pub unsafe fn put(&self, run: *mut Span) -> bool {
        // SAFETY: per the contract, a live span.
        let pages = unsafe { (*run).pages } as usize;
        let Some(row) = self.slots.get(pages.wrapping_sub(1)) else {
            return false;
        };
        for slot in row {
            if slot.load(Ordering::Relaxed).is_null()
                && slot
                    .compare_exchange(core::ptr::null_mut(), run, Ordering::Release, Ordering::Relaxed)
                    .is_ok()
            {
                self.touch();
                return true;
            }
        }
        false
    }

    /// Gives every stashed run back to `heap` (this arena's page heap, locked by the caller) if
    /// `everything` or if the stash was not used since the last call. Returns the runs given back.
    pub fn drain(&self, heap: &mut PageHeap, everything: bool) -> usize {
        if !everything && self.used.swap(false, Ordering::Relaxed) {
            return 0;
        }
        let mut given = 0;
        for slot in self.slots.iter().flatten() {
            if slot.load(Ordering::Relaxed).is_null() {
                continue;
            }
            let run = slot.swap(core::ptr::null_mut(), Ordering::Acquire);
            if !run.is_null() {
                // SAFETY: a stashed run is a used run of this arena that nobody holds (the
                // swap made it ours); `heap` is this arena's, locked.
                unsafe { heap.free(run) };
                given += 1;
            }
        }
        given
    }

    /// Runs stashed now (racy while other threads sample).
    #[cfg(test)]
    pub fn stashed(&self) -> usize {
        self.slots
            .iter()
            .flatten()
            .filter(|s| !s.load(Ordering::Relaxed).is_null())
            .count()
    }
}

impl Arena {
    const fn new() -> Self {
        Arena {
            threads: AtomicU32::new(0),
            pages: Mutex::new(Rank::PageHeap, PageHeap::new()),
            bins: [const { Bin::new() }; NSMALL],
            stash: RunStash::new(),
        }
    }

    /// (free pages that may still be resident, pages in use by slabs and large blocks), read
    /// together under the page heap's lock; `None` if another thread holds it.
    pub fn idle_and_active_pages(&self) -> Option<(usize, usize)> {
        let heap = self.pages.try_lock()?;
        Some((
            heap.idle_pages(),
            heap.chunks * crate::chunk::USABLE_PAGES - heap.free_pages - heap.kept_pages,
        ))
    }

    /// Refills `out` with objects of the small `class` from its bin ([`Bin::fill_reclaiming`]); before the
    /// bin asks the page heap for a new slab, the arena's other bins give back their empty
    /// slabs ([`Arena::release_empty_slabs`]).
    #[link_section = ".text.hot.tally"]
    pub fn fill(&self, class: SizeClass, out: &mut [*mut u8]) -> usize {
        self.bins[class.index()].fill_reclaiming(class, &self.pages, self.index(), out, &mut || {
            self.release_empty_slabs(1u64 << class.index(), true, true);
        })
    }

    /// Gives the empty slabs of this arena's bins back to its page heap
    /// ([`Bin::release_empty`], `all`, `wait`), but those of the classes whose bits `except`
    /// sets; only bins that hold some are visited ([`bin::release_held`]). Returns the pages
    /// that went back.
    pub fn release_empty_slabs(&self, except: u64, all: bool, wait: bool) -> usize {
        bin::release_held(&self.bins, &self.pages, self.index() as usize, except, all, wait)
    }

    /// Whether this arena has ever mapped a chunk: one that has not holds no pages (passes over
    /// all arenas skip it without touching its lock).
    pub fn has_chunks(&self) -> bool {
        crate::chunk::arena_has_chunks(self.index())
    }

    /// Index in [`ARENAS`].
    pub fn index(&self) -> u32 {
        index_of(self as *const Arena as usize)
    }

    /// Threads counted as using this arena ([`next_arena`], [`join_arena`], [`leave_arena`]).
    #[cfg(test)]
    pub fn users(&self) -> u32 {
        self.threads.load(Ordering::Relaxed)
    }

    /// Allocates a large block of `class`, aligned to `align` (a power of two); null when out of
    /// memory or when the alignment cannot be met inside a chunk.
    #[inline(always)]
    pub fn alloc_large(&self, class: SizeClass, align: usize) -> *mut u8 {
        self.alloc_large_placed(class, align, 0)
    }

    /// [`Arena::alloc_large`], and with `room` above the class's pages (`align` a page at most)
    /// from the front of a free run of that many resident pages if there is one
    /// ([`PageHeap::alloc_with_room`]) instead of the best fit or a kept run.
    #[link_section = ".text.hot.tally"]
    pub fn alloc_large_placed(&self, class: SizeClass, align: usize, room: usize) -> *mut u8 {
        let mut one = [core::ptr::null_mut()];
        self.alloc_large_runs(class, align, room, &mut one);
        one[0]
    }

    /// Allocates up to `out.len()` large blocks of `class`, aligned to `align` (a power of two),
    /// under one lock, into `out`; returns how many (fewer only when out of memory or when the
    /// alignment cannot be met inside a chunk).
    #[inline(always)]
    pub fn alloc_large_batch(&self, class: SizeClass, align: usize, out: &mut [*mut u8]) -> usize {
        self.alloc_large_runs(class, align, 0, out)
    }

    /// [`Arena::alloc_large_batch`], placed as [`Arena::alloc_large_placed`] says.
    #[inline(never)]
    #[link_section = ".text.hot.tally"]
    fn alloc_large_runs(&self, class: SizeClass, align: usize, room: usize, out: &mut [*mut u8]) -> usize {
        let align_pages = (align >> PAGE_SHIFT).max(1);
        let pages = class.pages();
        let placed = room > pages && align_pages == 1;
        let mut heap = self.pages.lock();
        let mut n = 0;
        for slot in out.iter_mut() {
            let mut run = if align_pages == 1 && !placed {
                heap.take_kept(class)
            } else {
                core::ptr::null_mut()
            };
            if run.is_null() {
                run = if placed {
                    heap.alloc_with_room(pages, room, class.0, RunState::Large, self.index())
                } else {
                    heap.alloc_aligned(pages, align_pages, class.0, RunState::Large, self.index())
                };
            }
            if run.is_null() {
                break;
            }
            *slot = Span::start(run) as *mut u8;
            n += 1;
        }
        heap.large_allocated[class.index() - NSMALL] += n as u64;
        heap.large_runs += n as u64;
        n
    }

    /// Frees the large block whose run is `span`: kept whole for the next block of its class
    /// if `keep` and the page heap keeps its class ([`PageHeap::keep`]; its first word then
    /// carries the free mark, so a second `free` of it is caught), else into the free lists.
    ///
    /// # Safety
    /// `span` must be a live large run of this arena that nothing uses any more.
    #[inline(never)]
    #[link_section = ".text.hot.tally"]
    pub unsafe fn free_large(&self, span: *mut Span, keep: bool) {
        let mut heap = self.pages.lock();
        // SAFETY: per the contract.
        unsafe {
            heap.large_freed[(*span).class as usize - NSMALL] += 1;
            if keep && heap.keep(span) {
                crate::freed::mark(Span::start(span) as *mut u8);
                return;
            }
            heap.free(span);
        }
    }

    /// Frees the large blocks `blocks`, each at the start of its run, under one lock: a thread
    /// cache's bin sending blocks home.
    ///
    /// # Safety
    /// Every block must be a live large block of this arena, at the start of its run, that
    /// nothing uses any more.
    #[link_section = ".text.hot.tally"]
    pub unsafe fn free_large_batch(&self, blocks: &[*mut u8]) {
        let mut heap = self.pages.lock();
        for &p in blocks {
            // SAFETY: per the contract `p` starts a live large run of ours, which nothing uses.
            unsafe {
                let span = large_span(p);
                heap.large_freed[(*span).class as usize - NSMALL] += 1;
                // A cached class's block carries its free mark already (the bins mark every
                // block they take).
                if !heap.keep(span) {
                    heap.free(span);
                }
            }
        }
    }

    /// Frees the large block whose run is `span` and gives its pages back to the OS at once
    /// (`MADV_DONTNEED`, outside the lock), for a block whose contents moved elsewhere: they do
    /// not wait resident for `dirty_decay_ms`.
    ///
    /// # Safety
    /// As for [`Arena::free_large`].
    pub unsafe fn free_large_discarding(&self, span: *mut Span) {
        // SAFETY: per the contract the run is ours and dead; its pages lie in a mapped chunk.
        unsafe {
            pal::discard(
                Span::start(span) as *mut u8,
                ((*span).pages as usize) << PAGE_SHIFT,
            )
        };
        let mut heap = self.pages.lock();
        // SAFETY: per the contract; its pages were discarded just above.
        unsafe {
            heap.large_freed[(*span).class as usize - NSMALL] += 1;
            heap.free_discarded(span);
        }
    }

    /// Resizes the large block `span` in place to `class`. Returns false if it cannot.
    ///
    /// # Safety
    /// `span` must be a live large run of this arena.
    #[link_section = ".text.hot.tally"]
    pub unsafe fn resize_large_in_place(&self, span: *mut Span, class: SizeClass) -> bool {
        let pages = class.pages();
        let mut heap = self.pages.lock();
        // SAFETY: per the contract; the page heap's lock is held.
        unsafe {
            let have = (*span).pages as usize;
            let done = if pages == have {
                true
            } else if pages < have {
                heap.shrink_in_place(span, pages);
                true
            } else if heap.grow_in_place(span, pages) {
                true
            } else {
                heap.stop_keeping();
                false
            };
            if done {
                heap.large_freed[(*span).class as usize - NSMALL] += 1;
                heap.large_allocated[class.index() - NSMALL] += 1;
                (*span).class = class.0;
                (*Span::chunk(span)).mark_ends(Span::first_page(span), pages, class.0);
            }
            done
        }
    }

    /// Takes every bin's lock for `fork`'s prepare handler (the page heap's is taken after all
    /// arenas' bins: see `fork.rs`).
    pub(crate) fn lock_bins_for_fork(&self) {
        for bin in &self.bins {
            bin.lock_for_fork();
        }
    }

    /// Releases the locks taken by [`Arena::lock_bins_for_fork`].
    ///
    /// # Safety
    /// The prepare handler must have taken the locks in this thread.
    pub(crate) unsafe fn unlock_bins_after_fork(&self, child: bool) {
        for bin in &self.bins {
            // SAFETY: per the contract.
            unsafe { bin.unlock_after_fork(child) };
        }
    }
}

const fn build_arenas() -> [Arena; MAX_ARENAS] {
    [const { Arena::new() }; MAX_ARENAS]
}

/// The index of the arena whose bytes include `addr`, an address inside [`ARENAS`].
fn index_of(addr: usize) -> u32 {
    let base = ARENAS.as_ptr() as usize;
    let i = addr.wrapping_sub(base) / core::mem::size_of::<Arena>();
    i.min(MAX_ARENAS - 1) as u32
}
/// All arenas; the first [`arena_count`] are in use.
pub static ARENAS: [Arena; MAX_ARENAS] = build_arenas();

static ARENA_COUNT: AtomicUsize = AtomicUsize::new(1);

/// Arenas in use.
pub fn arena_count() -> usize {
    ARENA_COUNT.load(Ordering::Relaxed)
}

/// Sets the number of arenas (clamped to 1..=MAX_ARENAS). Called once at initialization.
pub fn set_arena_count(n: usize) {
    ARENA_COUNT.store(n.clamp(1, MAX_ARENAS), Ordering::Relaxed);
}

/// The arena for a new thread's cache: the one with the fewest threads, the lowest index on a
/// tie. Counts it as used until [`leave_arena`]. Two threads starting at once may pick the same
/// arena; that costs some sharing, never correctness.
#[link_section = ".text.hot.tally"]
pub fn next_arena() -> &'static Arena {
    let arena = pick_arena();
    arena.threads.fetch_add(1, Ordering::Relaxed);
    arena
}

/// The arena [`next_arena`] would give a new thread, not counted: for the calls a thread makes
/// while its cache is being made, which must not count it twice.
#[link_section = ".text.hot.tally"]
pub fn pick_arena() -> &'static Arena {
    ARENAS[..arena_count()]
        .iter()
        .min_by_key(|a| a.threads.load(Ordering::Relaxed))
        .unwrap_or(&ARENAS[0])
}

/// A thread starts using `arena` (moved there by `mallctl("thread.arena")`), until
/// [`leave_arena`].
pub fn join_arena(arena: &Arena) {
    arena.threads.fetch_add(1, Ordering::Relaxed);
}

/// A thread's cache stops using `arena` (the thread exited or gave up its cache).
pub fn leave_arena(arena: &Arena) {
    arena.threads.fetch_sub(1, Ordering::Relaxed);
}

/// Frees the large block at `p` to the arena owning its chunk (its run's span is at its first
/// page): for a cache sending a block home.
///
/// # Safety
/// `p` must be a live large block, at the start of its run, that nothing uses any more.
#[link_section = ".text.hot.tally"]
pub unsafe fn free_large_at(p: *mut u8) {
    // SAFETY: per the contract `p` starts a live large run, in a live chunk.
    unsafe { of_chunk(ChunkHeader::of(p as usize)).free_large(large_span(p), true) }
}

/// Shrinks the large block at `p` in place to the large `class` (at most its own), freeing the
/// pages past it to the page heap of the arena owning its chunk.
///
/// # Safety
/// `p` must be a live large block, at the start of its run, of a class at least `class`.
#[link_section = ".text.hot.tally"]
pub unsafe fn shrink_large_at(p: *mut u8, class: SizeClass) {
    // SAFETY: per the contract `p` starts a live large run, in a live chunk, that shrinks.
    let done = unsafe { of_chunk(ChunkHeader::of(p as usize)).resize_large_in_place(large_span(p), class) };
    debug_assert!(done);
}

/// The span of the large run that `p` starts.
///
/// # Safety
/// `p` must start a live large run (whose span is at its first page).
#[inline(always)]
unsafe fn large_span(p: *mut u8) -> *mut Span {
    let chunk = ChunkHeader::of(p as usize);
    // SAFETY: per the contract `p` lies in a live chunk, at its run's first page.
    unsafe { core::ptr::addr_of_mut!((*chunk).spans[(*chunk).page_index(p as usize)]) }
}

/// The arena owning the chunk `chunk`.
///
/// # Safety
/// `chunk` must be a live chunk header.
#[inline]
pub unsafe fn of_chunk(chunk: *const ChunkHeader) -> &'static Arena {
    // SAFETY: per the contract; chunk arena indexes are always < MAX_ARENAS.
    &ARENAS[unsafe { (*chunk).arena } as usize]
}

/// Whether `p`, the start of a large run, is a freed block whose run its page heap keeps whole
/// (see `extent.rs`). Takes the page heap's lock.
///
/// # Safety
/// `p` must start a large run (live, or kept) of a live chunk.
pub unsafe fn large_is_kept(p: *mut u8) -> bool {
    let chunk = ChunkHeader::of(p as usize);
    // SAFETY: per the contract `p` starts a large run in a live chunk, which its arena owns;
    // the span's state is read under the page heap's lock.
    unsafe {
        let _heap = of_chunk(chunk).pages.lock();
        (*large_span(p)).state == RunState::Kept
    }
}

/// Whether `p`, a valid block boundary of the small `class`, is free in its slab (see
/// [`Bin::slot_is_free`]). Takes the owning bin's lock.
pub fn slot_is_free(p: *mut u8, class: SizeClass) -> bool {
    let chunk = ChunkHeader::of(p as usize);
    // SAFETY: a valid small block lies in a live chunk whose arena owns its slab.
    unsafe { of_chunk(chunk).bins[class.index()].slot_is_free(class, p) }
}

const _: () = assert!(PAGE == 4096);

#[cfg(test)]
mod tests {
    use super::*;
    use crate::chunk::{info_class, info_offset, CHUNK, FREE_RUN, USABLE_PAGES};
    use crate::size_class::class_for;
    use core::ptr;
    use std::sync::Mutex as TestLock;

    /// Arenas past the in-use ones (the default `narenas` would need 242 CPUs to reach them):
    /// no thread is ever given one, so a test allocating from its own has exact counts.
    const SPARE_LARGE: usize = MAX_ARENAS - 6;
    const SPARE_RESIZE: usize = MAX_ARENAS - 7;
    const SPARE_SMALL: usize = MAX_ARENAS - 8;
    const SPARE_LEAVE: usize = MAX_ARENAS - 9;
    const SPARE_STASH: usize = MAX_ARENAS - 11;
    /// `of_chunk_returns_the_owner`'s large block: not [`SPARE_LARGE`], whose test counts its
    /// arena's large runs exactly while the tests run side by side (it failed once so, counting
    /// two runs for its one).
    const SPARE_OWNER: usize = MAX_ARENAS - 14;

    fn spare(index: usize) -> &'static Arena {
        assert!(index >= arena_count(), "arena {index} is in use");
        &ARENAS[index]
    }

    /// The tests that bump thread counts to steer [`next_arena`] run one at a time.
    static CHOICE: TestLock<()> = TestLock::new(());

    /// Far more threads than a test run has.
    const BIG: u32 = 1 << 24;

    /// Adds `BIG` to the thread counts of the in-use arenas in `bumped` until dropped (also when
    /// an assertion fails).
    struct Bump(std::vec::Vec<usize>);

    impl Bump {
        fn new(bumped: impl Iterator<Item = usize>) -> Self {
            let bumped: std::vec::Vec<usize> = bumped.collect();
            for &i in &bumped {
                ARENAS[i].threads.fetch_add(BIG, Ordering::Relaxed);
            }
            Bump(bumped)
        }
    }

    impl Drop for Bump {
        fn drop(&mut self) {
            for &i in &self.0 {
                ARENAS[i].threads.fetch_sub(BIG, Ordering::Relaxed);
            }
        }
    }

    fn threads(i: usize) -> u32 {
        ARENAS[i].threads.load(Ordering::Relaxed)
    }

    /// (chunks, free pages, large blocks of `class` allocated, freed) of `arena`'s page heap.
    fn heap_counts(arena: &Arena, class: SizeClass) -> (usize, usize, u64, u64) {
        let heap = arena.pages.lock();
        let i = class.index() - NSMALL;
        (
            heap.chunks,
            heap.free_pages,
            heap.large_allocated[i],
            heap.large_freed[i],
        )
    }

    fn large_class(bytes: usize) -> SizeClass {
        let class = class_for(bytes).unwrap();
        assert!(!class.is_small() && class.pages() * PAGE == bytes);
        class
    }

    /// The span describing the run that starts at `p`.
    fn span_of(p: *mut u8) -> *mut Span {
        let chunk = ChunkHeader::of(p as usize);
        // SAFETY: `p` is a live block of a chunk; its page index is in bounds.
        unsafe { ptr::addr_of_mut!((*chunk).spans[(*chunk).page_index(p as usize)]) }
    }

    /// Checks the page-info words of the large block of `pages` pages at `p`: `class` at offset
    /// 0 on its first page and `pages - 1` on its last, [`FREE_RUN`] between.
    fn assert_marked(p: *mut u8, pages: usize, class: SizeClass) {
        let chunk = ChunkHeader::of(p as usize);
        // SAFETY: the run lies in a live chunk.
        unsafe {
            let first = (*chunk).page_index(p as usize);
            for k in 0..pages {
                let info = (*chunk).page_info[first + k].load(Ordering::Relaxed);
                if k == 0 || k == pages - 1 {
                    assert_eq!((info_class(info), info_offset(info)), (class.0, k), "page {k}");
                } else {
                    assert_eq!(info_class(info), FREE_RUN, "page {k}");
                }
            }
        }
    }

    #[test]
    fn index_is_the_position_in_the_table() {
        for (i, arena) in ARENAS.iter().enumerate() {
            assert_eq!(arena.index() as usize, i);
            // Any address inside the arena names it, not just its first byte.
            let inside = &arena.bins[NSMALL - 1] as *const Bin as usize;
            assert_eq!(index_of(inside) as usize, i);
        }
    }

    #[test]
    fn next_arena_picks_the_one_with_fewest_threads() {
        let _serial = CHOICE.lock().unwrap_or_else(|e| e.into_inner());
        let n = arena_count();
        // Every in-use arena but the last carries BIG more threads than any real count.
        let target = n - 1;
        let _bump = Bump::new(0..target);
        let before = threads(target);
        let picked = next_arena();
        assert_eq!(picked.index() as usize, target);
        assert!(threads(target) > before, "the pick is counted");
        leave_arena(picked);
    }

    #[test]
    fn next_arena_takes_the_lowest_index_on_a_tie() {
        let _serial = CHOICE.lock().unwrap_or_else(|e| e.into_inner());
        let n = arena_count();
        if n < 2 {
            return;
        }
        let (low, high) = (n - 2, n - 1);
        let _bump = Bump::new(0..low);
        // Other threads may start or end meanwhile; retry until a pick saw no such change.
        for _ in 0..1000 {
            let (a, b) = (threads(low), threads(high));
            let (lift, by) = if a < b { (low, b - a) } else { (high, a - b) };
            ARENAS[lift].threads.fetch_add(by, Ordering::Relaxed);
            let tie = a.max(b);
            let picked = next_arena();
            let after = (threads(low), threads(high));
            ARENAS[lift].threads.fetch_sub(by, Ordering::Relaxed);
            leave_arena(picked);
            let expected = if picked.index() as usize == low {
                (tie + 1, tie)
            } else {
                (tie, tie + 1)
            };
            if after == expected {
                assert_eq!(picked.index() as usize, low, "tie between {low} and {high}");
                return;
            }
        }
        panic!("the thread counts never held still");
    }

    #[test]
    fn leave_arena_gives_back_one_thread() {
        let arena = spare(SPARE_LEAVE);
        arena.threads.fetch_add(2, Ordering::Relaxed);
        leave_arena(arena);
        assert_eq!(threads(SPARE_LEAVE), 1);
        leave_arena(arena);
        assert_eq!(threads(SPARE_LEAVE), 0);
    }

    #[test]
    fn the_stash_keeps_a_few_runs_of_each_length_and_gives_them_back() {
        let arena = spare(SPARE_STASH);
        let owner = large_class(16 * PAGE).0;
        let run = |pages: usize| {
            let r = arena
                .pages
                .lock()
                .alloc(pages, owner, RunState::Large, arena.index());
            assert!(!r.is_null());
            r
        };
        let (chunks0, free0) = {
            let heap = arena.pages.lock();
            (heap.chunks, heap.free_pages)
        };
        let ones: std::vec::Vec<_> = (0..STASH_SLOTS + 1).map(|_| run(1)).collect();
        let three = run(3);
        let long = run(STASH_PAGES + 1);
        // A row past the cached classes' (a class of 40 KiB) keeps as many.
        let tens: std::vec::Vec<_> = (0..STASH_SLOTS + 1).map(|_| run(10)).collect();
        // SAFETY: every run is a used run of this arena that the test gives up when kept.
        unsafe {
            for &r in &ones[..STASH_SLOTS] {
                assert!(arena.stash.put(r));
            }
            assert!(!arena.stash.put(ones[STASH_SLOTS]), "a full row keeps no more");
            assert!(arena.stash.put(three));
            assert!(!arena.stash.put(long), "runs past STASH_PAGES are not kept");
            for &r in &tens[..STASH_SLOTS] {
                assert!(arena.stash.put(r));
            }
            assert!(
                !arena.stash.put(tens[STASH_SLOTS]),
                "a full long row keeps no more"
            );
        }
        assert_eq!(arena.stash.stashed(), 2 * STASH_SLOTS + 1);
        let ten = arena.stash.take(10);
        assert!(tens[..STASH_SLOTS].contains(&ten));
        assert!(arena.stash.take(2).is_null(), "no run of 2 pages");
        assert!(arena.stash.take(0).is_null() && arena.stash.take(STASH_PAGES + 1).is_null());
        let taken = arena.stash.take(1);
        assert!(
            ones[..STASH_SLOTS].contains(&taken),
            "a stashed run of the length asked"
        );
        assert_eq!(arena.stash.take(3), three);
        // SAFETY: as above.
        unsafe { assert!(arena.stash.put(three)) };
        // (No assertion with the page heap's lock held: a failing one allocates.)
        let (kept, given) = {
            let mut heap = arena.pages.lock();
            // Used since the last pass: a pass keeps the runs; not used since: the next pass
            // gives them back.
            (
                arena.stash.drain(&mut heap, false),
                arena.stash.drain(&mut heap, false),
            )
        };
        // The ones and tens not taken and the run of three.
        assert_eq!((kept, given), (0, 2 * STASH_SLOTS - 1));
        assert_eq!(arena.stash.stashed(), 0);
        {
            let mut heap = arena.pages.lock();
            // SAFETY: runs of this arena, not stashed, not used again.
            unsafe {
                heap.free(taken);
                heap.free(ones[STASH_SLOTS]);
                heap.free(long);
                heap.free(ten);
                heap.free(tens[STASH_SLOTS]);
            }
        }
        let again = run(3);
        // SAFETY: as above.
        unsafe { assert!(arena.stash.put(again)) };
        let all = arena.stash.drain(&mut arena.pages.lock(), true);
        assert_eq!(all, 1, "trim takes all");
        let (chunks, free) = {
            let heap = arena.pages.lock();
            heap.debug_check_invariants();
            (heap.chunks, heap.free_pages)
        };
        assert_eq!(free, free0 + (chunks - chunks0) * USABLE_PAGES);
    }

    #[test]
    fn large_blocks_come_from_the_arena_and_go_back() {
        let arena = spare(SPARE_LARGE);
        let class = large_class(16 * PAGE);
        let pages = class.pages();
        let (chunks0, free0, allocated0, freed0) = heap_counts(arena, class);
        let large_runs = arena.pages.lock().large_runs;

        let p = arena.alloc_large(class, PAGE);
        assert!(!p.is_null());
        assert_eq!(p as usize % PAGE, 0);
        // SAFETY: a fresh block of `pages` pages.
        unsafe { ptr::write_bytes(p, 0xab, pages * PAGE) };
        let span = span_of(p);
        // SAFETY: the span of a live run.
        unsafe {
            assert_eq!((*span).state, RunState::Large);
            assert_eq!(((*span).pages as usize, (*span).class), (pages, class.0));
            assert_eq!((*ChunkHeader::of(p as usize)).arena as usize, SPARE_LARGE);
        }
        assert_marked(p, pages, class);
        let (chunks, free, allocated, freed) = heap_counts(arena, class);
        assert_eq!(free + pages, free0 + (chunks - chunks0) * USABLE_PAGES);
        assert_eq!((allocated, freed), (allocated0 + 1, freed0));
        let runs_now = arena.pages.lock().large_runs;
        assert_eq!(runs_now, large_runs + 1);

        let aligned = arena.alloc_large(class, 64 * PAGE);
        assert!(!aligned.is_null());
        assert_eq!(aligned as usize % (64 * PAGE), 0);
        // An alignment no run inside a chunk can meet.
        assert!(arena.alloc_large(class, CHUNK).is_null());
        assert_eq!(heap_counts(arena, class).2, allocated0 + 2);

        // SAFETY: both are live large runs of this arena, not used again.
        unsafe {
            arena.free_large(span, false);
            arena.free_large(span_of(aligned), false);
        }
        let (chunks, free, allocated, freed) = heap_counts(arena, class);
        assert_eq!(free, free0 + (chunks - chunks0) * USABLE_PAGES);
        assert_eq!((allocated, freed), (allocated0 + 2, freed0 + 2));
        arena.pages.lock().debug_check_invariants();
    }

    #[test]
    fn large_blocks_resize_in_place_when_the_next_pages_are_free() {
        let arena = spare(SPARE_RESIZE);
        let small = large_class(5 * PAGE);
        let big = large_class(8 * PAGE);
        let (_, _, big_allocated0, _) = heap_counts(arena, big);
        let (_, _, small_allocated0, small_freed0) = heap_counts(arena, small);
        let first = arena.alloc_large(small, PAGE);
        let second = arena.alloc_large(small, PAGE);
        assert_eq!(
            second as usize,
            first as usize + small.pages() * PAGE,
            "precondition: a fresh arena hands out adjacent runs"
        );
        let (a, b) = (span_of(first), span_of(second));
        let free_before = arena.pages.lock().free_pages;

        // SAFETY: `a` and `b` are live large runs of this arena.
        unsafe {
            assert!(!arena.resize_large_in_place(a, big), "`second` is in the way");
            assert_eq!(((*a).pages as usize, (*a).class), (small.pages(), small.0));
            assert_marked(first, small.pages(), small);

            assert!(arena.resize_large_in_place(b, big), "free pages follow `second`");
            assert_eq!(((*b).pages as usize, (*b).class), (big.pages(), big.0));
            assert_marked(second, big.pages(), big);
            let grown = big.pages() - small.pages();
            let free_pages = arena.pages.lock().free_pages;
            assert_eq!(free_pages, free_before - grown);
            assert_eq!(heap_counts(arena, small).3, small_freed0 + 1);
            assert_eq!(heap_counts(arena, big).2, big_allocated0 + 1);

            assert!(arena.resize_large_in_place(b, big), "the same class always fits");
            assert_eq!((*b).pages as usize, big.pages());

            assert!(arena.resize_large_in_place(b, small), "shrinking always fits");
            assert_eq!(((*b).pages as usize, (*b).class), (small.pages(), small.0));
            assert_marked(second, small.pages(), small);
            let after = second as usize + small.pages() * PAGE;
            let chunk = ChunkHeader::of(after);
            let info = (*chunk).page_info[(*chunk).page_index(after)].load(Ordering::Relaxed);
            assert_eq!(info_class(info), FREE_RUN, "the tail went back");
            let free_pages = arena.pages.lock().free_pages;
            assert_eq!(free_pages, free_before);

            arena.free_large(a, false);
            arena.free_large(b, false);
        }
        assert_eq!(heap_counts(arena, small).2, small_allocated0 + 3);
        arena.pages.lock().debug_check_invariants();
    }

    #[test]
    fn of_chunk_returns_the_owner() {
        let small_arena = spare(SPARE_SMALL);
        let class = SizeClass(3);
        let mut one = [ptr::null_mut()];
        let n = small_arena.bins[class.index()].fill(class, &small_arena.pages, SPARE_SMALL as u32, &mut one);
        assert_eq!(n, 1);
        let large_arena = spare(SPARE_OWNER);
        let large = large_arena.alloc_large(large_class(4 * PAGE), PAGE);
        assert!(!large.is_null());
        // SAFETY: both blocks lie in live chunks; each is given back once.
        unsafe {
            let owner = of_chunk(ChunkHeader::of(one[0] as usize));
            assert!(ptr::eq(owner, small_arena));
            let owner = of_chunk(ChunkHeader::of(large as usize));
            assert!(ptr::eq(owner, large_arena));
            assert_eq!(
                small_arena.bins[class.index()].return_batch(
                    class,
                    &small_arena.pages,
                    &one,
                    SPARE_SMALL as u32
                ),
                1
            );
            large_arena.free_large(span_of(large), false);
        }
    }
}
