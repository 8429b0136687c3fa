//! The live-block table: every sampled block still allocated, by address.
//!
//! Open addressing with linear probing over [`Record`] slots in memory from `mmap`. A slot's
//! `addr` is [`EMPTY`] or a block address. A removal shifts the records after it in its run
//! back over the hole where their probes allow ("backward-shift deletion"), so that no slot is
//! left to say "removed, probe on": an insert probes once, to its address or the first empty
//! slot (with removed-slot markers, as until the twenty-second pass of issue 13, an insert
//! probed twice, and the markers the samples freed lengthened every probe until a rehash swept
//! them). The table grows when live records would pass 3/4 of the slots: a new mapping, a
//! rehash, the old one unmapped — all under the lock, which is held for nothing else (no
//! allocation, no callback; `mmap` is a system call, not `malloc`).
//!
//! Invariants: `live ≤ 3/4 · capacity`; `live` = slots holding an address; no address appears
//! twice; every record lies in the run of occupied slots that starts at or before its home slot
//! (its hash) and reaches it, so a probe from its home finds it before an empty slot.

use tally_format::Estimate;

use crate::stacks::StackId;
use tally_pal::sync::{Mutex, Rank};

/// An empty slot.
pub const EMPTY: usize = 0;
/// An address the table refuses (it marked removed records until the twenty-second pass of
/// issue 13; still refused, so what the table takes did not change).
pub const TOMBSTONE: usize = 1;

/// One sampled block.
#[derive(Clone, Copy, Debug, PartialEq)]
#[repr(C)]
pub struct Record {
    /// The block's address (never 0, which marks an empty slot, or 1).
    pub addr: usize,
    /// The stack that allocated it.
    pub stack: StackId,
    /// The size asked for.
    pub size: u64,
    /// The unbiased estimate this sample added to its stack (subtracted again at free).
    pub estimate: Estimate,
}

struct Slots {
    ptr: *mut Record,
    capacity: usize,
    live: usize,
}

// SAFETY: the pointer is to memory owned by the table, only touched under its lock.
unsafe impl Send for Slots {}

/// The live-block table. Build it in a `static` with [`LiveTable::new`].
pub struct LiveTable {
    slots: Mutex<Slots>,
}

const MIN_SLOTS: usize = 1024;

