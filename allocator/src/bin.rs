//! Bins: per arena and small size class, the slabs that objects of that class come from.
//!
//! A slab is a run of pages cut into equal objects, with a bitmap of free objects in its span
//! descriptor (out of band: a write past the end of an object cannot corrupt it). A bin hands
//! out objects in batches to thread caches ([`Bin::fill`]) and takes them back in batches
//! ([`Bin::return_batch`]); every batch costs one lock.
//!
//! Each slab of the bin is in exactly one of four places:
//! - `current`: the slab batches are cut from;
//! - the `partial` list: other slabs with some objects free and some out;
//! - the `empty` list: other slabs whose objects have all come back;
//! - nowhere: full slabs (`nfree == 0`), until an object comes back.
//!
//! A refill cuts from `current`, then from a partial slab, then from an empty one, and only then
//! asks the page heap for a new slab. A slab that empties stays in its bin when the bin's slabs
//! come to [`KEEP_EMPTY_MIN_PAGES`] or more (and freed pages wait for purge passes at all,
//! `dirty_decay_ms` above 0): taken again, its opened pages still hold every slot's free mark
//! (`freed.rs`), so no page is opened and no mark written again, and the page heap's lock is not
//! taken twice for it. A program that frees a large structure and builds it again (Criterion's
//! `btree_strings`: every slab of the map empties at each drop) wrote 2.16 million marks an
//! iteration without it, 9% of its time. A smaller bin gives an emptied slab back at once: a
//! program whose every class holds a few slabs (the suite's `size_churn`) would otherwise keep
//! one empty in many classes, pages the page heap shares among all of them.
//! Empty slabs go back to the page heap ([`Bin::release_empty`]):
//! - at each purge pass, those the bin did not need since the pass before (the fewest it held
//!   at any time since then, its low-water mark, oldest first), so they decay as free pages do;
//! - all of them, in its arena, when another bin needs a new slab, before the page heap is asked
//!   for one;
//! - all of them as soon as any arena faults fresh pages in (`decay::balance`, at the next slow
//!   path of any thread): those pages could have come from them, so empty slabs wait in bins
//!   only while the program's pages suffice, as they would wait free in a page heap;
//! - all of them on `malloc_trim` and when the OS refuses memory (with an empty `current`,
//!   which otherwise stays).

use core::ptr;
use core::sync::atomic::{AtomicU64, Ordering};

use crate::chunk::{
    info_offset, info_run_bytes, page_info, ChunkHeader, RunLinks, RunState, Span, CHUNK_PAGES, UNOPENED,
};
use crate::extent::{PageHeap, DIRTY_DECAY_MS};
use crate::freed;
use crate::list::{Links, List};
use crate::options::MAX_ARENAS;
use crate::size_class::{SizeClass, SlotCheck, NSMALL};
use tally_pal::sync::{Mutex, Rank};
use tally_pal::{self as pal, PAGE, PAGE_SHIFT};

/// The slabs of one class in one arena. See the module docs for the invariant.
pub struct BinSlabs {
    current: *mut Span,
    partial: List<RunLinks>,
    /// Slabs with every object free, newest first (`counts.empty` of them).
    empty: List<RunLinks>,
    /// The fewest `empty` held since the last purge pass looked ([`Bin::release_empty`]).
    empty_low: usize,
    /// Its slabs, and what it did so far.
    counts: BinCounts,
}

/// A bin's statistics, read under its lock ([`Bin::counts`]). Kept by each bin under the lock it
/// takes anyway: as process-wide atomics (`FILLS`, `FLUSHES`, and the thread cache's `MISSES` per
/// class until the twentieth pass of issue 13) every fill and every batch returned was a locked
/// add on a line all threads write: on the suite's `prodcons` (consumers returning every block
/// to their producers' arenas) 42% of the cycles `perf` sampled were in `return_grouped`, two
/// thirds of them at that add.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct BinCounts {
    /// Slabs the bin holds.
    pub slabs: usize,
    /// Of those, the empty ones it keeps for its next refills (free pages, for the statistics:
    /// `stats.rs` counts them dirty).
    pub empty: usize,
    /// Objects handed out of its slabs so far.
    pub handed_out: u64,
    /// Objects returned to its slabs so far.
    pub returned: u64,
    /// Fills so far: the thread caches' misses on the bin's class, and the allocations of
    /// threads without a cache.
    pub fills: u64,
    /// Batches returned so far.
    pub batches: u64,
}

// SAFETY: the spans live in chunk headers forever; the state is only touched under the lock.
unsafe impl Send for BinSlabs {}

/// A bin: its slabs behind a lock.
pub struct Bin {
    slabs: Mutex<BinSlabs>,
}

impl Bin {
    /// An empty bin.
    pub const fn new() -> Self {
        Bin {
            slabs: Mutex::new(
                Rank::Bin,
                BinSlabs {
                    current: ptr::null_mut(),
                    partial: List::new(),
                    empty: List::new(),
                    empty_low: 0,
                    counts: BinCounts {
                        slabs: 0,
                        empty: 0,
                        handed_out: 0,
                        returned: 0,
                        fills: 0,
                        batches: 0,
                    },
                },
            ),
        }
    }

