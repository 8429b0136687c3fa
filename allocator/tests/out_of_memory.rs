//! Running out of memory, in process, with the lock order checked (the allocator's tests turn
//! on `lock-rank`, so a give-back that took a lock out of order would abort the child).
//!
//! Each scenario runs in a child process (this test binary run again, see `child/mod.rs`) that
//! limits its own address space (`RLIMIT_AS`) to what it has mapped plus a budget, so the test
//! does not depend on the shell. The harness's own allocations (glibc's) are made before the
//! limit: the pointer tables are allocated up front and the threads are started first.
//!
//! - `reuse`: four threads fill 240 MiB in small, large and huge blocks, free them and exit;
//!   then at once (no sleep, `dirty_decay_ms` left long) 100 MiB and 4 MiB blocks up to 300 MiB
//!   must be had: what Tally still holds free is given back when the OS refuses a mapping.
//! - `exhaust`: four threads allocate until the limit refuses, three rounds, each failure null
//!   with `ENOMEM`, each thread freeing its blocks between rounds while others still allocate
//!   and give back: no deadlock, no crash, and 100 MiB can be had at the end.

mod child;
mod statm;

use std::ffi::c_void;
use std::sync::{Arc, Barrier};
use std::time::{Duration, Instant};

use tally::api;

const MIB: usize = 1 << 20;

/// Address space mapped now (`VmSize`), read without allocating.
fn address_space() -> usize {
    statm::statm_bytes(0)
}

/// Limits the address space to what is mapped now plus `budget` bytes.
fn limit_address_space(budget: usize) {
    let limit = (address_space() + budget) as libc::rlim_t;
    let mut rl = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: valid rlimit pointers.
    unsafe {
        assert_eq!(libc::getrlimit(libc::RLIMIT_AS, &mut rl), 0);
        rl.rlim_cur = limit.min(rl.rlim_max);
        assert_eq!(libc::setrlimit(libc::RLIMIT_AS, &rl), 0);
    }
}

fn errno() -> i32 {
    // SAFETY: __errno_location is always valid for the calling thread.
    unsafe { *libc::__errno_location() }
}

/// Writes one byte per page, so every page is really backed.
fn touch(p: *mut c_void, size: usize, value: u8) {
    let p = p as *mut u8;
    // SAFETY: `p` is a live block of `size` bytes.
    unsafe {
        for i in (0..size).step_by(4096) {
            *p.add(i) = value;
        }
        *p.add(size - 1) = value;
    }
}

/// The size of block `n` of a mix: 40% of the bytes small, 30% large, 30% huge.
fn mixed_size(n: usize, small: usize, large: usize, total: usize) -> usize {
    if small * 10 <= total * 4 {
        16 + (n * 37) % 2032
    } else if large * 10 <= total * 3 {
        20 * 1024 + (n * 104_729) % (1536 * 1024 - 20 * 1024)
    } else {
        3 * MIB + (n * 7919) % (8 * MIB)
    }
}

/// Fills `bytes` in the mix into `blocks`, writing every page; frees them all.
fn fill_and_free(blocks: &mut [usize], bytes: usize) {
    let (mut small, mut large, mut total, mut n) = (0, 0, 0, 0);
    while total < bytes {
        let size = mixed_size(n, small, large, total);
        if size < 15 * 1024 {
            small += size;
        } else if size <= 2 * MIB {
            large += size;
        }
        let p = api::malloc(size);
        assert!(
            !p.is_null(),
            "fill: malloc({size}) failed after {} MiB",
            total / MIB
        );
        touch(p, size, n as u8);
        blocks[n] = p as usize;
        total += size;
        n += 1;
    }
    for &p in &blocks[..n] {
        // SAFETY: each block is live and freed once.
        unsafe { api::free(p as *mut c_void) };
    }
}

/// 100 MiB, then 4 MiB blocks up to 300 MiB, all written, then freed.
fn reuse(blocks: &mut [usize], when: &str) {
    let big = api::malloc(100 * MIB);
    assert!(
        !big.is_null(),
        "{when}: malloc(100 MiB) failed (errno {})",
        errno()
    );
    touch(big, 100 * MIB, 1);
    let n = 50;
    for (i, slot) in blocks[..n].iter_mut().enumerate() {
        let p = api::malloc(4 * MIB);
        assert!(
            !p.is_null(),
            "{when}: malloc(4 MiB) failed after {i} (errno {})",
            errno()
        );
        touch(p, 4 * MIB, 2);
        *slot = p as usize;
    }
    // SAFETY: live blocks, each freed once.
    unsafe {
        for &p in &blocks[..n] {
            api::free(p as *mut c_void);
        }
        api::free(big);
    }
}

