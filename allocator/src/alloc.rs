//! Allocation: the entry points every front end calls (`alloc`, `alloc_aligned`,
//! `alloc_zeroed`), the small fast path, and the slow paths behind it.
//!
//! # The fast path
//! `alloc` of a small size: one table lookup for the class, the thread's bins and countdown at
//! fixed offsets from the thread pointer, one subtraction from the countdown, one test of the
//! bin's count and the countdown's sign together, one pop. Everything else — an empty bin, the
//! countdown running out (a thread event: decay, cache GC, a profiler sample), large and huge
//! blocks, a thread's first call — is in `#[cold]` functions. The instruction budget is written
//! at the exported `malloc` (`capi.rs`) and checked by `scripts/check-fast-paths.sh`.
//!
//! # Out of memory
//! When the OS refuses a mapping, a slow path does not fail at once: from its top, holding no
//! lock, it gives back everything Tally holds free, as `malloc_trim(0)` does, and tries once more
//! ([`after_giving_back`]). Only then is the answer null (`ENOMEM` in the C API).

use core::ptr;
use core::sync::atomic::{AtomicU64, Ordering};

use tally_pal::PAGE;

use crate::arena::{self, Arena};
use crate::bigcache::BigCache;
use crate::block::usable_size;
use crate::init::{ensure_global, options};
use crate::pagemap::CHUNK;
use crate::size_class::{class_for, class_for_aligned, small_at, SizeClass, LARGE_MAX, NCACHED, SMALL_MAX};
use crate::tcache::{self, thread_bins};
use crate::thread::{direct_arena, flush_thread_cache, has_cache, thread_arena, thread_start};
use crate::thread_event::{self, thread_events, CACHED_TICK_CHARGE_MAX};
use crate::{decay, freed, guard, huge, prof_hooks};

/// Largest request Tally tries to serve; anything larger fails with `ENOMEM`.
pub const MAX_REQUEST: usize = isize::MAX as usize - 2 * CHUNK;

/// Allocates `size` bytes (`size == 0` gives a unique minimal block). Null when out of memory.
#[inline(always)]
pub fn alloc(size: usize) -> *mut u8 {
    if size <= SMALL_MAX {
        return alloc_small_sized(size, true);
    }
    alloc_big(size, PAGE)
}

/// [`alloc`] of a small `size`: the thread cache's hit, its free mark cleared if `clear_mark`
/// (else the caller's to overwrite, [`alloc_to_overwrite`]), or the miss path.
#[inline(always)]
fn alloc_small_sized(size: usize, clear_mark: bool) -> *mut u8 {
    let at = small_at(size);
    let hit = if clear_mark {
        try_small_at(at, size)
    } else {
        pop_small_at(at, size)
    };
    if let Some(p) = hit {
        return p;
    }
    // The alignment `malloc` promises: 8 for the 8-byte class, 16 from 16 bytes up (the
    // guarded sampler rounds up to it).
    alloc_small_miss(SizeClass::at(at), size, 8)
}

/// Allocates one block of `class`, a class the thread cache keeps (small, or large up to
/// `TCACHE_MAX`).
/// `size` is the request (it drives the thread's event countdown), `align` the alignment asked
/// for (at most a page; the class's blocks have it; a guarded block must keep it).
#[inline(always)]
fn alloc_small(class: SizeClass, size: usize, align: usize) -> *mut u8 {
    alloc_small_charged(class, size, size, align)
}

/// [`alloc_small`], counting `charge` bytes against the thread's countdown
/// ([`thread_event::charge`]).
#[inline(always)]
fn alloc_small_charged(class: SizeClass, size: usize, charge: usize, align: usize) -> *mut u8 {
    debug_assert!(class.index() < NCACHED);
    if let Some(p) = try_small_at(class.offset(), charge) {
        return p;
    }
    alloc_small_miss(class, size, align)
}

