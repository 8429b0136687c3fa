//! From a pointer to the block it starts: the page map gives the chunk (or the huge block), the
//! page's info word gives the class and the page's distance from the run's start, and a
//! multiply and a compare check that the pointer is a block boundary ([`SlotCheck`]).
//! [`cached_block_of`] is the inlined check of the free fast path, for the blocks thread caches
//! keep (small ones, and large ones up to 32 KiB); [`block_of`] is the full lookup, which names
//! what is wrong with an invalid pointer and aborts. The boundary check of a cached block is
//! written once, in [`cached_block_of`]; `block_of` asks it. [`run_block_at`] is the quick
//! check for the start of a large or sampled block (its first page's word), which `free` and
//! `realloc` of such blocks make before the full lookup.

use core::ptr;
use core::sync::atomic::{AtomicU32, Ordering};

use tally_pal::{self as pal, PAGE, PAGE_SHIFT};

use crate::chunk::{
    info_class, info_offset, info_run_bytes, page_info, ChunkHeader, Span, CHUNK_PAGES, FREE_RUN,
    HEADER_PAGES, UNOPENED,
};
use crate::huge::HugeBlock;
use crate::pagemap::{self, ChunkSeen, Seen, CHUNK, TAG_HUGE};
use crate::size_class::{SizeClass, SlotCheck, CLASS_STRIDE, NCLASSES, NSMALL, SLOT_CHECK_MAX_OFFSET};
use crate::{guard, prof_hooks};

// Offsets into a chunk are within what the slot check is exact for.
const _: () = assert!(CHUNK <= SLOT_CHECK_MAX_OFFSET);

/// What a pointer handed to `free` or `realloc` refers to.
pub enum Block {
    /// A small block of a slab.
    Small(SizeClass),
    /// A large block: a page run of its own.
    Large(*mut Span, SizeClass),
    /// A block the profiler sampled: a page run of its own, of the given class.
    Sampled(*mut Span, SizeClass),
    /// A huge block: a mapping of its own.
    Huge(*mut HugeBlock),
    /// A guarded block (guarded sampling): the index of its slot.
    Guarded(usize),
}

/// Identifies the block at `p`, or aborts with a one-line message naming `who` and `p` if `p`
/// is not the start of a live block Tally handed out (a report with the block's stacks for a
/// pointer into the guarded region).
#[link_section = ".text.hot.tally"]
pub fn block_of(p: *mut u8, who: &str) -> Block {
    let addr = p as usize;
    // The guarded region first: the page map has a word per 4 MiB window, and the window of a
    // huge block's last pages also covers whatever the kernel mapped after them, the guarded
    // region included.
    if guard::contains(addr) {
        return Block::Guarded(guard::live_slot(p, who));
    }
    let entry = pagemap::lookup(addr);
    if entry == 0 {
        if crate::mapcache::starts_at(addr) {
            pal::fatal(format_args!(
                "tally: {who}(): double free of {p:p}: a huge block freed before (its mapping \
                 waits in the huge-mapping cache)\n"
            ));
        }
        invalid(who, p, format_args!("not allocated by Tally"));
    }
    if entry & TAG_HUGE != 0 {
        let d = (entry & !TAG_HUGE) as *mut HugeBlock;
        // SAFETY: page-map entries tagged huge point at live descriptors.
        let base = unsafe { (*d).base };
        if base != addr {
            invalid(who, p, format_args!("inside a huge block at {:#x}", base));
        }
        return Block::Huge(d);
    }
    let chunk = entry as *mut ChunkHeader;
    // SAFETY: untagged non-zero entries point at live chunk headers, and `addr` lies in that
    // chunk, so its page index is in bounds.
    unsafe {
        let page = (*chunk).page_index(addr);
        let info = (*chunk).page_info[page].load(Ordering::Relaxed);
        let class = info_class(info);
        if class == prof_hooks::SAMPLED {
            let head = page - info_offset(info);
            if addr != (*chunk).page_addr(head) {
                invalid(
                    who,
                    p,
                    format_args!("inside a sampled block at {:#x}", (*chunk).page_addr(head)),
                );
            }
            let span = ptr::addr_of_mut!((*chunk).spans[head]);
            return Block::Sampled(span, SizeClass((*span).class));
        }
        if class == FREE_RUN {
            if let Some((start, size)) = large_block_around(chunk, page) {
                invalid(
                    who,
                    p,
                    format_args!("inside a block of {size} bytes at {start:#x}"),
                );
            }
            pal::fatal(format_args!(
                "tally: {who}(): double free of {p:p}: its pages are free (a block freed \
                 before, or a pointer never allocated)\n"
            ));
        }
        if class == UNOPENED {
            invalid(
                who,
                p,
                format_args!("never allocated (no block on its page was handed out yet)"),
            );
        }
        if class as usize >= NCLASSES {
            invalid(who, p, format_args!("not a live block"));
        }
        let class = SizeClass(class);
        let head = page - info_offset(info);
        let start = (*chunk).page_addr(head);
        if class.is_small() {
            if cached_block_of(p).is_none() {
                invalid(
                    who,
                    p,
                    format_args!("not the start of a {}-byte block", class.size()),
                );
            }
            Block::Small(class)
        } else {
            if addr != start {
                invalid(
                    who,
                    p,
                    format_args!("inside a block of {} bytes at {:#x}", class.size(), start),
                );
            }
            Block::Large(ptr::addr_of_mut!((*chunk).spans[head]), class)
        }
    }
}

