//! Chunks: 4 MiB-aligned mappings that arenas carve into slabs and page runs.
//!
//! A chunk starts with its [`ChunkHeader`], which holds all metadata for the chunk's pages, so
//! user data never sits next to the bookkeeping that describes it:
//! - `page_info[i]`, one word per page, says what page `i` belongs to: the size class of the
//!   slab or large block on it (or [`FREE_RUN`] / [`HEADER`]) and the page's distance from the
//!   start of that run. `free` reads just this word to learn a block's class and to check that
//!   the pointer is a block boundary. A large block's first and last pages say its class, the
//!   pages between [`FREE_RUN`] ([`ChunkHeader::mark_ends`]).
//! - `spans[i]` describes the run that *starts* at page `i` (its length, its state, and for a
//!   slab the bitmap of free objects); entries for other pages are unused.
//!
//! Free pages of a chunk are returned with `madvise`; a chunk is unmapped only once all its
//! usable pages are one free, purged run (`extent.rs`). A chunk belongs to one arena for its
//! whole life.
//!
//! With the profiler on, the chunks that hold sampled blocks of the small classes come from one
//! address range reserved for them ([`SampledRegion`]) and hold nothing else, so that Rust's
//! `dealloc` tells a block that may be sampled from the others by its address alone. Those
//! chunks are never unmapped (their pages are given back like any others'): the range stays
//! theirs.

use core::ptr;
use core::sync::atomic::{AtomicU32, AtomicU64, AtomicU8, AtomicUsize, Ordering};

use crate::freed;
use crate::list::{Adapter, Links};
use crate::mapcache;
use crate::options::MAX_ARENAS;
use crate::pagemap;
use crate::size_class::{NCLASSES, SLAB_MAX_OBJS};
use tally_pal::{self as pal, PAGE, PAGE_SHIFT};

pub use crate::pagemap::{CHUNK, CHUNK_SHIFT};
/// Pages in a chunk.
pub const CHUNK_PAGES: usize = CHUNK / PAGE;
/// Pages at the start of each chunk taken by its header.
pub const HEADER_PAGES: usize = core::mem::size_of::<ChunkHeader>().div_ceil(PAGE);
/// Pages of a chunk available for runs.
pub const USABLE_PAGES: usize = CHUNK_PAGES - HEADER_PAGES;

/// `page_info` class byte of a page in a free run.
pub const FREE_RUN: u8 = 0xFE;
/// `page_info` class byte of a header page.
pub const HEADER: u8 = 0xFF;
/// `page_info` class byte of a slab page that has not been opened: no slot starting on it was
/// ever handed out of the slab (see `bin.rs`). A pointer to it is no block (yet), and free's
/// fast path sends it to the full check.
pub const UNOPENED: u8 = 0xFC;

const BITMAP_WORDS: usize = SLAB_MAX_OBJS / 64;

/// Where a page-info word keeps the page's distance from its run start: bit 20 up, so that the
/// word shifted right by 8 is that distance in bytes ([`info_run_bytes`]), which free's fast
/// path adds to the pointer's offset in its page.
const OFFSET_SHIFT: u32 = 8 + PAGE_SHIFT;
const _: () = assert!(CHUNK_PAGES <= 1 << (32 - OFFSET_SHIFT), "offsets fit the word");

/// Packs a page-info word: the owner's class byte and the page's distance from the run start.
#[inline(always)]
pub const fn page_info(class: u8, offset: usize) -> u32 {
    class as u32 | (offset as u32) << OFFSET_SHIFT
}

/// The class byte of a page-info word.
#[inline(always)]
pub const fn info_class(info: u32) -> u8 {
    info as u8
}

/// The distance in pages from the run start, of a page-info word.
#[inline(always)]
pub const fn info_offset(info: u32) -> usize {
    (info >> OFFSET_SHIFT) as usize & (CHUNK_PAGES - 1)
}

