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
//! header is at the window's start ([`is_chunk`]), and of which arena ([`tag_of`])? A flat
//! byte per window answers it, 32 MiB of address space in `.bss` that the kernel gives pages to
//! only where bytes are written: one 4 KiB page per 16 GiB of address space holding chunks,
//! one or two pages in practice.
//!
//! A thread asks it less often: its memory of the chunks it found last ([`ChunkSeen`])
//! holds them with the map's [`CHUNK_EPOCH`] then, a count of the windows that stopped being
//! chunks. While the count has not moved, no chunk went away, so a pointer into a remembered
//! chunk needs two compares instead of the byte's range check and load (9 instructions; `free`'s
//! fast path 42 → 38), and with the byte's tag it knows whether the chunk is of the thread's
//! arena without the chunk header's first line (38 → 35).
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

/// By chunk window: the chunk's tag ([`chunk_tag`] of its arena, never 0) when the window's
/// entry is the address of the chunk header at the window's start, 0 otherwise. Invariant: set
/// non-zero (Release) only after the header is initialised, and back to 0 before the chunk is
/// unmapped; a window's tag changes only through 0.
static CHUNKS: [AtomicU8; WINDOWS] = [const { AtomicU8::new(0) }; WINDOWS];

/// The page map's byte for a chunk of arena `arena`: `arena + 1`, the last two arenas (254
/// and 255) sharing 255. `free` tells the thread's own blocks from other threads' by it
/// without reading the chunk's header; for the two arenas that share it, that is a hint (a
/// block of the other one is freed as the thread's own, into its bin's top slot, and goes home
/// with a flush like any block of another arena).
pub const fn chunk_tag(arena: u32) -> u8 {
    if arena >= 254 {
        255
    } else {
        arena as u8 + 1
    }
}

/// The tag of the chunk `addr` lies in ([`chunk_tag`] of its arena), or 0 if it lies in no
/// chunk of Tally's. A chunk's header is at `ChunkHeader::of(addr)` and may be read.
#[inline(always)]
pub fn tag_of(addr: usize) -> u8 {
    let window = addr >> CHUNK_SHIFT;
    if window < WINDOWS {
        CHUNKS[window].load(Ordering::Acquire)
    } else {
        0
    }
}

/// Whether `addr` lies in a chunk of Tally's whose header is at `ChunkHeader::of(addr)`, so that
/// the header may be read.
#[inline(always)]
pub fn is_chunk(addr: usize) -> bool {
    tag_of(addr) != 0
}

/// Windows that stopped being chunks so far, plus 1: a window's [`CHUNKS`] byte goes from its
/// tag to 0 before this count moves, and the chunk is unmapped after it. It starts at 1 so that a
/// thread's memory of chunks as it starts ([`ChunkSeen`]), all zero, matches no pointer.
pub static CHUNK_EPOCH: AtomicUsize = AtomicUsize::new(1);

/// No chunk's start: what [`ChunkSeen`] holds in place of a chunk it forgot (no pointer
/// rounded down to a chunk is 1).
const NO_CHUNK: usize = 1;

/// What [`ChunkSeen::find`] says of a pointer.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum Seen {
    /// In a chunk of the thread's arena.
    Mine,
    /// In a chunk of another arena.
    Other,
    /// In no chunk (null, a huge or guarded block, memory Tally did not map).
    NoChunk,
}

/// A thread's memory of the chunks it found last, so that `free` and `realloc` need not ask the
/// page map ([`tag_of`]) whether a pointer is in a chunk, and of which arena: `mine`,
/// a chunk of the thread's arena, and `other`, one of another arena (a block another thread
/// allocated), with the free mark's key. `free` of a block of a chunk it remembers reads nothing
/// of the chunk's header but the page's info word; neither does one it looks up (the page
/// map's byte is the chunk's arena's tag).
///
/// Invariant: `epoch` is 0 (a thread's zeroed memory, matching no epoch, [`CHUNK_EPOCH`]
/// starts at 1), or `key` is the free mark's key (`freed::key`) and each of `mine` and `other`
/// is [`NO_CHUNK`] or the start of a window whose page-map byte was not 0 at a moment when
/// [`CHUNK_EPOCH`] was already `epoch` (read before the byte). While the epoch is still
/// `epoch`, no window has stopped being a chunk since, so each is still one, with the same tag
/// (a window's byte changes only through 0, which moves the epoch). `mine`'s tag was the
/// thread's arena's when it was remembered; the thread forgets everything when its arena
/// changes ([`ChunkSeen::forget`]). That last part is a hint, not a safety condition: whether a
/// block is the thread's only chooses where `free` puts it in the cache (`free.rs`), and a flush
/// sends every block to its chunk's own arena.
#[repr(C)]
pub struct ChunkSeen {
    mine: usize,
    epoch: usize,
    key: usize,
    other: usize,
}

