//! Harness for Tally's acceptance tests: real programs run under `LD_PRELOAD=libtally.so`.
//!
//! Every test in `tests/tests/` follows the same argument:
//!
//! 1. Run the program **plain** (no preload). This checks the test itself: the program is there,
//!    works, and its output is deterministic enough to compare.
//! 2. Run it again **preloaded**, with `LD_PRELOAD=libtally.so TALLY_CONF=stats_print:true`.
//! 3. The two runs must agree on exit status, stdout and stderr (minus Tally's own stats lines),
//!    and the preloaded run must print at least one `tally: stats:` line whose counters show that
//!    Tally really served allocations (`chunks_mapped >= 1`, `tcache_fills >= 1`). Without that
//!    last check a missing or ignored preload would make every comparison pass vacuously.
//!
//! A missing tool is a failure, never a skip: the panic names the Debian package to install.
//!
//! Glossary: *plain* = run without Tally; *preloaded* = run with `libtally.so` in `LD_PRELOAD`;
//! *scratch dir* = a per-test temporary directory under cargo's target dir.

use std::ffi::OsStr;
use std::fmt::Write as _;
use std::io::{Read, Write};
use std::os::unix::process::{CommandExt, ExitStatusExt};
use std::path::{Path, PathBuf};
use std::process::{Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{mpsc, OnceLock};
use std::time::{Duration, Instant, SystemTime};

/// Prefix of the line Tally writes to stderr at exit when `stats_print` is on.
pub const STATS_PREFIX: &str = "tally: stats:";

/// Last line of the report Tally prints at exit with `stats_print`.
pub const STATS_END: &str = "tally: end of stats";

/// Environment override for the shared object under test.
pub const TALLY_SO_ENV: &str = "TALLY_SO";

/// Default time limit for one program run; a run that takes longer is killed and fails.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(120);

/// Root of the Cargo workspace (the parent of this crate's directory).
pub fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("tests crate has a parent directory")
        .to_path_buf()
}

/// Directory of the bundled test programs (`tests/programs`).
pub fn programs_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("programs")
}

/// Path of a bundled test program, checked to exist.
pub fn program(name: &str) -> PathBuf {
    let path = programs_dir().join(name);
    assert!(path.is_file(), "bundled program {} is missing", path.display());
    path
}

/// Cargo's target directory: `CARGO_TARGET_DIR` if set, else the one this test binary was built
/// into (`<target>/<profile>/deps/<test>`), else `<workspace>/target`.
pub fn target_dir() -> PathBuf {
    if let Some(dir) = std::env::var_os("CARGO_TARGET_DIR") {
        let dir = PathBuf::from(dir);
        return if dir.is_absolute() {
            dir
        } else {
            workspace_root().join(dir)
        };
    }
    if let Ok(exe) = std::env::current_exe() {
        // <target>/<profile>/deps/<exe>; with `--target <triple>` the profile sits one deeper,
        // which is also where cargo would put libtally.so, so the answer stays right.
        if let Some(target) = exe.ancestors().nth(3) {
            if exe.parent().and_then(Path::file_name) == Some(OsStr::new("deps")) {
                return target.to_path_buf();
            }
        }
    }
    workspace_root().join("target")
}

/// The `libtally.so` under test: `$TALLY_SO` if set, else `<target>/release/libtally.so`.
///
/// Panics with the command to run if the file is missing; warns on stderr if it is older than
/// the allocator's sources (a stale build would test old code).
pub fn libtally_so() -> &'static Path {
    static SO: OnceLock<PathBuf> = OnceLock::new();
    SO.get_or_init(|| {
        let path = match std::env::var_os(TALLY_SO_ENV) {
            Some(path) => PathBuf::from(path),
            None => target_dir().join("release").join("libtally.so"),
        };
        assert!(
            path.is_file(),
            "libtally.so not found at {}: run `cargo build --release -p tally-alloc` first \
             (or point ${TALLY_SO_ENV} at it)",
            path.display()
        );
        warn_if_stale(&path);
        path
    })
}