/// The distance in bytes from the run start to the page's start, of a page-info word.
#[inline(always)]
pub const fn info_run_bytes(info: u32) -> usize {
    (info >> 8) as usize
}

/// State of a run.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
#[repr(u8)]
pub enum RunState {
    /// In a page heap's free lists.
    Free = 0,
    /// A slab of small objects.
    Slab = 1,
    /// One large block.
    Large = 2,
    /// A freed large block's run that its page heap keeps whole for the next block of its class
    /// (`extent.rs`): free, its pages marked as the block's were.
    Kept = 3,
}

/// Whether a run of `state` owned by `owner` is a large block of a size class, whose info words
/// are kept on its first and last pages only ([`ChunkHeader::mark_ends`]). A sampled block's
/// (`SAMPLED`, above the classes) are kept on every page, as a slab's.
#[inline(always)]
pub fn marks_boundaries(state: RunState, owner: u8) -> bool {
    matches!(state, RunState::Large | RunState::Kept) && (owner as usize) < NCLASSES
}

/// What is known about the resident pages of a free run.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
#[repr(u8)]
pub enum Purge {
    /// None of its pages are resident (fresh, or given back with `MADV_DONTNEED`).
    Clean = 0,
    /// Some pages were written and are still resident.
    Dirty = 1,
    /// Pages were given back with `MADV_FREE`: resident until the kernel needs them.
    Muzzy = 2,
}

/// Describes the run of pages starting at its page.
///
/// Invariants, for a run starting at page `h` of `pages` pages:
/// - for a large block of a size class, `page_info(class, 0)` on its first page and
///   `page_info(class, pages - 1)` on its last, and class [`FREE_RUN`] on the pages between
///   ([`ChunkHeader::mark_ends`]); for a slab `page_info[h + k]` = `page_info(class, k)` for
///   `k < opened` (`page_info(UNOPENED, k)` for its other pages), and for a sampled block
///   (class `SAMPLED`) on every page; for free runs every page's class is [`FREE_RUN`] and only
///   the first and last pages' offsets are kept exact (see `extent.rs`);
/// - for a slab, `nfree` = the number of set bits of `bitmap` (1 = free object), and bits at or
///   past `class.slab_objects()` are 0;
/// - `next`/`prev` link the run into exactly one list (a bin's partial or empty list, or a page heap's
///   free list) or are null when it is in none.
#[repr(C)]
pub struct Span {
    /// Run length in pages.
    pub pages: u32,
    /// What the run is.
    pub state: RunState,
    /// Size class for slabs and large blocks.
    pub class: u8,
    /// Free objects in a slab.
    pub nfree: u16,
    /// For a free run: what its resident pages are.
    pub purge: Purge,
    /// For a slab: how many of its pages, from the first, are opened (see [`UNOPENED`]); a
    /// page heap opens every page of a run it hands out, and a bin closes a new slab's again.
    pub opened: u16,
    /// For a free run: how many of its pages may be resident (an upper bound).
    pub resident: u32,
    /// For a free run with resident pages: when they became dirty (or muzzy), in ms.
    pub since_ms: u64,
    /// For a free run with resident pages: its links in the page heap's dirty or muzzy list
    /// (most recent first), through [`LruLinks`].
    pub lru: Links<Span>,
    /// Its links in its list through [`RunLinks`]: a free run's size bucket, or a slab's bin's
    /// partly free list.
    pub links: Links<Span>,
    /// Free objects of a slab, one bit each.
    pub bitmap: [u64; BITMAP_WORDS],
}

/// A span's place in its size bucket (free runs) or its bin's partly free list (slabs).
pub struct RunLinks;
// SAFETY: returns the address of the span's `links` field.
unsafe impl Adapter for RunLinks {
    type Node = Span;
    unsafe fn links(node: *mut Span) -> *mut Links<Span> {
        // SAFETY: per the contract `node` points at a span.
        unsafe { ptr::addr_of_mut!((*node).links) }
    }
}

