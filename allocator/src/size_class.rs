//! All size-class math. Nothing else in Tally computes a class.
//!
//! # Spacing
//! Requests are rounded up to a *size class*. The first class is 8 bytes (an 8-byte object
//! cannot need 16-byte alignment), then classes grow by the 16-byte quantum up to 128 bytes
//! (16, 32, ..., 128). Past 128 bytes every doubling `(2^k, 2^(k+1)]` is cut into four classes
//! spaced `2^(k-2)` apart: 160, 192, 224, 256, 320, 384, ... A request just above a class is
//! rounded up by less than one spacing, so the waste is under `2^(k-2) / 2^k` = 25% of the
//! request, and about 12% on average.
//!
//! The doubling from 512 bytes to 1 KiB has a fifth class, 576 bytes, below 640: a leaf node of
//! a Rust `BTreeMap` whose keys and values are 24 bytes (`String`, `Vec<u8>`) is 544 bytes, and
//! at 640 a map of a million entries built in order held 9 MiB of padding (Criterion's
//! `btree_strings`: 167 MiB peak RSS, 158 with the class; `tests/btree_nodes.rs`). Its
//! internal nodes are 640 bytes.
//!
//! The four doublings from 1 KiB to 16 KiB are cut into eight classes each (1152, 1280, ...,
//! 4096, 4608, 5120, ..., 15360, 16384): at most 12.5% waste where it costs the most bytes per
//! block among the slab classes. Buffers of a page plus a header are common (SQLite's page cache
//! allocates 4 KiB pages plus about 200 bytes: 5120 bytes with four classes per doubling, 4608
//! with eight; its peak RSS fell from 162 to 151 MiB).
//!
//! Every class from 16 bytes up is a multiple of 16, and every class from 16 KiB up is a
//! multiple of the page, which is what makes alignment cheap (see [`class_for_aligned`]).
//!
//! # Kinds
//! - *Small* classes (8 B ..= 15 KiB) are carved out of slabs: page runs holding objects of
//!   one class. Each class has a slab size, chosen to waste little of the run.
//! - *Large* classes (16 KiB ..= 2 MiB) are served as page runs of exactly the class size.
//! - Anything bigger is *huge*: a direct mapping of the request rounded up to pages.
//!
//! Lookups use tables; each table has a `_compute` twin that the tests check it against.

use tally_pal::{PAGE, PAGE_SHIFT};

/// Largest small class: 15 KiB.
pub const SMALL_MAX: usize = 15 * 1024;
/// Largest large class: 2 MiB. Requests above it are huge.
pub const LARGE_MAX: usize = 2 * 1024 * 1024;
/// Number of small classes.
pub const NSMALL: usize = 53;
/// Number of classes (small and large).
pub const NCLASSES: usize = 82;
/// Largest class kept in thread caches (jemalloc's default `tcache_max`): 32 KiB.
pub const TCACHE_MAX: usize = 32 * 1024;
/// Number of classes kept in thread caches: all small ones and the large ones up to
/// [`TCACHE_MAX`].
pub const NCACHED: usize = 58;
/// Most objects a slab holds; the slab bitmap is sized for it.
pub const SLAB_MAX_OBJS: usize = 512;
/// Longest slab, in pages.
pub const SLAB_MAX_PAGES: usize = 16;

const QUANTUM: usize = 16;
const QUANTUM_MAX: usize = 128;
/// Classes per doubling above [`QUANTUM_MAX`], outside the fine doublings.
const GROUP: usize = 4;
/// Classes per doubling in the fine doublings, `(1 KiB, 16 KiB]`.
const FINE_GROUP: usize = 8;
/// The fine doublings, numbered from 0 for `(128, 256]`.
const FINE_FIRST: usize = 3;
const FINE_LAST: usize = 6;
/// Index of the first class above `QUANTUM_MAX` (8, then 16..=128 by 16).
const FIRST_GROUPED: usize = 1 + QUANTUM_MAX / QUANTUM;

