//! `tally run` end to end on real programs under the real `libtally.so` (`TALLY_SO` set to
//! `<target>/release/libtally.so`; build it first with `cargo build --release -p tally`): a C
//! program and a Rust program, each with one known leak site `leak_here` (32 MiB never freed)
//! beside churn that frees everything. The report printed at exit names `leak_here` and its
//! `file:line` first, and the program's exit code passes through.

mod common;

use std::path::Path;
use std::process::{Command, Output};

use common::*;

/// What the leak sites keep: 32 MiB.
const LEAKED_MIB: f64 = 32.0;

/// `tally run --lines --out DIR --conf lg_prof_sample:14 -- PROGRAM` under the real
/// `libtally.so`. A sample per 16 KiB on average: about 2,000 samples of the leak, so its
/// estimate is within a few per cent.
fn tally_run(program: &Path, dir: &Path) -> Output {
    tally()
        .args(["run", "--lines", "--conf", "lg_prof_sample:14", "--out"])
        .arg(dir)
        .arg("--")
        .arg(program)
        .env("TALLY_SO", libtally())
        .env_remove("LD_PRELOAD")
        .env_remove("TALLY_CONF")
        .env_remove("MALLOC_CONF")
        .output()
        .unwrap()
}

/// Checks the output of `tally run` on a program that exits with 3 after leaking
/// [`LEAKED_MIB`] at `function`, `source`'s line marked `LEAK_HERE`: the exit code, the dump it
/// names, and the report whose first row is the leak with its `file:line`.
fn check(output: &Output, dir: &Path, function: &str, source: &Path) {
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    eprintln!("{stdout}{stderr}");
    assert_eq!(output.status.code(), Some(3), "{stdout}{stderr}");

    let profile = stdout
        .lines()
        .find_map(|l| l.strip_prefix("Heap profile: "))
        .unwrap_or_else(|| panic!("no Heap profile line:\n{stdout}{stderr}"));
    assert!(
        profile.starts_with(&format!("{}/tally.", dir.display())) && profile.ends_with(".f.heap"),
        "{profile}"
    );
    assert!(Path::new(profile).is_file(), "{profile}");

    let rows = rows(&stdout);
    assert!(!rows.is_empty(), "no rows:\n{stdout}");
    let want = format!("{function} {}:{}", source.display(), line_of(source, "LEAK_HERE"));
    let first = &rows[0];
    assert_eq!(first.name, want, "the first row is not the leak:\n{stdout}");
    assert_close(first.flat, LEAKED_MIB, 10.0, "the leak's live MiB");
    assert!(percent(&first.flat_percent) > 90.0, "{stdout}");
}

/// A `--text` report's percentage (`99.1%`) as a number.
fn percent(text: &str) -> f64 {
    text.trim_end_matches('%').parse().unwrap()
}

#[test]
fn a_c_program_leak_is_the_first_row() {
    let dir = tempfile::tempdir().unwrap();
    let source = data("run_leak.c");
    let program = compile(&source, dir.path(), "run_leak");
    let out = dir.path().join("dumps");
    let output = tally_run(&program, &out);
    check(&output, &out, "leak_here", &source);
}

#[test]
fn a_rust_program_leak_is_the_first_row() {
    let dir = tempfile::tempdir().unwrap();
    let source = data("run_leak.rs");
    let program = dir.path().join("run_leak");
    let rustc = std::env::var("RUSTC").unwrap_or_else(|_| "rustc".into());
    run(Command::new(rustc)
        .args(["-g", "-C", "opt-level=0", "-o"])
        .arg(&program)
        .arg(&source));
    let out = dir.path().join("dumps");
    let output = tally_run(&program, &out);
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        stdout.starts_with("kept 33554432 bytes"),
        "the program's own output comes first:\n{stdout}"
    );
    // Rust's allocation machinery (`__rust_alloc`, `alloc::alloc`, `alloc::raw_vec`,
    // `alloc::vec::from_elem`, ...) is the allocator's, not the program's: the row is the
    // function that leaked, demangled, without its hash.
    check(&output, &out, "run_leak::cache::leak_here", &source);
}
