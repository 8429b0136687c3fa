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
//! A thread asks it less often: its memory of the chunks it found last ([`ChunkSeen`]). A
//! chunk is unmapped only after every thread forgot it (the protocol at [`ChunkSeen`]), so a
//! pointer into a remembered chunk needs two compares instead of the byte's range check and
//! load (9 instructions; `free`'s fast path 42 → 38), and with the byte's tag it knows whether
//! the chunk is of the thread's arena without the chunk header's first line (38 → 35). Before
//! that protocol, the memory held a count of the windows that had stopped being chunks as well,
//! which `free` compared with the map's (35 → 33: three instructions fewer, one more because
//! another thread may now write the memory, so its words are atomics, whose loads the compiler
//! does not fold into the compare).
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
/// A chunk is held as its last address, `chunk | (CHUNK - 1)`, and a pointer compared as
/// `addr | (CHUNK - 1)`: never 0, so a thread's memory as it starts, all zero, matches no
/// pointer, null included, and the compare needs no other test.
///
/// Invariant: `mine` and `other` are each 0 or the last address of a window whose page-map
/// byte is not 0 (a chunk, with the same tag as when it was remembered: a byte changes only
/// through 0). That holds because a chunk is unmapped, and its window free to become anything,
/// only by this protocol:
/// 1. a purge that finds it wholly free sets its byte to 0 (`chunk::retire`, under its page
///    heap's lock; the chunk waits, mapped, on a stack);
/// 2. every thread passes a memory barrier (`pal::thread::barrier_all_threads`);
/// 3. every listed memory forgets both chunks ([`ChunkSeen::forget`]);
/// 4. only then is it unmapped (steps 2-4: `decay::unmap_retired`, out of every lock).
///
/// A memory remembers only while `listed` is not 0: while it is in the registry of memories
/// that step 3 walks (`tcache.rs`'s attached caches, whose owners' memories these are). It
/// stores the chunk, then reads the byte again (a compiler fence between), and forgets the
/// chunk if the byte is 0 now. A store before the thread's barrier is visible before step 3,
/// which overwrites it; one after it is followed by a read that sees step 1's 0.
///
/// `mine`'s tag was the thread's arena's when it was remembered; the thread forgets everything
/// when its arena changes ([`ChunkSeen::forget`]). That part is a hint, not a safety condition:
/// whether a block is the thread's only chooses where `free` puts it in the cache (`free.rs`),
/// and a flush sends every block to its chunk's own arena. `key` is the free mark's key
/// (`freed::key`) whenever `mine` or `other` is not 0, and after any look-up that found a
/// chunk. Only the owning thread writes `listed`, `key` and a chunk into `mine` or `other`;
/// another thread only forgets (step 3), hence atomics (plain moves at `Relaxed`).
#[repr(C)]
pub struct ChunkSeen {
    mine: AtomicUsize,
    listed: AtomicUsize,
    key: AtomicUsize,
    other: AtomicUsize,
}

impl ChunkSeen {
    /// Where `addr` lies: in `mine` or `other`, without the page map's load; else as the page
    /// map says, the chunk then remembered by whether its tag is the one at `tag`, the
    /// thread's arena's ([`chunk_tag`]; 0 while the thread has none). (A pointer, read only on
    /// that miss: a value would be loaded on every call.) What a window may be read for is what
    /// [`is_chunk`] allows: a chunk that goes away while a thread reads its header is as
    /// possible as after the byte's load, and only for a pointer that is no block (a live
    /// block keeps its chunk).
    ///
    /// # Safety
    /// `tag` must be valid to read.
    #[inline(always)]
    pub unsafe fn find(&self, addr: usize, tag: *const u8) -> Seen {
        let last = addr | (CHUNK - 1);
        if last == self.mine.load(Ordering::Relaxed) {
            return Seen::Mine;
        }
        if last == self.other.load(Ordering::Relaxed) {
            return Seen::Other;
        }
        // SAFETY: per the contract.
        self.look_up(addr, unsafe { *tag })
    }

    /// The free mark's key, once [`ChunkSeen::find`] found a chunk.
    #[inline(always)]
    pub fn key(&self) -> usize {
        self.key.load(Ordering::Relaxed)
    }

