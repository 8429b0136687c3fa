//! Helpers of the report's integration tests: building small programs, profiling them under
//! Debian's jemalloc (`libjemalloc2`, profiling built in), running `tally` and `jeprof`
//! (`libjemalloc-dev`), and reading their text reports.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

/// Debian's jemalloc, built with `--enable-prof`.
pub const JEMALLOC: &str = "/usr/lib/x86_64-linux-gnu/libjemalloc.so.2";

/// The `tally` binary under test.
pub fn tally() -> Command {
    Command::new(env!("CARGO_BIN_EXE_tally"))
}

/// The directory of this crate's test data.
pub fn data(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/data")
        .join(name)
}

/// Fails with an install hint when a tool the test needs is missing.
pub fn need(tool: &str, package: &str) {
    let found = if tool.starts_with('/') {
        Path::new(tool).exists()
    } else {
        Command::new("sh")
            .args(["-c", &format!("command -v {tool}")])
            .output()
            .is_ok_and(|o| o.status.success())
    };
    assert!(found, "{tool} is missing: apt-get install -y {package}");
}

/// Tally's own `libtally.so`, as `cargo build --release -p tally-alloc` leaves it in the Cargo target
/// directory these tests were built in (`CARGO_TARGET_DIR`, or the workspace's `target/`): the
/// `tally` binary under test is `<target>/<profile>/tally`, the library `<target>/release/`.
/// Fails the test, saying how to build it, when it is missing.
pub fn libtally() -> PathBuf {
    let tally = Path::new(env!("CARGO_BIN_EXE_tally"));
    let target = tally
        .parent()
        .and_then(Path::parent)
        .expect("the tally binary is in <target>/<profile>/");
    let library = target.join("release/libtally.so");
    assert!(
        library.is_file(),
        "{} is missing: run cargo build --release -p tally-alloc first",
        library.display()
    );
    library
}

/// Tally's JVMTI agent, `libtally_jvm.so`, next to [`libtally`] (as `cargo build --release -p
/// tally-jvm-agent` leaves it), where `tally run` finds it. Fails the test, saying how to build
/// it, when it is missing.
pub fn libtally_jvm() -> PathBuf {
    let agent = libtally().with_file_name("libtally_jvm.so");
    assert!(
        agent.is_file(),
        "{} is missing: run cargo build --release -p tally-alloc -p tally-jvm-agent first",
        agent.display()
    );
    agent
}

/// Runs `command`, failing the test with its stderr unless it succeeds.
pub fn run(command: &mut Command) -> Output {
    let output = command.output().unwrap_or_else(|e| panic!("{command:?}: {e}"));
    assert!(
        output.status.success(),
        "{command:?} failed: {}\n{}",
        output.status,
        String::from_utf8_lossy(&output.stderr)
    );
    output
}

/// Stdout of a successful command.
pub fn stdout(command: &mut Command) -> String {
    String::from_utf8(run(command).stdout).expect("UTF-8 output")
}

/// Compiles the C (or C++, by extension) source `source` to `dir/name` with `-O0 -g`.
pub fn compile(source: &Path, dir: &Path, name: &str) -> PathBuf {
    compile_linked(source, dir, name, &[])
}

/// [`compile`], linked with `libraries` too (`-lssl`, ...).
pub fn compile_linked(source: &Path, dir: &Path, name: &str, libraries: &[&str]) -> PathBuf {
    let compiler = if source.extension().is_some_and(|e| e == "cc") {
        "g++"
    } else {
        "cc"
    };
    need(compiler, "build-essential");
    let out = dir.join(name);
    run(Command::new(compiler)
        .args(["-O0", "-g", "-o"])
        .arg(&out)
        .arg(source)
        .arg("-ldl")
        .args(libraries));
    out
}

/// The ELF virtual address of the instruction after `function`'s (first) call to `callee`: the
/// return address a stack captured in `callee` holds.
pub fn return_address(binary: &Path, function: &str, callee: &str) -> u64 {
    need("objdump", "binutils");
    let text = stdout(
        Command::new("objdump")
            .args(["-d", "--no-show-raw-insn"])
            .arg(binary),
    );
    let body: Vec<&str> = text
        .split("\n\n")
        .find(|block| {
            block
                .lines()
                .next()
                .is_some_and(|l| l.ends_with(&format!("<{function}>:")))
        })
        .unwrap_or_else(|| panic!("no {function} in {}", binary.display()))
        .lines()
        .skip(1)
        .collect();
    let call = body
        .iter()
        .position(|l| l.contains("call") && l.contains(&format!("<{callee}")))
        .unwrap_or_else(|| panic!("{function} calls no {callee}:\n{}", body.join("\n")));
    let next = body.get(call + 1).expect("an instruction after the call");
    let address = next.trim().split(':').next().unwrap();
    u64::from_str_radix(address, 16).unwrap()
}

