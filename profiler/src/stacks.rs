//! The stack table: each distinct call stack stored once, with its counters.
//!
//! Layout (all memory from `mmap`, reserved up front with `MAP_NORESERVE`, so it costs only the
//! pages touched and never moves):
//! - `entries`: `max_stacks` `Entry` slots, filled in order; a stack's id is its slot number.
//! - `frames`: one array of `max_frame_words` words; each entry's frames are a range of it.
//! - the index: open addressing over `u32` slots holding `id + 1` (0 = empty), linear probing,
//!   at most half full; it grows by mapping one twice as large, rehashing and unmapping the old
//!   one, all under the lock (only writers use the index).
//!
//! Invariants: `published ≤ used ≤ max_stacks`; entries `0..published` are complete and never
//! change except their counters; every id in the index is `< used`; `frames_used` = sum of the
//! lengths of entries `0..used`.
//!
//! Readers (the dump) need no lock: they read `published` (acquire) and then entries below it.
//! Counters are `f64` bits in `AtomicU64`s updated by compare-and-swap, so the recording path
//! takes the lock only to intern a stack, and a free never does.

use core::sync::atomic::{AtomicPtr, AtomicU32, AtomicU64, Ordering};

use tally_format::Estimate;

use tally_pal::sync::{Mutex, Rank};

/// A stack's number in its table.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct StackId(pub u32);

/// One interned stack.
#[repr(C)]
struct Entry {
    hash: u64,
    /// First word of the frames in the frames array.
    frames_at: u32,
    /// Number of frames.
    len: u32,
    live_objects: AtomicU64,
    live_bytes: AtomicU64,
    accum_objects: AtomicU64,
    accum_bytes: AtomicU64,
}

/// A stack as the dump sees it.
#[derive(Clone, Copy, Debug)]
pub struct StackView<'a> {
    /// The stack's id.
    pub id: StackId,
    /// Return addresses, innermost first.
    pub frames: &'a [usize],
    /// Unbiased live objects and bytes.
    pub live: Estimate,
    /// Unbiased cumulative objects and bytes.
    pub accum: Estimate,
}

/// State only writers touch, under the lock.
struct Index {
    slots: *mut u32,
    /// Number of slots, a power of two (0 before the first use).
    capacity: usize,
    used: usize,
    frames_used: usize,
}

// SAFETY: the raw pointer is to memory owned by the table, only touched under its lock.
unsafe impl Send for Index {}

/// The stack table. Build it in a `static` with [`StackTable::new`]; memory is mapped on first use.
pub struct StackTable {
    max_stacks: usize,
    max_frame_words: usize,
    entries: AtomicPtr<Entry>,
    frames: AtomicPtr<usize>,
    published: AtomicU32,
    index: Mutex<Index>,
}

const MIN_INDEX_SLOTS: usize = 1024;

fn hash_frames(frames: &[usize]) -> u64 {
    let mut h: u64 = 0x243f_6a88_85a3_08d3 ^ frames.len() as u64;
    for &f in frames {
        h = (h ^ f as u64).wrapping_mul(0x9e37_79b9_7f4a_7c15);
        h ^= h >> 29;
    }
    h ^= h >> 32;
    h.wrapping_mul(0xd6e8_feb8_6659_fd93) ^ (h >> 31)
}

fn load_f64(a: &AtomicU64) -> f64 {
    f64::from_bits(a.load(Ordering::Relaxed))
}

fn update_f64(a: &AtomicU64, f: impl Fn(f64) -> f64) {
    let mut old = a.load(Ordering::Relaxed);
    loop {
        let new = f(f64::from_bits(old)).to_bits();
        match a.compare_exchange_weak(old, new, Ordering::Relaxed, Ordering::Relaxed) {
            Ok(_) => return,
            Err(current) => old = current,
        }
    }
}

impl StackTable {
    /// A table for at most `max_stacks` stacks holding at most `max_frame_words` frames in all.
    /// Maps nothing yet.
    pub const fn new(max_stacks: usize, max_frame_words: usize) -> Self {
        StackTable {
            max_stacks,
            max_frame_words,
            entries: AtomicPtr::new(core::ptr::null_mut()),
            frames: AtomicPtr::new(core::ptr::null_mut()),
            published: AtomicU32::new(0),
            index: Mutex::new(
                Rank::ProfilerStacks,
                Index {
                    slots: core::ptr::null_mut(),
                    capacity: 0,
                    used: 0,
                    frames_used: 0,
                },
            ),
        }
    }

