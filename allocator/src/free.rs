//! Freeing: the `free` entry point, its fast path, and the slow paths behind it.
//!
//! # The fast path
//! `free` of a small block: the chunk of the thread's arena the thread saw last (or else the
//! page map's byte, the chunk's arena's tag) says the pointer is in a chunk (whose header is at
//! the pointer rounded down to the chunk size) and the block is the thread's
//! (`pagemap::ChunkSeen`), the page's info word gives the class, a multiply and a compare check
//! the pointer is a block boundary ([`crate::block`]), the free mark is checked and written
//! with the key the thread keeps, one compare of the bin's top with its full mark, one push. A
//! block of another thread's arena is [`free_in_other_arena`]'s, out of line.
//! Rust's `dealloc` knows the size it asked for and skips the lookup ([`free_known`]). The
//! instruction budget is written at the exported `free` (`capi.rs`) and checked by
//! `scripts/check-fast-paths.sh`.

use crate::alloc::dead_block;
use crate::block::{
    block_of, cached_block_at, cached_block_seen, chunk_block_at, run_block_at, Block, CachedBlock,
};
use crate::chunk::Span;
use crate::pagemap::Seen;
use crate::size_class::{SizeClass, NCACHED};
use crate::tcache::{self, thread_bins, ThreadBins};
use crate::thread::{has_cache, thread_start};
use crate::{arena, freed, guard, huge, prof_hooks, thread_event};
use core::ptr;
use core::sync::atomic::Ordering;

/// Frees `p` (null is ignored). Aborts with a message if `p` is not a live block of Tally's.
///
/// # Safety
/// `p` must not be used after this call.
#[inline(always)]
pub unsafe fn free(p: *mut u8) {
    let tb = thread_bins();
    // SAFETY: the thread's own bins, whose `seen` only this thread touches.
    let (seen, tag) = unsafe { (&(*tb).seen, ptr::addr_of!((*tb).arena_tag)) };
    // SAFETY: `tag` is in the thread's bins.
    match unsafe { seen.find(p as usize, tag) } {
        Seen::Mine => {}
        // SAFETY: `find`: `p` lies in a live chunk, of another arena; the caller gives it up.
        Seen::Other => return unsafe { free_in_other_arena(p) },
        // SAFETY: the caller gives up `p`.
        Seen::NoChunk => return unsafe { free_no_chunk(p) },
    }
    // SAFETY: `find`: `p` lies in a live chunk, of the thread's arena; the caller gives it up.
    unsafe { free_in_chunk(p, seen.key(), true, tb) }
}

/// `free` of `p`, in a live chunk (of the thread's arena if `mine`): [`free_cached`] for a
/// cached block, with the free mark's `key`; [`free_other`] for anything else.
///
/// # Safety
/// `p` must lie in a live chunk and not be used after this call; `tb` must be the calling
/// thread's bins.
#[inline(always)]
unsafe fn free_in_chunk(p: *mut u8, key: usize, mine: bool, tb: *mut ThreadBins) {
    // SAFETY: per the contract.
    unsafe {
        if let Some(at) = chunk_block_at(p) {
            return free_cached(p, CachedBlock { at, key, mine }, tb, "free");
        }
        free_other(p, "free")
    }
}

/// `free` of `p`, in a chunk of another thread's arena: [`free_cached`] for a cached block of
/// another thread, out of line so that `free` keeps one copy of the fast path.
///
/// # Safety
/// `p` must lie in a live chunk and not be used after this call.
#[inline(never)]
#[link_section = ".text.hot.tally"]
unsafe fn free_in_other_arena(p: *mut u8) {
    // SAFETY: per the contract. A chunk exists, so the key is drawn.
    unsafe { free_in_chunk(p, freed::drawn_key(), false, thread_bins()) }
}

/// `free` of `p`, in no chunk: nothing for null, else a huge or guarded block, or an invalid
/// pointer ([`free_other`]).
///
/// # Safety
/// `p` must not be used after this call.
#[inline(always)]
unsafe fn free_no_chunk(p: *mut u8) {
    if !p.is_null() {
        // SAFETY: the caller gives up `p`.
        unsafe { free_other(p, "free") }
    }
}

/// [`cached_block_seen`] through the calling thread's memory of the chunks it last found: how
/// `realloc` looks a pointer up.
#[inline(always)]
pub fn thread_cached_block(p: *mut u8) -> Option<CachedBlock> {
    let tb = thread_bins();
    // SAFETY: the thread's own bins, whose `seen` only this thread touches.
    unsafe { cached_block_seen(p, &(*tb).seen, ptr::addr_of!((*tb).arena_tag)) }
}