impl ChunkSeen {
    /// Where `addr` lies: in `mine` or `other` with no chunk gone since, without the page map's
    /// load; else as the page map says, the chunk then remembered by whether its tag is the
    /// one at `tag`, the thread's arena's ([`chunk_tag`]; 0 while the thread has
    /// none). (A pointer, read only on that miss: a value would be loaded on every call.)
    /// What a window may be read for is what [`is_chunk`] allows: a chunk that goes away while
    /// a thread reads its header is as possible as after the byte's load, and only for a
    /// pointer that is no block (a live block keeps its chunk).
    ///
    /// # Safety
    /// `tag` must be valid to read.
    #[inline(always)]
    pub unsafe fn find(&mut self, addr: usize, tag: *const u8) -> Seen {
        let epoch = crate::hot::hot_load!(CHUNK_EPOCH);
        let chunk = addr & !(CHUNK - 1);
        if epoch == self.epoch {
            if chunk == self.mine {
                return Seen::Mine;
            }
            if chunk == self.other {
                return Seen::Other;
            }
        }
        // SAFETY: per the contract.
        self.look_up(addr, unsafe { *tag })
    }

    /// The free mark's key, once [`ChunkSeen::find`] found a chunk.
    #[inline(always)]
    pub fn key(&self) -> usize {
        self.key
    }

    /// [`ChunkSeen::find`]'s miss: the page map's answer, remembered when it is a chunk, with
    /// the epoch read before the byte (the invariant's order; the acquiring load keeps the
    /// byte's after it). A new epoch forgets both chunks first.
    #[inline(always)]
    fn look_up(&mut self, addr: usize, tag: u8) -> Seen {
        let epoch = CHUNK_EPOCH.load(Ordering::Acquire);
        let found = tag_of(addr);
        if found == 0 {
            return Seen::NoChunk;
        }
        if epoch != self.epoch {
            self.mine = NO_CHUNK;
            self.other = NO_CHUNK;
            // A chunk exists, so the key is drawn.
            self.key = crate::freed::drawn_key();
            self.epoch = epoch;
        }
        let chunk = addr & !(CHUNK - 1);
        if found == tag {
            self.mine = chunk;
            Seen::Mine
        } else {
            self.other = chunk;
            Seen::Other
        }
    }