/// A free run's place in its page heap's dirty or muzzy list.
pub struct LruLinks;
// SAFETY: returns the address of the span's `lru` field.
unsafe impl Adapter for LruLinks {
    type Node = Span;
    unsafe fn links(node: *mut Span) -> *mut Links<Span> {
        // SAFETY: per the contract `node` points at a span.
        unsafe { ptr::addr_of_mut!((*node).lru) }
    }
}

/// The metadata at the start of every chunk. See the module docs.
#[repr(C)]
pub struct ChunkHeader {
    /// Index of the owning arena.
    pub arena: u32,
    /// The chunk retired before this one, while it waits to be unmapped ([`retire`]).
    pub retired_next: usize,
    /// Whether the chunk lies in the [`SampledRegion`]: its runs are sampled blocks' or free,
    /// and its free runs sit in the page heap's lists for those (`extent.rs`). Set when the
    /// chunk is mapped, never changed.
    pub sampled_only: bool,
    /// One word per page; see [`page_info`].
    pub page_info: [AtomicU32; CHUNK_PAGES],
    /// Run descriptors, by first page.
    pub spans: [Span; CHUNK_PAGES],
}

impl ChunkHeader {
    /// The header of the chunk holding `addr` (which must lie in a chunk).
    #[inline(always)]
    pub fn of(addr: usize) -> *mut ChunkHeader {
        (addr & !(CHUNK - 1)) as *mut ChunkHeader
    }

    /// Address of page `index` of this chunk.
    #[inline(always)]
    pub fn page_addr(&self, index: usize) -> usize {
        self as *const Self as usize + (index << PAGE_SHIFT)
    }

    /// Index of the page holding `addr`, which must lie in this chunk.
    #[inline(always)]
    pub fn page_index(&self, addr: usize) -> usize {
        (addr - self as *const Self as usize) >> PAGE_SHIFT
    }

    /// Writes the info words of a run of `pages` pages at page `first` taken for `owner` in
    /// `state`: [`ChunkHeader::mark_ends`] for a large block of a size class, else
    /// [`ChunkHeader::mark_run`]. The pages must say [`FREE_RUN`] (a free run's pages).
    #[inline(always)]
    pub fn mark_taken(&self, first: usize, pages: usize, owner: u8, state: RunState) {
        if marks_boundaries(state, owner) {
            self.mark_ends(first, pages, owner);
        } else {
            self.mark_run(first, pages, owner);
        }
    }

    /// Writes the info words of the first and last pages of a run of `pages` pages at page
    /// `first` for `owner`: `page_info(owner, 0)` and `page_info(owner, pages - 1)`. All a large
    /// block of a class or a free run keeps, their pages between saying [`FREE_RUN`]: freeing
    /// merges runs by these two words, and `free` of a pointer on a page between them finds
    /// [`FREE_RUN`] and takes the full check (`block.rs`), which names the block it points
    /// into. One word per page took 64 stores to allocate a 256 KiB block from the page heap
    /// and 64 to free it, 250 of the 1450 instructions of a `malloc`/`free` pair in batches of
    /// 64 such blocks.
    #[inline(always)]
    pub fn mark_ends(&self, first: usize, pages: usize, owner: u8) {
        let words = &self.page_info[first..first + pages];
        words[0].store(page_info(owner, 0), Ordering::Relaxed);
        words[pages - 1].store(page_info(owner, pages - 1), Ordering::Relaxed);
    }

    /// Writes `page_info(owner, k)` for each page `first + k` of a `pages`-page run.
    pub fn mark_run(&self, first: usize, pages: usize, owner: u8) {
        // One bounds check for the run, then a store per page the compiler unrolls (indexing
        // `first + k` checked every page: 7 instructions a page, three quarters of freeing a
        // 256 KiB block to its page heap).
        let mut word = page_info(owner, 0);
        for slot in &self.page_info[first..first + pages] {
            slot.store(word, Ordering::Relaxed);
            word += page_info(0, 1);
        }
    }
}

