//! `programs/fork.c` under Tally: 200 forks of a process whose 4 worker threads allocate without
//! pause. Each child frees a pre-fork block, allocates from its main thread and from a new
//! thread (with a cross-thread free), and exits 0.
//!
//! A child that deadlocks (an allocator lock held by a worker at fork time and never released in
//! the child) is killed by the parent after 10 s and reported; the whole run is bounded here by
//! a 60 s timeout, after which the process group is killed and the test fails.

use std::process::Command;
use std::time::Duration;
use tally_tests::{compile_c, find_value, run, Mode, ScratchDir};

#[test]
fn fork_in_threaded_process_works_under_tally() {
    let scratch = ScratchDir::new(env!("CARGO_TARGET_TMPDIR"), "fork");
    let exe = compile_c("fork.c", scratch.path());
    for mode in Mode::BOTH {
        let mut cmd = Command::new(&exe);
        cmd.args(["200", "4"]);
        let outcome = run(cmd, mode, Duration::from_secs(60));
        outcome.assert_success();
        let stdout = outcome.stdout_text();
        assert!(
            stdout.contains("fork: ok") && find_value(&stdout, "forks") == Some(200),
            "{}",
            outcome.dump()
        );
        assert!(
            find_value(&stdout, "worker_ops").is_some_and(|ops| ops >= 10_000),
            "worker threads barely ran, so forks did not race with allocation:\n{stdout}"
        );
        if mode == Mode::Preloaded {
            // Children _exit(), so only the parent prints stats; it must show use.
            outcome.assert_used_tally();
        }
        eprintln!(
            "fork ({}, {:.2?}): {}",
            mode.name(),
            outcome.elapsed,
            stdout.trim()
        );
    }
}