/// A directory in `scratch` to link a C program against with `-L DIR -ltally -Wl,-rpath,DIR`:
/// it holds [`libtally_so`] under its development name and under its SONAME, `libtally.so.0`,
/// which the program records and the dynamic linker looks for (Cargo writes only
/// `libtally.so`; an installation adds the SONAME link, as `scripts/install.sh` does).
pub fn libtally_link_dir(scratch: &Path) -> PathBuf {
    let dir = scratch.join("lib");
    std::fs::create_dir_all(&dir).unwrap();
    for name in ["libtally.so", "libtally.so.0"] {
        let link = dir.join(name);
        let _ = std::fs::remove_file(&link);
        std::os::unix::fs::symlink(libtally_so(), &link).unwrap();
    }
    dir
}

fn warn_if_stale(so: &Path) {
    let Ok(built) = so.metadata().and_then(|m| m.modified()) else {
        return;
    };
    let root = workspace_root();
    let newest = ["allocator", "profiler"]
        .iter()
        .flat_map(|krate| {
            let dir = root.join(krate);
            newest_mtime(&dir.join("src"))
                .into_iter()
                .chain(dir.join("Cargo.toml").metadata().and_then(|m| m.modified()).ok())
        })
        .max();
    if let Some(newest) = newest {
        if newest > built {
            eprintln!(
                "warning: {} is older than the allocator's sources; \
                 run `cargo build --release -p tally-alloc` to test the current code",
                so.display()
            );
        }
    }
}

fn newest_mtime(dir: &Path) -> Option<SystemTime> {
    let mut newest = None;
    for entry in std::fs::read_dir(dir).ok()?.flatten() {
        let path = entry.path();
        let time = if path.is_dir() {
            newest_mtime(&path)
        } else {
            entry.metadata().and_then(|m| m.modified()).ok()
        };
        newest = newest.max(time);
    }
    newest
}

/// Looks `name` up on `PATH`; panics naming the Debian package to install if it is missing.
pub fn require_tool(name: &str, debian_package: &str) -> PathBuf {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .map(|dir| dir.join(name))
        .find(|candidate| is_executable(candidate))
        .unwrap_or_else(|| {
            panic!("`{name}` not found on PATH: install the Debian package `{debian_package}`")
        })
}

fn is_executable(path: &Path) -> bool {
    use std::os::unix::fs::PermissionsExt;
    path.metadata()
        .map(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
        .unwrap_or(false)
}

/// A fresh directory for one test's files, removed on drop unless the test is failing (then it
/// is kept and its path printed, for post-mortem).
pub struct ScratchDir {
    path: PathBuf,
}

impl ScratchDir {
    /// Creates `<base>/<label>-<pid>-<n>`; pass `env!("CARGO_TARGET_TMPDIR")` as `base`.
    pub fn new(base: impl AsRef<Path>, label: &str) -> ScratchDir {
        static COUNTER: AtomicU32 = AtomicU32::new(0);
        let n = COUNTER.fetch_add(1, Ordering::Relaxed);
        let path = base.as_ref().join(format!("{label}-{}-{n}", std::process::id()));
        let _ = std::fs::remove_dir_all(&path);
        std::fs::create_dir_all(&path).unwrap_or_else(|e| panic!("cannot create {}: {e}", path.display()));
        ScratchDir { path }
    }

    /// The directory.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// A path inside the directory.
    pub fn join(&self, name: impl AsRef<Path>) -> PathBuf {
        self.path.join(name)
    }

    /// Creates (if needed) and returns a subdirectory.
    pub fn subdir(&self, name: &str) -> PathBuf {
        let dir = self.path.join(name);
        std::fs::create_dir_all(&dir).unwrap_or_else(|e| panic!("cannot create {}: {e}", dir.display()));
        dir
    }
}

impl Drop for ScratchDir {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!("kept scratch dir for inspection: {}", self.path.display());
        } else {
            let _ = std::fs::remove_dir_all(&self.path);
        }
    }
}

