//! Memory goes back to the OS: a process allocates about 1 GiB in small and large blocks, frees
//! it, and its resident memory must fall back — with allocator activity within
//! `dirty_decay_ms` + 1 s, with `background_thread:true` while completely idle, with a muzzy stage
//! within both decay times + 1 s, and at once after `malloc_trim(0)`.
//!
//! "Falls back" means: RSS ends within 10% of the way from where it started to its peak
//! (`final - start <= (peak - start) / 10`). The last tenth is room for what the process keeps on
//! purpose: thread-cache contents, the bins' current slabs, chunk headers.
//!
//! Each scenario runs in a child process (this test binary run again, see `child/mod.rs`),
//! because options are read from the environment once per process. The children read RSS with
//! raw system calls, so that the idle scenario really allocates nothing while it waits.

mod child;
mod figures;
mod statm;

use std::ffi::c_void;
use std::time::{Duration, Instant};

use figures::Figures;
use tally::api;

/// RSS in bytes, without allocating.
fn rss() -> u64 {
    statm::statm_bytes(1) as u64
}

fn sleep_ms(ms: u64) {
    let ts = libc::timespec {
        tv_sec: (ms / 1000) as i64,
        tv_nsec: ((ms % 1000) * 1_000_000) as i64,
    };
    // SAFETY: valid timespec, null remainder.
    unsafe { libc::nanosleep(&ts, std::ptr::null_mut()) };
}

/// Allocates and frees about 1 GiB, then waits as `mode` says; prints the measurements.
fn child(mode: &str, deadline_ms: u64) {
    // The pointer array is allocated and touched before the start is measured.
    let count = 1_300_000;
    let mut blocks: Vec<*mut c_void> = vec![std::ptr::null_mut(); count];
    let start = rss();
    let mut total = 0usize;
    let mut n = 0;
    while total < 1 << 30 {
        // One block in 16 is large (96-160 KiB); the rest are small (16 B - 2 KiB).
        let size = if n % 16 == 0 {
            96 * 1024 + (n % 5) * 16 * 1024
        } else {
            16 + (n * 37) % 2048
        };
        let p = api::malloc(size);
        assert!(!p.is_null());
        // SAFETY: a fresh block of `size` bytes.
        unsafe { std::ptr::write_bytes(p as *mut u8, 1, size) };
        blocks[n] = p;
        total += size;
        n += 1;
    }
    let peak = rss();
    for &p in &blocks[..n] {
        // SAFETY: each block is live and freed once.
        unsafe { api::free(p) };
    }
    let began = Instant::now();
    let target = start + (peak - start) / 10;
    let mut trim_rc = -1;
    match mode {
        "trim" => trim_rc = api::malloc_trim(0),
        "activity" => {
            let mut i = 0usize;
            while rss() > target && began.elapsed() < Duration::from_millis(deadline_ms) {
                // Ordinary work: a few hundred KiB of short-lived blocks every few milliseconds.
                for k in 0..500 {
                    let p = api::malloc(64 + (i + k) % 1500);
                    // SAFETY: live block, freed at once.
                    unsafe { api::free(p) };
                }
                i += 1;
                sleep_ms(2);
            }
        }
        "idle" => {
            while rss() > target && began.elapsed() < Duration::from_millis(deadline_ms) {
                sleep_ms(10);
            }
        }
        _ => panic!("unknown mode {mode}"),
    }
    let elapsed = began.elapsed().as_millis();
    let last = rss();
    println!("start={start} peak={peak} final={last} elapsed_ms={elapsed} trim_rc={trim_rc}");
}

/// The child process of the scenarios below (run by [`scenario`]).
#[test]
#[ignore = "child process of the scenarios"]
fn child_entry() {
    let mode = child::case("TALLY_DECAY_MODE");
    if mode == "reuse" {
        reuse_child();
        return;
    }
    let deadline = child::case("TALLY_DECAY_DEADLINE_MS");
    child(
        &mode,
        deadline.parse().expect("TALLY_DECAY_DEADLINE_MS is a number"),
    );
}

/// The blocks of [`reuse_child`]: 256 KiB, a large class.
const REUSED: usize = 256 * 1024;