/// The large block of a size class that holds page `page` of `chunk` between its first and last
/// pages, whose info words say [`FREE_RUN`] as free pages' do (`ChunkHeader::mark_ends`): its
/// start address and size. Reads only info words, outward from `page` to the nearest on either
/// side that is not [`FREE_RUN`]: the block's first page says its class at offset 0, its last
/// the same class at its distance from the first. For the message of an invalid pointer.
///
/// # Safety
/// `chunk` must be a live chunk header and `page` one of its pages.
unsafe fn large_block_around(chunk: *mut ChunkHeader, page: usize) -> Option<(usize, usize)> {
    // SAFETY: per the contract; every index read lies in the chunk's pages.
    let word = |i: usize| unsafe { (*chunk).page_info[i].load(Ordering::Relaxed) };
    let mut first = page;
    while first > HEADER_PAGES && info_class(word(first)) == FREE_RUN {
        first -= 1;
    }
    let mut last = page;
    while last + 1 < CHUNK_PAGES && info_class(word(last)) == FREE_RUN {
        last += 1;
    }
    let (head, tail) = (word(first), word(last));
    let class = large_run_head(head)?;
    if tail != page_info(class.0, last - first) {
        return None;
    }
    // SAFETY: per the contract.
    Some((unsafe { (*chunk).page_addr(first) }, class.size()))
}

/// The class of a large run whose first page has the info word `info` (a large class at the
/// distance 0); `None` for any other page's word.
#[inline(always)]
fn large_run_head(info: u32) -> Option<SizeClass> {
    let class = info_class(info) as usize;
    (info_run_bytes(info) == 0 && (NSMALL..NCLASSES).contains(&class)).then_some(SizeClass(class as u8))
}

/// The index of the arena owning the chunk `p` points into, if it points into one (`None` for a
/// huge or guarded block and for memory Tally did not map): `mallctl("arenas.lookup")`.
pub fn arena_of(p: *const u8) -> Option<u32> {
    let entry = pagemap::lookup(p as usize);
    if entry == 0 || entry & TAG_HUGE != 0 {
        return None;
    }
    let chunk = entry as *const ChunkHeader;
    // SAFETY: untagged non-zero entries point at live chunk headers.
    Some(unsafe { (*chunk).arena })
}

#[cold]
#[inline(never)]
fn invalid(who: &str, p: *mut u8, why: core::fmt::Arguments<'_>) -> ! {
    pal::fatal(format_args!("tally: {who}(): invalid pointer {p:p}: {why}\n"))
}

/// The class of `p`, if `p` is a valid block of a class the thread caches keep (small, or large
/// up to 32 KiB), checked inline (the free fast path); `None` for anything else (a larger or
/// huge block, a sampled one, or an invalid pointer: the caller's slow path sorts those out
/// with [`block_of`]).
#[inline(always)]
pub fn cached_block_of(p: *mut u8) -> Option<SizeClass> {
    cached_block_at(p).map(SizeClass::at)
}

/// [`cached_block_of`], the class as its offset into per-class tables
/// ([`SizeClass::offset`]).
#[inline(always)]
pub fn cached_block_at(p: *mut u8) -> Option<usize> {
    if !pagemap::is_chunk(p as usize) {
        return None;
    }
    // SAFETY: `is_chunk`.
    unsafe { chunk_block_at(p) }
}

/// What the calling thread's fast paths (`free`, `realloc`) need of a block they found through
/// its [`ChunkSeen`].
#[derive(Clone, Copy)]
pub struct CachedBlock {
    /// The class as its offset into per-class tables ([`SizeClass::offset`]): `free` finds the
    /// class's slot check and its bin with the one offset (computed from the class where each
    /// is needed, the compiler multiplies twice).
    pub at: usize,
    /// The free mark's key (`freed::key`).
    pub key: usize,
    /// Whether the block's chunk is of the thread's arena ([`Seen::Mine`]).
    pub mine: bool,
}

/// [`cached_block_at`] for the calling thread's fast paths: whether `p` is in a chunk, and
/// whether the chunk is of the thread's arena, whose [`pagemap::chunk_tag`] is at `tag`,
/// through its memory `seen`.
///
/// # Safety
/// As for [`ChunkSeen::find`].
#[inline(always)]
pub unsafe fn cached_block_seen(p: *mut u8, seen: &ChunkSeen, tag: *const u8) -> Option<CachedBlock> {
    // SAFETY: per the contract.
    let mine = match unsafe { seen.find(p as usize, tag) } {
        Seen::Mine => true,
        Seen::Other => false,
        Seen::NoChunk => return None,
    };
    // SAFETY: `find`: a live chunk.
    let at = unsafe { chunk_block_at(p) }?;
    Some(CachedBlock {
        at,
        key: seen.key(),
        mine,
    })
}

