//! The report against real data: a C program with known leak sites profiled by Debian's jemalloc,
//! reported by `tally` and by Debian's `jeprof` from the same dumps.

mod common;

use std::path::PathBuf;

use common::*;

/// Builds and profiles `leak.c` once per test: (source, program, [manual dump, final dump]).
fn leak_dumps(dir: &std::path::Path) -> (PathBuf, PathBuf, Vec<PathBuf>) {
    let source = data("leak.c");
    let program = compile(&source, dir, "leak");
    let dumps = profile(&program, dir, 12);
    assert_eq!(dumps.len(), 2, "expected a manual and a final dump: {dumps:?}");
    (source, program, dumps)
}

fn jeprof(args: &[&str], program: &std::path::Path, dump: &std::path::Path) -> String {
    need("jeprof", "libjemalloc-dev");
    stdout(
        std::process::Command::new("jeprof")
            .args(args)
            .arg(program)
            .arg(dump),
    )
}

#[test]
fn top_function_and_bytes_agree_with_jeprof() {
    let dir = tempfile::tempdir().unwrap();
    let (source, program, dumps) = leak_dumps(dir.path());
    let dump = &dumps[1];

    let ours = stdout(
        tally()
            .args(["report", "--text", "--lines", "--show-bytes"])
            .arg(&program)
            .arg(dump),
    );
    let theirs = jeprof(&["--text", "--lines", "--show_bytes"], &program, dump);
    let (ours_rows, their_rows) = (rows(&ours), rows(&theirs));

    // The top row is leak_a at the line of its malloc call.
    let want = format!("leak_a {}:{}", source.display(), line_of(&source, "LEAK_A"));
    assert_eq!(ours_rows[0].name, want, "{ours}");
    let leak_b = format!("leak_b {}:{}", source.display(), line_of(&source, "LEAK_B"));
    assert_eq!(ours_rows[1].name, leak_b, "{ours}");

    // The same numbers as jeprof's, within 1%.
    for name in ["leak_a", "leak_b", "main"] {
        let (a, b) = (row(&ours_rows, name), row(&their_rows, name));
        assert_close(a.flat, b.flat, 1.0, &format!("{name} flat"));
        assert_close(a.cum, b.cum, 1.0, &format!("{name} cum"));
        assert_eq!(a.flat_percent, b.flat_percent, "{name} flat%");
        assert_eq!(a.cum_percent, b.cum_percent, "{name} cum%");
    }
    let total = |text: &str| -> f64 {
        let line = text
            .lines()
            .find(|l| l.starts_with("Total:"))
            .expect("a Total line");
        line.split_whitespace().nth(1).unwrap().parse().unwrap()
    };
    assert_close(total(&ours), total(&theirs), 1.0, "total");

    // And near the truth: 8 MiB and 1 MiB (sampling at 4 KiB leaves a few % of noise).
    assert_close(
        row(&ours_rows, "leak_a").flat,
        8.0 * 1048576.0,
        10.0,
        "leak_a estimate",
    );
    // leak_b is 256 blocks, about 160 of them sampled: a 4.8% standard deviation, so 25% is
    // over 5 of them.
    assert_close(row(&ours_rows, "leak_b").flat, 1048576.0, 25.0, "leak_b estimate");

    // Function granularity in MiB, jeprof's default units, agree to the printed digit.
    let ours = stdout(tally().args(["report", "--text"]).arg(dump));
    let theirs = jeprof(&["--text"], &program, dump);
    let (ours_rows, their_rows) = (rows(&ours), rows(&theirs));
    assert_eq!(ours_rows[0].name, "leak_a", "{ours}");
    for name in ["leak_a", "leak_b", "main", "__libc_start_main_impl"] {
        let (a, b) = (row(&ours_rows, name), row(&their_rows, name));
        assert_eq!((a.flat, a.cum), (b.flat, b.cum), "{name}:\n{ours}\n{theirs}");
    }

    // Objects too.
    let ours = stdout(tally().args(["report", "--inuse-objects"]).arg(dump));
    let theirs = jeprof(&["--text", "--inuse_objects"], &program, dump);
    let (a, b) = (
        row(&rows(&ours), "leak_a").flat,
        row(&rows(&theirs), "leak_a").flat,
    );
    assert!((a - b).abs() <= 1.0, "leak_a objects: {a} vs {b}");
    assert_close(a, 2048.0, 10.0, "leak_a objects estimate");
}