    /// [`Bin::fill_reclaiming`] with nothing to reclaim (a test's bin).
    #[cfg(test)]
    pub fn fill(&self, class: SizeClass, pages: &Mutex<PageHeap>, arena: u32, out: &mut [*mut u8]) -> usize {
        self.fill_reclaiming(class, pages, arena, out, &mut || {})
    }

    /// Writes up to `out.len()` free objects of `class` into `out`, taking new slabs from `pages`
    /// when needed. Returns how many it wrote (0 only when the OS is out of memory). Before it asks
    /// the page heap for a new slab while other bins of arena `arena` hold empty slabs, it calls
    /// `reclaim` once, with this bin's lock let go (a thread takes one bin's lock at a time): the
    /// arena's other bins give theirs back (`Arena::fill`).
    #[link_section = ".text.hot.tally"]
    pub fn fill_reclaiming(
        &self,
        class: SizeClass,
        pages: &Mutex<PageHeap>,
        arena: u32,
        out: &mut [*mut u8],
        reclaim: &mut dyn FnMut(),
    ) -> usize {
        let mut bin = self.slabs.lock();
        let mut n = 0;
        let mut reclaimed = false;
        while n < out.len() {
            let mut slab = bin.current;
            // SAFETY: `current` is null or a live slab of this bin (bin invariant).
            if slab.is_null() || unsafe { (*slab).nfree } == 0 {
                // SAFETY: the partial and empty lists' slabs are live slabs of this bin.
                slab = unsafe { bin.partial.pop_front() };
                if slab.is_null() {
                    // SAFETY: as above.
                    slab = unsafe { bin.empty.pop_front() };
                    if slab.is_null() && !reclaimed && others_hold(arena, class) {
                        // Before the page heap gives this class pages, the other bins of the
                        // arena give it their empty slabs.
                        reclaimed = true;
                        drop(bin);
                        reclaim();
                        bin = self.slabs.lock();
                        continue;
                    }
                    if slab.is_null() {
                        slab = new_slab(class, pages, arena);
                        if slab.is_null() {
                            break;
                        }
                        bin.counts.slabs += 1;
                    } else {
                        bin.counts.empty -= 1;
                        bin.empty_low = bin.empty_low.min(bin.counts.empty);
                        if bin.counts.empty == 0 {
                            note_holding(arena as usize, class, false);
                        }
                    }
                }
                bin.current = slab;
            }
            // SAFETY: `slab` is a live slab of `class` with free objects, owned by this bin.
            n += unsafe { take(slab, class, &mut out[n..]) };
        }
        bin.counts.handed_out += n as u64;
        bin.counts.fills += 1;
        n
    }

    /// The bin's statistics, read under the lock.
    pub fn counts(&self) -> BinCounts {
        self.slabs.lock().counts
    }

    /// Returns the objects at the front of `objects` (all of `class`) that lie in chunks of
    /// arena `arena`, this bin's, to their slabs, up to the first that does not; says how many.
    /// Slabs that become empty go to the bin's empty list, or back to `pages` when
    /// the bin's slabs come to fewer than [`KEEP_EMPTY_MIN_PAGES`] or freed pages do not wait
    /// (`dirty_decay_ms` 0 or -1: see [`keeps_empty`]). Blocks of one slab in a row cost a
    /// compare and their bitmap bits each; the slab's count and lists change once for them
    /// ([`settle`]). The arena is looked at once a slab, as the slab is found: looked at once a
    /// block before the batch (`tcache::return_grouped`, for batches nearly all one arena's)
    /// it cost 8 instructions a block flushed in `btree_strings`' drop (2.16 million blocks,
    /// 3201.8 -> 3184.9 million instructions for the whole build and drop under callgrind).
    ///
    /// # Safety
    /// Every pointer must lie in a live chunk; those of arena `arena` must be blocks of `class`
    /// allocated from this bin and not yet returned. A block returned twice is detected and
    /// aborts the process.
    pub unsafe fn return_batch(
        &self,
        class: SizeClass,
        pages: &Mutex<PageHeap>,
        objects: &[*mut u8],
        arena: u32,
    ) -> usize {
        let mut bin = self.slabs.lock();
        bin.counts.batches += 1;
        let (check, objects_per_slab) = (SlotCheck::of(class.0), class.slab_objects());
        let slab_bytes = class.pages() << PAGE_SHIFT;
        // The slab of the blocks just looked at: its span, start, whether it was full before
        // them, and how many of them came back. Blocks often come back in runs from one slab (a
        // structure freed in the order it was built, a thread cache's batch of blocks a refill
        // took together): each block of a run costs its bitmap bit and a compare, and the slab's
        // count and lists change once for the run.
        let (mut slab, mut start, mut was_full, mut back) = (ptr::null_mut::<Span>(), 0usize, false, 0u16);
        let mut done = objects.len();
        for (i, &p) in objects.iter().enumerate() {
            let addr = p as usize;
            if addr.wrapping_sub(start) >= slab_bytes {
                // SAFETY: per the contract every block lies in a live chunk.
                if unsafe { (*ChunkHeader::of(addr)).arena } != arena {
                    done = i;
                    break;
                }
                if !slab.is_null() {
                    // SAFETY: `slab` is a live slab of this bin, `back` of its objects returned.
                    unsafe { settle(&mut bin, class, pages, slab, was_full, back) };
                }
                let offset;
                // SAFETY: `p` is a block of this bin (caller contract), so it lies in a live slab
                // whose page info and span describe it; we hold the lock.
                (slab, offset) = unsafe { slab_of(p) };
                start = addr - offset;
                // SAFETY: as above.
                was_full = unsafe { (*slab).nfree } == 0;
                back = 0;
            }
            let index = check.quotient(addr - start);
            debug_assert!(index < objects_per_slab);
            // SAFETY: `p` lies in `slab` at object `index`, below its object count, so its
            // bitmap word is in the bitmap; we hold the lock.
            unsafe {
                let word = (*slab).bitmap.get_unchecked_mut(index / 64);
                let bit = 1u64 << (index % 64);
                if *word & bit != 0 {
                    pal::fatal(format_args!("tally: free(): double free of {p:p}\n"));
                }
                *word |= bit;
            }
            back += 1;
        }
        if !slab.is_null() {
            // SAFETY: as in the loop.
            unsafe { settle(&mut bin, class, pages, slab, was_full, back) };
        }
        bin.counts.returned += done as u64;
        done
    }

