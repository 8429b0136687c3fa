//! The story Tally exists for, under Tally itself: the Java logger that never closes its
//! `GZIPOutputStream`s (`data/GzipLogger.java`) runs under `LD_PRELOAD=libtally.so` with the
//! settings of the profiler issue, `prof:true,lg_prof_interval:30,lg_prof_sample:17` (a dump per
//! GiB allocated, one sample per 128 KiB). In its interval dumps the native zlib state that
//! `deflateInit2_` allocates under `Java_java_util_zip_Deflater_init` holds the majority of live
//! bytes, by `tally report --text` and by Debian's unmodified `jeprof --text`, and `tally leaks`
//! ranks it first; the fixed logger (try-with-resources) shows neither.
//!
//! Needs `cargo build --release -p tally-alloc` first: the library is the real
//! `<target>/release/libtally.so` (see `common::libtally`).

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;

use common::*;

/// `lg_prof_interval` of the runs, as in the issue: a dump every GiB allocated.
const LG_INTERVAL: u32 = 30;
/// The profiler's options, as in the issue.
const CONF: &str = "prof:true,lg_prof_interval:30,lg_prof_sample:17";
/// Messages of the leaky run: each keeps about 260 KiB of zlib state, so 17,000 allocate (and
/// keep) about 4.2 GiB: four interval dumps. The kept state is mostly untouched pages, so the
/// JVM's RSS stays near 1.5 GiB.
const LEAKY_MESSAGES: &str = "17000";
/// Messages of the fixed run: it frees each stream's state at once, so it can run longer at no
/// cost in memory: about 15 GiB allocated, fifteen dumps. A short series is not enough here: over
/// four dumps the JIT compiler's arenas, still warming up, grow by a few samples and may pass for
/// a steady grower.
const FIXED_MESSAGES: &str = "60000";
/// The functions of the leak.
const ZLIB: [&str; 2] = ["deflateInit2_", "Java_java_util_zip_Deflater_init"];

/// The `java` launcher, resolved (`/usr/lib/jvm/<jdk>/bin/java`): the binary given to `jeprof`.
fn java() -> PathBuf {
    need("java", "default-jdk-headless");
    let path = stdout(Command::new("sh").args(["-c", "command -v java"]));
    std::fs::canonicalize(path.trim()).unwrap()
}

/// Compiles `GzipLogger.java` and runs it in `mode` (`leak` or `fixed`) for `messages` messages
/// under Tally with [`CONF`]; returns its interval dumps in order.
fn gzip_logger_dumps(mode: &str, messages: &str, dir: &Path) -> Vec<PathBuf> {
    let profiler = Profiler::tally(CONF);
    let dumps = run_gzip_logger(&profiler, &java(), mode, messages, dir, "tally");
    assert!(
        dumps.len() >= 3,
        "only {} interval dumps under {}: {dumps:?}",
        dumps.len(),
        profiler.preload.display()
    );
    for dump in &dumps {
        let name = dump.file_name().unwrap().to_string_lossy();
        assert!(
            name.starts_with("tally.") && name.contains(".i") && name.ends_with(".heap"),
            "{name}"
        );
    }
    dumps
}

/// A `--text` report's percentage (`99.1%`) as a number.
fn percent(text: &str) -> f64 {
    text.trim_end_matches('%')
        .parse()
        .unwrap_or_else(|_| panic!("not a percentage: {text:?}"))
}

/// The share of live bytes in stacks through zlib's state: the largest cum% of the [`ZLIB`]
/// rows of a `--text` report (tally's or jeprof's), 0 when neither is there.
fn zlib_share(report: &str) -> f64 {
    rows(report)
        .iter()
        .filter(|r| {
            let function = r.name.split_whitespace().next().unwrap_or("");
            ZLIB.contains(&function)
        })
        .map(|r| percent(&r.cum_percent))
        .fold(0.0, f64::max)
}

/// The `Total:` of a `--text` report, in MiB (jeprof says "MB" for the same number).
fn total(report: &str) -> f64 {
    let line = report
        .lines()
        .find(|l| l.starts_with("Total: "))
        .unwrap_or_else(|| panic!("no Total line:\n{report}"));
    line["Total: ".len()..]
        .split_whitespace()
        .next()
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("{line}"))
}

/// For each dump: (`tally report --text`, `jeprof --text <java> <dump>`). The jeprof runs go in
/// parallel (each takes a second or two).
fn reports(dumps: &[PathBuf]) -> Vec<(String, String)> {
    need("jeprof", "libjemalloc-dev");
    let java = java();
    std::thread::scope(|scope| {
        let jeprofs: Vec<_> = dumps
            .iter()
            .map(|dump| {
                let java = &java;
                scope.spawn(move || stdout(Command::new("jeprof").arg("--text").arg(java).arg(dump)))
            })
            .collect();
        let tallies: Vec<String> = dumps
            .iter()
            .map(|dump| stdout(tally().args(["report", "--text"]).arg(dump)))
            .collect();
        tallies
            .into_iter()
            .zip(jeprofs.into_iter().map(|j| j.join().unwrap()))
            .collect()
    })
}