    /// [`ChunkSeen::find`]'s miss: the page map's answer, remembered when it is a chunk and
    /// the memory is listed, by the invariant's store-then-read.
    #[inline(always)]
    fn look_up(&self, addr: usize, tag: u8) -> Seen {
        let found = tag_of(addr);
        if found == 0 {
            return Seen::NoChunk;
        }
        let mine = found == tag;
        if self.listed.load(Ordering::Relaxed) != 0 {
            keep(if mine { &self.mine } else { &self.other }, addr, tag_of);
        }
        // A chunk exists, so the key is drawn.
        self.key.store(crate::freed::drawn_key(), Ordering::Relaxed);
        if mine {
            Seen::Mine
        } else {
            Seen::Other
        }
    }

    /// Forgets both chunks: the thread's arena changed, so `mine` may be another's now, or a
    /// chunk is about to be unmapped (the invariant's step 3, from any thread).
    pub fn forget(&self) {
        self.mine.store(0, Ordering::Relaxed);
        self.other.store(0, Ordering::Relaxed);
    }

    /// Lets the memory remember chunks from now on (`on`), or no more; forgets both either
    /// way. The owner only, and only while the registry the invariant's step 3 walks lists it
    /// (`on`) or no longer does (not `on`), under that registry's lock.
    pub fn set_listed(&self, on: bool) {
        self.listed.store(on as usize, Ordering::Relaxed);
        self.forget();
    }
}

