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

/// Returns the live estimate with 50 rounds' blocks held, and after all of them were freed.
fn churn() -> (f64, f64) {
    let mut peak = 0.0f64;
    let mut kept = Vec::with_capacity(4096);
    for round in 0..50usize {
        for i in 0..4096usize {
            // 16 B to 32 KiB: every class the thread cache keeps, small and large (about
            // 22 MiB a round).
            let size = (16usize << (i % 12)).min(32 * 1024);
            kept.push(black_box(vec![round as u8; size]));
        }
        peak = peak.max(live_mib());
        kept.clear();
    }
    (peak, live_mib())
}

/// The child process of the test below.
#[test]
#[ignore = "child process of the scenarios"]
fn child_entry() {
    let case = child::case("TALLY_GLOBAL_PROF_CHILD");
    assert_eq!(case, "churn", "unknown case");
    let (held, left) = churn();
    println!("held_mib={held:.1} left_mib={left:.1}");
}

#[test]
fn dealloc_returns_sampled_blocks_to_the_profiler() {
    let out = child::run(&[
        ("TALLY_GLOBAL_PROF_CHILD", "churn"),
        ("TALLY_CONF", "prof:true,lg_prof_sample:12"),
    ]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let value = |key: &str| -> f64 {
        stdout
            .split(&format!("{key}="))
            .nth(1)
            .and_then(|r| r.split_whitespace().next())
            .and_then(|n| n.parse().ok())
            .unwrap_or_else(|| panic!("no {key} in {stdout}"))
    };
    // About 22 MiB live at a time; once freed, only the test's own few blocks remain. A sampled
    // block that `dealloc` took for an ordinary one would stay in the live table: 50 rounds of
    // them, about 1 GiB.
    assert!(value("held_mib") > 10.0, "{stdout}");
    assert!(value("left_mib") < 2.0, "{stdout}");
}
