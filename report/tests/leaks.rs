//! `tally leaks` on real data: the Java scenario this project exists for. A logger wraps every
//! message in a `java.util.zip.GZIPOutputStream` and never closes it, so the native zlib state
//! that `deflateInit2_` allocates under `Java_java_util_zip_Deflater_init` grows with every
//! message; the fixed logger closes it. Both run under a preloaded profiler writing interval
//! dumps, here Debian's jemalloc (the same scenario under Tally's own profiler is
//! `tally_profiler.rs`).

mod common;

use std::path::{Path, PathBuf};

use common::*;

/// `lg_prof_interval` of the runs: a dump every 64 MiB allocated, so a run of a second or two
/// makes a series.
const LG_INTERVAL: u32 = 26;
/// Messages per run: about 260 KiB of zlib state each, so about 20 interval dumps.
const MESSAGES: &str = "5000";

fn jemalloc() -> Profiler {
    Profiler::jemalloc(&format!(
        "prof:true,lg_prof_interval:{LG_INTERVAL},lg_prof_sample:17"
    ))
}

/// Compiles the Java program and runs it in `mode` (`leak` or `fixed`) under `profiler`.
fn gzip_logger_dumps(profiler: &Profiler, mode: &str, dir: &Path) -> Vec<PathBuf> {
    need("java", "default-jdk-headless");
    let dumps = run_gzip_logger(profiler, Path::new("java"), mode, MESSAGES, dir, "prof");
    assert!(dumps.len() >= 5, "only {} interval dumps: {dumps:?}", dumps.len());
    dumps
}

#[test]
fn gzip_stream_leak_ranks_deflate_first() {
    let dir = tempfile::tempdir().unwrap();
    let dumps = gzip_logger_dumps(&jemalloc(), "leak", dir.path());
    let html = dir.path().join("leaks.html");
    let report = stdout(
        tally()
            .args(["leaks", "--lg-interval", &LG_INTERVAL.to_string(), "--html"])
            .arg(&html)
            .args(&dumps),
    );
    let suspects = suspects(&report);
    assert!(!suspects.is_empty(), "no suspect:\n{report}");
    let first = &suspects[0];
    assert!(
        first
            .iter()
            .any(|f| f == "deflateInit2_" || f == "Java_java_util_zip_Deflater_init"),
        "the first suspect is not zlib's state:\n{report}"
    );
    // Every message leaks about 260 KiB and allocates about as much: nearly all of what the
    // program allocates stays.
    assert!(
        first[0].contains("per GiB allocated") && first[0].contains("R² "),
        "{report}"
    );
    // Under its stack, the hint of the known leak, once.
    assert!(
        first
            .iter()
            .any(|l| l.starts_with("Hint: java.util.zip.Deflater not ended")),
        "no Deflater hint under the first suspect:\n{report}"
    );
    assert_eq!(report.matches("try-with-resources").count(), 1, "{report}");
    let per_gib = first[0]
        .split_once(". +")
        .and_then(|(_, rest)| rest.split_once(" per GiB"))
        .map(|(amount, _)| amount.to_string())
        .unwrap();
    assert!(
        per_gib.ends_with("MiB") || per_gib.ends_with("GiB"),
        "growth {per_gib}"
    );

    // The HTML report: well-formed, self-contained, naming the suspect.
    let text = std::fs::read_to_string(&html).unwrap();
    let document = parse_xml(&text);
    assert!(document.descendants().any(|n| n.has_tag_name("svg")));
    assert!(text.contains("deflateInit2_"), "{text}");
    let hint = document
        .descendants()
        .find(|n| n.attribute("class") == Some("hint"))
        .expect("a hint in the HTML report");
    let hint_text: String = hint
        .descendants()
        .filter(|n| n.is_text())
        .filter_map(|n| n.text())
        .collect();
    assert!(
        hint_text.starts_with("Hint: java.util.zip.Deflater not ended"),
        "{hint_text}"
    );
    assert!(
        hint.ancestors().any(|n| n.has_tag_name("tr")),
        "the hint is not in the suspect's row"
    );
    assert_self_contained(&document);
}

#[test]
fn closed_gzip_streams_are_no_steady_grower() {
    let dir = tempfile::tempdir().unwrap();
    let dumps = gzip_logger_dumps(&jemalloc(), "fixed", dir.path());
    assert_no_steady_grower(LG_INTERVAL, &dumps);
}

#[test]
fn a_series_needs_three_dumps() {
    let output = tally()
        .args(["leaks"])
        .arg(data("jemalloc-5.3-ls.heap"))
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.starts_with("tally: leaks: needs a series of at least 3 dumps"),
        "{stderr}"
    );
}
