//! Rust's `GlobalAlloc`, a thin shim over the core entry points (`alloc.rs`, `free.rs`, `realloc.rs`).

use core::alloc::{GlobalAlloc, Layout};
use core::ptr;

use crate::size_class::{small_at, SMALL_MAX};
use crate::{alloc, free, guard, prof_hooks, realloc};
use tally_pal::PAGE;

/// Tally as Rust's global allocator:
///
/// ```
/// #[global_allocator]
/// static A: tally::Tally = tally::Tally;
/// ```
#[derive(Clone, Copy, Debug, Default)]
pub struct Tally;

/// Rust's `dealloc` of `p`, a block of the small class at offset `at` as far as its layout says,
/// that may be a sampled or a guarded one ([`prof_hooks::may_be_special`]): those go through
/// `free`, the rest by their class. A guarded block is known by its address (tested first: it
/// lies in no chunk, so its page has no info word); a sampled one by its page's info word, and
/// only a page-aligned block can be one (it starts a page run of its own). With the profiler on
/// and guarded sampling off, only blocks of the sampled region come here, all of them sampled
/// (or, where no region could be set apart, page-aligned blocks); every other block takes the
/// class's path as with the profiler off.
///
/// # Safety
/// `p` must be a live block of Tally's of that class, given up.
#[cold]
#[inline(never)]
unsafe fn dealloc_special(p: *mut u8, at: usize) {
    let special = guard::contains(p as usize)
        || (p as usize & (PAGE - 1) == 0
            // SAFETY: `p` is not guarded, so a live block of a class (per the contract). (No
            // test of the profiler: without it no page says SAMPLED.)
            && unsafe { prof_hooks::is_sampled_class_block(p) });
    // SAFETY: per the contract.
    unsafe {
        if special {
            free::free(p)
        } else {
            free::free_known(p, at)
        }
    }
}

/// Rust's `dealloc` of `p`, a block aligned to more than 16 bytes: [`free::free`], a function
/// of its own so that the compiler keeps the two tests of `dealloc` apart.
///
/// # Safety
/// `p` must be a live block of Tally's, given up.
#[cold]
#[inline(never)]
unsafe fn dealloc_overaligned(p: *mut u8) {
    // SAFETY: per the contract.
    unsafe { free::free(p) }
}

