//! `GlobalAlloc::dealloc` with the profiler on: Rust's `dealloc` skips the page map for the
//! classes the thread cache keeps, so it must still notice sampled blocks (which start a page of
//! their own) and hand them back to the profiler. Runs in a child process with a high sampling
//! rate; every block is freed through `dealloc`, so the profiler must end with nothing live.

mod child;

use std::hint::black_box;

#[global_allocator]
static A: tally::Tally = tally::Tally;

/// Estimated live bytes in sampled blocks, MiB.
fn live_mib() -> f64 {
    tally::prof::top_stacks(1000).iter().map(|s| s.bytes).sum::<f64>() / 1048576.0
}

/// Returns the live estimate with 50 rounds' blocks held, and after all of them were freed: each
/// round `per_round` blocks of 16 B to 32 KiB (every class the thread cache keeps, small and
/// large), made by `make(round, size)`.
fn churn_with(per_round: usize, make: impl Fn(usize, usize) -> Vec<u8>) -> (f64, f64) {
    let mut peak = 0.0f64;
    let mut kept = Vec::with_capacity(per_round);
    for round in 0..50usize {
        for i in 0..per_round {
            kept.push(black_box(make(round, (16usize << (i % 12)).min(32 * 1024))));
        }
        peak = peak.max(live_mib());
        kept.clear();
    }
    (peak, live_mib())
}

/// [`churn_with`] 4096 blocks a round, each allocated at its size (about 22 MiB a round).
fn churn() -> (f64, f64) {
    churn_with(4096, |round, size| vec![round as u8; size])
}

/// [`churn_with`] 1024 blocks a round, each grown by `push` from nothing (Rust's `realloc`,
/// small classes to small ones by the layout, sampled blocks the whole way).
fn growth() -> (f64, f64) {
    churn_with(1024, |round, size| {
        let mut v = Vec::new();
        for k in 0..size {
            v.push((round + k) as u8);
        }
        v
    })
}

/// Where blocks lie: with every allocation sampled (`lg_prof_sample:0`), then with sampling
/// stopped. Prints how many of each kind lie in the sampled region, and what is left live once
/// all are freed through `dealloc`.
fn placement() {
    let region = tally::prof::sampled_region();
    println!("region={region:x?}");
    let inside = |b: &Vec<u8>| {
        region
            .as_ref()
            .is_some_and(|r| r.contains(&(b.as_ptr() as usize)))
    };
    let sizes = || (0..2000usize).map(|i| (16usize << (i % 12)).min(32 * 1024) - 8 * (i % 2));
    let sampled: Vec<Vec<u8>> = sizes().map(|n| black_box(vec![1u8; n])).collect();
    let page_aligned = sampled.iter().filter(|b| b.as_ptr() as usize % 4096 == 0).count();
    assert!(tally::prof::deactivate());
    let ordinary: Vec<Vec<u8>> = sizes().map(|n| black_box(vec![2u8; n])).collect();
    println!(
        "sampled={} sampled_inside={} sampled_page_aligned={page_aligned} ordinary={} ordinary_inside={}",
        sampled.len(),
        sampled.iter().filter(|b| inside(b)).count(),
        ordinary.len(),
        ordinary.iter().filter(|b| inside(b)).count(),
    );
    let held = live_mib();
    drop(sampled);
    drop(ordinary);
    println!("held_mib={held:.1} left_mib={:.1}", live_mib());
}

/// Blocks of 1000 bytes from `site_a`, 2000 from `site_b`, 3000 from `site_c` (a call deeper).
#[inline(never)]
fn site_a(kept: &mut Vec<Vec<u8>>) {
    kept.push(black_box(vec![1u8; 1000]));
}

#[inline(never)]
fn site_b(kept: &mut Vec<Vec<u8>>) {
    kept.push(black_box(vec![2u8; 2000]));
}

#[inline(never)]
fn site_c(kept: &mut Vec<Vec<u8>>) {
    deeper(kept);
    black_box(());
}

#[inline(never)]
fn deeper(kept: &mut Vec<Vec<u8>>) {
    kept.push(black_box(vec![3u8; 3000]));
}

/// With every allocation sampled (`lg_prof_sample:0`): runs of blocks from three call sites,
/// all held, counted from a `prof.reset` on and with sampling stopped after them. Prints, per
/// block size, the live objects of the stacks whose blocks are all that size, how many stacks
/// hold blocks of mixed sizes, and how many samples took their stack id from the walker's key.
fn sites() {
    use std::sync::atomic::Ordering::Relaxed;
    let mut kept = Vec::with_capacity(1000);
    assert!(tally::prof::reset());
    let known = tally_profiler::STACKS_KNOWN.load(Relaxed);
    // Opaque to the compiler, so that each run is one loop (one call per site), not unrolled.
    for (site, run) in black_box([(0, 40), (1, 25), (0, 15), (2, 10), (1, 5)]) {
        for _ in 0..run {
            match site {
                0 => site_a(&mut kept),
                1 => site_b(&mut kept),
                _ => site_c(&mut kept),
            }
        }
    }
    let known = tally_profiler::STACKS_KNOWN.load(Relaxed) - known;
    assert!(tally::prof::deactivate());
    let (mut objects, mut mixed) = ([0.0f64; 3], 0);
    for s in tally::prof::top_stacks(256) {
        match [1000.0, 2000.0, 3000.0]
            .iter()
            .position(|&size| s.bytes == size * s.objects)
        {
            Some(i) => objects[i] += s.objects,
            None => mixed += 1,
        }
    }
    println!(
        "size1000={} size2000={} size3000={} mixed={mixed} known={known}",
        objects[0], objects[1], objects[2]
    );
    drop(kept);
}

