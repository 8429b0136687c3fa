//! `programs/stress.c` under Tally: 8 threads of random-size allocations with content checks,
//! cross-thread frees, realloc, calloc, aligned allocation (up to 1 MiB) and
//! `malloc_usable_size`, plus the C edge cases (POSIX errors, glibc behaviour).
//!
//! The program checks everything itself and exits 1 with a message on the first mismatch; this
//! test runs it plain first (proving the program is right on glibc), then preloaded, and checks
//! that the cross-thread paths were really exercised.

use std::process::Command;
use tally_tests::{compile_c, find_value, run, Mode, ScratchDir, DEFAULT_TIMEOUT};

#[test]
fn c_stress_passes_under_tally() {
    let scratch = ScratchDir::new(env!("CARGO_TARGET_TMPDIR"), "stress");
    let exe = compile_c("stress.c", scratch.path());
    for mode in Mode::BOTH {
        let mut cmd = Command::new(&exe);
        cmd.args(["8", "150000", "1"]);
        let outcome = run(cmd, mode, DEFAULT_TIMEOUT);
        outcome.assert_success();
        let stdout = outcome.stdout_text();
        assert!(stdout.contains("stress: ok"), "{}", outcome.dump());
        for (key, minimum) in [
            ("threads", 8),
            ("allocs", 100_000),
            ("reallocs", 10_000),
            ("cross_thread_freed", 10_000),
            ("cross_thread_adopted", 1_000),
            ("large", 100),
            ("aligned", 10_000),
            ("callocs", 10_000),
        ] {
            let value = find_value(&stdout, key);
            assert!(
                value.is_some_and(|v| v >= minimum),
                "{} run: counter {key} = {value:?}, want >= {minimum}\n{stdout}",
                mode.name()
            );
        }
        if mode == Mode::Preloaded {
            outcome.assert_used_tally();
        }
        eprintln!(
            "stress ({}, {:.2?}): {}",
            mode.name(),
            outcome.elapsed,
            stdout.trim()
        );
    }
}