/// Whether a program runs with or without Tally.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mode {
    /// No preload: the system allocator (glibc). Tally's variables are removed.
    Plain,
    /// `LD_PRELOAD=libtally.so` and `TALLY_CONF=stats_print:true`.
    Preloaded,
    /// No preload, `TALLY_CONF=stats_print:true`: for programs with Tally linked in (Rust's
    /// `#[global_allocator]`).
    Linked,
}

impl Mode {
    /// Both modes, plain first.
    pub const BOTH: [Mode; 2] = [Mode::Plain, Mode::Preloaded];

    /// Sets (or clears) the environment of `cmd` for this mode.
    pub fn apply(self, cmd: &mut Command) {
        for var in ["LD_PRELOAD", "TALLY_CONF", "MALLOC_CONF"] {
            cmd.env_remove(var);
        }
        if self == Mode::Preloaded {
            cmd.env("LD_PRELOAD", libtally_so());
        }
        if self != Mode::Plain {
            cmd.env("TALLY_CONF", "stats_print:true");
        }
    }

    /// A short lower-case name for messages and file names.
    pub fn name(self) -> &'static str {
        match self {
            Mode::Plain => "plain",
            Mode::Preloaded => "preloaded",
            Mode::Linked => "linked",
        }
    }
}

/// What one run of a program produced.
#[derive(Debug)]
pub struct Outcome {
    /// The command line, for messages.
    pub command: String,
    /// The mode it ran in.
    pub mode: Mode,
    /// Exit status.
    pub status: ExitStatus,
    /// Everything written to stdout.
    pub stdout: Vec<u8>,
    /// Stderr with Tally's stats lines removed.
    pub stderr: Vec<u8>,
    /// Tally's stats lines, one per process that used Tally, in order of appearance.
    pub stats: Vec<StatsLine>,
    /// Wall-clock time of the run.
    pub elapsed: Duration,
}

impl Outcome {
    /// Stdout as text (lossy).
    pub fn stdout_text(&self) -> String {
        String::from_utf8_lossy(&self.stdout).into_owned()
    }

    /// Stderr (without stats lines) as text (lossy).
    pub fn stderr_text(&self) -> String {
        String::from_utf8_lossy(&self.stderr).into_owned()
    }

    /// Panics with the full output unless the program exited with status 0.
    pub fn assert_success(&self) -> &Outcome {
        assert!(
            self.status.success(),
            "{} run of `{}` failed: {}\n{}",
            self.mode.name(),
            self.command,
            describe_status(self.status),
            self.dump()
        );
        self
    }

    /// Panics unless this (preloaded or linked) run proves Tally served it: at least one stats
    /// line, every stats line well-formed, and at least one with `chunks_mapped >= 1` and
    /// `tcache_fills >= 1`.
    pub fn assert_used_tally(&self) -> &Outcome {
        assert_ne!(self.mode, Mode::Plain, "a plain run cannot use Tally");
        assert!(
            !self.stats.is_empty(),
            "no `{STATS_PREFIX}` line on stderr of `{}`: Tally was not loaded, or the process \
             closed stderr before Tally printed its stats (GNU coreutils do, via gnulib's \
             close_stdout atexit handler; Tally would need its own duplicate of fd 2)\n{}",
            self.command,
            self.dump()
        );
        for line in &self.stats {
            for key in ["chunks_mapped", "tcache_fills"] {
                assert!(
                    line.get_u64(key).is_some(),
                    "stats line of `{}` lacks a decimal `{key}=` field: {:?}",
                    self.command,
                    line.raw
                );
            }
        }
        assert!(
            self.stats.iter().any(StatsLine::shows_use),
            "no stats line of `{}` shows Tally serving allocations \
             (want chunks_mapped >= 1 and tcache_fills >= 1):\n{}",
            self.command,
            self.stats
                .iter()
                .map(|line| line.raw.as_str())
                .collect::<Vec<_>>()
                .join("\n")
        );
        self
    }