/// Remembers the chunk holding `addr` in `slot` unless its byte, read again by `byte_again`
/// after the store ([`tag_of`]; a test's stand-in), is 0 by then: [`ChunkSeen`]'s
/// store-then-read, the threads' half of the unmapping's barrier (a compiler fence: the other
/// half, `pal::thread::barrier_all_threads`, is a full barrier in every thread).
#[inline(always)]
fn keep(slot: &AtomicUsize, addr: usize, byte_again: impl FnOnce(usize) -> u8) {
    slot.store(addr | (CHUNK - 1), Ordering::Relaxed);
    core::sync::atomic::compiler_fence(Ordering::SeqCst);
    if byte_again(addr) == 0 {
        slot.store(0, Ordering::Relaxed);
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
        } else {
            flag.store(0, Ordering::Release);
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
        // SAFETY: the leaf was just mapped, page-aligned, and is ours alone.
        unsafe {
            crate::thp::advise(
                fresh.cast(),
                core::mem::size_of::<Leaf>(),
                crate::thp::Mapping::Table,
            )
        };
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
    fn a_chunk_seen_is_the_threads_or_anothers_until_it_forgets() {
        // Two windows made chunks of arenas 7 and 9 in the page map alone: `find` reads no
        // header, so none is mapped.
        let a = 0x5A5D_0000_0000usize;
        let b = a + 4 * CHUNK;
        let (mine, other) = (chunk_tag(7), chunk_tag(9));
        // A thread's memory as it starts, zeroed: not even a pointer into window 0 (null) is a
        // chunk through it.
        let seen = ChunkSeen {
            mine: AtomicUsize::new(0),
            listed: AtomicUsize::new(0),
            key: AtomicUsize::new(0),
            other: AtomicUsize::new(0),
        };
        let remembered = |s: &ChunkSeen| (s.mine.load(Ordering::Relaxed), s.other.load(Ordering::Relaxed));
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

            // Not listed: answered by the page map, remembered nowhere.
            assert_eq!(seen.find(a + 100, &mine), Seen::Mine, "of the thread's arena");
            assert_eq!(seen.key(), crate::freed::key());
            assert_eq!(seen.find(b + 8, &mine), Seen::Other, "another arena's");
            assert_eq!(remembered(&seen), (0, 0), "an unlisted memory keeps nothing");

            seen.set_listed(true);
            assert_eq!(seen.find(a + 100, &mine), Seen::Mine);
            assert_eq!(seen.find(b + 8, &mine), Seen::Other);
            assert_eq!(remembered(&seen), (a + CHUNK - 1, b + CHUNK - 1));
            assert_eq!(seen.find(a + CHUNK - 1, &mine), Seen::Mine, "both kept");
            assert_eq!(seen.find(a + CHUNK, &mine), Seen::NoChunk);
            assert_eq!(seen.find(a - 1, &mine), Seen::NoChunk);
            assert_eq!(seen.find(0, &mine), Seen::NoChunk);
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

            // A chunk goes away by the unmapping's protocol: the byte first, then the memory
            // forgets; the page map answers from then on.
            assert!(set(b, 1, 0));
            seen.forget();
            assert_eq!(
                seen.find(b + 8, &other),
                Seen::NoChunk,
                "a chunk given back is none"
            );
            assert_eq!(seen.find(a + 8, &mine), Seen::Mine, "looked up again, by the tag");
            assert!(set(a, 1, 0));
            seen.set_listed(false);
            assert_eq!(remembered(&seen), (0, 0), "unlisting forgets");
            assert_eq!(seen.find(a + 8, &mine), Seen::NoChunk);
        }
    }

    #[test]
    fn a_chunk_whose_byte_is_gone_after_the_store_is_not_kept() {
        // `keep`'s second read: the byte as step 1 of the unmapping left it after the first
        // read found the chunk.
        let slot = AtomicUsize::new(0);
        let a = 0x5A6D_0000_0000usize;
        keep(&slot, a + 8, |_| chunk_tag(3));
        assert_eq!(slot.load(Ordering::Relaxed), a + CHUNK - 1, "still a chunk: kept");
        keep(&slot, a + 8, |_| 0);
        assert_eq!(slot.load(Ordering::Relaxed), 0, "gone meanwhile: not kept");
    }

    #[test]
    fn a_thread_looking_chunks_up_keeps_none_the_unmapping_protocol_took_away() {
        // One thread looks a window up over and over while this one takes the window away by
        // the protocol (byte, barrier, forget, then `gone`) and gives it back (`gone` cleared
        // first), many times. Whenever the finder is between look-ups and sees `gone`, its
        // memory must not hold the window. Without `keep`'s second read, a finder that read the
        // byte before step 1 and stored after step 3 would keep it.
        use std::sync::atomic::AtomicBool;
        use std::sync::Arc;
        let a = 0x5A7D_0000_0000usize;
        let tag = chunk_tag(5);
        let seen = Arc::new(ChunkSeen {
            mine: AtomicUsize::new(0),
            listed: AtomicUsize::new(1),
            key: AtomicUsize::new(0),
            other: AtomicUsize::new(0),
        });
        let (stop, gone) = (Arc::new(AtomicBool::new(false)), Arc::new(AtomicBool::new(true)));
        let finder = {
            let (seen, stop, gone) = (seen.clone(), stop.clone(), gone.clone());
            std::thread::spawn(move || {
                let (mut found, mut stale) = (0u64, 0u64);
                while !stop.load(Ordering::Relaxed) {
                    // `look_up`'s steps, with the time between the byte's first read and the
                    // store widened (a thread preempted there), so that the race happens.
                    if tag_of(a + 64) == tag {
                        for _ in 0..found % 97 {
                            core::hint::spin_loop();
                        }
                        keep(&seen.mine, a + 64, tag_of);
                        found += 1;
                    }
                    if gone.load(Ordering::Acquire) && seen.mine.load(Ordering::Relaxed) != 0 {
                        stale += 1;
                    }
                }
                (found, stale)
            })
        };
        for _ in 0..20_000 {
            gone.store(false, Ordering::Release);
            assert!(set_chunk(a, tag));
            for _ in 0..100 {
                core::hint::spin_loop();
            }
            assert!(set(a, 1, 0));
            assert!(pal::thread::barrier_all_threads());
            seen.forget();
            gone.store(true, Ordering::Release);
            for _ in 0..100 {
                core::hint::spin_loop();
            }
        }
        stop.store(true, Ordering::Relaxed);
        let (found, stale) = finder.join().unwrap();
        assert!(found > 0, "the finder found the chunk while it was one");
        assert_eq!(stale, 0, "the window was remembered after it was taken away");
    }
}
