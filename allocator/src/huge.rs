//! Huge blocks: requests above the largest class get a mapping of their own, aligned to a chunk
//! and registered in the page map. `realloc` resizes them with `mremap`, which moves page tables
//! instead of copying bytes.
//!
//! Each huge block has a [`HugeBlock`] descriptor from the metadata pool; the page-map entries of
//! the chunk windows it covers point at the descriptor, tagged with [`TAG_HUGE`].
//!
//! Freed mappings are not unmapped at once: they wait in the mapping cache (`mapcache.rs`),
//! still resident, until a later huge allocation or a new chunk reuses them or decay unmaps them
//! `dirty_decay_ms` after their free (at once with `dirty_decay_ms:0`, at the next pass with
//! `malloc_trim`). A free keeps its mapping only as far as the cache and the live huge blocks
//! together stay within an eighth above the most bytes of huge blocks ever live at once (or
//! 64 MiB); the oldest cached mappings are unmapped to make room ([`cache_limit`]).
//!
//! A block that grows takes the cached mapping right after it before asking the kernel: a
//! `Vec` grown to 64 MiB, dropped and grown again starts its second life in the first chunk
//! windows of the cached 64 MiB and grows over the rest, page for page where the first one was,
//! with no system call and no page fault. Moving it with `mremap` instead, as it did before,
//! kept the cached 60 MiB resident beside the growing block (twice the peak) and faulted every
//! page of the fresh range.
//!
//! Huge mappings are counted against the kernel's overcommit policy (`pal::map_aligned_accounted`:
//! no `MAP_NORESERVE`), as glibc maps its large blocks, so the kernel answers for a request it
//! cannot back: `malloc(1 << 46)` fails with `ENOMEM` under the default heuristic instead of
//! returning 64 TiB that would fault when touched, and `mremap` growth is checked the same way.
//! Chunks and metadata stay lazily reserved: they come 4 MiB or less at a time, which the
//! heuristic never refuses, and strict accounting (`vm.overcommit_memory=2`) counts them anyway.

use core::ptr;
use core::sync::atomic::{AtomicU64, Ordering};

use crate::chunk::{CHUNK, CHUNK_SHIFT};
use crate::extent::DIRTY_DECAY_MS;
use crate::mapcache;
use crate::meta;
use crate::pagemap::{self, TAG_HUGE};
use tally_pal::sync::{Mutex, Rank};
use tally_pal::{self as pal, PAGE};

/// Huge blocks mapped so far (a statistic).
pub static HUGE_ALLOCS: AtomicU64 = AtomicU64::new(0);
/// Huge reallocations served by `mremap` without copying (a statistic).
pub static HUGE_REMAPS: AtomicU64 = AtomicU64::new(0);
/// Pages mapped for huge blocks that no cached mapping supplied: what the program may fault in
/// fresh. `decay::balance` gives back as many idle pages of the arenas.
pub static HUGE_FRESH_PAGES: AtomicU64 = AtomicU64::new(0);
/// Huge blocks live now.
pub static HUGE_LIVE: AtomicU64 = AtomicU64::new(0);
/// Bytes mapped for live huge blocks now.
pub static HUGE_BYTES: AtomicU64 = AtomicU64::new(0);
/// Bytes live huge blocks and the cache together may always hold; beyond [`cache_limit`] the
/// oldest mappings are unmapped. glibc keeps up to 64 MiB at the top of its heap before trimming
/// (twice its largest mmap threshold).
const CACHE_MIN_BYTES: usize = 64 << 20;
/// Most bytes of live huge blocks so far.
static HUGE_PEAK: AtomicU64 = AtomicU64::new(0);

/// Bytes the cache may hold now, beside `live` bytes of live huge blocks: what brings the two
/// together to an eighth above the most the program ever had in live huge blocks at once, or to
/// 64 MiB, whichever is more. A program that has used N MiB of huge blocks at a time tends to
/// again, and its resident huge memory stays within an eighth of its own peak.
///
/// Measured on `benches/workloads/large_blocks.c` (blocks up to 64 MiB, four live; glibc 0.84 s,
/// peak RSS 181 MiB, its bound in the suite 199 MiB; 3 runs each, 2026-12-05): the cache alone
/// held up to the peak (the rule before) 0.18-0.19 s, 184-194 MiB, 88-98 thousand page faults:
/// with live blocks near the peak, a freed one found the cache full and unmapped what the next
/// one faulted in again. Cache and live blocks within the peak: 0.15-0.18 s, 193 MiB, 82
/// thousand; within a sixteenth above it 0.15-0.16 s, 195 MiB, 73 thousand; within an eighth
/// 0.14-0.15 s, 196.5 MiB, 68 thousand (tcmalloc 0.13 s, 211 MiB, 65 thousand). The cache alone
/// up to 1.25 times the peak: 0.12 s but 210.5 MiB.
fn cache_limit(live: usize) -> usize {
    let peak = HUGE_PEAK.load(Ordering::Relaxed) as usize;
    (peak + peak / 8).max(CACHE_MIN_BYTES).saturating_sub(live)
}

