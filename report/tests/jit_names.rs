//! JIT code named from perf maps, through every output: a synthetic dump whose stacks lie in
//! anonymous executable memory, and a perf map in the shapes OpenJDK 17 and node v20 write.
//! The dumps are named with pids above Linux's largest (`2^22`), so that no running process
//! has them and `/tmp/perf-<pid>.map` is this test's own.

mod common;

use std::path::{Path, PathBuf};
use std::process::Output;

use common::*;

/// Start of the dumps' anonymous executable mapping (JIT code).
const JIT: u64 = 0x7f00_0000_0000;

/// A perf map as OpenJDK 17 writes one (`0x`-prefixed) with a node entry after it (no `0x`).
const PERF_MAP: &str = "\
0x00007f0000000800 0x0000000000000400 Interpreter
0x00007f0000001000 0x0000000000000100 void java.util.zip.GZIPOutputStream.<init>(java.io.OutputStream)
0x00007f0000001100 0x0000000000000100 long java.util.zip.Deflater.init(int, int, boolean)
0x00007f0000002000 0x0000000000000080 StubRoutines (1)
7f0000003000 80 JS:*logMessage /app/logger.js:12:20
";

/// The stacks: (frames, live objects, live bytes). Every frame but the first is a return
/// address (the report looks up address - 1).
fn stacks() -> Vec<(Vec<u64>, u64, u64)> {
    vec![
        // Deflater.init ← GZIPOutputStream.<init> ← the interpreter ← a stub.
        (
            vec![JIT + 0x1110, JIT + 0x1021, JIT + 0x901, JIT + 0x2011],
            4,
            4 << 20,
        ),
        // node: a compiled JS function, then an address no entry covers (between entries).
        (vec![JIT + 0x3010, JIT + 0x5001], 2, 2 << 20),
    ]
}

/// The JVM's library, in a dump's memory map: the process is a JVM.
const JVM_LIBRARY: &str =
    "7e0000000000-7e0000001000 r-xp 00000000 fe:00 2 /nonexistent/jdk/lib/server/libjvm.so\n";

/// A `heap_v2` dump of `stacks()` with one anonymous `rwxp` mapping (and a file mapping before
/// it, as in any process).
fn dump_text() -> String {
    let mut text = String::from("heap_v2/524288\n  t*: 6: 6291456 [0: 0]\n");
    for (frames, objects, bytes) in stacks() {
        let frames: Vec<String> = frames.iter().map(|f| format!("{f:#x}")).collect();
        text.push_str(&format!(
            "@ {}\n  t*: {objects}: {bytes} [0: 0]\n",
            frames.join(" ")
        ));
    }
    text.push_str("\nMAPPED_LIBRARIES:\n");
    text.push_str("55d000000000-55d000001000 r-xp 00000000 fe:00 1 /nonexistent/program\n");
    text.push_str(JVM_LIBRARY);
    text.push_str(&format!("{:x}-{:x} rwxp 00000000 00:00 0 \n", JIT, JIT + 0x10000));
    text
}

/// `/tmp/perf-<pid>.map`, removed when dropped.
struct TmpPerfMap(PathBuf);

impl TmpPerfMap {
    fn write(pid: u64, text: &str) -> TmpPerfMap {
        let path = PathBuf::from(format!("/tmp/perf-{pid}.map"));
        std::fs::write(&path, text).unwrap();
        TmpPerfMap(path)
    }
}