impl Span {
    /// The chunk holding this span descriptor.
    #[inline(always)]
    pub fn chunk(this: *const Span) -> *mut ChunkHeader {
        ChunkHeader::of(this as usize)
    }

    /// Index of the run's first page in its chunk.
    #[inline(always)]
    pub fn first_page(this: *const Span) -> usize {
        let chunk = Span::chunk(this);
        // SAFETY: `this` points into `chunk.spans`, so the offset is in bounds.
        let base = unsafe { ptr::addr_of!((*chunk).spans) } as usize;
        (this as usize - base) / core::mem::size_of::<Span>()
    }

    /// Address of the run's first byte.
    #[inline(always)]
    pub fn start(this: *const Span) -> usize {
        (Span::chunk(this) as usize) + (Span::first_page(this) << PAGE_SHIFT)
    }
}

/// Chunks mapped so far (a statistic).
pub static CHUNKS_MAPPED: AtomicU64 = AtomicU64::new(0);
/// Chunks unmapped again after all their pages were free and purged (a statistic).
pub static CHUNKS_UNMAPPED: AtomicU64 = AtomicU64::new(0);

/// The arenas that have mapped a chunk, one bit each (arena `i`: bit `i % 64` of word `i / 64`),
/// set when a chunk is first mapped for the arena, never cleared. Passes over every arena (decay,
/// the idle-page balance) skip the others: an arena without chunks has nothing to give back,
/// and taking its page-heap lock would write, so make resident, its page of `.bss` in every
/// process, used or not (eight arenas and 36 KiB in a small program on two CPUs).
static ARENAS_WITH_CHUNKS: [AtomicU64; MAX_ARENAS.div_ceil(64)] =
    [const { AtomicU64::new(0) }; MAX_ARENAS.div_ceil(64)];

/// Whether arena `arena` has ever mapped a chunk (see [`ARENAS_WITH_CHUNKS`]).
pub fn arena_has_chunks(arena: u32) -> bool {
    let i = arena as usize;
    ARENAS_WITH_CHUNKS[i / 64].load(Ordering::Relaxed) & (1 << (i % 64)) != 0
}

/// Unmaps the chunk holding `span`, which must be one free run covering all its usable pages,
/// in no list, of a chunk outside the [`SampledRegion`], at once (tests: the allocator unmaps
/// through [`retire`] and [`take_retired`]).
///
/// # Safety
/// No block of the chunk may be live, nothing may refer to its header afterwards, and no
/// thread may remember it (`pagemap::ChunkSeen`: none freed into it).
#[cfg(test)]
pub unsafe fn unmap_chunk(span: *mut Span) {
    let base = Span::chunk(span) as usize;
    pagemap::set(base, 1, 0);
    // SAFETY: per the contract.
    unsafe { unmap_forgotten(base) };
}

/// Whether wholly free chunks may be unmapped: whether the process-wide barrier their
/// unmapping needs (`pagemap::ChunkSeen`'s protocol) works here, asked once (0: not yet, 1:
/// yes, 2: no). Where it does not, chunks stay their arena's, their pages given back.
static UNMAPPING: AtomicU8 = AtomicU8::new(0);

/// See [`UNMAPPING`].
#[inline(always)]
pub fn unmapping_allowed() -> bool {
    match UNMAPPING.load(Ordering::Relaxed) {
        1 => true,
        2 => false,
        _ => ask_unmapping(),
    }
}

#[cold]
#[inline(never)]
fn ask_unmapping() -> bool {
    let works = pal::thread::barrier_all_threads();
    UNMAPPING.store(if works { 1 } else { 2 }, Ordering::Relaxed);
    works
}

/// Chunks retired and not unmapped yet: the last one's address (0: none), each header's
/// `retired_next` the one retired before it. A stack pushed by [`retire`] (under any page
/// heap's lock) and emptied whole by [`take_retired`].
static RETIRED: AtomicUsize = AtomicUsize::new(0);