const _: () = assert!(QUANTUM_MAX << FINE_FIRST == 1024 && QUANTUM_MAX << FINE_LAST == 8192);
const _: () = assert!(size_compute(NSMALL - 1) == SMALL_MAX);
const _: () = assert!(size_compute(NSMALL) == SMALL_MAX + 1024);
const _: () = assert!(size_compute(NCLASSES - 1) == LARGE_MAX);
const _: () = assert!(class_compute(LARGE_MAX).0 as usize == NCLASSES - 1);
const _: () = assert!(size_compute(NCACHED - 1) == TCACHE_MAX);
const _: () = assert!(NCLASSES < 0xF0, "class numbers must leave room for page markers");
const _: () = assert!(size_compute(NSMALL) % PAGE == 0);

/// A size-class index: `0..NCLASSES`. Classes below [`NSMALL`] are small.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct SizeClass(pub u8);

impl SizeClass {
    /// The class whose offset into per-class tables is `at` ([`CLASS_STRIDE`]).
    #[inline(always)]
    pub const fn at(at: usize) -> SizeClass {
        SizeClass((at / CLASS_STRIDE) as u8)
    }

    /// The class's offset into per-class tables ([`CLASS_STRIDE`]).
    #[inline(always)]
    pub const fn offset(self) -> usize {
        self.0 as usize * CLASS_STRIDE
    }

    /// The class's index into per-class tables.
    #[inline(always)]
    pub const fn index(self) -> usize {
        self.0 as usize
    }

    /// Whether blocks of this class live in slabs.
    #[inline(always)]
    pub const fn is_small(self) -> bool {
        (self.0 as usize) < NSMALL
    }

    /// The class's size in bytes (what `malloc_usable_size` reports).
    #[inline(always)]
    pub fn size(self) -> usize {
        class_sizes()[self.0 as usize] as usize
    }

    /// Pages in one slab (small) or one block (large) of this class.
    #[inline]
    pub fn pages(self) -> usize {
        if self.is_small() {
            slab_pages()[self.0 as usize] as usize
        } else {
            self.size() >> PAGE_SHIFT
        }
    }

    /// Objects in one slab of a small class.
    #[inline(always)]
    pub fn slab_objects(self) -> usize {
        slab_objects()[self.0 as usize] as usize
    }
}

/// What `free`'s fast path needs to tell whether an offset into a slab is one of its blocks,
/// with one multiply and one compare: `offset * mul` (modulo 2^64) is below `below` exactly
/// when the offset is `index * size` with `index < objects`.
///
/// `mul` is `floor(2^64 / size) + 1`, so `mul * size = 2^64 + e` with `1 <= e <= size`. For an
/// offset `k * size` the product is `k * e` modulo 2^64: below `below = (objects - 1) * e + 1`
/// exactly when `k < objects`. For `k * size + r` with `0 < r < size` it is `k * e + r * mul`,
/// which does not wrap and is at least `mul`, far above `below`, as long as the offset and the
/// size are below 2^32 and 2^16 (the divisibility test of Lemire, Kaser and Kurz, "Faster
/// remainder by direct computation", 2019). The same `mul` gives the quotient as the high half
/// of the 128-bit product ([`SlotCheck::quotient`]).
///
/// Every class byte a page's info word can hold has an entry: a large class the thread caches
/// keep has one object (its run's start); other large classes and page markers have `below` 0,
/// so no offset passes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(C, align(32))] // CLASS_STRIDE
pub struct SlotCheck {
    /// `floor(2^64 / size) + 1` (0 where no offset passes).
    pub mul: u64,
    /// One more than the product of the last block's offset (0 where no offset passes).
    pub below: u64,
}

/// Offsets and sizes the check is exact for (see [`SlotCheck`]): a chunk's bytes are below the
/// first (asserted where the offsets are made, `block.rs`), the thread caches' largest class
/// below the second.
pub const SLOT_CHECK_MAX_OFFSET: usize = 1 << 32;
const SLOT_CHECK_MAX_SIZE: usize = 1 << 16;
const _: () = assert!(core::mem::size_of::<SlotCheck>() == CLASS_STRIDE);

impl SlotCheck {
    /// Whether a block starts `offset` bytes into a slab (or a cached large class's run).
    #[inline(always)]
    pub fn holds(&self, offset: usize) -> bool {
        (offset as u64).wrapping_mul(self.mul) < self.below
    }

