//! The free mark: how `free` tells a block the program owns from one that is already free.
//!
//! # Invariant
//! Every block of a class the thread caches keep (small, and large up to 32 KiB) that the
//! program does not own holds its **mark**, `key ^ address`, in its first word: a block in a
//! thread cache, and a block free on an opened page of its slab (slots are marked when their
//! page is opened, and a block flushed back from a cache keeps the mark it got when it was
//! freed; a slab page is opened when the first slot starting on it is handed out, and until
//! then its page-info word says it holds no block, see `chunk::UNOPENED`). So does every block
//! in a thread's big cache, and every sampled block, of any class, whose run waits in its
//! arena's stash (`arena::RunStash`). Every path that hands such a block to the program clears
//! the word ([`unmark`]), or has it overwritten before the program sees the block (Rust's
//! `realloc` moving a small block copies 8 bytes or more over it: `alloc::alloc_to_overwrite`).
//! So `free` needs one load
//! and one compare to know a block is free already: a second free of the same block, a
//! `realloc` of a freed block, or a free of a slot that was never handed out.
//!
//! A word equal to the mark is, in a program that never reads freed memory, a free block: the
//! key is 64 random bits drawn once (`key`) and the mark depends on the address, so neither
//! chance nor a copy of another block's contents produces it. The cold path behind the compare
//! (`already_free` in `free.rs`) still looks for the block (this thread's cache, its
//! slab's bitmap) to say where it is.
//!
//! This is glibc's tcache key (`free(): double free detected in tcache 2`), made per-address
//! and kept in slabs too; glibc keeps one key for all blocks and so must search the cache
//! before it can abort, and catches no free of a never-allocated chunk this way.
//!
//! Cost: `free` 5 instructions (load the key from the thread's copy, xor, compare, branch,
//! store the mark), `malloc` one store; both are counted in the budgets at `capi.rs`.
//!
//! # Why a byte first
//! `free` compares the block's first byte with the mark's before it compares the word
//! ([`mark_unless_marked_with`]). A program that writes a byte (or 4) at a block's start and
//! frees it at once left that store in the CPU's store buffer: a word load spanning it and
//! `malloc`'s clearing store cannot take its value from the buffer and waits until both reach
//! the cache, where a byte load lies inside the last store to that byte and is forwarded. The
//! word is compared only when the byte matches: in a block just handed out never (the key is
//! odd, blocks are 8-aligned, so a mark's low byte is odd and a cleared word's is 0), in a live
//! block about once in 128, in a free one always. Same instruction count on the fast path (the
//! compare takes the byte from memory); a C loop of `malloc(16)`, a byte written, `free`: 0.92×
//! the time of the word compare. `scripts/check-fast-paths.sh` checks `free` still loads a byte.

use core::sync::atomic::{AtomicUsize, Ordering};

use tally_pal as pal;

/// The key: 0 until [`key`] first draws it, then fixed for the life of the process (a fork's
/// child keeps it). Each thread's memory of chunks holds a copy (`pagemap::ChunkSeen`), which
/// `free`'s fast path reads instead: the thread block is in a register there, this static's
/// address is not.
static KEY: AtomicUsize = AtomicUsize::new(0);

/// The key, drawn on the first call (process initialization, or the first chunk's making if
/// that comes first). Every block carrying a mark lives in a chunk, and a chunk's making draws
/// the key first, so every mark is made with the one key.
pub fn key() -> usize {
    let key = KEY.load(Ordering::Relaxed);
    if key != 0 {
        return key;
    }
    draw_key()
}

/// The key, once a chunk exists (a chunk's making draws it before the page map shows the
/// chunk, whose byte a thread reads with acquire ordering): one load, no call.
#[inline(always)]
pub fn drawn_key() -> usize {
    crate::hot::hot_load!(KEY)
}

#[cold]
#[link_section = ".text.hot.tally"]
fn draw_key() -> usize {
    let key = pal::process::random_u64() as usize | 1;
    match KEY.compare_exchange(0, key, Ordering::Relaxed, Ordering::Relaxed) {
        Ok(_) => key,
        Err(drawn) => drawn,
    }
}

/// The mark of the block at `p`.
#[inline(always)]
pub fn mark_of(p: *mut u8) -> usize {
    crate::hot::hot_load!(KEY) ^ p as usize
}

