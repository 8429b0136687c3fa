//! `tally run`: runs a program under Tally with the profiler on, and when it exits prints the
//! `--text` report of its final dump.
//!
//! The program runs with
//! - `LD_PRELOAD=<libtally.so>` (before any `LD_PRELOAD` already set): `$TALLY_SO` when set,
//!   else the `libtally.so` next to the `tally` binary (the same Cargo target directory), or in
//!   `../lib/` beside it (an installed layout);
//! - `TALLY_CONF=prof:true,prof_final:true,prof_prefix:<DIR>/tally` followed by `,<OPTS>` from
//!   `--conf` (later keys win, so `--conf` can change any of them), `DIR` being `--out` (made if
//!   missing) or the current directory.
//!
//! - for a JVM or node, the flags that let the report name their JIT-compiled code (unless
//!   `--no-runtime-flags`): a program named `java` gets `JAVA_TOOL_OPTIONS=-XX:+PreserveFramePointer
//!   -agentpath:<libtally_jvm.so>` (frame pointers for the walk through compiled Java code, and
//!   Tally's JVMTI agent, crate `tally-jvm-agent`, writing `/tmp/perf-<pid>.map` as methods are
//!   compiled, with the methods C2 inlined at each call), the agent being `$TALLY_JVM_AGENT`
//!   when set (empty: none) or else the `libtally_jvm.so` next to the preloaded library; without
//!   an agent, `-XX:+PreserveFramePointer -XX:+UnlockDiagnosticVMOptions
//!   -XX:+DumpPerfMapAtExit` (the JVM's own map, written at exit, one name per compiled method;
//!   never both, as the JVM's map at exit would replace the agent's). One named `node` or `nodejs`
//!   `NODE_OPTIONS=--perf-basic-prof-only-functions --interpreted-frames-native-stack` (the map of
//!   JavaScript functions, written as they are compiled, and a frame of its own for each
//!   interpreted function; plain `--perf-basic-prof` also names V8's builtins, which the node
//!   binary's symbols name already, and makes V8 write an `isolate-*-v8.log` into the current
//!   directory). Flags already in those
//!   variables stay, after these: a JVM and node take the last of two contradicting flags, so the
//!   user's choice wins. The program is recognized by its file name only: a script that starts
//!   a JVM gets nothing (set the variables yourself), and so neither does any other program.
//!
//! Its standard streams are the terminal's. While it runs, `tally` ignores Ctrl-C and Ctrl-\ (the
//! program gets them and decides), so that a program stopped with Ctrl-C is still reported. The
//! final dump is `<DIR>/tally.<pid>.<seq>.f.heap` with the program's pid; if the program ran its
//! work in a child process (a shell script), the newest `tally.*.f.heap` written since the start
//! is taken. `tally run` exits with the program's exit code (128 + N when a signal N ended it).

use std::ffi::{OsStr, OsString};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, SystemTime};

use crate::error::Error;
use crate::object_file::io_message;
use crate::pipeline::{report, Output, ReportOptions};
use crate::profile::Granularity;

/// Everything `tally run` was asked to do.
#[derive(Debug, Clone, Default)]
pub struct RunOptions {
    /// The program and its arguments.
    pub command: Vec<OsString>,
    /// More `TALLY_CONF` options (`--conf`).
    pub conf: Option<String>,
    /// Where dumps go (`--out`; the current directory if `None`).
    pub out_dir: Option<PathBuf>,
    /// At most this many rows in the report.
    pub top: Option<usize>,
    /// Function or line rows.
    pub granularity: Granularity,
    /// Leave `JAVA_TOOL_OPTIONS` and `NODE_OPTIONS` alone (`--no-runtime-flags`).
    pub no_runtime_flags: bool,
}

/// The flags `tally run` gives a JVM, through `JAVA_TOOL_OPTIONS`, when there is no agent.
pub const JAVA_FLAGS: &str =
    "-XX:+PreserveFramePointer -XX:+UnlockDiagnosticVMOptions -XX:+DumpPerfMapAtExit";
