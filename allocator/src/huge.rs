//! Huge blocks: requests above the largest class get a mapping of their own, aligned to a chunk
//! and registered in the page map. `realloc` resizes them with `mremap`, which moves page tables
//! instead of copying bytes.
//!
//! Each huge block has a [`HugeBlock`] descriptor from the metadata pool; the page-map entries of
//! the chunk windows it covers point at the descriptor, tagged with [`TAG_HUGE`].
//!
//! Freed mappings are not unmapped at once: a program that allocates, touches and frees a 20 MiB
//! buffer in a loop would pay a `munmap` and then a page fault per 4 KiB on every round (glibc
//! avoids this by raising its mmap threshold, tcmalloc by never unmapping). They wait in a small
//! [`MappingCache`] instead, still resident, until a later huge allocation reuses them or decay
//! unmaps them `dirty_decay_ms` after their free (at once with `dirty_decay_ms:0`, at the next
//! pass with `malloc_trim`). Reuse takes the smallest cached mapping that fits and splits off the
//! part beyond the block's last chunk window; with none that fits it moves the largest one to a
//! bigger address range with `mremap`, so only the new tail faults. Freed neighbours merge again.
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
use crate::meta;
use crate::pagemap::{self, TAG_HUGE};
use tally_pal::sync::{Mutex, Rank};
use tally_pal::{self as pal, PAGE};

/// Huge blocks mapped so far (a statistic).
pub static HUGE_ALLOCS: AtomicU64 = AtomicU64::new(0);
/// Huge reallocations served by `mremap` without copying (a statistic).
pub static HUGE_REMAPS: AtomicU64 = AtomicU64::new(0);
/// Huge blocks live now.
pub static HUGE_LIVE: AtomicU64 = AtomicU64::new(0);
/// Bytes mapped for live huge blocks now.
pub static HUGE_BYTES: AtomicU64 = AtomicU64::new(0);
/// Bytes of freed huge mappings kept for reuse now (resident, counted as dirty).
pub static HUGE_CACHED: AtomicU64 = AtomicU64::new(0);
/// Huge allocations, and growths of huge blocks, served from a cached mapping (a statistic).
pub static HUGE_REUSES: AtomicU64 = AtomicU64::new(0);

/// Mappings the cache holds at most.
const CACHE_SLOTS: usize = 16;
/// Bytes the cache always may hold; beyond [`cache_limit`] the oldest mappings are unmapped.
/// glibc keeps up to 64 MiB at the top of its heap before trimming (twice its largest mmap
/// threshold).
const CACHE_MIN_BYTES: usize = 64 << 20;
/// Most bytes of live huge blocks so far.
static HUGE_PEAK: AtomicU64 = AtomicU64::new(0);

/// Bytes the cache may hold now: 64 MiB, or as much as the program ever had in live huge blocks
/// at once, whichever is more. A program that has used N MiB of huge blocks at a time tends to
/// again, and keeping that much costs no more than its own peak. Measured on
/// `benches/workloads/large_blocks.c` (blocks up to 64 MiB, four live; glibc 0.79 s, peak RSS
/// 181 MiB): a fixed 64 MiB left 0.39 s (182 MiB), 128 MiB 0.19 s (190 MiB), this rule 0.15 s
/// (200 MiB), 256 MiB 0.11 s (215 MiB).
fn cache_limit() -> usize {
    (HUGE_PEAK.load(Ordering::Relaxed) as usize).max(CACHE_MIN_BYTES)
}

#[derive(Clone, Copy)]
struct CachedMapping {
    base: usize,
    len: usize,
    /// When it was freed (coarse clock, ms); the older time when two merge.
    since_ms: u64,
}

/// Freed huge mappings waiting for reuse. Invariants: `slots[..n]` are disjoint mappings Tally
/// owns, each with a chunk-aligned `base` and a page-multiple `len`, absent from the page map;
/// `bytes` is the sum of their lengths and equals [`HUGE_CACHED`].
struct MappingCache {
    n: usize,
    bytes: usize,
    slots: [CachedMapping; CACHE_SLOTS],
}

static CACHE: Mutex<MappingCache> = Mutex::new(Rank::HugeCache, MappingCache::EMPTY);

impl MappingCache {
    const EMPTY: MappingCache = MappingCache {
        n: 0,
        bytes: 0,
        slots: [CachedMapping {
            base: 0,
            len: 0,
            since_ms: 0,
        }; CACHE_SLOTS],
    };