    /// Whether the slot at `p`, a block of `class` in one of this bin's slabs, is free in its
    /// slab (not handed out to any thread cache or program), read under the lock.
    ///
    /// # Safety
    /// `p` must be a valid block boundary of `class` in a live slab of this bin.
    pub unsafe fn slot_is_free(&self, class: SizeClass, p: *mut u8) -> bool {
        let _bin = self.slabs.lock();
        // SAFETY: per the contract `p` lies in a live slab, whose page info and span describe
        // it; the lock we hold guards the bitmap.
        unsafe {
            let (slab, index) = slot_of(p, class);
            (*slab).bitmap[index / 64] & (1u64 << (index % 64)) != 0
        }
    }

    /// Hands the current slab back to `pages` if all its objects are free (for `malloc_trim` and
    /// running out of memory: an empty current slab would keep its chunk mapped). Returns whether
    /// it did.
    pub fn release_empty_current(&self, class: SizeClass, pages: &Mutex<PageHeap>) -> bool {
        let mut bin = self.slabs.lock();
        let slab = bin.current;
        // SAFETY: `current` is null or a live slab of this bin (bin invariant).
        if slab.is_null() || unsafe { (*slab).nfree } as usize != class.slab_objects() {
            return false;
        }
        bin.current = ptr::null_mut();
        bin.counts.slabs -= 1;
        // SAFETY: the current slab is in no list (bin invariant) and none of its objects is out.
        unsafe { pages.lock().free(slab) };
        true
    }

    /// Hands empty slabs back to `pages`: all of them (`all`), or those the bin did not need
    /// since the last call (as many as the fewest it held at any time since then, oldest
    /// first). With `wait` false a bin another thread holds is passed over. Returns how many
    /// pages went back. Called only for bins [`holding`] says hold empty slabs (or by tests).
    #[inline(never)]
    #[link_section = ".text.hot.tally"]
    pub fn release_empty(&self, pages: &Mutex<PageHeap>, all: bool, wait: bool) -> usize {
        let Some(mut bin) = (if wait {
            Some(self.slabs.lock())
        } else {
            self.slabs.try_lock()
        }) else {
            return 0;
        };
        let n = if all { bin.counts.empty } else { bin.empty_low };
        let mut released = 0;
        if n > 0 {
            let mut heap = pages.lock();
            let mut owner = (0, SizeClass(0));
            for _ in 0..n {
                let slab = bin.empty.tail();
                // SAFETY: `n <= counts.empty`, so `slab` is an empty slab of this bin, none of whose
                // objects is out; it leaves the list before its run is freed.
                unsafe {
                    bin.empty.remove(slab);
                    released += (*slab).pages as usize;
                    owner = ((*Span::chunk(slab)).arena as usize, SizeClass((*slab).class));
                    heap.free(slab);
                }
            }
            bin.counts.empty -= n;
            bin.counts.slabs -= n;
            if bin.counts.empty == 0 {
                note_holding(owner.0, owner.1, false);
            }
        }
        // What is left is what the next interval starts with.
        bin.empty_low = bin.counts.empty;
        released
    }

    pub(crate) fn lock_for_fork(&self) {
        self.slabs.lock_for_fork();
    }

    /// # Safety
    /// The prepare handler must have taken the lock in this thread.
    pub(crate) unsafe fn unlock_after_fork(&self, child: bool) {
        // SAFETY: per the contract.
        unsafe { self.slabs.unlock_after_fork(child) }
    }
}

impl Default for Bin {
    fn default() -> Self {
        Self::new()
    }
}

/// Per arena, a bit per small class whose bin holds empty slabs (changed under that bin's lock),
/// so that a bin needing a new slab, a purge pass and `decay::balance` visit only those
/// ([`release_held`]).
static HOLDING: [AtomicU64; MAX_ARENAS] = [const { AtomicU64::new(0) }; MAX_ARENAS];
const _: () = assert!(NSMALL <= 64, "a bit per small class");

/// Sets or clears `class`'s bit in arena `arena`'s [`HOLDING`] (no arena: a test's heap).
#[inline]
fn note_holding(arena: usize, class: SizeClass, holds: bool) {
    if let Some(bits) = HOLDING.get(arena) {
        let bit = 1u64 << class.index();
        if holds {
            bits.fetch_or(bit, Ordering::Relaxed);
        } else {
            bits.fetch_and(!bit, Ordering::Relaxed);
        }
    }
}

