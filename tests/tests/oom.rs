//! `programs/oom.c` under Tally: a program that limits its own address space to 512 MiB
//! (`setrlimit(RLIMIT_AS)`), fills 400 MiB in small, large and huge blocks and frees it all must
//! at once (no sleep) get 100 MiB and then 4 MiB blocks up to 300 MiB, as with glibc; requests
//! the kernel cannot back (64 TiB) fail with `ENOMEM` from malloc, calloc, realloc (block
//! intact), posix_memalign, aligned_alloc, memalign and valloc; and when the address space truly
//! runs out, malloc returns NULL with `ENOMEM`, the program carries on, and after freeing
//! everything it gets 100 MiB again.
//!
//! The program checks everything itself and exits 1 with a message on the first failure; it runs
//! plain first (proving the program is right on glibc), then preloaded with the default options,
//! with a `dirty_decay_ms` far longer than the run (nothing decays on its own: only the give-back
//! on a refused mapping can make the memory reusable), and with a muzzy stage as long.

use std::process::Command;
use tally_tests::{compile_c, run, Mode, Outcome, ScratchDir, DEFAULT_TIMEOUT};

/// Runs the program in `mode`; `conf` is added to the preloaded runs' `TALLY_CONF` (through
/// `env`, since [`run`] sets the variable for the mode).
fn run_oom(exe: &std::path::Path, mode: Mode, conf: &str) -> Outcome {
    let cmd = if conf.is_empty() {
        Command::new(exe)
    } else {
        let mut cmd = Command::new("env");
        cmd.arg(format!("TALLY_CONF=stats_print:true,{conf}")).arg(exe);
        cmd
    };
    let outcome = run(cmd, mode, DEFAULT_TIMEOUT);
    outcome.assert_success();
    let stdout = outcome.stdout_text();
    assert!(stdout.contains("oom: ok"), "{}", outcome.dump());
    assert!(
        stdout.contains("after_fill_4mib_blocks=50") && stdout.contains("after_exhaustion_4mib_blocks=50"),
        "{}",
        outcome.dump()
    );
    eprintln!(
        "oom ({}{}{conf}, {:.2?}): {}",
        mode.name(),
        if conf.is_empty() { "" } else { ", " },
        outcome.elapsed,
        stdout.trim().replace('\n', " ")
    );
    outcome
}

#[test]
fn freed_memory_is_reused_at_once_and_exhaustion_is_enomem() {
    let scratch = ScratchDir::new(env!("CARGO_TARGET_TMPDIR"), "oom");
    let exe = compile_c("oom.c", scratch.path());
    run_oom(&exe, Mode::Plain, "");
    for conf in [
        "",
        "dirty_decay_ms:1000000",
        "dirty_decay_ms:1000000,muzzy_decay_ms:1000000",
    ] {
        let outcome = run_oom(&exe, Mode::Preloaded, conf);
        outcome.assert_used_tally();
        let stats = outcome.stats.last().expect("a stats line");
        for (key, minimum) in [("out_of_memory", 1), ("chunks_unmapped", 1)] {
            let value = stats.get_u64(key);
            assert!(
                value.is_some_and(|v| v >= minimum),
                "TALLY_CONF={conf:?}: {key} = {value:?}, want >= {minimum}: the refused mappings \
                 did not make Tally give memory back\n{}",
                stats.raw
            );
        }
    }
}
