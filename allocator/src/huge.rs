//! Huge blocks: requests above the largest class get a mapping of their own, aligned to a chunk
//! and registered in the page map, and are unmapped on free. `realloc` resizes them with
//! `mremap`, which moves page tables instead of copying bytes.
//!
//! Each huge block has a [`HugeBlock`] descriptor from the metadata pool; the page-map entries of
//! the chunk windows it covers point at the descriptor, tagged with [`TAG_HUGE`].

use core::ptr;
use core::sync::atomic::{AtomicU64, Ordering};

use crate::chunk::{CHUNK, CHUNK_SHIFT};
use crate::meta;
use crate::pagemap::{self, TAG_HUGE};
use crate::pal::{self, PAGE};
use crate::sync::Mutex;

/// Huge blocks mapped so far (a statistic).
pub static HUGE_ALLOCS: AtomicU64 = AtomicU64::new(0);
/// Huge reallocations served by `mremap` without copying (a statistic).
pub static HUGE_REMAPS: AtomicU64 = AtomicU64::new(0);
/// Huge blocks live now.
pub static HUGE_LIVE: AtomicU64 = AtomicU64::new(0);
/// Bytes mapped for live huge blocks now.
pub static HUGE_BYTES: AtomicU64 = AtomicU64::new(0);

/// Describes one huge block. Invariant: `base` is chunk-aligned, `mapped` is a page multiple,
/// and the page map sends every chunk window of `[base, base + mapped)` to this descriptor.
pub struct HugeBlock {
    /// First byte, as returned to the user.
    pub base: usize,
    /// Bytes mapped (the usable size).
    pub mapped: usize,
    /// Whether the profiler sampled this block.
    pub sampled: bool,
    next_free: *mut HugeBlock,
}

struct FreeDescriptors(*mut HugeBlock);
// SAFETY: the descriptors live in the metadata pool forever; the list is only used under its lock.
unsafe impl Send for FreeDescriptors {}

static FREE_DESCRIPTORS: Mutex<FreeDescriptors> = Mutex::new(FreeDescriptors(ptr::null_mut()));

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

/// Maps a huge block of at least `size` bytes aligned to `align` (at most a power of two).
/// Returns null when out of memory.
pub fn alloc(size: usize, align: usize) -> *mut u8 {
    let Some(mapped) = size.checked_next_multiple_of(PAGE) else {
        return ptr::null_mut();
    };
    let d = new_descriptor();
    if d.is_null() {
        return ptr::null_mut();
    }
    let base = pal::map_aligned(mapped, align.max(CHUNK));
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
    HUGE_BYTES.fetch_add(mapped as u64, Ordering::Relaxed);
    base
}

/// Unmaps the huge block `d`.
///
/// # Safety
/// `d` must be the live descriptor of a block nobody uses any more.
pub unsafe fn free(d: *mut HugeBlock) {
    // SAFETY: per the contract.
    let (base, mapped) = unsafe { ((*d).base, (*d).mapped) };
    pagemap::set(base, windows(mapped), 0);
    // SAFETY: the block is dead and no longer reachable through the page map.
    unsafe { pal::unmap(base as *mut u8, mapped) };
    release_descriptor(d);
    HUGE_LIVE.fetch_sub(1, Ordering::Relaxed);
    HUGE_BYTES.fetch_sub(mapped as u64, Ordering::Relaxed);
}

/// Resizes huge block `d` to hold `size` bytes (more than the largest class) without copying:
/// shrinks in place, grows in place when the address space after it is free, else moves its
/// pages to a new chunk-aligned address with `mremap`. Returns the block's new address, or null
/// (the block unchanged) when the kernel refuses.
///
/// # Safety
/// `d` must be the live descriptor of a block owned by the caller.
pub unsafe fn resize(d: *mut HugeBlock, size: usize) -> *mut u8 {
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
        let extra_windows = windows(new_mapped) - windows(mapped);
        let first_extra = base + windows(mapped) * CHUNK;
        if pal::remap_in_place(base as *mut u8, mapped, new_mapped) {
            if !pagemap::set(first_extra, extra_windows, d as usize | TAG_HUGE) {
                pal::remap_in_place(base as *mut u8, new_mapped, mapped);
                return ptr::null_mut();
            }
            (*d).mapped = new_mapped;
            HUGE_REMAPS.fetch_add(1, Ordering::Relaxed);
            HUGE_BYTES.fetch_add((new_mapped - mapped) as u64, Ordering::Relaxed);
            return base as *mut u8;
        }
        let target = pal::map_aligned(new_mapped, CHUNK);
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
        HUGE_BYTES.fetch_add((new_mapped - mapped) as u64, Ordering::Relaxed);
        target
    }
}

pub(crate) fn lock_for_fork() {
    FREE_DESCRIPTORS.lock_for_fork();
}

/// # Safety
/// The prepare handler must have taken the lock in this thread.
pub(crate) unsafe fn unlock_after_fork(child: bool) {
    // SAFETY: per the contract.
    unsafe {
        if child {
            FREE_DESCRIPTORS.reset_in_child()
        } else {
            FREE_DESCRIPTORS.unlock_after_fork()
        }
    }
}

const _: () = assert!(CHUNK == 1 << CHUNK_SHIFT);
