//! `tally run`: runs a program under Tally with the profiler on, and when it exits prints the
//! `--text` report of its final dump.
//!
//! The program runs with
//! - `LD_PRELOAD=<libtally.so>` (before any `LD_PRELOAD` already set): `$TALLY_SO` when set,
//!   else the `libtally.so` next to the `tally` binary (the same Cargo target directory), or in
//!   `../lib/` or `../lib/<multiarch>/` beside it (installed by `scripts/install.sh` or the Debian
//!   package; [`library_near`]), or else installed under `/usr/local` or `/usr` (for a `tally`
//!   from `cargo install`);
//! - `TALLY_CONF=prof:true,prof_final:true,prof_prefix:<DIR>/tally` followed by `,<OPTS>` from
//!   `--conf` (later keys win, so `--conf` can change any of them), `DIR` being `--out` (made if
//!   missing) or the current directory; a `TALLY_CONF` already in the environment comes first,
//!   so its other keys (`lg_prof_sample:17`, `lg_prof_interval:30`) stay in force, as a jemalloc
//!   user's `MALLOC_CONF` does (which the program still reads too), while `tally run`'s own keys
//!   win over it.
//!
//! - for a JVM or node, the flags that let the report name their JIT-compiled code (unless
//!   `--no-runtime-flags`): a program named `java` gets `JAVA_TOOL_OPTIONS=-XX:+PreserveFramePointer
//!   -agentpath:<libtally_jvm.so>` (frame pointers for the walk through compiled Java code, and
//!   Tally's JVMTI agent, crate `tally-jvm-agent`, writing `/tmp/perf-<pid>.map` as methods are
//!   compiled, with the methods C2 inlined at each call), the agent being `$TALLY_JVM_AGENT`
//!   when set (empty: none) or else the `libtally_jvm.so` next to the preloaded library (or in
//!   `tally/` beside it, where the installations put it); without
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
//! - `prof_signal:<N>` in `TALLY_CONF`, N being the number of `SIGRTMIN+3` (before `--conf`, so
//!   the user's `prof_signal` wins): the signal `tally` asks the program for a profile with when
//!   it is interrupted.
//!
//! - with `--guard[=N]`, guarded sampling (one allocation in N on average placed between guard
//!   pages): `guard_rate:N,guard_slots:512,guard_report:<DIR>/tally` in `TALLY_CONF` (N is 100
//!   when not given; before `--conf`, so the user's keys win). The allocator prints the report of
//!   a use-after-free, an overflow or a bad free it catches to the program's standard error as it
//!   happens, with frames it can only name by dynamic symbols, and writes it to
//!   `<guard_report>.<pid>.guard` too. When the program has ended, that file of the program's
//!   pid is printed again to standard error with its frames named by [`crate::guard_report`]
//!   (as `tally symbolize` would), before the heap report. A program a signal killed (the fault's
//!   `SIGSEGV`) often wrote no heap profile: then the guard report is all `tally run` prints,
//!   and the missing profile is no error. A report file that was there before the program
//!   started, and is unchanged, is an earlier process's (whose pid the program got again) and
//!   is not printed.
//!
//! Its standard streams are the terminal's, but it runs in a process group of its own, and
//! Ctrl-C, `Ctrl-\` and `kill` of `tally` reach `tally`, which asks the program for a profile and
//! then passes the signal on, so that a program stopped with Ctrl-C is still reported (see
//! [`crate::supervise`]). The report is of the program's own dump, found by its pid (see
//! [`run`]). `tally run` exits with the program's exit code (128 + N when a signal N ended it).

use std::collections::{HashMap, HashSet};
use std::ffi::{OsStr, OsString};
use std::io::Write;
use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::SystemTime;

use crate::error::Error;
use crate::guard_report::symbolize_report;
use crate::object_file::io_message;
use crate::pipeline::{report, Output, ReportOptions};
use crate::profile::Granularity;
use crate::series::{parse_name, DumpKind, DumpName};
use crate::signal;
use crate::supervise::{DumpRequest, Supervisor};

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
    /// Guarded sampling at this `guard_rate` (`--guard[=N]`), and its report printed.
    pub guard: Option<u64>,
}

