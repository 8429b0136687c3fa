//! The page map: from any address to the Tally metadata that owns it, in O(1).
//!
//! The address space is cut into 4 MiB *chunk windows*. A two-level radix table maps each
//! window to one word: 0 when Tally owns nothing there, the address of a [`ChunkHeader`] for a
//! chunk of slabs and page runs, or the address of a huge-block descriptor tagged with
//! [`TAG_HUGE`]. Leaves are mapped on demand; the root is a static array. `free` and
//! `malloc_usable_size` start here, so a pointer Tally never handed out is recognised instead of
//! trusted.
//!
//! `free`'s fast path asks a narrower question with one load: is the window a chunk whose
//! header is at the window's start ([`is_chunk`])? A flat byte per window answers it, 32 MiB of
//! address space in `.bss` that the kernel gives pages to only where bytes are written: one
//! 4 KiB page per 16 GiB of address space holding chunks, one or two pages in practice.
//!
//! A thread asks it less often: its [`ChunkSeen`] remembers the last chunk the byte said was
//! one, with the map's [`CHUNK_EPOCH`] then, a count of the windows that stopped being chunks.
//! While the count has not moved, no chunk went away, so a pointer into the remembered chunk
//! needs two compares instead of the byte's range check and load (9 instructions; `free`'s fast
//! path 42 → 38).
//!
//! [`ChunkHeader`]: crate::chunk::ChunkHeader

use core::ptr;
use core::sync::atomic::{AtomicPtr, AtomicU8, AtomicUsize, Ordering};

use tally_pal as pal;

/// log2 of the chunk size: the page map's window, and the size of the chunks (`chunk.rs`) and
/// the alignment of huge blocks (`huge.rs`) that it maps.
pub const CHUNK_SHIFT: u32 = 22;
/// Chunk size: 4 MiB.
pub const CHUNK: usize = 1 << CHUNK_SHIFT;
const _: () = assert!(CHUNK_SHIFT > pal::PAGE_SHIFT);

/// User-space address bits on x86-64 and AArch64 with 4-level page tables.
const ADDRESS_BITS: u32 = 47;
const LEAF_BITS: u32 = 13;
const ROOT_BITS: u32 = ADDRESS_BITS - CHUNK_SHIFT - LEAF_BITS;
const LEAF_LEN: usize = 1 << LEAF_BITS;
const ROOT_LEN: usize = 1 << ROOT_BITS;

/// Bytes mapped for page-map leaves (a statistic).
pub static LEAF_BYTES: AtomicUsize = AtomicUsize::new(0);

/// Tag bit of entries that point at a huge-block descriptor.
pub const TAG_HUGE: usize = 1;

type Leaf = [AtomicUsize; LEAF_LEN];

/// Invariant: each non-null root slot points at a zero-initialised leaf that is never freed.
static ROOT: [AtomicPtr<Leaf>; ROOT_LEN] = [const { AtomicPtr::new(ptr::null_mut()) }; ROOT_LEN];

/// Chunk windows in the address space.
const WINDOWS: usize = 1 << (ADDRESS_BITS - CHUNK_SHIFT);

/// By chunk window: 1 when the window's entry is the address of the chunk header at the
/// window's start, 0 otherwise. Invariant: set to 1 (Release) only after the header is
/// initialised, and back to 0 before the chunk is unmapped.
static CHUNKS: [AtomicU8; WINDOWS] = [const { AtomicU8::new(0) }; WINDOWS];

/// Whether `addr` lies in a chunk of Tally's whose header is at `ChunkHeader::of(addr)`, so that
/// the header may be read.
#[inline(always)]
pub fn is_chunk(addr: usize) -> bool {
    let window = addr >> CHUNK_SHIFT;
    window < WINDOWS && CHUNKS[window].load(Ordering::Acquire) != 0
}

/// Windows that stopped being chunks so far, plus 1: a window's [`CHUNKS`] byte goes from 1 to
/// 0 before this count moves, and the chunk is unmapped after it. It starts at 1 so that a
/// thread's [`ChunkSeen`] as it starts, all zero, matches no pointer (not even null, whose
/// window 0 is no chunk).
pub static CHUNK_EPOCH: AtomicUsize = AtomicUsize::new(1);