    /// `offset / size` for an offset into a slab of the class.
    #[inline(always)]
    pub fn quotient(&self, offset: usize) -> usize {
        ((offset as u128 * self.mul as u128) >> 64) as usize
    }

    /// The entry for the class byte `class` of a page's info word.
    #[inline(always)]
    pub fn of(class: u8) -> &'static SlotCheck {
        &slot_checks()[class as usize]
    }

    /// The entry `at` bytes into the table: a class byte times the entry's size.
    ///
    /// # Safety
    /// `at` must be below 256 entries' bytes and a multiple of the entry's size.
    #[inline(always)]
    pub unsafe fn at(at: usize) -> &'static SlotCheck {
        debug_assert!(
            at < core::mem::size_of_val(&SLOT_CHECK) && at % core::mem::size_of::<SlotCheck>() == 0
        );
        // SAFETY: per the contract, an entry of the table.
        unsafe { &*slot_checks().as_ptr().cast::<u8>().add(at).cast::<SlotCheck>() }
    }
}

/// The [`SlotCheck`] of class byte `class`, computed. A large class the thread caches keep is a
/// run of one block: one object, at the run's start. Other large classes (freed through their
/// arena's page heap) and every other class byte have none.
pub const fn slot_check_compute(class: usize) -> SlotCheck {
    if class >= NCACHED {
        return SlotCheck { mul: 0, below: 0 };
    }
    let size = size_compute(class);
    assert!(size < SLOT_CHECK_MAX_SIZE);
    let mul = ((1u128 << 64) / size as u128 + 1) as u64;
    let excess = mul.wrapping_mul(size as u64);
    let objects = if class < NSMALL {
        slab_pages_compute(class) * PAGE / size
    } else {
        1
    };
    SlotCheck {
        mul,
        below: (objects as u64 - 1) * excess + 1,
    }
}

const fn build_slot_check() -> [SlotCheck; 256] {
    let mut t = [slot_check_compute(NCACHED); 256];
    let mut i = 0;
    while i < NCACHED {
        t[i] = slot_check_compute(i);
        i += 1;
    }
    t
}

/// Entries of the per-class tables the fast paths read (a thread's bins, the slot checks) are
/// this many bytes apart, so that one offset, the class times the stride, finds a class's entry
/// in each, and the size lookup gives that offset rather than the class.
pub const CLASS_STRIDE: usize = 32;
const _: () = assert!(
    NCLASSES * CLASS_STRIDE <= u16::MAX as usize,
    "offsets fit the lookup"
);

/// The class of a request of `size <= SMALL_MAX` bytes, as its offset into per-class tables
/// ([`CLASS_STRIDE`]).
#[inline(always)]
pub fn small_at(size: usize) -> usize {
    debug_assert!(size <= SMALL_MAX);
    small_lookup()[(size + 7) >> 3] as usize
}

/// The class for a request of `size` bytes, or `None` when the request is huge.
#[inline(always)]
pub fn class_for(size: usize) -> Option<SizeClass> {
    if size <= SMALL_MAX {
        Some(SizeClass::at(small_at(size)))
    } else if size <= LARGE_MAX {
        Some(SizeClass(large_lookup()[(size + PAGE - 1) >> PAGE_SHIFT]))
    } else {
        None
    }
}

/// The class for `size` bytes aligned to `align` (a power of two no larger than [`PAGE`]), or
/// `None` when it is huge.
///
/// Round the size up to a multiple of `align` first. A class at or above that size is then a
/// multiple of `align`: within a doubling `(2^k, 2^(k+1)]` classes are multiples of `2^(k-2)`
/// (`2^(k-3)` in the fine doublings), and if `align` is larger than that, the rounded size is a
/// multiple of `2^(k-1)`, `2^(k-2)` in the fine doublings — a class either way. The extra class
/// 576 is a multiple of 64, and a size rounded to a multiple of 128 or more is not in
/// `(512, 576]`.
/// Slabs and page runs start on page boundaries, so every block is aligned.
#[inline]
pub fn class_for_aligned(size: usize, align: usize) -> Option<SizeClass> {
    debug_assert!(align.is_power_of_two() && align <= PAGE);
    let rounded = size.checked_add(align - 1)? & !(align - 1);
    class_for(rounded.max(align))
}

