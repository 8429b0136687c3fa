//! Resizing: small and large blocks staying in their class stay where they are (found as `free`
//! finds them, without the full lookup), large runs with room after them resize in place, huge
//! blocks grow over the cached mapping after them or move with `mremap`, a sampled block whose
//! new size is sampled again grows over the pages after its run (`prof_hooks::resizing`; one of
//! a large class shrinking into another large class shrinks in place), one of a large class
//! whose new size is not becomes an ordinary large block (`prof_hooks::unsample`) and resizes as
//! one, everything else moves (a large block growing into a huge one gives its
//! old pages back at once; a small one growing into a large class moves to the front of a free
//! run with room to grow on, `alloc::alloc_moving`). A large block growing in place first sends
//! home the blocks of its thread's big cache that lie where it grows. When the OS refuses memory, a huge block's resize gives everything
//! back and tries once more (`alloc::after_giving_back`), as a new block does.

use core::ptr;

use crate::alloc::{after_giving_back, alloc, alloc_big_counted, alloc_moving, dead_block, MAX_REQUEST};
use crate::block::{block_of, cached_block_of, run_block_at, Block};
use crate::chunk::Span;
use crate::free::{
    already_free, free, free_cached, free_sampled_moved, sampled_freed_before, thread_cached_block,
};
use crate::size_class::{class_for, small_at, SizeClass, LARGE_MAX, NCACHED, SMALL_MAX};
use crate::{arena, decay, freed, guard, huge, prof_hooks, tcache, thread_event};
use tally_pal::PAGE;

/// Resizes the block `p` to `size` bytes, moving it if needed; null `p` allocates; `size == 0`
/// frees `p` and returns null. On failure returns null and leaves `p` untouched.
///
/// # Safety
/// `p` must be null or a live block; if the result is non-null and differs from `p`, `p` is
/// freed.
#[inline(always)]
pub unsafe fn realloc(p: *mut u8, size: usize) -> *mut u8 {
    // The common case, a small block resized within the small classes (a string builder): the
    // block is found once, as `free` finds it, and freed by `free`'s fast path with what that
    // found (its free mark is checked before the copy and again as `free` marks it). Looking
    // it up twice, and the whole of `realloc` in one function (registers saved for its rarest
    // cases), cost a `realloc` from 16 to 32 bytes 181 instructions, the copy's 10 included;
    // now 103: 93 of `realloc`'s own, its budget in `capi.rs`, and the copy's 10.
    if let Some(block) = thread_cached_block(p) {
        let class = SizeClass::at(block.at);
        if class.is_small() && (1..=SMALL_MAX).contains(&size) {
            // SAFETY: a cached block: at least 8 bytes, 8-aligned.
            if unsafe { freed::is_marked(p) } {
                already_free(p, class, "realloc");
            }
            if small_at(size) == block.at {
                return p;
            }
            let q = alloc(size);
            if !q.is_null() {
                // SAFETY: `p` holds the class's size and `q` at least `size`; distinct live
                // blocks. `block` is what `thread_cached_block(p)` found; the caller gives `p` up.
                unsafe {
                    ptr::copy_nonoverlapping(p, q, class.size().min(size));
                    free_cached(p, block, tcache::thread_bins(), "realloc");
                }
            }
            return q;
        }
    }
    // A large or sampled block keeping its class (a buffer past the small classes growing by a
    // few bytes): found by its first page's word, checked live, kept, without `realloc_other`'s
    // registers saved for its rarer cases.
    if let Some(Block::Large(_, class) | Block::Sampled(_, class)) = run_block_at(p) {
        if class_for(size) == Some(class) {
            // SAFETY: a large or sampled block: page-aligned, at least a page. Its first word
            // is the free mark's: one that carries it goes on to `realloc_other`, which says
            // it was freed before.
            if !unsafe { freed::is_marked(p) } {
                return p;
            }
        }
    }
    // SAFETY: per the contract.
    unsafe { realloc_other(p, size) }
}

