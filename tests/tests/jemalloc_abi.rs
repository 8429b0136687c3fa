//! A program written for jemalloc gets Tally (issue 15): `programs/je_prof_dump.c`, built against
//! Debian's `<jemalloc/jemalloc.h>` and linked with `-ljemalloc`, keeps 32 MiB live from
//! `leaky_site` and asks `mallctl` for `version`, `opt.prof` and `prof.dump` (to a path, and the
//! four ways that must fail or name the file themselves). Three ways to run it:
//!
//! - as built, on Debian's jemalloc (`MALLOC_CONF=prof:true,...`): the harness check. Every
//!   assertion below but "the answers are Tally's" holds there too, so a failure elsewhere is
//!   Tally's, not the test's;
//! - under `LD_PRELOAD=libtally.so` with `TALLY_CONF=prof:true,...`;
//! - without a preload, with `LD_LIBRARY_PATH` naming a directory in which `libjemalloc.so.2` is
//!   a symlink to `libtally.so`, and jemalloc's `MALLOC_CONF=prof:true,...`.
//!
//! With the profiler on, each run must: get every `prof.dump` answer right (0, `EPERM` for
//! `oldp`, `EINVAL` for a wrong `newlen`, `EFAULT` for an unwritable path, 0 for the default
//! name); write exactly the named dump and one `<prof_prefix>.<pid>.<seq>.m<n>.heap`, both valid
//! `heap_v2` at the configured sampling period; and `tally report --text` and Debian's
//! `jeprof --text` must both put `leaky_site` first with 32 MiB within 20%. The Tally runs must
//! also answer `version` with Tally's string (`5.3.0-…tally…`), print Tally's stats, and have
//! `libtally.so` in the dump's memory map (and, through the symlink, no jemalloc at all). With
//! the profiler off, every `prof.dump` call gives `ENOENT` and nothing is written.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use tally_tests::{
    compile_c_linked, find_value, libtally_so, require_tool, run, run_with_conf, tally_binary, Mode, Outcome,
    ScratchDir, DEFAULT_TIMEOUT,
};

/// What `leaky_site` keeps live: 8192 blocks of 4 KiB.
const LEAK_BYTES: f64 = 32.0 * 1024.0 * 1024.0;

/// Sampling period 2^14 = 16 KiB: about 1800 of the 8192 blocks are sampled (each with
/// probability `1 - exp(-4096/16384)` = 0.22), so the estimate's standard deviation is about 2%
/// of the truth and [`TOLERANCE`] is some ten of them: a miss is a bias, never bad luck.
const LG_PROF_SAMPLE: u32 = 14;

/// How far from [`LEAK_BYTES`] the reports' figure for `leaky_site` may be, as a fraction.
const TOLERANCE: f64 = 0.20;

/// How long one run of the program may take (it takes milliseconds).
const LIMIT: Duration = Duration::from_secs(60);

/// The C program's name, and its executable's.
const PROGRAM: &str = "je_prof_dump";

/// Where the allocator behind `-ljemalloc` comes from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Allocator {
    /// Debian's `libjemalloc.so.2`, as linked; options in `MALLOC_CONF`.
    Jemalloc,
    /// `LD_PRELOAD=libtally.so` in front of the linked jemalloc; options in `TALLY_CONF`.
    Preloaded,
    /// No preload; `libjemalloc.so.2` on `LD_LIBRARY_PATH` is a symlink to `libtally.so`;
    /// options in jemalloc's `MALLOC_CONF`.
    Symlinked,
}

impl Allocator {
    fn name(self) -> &'static str {
        match self {
            Allocator::Jemalloc => "jemalloc",
            Allocator::Preloaded => "preloaded",
            Allocator::Symlinked => "symlinked",
        }
    }

    fn is_tally(self) -> bool {
        self != Allocator::Jemalloc
    }
}

/// The program, compiled once per test into its scratch dir.
struct Fixture {
    scratch: ScratchDir,
    exe: PathBuf,
}

