//! JVMs and node: the flags `tally run` gives them (and keeps the user's), the perf maps they
//! (or Tally's JVM agent) then write, and what `tally report` does about a dump's process that still runs (a map older
//! than the process, a pid taken by another process, a JVM asked for its map with `jcmd`).
//! `tally run` preloads Debian's jemalloc here (`TALLY_SO`), as in `run.rs`: the programs
//! write no Tally dump, so `tally run` ends with "wrote no heap profile" (exit code 2), which
//! these tests do not look at.

mod common;

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, SystemTime};

use common::*;

/// `tally run [extra] --out DIR -- command...` with jemalloc standing in for `libtally.so` and
/// `variable` set to `value` in the environment; no JVM agent (none is next to jemalloc).
fn tally_run(dir: &Path, extra: &[&str], command: &[&str], variable: &str, value: &str) -> Output {
    tally_run_with_agent(dir, extra, command, variable, value, None)
}

/// [`tally_run`] with `TALLY_JVM_AGENT=agent`.
fn tally_run_with_agent(
    dir: &Path,
    extra: &[&str],
    command: &[&str],
    variable: &str,
    value: &str,
    agent: Option<&Path>,
) -> Output {
    need(JEMALLOC, "libjemalloc2");
    let mut tally = tally();
    match agent {
        Some(agent) => tally.env("TALLY_JVM_AGENT", agent),
        None => tally.env_remove("TALLY_JVM_AGENT"),
    };
    tally
        .arg("run")
        .args(extra)
        .arg("--out")
        .arg(dir)
        .arg("--")
        .args(command)
        .current_dir(dir)
        .env("TALLY_SO", JEMALLOC)
        .env_remove("LD_PRELOAD")
        .env(variable, value)
        .output()
        .unwrap()
}

/// The value of `key=` in a program's output.
fn said<'a>(stdout: &'a str, key: &str) -> &'a str {
    stdout
        .lines()
        .find_map(|l| l.strip_prefix(key).and_then(|l| l.strip_prefix('=')))
        .unwrap_or_else(|| panic!("no {key}= in:\n{stdout}"))
}

/// `/tmp/perf-<pid>.map`, removed when dropped.
struct PerfMapFile(PathBuf);

impl PerfMapFile {
    fn of(pid: &str) -> PerfMapFile {
        PerfMapFile(PathBuf::from(format!("/tmp/perf-{pid}.map")))
    }
}

