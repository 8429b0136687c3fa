//! A bin keeps the slabs that empty (when it holds at least `bin::KEEP_EMPTY_MIN_PAGES` of them),
//! for its class's next refill; what it keeps must still serve every other class. A process frees
//! 12.5 MiB of 64-byte blocks (their bin keeps its emptied slabs), then allocates 11 MiB of
//! 112-byte blocks: those must come from the pages the first class left, so the allocator maps
//! less than one chunk (4 MiB) more. Kept until a purge pass instead, the second class would map
//! about 11 MiB of new chunks. The statistics count the kept slabs as free (dirty) pages, not
//! active ones. And after both are freed, `malloc_trim` gives every kept slab back: the page heaps
//! then hold everything but the bins' current slabs.
//!
//! Runs in a child process (this binary again, one test thread, see `child/mod.rs`), so that no
//! other test's blocks share the arena.

mod child;

use std::ffi::c_void;

use tally::api;

const FIRST: (usize, usize) = (64, 200_000);
const SECOND: (usize, usize) = (112, 100_000);
const CHUNK: u64 = 4 << 20;

/// Allocates `count` blocks of `size` bytes, each written, into `blocks`.
fn allocate(blocks: &mut Vec<*mut c_void>, (size, count): (usize, usize)) {
    for _ in 0..count {
        let p = api::malloc(size);
        assert!(!p.is_null());
        // SAFETY: a fresh block of `size` bytes.
        unsafe { std::ptr::write_bytes(p as *mut u8, 0x5a, size) };
        blocks.push(p);
    }
}

/// Frees every block of `blocks`.
fn free_all(blocks: &mut Vec<*mut c_void>) {
    for p in blocks.drain(..) {
        // SAFETY: each block is live and freed once.
        unsafe { api::free(p) };
    }
}

fn reuse_across_classes() {
    let mut blocks = Vec::with_capacity(FIRST.1.max(SECOND.1));
    allocate(&mut blocks, FIRST);
    free_all(&mut blocks);
    // The statistics count the kept empty slabs as free pages (dirty), as jemalloc's count a
    // freed slab: `active` keeps little beyond the pointer array (1.6 MiB).
    let kept = tally::stats::stats();
    println!("freed: active {} dirty {}", kept.active, kept.dirty);
    assert!(
        kept.dirty >= 10 << 20,
        "{} bytes dirty after 12.5 MiB were freed",
        kept.dirty
    );
    assert!(
        kept.active < 4 << 20,
        "{} bytes active after 12.5 MiB were freed",
        kept.active
    );
    let mapped_before = kept.mapped;
    allocate(&mut blocks, SECOND);
    let mapped_after = tally::stats::stats().mapped;
    println!("mapped {mapped_before} -> {mapped_after}");
    assert!(
        mapped_after < mapped_before + CHUNK,
        "the second class mapped {} bytes more instead of taking the first class's emptied slabs",
        mapped_after - mapped_before
    );
    free_all(&mut blocks);
    drop(blocks);
    // Everything free: trimming gives back every kept empty slab (and the current ones).
    assert_eq!(api::malloc_trim(0), 1);
    let s = tally::stats::stats();
    println!("after trim: active {} dirty {}", s.active, s.dirty);
    assert!(
        s.active < 1 << 20,
        "{} bytes still active after everything was freed and trimmed",
        s.active
    );
    println!("empty-slabs-ok");
}

#[test]
#[ignore = "the child process of the test below"]
fn child_entry() {
    match child::case("TALLY_EMPTY_SLABS_CHILD").as_str() {
        "reuse" => reuse_across_classes(),
        other => panic!("unknown case {other}"),
    }
}

#[test]
fn emptied_slabs_of_one_class_serve_another_and_go_back_on_trim() {
    let out = child::run(&[("TALLY_EMPTY_SLABS_CHILD", "reuse")]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success() && stdout.contains("empty-slabs-ok"),
        "{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
}