/// Frees `p`, the block [`thread_cached_block`] (or `free`'s own look through the thread's
/// memory of chunks) found as `block`: `free`'s fast path, which `realloc` of a small block
/// takes too. `tb` is the calling thread's bins; `who` names the caller in a double-free
/// message.
///
/// # Safety
/// `block` must describe `p` as [`thread_cached_block`] would, `tb` be the calling thread's
/// bins, and `p` not be used after this call.
#[inline(always)]
pub unsafe fn free_cached(p: *mut u8, block: CachedBlock, tb: *mut ThreadBins, who: &str) {
    // SAFETY: per the contract `p` is a valid cached block of the class at `block.at` (at least
    // 8 bytes, 8-aligned) the caller gives up; the thread's own bins.
    unsafe {
        if freed::mark_unless_marked_with(p, block.key) {
            return double_free(p, block.at, who);
        }
        if !block.mine {
            return free_foreign_at(p, block.at);
        }
        push_to(tb, p, block.at)
    }
}

/// Frees `p`, a small block of another thread's arena: into the thread cache like any block,
/// but under the top slot, so the thread's next allocation of the class is the block it freed
/// last of its own. Reusing the other thread's block at once would put this thread's next
/// object next to that thread's objects, on a cache line both write (active false sharing);
/// buried, it waits until the bin drains, or goes home with the next flush, which takes the
/// oldest blocks first. Into an empty bin of a class the thread allocates it goes home at once:
/// measured against filling the bin first and burying it there, that keeps a thread that frees
/// other threads' blocks (the thread collecting exited workers' leftovers) from holding them:
/// peak RSS of `thread_churn` 7.9 MiB instead of 11.6, `prodcons` 4.1 instead of 4.6. Into an
/// empty bin the thread never allocated from (a consumer's) a block of up to 512 bytes goes on
/// top, the bin's limit lowered to its outbox limit (1 KiB of blocks,
/// [`tcache::outbox_limit`]): the blocks go home in groups when it fills
/// ([`tcache::make_room`]). One at a time, each took its arena's bin lock alone, against the
/// producer's refills: in `prodcons` two thirds of the samples in `return_grouped` were the
/// lock's two atomic instructions; `prodcons_many` takes 0.32-0.33 s instead of 0.39-0.40 (12
/// interleaved runs, medians of the middle two; peak RSS 4.98 MiB against 5.11).
///
/// # Safety
/// `p` must be a live block of `class` (a cached class) that the caller gives up.
#[inline(never)]
#[link_section = ".text.hot.tally"]
unsafe fn free_foreign(p: *mut u8, class: SizeClass) {
    let tb = thread_bins();
    // SAFETY: the thread's own bins; a bin with 0 < count < cap has a top slot and room above.
    unsafe {
        let bin = (*tb).bins.get_unchecked_mut(class.index());
        let count = bin.count();
        if count == 0 && bin.cap() > 0 {
            let outbox = tcache::outbox_limit(class);
            if outbox > 0 && bin.nmalloc.load(Ordering::Relaxed) == 0 {
                // A bin the thread never allocated from (a consumer's): it gathers what the
                // thread frees, up to its outbox limit, and the blocks go home together.
                if bin.limit() > outbox as u32 {
                    bin.set_limit(outbox);
                }
                return push(p, class.offset());
            }
            // Nothing to bury it under: on top it would be the next block of the class, again
            // after every free, and the bin would never fill from this thread's arena.
            dead_small_block(p, class);
            tcache::return_grouped(class, &mut [p]);
            tcache::count_slow(0, class.size());
            return;
        }
        if count == 0 || count >= bin.limit() {
            return push(p, class.offset());
        }
        let top = bin.slots().add(count as usize - 1);
        *bin.slots().add(count as usize) = *top;
        *top = p;
        bin.set_count(count + 1);
    }
}

