//! CPython under Tally: a dict/list/string/JSON-heavy script behaves exactly as without it.
//!
//! CPython's small-object allocator (pymalloc) takes its arenas from `malloc`/`mmap` and sends
//! every object above 512 bytes, every list and dict table resize and all `bytes`/`str` data to
//! `malloc`/`realloc`/`free`, so the script exercises Tally's whole small/large range with
//! realistic interleaving. The output ends with a SHA-256 over all generated JSON, so any
//! corrupted byte anywhere shows up as a different hash.

use std::process::Command;
use tally_tests::{program, python_interpreter, run_both, DEFAULT_TIMEOUT};

#[test]
fn python_script_runs_identically_under_tally() {
    let python = python_interpreter();
    let script = program("workload.py");
    let (plain, preloaded) = run_both(
        || {
            let mut cmd = Command::new(&python);
            cmd.arg(&script).env("PYTHONHASHSEED", "0");
            cmd
        },
        DEFAULT_TIMEOUT,
    );
    let stdout = plain.stdout_text();
    assert!(
        stdout.contains("records=300000") && stdout.contains("sha256="),
        "unexpected output from the plain run:\n{stdout}"
    );
    eprintln!(
        "python: plain {:.2?}, preloaded {:.2?}",
        plain.elapsed, preloaded.elapsed
    );
}
