//! The thread cache of large blocks above the bins' classes (40 KiB to 256 KiB,
//! `allocator/src/bigcache.rs`): a freed block serves the thread's next request of its class
//! without the arena; the cache holds at most 4 blocks and 256 KiB; it goes home when its thread
//! exits, on `malloc_trim`, and when garbage collection finds it unused; `tcache_max` turns it
//! down; statistics count its blocks as cached, not live. (Double frees of its blocks:
//! `double_free.rs`.)
//!
//! Each case runs in a child process of its own (options are read once per process, and the
//! counters must see no other test's blocks), on a thread of its own.

mod child;

use std::ffi::c_void;

use tally::api;

/// A class the big cache keeps.
const BIG: usize = 256 * 1024;

/// The statistics of the class of `size` bytes (a class size): (live, cached, nmalloc).
fn class_counts(size: usize) -> (u64, u64, u64) {
    let s = tally::stats();
    let c = s
        .classes
        .iter()
        .find(|c| c.size == size as u64)
        .expect("a class of that size");
    (c.live, c.cached, c.nmalloc)
}

fn large_allocs() -> u64 {
    tally::stats().counters.large_allocs
}

/// Runs `f` on a new thread and waits for it.
fn on_thread(f: impl FnOnce() + Send + 'static) {
    std::thread::spawn(f).join().expect("the case's thread");
}

/// Runs `case` in a child with `conf`; returns its stdout, or fails with its output.
fn run(case: &str, conf: &str) -> String {
    let out = child::run(&[("TALLY_BIG_CASE", case), ("TALLY_CONF", conf)]);
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success() && stdout.contains("case-ok"),
        "{case} ({conf}): {:?}\n{stdout}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    stdout
}

#[test]
fn a_freed_block_serves_the_next_request_of_its_class() {
    run("reuse", "");
}

#[test]
fn the_cache_holds_four_blocks_and_256_kib_at_most() {
    run("budget", "");
}

#[test]
fn an_exiting_thread_and_malloc_trim_send_the_blocks_home() {
    run("home", "");
}

#[test]
fn a_cache_left_unused_goes_home_with_garbage_collection() {
    run("gc", "");
}

#[test]
fn a_growing_block_sends_home_the_cached_blocks_in_its_way() {
    run("grow", "");
}

#[test]
fn a_small_block_grown_into_a_large_class_gets_room_to_grow_on() {
    run("cross", "");
}

#[test]
fn a_buffer_doubled_again_and_again_stays_on_the_same_pages() {
    run("again", "");
}

#[test]
fn a_buffer_built_again_starts_in_the_block_its_last_copy_left_in_the_cache() {
    run("restart", "");
}

#[test]
fn tcache_max_and_tcache_false_turn_it_down() {
    run("off", "tcache_max:32768");
    run("off", "tcache:false");
}

