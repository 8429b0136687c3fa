//! `programs/churn.c` under Tally: 5000 short-lived threads in waves of 16, each allocating
//! about a megabyte and leaving blocks for later threads to free. Resident memory must stay
//! bounded by the work in flight, not grow with the number of threads ever started.
//!
//! Bound: the final RSS may be at most `max(2 × warm, warm + 64 MiB)`, where `warm` is the RSS
//! after the first 500 threads. Leaking even 16 KiB of cache per exited thread would add
//! 4500 × 16 KiB ≈ 70 MiB and fail it; a slowly filling but bounded cache passes.

use std::process::Command;
use tally_tests::{compile_c, find_value, run, Mode, ScratchDir, DEFAULT_TIMEOUT};

const THREADS: u64 = 5000;
const SLACK_KIB: u64 = 64 * 1024;

#[test]
fn thread_churn_keeps_rss_bounded_under_tally() {
    let scratch = ScratchDir::new(env!("CARGO_TARGET_TMPDIR"), "churn");
    let exe = compile_c("churn.c", scratch.path());
    for mode in Mode::BOTH {
        let mut cmd = Command::new(&exe);
        cmd.args([THREADS.to_string(), "16".to_owned()]);
        let outcome = run(cmd, mode, DEFAULT_TIMEOUT);
        outcome.assert_success();
        let stdout = outcome.stdout_text();
        assert!(stdout.contains("churn: ok"), "{}", outcome.dump());
        assert_eq!(find_value(&stdout, "threads"), Some(THREADS), "{stdout}");
        let warm = find_value(&stdout, "rss_after_warmup_kib").expect("warm-up RSS printed");
        let last = find_value(&stdout, "rss_final_kib").expect("final RSS printed");
        let bound = (2 * warm).max(warm + SLACK_KIB);
        eprintln!(
            "churn ({}, {:.2?}): RSS after 500 threads {warm} KiB, after {THREADS} threads \
             {last} KiB (bound {bound} KiB)",
            mode.name(),
            outcome.elapsed
        );
        assert!(
            last <= bound,
            "{} run: RSS grew from {warm} KiB after 500 threads to {last} KiB after {THREADS} \
             (bound {bound} KiB): per-thread memory is not returned when threads exit",
            mode.name()
        );
        if mode == Mode::Preloaded {
            outcome.assert_used_tally();
        }
    }
}
