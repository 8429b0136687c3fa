//! The seed's leak, named down to the Java line that makes it: `data/GzipLogger.java` run with
//! `tally run -- java …` and nothing else given by hand (`tally run` gives the JVM frame
//! pointers and a perf map; build `libtally.so` first: `cargo build --release -p tally-alloc`).
//!
//! - `leak`: the largest stack of the `--text` report and the first suspect of `tally leaks`
//!   read `deflateInit2_` ← … ← `java.util.zip.GZIPOutputStream.<init>` ← …
//!   `GzipLogger.logLeaky`, with the Deflater hint under them; `--collapsed` and `--pprof` (read
//!   by `go tool pprof -top`) carry the same Java names.
//! - `fixed`: the same program closing its streams has no such stack and no hint.
//! - Served live (`prof_http`, no `tally run`): the same leak preloaded with Tally's JVM agent,
//!   fetched by `go tool pprof` over HTTP, names `deflateInit2_` and the Java methods down to
//!   `GzipLogger.logLeaky`: the process names its compiled Java code from its own perf map.

mod common;

use std::path::{Path, PathBuf};

use common::*;

/// Messages per run: enough for the JIT to compile `logLeaky` (a few seconds here).
const MESSAGES: &str = "30000";

/// What `tally run` printed and where its dumps are.
struct Run {
    /// The `--text` report `tally run` printed at exit.
    report: String,
    /// The final dump.
    last: PathBuf,
    /// The interval dumps, in order.
    series: Vec<PathBuf>,
    /// The JVM's perf map, removed when the test is done with the run.
    perf_map: PathBuf,
}

impl Drop for Run {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.perf_map);
    }
}

/// `lg_prof_interval` of the runs: a dump per 512 MiB allocated.
const LG_INTERVAL: u32 = 29;

/// `tally run --out <dir> -- java -cp <classes> GzipLogger <mode> MESSAGES`.
fn tally_run_java(mode: &str, dir: &Path) -> Run {
    let classes = compile_gzip_logger(dir);
    let out = dir.join("dumps");
    let output = tally_run(&format!("lg_prof_sample:17,lg_prof_interval:{LG_INTERVAL}"), &out)
        .args(["java", "-cp"])
        .arg(&classes)
        .args(["GzipLogger", mode, MESSAGES])
        .output()
        .unwrap();
    let report = String::from_utf8_lossy(&output.stdout).into_owned();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "{report}{stderr}");
    let last = heap_profile(&report);
    let mut series: Vec<(u64, PathBuf)> = std::fs::read_dir(&out)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter_map(|p| {
            let name = p.file_name()?.to_string_lossy().into_owned();
            let parts: Vec<&str> = name.split('.').collect();
            if parts.len() != 5 || !parts[3].starts_with('i') {
                return None;
            }
            Some((parts[2].parse().ok()?, p.clone()))
        })
        .collect();
    series.sort();
    Run {
        perf_map: PathBuf::from(format!("/tmp/perf-{}.map", dump_pid(&last))),
        report,
        last,
        series: series.into_iter().map(|(_, p)| p).collect(),
    }
}

/// Asserts that `frames` (innermost first) hold `deflateInit2_`, then further out
/// `java.util.zip.GZIPOutputStream.<init>`, then `GzipLogger.logLeaky`.
fn assert_named_down_to_the_leak(frames: &[String], context: &str) {
    // An inlined frame may read `name (inline)`; the first (innermost) match counts.
    let at = |name: &str| {
        frames
            .iter()
            .position(|f| f == name || f.strip_suffix(" (inline)") == Some(name))
            .unwrap_or_else(|| panic!("no frame {name} in {frames:#?}\n{context}"))
    };
    let zlib = at("deflateInit2_");
    let stream = at("java.util.zip.GZIPOutputStream.<init>");
    let method = at("GzipLogger.logLeaky");
    assert!(zlib < stream && stream < method, "{frames:#?}\n{context}");
}

const HINT: &str = "Hint: java.util.zip.Deflater not ended";

/// Every one of `names` has a line in `go tool pprof -top -cum` output `top` whose cumulative
/// share (the fifth column) is over half.
fn assert_over_half_cum(top: &str, names: &[&str]) {
    for name in names {
        let line = top
            .lines()
            .find(|l| {
                // pprof marks a frame of an inline chain with ` (inline)`, and one inlined
                // in some stacks only (the JIT compiled its caller part way through the run)
                // with ` (partial-inline)`.
                let l = l.trim_end();
                ["", " (inline)", " (partial-inline)"]
                    .iter()
                    .any(|mark| l.ends_with(&format!(" {name}{mark}")))
            })
            .unwrap_or_else(|| panic!("go tool pprof -top lacks {name}:\n{top}"));
        let cum_percent: f64 = line
            .split_whitespace()
            .nth(4)
            .and_then(|w| w.trim_end_matches('%').parse().ok())
            .unwrap_or_else(|| panic!("no cum% in {line:?}"));
        assert!(cum_percent > 50.0, "{name}: {line}\n{top}");
    }
}