/// Describes one huge block. Invariant: `base` is chunk-aligned, `mapped` is a page multiple,
/// and the page map sends every chunk window of `[base, base + mapped)` to this descriptor.
pub struct HugeBlock {
    /// First byte, as returned to the user.
    pub base: usize,
    /// Bytes mapped (the usable size).
    pub mapped: usize,
    /// Whether the profiler sampled this block.
    pub sampled: bool,
    /// Whether the mapping came from the cache (its bytes are not known to be zero).
    recycled: bool,
    next_free: *mut HugeBlock,
}

struct FreeDescriptors(*mut HugeBlock);
// SAFETY: the descriptors live in the metadata pool forever; the list is only used under its lock.
unsafe impl Send for FreeDescriptors {}

static FREE_DESCRIPTORS: Mutex<FreeDescriptors> =
    Mutex::new(Rank::HugeDescriptors, FreeDescriptors(ptr::null_mut()));

fn windows(bytes: usize) -> usize {
    bytes.div_ceil(CHUNK)
}

fn new_descriptor() -> *mut HugeBlock {
    let mut free = FREE_DESCRIPTORS.lock();
    let d = free.0;
    if !d.is_null() {
        // SAFETY: descriptors on the free list are live and unused.
        free.0 = unsafe { (*d).next_free };
        return d;
    }
    drop(free);
    meta::alloc(
        core::mem::size_of::<HugeBlock>(),
        core::mem::align_of::<HugeBlock>(),
    )
    .cast()
}

fn release_descriptor(d: *mut HugeBlock) {
    let mut free = FREE_DESCRIPTORS.lock();
    // SAFETY: `d` is a descriptor no longer referenced by the page map.
    unsafe { (*d).next_free = free.0 };
    free.0 = d;
}

/// Whether freed mappings are kept for reuse (`dirty_decay_ms` not 0).
fn caching() -> bool {
    DIRTY_DECAY_MS.load(Ordering::Relaxed) != 0
}

/// Whether the huge block at `p` reuses a mapping (so it is not known to be zero).
pub fn is_recycled(p: *mut u8) -> bool {
    let d = (pagemap::lookup(p as usize) & !TAG_HUGE) as *const HugeBlock;
    // SAFETY: the caller passes a live huge block, whose page-map entry is its descriptor.
    !d.is_null() && unsafe { (*d).recycled }
}

/// Maps a huge block of at least `size` bytes aligned to `align` (at most a power of two).
/// Returns null when out of memory.
#[link_section = ".text.hot.tally"]
pub fn alloc(size: usize, align: usize) -> *mut u8 {
    let Some(mapped) = size.checked_next_multiple_of(PAGE) else {
        return ptr::null_mut();
    };
    let d = new_descriptor();
    if d.is_null() {
        return ptr::null_mut();
    }
    let cached = if align <= CHUNK && caching() {
        mapcache::take(mapped)
    } else {
        None
    };
    let (base, mapped, recycled, fresh) = match cached {
        Some((base, len, fresh)) => (base as *mut u8, len, true, fresh),
        None => (
            pal::map_aligned_accounted(mapped, align.max(CHUNK)),
            mapped,
            false,
            mapped,
        ),
    };
    if base.is_null() {
        release_descriptor(d);
        return ptr::null_mut();
    }
    if !recycled {
        // SAFETY: the mapping was just made, page-aligned, and is ours alone.
        unsafe { crate::thp::advise(base, mapped, crate::thp::Mapping::HugeBlock) };
    }
    // SAFETY: `d` is an unused descriptor we own.
    unsafe {
        d.write(HugeBlock {
            base: base as usize,
            mapped,
            sampled: false,
            recycled,
            next_free: ptr::null_mut(),
        })
    };
    if !pagemap::set(base as usize, windows(mapped), d as usize | TAG_HUGE) {
        // SAFETY: the mapping was made above and never published.
        unsafe { pal::unmap(base, mapped) };
        release_descriptor(d);
        return ptr::null_mut();
    }
    HUGE_ALLOCS.fetch_add(1, Ordering::Relaxed);
    HUGE_LIVE.fetch_add(1, Ordering::Relaxed);
    count_live_bytes(mapped);
    count_fresh(fresh);
    base
}