    fn remove(&mut self, i: usize) -> CachedMapping {
        let m = self.slots[i];
        self.n -= 1;
        self.slots[i] = self.slots[self.n];
        self.bytes -= m.len;
        HUGE_CACHED.store(self.bytes as u64, Ordering::Relaxed);
        m
    }

    /// Adds `m`, merging it with cached neighbours. The caller has made room for one slot.
    #[link_section = ".text.hot.tally"]
    fn insert(&mut self, mut m: CachedMapping) {
        let mut i = 0;
        while i < self.n {
            let o = self.slots[i];
            if o.base + o.len == m.base || m.base + m.len == o.base {
                self.remove(i);
                m = CachedMapping {
                    base: o.base.min(m.base),
                    len: o.len + m.len,
                    since_ms: o.since_ms.min(m.since_ms),
                };
                i = 0;
                continue;
            }
            i += 1;
        }
        self.slots[self.n] = m;
        self.n += 1;
        self.bytes += m.len;
        HUGE_CACHED.store(self.bytes as u64, Ordering::Relaxed);
    }

    /// Takes the front of the mapping in slot `i` for reuse: the whole chunk windows covering
    /// `want` bytes (all of it when shorter), the rest left cached. Returns `(base, len)` taken.
    fn take_front(&mut self, i: usize, want: usize) -> (usize, usize) {
        let m = self.remove(i);
        let keep = want.next_multiple_of(CHUNK).min(m.len);
        if keep < m.len {
            self.insert(CachedMapping {
                base: m.base + keep,
                len: m.len - keep,
                since_ms: m.since_ms,
            });
        }
        HUGE_REUSES.fetch_add(1, Ordering::Relaxed);
        (m.base, keep)
    }

    /// The slot of the oldest mapping (the cache must not be empty).
    fn oldest(&self) -> usize {
        (0..self.n).min_by_key(|&i| self.slots[i].since_ms).unwrap_or(0)
    }
}

/// Mappings taken out of the cache under its lock, unmapped after it is released.
struct Evicted {
    n: usize,
    list: [(usize, usize); CACHE_SLOTS + 1],
}

impl Evicted {
    const fn new() -> Self {
        Evicted {
            n: 0,
            list: [(0, 0); CACHE_SLOTS + 1],
        }
    }

    fn push(&mut self, m: CachedMapping) {
        self.list[self.n] = (m.base, m.len);
        self.n += 1;
    }

