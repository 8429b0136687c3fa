//! Page runs: each arena's page heap hands out runs of whole pages (for slabs and large blocks)
//! from its chunks and takes them back, merging neighbours.
//!
//! Free runs sit in size-bucketed doubly linked lists: one list per exact length up to
//! [`EXACT`] pages, then one per power of two. A bit per list says it is non-empty, so finding
//! the smallest fitting run is a mask and a `trailing_zeros`. A block that will grow (one that
//! `realloc` moves out of the small classes) asks for room instead: a kept run long enough (see
//! below), else the smallest run of that many pages, if they may all be resident, else the best
//! fit ([`PageHeap::alloc_with_room`]; every allocation goes through it, `alloc` with no room).
//! The lists link the [`Span`] descriptors in the chunk headers, never the free pages
//! themselves. There are two sets of them: the free runs of the arena's ordinary chunks, and
//! those of its chunks in the sampled region (`chunk::SampledRegion`), which only
//! [`PageHeap::alloc_sampled`] takes from, so that a page of the region never holds anything but
//! a sampled block.
//!
//! A run split by an allocation, or merged with a freed neighbour, mostly keeps its bucket: its
//! new head takes the old one's place in the list ([`List::replace`]) instead of leaving it and
//! joining it again, which touched the list's head and two more runs' descriptors, cache misses
//! in a page heap spread over megabytes (batches of 64 blocks of 32 KiB, each through the page
//! heap: 8% less time).
//!
//! # Giving memory back
//! A free run remembers how many of its pages may still be resident (`resident`, an upper bound)
//! and whether they are dirty (written, resident) or muzzy (given back with `MADV_FREE`). Runs
//! with resident pages also sit in a dirty or a muzzy list, most recent first, so [`PageHeap::purge`]
//! walks from the oldest: a run dirty for longer than `dirty_decay_ms` is given back (with
//! `MADV_FREE` if `muzzy_decay_ms` is above 0, else `MADV_DONTNEED`), a muzzy run older than
//! `muzzy_decay_ms` gets `MADV_DONTNEED`. A chunk whose whole usable area is one clean free run is
//! unmapped (but for a chunk of the sampled region, which stays, its pages given back): taken out
//! of the heap and the page map at once ([`chunk::retire`]), unmapped once every thread has
//! forgotten it (`decay::unmap_retired`, the protocol of `pagemap::ChunkSeen`, out of every
//! lock). Where the system has no process-wide memory barrier for that protocol (`membarrier`),
//! chunks stay, as jemalloc's `retain:true` keeps address space. A merged
//! run's resident bound is the sum of its parts' (a clean neighbour merged into a dirty run
//! counts as not resident), and its age the average of theirs weighted by
//! resident pages, so small frees next to an old dirty run neither reset its clock nor get
//! purged at once.
//!
//! # Freed large runs kept whole
//! A large block of 16-256 KiB (the classes from [`KEEP_FIRST`], [`NKEEP`] of them) that comes home
//! to its arena goes to a list of its class ([`PageHeap::keep`]), whole and still marked taken,
//! instead of merging with its free neighbours; the next block of the class takes it back
//! ([`PageHeap::take_kept`]) without a search, a split or a merge, and without faulting a page in:
//! jemalloc's delayed coalescing of dirty extents. 64 blocks of 256 KiB allocated and freed in a
//! loop split a free run at every allocation and merged it back at every free (37% of their time).
//! A class keeps only as many runs as blocks of it found its list empty (one more room for each),
//! less what a purge pass finds it did not need, and none after a block failed to grow in place
//! ([`PageHeap::stop_keeping`]): a buffer that doubles by `realloc` to 256 KiB, whose freed blocks
//! nothing of their size asks for again, keeps none, and its next copy grows in place over the last
//! one's pages (kept, its blocks marched up the chunk one run at a time, to its end, where they
//! could no longer grow: 3.3 µs an iteration instead of 1.3). Kept runs are free pages to the
//! statistics and to balancing ([`PageHeap::kept_pages`]), and go back to the free lists (merged)
//! when they may be needed elsewhere: all of them before the heap would hand out a page that is not
//! resident (a new chunk, or pages given back), or when balancing or `malloc_trim` gives pages
//! back; and at each purge pass as many of each class as the class did not need since the pass
//! before (the fewest it held in between), so that unused ones decay like any free pages. A block
//! growing in place frees the kept runs in its way, right after it or past a free run
//! ([`PageHeap::grow_in_place`]). A block placed with room (one that `realloc` moves out of the
//! small classes) takes the front of the most recently kept run long enough for its room,
//! before any free run, and frees the rest for it to grow over: a buffer doubled and freed again
//! and again then starts where an earlier copy was kept, on pages just written, instead of in
//! the next free run.
//!
//! Invariants (checked by [`PageHeap::debug_check_invariants`]):
//! - every free run is in exactly the list of its length's bucket in the set of its chunk (set 1
//!   for a chunk of the sampled region, else 0), and `nonempty[set]` bit `b` is set iff that
//!   set's list `b` is non-empty;
//! - every page of a free run has class [`FREE_RUN`]; its first page has offset 0 and its last
//!   page offset `pages - 1` (interior offsets are stale: nothing reads them);
//! - no two free runs touch (they would have been merged);
//! - `free_pages` = the sum of the lengths of all free runs;
//! - a free run is in the dirty (muzzy) list iff `resident > 0` and its state is dirty (muzzy);
//!   `dirty_pages` (`muzzy_pages`) = the sum of `resident` over that list; `resident <= pages`;
//! - the kept list of class `KEEP_FIRST + k` holds `kept_n[k]` runs of that class, each a large
//!   run of an ordinary chunk marked taken, in no other list;
//!   `kept_low[k] <= kept_n[k] <= kept_cap[k]`;
//!   `kept_pages` = the sum of their lengths.

use core::ptr;

use core::sync::atomic::{AtomicI64, AtomicU64, Ordering};

use crate::chunk::{
    self, info_class, info_offset, LruLinks, Purge, RunLinks, RunState, SampledRegion, Span, CHUNK_PAGES,
    FREE_RUN, HEADER_PAGES, USABLE_PAGES,
};
use crate::list::List;
use crate::size_class::{size_compute, SizeClass, NCLASSES, NSMALL};
use tally_pal::{self as pal, PAGE_SHIFT};

/// `dirty_decay_ms` in force (-1 = never).
pub static DIRTY_DECAY_MS: AtomicI64 = AtomicI64::new(10_000);
/// `muzzy_decay_ms` in force (-1 = never).
pub static MUZZY_DECAY_MS: AtomicI64 = AtomicI64::new(0);

/// Held by the tests that change the decay settings ([`DIRTY_DECAY_MS`], [`MUZZY_DECAY_MS`],
/// `decay`'s) and by those whose results depend on them (a bin keeps its empty slabs only while
/// freed pages wait), so that they do not run at once.
#[cfg(test)]
pub(crate) static DECAY_SETTINGS: std::sync::Mutex<()> = std::sync::Mutex::new(());

/// Pages handed out of free runs that were not resident (new chunks, given-back pages): what
/// the program will fault in. `decay::balance` gives back as many idle pages elsewhere.
pub static FRESH_PAGES: AtomicU64 = AtomicU64::new(0);

/// The first class whose freed runs a page heap keeps whole (see "Freed large runs kept
/// whole"): the first large class. Blocks of 16-32 KiB come home from the thread caches' bins
/// in batches: 64 of 32 KiB allocated and freed in a loop took 5.4-5.6 µs a batch through the
/// page heap's splits and merges, 2.9 from kept runs.
pub const KEEP_FIRST: usize = NSMALL;
/// The largest block size whose runs are kept whole, that of the thread's big cache.
const KEEP_MAX: usize = 256 * 1024;
/// Classes whose runs are kept whole, from [`KEEP_FIRST`].
pub const NKEEP: usize = {
    let mut n = 0;
    while KEEP_FIRST + n < NCLASSES && size_compute(KEEP_FIRST + n) <= KEEP_MAX {
        n += 1;
    }
    n
};
const _: () = assert!(NKEEP > 0 && size_compute(KEEP_FIRST + NKEEP - 1) == KEEP_MAX);

/// Lengths up to this many pages have a list each.
const EXACT: usize = 32;
/// Number of lists: exact ones, then `[2^k, 2^(k+1))` for `2^k > EXACT` up to a chunk.
const LISTS: usize = EXACT + (CHUNK_PAGES.trailing_zeros() as usize - EXACT.trailing_zeros() as usize) + 1;

fn bucket(pages: usize) -> usize {
    if pages <= EXACT {
        pages - 1
    } else {
        EXACT + (usize::BITS - 1 - pages.leading_zeros()) as usize - EXACT.trailing_zeros() as usize
    }
}

/// The list set of the free run `span`: 1 in a chunk of the sampled region, else 0.
///
/// # Safety
/// `span` must be a span of a live chunk.
#[inline(always)]
unsafe fn list_set(span: *mut Span) -> usize {
    // SAFETY: per the contract the chunk's header is live.
    unsafe { (*Span::chunk(span)).sampled_only as usize }
}

/// A list of free runs with resident pages, most recent first.
type Lru = List<LruLinks>;