fn hash_addr(addr: usize) -> usize {
    // Blocks are at least 8-aligned and often page-aligned: mix the bits.
    let h = (addr as u64 ^ (addr as u64 >> 29)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    (h ^ (h >> 32)) as usize
}

impl Slots {
    /// The slot holding `addr`, or the empty slot where it would go (the table has room: see
    /// the invariants). `None` only for a table with no slots.
    #[inline(always)]
    fn probe(&self, addr: usize) -> Option<usize> {
        if self.capacity == 0 {
            return None;
        }
        let mask = self.capacity - 1;
        let mut i = hash_addr(addr) & mask;
        loop {
            // SAFETY: i < capacity.
            let a = unsafe { (*self.ptr.add(i)).addr };
            if a == addr || a == EMPTY {
                return Some(i);
            }
            i = (i + 1) & mask;
        }
    }

    /// The slot holding `addr`, if any.
    fn find(&self, addr: usize) -> Option<usize> {
        let i = self.probe(addr)?;
        // SAFETY: i < capacity.
        (unsafe { (*self.ptr.add(i)).addr } == addr).then_some(i)
    }

    /// Puts a record known to be absent, into a table with room.
    fn put(&mut self, r: Record) {
        if let Some(i) = self.probe(r.addr) {
            // SAFETY: i < capacity.
            unsafe { *self.ptr.add(i) = r };
            self.live += 1;
        }
    }

    /// Empties slot `hole`, moving back the records after it in its run that may live there.
    fn remove_at(&mut self, mut hole: usize) {
        let mask = self.capacity - 1;
        let mut j = hole;
        loop {
            j = (j + 1) & mask;
            // SAFETY: j < capacity.
            let r = unsafe { *self.ptr.add(j) };
            if r.addr == EMPTY {
                break;
            }
            // The record at `j` may move to `hole` unless its home lies cyclically in
            // `(hole, j]`: a probe from there would not pass `hole`.
            let home = hash_addr(r.addr) & mask;
            if (j.wrapping_sub(home) & mask) >= (j.wrapping_sub(hole) & mask) {
                // SAFETY: both < capacity.
                unsafe { *self.ptr.add(hole) = r };
                hole = j;
            }
        }
        // SAFETY: hole < capacity.
        unsafe { (*self.ptr.add(hole)).addr = EMPTY };
        self.live -= 1;
    }

    /// Makes room for one more record: a new mapping at least half empty after the insert (never
    /// smaller than before), the live records rehashed into it.
    fn grow(&mut self) -> bool {
        let mut capacity = self.capacity.max(MIN_SLOTS);
        while (self.live + 1) * 2 > capacity {
            capacity *= 2;
        }
        let ptr: *mut Record = tally_pal::map(capacity * core::mem::size_of::<Record>()).cast();
        if ptr.is_null() {
            return false;
        }
        let old = Slots {
            ptr: self.ptr,
            capacity: self.capacity,
            live: self.live,
        };
        *self = Slots {
            ptr,
            capacity,
            live: 0,
        };
        for i in 0..old.capacity {
            // SAFETY: i < old capacity.
            let r = unsafe { *old.ptr.add(i) };
            if r.addr != EMPTY {
                self.put(r);
            }
        }
        if !old.ptr.is_null() {
            // SAFETY: the old slots are a whole mapping of ours, no longer referenced.
            unsafe { tally_pal::unmap(old.ptr.cast(), old.capacity * core::mem::size_of::<Record>()) };
        }
        true
    }
}

impl LiveTable {
    /// An empty table; maps nothing yet.
    pub const fn new() -> Self {
        LiveTable {
            slots: Mutex::new(
                Rank::ProfilerLive,
                Slots {
                    ptr: core::ptr::null_mut(),
                    capacity: 0,
                    live: 0,
                },
            ),
        }
    }

    /// Takes the table's lock for `fork` (see [`Mutex::lock_for_fork`]).
    pub fn lock_for_fork(&self) {
        self.slots.lock_for_fork();
    }

    /// Releases the lock taken by [`LiveTable::lock_for_fork`].
    ///
    /// # Safety
    /// See [`Mutex::unlock_after_fork`].
    pub unsafe fn unlock_after_fork(&self, child: bool) {
        // SAFETY: per the contract.
        unsafe { self.slots.unlock_after_fork(child) }
    }

    /// Records a sampled block. If the address is already recorded (a block the allocator
    /// forgot to report freed), the old record is replaced and returned so that the caller can
    /// take its estimate off its stack. `Err(record)` when memory for the table could not be
    /// mapped or the address is 0 or 1: the caller drops the sample.
    pub fn insert(&self, r: Record) -> Result<Option<Record>, Record> {
        if r.addr == EMPTY || r.addr == TOMBSTONE {
            return Err(r);
        }
        let mut s = self.slots.lock();
        // One probe finds the address or the empty slot it goes to; a replacement needs no room,
        // and only a table that must grow first is probed again (by `put`, in the new slots).
        if let Some(i) = s.probe(r.addr) {
            // SAFETY: i < capacity.
            let slot = unsafe { &mut *s.ptr.add(i) };
            if slot.addr == r.addr {
                return Ok(Some(core::mem::replace(slot, r)));
            }
            if (s.live + 1) * 4 <= s.capacity * 3 {
                *slot = r;
                s.live += 1;
                return Ok(None);
            }
        }
        if !s.grow() {
            return Err(r);
        }
        s.put(r);
        Ok(None)
    }

    /// Removes and returns the record of a freed block, if it was sampled.
    #[inline]
    pub fn remove(&self, addr: usize) -> Option<Record> {
        if addr == EMPTY || addr == TOMBSTONE {
            return None;
        }
        let mut s = self.slots.lock();
        let i = s.find(addr)?;
        // SAFETY: i < capacity.
        let r = unsafe { *s.ptr.add(i) };
        s.remove_at(i);
        Some(r)
    }

    /// Forgets every record (for `prof.reset`); frees of the forgotten blocks then find nothing.
    pub fn clear(&self) {
        let mut s = self.slots.lock();
        for i in 0..s.capacity {
            // SAFETY: i < capacity.
            unsafe { (*s.ptr.add(i)).addr = EMPTY };
        }
        s.live = 0;
    }

    /// Number of sampled blocks alive.
    pub fn len(&self) -> usize {
        self.slots.lock().live
    }

    /// Whether no sampled block is alive.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Calls `f` on every record, under the lock: `f` must not allocate or take profiler locks.
    pub fn for_each(&self, mut f: impl FnMut(&Record)) {
        let s = self.slots.lock();
        for i in 0..s.capacity {
            // SAFETY: i < capacity.
            let r = unsafe { &*s.ptr.add(i) };
            if r.addr != EMPTY {
                f(r);
            }
        }
    }

    /// Checks the invariants in the module docs (tests call it).
    pub fn debug_check_invariants(&self) {
        let s = self.slots.lock();
        let mut live = 0;
        for i in 0..s.capacity {
            // SAFETY: i < capacity.
            let a = unsafe { (*s.ptr.add(i)).addr };
            if a != EMPTY {
                live += 1;
                assert_eq!(s.find(a), Some(i), "address {a:#x} reachable and unique");
            }
        }
        assert_eq!(live, s.live);
        assert!(s.capacity == 0 || s.live * 4 <= s.capacity * 3);
    }
}

impl Default for LiveTable {
    fn default() -> Self {
        Self::new()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn rec(addr: usize, size: u64) -> Record {
        Record {
            addr,
            stack: StackId(addr as u32 % 7),
            size,
            estimate: Estimate::of_sample(size, 4096),
        }
    }

    #[test]
    fn against_a_shadow_map() {
        let t = LiveTable::new();
        let mut shadow = HashMap::new();
        let mut x: u64 = 12345;
        for step in 0..200_000u64 {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            let addr = 16 * (2 + (x % 5000) as usize);
            if x % 3 == 0 {
                assert_eq!(
                    t.remove(addr).map(|r| r.size),
                    shadow.remove(&addr),
                    "step {step}"
                );
            } else {
                let old = t.insert(rec(addr, step)).unwrap();
                assert_eq!(old.map(|r| r.size), shadow.insert(addr, step));
            }
            // Every record still found from its home after the removals moved records back
            // (wrapping past the table's end among them).
            if step % 1_000 == 0 {
                t.debug_check_invariants();
            }
        }
        assert_eq!(t.len(), shadow.len());
        let mut n = 0;
        t.for_each(|r| {
            assert_eq!(shadow.get(&r.addr), Some(&r.size));
            n += 1;
        });
        assert_eq!(n, shadow.len());
        t.debug_check_invariants();
    }

    #[test]
    fn reserved_addresses_are_refused() {
        let t = LiveTable::new();
        assert!(t.insert(rec(0, 1)).is_err());
        assert!(t.insert(rec(1, 1)).is_err());
        assert!(t.remove(0).is_none());
        assert!(t.remove(8).is_none());
    }
}