/// The flags `tally run` gives a JVM before `-agentpath:<agent>` when there is an agent.
pub const JAVA_AGENT_FLAGS: &str = "-XX:+PreserveFramePointer";
/// The file name of Tally's JVMTI agent.
pub const JVM_AGENT: &str = "libtally_jvm.so";
/// The flags `tally run` gives node, through `NODE_OPTIONS`.
pub const NODE_FLAGS: &str = "--perf-basic-prof-only-functions --interpreted-frames-native-stack";

/// How a run ended.
#[derive(Debug)]
pub struct RunOutcome {
    /// The exit code `tally run` exits with: the program's.
    pub code: i32,
    /// What went wrong after the program ran (no dump, a damaged dump), if anything.
    pub error: Option<Error>,
}

/// The library to preload: `$TALLY_SO`, or `libtally.so` near the `tally` binary.
pub fn find_library() -> Result<PathBuf, Error> {
    if let Some(path) = std::env::var_os("TALLY_SO") {
        let path = PathBuf::from(path);
        return if path.is_file() {
            Ok(path)
        } else {
            Err(Error::new(format!(
                "run: TALLY_SO={} is not a file",
                path.display()
            )))
        };
    }
    let exe =
        std::env::current_exe().map_err(|e| Error::new(format!("run: where am I? {}", io_message(e))))?;
    let dir = exe.parent().unwrap_or(Path::new("."));
    let candidates = [dir.join("libtally.so"), dir.join("../lib/libtally.so")];
    candidates
        .iter()
        .find(|path| path.is_file())
        .cloned()
        .ok_or_else(|| {
            Error::new(format!(
                "run: no libtally.so next to {} (build it: cargo build -p tally; or set TALLY_SO)",
                exe.display()
            ))
        })
}

/// Tally's JVMTI agent for a run preloading `library`: `$TALLY_JVM_AGENT` (empty: none), or
/// [`JVM_AGENT`] in `library`'s directory. `None`, and a warning for what was set but is no
/// use, when there is none: the JVM then writes its own map at exit. A path with white space is
/// not used (`JAVA_TOOL_OPTIONS` splits at white space).
pub fn find_jvm_agent(library: &Path, warn: &mut dyn FnMut(&str)) -> Option<PathBuf> {
    let agent = match std::env::var_os("TALLY_JVM_AGENT") {
        Some(path) if path.is_empty() => return None,
        Some(path) => {
            let path = PathBuf::from(path);
            if !path.is_file() {
                warn(&format!(
                    "run: TALLY_JVM_AGENT={} is not a file; a JVM writes its own perf map at exit",
                    path.display()
                ));
                return None;
            }
            path
        }
        None => library.with_file_name(JVM_AGENT),
    };
    let agent = std::path::absolute(&agent).ok().filter(|a| a.is_file())?;
    if agent.to_string_lossy().contains(char::is_whitespace) {
        warn(&format!(
            "run: {}: white space in the path; a JVM writes its own perf map at exit",
            agent.display()
        ));
        return None;
    }
    Some(agent)
}

/// The `TALLY_CONF` of a run writing dumps to `prefix`.
pub fn conf(prefix: &Path, extra: Option<&str>) -> String {
    let mut conf = format!("prof:true,prof_final:true,prof_prefix:{}", prefix.display());
    if let Some(extra) = extra.filter(|e| !e.is_empty()) {
        conf.push(',');
        conf.push_str(extra);
    }
    conf
}

/// Whether `program` is a JVM (module docs).
pub fn is_java(program: &OsStr) -> bool {
    Path::new(program).file_name() == Some(OsStr::new("java"))
}

/// The variable and its value that give `program` the flags naming its JIT code (module docs),
/// `agent` being Tally's JVMTI agent, if any, and `existing` the variable's value now; `None`
/// for a program that is neither `java` nor `node`.
pub fn runtime_flags(
    program: &OsStr,
    agent: Option<&Path>,
    existing: impl Fn(&str) -> Option<OsString>,
) -> Option<(&'static str, OsString)> {
    let name = Path::new(program).file_name()?.to_str()?;
    let (variable, flags) = match (name, agent) {
        ("java", Some(agent)) => (
            "JAVA_TOOL_OPTIONS",
            format!("{JAVA_AGENT_FLAGS} -agentpath:{}", agent.display()),
        ),
        ("java", None) => ("JAVA_TOOL_OPTIONS", JAVA_FLAGS.to_string()),
        ("node" | "nodejs", _) => ("NODE_OPTIONS", NODE_FLAGS.to_string()),
        _ => return None,
    };
    let mut value = OsString::from(flags);
    if let Some(theirs) = existing(variable).filter(|v| !v.is_empty()) {
        value.push(" ");
        value.push(theirs);
    }
    Some((variable, value))
}

