//! The cache of freed huge mappings: chunk-aligned ranges, still mapped and resident, that wait
//! for a later huge block (`huge.rs`) or a new chunk (`chunk.rs`) to take them, or for decay to
//! unmap them.
//!
//! A program that allocates, touches and frees a 20 MiB buffer in a loop would otherwise pay a
//! `munmap` and then a page fault per 4 KiB on every round (glibc avoids this by raising its
//! mmap threshold, tcmalloc by never unmapping). Reuse by a huge block takes the smallest cached
//! mapping that fits and splits off the part beyond the block's last chunk window; with none that
//! fits it moves the largest one to a bigger address range with `mremap`, so only the new tail
//! faults. Freed neighbours merge again.
//!
//! An arena that needs a new chunk takes one chunk window of the oldest cached mapping that holds
//! one before it maps fresh memory ([`take_chunk`]): the pages are resident already, and glibc,
//! whose large blocks come from the same heap as its small ones once its mmap threshold has risen,
//! would have reused them too. The suite's `sqlite` workload sorts twice: the first sort's 16 MiB
//! buffer, freed, waited in the cache while the page cache mapped new chunks beside it.

use core::sync::atomic::{AtomicU64, Ordering};

use crate::pagemap::CHUNK;
use tally_pal::sync::{Mutex, Rank};
use tally_pal::{self as pal, PAGE};

/// Bytes of freed huge mappings kept for reuse now (resident, counted as dirty).
pub static HUGE_CACHED: AtomicU64 = AtomicU64::new(0);
/// Huge allocations, and growths of huge blocks, served from a cached mapping (a statistic).
pub static HUGE_REUSES: AtomicU64 = AtomicU64::new(0);
/// New chunks made of a cached mapping's chunk window (a statistic).
pub static CHUNK_REUSES: AtomicU64 = AtomicU64::new(0);

/// Mappings the cache holds at most.
const CACHE_SLOTS: usize = 16;

#[derive(Clone, Copy)]
struct CachedMapping {
    base: usize,
    len: usize,
    /// When it was freed (coarse clock, ms); the older time when two merge.
    since_ms: u64,
}