    /// Everything about the run, for failure messages.
    pub fn dump(&self) -> String {
        let mut text = String::new();
        let _ = writeln!(
            text,
            "--- {} run: `{}` ({}, {:.2?})",
            self.mode.name(),
            self.command,
            describe_status(self.status),
            self.elapsed
        );
        let _ = writeln!(text, "--- stdout:\n{}", tail(&self.stdout_text(), 1500));
        let _ = writeln!(text, "--- stderr:\n{}", tail(&self.stderr_text(), 4000));
        for line in &self.stats {
            let _ = writeln!(text, "--- {}", line.raw);
        }
        text
    }
}

/// Human description of an exit status, naming signals (a crash shows as SIGSEGV/SIGABRT).
pub fn describe_status(status: ExitStatus) -> String {
    if let Some(code) = status.code() {
        return format!("exit code {code}");
    }
    match status.signal() {
        Some(signal) => {
            let name = match signal {
                4 => "SIGILL",
                6 => "SIGABRT",
                7 => "SIGBUS",
                8 => "SIGFPE",
                9 => "SIGKILL",
                11 => "SIGSEGV",
                14 => "SIGALRM",
                15 => "SIGTERM",
                _ => "signal",
            };
            let core = if status.core_dumped() { ", core dumped" } else { "" };
            format!("killed by {name} ({signal}{core})")
        }
        None => format!("{status}"),
    }
}

fn tail(text: &str, max: usize) -> &str {
    if text.len() <= max {
        return text;
    }
    let mut start = text.len() - max;
    while !text.is_char_boundary(start) {
        start += 1;
    }
    &text[start..]
}

/// One `tally: stats: key=value ...` line.
#[derive(Clone, Debug)]
pub struct StatsLine {
    /// The line as printed.
    pub raw: String,
    /// Its `key=value` fields in order.
    pub fields: Vec<(String, String)>,
}

impl StatsLine {
    /// Parses a line starting with [`STATS_PREFIX`]; fields are whitespace- or comma-separated
    /// `key=value` tokens, anything else is ignored.
    pub fn parse(line: &str) -> Option<StatsLine> {
        let rest = line.trim_end().strip_prefix(STATS_PREFIX)?;
        let fields = rest
            .split(|c: char| c.is_whitespace() || c == ',')
            .filter_map(|token| token.split_once('='))
            .map(|(key, value)| (key.to_owned(), value.to_owned()))
            .collect();
        Some(StatsLine {
            raw: line.trim_end().to_owned(),
            fields,
        })
    }

    /// The value of `key` as a decimal integer, if present and well-formed.
    pub fn get_u64(&self, key: &str) -> Option<u64> {
        self.fields
            .iter()
            .find(|(k, _)| k == key)
            .and_then(|(_, v)| v.parse().ok())
    }

    /// Whether this process demonstrably allocated through Tally.
    pub fn shows_use(&self) -> bool {
        self.get_u64("chunks_mapped").is_some_and(|n| n >= 1)
            && self.get_u64("tcache_fills").is_some_and(|n| n >= 1)
    }
}

/// Splits raw stderr into the program's own bytes and Tally's stats lines.
pub fn split_stats(stderr: &[u8]) -> (Vec<u8>, Vec<StatsLine>) {
    let mut rest = Vec::with_capacity(stderr.len());
    let mut stats = Vec::new();
    // After a stats line come the report's tables, up to `tally: end of stats`.
    let mut in_report = false;
    for line in stderr.split_inclusive(|&b| b == b'\n') {
        if in_report {
            in_report = line.trim_ascii_end() != STATS_END.as_bytes();
            continue;
        }
        match std::str::from_utf8(line).ok().and_then(StatsLine::parse) {
            Some(parsed) => {
                stats.push(parsed);
                in_report = true;
            }
            None => rest.extend_from_slice(line),
        }
    }
    (rest, stats)
}