/// Puts `p` in the thread cache (flushing half of the bin first if it is full), or returns it to
/// its arena when the thread has no cache.
///
/// # Safety
/// `p` must be a live block of `class` (a cached class) that the caller gives up.
#[cold]
#[inline(never)]
#[link_section = ".text.hot.tally"]
unsafe fn free_small_miss(p: *mut u8, class: SizeClass) {
    let tb = thread_bins();
    if !has_cache(tb) && thread_start() {
        // The thread's first free, its cache just made: it has no arena until it allocates, so
        // the block is another thread's (and it goes home now rather than sit at the bottom of
        // the bin, where the next blocks of other threads would be buried above it).
        // SAFETY: `p` is a live block of `class` the caller gives up; the thread has a cache.
        return unsafe { free_foreign(p, class) };
    }
    // SAFETY: the thread's own bins.
    if !has_cache(tb) || unsafe { (*tb).bins[class.index()].cap() } == 0 {
        // SAFETY: `p` is a free block of `class` only we can reach.
        unsafe {
            dead_small_block(p, class);
            tcache::return_grouped(class, &mut [p]);
        }
        tcache::count_slow(0, class.size());
        thread_event::slow_tick();
        return;
    }
    // SAFETY: `tb` is this thread's bins, with a cache.
    unsafe {
        let bin = &(*tb).bins[class.index()];
        if bin.count() >= bin.limit() {
            tcache::make_room(tb, class);
            thread_event::slow_tick();
        }
        let pushed = (*tb).bins[class.index()].try_push(p);
        debug_assert!(pushed, "a flushed bin has room");
    }
}

/// Frees a pointer that is not a valid small block: a large or huge block, or an error.
///
/// # Safety
/// The caller gives up `p`.
#[cold]
#[inline(never)]
#[link_section = ".text.hot.tally"]
pub unsafe fn free_other(p: *mut u8, who: &str) {
    // Large blocks above the bins' classes first (the big cache's among them), and sampled
    // blocks, found by their first page's word without `block_of`'s survey (74 instructions of
    // the 195 a `free` of a 256 KiB block took; 63 of a sample's 1900 at `lg_prof_sample:14`).
    match run_block_at(p) {
        Some(Block::Large(span, class)) if class.index() >= NCACHED => {
            // SAFETY: `run_block_at` found `p` the start of the live large run `span` of
            // `class`; the caller gives it up.
            return unsafe { free_large_block(p, span, class, who, true) };
        }
        // SAFETY: `p` starts the sampled run `span` of `class` (freed before is checked there);
        // the caller gives it up.
        Some(Block::Sampled(span, class)) => return unsafe { free_sampled_block(p, span, class, who) },
        _ => {}
    }
    // SAFETY: the caller gives up `p`.
    unsafe { free_looked_up(p, who) }
}

/// [`free_other`] for a pointer its first page's word did not place: the full lookup
/// ([`block_of`], which aborts on a pointer that is no block). A function of its own so that
/// the blocks found by their first page (large ones, sampled ones) do not open the 544-byte
/// stack frame it needs.
///
/// # Safety
/// `p` must not be used after this call.
#[cold]
#[inline(never)]
#[link_section = ".text.hot.tally"]
unsafe fn free_looked_up(p: *mut u8, who: &str) {
    match block_of(p, who) {
        // SAFETY: as above, from the full lookup.
        Block::Large(span, class) if class.index() >= NCACHED => unsafe {
            free_large_block(p, span, class, who, true)
        },
        // A small block reaching here passed the checks in `block_of`; it and a large block of
        // a cached class are freed like any block the cache keeps.
        // SAFETY: the caller gives up `p`, a live block of `class`, a cached class (so its
        // first word is the free mark's).
        Block::Small(class) | Block::Large(_, class) => unsafe {
            if freed::mark_unless_marked(p) {
                already_free(p, class, who);
            }
            free_small_miss(p, class)
        },
        // SAFETY: as above, from the full lookup.
        Block::Sampled(span, class) => unsafe { free_sampled_block(p, span, class, who) },
        // SAFETY: `d` is the live descriptor of `p`, which the caller gives up.
        Block::Huge(d) => unsafe {
            dead_block(p, (*d).mapped);
            tcache::count_slow(0, (*d).mapped);
            if (*d).sampled {
                prof_hooks::forget_sampled_huge(p);
            }
            huge::free(d);
        },
        Block::Guarded(slot) => {
            tcache::count_slow(0, guard::usable(slot));
            guard::free(slot, who)
        }
    }
}

/// Frees `p`, the sampled block of `class` whose run `span` it starts, unless it was freed
/// before (its run waits in its arena's stash, marked free).
///
/// # Safety
/// `p` must start the sampled run `span` of `class`, live or waiting in the stash, given up by
/// the caller.
#[inline(always)]
unsafe fn free_sampled_block(p: *mut u8, span: *mut Span, class: SizeClass, who: &str) {
    // SAFETY: per the contract.
    unsafe { free_sampled_run(p, span, class, who, true) }
}

/// [`free_sampled_block`] for `realloc`, which moved the block: a run in an ordinary chunk (a
/// class the thread cache does not keep) goes to its page heap, not to the arena's stash, as a
/// large block that moved skips the big cache: the next block of a buffer growing by steps
/// grows in place over it. Stashed, `realloc_growth` at `lg_prof_sample:17` copied 33 million
/// instructions' worth more (4.94 → 4.97 billion in all).
///
/// # Safety
/// As for [`free_sampled_block`].
pub unsafe fn free_sampled_moved(p: *mut u8, span: *mut Span, class: SizeClass, who: &str) {
    // SAFETY: per the contract.
    unsafe { free_sampled_run(p, span, class, who, class.index() < NCACHED) }
}

