//! Statistics agree with what the program holds: after a multithreaded stress run, with all
//! threads finished, `allocated` grew by exactly the usable sizes of the blocks still live, each
//! class's `live` count grew by exactly its live blocks, and no counter went negative (wrapped).
//!
//! Runs in a child process (this binary again, one test thread, see `child/mod.rs`), so that no
//! other test's allocations move the counters while it measures.

mod child;

use std::collections::HashMap;
use std::ffi::c_void;
use std::sync::{mpsc, Arc, Barrier};

use tally::api;

const THREADS: usize = 8;

/// A block the stress run keeps: address and usable size.
#[derive(Clone, Copy)]
struct Kept(usize, usize);

fn xorshift(state: &mut u64) -> u64 {
    *state ^= *state << 13;
    *state ^= *state >> 7;
    *state ^= *state << 17;
    *state
}

/// One worker: allocates blocks of mixed sizes, frees some itself, sends some to the next
/// worker to free (cross-thread frees), and returns the ones it keeps.
fn worker(
    id: usize,
    to_next: mpsc::SyncSender<usize>,
    from_prev: mpsc::Receiver<usize>,
    mut kept: Vec<Kept>,
    sync: Arc<[Barrier; 3]>,
) -> Vec<Kept> {
    // Started: wait until the main thread has taken its first measurement.
    sync[0].wait();
    sync[0].wait();
    let mut rng = 0x9E37_79B9_7F4A_7C15u64 ^ (id as u64 + 1);
    for i in 0..20_000 {
        let r = xorshift(&mut rng);
        let size = match r % 100 {
            0 => 3 << 20,                                  // huge
            1..=4 => 20_000 + (r >> 8) as usize % 200_000, // large
            _ => 1 + (r >> 8) as usize % 4000,             // small
        };
        let p = if r % 7 == 0 {
            api::calloc(1, size)
        } else {
            api::malloc(size)
        };
        assert!(!p.is_null());
        match (r >> 32) % 4 {
            0 => {
                // SAFETY: live block, freed once.
                unsafe { api::free(p) }
            }
            1 => to_next.send(p as usize).unwrap(),
            _ => kept.push(Kept(p as usize, api::malloc_usable_size(p))),
        }
        if i % 64 == 0 {
            while let Ok(q) = from_prev.try_recv() {
                // SAFETY: a live block another worker gave up.
                unsafe { api::free(q as *mut c_void) };
            }
        }
    }
    drop(to_next);
    // Drain without blocking (a blocking receive makes std allocate a per-thread wait context,
    // which would count as a live block), and keep the receiver: the channel must outlive the
    // measurements (it was allocated before the first one and is freed after the last).
    loop {
        match from_prev.try_recv() {
            // SAFETY: a live block another worker gave up.
            Ok(q) => unsafe { api::free(q as *mut c_void) },
            Err(mpsc::TryRecvError::Empty) => std::thread::yield_now(),
            Err(mpsc::TryRecvError::Disconnected) => break,
        }
    }
    // Quiescent: the main thread measures while we wait.
    sync[1].wait();
    sync[1].wait();
    // Then free what we kept (the records stay, for the main thread's arithmetic) and wait for
    // the last measurement.
    for k in &kept {
        // SAFETY: each kept block is live and freed once.
        unsafe { api::free(k.0 as *mut c_void) };
    }
    sync[2].wait();
    sync[2].wait();
    drop(from_prev);
    kept
}

fn class_index(stats: &tally::Stats, usable: usize) -> Option<usize> {
    stats.classes.iter().position(|c| c.size == usable as u64)
}

fn check_counters(s: &tally::Stats) {
    let limit = 1u64 << 60;
    for c in &s.classes {
        assert!(
            c.live <= c.nmalloc.max(c.live) && c.nfree <= c.nmalloc,
            "class {}: {c:?}",
            c.size
        );
        for v in [c.live, c.nmalloc, c.nfree, c.slabs, c.cached, c.misses] {
            assert!(v < limit, "class {}: a counter wrapped: {c:?}", c.size);
        }
    }
    for a in &s.arenas[..s.narenas] {
        for v in [a.active_pages, a.dirty_pages, a.muzzy_pages, a.retained_pages] {
            assert!(v < limit, "arena counter wrapped: {a:?}");
        }
    }
    for v in [
        s.allocated,
        s.active,
        s.resident,
        s.mapped,
        s.retained,
        s.metadata,
    ] {
        assert!(v < limit, "a total wrapped: {s:?}");
    }
    assert!(
        s.allocated <= s.active,
        "allocated {} > active {}",
        s.allocated,
        s.active
    );
    assert!(s.active <= s.mapped);
}