/// [`realloc`] for everything but a small block staying small: null `p`, `size` 0 or beyond the
/// small classes, large, huge, sampled and guarded blocks, and invalid pointers. Out of line, so
/// that the common case keeps few registers.
///
/// # Safety
/// As for [`realloc`].
#[inline(never)]
#[link_section = ".text.hot.tally"]
unsafe fn realloc_other(p: *mut u8, size: usize) -> *mut u8 {
    if p.is_null() {
        return alloc(size);
    }
    if size == 0 {
        // SAFETY: the caller gives up `p`.
        unsafe { free(p) };
        return ptr::null_mut();
    }
    if size > MAX_REQUEST {
        return ptr::null_mut();
    }
    let mut block = live_block(p, "realloc");
    let new_class = class_for(size);
    // Whether `block`, a sampled one of `class`, grows into a larger class.
    let grows_sampled = |class: SizeClass| new_class.is_some_and(|new| new.size() > class.size());
    // A sampled block of a large class resized into another large one (grown, or shrunk: a
    // builder cut to its final length): its new size is counted here, as `alloc` would count
    // it. If that allocation is no event (neither sampled nor guarded), the block becomes an
    // ordinary large block where it is (`prof_hooks::unsample`) and resizes as one, in place
    // when it shrinks or the pages after it are free; else the event's block is made below
    // (`alloc_big_counted`), a sampled one in place if it can be.
    let mut counted = None;
    if let Block::Sampled(span, class) = block {
        let large = |c: SizeClass| c.index() >= NCACHED;
        if large(class) && new_class.is_some_and(|new| large(new) && new != class) {
            let due = thread_event::count(size);
            if due == 0 {
                // SAFETY: `span` is the run of `p`, a live sampled block of a large class
                // whose `realloc` this is.
                unsafe { prof_hooks::unsample(span, class) };
                block = Block::Large(span, class);
            }
            counted = Some(due);
        }
    }
    let old_size = match block {
        Block::Small(class) | Block::Large(_, class) | Block::Sampled(_, class) => {
            if new_class == Some(class) {
                return p;
            }
            if let (Block::Large(span, _), Some(new_class)) = (&block, new_class) {
                // SAFETY: `span` is the live large run of `p`, owned by the caller.
                if !new_class.is_small() && unsafe { resize_large_in_place(*span, class, new_class) } {
                    return p;
                }
            }
            class.size()
        }
        Block::Huge(d) => {
            if size > LARGE_MAX {
                // SAFETY: live descriptor.
                let before = unsafe { (*d).mapped };
                // SAFETY: `d` is the live descriptor of `p`, owned by the caller.
                let mut q = unsafe { huge::resize(d, size) };
                if q.is_null() {
                    // SAFETY: as above; a failed resize leaves the block unchanged.
                    q = after_giving_back(|| unsafe { huge::resize(d, size) });
                }
                if !q.is_null() {
                    // SAFETY: the live descriptor, which the resize kept.
                    let after = unsafe { (*d).mapped };
                    if after != before {
                        tcache::count_slow(after, before);
                        // Growth in fresh pages: as many idle pages of the arenas go back.
                        decay::balance();
                    }
                    return q;
                }
                // `mremap` refuses to move a range that spans two kernel mappings (a block reusing
                // two cached neighbours that were mapped apart): a copy still does it.
            }
            // SAFETY: live descriptor.
            unsafe { (*d).mapped }
        }
        // A guarded block always moves (to a block of its own class, or guarded again if the
        // next event says so): its slot's placement was made for its old size.
        Block::Guarded(slot) => guard::usable(slot),
    };
    let q = match (&block, counted, new_class) {
        // Counted above.
        (Block::Sampled(span, _), Some(due), _) => {
            prof_hooks::resizing(*span, || alloc_big_counted(due, size, PAGE, new_class, 0))
        }
        (_, Some(due), _) => alloc_big_counted(due, size, PAGE, new_class, 0),
        (Block::Sampled(span, class), None, _) if grows_sampled(*class) => {
            prof_hooks::resizing(*span, || alloc(size))
        }
        // A small block growing into a large class: placed where it can grow on.
        (Block::Small(_), None, Some(new)) if !new.is_small() => alloc_moving(size, new),
        _ => alloc(size),
    };
    if q == p {
        // A sampled block resized in place, sampled again (`prof_hooks::resizing`); the new
        // size was counted as allocated, the old is no longer.
        tcache::count_slow(0, old_size);
        return p;
    }
    if q.is_null() {
        return q;
    }
    // SAFETY: `p` holds `old_size` bytes and `q` at least `size`; distinct live blocks.
    unsafe { ptr::copy_nonoverlapping(p, q, old_size.min(size)) };
    match block {
        // A large block that grew into a huge one leaves the page runs for good (a buffer
        // doubling past the largest class): its old pages are given back now instead of staying
        // resident beside the huge block until they decay (2 MiB more peak RSS for a `Vec`
        // grown to 64 MiB). A later block of that size faults them in again, once.
        Block::Large(span, class) if class.index() >= NCACHED && size > LARGE_MAX => {
            dead_block(p, old_size);
            tcache::count_slow(0, old_size);
            // SAFETY: `span` is the live large run of `p`, whose bytes were copied to `q`; the
            // caller gives `p` up.
            unsafe { arena::of_chunk(Span::chunk(span)).free_large_discarding(span) };
        }
        // A large block that moved goes to its page heap, not to the big cache: a buffer
        // growing by steps would leave each size it outgrew there (the suite's
        // `realloc_growth` peaked 0.8 MiB higher), and the page heap lets the next one grow in
        // place over it.
        Block::Large(span, class) if class.index() >= NCACHED => {
            dead_block(p, old_size);
            tcache::count_slow(0, old_size);
            // SAFETY: `span` is the live large run of `p`, copied to `q`; the caller gives `p` up.
            unsafe { arena::of_chunk(Span::chunk(span)).free_large(span, false) };
        }
        // SAFETY: `span` is the run of `p`, a live sampled block of `class`, copied to `q`; the
        // caller gives `p` up.
        Block::Sampled(span, class) => unsafe { free_sampled_moved(p, span, class, "realloc") },
        // SAFETY: the caller gives up `p`, copied to `q`.
        _ => unsafe { free(p) },
    }
    q
}