impl Fixture {
    /// Compiles `programs/je_prof_dump.c` against Debian's jemalloc header with `-Werror`,
    /// linked with `-ljemalloc`.
    fn new(label: &str) -> Fixture {
        assert!(
            Path::new("/usr/include/jemalloc/jemalloc.h").is_file(),
            "<jemalloc/jemalloc.h> not found: install the Debian package `libjemalloc-dev`"
        );
        let scratch = ScratchDir::new(env!("CARGO_TARGET_TMPDIR"), label);
        // (A warning fails the compile: `compile_c_linked` wants an empty stderr.)
        let exe = compile_c_linked(&format!("{PROGRAM}.c"), scratch.path(), &["-ljemalloc"]);
        Fixture { scratch, exe }
    }

    /// Runs the program with `allocator`, from a fresh directory `<scratch>/<allocator>` that
    /// is also its working directory; with `profiler_on`, options `prof:true` at
    /// [`LG_PROF_SAMPLE`] with `prof_prefix:<dir>/p`, else none (and the program's `off`).
    /// Returns the outcome and the directory.
    fn run(&self, allocator: Allocator, profiler_on: bool) -> (Outcome, PathBuf) {
        let dir = self.scratch.subdir(allocator.name());
        let conf = format!(
            "prof:true,lg_prof_sample:{LG_PROF_SAMPLE},prof_prefix:{}",
            dir.join("p").display()
        );
        let conf = profiler_on.then_some(conf);
        let mut program_args = vec![dir.join("named.heap").into_os_string()];
        if !profiler_on {
            program_args.push("off".into());
        }
        // `env` sets MALLOC_CONF and LD_LIBRARY_PATH for the program alone: the harness's modes
        // clear MALLOC_CONF.
        let through_env = |vars: Vec<String>| {
            let mut cmd = Command::new("env");
            cmd.args(vars)
                .arg(&self.exe)
                .args(&program_args)
                .current_dir(&dir);
            cmd
        };
        let malloc_conf: Vec<String> = conf.iter().map(|conf| format!("MALLOC_CONF={conf}")).collect();
        let outcome = match allocator {
            Allocator::Jemalloc => run(through_env(malloc_conf), Mode::Plain, LIMIT),
            Allocator::Preloaded => {
                let mut cmd = Command::new(&self.exe);
                cmd.args(&program_args).current_dir(&dir);
                match &conf {
                    Some(conf) => {
                        run_with_conf(cmd, Mode::Preloaded, &format!("{conf},stats_print:true"), LIMIT)
                    }
                    None => run(cmd, Mode::Preloaded, LIMIT),
                }
            }
            Allocator::Symlinked => {
                let lib_dir = self.scratch.subdir("lib");
                let link = lib_dir.join("libjemalloc.so.2");
                if !link.exists() {
                    std::os::unix::fs::symlink(libtally_so_canonical(), &link)
                        .unwrap_or_else(|e| panic!("cannot create {}: {e}", link.display()));
                }
                let mut vars = vec![format!("LD_LIBRARY_PATH={}", lib_dir.display())];
                vars.extend(malloc_conf);
                // Linked: no preload, TALLY_CONF=stats_print:true on top of MALLOC_CONF.
                run(through_env(vars), Mode::Linked, LIMIT)
            }
        };
        (outcome, dir)
    }
}

/// `libtally.so` with every symlink resolved: the path the dump's memory map shows.
fn libtally_so_canonical() -> PathBuf {
    std::fs::canonicalize(libtally_so()).expect("libtally.so's real path")
}

/// Checks what every run says whoever serves it: success, `je_prof_dump: ok` (so every
/// `mallctl` answer was the one wanted), and a `version` that is jemalloc's 5.3.0 and names
/// Tally exactly when Tally should have answered. Returns the program's pid.
fn assert_answers(outcome: &Outcome, allocator: Allocator) -> u64 {
    outcome.assert_success();
    let stdout = outcome.stdout_text();
    assert!(stdout.contains("je_prof_dump: ok"), "{}", outcome.dump());
    let version = stdout
        .lines()
        .find_map(|line| line.strip_prefix("version="))
        .unwrap_or_else(|| panic!("no version= line\n{}", outcome.dump()));
    assert!(
        version.starts_with("5.3.0-"),
        "version {version:?} is not jemalloc 5.3.0's"
    );
    assert_eq!(
        version.contains("tally"),
        allocator.is_tally(),
        "version {version:?}: the {} run's mallctl was not {}\n{}",
        allocator.name(),
        if allocator.is_tally() {
            "Tally's"
        } else {
            "jemalloc's"
        },
        outcome.dump()
    );
    if allocator.is_tally() {
        outcome.assert_used_tally();
    }
    find_value(&stdout, "pid").expect("pid= printed")
}