impl Drop for PerfMapFile {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

/// Compiles `data/<class>.java` into `dir/classes`.
fn javac(dir: &Path, class: &str) -> PathBuf {
    need("javac", "default-jdk-headless");
    let classes = dir.join("classes");
    run(Command::new("javac")
        .arg("-d")
        .arg(&classes)
        .arg(data(&format!("{class}.java"))));
    classes
}

#[test]
fn java_gets_frame_pointers_and_a_perf_map_and_keeps_the_users_options() {
    let dir = tempfile::tempdir().unwrap();
    let classes = javac(dir.path(), "RuntimeFlags");
    let classes = classes.to_str().unwrap();
    let command = ["java", "-cp", classes, "RuntimeFlags"];
    let output = tally_run(
        dir.path(),
        &[],
        &command,
        "JAVA_TOOL_OPTIONS",
        "-Dtally.test=kept",
    );
    let stdout = String::from_utf8_lossy(&output.stdout);
    let pid = said(&stdout, "pid");
    let map = PerfMapFile::of(pid);
    assert_eq!(said(&stdout, "tally.test"), "kept", "the user's option is lost");
    let flags = said(&stdout, "flags");
    assert!(
        flags.starts_with(
            "-XX:+PreserveFramePointer -XX:+UnlockDiagnosticVMOptions -XX:+DumpPerfMapAtExit \
             -Dtally.test=kept"
        ),
        "ours first, then the user's: {flags}"
    );
    let text = std::fs::read_to_string(&map.0).expect("the JVM wrote no perf map");
    assert!(text.lines().any(|l| l.ends_with(" Interpreter")), "{text}");

    // --no-runtime-flags: only what the user set.
    let output = tally_run(
        dir.path(),
        &["--no-runtime-flags"],
        &command,
        "JAVA_TOOL_OPTIONS",
        "-Dtally.test=alone",
    );
    let stdout = String::from_utf8_lossy(&output.stdout);
    let _map = PerfMapFile::of(said(&stdout, "pid"));
    assert_eq!(said(&stdout, "tally.test"), "alone");
    assert_eq!(said(&stdout, "flags"), "-Dtally.test=alone");
    assert!(!_map.0.exists(), "a perf map without the flags");
}

#[test]
fn java_gets_the_agent_instead_of_the_map_at_exit() {
    let dir = tempfile::tempdir().unwrap();
    let classes = javac(dir.path(), "RuntimeFlags");
    let classes = classes.to_str().unwrap();
    let command = ["java", "-cp", classes, "RuntimeFlags"];
    let agent = libtally_jvm();
    let output = tally_run_with_agent(
        dir.path(),
        &[],
        &command,
        "JAVA_TOOL_OPTIONS",
        "-Dtally.test=kept",
        Some(&agent),
    );
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    let map = PerfMapFile::of(said(&stdout, "pid"));
    assert_eq!(said(&stdout, "tally.test"), "kept", "the user's option is lost");
    assert_eq!(
        said(&stdout, "flags"),
        format!(
            "-XX:+PreserveFramePointer -agentpath:{} -Dtally.test=kept",
            agent.display()
        ),
        "ours first, then the user's, and no -XX:+DumpPerfMapAtExit"
    );
    assert!(
        !stderr.contains("tally-jvm-agent"),
        "the agent complained: {stderr}"
    );
    // The agent's map: the interpreter and stubs (DynamicCodeGenerated), and methods compiled
    // while the JVM started, in the JVM's own shape.
    let text = std::fs::read_to_string(&map.0).expect("the agent wrote no perf map");
    assert!(text.lines().any(|l| l.ends_with(" Interpreter")), "{text}");
    assert!(text.lines().any(|l| l.ends_with(" call_stub")), "{text}");
    assert!(
        text.lines().any(|l| l.contains(" java.lang.String.hashCode()")),
        "{text}"
    );
    assert!(
        text.lines().all(|l| l.split(' ').count() >= 3),
        "a line that is not START SIZE NAME: {text}"
    );

    // An agent that is not there: one warning, and the JVM's own map at exit.
    let missing = dir.path().join("no-agent.so");
    let output = tally_run_with_agent(dir.path(), &[], &command, "JAVA_TOOL_OPTIONS", "", Some(&missing));
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    let _map = PerfMapFile::of(said(&stdout, "pid"));
    assert_eq!(
        said(&stdout, "flags"),
        "-XX:+PreserveFramePointer -XX:+UnlockDiagnosticVMOptions -XX:+DumpPerfMapAtExit"
    );
    assert!(
        stderr.contains(&format!("TALLY_JVM_AGENT={} is not a file", missing.display())),
        "{stderr}"
    );
}

#[test]
fn node_gets_perf_basic_prof_and_keeps_the_users_options() {
    need("node", "nodejs");
    let dir = tempfile::tempdir().unwrap();
    let script = data("runtime_flags.js");
    let script = script.to_str().unwrap();
    let user = "--max-old-space-size=200";
    let output = tally_run(dir.path(), &[], &["node", script], "NODE_OPTIONS", user);
    let stdout = String::from_utf8_lossy(&output.stdout);
    let map = PerfMapFile::of(said(&stdout, "pid"));
    assert_eq!(
        said(&stdout, "NODE_OPTIONS"),
        format!("--perf-basic-prof-only-functions --interpreted-frames-native-stack {user}")
    );
    // No V8 log left in the working directory (plain --perf-basic-prof writes one).
    let left: Vec<_> = std::fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .filter(|n| n.to_string_lossy().ends_with("-v8.log"))
        .collect();
    assert!(left.is_empty(), "{left:?}");
    let text = std::fs::read_to_string(&map.0).expect("node wrote no perf map");
    assert!(
        text.lines()
            .any(|l| l.contains(" JS:") && l.contains("hot ") && l.contains("runtime_flags.js:3")),
        "no entry for hot():\n{}",
        &text[..text.len().min(2000)]
    );

    let output = tally_run(
        dir.path(),
        &["--no-runtime-flags"],
        &["node", script],
        "NODE_OPTIONS",
        user,
    );
    let stdout = String::from_utf8_lossy(&output.stdout);
    let map = PerfMapFile::of(said(&stdout, "pid"));
    assert_eq!(said(&stdout, "NODE_OPTIONS"), user);
    assert!(!map.0.exists(), "a perf map without the flag");
}

/// A child process, killed when dropped.
struct Running(Child);

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Start of the anonymous executable mapping the synthetic dumps below add.
const JIT: u64 = 0x1000_0000_0000;

/// A dump of process `pid` with memory map `maps` plus an anonymous executable mapping at
/// [`JIT`], one stack in it.
fn dump_of(dir: &Path, pid: u32, maps: &str) -> PathBuf {
    let text = format!(
        "heap_v2/524288\n  t*: 1: 1048576 [0: 0]\n@ {:#x}\n  t*: 1: 1048576 [0: 0]\n\n\
         MAPPED_LIBRARIES:\n{maps}{JIT:x}-{:x} rwxp 00000000 00:00 0 \n",
        JIT + 0x10,
        JIT + 0x1000,
    );
    let path = dir.join(format!("tally.{pid}.0.f.heap"));
    std::fs::write(&path, text).unwrap();
    path
}

/// `tally report --text DUMP`: (stdout, stderr).
fn text_report(dump: &Path) -> (String, String) {
    let output = tally().args(["report", "--text"]).arg(dump).output().unwrap();
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    (
        String::from_utf8_lossy(&output.stdout).into_owned(),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}

/// Whether process `pid` is in the system call `sleep` waits in (`nanosleep` or
/// `clock_nanosleep`), by the number `/proc/<pid>/syscall` starts with.
fn sleeping(pid: u32) -> bool {
    let call = std::fs::read_to_string(format!("/proc/{pid}/syscall")).unwrap_or_default();
    let number = call.split(' ').next().unwrap_or("");
    number == libc::SYS_nanosleep.to_string() || number == libc::SYS_clock_nanosleep.to_string()
}

#[test]
fn a_map_older_than_the_running_process_or_of_another_process_is_not_used() {
    let dir = tempfile::tempdir().unwrap();
    let sleeper = Running(Command::new("sleep").arg("60").spawn().unwrap());
    let pid = sleeper.0.id();
    // The sleeper's map, read once it sleeps: not the fork before `exec`, nor while the dynamic
    // loader is still mapping (and splitting) the C library's segments.
    let maps = (0..500)
        .find_map(|_| {
            if sleeping(pid) {
                Some(std::fs::read_to_string(format!("/proc/{pid}/maps")).unwrap())
            } else {
                std::thread::sleep(Duration::from_millis(10));
                None
            }
        })
        .expect("sleep never went to sleep");
    let dump = dump_of(dir.path(), pid, &maps);
    let map = PerfMapFile::of(&pid.to_string());
    std::fs::write(
        &map.0,
        format!("{JIT:x} 100 JS:*exampleRun /app/example.js:3:1\n"),
    )
    .unwrap();

    // Written after the process started: used.
    let (stdout, stderr) = text_report(&dump);
    assert!(
        stdout.contains("exampleRun /app/example.js:3"),
        "{stdout}{stderr}"
    );
    assert_eq!(stderr, "");

    // Written an hour before it started: an earlier process with that pid left it.
    let file = std::fs::File::options().write(true).open(&map.0).unwrap();
    file.set_modified(SystemTime::now() - Duration::from_secs(3600))
        .unwrap();
    let (stdout, stderr) = text_report(&dump);
    assert!(!stdout.contains("exampleRun"), "{stdout}");
    assert!(stdout.contains(&format!("{:#x}", JIT + 0x10)), "{stdout}");
    assert!(
        stderr.contains(&format!(
            "/tmp/perf-{pid}.map is older than process {pid} (an earlier process with that pid left it)"
        )) && stderr.lines().count() == 1,
        "{stderr}"
    );

    // A dump whose files the running process does not map: the pid now runs another process,
    // and a map written since it started may be that process's.
    file.set_modified(SystemTime::now()).unwrap();
    let other = dump_of(
        dir.path(),
        pid,
        "55d000000000-55d000001000 r-xp 00000000 fe:00 1 /nonexistent/program\n",
    );
    let (stdout, stderr) = text_report(&other);
    assert!(!stdout.contains("exampleRun"), "{stdout}");
    assert!(
        stderr.contains(&format!("pid {pid} now runs another process than the dump's")),
        "{stderr}"
    );

    // A dump that maps no executable file gives nothing to compare the running process with:
    // no claim that it is another, and the map, written since it started, is used.
    let anonymous = dump_of(dir.path(), pid, "");
    let (stdout, stderr) = text_report(&anonymous);
    assert!(
        stdout.contains("exampleRun /app/example.js:3"),
        "{stdout}{stderr}"
    );
    assert_eq!(stderr, "");
}

#[test]
fn a_running_jvm_is_asked_for_its_perf_map() {
    need("jcmd", "default-jdk-headless");
    let dir = tempfile::tempdir().unwrap();
    let classes = javac(dir.path(), "Waiting");
    let mut child = Command::new("java")
        .arg("-cp")
        .arg(&classes)
        .arg("Waiting")
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    let jvm = Running(child);
    let pid = jvm.0.id();
    let mut line = String::new();
    BufReader::new(stdout).read_line(&mut line).unwrap();
    assert_eq!(line.trim(), format!("ready {pid}"));
    let map = PerfMapFile::of(&pid.to_string());
    let _ = std::fs::remove_file(&map.0);

    // A dump with the JVM's own memory map, a stack in its code cache.
    let maps = std::fs::read_to_string(format!("/proc/{pid}/maps")).unwrap();
    let code = maps
        .lines()
        .find(|l| l.split_whitespace().nth(1) == Some("rwxp") && l.split_whitespace().nth(5).is_none())
        .expect("no code cache (anonymous rwxp) in the JVM's map");
    let start = u64::from_str_radix(code.split('-').next().unwrap(), 16).unwrap();
    let text = format!(
        "heap_v2/524288\n  t*: 1: 1048576 [0: 0]\n@ {:#x}\n  t*: 1: 1048576 [0: 0]\n\n\
         MAPPED_LIBRARIES:\n{maps}",
        start + 0x10
    );
    let dump = dir.path().join(format!("tally.{pid}.0.f.heap"));
    std::fs::write(&dump, text).unwrap();

    let (stdout, stderr) = text_report(&dump);
    assert!(
        stderr.contains(&format!(
            "tally: warning: asked the running JVM (pid {pid}) for its perf map: jcmd {pid} \
             Compiler.perfmap wrote /tmp/perf-{pid}.map"
        )),
        "{stdout}{stderr}"
    );
    let text = std::fs::read_to_string(&map.0).expect("no perf map after jcmd");
    assert!(text.lines().any(|l| l.ends_with(" Interpreter")), "{text}");
}