/// Whether the block at `p` carries its mark (is free already).
///
/// # Safety
/// `p` must be a block of at least 8 bytes, 8-aligned, of a class the thread caches keep.
#[inline(always)]
pub unsafe fn is_marked(p: *mut u8) -> bool {
    // SAFETY: per the contract, `p` is readable for a word.
    unsafe { *(p as *const usize) == mark_of(p) }
}

/// Marks the block at `p` free, unless it carries its mark already: then returns `true` and
/// leaves it alone (the free path's one load of the key, one compare and one store).
///
/// # Safety
/// `p` must be a block of at least 8 bytes, 8-aligned, that the program gives up.
#[inline(always)]
pub unsafe fn mark_unless_marked(p: *mut u8) -> bool {
    let key = crate::hot::hot_load!(KEY);
    // SAFETY: per the contract.
    unsafe { mark_unless_marked_with(p, key) }
}

/// [`mark_unless_marked`] with the key the caller has (its chunk's copy).
///
/// # Safety
/// As for [`mark_unless_marked`]; `key` must be the key.
#[inline(always)]
pub unsafe fn mark_unless_marked_with(p: *mut u8, key: usize) -> bool {
    let mark = key ^ p as usize;
    // SAFETY: per the contract, `p` is ours to read and write.
    unsafe {
        // The first byte alone, then the word only when it matches (a marked block, or about
        // one live block in 128: a mark's low byte, its first on a little-endian machine, is
        // odd). See "Why a byte first" above.
        if *p == mark.to_ne_bytes()[0] && *(p as *const usize) == mark {
            return true;
        }
        *(p as *mut usize) = mark;
    }
    false
}

/// Marks the block at `p` free.
///
/// # Safety
/// `p` must be a block of at least 8 bytes, 8-aligned, that the program no longer owns.
#[inline(always)]
pub unsafe fn mark(p: *mut u8) {
    // SAFETY: per the contract, `p` is ours to write.
    unsafe { *(p as *mut usize) = mark_of(p) }
}

/// Clears the mark of the block at `p`, about to be handed to the program (and marks it a
/// block the program owns).
///
/// # Safety
/// `p` must be a block of at least 8 bytes, 8-aligned, not yet handed out.
#[inline(always)]
pub unsafe fn unmark(p: *mut u8) {
    // SAFETY: per the contract, `p` is ours to write.
    unsafe { *(p as *mut usize) = 0 }
}

/// Marks slots `lo..hi` of a slab whose blocks are `size` bytes from `start`.
///
/// # Safety
/// Those slots must be mapped, writable, free and owned by the caller.
pub unsafe fn mark_slots(start: usize, size: usize, lo: usize, hi: usize) {
    let key = KEY.load(Ordering::Relaxed);
    for i in lo..hi {
        let p = start + i * size;
        // SAFETY: per the contract; each slot is at least 8 bytes and 8-aligned.
        unsafe { *(p as *mut usize) = key ^ p };
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_cleared_word_never_passes_the_first_byte_compare() {
        // `free`'s byte compare skips the word load for every block `malloc` just cleared: the
        // mark's low byte is odd at every 8-aligned address.
        let key = key();
        assert_eq!(key & 1, 1);
        for a in (0..4096usize).step_by(8) {
            let p = (0x7f00_0000_0000 + a) as *mut u8;
            assert_ne!(mark_of(p) as u8, 0, "address {p:p}");
        }
        let mut word = 0usize;
        let p = core::ptr::addr_of_mut!(word).cast::<u8>();
        // SAFETY: `p` is the test's own word.
        unsafe {
            assert!(!mark_unless_marked_with(p, key));
            assert_eq!(word, key ^ p as usize);
            assert!(mark_unless_marked_with(p, key));
            // A word whose first byte matches but whose rest does not is a live block.
            word = (key ^ p as usize) & 0xff;
            assert!(!mark_unless_marked_with(p, key));
            assert_eq!(word, key ^ p as usize);
        }
    }

    #[test]
    fn a_mark_is_recognised_at_its_own_address_only() {
        let mut words = [0usize; 4];
        let a = words.as_mut_ptr().cast::<u8>();
        // SAFETY: `a` and the next word point into `words`.
        unsafe {
            let b = a.add(8);
            assert!(!is_marked(a));
            mark(a);
            assert!(is_marked(a));
            // The same word copied to another block is not that block's mark.
            *(b as *mut usize) = *(a as *const usize);
            assert!(!is_marked(b));
            unmark(a);
            assert!(!is_marked(a));
            mark_slots(a as usize, 16, 0, 2);
            assert!(is_marked(a) && is_marked(a.add(16)) && !is_marked(b));
        }
    }
}
