//! Arenas: independent heaps that threads are spread across, so threads rarely contend.
//!
//! An arena is a page heap (large blocks and slabs come from it) and one bin per small class.
//! A thread is assigned the arena with the fewest threads when its cache is made (the lowest
//! index on a tie), like jemalloc: a program that keeps four threads alive at a time, however
//! many it creates, touches four or five arenas, not all of them, and a freshly started thread
//! never shares an arena while another sits empty. Blocks always go back to the arena that owns
//! their chunk, whichever thread frees them.

use core::sync::atomic::{AtomicU32, AtomicU64, AtomicUsize, Ordering};

use crate::bin::Bin;
use crate::chunk::{ChunkHeader, RunState, Span};
use crate::extent::PageHeap;
use crate::size_class::{SizeClass, NSMALL};
use tally_pal::sync::{Mutex, Rank};
use tally_pal::{PAGE, PAGE_SHIFT};

/// Most arenas Tally will use.
pub use crate::options::MAX_ARENAS;

/// Large blocks allocated (a statistic).
pub static LARGE_ALLOCS: AtomicU64 = AtomicU64::new(0);

/// One arena. See the module docs. Its constant initializer is all zero bytes, so [`ARENAS`]
/// takes no space in the file and no memory until an arena is used: in `.data` (as it was while
/// each arena stored its index) the first read of arena 0 mapped 64 KiB of the file around it.
pub struct Arena {
    /// Page runs of this arena's chunks.
    pub pages: Mutex<PageHeap>,
    /// Slabs, by small class.
    pub bins: [Bin; NSMALL],
    /// Threads whose cache uses this arena now.
    threads: AtomicU32,
}

impl Arena {
    const fn new() -> Self {
        Arena {
            threads: AtomicU32::new(0),
            pages: Mutex::new(Rank::PageHeap, PageHeap::new()),
            bins: [const { Bin::new() }; NSMALL],
        }
    }

    /// Index in [`ARENAS`].
    pub fn index(&self) -> u32 {
        index_of(self as *const Arena as usize)
    }

    /// Allocates a large block of `class`, aligned to `align` (a power of two); null when out of
    /// memory or when the alignment cannot be met inside a chunk.
    pub fn alloc_large(&self, class: SizeClass, align: usize) -> *mut u8 {
        let align_pages = (align >> PAGE_SHIFT).max(1);
        let mut heap = self.pages.lock();
        let run = heap.alloc_aligned(class.pages(), align_pages, class.0, RunState::Large, self.index());
        if run.is_null() {
            return core::ptr::null_mut();
        }
        heap.large_allocated[class.index() - NSMALL] += 1;
        drop(heap);
        LARGE_ALLOCS.fetch_add(1, Ordering::Relaxed);
        Span::start(run) as *mut u8
    }

    /// Frees the large block whose run is `span`.
    ///
    /// # Safety
    /// `span` must be a live large run of this arena that nothing uses any more.
    pub unsafe fn free_large(&self, span: *mut Span) {
        let mut heap = self.pages.lock();
        // SAFETY: per the contract.
        unsafe {
            heap.large_freed[(*span).class as usize - NSMALL] += 1;
            heap.free(span);
        }
    }

    /// Resizes the large block `span` in place to `class`. Returns false if it cannot.
    ///
    /// # Safety
    /// `span` must be a live large run of this arena.
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
            } else {
                heap.grow_in_place(span, pages)
            };
            if done {
                heap.large_freed[(*span).class as usize - NSMALL] += 1;
                heap.large_allocated[class.index() - NSMALL] += 1;
                (*span).class = class.0;
                (*Span::chunk(span)).mark_run(Span::first_page(span), pages, class.0);
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
pub fn next_arena() -> &'static Arena {
    let arena = ARENAS[..arena_count()]
        .iter()
        .min_by_key(|a| a.threads.load(Ordering::Relaxed))
        .unwrap_or(&ARENAS[0]);
    arena.threads.fetch_add(1, Ordering::Relaxed);
    arena
}

/// A thread's cache stops using `arena` (the thread exited or gave up its cache).
pub fn leave_arena(arena: &Arena) {
    arena.threads.fetch_sub(1, Ordering::Relaxed);
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

const _: () = assert!(PAGE == 4096);