fn stress_and_check() {
    // Everything the run needs is allocated and every thread started before the first
    // measurement, and the threads are still alive (quiescent, waiting) at the second: so the
    // only blocks that differ are the ones the workers allocated and kept. (Starting or ending a
    // thread in between would count glibc's per-thread allocations, such as a new thread's DTV.)
    let mut kept: Vec<Kept> = Vec::with_capacity(THREADS * 20_000);
    let sync = Arc::new([
        Barrier::new(THREADS + 1),
        Barrier::new(THREADS + 1),
        Barrier::new(THREADS + 1),
    ]);
    let mut senders = Vec::new();
    let mut receivers = Vec::new();
    for _ in 0..THREADS {
        // Bounded, so the buffer is allocated here, not while the workers send.
        let (tx, rx) = mpsc::sync_channel(20_000);
        senders.push(tx);
        receivers.push(rx);
    }
    // Worker i sends to worker i+1.
    receivers.rotate_right(1);
    let handles: Vec<_> = senders
        .into_iter()
        .zip(receivers)
        .enumerate()
        .map(|(id, (tx, rx))| {
            let (own, sync) = (Vec::with_capacity(20_000), sync.clone());
            std::thread::spawn(move || worker(id, tx, rx, own, sync))
        })
        .collect();
    sync[0].wait();
    let before = tally::stats();
    check_counters(&before);
    sync[0].wait();
    sync[1].wait();
    let after = tally::stats();
    check_counters(&after);
    sync[1].wait();
    sync[2].wait();
    let end = tally::stats();
    check_counters(&end);
    sync[2].wait();
    for h in handles {
        kept.extend(h.join().unwrap());
    }

    let expected: u64 = kept.iter().map(|k| k.1 as u64).sum();
    if std::env::var("TALLY_STATS_DEBUG").is_ok() {
        let mut want: HashMap<u64, u64> = HashMap::new();
        for k in &kept {
            *want.entry(k.1 as u64).or_default() += 1;
        }
        for (c, (a, b)) in after.classes.iter().zip(before.classes.iter()).enumerate() {
            let got = a.live - b.live;
            let w = want.get(&a.size).copied().unwrap_or(0);
            if got != w {
                println!("class {c} size {}: live grew {got}, kept {w}", a.size);
            }
        }
    }
    assert_eq!(
        after.allocated - before.allocated,
        expected,
        "allocated grew by {} but the live blocks hold {expected} usable bytes",
        after.allocated as i64 - before.allocated as i64
    );
    let mut per_class: HashMap<usize, u64> = HashMap::new();
    for k in &kept {
        if let Some(c) = class_index(&after, k.1) {
            *per_class.entry(c).or_default() += 1;
        }
    }
    for (&c, &n) in &per_class {
        assert_eq!(
            after.classes[c].live - before.classes[c].live,
            n,
            "class {}: live grew by the wrong amount",
            after.classes[c].size
        );
    }
    drop(per_class);
    assert!(after.counters.tcache_flushes > before.counters.tcache_flushes);
    assert!(after.counters.tcache_fills > before.counters.tcache_fills);
    assert!(after.huge_live - before.huge_live == kept.iter().filter(|k| k.1 >= 3 << 20).count() as u64);

    assert_eq!(
        end.allocated, before.allocated,
        "freeing every kept block brings allocated back"
    );
    println!("stats-ok kept={} bytes={expected}", kept.len());
}

/// The child process of the tests below.
#[test]
#[ignore = "child process of the scenarios"]
fn child_entry() {
    match child::case("TALLY_STATS_CHILD").as_str() {
        "stress" => stress_and_check(),
        // Only the process's exit, where `stats_print` writes its report.
        "exit" => println!("exit-ok"),
        other => panic!("unknown case {other}"),
    }
}

#[test]
fn allocated_matches_live_blocks_after_multithreaded_stress() {
    let out = child::run(&[("TALLY_STATS_CHILD", "stress")]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success() && stdout.contains("stats-ok"),
        "{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn stats_print_text_and_json() {
    // The report goes to stderr at exit; check both forms in child processes.
    for (conf, check) in [
        ("stats_print:true", "text"),
        ("stats_print:true,stats_print_opts:J", "json"),
    ] {
        let out = child::run(&[("TALLY_STATS_CHILD", "exit"), ("TALLY_CONF", conf)]);
        assert!(
            out.status.success() && String::from_utf8_lossy(&out.stdout).contains("exit-ok"),
            "{conf}: {out:?}"
        );
        let stderr = String::from_utf8_lossy(&out.stderr);
        if check == "text" {
            let first = stderr
                .lines()
                .find(|l| l.starts_with("tally: stats:"))
                .expect("stats line");
            assert!(
                first.contains(" allocated=") && first.contains(" resident=") && first.contains(" metadata=")
            );
            assert!(stderr.contains("Size classes") && stderr.contains("Arenas"));
            assert!(stderr.trim_end().ends_with("tally: end of stats"), "{stderr}");
        } else {
            let json = stderr
                .lines()
                .find(|l| l.starts_with("{\"tally\":"))
                .expect("JSON line");
            for key in [
                "\"allocated\":",
                "\"classes\":[",
                "\"arenas\":[",
                "\"counters\":{",
            ] {
                assert!(json.contains(key), "{key} missing from {json}");
            }
            assert!(json.ends_with("}}"));
            // Balanced braces and brackets: a cheap well-formedness check.
            let opens = json.matches(['{', '[']).count();
            let closes = json.matches(['}', ']']).count();
            assert_eq!(opens, closes);
        }
    }
}