/// Runs `cmd` in `mode` with no stdin, killing it (and its process group) after `timeout`.
pub fn run(cmd: Command, mode: Mode, timeout: Duration) -> Outcome {
    run_with_input(cmd, mode, timeout, None)
}

/// Like [`run`], feeding `input` to stdin.
pub fn run_with_input(mut cmd: Command, mode: Mode, timeout: Duration, input: Option<Vec<u8>>) -> Outcome {
    mode.apply(&mut cmd);
    let command = describe_command(&cmd);
    execute(cmd, command, mode, timeout, input)
}

/// Shell script that turns core dumps off, sets `LD_PRELOAD` (if `TALLY_TESTS_PRELOAD` is set)
/// and `TALLY_CONF` from `TALLY_TESTS_CONF`, and execs `"$0" "$@"`. The shell itself runs without
/// Tally.
const WITH_CONF_SHELL: &str = "ulimit -c 0; \
    if [ -n \"${TALLY_TESTS_PRELOAD-}\" ]; then export LD_PRELOAD=\"$TALLY_TESTS_PRELOAD\"; fi; \
    export TALLY_CONF=\"$TALLY_TESTS_CONF\"; unset TALLY_TESTS_PRELOAD TALLY_TESTS_CONF; \
    exec \"$0\" \"$@\"";

/// Like [`run`] in `mode` ([`Mode::Preloaded`], or [`Mode::Linked`] for a program with Tally
/// linked in), but with `TALLY_CONF=conf` instead of `stats_print:true` (add `stats_print:true`
/// to `conf` for [`Outcome::assert_used_tally`]), and with core dumps off, so that a run meant to
/// die of a signal ends at once instead of writing a core.
pub fn run_with_conf(cmd: Command, mode: Mode, conf: &str, timeout: Duration) -> Outcome {
    assert_ne!(mode, Mode::Plain, "a plain run has no TALLY_CONF");
    let command = format!("TALLY_CONF={conf} {}", describe_command(&cmd));
    let mut shell = Command::new("sh");
    shell
        .args(["-c", WITH_CONF_SHELL])
        .arg(cmd.get_program())
        .args(cmd.get_args());
    if let Some(dir) = cmd.get_current_dir() {
        shell.current_dir(dir);
    }
    for (key, value) in cmd.get_envs() {
        match value {
            Some(value) => shell.env(key, value),
            None => shell.env_remove(key),
        };
    }
    Mode::Plain.apply(&mut shell);
    shell
        .env_remove("TALLY_TESTS_PRELOAD")
        .env("TALLY_TESTS_CONF", conf);
    if mode == Mode::Preloaded {
        shell.env("TALLY_TESTS_PRELOAD", libtally_so());
    }
    execute(shell, command, mode, timeout, None)
}

/// Runs `cmd` as it is (its environment already set for `mode`); `command` names it in messages.
fn execute(
    mut cmd: Command,
    command: String,
    mode: Mode,
    timeout: Duration,
    input: Option<Vec<u8>>,
) -> Outcome {
    cmd.stdin(if input.is_some() {
        Stdio::piped()
    } else {
        Stdio::null()
    })
    .stdout(Stdio::piped())
    .stderr(Stdio::piped())
    // Own process group, so a timeout can kill the program's children too.
    .process_group(0);

    let start = Instant::now();
    let mut child = match cmd.spawn() {
        Ok(child) => child,
        Err(e) => panic!("cannot start `{command}`: {e}"),
    };
    let pid = child.id();
    let stdin = child.stdin.take();
    let stdin_writer = std::thread::spawn(move || {
        if let (Some(mut stdin), Some(input)) = (stdin, input) {
            // A program may legitimately stop reading early; its exit status tells.
            let _ = stdin.write_all(&input);
        }
    });
    let stdout = read_in_background(child.stdout.take().expect("stdout is piped"));
    let stderr = read_in_background(child.stderr.take().expect("stderr is piped"));

    let (sender, receiver) = mpsc::channel();
    std::thread::spawn(move || {
        let _ = sender.send(child.wait());
    });
    let status = match receiver.recv_timeout(timeout) {
        Ok(status) => status.unwrap_or_else(|e| panic!("waiting for `{command}`: {e}")),
        Err(_) => {
            kill_process_group(pid);
            let status = receiver.recv().ok().and_then(Result::ok);
            let stderr = stderr.join().unwrap_or_default();
            panic!(
                "{} run of `{command}` did not finish within {timeout:?} (deadlock or hang?); \
                 killed it ({:?})\n--- stderr:\n{}",
                mode.name(),
                status.map(describe_status),
                tail(&String::from_utf8_lossy(&stderr), 4000)
            );
        }
    };
    let elapsed = start.elapsed();
    let _ = stdin_writer.join();
    let stdout = stdout.join().expect("stdout reader thread");
    let raw_stderr = stderr.join().expect("stderr reader thread");
    let (stderr, stats) = split_stats(&raw_stderr);
    Outcome {
        command,
        mode,
        status,
        stdout,
        stderr,
        stats,
        elapsed,
    }
}