#[test]
fn collapsed_focus_top_and_base() {
    let dir = tempfile::tempdir().unwrap();
    let (_source, program, dumps) = leak_dumps(dir.path());
    let (first, last) = (&dumps[0], &dumps[1]);

    // Folded stacks: root first, values in bytes, as jeprof's.
    let ours = stdout(tally().args(["report", "--collapsed"]).arg(last));
    let theirs = jeprof(&["--collapsed"], &program, last);
    // jeprof writes a function's start address after its name (`main<0000000000001298>`).
    let plain = |stack: &str| -> String {
        stack
            .split(';')
            .map(|f| f.split('<').next().unwrap())
            .collect::<Vec<_>>()
            .join(";")
    };
    let value_of = |text: &str, suffix: &str| -> f64 {
        text.lines()
            .filter_map(|l| l.rsplit_once(' '))
            .filter(|(stack, _)| plain(stack).ends_with(suffix))
            .map(|(_, v)| v.parse::<f64>().unwrap())
            .sum()
    };
    let ours_a = value_of(&ours, ";main;leak_a");
    assert!(
        ours.lines()
            .any(|l| l.starts_with("_start;") && l.contains(";main;leak_a ")),
        "{ours}"
    );
    assert_close(ours_a, value_of(&theirs, ";main;leak_a"), 1.0, "collapsed leak_a");

    // --focus and --ignore keep the total and select stacks.
    let focused = stdout(tally().args(["report", "--focus", "leak_b"]).arg(last));
    let focused_rows = rows(&focused);
    assert_eq!(focused_rows[0].name, "leak_b", "{focused}");
    assert!(!focused.contains("leak_a"), "{focused}");
    let ignored = stdout(tally().args(["report", "--ignore", "^leak_a$"]).arg(last));
    assert!(
        !ignored.contains("leak_a") && ignored.contains("leak_b"),
        "{ignored}"
    );
    let theirs = jeprof(&["--text", "--focus=leak_b"], &program, last);
    assert_eq!(
        row(&focused_rows, "leak_b").flat_percent,
        row(&rows(&theirs), "leak_b").flat_percent
    );

    // --top limits the rows; the largest stacks follow the table all the same, each frame on its
    // line, callers included: leak_a's 8 MiB first (leak_b's 1 MiB is about the 10% it takes to
    // be listed), no hint for either.
    let top = stdout(tally().args(["report", "--top", "1"]).arg(last));
    assert_eq!(rows(&top).len(), 1, "{top}");
    let listed = stacks(&top);
    assert!((1..=2).contains(&listed.len()), "{top}");
    let share: f64 = listed[0][0]
        .strip_prefix("Stack 1: ")
        .and_then(|rest| rest.split_once('%'))
        .and_then(|(share, _)| share.parse().ok())
        .unwrap_or_else(|| panic!("{top}"));
    assert!((80.0..95.0).contains(&share), "{top}");
    assert_eq!(listed[0][1..3], ["leak_a", "main"], "{top}");
    assert!(!top.contains("Hint:"), "{top}");

    // --base: the first dump was taken after leak_a, so the growth is leak_b's.
    let ours = stdout(
        tally()
            .args(["report", "--show-bytes", "--base"])
            .arg(first)
            .arg(last),
    );
    let theirs = jeprof(
        &["--text", "--show_bytes", &format!("--base={}", first.display())],
        &program,
        last,
    );
    let (ours_rows, their_rows) = (rows(&ours), rows(&theirs));
    assert_eq!(ours_rows[0].name, "leak_b", "{ours}");
    assert_close(
        ours_rows[0].flat,
        row(&their_rows, "leak_b").flat,
        1.0,
        "growth of leak_b",
    );
    assert!(
        ours_rows.iter().all(|r| r.name != "leak_a" || r.flat.abs() < 1.0),
        "{ours}"
    );
}

#[test]
fn separate_debug_file_by_build_id() {
    need("objcopy", "binutils");
    let dir = tempfile::tempdir().unwrap();
    let (source, program, dumps) = leak_dumps(dir.path());

    // Move the program's DWARF and symbols to <debug>/.build-id/xx/rest.debug and strip a copy.
    let id = build_id(&program);
    let debug_dir = dir.path().join("debug");
    let debug_file = debug_dir
        .join(".build-id")
        .join(&id[..2])
        .join(format!("{}.debug", &id[2..]));
    std::fs::create_dir_all(debug_file.parent().unwrap()).unwrap();
    run(std::process::Command::new("objcopy")
        .arg("--only-keep-debug")
        .arg(&program)
        .arg(&debug_file));
    let stripped_dir = dir.path().join("stripped");
    std::fs::create_dir(&stripped_dir).unwrap();
    let stripped = stripped_dir.join("leak");
    run(std::process::Command::new("objcopy")
        .arg("--strip-all")
        .arg(&program)
        .arg(&stripped));

    // The stripped copy stands in for the mapped program (same file name); its DWARF and
    // function names come from the debug file.
    let out = stdout(
        tally()
            .args(["report", "--lines", "--debug-dir"])
            .arg(&debug_dir)
            .arg(&stripped)
            .arg(&dumps[1]),
    );
    let want = format!("leak_a {}:{}", source.display(), line_of(&source, "LEAK_A"));
    assert_eq!(rows(&out)[0].name, want, "{out}");

    // Without the debug file, the stripped program's frames print as file+offset.
    let out = stdout(
        tally()
            .args(["report", "--debug-dir"])
            .arg(dir.path().join("none"))
            .arg(&stripped)
            .arg(&dumps[1]),
    );
    assert!(rows(&out)[0].name.starts_with("leak+0x"), "{out}");
}

/// The GNU build id of an ELF file, in hex, read with `readelf -n`.
fn build_id(path: &std::path::Path) -> String {
    let notes = stdout(std::process::Command::new("readelf").arg("-n").arg(path));
    notes
        .lines()
        .find_map(|l| l.trim().strip_prefix("Build ID: "))
        .expect("the compiler writes a build id")
        .trim()
        .to_string()
}