/// The fast path: pops a block of the cached class at offset `at` ([`SizeClass::offset`]) from
/// the thread's bin, unless the bin is empty or the thread's event countdown runs out (counting
/// `size` down from it either way).
#[inline(always)]
fn try_small_at(at: usize, size: usize) -> Option<*mut u8> {
    let p = pop_small_at(at, size)?;
    // SAFETY: a block just taken from the bin: at least 8 bytes, 8-aligned, not handed out.
    unsafe { freed::unmark(p) };
    Some(p)
}

/// [`try_small_at`] without clearing the block's free mark, which the caller overwrites.
#[inline(always)]
fn pop_small_at(at: usize, size: usize) -> Option<*mut u8> {
    let tb = thread_bins();
    let ev = thread_events();
    // SAFETY: `tb` and `ev` are this thread's; callers pass only cached classes' offsets; a bin
    // with count > 0 holds `count` valid slots (ThreadBins invariant), free blocks of the class
    // that are ours to write until handed out.
    unsafe {
        let event = (*ev).left - size as i64;
        (*ev).left = event;
        (*tcache::bin_at(tb, at)).pop_if(event >= 0)
    }
}

/// [`alloc`] of a small `size` for `realloc` moving a block, which copies at least 8 bytes into
/// the new block before it hands it out: the copy overwrites the block's free mark (its first
/// word, `freed.rs`), so the thread cache's hit leaves it, one store fewer. A word copied from
/// a live block is not a mark but by the program's choice (the key is secret), as any word the
/// program writes there. `realloc_grow/256` (Criterion's workload: 16 bytes doubled to 256 by
/// `realloc`, four moves): 30.1-30.7 ns an iteration with the store, 28.9-29.0 without (two sets of
/// 7 runs; stoolap-jemalloc 29.6). Not in C's `realloc`: its test of the copy's length made its
/// hit 99 instructions instead of 93. The miss path clears the mark as `alloc`'s does.
///
/// # Safety
/// `size` must be at most [`SMALL_MAX`], and the caller must write at least the block's first 8
/// bytes before the block is freed or handed out.
#[inline(always)]
pub unsafe fn alloc_to_overwrite(size: usize) -> *mut u8 {
    debug_assert!(size <= SMALL_MAX);
    alloc_small_sized(size, false)
}

#[cold]
#[inline(never)]
#[link_section = ".text.hot.tally"]
fn alloc_small_miss(class: SizeClass, size: usize, align: usize) -> *mut u8 {
    // The options first: the process's first allocation is an event, and its answer depends on
    // them (`guard_rate:1` guards it).
    ensure_global();
    let tb = thread_bins();
    let ev = thread_events();
    // SAFETY: the thread's own events; no operation on its cache is in progress.
    if unsafe { (*ev).left } < 0 {
        // SAFETY: as above.
        let due = unsafe { thread_event::ran_out(&mut *ev, true) };
        if due != 0 {
            let p = alloc_chosen(due, size, align, Some(class), None);
            if !p.is_null() {
                return p;
            }
        }
    }
    if !has_cache(tb) && !thread_start() {
        return alloc_direct(class);
    }
    // SAFETY: `tb` is this thread's bins, with a cache.
    unsafe {
        let bin = &(*tb).bins[class.index()];
        if let Some(p) = bin.pop_if(true) {
            // The miss was the event countdown; the bin has blocks.
            freed::unmark(p);
            return p;
        }
        if bin.cap() == 0 {
            // A class above `tcache_max`.
            return alloc_direct(class);
        }
    }
    thread_event::slow_tick();
    // SAFETY: `tb` is this thread's bins, with a cache, and the bin is empty.
    let mut p = unsafe { tcache::fill_and_pop(tb, class) };
    if p.is_null() {
        // SAFETY: as above: giving back flushes the thread's cache, which leaves the bin empty.
        p = after_giving_back(|| unsafe { tcache::fill_and_pop(tb, class) });
    }
    p
}