fn read_in_background(mut pipe: impl Read + Send + 'static) -> std::thread::JoinHandle<Vec<u8>> {
    std::thread::spawn(move || {
        let mut bytes = Vec::new();
        let _ = pipe.read_to_end(&mut bytes);
        bytes
    })
}

fn kill_process_group(pid: u32) {
    // std has no kill(2) for a group; /bin/kill (procps) does it.
    let _ = Command::new("kill")
        .args(["-KILL", "--", &format!("-{pid}")])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status();
}

/// `program arg arg ...` as a string, for messages.
pub fn describe_command(cmd: &Command) -> String {
    std::iter::once(cmd.get_program())
        .chain(cmd.get_args())
        .map(|part| part.to_string_lossy().into_owned())
        .collect::<Vec<_>>()
        .join(" ")
}

/// Runs the command built by `make` plain, then preloaded; asserts the plain run succeeded,
/// that both runs agree (status, stdout, stderr minus stats) and that the preloaded one used
/// Tally. Returns `(plain, preloaded)`.
pub fn run_both(make: impl Fn() -> Command, timeout: Duration) -> (Outcome, Outcome) {
    let plain = run(make(), Mode::Plain, timeout);
    plain.assert_success();
    let preloaded = run(make(), Mode::Preloaded, timeout);
    assert_same_behaviour(&plain, &preloaded);
    preloaded.assert_used_tally();
    (plain, preloaded)
}

/// Asserts two runs agree on exit status, stdout and stderr (stats lines already removed).
pub fn assert_same_behaviour(plain: &Outcome, preloaded: &Outcome) {
    assert!(
        plain.status == preloaded.status,
        "exit status differs: plain {}, preloaded {}\n{}\n{}",
        describe_status(plain.status),
        describe_status(preloaded.status),
        plain.dump(),
        preloaded.dump()
    );
    assert_bytes_eq("stdout", &plain.command, &plain.stdout, &preloaded.stdout);
    assert_bytes_eq("stderr", &plain.command, &plain.stderr, &preloaded.stderr);
}

/// Asserts `plain == preloaded`, describing the first differing line if not.
pub fn assert_bytes_eq(what: &str, command: &str, plain: &[u8], preloaded: &[u8]) {
    if plain == preloaded {
        return;
    }
    let plain_lines: Vec<&[u8]> = plain.split(|&b| b == b'\n').collect();
    let preloaded_lines: Vec<&[u8]> = preloaded.split(|&b| b == b'\n').collect();
    let first = plain_lines
        .iter()
        .zip(&preloaded_lines)
        .position(|(a, b)| a != b)
        .unwrap_or(plain_lines.len().min(preloaded_lines.len()));
    let show = |lines: &[&[u8]]| {
        lines
            .iter()
            .skip(first.saturating_sub(2))
            .take(5)
            .map(|line| String::from_utf8_lossy(line).into_owned())
            .collect::<Vec<_>>()
            .join("\n")
    };
    panic!(
        "{what} of `{command}` differs with Tally preloaded: {} bytes plain vs {} preloaded, \
         first difference at line {}\n--- plain:\n{}\n--- preloaded:\n{}",
        plain.len(),
        preloaded.len(),
        first + 1,
        show(&plain_lines),
        show(&preloaded_lines)
    );
}