/// Runs the program, then reports its final dump to `out`. An error before the program ran
/// (no library, no program) is `Err`; one after it is in the outcome, with the program's code.
pub fn run(
    options: &RunOptions,
    out: &mut dyn Write,
    warn: &mut dyn FnMut(&str),
) -> Result<RunOutcome, Error> {
    let library = find_library()?;
    let Some((program, args)) = options.command.split_first() else {
        return Err(Error::new("run: no program given"));
    };
    let dir = match &options.out_dir {
        Some(dir) => {
            std::fs::create_dir_all(dir).map_err(|e| Error::file(dir, io_message(e)))?;
            dir.clone()
        }
        None => PathBuf::from("."),
    };
    let dir = std::path::absolute(&dir).map_err(|e| Error::file(&dir, io_message(e)))?;
    let prefix = dir.join("tally");
    let agent = (!options.no_runtime_flags && is_java(program))
        .then(|| find_jvm_agent(&library, warn))
        .flatten();
    let mut preload = library.into_os_string();
    if let Some(existing) = std::env::var_os("LD_PRELOAD").filter(|p| !p.is_empty()) {
        preload.push(":");
        preload.push(existing);
    }
    let started = SystemTime::now() - Duration::from_secs(1);
    let mut command = Command::new(program);
    command
        .args(args)
        .env("LD_PRELOAD", &preload)
        .env("TALLY_CONF", conf(&prefix, options.conf.as_deref()));
    if !options.no_runtime_flags {
        if let Some((variable, value)) = runtime_flags(program, agent.as_deref(), |v| std::env::var_os(v)) {
            command.env(variable, value);
        }
    }
    let mut child = command
        .spawn()
        .map_err(|e| Error::new(format!("run: {}: {}", program.to_string_lossy(), io_message(e))))?;
    let pid = child.id();
    let previous = ignore_interrupts();
    let status = child.wait();
    restore_interrupts(previous);
    let status =
        status.map_err(|e| Error::new(format!("run: waiting for the program: {}", io_message(e))))?;
    let code = exit_code(status);

    let Some(dump) = final_dump(&dir, pid, started) else {
        return Ok(RunOutcome {
            code,
            error: Some(Error::new(format!(
                "run: {} wrote no heap profile in {} (is libtally.so built with the profiler?)",
                program.to_string_lossy(),
                dir.display()
            ))),
        });
    };
    let _ = writeln!(out, "Heap profile: {}", dump.display());
    let report_options = ReportOptions {
        dumps: vec![dump],
        output: Output::Text,
        top: options.top,
        granularity: options.granularity,
        ..ReportOptions::default()
    };
    let error = report(&report_options, out, warn).err();
    Ok(RunOutcome { code, error })
}

/// The exit code of a shell for `status`: the program's code, or 128 + the signal that ended it.
fn exit_code(status: std::process::ExitStatus) -> i32 {
    use std::os::unix::process::ExitStatusExt;
    status
        .code()
        .or_else(|| status.signal().map(|signal| 128 + signal))
        .unwrap_or(1)
}

/// The final dump of process `pid` in `dir`, or else the newest final dump written since
/// `started`.
pub fn final_dump(dir: &Path, pid: u32, started: SystemTime) -> Option<PathBuf> {
    let mut candidates: Vec<(SystemTime, PathBuf)> = std::fs::read_dir(dir)
        .ok()?
        .filter_map(Result::ok)
        .filter_map(|entry| {
            let name = entry.file_name().into_string().ok()?;
            (name.starts_with("tally.") && name.ends_with(".f.heap")).then_some(())?;
            let modified = entry.metadata().ok()?.modified().ok()?;
            Some((modified, entry.path()))
        })
        .collect();
    candidates.sort();
    let own = format!("tally.{pid}.");
    if let Some((_, path)) = candidates.iter().rev().find(|(_, path)| {
        path.file_name()
            .and_then(|n| n.to_str())
            .is_some_and(|n| n.starts_with(&own))
    }) {
        return Some(path.clone());
    }
    candidates
        .into_iter()
        .rev()
        .find(|(modified, _)| *modified >= started)
        .map(|(_, path)| path)
}

