//! `tally symbolize`: guard reports about a program compiled here, whose frames are the return
//! addresses of calls `objdump` finds in it, named with the functions and lines the source's
//! markers say; what it copies unchanged, what it warns about, and what is an error.

mod common;

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

use common::*;
use tally_report::guard_report::symbolize_report;

const SOURCE: &str = "guard_uaf.c";

/// The program, built into `dir` with `-O0 -g`.
fn program(dir: &Path) -> PathBuf {
    compile(&data(SOURCE), dir, "uaf")
}

/// A report of `kind` whose allocation stack is `frames` (`(symbol, object, vaddr)`) and whose
/// free stack is one frame in no object, as the allocator writes it.
fn report(kind: &str, frames: &[(Option<&str>, &Path, u64)]) -> String {
    let mut text = format!(
        "tally: guard: {kind}: write at 0x7f0c1a2b3f08, 8 bytes into the 64-byte block at 0x7f0c1a2b3f00\n\
         tally: guard: allocated by thread 4242:\n"
    );
    for (i, (symbol, object, vaddr)) in frames.iter().enumerate() {
        let runtime = 0x55f1_d2a0_0000 + vaddr;
        let symbol = symbol.map(|s| format!(" in {s}+0x10")).unwrap_or_default();
        text.push_str(&format!(
            "tally: guard:   #{i} {runtime:#018x}{symbol} ({}+{vaddr:#x})\n",
            object.display()
        ));
    }
    text.push_str(
        "tally: guard:   #9 0x00007f0c1a000010\n\
         tally: guard: freed by thread 4242:\n\
         tally: guard:   #0 0x00007f0c1a000020\n\
         tally: guard: the process ends with SIGSEGV; `tally symbolize` names the frames with files and lines\n",
    );
    text
}

/// `tally symbolize [args]` with `input` on its standard input.
fn symbolize(args: &[&str], input: &str) -> Output {
    let mut child = tally()
        .arg("symbolize")
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child.stdin.take().unwrap().write_all(input.as_bytes()).unwrap();
    child.wait_with_output().unwrap()
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8(bytes.to_vec()).unwrap()
}

/// `path:LINE` of the source's line holding `marker`.
fn at(marker: &str) -> String {
    let source = data(SOURCE);
    format!("{}:{}", source.display(), line_of(&source, marker))
}

#[test]
fn names_functions_with_files_and_lines_and_copies_every_other_line() {
    let dir = tempfile::tempdir().unwrap();
    let binary = program(dir.path());
    let in_make_block = return_address(&binary, "make_block", "malloc");
    let in_main = return_address(&binary, "main", "make_block");
    let input = report(
        "use-after-free",
        &[
            (Some("make_block"), &binary, in_make_block),
            (None, &binary, in_main),
        ],
    );
    let path = dir.path().join("report.guard");
    std::fs::write(&path, &input).unwrap();
    let output = tally().arg("symbolize").arg(&path).output().unwrap();
    assert_eq!(output.status.code(), Some(0), "{}", text(&output.stderr));
    assert_eq!(text(&output.stderr), "");
    let stdout = text(&output.stdout);
    let (expected_lines, got_lines): (Vec<&str>, Vec<&str>) =
        (input.lines().collect(), stdout.lines().collect());
    assert_eq!(got_lines.len(), expected_lines.len(), "{stdout}");
    assert_eq!(
        got_lines[2],
        format!(
            "tally: guard:   #0 {:#018x} in make_block at {} ({}+{in_make_block:#x})",
            0x55f1_d2a0_0000 + in_make_block,
            at("make_block: malloc"),
            binary.display()
        )
    );
    // A frame without a dynamic symbol is named too; the call's line, not the next one.
    assert_eq!(
        got_lines[3],
        format!(
            "tally: guard:   #1 {:#018x} in main at {} ({}+{in_main:#x})",
            0x55f1_d2a0_0000 + in_main,
            at("main: make_block"),
            binary.display()
        )
    );
    for (i, (got, expected)) in got_lines.iter().zip(&expected_lines).enumerate() {
        if i != 2 && i != 3 {
            assert_eq!(got, expected, "line {i} passes through");
        }
    }
    assert!(stdout.ends_with('\n'));
}