/// The class offset of `p` (as [`cached_block_at`]) once `p` is known to lie in a chunk.
///
/// # Safety
/// `p` must lie in a live chunk ([`pagemap::is_chunk`]).
#[inline(always)]
pub unsafe fn chunk_block_at(p: *mut u8) -> Option<usize> {
    let addr = p as usize;
    // The page's info word, addressed from the chunk's last address as `ChunkSeen::find`
    // compares it (`addr | (CHUNK - 1)`, computed once): the header's start folds into the
    // load's displacement, where rounding down would take two more instructions.
    let words = (addr | (CHUNK - 1)).wrapping_sub(CHUNK - 1 - core::mem::offset_of!(ChunkHeader, page_info));
    let word = words + ((addr >> PAGE_SHIFT) & (CHUNK_PAGES - 1)) * core::mem::size_of::<AtomicU32>();
    // SAFETY: per the contract a live chunk header at `addr & !(CHUNK - 1)`, whose page-info
    // word of the page holding `addr` is at `word` (the page index is below CHUNK_PAGES). The
    // offset is a class byte times the stride, an entry of the 256-entry table.
    unsafe {
        let info = (*(word as *const AtomicU32)).load(Ordering::Relaxed);
        let at = info_class(info) as usize * CLASS_STRIDE;
        // Pages' words hold their distance from their run's start; class bytes that are not
        // cached classes have no blocks in their check.
        SlotCheck::at(at)
            .holds(info_run_bytes(info) + (addr & (PAGE - 1)))
            .then_some(at)
    }
}

/// The chunk, page index and page info word of `p` if it is page-aligned in a chunk: what
/// [`run_block_at`] reads.
#[inline(always)]
fn page_start_info(p: *mut u8) -> Option<(*mut ChunkHeader, usize, u32)> {
    let addr = p as usize;
    if addr & (PAGE - 1) != 0 || !pagemap::is_chunk(addr) {
        return None;
    }
    let chunk = ChunkHeader::of(addr);
    let page = (addr >> PAGE_SHIFT) & (CHUNK_PAGES - 1);
    // SAFETY: `is_chunk`: a live chunk header at `chunk`; the page index is below CHUNK_PAGES.
    Some((chunk, page, unsafe {
        (*chunk).page_info[page].load(Ordering::Relaxed)
    }))
}

/// The block that starts at `p` if `p` starts a page run of its own, a large block's (above
/// the small classes, up to the largest) or a sampled one's, checked in a few instructions for
/// `free` and `realloc` of such blocks; `None` for anything else, which [`block_of`] sorts out.
/// The page's info word is enough: a large run's first page holds its class and the distance
/// 0, a sampled run's `SAMPLED` and 0 (its span keeps the class), while a free run's says
/// `FREE_RUN`, a slab's a small class, a chunk header's `HEADER`, and the pages after a run's
/// first hold no distance of 0 (a large run's last page its own, the pages between
/// `FREE_RUN`). Whether the block was freed already is the caller's to check (its free mark),
/// as for the full lookup. A buffer sampled while a builder grows it a few bytes a `realloc`
/// (the suite's `realloc_growth`) took the full lookup on every call: at `lg_prof_sample:17`
/// half a million of them in 200 rounds, a sixth of what the profiler added there.
#[inline(always)]
pub fn run_block_at(p: *mut u8) -> Option<Block> {
    let (chunk, page, info) = page_start_info(p)?;
    // SAFETY: `page_start_info`: a live chunk header, a page index below CHUNK_PAGES; a run's
    // span is at its first page.
    let span = unsafe { ptr::addr_of_mut!((*chunk).spans[page]) };
    if let Some(class) = large_run_head(info) {
        return Some(Block::Large(span, class));
    }
    if info_class(info) == prof_hooks::SAMPLED && info_offset(info) == 0 {
        // SAFETY: as above: the sampled run's span records its class.
        return Some(Block::Sampled(span, SizeClass(unsafe { (*span).class })));
    }
    None
}

/// The usable size of the block at `p` (0 for null). Aborts if `p` is not a live block.
#[link_section = ".text.hot.tally"]
pub fn usable_size(p: *mut u8) -> usize {
    if p.is_null() {
        return 0;
    }
    if let Some(class) = cached_block_of(p) {
        return class.size();
    }
    match block_of(p, "malloc_usable_size") {
        Block::Small(class) | Block::Large(_, class) | Block::Sampled(_, class) => class.size(),
        // SAFETY: live descriptor.
        Block::Huge(d) => unsafe { (*d).mapped },
        Block::Guarded(slot) => guard::usable(slot),
    }
}