/// Whether bins keep their empty slabs: while freed pages wait for purge passes to give them back
/// (`dirty_decay_ms` above 0), which hand the slabs back too. With 0 (pages back at once) or -1
/// (never given back, but shared by every class) a slab goes back to the page heap when it
/// empties.
#[inline]
fn keeps_empty() -> bool {
    DIRTY_DECAY_MS.load(Ordering::Relaxed) > 0
}

/// Pages a bin's slabs (empty ones included) must come to for it to keep the ones that empty
/// (256 KiB). Without it `size_churn` (60 classes of a few slabs each) peaked at 2.1 MiB against
/// 1.9 (7 rounds); with it, as without keeping any, while `btree_strings` keeps all its slabs.
pub const KEEP_EMPTY_MIN_PAGES: usize = 64;

/// Whether any bin of the first `arenas` arenas holds empty slabs.
#[inline]
pub fn any_held(arenas: usize) -> bool {
    HOLDING[..arenas.min(MAX_ARENAS)]
        .iter()
        .any(|bits| bits.load(Ordering::Relaxed) != 0)
}

/// The small classes whose bins in arena `arena` hold empty slabs, a bit each.
#[inline]
fn holding(arena: usize) -> u64 {
    HOLDING.get(arena).map_or(0, |bits| bits.load(Ordering::Relaxed))
}

/// Whether bins of arena `arena` other than `class`'s hold empty slabs.
#[inline]
fn others_hold(arena: u32, class: SizeClass) -> bool {
    holding(arena as usize) & !(1u64 << class.index()) != 0
}

/// [`Bin::release_empty`] (`all`, `wait`) for each of `bins`, arena `arena`'s, that holds empty
/// slabs, but those of the classes whose bits `except` sets; `pages` is the arena's page heap.
/// Returns the pages that went back.
#[inline]
pub fn release_held(
    bins: &[Bin; NSMALL],
    pages: &Mutex<PageHeap>,
    arena: usize,
    except: u64,
    all: bool,
    wait: bool,
) -> usize {
    let mut held = holding(arena) & !except;
    let mut released = 0;
    while held != 0 {
        let i = held.trailing_zeros() as usize;
        held &= held - 1;
        released += bins[i].release_empty(pages, all, wait);
    }
    released
}

/// The slab holding `p`, a block boundary of `class`, and `p`'s index in it.
///
/// # Safety
/// `p` must be a block of `class` in a live slab (so its page info and span describe it).
unsafe fn slot_of(p: *mut u8, class: SizeClass) -> (*mut Span, usize) {
    // SAFETY: per the contract.
    let (slab, offset) = unsafe { slab_of(p) };
    (slab, SlotCheck::of(class.0).quotient(offset))
}

/// The slab holding `p`, a block of a small class, and `p`'s offset in it in bytes. The page and
/// the slab's head page are masked into the chunk, so neither index needs a bounds check.
///
/// # Safety
/// `p` must be a block in a live slab (so its page info and span describe it).
#[inline(always)]
unsafe fn slab_of(p: *mut u8) -> (*mut Span, usize) {
    let addr = p as usize;
    let chunk = ChunkHeader::of(addr);
    let page = (addr >> PAGE_SHIFT) & (CHUNK_PAGES - 1);
    // SAFETY: per the contract, a live chunk whose page info describes the block's slab.
    unsafe {
        let info = (*chunk).page_info[page].load(Ordering::Relaxed);
        let head = page.wrapping_sub(info_offset(info)) & (CHUNK_PAGES - 1);
        let offset = info_run_bytes(info) + (addr & (PAGE - 1));
        (ptr::addr_of_mut!((*chunk).spans[head]), offset)
    }
}

/// Counts `back` objects returned to `slab` (their bits set already) and moves the slab to the
/// list its new count puts it in: the empty list, or back to `pages` (see
/// [`Bin::return_batch`]), when all its objects are free; the partial list when it was full
/// (`was_full`, before them). The current slab stays where it is.
///
/// # Safety
/// `slab` must be a live slab of the locked bin `bin` of `class`, `back` of its objects just
/// returned to its bitmap, and `was_full` whether its count was 0 before them.
#[inline(always)]
unsafe fn settle(
    bin: &mut BinSlabs,
    class: SizeClass,
    pages: &Mutex<PageHeap>,
    slab: *mut Span,
    was_full: bool,
    back: u16,
) {
    // SAFETY: per the contract; the lists hold slabs of this bin.
    unsafe {
        (*slab).nfree += back;
        if slab == bin.current {
            return;
        }
        if (*slab).nfree as usize == class.slab_objects() {
            if !was_full {
                bin.partial.remove(slab);
            }
            if keeps_empty() && bin.counts.slabs * class.pages() >= KEEP_EMPTY_MIN_PAGES {
                bin.empty.push_front(slab);
                bin.counts.empty += 1;
                if bin.counts.empty == 1 {
                    note_holding((*Span::chunk(slab)).arena as usize, class, true);
                }
            } else {
                bin.counts.slabs -= 1;
                pages.lock().free(slab);
            }
        } else if was_full {
            bin.partial.push_front(slab);
        }
    }
}

