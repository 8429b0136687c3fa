//! Chunks: 4 MiB-aligned mappings that arenas carve into slabs and page runs.
//!
//! A chunk starts with its [`ChunkHeader`], which holds all metadata for the chunk's pages, so
//! user data never sits next to the bookkeeping that describes it:
//! - `page_info[i]`, one word per page, says what page `i` belongs to: the size class of the
//!   slab or large block on it (or [`FREE_RUN`] / [`HEADER`]) and the page's distance from the
//!   start of that run. `free` reads just this word to learn a block's class and to check that
//!   the pointer is a block boundary.
//! - `spans[i]` describes the run that *starts* at page `i` (its length, its state, and for a
//!   slab the bitmap of free objects); entries for other pages are unused.
//!
//! Chunks are never unmapped once made (their pages are returned with `madvise` instead); a
//! chunk belongs to one arena for its whole life.

use core::ptr;
use core::sync::atomic::{AtomicU32, AtomicU64, Ordering};

use crate::pagemap;
use crate::size_class::SLAB_MAX_OBJS;
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

const BITMAP_WORDS: usize = SLAB_MAX_OBJS / 64;

/// Packs a page-info word: the owner's class byte and the page's distance from the run start.
#[inline(always)]
pub const fn page_info(class: u8, offset: usize) -> u32 {
    class as u32 | (offset as u32) << 8
}

/// The class byte of a page-info word.
#[inline(always)]
pub const fn info_class(info: u32) -> u8 {
    info as u8
}

/// The distance in pages from the run start, of a page-info word.
#[inline(always)]
pub const fn info_offset(info: u32) -> usize {
    (info >> 8) as usize & (CHUNK_PAGES - 1)
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
/// - `page_info[h + k]` = `page_info(class, k)` for `k < pages` for slabs and large blocks; for
///   free runs every page's class is [`FREE_RUN`] and only the first and last pages' offsets
///   are kept exact (see `extent.rs`);
/// - for a slab, `nfree` = the number of set bits of `bitmap` (1 = free object), and bits at or
///   past `class.slab_objects()` are 0;
/// - `next`/`prev` link the run into exactly one list (a bin's partial list or a page heap's
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
    /// For a free run: how many of its pages may be resident (an upper bound).
    pub resident: u32,
    /// For a free run with resident pages: when they became dirty (or muzzy), in ms.
    pub since_ms: u64,
    /// For a free run with resident pages: its neighbours in the page heap's dirty or muzzy
    /// list (most recent first).
    pub lru_next: *mut Span,
    /// See `lru_next`.
    pub lru_prev: *mut Span,
    /// Next run in this run's list.
    pub next: *mut Span,
    /// Previous run in this run's list.
    pub prev: *mut Span,
    /// Free objects of a slab, one bit each.
    pub bitmap: [u64; BITMAP_WORDS],
}

/// The metadata at the start of every chunk. See the module docs.
#[repr(C)]
pub struct ChunkHeader {
    /// Index of the owning arena.
    pub arena: u32,
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

    /// Writes `page_info(owner, k)` for each page `first + k` of a `pages`-page run.
    pub fn mark_run(&self, first: usize, pages: usize, owner: u8) {
        for k in 0..pages {
            self.page_info[first + k].store(page_info(owner, k), Ordering::Relaxed);
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

/// Unmaps the chunk holding `span`, which must be one free, purged run covering all its usable
/// pages, in no list.
///
/// # Safety
/// No block of the chunk may be live and nothing may refer to its header afterwards.
pub unsafe fn unmap_chunk(span: *mut Span) {
    let base = Span::chunk(span) as usize;
    pagemap::set(base, 1, 0);
    // SAFETY: per the contract the chunk is dead.
    unsafe { pal::unmap(base as *mut u8, CHUNK) };
    CHUNKS_UNMAPPED.fetch_add(1, Ordering::Relaxed);
}

/// Maps and registers a new chunk for arena `arena`, its whole usable area one free run (not
/// linked into any list). Returns the free run's span, or null when out of memory.
pub fn new_chunk(arena: u32) -> *mut Span {
    let base = pal::map_aligned(CHUNK, CHUNK);
    if base.is_null() {
        return ptr::null_mut();
    }
    let header = base.cast::<ChunkHeader>();
    // SAFETY: the mapping is fresh, zeroed (a valid ChunkHeader: all atomics 0, spans zeroed
    // with null links and state Free), and owned by us until registered below.
    unsafe {
        (*header).arena = arena;
        (*header).mark_run(0, HEADER_PAGES, HEADER);
        (*header).mark_run(HEADER_PAGES, USABLE_PAGES, FREE_RUN);
        let span = ptr::addr_of_mut!((*header).spans[HEADER_PAGES]);
        (*span).pages = USABLE_PAGES as u32;
        (*span).state = RunState::Free;
        (*span).purge = Purge::Clean;
        if !pagemap::set(base as usize, 1, base as usize) {
            pal::unmap(base, CHUNK);
            return ptr::null_mut();
        }
        CHUNKS_MAPPED.fetch_add(1, Ordering::Relaxed);
        span
    }
}

const _: () = assert!(HEADER_PAGES < CHUNK_PAGES / 16, "chunk header too large");
const _: () = assert!(core::mem::size_of::<RunState>() == 1);
const _: () = assert!(core::mem::size_of::<Purge>() == 1);