#[test]
fn expands_inlined_calls_innermost_first() {
    let dir = tempfile::tempdir().unwrap();
    let binary = program(dir.path());
    let in_fill = return_address(&binary, "make_filled", "malloc");
    let input = report("buffer-overflow", &[(Some("make_filled"), &binary, in_fill)]);
    let symbolized = symbolize_report(input.as_bytes(), &[]);
    assert_eq!((symbolized.frames, symbolized.resolved), (3, 1));
    assert_eq!(symbolized.warnings, Vec::<String>::new());
    let output = text(&symbolized.text);
    let lines: Vec<&str> = output.lines().collect();
    let address = format!("{:#018x}", 0x55f1_d2a0_0000 + in_fill);
    assert_eq!(
        lines[2..4],
        [
            format!(
                "tally: guard:   #0 {address} in fill at {} (inlined)",
                at("fill: malloc")
            ),
            format!(
                "tally: guard:   #0 {address} in make_filled at {} ({}+{in_fill:#x})",
                at("make_filled: fill"),
                binary.display()
            ),
        ]
    );
    assert_eq!(lines[4], "tally: guard:   #9 0x00007f0c1a000010");
}

#[test]
fn names_functions_from_the_symbol_table_without_dwarf() {
    let dir = tempfile::tempdir().unwrap();
    let binary = dir.path().join("uaf-nodebug");
    run(Command::new("cc")
        .args(["-O0", "-o"])
        .arg(&binary)
        .arg(data(SOURCE)));
    let in_make_block = return_address(&binary, "make_block", "malloc");
    let input = report("double-free", &[(None, &binary, in_make_block)]);
    let symbolized = symbolize_report(input.as_bytes(), &[]);
    assert_eq!(symbolized.resolved, 1);
    assert_eq!(
        text(&symbolized.text).lines().nth(2).unwrap(),
        format!(
            "tally: guard:   #0 {:#018x} in make_block ({}+{in_make_block:#x})",
            0x55f1_d2a0_0000 + in_make_block,
            binary.display()
        )
    );
}

#[test]
fn finds_a_separate_debug_file_by_build_id() {
    need("objcopy", "binutils");
    let dir = tempfile::tempdir().unwrap();
    let binary = program(dir.path());
    let debug = dir.path().join("uaf.debug");
    run(Command::new("objcopy")
        .arg("--only-keep-debug")
        .arg(&binary)
        .arg(&debug));
    run(Command::new("objcopy").arg("--strip-debug").arg(&binary));
    let build_id = tally_report::object_file::ObjectFile::load(&binary, &[])
        .unwrap()
        .build_id
        .expect("cc links with a build id");
    let hex: String = build_id.iter().map(|b| format!("{b:02x}")).collect();
    let debug_dir = dir.path().join("debug");
    let place = debug_dir
        .join(".build-id")
        .join(&hex[..2])
        .join(format!("{}.debug", &hex[2..]));
    std::fs::create_dir_all(place.parent().unwrap()).unwrap();
    std::fs::rename(&debug, &place).unwrap();

    let in_make_block = return_address(&binary, "make_block", "malloc");
    let input = report("invalid-free", &[(None, &binary, in_make_block)]);
    let expected = format!("in make_block at {} (", at("make_block: malloc"));
    let without = symbolize(&[], &input);
    assert!(
        !text(&without.stdout).contains(&expected),
        "{}",
        text(&without.stdout)
    );
    let with = symbolize(&["--debug-dir", debug_dir.to_str().unwrap()], &input);
    assert_eq!(with.status.code(), Some(0), "{}", text(&with.stderr));
    assert!(text(&with.stdout).contains(&expected), "{}", text(&with.stdout));
}