/// Makes a new slab of `class` with every object free.
fn new_slab(class: SizeClass, pages: &Mutex<PageHeap>, arena: u32) -> *mut Span {
    let slab = pages.lock().alloc(class.pages(), class.0, RunState::Slab, arena);
    if slab.is_null() {
        return slab;
    }
    let objects = class.slab_objects();
    // SAFETY: the run was just allocated for us; its span descriptor is ours to initialise and
    // its pages (mapped, writable) ours to write.
    unsafe {
        (*slab).nfree = objects as u16;
        (*slab).links = Links::new();
        for (w, word) in (*slab).bitmap.iter_mut().enumerate() {
            let bits = objects.saturating_sub(w * 64).min(64);
            *word = if bits == 64 { u64::MAX } else { (1u64 << bits) - 1 };
        }
        // No page is opened yet: a pointer into the slab is no block until a slot starting on
        // its page is handed out (see `take`).
        (*slab).opened = 0;
        (*Span::chunk(slab)).mark_run(Span::first_page(slab), class.pages(), UNOPENED);
    }
    slab
}

/// Takes up to `out.len()` free objects from `slab`, lowest addresses first, opening the pages
/// they start on.
///
/// # Safety
/// `slab` must be a live slab of `class` owned by the caller's locked bin.
unsafe fn take(slab: *mut Span, class: SizeClass, out: &mut [*mut u8]) -> usize {
    let start = Span::start(slab);
    let size = class.size();
    let mut n = 0;
    // SAFETY: per the contract the bitmap is ours to change, and the slab's pages ours to open.
    unsafe {
        for w in 0..(*slab).bitmap.len() {
            let mut word = (*slab).bitmap[w];
            while word != 0 && n < out.len() {
                let bit = word.trailing_zeros() as usize;
                word &= word - 1;
                out[n] = (start + (w * 64 + bit) * size) as *mut u8;
                n += 1;
            }
            (*slab).bitmap[w] = word;
            if n == out.len() {
                break;
            }
        }
        (*slab).nfree -= n as u16;
        // Slots come out lowest first, so the last one starts on the highest page this batch
        // needs opened (nobody sees the batch before we return, under the bin's lock).
        if n > 0 {
            let last_page = (out[n - 1] as usize - start) >> PAGE_SHIFT;
            if last_page >= (*slab).opened as usize {
                open_pages(slab, class, last_page + 1);
            }
        }
    }
    n
}

/// Opens the pages of `slab` up to (not including) page `upto`: marks every slot that starts on
/// them free (the `freed` invariant: they are all free in the slab), then gives each page its
/// class, so that `free` takes its slots for blocks. A slab writes to a page only when a slot
/// starting on it is handed out, so marking costs no page the program would not touch.
///
/// # Safety
/// `slab` must be a live slab of `class` owned by the caller's locked bin, `upto` at most its
/// pages, and the slots on the pages being opened all free.
unsafe fn open_pages(slab: *mut Span, class: SizeClass, upto: usize) {
    let size = class.size();
    let objects = class.slab_objects();
    let start = Span::start(slab);
    // SAFETY: per the contract; the slots lie in the slab's mapped pages, its chunk is live.
    unsafe {
        let chunk = Span::chunk(slab);
        let first = Span::first_page(slab);
        for page in (*slab).opened as usize..upto {
            let lo = (page << PAGE_SHIFT).div_ceil(size);
            let hi = ((page + 1) << PAGE_SHIFT).div_ceil(size).min(objects);
            freed::mark_slots(start, size, lo, hi);
            // Release: a thread that reads the class also sees the marks.
            (*chunk).page_info[first + page].store(page_info(class.0, page), Ordering::Release);
        }
        (*slab).opened = upto as u16;
    }
}

#[cfg(test)]
impl Bin {
    /// How many slabs the partial list holds.
    pub fn partial_slabs(&self) -> usize {
        // SAFETY: list members are live slabs.
        unsafe { self.slabs.lock().partial.debug_check() }
    }

    /// Checks the invariants in the module docs for a bin of `class`; panics on a violation.
    pub fn debug_check_invariants(&self, class: SizeClass) {
        let bin = self.slabs.lock();
        let check_slab = |slab: *mut Span| {
            // SAFETY: slabs of a bin are live spans in chunk headers.
            unsafe {
                assert_eq!((*slab).state, RunState::Slab);
                assert_eq!((*slab).class, class.0);
                let ones: u32 = (*slab).bitmap.iter().map(|w| w.count_ones()).sum();
                assert_eq!(
                    ones as usize,
                    (*slab).nfree as usize,
                    "nfree disagrees with the bitmap"
                );
                let n = class.slab_objects();
                for (w, &word) in (*slab).bitmap.iter().enumerate() {
                    for b in 0..64 {
                        if word >> b & 1 == 1 {
                            assert!(w * 64 + b < n, "bit past the last object");
                        }
                    }
                }
            }
        };
        if !bin.current.is_null() {
            check_slab(bin.current);
        }
        // SAFETY: list members are live slabs.
        let partial = unsafe { bin.partial.debug_check() };
        let mut slab = bin.partial.head();
        while !slab.is_null() {
            check_slab(slab);
            assert_ne!(slab, bin.current);
            // SAFETY: list members are live slabs.
            unsafe {
                assert!((*slab).nfree > 0 && ((*slab).nfree as usize) < class.slab_objects());
                slab = List::<RunLinks>::next(slab);
            }
        }
        // SAFETY: list members are live slabs.
        let empty = unsafe { bin.empty.debug_check() };
        assert_eq!(empty, bin.counts.empty);
        assert!(bin.empty_low <= bin.counts.empty);
        let mut slab = bin.empty.head();
        while !slab.is_null() {
            check_slab(slab);
            assert_ne!(slab, bin.current);
            // SAFETY: list members are live slabs.
            unsafe {
                assert_eq!((*slab).nfree as usize, class.slab_objects());
                slab = List::<RunLinks>::next(slab);
            }
        }
        assert!(bin.counts.slabs >= partial + empty + usize::from(!bin.current.is_null()));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::size_class::NSMALL;

    /// The arena index recorded in the chunks of a private page heap (never looked up).
    const TEST_ARENA: u32 = 255;

    /// The decay settings, held so that none changes while a test runs (a bin keeps its empty
    /// slabs only while freed pages wait for purge passes).
    fn settings() -> std::sync::MutexGuard<'static, ()> {
        crate::extent::DECAY_SETTINGS
            .lock()
            .unwrap_or_else(|e| e.into_inner())
    }