    /// Forgets both chunks: the thread's arena changed, so `mine` may be another's now.
    pub fn forget(&mut self) {
        self.epoch = 0;
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

/// Sets the entries of the `count` chunk windows starting at the one holding `addr` to `value`,
/// which is not a chunk's header (a huge block's descriptor, tagged, or 0 to clear them).
/// Returns false if a leaf could not be mapped (the entries set so far are cleared again).
#[inline(always)]
pub fn set(addr: usize, count: usize, value: usize) -> bool {
    set_tagged(addr, count, value, 0)
}

/// Makes the window at `base` the chunk whose header is there, of the arena whose
/// [`chunk_tag`] is `tag`. Returns false if a leaf could not be mapped.
#[inline(always)]
pub fn set_chunk(base: usize, tag: u8) -> bool {
    debug_assert!(tag != 0 && base & (CHUNK - 1) == 0);
    set_tagged(base, 1, base, tag)
}

/// [`set`], a window whose entry is its own start (a chunk's) given `tag` in [`CHUNKS`].
#[inline(never)]
#[link_section = ".text.hot.tally"]
fn set_tagged(addr: usize, count: usize, value: usize, tag: u8) -> bool {
    let first = addr >> CHUNK_SHIFT;
    for window in first..first + count {
        let Some(slot) = slot(window) else {
            for w in first..window {
                set_chunk_flag(w, 0);
                if let Some(s) = slot(w) {
                    s.store(0, Ordering::Release);
                }
            }
            return false;
        };
        let is_chunk = value != 0 && value == window << CHUNK_SHIFT;
        debug_assert!(is_chunk == (tag != 0), "a chunk's entry, and only one, has a tag");
        if !is_chunk {
            set_chunk_flag(window, 0);
        }
        slot.store(value, Ordering::Release);
        if is_chunk {
            set_chunk_flag(window, tag);
        }
    }
    true
}

/// Sets `window`'s byte of [`CHUNKS`] to `tag` (windows past the address space have none:
/// `slot` has refused them already).
fn set_chunk_flag(window: usize, tag: u8) {
    if let Some(flag) = CHUNKS.get(window) {
        if tag != 0 {
            flag.store(tag, Ordering::Release);
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
        assert!(set_chunk(base, chunk_tag(6)));
        assert!(is_chunk(base) && is_chunk(base + CHUNK - 1));
        assert!(!is_chunk(base + CHUNK) && !is_chunk(base - 1));
        assert_eq!(
            (tag_of(base + 5), tag_of(base + CHUNK)),
            (7, 0),
            "the arena's tag"
        );
        assert!(set(base, 2, 0));
        assert!(!is_chunk(base) && tag_of(base) == 0);
        assert!(!is_chunk(0) && !is_chunk(usize::MAX) && !is_chunk(1 << 47));
    }

    #[test]
    fn every_arena_has_a_tag_and_only_the_last_two_share_one() {
        let tags: Vec<u8> = (0..crate::options::MAX_ARENAS as u32).map(chunk_tag).collect();
        assert!(tags.iter().all(|&t| t != 0), "0 is no chunk");
        assert_eq!((tags[0], tags[253], tags[254], tags[255]), (1, 254, 255, 255));
        let mut distinct = tags.clone();
        distinct.dedup();
        assert_eq!(distinct.len(), tags.len() - 1);
    }

    #[test]
    fn a_chunk_seen_is_the_threads_or_anothers_until_one_goes_away() {
        // Two windows made chunks of arenas 7 and 9 in the page map alone: `find` reads no
        // header, so none is mapped.
        let a = 0x5A5D_0000_0000usize;
        let b = a + 4 * CHUNK;
        let (mine, other) = (chunk_tag(7), chunk_tag(9));
        // A thread's memory as it starts, zeroed: not even a pointer into window 0 (null) is a
        // chunk through it.
        let mut seen = ChunkSeen {
            mine: 0,
            epoch: 0,
            key: 0,
            other: 0,
        };
        // SAFETY: every `find` below is given a valid byte (`&mine`, `&other`, `&none`).
        unsafe {
            assert_eq!(seen.find(0, &mine), Seen::NoChunk);
            assert_eq!(seen.find(64, &mine), Seen::NoChunk);
            assert_eq!(
                seen.find(a + 100, &mine),
                Seen::NoChunk,
                "nothing in the page map yet"
            );
            assert!(set_chunk(a, mine) && set_chunk(b, other));

            assert_eq!(seen.find(a + 100, &mine), Seen::Mine, "of the thread's arena");
            assert_eq!(seen.key(), crate::freed::key());
            assert_eq!(seen.find(b + 8, &mine), Seen::Other, "another arena's");
            assert_eq!(seen.find(a + CHUNK - 1, &mine), Seen::Mine, "both kept");
            assert_eq!(seen.find(a + CHUNK, &mine), Seen::NoChunk);
            assert_eq!(seen.find(a - 1, &mine), Seen::NoChunk);
            assert_eq!(seen.find(usize::MAX, &mine), Seen::NoChunk);
            assert_eq!(seen.find(1 << 47, &mine), Seen::NoChunk);

            // Remembered chunks are answered from memory, whatever tag the thread has now.
            let none = 0u8;
            assert_eq!(seen.find(a + 8, &none), Seen::Mine);
            assert_eq!(seen.find(b + 8, &other), Seen::Other);
            // Until the thread's arena changes and it forgets: then the page map's tag counts.
            seen.forget();
            assert_eq!(seen.find(b + 8, &other), Seen::Mine);
            assert_eq!(seen.find(a + 8, &other), Seen::Other);
            assert_eq!(seen.find(b + 16, &other), Seen::Mine, "one chunk of each kept");

            // A chunk goes away: the memory must not answer for any chunk any more.
            let before = CHUNK_EPOCH.load(Ordering::Relaxed);
            assert!(set(b, 1, 0));
            assert!(CHUNK_EPOCH.load(Ordering::Relaxed) > before);
            assert_eq!(
                seen.find(b + 8, &other),
                Seen::NoChunk,
                "a chunk given back is none"
            );
            assert_eq!(seen.find(a + 8, &mine), Seen::Mine, "looked up again, by the tag");
            assert!(set(a, 1, 0));
            assert_eq!(seen.find(a + 8, &mine), Seen::NoChunk);
        }
    }
}