/// Runs `program` under jemalloc with profiling at mean period 2^`lg_sample` bytes and a final
/// dump; returns the dumps it wrote, sorted by name (manual dumps `.m<n>.` before the final `.f.`).
pub fn profile(program: &Path, dir: &Path, lg_sample: u32) -> Vec<PathBuf> {
    need(JEMALLOC, "libjemalloc2");
    let prefix = dir.join("jeprof");
    run(Command::new(program).env("LD_PRELOAD", JEMALLOC).env(
        "MALLOC_CONF",
        format!(
            "prof:true,prof_final:true,lg_prof_sample:{lg_sample},prof_prefix:{}",
            prefix.display()
        ),
    ));
    let mut dumps: Vec<PathBuf> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "heap"))
        .collect();
    dumps.sort_by_key(|p| (p.to_string_lossy().ends_with(".f.heap"), p.clone()));
    assert!(
        !dumps.is_empty(),
        "jemalloc wrote no dump: is its profiling enabled?"
    );
    dumps
}

/// One row of a `--text` report (tally's or jeprof's).
#[derive(Debug, Clone)]
pub struct Row {
    pub flat: f64,
    pub flat_percent: String,
    pub sum_percent: String,
    pub cum: f64,
    pub cum_percent: String,
    pub name: String,
}

/// The rows of a `--text` report (the `Total:` and any other line skipped).
pub fn rows(text: &str) -> Vec<Row> {
    text.lines()
        .filter_map(|line| {
            let mut words = line.split_whitespace();
            let flat = words.next()?.parse().ok()?;
            let flat_percent = words.next()?.to_string();
            let sum_percent = words.next()?.to_string();
            let cum = words.next()?.parse().ok()?;
            let cum_percent = words.next()?.to_string();
            let name = words.collect::<Vec<_>>().join(" ");
            Some(Row {
                flat,
                flat_percent,
                sum_percent,
                cum,
                cum_percent,
                name,
            })
        })
        .collect()
}

/// The largest stacks a `--text` report lists after its table: per stack, its header
/// (`Stack 1: 12.3% of the total shown, …`) then its lines (frames, `Hint: …` and the hint's
/// paragraph), trimmed.
pub fn stacks(text: &str) -> Vec<Vec<String>> {
    let mut stacks: Vec<Vec<String>> = Vec::new();
    let Some((_, section)) = text.split_once("\nLargest stacks, innermost frame first:\n") else {
        return stacks;
    };
    for line in section.lines() {
        if line.starts_with("Stack ") {
            stacks.push(vec![line.to_string()]);
        } else if let (Some(stack), true) = (stacks.last_mut(), line.starts_with("      ")) {
            stack.push(line.trim().to_string());
        }
    }
    stacks
}

/// The row whose name starts with `prefix`.
pub fn row<'a>(rows: &'a [Row], prefix: &str) -> &'a Row {
    rows.iter()
        .find(|r| r.name == prefix || r.name.starts_with(&format!("{prefix} ")))
        .unwrap_or_else(|| panic!("no row {prefix:?} in {rows:#?}"))
}

/// The 1-based line of `source` holding `marker`.
pub fn line_of(source: &Path, marker: &str) -> usize {
    std::fs::read_to_string(source)
        .unwrap()
        .lines()
        .position(|l| l.contains(marker))
        .unwrap_or_else(|| panic!("{marker} not in {}", source.display()))
        + 1
}

/// Asserts `a` is within `percent` % of `b`.
pub fn assert_close(a: f64, b: f64, percent: f64, what: &str) {
    let diff = (a - b).abs();
    assert!(
        diff <= b.abs() * percent / 100.0 + 1e-9,
        "{what}: {a} vs {b} (more than {percent}% apart)"
    );
}

/// A profiler to run a program under: the library to preload and the environment variable and
/// options that configure it. The leak tests take it as a parameter, so that the same test runs
/// under jemalloc now and under `libtally.so` once Tally's profiler is hooked in.
#[derive(Debug, Clone)]
pub struct Profiler {
    /// The shared library for `LD_PRELOAD`.
    pub preload: PathBuf,
    /// The variable the options go in (`MALLOC_CONF`, `TALLY_CONF`).
    pub conf_variable: &'static str,
    /// The options, without `prof_prefix` (added per run).
    pub conf: String,
}