#[test]
fn the_leaking_java_method_is_named_in_every_output() {
    let dir = tempfile::tempdir().unwrap();
    let run = tally_run_java("leak", dir.path());

    // The text report: its largest stack, with the Deflater hint.
    let stacks = stacks(&run.report);
    assert!(!stacks.is_empty(), "no largest stacks:\n{}", run.report);
    assert_named_down_to_the_leak(&stacks[0], &run.report);
    assert!(stacks[0].iter().any(|l| l.starts_with(HINT)), "{}", run.report);

    // tally leaks over the interval dumps: the first suspect, with the hint.
    assert!(run.series.len() >= 4, "{:?}", run.series);
    let leaks = leaks_report(LG_INTERVAL, &run.series);
    let suspects = suspects(&leaks);
    assert!(!suspects.is_empty(), "no suspect:\n{leaks}");
    assert_named_down_to_the_leak(&suspects[0], &leaks);
    assert!(suspects[0].iter().any(|l| l.starts_with(HINT)), "{leaks}");

    // --collapsed: the heaviest stack (root first) has the names too.
    let collapsed = stdout(tally().args(["report", "--collapsed"]).arg(&run.last));
    let heaviest = collapsed
        .lines()
        .filter_map(|l| l.rsplit_once(' '))
        .max_by(|a, b| {
            let value = |s: &str| s.parse::<f64>().unwrap_or(0.0);
            value(a.1).total_cmp(&value(b.1))
        })
        .map(|(stack, _)| stack.split(';').rev().map(str::to_string).collect::<Vec<_>>())
        .unwrap_or_else(|| panic!("no stacks:\n{collapsed}"));
    assert_named_down_to_the_leak(&heaviest, &collapsed);

    // --pprof, read by go tool pprof: both Java frames hold most of the live bytes.
    let pprof_file = dir.path().join("java.pb.gz");
    common::run(
        tally()
            .args(["report", "--pprof"])
            .arg(&pprof_file)
            .arg(&run.last),
    );
    let top = stdout(
        go_pprof()
            .args(["-top", "-cum", "-symbolize=none", "-nodecount=40"])
            .arg(&pprof_file),
    );
    assert_over_half_cum(
        &top,
        &["GzipLogger.logLeaky", "java.util.zip.GZIPOutputStream.<init>"],
    );
}

#[test]
fn the_fixed_program_has_no_such_stack_and_no_hint() {
    let dir = tempfile::tempdir().unwrap();
    let run = tally_run_java("fixed", dir.path());
    for stack in stacks(&run.report) {
        assert!(!stack.iter().any(|f| f == "deflateInit2_"), "{}", run.report);
    }
    assert!(!run.report.contains("Hint: "), "{}", run.report);
    assert!(run.series.len() >= 3, "{:?}", run.series);
    let leaks = leaks_report(LG_INTERVAL, &run.series);
    assert!(!leaks.contains("deflateInit2_"), "{leaks}");
    assert!(!leaks.contains("Hint: "), "{leaks}");
}

#[test]
fn served_over_http_the_java_methods_are_named_in_the_process() {
    use std::io::{BufRead, BufReader};
    use std::process::Stdio;
    let dir = tempfile::tempdir().unwrap();
    let classes = compile_gzip_logger(dir.path());
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let mut java = std::process::Command::new("java")
        .arg("-cp")
        .arg(&classes)
        .args(["GzipLogger", "leak", MESSAGES, "wait"])
        .env("LD_PRELOAD", libtally())
        .env(
            "TALLY_CONF",
            format!("prof:true,lg_prof_sample:17,prof_http:127.0.0.1:{port}"),
        )
        .env(
            "JAVA_TOOL_OPTIONS",
            format!(
                "-XX:+PreserveFramePointer -agentpath:{}",
                libtally_jvm().display()
            ),
        )
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    struct Kill(std::process::Child);
    impl Drop for Kill {
        fn drop(&mut self) {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
    let out = java.stdout.take().unwrap();
    let java = Kill(java);
    let line = BufReader::new(out).lines().next().unwrap().unwrap();
    assert!(line.starts_with("leaky: "), "{line}");
    let url = format!("http://127.0.0.1:{port}/debug/pprof/heap");
    // PPROF_BINARY_PATH (set by `go_pprof`) points nowhere: every name comes from the process.
    let top = stdout(
        go_pprof()
            .env("PPROF_TMPDIR", dir.path())
            .args(["-top", "-cum", "-nodecount=60"])
            .arg(&url),
    );
    assert_over_half_cum(
        &top,
        &[
            "deflateInit2_",
            "java.util.zip.GZIPOutputStream.<init>",
            "GzipLogger.logLeaky",
        ],
    );
    drop(java);
}