const THREADS: usize = 4;

/// Two barriers for the workers and the main thread: `ready` once every worker runs (its
/// thread-local set-up, which may allocate through glibc, done), `start` once the limit is set.
fn barriers() -> (Arc<Barrier>, Arc<Barrier>) {
    (
        Arc::new(Barrier::new(THREADS + 1)),
        Arc::new(Barrier::new(THREADS + 1)),
    )
}

fn reuse_scenario() {
    let (ready, start) = barriers();
    let workers: Vec<_> = (0..THREADS)
        .map(|_| {
            let (ready, start) = (Arc::clone(&ready), Arc::clone(&start));
            let mut blocks = vec![0usize; 200_000];
            std::thread::spawn(move || {
                ready.wait();
                start.wait();
                fill_and_free(&mut blocks, 60 * MIB);
                blocks.len()
            })
        })
        .collect();
    let mut blocks = vec![0usize; 1000];
    println!("filling");
    ready.wait();
    limit_address_space(400 * MIB);
    start.wait();
    for w in workers {
        w.join().unwrap();
    }
    reuse(&mut blocks, "after the threads' fill");
    println!("reuse: ok");
}

fn exhaust_scenario() {
    let (ready, start) = barriers();
    let workers: Vec<_> = (0..THREADS)
        .map(|t| {
            let (ready, start) = (Arc::clone(&ready), Arc::clone(&start));
            let mut blocks = vec![0usize; 400_000];
            std::thread::spawn(move || {
                ready.wait();
                start.wait();
                let mut failures = 0;
                for round in 0..3 {
                    let mut n = 0;
                    loop {
                        // One block in 50 huge (5 MiB), 9 large (100 KiB), the rest small.
                        let size = match (n + t) % 50 {
                            0 => 5 * MIB,
                            1..=9 => 100 * 1024,
                            k => 16 + k * 40,
                        };
                        let p = api::malloc(size);
                        if p.is_null() {
                            assert_eq!(errno(), libc::ENOMEM, "thread {t}, round {round}");
                            failures += 1;
                            break;
                        }
                        touch(p, size, 3);
                        blocks[n] = p as usize;
                        n += 1;
                        assert!(n < blocks.len(), "memory never ran out");
                    }
                    for &p in &blocks[..n] {
                        // SAFETY: each block is live and freed once.
                        unsafe { api::free(p as *mut c_void) };
                    }
                }
                failures
            })
        })
        .collect();
    let mut blocks = vec![0usize; 1000];
    println!("exhausting");
    ready.wait();
    limit_address_space(400 * MIB);
    let began = Instant::now();
    start.wait();
    let failures: usize = workers.into_iter().map(|w| w.join().unwrap()).sum();
    assert_eq!(failures, 3 * THREADS);
    assert!(began.elapsed() < Duration::from_secs(60), "{:?}", began.elapsed());
    reuse(&mut blocks, "after exhaustion");
    println!("exhaust: ok");
}

/// The child process of the scenarios below (run by [`scenario`]).
#[test]
#[ignore = "child process of the scenarios"]
fn child_entry() {
    match child::case("TALLY_OOM_SCENARIO").as_str() {
        "reuse" => reuse_scenario(),
        "exhaust" => exhaust_scenario(),
        other => panic!("unknown scenario {other}"),
    }
}

fn scenario(name: &str, conf: &str) {
    let out = child::run(&[("TALLY_OOM_SCENARIO", name), ("TALLY_CONF", conf)]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success() && stdout.contains(&format!("{name}: ok")),
        "{name} ({conf}): child failed\n{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn freed_memory_is_reused_at_once_when_the_os_refuses_more() {
    scenario("reuse", "dirty_decay_ms:1000000");
}

#[test]
fn freed_memory_is_reused_at_once_with_a_muzzy_stage() {
    scenario("reuse", "dirty_decay_ms:1000000,muzzy_decay_ms:1000000");
}

#[test]
fn threads_running_out_of_memory_get_enomem_and_carry_on() {
    scenario("exhaust", "");
}