    /// [`settings`], and a page heap of the test's own.
    fn settings_and_heap() -> (std::sync::MutexGuard<'static, ()>, Mutex<PageHeap>) {
        (settings(), Mutex::new(Rank::PageHeap, PageHeap::new()))
    }

    /// `objects` in a fixed scrambled order.
    fn scrambled(objects: &[*mut u8]) -> std::vec::Vec<*mut u8> {
        let mut order = objects.to_vec();
        let len = order.len();
        for i in 0..len {
            order.swap(i, (i * 7919 + 13) % len);
        }
        order
    }

    #[test]
    fn a_batch_of_two_arenas_goes_back_up_to_the_first_block_of_the_other() {
        let _settings = settings();
        let class = SizeClass(3);
        let other_arena = TEST_ARENA - 1;
        let (pages, other_pages) = (
            Mutex::new(Rank::PageHeap, PageHeap::new()),
            Mutex::new(Rank::PageHeap, PageHeap::new()),
        );
        let (bin, other_bin) = (Bin::new(), Bin::new());
        let mut ours = [core::ptr::null_mut(); 3];
        let mut theirs = [core::ptr::null_mut(); 2];
        assert_eq!(bin.fill(class, &pages, TEST_ARENA, &mut ours), 3);
        assert_eq!(other_bin.fill(class, &other_pages, other_arena, &mut theirs), 2);
        // Two of ours (one slab), one of theirs, then ours again: the first two go back.
        let batch = [ours[0], ours[1], theirs[0], ours[2], theirs[1]];
        // SAFETY: our blocks came from `bin`, theirs lie in a live chunk of the other arena.
        let done = unsafe { bin.return_batch(class, &pages, &batch, TEST_ARENA) };
        assert_eq!(done, 2);
        assert_eq!(bin.counts().returned, 2);
        // SAFETY: as above; the first two are free in their slab now, the third is not.
        unsafe {
            assert!(bin.slot_is_free(class, ours[0]) && bin.slot_is_free(class, ours[1]));
            assert!(!bin.slot_is_free(class, ours[2]));
        }
        // The rest, from the block of the other arena on: none of them, as it leads.
        // SAFETY: as above.
        let done = unsafe { bin.return_batch(class, &pages, &batch[2..], TEST_ARENA) };
        assert_eq!(done, 0);
        // SAFETY: each block goes back once, to its own bin.
        unsafe {
            assert_eq!(bin.return_batch(class, &pages, &[ours[2]], TEST_ARENA), 1);
            assert_eq!(
                other_bin.return_batch(class, &other_pages, &theirs, other_arena),
                2
            );
        }
        assert_eq!((bin.counts().returned, other_bin.counts().returned), (3, 2));
        bin.debug_check_invariants(class);
        other_bin.debug_check_invariants(class);
    }

    #[test]
    fn objects_come_out_distinct_and_go_back_in_any_order() {
        let (_settings, pages) = settings_and_heap();
        let (mut kept, mut given_back) = (0, 0);
        for index in [0, 1, 5, 12, 20, 30, NSMALL - 1] {
            let class = SizeClass(index as u8);
            let bin = Bin::new();
            let want = class.slab_objects() * 3 + 7;
            let mut objects = std::vec![core::ptr::null_mut(); want];
            let mut got = 0;
            while got < want {
                let n = bin.fill(class, &pages, TEST_ARENA, &mut objects[got..(got + 13).min(want)]);
                assert!(n > 0);
                got += n;
                bin.debug_check_invariants(class);
            }
            let mut sorted: std::vec::Vec<usize> = objects.iter().map(|&p| p as usize).collect();
            sorted.sort_unstable();
            for pair in sorted.windows(2) {
                assert!(pair[1] - pair[0] >= class.size(), "overlapping objects");
            }
            // Return them in a scrambled order, a few at a time.
            for chunk in scrambled(&objects).chunks(5) {
                // SAFETY: each object came from this bin and is returned once.
                unsafe { bin.return_batch(class, &pages, chunk, TEST_ARENA) };
                bin.debug_check_invariants(class);
            }
            // Every slab but the current one is empty: kept by a bin whose slabs come to
            // `KEEP_EMPTY_MIN_PAGES` (they all empty while it holds them all), and going back to
            // the page heap when asked; a smaller bin's went back as each emptied.
            let slabs = want.div_ceil(class.slab_objects());
            let free_before = pages.lock().free_pages;
            let released = bin.release_empty(&pages, true, true);
            if slabs * class.pages() >= KEEP_EMPTY_MIN_PAGES {
                kept += 1;
                assert_eq!(released, (slabs - 1) * class.pages());
            } else {
                given_back += 1;
                assert_eq!(released, 0);
            }
            let free_pages = pages.lock().free_pages;
            assert_eq!(free_pages, free_before + released);
            assert_eq!(bin.counts().slabs, 1);
            bin.debug_check_invariants(class);
            pages.lock().debug_check_invariants();
        }
        assert!(
            kept > 0 && given_back > 0,
            "both kinds of bin: {kept} kept, {given_back} not"
        );
    }