/// Allocates one block of a cached class straight from an arena (no cache, or a class above
/// `tcache_max`), applying `junk` and `zero`.
fn alloc_direct(class: SizeClass) -> *mut u8 {
    let from_arena = || {
        let arena = direct_arena();
        if class.is_small() {
            let mut one = [ptr::null_mut()];
            arena.fill(class, &mut one);
            one[0]
        } else {
            arena.alloc_large(class, PAGE)
        }
    };
    let mut p = from_arena();
    if p.is_null() {
        p = after_giving_back(from_arena);
    }
    tcache::MERGED_NMALLOC[class.index()].fetch_add(1, Ordering::Relaxed);
    if !p.is_null() {
        tcache::count_slow(class.size(), 0);
        // SAFETY: a fresh block of a cached class, about to be the program's.
        unsafe { freed::unmark(p) };
    }
    new_block(p, class.size())
}

/// Applies `junk:alloc` and `zero` to a fresh block of `usable` bytes (slow paths only: these
/// options turn the thread caches off).
fn new_block(p: *mut u8, usable: usize) -> *mut u8 {
    if !p.is_null() {
        let opts = options();
        if opts.zero {
            // SAFETY: `p` is a fresh block of `usable` bytes.
            unsafe { ptr::write_bytes(p, 0, usable) };
        } else if opts.junk_alloc {
            // SAFETY: as above.
            unsafe { ptr::write_bytes(p, 0xa5, usable) };
        }
    }
    p
}

/// Applies `junk:free` to a block of `usable` bytes about to be freed.
pub fn dead_block(p: *mut u8, usable: usize) {
    if options().junk_free {
        // SAFETY: the caller gives up `p`, a block of `usable` bytes.
        unsafe { ptr::write_bytes(p, 0x5a, usable) };
    }
}

/// Allocates a large or huge block of `size` bytes aligned to `align`.
#[cold]
#[inline(never)]
#[link_section = ".text.hot.tally"]
fn alloc_big(size: usize, align: usize) -> *mut u8 {
    if size > MAX_REQUEST {
        return ptr::null_mut();
    }
    let class = class_for(size.max(SMALL_MAX + 1));
    if let Some(class) = class {
        if class.index() < NCACHED && align <= PAGE {
            let charge = thread_event::charge_cached(size);
            if charge > CACHED_TICK_CHARGE_MAX {
                // Counted whole (the profiler or guarded sampling on): the tick counts 8 KiB of
                // it, as with them off.
                // SAFETY: the thread's own events.
                let ev = unsafe { &mut *thread_events() };
                thread_event::credit_tick(ev, charge - CACHED_TICK_CHARGE_MAX);
            }
            return alloc_small_charged(class, size, charge, align);
        }
    }
    alloc_big_uncached(size, align, class)
}

/// [`alloc_big`] past the classes the thread cache keeps. A function of its own so that
/// `alloc_big`'s bin hit (16-32 KiB) saves no registers: 15 instructions.
#[inline(never)]
#[link_section = ".text.hot.tally"]
fn alloc_big_uncached(size: usize, align: usize, class: Option<SizeClass>) -> *mut u8 {
    ensure_global();
    alloc_big_counted(thread_event::count(size), size, align, class, 0)
}

/// A block of the large `class` (`size` bytes asked for) for `realloc` moving a small block that
/// grows into it: counted against the thread's countdown and sampled or guarded as any
/// allocation; else with room for the block to grow to four times its size in place: at the
/// front of the thread's newest cached large block if that has the room ([`take_with_room`]),
/// or of a free run of the thread's arena if one has that many pages resident
/// ([`Arena::alloc_large_placed`]); never from the thread's bins, or a best fit with no room
/// after it. A buffer doubling by `realloc` from 16 bytes to 256 KiB in a loop took its
/// 16 KiB block from the thread's bin: after 64 blocks of 4 KiB allocated and freed in batches,
/// half of those blocks lay right before a slab and moved at the next step, and in the Criterion
/// set's sequence before it (where the slab was one of 256 bytes after the bin's block) every
/// iteration copied a block once: 1.65-1.71 µs an iteration against 0.69 placed with room. Blocks
/// that were already large are not placed so when they move: with room for them too, the suite's
/// `realloc_growth` (16 buffers growing side by side) peaked at 9.3-9.4 MiB (8.9 with room for
/// them alone), against 8.2 without room and 8.3 with it for the small ones. Else as
/// [`alloc_big_counted`].
#[cold]
#[inline(never)]
#[link_section = ".text.hot.tally"]
pub fn alloc_moving(size: usize, class: SizeClass) -> *mut u8 {
    alloc_big_counted(
        thread_event::count(size),
        size,
        PAGE,
        Some(class),
        4 * class.pages(),
    )
}