/// Compiles the bundled C program `name` with `cc -O2 -pthread` (run plain) into `out_dir`, and
/// returns the executable's path.
pub fn compile_c(name: &str, out_dir: &Path) -> PathBuf {
    compile_c_linked(name, out_dir, &[])
}

/// [`compile_c`], with `libs` (such as `-ljemalloc`) after the source.
pub fn compile_c_linked(name: &str, out_dir: &Path, libs: &[&str]) -> PathBuf {
    require_tool("cc", "build-essential");
    let source = program(name);
    let exe = out_dir.join(Path::new(name).with_extension(""));
    let mut cmd = Command::new("cc");
    cmd.args(["-std=gnu11", "-O2", "-g", "-pthread", "-Wall", "-Wextra", "-o"])
        .arg(&exe)
        .arg(&source)
        .args(libs);
    let outcome = run(cmd, Mode::Plain, DEFAULT_TIMEOUT);
    outcome.assert_success();
    assert!(
        outcome.stderr.is_empty(),
        "compiling {name} gave warnings:\n{}",
        outcome.stderr_text()
    );
    exe
}

/// Runs `go` (from [`require_tool`]) as `go tool pprof ARGS` offline (`GOTOOLCHAIN=local`,
/// `GOPROXY=off`), with its home and saved profiles (`PPROF_TMPDIR`) in `scratch`; panics with
/// its output if it fails. Returns (stdout, stderr): stderr says where it saved a fetched
/// profile (`Saved profile in ...`).
pub fn go_tool_pprof(go: &Path, scratch: &Path, args: &[&str]) -> (String, String) {
    let out = Command::new(go)
        .args(["tool", "pprof"])
        .args(args)
        .env("GOTOOLCHAIN", "local")
        .env("GOPROXY", "off")
        .env("HOME", scratch)
        .env("PPROF_TMPDIR", scratch)
        .output()
        .unwrap();
    let (stdout, stderr) = (
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    );
    assert!(
        out.status.success(),
        "go tool pprof {args:?} failed:\n{stdout}\n{stderr}"
    );
    (stdout, stderr)
}

/// The `tally` command (the `tally-report` package's binary), `<target>/release/tally`; panics
/// with the command that builds it if it is missing.
pub fn tally_binary() -> PathBuf {
    let path = target_dir().join("release").join("tally");
    assert!(
        path.is_file(),
        "the tally command is not at {}: run `cargo build --release -p tally-report` first",
        path.display()
    );
    path
}

/// The real interpreter behind `python3` on PATH. Version managers (pyenv) install shell-script
/// shims that would run a dozen helper processes under Tally; the tests want CPython itself.
pub fn python_interpreter() -> PathBuf {
    let python = require_tool("python3", "python3");
    let mut cmd = Command::new(python);
    cmd.args(["-c", "import sys; print(sys.executable)"]);
    let outcome = run(cmd, Mode::Plain, DEFAULT_TIMEOUT);
    outcome.assert_success();
    let path = PathBuf::from(outcome.stdout_text().trim());
    assert!(
        path.is_file(),
        "python3 reports a missing sys.executable {path:?}"
    );
    path
}

/// One step of a scripted git session: checks that `outcome` (of `git args`) succeeded, appends
/// `$ git args`, its stdout and its stderr to `transcript`, and keeps `outcome` in `outcomes`.
pub fn record_git_step(
    transcript: &mut String,
    outcomes: &mut Vec<Outcome>,
    args: &[&str],
    outcome: Outcome,
) {
    outcome.assert_success();
    transcript.push_str(&format!(
        "$ git {}\n{}{}",
        args.join(" "),
        outcome.stdout_text(),
        outcome.stderr_text()
    ));
    outcomes.push(outcome);
}