/// One arena's free page runs. Guarded by the arena's page lock.
pub struct PageHeap {
    /// Free runs by length, of ordinary chunks (set 0) and of sampled-region chunks (set 1).
    lists: [[List<RunLinks>; LISTS]; 2],
    nonempty: [u64; 2],
    dirty: Lru,
    muzzy: Lru,
    /// Pages in free runs.
    pub free_pages: usize,
    /// Pages of free runs that may be resident and dirty.
    pub dirty_pages: usize,
    /// Pages of free runs given back with `MADV_FREE` and maybe still resident.
    pub muzzy_pages: usize,
    /// Chunks this heap holds.
    pub chunks: usize,
    /// Pages given back to the OS so far (`MADV_DONTNEED` or unmapped).
    pub purged_pages: u64,
    /// Large blocks allocated so far, per large class (a statistic; resizes in place count too).
    pub large_allocated: [u64; NCLASSES - NSMALL],
    /// Runs taken for large blocks so far ([`crate::arena::Arena::alloc_large`]; a statistic,
    /// kept here under the lock rather than as a process-wide atomic that every thread's large
    /// allocations would write).
    pub large_runs: u64,
    /// Large blocks freed so far, per large class (a statistic).
    pub large_freed: [u64; NCLASSES - NSMALL],
    /// Freed large runs kept whole, by class from [`KEEP_FIRST`], most recent first.
    kept: [List<RunLinks>; NKEEP],
    /// Runs in each `kept` list.
    kept_n: [u32; NKEEP],
    /// The fewest runs each `kept` list held since the last purge pass.
    kept_low: [u32; NKEEP],
    /// How many runs each class may keep: one more for each block of the class its list could
    /// not serve, as many fewer as a purge pass finds it did not need.
    kept_cap: [u32; NKEEP],
    /// Pages of the kept runs: free to the statistics and to balancing.
    pub kept_pages: usize,
}

// SAFETY: the raw pointers refer to chunk headers that live forever; the heap is only used under
// its arena's lock.
unsafe impl Send for PageHeap {}

const _: () = assert!(LISTS <= 64);

impl PageHeap {
    /// An empty heap. All zero bytes, so that the arena table lands in `.bss` (see `arena.rs`).
    pub const fn new() -> Self {
        PageHeap {
            lists: [const { [const { List::new() }; LISTS] }; 2],
            nonempty: [0; 2],
            dirty: List::new(),
            muzzy: List::new(),
            free_pages: 0,
            dirty_pages: 0,
            muzzy_pages: 0,
            chunks: 0,
            purged_pages: 0,
            large_allocated: [0; NCLASSES - NSMALL],
            large_runs: 0,
            large_freed: [0; NCLASSES - NSMALL],
            kept: [const { List::new() }; NKEEP],
            kept_n: [0; NKEEP],
            kept_low: [0; NKEEP],
            kept_cap: [0; NKEEP],
            kept_pages: 0,
        }
    }

    /// Free pages that may still be resident: the dirty and muzzy runs' and the kept runs'
    /// (what balancing weighs and [`PageHeap::purge_down_to`] gives back).
    #[inline]
    pub fn idle_pages(&self) -> usize {
        self.dirty_pages + self.muzzy_pages + self.kept_pages
    }

    /// A kept run of the large `class` (see "Freed large runs kept whole"), most recently
    /// freed first, or null. The run is the caller's, marked taken as when it was freed.
    #[inline(always)]
    pub fn take_kept(&mut self, class: SizeClass) -> *mut Span {
        let k = class.index().wrapping_sub(KEEP_FIRST);
        if k >= NKEEP {
            return ptr::null_mut();
        }
        let run = self.kept[k].head();
        if run.is_null() {
            // A block of the class the list could have served: room for one more.
            self.kept_cap[k] = self.kept_cap[k].saturating_add(1);
        } else {
            // SAFETY: the head of the class's kept list.
            unsafe { self.unkeep(run, k) };
        }
        run
    }

    /// Takes the kept run `run` out of the kept list `k` (of class `KEEP_FIRST + k`), marked a
    /// large block again: the caller's.
    ///
    /// # Safety
    /// `run` must be in the kept list `k`.
    #[inline(always)]
    unsafe fn unkeep(&mut self, run: *mut Span, k: usize) {
        // SAFETY: per the contract.
        unsafe {
            self.kept[k].remove(run);
            self.kept_pages -= (*run).pages as usize;
            (*run).state = RunState::Large;
        }
        self.kept_n[k] -= 1;
        self.kept_low[k] = self.kept_low[k].min(self.kept_n[k]);
    }

    /// Keeps the freed large run `span` whole for the next block of its class if its class is
    /// one kept, the class keeps fewer than it has room for, the run lies in an ordinary chunk
    /// and freed pages wait for purge passes (`dirty_decay_ms` above 0); returns whether it did
    /// (if not, the caller still owns it).
    ///
    /// # Safety
    /// `span` must be a large run allocated from this heap that nothing uses any more, with its
    /// class in its span.
    #[inline(always)]
    pub unsafe fn keep(&mut self, span: *mut Span) -> bool {
        // SAFETY: per the contract a live span of a live chunk.
        unsafe {
            let k = ((*span).class as usize).wrapping_sub(KEEP_FIRST);
            if k >= NKEEP
                || self.kept_n[k] >= self.kept_cap[k]
                || list_set(span) != 0
                || DIRTY_DECAY_MS.load(Ordering::Relaxed) <= 0
            {
                return false;
            }
            (*span).state = RunState::Kept;
            self.kept[k].push_front(span);
            self.kept_n[k] += 1;
            self.kept_pages += (*span).pages as usize;
        }
        true
    }

    /// Frees the kept run `run` into the free lists, out of its class's list (a block growing
    /// in place over it).
    ///
    /// # Safety
    /// `run` must be a kept run of this heap.
    #[cold]
    #[inline(never)]
    #[link_section = ".text.hot.tally"]
    unsafe fn release_kept_run(&mut self, run: *mut Span) {
        // SAFETY: per the contract `run` is in the kept list of its class; taken out of it,
        // a large run of this heap that nothing uses.
        unsafe {
            self.unkeep(run, (*run).class as usize - KEEP_FIRST);
            self.free_run(run, true);
        }
    }

    /// Frees every kept run into the free lists and takes back every class's room for them:
    /// a large block could not grow in place, and kept runs may be what stood in its way. A
    /// buffer doubling by `realloc` to 256 KiB after batches of 64 blocks of that size (which
    /// made room for 63 runs) took 4.5 µs an iteration without this, 3.3 with it (3.35 before
    /// runs were kept): each copy's last block, freed, was kept, and the next copy grew past
    /// it, up the chunk.
    #[cold]
    #[inline(never)]
    #[link_section = ".text.hot.tally"]
    pub fn stop_keeping(&mut self) {
        if self.kept_pages != 0 {
            self.release_kept(true);
        }
        self.kept_cap = [0; NKEEP];
    }

    /// [`PageHeap::find`] after every kept run went back to the free lists.
    #[cold]
    #[inline(never)]
    #[link_section = ".text.hot.tally"]
    fn release_kept_and_find(&mut self, pages: usize, room: usize, set: usize) -> Option<*mut Span> {
        self.release_kept(true);
        self.find_room(pages, room, set)
    }

    /// Frees kept runs into the free lists (merged with their neighbours): all of them if
    /// `all`, else as many of each class as it did not need since the last call (the fewest it
    /// held in between), the oldest first. Returns the pages freed.
    #[cold]
    #[inline(never)]
    #[link_section = ".text.hot.tally"]
    pub fn release_kept(&mut self, all: bool) -> usize {
        let before = self.kept_pages;
        for k in 0..NKEEP {
            let n = if all { self.kept_n[k] } else { self.kept_low[k] };
            for _ in 0..n {
                let run = self.kept[k].tail();
                // SAFETY: `run` is a member of the kept list (there are `kept_n[k] >= n` of
                // them); taken out of it, a large run of this heap that nothing uses.
                unsafe {
                    self.unkeep(run, k);
                    self.free_run(run, true);
                }
            }
            self.kept_low[k] = self.kept_n[k];
            if !all {
                // Runs the class did not need: so much less room.
                self.kept_cap[k] -= n;
            }
        }
        before - self.kept_pages
    }

    /// Takes a run of exactly `pages` pages (1 ..= [`chunk::USABLE_PAGES`]) and marks it with
    /// `owner` (a class) and `state`; a new chunk it needs is recorded as arena `arena`'s (the
    /// heap's owner). Returns null when the OS has no memory for a new chunk.
    #[inline(always)]
    pub fn alloc(&mut self, pages: usize, owner: u8, state: RunState, arena: u32) -> *mut Span {
        self.alloc_with_room(pages, pages, owner, state, arena)
    }

    /// [`PageHeap::alloc`] from the front of a kept run of at least `room` pages (at least
    /// `pages`; `take_kept_with_room`) or else of a free run that long whose pages
    /// may all be resident, if there is one, so that the block can grow in place over the rest:
    /// for a block `realloc` moves as it grows. Else as `alloc`. (One
    /// function for both, `alloc` passing `room == pages`: the code every program runs, kept
    /// once in the first 64 KiB of the library's code.)
    #[inline(never)]
    #[link_section = ".text.hot.tally"]
    pub fn alloc_with_room(
        &mut self,
        pages: usize,
        room: usize,
        owner: u8,
        state: RunState,
        arena: u32,
    ) -> *mut Span {
        self.alloc_from(
            None,
            pages,
            room.clamp(pages, chunk::USABLE_PAGES),
            owner,
            state,
            arena,
        )
    }

    /// Takes a run of `pages` pages for a sampled block (class byte `owner`) from this heap's
    /// chunks in `region`, mapping the region's next chunk for it if none has room. Null when
    /// the region has no chunk left (or the OS no memory): the caller takes an ordinary run.
    pub fn alloc_sampled(
        &mut self,
        pages: usize,
        owner: u8,
        arena: u32,
        region: &SampledRegion,
    ) -> *mut Span {
        self.alloc_from(Some(region), pages, pages, owner, RunState::Large, arena)
    }