/// A thread's memory of the last chunk [`is_chunk`] confirmed, for [`ChunkSeen::is_chunk`].
///
/// Invariant: `epoch` is 0 (a thread's zeroed memory, matching no epoch), or `chunk` is the
/// start of a window whose [`CHUNKS`] byte was 1 at a moment when [`CHUNK_EPOCH`] was already
/// `epoch` (read before the byte). While the epoch is still `epoch`, no window has stopped being
/// a chunk since, so `chunk` is still one.
#[repr(C)]
pub struct ChunkSeen {
    chunk: usize,
    epoch: usize,
}

impl ChunkSeen {
    /// [`is_chunk`], through the memory: a pointer into the chunk seen last, with no chunk gone
    /// since, is one without the byte's load; any other is looked up and, if a chunk, remembered.
    /// The answer is [`is_chunk`]'s: what a window may be read for does not change (a chunk that
    /// goes away while a thread reads its header is as possible as after the byte's load, and
    /// only for a pointer that is no block: a live block keeps its chunk).
    #[inline(always)]
    pub fn is_chunk(&mut self, addr: usize) -> bool {
        let epoch = crate::hot::hot_load!(CHUNK_EPOCH);
        if addr & !(CHUNK - 1) == self.chunk && epoch == self.epoch {
            return true;
        }
        self.look_up(addr)
    }

    /// [`ChunkSeen::is_chunk`]'s miss: the byte's answer, remembered when it is yes, with the
    /// epoch read before the byte (the invariant's order; the acquiring load keeps the byte's
    /// after it).
    #[inline(always)]
    fn look_up(&mut self, addr: usize) -> bool {
        let epoch = CHUNK_EPOCH.load(Ordering::Acquire);
        if !is_chunk(addr) {
            return false;
        }
        self.chunk = addr & !(CHUNK - 1);
        self.epoch = epoch;
        true
    }
}

/// The entry for the chunk window holding `addr`: 0 if Tally owns nothing there.
#[inline(always)]
pub fn lookup(addr: usize) -> usize {
    let window = addr >> CHUNK_SHIFT;
    let root = window >> LEAF_BITS;
    if root >= ROOT_LEN {
        return 0;
    }
    let leaf = ROOT[root].load(Ordering::Acquire);
    if leaf.is_null() {
        return 0;
    }
    // SAFETY: non-null root slots point at live leaves (invariant of ROOT).
    unsafe { (*leaf)[window & (LEAF_LEN - 1)].load(Ordering::Acquire) }
}

/// Sets the entries of the `count` chunk windows starting at the one holding `addr` to `value`.
/// Returns false if a leaf could not be mapped (the entries set so far are cleared again).
#[link_section = ".text.hot.tally"]
pub fn set(addr: usize, count: usize, value: usize) -> bool {
    let first = addr >> CHUNK_SHIFT;
    for window in first..first + count {
        let Some(slot) = slot(window) else {
            for w in first..window {
                set_chunk_flag(w, false);
                if let Some(s) = slot(w) {
                    s.store(0, Ordering::Release);
                }
            }
            return false;
        };
        let is_chunk = value != 0 && value == window << CHUNK_SHIFT;
        if !is_chunk {
            set_chunk_flag(window, false);
        }
        slot.store(value, Ordering::Release);
        if is_chunk {
            set_chunk_flag(window, true);
        }
    }
    true
}

/// Sets `window`'s byte of [`CHUNKS`] (windows past the address space have none: `slot` has
/// refused them already).
fn set_chunk_flag(window: usize, chunk: bool) {
    if let Some(flag) = CHUNKS.get(window) {
        if chunk {
            flag.store(1, Ordering::Release);
        } else if flag.swap(0, Ordering::AcqRel) != 0 {
            // A chunk went away: every thread's `ChunkSeen` looks its next pointer up again.
            CHUNK_EPOCH.fetch_add(1, Ordering::Release);
        }
    }
}

