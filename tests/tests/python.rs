//! CPython under Tally: a dict/list/string/JSON-heavy script behaves exactly as without it.
//!
//! CPython's small-object allocator (pymalloc) takes its arenas from `malloc`/`mmap` and sends
//! every object above 512 bytes, every list and dict table resize and all `bytes`/`str` data to
//! `malloc`/`realloc`/`free`, so the script exercises Tally's whole small/large range with
//! realistic interleaving. The output ends with a SHA-256 over all generated JSON, so any
//! corrupted byte anywhere shows up as a different hash.

use std::path::PathBuf;
use std::process::Command;
use tally_tests::{program, require_tool, run, run_both, Mode, DEFAULT_TIMEOUT};

/// The real interpreter behind `python3` on PATH. Version managers (pyenv) install shell-script
/// shims that would run a dozen helper processes under Tally; the test wants CPython itself.
fn python_interpreter() -> PathBuf {
    let python = require_tool("python3", "python3");
    let mut cmd = Command::new(python);
    cmd.args(["-c", "import sys; print(sys.executable)"]);
    let outcome = run(cmd, Mode::Plain, DEFAULT_TIMEOUT);
    outcome.assert_success();
    let path = PathBuf::from(outcome.stdout_text().trim());
    assert!(
        path.is_file(),
        "python3 reports a missing sys.executable {path:?}"
    );
    path
}

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
