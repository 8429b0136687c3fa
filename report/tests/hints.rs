//! Known-leak hints on real programs run by `tally run` under the real `libtally.so` (build it
//! first: `cargo build --release -p tally-alloc`), each beside its fixed variant, which gets no hint:
//!
//! - an OpenSSL client (`data/ssl_leak.c`, Debian `libssl-dev`) that never frees the `SSL_CTX`
//!   and `SSL` of its connections;
//! - a Python program (`data/py_leak.py`) whose C-level references leak (ctypes' `Py_IncRef`
//!   without a `Py_DecRef`, as a C extension that forgets `Py_DECREF`), so its records outlive
//!   even the interpreter's finalization, when the final dump is written;
//! - the Java logger that never closes its `GZIPOutputStream`s (`data/GzipLogger.java`).
//!
//! The text report lists the largest stacks after jeprof's table, each frame on its line, with
//! the hint under the stack it matches; the HTML page shows its first rows, the rest behind a
//! toggle, and the same stacks and hints.

mod common;

use std::ffi::OsStr;
use std::path::{Path, PathBuf};
use std::process::Command;

use common::*;

/// `tally run --conf CONF --out DIR -- COMMAND...` under the real `libtally.so`: its standard
/// output, the program's first, then `Heap profile: …` and the report.
fn run_report<S: AsRef<OsStr>>(dir: &Path, conf: &str, command: &[S]) -> String {
    stdout(tally_run(conf, dir).args(command))
}

/// The listed stacks whose hint's title starts with `title`.
fn hinted<'a>(stacks: &'a [Vec<String>], title: &str) -> Vec<&'a Vec<String>> {
    stacks
        .iter()
        .filter(|stack| {
            stack
                .iter()
                .any(|line| line.starts_with(&format!("Hint: {title}")))
        })
        .collect()
}

/// The frames of a listed stack: its lines before the hint.
fn frames(stack: &[String]) -> Vec<&str> {
    stack[1..]
        .iter()
        .take_while(|line| !line.starts_with("Hint: "))
        .map(String::as_str)
        .collect()
}

/// Checks a `tally run` report of a leak: a table of rows as `--text` prints them, then the
/// listed stacks, one of which holds the hint `title` with every frame given in `want`
/// (innermost first, others between them allowed).
fn assert_hint(report: &str, title: &str, want: &[&str]) {
    assert!(!rows(report).is_empty(), "no rows:\n{report}");
    let stacks = stacks(report);
    let with_hint = hinted(&stacks, title);
    assert!(
        !with_hint.is_empty(),
        "no stack with the hint {title:?}:\n{report}"
    );
    for stack in with_hint {
        let frames = frames(stack);
        let mut at = 0;
        for name in want {
            match frames[at..]
                .iter()
                .position(|f| f == name || f.starts_with(&format!("{name} ")))
            {
                Some(i) => at += i + 1,
                None => panic!("{name} not in order in the stack {frames:#?}:\n{report}"),
            }
        }
    }
}

#[test]
fn openssl_contexts_never_freed_get_the_openssl_hints() {
    need("/usr/include/openssl/ssl.h", "libssl-dev");
    let dir = tempfile::tempdir().unwrap();
    let program = compile_linked(
        &data("ssl_leak.c"),
        dir.path(),
        "ssl_leak",
        &["-lssl", "-lcrypto"],
    );
    let leaky = run_report(
        &dir.path().join("leak"),
        "lg_prof_sample:14",
        &[program.as_os_str(), "leak".as_ref(), "2000".as_ref()],
    );
    assert!(leaky.starts_with("leaky: 2000 connections\n"), "{leaky}");
    eprintln!("{leaky}");
    // The memory of an SSL_CTX is spread over the dozens of allocations of SSL_CTX_new: the
    // hint goes under the largest of them (libssl's own functions, unexported, print as
    // `libssl.so.3+0x…`).
    assert_hint(
        &leaky,
        "OpenSSL SSL_CTX not freed (SSL_CTX_free)",
        &["SSL_CTX_new_ex", "open_connection", "main"],
    );
    assert_hint(
        &leaky,
        "OpenSSL SSL objects not freed (SSL_free)",
        &["SSL_new", "open_connection", "main"],
    );
    // The paragraph says what to do.
    assert!(leaky.contains("call SSL_CTX_free when done"), "{leaky}");

    let fixed = run_report(
        &dir.path().join("fixed"),
        "lg_prof_sample:14",
        &[program.as_os_str(), "fixed".as_ref(), "2000".as_ref()],
    );
    assert!(fixed.starts_with("fixed: 2000 connections\n"), "{fixed}");
    assert!(!fixed.contains("Hint:"), "{fixed}");

    // The HTML page of the leak: the first 20 rows, the others behind the toggle, no empty row,
    // the same hints, and links from rows to the hinted stacks.
    let dump = heap_profile(&leaky);
    let all_rows = rows(&stdout(tally().args(["report", "--text"]).arg(&dump)));
    assert!(all_rows.len() > 25, "{} rows", all_rows.len());
    let html = dir.path().join("leak.html");
    run(tally().args(["report", "--html"]).arg(&html).arg(&dump));
    let text = std::fs::read_to_string(&html).unwrap();
    let document = parse_xml(&text);
    assert_self_contained(&document);
    let table_rows = |table: roxmltree::Node| -> Vec<Vec<String>> {
        table
            .descendants()
            .filter(|n| n.has_tag_name("tr") && n.ancestors().any(|a| a.has_tag_name("tbody")))
            .map(|tr| {
                tr.children()
                    .filter(|c| c.has_tag_name("td"))
                    .map(|td| {
                        td.descendants()
                            .find(|n| n.is_text())
                            .and_then(|n| n.text())
                            .unwrap_or("")
                            .to_string()
                    })
                    .collect()
            })
            .collect()
    };
    let top = document
        .descendants()
        .find(|n| n.attribute("id") == Some("top"))
        .unwrap();
    let visible = table_rows(top);
    assert_eq!(visible.len(), 20, "{visible:?}");
    let details = document
        .descendants()
        .find(|n| n.has_tag_name("details"))
        .expect("a <details> toggle");
    let summary = details.children().find(|n| n.has_tag_name("summary")).unwrap();
    assert_eq!(
        summary.text(),
        Some(format!("{} more rows", all_rows.len() - 20).as_str())
    );
    let hidden = table_rows(details.descendants().find(|n| n.has_tag_name("table")).unwrap());
    assert_eq!(hidden.len(), all_rows.len() - 20);
    for (row, want) in visible.iter().chain(&hidden).zip(&all_rows) {
        assert_eq!(row[5], want.name);
        assert!(!(row[0] == "0 B" && row[3] == "0 B"), "an empty row: {row:?}");
    }
    let hints: Vec<String> = document
        .descendants()
        .filter(|n| n.attribute("class") == Some("hint"))
        .map(|n| {
            n.descendants()
                .filter(|t| t.is_text())
                .filter_map(|t| t.text())
                .collect()
        })
        .collect();
    assert!(
        hints.iter().any(|h| h.starts_with("Hint: OpenSSL SSL_CTX not freed") && h.contains("SSL_CTX_free when done")),
        "{hints:?}"
    );
    let links: Vec<&str> = document
        .descendants()
        .filter_map(|n| n.attribute("href"))
        .filter(|href| href.starts_with("#stack-"))
        .collect();
    assert!(!links.is_empty(), "no row links to a hinted stack");
    for link in links {
        let target = document
            .descendants()
            .find(|n| n.attribute("id") == Some(&link[1..]));
        let target = target.unwrap_or_else(|| panic!("{link} leads nowhere"));
        assert!(
            target.descendants().any(|n| n.attribute("class") == Some("hint")),
            "{link}"
        );
    }
    // --top sets the rows before the toggle.
    run(tally()
        .args(["report", "--top", "5", "--html"])
        .arg(&html)
        .arg(&dump));
    let text = std::fs::read_to_string(&html).unwrap();
    let document = parse_xml(&text);
    let top = document
        .descendants()
        .find(|n| n.attribute("id") == Some("top"))
        .unwrap();
    assert_eq!(table_rows(top).len(), 5);
}