fn slot(window: usize) -> Option<&'static AtomicUsize> {
    let root = window >> LEAF_BITS;
    if root >= ROOT_LEN {
        return None;
    }
    let mut leaf = ROOT[root].load(Ordering::Acquire);
    if leaf.is_null() {
        let fresh = pal::map(core::mem::size_of::<Leaf>()).cast::<Leaf>();
        if fresh.is_null() {
            return None;
        }
        match ROOT[root].compare_exchange(ptr::null_mut(), fresh, Ordering::AcqRel, Ordering::Acquire) {
            Ok(_) => {
                LEAF_BYTES.fetch_add(core::mem::size_of::<Leaf>(), Ordering::Relaxed);
                leaf = fresh
            }
            Err(existing) => {
                // SAFETY: `fresh` was mapped above and never published.
                unsafe { pal::unmap(fresh.cast(), core::mem::size_of::<Leaf>()) };
                leaf = existing;
            }
        }
    }
    // SAFETY: `leaf` is a live leaf (invariant of ROOT); fresh mappings are zeroed, which is a
    // valid array of AtomicUsize.
    Some(unsafe { &(*leaf)[window & (LEAF_LEN - 1)] })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn set_and_lookup() {
        let base = 0x5A5A_0000_0000usize;
        assert_eq!(lookup(base), 0);
        assert!(set(base, 3, 0xABC0_0000));
        assert_eq!(lookup(base), 0xABC0_0000);
        assert_eq!(lookup(base + (3 << CHUNK_SHIFT) - 1), 0xABC0_0000);
        assert_eq!(lookup(base + (3 << CHUNK_SHIFT)), 0);
        assert_eq!(lookup(base - 1), 0);
        assert!(set(base, 3, 0));
        assert_eq!(lookup(base), 0);
        assert_eq!(lookup(usize::MAX), 0);
        assert_eq!(lookup(1 << 47), 0);
    }

    #[test]
    fn only_a_header_at_the_window_start_is_a_chunk() {
        let base = 0x5A5B_0000_0000usize;
        assert!(!is_chunk(base));
        // An entry elsewhere than the window's start (a huge descriptor, tagged or not).
        assert!(set(base, 2, 0xABC0_0000));
        assert!(!is_chunk(base) && !is_chunk(base + CHUNK));
        assert!(set(base, 1, base | TAG_HUGE));
        assert!(!is_chunk(base));
        assert!(set(base, 1, base));
        assert!(is_chunk(base) && is_chunk(base + CHUNK - 1));
        assert!(!is_chunk(base + CHUNK) && !is_chunk(base - 1));
        assert!(set(base, 2, 0));
        assert!(!is_chunk(base));
        assert!(!is_chunk(0) && !is_chunk(usize::MAX) && !is_chunk(1 << 47));
    }

    #[test]
    fn a_chunk_seen_is_a_chunk_until_one_goes_away() {
        let base = 0x5A5C_0000_0000usize;
        // A thread's memory as it starts, zeroed: not even a pointer into window 0 (null) is a
        // chunk through it.
        let mut seen = ChunkSeen { chunk: 0, epoch: 0 };
        assert!(!seen.is_chunk(0) && !seen.is_chunk(64));
        assert!(
            !seen.is_chunk(base) && seen.chunk == 0,
            "nothing mapped there yet"
        );
        assert!(set(base, 1, base));
        assert!(seen.is_chunk(base + 100));
        assert_eq!(seen.chunk, base, "remembered");
        assert!(seen.is_chunk(base + CHUNK - 1));
        assert!(!seen.is_chunk(base + CHUNK) && !seen.is_chunk(base - 1));
        assert!(!seen.is_chunk(usize::MAX) && !seen.is_chunk(1 << 47));
        assert_eq!(seen.chunk, base, "a miss that is no chunk forgets nothing");
        // The chunk goes away: the memory must not answer for it any more.
        let before = CHUNK_EPOCH.load(Ordering::Relaxed);
        assert!(set(base, 1, 0));
        assert!(CHUNK_EPOCH.load(Ordering::Relaxed) > before);
        assert!(!seen.is_chunk(base + 100), "a chunk given back is no chunk");
        // Mapped again, it is looked up and remembered again.
        assert!(set(base, 1, base));
        assert!(seen.is_chunk(base + 100));
        assert!(set(base, 1, 0));
        assert!(!seen.is_chunk(base));
    }
}