impl Profiler {
    /// Debian's jemalloc with `conf` (e.g. `prof:true,lg_prof_interval:26`).
    pub fn jemalloc(conf: &str) -> Profiler {
        need(JEMALLOC, "libjemalloc2");
        Profiler {
            preload: PathBuf::from(JEMALLOC),
            conf_variable: "MALLOC_CONF",
            conf: conf.to_string(),
        }
    }

    /// Tally itself, `libtally.so` from [`libtally`], with `conf` in `TALLY_CONF` (e.g.
    /// `prof:true,lg_prof_interval:30`).
    pub fn tally(conf: &str) -> Profiler {
        Profiler {
            preload: libtally(),
            conf_variable: "TALLY_CONF",
            conf: conf.to_string(),
        }
    }

    /// Runs `command` under the profiler with dumps going to `dir/<prefix>.*.heap`; returns the
    /// interval dumps (`*.i<n>.heap`) in the order of their sequence numbers.
    pub fn interval_dumps(&self, command: &mut Command, dir: &Path, prefix: &str) -> Vec<PathBuf> {
        run(command.env("LD_PRELOAD", &self.preload).env(
            self.conf_variable,
            format!("{},prof_prefix:{}", self.conf, dir.join(prefix).display()),
        ));
        let sequence = |path: &Path| -> u64 {
            let name = path.file_name().unwrap().to_string_lossy().into_owned();
            name.rsplit('.').nth(2).and_then(|s| s.parse().ok()).unwrap_or(0)
        };
        let mut dumps: Vec<PathBuf> = std::fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().path())
            .filter(|p| {
                let name = p.file_name().unwrap().to_string_lossy();
                name.starts_with(prefix) && name.ends_with(".heap") && name.contains(".i")
            })
            .collect();
        dumps.sort_by_key(|p| sequence(p));
        dumps
    }
}

/// The suspects' blocks of a `tally leaks` report: each a header line and its frames.
pub fn suspects(report: &str) -> Vec<Vec<String>> {
    let mut blocks: Vec<Vec<String>> = Vec::new();
    for line in report.lines() {
        let trimmed = line.trim_start();
        let numbered = trimmed
            .split_once(". ")
            .is_some_and(|(n, _)| n.parse::<usize>().is_ok());
        if numbered && !line.starts_with("      ") {
            blocks.push(vec![trimmed.to_string()]);
        } else if let Some(block) = blocks.last_mut() {
            if !trimmed.is_empty() {
                block.push(trimmed.to_string());
            }
        }
    }
    blocks
}

/// Asserts that an (X)HTML document loads nothing from elsewhere: no `src`, no `<link>`, and
/// every `href` a fragment of the page itself.
pub fn assert_self_contained(document: &roxmltree::Document) {
    for node in document.descendants().filter(|n| n.is_element()) {
        assert!(!node.has_tag_name("link"), "a <link> element");
        for attribute in node.attributes() {
            let name = attribute.name();
            assert!(name != "src", "src={:?}", attribute.value());
            if name == "href" {
                assert!(attribute.value().starts_with('#'), "href={:?}", attribute.value());
            }
        }
    }
}

/// Parses XML (SVG, XHTML), allowing a DOCTYPE; fails the test unless it is well-formed.
pub fn parse_xml(text: &str) -> roxmltree::Document<'_> {
    roxmltree::Document::parse_with_options(
        text,
        roxmltree::ParsingOptions {
            allow_dtd: true,
            ..Default::default()
        },
    )
    .unwrap_or_else(|e| panic!("not well-formed: {e}"))
}

/// Compiles `data/GzipLogger.java` into `dir/classes`; returns that directory.
pub fn compile_gzip_logger(dir: &Path) -> PathBuf {
    need("javac", "default-jdk-headless");
    let classes = dir.join("classes");
    run(Command::new("javac")
        .arg("-d")
        .arg(&classes)
        .arg(data("GzipLogger.java")));
    classes
}

/// Compiles `data/GzipLogger.java` into `dir/classes` and runs `<java> GzipLogger <mode>
/// <messages>` under `profiler`, its dumps going to `dir/<prefix>.*.heap`; returns the interval
/// dumps in order.
pub fn run_gzip_logger(
    profiler: &Profiler,
    java: &Path,
    mode: &str,
    messages: &str,
    dir: &Path,
    prefix: &str,
) -> Vec<PathBuf> {
    let classes = compile_gzip_logger(dir);
    profiler.interval_dumps(
        Command::new(java)
            .arg("-cp")
            .arg(&classes)
            .args(["GzipLogger", mode, messages]),
        dir,
        prefix,
    )
}