    /// Unmaps them all; returns the pages given back.
    fn unmap(&self) -> u64 {
        let mut pages = 0;
        for &(base, len) in &self.list[..self.n] {
            // SAFETY: evicted mappings are owned by Tally, dead and no longer in the cache.
            unsafe { pal::unmap(base as *mut u8, len) };
            pages += (len / PAGE) as u64;
        }
        pages
    }
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

/// A mapping of at least `mapped` bytes from the cache, chunk-aligned: `(base, len)`, with the
/// part beyond `mapped`'s last chunk window left in the cache. With no cached mapping large
/// enough, the largest one moved by `mremap` to a new range of `mapped` bytes (its pages go
/// along, only the tail is new). `None` when the cache is empty or the kernel refuses.
fn take_cached(mapped: usize) -> Option<(usize, usize)> {
    let mut cache = CACHE.lock();
    if cache.n == 0 {
        return None;
    }
    let fit = (0..cache.n)
        .filter(|&i| cache.slots[i].len >= mapped)
        .min_by_key(|&i| cache.slots[i].len);
    if let Some(i) = fit {
        return Some(cache.take_front(i, mapped));
    }
    let largest = (0..cache.n).max_by_key(|&i| cache.slots[i].len)?;
    let m = cache.remove(largest);
    drop(cache);
    // SAFETY: `m` is a cached mapping, dead and now ours alone.
    if unsafe { pal::remap_in_place(m.base as *mut u8, m.len, mapped) } {
        HUGE_REUSES.fetch_add(1, Ordering::Relaxed);
        return Some((m.base, mapped));
    }
    let target = pal::map_aligned_accounted(mapped, CHUNK);
    // SAFETY: as above; `target` is a fresh mapping of `mapped` bytes that the move replaces.
    if !target.is_null() && unsafe { pal::remap_to(m.base as *mut u8, m.len, target, mapped) } {
        HUGE_REUSES.fetch_add(1, Ordering::Relaxed);
        return Some((target as usize, mapped));
    }
    if !target.is_null() {
        // SAFETY: the fresh mapping was never published.
        unsafe { pal::unmap(target, mapped) };
    }
    // SAFETY: `m` is still ours and dead.
    unsafe { pal::unmap(m.base as *mut u8, m.len) };
    None
}

/// Takes from the cache the mapping that starts at `at` (where a growing block ends) if it holds
/// at least `want` bytes: the whole chunk windows covering `want` (the rest stays cached).
/// Returns the bytes taken, or 0 when no cached mapping starts at `at` or it is too short.
///
/// The pages taken are already mapped, usually in the same kernel mapping as the block (the
/// block and its neighbour were one cached mapping that a smaller block split), so the block
/// grows over them with no system call, and their pages, resident already, fault no more.
fn take_cached_at(at: usize, want: usize) -> usize {
    let mut cache = CACHE.lock();
    let Some(i) = (0..cache.n).find(|&i| cache.slots[i].base == at && cache.slots[i].len >= want) else {
        return 0;
    };
    cache.take_front(i, want).1
}

/// Whether the huge block at `p` reuses a mapping (so it is not known to be zero).
pub fn is_recycled(p: *mut u8) -> bool {
    let d = (pagemap::lookup(p as usize) & !TAG_HUGE) as *const HugeBlock;
    // SAFETY: the caller passes a live huge block, whose page-map entry is its descriptor.
    !d.is_null() && unsafe { (*d).recycled }
}

/// Whether `addr` starts a mapping that waits in the huge cache (a huge block freed earlier).
pub fn is_cached(addr: usize) -> bool {
    let cache = CACHE.lock();
    cache.slots[..cache.n].iter().any(|m| m.base == addr)
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
        take_cached(mapped)
    } else {
        None
    };
    let (base, mapped, recycled) = match cached {
        Some((base, len)) => (base as *mut u8, len, true),
        None => (
            pal::map_aligned_accounted(mapped, align.max(CHUNK)),
            mapped,
            false,
        ),
    };
    if base.is_null() {
        release_descriptor(d);
        return ptr::null_mut();
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
    base
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

/// Puts the dead mapping `[base, base + len)` in the cache (evicting the oldest as needed), or
/// unmaps it when the cache is off or the mapping exceeds its limit.
///
/// # Safety
/// The mapping must be Tally's, chunk-aligned, absent from the page map and unused.
#[link_section = ".text.hot.tally"]
unsafe fn cache_or_unmap(base: usize, len: usize) {
    let mut evicted = Evicted::new();
    let limit = cache_limit();
    if caching() && len <= limit {
        let mut cache = CACHE.lock();
        while cache.n > 0 && (cache.n == CACHE_SLOTS || cache.bytes + len > limit) {
            let i = cache.oldest();
            evicted.push(cache.remove(i));
        }
        cache.insert(CachedMapping {
            base,
            len,
            since_ms: pal::now_ms(),
        });
    } else {
        evicted.push(CachedMapping {
            base,
            len,
            since_ms: 0,
        });
    }
    evicted.unmap();
}

/// Unmaps cached mappings freed at least `dirty_decay_ms` before `now`, or all of them when
/// `everything`. Returns the pages given back.
#[link_section = ".text.hot.tally"]
pub fn purge(now: u64, everything: bool) -> u64 {
    let decay = DIRTY_DECAY_MS.load(Ordering::Relaxed);
    if !everything && decay < 0 {
        return 0;
    }
    let mut evicted = Evicted::new();
    {
        let mut cache = CACHE.lock();
        let mut i = 0;
        while i < cache.n {
            if everything || cache.slots[i].since_ms + decay as u64 <= now {
                let m = cache.remove(i);
                evicted.push(m);
            } else {
                i += 1;
            }
        }
    }
    evicted.unmap()
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

/// [`resize`], moving the pages with `mremap` only when `may_move`.
///
/// # Safety
/// As for [`resize`].
#[link_section = ".text.hot.tally"]
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
            take_cached_at(base + mapped, new_mapped - mapped)
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
        target
    }
}

pub(crate) fn lock_for_fork() {
    FREE_DESCRIPTORS.lock_for_fork();
    CACHE.lock_for_fork();
}

/// # Safety
/// The prepare handler must have taken the lock in this thread.
pub(crate) unsafe fn unlock_after_fork(child: bool) {
    // SAFETY: per the contract.
    unsafe {
        CACHE.unlock_after_fork(child);
        FREE_DESCRIPTORS.unlock_after_fork(child);
    }
}

const _: () = assert!(CHUNK == 1 << CHUNK_SHIFT);

#[cfg(test)]
mod tests {
    //! The mapping cache on a private instance, then the cache's reuse, split, merge, move and
    //! decay through `alloc`/`free`/`purge` (these share the process's one cache: the tests take
    //! a lock, empty it first, and use sizes nothing else in the test binary allocates).