/// Retires the chunk holding `span`, which must be one free run covering all its usable pages,
/// in no list, of a chunk outside the [`SampledRegion`], that its page heap no longer counts:
/// takes it out of the page map (step 1 of `pagemap::ChunkSeen`'s protocol) and puts it on the
/// stack of chunks to unmap, which `decay::unmap_retired` empties after the protocol's other
/// steps, out of every lock.
///
/// # Safety
/// No block of the chunk may be live and nothing but threads' memories of chunks may refer to
/// it.
#[cold]
#[inline(never)]
pub unsafe fn retire(span: *mut Span) {
    let chunk = Span::chunk(span);
    let base = chunk as usize;
    // SAFETY: per the contract the header is live (mapped until unmapped from the stack).
    debug_assert!(!unsafe { (*chunk).sampled_only });
    pagemap::set(base, 1, 0);
    let mut head = RETIRED.load(Ordering::Relaxed);
    loop {
        // SAFETY: as above; the chunk is ours alone until pushed.
        unsafe { (*chunk).retired_next = head };
        match RETIRED.compare_exchange_weak(head, base, Ordering::Release, Ordering::Relaxed) {
            Ok(_) => return,
            Err(now) => head = now,
        }
    }
}

/// Whether any chunk is retired and not yet taken (one load).
#[inline(always)]
pub fn any_retired() -> bool {
    RETIRED.load(Ordering::Relaxed) != 0
}

/// Takes every retired chunk: the last one's address (0: none); [`next_retired`] walks them.
pub fn take_retired() -> usize {
    RETIRED.swap(0, Ordering::Acquire)
}

/// The retired chunk after `base` in what [`take_retired`] returned (0: none).
///
/// # Safety
/// `base` must be a retired chunk taken by [`take_retired`], not unmapped yet.
pub unsafe fn next_retired(base: usize) -> usize {
    // SAFETY: per the contract the header is mapped; the acquiring swap that took the stack
    // made its pusher's write visible.
    unsafe { (*(base as *const ChunkHeader)).retired_next }
}

/// Unmaps the retired chunk at `base`.
///
/// # Safety
/// No thread may remember the chunk any more (every thread forgot since it was retired), and
/// nothing may refer to it.
pub unsafe fn unmap_forgotten(base: usize) {
    // SAFETY: per the contract the chunk is dead.
    unsafe { pal::unmap(base as *mut u8, CHUNK) };
    CHUNKS_UNMAPPED.fetch_add(1, Ordering::Relaxed);
}

