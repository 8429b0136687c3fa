//! A C program's double free under `LD_PRELOAD=libtally.so` aborts at the second call, as it
//! does under glibc (`free(): double free detected in tcache 2`), instead of handing one block
//! to two owners; the same with allocations in between, and for `realloc` of a freed block
//! (which glibc lets through).

use std::os::unix::process::ExitStatusExt;
use std::process::Command;
use std::time::Duration;

use tally_tests::{compile_c, run, Mode, ScratchDir};

#[test]
fn c_double_frees_abort_like_glibc() {
    let scratch = ScratchDir::new(env!("CARGO_TARGET_TMPDIR"), "double-free");
    let exe = compile_c("double_free.c", scratch.path());
    for (case, who) in [("twice", "free"), ("realloc", "realloc"), ("between", "free")] {
        for size in ["16", "100", "5000", "32768"] {
            let make = || {
                let mut cmd = Command::new(&exe);
                cmd.args([case, size]);
                cmd
            };
            let glibc = run(make(), Mode::Plain, Duration::from_secs(20));
            let tally = run(make(), Mode::Preloaded, Duration::from_secs(20));
            // glibc catches a second free of a block in its tcache (up to 1032 bytes) with
            // nothing in between; not the others.
            let glibc_catches = case == "twice" && size.parse::<usize>().unwrap() <= 1032;
            let abort_expected: &[_] = if glibc_catches {
                &[&glibc, &tally]
            } else {
                &[&tally]
            };
            for out in abort_expected {
                assert_eq!(
                    out.status.signal(),
                    Some(6), // SIGABRT
                    "{case} {size} ({}): {}",
                    out.mode.name(),
                    out.dump()
                );
                assert!(!out.stdout_text().contains("survived"), "{}", out.dump());
            }
            let stderr = tally.stderr_text();
            assert!(
                stderr.starts_with(&format!("tally: {who}(): double free of 0x")),
                "{case} {size}: {stderr}"
            );
            assert_eq!(stderr.lines().count(), 1, "{case} {size}: {stderr}");
        }
    }
}