    /// A refill hands out its slab's free slots lowest first, whatever order they came back in:
    /// a program that frees a structure and builds it again gets its new nodes in address
    /// order. Serving refills from the blocks in the order they came back (an arena-level stash
    /// of flushed blocks, tried in issue 13's thirty-second pass) cut `small_objects`'
    /// instructions by 6% and made it 2% slower (docs/benchmarks.md).
    #[test]
    fn a_refill_hands_out_free_slots_lowest_first_whatever_order_they_came_back_in() {
        let (_settings, pages) = settings_and_heap();
        let class = SizeClass(4);
        let bin = Bin::new();
        let n = class.slab_objects();
        let mut objects = std::vec![core::ptr::null_mut(); n];
        assert_eq!(bin.fill(class, &pages, TEST_ARENA, &mut objects), n);
        // Back in a scrambled order, a few at a time.
        let order = scrambled(&objects);
        assert_ne!(order, objects, "the order is scrambled");
        for chunk in order.chunks(5) {
            // SAFETY: each object came from this bin and is returned once.
            unsafe { bin.return_batch(class, &pages, chunk, TEST_ARENA) };
        }
        // Half of them again, then the rest: each refill's blocks ascend, and the second's start
        // above the first's.
        let mut again = std::vec![core::ptr::null_mut(); n];
        assert_eq!(bin.fill(class, &pages, TEST_ARENA, &mut again[..n / 2]), n / 2);
        assert_eq!(
            bin.fill(class, &pages, TEST_ARENA, &mut again[n / 2..]),
            n - n / 2
        );
        let mut sorted = objects.clone();
        sorted.sort_unstable();
        assert_eq!(again, sorted);
        bin.debug_check_invariants(class);
    }

    /// Blocks come back in runs from one slab (in the order they went out, as a structure built
    /// and freed in order gives them back), alternating between two slabs, and one at a time:
    /// each slab's count and list come out as if every block had come back alone.
    #[test]
    fn runs_of_one_slabs_blocks_go_back_like_single_blocks() {
        let (_settings, pages) = settings_and_heap();
        for index in [0, 3, 17, NSMALL - 1] {
            let class = SizeClass(index as u8);
            let per_slab = class.slab_objects();
            let bin = Bin::new();
            // Four slabs' worth out: three full slabs and the current one, full too.
            let mut objects = std::vec![ptr::null_mut(); 4 * per_slab];
            let mut got = 0;
            while got < objects.len() {
                got += bin.fill(class, &pages, TEST_ARENA, &mut objects[got..]);
            }
            let slabs = bin.counts().slabs;
            assert_eq!(slabs, 4);
            // Every slab but the first two: the first block of each alone (full → partial),
            // then the rest in one batch, in order (partial → empty within one run).
            let (first_two, rest) = objects.split_at(2 * per_slab);
            for slab in rest.chunks(per_slab) {
                // SAFETY: each object came from this bin and is returned once.
                unsafe { bin.return_batch(class, &pages, &slab[..1], TEST_ARENA) };
                bin.debug_check_invariants(class);
            }
            assert_eq!(bin.partial_slabs(), 1, "the third slab, not the current one");
            for slab in rest.chunks(per_slab) {
                // SAFETY: as above.
                unsafe { bin.return_batch(class, &pages, &slab[1..], TEST_ARENA) };
                bin.debug_check_invariants(class);
            }
            // The first two slabs in one batch, their blocks alternating (a run of one block
            // each), all but one: both full before, partial after.
            let mut alternating: std::vec::Vec<*mut u8> = (0..per_slab)
                .flat_map(|i| [first_two[i], first_two[per_slab + i]])
                .collect();
            let last = alternating.pop().unwrap();
            // SAFETY: as above.
            unsafe { bin.return_batch(class, &pages, &alternating, TEST_ARENA) };
            bin.debug_check_invariants(class);
            assert_eq!(bin.partial_slabs(), 1, "the second slab, one block out");
            let counts = bin.counts();
            assert_eq!(counts.returned as usize, 4 * per_slab - 1);
            // SAFETY: a block of this bin's slabs, which are all still the bin's.
            assert!(unsafe { !bin.slot_is_free(class, last) });
            assert!(
                // SAFETY: blocks of this bin's slabs, which are all still the bin's.
                alternating.iter().all(|&p| unsafe { bin.slot_is_free(class, p) }),
                "every returned block is free in its slab"
            );
            // The last block: every slab but the current one is empty (kept or given back),
            // none is lost from the lists.
            // SAFETY: as above.
            unsafe { bin.return_batch(class, &pages, &[last], TEST_ARENA) };
            bin.debug_check_invariants(class);
            let released = bin.release_empty(&pages, true, true);
            assert_eq!(bin.counts().slabs, 1, "only the current slab is left");
            assert!(released <= 3 * class.pages());
            pages.lock().debug_check_invariants();
        }
    }