    /// [`PageHeap::alloc`] from the heap's ordinary chunks (`region` `None`) or its chunks in
    /// `region`, from the front of a run of `room` pages (at least `pages`) if there is one.
    #[inline(always)]
    fn alloc_from(
        &mut self,
        region: Option<&SampledRegion>,
        pages: usize,
        room: usize,
        owner: u8,
        state: RunState,
        arena: u32,
    ) -> *mut Span {
        debug_assert!(
            (1..=chunk::USABLE_PAGES).contains(&pages) && (pages..=chunk::USABLE_PAGES).contains(&room)
        );
        let set = region.is_some() as usize;
        if room > pages && self.kept_pages != 0 {
            let run = self.take_kept_with_room(pages, room, owner, state);
            if !run.is_null() {
                return run;
            }
        }
        let mut found = self.find_room(pages, room, set);
        // Kept runs go back to the free lists before a page that is not resident is handed out.
        if self.kept_pages != 0
            && match found {
                None => true,
                // SAFETY: a run found is a live free run of this heap.
                Some(run) => unsafe { ((*run).resident as usize) < pages },
            }
        {
            found = self.release_kept_and_find(pages, room, set);
        }
        // A run found stays in the lists for now: a split puts its rest in its place.
        let (run, listed) = match found {
            Some(run) => (run, true),
            None => {
                let run = chunk::new_chunk(arena, region);
                if run.is_null() {
                    return run;
                }
                self.chunks += 1;
                // SAFETY: a new chunk's span is a valid free run in no list.
                unsafe { self.free_pages += (*run).pages as usize };
                (run, false)
            }
        };
        // SAFETY: `run` is a free run of at least `pages` pages that we own under the lock, in
        // the lists if `listed`.
        unsafe {
            let have = (*run).pages as usize;
            let resident = (*run).resident as usize;
            if have > pages {
                let chunk = Span::chunk(run);
                let first = Span::first_page(run);
                let rest = ptr::addr_of_mut!((*chunk).spans[first + pages]);
                // Either part may hold all of the run's resident pages, as far as the count
                // knows: the rest keeps the bound, so that purging never misses a page.
                let kept = resident.min(have - pages);
                if listed {
                    self.split_rest(run, rest, have - pages, kept);
                } else {
                    self.make_free(rest, have - pages, kept, (*run).purge, (*run).since_ms);
                    self.push(rest);
                }
            } else if listed {
                self.unlink(run);
            }
            // What the program will fault in: the taken pages the run's resident ones do not
            // cover, counted from the front. A freed run merges into the free run after it and
            // is taken again from the front, so a block freed and allocated again (a 256 KiB
            // `malloc`/`free` loop) faults nothing in; counting the resident pages to the rest
            // instead made every such `malloc` count its pages fresh, and [`FRESH_PAGES`] drove
            // `decay::balance` to give the chunk back and map a new one every 12 rounds.
            let fresh = pages - resident.min(pages);
            if fresh > 0 {
                FRESH_PAGES.fetch_add(fresh as u64, Ordering::Relaxed);
            }
            self.free_pages -= pages;
            (*run).pages = pages as u32;
            (*run).state = state;
            (*run).class = owner;
            (*run).opened = pages.min(u16::MAX as usize) as u16;
            (*Span::chunk(run)).mark_taken(Span::first_page(run), pages, owner, state);
            run
        }
    }

    /// For a block that will grow ([`PageHeap::alloc_with_room`]): the front `pages` pages of
    /// the most recently kept run of the smallest kept class of at least `room` pages, marked
    /// with `owner` and `state`, its other pages freed (so the block grows in place over them);
    /// null if no kept run is that long. A kept run's pages are resident and were the last to
    /// be written: a buffer that doubles to 256 KiB by `realloc`, freed and built again, takes
    /// back the run its last copy was kept in. Without this, after batches of 64 blocks of 256
    /// KiB had made room for 64 kept runs, each copy's last block was kept and the next copy
    /// started in the next free run, walking 16 MiB of the chunks, every step a cold one (3.3
    /// µs an iteration instead of 0.7).
    #[cold]
    #[inline(never)]
    fn take_kept_with_room(&mut self, pages: usize, room: usize, owner: u8, state: RunState) -> *mut Span {
        for k in 0..NKEEP {
            let run = self.kept[k].head();
            if run.is_null() || size_compute(KEEP_FIRST + k) >> PAGE_SHIFT < room {
                continue;
            }
            // SAFETY: `run` heads the kept list `k`: a large run of an ordinary chunk of this
            // heap, marked taken, that nothing uses; out of the list it is ours, and its tail,
            // past the pages the block takes (marked first), free pages of it.
            unsafe {
                self.unkeep(run, k);
                (*run).state = state;
                (*run).class = owner;
                (*run).opened = pages.min(u16::MAX as usize) as u16;
                (*Span::chunk(run)).mark_taken(Span::first_page(run), pages, owner, state);
                if (*run).pages as usize > pages {
                    self.free_tail(run, pages);
                }
            }
            return run;
        }
        ptr::null_mut()
    }

    /// Takes a run of `pages` pages whose start is aligned to `align_pages` pages.
    pub fn alloc_aligned(
        &mut self,
        pages: usize,
        align_pages: usize,
        owner: u8,
        state: RunState,
        arena: u32,
    ) -> *mut Span {
        if align_pages <= 1 {
            return self.alloc(pages, owner, state, arena);
        }
        let want = pages + align_pages - 1;
        if want > chunk::USABLE_PAGES {
            return ptr::null_mut();
        }
        let run = self.alloc(want, FREE_RUN, RunState::Free, arena);
        if run.is_null() {
            return run;
        }
        // SAFETY: `run` is ours (just allocated); every span we split off lies inside it.
        unsafe {
            let chunk = Span::chunk(run);
            let first = Span::first_page(run);
            let start = (*chunk).page_addr(first);
            let align = align_pages << tally_pal::PAGE_SHIFT;
            let lead = (start.next_multiple_of(align) - start) >> tally_pal::PAGE_SHIFT;
            let body = ptr::addr_of_mut!((*chunk).spans[first + lead]);
            let trail = want - lead - pages;
            // Mark the body first, so freeing the slack on either side cannot merge into it.
            (*body).pages = pages as u32;
            (*body).state = state;
            (*body).class = owner;
            (*chunk).mark_taken(first + lead, pages, owner, state);
            if lead > 0 {
                (*run).pages = lead as u32;
                self.free(run);
            }
            if trail > 0 {
                let tail = ptr::addr_of_mut!((*chunk).spans[first + lead + pages]);
                (*tail).pages = trail as u32;
                (*tail).state = state;
                (*tail).class = owner;
                self.free(tail);
            }
            body
        }
    }

    /// Returns the run `span` (a slab or large block of this heap's arena) to the free lists,
    /// merged with free neighbours.
    ///
    /// # Safety
    /// `span` must be a run allocated from this heap and no longer used.
    pub unsafe fn free(&mut self, span: *mut Span) {
        // SAFETY: per the contract.
        unsafe { self.free_run(span, true) }
    }

    /// Returns the run `span` to the free lists like [`PageHeap::free`], its pages given back
    /// to the OS already by the caller (`pal::discard`): they count as not resident.
    ///
    /// # Safety
    /// As for [`PageHeap::free`], and the run's pages must have been discarded since its last
    /// use.
    pub unsafe fn free_discarded(&mut self, span: *mut Span) {
        // SAFETY: per the contract.
        unsafe {
            self.purged_pages += (*span).pages as u64;
            self.free_run(span, false);
        }
    }

    /// [`PageHeap::free`], with the run's own pages counted resident or not.
    ///
    /// # Safety
    /// As for [`PageHeap::free`].
    #[link_section = ".text.hot.tally"]
    unsafe fn free_run(&mut self, span: *mut Span, is_resident: bool) {
        // SAFETY: `span` is a live run of this heap (caller contract); its neighbours are runs of
        // the same chunk described by their own spans, guarded by the same lock.
        unsafe {
            let chunk = Span::chunk(span);
            let mut first = Span::first_page(span);
            let mut pages = (*span).pages as usize;
            // How the run was marked when taken: by the owner its first page says (a sampled
            // block's span names its class, but its pages say SAMPLED, every one).
            let owner = info_class((*chunk).page_info[first].load(Ordering::Relaxed));
            if chunk::marks_boundaries((*span).state, owner) {
                // The pages between say FREE_RUN already; the ends may become pages between
                // once the run merges with its neighbours.
                (*chunk).mark_ends(first, pages, FREE_RUN);
            } else {
                (*chunk).mark_run(first, pages, FREE_RUN);
            }
            self.free_pages += pages;
            let now = pal::now_ms();
            let mut resident = if is_resident { pages } else { 0 };
            // The merged run's age: the average of its parts' ages, weighted by their resident
            // pages. Taking the newest would let steady small frees next to an old dirty run
            // keep it from ever decaying; taking the oldest would purge fresh pages at once.
            // In u64: at most three parts of a chunk's 1024 pages times a millisecond clock
            // below 2^43 (278 years) stay under 2^55.
            let mut age_weight = resident as u64 * now;
            // The free neighbour whose place in the lists the merged run takes (the one before,
            // which keeps its head, else the one after); another one leaves the lists.
            let mut keeper: *mut Span = ptr::null_mut();
            let end = first + pages;
            if end < CHUNK_PAGES {
                let info = (*chunk).page_info[end].load(Ordering::Relaxed);
                if info_class(info) == FREE_RUN {
                    let next = ptr::addr_of_mut!((*chunk).spans[end]);
                    keeper = next;
                    pages += (*next).pages as usize;
                    resident += (*next).resident as usize;
                    age_weight += (*next).resident as u64 * (*next).since_ms;
                }
            }
            if first > HEADER_PAGES {
                let info = (*chunk).page_info[first - 1].load(Ordering::Relaxed);
                if info_class(info) == FREE_RUN {
                    let head = first - 1 - info_offset(info);
                    let prev = ptr::addr_of_mut!((*chunk).spans[head]);
                    if !keeper.is_null() {
                        self.unlink(keeper);
                    }
                    keeper = prev;
                    pages += (*prev).pages as usize;
                    resident += (*prev).resident as usize;
                    age_weight += (*prev).resident as u64 * (*prev).since_ms;
                    first = head;
                }
            }
            let merged = ptr::addr_of_mut!((*chunk).spans[first]);
            let since = age_weight.checked_div(resident as u64).unwrap_or(now);
            if DIRTY_DECAY_MS.load(Ordering::Relaxed) == 0 {
                if !keeper.is_null() {
                    self.unlink(keeper);
                }
                self.make_free(merged, pages, resident, Purge::Dirty, since);
                self.purge_run(merged, now, false);
            } else if keeper.is_null() {
                self.make_free(merged, pages, resident, Purge::Dirty, since);
                self.push(merged);
            } else {
                self.merge_into(keeper, merged, pages, resident, since);
            }
        }
    }

