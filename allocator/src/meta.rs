//! The metadata pool: memory for Tally's own bookkeeping (thread caches, huge-block
//! descriptors), carved from mappings of its own and never from the heap it manages.
//!
//! It is a bump allocator: memory is never returned; the types allocated here keep free lists
//! of their own for reuse.

use tally_pal as pal;
use tally_pal::sync::{Mutex, Rank};

/// Bytes mapped at a time for metadata.
const REGION: usize = 256 * 1024;

/// The unused tail of the current region. Invariant: `cursor <= end`, both inside one mapping
/// (or both 0 before the first).
struct Bump {
    cursor: usize,
    end: usize,
}

static POOL: Mutex<Bump> = Mutex::new(Rank::Meta, Bump { cursor: 0, end: 0 });

/// Bytes mapped for metadata so far (a statistic).
pub static MAPPED: core::sync::atomic::AtomicU64 = core::sync::atomic::AtomicU64::new(0);

/// Returns `size` zeroed bytes aligned to `align` (a power of two up to the page size) that live
/// for the rest of the process, or null when the OS refuses memory.
#[link_section = ".text.hot.tally"]
pub fn alloc(size: usize, align: usize) -> *mut u8 {
    debug_assert!(align.is_power_of_two() && align <= pal::PAGE);
    let mut pool = POOL.lock();
    let mut start = (pool.cursor + align - 1) & !(align - 1);
    if pool.cursor == 0 || start + size > pool.end {
        let bytes = size.max(REGION).next_multiple_of(pal::PAGE);
        let region = pal::map(bytes);
        if region.is_null() {
            return core::ptr::null_mut();
        }
        // SAFETY: the region was just mapped, page-aligned, and is ours alone.
        unsafe { crate::thp::advise(region, bytes, crate::thp::Mapping::Table) };
        MAPPED.fetch_add(bytes as u64, core::sync::atomic::Ordering::Relaxed);
        pool.cursor = region as usize;
        pool.end = region as usize + bytes;
        start = pool.cursor;
    }
    pool.cursor = start + size;
    start as *mut u8
}

pub(crate) fn lock_for_fork() {
    POOL.lock_for_fork();
}

/// # Safety
/// See [`Mutex::unlock_after_fork`].
pub(crate) unsafe fn unlock_after_fork(child: bool) {
    // SAFETY: the prepare handler took the lock in this thread.
    unsafe { POOL.unlock_after_fork(child) }
}