type Disposition = [libc::sighandler_t; 2];

/// Ignores SIGINT and SIGQUIT in `tally` (not in the program, which was spawned before).
fn ignore_interrupts() -> Disposition {
    // SAFETY: `signal` with SIG_IGN installs no handler code; it only changes this process's
    // disposition, which no other thread of `tally` relies on.
    unsafe {
        [
            libc::signal(libc::SIGINT, libc::SIG_IGN),
            libc::signal(libc::SIGQUIT, libc::SIG_IGN),
        ]
    }
}

/// Puts back what [`ignore_interrupts`] replaced.
fn restore_interrupts(previous: Disposition) {
    // SAFETY: the dispositions are the ones `signal` returned before, so valid ones.
    unsafe {
        libc::signal(libc::SIGINT, previous[0]);
        libc::signal(libc::SIGQUIT, previous[1]);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn builds_the_conf() {
        assert_eq!(
            conf(Path::new("/d/tally"), Some("lg_prof_sample:12")),
            "prof:true,prof_final:true,prof_prefix:/d/tally,lg_prof_sample:12"
        );
        assert_eq!(
            conf(Path::new("/d/tally"), Some("")),
            "prof:true,prof_final:true,prof_prefix:/d/tally"
        );
    }

    #[test]
    fn gives_java_and_node_their_flags_before_the_users() {
        let none = |_: &str| None;
        let theirs = |variable: &str| Some(OsString::from(format!("<{variable}>")));
        assert_eq!(
            runtime_flags(OsStr::new("/usr/lib/jvm/bin/java"), None, none),
            Some(("JAVA_TOOL_OPTIONS", OsString::from(JAVA_FLAGS)))
        );
        let agent = Path::new("/opt/tally/libtally_jvm.so");
        assert_eq!(
            runtime_flags(OsStr::new("java"), Some(agent), theirs),
            Some((
                "JAVA_TOOL_OPTIONS",
                OsString::from(
                    "-XX:+PreserveFramePointer -agentpath:/opt/tally/libtally_jvm.so <JAVA_TOOL_OPTIONS>"
                )
            ))
        );
        assert_eq!(
            runtime_flags(OsStr::new("java"), None, theirs),
            Some((
                "JAVA_TOOL_OPTIONS",
                OsString::from(format!("{JAVA_FLAGS} <JAVA_TOOL_OPTIONS>"))
            ))
        );
        assert_eq!(
            runtime_flags(OsStr::new("nodejs"), Some(agent), theirs),
            Some((
                "NODE_OPTIONS",
                OsString::from(format!("{NODE_FLAGS} <NODE_OPTIONS>"))
            ))
        );
        assert_eq!(
            runtime_flags(OsStr::new("node"), None, |_| Some(OsString::new())),
            Some(("NODE_OPTIONS", OsString::from(NODE_FLAGS)))
        );
        for other in ["javac", "./java.sh", "python3", "nodes", "/"] {
            assert_eq!(
                runtime_flags(OsStr::new(other), Some(agent), theirs),
                None,
                "{other}"
            );
        }
    }

    #[test]
    fn finds_the_final_dump() {
        let dir = tempfile::tempdir().unwrap();
        let started = SystemTime::now() - Duration::from_secs(1);
        assert_eq!(final_dump(dir.path(), 7, started), None);
        std::fs::write(dir.path().join("tally.8.0.f.heap"), "").unwrap();
        std::fs::write(dir.path().join("tally.7.1.i0.heap"), "").unwrap();
        assert_eq!(
            final_dump(dir.path(), 7, started),
            Some(dir.path().join("tally.8.0.f.heap"))
        );
        std::fs::write(dir.path().join("tally.7.2.f.heap"), "").unwrap();
        assert_eq!(
            final_dump(dir.path(), 7, started),
            Some(dir.path().join("tally.7.2.f.heap"))
        );
    }
}