    /// Gives back the resident pages of free runs whose decay time has passed (all of them when
    /// `everything`), and unmaps chunks left entirely free and clean. Returns the pages given back
    /// with `MADV_DONTNEED` or by unmapping.
    #[link_section = ".text.hot.tally"]
    pub fn purge(&mut self, now: u64, everything: bool) -> u64 {
        if self.kept_pages != 0 {
            self.release_kept(everything);
        }
        let before = self.purged_pages;
        let dirty_ms = DIRTY_DECAY_MS.load(Ordering::Relaxed);
        let muzzy_ms = MUZZY_DECAY_MS.load(Ordering::Relaxed);
        // Whether a run that became dirty (muzzy) at `since` has waited `decay` ms.
        let due = |since: u64, decay: i64| everything || (decay >= 0 && since + decay as u64 <= now);
        loop {
            let run = self.dirty.tail();
            // SAFETY: list members are live free runs of this heap.
            if run.is_null() || !due(unsafe { (*run).since_ms }, dirty_ms) {
                break;
            }
            // SAFETY: `run` is a free run in this heap's lists.
            unsafe {
                self.unlink(run);
                self.purge_run(run, now, everything);
            }
        }
        loop {
            let run = self.muzzy.tail();
            // SAFETY: list members are live free runs of this heap.
            if run.is_null() || !due(unsafe { (*run).since_ms }, muzzy_ms) {
                break;
            }
            // SAFETY: `run` is a free run in this heap's lists.
            unsafe {
                self.unlink(run);
                self.purge_run(run, now, true);
            }
        }
        self.purged_pages - before
    }

    /// Gives back the oldest dirty and muzzy runs at once (`MADV_DONTNEED`, unmapping chunks
    /// left wholly free) until at most `keep` free pages may still be resident, whatever their
    /// age: idle pages of an arena while another one faults pages in (`decay::balance`). The
    /// kept large runs go to the free lists first, their pages counted among the dirty ones.
    /// Returns the pages given back.
    pub fn purge_down_to(&mut self, keep: usize, now: u64) -> u64 {
        if self.kept_pages != 0 {
            self.release_kept(true);
        }
        let before = self.purged_pages;
        for muzzy in [true, false] {
            loop {
                if self.dirty_pages + self.muzzy_pages <= keep {
                    return self.purged_pages - before;
                }
                let run = if muzzy {
                    self.muzzy.tail()
                } else {
                    self.dirty.tail()
                };
                if run.is_null() {
                    break;
                }
                // SAFETY: `run` is a free run in this heap's lists.
                unsafe {
                    self.unlink(run);
                    self.purge_run(run, now, true);
                }
            }
        }
        self.purged_pages - before
    }

    /// Gives back the pages of `run` (a free run in no list) — lazily with `MADV_FREE` when it is
    /// dirty, `muzzy_decay_ms` is not 0 and `at_once` is false, else with `MADV_DONTNEED` — and
    /// puts it back in the lists, or retires its chunk for unmapping ([`chunk::retire`]) if it
    /// is the chunk's whole usable area.
    ///
    /// # Safety
    /// `run` must be a free run of this heap in no list.
    #[link_section = ".text.hot.tally"]
    unsafe fn purge_run(&mut self, run: *mut Span, now: u64, at_once: bool) {
        // SAFETY: per the contract the run's pages are free and ours.
        unsafe {
            let start = Span::start(run) as *mut u8;
            let bytes = ((*run).pages as usize) << PAGE_SHIFT;
            let lazily =
                !at_once && (*run).purge == Purge::Dirty && MUZZY_DECAY_MS.load(Ordering::Relaxed) != 0;
            if lazily {
                pal::discard_lazily(start, bytes);
                (*run).purge = Purge::Muzzy;
                (*run).since_ms = now;
                self.push(run);
                return;
            }
            pal::discard(start, bytes);
            self.purged_pages += (*run).resident as u64;
            (*run).resident = 0;
            (*run).purge = Purge::Clean;
            if Span::first_page(run) == HEADER_PAGES
                && (*run).pages as usize == USABLE_PAGES
                && !(*Span::chunk(run)).sampled_only
                && chunk::unmapping_allowed()
            {
                self.free_pages -= USABLE_PAGES;
                self.chunks -= 1;
                chunk::retire(run);
                return;
            }
            self.push(run);
        }
    }

    /// Grows the large run `span` (a large block's or a sampled one's) in place to `pages` pages
    /// if the pages after it are free.
    ///
    /// # Safety
    /// `span` must be a large run allocated from this heap.
    #[link_section = ".text.hot.tally"]
    pub unsafe fn grow_in_place(&mut self, span: *mut Span, pages: usize) -> bool {
        // SAFETY: as for `free`: the neighbour is described by its own span under the same lock.
        unsafe {
            let chunk = Span::chunk(span);
            let first = Span::first_page(span);
            let have = (*span).pages as usize;
            let end = first + have;
            if end >= CHUNK_PAGES {
                return false;
            }
            let mut info = (*chunk).page_info[end].load(Ordering::Relaxed);
            if info_class(info) != FREE_RUN {
                // A kept run after it is free: it goes to the free lists, merged with what
                // follows it, for the block to grow over.
                if (*chunk).spans[end].state != RunState::Kept {
                    return false;
                }
                self.release_kept_run(ptr::addr_of_mut!((*chunk).spans[end]));
                info = (*chunk).page_info[end].load(Ordering::Relaxed);
                debug_assert_eq!(info_class(info), FREE_RUN);
            }
            let next = ptr::addr_of_mut!((*chunk).spans[end]);
            let mut avail = (*next).pages as usize;
            // Kept runs past the free one go too while the block does not fit (a block of the
            // big cache sent home for it, and kept, after one kept before it).
            while have + avail < pages
                && end + avail < CHUNK_PAGES
                && (*chunk).spans[end + avail].state == RunState::Kept
            {
                self.release_kept_run(ptr::addr_of_mut!((*chunk).spans[end + avail]));
                avail = (*next).pages as usize;
            }
            if have + avail < pages {
                return false;
            }
            let extra = pages - have;
            // Pages the block grows into that the run's resident ones do not cover, counted
            // from the front as `alloc_from` counts them: what the program will fault in.
            let fresh = extra - ((*next).resident as usize).min(extra);
            if fresh > 0 {
                FRESH_PAGES.fetch_add(fresh as u64, Ordering::Relaxed);
            }
            if avail > extra {
                let rest = ptr::addr_of_mut!((*chunk).spans[end + extra]);
                let resident = ((*next).resident as usize).min(avail - extra);
                self.split_rest(next, rest, avail - extra, resident);
            } else {
                self.unlink(next);
            }
            self.free_pages -= extra;
            (*span).pages = pages as u32;
            // The pages take the owner the run's first page names: a large block's class, or
            // `SAMPLED` for a sampled block (whose span keeps its class apart).
            let class = info_class((*chunk).page_info[first].load(Ordering::Relaxed));
            if chunk::marks_boundaries(RunState::Large, class) {
                if have > 1 {
                    // The old last page lies between the ends now (the first keeps its word).
                    (*chunk).page_info[first + have - 1]
                        .store(chunk::page_info(FREE_RUN, have - 1), Ordering::Relaxed);
                }
                (*chunk).mark_ends(first, pages, class);
            } else {
                (*chunk).mark_run(first, pages, class);
            }
            true
        }
    }

    /// Shrinks the large run `span` (a large block's or a sampled one's) in place to `pages`
    /// pages, freeing the tail.
    ///
    /// # Safety
    /// `span` must be a large run allocated from this heap, longer than `pages`.
    pub unsafe fn shrink_in_place(&mut self, span: *mut Span, pages: usize) {
        // SAFETY: the tail lies inside the run, which the caller owns.
        unsafe {
            let chunk = Span::chunk(span);
            let first = Span::first_page(span);
            debug_assert!(pages < (*span).pages as usize);
            // The owner the run's pages say: a large block's class, or `SAMPLED` on every page of
            // a sampled block's run (whose span keeps its class apart).
            let owner = info_class((*chunk).page_info[first].load(Ordering::Relaxed));
            (*chunk).mark_taken(first, pages, owner, RunState::Large);
            self.free_tail(span, pages);
        }
    }

    /// Frees the pages of the taken run `span` past its first `pages` (merged with the free
    /// neighbours after them) and leaves `span` that long. Its first `pages` pages must be
    /// marked taken already: the free run's merge reads them.
    ///
    /// # Safety
    /// `span` must be a taken run of this heap longer than `pages`, whose tail nothing uses.
    unsafe fn free_tail(&mut self, span: *mut Span, pages: usize) {
        // SAFETY: the tail lies inside the run, which the caller owns; its span is in the chunk
        // header.
        unsafe {
            let tail = ptr::addr_of_mut!((*Span::chunk(span)).spans[Span::first_page(span) + pages]);
            (*tail).pages = ((*span).pages as usize - pages) as u32;
            (*tail).state = RunState::Large;
            (*tail).class = (*span).class;
            (*span).pages = pages as u32;
            self.free(tail);
        }
    }