/// Evenly spaced classes in grouped doubling `g` (`g = 0` is `(128, 256]`): all of its classes
/// but the node doubling's extra one ([`NODE_CLASS`]).
const fn group_len(g: usize) -> usize {
    if g >= FINE_FIRST && g <= FINE_LAST {
        FINE_GROUP
    } else {
        GROUP
    }
}

/// The doubling `(512, 1024]` has one class more than the other coarse ones, first: 576, for
/// the leaves of Rust's `BTreeMap`s of 24-byte keys and values (see the module docs).
const NODE_GROUP: usize = 2;
const NODE_CLASS: usize = 576;
const _: () = assert!(QUANTUM_MAX << NODE_GROUP == 512 && NODE_CLASS % 64 == 0);

/// Index of the first class of grouped doubling `g`.
const fn group_start(g: usize) -> usize {
    let coarse_before = if g < FINE_FIRST { g } else { FINE_FIRST };
    let fine = if g <= FINE_FIRST {
        0
    } else if g <= FINE_LAST + 1 {
        g - FINE_FIRST
    } else {
        FINE_LAST + 1 - FINE_FIRST
    };
    let coarse_after = if g > FINE_LAST + 1 { g - FINE_LAST - 1 } else { 0 };
    let node = if g > NODE_GROUP { 1 } else { 0 };
    FIRST_GROUPED + (coarse_before + coarse_after) * GROUP + fine * FINE_GROUP + node
}

/// The size of class `index`, computed (the oracle for the table).
pub const fn size_compute(index: usize) -> usize {
    if index == 0 {
        8
    } else if index < FIRST_GROUPED {
        index * QUANTUM
    } else {
        let mut g = 0;
        while index >= group_start(g + 1) {
            g += 1;
        }
        let i = index - group_start(g);
        let base = QUANTUM_MAX << g;
        // The node doubling's first class is its extra one; the rest are spaced as usual.
        if g == NODE_GROUP && i == 0 {
            return NODE_CLASS;
        }
        let k = if g == NODE_GROUP { i } else { i + 1 };
        base + k * (base / group_len(g))
    }
}

/// The smallest class holding `size` bytes (0 < size <= LARGE_MAX), computed.
pub const fn class_compute(size: usize) -> SizeClass {
    if size <= 8 {
        SizeClass(0)
    } else if size <= QUANTUM_MAX {
        SizeClass(size.div_ceil(QUANTUM) as u8)
    } else {
        let x = size - 1;
        let lg = (usize::BITS - 1 - x.leading_zeros()) as usize;
        let g = lg - 7;
        let (shift, mask) = if g >= FINE_FIRST && g <= FINE_LAST {
            (lg - 3, FINE_GROUP - 1)
        } else {
            (lg - 2, GROUP - 1)
        };
        if g == NODE_GROUP {
            let first = group_start(g);
            return SizeClass(if size <= NODE_CLASS {
                first
            } else {
                first + 1 + ((x >> shift) & mask)
            } as u8);
        }
        SizeClass((group_start(g) + ((x >> shift) & mask)) as u8)
    }
}

/// Pages per slab for small class `index`. A slab should hold enough objects that a thread
/// cache refill touches few slabs, and waste little of its run:
/// 1. the fewest pages (up to [`SLAB_MAX_PAGES`]) holding at least 8 objects with tail waste at
///    most 1/64 of the slab;
/// 2. else the fewest holding at least 4 objects with that waste;
/// 3. else the least wasteful.
///
/// Never more than [`SLAB_MAX_OBJS`] objects.
pub const fn slab_pages_compute(index: usize) -> usize {
    let size = size_compute(index);
    let mut min_objects = 8;
    while min_objects >= 4 {
        let mut pages = 1;
        while pages <= SLAB_MAX_PAGES {
            let bytes = pages * PAGE;
            let objects = bytes / size;
            if objects > SLAB_MAX_OBJS {
                break;
            }
            if objects >= min_objects && (bytes % size) * 64 <= bytes {
                return pages;
            }
            pages += 1;
        }
        min_objects /= 2;
    }
    let mut best = 1;
    let mut best_waste = usize::MAX;
    let mut pages = 1;
    while pages <= SLAB_MAX_PAGES {
        let bytes = pages * PAGE;
        if bytes >= size {
            let waste = bytes % size;
            // Compare waste fractions: waste / bytes < best_waste / best_bytes.
            if best_waste == usize::MAX || waste * (best * PAGE) < best_waste * bytes {
                best = pages;
                best_waste = waste;
            }
        }
        pages += 1;
    }
    best
}