/// The files in `dir`, by name.
fn file_names(dir: &Path) -> BTreeSet<String> {
    std::fs::read_dir(dir)
        .unwrap_or_else(|e| panic!("cannot list {}: {e}", dir.display()))
        .map(|entry| entry.unwrap().file_name().into_string().unwrap())
        .collect()
}

/// Whether `name` is `p.<pid>.<seq>.m<n>.heap`, the name of a `prof.dump` with no path.
fn is_default_dump_name(name: &str, pid: u64) -> bool {
    let Some(rest) = name
        .strip_prefix(&format!("p.{pid}."))
        .and_then(|rest| rest.strip_suffix(".heap"))
    else {
        return false;
    };
    let digits = |s: &str| !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit());
    matches!(rest.split_once(".m"), Some((seq, n)) if digits(seq) && digits(n))
}

/// Parses the dump at `path` and checks its sampling period; returns the paths of its memory
/// map.
fn assert_valid_dump(path: &Path) -> BTreeSet<String> {
    let bytes = std::fs::read(path).unwrap_or_else(|e| panic!("cannot read {}: {e}", path.display()));
    let profile = tally_format::parse(&bytes)
        .unwrap_or_else(|e| panic!("{} is not a valid heap_v2 dump: {e:?}", path.display()));
    assert_eq!(
        profile.period,
        1 << LG_PROF_SAMPLE,
        "{}: the sampling period is not the configured one",
        path.display()
    );
    profile.maps.into_iter().map(|mapping| mapping.path).collect()
}

/// The rows of a jeprof-style `--text --show_bytes` table: (flat bytes, function), in order.
fn text_rows(text: &str) -> Vec<(f64, String)> {
    text.lines()
        .filter_map(|line| {
            let fields: Vec<&str> = line.split_whitespace().collect();
            if fields.len() < 6 || !fields[1].ends_with('%') {
                return None;
            }
            Some((fields[0].parse().ok()?, fields[5].to_string()))
        })
        .collect()
}

/// Runs a report tool and checks that its first row is `leaky_site` with [`LEAK_BYTES`] within
/// [`TOLERANCE`].
fn assert_leaky_site_first(tool: &str, cmd: Command) {
    let outcome = run(cmd, Mode::Plain, DEFAULT_TIMEOUT);
    outcome.assert_success();
    let rows = text_rows(&outcome.stdout_text());
    let Some((bytes, name)) = rows.first() else {
        panic!("{tool} printed no rows\n{}", outcome.dump());
    };
    assert_eq!(
        name,
        "leaky_site",
        "{tool}'s first row\n{}",
        outcome.stdout_text()
    );
    eprintln!("{tool}: leaky_site {:.2} MiB (truth 32)", bytes / 1024.0 / 1024.0);
    assert!(
        (bytes / LEAK_BYTES - 1.0).abs() < TOLERANCE,
        "{tool}: leaky_site holds {bytes} bytes, not 32 MiB within {}%",
        TOLERANCE * 100.0
    );
}