impl Drop for TmpPerfMap {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

/// Writes the dump of process `pid` into `dir`.
fn write_dump(dir: &Path, pid: u64) -> PathBuf {
    let path = dir.join(format!("tally.{pid}.0.f.heap"));
    std::fs::write(&path, dump_text()).unwrap();
    path
}

/// A pid no process has (above `2^22`, Linux's largest), one per test.
fn no_such_pid(n: u64) -> u64 {
    (1 << 22) + 1000 + n
}

fn report(args: &[&str], dump: &Path) -> Output {
    let output = tally().arg("report").args(args).arg(dump).output().unwrap();
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    output
}

fn stderr_lines(output: &Output) -> Vec<String> {
    String::from_utf8_lossy(&output.stderr)
        .lines()
        .map(str::to_string)
        .collect()
}

const NAMES: [&str; 5] = [
    "java.util.zip.Deflater.init",
    "java.util.zip.GZIPOutputStream.<init>",
    "[java interpreter]",
    "[jvm stub] StubRoutines (1)",
    "logMessage /app/logger.js:12",
];

#[test]
fn text_and_collapsed_name_jit_frames_and_leave_uncovered_ones_hex() {
    let dir = tempfile::tempdir().unwrap();
    let pid = no_such_pid(1);
    let dump = write_dump(dir.path(), pid);
    let _map = TmpPerfMap::write(pid, PERF_MAP);

    let output = report(&["--text", "--show-bytes"], &dump);
    let text = String::from_utf8_lossy(&output.stdout);
    let rows = rows(&text);
    // The first row: the JIT frame where the stack of 4 MiB allocated, 2/3 of the total.
    assert_eq!(rows[0].name, "java.util.zip.Deflater.init", "{text}");
    assert_eq!(rows[0].flat_percent, "66.7%", "{text}");
    for name in NAMES {
        assert!(rows.iter().any(|r| r.name == name), "no row {name:?}:\n{text}");
    }
    // 0x7f0000005000 lies between entries: hex, never a neighbour's name; and one hint.
    assert!(rows.iter().any(|r| r.name == "0x7f0000005000"), "{text}");
    let stderr = stderr_lines(&output);
    assert_eq!(stderr.len(), 1, "{stderr:?}");
    assert!(
        stderr[0].starts_with("tally: warning: 1 frame in anonymous executable memory (JIT code) print")
            && stderr[0].contains(&format!("/tmp/perf-{pid}.map has no entry for them")),
        "{stderr:?}"
    );

    let collapsed = String::from_utf8(report(&["--collapsed"], &dump).stdout).unwrap();
    let stacks: Vec<&str> = collapsed
        .lines()
        .filter_map(|line| line.rsplit_once(' ').map(|(stack, _)| stack))
        .collect();
    assert_eq!(
        stacks,
        [
            "0x7f0000005000;logMessage /app/logger.js:12",
            "[jvm stub] StubRoutines (1);[java interpreter];java.util.zip.GZIPOutputStream.<init>;\
             java.util.zip.Deflater.init"
        ],
        "{collapsed}"
    );
}

#[test]
fn an_inline_chain_entry_gives_inline_frames() {
    // As Tally's JVM agent writes it: GZIPOutputStream.<init> compiled into GzipLogger.logLeaky
    // (its line), and the call at return address +0x21 in inlined code (a 2-byte line after it).
    let dir = tempfile::tempdir().unwrap();
    let pid = no_such_pid(7);
    let dump = write_dump(dir.path(), pid);
    let map = PERF_MAP.replace(
        "0x00007f0000001000 0x0000000000000100 void java.util.zip.GZIPOutputStream.<init>(java.io.OutputStream)\n",
        "0x00007f0000001000 0x0000000000000100 byte[] GzipLogger.logLeaky(java.lang.String)\n\
         0x00007f0000001020 0x0000000000000002 GzipLogger.logLeaky->java.util.zip.GZIPOutputStream.<init>\n",
    );
    assert_ne!(map, PERF_MAP);
    let _map = TmpPerfMap::write(pid, &map);
    let collapsed = String::from_utf8(report(&["--collapsed"], &dump).stdout).unwrap();
    assert!(
        collapsed.lines().any(|line| line.starts_with(
            "[jvm stub] StubRoutines (1);[java interpreter];GzipLogger.logLeaky;\
             java.util.zip.GZIPOutputStream.<init> (inline);java.util.zip.Deflater.init "
        )),
        "{collapsed}"
    );
}

#[test]
fn pprof_flame_svg_and_html_name_jit_frames() {
    let dir = tempfile::tempdir().unwrap();
    let pid = no_such_pid(2);
    let dump = write_dump(dir.path(), pid);
    let _map = TmpPerfMap::write(pid, PERF_MAP);

    let pprof_file = dir.path().join("jit.pb.gz");
    report(&["--pprof", pprof_file.to_str().unwrap()], &dump);
    let top = stdout(
        go_pprof()
            .args(["-top", "-symbolize=none", "-unit=B", "-nodecount=20"])
            .arg(&pprof_file),
    );
    for name in NAMES {
        assert!(top.contains(name), "go tool pprof -top lacks {name:?}:\n{top}");
    }
    let first = top
        .lines()
        .find(|l| l.contains('%') && !l.contains("of ") && !l.trim_start().starts_with("flat"))
        .unwrap_or("");
    assert!(first.ends_with("java.util.zip.Deflater.init"), "{top}");

    for (option, file) in [
        ("--flame", "flame.svg"),
        ("--svg", "graph.svg"),
        ("--html", "report.html"),
    ] {
        if option == "--svg" {
            need("dot", "graphviz");
        }
        let out = dir.path().join(file);
        report(&[option, out.to_str().unwrap()], &dump);
        let text = std::fs::read_to_string(&out).unwrap();
        let document = parse_xml(&text);
        // The call graph splits its labels at spaces into lines (text elements): compare
        // without white space.
        let squeeze = |text: &str| text.split_whitespace().collect::<String>();
        let shown: String = document
            .descendants()
            .filter(|n| n.is_text())
            .filter_map(|n| n.text())
            .map(squeeze)
            .collect();
        for name in NAMES {
            assert!(shown.contains(&squeeze(name)), "{option} lacks {name:?}");
        }
    }
}

#[test]
fn without_a_map_frames_stay_hex_with_one_hint() {
    let dir = tempfile::tempdir().unwrap();
    let pid = no_such_pid(3);
    let dump = write_dump(dir.path(), pid);
    let _ = std::fs::remove_file(format!("/tmp/perf-{pid}.map"));

    let output = report(&["--text"], &dump);
    let text = String::from_utf8_lossy(&output.stdout);
    assert!(!text.contains("java."), "{text}");
    assert!(rows(&text).iter().any(|r| r.name == "0x7f0000001110"), "{text}");
    let stderr = stderr_lines(&output);
    assert_eq!(stderr.len(), 1, "{stderr:?}");
    let hint = &stderr[0];
    assert!(
        hint.starts_with(
            "tally: warning: 6 frames in anonymous executable memory (JIT code) print as addresses"
        ) && hint.contains(&format!("no perf map /tmp/perf-{pid}.map"))
            && hint.contains("tally run")
            && hint.contains("-XX:+DumpPerfMapAtExit")
            && hint.contains("-agentpath:")
            && hint.contains(&format!("jcmd {pid} Compiler.perfmap"))
            && hint.contains("--perf-map FILE"),
        "{hint}"
    );

    // One hint for a whole series, too (`tally leaks` over three copies of the dump).
    let series: Vec<PathBuf> = (1..=3)
        .map(|seq| {
            let path = dir.path().join(format!("tally.{pid}.{seq}.i{seq}.heap"));
            std::fs::write(&path, dump_text()).unwrap();
            path
        })
        .collect();
    let output = tally().arg("leaks").args(&series).output().unwrap();
    assert!(output.status.success());
    assert_eq!(stderr_lines(&output).len(), 1, "{:?}", stderr_lines(&output));
}

#[test]
fn perf_map_option_overrides_and_a_map_of_another_process_is_not_used() {
    let dir = tempfile::tempdir().unwrap();
    let pid = no_such_pid(4);
    // A dump whose name has no pid: only --perf-map names its frames.
    let dump = dir.path().join("service.heap");
    std::fs::write(&dump, dump_text()).unwrap();
    let output = report(&["--text"], &dump);
    let stderr = stderr_lines(&output);
    assert_eq!(stderr.len(), 1, "{stderr:?}");
    assert!(stderr[0].contains("has no pid in its name"), "{stderr:?}");

    let map = dir.path().join("saved.map");
    std::fs::write(&map, PERF_MAP).unwrap();
    let output = report(&["--text", "--perf-map", map.to_str().unwrap()], &dump);
    let text = String::from_utf8_lossy(&output.stdout);
    assert!(text.contains("java.util.zip.GZIPOutputStream.<init>"), "{text}");

    // The map of another address space (the same code 1 GiB higher): not used at all, even where
    // an address happens to fall in one of its entries.
    let elsewhere: String = PERF_MAP
        .lines()
        .map(|line| {
            let (start, rest) = line.split_once(' ').unwrap();
            let start = u64::from_str_radix(start.trim_start_matches("0x"), 16).unwrap();
            format!("{:x} {rest}\n", start + (1 << 30))
        })
        .collect::<String>()
        + &format!("{:x} 10000 void Wrong.name()\n", JIT - 0x8000);
    let _tmp = TmpPerfMap::write(pid, &elsewhere);
    let dump = write_dump(dir.path(), pid);
    let output = report(&["--text"], &dump);
    let text = String::from_utf8_lossy(&output.stdout);
    assert!(!text.contains("java.") && !text.contains("Wrong"), "{text}");
    let stderr = stderr_lines(&output);
    assert_eq!(stderr.len(), 1, "{stderr:?}");
    assert!(
        stderr[0].contains("does not match the dump's memory map"),
        "{stderr:?}"
    );

    // A JVM's map for a process that was no JVM: not used.
    let no_jvm = dump_text().replace(JVM_LIBRARY, "");
    std::fs::write(&dump, no_jvm).unwrap();
    let output = report(&["--text", "--perf-map", map.to_str().unwrap()], &dump);
    let text = String::from_utf8_lossy(&output.stdout);
    assert!(!text.contains("java."), "{text}");
    let stderr = stderr_lines(&output);
    assert_eq!(stderr.len(), 1, "{stderr:?}");
    assert!(
        stderr[0].contains("saved.map is a JVM's map, but the dump's process maps no libjvm.so"),
        "{stderr:?}"
    );
}

#[test]
fn bad_perf_maps_are_clear_errors_or_counted_lines() {
    let dir = tempfile::tempdir().unwrap();
    let dump = write_dump(dir.path(), no_such_pid(5));
    let not_a_map = dir.path().join("notes.txt");
    std::fs::write(&not_a_map, "hello\nworld\n").unwrap();
    let output = tally()
        .args(["report", "--perf-map"])
        .arg(&not_a_map)
        .arg(&dump)
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(2));
    assert_eq!(
        String::from_utf8_lossy(&output.stderr),
        format!(
            "tally: {}:1: not a perf map: no line is `START SIZE NAME` (hex addresses and sizes)\n",
            not_a_map.display()
        )
    );
    let output = tally()
        .args(["report", "--perf-map", "/nonexistent/perf.map"])
        .arg(&dump)
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(2));
    assert!(
        String::from_utf8_lossy(&output.stderr).starts_with("tally: /nonexistent/perf.map: "),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );

    // A map cut short by a writer still appending: the good lines are used, the bad one counted.
    let cut = dir.path().join("cut.map");
    std::fs::write(&cut, format!("{PERF_MAP}7f00000040")).unwrap();
    let output = report(&["--text", "--perf-map", cut.to_str().unwrap()], &dump);
    assert!(String::from_utf8_lossy(&output.stdout).contains("java.util.zip.Deflater.init"));
    let stderr = stderr_lines(&output);
    assert!(
        stderr.iter().any(
            |l| l.ends_with("cut.map: skipped 1 line that are not `START SIZE NAME` (the first: line 6)")
        ),
        "{stderr:?}"
    );
}