/// The `guard_rate` of `--guard` without a value.
pub const DEFAULT_GUARD_RATE: u64 = 100;
/// The `guard_slots` `--guard` asks for: how many blocks can be guarded at once.
pub const GUARD_SLOTS: u32 = 512;

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
    // A `tally` from `cargo install` (in ~/.cargo/bin) uses an installed library.
    library_near(dir)
        .or_else(|| library_near(Path::new("/usr/local/bin")))
        .or_else(|| library_near(Path::new("/usr/bin")))
        .ok_or_else(|| {
            Error::new(format!(
                "run: no libtally.so next to {}, in its ../lib, or installed in /usr/local or /usr (install it: scripts/install.sh; or set TALLY_SO)",
                exe.display()
            ))
        })
}

/// `libtally.so` for a `tally` binary in `bin`: beside it (Cargo's target directory), or where
/// an installation puts the library: `../lib` (`scripts/install.sh`) or `../lib/<multiarch>`
/// (the Debian package), under its SONAME or its development name.
pub fn library_near(bin: &Path) -> Option<PathBuf> {
    let multiarch = format!("{}-linux-gnu", std::env::consts::ARCH);
    let lib = bin.parent().unwrap_or(bin).join("lib");
    let dirs = [bin.to_path_buf(), lib.clone(), lib.join(&multiarch)];
    dirs.iter()
        .flat_map(|dir| ["libtally.so", "libtally.so.0"].map(|name| dir.join(name)))
        .find(|path| path.is_file())
}

/// Tally's JVMTI agent for a run preloading `library`: `$TALLY_JVM_AGENT` (empty: none), or
/// [`JVM_AGENT`] in `library`'s directory or in its `tally/` subdirectory. `None`, and a warning
/// for what was set but is no use, when there is none: the JVM then writes its own map at exit.
/// A path with white space is not used (`JAVA_TOOL_OPTIONS` splits at white space).
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
        // Beside the library (Cargo's target directory), or in its private directory `tally/`
        // (installed: a plugin without a SONAME does not belong among the shared libraries).
        None => [
            library.with_file_name(JVM_AGENT),
            library.with_file_name("tally").join(JVM_AGENT),
        ]
        .into_iter()
        .find(|path| path.is_file())?,
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

/// The `TALLY_CONF` of a run: `inherited` (the environment's `TALLY_CONF`), then the keys of a
/// run writing dumps to `prefix`, asking for profiles with `prof_signal`, guarding blocks at
/// `guard_rate` with their reports to `prefix` too (when `Some`), then `extra` (`--conf`); later
/// keys win.
pub fn conf(
    inherited: Option<&str>,
    prefix: &Path,
    prof_signal: i32,
    guard_rate: Option<u64>,
    extra: Option<&str>,
) -> String {
    let mut conf = String::new();
    if let Some(inherited) = inherited
        .map(|i| i.trim_matches(','))
        .filter(|i| !i.trim().is_empty())
    {
        conf.push_str(inherited);
        conf.push(',');
    }
    conf.push_str(&format!(
        "prof:true,prof_final:true,prof_prefix:{},prof_signal:{prof_signal}",
        prefix.display()
    ));
    if let Some(rate) = guard_rate {
        conf.push_str(&format!(
            ",guard_rate:{rate},guard_slots:{GUARD_SLOTS},guard_report:{}",
            prefix.display()
        ));
    }
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

/// The value the last `key:value` of `conf` (comma-separated, later keys win) gives `key`.
pub fn conf_value<'a>(conf: &'a str, key: &str) -> Option<&'a str> {
    conf.rsplit(',')
        .filter_map(|option| option.split_once(':'))
        .find(|(k, _)| k.trim() == key)
        .map(|(_, value)| value.trim())
}

/// The signal `tally run` gives the profiler as `prof_signal` unless `--conf` names one:
/// `SIGRTMIN+3`, a real-time signal that programs seldom use and nothing sends by default.
pub fn default_prof_signal() -> i32 {
    libc::SIGRTMIN() + 3
}

/// Where a run's dumps go: `<dir>/<name>.<pid>.<seq>.<kind>.heap`, from `prof_prefix`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DumpPlace {
    /// The directory.
    pub dir: PathBuf,
    /// The file name part of the prefix (`tally`).
    pub name: String,
}

impl DumpPlace {
    /// The place of `prefix` (a path, relative to the current directory or absolute).
    pub fn of(prefix: &Path) -> DumpPlace {
        let dir = prefix.parent().filter(|d| !d.as_os_str().is_empty());
        DumpPlace {
            dir: dir.map_or_else(|| PathBuf::from("."), Path::to_path_buf),
            name: prefix
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_default(),
        }
    }