/// Counts `bytes` mapped for huge blocks without a cached mapping's pages.
fn count_fresh(bytes: usize) {
    HUGE_FRESH_PAGES.fetch_add((bytes / PAGE) as u64, Ordering::Relaxed);
}

/// Counts `bytes` more in live huge blocks, and the new peak if it is one.
fn count_live_bytes(bytes: usize) {
    let live = HUGE_BYTES.fetch_add(bytes as u64, Ordering::Relaxed) + bytes as u64;
    HUGE_PEAK.fetch_max(live, Ordering::Relaxed);
}

/// Frees the huge block `d`: into the mapping cache, or unmapped.
///
/// # Safety
/// `d` must be the live descriptor of a block nobody uses any more.
pub unsafe fn free(d: *mut HugeBlock) {
    // SAFETY: per the contract.
    let (base, mapped) = unsafe { ((*d).base, (*d).mapped) };
    pagemap::set(base, windows(mapped), 0);
    release_descriptor(d);
    HUGE_LIVE.fetch_sub(1, Ordering::Relaxed);
    HUGE_BYTES.fetch_sub(mapped as u64, Ordering::Relaxed);
    // SAFETY: the mapping left the page map above and is dead, per the contract.
    unsafe { cache_or_unmap(base, mapped) };
}

/// Puts the dead mapping `[base, base + len)` in the mapping cache, or unmaps it when the cache
/// is off (`dirty_decay_ms:0`).
///
/// # Safety
/// The mapping must be Tally's, chunk-aligned, absent from the page map and unused.
#[link_section = ".text.hot.tally"]
unsafe fn cache_or_unmap(base: usize, len: usize) {
    let limit = if caching() {
        cache_limit(HUGE_BYTES.load(Ordering::Relaxed) as usize)
    } else {
        0
    };
    // SAFETY: per the contract.
    unsafe { mapcache::put(base, len, limit) };
}

/// Unmaps cached mappings freed at least `dirty_decay_ms` before `now`, or all of them when
/// `everything`. Returns the pages given back.
#[link_section = ".text.hot.tally"]
pub fn purge(now: u64, everything: bool) -> u64 {
    mapcache::purge(now, DIRTY_DECAY_MS.load(Ordering::Relaxed), everything)
}

/// Resizes huge block `d` to hold `size` bytes (more than the largest class) without copying:
/// shrinks in place; grows over the cached mapping that follows it if there is one large enough
/// (no system call, and its resident pages are reused rather than kept beside fresh ones), else
/// in place with `mremap` when the address space after it is free, else moves its pages to a
/// new chunk-aligned address with `mremap`. Returns the block's new address, or null (the block
/// unchanged) when the kernel refuses.
///
/// # Safety
/// `d` must be the live descriptor of a block owned by the caller.
pub unsafe fn resize(d: *mut HugeBlock, size: usize) -> *mut u8 {
    // SAFETY: per the contract.
    unsafe { resize_with(d, size, true) }
}

/// [`resize`] without moving: true if the block now holds `size` bytes at its address, false
/// (the block unchanged) when it would have to move or the kernel refuses.
///
/// # Safety
/// As for [`resize`].
pub unsafe fn resize_in_place(d: *mut HugeBlock, size: usize) -> bool {
    // SAFETY: per the contract.
    unsafe { !resize_with(d, size, false).is_null() }
}

