//! Perl under Tally: a hash/regex/string-heavy script behaves exactly as without it.
//!
//! Perl allocates every scalar body, hash bucket array and string buffer with `malloc` (Debian's
//! perl uses the system allocator) and grows strings with `realloc`, so the regex substitutions
//! over a 1 MB string and the repeated hash building stress realloc-in-place and small classes.

use std::process::Command;
use tally_tests::{program, require_tool, run_both, DEFAULT_TIMEOUT};

#[test]
fn perl_script_runs_identically_under_tally() {
    let perl = require_tool("perl", "perl");
    let script = program("workload.pl");
    let (plain, preloaded) = run_both(
        || {
            let mut cmd = Command::new(&perl);
            cmd.arg(&script).env("PERL_HASH_SEED", "0");
            cmd
        },
        DEFAULT_TIMEOUT,
    );
    let stdout = plain.stdout_text();
    assert!(
        stdout.lines().filter(|l| l.starts_with("round ")).count() == 12 && stdout.contains("checksum="),
        "unexpected output from the plain run:\n{stdout}"
    );
    eprintln!(
        "perl: plain {:.2?}, preloaded {:.2?}",
        plain.elapsed, preloaded.elapsed
    );
}