/// Maps and registers a new chunk for arena `arena`, its whole usable area one free run (not
/// linked into any list): the next unused chunk of `region` (`sampled_only`), or else a chunk
/// window of a cached huge mapping (`mapcache::take_chunk`; its pages, resident, make the run
/// dirty) or a fresh mapping. Returns the free run's span, or null when out of memory or
/// `region` has no chunk left.
#[link_section = ".text.hot.tally"]
pub fn new_chunk(arena: u32, region: Option<&SampledRegion>) -> *mut Span {
    let mut reused = false;
    let base = match region {
        Some(region) => region.take_chunk(),
        None => match mapcache::take_chunk() {
            Some(window) => {
                // The header must start zeroed: give its pages back, which zeroes them (the
                // few the chunk uses fault in again), rather than write 128 KiB.
                // SAFETY: the window is ours alone, dead, and not in the page map.
                unsafe { pal::discard(window as *mut u8, HEADER_PAGES * PAGE) };
                reused = true;
                window as *mut u8
            }
            None => pal::map_aligned(CHUNK, CHUNK),
        },
    };
    if base.is_null() {
        return ptr::null_mut();
    }
    // SAFETY: the chunk is ours alone, mapped, aligned, and not yet in the page map.
    unsafe { crate::thp::advise(base, CHUNK, crate::thp::Mapping::Chunk) };
    let header = base.cast::<ChunkHeader>();
    // SAFETY: the mapping is fresh or its header pages were just discarded, so the header is
    // zeroed (a valid ChunkHeader: all atomics 0, spans zeroed with null links and state Free),
    // and it is owned by us until registered below.
    unsafe {
        (*header).arena = arena;
        (*header).sampled_only = region.is_some();
        // Every chunk's making draws the free mark's key if nothing has yet: a thread that
        // finds a chunk reads it without a check (`freed::drawn_key`).
        freed::key();
        (*header).mark_run(0, HEADER_PAGES, HEADER);
        (*header).mark_run(HEADER_PAGES, USABLE_PAGES, FREE_RUN);
        let span = ptr::addr_of_mut!((*header).spans[HEADER_PAGES]);
        (*span).pages = USABLE_PAGES as u32;
        (*span).state = RunState::Free;
        if reused {
            // A huge block wrote them: any of its pages may be resident.
            (*span).purge = Purge::Dirty;
            (*span).resident = USABLE_PAGES as u32;
            (*span).since_ms = pal::now_ms();
        } else {
            (*span).purge = Purge::Clean;
        }
        if !pagemap::set_chunk(base as usize, pagemap::chunk_tag(arena)) {
            // A region's chunk stays reserved (and lost: the region never hands it out again).
            if region.is_none() {
                pal::unmap(base, CHUNK);
            }
            return ptr::null_mut();
        }
        CHUNKS_MAPPED.fetch_add(1, Ordering::Relaxed);
        if !arena_has_chunks(arena) {
            ARENAS_WITH_CHUNKS[arena as usize / 64].fetch_or(1 << (arena % 64), Ordering::Relaxed);
        }
        span
    }
}

/// An address range reserved (`PROT_NONE`) for the chunks of sampled blocks, handed out a chunk
/// at a time from its start and made readable and writable then; chunks never go back.
///
/// Invariants: `base` is 0 (nothing reserved) or a [`CHUNK`]-aligned address whose `len` bytes
/// (a multiple of [`CHUNK`]) are this region's, set once before any chunk is taken; every chunk
/// below `next` has been handed out, and none at or above it.
pub struct SampledRegion {
    base: AtomicUsize,
    len: AtomicUsize,
    next: AtomicUsize,
}

/// The process's [`SampledRegion`], reserved at initialization when the profiler is on.
pub static SAMPLED_REGION: SampledRegion = SampledRegion::new();

impl SampledRegion {
    /// A region with nothing reserved.
    pub const fn new() -> Self {
        SampledRegion {
            base: AtomicUsize::new(0),
            len: AtomicUsize::new(0),
            next: AtomicUsize::new(0),
        }
    }

    /// Reserves `len` bytes (rounded up to chunks) of address space, aligned to a chunk, at
    /// `hint` if that range is free, else where the kernel puts it. False when the kernel refuses
    /// (a limit on address space, `ulimit -v`) or when this region has one already. Call before
    /// any chunk is taken (at initialization, or in a test).
    pub fn reserve(&self, hint: usize, len: usize) -> bool {
        let len = len.next_multiple_of(CHUNK);
        if self.base.load(Ordering::Relaxed) != 0 || len == 0 {
            return false;
        }
        // Over-reserve by a chunk to align; the slack stays reserved and unused.
        let raw = pal::reserve_near(hint, len + CHUNK);
        if raw.is_null() {
            return false;
        }
        let base = (raw as usize).next_multiple_of(CHUNK);
        self.next.store(base, Ordering::Relaxed);
        self.len.store(len, Ordering::Relaxed);
        self.base.store(base, Ordering::Release);
        true
    }

    /// The region's first address and length, `(0, 0)` when nothing is reserved.
    pub fn bounds(&self) -> (usize, usize) {
        let base = self.base.load(Ordering::Acquire);
        (
            base,
            if base == 0 {
                0
            } else {
                self.len.load(Ordering::Relaxed)
            },
        )
    }