/// Freed mappings waiting for reuse. Invariants: `slots[..n]` are disjoint mappings Tally owns,
/// dead, each with a chunk-aligned `base` and a page-multiple `len`, absent from the page map;
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

    /// Takes the front of the mapping in slot `i`: the whole chunk windows covering `want` bytes
    /// (all of it when shorter), the rest left cached. Returns `(base, len)` taken.
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

    fn push(&mut self, base: usize, len: usize) {
        self.list[self.n] = (base, len);
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

/// A mapping of at least `mapped` bytes from the cache, chunk-aligned: `(base, len, fresh)`,
/// with the part beyond `mapped`'s last chunk window left in the cache. With no cached mapping
/// large enough, the largest one moved by `mremap` to a new range of `mapped` bytes (its pages go
/// along, only the tail is new: `fresh` bytes, 0 otherwise). `None` when the cache is empty or
/// the kernel refuses.
pub fn take(mapped: usize) -> Option<(usize, usize, usize)> {
    let mut cache = CACHE.lock();
    if cache.n == 0 {
        return None;
    }
    let fit = (0..cache.n)
        .filter(|&i| cache.slots[i].len >= mapped)
        .min_by_key(|&i| cache.slots[i].len);
    if let Some(i) = fit {
        HUGE_REUSES.fetch_add(1, Ordering::Relaxed);
        let (base, len) = cache.take_front(i, mapped);
        return Some((base, len, 0));
    }
    let largest = (0..cache.n).max_by_key(|&i| cache.slots[i].len)?;
    let m = cache.remove(largest);
    drop(cache);
    // SAFETY: `m` is a cached mapping, dead and now ours alone.
    if unsafe { pal::remap_in_place(m.base as *mut u8, m.len, mapped) } {
        HUGE_REUSES.fetch_add(1, Ordering::Relaxed);
        return Some((m.base, mapped, mapped - m.len));
    }
    let target = pal::map_aligned_accounted(mapped, CHUNK);
    // SAFETY: as above; `target` is a fresh mapping of `mapped` bytes that the move replaces.
    if !target.is_null() && unsafe { pal::remap_to(m.base as *mut u8, m.len, target, mapped) } {
        HUGE_REUSES.fetch_add(1, Ordering::Relaxed);
        return Some((target as usize, mapped, mapped - m.len));
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
pub fn take_at(at: usize, want: usize) -> usize {
    let mut cache = CACHE.lock();
    let Some(i) = (0..cache.n).find(|&i| cache.slots[i].base == at && cache.slots[i].len >= want) else {
        return 0;
    };
    HUGE_REUSES.fetch_add(1, Ordering::Relaxed);
    cache.take_front(i, want).1
}

/// One chunk window for a new chunk: the front of the oldest cached mapping that holds a whole
/// one (the rest stays cached). Its address, or `None` when no cached mapping is that long. The
/// window's pages keep what the huge block wrote there and may be resident.
#[link_section = ".text.hot.tally"]
pub fn take_chunk() -> Option<usize> {
    #[cfg(test)]
    if tests::LENDING_PAUSED.load(Ordering::Relaxed) && !tests::LENDS_ANYWAY.with(|l| l.get()) {
        return None;
    }
    let mut cache = CACHE.lock();
    let i = (0..cache.n)
        .filter(|&i| cache.slots[i].len >= CHUNK)
        .min_by_key(|&i| cache.slots[i].since_ms)?;
    let (base, _) = cache.take_front(i, CHUNK);
    CHUNK_REUSES.fetch_add(1, Ordering::Relaxed);
    Some(base)
}

/// Whether `addr` starts a cached mapping (a huge block freed earlier).
pub fn starts_at(addr: usize) -> bool {
    let cache = CACHE.lock();
    cache.slots[..cache.n].iter().any(|m| m.base == addr)
}

/// Puts the dead mapping `[base, base + len)` in the cache, evicting the oldest mappings while
/// the cache would hold more than `limit` bytes or has no free slot; unmaps it instead when it
/// is longer than `limit`.
///
/// # Safety
/// The mapping must be Tally's, chunk-aligned, absent from the page map and unused.
#[link_section = ".text.hot.tally"]
pub unsafe fn put(base: usize, len: usize, limit: usize) {
    let mut evicted = Evicted::new();
    if len <= limit {
        let mut cache = CACHE.lock();
        while cache.n > 0 && (cache.n == CACHE_SLOTS || cache.bytes + len > limit) {
            let i = cache.oldest();
            let m = cache.remove(i);
            evicted.push(m.base, m.len);
        }
        cache.insert(CachedMapping {
            base,
            len,
            since_ms: pal::now_ms(),
        });
    } else {
        evicted.push(base, len);
    }
    evicted.unmap();
}

/// Unmaps cached mappings freed at least `decay_ms` before `now` (none when `decay_ms` is
/// negative), or all of them when `everything`. Returns the pages given back.
#[link_section = ".text.hot.tally"]
pub fn purge(now: u64, decay_ms: i64, everything: bool) -> u64 {
    if !everything && decay_ms < 0 {
        return 0;
    }
    let mut evicted = Evicted::new();
    {
        let mut cache = CACHE.lock();
        let mut i = 0;
        while i < cache.n {
            if everything || cache.slots[i].since_ms + decay_ms as u64 <= now {
                let m = cache.remove(i);
                evicted.push(m.base, m.len);
            } else {
                i += 1;
            }
        }
    }
    evicted.unmap()
}

pub(crate) fn lock_for_fork() {
    CACHE.lock_for_fork();
}

/// # Safety
/// The prepare handler must have taken the lock in this thread.
pub(crate) unsafe fn unlock_after_fork(child: bool) {
    // SAFETY: per the contract.
    unsafe { CACHE.unlock_after_fork(child) };
}

#[cfg(test)]
pub(crate) mod tests {
    //! The cache on a private instance, and lending a chunk window to a new chunk. The tests
    //! that check the process's one cache by its contents (here and in `huge.rs`) hold
    //! [`serial`], which also keeps new chunks of other tests from taking from it meanwhile.

    use super::*;
    use core::sync::atomic::AtomicBool;
    use std::sync::{Mutex as TestMutex, MutexGuard};
    use std::vec::Vec;

    /// While set, [`take_chunk`] takes nothing (see [`serial`]), but in a thread that set
    /// [`LENDS_ANYWAY`].
    pub(crate) static LENDING_PAUSED: AtomicBool = AtomicBool::new(false);

    std::thread_local! {
        /// The calling thread's [`take_chunk`] takes even while lending is paused.
        pub(crate) static LENDS_ANYWAY: core::cell::Cell<bool> = const { core::cell::Cell::new(false) };
    }

    static SERIAL: TestMutex<()> = TestMutex::new(());

    /// Serializes the tests of the process's cache and keeps other tests' new chunks from
    /// taking from it until the guard is dropped.
    pub(crate) struct Serial {
        _guard: MutexGuard<'static, ()>,
    }

    impl Drop for Serial {
        fn drop(&mut self) {
            LENDING_PAUSED.store(false, Ordering::Relaxed);
        }
    }

    pub(crate) fn serial() -> Serial {
        let guard = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
        LENDING_PAUSED.store(true, Ordering::Relaxed);
        Serial { _guard: guard }
    }

    /// Checks the invariants on a [`MappingCache`]; returns its mappings sorted by base.
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

    /// A copy of the cache, taken under its lock (tests must not allocate under it).
    fn snapshot() -> MappingCache {
        let cache = CACHE.lock();
        MappingCache {
            n: cache.n,
            bytes: cache.bytes,
            slots: cache.slots,
        }
    }

    /// The process's cache, checked.
    pub(crate) fn cached() -> Vec<(usize, usize)> {
        check_cache(&snapshot())
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
    fn a_new_chunk_takes_a_window_of_the_oldest_mapping_long_enough() {
        let _serial = serial();
        purge(0, 0, true);
        let map = |len: usize| {
            let p = pal::map_aligned(len, CHUNK) as usize;
            assert_ne!(p, 0);
            p
        };
        let (short, old, new) = (map(CHUNK / 2), map(3 * CHUNK), map(2 * CHUNK));
        // SAFETY: fresh mappings of this test, in no page map, unused.
        unsafe {
            *((old + CHUNK) as *mut u8) = 7;
            put(short, CHUNK / 2, usize::MAX);
            put(old, 3 * CHUNK, usize::MAX);
            put(new, 2 * CHUNK, usize::MAX);
        }
        // Oldest first by the freeing time: make `short` the oldest and `old` older than `new`.
        {
            let mut cache = CACHE.lock();
            for i in 0..cache.n {
                let m = &mut cache.slots[i];
                m.since_ms = [(short, 1), (old, 2), (new, 3)]
                    .iter()
                    .find(|x| x.0 == m.base)
                    .unwrap()
                    .1;
            }
        }
        let taken = CHUNK_REUSES.load(Ordering::Relaxed);
        LENDS_ANYWAY.with(|l| l.set(true));
        let first = take_chunk();
        let second = take_chunk();
        LENDS_ANYWAY.with(|l| l.set(false));
        assert_eq!(
            first,
            Some(old),
            "the oldest mapping of a whole window, not the shorter one"
        );
        assert_eq!(
            second,
            Some(old + CHUNK),
            "the rest stayed cached, still the oldest"
        );
        assert_eq!(CHUNK_REUSES.load(Ordering::Relaxed) - taken, 2);
        // SAFETY: the window is this test's now; its bytes are as the mapping left them.
        unsafe { assert_eq!(*((old + CHUNK) as *const u8), 7) };
        let mut left = cached();
        left.sort_unstable();
        let mut want = std::vec![(short, CHUNK / 2), (old + 2 * CHUNK, CHUNK), (new, 2 * CHUNK)];
        want.sort_unstable();
        assert_eq!(left, want);
        assert_eq!(
            HUGE_CACHED.load(Ordering::Relaxed),
            (CHUNK / 2 + 3 * CHUNK) as u64
        );
        // SAFETY: the two windows taken are this test's and unused.
        unsafe { pal::unmap(old as *mut u8, 2 * CHUNK) };
        assert_eq!(purge(0, 0, true), ((CHUNK / 2 + 3 * CHUNK) / PAGE) as u64);
        assert!(cached().is_empty());
    }
}