/// [`resize`], moving the pages with `mremap` only when `may_move`. Not in the hot text (2.5 KB
/// of it, `allocator/hot-text.ld`): only a program with blocks of megabytes resizes one, and
/// the 64 KiB window of code it faults in costs it little beside them.
///
/// # Safety
/// As for [`resize`].
unsafe fn resize_with(d: *mut HugeBlock, size: usize, may_move: bool) -> *mut u8 {
    let Some(new_mapped) = size.checked_next_multiple_of(PAGE) else {
        return ptr::null_mut();
    };
    // SAFETY: per the contract, `d` and its mapping are ours.
    unsafe {
        let (base, mapped) = ((*d).base, (*d).mapped);
        if new_mapped == mapped {
            return base as *mut u8;
        }
        if new_mapped < mapped {
            pagemap::set(
                base + windows(new_mapped) * CHUNK,
                windows(mapped) - windows(new_mapped),
                0,
            );
            pal::unmap((base + new_mapped) as *mut u8, mapped - new_mapped);
            (*d).mapped = new_mapped;
            HUGE_BYTES.fetch_sub((mapped - new_mapped) as u64, Ordering::Relaxed);
            return base as *mut u8;
        }
        let first_extra = base + windows(mapped) * CHUNK;
        let taken = if caching() {
            mapcache::take_at(base + mapped, new_mapped - mapped)
        } else {
            0
        };
        if taken != 0 {
            let grown = mapped + taken;
            if !pagemap::set(
                first_extra,
                windows(grown) - windows(mapped),
                d as usize | TAG_HUGE,
            ) {
                cache_or_unmap(base + mapped, taken);
                return ptr::null_mut();
            }
            (*d).mapped = grown;
            (*d).recycled = true;
            count_live_bytes(taken);
            return base as *mut u8;
        }
        let extra_windows = windows(new_mapped) - windows(mapped);
        if pal::remap_in_place(base as *mut u8, mapped, new_mapped) {
            if !pagemap::set(first_extra, extra_windows, d as usize | TAG_HUGE) {
                pal::remap_in_place(base as *mut u8, new_mapped, mapped);
                return ptr::null_mut();
            }
            (*d).mapped = new_mapped;
            HUGE_REMAPS.fetch_add(1, Ordering::Relaxed);
            count_live_bytes(new_mapped - mapped);
            count_fresh(new_mapped - mapped);
            return base as *mut u8;
        }
        if !may_move {
            return ptr::null_mut();
        }
        let target = pal::map_aligned_accounted(new_mapped, CHUNK);
        if target.is_null() {
            return ptr::null_mut();
        }
        if !pagemap::set(target as usize, windows(new_mapped), d as usize | TAG_HUGE) {
            pal::unmap(target, new_mapped);
            return ptr::null_mut();
        }
        if !pal::remap_to(base as *mut u8, mapped, target, new_mapped) {
            pagemap::set(target as usize, windows(new_mapped), 0);
            pal::unmap(target, new_mapped);
            return ptr::null_mut();
        }
        pagemap::set(base, windows(mapped), 0);
        (*d).base = target as usize;
        (*d).mapped = new_mapped;
        HUGE_REMAPS.fetch_add(1, Ordering::Relaxed);
        count_live_bytes(new_mapped - mapped);
        count_fresh(new_mapped - mapped);
        target
    }
}

pub(crate) fn lock_for_fork() {
    FREE_DESCRIPTORS.lock_for_fork();
    mapcache::lock_for_fork();
}

/// # Safety
/// The prepare handler must have taken the lock in this thread.
pub(crate) unsafe fn unlock_after_fork(child: bool) {
    // SAFETY: per the contract.
    unsafe {
        mapcache::unlock_after_fork(child);
        FREE_DESCRIPTORS.unlock_after_fork(child);
    }
}

const _: () = assert!(CHUNK == 1 << CHUNK_SHIFT);

#[cfg(test)]
mod tests {
    //! The mapping cache's reuse, split, merge, move and decay through `alloc`/`free`/`purge`
    //! (these share the process's one cache: the tests hold `mapcache`'s test lock, empty it
    //! first, and use sizes nothing else in the test binary allocates).

    use super::*;
    use crate::mapcache::tests::{cached, serial};
    use crate::mapcache::{HUGE_CACHED, HUGE_REUSES};

    const MIB: usize = 1 << 20;

    /// The descriptor of the live huge block at `p`.
    fn descriptor(p: *mut u8) -> *mut HugeBlock {
        let entry = pagemap::lookup(p as usize);
        assert_eq!(entry & TAG_HUGE, TAG_HUGE, "{p:?} is not a huge block");
        (entry & !TAG_HUGE) as *mut HugeBlock
    }

    fn mapped(p: *mut u8) -> usize {
        // SAFETY: a live descriptor.
        unsafe { (*descriptor(p)).mapped }
    }

    fn free_block(p: *mut u8) {
        // SAFETY: `p` is a live huge block of this test, freed once.
        unsafe { free(descriptor(p)) };
    }