/// The interpreter behind `python3` on the PATH (not a version manager's shell-script shim).
fn python() -> PathBuf {
    need("python3", "python3");
    let path = stdout(Command::new("python3").args(["-c", "import sys; print(sys.executable)"]));
    PathBuf::from(path.trim())
}

#[test]
fn python_references_leaked_get_the_cpython_hint() {
    let dir = tempfile::tempdir().unwrap();
    let python = python();
    let script = data("py_leak.py");
    let run_mode = |mode: &str| {
        run_report(
            &dir.path().join(mode),
            "lg_prof_sample:14",
            &[
                python.as_os_str(),
                script.as_os_str(),
                mode.as_ref(),
                "50000".as_ref(),
            ],
        )
    };
    let leaky = run_mode("leak");
    eprintln!("{leaky}");
    assert!(leaky.starts_with("leak 50000\n"), "{leaky}");
    assert_hint(
        &leaky,
        "Python objects kept alive",
        &["_PyEval_EvalFrameDefault", "PyEval_EvalCode"],
    );
    assert!(leaky.contains("PYTHONTRACEMALLOC=25"), "{leaky}");
    let fixed = run_mode("fixed");
    assert!(fixed.starts_with("fixed 50000\n"), "{fixed}");
    assert!(!fixed.contains("Hint:"), "{fixed}");
}

#[test]
fn unclosed_gzip_streams_get_the_deflater_hint() {
    need("javac", "default-jdk-headless");
    need("java", "default-jdk-headless");
    let dir = tempfile::tempdir().unwrap();
    let classes = compile_gzip_logger(dir.path());
    let run_mode = |mode: &str| {
        let report = run_report(
            &dir.path().join(mode),
            "lg_prof_sample:17",
            &[
                "java".as_ref(),
                "-cp".as_ref(),
                classes.as_os_str(),
                "GzipLogger".as_ref(),
                mode.as_ref(),
                "2000".as_ref(),
            ],
        );
        // tally run gave the JVM a perf map, read by the report already printed.
        let pid = dump_pid(&heap_profile(&report));
        let _ = std::fs::remove_file(format!("/tmp/perf-{pid}.map"));
        report
    };
    let leaky = run_mode("leak");
    eprintln!("{leaky}");
    assert!(leaky.starts_with("leaky: 2000 messages"), "{leaky}");
    // The JNI function's name is enough for the hint (java_leak_named.rs checks the Java frames).
    assert_hint(
        &leaky,
        "java.util.zip.Deflater not ended",
        &["deflateInit2_", "Java_java_util_zip_Deflater_init"],
    );
    let first = &stacks(&leaky)[0];
    assert_eq!(
        first[1], "deflateInit2_",
        "the largest stack is zlib's state:\n{leaky}"
    );
    assert!(leaky.contains("try-with-resources"), "{leaky}");

    let fixed = run_mode("fixed");
    assert!(fixed.starts_with("fixed: 2000 messages"), "{fixed}");
    assert!(!fixed.contains("Hint:"), "{fixed}");
    assert!(
        !stacks(&fixed)
            .iter()
            .any(|s| s.iter().any(|l| l == "deflateInit2_")),
        "{fixed}"
    );
}