// SAFETY: every method returns blocks from the core that honour the layout's size and alignment
// (or null), and frees only what the core handed out.
unsafe impl GlobalAlloc for Tally {
    // fast-path budget: rust_alloc 23 instructions, 4 branches (`__rust_alloc` of a small
    // layout, a thread-cache hit, no call; checked by scripts/check-fast-paths.sh)
    #[inline(always)]
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        alloc::alloc_aligned(layout.size(), layout.align())
    }

    // fast-path budget: rust_dealloc 27 instructions, 5 branches (`__rust_dealloc` of a small
    // layout into a bin with room, its free mark checked and written, no call; checked by
    // scripts/check-fast-paths.sh)
    #[inline(always)]
    unsafe fn dealloc(&self, p: *mut u8, layout: Layout) {
        let (size, align) = (layout.size(), layout.align());
        // The layout names the class `alloc` chose (that of `max(size, align)` for these
        // alignments, see `alloc::alloc_aligned`), so the page-map lookup can be skipped for the
        // small classes. (The large classes the cache keeps, 16 to 32 KiB, take `free`: with
        // both lookups inline the compiler merges them with conditional moves, 6 instructions
        // more for every size, and testing for them costs 4.)
        // With the profiler or guarded sampling on, a block may be a sampled or a guarded one:
        // a function of its own sorts those out, reached by a jump (a call returning here made
        // the compiler save three registers on every `dealloc`). Which blocks it sees is one
        // test of the address against a mask (`prof_hooks::SPECIAL_MASK`): those of the sampled
        // and guarded regions, or page-aligned ones (or all) where no region could be set apart.
        // The alignment is tested first, apart, and the size as given: `max(size, align)` is
        // small exactly when `size` is (`align` is at most 16 here). Tested together, as
        // `max(size, align) <= SMALL_MAX && align <= 16`, both led to one branch that the
        // compiler computed with two `setb`s and a `test`: 29 instructions instead of 27, and
        // Criterion's `vec_string/1000` 6.17 µs against 5.57 (4 interleaved runs, medians).
        if align > 16 {
            // SAFETY: GlobalAlloc's contract: `p` came from this allocator and is given up.
            return unsafe { dealloc_overaligned(p) };
        }
        if size <= SMALL_MAX {
            let at = small_at(size.max(align));
            if prof_hooks::may_be_special(p) {
                // SAFETY: GlobalAlloc's contract: `p` is a live block of this layout, given up.
                return unsafe { dealloc_special(p, at) };
            }
            // SAFETY: GlobalAlloc's contract: `p` is a live block of this layout, given up.
            return unsafe { free::free_known(p, at) };
        }
        // SAFETY: GlobalAlloc's contract: `p` came from this allocator and is given up.
        unsafe { free::free(p) }
    }

    #[inline]
    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        let p = alloc::alloc_aligned(layout.size(), layout.align());
        if !p.is_null() {
            // SAFETY: `p` is a fresh block of at least `layout.size()` bytes.
            unsafe { ptr::write_bytes(p, 0, layout.size()) };
        }
        p
    }

    #[inline]
    unsafe fn realloc(&self, p: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        let align = layout.align();
        if align <= 16 {
            // As in `alloc`: the class of `max(new_size, align)` is aligned to `align`.
            let (old, new) = (layout.size().max(align), new_size.max(align));
            // Small to small, as `dealloc` does it: the old block's class from its layout, not
            // the page map (`realloc` keeps a block only while its class is the one its size
            // names, so the layout's is the block's), and freed by `free_known`; sampled and
            // guarded blocks go the whole way. `realloc_grow/1024`, four of these a round: 30
            // instructions less each than C's `realloc` finding the block (docs/benchmarks.md).
            if old <= SMALL_MAX && new <= SMALL_MAX && !prof_hooks::may_be_special(p) {
                let at = small_at(old);
                if small_at(new) == at {
                    return p;
                }
                let copied = layout.size().min(new_size);
                let q = if copied >= 8 {
                    // SAFETY: `new` is small, and the copy below writes the first 8 bytes.
                    unsafe { alloc::alloc_to_overwrite(new) }
                } else {
                    alloc::alloc(new)
                };
                if !q.is_null() {
                    // SAFETY: GlobalAlloc's contract: `p` is a live block of `layout`, given up
                    // once `q` holds its bytes; `q` is a fresh block of at least `new_size`.
                    unsafe {
                        ptr::copy_nonoverlapping(p, q, copied);
                        free::free_known_by(p, at, "realloc");
                    }
                }
                return q;
            }
            // SAFETY: GlobalAlloc's contract: `p` is a live block of this allocator.
            return unsafe { realloc::realloc(p, new) };
        }
        let q = alloc::alloc_aligned(new_size, align);
        if !q.is_null() {
            // SAFETY: both blocks are live, distinct and at least as large as copied.
            unsafe {
                ptr::copy_nonoverlapping(p, q, layout.size().min(new_size));
                free::free(p);
            }
        }
        q
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::freed;

    /// Runs `f` on a thread of its own, whose thread cache is its alone.
    fn on_new_thread(f: impl FnOnce() + Send + 'static) {
        std::thread::spawn(f).join().unwrap();
    }

    /// The block the next allocation of `size` bytes (aligned to 8) gets: one allocated and
    /// freed, on top of its bin now, carrying its free mark.
    fn next_block(size: usize) -> *mut u8 {
        let layout = Layout::from_size_align(size, 8).unwrap();
        // SAFETY: a layout of non-zero size; the block is freed once, by its layout.
        unsafe {
            let q = Tally.alloc(layout);
            assert!(!q.is_null());
            Tally.dealloc(q, layout);
            assert!(freed::is_marked(q), "a freed block carries its mark");
            q
        }
    }

    /// `realloc` moving a block leaves the new block's free mark to the copy when it copies at
    /// least 8 bytes (`alloc::alloc_to_overwrite`): the copy replaces it, and the block is live.
    #[test]
    fn realloc_moving_8_bytes_or_more_overwrites_the_mark() {
        on_new_thread(|| {
            let q0 = next_block(100);
            let old = Layout::from_size_align(16, 8).unwrap();
            // SAFETY: blocks of this allocator, each used by the layout it was made with.
            unsafe {
                let p = Tally.alloc(old);
                ptr::write_bytes(p, 0x5A, 16);
                let q = Tally.realloc(p, old, 100);
                assert_eq!(q, q0, "the block on top of the bin");
                assert!(!freed::is_marked(q), "the copy replaced the mark");
                assert_eq!(core::slice::from_raw_parts(q, 16), &[0x5A; 16]);
                Tally.dealloc(q, Layout::from_size_align(100, 8).unwrap());
                assert!(freed::is_marked(q), "freed once, without a double-free report");
            }
        });
    }

    /// With fewer than 8 bytes copied the new block's mark is cleared first, as any allocation
    /// clears it: else its first byte from the old block and the mark's other seven bytes would
    /// be the mark whenever that byte is the mark's first, and the block's `free` a double free.
    #[test]
    fn realloc_moving_fewer_than_8_bytes_clears_the_mark() {
        on_new_thread(|| {
            let q0 = next_block(100);
            let first = freed::mark_of(q0).to_ne_bytes()[0];
            let old = Layout::from_size_align(1, 1).unwrap();
            // SAFETY: as above.
            unsafe {
                let p = Tally.alloc(old);
                p.write(first);
                let q = Tally.realloc(p, old, 100);
                assert_eq!(q, q0, "the block on top of the bin");
                assert_eq!(q.read(), first);
                assert!(!freed::is_marked(q), "the mark was cleared before the copy");
                Tally.dealloc(q, Layout::from_size_align(100, 1).unwrap());
            }
        });
    }
}
