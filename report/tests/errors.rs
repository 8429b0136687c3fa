//! Bad input: every error is one line `tally: FILE[:LINE]: …` with exit code 2; a mapped file
//! that is gone is a warning; nothing panics.

mod common;

use std::path::Path;
use std::process::Output;

use common::*;

const LS: &[u8] = include_bytes!("data/jemalloc-5.3-ls.heap");

fn report(dump: &Path) -> Output {
    tally().arg("report").arg(dump).output().unwrap()
}

/// Asserts a failure with exit code 2 and one stderr line starting with `prefix`.
fn assert_error(output: &Output, prefix: &str) -> String {
    let stderr = String::from_utf8_lossy(&output.stderr).into_owned();
    assert_eq!(output.status.code(), Some(2), "{stderr}");
    assert_eq!(stderr.lines().count(), 1, "not one line: {stderr:?}");
    assert!(
        stderr.starts_with(prefix),
        "{stderr:?} does not start with {prefix:?}"
    );
    stderr
}

fn write(dir: &Path, name: &str, bytes: &[u8]) -> std::path::PathBuf {
    let path = dir.join(name);
    std::fs::write(&path, bytes).unwrap();
    path
}

#[test]
fn damaged_and_foreign_files_name_the_line() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();

    let missing = d.join("missing.heap");
    assert_error(
        &report(&missing),
        &format!("tally: {}: No such file", missing.display()),
    );

    let cut = write(d, "cut.heap", &LS[..LS.len() - 10]);
    let lines = LS[..LS.len() - 10].split(|&b| b == b'\n').count();
    let e = assert_error(&report(&cut), &format!("tally: {}:{lines}: ", cut.display()));
    assert!(e.contains("truncated"), "{e}");

    let at = LS.windows(16).position(|w| w == b"MAPPED_LIBRARIES").unwrap();
    let cut = write(d, "no-map.heap", &LS[..at]);
    let e = assert_error(&report(&cut), &format!("tally: {}:", cut.display()));
    assert!(e.contains("MAPPED_LIBRARIES"), "{e}");

    let mut corrupt = LS.to_vec();
    let at = corrupt.windows(4).position(|w| w == b"@ 0x").unwrap();
    corrupt[at + 4] = b'z';
    let corrupt = write(d, "corrupt.heap", &corrupt);
    assert_error(&report(&corrupt), &format!("tally: {}:4: ", corrupt.display()));

    let foreign = write(
        d,
        "gperf.heap",
        b"heap profile:    1:  2 [  3:  4] @ heapprofile\n",
    );
    assert_error(&report(&foreign), &format!("tally: {}:1: ", foreign.display()));
    let binary = write(d, "binary.heap", &[0x1f, 0x8b, 0, 1, 2, 3, b'\n', 0xff]);
    assert_error(&report(&binary), &format!("tally: {}:1: ", binary.display()));
    let empty = write(d, "empty.heap", b"");
    assert_error(&report(&empty), &format!("tally: {}:1: ", empty.display()));
    assert_error(&report(d), &format!("tally: {}: is a directory", d.display()));

    // The program and the dump swapped.
    let program = Path::new(env!("CARGO_BIN_EXE_tally"));
    let good = write(d, "good.heap", LS);
    let output = tally().arg("report").arg(&good).arg(program).output().unwrap();
    assert_error(&output, &format!("tally: {}:1: ", program.display()));

    // A bad pattern.
    let output = tally()
        .args(["report", "--focus", "("])
        .arg(&good)
        .output()
        .unwrap();
    assert_error(&output, "tally: --focus \"(\": not a regular expression");
}

#[test]
fn usage_errors_do_not_panic() {
    for args in [
        &[][..],
        &["report"][..],
        &["report", "a", "b", "c"][..],
        &["frobnicate"][..],
    ] {
        let output = tally().args(args).output().unwrap();
        assert_eq!(
            output.status.code(),
            Some(2),
            "{args:?}: {}",
            String::from_utf8_lossy(&output.stderr)
        );
    }
    let output = tally().arg("--version").output().unwrap();
    assert!(output.status.success());
}