/// [`alloc_big_uncached`] once the request is counted against the thread's countdown, which
/// made it `due` (as [`thread_event::count`] says): sampled or guarded as that says, else from
/// the thread's big cache, its arena or a mapping of its own; with `room` above the class's
/// pages, not from the big cache but placed with room in the arena ([`alloc_moving`]).
/// `realloc` makes the new size of a sampled block here, having counted it itself.
#[link_section = ".text.hot.tally"]
pub fn alloc_big_counted(
    due: u8,
    size: usize,
    align: usize,
    class: Option<SizeClass>,
    room: usize,
) -> *mut u8 {
    if due != 0 && align <= PAGE {
        let p = alloc_chosen(due, size, align, class, None);
        if !p.is_null() {
            return p;
        }
    }
    if let Some(class) = class {
        if align <= PAGE {
            let p = match tcache::big_cache() {
                None => ptr::null_mut(),
                Some(big) if room == 0 => big.take(class),
                Some(big) => take_with_room(big, class, room),
            };
            if !p.is_null() {
                tcache::count_slow(class.size(), 0);
                return p;
            }
        }
    }
    thread_event::slow_tick();
    let mut p = alloc_big_mapped(thread_arena(), size, align, class, room);
    if p.is_null() {
        p = after_giving_back(|| alloc_big_mapped(thread_arena(), size, align, class, room));
    }
    if !p.is_null() {
        // A class's block up to a page's alignment (`alloc_big_mapped`); a huge block's usable
        // size is its mapping's, which may be a larger cached one.
        let usable = match class {
            Some(class) if align <= PAGE => class.size(),
            _ => usable_size(p),
        };
        tcache::count_slow(usable, 0);
    }
    p
}

/// A block of the large `class` at the front of the thread's newest cached block if that has
/// at least `room` pages (more than the class's), the rest of whose run goes back to its page
/// heap for the block to grow in place over; null otherwise ([`BigCache::take_with_room`]). For
/// [`alloc_moving`]: Criterion's `realloc_grow/262144` freed its 256 KiB block into the cache
/// at the end of every iteration, and the next iteration's 16 KiB block, placed at the front of
/// a free run of 160 KiB with a slab after it, grew in place to 128 KiB and then moved into that
/// cached block, copying 128 KiB every iteration (2.15 µs an iteration in the whole target
/// against 0.65 alone). Now it starts in the cached block and never moves.
#[cold]
#[inline(never)]
#[link_section = ".text.hot.tally"]
fn take_with_room(big: &mut BigCache, class: SizeClass, room: usize) -> *mut u8 {
    let p = big.take_with_room(room);
    if p.is_null() {
        return p;
    }
    // SAFETY: a cached block, now ours: a live large block at the start of its run, of a class
    // of at least `room` pages, more than `class`'s.
    unsafe { arena::shrink_large_at(p, class) };
    p
}

/// Allocates a block a thread event chose (`due`: [`thread_event::SAMPLE`],
/// [`thread_event::GUARD`] or both) for a request of `size` bytes aligned to `align` (at most a
/// page) of `class` (`None`: huge): a guarded block if a slot is free (recorded by the profiler
/// too when also sampled), else a sampled one when sampled. Null when neither could be made
/// (no slot free, or out of memory): the caller serves the request as any other, which gives
/// memory back before it fails. A sampled block comes from `arena` (`None`: the thread's).
#[cold]
#[inline(never)]
fn alloc_chosen(
    due: u8,
    size: usize,
    align: usize,
    class: Option<SizeClass>,
    arena: Option<&'static Arena>,
) -> *mut u8 {
    let sample = due & thread_event::SAMPLE != 0;
    if due & thread_event::GUARD != 0 {
        let p = alloc_guarded(size, align, sample);
        if !p.is_null() || !sample {
            return p;
        }
    }
    // A sampled block of a class is the class's size (its run records the class, which is what
    // `usable_size` would read back); a huge one is what its mapping holds.
    let p = prof_hooks::alloc_sampled(size, class, arena.unwrap_or_else(thread_arena));
    if !p.is_null() {
        tcache::count_slow(class.map_or_else(|| usable_size(p), SizeClass::size), 0);
    }
    p
}