    /// Checks the invariants in the module docs; panics on a violation.
    #[cfg(test)]
    pub fn debug_check_invariants(&self) {
        let mut total = 0;
        for (set, b, list) in
            (0..2).flat_map(|set| self.lists[set].iter().enumerate().map(move |(b, l)| (set, b, l)))
        {
            let nonempty = self.nonempty[set];
            assert_eq!(
                nonempty >> b & 1 == 1,
                !list.is_empty(),
                "nonempty bit {b} of set {set}"
            );
            // SAFETY: list members are live spans in chunk headers.
            unsafe { list.debug_check() };
            let mut run = list.head();
            while !run.is_null() {
                // SAFETY: list members are live spans in chunk headers.
                unsafe {
                    assert_eq!((*run).state, RunState::Free);
                    let pages = (*run).pages as usize;
                    assert_eq!(bucket(pages), b);
                    let chunk = Span::chunk(run);
                    assert_eq!((*chunk).sampled_only as usize, set, "run in the other set");
                    let first = Span::first_page(run);
                    for k in 0..pages {
                        let info = (*chunk).page_info[first + k].load(Ordering::Relaxed);
                        assert_eq!(info_class(info), FREE_RUN);
                        if k == 0 || k == pages - 1 {
                            assert_eq!(info_offset(info), k);
                        }
                    }
                    if first + pages < CHUNK_PAGES {
                        let after = (*chunk).page_info[first + pages].load(Ordering::Relaxed);
                        assert_ne!(info_class(after), FREE_RUN, "unmerged neighbours");
                    }
                    total += pages;
                    run = List::<RunLinks>::next(run);
                }
            }
        }
        assert_eq!(total, self.free_pages);
        for (lru, purge, sum) in [
            (&self.dirty, Purge::Dirty, self.dirty_pages),
            (&self.muzzy, Purge::Muzzy, self.muzzy_pages),
        ] {
            // SAFETY: list members are live spans.
            unsafe { lru.debug_check() };
            let mut run = lru.head();
            let mut resident = 0;
            while !run.is_null() {
                // SAFETY: list members are live spans.
                unsafe {
                    assert_eq!((*run).state, RunState::Free);
                    assert_eq!((*run).purge, purge);
                    assert!((*run).resident > 0 && (*run).resident <= (*run).pages);
                    resident += (*run).resident as usize;
                    run = Lru::next(run);
                }
            }
            assert_eq!(resident, sum);
        }
        let mut kept_pages = 0;
        for k in 0..NKEEP {
            // SAFETY: the kept lists' members are live spans.
            assert_eq!(unsafe { self.kept[k].debug_check() }, self.kept_n[k] as usize);
            assert!(self.kept_low[k] <= self.kept_n[k] && self.kept_n[k] <= self.kept_cap[k]);
            let mut run = self.kept[k].head();
            while !run.is_null() {
                // SAFETY: as above.
                unsafe {
                    assert_eq!((*run).state, RunState::Kept);
                    assert_eq!((*run).class as usize, KEEP_FIRST + k);
                    assert_eq!(list_set(run), 0);
                    kept_pages += (*run).pages as usize;
                    run = List::<RunLinks>::next(run);
                }
            }
        }
        assert_eq!(kept_pages, self.kept_pages);
    }

    /// The smallest free run of at least `room` pages of list set `set` if its pages may all be
    /// resident, else the smallest of at least `pages` (`room >= pages`), left in the lists. A
    /// run with room whose pages are not all resident (a new chunk's untouched end) would have
    /// the block fault pages in where a best fit could reuse resident ones; the room is worth
    /// a copy saved, not pages faulted in. (On the suite's `realloc_growth` both rules peak at
    /// 8.3 MiB.)
    #[inline(always)]
    fn find_room(&self, pages: usize, room: usize, set: usize) -> Option<*mut Span> {
        if room > pages {
            if let Some(run) = self.find(room, set) {
                // SAFETY: a run found is a live free run of this heap.
                if unsafe { (*run).resident as usize >= room } {
                    return Some(run);
                }
            }
        }
        self.find(pages, set)
    }

    /// The smallest free run of at least `pages` pages of list set `set`, left in the lists.
    #[inline(always)]
    fn find(&self, pages: usize, set: usize) -> Option<*mut Span> {
        let b = bucket(pages);
        if b >= EXACT {
            // A power-of-two bucket may hold shorter runs too: first fit.
            let mut run = self.lists[set][b].head();
            while !run.is_null() {
                // SAFETY: list members are live spans.
                unsafe {
                    if (*run).pages as usize >= pages {
                        return Some(run);
                    }
                    run = List::<RunLinks>::next(run);
                }
            }
        }
        let nonempty = self.nonempty[set];
        let above = if b >= EXACT {
            nonempty >> (b + 1) << (b + 1)
        } else {
            nonempty >> b << b
        };
        if above == 0 {
            return None;
        }
        Some(self.lists[set][above.trailing_zeros() as usize].head())
    }

    /// Makes `span` the head of a free run of `pages` pages: only the first and last pages' info
    /// words are written (coalescing reads just those), so splitting and merging free runs costs
    /// O(1), not O(run length).
    ///
    /// Its residency: at most `resident` pages, in state `purge` since `since_ms`.
    ///
    /// # Safety
    /// `span` must describe `pages` pages of its chunk that are owned by this heap and whose info
    /// words all have class [`FREE_RUN`] already.
    #[link_section = ".text.hot.tally"]
    unsafe fn make_free(
        &mut self,
        span: *mut Span,
        pages: usize,
        resident: usize,
        purge: Purge,
        since_ms: u64,
    ) {
        // SAFETY: per the contract.
        unsafe {
            (*span).pages = pages as u32;
            (*span).state = RunState::Free;
            (*span).class = FREE_RUN;
            (*span).resident = resident.min(pages) as u32;
            (*span).purge = if resident == 0 { Purge::Clean } else { purge };
            (*span).since_ms = since_ms;
            (*Span::chunk(span)).mark_ends(Span::first_page(span), pages, FREE_RUN);
        }
    }

    /// # Safety
    /// `span` must be a free run in no list.
    #[link_section = ".text.hot.tally"]
    unsafe fn push(&mut self, span: *mut Span) {
        // SAFETY: per the contract.
        unsafe {
            self.list_in(span, bucket((*span).pages as usize));
            self.push_lru(span);
        }
    }

    /// Puts `span` at the front of size list `b`.
    ///
    /// # Safety
    /// `span` must be a free run of bucket `b` in no size list.
    #[inline(always)]
    unsafe fn list_in(&mut self, span: *mut Span, b: usize) {
        // SAFETY: per the contract; the list head, if any, is a live span.
        unsafe {
            let set = list_set(span);
            self.lists[set][b].push_front(span);
            self.nonempty[set] |= 1 << b;
        }
    }

    /// Takes `span` out of size list `b`.
    ///
    /// # Safety
    /// `span` must be in size list `b` of its chunk's set.
    #[inline(always)]
    unsafe fn list_out(&mut self, span: *mut Span, b: usize) {
        // SAFETY: per the contract, its neighbours in the list are live spans.
        unsafe {
            let set = list_set(span);
            self.lists[set][b].remove(span);
            if self.lists[set][b].is_empty() {
                self.nonempty[set] &= !(1 << b);
            }
        }
    }

    /// Puts `span` at the front of the dirty or muzzy list its residency calls for, if any.
    ///
    /// # Safety
    /// `span` must be a free run in neither list.
    #[inline(always)]
    unsafe fn push_lru(&mut self, span: *mut Span) {
        // SAFETY: per the contract; the list heads, if any, are live spans.
        unsafe {
            let resident = (*span).resident as usize;
            match (*span).purge {
                Purge::Dirty if resident > 0 => {
                    self.dirty.push_front(span);
                    self.dirty_pages += resident;
                }
                Purge::Muzzy if resident > 0 => {
                    self.muzzy.push_front(span);
                    self.muzzy_pages += resident;
                }
                _ => {}
            }
        }
    }

    /// # Safety
    /// `span` must be a free run in its bucket's list.
    #[link_section = ".text.hot.tally"]
    unsafe fn unlink(&mut self, span: *mut Span) {
        // SAFETY: per the contract.
        unsafe {
            self.list_out(span, bucket((*span).pages as usize));
            self.unlink_lru(span);
        }
    }

    /// Takes `span` out of the dirty or muzzy list it is in, if any.
    ///
    /// # Safety
    /// `span` must be a free run in the lists.
    #[inline(always)]
    unsafe fn unlink_lru(&mut self, span: *mut Span) {
        // SAFETY: per the contract, its neighbours in the list are live spans.
        unsafe {
            let resident = (*span).resident as usize;
            match (*span).purge {
                Purge::Dirty if resident > 0 => {
                    self.dirty.remove(span);
                    self.dirty_pages -= resident;
                }
                Purge::Muzzy if resident > 0 => {
                    self.muzzy.remove(span);
                    self.muzzy_pages -= resident;
                }
                _ => {}
            }
        }
    }

    /// Makes `rest` the head of the free run `old`'s last `pages` pages are (the run split, its
    /// front taken), at most `resident` of them resident, in `old`'s place in the lists: its
    /// size list's when the length's bucket stays (a replace, where a remove and a push touch
    /// the list heads and, with their neighbours, four other runs' descriptors), and its dirty
    /// or muzzy list's, where its age (`old`'s) puts it.
    ///
    /// # Safety
    /// `old` must be a free run in the lists and `rest` the span of its page `pages` from its
    /// end, whose pages meet [`PageHeap::make_free`]'s contract.
    #[link_section = ".text.hot.tally"]
    unsafe fn split_rest(&mut self, old: *mut Span, rest: *mut Span, pages: usize, resident: usize) {
        // SAFETY: per the contract both spans are of one live chunk (one list set) and `old` is
        // in the lists, whose members are live spans.
        unsafe {
            let (purge, since) = ((*old).purge, (*old).since_ms);
            let old_resident = (*old).resident as usize;
            let lru = match purge {
                Purge::Dirty if old_resident > 0 => Some((&mut self.dirty, &mut self.dirty_pages)),
                Purge::Muzzy if old_resident > 0 => Some((&mut self.muzzy, &mut self.muzzy_pages)),
                _ => None,
            };
            if let Some((list, count)) = lru {
                if resident > 0 {
                    list.replace(old, rest);
                } else {
                    list.remove(old);
                }
                *count = *count - old_resident + resident;
            }
            self.replace_sized(old, rest, pages);
            self.make_free(rest, pages, resident, purge, since);
        }
    }

