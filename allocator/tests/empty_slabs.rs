//! A bin keeps the slabs that empty (when it holds at least `bin::KEEP_EMPTY_MIN_PAGES` of them),
//! for its class's next refill; what it keeps must still serve every other class. A process frees
//! 12.5 MiB of 64-byte blocks (their bin keeps its emptied slabs), then allocates 11 MiB of
//! 112-byte blocks: those must come from the pages the first class left, so the allocator maps
//! less than one chunk (4 MiB) more. Kept until a purge pass instead, the second class would map
//! about 11 MiB of new chunks. The statistics count the kept slabs as free (dirty) pages, not
//! active ones. And after both are freed, `malloc_trim` gives every kept slab back: the page heaps
//! then hold everything but the bins' current slabs.
//!
//! Likewise a freed large block of 16-256 KiB keeps its run whole in its page heap, for the next block
//! of its class (`extent.rs`, "Freed large runs kept whole"); what is kept must still serve
//! every other size. A process frees 64 blocks of 256 KiB (16 MiB; its thread's big cache keeps
//! one, the rest go home) and allocates 64 again, which must take the same runs; then allocates
//! 15 MiB of 40 KiB blocks: those must come from the kept runs' pages (they go back to the free
//! lists before a page that is not resident is handed out, or when balancing gives idle pages
//! back), so the allocator maps less than one chunk (4 MiB) more. The statistics count the kept
//! runs as free (dirty) pages, not active ones. And after everything is freed, `malloc_trim`
//! gives them back.
//!
//! Each case runs in a child process (this binary again, one test thread, see `child/mod.rs`),
//! so that no other test's blocks share the arena.

mod child;

use std::ffi::c_void;

use tally::api;

const FIRST: (usize, usize) = (64, 200_000);
const SECOND: (usize, usize) = (112, 100_000);
const LARGE: (usize, usize) = (256 << 10, 64);
const LARGE_SECOND: (usize, usize) = (40 << 10, 384);
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

/// What the statistics say after the blocks of `first` (`bytes` in all) were allocated and
/// freed: at least `dirty_min` bytes dirty, under `active_max` active. Returns them.
fn freed(
    blocks: &mut Vec<*mut c_void>,
    first: (usize, usize),
    dirty_min: u64,
    active_max: u64,
) -> tally::stats::Stats {
    allocate(blocks, first);
    free_all(blocks);
    let kept = tally::stats::stats();
    let bytes = (first.0 * first.1) as f64 / (1 << 20) as f64;
    println!("freed: active {} dirty {}", kept.active, kept.dirty);
    assert!(
        kept.dirty >= dirty_min,
        "{} bytes dirty after {bytes} MiB were freed",
        kept.dirty
    );
    assert!(
        kept.active < active_max,
        "{} bytes active after {bytes} MiB were freed",
        kept.active
    );
    kept
}

/// Allocates the blocks of `second`, which must map less than a chunk more than `mapped_before`
/// (`what` says what they were to reuse), frees them, drops `blocks` and trims: then at most
/// `dirty_max` bytes stay dirty and under 1 MiB active.
fn second_then_trim(
    mut blocks: Vec<*mut c_void>,
    second: (usize, usize),
    mapped_before: u64,
    what: &str,
    dirty_max: u64,
) {
    allocate(&mut blocks, second);
    let mapped_after = tally::stats::stats().mapped;
    println!("mapped {mapped_before} -> {mapped_after}");
    assert!(
        mapped_after < mapped_before + CHUNK,
        "blocks of {} bytes mapped {} bytes more instead of taking {what}",
        second.0,
        mapped_after - mapped_before
    );
    free_all(&mut blocks);
    drop(blocks);
    // Everything free: trimming gives back everything kept.
    assert_eq!(api::malloc_trim(0), 1);
    let s = tally::stats::stats();
    println!("after trim: active {} dirty {}", s.active, s.dirty);
    assert!(
        s.active < 1 << 20 && s.dirty <= dirty_max,
        "{} bytes active, {} dirty after everything was freed and trimmed",
        s.active,
        s.dirty
    );
}

fn reuse_across_classes() {
    let mut blocks = Vec::with_capacity(FIRST.1.max(SECOND.1));
    // The statistics count the kept empty slabs as free pages (dirty), as jemalloc's count a
    // freed slab: `active` keeps little beyond the pointer array (1.6 MiB).
    let kept = freed(&mut blocks, FIRST, 10 << 20, 4 << 20);
    second_then_trim(
        blocks,
        SECOND,
        kept.mapped,
        "the first class's emptied slabs",
        u64::MAX,
    );
    println!("empty-slabs-ok");
}

fn large_runs_kept_whole() {
    let mut blocks = Vec::with_capacity(LARGE.1.max(LARGE_SECOND.1));
    let kept = freed(&mut blocks, LARGE, 15 << 20, 2 << 20);
    let first: Vec<*mut c_void> = {
        // The same size again: the same runs.
        allocate(&mut blocks, LARGE);
        blocks.clone()
    };
    assert_eq!(tally::stats::stats().mapped, kept.mapped);
    free_all(&mut blocks);
    // And once more, to see where the kept runs are: the same blocks, most recently freed
    // first.
    allocate(&mut blocks, LARGE);
    let reused = blocks.iter().filter(|p| first.contains(p)).count();
    assert_eq!(reused, LARGE.1, "blocks of the same size took other pages");
    free_all(&mut blocks);
    second_then_trim(blocks, LARGE_SECOND, kept.mapped, "the kept runs' pages", 1 << 20);
    println!("kept-runs-ok");
}

#[test]
#[ignore = "the child process of the tests below"]
fn child_entry() {
    match child::case("TALLY_EMPTY_SLABS_CHILD").as_str() {
        "reuse" => reuse_across_classes(),
        "large" => large_runs_kept_whole(),
        other => panic!("unknown case {other}"),
    }
}

/// Runs `case` in a child process; it must end by printing `ok`.
fn run_case(case: &str, ok: &str) {
    let out = child::run(&[("TALLY_EMPTY_SLABS_CHILD", case)]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success() && stdout.contains(ok),
        "{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn emptied_slabs_of_one_class_serve_another_and_go_back_on_trim() {
    run_case("reuse", "empty-slabs-ok");
}

#[test]
fn freed_large_runs_serve_their_size_whole_and_other_sizes_before_new_chunks() {
    run_case("large", "kept-runs-ok");
}