/// Everything a run with the profiler on must leave behind (module comment).
fn assert_profiled_run(fixture: &Fixture, allocator: Allocator) {
    let (outcome, dir) = fixture.run(allocator, true);
    let pid = assert_answers(&outcome, allocator);
    let names = file_names(&dir);
    let defaults: Vec<&String> = names
        .iter()
        .filter(|name| is_default_dump_name(name, pid))
        .collect();
    assert!(
        names.contains("named.heap") && defaults.len() == 1 && names.len() == 2,
        "{}: want named.heap and one p.{pid}.<seq>.m<n>.heap, found {names:?}",
        allocator.name()
    );
    assert_valid_dump(&dir.join(defaults[0]));

    let named = dir.join("named.heap");
    let maps = assert_valid_dump(&named);
    let tally = libtally_so_canonical().display().to_string();
    let jemalloc_mapped = maps.iter().any(|path| path.ends_with("/libjemalloc.so.2"));
    match allocator {
        Allocator::Jemalloc => assert!(jemalloc_mapped && !maps.contains(&tally), "{maps:?}"),
        Allocator::Preloaded => assert!(maps.contains(&tally), "{tally} not mapped: {maps:?}"),
        Allocator::Symlinked => assert!(
            maps.contains(&tally) && !jemalloc_mapped,
            "want {tally} mapped and no libjemalloc.so.2: {maps:?}"
        ),
    }

    let mut report = Command::new(tally_binary());
    report
        .args(["report", "--text", "--show-bytes"])
        .arg(&fixture.exe)
        .arg(&named);
    assert_leaky_site_first("tally report", report);
    let mut jeprof = Command::new(require_tool("jeprof", "libjemalloc-dev"));
    jeprof
        .args(["--text", "--show_bytes"])
        .arg(&fixture.exe)
        .arg(&named);
    assert_leaky_site_first("jeprof", jeprof);
}

/// The harness check: on Debian's jemalloc itself, every `prof.dump` answer is right, the two
/// dumps are written, and both report tools put `leaky_site` first with 32 MiB within 20%;
/// `version` does not name Tally and the dump's map has jemalloc, not Tally.
#[test]
fn debian_jemalloc_passes_the_same_checks() {
    let fixture = Fixture::new("jemalloc-abi-jemalloc");
    assert_profiled_run(&fixture, Allocator::Jemalloc);
}

/// Under `LD_PRELOAD=libtally.so` with `TALLY_CONF=prof:true,lg_prof_sample:14`, Tally answers
/// the program's `mallctl` calls in front of the jemalloc it was linked with: Tally's
/// `version`, every `prof.dump` answer right, both dumps written by Tally, `leaky_site` first
/// in `tally report` and `jeprof` with 32 MiB within 20%.
#[test]
fn ld_preload_answers_mallctl_and_dumps_through_tally() {
    let fixture = Fixture::new("jemalloc-abi-preloaded");
    assert_profiled_run(&fixture, Allocator::Preloaded);
}

/// With no preload, a `libjemalloc.so.2 -> libtally.so` symlink on `LD_LIBRARY_PATH` is the
/// library the program loads: jemalloc is not mapped at all, Tally reads jemalloc's
/// `MALLOC_CONF=prof:true,lg_prof_sample:14`, answers `version` and `prof.dump`, and its dump
/// names `leaky_site` first with 32 MiB within 20%.
#[test]
fn a_libjemalloc_symlink_on_ld_library_path_loads_tally() {
    let fixture = Fixture::new("jemalloc-abi-symlinked");
    assert_profiled_run(&fixture, Allocator::Symlinked);
}

/// With the profiler off (no `prof:true` anywhere), every `prof.dump` call gives `ENOENT`
/// (before any check of its arguments, as in jemalloc), `opt.prof` reads false and no file is
/// written, on jemalloc, under `LD_PRELOAD` and through the symlink alike.
#[test]
fn prof_dump_is_enoent_with_the_profiler_off() {
    let fixture = Fixture::new("jemalloc-abi-off");
    for allocator in [Allocator::Jemalloc, Allocator::Preloaded, Allocator::Symlinked] {
        let (outcome, dir) = fixture.run(allocator, false);
        assert_answers(&outcome, allocator);
        assert!(
            outcome.stdout_text().contains("prof.dump[path]=ENOENT"),
            "{}",
            outcome.dump()
        );
        let names = file_names(&dir);
        assert!(
            names.is_empty(),
            "{}: files written with the profiler off: {names:?}",
            allocator.name()
        );
    }
}

/// The name check of [`assert_profiled_run`] takes `p.<pid>.<seq>.m<n>.heap` and nothing else.
#[test]
fn default_dump_names_are_recognised() {
    assert!(is_default_dump_name("p.42.0.m0.heap", 42));
    assert!(is_default_dump_name("p.42.17.m3.heap", 42));
    assert!(!is_default_dump_name("p.42.0.f.heap", 42));
    assert!(!is_default_dump_name("p.43.0.m0.heap", 42));
    assert!(!is_default_dump_name("p.42..m0.heap", 42));
    assert!(!is_default_dump_name("p.42.0.m.heap", 42));
}