/// A guarded block for [`alloc_chosen`] (recorded by the profiler too if `sample`), counted in
/// the thread's statistics; null when no slot is free. A function of its own so that a sample,
/// much the more common event, saves fewer registers and opens no stack frame for the guard's
/// work: with the thread's arena looked up inline, `alloc_chosen` and `thread_arena` took 75
/// instructions a sample (`size_churn`), now 50.
#[inline(never)]
fn alloc_guarded(size: usize, align: usize, sample: bool) -> *mut u8 {
    let p = guard::alloc(size, align, sample);
    if !p.is_null() {
        tcache::count_slow(usable_size(p), 0);
    }
    p
}

/// A block of `class` (large) from `arena` (placed with `room`, [`Arena::alloc_large_placed`]),
/// or a huge one when there is no class or the alignment cannot be met inside a chunk. Null when
/// the OS refuses memory.
#[link_section = ".text.hot.tally"]
fn alloc_big_mapped(
    arena: &Arena,
    size: usize,
    align: usize,
    class: Option<SizeClass>,
    room: usize,
) -> *mut u8 {
    if let Some(class) = class {
        let p = arena.alloc_large_placed(class, align, room);
        if !p.is_null() {
            // `free` reads a large block's first word as a free mark (a block of a cached
            // class, or one the big cache may keep), and a new run may hold an old block's
            // mark where it starts.
            // SAFETY: a fresh block, about to be the program's.
            unsafe { freed::unmark(p) };
            return new_block(p, class.size());
        }
        if align <= PAGE {
            return p;
        }
    }
    let p = huge::alloc(size, align);
    // Fresh pages for it: as many idle pages of the arenas go back before the program touches
    // them (`decay::balance`).
    decay::balance();
    if !p.is_null() && options().junk_alloc {
        return new_block(p, size);
    }
    p
}

/// Gives back everything Tally holds free, now: the calling thread's cache, then every arena's
/// empty slabs and free page runs (with `MADV_DONTNEED`; chunks left wholly free are unmapped)
/// and the huge-mapping cache (unmapped). What `malloc_trim(0)` does, and what an allocation does
/// once before it fails. Returns whether any page was given back.
///
/// It takes locks (the bins', every page heap's in turn, the huge cache's), so the caller must
/// hold none of the allocator's, and the thread's cache must not be in the middle of an
/// operation: call it from the top of a slow path.
#[cold]
#[inline(never)]
pub fn give_back_all() -> bool {
    flush_thread_cache();
    decay::purge_all(true) > 0
}

/// Out of memory: the OS refused a mapping (a chunk, a huge block, metadata, a page-map leaf, an
/// `mremap`). Gives back everything Tally holds free ([`give_back_all`]) and tries `again` once;
/// its result, null again, means `ENOMEM`.
///
/// Freed memory Tally keeps is still mapped (and, under `RLIMIT_AS`, still counted even after
/// `MADV_DONTNEED`), so without this a program that freed everything would wait for decay
/// before it could have it again; glibc succeeds at once. Called with no allocator lock held
/// (see [`give_back_all`]).
#[cold]
#[inline(never)]
pub fn after_giving_back(again: impl FnOnce() -> *mut u8) -> *mut u8 {
    OUT_OF_MEMORY.fetch_add(1, Ordering::Relaxed);
    give_back_all();
    again()
}

/// Times the OS refused memory and Tally gave back everything to try again (a statistic).
pub static OUT_OF_MEMORY: AtomicU64 = AtomicU64::new(0);