    use super::*;
    use std::sync::{Mutex as TestMutex, MutexGuard};
    use std::vec::Vec;

    const MIB: usize = 1 << 20;

    static SERIAL: TestMutex<()> = TestMutex::new(());

    fn serial() -> MutexGuard<'static, ()> {
        SERIAL.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Checks the invariants on [`MappingCache`]; returns its mappings sorted by base.
    fn check_cache(cache: &MappingCache) -> Vec<(usize, usize)> {
        let mut maps: Vec<(usize, usize)> = cache.slots[..cache.n].iter().map(|m| (m.base, m.len)).collect();
        maps.sort_unstable();
        for &(base, len) in &maps {
            assert_eq!(base % CHUNK, 0, "base {base:#x} not chunk-aligned");
            assert!(len > 0 && len % PAGE == 0, "length {len:#x}");
        }
        for pair in maps.windows(2) {
            assert!(pair[0].0 + pair[0].1 <= pair[1].0, "overlap: {pair:x?}");
        }
        assert_eq!(
            cache.bytes,
            maps.iter().map(|m| m.1).sum::<usize>(),
            "bytes = sum of lengths"
        );
        maps
    }

    /// The global cache's mappings, checked: copied under its lock, which is released before
    /// anything allocates (allocating under it would break the lock order, and the checker
    /// aborts).
    fn cached() -> Vec<(usize, usize)> {
        let copy = {
            let cache = CACHE.lock();
            MappingCache {
                n: cache.n,
                bytes: cache.bytes,
                slots: cache.slots,
            }
        };
        check_cache(&copy)
    }

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
    fn the_cache_merges_neighbours_and_knows_its_oldest() {
        let _serial = serial();
        let mut cache = MappingCache::EMPTY;
        let at = |chunks: usize| 0x7000_0000_0000 + chunks * CHUNK;
        let m = |base, len, since_ms| CachedMapping { base, len, since_ms };
        cache.insert(m(at(0), 2 * CHUNK, 30));
        cache.insert(m(at(4), CHUNK, 10));
        cache.insert(m(at(8), CHUNK + 5 * PAGE, 50));
        assert_eq!(
            check_cache(&cache),
            [(at(0), 2 * CHUNK), (at(4), CHUNK), (at(8), CHUNK + 5 * PAGE)]
        );
        assert_eq!(cache.slots[cache.oldest()].base, at(4));
        // Fills the gap between the first two: all three merge, keeping the older time.
        cache.insert(m(at(2), 2 * CHUNK, 20));
        assert_eq!(
            check_cache(&cache),
            [(at(0), 5 * CHUNK), (at(8), CHUNK + 5 * PAGE)]
        );
        let merged = (0..cache.n).find(|&i| cache.slots[i].base == at(0)).unwrap();
        assert_eq!(cache.slots[merged].since_ms, 10);
        // Just below a mapping: merges with it.
        cache.insert(m(at(7), CHUNK, 5));
        assert_eq!(
            check_cache(&cache),
            [(at(0), 5 * CHUNK), (at(7), 2 * CHUNK + 5 * PAGE)]
        );
        assert_eq!(cache.slots[cache.oldest()].base, at(7));
        let taken = cache.remove(cache.oldest());
        assert_eq!(
            (taken.base, taken.len, taken.since_ms),
            (at(7), 2 * CHUNK + 5 * PAGE, 5)
        );
        assert_eq!(check_cache(&cache), [(at(0), 5 * CHUNK)]);
        // The private cache wrote the statistic; give it back to the real cache.
        HUGE_CACHED.store(CACHE.lock().bytes as u64, Ordering::Relaxed);
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
}