/// The child process of the tests below.
#[test]
#[ignore = "child process of the scenarios"]
fn child_entry() {
    match child::case("TALLY_GLOBAL_PROF_CHILD").as_str() {
        "churn" => {
            let (held, left) = churn();
            println!("held_mib={held:.1} left_mib={left:.1}");
        }
        "growth" => {
            let (held, left) = growth();
            println!("held_mib={held:.1} left_mib={left:.1}");
        }
        "placement" => placement(),
        "sites" => sites(),
        case => panic!("unknown case {case}"),
    }
}

/// The number after `key=` in `stdout`.
#[track_caller]
fn value(stdout: &str, key: &str) -> f64 {
    stdout
        .split_whitespace()
        .find_map(|t| t.strip_prefix(key)?.strip_prefix('='))
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no {key} in {stdout}"))
}

/// Runs the child case `case` with `conf`, under an address-space limit of `limit_as` bytes if
/// given; its stdout, after checking that it succeeded.
fn run_case(case: &str, conf: &str, limit_as: Option<u64>) -> String {
    let env = [("TALLY_GLOBAL_PROF_CHILD", case), ("TALLY_CONF", conf)];
    let out = match limit_as {
        Some(_) => child::run_limited(&env, limit_as),
        None => child::run(&env),
    };
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    stdout
}

#[test]
fn dealloc_returns_sampled_blocks_to_the_profiler() {
    let stdout = run_case("churn", "prof:true,lg_prof_sample:12", None);
    // About 22 MiB live at a time; once freed, only the test's own few blocks remain. A sampled
    // block that `dealloc` took for an ordinary one would stay in the live table: 50 rounds of
    // them, about 1 GiB.
    assert!(value(&stdout, "held_mib") > 10.0, "{stdout}");
    assert!(value(&stdout, "left_mib") < 2.0, "{stdout}");
}

/// Rust's `realloc` skips the page map too between small classes: the blocks it moves out of
/// must leave the profile when sampled, as `dealloc`'s do.
#[test]
fn realloc_returns_sampled_blocks_to_the_profiler() {
    let stdout = run_case("growth", "prof:true,lg_prof_sample:12", None);
    // About 5.5 MiB live at a time; a sampled block taken for an ordinary one at each growth
    // step would stay live: dozens of MiB over 50 rounds.
    assert!(value(&stdout, "held_mib") > 2.0, "{stdout}");
    assert!(value(&stdout, "left_mib") < 1.0, "{stdout}");
}

/// With the profiler on, sampled blocks of the cached classes lie in the sampled region and no
/// other block does: the one test Rust's `dealloc` makes. Freed through `dealloc`, every sampled
/// block leaves the profile.
#[test]
fn sampled_blocks_lie_in_their_region_and_no_other_block_does() {
    let stdout = run_case("placement", "prof:true,lg_prof_sample:0", None);
    assert!(stdout.contains("region=Some("), "{stdout}");
    assert_eq!(value(&stdout, "sampled"), 2000.0, "{stdout}");
    assert_eq!(value(&stdout, "sampled_inside"), 2000.0, "{stdout}");
    assert_eq!(value(&stdout, "sampled_page_aligned"), 2000.0, "{stdout}");
    assert_eq!(value(&stdout, "ordinary_inside"), 0.0, "{stdout}");
    assert!(value(&stdout, "held_mib") > 5.0, "{stdout}");
    assert!(value(&stdout, "left_mib") < 0.5, "{stdout}");
}

/// Samples from one call site in a row take their stack id from the walker's key (the walk
/// repeated the one before it), and each call site's blocks are still counted on its own stack:
/// 55 blocks of 1000 bytes, 30 of 2000, 10 of 3000, in runs of each, and no stack with blocks of
/// two sizes (what a wrong id, a run's id kept for the next site's, would make).
#[test]
fn repeated_stacks_keep_their_own_ids() {
    let stdout = run_case("sites", "prof:true,lg_prof_sample:0", None);
    assert_eq!(value(&stdout, "size1000"), 55.0, "{stdout}");
    assert_eq!(value(&stdout, "size2000"), 30.0, "{stdout}");
    assert_eq!(value(&stdout, "size3000"), 10.0, "{stdout}");
    assert_eq!(value(&stdout, "mixed"), 0.0, "{stdout}");
    // All but the first of each run (39 + 24 + 14 + 9 + 4 = 90), less a few where the compiler
    // peeled a loop's first iteration into a call of its own (86 in the build measured).
    assert!(value(&stdout, "known") >= 85.0, "{stdout}");
}

/// Where the address space is too small for the region (`ulimit -v`), sampled blocks lie among
/// the others, and `dealloc` still finds every one (by its page) and hands it back.
#[test]
fn without_a_region_dealloc_still_finds_sampled_blocks() {
    let stdout = run_case("placement", "prof:true,lg_prof_sample:0", Some(4 << 30));
    assert!(stdout.contains("region=None"), "{stdout}");
    assert_eq!(value(&stdout, "sampled_page_aligned"), 2000.0, "{stdout}");
    assert!(value(&stdout, "held_mib") > 5.0, "{stdout}");
    assert!(value(&stdout, "left_mib") < 0.5, "{stdout}");
    let stdout = run_case("churn", "prof:true,lg_prof_sample:12", Some(4 << 30));
    assert!(value(&stdout, "held_mib") > 10.0, "{stdout}");
    assert!(value(&stdout, "left_mib") < 2.0, "{stdout}");
}