    /// Takes the table's lock for `fork` (see [`Mutex::lock_for_fork`]).
    pub fn lock_for_fork(&self) {
        self.index.lock_for_fork();
    }

    /// Releases the lock taken by [`StackTable::lock_for_fork`].
    ///
    /// # Safety
    /// See [`Mutex::unlock_after_fork`].
    pub unsafe fn unlock_after_fork(&self, child: bool) {
        // SAFETY: per the contract.
        unsafe { self.index.unlock_after_fork(child) }
    }

    /// The id of `frames`, interning it if new. `None` when the table is full or memory could not
    /// be mapped (the caller drops the sample). May call `mmap`; never `malloc`.
    pub fn intern(&self, frames: &[usize]) -> Option<StackId> {
        let hash = hash_frames(frames);
        let mut index = self.index.lock();
        if index.capacity == 0 && !self.map_initial(&mut index) {
            return None;
        }
        let entries = self.entries.load(Ordering::Relaxed);
        let frame_words = self.frames.load(Ordering::Relaxed);
        let mask = index.capacity - 1;
        let mut slot = hash as usize & mask;
        loop {
            // SAFETY: slot ≤ mask < capacity, inside the index mapping.
            let v = unsafe { *index.slots.add(slot) };
            if v == 0 {
                break;
            }
            let id = (v - 1) as usize;
            // SAFETY: ids in the index are < used ≤ max_stacks, complete entries.
            let e = unsafe { &*entries.add(id) };
            if e.hash == hash && e.len as usize == frames.len() {
                // SAFETY: the entry's frame range lies inside the frames mapping.
                let stored = unsafe {
                    core::slice::from_raw_parts(frame_words.add(e.frames_at as usize), e.len as usize)
                };
                if stored == frames {
                    return Some(StackId(id as u32));
                }
            }
            slot = (slot + 1) & mask;
        }
        // New stack.
        if index.used >= self.max_stacks
            || index.used >= u32::MAX as usize - 1
            || index.frames_used + frames.len() > self.max_frame_words
        {
            return None;
        }
        if (index.used + 1) * 2 > index.capacity {
            if !self.grow_index(&mut index) {
                return None;
            }
            return drop_and_retry(index, self, frames);
        }
        let id = index.used;
        let at = index.frames_used;
        // SAFETY: `at + len ≤ max_frame_words` was checked; the range is ours alone (not yet
        // published).
        unsafe { core::ptr::copy_nonoverlapping(frames.as_ptr(), frame_words.add(at), frames.len()) };
        // SAFETY: `id < max_stacks`; the slot is unused and unpublished, so no one reads it.
        unsafe {
            entries.add(id).write(Entry {
                hash,
                frames_at: at as u32,
                len: frames.len() as u32,
                live_objects: AtomicU64::new(0),
                live_bytes: AtomicU64::new(0),
                accum_objects: AtomicU64::new(0),
                accum_bytes: AtomicU64::new(0),
            })
        };
        // SAFETY: slot is the empty slot found above, inside the index.
        unsafe { *index.slots.add(slot) = id as u32 + 1 };
        index.used += 1;
        index.frames_used += frames.len();
        self.published.store(index.used as u32, Ordering::Release);
        Some(StackId(id as u32))
    }

    fn map_initial(&self, index: &mut Index) -> bool {
        if self.max_stacks == 0 || self.max_frame_words > u32::MAX as usize {
            return false;
        }
        let entries = tally_pal::map(self.max_stacks * core::mem::size_of::<Entry>());
        let frames = tally_pal::map(self.max_frame_words.max(1) * core::mem::size_of::<usize>());
        let slots = tally_pal::map(MIN_INDEX_SLOTS * 4);
        if entries.is_null() || frames.is_null() || slots.is_null() {
            // SAFETY: each non-null pointer is a mapping of exactly that size, unused.
            unsafe {
                if !entries.is_null() {
                    tally_pal::unmap(entries, self.max_stacks * core::mem::size_of::<Entry>());
                }
                if !frames.is_null() {
                    tally_pal::unmap(
                        frames,
                        self.max_frame_words.max(1) * core::mem::size_of::<usize>(),
                    );
                }
                if !slots.is_null() {
                    tally_pal::unmap(slots, MIN_INDEX_SLOTS * 4);
                }
            }
            return false;
        }
        self.entries.store(entries.cast(), Ordering::Release);
        self.frames.store(frames.cast(), Ordering::Release);
        index.slots = slots.cast();
        index.capacity = MIN_INDEX_SLOTS;
        true
    }