/// In a thread of its own (with `narenas:4`, an arena of its own: the test harness's blocks
/// would count as the arena's active pages, which it may keep twice over), allocates a
/// [`REUSED`]-byte block, writes a byte of each of its pages and frees it, 20,000 times; prints
/// the chunks mapped and unmapped and the pages given back meanwhile.
fn reuse_child() {
    let before = tally::stats::stats();
    std::thread::spawn(|| {
        for round in 0..20_000usize {
            let p = api::malloc(REUSED) as *mut u8;
            assert!(!p.is_null());
            for page in (0..REUSED).step_by(4096) {
                // SAFETY: inside the fresh block.
                unsafe { p.add(page).write_volatile(round as u8) };
            }
            // SAFETY: allocated above, freed once.
            unsafe { api::free(p.cast()) };
        }
    })
    .join()
    .expect("the thread runs");
    let after = tally::stats::stats();
    let purged = |s: &tally::Stats| s.arenas[..s.narenas].iter().map(|a| a.purged_pages).sum::<u64>();
    println!(
        "mapped={} unmapped={} purged_pages={}",
        after.counters.chunks_mapped - before.counters.chunks_mapped,
        after.counters.chunks_unmapped - before.counters.chunks_unmapped,
        purged(&after) - purged(&before)
    );
}

/// A block freed and allocated again reuses its own pages: none of them is given back, and the
/// chunk holding them is neither unmapped nor replaced. (The page heap counted such pages as
/// faulted in, so balancing gave them back every few rounds, and where nothing else lived in
/// the chunk unmapped it and mapped a new one: a C loop of `malloc(256 KiB)`/`free` took
/// 1.9 µs a round, most of it in `munmap`, `madvise` and page faults.)
#[test]
fn a_large_block_freed_and_allocated_again_keeps_its_chunk() {
    let out = child::run(&[("TALLY_DECAY_MODE", "reuse"), ("TALLY_CONF", "narenas:4")]);
    let figures = Figures::of("reuse", &out, "mapped");
    let line = figures.line();
    eprintln!("20,000 rounds of a 256 KiB block: {line}");
    let count = |key: &str| -> i64 { figures.get(key) };
    assert!(
        count("mapped") <= 1 && count("unmapped") == 0 && count("purged_pages") == 0,
        "20,000 rounds of one 256 KiB block gave pages back or changed chunks: {line}"
    );
}

/// Runs a scenario and checks RSS fell back within `deadline_ms`.
fn scenario(mode: &str, conf: &str, deadline_ms: u64) {
    let child_deadline = (deadline_ms + 2000).to_string();
    let out = child::run(&[
        ("TALLY_DECAY_MODE", mode),
        ("TALLY_DECAY_DEADLINE_MS", &child_deadline),
        ("TALLY_CONF", conf),
    ]);
    let figures = Figures::of(mode, &out, "start");
    let line = figures.line();
    let value = |key: &str| -> i64 { figures.get(key) };
    let (start, peak, last, elapsed) = (value("start"), value("peak"), value("final"), value("elapsed_ms"));
    eprintln!(
        "{mode} ({conf}): start {} MiB, peak {} MiB, final {} MiB after {elapsed} ms",
        start >> 20,
        peak >> 20,
        last >> 20
    );
    assert!(
        peak - start > 900 << 20,
        "{mode}: the workload did not reach 1 GiB resident: {line}"
    );
    assert!(
        last - start <= (peak - start) / 10,
        "{mode}: RSS did not fall back: start {start}, peak {peak}, final {last} after {elapsed} ms"
    );
    assert!(
        elapsed as u64 <= deadline_ms,
        "{mode}: RSS fell back only after {elapsed} ms (limit {deadline_ms})"
    );
    if mode == "trim" {
        assert_eq!(
            value("trim_rc"),
            1,
            "malloc_trim(0) released memory, so it returns 1"
        );
    }
}

#[test]
fn rss_falls_after_dirty_decay_with_activity() {
    scenario("activity", "dirty_decay_ms:1000", 1000 + 1000);
}

#[test]
fn rss_falls_while_idle_with_background_thread() {
    scenario("idle", "dirty_decay_ms:1000,background_thread:true", 1000 + 1000);
}

#[test]
fn rss_falls_after_muzzy_stage_with_activity() {
    scenario(
        "activity",
        "dirty_decay_ms:500,muzzy_decay_ms:500",
        500 + 500 + 1000,
    );
}

#[test]
fn rss_falls_at_once_after_malloc_trim() {
    // With the default decay (10 s) nothing would happen on its own within the test.
    scenario("trim", "", 500);
}

#[test]
fn rss_falls_at_once_with_zero_decay() {
    scenario("idle", "dirty_decay_ms:0", 100);
}