/// Allocates `size` bytes aligned to `align`, a power of two. Null when out of memory.
#[inline(always)]
pub fn alloc_aligned(size: usize, align: usize) -> *mut u8 {
    debug_assert!(align.is_power_of_two());
    if align <= 16 {
        // Every class from 16 bytes up is a multiple of 16 (and the 8-byte class of 8), so the
        // class of `max(size, align)` is aligned to `align`: a compare and a conditional move,
        // where telling an 8-byte request aligned to 16 apart took 8 instructions (Rust's
        // `alloc` passes the alignment at run time).
        return alloc(size.max(align));
    }
    if align <= PAGE {
        match class_for_aligned(size, align) {
            Some(class) if class.is_small() => alloc_small(class, size, align),
            _ => alloc_big(size, PAGE),
        }
    } else {
        alloc_big(size, align)
    }
}

/// The usable size [`alloc_aligned`] gives a request of `size` bytes aligned to `align` (a power
/// of two; 1 for none), without allocating: the class's size, or for a huge block its pages; 0
/// when the request is too large. (A huge block reusing a larger cached mapping may have more.)
pub fn usable_for(size: usize, align: usize) -> usize {
    if size > MAX_REQUEST {
        return 0;
    }
    let huge = |s: usize| s.max(1).next_multiple_of(PAGE);
    let big = |s: usize| class_for(s.max(SMALL_MAX + 1)).map_or_else(|| huge(s), |c| c.size());
    if align <= 16 {
        let s = size.max(align);
        return class_for(s).map_or_else(|| huge(s), |c| c.size());
    }
    if align <= PAGE {
        return match class_for_aligned(size, align) {
            Some(class) if class.is_small() => class.size(),
            _ => big(size),
        };
    }
    big(size)
}

/// Allocates `size` bytes aligned to `align` (a power of two; 1 for none) from `arena`, past the
/// thread cache: jemalloc's `mallocx` with `MALLOCX_TCACHE_NONE` or `MALLOCX_ARENA(a)`. A block
/// the thread's event chose for sampling or guarding is made as those always are. Null when out
/// of memory.
pub fn alloc_uncached(size: usize, align: usize, arena: &'static Arena) -> *mut u8 {
    if size > MAX_REQUEST {
        return ptr::null_mut();
    }
    ensure_global();
    let class = if align <= 16 {
        class_for(size.max(align))
    } else if align <= PAGE {
        class_for_aligned(size, align)
            .filter(|c| c.is_small())
            .or_else(|| class_for(size.max(SMALL_MAX + 1)))
    } else {
        class_for(size.max(SMALL_MAX + 1))
    };
    let due = thread_event::count(size);
    if due != 0 && align <= PAGE {
        let p = alloc_chosen(due, size, align.max(8), class, Some(arena));
        if !p.is_null() {
            return p;
        }
    }
    let from_arena = || match class {
        Some(c) if c.is_small() => {
            let mut one = [ptr::null_mut()];
            arena.fill(c, &mut one);
            if !one[0].is_null() {
                // SAFETY: a fresh block of a small class, about to be the program's.
                unsafe { freed::unmark(one[0]) };
            }
            new_block(one[0], c.size())
        }
        _ => alloc_big_mapped(arena, size, align.max(PAGE), class, 0),
    };
    let mut p = from_arena();
    if p.is_null() {
        p = after_giving_back(from_arena);
    }
    if !p.is_null() {
        tcache::count_slow(usable_size(p), 0);
    }
    p
}

/// Allocates `n * size` zeroed bytes; null (with `errno` untouched) on overflow or when out of
/// memory.
#[link_section = ".text.hot.tally"]
pub fn alloc_zeroed(size: usize) -> *mut u8 {
    let p = alloc(size);
    if !p.is_null() && (size <= LARGE_MAX || options().junk_alloc || huge::is_recycled(p)) {
        // SAFETY: `p` is a fresh block of at least `size` bytes. Huge blocks in fresh mappings
        // are already zero (unless `junk` filled them).
        unsafe { ptr::write_bytes(p, 0, size) };
    }
    p
}
