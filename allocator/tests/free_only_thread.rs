//! A thread that only frees what another thread allocated (a consumer) takes no arena, and the
//! blocks it frees go home in groups, at most 1 KiB of a class waiting in its cache
//! (`tcache::outbox_limit`; one at a time, every block took its arena's bin lock alone); the
//! arena it gets when it first allocates is counted from then on.
//!
//! Runs in a child process (`child/mod.rs`) with two arenas, so that the counts are this
//! scenario's alone.

mod child;

use std::sync::atomic::{AtomicU32, AtomicUsize, Ordering};

use tally::api;

/// Blocks the main thread allocates and the other thread frees.
const BLOCKS: usize = 1000;
const SIZE: usize = 64;

/// Blocks of `SIZE` a bin the thread never allocated from gathers at most
/// (`tcache::outbox_limit`: 1 KiB).
const OUTBOX_LIMIT: u64 = 1024 / SIZE as u64;

/// (threads counted on the arenas, threads with a cache, blocks of `SIZE` in thread caches,
/// batches returned from thread caches to arenas).
fn counts() -> (u64, usize, u64, u64) {
    let s = tally::stats();
    let class = s
        .classes
        .iter()
        .find(|c| c.size == SIZE as u64)
        .expect("a 64-byte class");
    (
        s.arenas.iter().map(|a| a.threads).sum(),
        s.threads,
        class.cached,
        s.counters.tcache_flushes,
    )
}

/// What the consumer thread does, step by step; the main thread waits for each step.
static STEP: AtomicU32 = AtomicU32::new(0);
/// The blocks the consumer frees (addresses).
static BLOCKS_TO_FREE: [AtomicUsize; BLOCKS] = [const { AtomicUsize::new(0) }; BLOCKS];

fn wait_for(step: u32) {
    while STEP.load(Ordering::Acquire) != step {
        std::thread::sleep(std::time::Duration::from_millis(1));
    }
}

/// The consumer: a raw POSIX thread, so that nothing but its own calls reach the allocator
/// (a `std::thread` allocates on its own, through Tally in this binary, before its closure
/// runs). It frees the blocks (step 1), then waits (by sleeping, which allocates nothing) until
/// step 2 to allocate one block of another class (step 3), and exits at step 4.
extern "C" fn consumer(_: *mut std::ffi::c_void) -> *mut std::ffi::c_void {
    for slot in &BLOCKS_TO_FREE {
        // SAFETY: a live block of this process's allocator, freed once.
        unsafe { api::free(slot.load(Ordering::Relaxed) as *mut std::ffi::c_void) };
    }
    STEP.store(1, Ordering::Release);
    while STEP.load(Ordering::Acquire) != 2 {
        // SAFETY: a plain sleep.
        unsafe { libc::usleep(1000) };
    }
    // Of a class it holds none of (it would pop a block it freed, and take no arena yet).
    let p = api::malloc(4 * SIZE);
    BLOCKS_TO_FREE[0].store(p as usize, Ordering::Relaxed);
    STEP.store(3, Ordering::Release);
    while STEP.load(Ordering::Acquire) != 4 {
        // SAFETY: a plain sleep.
        unsafe { libc::usleep(1000) };
    }
    // SAFETY: the block this thread allocated, freed once.
    unsafe { api::free(p) };
    std::ptr::null_mut()
}

#[test]
#[ignore = "the child process of the scenario below"]
fn child_entry() {
    assert_eq!(child::case("TALLY_FREE_ONLY"), "run");
    for slot in &BLOCKS_TO_FREE {
        let p = api::malloc(SIZE);
        assert!(!p.is_null());
        slot.store(p as usize, Ordering::Relaxed);
    }
    let (arenas_before, caches_before, cached_before, flushes_before) = counts();
    assert!(arenas_before >= 1, "the allocating thread counts on an arena");
    let mut thread: libc::pthread_t = 0;
    // SAFETY: `consumer` is a valid thread start routine that ignores its argument.
    let rc = unsafe { libc::pthread_create(&mut thread, std::ptr::null(), consumer, std::ptr::null_mut()) };
    assert_eq!(rc, 0, "pthread_create");
    wait_for(1);
    let (arenas, caches, cached, flushes) = counts();
    println!(
        "only freed: arenas' threads {arenas_before} -> {arenas}, caches {caches_before} -> {caches}, \
         cached {cached_before} -> {cached}, batches home {flushes_before} -> {flushes}"
    );
    assert_eq!(caches, caches_before + 1, "the consumer has a cache");
    assert_eq!(arenas, arenas_before, "a thread that only frees takes no arena");
    assert!(
        cached <= cached_before + OUTBOX_LIMIT,
        "at most the outbox limit waits in the consumer's cache: {cached} cached, {cached_before} before"
    );
    assert!(
        flushes - flushes_before <= BLOCKS as u64 / (OUTBOX_LIMIT / 4),
        "the freed blocks went home in groups: {} batches for {BLOCKS} blocks",
        flushes - flushes_before
    );
    STEP.store(2, Ordering::Release);
    wait_for(3);
    let (arenas, ..) = counts();
    assert_eq!(arenas, arenas_before + 1, "its first allocation takes an arena");
    STEP.store(4, Ordering::Release);
    // SAFETY: the thread made above, joined once.
    assert_eq!(unsafe { libc::pthread_join(thread, std::ptr::null_mut()) }, 0);
    let (arenas, ..) = counts();
    assert_eq!(arenas, arenas_before, "an exited thread leaves its arena");
    println!("free-only thread: ok");
}

#[test]
fn a_thread_that_only_frees_takes_no_arena_and_sends_blocks_home_in_groups() {
    let out = child::run(&[("TALLY_FREE_ONLY", "run"), ("TALLY_CONF", "narenas:2")]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success() && stdout.contains("free-only thread: ok"),
        "child failed:\n{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
}