    fn grow_index(&self, index: &mut Index) -> bool {
        let capacity = index.capacity * 2;
        let slots: *mut u32 = tally_pal::map(capacity * 4).cast();
        if slots.is_null() {
            return false;
        }
        let entries = self.entries.load(Ordering::Relaxed);
        let mask = capacity - 1;
        for id in 0..index.used {
            // SAFETY: ids below `used` are complete entries.
            let mut slot = unsafe { (*entries.add(id)).hash } as usize & mask;
            // SAFETY: slots are inside the new index; it has room (at most half full).
            unsafe {
                while *slots.add(slot) != 0 {
                    slot = (slot + 1) & mask;
                }
                *slots.add(slot) = id as u32 + 1;
            }
        }
        // SAFETY: the old index is a mapping of `capacity/2 * 4` bytes only used under this lock.
        unsafe { tally_pal::unmap(index.slots.cast(), index.capacity * 4) };
        index.slots = slots;
        index.capacity = capacity;
        true
    }

    fn entry(&self, id: StackId) -> Option<&Entry> {
        if id.0 >= self.published.load(Ordering::Acquire) {
            return None;
        }
        let entries = self.entries.load(Ordering::Acquire);
        // SAFETY: published entries are complete and never move or get unmapped.
        Some(unsafe { &*entries.add(id.0 as usize) })
    }

    /// Adds a sample's estimate to the live counters (and to the cumulative ones if `accum`).
    pub fn add(&self, id: StackId, e: Estimate, accum: bool) {
        if let Some(entry) = self.entry(id) {
            update_f64(&entry.live_objects, |v| v + e.objects);
            update_f64(&entry.live_bytes, |v| v + e.bytes);
            if accum {
                update_f64(&entry.accum_objects, |v| v + e.objects);
                update_f64(&entry.accum_bytes, |v| v + e.bytes);
            }
        }
    }

    /// Removes a freed sample's estimate from the live counters (clamped at zero).
    pub fn sub(&self, id: StackId, e: Estimate) {
        if let Some(entry) = self.entry(id) {
            update_f64(&entry.live_objects, |v| (v - e.objects).max(0.0));
            update_f64(&entry.live_bytes, |v| (v - e.bytes).max(0.0));
        }
    }

    /// Sets every stack's counters to zero (for `prof.reset`); the stacks stay interned.
    pub fn reset_counters(&self) {
        for id in 0..self.published.load(Ordering::Acquire) {
            if let Some(e) = self.entry(StackId(id)) {
                for c in [&e.live_objects, &e.live_bytes, &e.accum_objects, &e.accum_bytes] {
                    c.store(0, Ordering::Relaxed);
                }
            }
        }
    }

    /// Number of stacks interned and visible to readers.
    pub fn len(&self) -> usize {
        self.published.load(Ordering::Acquire) as usize
    }