#[test]
fn leaks_keeps_named_jit_frames_and_folds_unnamed_ones() {
    let dir = tempfile::tempdir().unwrap();
    let pid = no_such_pid(6);
    let _map = TmpPerfMap::write(pid, PERF_MAP);
    // A growing stack: Deflater.init ← GZIPOutputStream.<init> ← unnamed JIT code at an address
    // that moves from dump to dump (a method compiled again) ← the interpreter.
    let series: Vec<PathBuf> = (0..5u64)
        .map(|i| {
            let bytes = (i + 1) << 22;
            let moved = JIT + 0x6000 + 0x100 * i;
            let text = format!(
                "heap_v2/524288\n  t*: {n}: {bytes} [0: 0]\n\
                 @ {a:#x} {b:#x} {moved:#x} {c:#x}\n  t*: {n}: {bytes} [0: 0]\n\n\
                 MAPPED_LIBRARIES:\n{JVM_LIBRARY}{JIT:x}-{end:x} rwxp 00000000 00:00 0 \n",
                n = i + 1,
                a = JIT + 0x1110,
                b = JIT + 0x1021,
                c = JIT + 0x901,
                end = JIT + 0x10000,
            );
            let path = dir.path().join(format!("tally.{pid}.{i}.i{i}.heap"));
            std::fs::write(&path, text).unwrap();
            path
        })
        .collect();
    let report = leaks_report(22, &series);
    let suspects = suspects(&report);
    assert_eq!(suspects.len(), 1, "one leak, not one per address:\n{report}");
    let frames = &suspects[0][1..];
    assert_eq!(
        frames,
        [
            "java.util.zip.Deflater.init",
            "java.util.zip.GZIPOutputStream.<init>",
            "[anonymous code]",
            "[java interpreter]"
        ],
        "{report}"
    );
}