    /// Whether `addr` lies in the region.
    #[cfg(test)]
    pub fn contains(&self, addr: usize) -> bool {
        let (base, len) = self.bounds();
        addr.wrapping_sub(base) < len
    }

    /// Makes the next unused chunk readable and writable and returns it; null when the region
    /// has none left (or none reserved) or the kernel refuses.
    fn take_chunk(&self) -> *mut u8 {
        let (base, len) = self.bounds();
        if len == 0 || self.next.load(Ordering::Relaxed) >= base + len {
            return ptr::null_mut();
        }
        let at = self.next.fetch_add(CHUNK, Ordering::Relaxed);
        if at >= base + len {
            return ptr::null_mut();
        }
        // SAFETY: `[at, at + CHUNK)` lies in the reservation and was handed out to nobody
        // before (`next` only grows), so it is ours.
        if !unsafe { pal::protect_rw(at as *mut u8, CHUNK) } {
            return ptr::null_mut();
        }
        at as *mut u8
    }
}

const _: () = assert!(HEADER_PAGES < CHUNK_PAGES / 16, "chunk header too large");
const _: () = assert!(core::mem::size_of::<RunState>() == 1);
const _: () = assert!(core::mem::size_of::<Purge>() == 1);

#[cfg(test)]
/// The page-info word of page `index` of `chunk` (tests).
pub(crate) fn info(chunk: *mut ChunkHeader, index: usize) -> u32 {
    // SAFETY: `chunk` is a live chunk header and `index < CHUNK_PAGES`.
    unsafe { (*chunk).page_info[index].load(Ordering::Relaxed) }
}