    /// Makes `merged` the head of a free run of `pages` pages (`resident` of them resident, dirty
    /// since `since_ms`) that `old`, a free run in the lists, is part of: `merged` takes `old`'s
    /// place in its size list (see [`PageHeap::split_rest`]) and goes to the front of the dirty
    /// list, as a run freed now.
    ///
    /// # Safety
    /// `old` must be a free run in the lists, `merged` `old` or a span of its chunk in no list,
    /// whose pages meet [`PageHeap::make_free`]'s contract.
    #[link_section = ".text.hot.tally"]
    unsafe fn merge_into(
        &mut self,
        old: *mut Span,
        merged: *mut Span,
        pages: usize,
        resident: usize,
        since_ms: u64,
    ) {
        // SAFETY: per the contract.
        unsafe {
            self.unlink_lru(old);
            self.replace_sized(old, merged, pages);
            self.make_free(merged, pages, resident, Purge::Dirty, since_ms);
            self.push_lru(merged);
        }
    }

    /// Puts `new` in `old`'s place in the size lists, as a run of `pages` pages: the same place
    /// when the bucket stays, else the front of its new bucket's list.
    ///
    /// # Safety
    /// `old` must be a free run in its bucket's list, `new` `old` or a span of its chunk in no
    /// size list.
    #[inline(always)]
    unsafe fn replace_sized(&mut self, old: *mut Span, new: *mut Span, pages: usize) {
        // SAFETY: per the contract (one chunk: one list set); list members are live spans.
        unsafe {
            let (from, to) = (bucket((*old).pages as usize), bucket(pages));
            if from != to {
                self.list_out(old, from);
                self.list_in(new, to);
            } else if old != new {
                self.lists[list_set(old)][from].replace(old, new);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::size_class::NSMALL;

    /// `prof_hooks::SAMPLED` (a layer above): the owner byte of a sampled block's pages.
    const SAMPLED: u8 = 0xFD;

    /// The arena index recorded in the chunks of a private page heap (never looked up).
    const TEST_ARENA: u32 = 255;

    #[test]
    fn buckets_cover_every_length() {
        for pages in 1..=CHUNK_PAGES {
            assert!(bucket(pages) < LISTS, "pages {pages}");
        }
        assert_eq!(bucket(EXACT), EXACT - 1);
        assert_eq!(bucket(EXACT + 1), EXACT);
    }

    #[test]
    fn alloc_free_merges_back_to_one_run() {
        let mut heap = PageHeap::new();
        let mut runs = std::vec::Vec::new();
        let mut seed = 12345u64;
        for _ in 0..200 {
            seed = seed
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            let pages = 1 + (seed >> 33) as usize % 40;
            let align = if seed & 7 == 0 { 16 } else { 1 };
            let run = heap.alloc_aligned(pages, align, 40, RunState::Large, TEST_ARENA);
            assert!(!run.is_null());
            assert_eq!(Span::start(run) % (align * tally_pal::PAGE), 0);
            runs.push(run);
            heap.debug_check_invariants();
        }
        // Free in a scrambled order.
        let n = runs.len();
        for i in 0..n {
            let j = (i * 7919) % n;
            if !runs[j].is_null() {
                // SAFETY: each run was allocated above and is freed once.
                unsafe { heap.free(runs[j]) };
                runs[j] = ptr::null_mut();
            }
        }
        for run in runs.iter_mut().filter(|r| !r.is_null()) {
            // SAFETY: as above.
            unsafe { heap.free(*run) };
        }
        heap.debug_check_invariants();
        assert_eq!(heap.free_pages, heap.chunks * chunk::USABLE_PAGES);
    }

    /// Splits and merges of runs of every bucket, interleaved: runs allocated, freed (some
    /// discarded first), grown and shrunk in place, and purged, in a random order, with the
    /// invariants checked after every step and no two live runs sharing a page.
    #[test]
    fn interleaved_splits_and_merges_keep_the_lists() {
        let mut heap = PageHeap::new();
        let mut live: std::vec::Vec<*mut Span> = std::vec::Vec::new();
        let mut seed = 0x5eed_u64;
        let mut next = move || {
            seed = seed
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            (seed >> 33) as usize
        };
        let overlaps = |live: &[*mut Span]| {
            let mut pages: std::vec::Vec<(usize, usize)> = live
                .iter()
                // SAFETY: live runs of the heap.
                .map(|&r| unsafe {
                    (
                        Span::start(r),
                        Span::start(r) + (*r).pages as usize * tally_pal::PAGE,
                    )
                })
                .collect();
            pages.sort();
            pages.windows(2).any(|w| w[0].1 > w[1].0)
        };
        for step in 0..3000 {
            let op = next() % 10;
            // SAFETY: every run in `live` was allocated from `heap` and is freed once, when it
            // leaves `live`.
            unsafe {
                if op < 4 || live.is_empty() {
                    // Short runs (exact buckets) and long ones (power-of-two buckets).
                    let pages = if next() % 3 == 0 {
                        33 + next() % 300
                    } else {
                        1 + next() % 40
                    };
                    let run = heap.alloc(pages, 40, RunState::Large, TEST_ARENA);
                    assert!(!run.is_null());
                    assert_eq!((*run).pages as usize, pages);
                    live.push(run);
                } else if op < 8 {
                    let run = live.swap_remove(next() % live.len());
                    if op == 7 {
                        tally_pal::discard(
                            Span::start(run) as *mut u8,
                            (*run).pages as usize * tally_pal::PAGE,
                        );
                        heap.free_discarded(run);
                    } else {
                        heap.free(run);
                    }
                } else if op == 8 {
                    let run = live[next() % live.len()];
                    let have = (*run).pages as usize;
                    if next() % 2 == 0 && have > 1 {
                        heap.shrink_in_place(run, 1 + next() % (have - 1));
                    } else {
                        let want = (have + 1 + next() % 64).min(chunk::USABLE_PAGES);
                        if heap.grow_in_place(run, want) {
                            assert_eq!((*run).pages as usize, want);
                        }
                    }
                } else {
                    let keep = next() % (heap.dirty_pages + 1);
                    heap.purge_down_to(keep, pal::now_ms());
                    assert!(heap.dirty_pages + heap.muzzy_pages <= keep);
                }
            }
            heap.debug_check_invariants();
            assert!(!overlaps(&live), "step {step}: two live runs share a page");
        }
        for run in live {
            // SAFETY: as above.
            unsafe { heap.free(run) };
        }
        heap.debug_check_invariants();
        assert_eq!(heap.free_pages, heap.chunks * chunk::USABLE_PAGES);
    }

    /// A block growing in place over pages no run had ever held counts them fresh, as a new run
    /// does: `decay::balance` then gives back as many idle pages elsewhere (a buffer growing at
    /// the end of a chunk faulted pages in unseen before). Other tests running at once only add
    /// to the counter.
    #[test]
    fn growing_in_place_over_untouched_pages_counts_them_fresh() {
        let mut heap = PageHeap::new();
        let run = heap.alloc(4, 40, RunState::Large, TEST_ARENA);
        assert!(!run.is_null());
        let before = FRESH_PAGES.load(Ordering::Relaxed);
        // SAFETY: `run` is a large run of this heap, at the front of a fresh chunk.
        assert!(unsafe { heap.grow_in_place(run, 904) });
        let counted = FRESH_PAGES.load(Ordering::Relaxed) - before;
        assert!(counted >= 900, "{counted} pages counted fresh, want 900");
        heap.debug_check_invariants();
        // SAFETY: allocated above, freed once.
        unsafe { heap.free(run) };
        heap.debug_check_invariants();
    }

    /// The first class whose runs are kept, and its length in pages.
    fn kept_class() -> (SizeClass, usize) {
        let class = SizeClass(KEEP_FIRST as u8);
        (class, class.pages())
    }

    /// Makes room in `heap` for `n` more kept runs of `class`: `n` blocks its list could not
    /// serve.
    fn make_room(heap: &mut PageHeap, class: SizeClass, n: usize) {
        for _ in 0..n {
            assert!(heap.take_kept(class).is_null());
        }
    }

    /// Frees `runs`, in order, and checks that every page of the heap's chunks is free again.
    ///
    /// # Safety
    /// `runs` must be distinct live runs of `heap`, none used after.
    unsafe fn free_all(heap: &mut PageHeap, runs: &[*mut Span]) {
        for &run in runs {
            // SAFETY: per the contract, a live run of this heap, freed once.
            unsafe { heap.free(run) };
        }
        heap.debug_check_invariants();
        assert_eq!(heap.free_pages, heap.chunks * chunk::USABLE_PAGES);
    }

    #[test]
    fn only_the_kept_classes_are_kept() {
        let _settings = DECAY_SETTINGS.lock().unwrap_or_else(|e| e.into_inner());
        let mut heap = PageHeap::new();
        // All allocated first: a run that is not resident would make the kept ones go back.
        let runs: std::vec::Vec<_> = [
            (KEEP_FIRST - 1, false),
            (KEEP_FIRST, true),
            (KEEP_FIRST + NKEEP - 1, true),
            (KEEP_FIRST + NKEEP, false),
        ]
        .into_iter()
        .map(|(class, kept)| {
            let pages = SizeClass(class as u8).pages();
            make_room(&mut heap, SizeClass(class as u8), 1);
            (
                class,
                kept,
                heap.alloc(pages, class as u8, RunState::Large, TEST_ARENA),
            )
        })
        .collect();
        for (class, kept, run) in runs {
            // SAFETY: a large run of this heap with its class, freed once.
            unsafe {
                assert_eq!(heap.keep(run), kept, "class {class}");
                if !kept {
                    heap.free(run);
                }
            }
            heap.debug_check_invariants();
        }
        assert_eq!(heap.kept_pages, SizeClass(KEEP_FIRST as u8).pages() + 64);
        // A class kept, but freed pages given back at once: not kept.
        let (class, _) = kept_class();
        let run = heap.take_kept(class);
        assert!(!run.is_null());
        assert_eq!(heap.kept_pages, 64);
        DIRTY_DECAY_MS.store(0, Ordering::Relaxed);
        // SAFETY: as above.
        let kept = unsafe { heap.keep(run) };
        DIRTY_DECAY_MS.store(10_000, Ordering::Relaxed);
        assert!(!kept);
        // SAFETY: as above.
        unsafe { heap.free(run) };
        heap.debug_check_invariants();
    }

    /// A class keeps as many runs as blocks of it found its list empty; a kept run serves the
    /// next block of its class whole, stays out of the free lists and counts as free; a purge
    /// pass gives back what its class did not need since the pass before, and the room for it.
    #[test]
    fn kept_runs_serve_their_class_and_go_back_when_a_pass_finds_them_unneeded() {
        let _settings = DECAY_SETTINGS.lock().unwrap_or_else(|e| e.into_inner());
        let mut heap = PageHeap::new();
        let (class, pages) = kept_class();
        let runs: std::vec::Vec<_> = (0..3)
            .map(|_| heap.alloc(pages, class.0, RunState::Large, TEST_ARENA))
            .collect();
        let free_before = heap.free_pages;
        // SAFETY: large runs of this heap of a kept class, each freed once (`runs[0]` is kept
        // by none).
        unsafe {
            assert!(!heap.keep(runs[0]), "no block of the class missed its list yet");
            make_room(&mut heap, class, 2);
            assert!(heap.keep(runs[1]));
            assert!(heap.keep(runs[2]));
            assert_eq!((*runs[1]).state, RunState::Kept);
            assert!(!heap.keep(runs[0]), "room for two");
            heap.free(runs[0]);
        }
        let free_before = free_before + pages;
        heap.debug_check_invariants();
        assert_eq!((heap.kept_pages, heap.free_pages), (2 * pages, free_before));
        // The most recently freed first, marked taken as before.
        assert_eq!(heap.take_kept(class), runs[2]);
        // SAFETY: a live span.
        assert_eq!(unsafe { (*runs[2]).state }, RunState::Large);
        heap.debug_check_invariants();
        // SAFETY: `runs[2]` is ours again, freed once.
        unsafe { assert!(heap.keep(runs[2])) };
        let now = pal::now_ms();
        // The first pass: the class held no run at one time since the heap was made, so none
        // goes back.
        heap.purge(now, false);
        assert_eq!(heap.kept_pages, 2 * pages);
        // One taken and kept again: the class held one run all along, which goes back at the
        // next pass with its room; the other at the pass after.
        let run = heap.take_kept(class);
        // SAFETY: taken above, freed once.
        unsafe { assert!(heap.keep(run)) };
        heap.purge(now, false);
        assert_eq!(heap.kept_pages, pages, "one run was needed since the last pass");
        heap.debug_check_invariants();
        heap.purge(now, false);
        assert_eq!(heap.kept_pages, 0);
        assert_eq!(heap.free_pages, free_before + 2 * pages);
        heap.debug_check_invariants();
        let run = heap.alloc(pages, class.0, RunState::Large, TEST_ARENA);
        // SAFETY: a large run of this heap of a kept class, freed once.
        unsafe { assert!(!heap.keep(run), "the passes took the room back") };
        // `malloc_trim`: everything at once, but not the room.
        make_room(&mut heap, class, 1);
        // SAFETY: as above.
        unsafe { assert!(heap.keep(run)) };
        heap.purge(now, true);
        assert_eq!(heap.kept_pages, 0);
        heap.debug_check_invariants();
        let run = heap.alloc(pages, class.0, RunState::Large, TEST_ARENA);
        // SAFETY: as above.
        unsafe { assert!(heap.keep(run)) };
        heap.debug_check_invariants();
    }

    /// Kept runs go back to the free lists before the heap hands out a page that is not
    /// resident: a request of another size reuses their pages instead of faulting others in.
    #[test]
    fn kept_runs_go_back_before_a_page_that_is_not_resident_is_handed_out() {
        let _settings = DECAY_SETTINGS.lock().unwrap_or_else(|e| e.into_inner());
        let mut heap = PageHeap::new();
        let (class, pages) = kept_class();
        make_room(&mut heap, class, 1);
        let run = heap.alloc(pages, class.0, RunState::Large, TEST_ARENA);
        let start = Span::start(run);
        // SAFETY: a large run of a kept class, freed once.
        unsafe { assert!(heap.keep(run)) };
        // The rest of the chunk was never touched: a run of it would fault pages in.
        let other = heap.alloc(pages - 1, 3, RunState::Slab, TEST_ARENA);
        assert_eq!(heap.kept_pages, 0);
        assert_eq!(Span::start(other), start, "the kept run's pages, reused");
        assert_eq!(heap.chunks, 1);
        heap.debug_check_invariants();
    }

    /// A block growing in place grows over a kept run after it.
    #[test]
    fn a_run_placed_with_room_can_grow_in_place_where_the_best_fit_could_not() {
        // A large class's byte (the runs' lengths are the test's, as `grow_in_place` allows).
        const GROWING: u8 = (NSMALL + 8) as u8;
        let mut heap = PageHeap::new();
        // A hole of 8 pages between two taken runs, and the chunk's free rest after them.
        let a = heap.alloc(4, GROWING, RunState::Large, TEST_ARENA);
        let hole = heap.alloc(8, GROWING, RunState::Large, TEST_ARENA);
        let b = heap.alloc(4, GROWING, RunState::Large, TEST_ARENA);
        // SAFETY: a live run of this heap, freed once.
        unsafe { heap.free(hole) };
        heap.debug_check_invariants();
        // The best fit for 8 pages is the hole, where the block cannot grow.
        let fit = heap.alloc(8, GROWING, RunState::Large, TEST_ARENA);
        assert_eq!(fit, hole);
        // SAFETY: a live large run of this heap.
        assert!(!unsafe { heap.grow_in_place(fit, 16) });
        // SAFETY: as above, freed once.
        unsafe { heap.free(fit) };
        // The rest of the chunk has room but was never touched: the hole still, whose pages
        // may be resident.
        let untouched = heap.alloc_with_room(8, 32, GROWING, RunState::Large, TEST_ARENA);
        assert_eq!(untouched, hole);
        // SAFETY: as above, freed once.
        unsafe { heap.free(untouched) };
        // 64 pages of the rest used and freed: resident, with room for 32.
        let used = heap.alloc(64, GROWING, RunState::Large, TEST_ARENA);
        assert_eq!(Span::start(used), Span::start(b) + (4 << PAGE_SHIFT));
        // SAFETY: as above, freed once.
        unsafe { heap.free(used) };
        // With room for 32 pages it goes to the front of the rest, and grows there.
        let roomy = heap.alloc_with_room(8, 32, GROWING, RunState::Large, TEST_ARENA);
        assert_eq!(Span::start(roomy), Span::start(b) + (4 << PAGE_SHIFT));
        // SAFETY: a live large run of this heap.
        unsafe {
            assert!(heap.grow_in_place(roomy, 16));
            assert!(heap.grow_in_place(roomy, 32));
        }
        heap.debug_check_invariants();
        // No run has room for a whole chunk: the best fit again.
        let again = heap.alloc_with_room(8, chunk::USABLE_PAGES, GROWING, RunState::Large, TEST_ARENA);
        assert_eq!(again, hole);
        // SAFETY: live runs of this heap, each freed once.
        unsafe { free_all(&mut heap, &[a, b, roomy, again]) };
    }

    /// A block placed with room takes the front of the most recently kept run of the smallest
    /// kept class that long, grows in place over the rest, and, kept again when freed, is where
    /// the next one starts: a buffer doubled and freed again and again stays on the same pages.
    #[test]
    fn a_block_placed_with_room_takes_the_last_kept_run_long_enough() {
        let _settings = DECAY_SETTINGS.lock().unwrap_or_else(|e| e.into_inner());
        let mut heap = PageHeap::new();
        let small = SizeClass(KEEP_FIRST as u8);
        let big = SizeClass((KEEP_FIRST + NKEEP - 1) as u8);
        let (pages, room) = (small.pages(), 4 * small.pages());
        assert!(big.pages() >= room && small.pages() < room);
        // Two kept runs of the largest kept class and one of the smallest (too short for the
        // room), all resident; free pages after them in the chunk.
        make_room(&mut heap, big, 2);
        make_room(&mut heap, small, 1);
        let older = heap.alloc(big.pages(), big.0, RunState::Large, TEST_ARENA);
        let newer = heap.alloc(big.pages(), big.0, RunState::Large, TEST_ARENA);
        let short = heap.alloc(small.pages(), small.0, RunState::Large, TEST_ARENA);
        // SAFETY: large runs of this heap of kept classes, each freed once.
        unsafe {
            assert!(heap.keep(older));
            assert!(heap.keep(newer));
            assert!(heap.keep(short));
        }
        let free_before = heap.free_pages;
        let block = heap.alloc_with_room(pages, room, small.0, RunState::Large, TEST_ARENA);
        assert_eq!(
            block, newer,
            "the front of the most recently kept run that is long enough"
        );
        // SAFETY: a live span.
        unsafe {
            assert_eq!(
                ((*block).pages as usize, (*block).state),
                (pages, RunState::Large)
            );
        }
        assert_eq!(heap.kept_pages, big.pages() + small.pages());
        assert_eq!(
            heap.free_pages,
            free_before + big.pages() - pages,
            "its rest is free"
        );
        heap.debug_check_invariants();
        // It grows in place to the whole run, is freed and kept, and the next block with room
        // takes the same pages again.
        // SAFETY: a live large run of this heap; freed once (kept).
        unsafe {
            assert!(heap.grow_in_place(block, big.pages()));
            (*block).class = big.0;
            (*(Span::chunk(block))).mark_taken(Span::first_page(block), big.pages(), big.0, RunState::Large);
            assert!(heap.keep(block));
        }
        heap.debug_check_invariants();
        let again = heap.alloc_with_room(pages, room, small.0, RunState::Large, TEST_ARENA);
        assert_eq!(again, newer);
        // Without room the best fit, as before: not a kept run of another class.
        let plain = heap.alloc(pages, small.0, RunState::Large, TEST_ARENA);
        assert_eq!(heap.kept_pages, big.pages() + small.pages());
        assert_ne!(plain, older);
        heap.debug_check_invariants();
        heap.release_kept(true);
        // SAFETY: live runs of this heap, each freed once.
        unsafe { free_all(&mut heap, &[again, plain]) };
    }

    #[test]
    fn a_block_grows_in_place_over_a_free_run_and_a_kept_run_after_it() {
        let _settings = DECAY_SETTINGS.lock().unwrap_or_else(|e| e.into_inner());
        let mut heap = PageHeap::new();
        let (class, pages) = kept_class();
        let runs: Vec<_> = (0..4)
            .map(|_| heap.alloc(pages, class.0, RunState::Large, TEST_ARENA))
            .collect();
        let (a, f, k, z) = (runs[0], runs[1], runs[2], runs[3]);
        assert_eq!(Span::start(z), Span::start(a) + 3 * (pages << PAGE_SHIFT));
        make_room(&mut heap, class, 1);
        // SAFETY: large runs of this heap, `f` and `k` freed once each, `a` grown over them.
        unsafe {
            heap.free(f);
            assert!(heap.keep(k));
            heap.debug_check_invariants();
            assert!(heap.grow_in_place(a, 3 * pages));
            assert_eq!((*a).pages as usize, 3 * pages);
        }
        assert_eq!(heap.kept_pages, 0);
        heap.debug_check_invariants();
        // SAFETY: live runs of this heap, each freed once.
        unsafe { free_all(&mut heap, &[a, z]) };
    }

    #[test]
    fn a_block_grows_in_place_over_a_kept_run() {
        let _settings = DECAY_SETTINGS.lock().unwrap_or_else(|e| e.into_inner());
        let mut heap = PageHeap::new();
        let (class, pages) = kept_class();
        let a = heap.alloc(pages, class.0, RunState::Large, TEST_ARENA);
        let b = heap.alloc(pages, class.0, RunState::Large, TEST_ARENA);
        let c = heap.alloc(pages, class.0, RunState::Large, TEST_ARENA);
        assert_eq!(Span::start(b), Span::start(a) + (pages << PAGE_SHIFT));
        make_room(&mut heap, class, 1);
        // SAFETY: large runs of this heap; `b` freed once, `a` grown over it.
        unsafe {
            assert!(heap.keep(b));
            assert!(heap.grow_in_place(a, 2 * pages));
            assert_eq!((*a).pages as usize, 2 * pages);
        }
        assert_eq!(heap.kept_pages, 0);
        heap.debug_check_invariants();
        // SAFETY: `c` now follows `a`: no room to grow, and nothing kept.
        assert!(!unsafe { heap.grow_in_place(a, 3 * pages) });
        // SAFETY: live runs of this heap, each freed once.
        unsafe { free_all(&mut heap, &[a, c]) };
    }

    #[test]
    fn a_discarded_run_is_free_but_not_dirty() {
        let mut heap = PageHeap::new();
        let a = heap.alloc(8, 40, RunState::Large, TEST_ARENA);
        let b = heap.alloc(16, 40, RunState::Large, TEST_ARENA);
        let c = heap.alloc(4, 40, RunState::Large, TEST_ARENA);
        assert!(!a.is_null() && !b.is_null() && !c.is_null());
        // SAFETY: `b` was allocated above and is freed once; its pages are given back first.
        unsafe {
            tally_pal::discard(Span::start(b) as *mut u8, 16 * tally_pal::PAGE);
            heap.free_discarded(b);
        }
        heap.debug_check_invariants();
        assert_eq!(heap.dirty_pages, 0, "the discarded run is not resident");
        assert_eq!(heap.purged_pages, 16);
        // A dirty neighbour merges with it; only its own pages count as resident.
        // SAFETY: allocated above, freed once.
        unsafe { heap.free(a) };
        heap.debug_check_invariants();
        assert_eq!(heap.dirty_pages, 8);
        // SAFETY: as above.
        unsafe { heap.free(c) };
        heap.debug_check_invariants();
        assert_eq!(heap.free_pages, heap.chunks * chunk::USABLE_PAGES);
    }

    /// Sampled runs come from the region's chunks and ordinary runs never do, whatever is free
    /// where: the two kinds keep apart in one heap. A region chunk left wholly free is purged but
    /// stays (the region never takes a chunk back); a full region gives no run.
    #[test]
    fn sampled_runs_keep_to_their_region() {
        let region = SampledRegion::new();
        assert!(
            region.reserve(0, 2 * chunk::CHUNK),
            "reserve two chunks of address space"
        );
        let mut heap = PageHeap::new();
        let in_region = |run: *mut Span| region.contains(Span::start(run));
        let mut sampled = std::vec::Vec::new();
        let mut ordinary = std::vec::Vec::new();
        for i in 0..64 {
            let s = heap.alloc_sampled(1 + i % 8, 0xFD, TEST_ARENA, &region);
            assert!(!s.is_null() && in_region(s), "sampled run {i} outside the region");
            // SAFETY: `s` is a live run of a live chunk.
            assert!(unsafe { (*Span::chunk(s)).sampled_only });
            sampled.push(s);
            let o = heap.alloc(1 + i % 5, 40, RunState::Large, TEST_ARENA);
            assert!(!o.is_null() && !in_region(o), "ordinary run {i} in the region");
            ordinary.push(o);
            heap.debug_check_invariants();
        }
        // Free every other run of each kind: free pages of both kinds, side by side in the lists.
        for run in sampled.iter().chain(&ordinary).step_by(2) {
            // SAFETY: allocated above, freed once (the rest below).
            unsafe { heap.free(*run) };
        }
        heap.debug_check_invariants();
        for i in 0..64 {
            let o = heap.alloc(1 + i % 3, 40, RunState::Large, TEST_ARENA);
            assert!(
                !o.is_null() && !in_region(o),
                "an ordinary run took sampled pages"
            );
            ordinary.push(o);
            let s = heap.alloc_sampled(1 + i % 3, 0xFD, TEST_ARENA, &region);
            assert!(!s.is_null() && in_region(s), "a sampled run took ordinary pages");
            sampled.push(s);
        }
        heap.debug_check_invariants();
        let chunks = heap.chunks;
        for run in sampled
            .iter()
            .chain(&ordinary)
            .skip(1)
            .step_by(2)
            .chain(sampled[64..].iter().chain(&ordinary[64..]).step_by(2))
        {
            // SAFETY: each run is freed once: the odd ones of the first 64, then those above.
            unsafe { heap.free(*run) };
        }
        heap.debug_check_invariants();
        assert_eq!(
            heap.free_pages,
            heap.chunks * chunk::USABLE_PAGES,
            "everything is free"
        );
        heap.purge(0, true);
        heap.debug_check_invariants();
        assert!(
            heap.chunks >= 1 && heap.chunks < chunks,
            "the ordinary chunk is unmapped"
        );
        assert_eq!(heap.dirty_pages + heap.muzzy_pages, 0);
        // The region's chunk stayed: a sampled run fits again without a new chunk. A run as
        // long as a chunk's usable pages takes the region's second chunk, and then it is full.
        let kept = heap.chunks;
        let again = heap.alloc_sampled(4, 0xFD, TEST_ARENA, &region);
        assert!(!again.is_null() && in_region(again));
        assert_eq!(heap.chunks, kept, "no new chunk");
        let whole = heap.alloc_sampled(chunk::USABLE_PAGES, 0xFD, TEST_ARENA, &region);
        assert!(!whole.is_null() && in_region(whole), "the region's second chunk");
        assert!(
            heap.alloc_sampled(chunk::USABLE_PAGES, 0xFD, TEST_ARENA, &region)
                .is_null(),
            "the region is full"
        );
        heap.debug_check_invariants();
    }

    /// A private page heap carves runs out of its chunks and merges them back; after every step
    /// each chunk's page infos describe its runs as the spans say.
    #[test]
    fn page_infos_follow_carves_and_merges() {
        let mut heap = PageHeap::new();
        let mut live: std::vec::Vec<*mut Span> = std::vec::Vec::new();
        let mut seed = 0x2545_F491_4F6C_DD1Du64;
        let mut next = || {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            seed
        };
        let mut chunks: std::vec::Vec<*mut chunk::ChunkHeader> = std::vec::Vec::new();
        for step in 0..600 {
            let r = next();
            if live.is_empty() || r % 3 != 0 {
                let pages = 1 + (r >> 8) as usize % if r & 0x10 == 0 { 8 } else { 300 };
                // A slab, a large block, or a sampled block: marked SAMPLED on every page, its
                // span naming its class (as `prof_hooks::alloc_sampled` leaves it).
                let (class, state) = match r & 0x60 {
                    0 => (5, RunState::Slab),
                    0x20 => (SAMPLED, RunState::Large),
                    _ => (40, RunState::Large),
                };
                let run = heap.alloc(pages, class, state, TEST_ARENA);
                assert!(!run.is_null());
                if class == SAMPLED {
                    // SAFETY: the run is ours.
                    unsafe { (*run).class = NSMALL as u8 };
                }
                let first = Span::first_page(run);
                for k in 0..pages {
                    let word = chunk::info(Span::chunk(run), first + k);
                    if class == 40 && k != 0 && k != pages - 1 {
                        // A large block's words are on its first and last pages.
                        assert_eq!(chunk::info_class(word), FREE_RUN, "page {k} of {pages}");
                    } else {
                        assert_eq!(word, chunk::page_info(class, k), "page {k} of {pages}");
                    }
                }
                if !chunks.contains(&Span::chunk(run)) {
                    chunks.push(Span::chunk(run));
                }
                live.push(run);
            } else {
                let run = live.swap_remove((r >> 8) as usize % live.len());
                // SAFETY: allocated above from this heap, freed once.
                unsafe { heap.free(run) };
            }
            if step % 50 == 0 {
                for &chunk in &chunks {
                    chunk::debug_check_page_infos(chunk);
                }
            }
        }
        for run in live.drain(..) {
            // SAFETY: as above.
            unsafe { heap.free(run) };
        }
        // Everything merged back: each chunk is one free run again.
        for &chunk in &chunks {
            assert_eq!(
                chunk::debug_check_page_infos(chunk),
                [(HEADER_PAGES, USABLE_PAGES, RunState::Free)]
            );
        }
        heap.debug_check_invariants();
    }
}
