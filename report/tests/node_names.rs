//! A JavaScript function named in a native heap profile: `data/hold_buffers.js` run with
//! `tally run -- node …` and nothing else (`tally run` gives node its perf map flags; build
//! `libtally.so` first: `cargo build --release -p tally-alloc`). Its `Buffer`s' memory comes from
//! `malloc` under V8's builtins; the stack that holds most of it names `holdBuffers` with its
//! file and line, found through JIT code by the profiler's frame-pointer steps and named from
//! `/tmp/perf-<pid>.map`.

mod common;

use common::*;

#[test]
fn the_js_function_holding_buffers_is_named() {
    need("node", "nodejs");
    let dir = tempfile::tempdir().unwrap();
    let script = data("hold_buffers.js");
    let output = tally_run("lg_prof_sample:16", dir.path())
        .arg("node")
        .arg(&script)
        .output()
        .unwrap();
    let report = String::from_utf8_lossy(&output.stdout).into_owned();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "{report}{stderr}");
    assert!(report.contains("kept 2000 buffers"), "{report}");
    let dump = heap_profile(&report);
    let pid = dump_pid(&dump);

    let collapsed = stdout(tally().args(["report", "--collapsed"]).arg(&dump));
    let _ = std::fs::remove_file(format!("/tmp/perf-{pid}.map"));
    // node names a function by the line it is declared on.
    let want = format!(
        "holdBuffers {}:{}",
        script.display(),
        line_of(&script, "HOLD_FUNCTION")
    );
    let mut total = 0.0;
    let mut named = 0.0;
    for (stack, value) in collapsed.lines().filter_map(|l| l.rsplit_once(' ')) {
        let value: f64 = value.parse().unwrap();
        total += value;
        if stack.split(';').any(|f| f == want) {
            named += value;
        }
    }
    // 125 MiB of Buffers in a process whose other live memory is a few MiB.
    assert!(
        named > 0.8 * total,
        "{named} of {total} bytes under {want:?}:\n{collapsed}"
    );
    assert!(
        named > 100.0 * 1048576.0,
        "{named} bytes under {want:?}:\n{collapsed}"
    );
}