/// The child process of the cases above.
#[test]
#[ignore = "the child process of this file's cases"]
fn child_entry() {
    let case = child::case("TALLY_BIG_CASE");
    // SAFETY: every block is freed once, after its last use.
    on_thread(move || unsafe {
        match case.as_str() {
            "reuse" => {
                let before = large_allocs();
                let p = api::malloc(BIG);
                api::free(p);
                let (live, cached, _) = class_counts(BIG);
                assert_eq!((live, cached), (0, 1), "cached, not live");
                let q = api::malloc(BIG);
                assert_eq!(q, p, "the cached block comes back");
                assert_eq!(
                    large_allocs() - before,
                    1,
                    "the second one did not reach the arena"
                );
                let (live, cached, nmalloc) = class_counts(BIG);
                assert_eq!((live, cached, nmalloc), (1, 0, 2));
                // A block of another class does not take it.
                api::free(q);
                let r = api::malloc(BIG / 2);
                assert_ne!(r, q);
                assert_eq!(class_counts(BIG).1, 1);
                api::free(r);
            }
            "budget" => {
                // Five blocks of 48 KiB and one of 128 KiB, freed: the cache keeps the newest
                // that fit 4 blocks and 256 KiB.
                const SMALL: usize = 48 * 1024;
                let small: Vec<*mut c_void> = (0..5).map(|_| api::malloc(SMALL)).collect();
                let big = api::malloc(BIG / 2);
                for &p in &small {
                    api::free(p);
                }
                assert_eq!(class_counts(SMALL).1, 4, "four slots");
                api::free(big);
                assert_eq!(class_counts(SMALL).1, 2, "room made for 128 KiB within 256 KiB");
                assert_eq!(class_counts(BIG / 2).1, 1);
                // The newest ones stayed: the last two of 48 KiB come back, newest first.
                assert_eq!(api::malloc(SMALL), small[4]);
                assert_eq!(api::malloc(SMALL), small[3]);
            }
            "home" => {
                on_thread(|| {
                    let p = api::malloc(BIG);
                    api::free(p);
                    assert_eq!(class_counts(BIG).1, 1);
                });
                assert_eq!(class_counts(BIG).1, 0, "the exited thread's block went home");
                let p = api::malloc(BIG);
                api::free(p);
                assert_eq!(class_counts(BIG).1, 1);
                api::malloc_trim(0);
                assert_eq!(class_counts(BIG).1, 0, "malloc_trim sent it home");
            }
            "gc" => {
                let p = api::malloc(BIG);
                api::free(p);
                // Small allocations only: garbage collection goes round the bins once per
                // 57 x 64 KiB allocated, and the cache goes home at the second look.
                for _ in 0..2 * 4096 {
                    let q = api::malloc(1024);
                    api::free(q);
                }
                assert_eq!(class_counts(BIG).1, 0, "an unused cache went home");
            }
            "grow" => {
                const K64: usize = 64 * 1024;
                let byte = |p: *mut c_void, i: usize| p.cast::<u8>().add(i);
                // Four blocks of 64 KiB one after the other (a new thread's arena carves a
                // chunk from its front).
                let g = api::malloc(K64);
                let f = api::malloc(K64);
                let k = api::malloc(K64);
                let z = api::malloc(K64);
                assert_eq!(
                    [f, k, z],
                    [byte(g, K64), byte(g, 2 * K64), byte(g, 3 * K64)].map(|p| p.cast()),
                    "four runs in a row"
                );
                // `f` goes home (pushed out of the cache by a block of 256 KiB, then that one by
                // `k`); `k` stays in the cache, a free run's length after `g`.
                api::free(f);
                let pusher = api::malloc(BIG);
                api::free(pusher);
                api::free(k);
                assert_eq!(class_counts(K64).1, 1, "k cached, f home");
                assert_eq!(class_counts(BIG).1, 0, "the pusher went home for k");
                // Grown to 192 KiB, `g` needs `f`'s pages and `k`'s: `k` leaves the cache.
                byte(g, K64 - 1).write(7);
                let grown = api::realloc(g, 3 * K64);
                assert_eq!(grown, g, "grew in place over f and the cached k");
                assert_eq!(byte(grown, K64 - 1).read(), 7);
                assert_eq!(class_counts(K64).1, 0, "k went home");
                for p in [grown, z] {
                    api::free(p);
                }
            }
            "cross" => {
                const K16: usize = 16 * 1024;
                let byte = |p: *mut c_void, i: usize| p.cast::<u8>().add(i);
                // 512 KiB used and freed: pages that may be resident, room for what follows.
                let spare = api::malloc(2 * BIG);
                api::free(spare);
                // The thread's bin of 16 KiB blocks fills with runs in a row: of two taken from
                // it, the lower one has the bin's next block or the other right after it. Freed,
                // it is the bin's next, with no room to grow.
                let (a, b) = (api::malloc(K16), api::malloc(K16));
                let (h, g) = (a.min(b), a.max(b));
                assert!(g as usize - h as usize <= 4 * K16, "one refill's run of blocks");
                api::free(h);
                // A string outgrowing the small classes: not the bin's block, but one placed
                // where it grows on in place.
                let s = api::malloc(4000);
                byte(s, 3999).write(9);
                let q = api::realloc(s, K16);
                assert_ne!(q, h, "not the bin's block with no room after it");
                assert_eq!(byte(q, 3999).read(), 9);
                let grown = api::realloc(q, 2 * K16);
                assert_eq!(grown, q, "grew in place to 32 KiB");
                let grown = api::realloc(grown, 4 * K16);
                assert_eq!(grown, q, "and to 64 KiB");
                // The bin's block serves the next request of its size.
                let next = api::malloc(K16);
                assert_eq!(next, h, "the bin's block serves the next request");
                for p in [next, grown, g] {
                    api::free(p);
                }
            }
            "again" => {
                // Batches of 64 blocks of 256 KiB: the page heap keeps their freed runs whole
                // for the next blocks of the class, with room for 64.
                for _ in 0..3 {
                    let blocks: Vec<_> = (0..64).map(|_| api::malloc(BIG)).collect();
                    for p in blocks {
                        api::free(p);
                    }
                }
                // A buffer doubled by realloc from 4000 bytes to 256 KiB and freed, again and
                // again: it moves once out of the small classes and grows in place from there,
                // and each copy starts in a run an earlier copy was kept in, not in the next free
                // run (the copies walked up the chunks, 256 KiB at a time, every step cold).
                let mut starts = Vec::new();
                for _ in 0..6 {
                    let mut p = api::malloc(4000);
                    let mut size = 4000;
                    let mut start = None;
                    while size < BIG {
                        let next = (size * 2).min(BIG);
                        let q = api::realloc(p, next);
                        assert!(!q.is_null());
                        if next >= 16 * 1024 {
                            let s = *start.get_or_insert(q as usize);
                            assert_eq!(q as usize, s, "grew in place to {next} bytes");
                        }
                        q.cast::<u8>().add(next - 1).write(1);
                        (p, size) = (q, next);
                    }
                    starts.push(start.unwrap());
                    api::free(p);
                }
                // Two runs at most: the thread's big cache holds the last copy's block while the
                // next copy grows in the run the one before it was kept in.
                let mut distinct = starts.clone();
                distinct.sort_unstable();
                distinct.dedup();
                assert!(distinct.len() <= 2, "the copies walk on: {starts:x?}");
            }
            "restart" => {
                const K16: usize = 16 * 1024;
                // A buffer doubled by realloc from 4000 bytes to 256 KiB.
                let build = || {
                    let mut p = api::malloc(4000);
                    let mut size = 4000;
                    let mut at = Vec::new();
                    while size < BIG {
                        let next = (size * 2).min(BIG);
                        p = api::realloc(p, next);
                        assert!(!p.is_null());
                        p.cast::<u8>().add(next - 1).write(1);
                        if next >= K16 {
                            at.push(p as usize);
                        }
                        size = next;
                    }
                    at
                };
                // A 48 KiB block alone in the cache: too short to grow on (room is four times
                // the 16 KiB block's), so the next buffer does not start in it.
                let short = api::malloc(3 * K16);
                api::free(short);
                assert_eq!(class_counts(3 * K16).1, 1, "the 48 KiB block is cached");
                let again = build();
                assert_ne!(again[0], short as usize, "started in a block too short");
                assert!(
                    again.iter().all(|&a| a == again[0]),
                    "never moved out of the large classes: {again:x?}"
                );
                api::free(again[again.len() - 1] as *mut c_void);
                // Taken and freed again: the cache has just been used, so garbage collection
                // leaves it be (else it may send the block home, where the next buffer finds it
                // kept: `a_buffer_doubled_again_and_again_stays_on_the_same_pages`).
                let last = again[again.len() - 1] as *mut c_void;
                assert_eq!(api::malloc(BIG), last, "the cached block");
                api::free(last);
                // The newest entry is the 256 KiB block: the next copy starts in it.
                let third = build();
                assert_eq!(
                    third,
                    vec![again[0]; third.len()],
                    "started in the cached block and grew in place over its pages"
                );
                let (live, cached, _) = class_counts(BIG);
                assert_eq!((live, cached), (1, 0), "the cached block is the buffer");
                api::free(third[third.len() - 1] as *mut c_void);
            }
            "off" => {
                let before = large_allocs();
                let p = api::malloc(BIG);
                api::free(p);
                assert_eq!(class_counts(BIG).1, 0);
                let q = api::malloc(BIG);
                api::free(q);
                assert_eq!(large_allocs() - before, 2, "both from the arena");
            }
            other => panic!("unknown case {other}"),
        }
    });
    println!("case-ok");
}