/// [`free_sampled_block`], into the stash if `stash` allows.
///
/// # Safety
/// As for [`free_sampled_block`].
#[inline(always)]
unsafe fn free_sampled_run(p: *mut u8, span: *mut Span, class: SizeClass, who: &str, stash: bool) {
    // SAFETY: a sampled block is at least 8 bytes and page-aligned.
    if unsafe { freed::is_marked(p) } {
        sampled_freed_before(p, who);
    }
    dead_block(p, class.size());
    tcache::count_slow(0, class.size());
    // SAFETY: per the contract, and live: not marked free.
    if unsafe { prof_hooks::free_sampled(p, span, class, stash) } {
        thread_event::slow_tick();
    }
}

/// Frees `p`, the block of the large `class` (above the bins' classes) at the start of its
/// live run `span`: into the thread's big cache (if `cached`), or home to its arena.
///
/// # Safety
/// `p` must start the live large run `span` of `class`, given up by the caller (whether it was
/// freed before is checked here).
#[inline(always)]
unsafe fn free_large_block(p: *mut u8, span: *mut Span, class: SizeClass, who: &str, cached: bool) {
    // SAFETY: a large block is at least 8 bytes and page-aligned; the arena clears the word of
    // every large block it hands out, the big cache marks what it keeps.
    if unsafe { freed::is_marked(p) } {
        already_free(p, class, who);
    }
    dead_block(p, class.size());
    tcache::count_slow(0, class.size());
    if let Some(big) = tcache::big_cache().filter(|_| cached) {
        // SAFETY: `p` is a live block of `class` at the start of its run, not marked, given up
        // by the caller.
        if unsafe { big.put(p, class) } {
            return;
        }
    }
    let chunk = Span::chunk(span);
    // SAFETY: `span` is the live large run of `p`, which the caller gives up.
    unsafe { arena::of_chunk(chunk).free_large(span, true) };
    thread_event::slow_tick();
}

/// Frees `p` past the thread cache (jemalloc's `dallocx` with `MALLOCX_TCACHE_NONE`): a block
/// of a class the caches keep goes straight home to its arena's slab or page heap, a large one to
/// its page heap rather than the thread's big cache; the rest as `free` frees them. Every check
/// of `free` is kept.
///
/// # Safety
/// `p` must be null or a live block, not used afterwards.
pub unsafe fn free_uncached(p: *mut u8) {
    if let Some(at) = cached_block_at(p) {
        let class = SizeClass::at(at);
        // SAFETY: a valid block of a cached class (found by `cached_block_at`), given up.
        unsafe {
            if freed::mark_unless_marked(p) {
                return double_free(p, at, "dallocx");
            }
            dead_block(p, class.size());
            tcache::return_grouped(class, &mut [p]);
        }
        tcache::count_slow(0, class.size());
        thread_event::slow_tick();
        return;
    }
    if p.is_null() {
        return;
    }
    match block_of(p, "dallocx") {
        // SAFETY: `block_of` found `p` the start of the live large run `span`, given up.
        Block::Large(span, class) if class.index() >= NCACHED => unsafe {
            free_large_block(p, span, class, "dallocx", false)
        },
        // SAFETY: per the contract.
        _ => unsafe { free_other(p, "dallocx") },
    }
}

/// Applies `junk:free` to `p`, a block of the cached `class` going back to its slab or run, and
/// puts back the free mark the junk wrote over.
///
/// # Safety
/// `p` must be a block of `class` that the caller gives up.
unsafe fn dead_small_block(p: *mut u8, class: SizeClass) {
    dead_block(p, class.size());
    // SAFETY: per the contract.
    unsafe { freed::mark(p) };
}

/// Frees `p`, a block the caller knows to be of the class at offset `at` ([`SizeClass::offset`]),
/// a class the thread cache keeps (Rust's `dealloc` knows the size it asked for). Skips the
/// page-map lookup and pointer checks, but not the free mark: a block freed twice still aborts.
///
/// # Safety
/// `p` must be a live block of that class allocated by Tally, not used after this call.
#[inline(always)]
pub unsafe fn free_known(p: *mut u8, at: usize) {
    // SAFETY: per the contract.
    unsafe { free_known_by(p, at, "dealloc") }
}