    /// Every dump in the directory named after this prefix, with its parsed name.
    pub fn dumps(&self) -> Vec<(DumpName, PathBuf)> {
        let Ok(entries) = std::fs::read_dir(&self.dir) else {
            return Vec::new();
        };
        let start = format!("{}.", self.name);
        entries
            .filter_map(Result::ok)
            .map(|entry| entry.path())
            .filter(|path| {
                path.file_name()
                    .and_then(|n| n.to_str())
                    .is_some_and(|n| n.starts_with(&start) && n[start.len()..].matches('.').count() == 3)
            })
            .filter_map(|path| Some((parse_name(&path)?, path)))
            .collect()
    }

    /// The dumps of process `pid`, in the order it wrote them (their sequence numbers).
    pub fn dumps_of(&self, pid: u32) -> Vec<(DumpName, PathBuf)> {
        let mut dumps: Vec<(DumpName, PathBuf)> = self
            .dumps()
            .into_iter()
            .filter(|(name, _)| name.pid == u64::from(pid))
            .collect();
        dumps.sort_by_key(|(name, _)| name.seq);
        dumps
    }
}

/// The dump to report for process `pid`: its final dump, else the last it wrote (a profile it
/// was asked for on an interrupt, an interval dump), with `false` for "not final".
pub fn dump_to_report(place: &DumpPlace, pid: u32) -> Option<(PathBuf, bool)> {
    let dumps = place.dumps_of(pid);
    if let Some((_, path)) = dumps.iter().rev().find(|(name, _)| name.kind == DumpKind::Final) {
        return Some((path.clone(), true));
    }
    dumps.into_iter().last().map(|(_, path)| (path, false))
}

/// The guard report process `pid` writes with `guard_report:<prefix>`: `<prefix>.<pid>.guard`.
pub fn guard_report_path(prefix: &Path, pid: u32) -> PathBuf {
    let mut path = prefix.as_os_str().to_owned();
    path.push(format!(".{pid}.guard"));
    PathBuf::from(path)
}

/// The guard reports of any process already written with `guard_report:<prefix>`, with when
/// each last changed (when known): taken before a run, they tell an earlier process's report
/// (whose pid the program got again) from the program's own.
pub fn guard_reports(prefix: &Path) -> HashMap<PathBuf, Option<SystemTime>> {
    let place = DumpPlace::of(prefix);
    let Ok(entries) = std::fs::read_dir(&place.dir) else {
        return HashMap::new();
    };
    let start = format!("{}.", place.name);
    entries
        .filter_map(Result::ok)
        .filter(|entry| {
            entry
                .file_name()
                .to_str()
                .is_some_and(|n| n.starts_with(&start) && n.ends_with(".guard"))
        })
        .map(|entry| (entry.path(), entry.metadata().and_then(|m| m.modified()).ok()))
        .collect()
}

/// Whether the guard report at `path` is new since `before` ([`guard_reports`]): it was not
/// there, or it changed.
pub fn is_new_guard_report(path: &Path, before: &HashMap<PathBuf, Option<SystemTime>>) -> bool {
    let Ok(metadata) = std::fs::metadata(path) else {
        return false;
    };
    match before.get(path) {
        None => true,
        Some(None) => true,
        Some(Some(then)) => metadata.modified().ok() != Some(*then),
    }
}

/// Prints the guard report at `path`, its frames named, to `out` when the program wrote it
/// (module docs); says whether it printed one.
fn print_guard_report(
    path: &Path,
    before: &HashMap<PathBuf, Option<SystemTime>>,
    out: &mut dyn Write,
    warn: &mut dyn FnMut(&str),
) -> bool {
    if !is_new_guard_report(path, before) {
        return false;
    }
    let text = match std::fs::read(path) {
        Ok(text) if text.is_empty() => {
            warn(&format!(
                "run: {} is empty: the guard report was cut short",
                path.display()
            ));
            return false;
        }
        Ok(text) => text,
        Err(e) => {
            warn(&format!("run: {}: {}", path.display(), io_message(e)));
            return false;
        }
    };
    let symbolized = symbolize_report(&text, &[]);
    let _ = out.write_all(&symbolized.text);
    if !symbolized.text.ends_with(b"\n") {
        let _ = out.write_all(b"\n");
    }
    let _ = out.flush();
    for warning in &symbolized.warnings {
        warn(&format!("run: {warning}"));
    }
    true
}