    #[test]
    fn empty_slabs_are_taken_again_and_go_back_when_a_pass_finds_them_unneeded() {
        let (_settings, pages) = settings_and_heap();
        let class = SizeClass(9);
        let per_slab = class.slab_objects();
        // Enough slabs for the bin to keep those that empty, and at least four.
        let n = KEEP_EMPTY_MIN_PAGES.div_ceil(class.pages()).max(4);
        let bin = Bin::new();
        let fill = |objects: &mut [*mut u8]| {
            let mut got = 0;
            while got < objects.len() {
                got += bin.fill(class, &pages, TEST_ARENA, &mut objects[got..]);
            }
        };
        // `n` slabs' worth out, all back: `n - 1` empty slabs and the current one.
        let mut objects = std::vec![ptr::null_mut(); n * per_slab];
        fill(&mut objects);
        assert_eq!(bin.counts().slabs, n);
        // SAFETY: each object came from this bin and is returned once.
        unsafe { bin.return_batch(class, &pages, &objects, TEST_ARENA) };
        bin.debug_check_invariants(class);
        assert_eq!(bin.counts().slabs, n, "empty slabs stay in the bin");
        let heap_free = pages.lock().free_pages;
        // Taken again: the same slabs, nothing from the page heap, each slot still marked.
        let mut again = std::vec![ptr::null_mut(); n * per_slab];
        fill(&mut again);
        assert_eq!(bin.counts().slabs, n);
        let free_pages = pages.lock().free_pages;
        assert_eq!(free_pages, heap_free);
        let mut before: std::vec::Vec<usize> = objects.iter().map(|&p| p as usize).collect();
        let mut after: std::vec::Vec<usize> = again.iter().map(|&p| p as usize).collect();
        before.sort_unstable();
        after.sort_unstable();
        assert_eq!(before, after, "the same slots");
        // SAFETY: every slot is a block of at least 8 bytes.
        assert!(again.iter().all(|&p| unsafe { freed::is_marked(p) }));
        // SAFETY: as above.
        unsafe { bin.return_batch(class, &pages, &again, TEST_ARENA) };
        // A pass: the low-water mark since the last one was 0 (the refill took every empty
        // slab), so none goes back; it now stands at `n - 1`.
        assert_eq!(bin.release_empty(&pages, false, true), 0);
        assert_eq!(bin.counts().slabs, n);
        // The current slab's objects and one more taken and given back between two passes:
        // the refill took one empty slab, `n - 2` were not needed and go back, the oldest
        // first.
        let mut one = std::vec![ptr::null_mut(); per_slab + 1];
        fill(&mut one);
        // SAFETY: as above.
        unsafe { bin.return_batch(class, &pages, &one, TEST_ARENA) };
        assert_eq!(bin.release_empty(&pages, false, true), (n - 2) * class.pages());
        assert_eq!(bin.counts().slabs, 2);
        let free_pages = pages.lock().free_pages;
        assert_eq!(free_pages, heap_free + (n - 2) * class.pages());
        bin.debug_check_invariants(class);
        // Without a pass taking anything since, the rest goes at the next one.
        assert_eq!(bin.release_empty(&pages, false, true), class.pages());
        assert_eq!(bin.counts().slabs, 1);
        bin.debug_check_invariants(class);
        pages.lock().debug_check_invariants();
    }

    #[test]
    fn an_empty_current_slab_goes_back_only_when_asked_and_only_when_empty() {
        let pages = Mutex::new(Rank::PageHeap, PageHeap::new());
        let class = SizeClass(7);
        let bin = Bin::new();
        assert!(!bin.release_empty_current(class, &pages), "no current slab yet");
        let mut objects = [ptr::null_mut(); 3];
        assert_eq!(bin.fill(class, &pages, TEST_ARENA, &mut objects), 3);
        assert!(!bin.release_empty_current(class, &pages), "objects are out");
        // SAFETY: the objects came from this bin and are returned once.
        unsafe { bin.return_batch(class, &pages, &objects, TEST_ARENA) };
        assert_eq!(bin.counts().slabs, 1, "an empty current slab stays");
        assert!(bin.release_empty_current(class, &pages));
        assert_eq!(bin.counts().slabs, 0);
        bin.debug_check_invariants(class);
        let heap = pages.lock();
        heap.debug_check_invariants();
        assert_eq!(
            heap.free_pages,
            heap.chunks * crate::chunk::USABLE_PAGES,
            "all pages free"
        );
        drop(heap);
        assert!(
            !bin.release_empty_current(class, &pages),
            "nothing left to release"
        );
        // The bin still works: the next fill takes a new slab.
        assert_eq!(bin.fill(class, &pages, TEST_ARENA, &mut objects[..1]), 1);
        // SAFETY: as above.
        unsafe { bin.return_batch(class, &pages, &objects[..1], TEST_ARENA) };
    }
}