#[test]
fn a_missing_mapped_file_is_a_warning() {
    let dir = tempfile::tempdir().unwrap();
    let dump = write(
        dir.path(),
        "gone.heap",
        b"heap_v2/524288\n  t*: 1: 4096 [0: 0]\n@ 0x7f0000001234 0x7f0000002000\n  t*: 1: 4096 [0: 0]\n\n\
MAPPED_LIBRARIES:\n7f0000000000-7f0000010000 r-xp 00000000 fe:00 7 /nonexistent/libgone.so\n",
    );
    let output = report(&dump);
    let (stdout, stderr) = (
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr),
    );
    assert!(output.status.success(), "{stderr}");
    assert_eq!(stderr.lines().count(), 1, "{stderr}");
    assert!(
        stderr.starts_with("tally: warning: /nonexistent/libgone.so: No such file"),
        "{stderr}"
    );
    // The first frame as written, the caller one byte back (a return address).
    assert!(stdout.contains("libgone.so+0x1234"), "{stdout}");
    assert!(stdout.contains("libgone.so+0x1fff"), "{stdout}");
}

#[test]
fn numeric_arguments_out_of_range_are_one_line_each() {
    // `--min-r2 NaN` was accepted, and hid every suspect (no R² is >= NaN).
    let dir = tempfile::tempdir().unwrap();
    let dump = write(dir.path(), "ls.heap", LS);
    let cases: &[(&[&str], &str)] = &[
        (&["leaks", "--min-r2", "NaN"], "--min-r2 <R2>"),
        (&["leaks", "--min-r2", "inf"], "--min-r2 <R2>"),
        (&["leaks", "--min-r2", "-0.5"], "--min-r2 <R2>"),
        (&["leaks", "--min-r2", "1.01"], "--min-r2 <R2>"),
        (&["leaks", "--top", "0"], "--top <N>"),
        (&["leaks", "--depth", "-3"], "--depth <N>"),
        (&["leaks", "--lg-interval", "64"], "--lg-interval <N>"),
        (&["report", "--top", "NaN"], "--top <N>"),
        (&["report", "--top", "-1"], "--top <N>"),
        (
            &["report", "--lg-interval", "-1", "--html", "/dev/null"],
            "--lg-interval <N>",
        ),
        (&["run", "--top", "0", "--", "true"], "--top <N>"),
    ];
    for (args, option) in cases {
        let output = tally().args(*args).arg(&dump).output().unwrap();
        let stderr = assert_error(&output, "tally: invalid value ");
        assert!(
            stderr.contains(&format!("for '{option}': ")),
            "{args:?}: {stderr}"
        );
    }
    // In range, they work.
    let output = tally()
        .args(["leaks", "--min-r2", "0", "--top", "1", "--depth", "1"])
        .args([&dump, &dump, &dump])
        .output()
        .unwrap();
    assert_eq!(
        output.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
}

/// An output option given a program or a dump (its value is the output file: `--pprof DUMP`
/// with the dump forgotten, or a program's path where the output belongs) leaves the file as it
/// was and says why in one line; an ordinary existing file is replaced as before.
#[test]
fn an_output_option_never_overwrites_a_program_or_a_dump() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let dump = write(d, "ls.heap", LS);
    let program = write(d, "program", b"#!/bin/sh\necho hi\n");
    std::fs::set_permissions(&program, std::fs::Permissions::from_mode(0o755)).unwrap();
    let other_dump = write(d, "other.heap", LS);
    for (option, target, what) in [
        ("--pprof", &program, "an executable file"),
        ("--svg", &program, "an executable file"),
        ("--pprof", &other_dump, "a heap dump"),
        ("--html", &other_dump, "a heap dump"),
    ] {
        let output = tally()
            .arg("report")
            .arg(option)
            .arg(target)
            .arg(&dump)
            .output()
            .unwrap();
        let e = assert_error(&output, &format!("tally: {}: is {what}", target.display()));
        assert!(e.contains("not overwritten"), "{e}");
    }
    assert_eq!(std::fs::read(&program).unwrap(), b"#!/bin/sh\necho hi\n");
    assert_eq!(std::fs::read(&other_dump).unwrap(), LS);
    // An existing report is replaced.
    let old = write(d, "old.pb.gz", b"old");
    let output = tally()
        .arg("report")
        .arg("--pprof")
        .arg(&old)
        .arg(&dump)
        .output()
        .unwrap();
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert_ne!(std::fs::read(&old).unwrap(), b"old");
}