/// Runs the program, then reports its dump to `out`, after its guard report, if it wrote one, to
/// `guard_out` (module docs). An error before the program ran (no library, no program) is `Err`;
/// one after it is in the outcome, with the program's code.
///
/// The dump is the program's own: one whose name carries its pid (which `exec` keeps). Its final
/// dump, or else the last one it wrote (on an interrupt, the one `tally` asked for; see
/// [`crate::supervise`]). Dumps of other processes are never taken, even those of the program's
/// children (a program that forks, a shell script that does not `exec` its last command): a
/// concurrent `tally run` into the same directory writes dumps just like them. When only such
/// dumps appeared, the error names them.
pub fn run(
    options: &RunOptions,
    out: &mut dyn Write,
    guard_out: &mut dyn Write,
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
    let inherited = std::env::var("TALLY_CONF").ok();
    let conf = conf(
        inherited.as_deref(),
        &dir.join("tally"),
        default_prof_signal(),
        options.guard,
        options.conf.as_deref(),
    );
    let place = DumpPlace::of(Path::new(conf_value(&conf, "prof_prefix").unwrap_or("tally")));
    let guard_prefix = conf_value(&conf, "guard_report")
        .filter(|prefix| !prefix.is_empty())
        .map(PathBuf::from);
    let prof_signal = conf_value(&conf, "prof_signal").and_then(|value| {
        let signal = signal::parse(value);
        if signal.is_none() && value != "0" {
            warn(&format!(
                "run: prof_signal:{value} names no signal tally knows; an interrupt will not ask for a profile"
            ));
        }
        signal
    });
    let agent = (!options.no_runtime_flags && is_java(program))
        .then(|| find_jvm_agent(&library, warn))
        .flatten();
    let mut preload = library.into_os_string();
    if let Some(existing) = std::env::var_os("LD_PRELOAD").filter(|p| !p.is_empty()) {
        preload.push(":");
        preload.push(existing);
    }
    let mut command = Command::new(program);
    command
        .args(args)
        .env("LD_PRELOAD", &preload)
        .env("TALLY_CONF", &conf);
    if !options.no_runtime_flags {
        if let Some((variable, value)) = runtime_flags(program, agent.as_deref(), |v| std::env::var_os(v)) {
            command.env(variable, value);
        }
    }
    let before: HashSet<PathBuf> = place.dumps().into_iter().map(|(_, path)| path).collect();
    let guard_reports_before = guard_prefix.as_deref().map(guard_reports).unwrap_or_default();
    let mut supervisor =
        Supervisor::new().map_err(|e| Error::new(format!("run: blocking signals: {}", io_message(e))))?;
    let child = supervisor
        .spawn(&mut command)
        .map_err(|e| Error::new(format!("run: {}: {}", program.to_string_lossy(), io_message(e))))?;
    let pid = child.id();
    let written = || {
        place
            .dumps_of(pid)
            .iter()
            .filter(|(name, _)| matches!(name.kind, DumpKind::Manual(_)))
            .count()
    };
    let request = DumpRequest {
        signal: prof_signal,
        written: &written,
    };
    let ended = supervisor.wait(&child, &request);
    supervisor.finish();
    let ended = ended.map_err(|e| Error::new(format!("run: waiting for the program: {}", io_message(e))))?;
    let code = exit_code(ended.status);
    let program = program.to_string_lossy();
    let killed_by = ended.status.signal();
    let guard_printed = guard_prefix.is_some_and(|prefix| {
        print_guard_report(
            &guard_report_path(&prefix, pid),
            &guard_reports_before,
            guard_out,
            warn,
        )
    });

    let Some((dump, is_final)) = dump_to_report(&place, pid) else {
        if guard_printed && killed_by.is_some() {
            // The fault the guard report names killed it before its final dump.
            return Ok(RunOutcome { code, error: None });
        }
        let error = if let Some(signal) = killed_by {
            format!(
                "run: {program} was killed by {} before it wrote a heap profile",
                signal::name_and_description(signal)
            )
        } else {
            let others: Vec<String> = place
                .dumps()
                .into_iter()
                .filter(|(_, path)| !before.contains(path))
                .filter_map(|(_, path)| Some(path.file_name()?.to_string_lossy().into_owned()))
                .collect();
            match others.first() {
                Some(first) => format!(
                    "run: {program} (pid {pid}) wrote no heap profile in {}, but other processes did ({first}{}): \
                     tally run reports only the program it started (a script should exec its last command); report theirs with tally report",
                    place.dir.display(),
                    if others.len() > 1 { ", …" } else { "" },
                ),
                None => format!(
                    "run: {program} wrote no heap profile in {} (is libtally.so built with the profiler?)",
                    place.dir.display()
                ),
            }
        };
        return Ok(RunOutcome {
            code,
            error: Some(Error::new(error)),
        });
    };
    if !is_final {
        let why = match (killed_by, ended.interrupted) {
            (Some(signal), _) => format!("was killed by {}", signal::name_and_description(signal)),
            (None, Some(signal)) => format!("ended after {}", signal::name(signal)),
            (None, None) => "wrote no final one".to_string(),
        };
        warn(&format!(
            "run: {program} {why}; reporting the last heap profile it wrote"
        ));
    }
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
    status
        .code()
        .or_else(|| status.signal().map(|signal| 128 + signal))
        .unwrap_or(1)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_the_jvm_agent_beside_the_library_or_in_its_private_directory() {
        // TALLY_JVM_AGENT would take precedence; no test of this binary sets it.
        assert!(std::env::var_os("TALLY_JVM_AGENT").is_none());
        let dir = tempfile::tempdir().unwrap();
        let library = dir.path().join("libtally.so.0");
        std::fs::write(&library, b"").unwrap();
        let mut warn = |w: &str| panic!("warned: {w}");
        assert_eq!(find_jvm_agent(&library, &mut warn), None);
        std::fs::create_dir(dir.path().join("tally")).unwrap();
        let private = dir.path().join("tally").join(JVM_AGENT);
        std::fs::write(&private, b"").unwrap();
        assert_eq!(find_jvm_agent(&library, &mut warn), Some(private));
        let beside = dir.path().join(JVM_AGENT);
        std::fs::write(&beside, b"").unwrap();
        assert_eq!(find_jvm_agent(&library, &mut warn), Some(beside));
    }

    #[test]
    fn finds_the_library_of_each_layout() {
        let root = tempfile::tempdir().unwrap();
        let bin = root.path().join("bin");
        std::fs::create_dir(&bin).unwrap();
        assert_eq!(library_near(&bin), None);
        let multiarch = root
            .path()
            .join("lib")
            .join(format!("{}-linux-gnu", std::env::consts::ARCH));
        std::fs::create_dir_all(&multiarch).unwrap();
        // The Debian package: only the SONAME in the multiarch directory.
        std::fs::write(multiarch.join("libtally.so.0"), b"").unwrap();
        let found = library_near(&bin).unwrap();
        assert_eq!(found, multiarch.join("libtally.so.0"));
        // scripts/install.sh: ../lib comes before the multiarch directory.
        std::fs::write(root.path().join("lib/libtally.so"), b"").unwrap();
        assert_eq!(library_near(&bin), Some(root.path().join("lib/libtally.so")));
        // Cargo's target directory: beside the binary, first.
        std::fs::write(bin.join("libtally.so"), b"").unwrap();
        assert_eq!(library_near(&bin), Some(bin.join("libtally.so")));
    }

    #[test]
    fn builds_the_conf() {
        assert_eq!(
            conf(None, Path::new("/d/tally"), 37, None, Some("lg_prof_sample:12")),
            "prof:true,prof_final:true,prof_prefix:/d/tally,prof_signal:37,lg_prof_sample:12"
        );
        let conf = conf(
            None,
            Path::new("/d/tally"),
            37,
            None,
            Some("prof_signal:SIGUSR2,prof_prefix:/e/p"),
        );
        assert_eq!(conf_value(&conf, "prof_signal"), Some("SIGUSR2"));
        assert_eq!(conf_value(&conf, "prof_prefix"), Some("/e/p"));
        assert_eq!(conf_value(&conf, "prof"), Some("true"));
        assert_eq!(conf_value(&conf, "lg_prof_sample"), None);
        assert_eq!(conf_value(&conf, "guard_report"), None);
    }

    /// A `TALLY_CONF` in the environment is not dropped: its keys stay where `tally run` and
    /// `--conf` set none, and lose where they do.
    #[test]
    fn keeps_the_environments_conf_first() {
        let got = conf(
            Some("lg_prof_sample:17,lg_prof_interval:30,prof_prefix:/x/y,"),
            Path::new("/d/tally"),
            37,
            None,
            Some("lg_prof_interval:31"),
        );
        assert_eq!(
            got,
            "lg_prof_sample:17,lg_prof_interval:30,prof_prefix:/x/y,\
             prof:true,prof_final:true,prof_prefix:/d/tally,prof_signal:37,lg_prof_interval:31"
        );
        assert_eq!(conf_value(&got, "lg_prof_sample"), Some("17"));
        assert_eq!(conf_value(&got, "lg_prof_interval"), Some("31"));
        assert_eq!(conf_value(&got, "prof_prefix"), Some("/d/tally"));
        // An empty one adds nothing.
        assert_eq!(
            conf(Some(" "), Path::new("/d/tally"), 37, None, None),
            conf(None, Path::new("/d/tally"), 37, None, None)
        );
    }

    #[test]
    fn puts_the_guard_options_before_the_users() {
        assert_eq!(
            conf(None, Path::new("/d/tally"), 37, Some(DEFAULT_GUARD_RATE), None),
            "prof:true,prof_final:true,prof_prefix:/d/tally,prof_signal:37,\
             guard_rate:100,guard_slots:512,guard_report:/d/tally"
        );
        let conf = conf(
            None,
            Path::new("/d/tally"),
            37,
            Some(7),
            Some("guard_slots:64,guard_report:/e/g,lg_prof_sample:12"),
        );
        assert_eq!(
            conf,
            "prof:true,prof_final:true,prof_prefix:/d/tally,prof_signal:37,\
             guard_rate:7,guard_slots:512,guard_report:/d/tally,guard_slots:64,guard_report:/e/g,lg_prof_sample:12"
        );
        // The user's keys, later, win.
        assert_eq!(conf_value(&conf, "guard_rate"), Some("7"));
        assert_eq!(conf_value(&conf, "guard_slots"), Some("64"));
        assert_eq!(conf_value(&conf, "guard_report"), Some("/e/g"));
        assert_eq!(
            guard_report_path(Path::new(conf_value(&conf, "guard_report").unwrap()), 4242),
            Path::new("/e/g.4242.guard")
        );
    }

    #[test]
    fn takes_only_a_guard_report_the_program_wrote() {
        let dir = tempfile::tempdir().unwrap();
        let prefix = dir.path().join("tally");
        let old = guard_report_path(&prefix, 7);
        std::fs::write(&old, "tally: guard: old\n").unwrap();
        std::fs::write(dir.path().join("other.7.guard"), "").unwrap();
        std::fs::write(dir.path().join("tally.7.1.f.heap"), "").unwrap();
        let before = guard_reports(&prefix);
        assert_eq!(before.keys().collect::<Vec<_>>(), [&old]);
        assert!(
            !is_new_guard_report(&old, &before),
            "unchanged since the run began"
        );
        assert!(
            !is_new_guard_report(&guard_report_path(&prefix, 8), &before),
            "not written"
        );
        std::fs::write(guard_report_path(&prefix, 8), "x").unwrap();
        assert!(is_new_guard_report(&guard_report_path(&prefix, 8), &before));
        // Written again by the program (same pid): its mtime moved on.
        let file = std::fs::File::options().write(true).open(&old).unwrap();
        file.set_modified(SystemTime::now() + std::time::Duration::from_secs(5))
            .unwrap();
        assert!(is_new_guard_report(&old, &before));
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
    fn reports_the_programs_own_dump() {
        let dir = tempfile::tempdir().unwrap();
        let place = DumpPlace::of(&dir.path().join("tally"));
        assert_eq!(place.dir, dir.path());
        assert_eq!(dump_to_report(&place, 7), None);
        // Another process's final dump (a concurrent run, a child) is never taken.
        for name in [
            "tally.8.0.f.heap",
            "tally.7.1.i0.heap",
            "other.7.5.f.heap",
            "tally.7.9.m0.heap.tmp",
        ] {
            std::fs::write(dir.path().join(name), "").unwrap();
        }
        assert_eq!(
            dump_to_report(&place, 7),
            Some((dir.path().join("tally.7.1.i0.heap"), false))
        );
        std::fs::write(dir.path().join("tally.7.10.m0.heap"), "").unwrap();
        assert_eq!(
            dump_to_report(&place, 7),
            Some((dir.path().join("tally.7.10.m0.heap"), false)),
            "the last by sequence number, not by name"
        );
        std::fs::write(dir.path().join("tally.7.2.f.heap"), "").unwrap();
        assert_eq!(
            dump_to_report(&place, 7),
            Some((dir.path().join("tally.7.2.f.heap"), true))
        );
        assert_eq!(DumpPlace::of(Path::new("tally")).dir, Path::new("."));
    }
}