    #[test]
    fn freed_mappings_are_reused_split_merged_and_decay() {
        let _serial = serial();
        assert!(caching(), "these checks need dirty_decay_ms other than 0");
        let decay = DIRTY_DECAY_MS.load(Ordering::Relaxed);
        purge(0, true);
        assert!(cached().is_empty());

        let p = alloc(20 * MIB, 8);
        assert!(!p.is_null() && p as usize % CHUNK == 0);
        assert!(!is_recycled(p), "a fresh mapping is known to be zero");
        // SAFETY: a live block of 20 MiB.
        unsafe { ptr::write_bytes(p, 0xab, 20 * MIB) };
        free_block(p);
        assert_eq!(cached(), [(p as usize, 20 * MIB)]);
        assert_eq!(HUGE_CACHED.load(Ordering::Relaxed), 20 * MIB as u64);

        // Reuse with a split after the block's last chunk window: 12 MiB taken, 8 MiB stay.
        let reuses = HUGE_REUSES.load(Ordering::Relaxed);
        let q = alloc(11 * MIB + 5, 8);
        assert_eq!(q, p, "the cached mapping is reused");
        assert!(is_recycled(q));
        assert_eq!(mapped(q), 12 * MIB);
        assert_eq!(cached(), [(p as usize + 12 * MIB, 8 * MIB)]);
        // A smaller block takes the whole 8 MiB rest (it ends on a chunk window).
        let r = alloc(6 * MIB, 8);
        assert_eq!(r as usize, p as usize + 12 * MIB);
        assert_eq!(mapped(r), 8 * MIB);
        assert!(cached().is_empty());
        assert_eq!(HUGE_REUSES.load(Ordering::Relaxed) - reuses, 2);
        // The bytes were not cleared: reuse hands back the old pages (calloc must zero them).
        // SAFETY: live blocks.
        unsafe { assert_eq!((*q, *r.add(MIB)), (0xab, 0xab)) };

        // Freed again, the neighbours merge into one mapping.
        free_block(r);
        free_block(q);
        assert_eq!(cached(), [(p as usize, 20 * MIB)]);

        // Too small for a request: the largest mapping grows (moved or in place), its pages go
        // along.
        let s = alloc(30 * MIB, 8);
        assert!(!s.is_null());
        assert!(is_recycled(s));
        assert_eq!(HUGE_REUSES.load(Ordering::Relaxed) - reuses, 3);
        assert!(cached().is_empty());
        // SAFETY: a live block of 30 MiB whose first 20 MiB came from the cached mapping.
        unsafe {
            assert_eq!((*s, *s.add(20 * MIB - 1)), (0xab, 0xab));
            assert_eq!(*s.add(25 * MIB), 0, "the new tail is fresh");
        }
        free_block(s);

        // Decay: kept until `dirty_decay_ms` after the free, then unmapped.
        let freed_at = pal::now_ms();
        assert_eq!(cached(), [(s as usize, 30 * MIB)]);
        if decay > 0 {
            assert_eq!(purge(freed_at, false), 0, "purged before its time");
            assert_eq!(cached().len(), 1);
        }
        let now = freed_at + decay.max(0) as u64 + 1000;
        let pages = if decay < 0 {
            purge(now, true)
        } else {
            purge(now, false)
        };
        assert_eq!(pages, (30 * MIB / PAGE) as u64);
        assert!(cached().is_empty());
        assert_eq!(HUGE_CACHED.load(Ordering::Relaxed), 0);
    }