#[cfg(test)]
/// Walks a chunk's runs from its first usable page, by each run's span, and checks the
/// `page_info` invariants on [`Span`]: header pages say [`HEADER`] with their index; a slab
/// or sampled run says `page_info(class, k)` on its page `k`, a large block of a class on its
/// first and last pages and [`FREE_RUN`] between; a free run says [`FREE_RUN`]
/// on every page with exact offsets on its first and last; runs tile the usable pages.
/// Returns the runs as (first page, pages, state).
pub(crate) fn debug_check_page_infos(chunk: *mut ChunkHeader) -> std::vec::Vec<(usize, usize, RunState)> {
    for i in 0..HEADER_PAGES {
        assert_eq!(info(chunk, i), page_info(HEADER, i), "header page {i}");
    }
    let mut runs = Vec::new();
    let mut first = HEADER_PAGES;
    while first < CHUNK_PAGES {
        // SAFETY: `first` starts a run, so its span describes it.
        let (pages, state, class) = unsafe {
            let span = &(*chunk).spans[first];
            (span.pages as usize, span.state, span.class)
        };
        assert!(
            pages >= 1 && first + pages <= CHUNK_PAGES,
            "run at {first}: {pages} pages"
        );
        if state == RunState::Free {
            for k in 0..pages {
                assert_eq!(
                    info_class(info(chunk, first + k)),
                    FREE_RUN,
                    "free page {}",
                    first + k
                );
            }
            assert_eq!(info_offset(info(chunk, first)), 0, "free run at {first}");
            assert_eq!(
                info_offset(info(chunk, first + pages - 1)),
                pages - 1,
                "free run at {first}"
            );
        } else {
            let opened = if state == RunState::Slab {
                // SAFETY: `first` starts a run, so its span describes it.
                unsafe { (*chunk).spans[first].opened as usize }
            } else {
                pages
            };
            // A sampled block's span names its class; its pages say SAMPLED (above the classes).
            let first_class = info_class(info(chunk, first));
            let class = if state == RunState::Large && first_class as usize >= NCLASSES {
                first_class
            } else {
                class
            };
            for k in 0..pages {
                let word = info(chunk, first + k);
                if marks_boundaries(state, class) && k != 0 && k != pages - 1 {
                    assert_eq!(info_class(word), FREE_RUN, "large run at {first}, page {k}");
                    continue;
                }
                let owner = if k < opened { class } else { UNOPENED };
                assert_eq!(word, page_info(owner, k), "run at {first}, page {k}");
            }
        }
        runs.push((first, pages, state));
        first += pages;
    }
    assert_eq!(first, CHUNK_PAGES, "the runs tile the usable pages");
    runs
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn page_info_words_round_trip() {
        for class in [0u8, 1, 38, 100, FREE_RUN, HEADER] {
            for offset in [0, 1, 2, HEADER_PAGES, 255, 256, CHUNK_PAGES / 2, CHUNK_PAGES - 1] {
                let word = page_info(class, offset);
                assert_eq!((info_class(word), info_offset(word)), (class, offset));
                assert_eq!(info_run_bytes(word), offset * PAGE);
            }
        }
    }

    #[test]
    fn a_new_chunk_is_its_header_then_one_free_run() {
        let span = new_chunk(3, None);
        assert!(!span.is_null());
        let chunk = Span::chunk(span);
        assert_eq!(chunk as usize % CHUNK, 0, "chunk-aligned");
        assert_eq!(pagemap::lookup(chunk as usize), chunk as usize, "registered");
        assert_eq!(pagemap::lookup(chunk as usize + CHUNK - 1), chunk as usize);
        // SAFETY: a fresh chunk, ours alone.
        unsafe {
            assert_eq!((*chunk).arena, 3);
            assert_eq!(
                ((*span).pages as usize, (*span).state, (*span).purge),
                (USABLE_PAGES, RunState::Free, Purge::Clean)
            );
            assert!(
                crate::list::List::<RunLinks>::next(span).is_null()
                    && crate::list::List::<RunLinks>::prev(span).is_null(),
                "in no list"
            );
        }
        assert_eq!(Span::first_page(span), HEADER_PAGES);
        assert_eq!(Span::start(span), chunk as usize + HEADER_PAGES * PAGE);
        assert_eq!(
            debug_check_page_infos(chunk),
            [(HEADER_PAGES, USABLE_PAGES, RunState::Free)]
        );
        // Address arithmetic: every page's address maps back to its index and its chunk.
        // SAFETY: as above.
        let header = unsafe { &*chunk };
        for index in [0, 1, HEADER_PAGES, CHUNK_PAGES / 3, CHUNK_PAGES - 1] {
            let addr = header.page_addr(index);
            assert_eq!(addr, chunk as usize + index * PAGE);
            assert_eq!(header.page_index(addr + PAGE - 1), index);
            assert_eq!(ChunkHeader::of(addr + 17), chunk);
        }
        // SAFETY: one free, clean run covering the usable pages, in no list, nothing live.
        unsafe { unmap_chunk(span) };
        assert_eq!(pagemap::lookup(chunk as usize), 0, "unregistered");
    }

    #[test]
    fn mark_run_gives_each_page_its_distance_from_the_run_start() {
        let span = new_chunk(0, None);
        assert!(!span.is_null());
        let chunk = Span::chunk(span);
        // SAFETY: a fresh chunk, ours alone.
        let header = unsafe { &*chunk };
        header.mark_run(HEADER_PAGES + 5, 7, 42);
        for k in 0..7 {
            let word = info(chunk, HEADER_PAGES + 5 + k);
            assert_eq!(word, page_info(42, k));
            // What `free` does: the run's first page from any of its pages.
            assert_eq!(HEADER_PAGES + 5 + k - info_offset(word), HEADER_PAGES + 5);
        }
        assert_eq!(
            info_class(info(chunk, HEADER_PAGES + 4)),
            FREE_RUN,
            "the page before is untouched"
        );
        assert_eq!(
            info_class(info(chunk, HEADER_PAGES + 12)),
            FREE_RUN,
            "the page after is untouched"
        );
        header.mark_run(HEADER_PAGES, USABLE_PAGES, FREE_RUN);
        // SAFETY: back to one free, clean run covering the usable pages, in no list.
        unsafe { unmap_chunk(span) };
    }
}
