//! Huge blocks and the arenas share their idle memory:
//! - an arena that needs a new chunk takes a chunk window of a freed huge block's cached mapping
//!   before it maps fresh memory, so its resident set does not grow, and what it hands out from
//!   there is a block like any other (`calloc` zeroes the old bytes);
//! - a huge block mapped fresh makes as many idle pages of the arenas go back, so freed small
//!   blocks and a new huge buffer do not add up.
//!
//! Each scenario runs in a child process with the default options (see `child/mod.rs`) and reads
//! RSS without allocating (`statm/mod.rs`).

mod child;
mod figures;
mod statm;

use std::ffi::c_void;

use figures::Figures;
use tally::api;

const MIB: usize = 1 << 20;

fn rss() -> usize {
    statm::statm_bytes(1)
}

/// Allocates `n` blocks of `size` bytes, each written on every page.
fn fill(n: usize, size: usize, byte: u8) -> Vec<*mut c_void> {
    let mut blocks = Vec::with_capacity(n);
    for _ in 0..n {
        let p = api::malloc(size);
        assert!(!p.is_null());
        // SAFETY: a fresh block of `size` bytes.
        unsafe { std::ptr::write_bytes(p as *mut u8, byte, size) };
        blocks.push(p);
    }
    blocks
}

fn free_all(blocks: &[*mut c_void]) {
    for &p in blocks {
        // SAFETY: live blocks of this child, each freed once.
        unsafe { api::free(p) };
    }
}

/// A 24 MiB huge block, written and freed, waits in the mapping cache; then 12 MiB of 4 KiB
/// blocks need new chunks. Prints the chunks made from the cache, the RSS growth, and whether
/// `calloc` blocks carved from those chunks read as zero.
fn cache_to_chunks() {
    let huge = api::malloc(24 * MIB);
    assert!(!huge.is_null());
    // SAFETY: a live block of 24 MiB.
    unsafe { std::ptr::write_bytes(huge as *mut u8, 0xab, 24 * MIB) };
    // SAFETY: allocated above, freed once.
    unsafe { api::free(huge) };
    let before = tally::stats::stats();
    let start = rss();
    let blocks = fill(3 * 1024, 4096, 1);
    let grown = rss().saturating_sub(start);
    // Large blocks from the same chunks' free pages: `calloc` must clear the huge block's bytes.
    let mut nonzero = 0usize;
    let mut zeroed = Vec::new();
    for _ in 0..64 {
        let p = api::calloc(1, 40 * 1024) as *mut u8;
        assert!(!p.is_null());
        // SAFETY: a live block of 40 KiB.
        nonzero += unsafe { std::slice::from_raw_parts(p, 40 * 1024) }
            .iter()
            .filter(|&&b| b != 0)
            .count();
        zeroed.push(p.cast::<c_void>());
    }
    let after = tally::stats::stats();
    println!(
        "chunk_reuses={} chunks_mapped={} grown={} nonzero={}",
        after.counters.chunk_reuses - before.counters.chunk_reuses,
        after.counters.chunks_mapped - before.counters.chunks_mapped,
        grown,
        nonzero
    );
    free_all(&zeroed);
    free_all(&blocks);
}

/// 48 MiB of 4 KiB blocks are written and freed into the arena; then a 32 MiB huge block is
/// mapped fresh and written. Prints the RSS growth and the arenas' pages given back meanwhile.
fn huge_beside_idle() {
    let blocks = fill(12 * 1024, 4096, 2);
    free_all(&blocks);
    drop(blocks);
    let purged = |s: &tally::Stats| s.arenas[..s.narenas].iter().map(|a| a.purged_pages).sum::<u64>();
    let before = tally::stats::stats();
    let start = rss();
    let huge = api::malloc(32 * MIB);
    assert!(!huge.is_null());
    // SAFETY: a live block of 32 MiB.
    unsafe { std::ptr::write_bytes(huge as *mut u8, 3, 32 * MIB) };
    let grown = rss().saturating_sub(start);
    let after = tally::stats::stats();
    println!(
        "grown={} purged_pages={} huge_reuses={}",
        grown,
        purged(&after) - purged(&before),
        after.counters.huge_reuses - before.counters.huge_reuses
    );
    // SAFETY: allocated above, freed once.
    unsafe { api::free(huge) };
}

#[test]
#[ignore = "child process of the scenarios"]
fn child_entry() {
    match child::case("TALLY_HUGE_ARENAS").as_str() {
        "cache_to_chunks" => cache_to_chunks(),
        "huge_beside_idle" => huge_beside_idle(),
        other => panic!("unknown case {other}"),
    }
}

/// Runs `case` in a child; its figures, the first named `first`.
fn figures(case: &str, first: &str) -> Figures {
    Figures::of(case, &child::run(&[("TALLY_HUGE_ARENAS", case)]), first)
}

#[test]
fn new_chunks_take_the_windows_of_a_cached_huge_mapping() {
    let f = figures("cache_to_chunks", "chunk_reuses");
    let (reuses, mapped, grown, nonzero): (usize, usize, usize, usize) = (
        f.get("chunk_reuses"),
        f.get("chunks_mapped"),
        f.get("grown"),
        f.get("nonzero"),
    );
    let line = f.line();
    // 12 MiB of 4 KiB blocks fill three chunks and more; the cache holds six windows.
    assert!(reuses >= 3, "{line}");
    assert_eq!(reuses, mapped, "every new chunk came from the cache: {line}");
    // The windows' pages were resident: writing 12 MiB into them faulted in little (the chunk
    // headers' pages, given back to zero them).
    assert!(grown < 4 * MIB, "RSS grew by {} KiB: {line}", grown >> 10);
    assert_eq!(nonzero, 0, "calloc handed out the huge block's old bytes: {line}");
}

#[test]
fn a_fresh_huge_block_makes_idle_arena_pages_go_back() {
    let f = figures("huge_beside_idle", "grown");
    let (reuses, purged, grown): (usize, usize, usize) =
        (f.get("huge_reuses"), f.get("purged_pages"), f.get("grown"));
    let line = f.line();
    assert_eq!(reuses, 0, "the block must be fresh for this check: {line}");
    // 32 MiB were written; about as many idle pages of the arena went back.
    assert!(purged * 4096 >= 24 * MIB, "{line}");
    assert!(grown < 12 * MIB, "RSS grew by {} KiB: {line}", grown >> 10);
}