    #[test]
    fn a_growing_block_takes_the_cached_mapping_after_it() {
        let _serial = serial();
        purge(0, true);
        let p = alloc(44 * MIB, 8);
        // SAFETY: a live block of 44 MiB.
        unsafe { ptr::write_bytes(p, 0xcd, 44 * MIB) };
        free_block(p);
        let base = p as usize;
        assert_eq!(cached(), [(base, 44 * MIB)]);

        // A small block takes the front; growing it takes the cached windows after it, in place
        // and with no `mremap`, and their pages (the old bytes) come along.
        let q = alloc(5 * MIB, 8);
        assert_eq!((q, mapped(q)), (p, 8 * MIB));
        assert_eq!(cached(), [(base + 8 * MIB, 36 * MIB)]);
        let d = descriptor(q);
        let (remaps, reuses) = (
            HUGE_REMAPS.load(Ordering::Relaxed),
            HUGE_REUSES.load(Ordering::Relaxed),
        );
        // SAFETY: `d` is the live descriptor of `q`, which this test owns.
        let r = unsafe { resize(d, 12 * MIB + 1) };
        assert_eq!((r, mapped(r)), (q, 16 * MIB), "grown in place to whole windows");
        assert_eq!(cached(), [(base + 16 * MIB, 28 * MIB)]);
        assert_eq!(
            descriptor(r.wrapping_add(15 * MIB)),
            d,
            "the new windows are in the page map"
        );
        assert!(is_recycled(r));
        // SAFETY: a live block of 16 MiB.
        unsafe {
            assert_eq!(
                *r.add(16 * MIB - 1),
                0xcd,
                "the cached pages were taken as they are"
            )
        };
        // SAFETY: as above.
        let r = unsafe { resize(d, 44 * MIB) };
        assert_eq!((r, mapped(r)), (q, 44 * MIB));
        assert!(cached().is_empty(), "the whole cached mapping was taken");
        assert_eq!(HUGE_REMAPS.load(Ordering::Relaxed), remaps, "no mremap");
        assert_eq!(HUGE_REUSES.load(Ordering::Relaxed) - reuses, 2);
        free_block(r);

        // A cached neighbour too short for the growth stays cached; `mremap` grows the block.
        let q = alloc(5 * MIB, 8);
        assert_eq!((q, mapped(q)), (p, 8 * MIB));
        // SAFETY: the live descriptor of `q`.
        let r = unsafe { resize(descriptor(q), 48 * MIB) };
        assert!(!r.is_null());
        assert_eq!(mapped(r), 48 * MIB);
        assert_eq!(HUGE_REMAPS.load(Ordering::Relaxed), remaps + 1);
        // SAFETY: a live block of 48 MiB whose first 8 MiB came from the cache.
        unsafe { assert_eq!(*r.add(8 * MIB - 1), 0xcd) };
        if r == q {
            // Grown in place: the neighbour cannot have been there.
            assert!(cached().iter().all(|&(b, _)| b != base + 8 * MIB));
        } else {
            assert_eq!(cached(), [(base + 8 * MIB, 36 * MIB)]);
        }
        free_block(r);
        purge(0, true);
    }

    #[test]
    fn aligned_blocks_above_a_chunk_get_fresh_mappings() {
        let _serial = serial();
        purge(0, true);
        let p = alloc(9 * MIB, 8);
        free_block(p);
        let q = alloc(9 * MIB, 2 * CHUNK);
        assert_eq!(q as usize % (2 * CHUNK), 0);
        assert!(!is_recycled(q), "the cache only holds chunk-aligned mappings");
        assert_eq!(cached().len(), 1, "the cached mapping stays");
        free_block(q);
        purge(0, true);
    }

    #[test]
    fn live_blocks_and_the_cache_stay_within_an_eighth_above_the_peak() {
        let _serial = serial();
        assert!(caching(), "these checks need dirty_decay_ms other than 0");
        purge(0, true);
        const B: usize = 32 * MIB;
        // Enough blocks live that they make the peak (earlier tests may have made one).
        let n = (HUGE_PEAK.load(Ordering::Relaxed) as usize).div_ceil(B).max(4);
        let blocks: Vec<*mut u8> = (0..n).map(|_| alloc(B, 8)).collect();
        assert!(blocks.iter().all(|p| !p.is_null()));
        let peak = HUGE_PEAK.load(Ordering::Relaxed) as usize;
        assert!(peak >= n * B);
        let budget = (peak + peak / 8).max(CACHE_MIN_BYTES);
        let within = || {
            let (cached, live) = (
                HUGE_CACHED.load(Ordering::Relaxed),
                HUGE_BYTES.load(Ordering::Relaxed),
            );
            assert!(
                (cached + live) as usize <= budget,
                "{cached} cached and {live} live past {budget}"
            );
            cached as usize
        };
        // Two freed: both kept, live and cached at the peak.
        free_block(blocks[0]);
        free_block(blocks[1]);
        assert_eq!(within(), 2 * B);
        // Two fresh mappings (aligned past a chunk, so not from the cache) take live back to the
        // peak; when one is freed the cache keeps it but gives back the oldest: all three would
        // pass the budget. (The cache alone up to the peak kept all three.)
        let fresh = [alloc(B, 2 * CHUNK), alloc(B, 2 * CHUNK)];
        assert!(fresh.iter().all(|p| !p.is_null()));
        free_block(fresh[0]);
        let kept = within();
        assert!((B..3 * B).contains(&kept), "{kept} bytes cached");
        assert!(
            cached().iter().any(|&(b, _)| b == fresh[0] as usize),
            "the newest is kept"
        );
        for &p in blocks[2..].iter().chain(&fresh[1..]) {
            free_block(p);
            within();
        }
        purge(0, true);
    }
}