#[test]
fn leaves_frames_it_cannot_resolve_and_names_unreadable_objects_once() {
    let dir = tempfile::tempdir().unwrap();
    let binary = program(dir.path());
    let missing = dir.path().join("gone/libgone.so");
    let not_elf = dir.path().join("notes.txt");
    std::fs::write(&not_elf, "not an object\n").unwrap();
    let input = report(
        "use-after-free",
        &[
            (Some("f"), &missing, 0x1234),
            (None, &not_elf, 0x10),
            (Some("g"), &missing, 0x5678),
            // Outside every loadable segment of a readable object.
            (None, &binary, 0x7fff_0000),
        ],
    );
    let output = symbolize(&["-"], &input);
    assert_eq!(output.status.code(), Some(0));
    assert_eq!(text(&output.stdout), input);
    assert_eq!(
        text(&output.stderr),
        format!(
            "tally symbolize: cannot read {}: No such file or directory\n\
             tally symbolize: cannot read {}: not an ELF file\n",
            missing.display(),
            not_elf.display()
        )
    );
}

#[test]
fn finds_frames_after_other_prefixes_and_keeps_crlf() {
    let dir = tempfile::tempdir().unwrap();
    let binary = program(dir.path());
    let in_make_block = return_address(&binary, "make_block", "malloc");
    let input = format!(
        "Jan 01 10:00:00 host app[7]: use-after-free\r\n\
         Jan 01 10:00:00 host app[7]:   #0 0x55f1d2a01171 ({}+{in_make_block:#x})\r\n",
        binary.display()
    );
    let output = symbolize(&[], &input);
    assert_eq!(output.status.code(), Some(0), "{}", text(&output.stderr));
    assert_eq!(
        text(&output.stdout),
        format!(
            "Jan 01 10:00:00 host app[7]: use-after-free\r\n\
             Jan 01 10:00:00 host app[7]:   #0 0x55f1d2a01171 in make_block at {} ({}+{in_make_block:#x})\r\n",
            at("make_block: malloc"),
            binary.display()
        )
    );
}

#[test]
fn input_without_frames_is_an_error() {
    let output = symbolize(&[], "tally: heap profile\nsee issue #12, 0x10 bytes\n");
    assert_eq!(output.status.code(), Some(1));
    assert_eq!(text(&output.stdout), "");
    let stderr = text(&output.stderr);
    assert!(
        stderr.starts_with("tally symbolize: no frames of a Tally guard report in standard input"),
        "{stderr}"
    );
    assert_eq!(stderr.lines().count(), 1, "{stderr}");
    let empty = symbolize(&["-"], "");
    assert_eq!(empty.status.code(), Some(1));
}

#[test]
fn an_unreadable_file_is_an_error() {
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("missing.guard");
    let output = tally().arg("symbolize").arg(&missing).output().unwrap();
    assert_eq!(output.status.code(), Some(1));
    assert_eq!(
        text(&output.stderr),
        format!(
            "tally symbolize: {}: No such file or directory\n",
            missing.display()
        )
    );
    let output = tally().arg("symbolize").arg(dir.path()).output().unwrap();
    assert_eq!(output.status.code(), Some(1));
    assert_eq!(text(&output.stderr).lines().count(), 1);
}

#[test]
fn a_closed_pipe_is_no_error() {
    let input = report("use-after-free", &[(None, Path::new("/nonexistent/x"), 0x10)]);
    let mut child = tally()
        .arg("symbolize")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // Closed before tally reads its input, so before it writes.
    drop(child.stdout.take());
    child.stdin.take().unwrap().write_all(input.as_bytes()).unwrap();
    let output = child.wait_with_output().unwrap();
    assert_eq!(output.status.code(), Some(0));
    assert_eq!(
        text(&output.stderr),
        "tally symbolize: cannot read /nonexistent/x: No such file or directory\n"
    );
}
