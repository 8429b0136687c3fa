//! Java method names in a real JVM's heap profile: `tally run -- java GzipLogger leak 60000`
//! under the real `libtally.so` and Tally's JVMTI agent next to it (build both first: `cargo
//! build --release -p tally-alloc -p tally-jvm-agent`) gives the JVM `-XX:+PreserveFramePointer
//! -agentpath:<libtally_jvm.so>`, and the report names the JIT-compiled frames from the
//! `/tmp/perf-<pid>.map` the agent writes. With `TALLY_JVM_AGENT=` (empty) in the environment
//! the run has no agent and the JVM writes its own map at exit (`-XX:+DumpPerfMapAtExit`).
//!
//! - `names_the_jit_frame_above_the_native_code`: the profiler's walk ends at the first JIT
//!   frame (it has no unwind information there), and that frame, the compiled native wrapper
//!   of `Deflater.init` or the interpreter, is named, not hex.
//! - `names_the_java_callers_of_deflate_init` NEEDS THE MIXED WALK (branch `mixed-unwind`:
//!   the profiler continuing through JIT frames by frame pointers) and fails without it: the
//!   Java code that leaked, `GzipLogger.logLeaky` (or its compiled caller), above
//!   `Java_java_util_zip_Deflater_init`.
//! - `names_the_methods_c2_inlined_above_deflate_init` NEEDS THE AGENT and fails without it
//!   (`TALLY_JVM_AGENT= cargo test`): by 60,000 calls C2 has compiled `GzipLogger.logLeaky` with
//!   `GZIPOutputStream.<init>` inlined into it, and only the agent's map names inlined methods.

mod common;

use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use common::*;

/// The collapsed stacks of the final dump of one `tally run -- java GzipLogger leak 60000`,
/// shared by the tests: (stack, bytes).
fn collapsed() -> &'static [(String, f64)] {
    static STACKS: OnceLock<Vec<(String, f64)>> = OnceLock::new();
    STACKS.get_or_init(|| {
        let with_agent = std::env::var_os("TALLY_JVM_AGENT").is_none();
        if with_agent {
            libtally_jvm();
        }
        let dir = tempfile::tempdir().unwrap().keep();
        let classes = compile_gzip_logger(&dir);
        let output = tally_run("lg_prof_sample:17", &dir)
            .args(["java", "-cp"])
            .arg(&classes)
            .args(["GzipLogger", "leak", "60000"])
            .output()
            .unwrap();
        let stdout = String::from_utf8_lossy(&output.stdout);
        assert!(
            output.status.success(),
            "{stdout}{}",
            String::from_utf8_lossy(&output.stderr)
        );
        let dump = heap_profile(&stdout);
        let pid = dump_pid(&dump);
        let map = PathBuf::from(format!("/tmp/perf-{pid}.map"));
        let text = stdout_of_report(&dump);
        let map_text = std::fs::read(&map).unwrap_or_default();
        eprintln!(
            "{} (agent: {with_agent}): {} lines, {} bytes",
            map.display(),
            map_text.iter().filter(|&&b| b == b'\n').count(),
            map_text.len()
        );
        let _ = std::fs::remove_file(&map);
        let _ = std::fs::remove_dir_all(&dir);
        text.lines()
            .filter_map(|l| l.rsplit_once(' '))
            .map(|(stack, value)| (stack.to_string(), value.parse().unwrap()))
            .collect()
    })
}

fn stdout_of_report(dump: &Path) -> String {
    stdout(tally().args(["report", "--collapsed"]).arg(dump))
}

/// The bytes of the stacks through `Java_java_util_zip_Deflater_init`, and of those for which
/// `frame_above` holds for some frame above (outer to) it.
fn deflate_bytes(frame_above: impl Fn(&str) -> bool) -> (f64, f64) {
    let native = "Java_java_util_zip_Deflater_init";
    let mut all = 0.0;
    let mut matching = 0.0;
    for (stack, bytes) in collapsed() {
        let frames: Vec<&str> = stack.split(';').collect();
        let Some(at) = frames.iter().position(|f| *f == native) else {
            continue;
        };
        all += bytes;
        if frames[..at].iter().any(|f| frame_above(f)) {
            matching += bytes;
        }
    }
    assert!(all > 0.0, "no stack through {native}: {:#?}", collapsed());
    (all, matching)
}

#[test]
fn names_the_jit_frame_above_the_native_code() {
    let (all, named) = deflate_bytes(|f| {
        f.starts_with("java.util.zip.") || f.starts_with("GzipLogger.") || f == "[java interpreter]"
    });
    let (_, hex) = deflate_bytes(|f| f.starts_with("0x"));
    assert!(
        named > 0.9 * all && hex < 0.1 * all,
        "{named} of {all} bytes under a named Java frame, {hex} under a hex one: {:#?}",
        collapsed()
    );
}

#[test]
fn names_the_java_callers_of_deflate_init() {
    // Needs the mixed walk (branch `mixed-unwind`): see the module docs.
    let (all, callers) = deflate_bytes(|f| f.starts_with("GzipLogger."));
    assert!(
        callers > 0.5 * all,
        "{callers} of {all} bytes under GzipLogger's frames: {:#?}",
        collapsed()
    );
}

#[test]
fn names_the_methods_c2_inlined_above_deflate_init() {
    // Needs the agent: see the module docs.
    let native = "deflateInit2_";
    let (stack, bytes) = collapsed()
        .iter()
        .filter(|(stack, _)| stack.split(';').any(|f| f == native))
        .max_by(|a, b| a.1.total_cmp(&b.1))
        .unwrap_or_else(|| panic!("no stack through {native}: {:#?}", collapsed()));
    // Root first; an inlined frame reads `<function> (inline)`.
    let frames: Vec<&str> = stack
        .split(';')
        .map(|f| f.strip_suffix(" (inline)").unwrap_or(f))
        .collect();
    let at = frames.iter().position(|f| *f == native).unwrap();
    let above = &frames[..at];
    let leaker = above.iter().position(|f| *f == "GzipLogger.logLeaky");
    let stream = above
        .iter()
        .rposition(|f| *f == "java.util.zip.GZIPOutputStream.<init>");
    assert!(
        matches!((leaker, stream), (Some(l), Some(s)) if l < s),
        "the largest stack through {native} ({bytes} bytes) has no \
         GzipLogger.logLeaky → GZIPOutputStream.<init> above it: {stack}"
    );
}