/// [`free_known`] for the caller `who` (named in a double-free message).
///
/// # Safety
/// As for [`free_known`].
#[inline(always)]
pub unsafe fn free_known_by(p: *mut u8, at: usize, who: &str) {
    // SAFETY: per the contract `p` is a block of a cached class, given up; the thread's bins.
    unsafe {
        if freed::mark_unless_marked(p) {
            return double_free(p, at, who);
        }
        push(p, at)
    }
}

/// [`free_small_miss`] for the fast paths, which have the class as its offset.
///
/// # Safety
/// As for [`free_small_miss`].
#[cold]
#[inline(never)]
#[link_section = ".text.hot.tally"]
unsafe fn free_small_miss_at(p: *mut u8, at: usize) {
    // SAFETY: per the contract.
    unsafe { free_small_miss(p, SizeClass::at(at)) }
}

/// Aborts: `p`, a sampled block handed to `who`, carries its free mark, so it was freed before
/// and its pages wait in its arena's stash for the next sample (`arena::RunStash`).
#[cold]
#[inline(never)]
pub fn sampled_freed_before(p: *mut u8, who: &str) -> ! {
    tally_pal::fatal(format_args!(
        "tally: {who}(): double free of {p:p}: a sampled block freed before (its pages wait for the next sample)\n"
    ))
}

/// [`already_free`] for the fast paths (`free`, Rust's `dealloc`), which reach it by a jump
/// and have the class as its offset. It never returns, but the compiler must not know: a call
/// to a function that never returns makes `free` keep the stack aligned for it, 2 instructions
/// on every call (`black_box` hides the fact).
#[cold]
#[inline(never)]
fn double_free(p: *mut u8, at: usize, who: &str) {
    if core::hint::black_box(true) {
        already_free(p, SizeClass::at(at), who)
    }
}

/// [`free_foreign`] for the fast paths, which have the class as its offset.
///
/// # Safety
/// As for [`free_foreign`].
#[inline(never)]
#[link_section = ".text.hot.tally"]
unsafe fn free_foreign_at(p: *mut u8, at: usize) {
    // SAFETY: per the contract.
    unsafe { free_foreign(p, SizeClass::at(at)) }
}

/// Aborts: `p`, a block of `class` handed to `who`, carries its free mark, so it is free
/// already. Says where it is: in this thread's cache (a bin, or for a class above the bins' the
/// big cache), free in its slab (freed twice, or never handed out), or else in another thread's
/// cache (or on its way back to its slab).
#[cold]
#[inline(never)]
pub fn already_free(p: *mut u8, class: SizeClass, who: &str) -> ! {
    let tb = thread_bins();
    let in_cache = if class.index() < NCACHED {
        // SAFETY: the thread's own bins: `slots[0..count]` are valid (ThreadBins invariant).
        unsafe {
            let bin = &(*tb).bins[class.index()];
            (0..bin.count() as usize).any(|i| *bin.slots().add(i) == p)
        }
    } else {
        tcache::big_cache().is_some_and(|big| big.holds(p))
    };
    let place = if in_cache {
        "the block is in this thread's cache"
    } else if class.is_small() && arena::slot_is_free(p, class) {
        "the block is free in its slab (freed before, or never allocated)"
    // SAFETY: a block of a large class that reached here starts a large run (`run_block_at`,
    // `block_of` or the bins' checks found it so).
    } else if !class.is_small() && unsafe { arena::large_is_kept(p) } {
        "the block was freed before: its pages are free, kept whole for the next block of its size"
    } else {
        "the block was freed before and waits in another thread's cache"
    };
    tally_pal::fatal(format_args!(
        "tally: {who}(): double free of {p:p} ({} bytes): {place}\n",
        class.size()
    ))
}

/// Pushes `p`, marked free, onto the thread's bin of the class at offset `at`
/// ([`SizeClass::offset`]), or takes the slow path when the bin is full or the thread has no
/// cache.
///
/// # Safety
/// `p` must be a block of that class, a cached class, that the caller gives up, already marked.
#[inline(always)]
unsafe fn push(p: *mut u8, at: usize) {
    // SAFETY: per the contract.
    unsafe { push_to(thread_bins(), p, at) }
}

/// [`push`] onto `tb`, the calling thread's bins.
///
/// # Safety
/// As for [`push`]; `tb` must be the calling thread's bins.
#[inline(always)]
unsafe fn push_to(tb: *mut ThreadBins, p: *mut u8, at: usize) {
    // SAFETY: per the contract; the thread's own bins.
    unsafe {
        if (*tcache::bin_at(tb, at)).try_push(p) {
            return;
        }
        free_small_miss_at(p, at)
    }
}