const fn build_sizes() -> [u32; NCLASSES] {
    let mut t = [0u32; NCLASSES];
    let mut i = 0;
    while i < NCLASSES {
        t[i] = size_compute(i) as u32;
        i += 1;
    }
    t
}

const fn build_slab_pages() -> [u8; NSMALL] {
    let mut t = [0u8; NSMALL];
    let mut i = 0;
    while i < NSMALL {
        t[i] = slab_pages_compute(i) as u8;
        i += 1;
    }
    t
}

const fn build_slab_objects() -> [u16; NSMALL] {
    let mut t = [0u16; NSMALL];
    let mut i = 0;
    while i < NSMALL {
        t[i] = (slab_pages_compute(i) * PAGE / size_compute(i)) as u16;
        i += 1;
    }
    t
}

const fn build_small_lookup() -> [u16; SMALL_MAX / 8 + 1] {
    let mut t = [0u16; SMALL_MAX / 8 + 1];
    let mut i = 1;
    while i < t.len() {
        t[i] = (class_compute(i * 8).0 as usize * CLASS_STRIDE) as u16;
        i += 1;
    }
    t
}

const fn build_large_lookup() -> [u8; LARGE_MAX / PAGE + 1] {
    let mut t = [0u8; LARGE_MAX / PAGE + 1];
    let mut i = 1;
    while i < t.len() {
        t[i] = class_compute(i * PAGE).0;
        i += 1;
    }
    t
}

// The tables are `const` items, for constant evaluation, and the program reads them through the
// functions below: statics in the library's first segment, addressed relative to the
// instruction pointer as a `const`'s private copy would be (`hot.rs`).
const CLASS_SIZE: [u32; NCLASSES] = build_sizes();
const SLAB_PAGES: [u8; NSMALL] = build_slab_pages();
const SLAB_OBJECTS: [u16; NSMALL] = build_slab_objects();
/// Class of sizes `8*(i-1)+1 ..= 8*i` times [`CLASS_STRIDE`] (its offset into per-class tables,
/// which `malloc`'s fast path uses as it is), indexed by `(size + 7) / 8`.
const SMALL_LOOKUP: [u16; SMALL_MAX / 8 + 1] = build_small_lookup();
/// Class of the sizes above [`SMALL_MAX`] that round up to `i` pages, indexed by `i`: every class
/// from 16 KiB up is a multiple of the page, so the page count decides it.
const LARGE_LOOKUP: [u8; LARGE_MAX / PAGE + 1] = build_large_lookup();
/// By page-info class byte, for [`SlotCheck::of`].
const SLOT_CHECK: [SlotCheck; 256] = build_slot_check();