/// The block at `p` for a resize by `who`: found as `free` finds it, and checked live (a block
/// freed before aborts with the double-free message). Inlined: `realloc`'s small-block case
/// is its common one.
#[inline(always)]
fn live_block(p: *mut u8, who: &str) -> Block {
    // Large blocks (whose run is wanted: they may grow in place) and sampled ones are found by
    // their first page's word, small ones (most reallocs: a string builder growing by a few
    // bytes) by the inlined check the free fast path uses; the rest, and an invalid pointer
    // (which fails both checks), by `block_of`. A string past the small classes growing by a
    // few bytes a `realloc` spent a quarter of the suite's `realloc_growth` in `block_of` and
    // its caller. (A small block is seldom page-aligned, which the large check tests first.)
    let block = match run_block_at(p) {
        Some(block) => block,
        None => match cached_block_of(p) {
            Some(class) if class.is_small() => Block::Small(class),
            _ => block_of(p, who),
        },
    };
    match block {
        Block::Small(class) | Block::Large(_, class) => {
            // SAFETY: a live small or large block of `class`: at least 8 bytes, 8-aligned; the
            // first word of every large block is the free mark's (`bigcache.rs`).
            if unsafe { freed::is_marked(p) } {
                already_free(p, class, who);
            }
        }
        Block::Sampled(..) => {
            // SAFETY: a sampled block: at least 8 bytes, page-aligned.
            if unsafe { freed::is_marked(p) } {
                sampled_freed_before(p, who);
            }
        }
        Block::Huge(_) | Block::Guarded(_) => {}
    }
    block
}

/// Resizes the large block of run `span` from `class` to the large `new_class` in place, if the
/// pages after it are free (blocks of this thread's big cache in the pages it would grow into go
/// home first, so that a buffer doubling in a loop grows over the one it left last time, whether
/// that starts right after it or past free pages). Counts the thread's bytes when it did.
///
/// # Safety
/// `span` must be the live large run of a block the caller owns, of `class`.
#[link_section = ".text.hot.tally"]
unsafe fn resize_large_in_place(span: *mut Span, class: SizeClass, new_class: SizeClass) -> bool {
    let chunk = Span::chunk(span);
    // SAFETY: per the contract `span` is a live large run, in the live chunk `chunk`.
    let arena = unsafe { arena::of_chunk(chunk) };
    // SAFETY: per the contract.
    let mut done = unsafe { arena.resize_large_in_place(span, new_class) };
    if !done {
        // SAFETY: as above.
        let end = Span::start(span) + unsafe { (*span).pages as usize } * PAGE;
        let want = Span::start(span) + new_class.pages() * PAGE;
        // SAFETY: as above.
        done = tcache::big_cache().is_some_and(|big| big.release(end, want))
            && unsafe { arena.resize_large_in_place(span, new_class) };
    }
    if done {
        tcache::count_slow(new_class.size(), class.size());
    }
    done
}

/// Resizes `p` in place, never moving it (jemalloc's `xallocx`): to `size + extra` bytes where
/// it can, else to `size`; returns the usable size after, which is the old one when neither
/// fits. Large blocks grow or shrink between large classes over the pages after them; huge ones
/// (for sizes past the largest class) shrink in place and grow over the cached mapping after
/// them or with `mremap` where the address space after them is free; small, sampled and guarded
/// blocks stay as they are.
///
/// # Safety
/// `p` must be a live block owned by the caller.
pub unsafe fn resize_in_place(p: *mut u8, size: usize, extra: usize) -> usize {
    let size = size.clamp(1, MAX_REQUEST);
    let most = size.saturating_add(extra).min(MAX_REQUEST);
    match live_block(p, "xallocx") {
        Block::Large(span, class) => {
            for target in [most.min(LARGE_MAX), size] {
                if target < size {
                    continue;
                }
                let Some(new_class) = class_for(target) else {
                    continue;
                };
                if new_class == class {
                    return class.size();
                }
                // SAFETY: `span` is the live run of `p`, owned by the caller.
                if !new_class.is_small() && unsafe { resize_large_in_place(span, class, new_class) } {
                    return new_class.size();
                }
            }
            class.size()
        }
        Block::Huge(d) => {
            // SAFETY: a live descriptor of a block the caller owns.
            unsafe {
                let before = (*d).mapped;
                if size > LARGE_MAX {
                    for target in [most, size] {
                        if huge::resize_in_place(d, target) {
                            let after = (*d).mapped;
                            if after != before {
                                tcache::count_slow(after, before);
                                decay::balance();
                            }
                            return after;
                        }
                    }
                }
                before
            }
        }
        Block::Small(class) | Block::Sampled(_, class) => class.size(),
        Block::Guarded(slot) => guard::usable(slot),
    }
}