/// `tally leaks --lg-interval <lg_interval> <dumps>`: its report.
pub fn leaks_report(lg_interval: u32, dumps: &[PathBuf]) -> String {
    stdout(
        tally()
            .args(["leaks", "--lg-interval", &lg_interval.to_string()])
            .args(dumps),
    )
}

/// `tally leaks` over `dumps` names no suspect and says there is no steady growth.
pub fn assert_no_steady_grower(lg_interval: u32, dumps: &[PathBuf]) {
    let report = leaks_report(lg_interval, dumps);
    assert!(suspects(&report).is_empty(), "{report}");
    assert!(report.contains("No steady growth"), "{report}");
}

/// `tally run --conf <conf> --out <dir> --` under the real `libtally.so`, with none of the
/// caller's `LD_PRELOAD`, `TALLY_CONF`, `MALLOC_CONF`, `JAVA_TOOL_OPTIONS` or `NODE_OPTIONS`:
/// add the program and its arguments.
pub fn tally_run(conf: &str, dir: &Path) -> Command {
    tally_run_with(&[], conf, dir)
}

/// [`tally_run`] with more of `tally run`'s own flags (`--lines`, ...) before `--`.
pub fn tally_run_with(flags: &[&str], conf: &str, dir: &Path) -> Command {
    let mut command = tally();
    command
        .arg("run")
        .args(flags)
        .args(["--conf", conf, "--out"])
        .arg(dir)
        .arg("--")
        .env("TALLY_SO", libtally())
        .env_remove("LD_PRELOAD")
        .env_remove("TALLY_CONF")
        .env_remove("MALLOC_CONF")
        .env_remove("JAVA_TOOL_OPTIONS")
        .env_remove("NODE_OPTIONS");
    command
}

/// The dump a `tally run` report names (`Heap profile: <path>`).
pub fn heap_profile(report: &str) -> PathBuf {
    report
        .lines()
        .find_map(|l| l.strip_prefix("Heap profile: "))
        .map(PathBuf::from)
        .unwrap_or_else(|| panic!("no Heap profile line:\n{report}"))
}

/// The pid in a dump's name, `<prefix>.<pid>.<seq>.<kind>.heap`.
pub fn dump_pid(dump: &Path) -> String {
    let name = dump.file_name().unwrap().to_string_lossy().into_owned();
    let parts: Vec<&str> = name.rsplitn(5, '.').collect();
    assert_eq!(parts.len(), 5, "not a dump's name: {name}");
    parts[3].to_string()
}

/// `go tool pprof` (Debian `golang-go`) with no network and no toolchain download.
pub fn go_pprof() -> Command {
    need("go", "golang-go");
    let mut command = Command::new("go");
    command
        .args(["tool", "pprof"])
        .env("GOTOOLCHAIN", "local")
        .env("GOPROXY", "off")
        .env("PPROF_BINARY_PATH", "/nonexistent");
    command
}

/// A small deterministic generator (xorshift), so that a failure of a randomised test reproduces.
pub struct Rng(pub u64);

impl Rng {
    /// The next 64 bits.
    pub fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }

    /// A number below `n` (0 when `n` is 0).
    pub fn below(&mut self, n: usize) -> usize {
        (self.next() % n.max(1) as u64) as usize
    }

    /// One of `items`, which must not be empty.
    pub fn pick<'a, T>(&mut self, items: &'a [T]) -> &'a T {
        &items[self.below(items.len())]
    }
}

/// Starts `command` with SIGINT and SIGQUIT at their default actions, as from an interactive
/// shell, for the tests that interrupt `tally run`: a test run started as a background job of a
/// non-interactive shell (`sh -c '... &'`) inherits them ignored, and so would the program `tally`
/// starts, which the forwarded interrupt would then not end.
pub fn interrupts_at_their_defaults(command: &mut std::process::Command) {
    use std::os::unix::process::CommandExt;
    // SAFETY: signal() is async-signal-safe, as pre_exec requires.
    unsafe {
        command.pre_exec(|| {
            libc::signal(libc::SIGINT, libc::SIG_DFL);
            libc::signal(libc::SIGQUIT, libc::SIG_DFL);
            Ok(())
        })
    };
}
