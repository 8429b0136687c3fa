//! `tally run` end to end on real programs under the real `libtally.so` (`TALLY_SO` set to
//! `<target>/release/libtally.so`; build it first with `cargo build --release -p tally-alloc`): a C
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
    tally_run_with(&["--lines"], "lg_prof_sample:14", dir)
        .arg(program)
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

/// Compiles `data/run_wait.c` into `dir`.
fn run_wait(dir: &Path) -> std::path::PathBuf {
    compile(&data("run_wait.c"), dir, "run_wait")
}

/// The first row of a `tally run --lines` report: `function file:line` of the line marked
/// `marker` in `run_wait.c`, holding about [`LEAKED_MIB`].
fn assert_leak_first(stdout: &str, function: &str, marker: &str) {
    let source = data("run_wait.c");
    let rows = rows(stdout);
    let want = format!("{function} {}:{}", source.display(), line_of(&source, marker));
    assert_eq!(
        rows.first().map(|r| r.name.as_str()),
        Some(want.as_str()),
        "the first row is not the leak:\n{stdout}"
    );
    assert_close(rows[0].flat, LEAKED_MIB, 10.0, "the leak's live MiB");
}

/// Waits up to `seconds` for `child` to exit; kills it and fails the test if it does not.
fn wait_bounded(child: &mut std::process::Child, seconds: u64) -> std::process::ExitStatus {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(seconds);
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            return status;
        }
        if std::time::Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("tally run did not end within {seconds} s");
        }
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
}

#[test]
fn two_runs_into_one_directory_each_report_their_own_program() {
    // The first program leaks at leak_a and exits with a final dump; the second, started a
    // fraction of a second later into the same directory, leaks at leak_b and writes interval
    // dumps but no final one. Each run reports its own program's dump: picking dumps by time,
    // the second took the first's final dump.
    let dir = tempfile::tempdir().unwrap();
    let program = run_wait(dir.path());
    let out = dir.path().join("dumps");
    let start = |letter: &str, conf: &str, ms: &str| {
        tally_run_with(&["--lines"], conf, &out)
            .arg(&program)
            .args([letter, ms])
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap()
    };
    let first = start("a", "lg_prof_sample:14", "300");
    std::thread::sleep(std::time::Duration::from_millis(150));
    let second = start(
        "b",
        "lg_prof_sample:14,prof_final:false,lg_prof_interval:24",
        "1200",
    );
    let (first, second) = (
        first.wait_with_output().unwrap(),
        second.wait_with_output().unwrap(),
    );
    for (output, function, marker) in [(&first, "leak_a", "LEAK_A"), (&second, "leak_b", "LEAK_B")] {
        let stdout = String::from_utf8_lossy(&output.stdout);
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert_eq!(output.status.code(), Some(3), "{stdout}{stderr}");
        assert_leak_first(&stdout, function, marker);
    }
    let second_stderr = String::from_utf8_lossy(&second.stderr);
    assert!(
        second_stderr.contains("reporting the last heap profile it wrote"),
        "{second_stderr}"
    );
    assert_ne!(
        dump_pid(&heap_profile(&String::from_utf8_lossy(&first.stdout))),
        dump_pid(&heap_profile(&String::from_utf8_lossy(&second.stdout)))
    );
}

/// `tally run` on `run_wait a 60000` (asleep for a minute with the leak held) gets `signal`
/// once the program says it is ready; returns its output.
fn interrupt_a_sleeping_program(signal: i32) -> (std::process::ExitStatus, String, String) {
    use std::io::{BufRead, BufReader, Read};
    let dir = tempfile::tempdir().unwrap();
    let program = run_wait(dir.path());
    let out = dir.path().join("dumps");
    let mut command = tally_run_with(&["--lines"], "lg_prof_sample:14", &out);
    interrupts_at_their_defaults(&mut command);
    let mut child = command
        .arg(&program)
        .args(["a", "60000"])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdout = BufReader::new(child.stdout.take().unwrap());
    let mut ready = String::new();
    stdout.read_line(&mut ready).unwrap();
    assert_eq!(ready, "ready\n");
    // SAFETY: kill has no memory-safety preconditions; the pid is our unreaped child's.
    unsafe { libc::kill(child.id() as libc::pid_t, signal) };
    let status = wait_bounded(&mut child, 20);
    let mut rest = String::new();
    stdout.read_to_string(&mut rest).unwrap();
    let mut stderr = String::new();
    child.stderr.take().unwrap().read_to_string(&mut stderr).unwrap();
    (status, rest, stderr)
}

#[test]
fn ctrl_c_reports_the_profile_of_an_idle_program() {
    // SIGINT to tally alone (the terminal's Ctrl-C reaches only tally, the program being in a
    // group of its own): tally asks the sleeping program for a profile through prof_signal, the
    // profiler writes it from its signal handler although the program never allocates again,
    // then the program gets the SIGINT and dies of it, and tally exits as a shell would.
    let (status, stdout, stderr) = interrupt_a_sleeping_program(libc::SIGINT);
    assert_eq!(status.code(), Some(130), "{stdout}{stderr}");
    let profile = heap_profile(&stdout);
    assert!(
        profile.to_string_lossy().ends_with(".m0.heap"),
        "the requested profile: {stdout}{stderr}"
    );
    assert_leak_first(&stdout, "leak_a", "LEAK_A");
    assert!(
        stderr.contains("was killed by SIGINT (Interrupt); reporting the last heap profile it wrote"),
        "{stderr}"
    );
}

#[test]
fn sigterm_to_tally_reports_too() {
    let (status, stdout, stderr) = interrupt_a_sleeping_program(libc::SIGTERM);
    assert_eq!(status.code(), Some(128 + libc::SIGTERM), "{stdout}{stderr}");
    assert_leak_first(&stdout, "leak_a", "LEAK_A");
}