    /// Whether no stack is interned.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// One stack, if `id` is published. No lock: counters are read one by one, so a concurrent
    /// update may show in one counter and not yet in another.
    pub fn get(&self, id: StackId) -> Option<StackView<'_>> {
        let e = self.entry(id)?;
        let frames = self.frames.load(Ordering::Acquire);
        // SAFETY: a published entry's frame range is complete and never changes.
        let frames = unsafe { core::slice::from_raw_parts(frames.add(e.frames_at as usize), e.len as usize) };
        Some(StackView {
            id,
            frames,
            live: Estimate {
                objects: load_f64(&e.live_objects),
                bytes: load_f64(&e.live_bytes),
            },
            accum: Estimate {
                objects: load_f64(&e.accum_objects),
                bytes: load_f64(&e.accum_bytes),
            },
        })
    }

    /// Every published stack, in id order.
    pub fn iter(&self) -> impl Iterator<Item = StackView<'_>> {
        (0..self.len() as u32).filter_map(|i| self.get(StackId(i)))
    }

    /// Checks the invariants in the module docs (tests call it).
    pub fn debug_check_invariants(&self) {
        let index = self.index.lock();
        assert!(self.len() <= index.used && index.used <= self.max_stacks);
        let mut frames = 0;
        let mut in_index = 0;
        for i in 0..index.capacity {
            // SAFETY: i < capacity.
            let v = unsafe { *index.slots.add(i) };
            if v != 0 {
                assert!(((v - 1) as usize) < index.used);
                in_index += 1;
            }
        }
        for s in self.iter() {
            frames += s.frames.len();
        }
        assert_eq!(in_index, index.used);
        assert_eq!(frames, index.frames_used);
        assert!(index.capacity == 0 || index.used * 2 <= index.capacity);
    }
}

/// After growing, interns again (the new slot differs). Grows at most once more per call since
/// the index just doubled.
fn drop_and_retry(
    index: tally_pal::sync::MutexGuard<'_, Index>,
    table: &StackTable,
    frames: &[usize],
) -> Option<StackId> {
    drop(index);
    table.intern(frames)
}

#[cfg(test)]
mod tests {
    use super::*;
    use tally_format::Estimate;

    #[test]
    fn interning_is_idempotent_and_grows() {
        let t = StackTable::new(100_000, 1 << 22);
        let mut ids = [StackId(0); 5000];
        for (i, id) in ids.iter_mut().enumerate() {
            let frames = [i, i * 7, 0x4000 + i % 13];
            *id = t.intern(&frames[..1 + i % 3]).unwrap();
        }
        for (i, id) in ids.iter().enumerate() {
            let frames = [i, i * 7, 0x4000 + i % 13];
            assert_eq!(t.intern(&frames[..1 + i % 3]), Some(*id));
            assert_eq!(t.get(*id).unwrap().frames, &frames[..1 + i % 3]);
        }
        assert_eq!(t.len(), 5000);
        t.debug_check_invariants();
        assert_eq!(t.intern(&[]).map(|id| t.get(id).unwrap().frames.len()), Some(0));
    }

    #[test]
    fn full_tables_refuse() {
        let t = StackTable::new(2, 4);
        assert!(t.intern(&[1, 2]).is_some());
        assert!(t.intern(&[3, 4, 5]).is_none(), "frames full");
        assert!(t.intern(&[3]).is_some());
        assert!(t.intern(&[6]).is_none(), "stacks full");
        assert!(t.intern(&[1, 2]).is_some(), "existing ones still found");
        t.debug_check_invariants();
    }

    #[test]
    fn counters_add_and_subtract() {
        let t = StackTable::new(10, 100);
        let id = t.intern(&[1, 2, 3]).unwrap();
        let e = Estimate::of_sample(100, 1 << 19);
        t.add(id, e, true);
        t.add(id, e, true);
        t.sub(id, e);
        let v = t.get(id).unwrap();
        assert!((v.live.objects - e.objects).abs() < 1e-6 * e.objects);
        assert!((v.accum.bytes - 2.0 * e.bytes).abs() < 1e-6 * e.bytes);
        t.sub(id, e);
        t.sub(id, e);
        assert_eq!(t.get(id).unwrap().live.objects, 0.0);
    }

    #[test]
    fn concurrent_interning() {
        static T: StackTable = StackTable::new(1 << 16, 1 << 20);
        std::thread::scope(|s| {
            for th in 0..4usize {
                s.spawn(move || {
                    for i in 0..3000usize {
                        let id = T.intern(&[i % 2000, 7]).unwrap();
                        T.add(
                            id,
                            Estimate {
                                objects: 1.0,
                                bytes: 8.0,
                            },
                            false,
                        );
                        assert_eq!(T.get(id).unwrap().frames, &[i % 2000, 7], "thread {th}");
                    }
                });
            }
        });
        assert_eq!(T.len(), 2000);
        let total: f64 = T.iter().map(|s| s.live.objects).sum();
        assert_eq!(total, 12000.0);
        T.debug_check_invariants();
    }
}