crate::hot::hot_data! {
    /// [`CLASS_SIZE`], where the program reads it.
    fn class_sizes() -> &'static [u32; NCLASSES] = CLASS_SIZE;
}
crate::hot::hot_data! {
    /// [`SLAB_PAGES`], where the program reads it.
    fn slab_pages() -> &'static [u8; NSMALL] = SLAB_PAGES;
}
crate::hot::hot_data! {
    /// [`SLAB_OBJECTS`], where the program reads it.
    fn slab_objects() -> &'static [u16; NSMALL] = SLAB_OBJECTS;
}
crate::hot::hot_data! {
    /// [`SMALL_LOOKUP`], where the program reads it.
    fn small_lookup() -> &'static [u16; SMALL_MAX / 8 + 1] = SMALL_LOOKUP;
}
crate::hot::hot_data! {
    /// [`LARGE_LOOKUP`], where the program reads it.
    fn large_lookup() -> &'static [u8; LARGE_MAX / PAGE + 1] = LARGE_LOOKUP;
}
crate::hot::hot_data! {
    /// [`SLOT_CHECK`], where the program reads it.
    fn slot_checks() -> &'static [SlotCheck; 256] = SLOT_CHECK;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_size_round_trips() {
        for size in 1..=LARGE_MAX {
            let c = class_for(size).unwrap();
            assert_eq!(c, class_compute(size), "size {size}");
            if size <= SMALL_MAX {
                assert_eq!(small_at(size), c.offset(), "size {size}");
            }
            assert!(c.size() >= size, "size {size} class {}", c.size());
            if c.0 > 0 {
                let below = SizeClass(c.0 - 1).size();
                assert!(below < size, "size {size} fits the smaller class {below}");
            }
            // Waste bound: under one quantum up to 128 bytes, under 25% of the request above.
            if size > 128 {
                assert!((c.size() - size) * 4 < size, "size {size} wastes too much");
            } else {
                assert!(c.size() - size < 16, "size {size} wastes too much");
            }
            assert_eq!(c.is_small(), size <= SMALL_MAX);
        }
        assert!(class_for(LARGE_MAX + 1).is_none());
    }

    #[test]
    fn tables_match_their_oracles() {
        for i in 0..NCLASSES {
            assert_eq!(SizeClass(i as u8).size(), size_compute(i));
            assert_eq!(class_compute(size_compute(i)).index(), i);
            if i >= 1 {
                assert_eq!(size_compute(i) % 16, 0);
            }
            if i >= NSMALL {
                assert_eq!(size_compute(i) % PAGE, 0);
            }
        }
        for i in 0..NSMALL {
            let c = SizeClass(i as u8);
            assert_eq!(c.pages(), slab_pages_compute(i));
            assert_eq!(c.slab_objects(), c.pages() * PAGE / c.size());
            assert!(c.slab_objects() >= 1 && c.slab_objects() <= SLAB_MAX_OBJS);
            let waste = c.pages() * PAGE - c.slab_objects() * c.size();
            assert!(
                waste * 8 <= c.pages() * PAGE,
                "class {} wastes {waste} of its slab",
                c.size()
            );
        }
    }

    #[test]
    fn slot_checks_find_exactly_the_blocks_of_a_slab() {
        for class in 0..256 {
            let check = *SlotCheck::of(class as u8);
            assert_eq!(check, slot_check_compute(class), "class byte {class}");
            if class >= NCACHED {
                assert_eq!(check.below, 0);
                for off in [0, 1, 8, 16, 4096, 65535] {
                    assert!(!check.holds(off), "class byte {class}");
                }
                continue;
            }
            let c = SizeClass(class as u8);
            let objects = if c.is_small() { c.slab_objects() } else { 1 };
            // Every offset of the slab (or the large block's run), and as much again past it.
            for off in 0..c.pages() * PAGE * 2 {
                let block = off % c.size() == 0 && off / c.size() < objects;
                assert_eq!(check.holds(off), block, "class {} offset {off}", c.size());
                if off < c.pages() * PAGE {
                    assert_eq!(
                        check.quotient(off),
                        off / c.size(),
                        "class {} offset {off}",
                        c.size()
                    );
                }
            }
            // The largest offsets the check is made for: still exact.
            let top = SLOT_CHECK_MAX_OFFSET;
            for off in (top - 4 * c.size()..top).step_by(8) {
                let block = off % c.size() == 0 && off / c.size() < objects;
                assert_eq!(check.holds(off), block, "class {} offset {off}", c.size());
                assert_eq!(
                    check.quotient(off),
                    off / c.size(),
                    "class {} offset {off}",
                    c.size()
                );
            }
        }
    }

    #[test]
    fn aligned_classes_are_aligned() {
        let mut align = 8;
        while align <= PAGE {
            for size in 0..20_000 {
                let c = class_for_aligned(size, align).unwrap();
                assert!(c.size() >= size.max(1));
                assert_eq!(
                    c.size() % align,
                    0,
                    "size {size} align {align} class {}",
                    c.size()
                );
            }
            align *= 2;
        }
    }
}