/// The growth of the first suspect of `tally leaks --lg-interval`, in MiB per GiB allocated.
fn growth_per_gib(header: &str) -> f64 {
    let amount = header
        .split_once(". +")
        .and_then(|(_, rest)| rest.split_once(" per GiB allocated"))
        .map(|(amount, _)| amount)
        .unwrap_or_else(|| panic!("no growth per GiB in {header:?}"));
    let (number, unit) = amount.split_once(' ').unwrap();
    let number: f64 = number.parse().unwrap();
    match unit {
        "GiB" => number * 1024.0,
        "MiB" => number,
        "KiB" => number / 1024.0,
        "B" => number / 1024.0 / 1024.0,
        _ => panic!("unit of {amount:?}"),
    }
}

/// For each dump: zlib's share of live bytes by tally's report and by jeprof's, and the two
/// reports (printed as it goes).
fn zlib_shares(dumps: &[PathBuf]) -> Vec<(&PathBuf, f64, f64, String, String)> {
    dumps
        .iter()
        .zip(reports(dumps))
        .map(|(dump, (tally_text, jeprof_text))| {
            let (ours, theirs) = (zlib_share(&tally_text), zlib_share(&jeprof_text));
            eprintln!(
                "{}: zlib holds {ours}% of {} MiB (tally), {theirs}% of {} MB (jeprof)",
                dump.display(),
                total(&tally_text),
                total(&jeprof_text)
            );
            (dump, ours, theirs, tally_text, jeprof_text)
        })
        .collect()
}

#[test]
fn unclosed_gzip_streams_hold_most_live_bytes_under_tally() {
    let dir = tempfile::tempdir().unwrap();
    let dumps = gzip_logger_dumps("leak", LEAKY_MESSAGES, dir.path());

    // (a) In every interval dump, zlib's state holds the majority of live sampled bytes, by
    // tally's report and by jeprof's, and the two agree.
    for (dump, ours, theirs, tally_text, jeprof_text) in zlib_shares(&dumps) {
        assert!(ours > 50.0, "{}: {ours}%\n{tally_text}", dump.display());
        assert!(theirs > 50.0, "{}: {theirs}%\n{jeprof_text}", dump.display());
        assert!(
            (ours - theirs).abs() <= 1.0,
            "{}: tally {ours}% vs jeprof {theirs}%\n{tally_text}\n{jeprof_text}",
            dump.display()
        );
        assert_close(total(&tally_text), total(&jeprof_text), 1.0, "totals");
        // The largest stack is zlib's, with the Deflater's hint under it.
        let largest = &stacks(&tally_text)[0];
        assert_eq!(largest[1], "deflateInit2_", "{tally_text}");
        assert!(
            largest
                .iter()
                .any(|l| l.starts_with("Hint: java.util.zip.Deflater not ended")),
            "{tally_text}"
        );
    }

    // (b) `tally leaks` ranks that stack first, growing by about what the program allocates:
    // nearly every byte allocated is zlib state that stays.
    let report = leaks_report(LG_INTERVAL, &dumps);
    eprintln!("{report}");
    let suspects = suspects(&report);
    assert!(!suspects.is_empty(), "no suspect:\n{report}");
    let first = &suspects[0];
    assert!(
        first.iter().skip(1).any(|f| ZLIB.contains(&f.as_str())),
        "the first suspect is not zlib's state:\n{report}"
    );
    assert!(
        first
            .iter()
            .any(|l| l.starts_with("Hint: java.util.zip.Deflater not ended")),
        "{report}"
    );
    let growth = growth_per_gib(&first[0]);
    assert!(
        (700.0..=1100.0).contains(&growth),
        "{growth} MiB per GiB:\n{report}"
    );
}

#[test]
fn closed_gzip_streams_hold_little_under_tally() {
    let dir = tempfile::tempdir().unwrap();
    let dumps = gzip_logger_dumps("fixed", FIXED_MESSAGES, dir.path());

    // (c) zlib's state is well below the majority in every dump, by both reports.
    for (dump, ours, theirs, tally_text, jeprof_text) in zlib_shares(&dumps) {
        assert!(ours < 20.0, "{}: {ours}%\n{tally_text}", dump.display());
        assert!(theirs < 20.0, "{}: {theirs}%\n{jeprof_text}", dump.display());
        assert!(
            !tally_text.contains("Hint: java.util.zip.Deflater"),
            "{tally_text}"
        );
    }

    // ... and `tally leaks` finds no steady grower.
    assert_no_steady_grower(LG_INTERVAL, &dumps);
}