/// `git args` in `repo` with `home` as `HOME`, a fixed identity and dates (so commit ids are the
/// same on every run), no system or global configuration, no pager, C locale, UTC.
pub fn git_command(git: &Path, repo: &Path, home: &Path, args: &[&str]) -> Command {
    let mut cmd = Command::new(git);
    cmd.current_dir(repo)
        .args([
            "-c",
            "user.name=Tally Tester",
            "-c",
            "user.email=tally@example.invalid",
            "-c",
            "gc.auto=0",
            "-c",
            "commit.gpgsign=false",
            "-c",
            "core.autocrlf=false",
            "-c",
            "pack.threads=2",
        ])
        .args(args)
        .env("HOME", home)
        .env("GIT_CONFIG_NOSYSTEM", "1")
        .env("GIT_CONFIG_GLOBAL", "/dev/null")
        .env("GIT_AUTHOR_DATE", "2005-04-07T22:13:13 +0200")
        .env("GIT_COMMITTER_DATE", "2005-04-07T22:13:13 +0200")
        .env("GIT_PAGER", "cat")
        .env("LC_ALL", "C")
        .env("TZ", "UTC")
        .env_remove("GIT_DIR")
        .env_remove("GIT_WORK_TREE")
        .env_remove("GIT_INDEX_FILE");
    cmd
}

/// A small deterministic pseudo-random generator (xorshift64*), so tests need no crates.
#[derive(Clone, Debug)]
pub struct Rng(u64);

impl Rng {
    /// A generator from a nonzero-mixed seed.
    pub fn new(seed: u64) -> Rng {
        Rng(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1)
    }

    /// The next 64 random bits.
    pub fn next_u64(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    /// Uniform in `0..bound` (bound > 0; slight modulo bias is irrelevant here).
    pub fn below(&mut self, bound: u64) -> u64 {
        self.next_u64() % bound
    }
}

/// Parses `key=value` tokens from program output lines (used by the C programs' reports).
pub fn find_value(text: &str, key: &str) -> Option<u64> {
    text.split_whitespace()
        .filter_map(|token| token.split_once('='))
        .find(|(k, _)| *k == key)
        .and_then(|(_, v)| v.parse().ok())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stats_lines_are_parsed_and_stripped() {
        let stderr = b"warning: x\n\
            tally: stats: chunks_mapped=3 tcache_fills=17 bytes=1024\n\
            Tally statistics\n  allocated 1 KiB\n\
            tally: end of stats\n\
            last line\n\
            tally: stats: chunks_mapped=0, tcache_fills=0\n\
            tally: end of stats\n";
        let (rest, stats) = split_stats(stderr);
        assert_eq!(rest, b"warning: x\nlast line\n");
        assert_eq!(stats.len(), 2);
        assert_eq!(stats[0].get_u64("chunks_mapped"), Some(3));
        assert_eq!(stats[0].get_u64("tcache_fills"), Some(17));
        assert!(stats[0].shows_use());
        assert_eq!(stats[1].get_u64("tcache_fills"), Some(0));
        assert!(!stats[1].shows_use());
    }

    #[test]
    fn malformed_stats_do_not_show_use() {
        let line = StatsLine::parse("tally: stats: chunks_mapped=x tcache_fills=2").unwrap();
        assert!(!line.shows_use());
        assert!(StatsLine::parse("tally: other").is_none());
    }

    #[test]
    #[should_panic(expected = "did not finish within")]
    fn timeout_kills_and_fails() {
        let mut cmd = Command::new("sleep");
        cmd.arg("30");
        run(cmd, Mode::Plain, Duration::from_millis(200));
    }

    #[test]
    fn rng_is_deterministic() {
        let mut a = Rng::new(7);
        let mut b = Rng::new(7);
        assert!((0..100).all(|_| a.next_u64() == b.next_u64()));
    }
}
