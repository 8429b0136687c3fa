//! Guarded sampling (`guard_rate`, `guard_slots`, `guard_report`) seen from outside.
//!
//! - `programs/guard.c` commits one memory error per run under `guard_rate:1`: read and write
//!   after free, a one-byte overflow and underflow, a double free, a free of a pointer into a
//!   block. Each must end the process with the right signal (SIGSEGV for the accesses, SIGABRT
//!   for the frees) before the
//!   program goes on, with exactly one report on stderr whose first line names the kind, read
//!   or write, the offset and both addresses, and the same text in the `guard_report` file; then
//!   `tally symbolize` must name the real functions and source lines of the allocation, the
//!   free and the faulting access (the lines are found in guard.c's text, not hard-coded).
//! - Nothing is reported when nothing is wrong: guard.c's `ok` run, with every allocation
//!   guarded while slots last, and real programs (CPython, perl, gcc, git, the JVM) at
//!   `guard_rate:1` and `guard_rate:50` give the same output as without Tally.
//! - Guarding really happens: every one of those runs prints Tally's stats, and its processes
//!   together count `guarded_allocs >= 1` (thousands for `ok`); `programs/guard_count.c` sees
//!   its blocks placed against page boundaries (where a guarded block lies) only with guarding
//!   on, and no more of them than `guard_slots` allows; CPython writing through a freed `malloc`
//!   pointer (ctypes) is caught.
//! - Tally as Rust's `#[global_allocator]` (this test binary, re-run as a child as in
//!   `global_allocator.rs`): a use after free of a `Box` is reported with the Rust functions
//!   that allocated and freed it, at the lines of their calls into the allocator.
//!
//! The runs meant to crash have core dumps turned off (`run_with_conf`).

use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use tally_tests::{
    assert_bytes_eq, assert_same_behaviour, compile_c, describe_status, find_value, git_command, program,
    python_interpreter, record_git_step, require_tool, run, run_with_conf, run_with_input, tally_binary,
    Mode, Outcome, ScratchDir,
};

// For the Rust use after free (the whole test binary runs on Tally; with no TALLY_CONF in the
// parent, guarding is off there).
#[global_allocator]
static A: tally::Tally = tally::Tally;

const SIGABRT: i32 = 6;
const SIGSEGV: i32 = 11;

/// Every line of a guard report starts with this.
const PREFIX: &str = "tally: guard: ";

/// How long one run may take: the C programs finish in milliseconds, the JVM in about a second.
const LIMIT: Duration = Duration::from_secs(60);

/// The options of the runs that commit an error: every allocation guarded.
const ERROR_CONF: &str = "guard_rate:1,guard_slots:256";

/// The options of the real programs' guarded runs (with stats, to prove blocks were guarded).
const REAL_PROGRAM_CONFS: [&str; 2] = [
    "stats_print:true,guard_rate:1,guard_slots:1024",
    "stats_print:true,guard_rate:50",
];

/// Set in the child copy of this test binary: commit the Rust use after free.
const CHILD_ENV: &str = "TALLY_TESTS_GUARD_CHILD";

/// One of guard.c's errors and the report it must give.
struct ErrorCase {
    /// guard.c's argument.
    name: &'static str,
    /// The signal the process must die of.
    signal: i32,
    /// The report's first line after [`PREFIX`], up to the first address.
    head: &'static str,
    /// What follows the first address, up to the block's address.
    middle: &'static str,
    /// What follows the block's address.
    tail: &'static str,
    /// First address minus the block's.
    delta: i64,
    /// The function of guard.c that makes the access (none for a bad free).
    access: Option<&'static str>,
    /// Whether the block was freed (the report has a "freed by" stack).
    freed: bool,
}

const ERROR_CASES: [ErrorCase; 6] = [
    ErrorCase {
        name: "read-after-free",
        signal: SIGSEGV,
        head: "use-after-free: read at 0x",
        middle: ", 8 bytes into the 64-byte block at 0x",
        tail: "",
        delta: 8,
        access: Some("peek"),
        freed: true,
    },
    ErrorCase {
        name: "write-after-free",
        signal: SIGSEGV,
        head: "use-after-free: write at 0x",
        middle: ", 8 bytes into the 64-byte block at 0x",
        tail: "",
        delta: 8,
        access: Some("poke"),
        freed: true,
    },
    ErrorCase {
        name: "overflow",
        signal: SIGSEGV,
        head: "buffer-overflow: write at 0x",
        middle: ", 0 bytes past the end of the 64-byte block at 0x",
        tail: "",
        delta: 64,
        access: Some("poke"),
        freed: false,
    },
    ErrorCase {
        name: "underflow",
        signal: SIGSEGV,
        head: "buffer-underflow: write at 0x",
        middle: ", 1 bytes before the start of the 64-byte block at 0x",
        tail: "",
        delta: -1,
        access: Some("poke"),
        freed: false,
    },
    ErrorCase {
        name: "double-free",
        signal: SIGABRT,
        head: "double-free: free(0x",
        middle: "): the 64-byte block at 0x",
        tail: " was freed before",
        delta: 0,
        access: None,
        freed: true,
    },
    ErrorCase {
        name: "invalid-free",
        signal: SIGABRT,
        head: "invalid-free: free(0x",
        middle: "): 8 bytes into the 64-byte block at 0x",
        tail: " (live)",
        delta: 8,
        access: None,
        freed: false,
    },
];

/// The 1-based number of the first line of `source` that contains `marker` and comes after the
/// first line containing `after`.
fn line_of(source: &str, after: &str, marker: &str) -> usize {
    let start = source
        .lines()
        .position(|line| line.contains(after))
        .unwrap_or_else(|| panic!("no line containing {after:?}"));
    source
        .lines()
        .enumerate()
        .skip(start)
        .find(|(_, line)| line.contains(marker))
        .map(|(index, _)| index + 1)
        .unwrap_or_else(|| panic!("no line containing {marker:?} after {after:?}"))
}

/// Splits `text` at the end of its leading hex digits and parses them.
fn leading_hex(text: &str) -> (u64, &str) {
    let end = text.find(|c: char| !c.is_ascii_hexdigit()).unwrap_or(text.len());
    let value =
        u64::from_str_radix(&text[..end], 16).unwrap_or_else(|e| panic!("no address at {text:?}: {e}"));
    (value, &text[end..])
}

/// Parses a report's first line as `head A middle B tail` and returns `(A, B)`.
fn addresses(line: &str, head: &str, middle: &str, tail: &str) -> (u64, u64) {
    let shape = format!("{PREFIX}{head}<A>{middle}<B>{tail}");
    let rest = line
        .strip_prefix(PREFIX)
        .and_then(|rest| rest.strip_prefix(head))
        .unwrap_or_else(|| panic!("first line is not `{shape}`: {line}"));
    let (first, rest) = leading_hex(rest);
    let rest = rest
        .strip_prefix(middle)
        .unwrap_or_else(|| panic!("first line is not `{shape}`: {line}"));
    let (block, rest) = leading_hex(rest);
    assert_eq!(rest, tail, "first line is not `{shape}`: {line}");
    (first, block)
}

/// The frame lines of the stack that follows the line `<PREFIX><title>` in `report`.
fn frames<'a>(report: &'a str, title: &str) -> Vec<&'a str> {
    let header = format!("{PREFIX}{title}");
    report
        .lines()
        .skip_while(|line| !line.starts_with(&header))
        .skip(1)
        .take_while(|line| line.starts_with(&format!("{PREFIX}  #")))
        .collect()
}

/// Checks that `stderr` is exactly one guard report ending in `signal`'s last line, and returns
/// its first line.
fn single_report<'a>(stderr: &'a str, signal: &str) -> &'a str {
    assert!(
        !stderr.is_empty() && stderr.lines().all(|line| line.starts_with(PREFIX)),
        "stderr is not just a guard report:\n{stderr}"
    );
    let kinds = [
        "use-after-free:",
        "buffer-overflow:",
        "buffer-underflow:",
        "double-free:",
        "invalid-free:",
    ];
    let firsts = stderr
        .lines()
        .filter(|line| kinds.iter().any(|kind| line[PREFIX.len()..].starts_with(kind)))
        .count();
    let ends = stderr
        .lines()
        .filter(|line| line.contains("the process ends with"))
        .count();
    assert_eq!((firsts, ends), (1, 1), "not exactly one report:\n{stderr}");
    let last = stderr.lines().last().unwrap_or_default();
    assert_eq!(
        last,
        format!(
            "{PREFIX}the process ends with {signal}; `tally symbolize` names the frames with files and lines"
        ),
        "{stderr}"
    );
    stderr.lines().next().unwrap_or_default()
}

/// The one file `<prefix>.<pid>.guard` in `dir` (written for `guard_report:<dir>/<prefix>`).
fn report_file(dir: &Path, prefix: &str) -> PathBuf {
    let files: Vec<PathBuf> = std::fs::read_dir(dir)
        .unwrap_or_else(|e| panic!("cannot list {}: {e}", dir.display()))
        .map(|entry| entry.expect("directory entry").path())
        .collect();
    let reports: Vec<&PathBuf> = files
        .iter()
        .filter(|path| {
            let name = path.file_name().unwrap_or_default().to_string_lossy();
            name.strip_prefix(&format!("{prefix}."))
                .and_then(|rest| rest.strip_suffix(".guard"))
                .is_some_and(|pid| !pid.is_empty() && pid.bytes().all(|b| b.is_ascii_digit()))
        })
        .collect();
    assert!(
        reports.len() == 1 && files.len() == 1,
        "want one {prefix}.<pid>.guard in {}, found {files:?}",
        dir.display()
    );
    reports[0].clone()
}

/// `tally symbolize` on the report file and on the same text through stdin: both must succeed
/// with the same output, the report with its frame lines named and every other line as it was.
fn symbolize(file: &Path, report: &str) -> String {
    let mut cmd = Command::new(tally_binary());
    cmd.arg("symbolize").arg(file);
    let from_file = run(cmd, Mode::Plain, LIMIT);
    from_file.assert_success();
    let mut cmd = Command::new(tally_binary());
    cmd.args(["symbolize", "-"]);
    let from_stdin = run_with_input(cmd, Mode::Plain, LIMIT, Some(report.as_bytes().to_vec()));
    from_stdin.assert_success();
    assert_bytes_eq(
        "symbolized report",
        "tally symbolize -",
        &from_file.stdout,
        &from_stdin.stdout,
    );
    let symbolized = from_file.stdout_text();
    // A frame may become several lines (a chain of inlined calls), each starting with the
    // frame's number and address; everything else stays as it was.
    let outline = |text: &str| -> Vec<String> {
        let mut lines: Vec<String> = text
            .lines()
            .map(|line| match line.strip_prefix(&format!("{PREFIX}  #")) {
                Some(frame) => frame.split(' ').take(2).collect::<Vec<_>>().join(" "),
                None => line.to_owned(),
            })
            .collect();
        lines.dedup();
        lines
    };
    assert_eq!(
        outline(&symbolized),
        outline(report),
        "tally symbolize changed more than the frames:\n{symbolized}"
    );
    symbolized
}

/// Asserts that the stack `title` of the symbolized `report` has a line naming `function` (the
/// end of its name) at `file:line` as frame `#number` (any frame if `None`).
fn assert_stack_names(
    report: &str,
    title: &str,
    number: Option<usize>,
    function: &str,
    file: &str,
    line: usize,
) {
    let named = frames(report, title).into_iter().any(|frame| {
        let numbered = number.map_or(true, |n| frame.starts_with(&format!("{PREFIX}  #{n} 0x")));
        let (name, location) = frame
            .split_once(" in ")
            .unwrap_or_default()
            .1
            .split_once(" at ")
            .unwrap_or_default();
        numbered
            && (name == function || name.ends_with(&format!("::{function}")))
            && location.contains(&format!("{file}:{line} ("))
    });
    assert!(
        named,
        "`{title}` stack should name {function} at {file}:{line} (frame #{number:?}):\n{report}"
    );
}

/// Checks that `stderr` holds one report, of a write 8 bytes into a freed 64-byte block, ending
/// with SIGSEGV.
fn assert_write_8_bytes_into_a_freed_64_byte_block(stderr: &str) {
    let first = single_report(stderr, "SIGSEGV");
    let (at, block) = addresses(
        first,
        "use-after-free: write at 0x",
        ", 8 bytes into the 64-byte block at 0x",
        "",
    );
    assert_eq!(at - block, 8, "{first}");
}

#[test]
fn memory_errors_end_the_process_with_one_report_that_symbolizes_to_guard_c() {
    let scratch = ScratchDir::new(env!("CARGO_TARGET_TMPDIR"), "guard-errors");
    let exe = compile_c("guard.c", scratch.path());
    let source = std::fs::read_to_string(program("guard.c")).expect("read guard.c");
    let malloc_line = line_of(&source, "static char *make_block(", "char *p = malloc(size);");
    let free_line = line_of(&source, "static void release_block(", "free(p);");
    let access_lines = [
        ("poke", line_of(&source, "static void poke(", "p[at] = value;")),
        ("peek", line_of(&source, "static char peek(", "return p[at];")),
    ];

    for case in &ERROR_CASES {
        let dir = scratch.subdir(case.name);
        let conf = format!("{ERROR_CONF},guard_report:{}/rep", dir.display());
        let mut cmd = Command::new(&exe);
        cmd.arg(case.name);
        let out = run_with_conf(cmd, Mode::Preloaded, &conf, LIMIT);
        let context = format!("guard {}\n{}", case.name, out.dump());
        assert_eq!(out.status.signal(), Some(case.signal), "{context}");
        assert!(!out.stdout_text().contains("survived"), "{context}");

        let stderr = out.stderr_text();
        let signal = if case.signal == SIGSEGV {
            "SIGSEGV"
        } else {
            "SIGABRT"
        };
        let first = single_report(&stderr, signal);
        let (at, block) = addresses(first, case.head, case.middle, case.tail);
        assert_eq!(at.wrapping_sub(block) as i64, case.delta, "{first}");

        let sections = [
            ("access at:", case.access.is_some()),
            ("allocated by thread ", true),
            ("freed by thread ", case.freed),
            ("free() called by thread ", case.signal == SIGABRT),
        ];
        for (title, present) in sections {
            assert_eq!(
                !frames(&stderr, title).is_empty(),
                present,
                "`{title}` stack:\n{stderr}"
            );
        }

        let file = report_file(&dir, "rep");
        let written = std::fs::read_to_string(&file).expect("read the report file");
        assert_bytes_eq("report file", case.name, stderr.as_bytes(), written.as_bytes());

        let symbolized = symbolize(&file, &stderr);
        let frame_0 = |title, function, line| {
            assert_stack_names(&symbolized, title, Some(0), function, "guard.c", line)
        };
        frame_0("allocated by thread ", "make_block", malloc_line);
        if case.freed {
            frame_0("freed by thread ", "release_block", free_line);
        }
        if case.signal == SIGABRT {
            frame_0("free() called by thread ", "release_block", free_line);
        }
        if let Some(function) = case.access {
            let (_, line) = access_lines
                .iter()
                .find(|(name, _)| *name == function)
                .expect("a known access function");
            frame_0("access at:", function, *line);
        }
    }
}

#[test]
fn correct_program_runs_to_its_end_with_every_allocation_guarded() {
    let scratch = ScratchDir::new(env!("CARGO_TARGET_TMPDIR"), "guard-ok");
    let exe = compile_c("guard.c", scratch.path());
    let make = || {
        let mut cmd = Command::new(&exe);
        cmd.arg("ok");
        cmd
    };
    let plain = run(make(), Mode::Plain, LIMIT);
    plain.assert_success();
    assert!(plain.stdout_text().starts_with("ok "), "{}", plain.dump());
    // About 10,000 allocations, at most 500 blocks live: thousands are guarded in turn.
    for (conf, at_least) in [
        ("guard_rate:1,guard_slots:256", 1000),
        ("guard_rate:1", 500),
        ("guard_rate:3", 500),
    ] {
        let conf = format!("stats_print:true,{conf}");
        let guarded = run_with_conf(make(), Mode::Preloaded, &conf, LIMIT);
        guarded.assert_success();
        assert!(
            guarded.stderr.is_empty(),
            "TALLY_CONF={conf}: something on stderr\n{}",
            guarded.dump()
        );
        assert_bytes_eq("stdout", &guarded.command, &plain.stdout, &guarded.stdout);
        let count = guarded_allocs(&guarded);
        assert!(
            count >= at_least,
            "TALLY_CONF={conf}: only {count} blocks guarded"
        );
    }
}

/// Runs guard_count.c with `conf` and returns `(at_end, at_start)`: how many of its 20 blocks of
/// 64 bytes end at a page's end and begin at a page's start.
fn page_boundary_blocks(exe: &Path, conf: &str) -> (u64, u64) {
    let out = run_with_conf(Command::new(exe), Mode::Preloaded, conf, LIMIT);
    out.assert_success();
    assert!(out.stderr.is_empty(), "TALLY_CONF={conf}\n{}", out.dump());
    let stdout = out.stdout_text();
    let value = |key| find_value(&stdout, key).unwrap_or_else(|| panic!("no {key}= in {stdout:?}"));
    assert_eq!(value("usable_min"), 64, "TALLY_CONF={conf}: {stdout}");
    (value("at_end"), value("at_start"))
}

#[test]
fn guarded_blocks_lie_against_guard_pages_as_many_as_slots_allow() {
    let scratch = ScratchDir::new(env!("CARGO_TARGET_TMPDIR"), "guard-count");
    let exe = compile_c("guard_count.c", scratch.path());
    // Guarded: against the slot's end and start in turn (a one-byte overflow and underflow of
    // each faults), and usable up to malloc_usable_size (which must then be 64 exactly).
    let (at_end, at_start) = page_boundary_blocks(&exe, "guard_rate:1");
    assert!(
        at_end + at_start >= 18 && at_end >= 8 && at_start >= 8,
        "guard_rate:1: only {at_end} blocks at a page's end and {at_start} at a page's start of 20"
    );
    // Unguarded: 20 blocks from a slab span 1280 bytes, so only a few touch a page boundary.
    for conf in ["guard_rate:0", ""] {
        let (at_end, at_start) = page_boundary_blocks(&exe, conf);
        assert!(
            at_end + at_start < 10,
            "TALLY_CONF={conf:?}: {at_end} blocks at a page's end and {at_start} at a page's start of 20"
        );
    }
    // Four slots: at most four guarded, plus what happens to touch a boundary in a slab.
    let (at_end, at_start) = page_boundary_blocks(&exe, "guard_rate:1,guard_slots:4");
    assert!(
        at_end + at_start <= 4 + 2,
        "guard_slots:4: {at_end} blocks at a page's end and {at_start} at a page's start of 20"
    );
}

/// Asserts a guarded run of a real program went as its plain run did, reported nothing, and
/// was served by Tally.
fn assert_guarded_like_plain(plain: &Outcome, guarded: &Outcome) {
    assert_unreported_like_plain(plain, guarded);
    assert_guarded(guarded);
}

/// [`assert_guarded_like_plain`] but for the guarding: for one step of a session, whose
/// guarding is asserted over all its steps (a step of a few hundred allocations guards none
/// now and then at `guard_rate:50`, whichever build).
fn assert_unreported_like_plain(plain: &Outcome, guarded: &Outcome) {
    assert!(
        !guarded.stderr_text().contains(PREFIX.trim_end()),
        "a guard report from a correct program:\n{}",
        guarded.dump()
    );
    assert_same_behaviour(plain, guarded);
}

/// Asserts a run with `stats_print:true` and guarding on had Tally guard blocks: every process
/// printed its stats with a `guarded_allocs=` count, and at least one guarded some. (Not
/// [`Outcome::assert_used_tally`]: at `guard_rate:1` a small process may get every block from a
/// guard slot and never fill a thread cache.)
fn assert_guarded(out: &Outcome) {
    assert!(
        guarded_allocs(out) >= 1,
        "no process of `{}` guarded a block\n{}",
        out.command,
        out.dump()
    );
}

/// How many blocks the processes of a run with `stats_print:true` guarded (every process must
/// have printed a stats line with `guarded_allocs=`).
fn guarded_allocs(out: &Outcome) -> u64 {
    assert!(
        !out.stats.is_empty(),
        "no stats line from `{}`\n{}",
        out.command,
        out.dump()
    );
    out.stats
        .iter()
        .map(|line| {
            line.get_u64("guarded_allocs")
                .unwrap_or_else(|| panic!("no guarded_allocs= in {:?}", line.raw))
        })
        .sum()
}

/// Runs the command from `make` plain, then preloaded under each of [`REAL_PROGRAM_CONFS`];
/// every guarded run must go as the plain one did. Returns the plain run.
fn guarded_runs_like_plain(make: impl Fn() -> Command) -> Outcome {
    let plain = run(make(), Mode::Plain, LIMIT);
    plain.assert_success();
    for conf in REAL_PROGRAM_CONFS {
        let guarded = run_with_conf(make(), Mode::Preloaded, conf, LIMIT);
        assert_guarded_like_plain(&plain, &guarded);
    }
    plain
}

#[test]
fn python_json_round_trip_is_unchanged_by_guarding() {
    let python = python_interpreter();
    let script = "import hashlib, json\n\
        d = {'k%05d' % i: {'n': i, 's': 'v' * (i % 50), 'l': list(range(i % 7))} for i in range(20000)}\n\
        t = json.dumps(d, sort_keys=True)\n\
        assert json.loads(t) == d\n\
        print(len(d), len(t), hashlib.sha256(t.encode()).hexdigest())\n";
    let plain = guarded_runs_like_plain(|| {
        let mut cmd = Command::new(&python);
        cmd.args(["-c", script]).env("PYTHONHASHSEED", "0");
        cmd
    });
    assert!(plain.stdout_text().starts_with("20000 "), "{}", plain.dump());
}

#[test]
fn python_use_after_free_through_ctypes_is_caught() {
    let python = python_interpreter();
    let script = "import ctypes\n\
        libc = ctypes.CDLL(None)\n\
        libc.malloc.restype = ctypes.c_void_p\n\
        libc.malloc.argtypes = [ctypes.c_size_t]\n\
        libc.free.argtypes = [ctypes.c_void_p]\n\
        p = libc.malloc(64)\n\
        print('page offset', p % 4096, flush=True)\n\
        libc.free(p)\n\
        ctypes.memset(p + 8, 0x55, 1)\n\
        print('survived', flush=True)\n";
    let mut cmd = Command::new(&python);
    cmd.args(["-c", script]);
    let out = run_with_conf(cmd, Mode::Preloaded, "guard_rate:1,guard_slots:1024", LIMIT);
    assert_eq!(out.status.signal(), Some(SIGSEGV), "{}", out.dump());
    let stdout = out.stdout_text();
    assert!(
        stdout == "page offset 0\n" || stdout == "page offset 4032\n",
        "the block is not against a guard page, or the write returned:\n{}",
        out.dump()
    );
    let stderr = out.stderr_text();
    assert_write_8_bytes_into_a_freed_64_byte_block(&stderr);
    // Through libffi's exported ffi_call, whose name the report gives without symbolizing.
    for title in ["allocated by thread ", "freed by thread "] {
        assert!(
            frames(&stderr, title)
                .iter()
                .any(|frame| frame.contains(" in ffi_call+0x")),
            "`{title}` stack does not pass through ffi_call:\n{stderr}"
        );
    }
}

#[test]
fn perl_hash_is_unchanged_by_guarding() {
    let perl = require_tool("perl", "perl");
    let script = "my %h; for my $i (0..99999) { $h{\"key$i\"} = $i * 3 . 'x' x ($i % 40) }\n\
        my $sum = 0;\n\
        for my $k (sort keys %h) { $sum = ($sum * 31 + length($h{$k}) + length($k)) % 1000000007 }\n\
        print scalar(keys %h), \" $sum\\n\";\n";
    let plain = guarded_runs_like_plain(|| {
        let mut cmd = Command::new(&perl);
        cmd.args(["-e", script]).env("PERL_HASH_SEED", "0");
        cmd
    });
    assert!(plain.stdout_text().starts_with("100000 "), "{}", plain.dump());
}

#[test]
fn gcc_compiles_the_same_executable_with_guarding() {
    let gcc = require_tool("gcc", "gcc (or build-essential)");
    let source = program("compiled.c");
    let expected = std::fs::read_to_string(program("compiled.expected")).expect("expected output");
    let scratch = ScratchDir::new(env!("CARGO_TARGET_TMPDIR"), "guard-gcc");
    // Each run writes its own executable; all must be the same bytes and print the same.
    let runs = std::cell::Cell::new(0);
    let outputs = scratch.subdir("out");
    let make = || {
        let n = runs.get();
        runs.set(n + 1);
        let mut cmd = Command::new(&gcc);
        cmd.current_dir(&outputs)
            .args(["-O2", "-Wall", "-Wextra", "-o"])
            .arg(format!("prog{n}"))
            .arg(&source)
            .env("LC_ALL", "C")
            .env_remove("GCC_COLORS");
        cmd
    };
    guarded_runs_like_plain(make);
    let plain_binary = std::fs::read(outputs.join("prog0")).expect("gcc wrote no executable");
    for n in 0..runs.get() {
        let exe = outputs.join(format!("prog{n}"));
        let binary = std::fs::read(&exe).expect("gcc wrote no executable");
        assert!(
            binary == plain_binary,
            "prog{n} differs from the plain run's executable"
        );
        let output = run(Command::new(&exe), Mode::Plain, LIMIT);
        output.assert_success();
        assert_eq!(output.stdout_text(), expected, "prog{n} printed wrong output");
    }
    assert_eq!(runs.get(), 1 + REAL_PROGRAM_CONFS.len());
}

/// A git session in `dir`: init, 60 files, add, commit, log, gc, fsck, rev-parse; each step run
/// by `exec`. Returns the transcript and the steps' outcomes.
fn git_session(git: &Path, dir: &Path, exec: &dyn Fn(Command) -> Outcome) -> (String, Vec<Outcome>) {
    let repo = dir.join("repo");
    std::fs::create_dir_all(repo.join("src")).expect("create the repository directory");
    let mut transcript = String::new();
    let mut outcomes = Vec::new();
    let mut step = |args: &[&str]| {
        let outcome = exec(git_command(git, &repo, dir, args));
        record_git_step(&mut transcript, &mut outcomes, args, outcome);
    };
    step(&["init", "-q", "-b", "main", "--object-format=sha1"]);
    for i in 0..60 {
        let text = format!("file {i}: {}\n", "guarded ".repeat(i % 17)).repeat(1 + i * 7 % 50);
        std::fs::write(repo.join(format!("src/f{i:02}.txt")), text).expect("write a file");
    }
    step(&["add", "-A"]);
    step(&["commit", "-q", "-m", "guarded import"]);
    step(&["log", "--stat", "--format=%H %an %ad%n%s"]);
    step(&["gc", "-q", "--prune=now"]);
    step(&["fsck", "--full", "--strict", "--no-progress"]);
    step(&["rev-parse", "HEAD", "HEAD^{tree}"]);
    (transcript, outcomes)
}

#[test]
fn git_session_is_unchanged_by_guarding() {
    let git = require_tool("git", "git");
    let scratch = ScratchDir::new(env!("CARGO_TARGET_TMPDIR"), "guard-git");
    let (plain, plain_steps) = git_session(&git, &scratch.subdir("plain"), &|cmd| {
        run(cmd, Mode::Plain, LIMIT)
    });
    assert!(plain.contains("guarded import"), "{plain}");
    for (n, conf) in REAL_PROGRAM_CONFS.iter().enumerate() {
        let (guarded, steps) = git_session(&git, &scratch.subdir(&format!("guarded{n}")), &|cmd| {
            run_with_conf(cmd, Mode::Preloaded, conf, LIMIT)
        });
        for (plain, guarded) in plain_steps.iter().zip(&steps) {
            assert_unreported_like_plain(plain, guarded);
        }
        // Every step printed its stats (`guarded_allocs` asserts it); the session guarded some.
        let guarded_blocks: u64 = steps.iter().map(guarded_allocs).sum();
        assert!(
            guarded_blocks >= 1,
            "no step of the git session under `{conf}` guarded a block"
        );
        assert_bytes_eq("transcript", conf, plain.as_bytes(), guarded.as_bytes());
    }
}

#[test]
fn java_program_is_unchanged_by_guarding() {
    let java = require_tool("java", "openjdk-17-jdk-headless");
    let source = program("GuardWorkload.java");
    let plain = guarded_runs_like_plain(|| {
        let mut cmd = Command::new(&java);
        cmd.arg("-Xmx256m")
            .arg(&source)
            .env("LC_ALL", "C")
            .env_remove("JAVA_TOOL_OPTIONS")
            .env_remove("_JAVA_OPTIONS");
        cmd
    });
    let stdout = plain.stdout_text();
    assert!(
        stdout.starts_with("entries 100000 checksum ") && stdout.ends_with(" round trip ok\n"),
        "{}",
        plain.dump()
    );
}

/// Allocates the box the Rust use after free writes to.
#[inline(never)]
fn make_box() -> *mut [u8; 64] {
    Box::into_raw(Box::new([7u8; 64]))
}

/// Frees the box.
///
/// # Safety
/// `block` must come from [`make_box`] and not have been freed.
#[inline(never)]
unsafe fn free_box(block: *mut [u8; 64]) {
    // SAFETY: the caller passes a live block from Box::into_raw.
    drop(unsafe { Box::from_raw(block) });
    // Not a tail call: free_box keeps its frame in the free stack.
    std::hint::black_box(block);
}

/// The child's part: a write 8 bytes into a freed `Box<[u8; 64]>`. Returns only if the write did.
#[inline(never)]
fn rust_use_after_free() {
    let block = std::hint::black_box(make_box());
    // SAFETY: `block` comes from make_box and is freed only here.
    unsafe { free_box(block) };
    // SAFETY: none: this write after free is the error the test wants caught; under guard_rate:1
    // the block's pages are inaccessible, so it faults instead of writing.
    unsafe { std::ptr::write_volatile(block.cast::<u8>().add(8).cast::<u64>(), 0x5555) };
    println!("survived");
}

#[test]
fn rust_use_after_free_of_a_box_names_its_functions() {
    if std::env::var_os(CHILD_ENV).is_some() {
        rust_use_after_free();
        return;
    }
    let scratch = ScratchDir::new(env!("CARGO_TARGET_TMPDIR"), "guard-rust");
    let exe = std::env::current_exe().expect("test binary path");
    let mut cmd = Command::new(exe);
    cmd.args([
        "--exact",
        "rust_use_after_free_of_a_box_names_its_functions",
        "--nocapture",
        "--test-threads=1",
    ])
    .env(CHILD_ENV, "1");
    // libtest holds about 400 small blocks when the test starts, and under guard_rate:1 each
    // took a slot: 256 slots would all be in use before make_box runs.
    let conf = format!(
        "guard_rate:1,guard_slots:1024,guard_report:{}/rep",
        scratch.path().display()
    );
    let out = run_with_conf(cmd, Mode::Linked, &conf, LIMIT);
    assert_eq!(
        out.status.signal(),
        Some(SIGSEGV),
        "child: {}\n{}",
        describe_status(out.status),
        out.dump()
    );
    assert!(
        out.stdout_text().contains("running 1 test") && !out.stdout_text().contains("survived"),
        "{}",
        out.dump()
    );
    let stderr = out.stderr_text();
    assert_write_8_bytes_into_a_freed_64_byte_block(&stderr);
    let file = report_file(scratch.path(), "rep");
    let symbolized = symbolize(&file, &stderr);
    // Linked in, Tally's own frames come first (its allocation and free paths), then the
    // test's functions, at the lines of their calls into the allocator.
    let source = include_str!("guard.rs");
    let box_new = line_of(source, "fn make_box()", "Box::into_raw(Box::new(");
    let box_drop = line_of(
        source,
        "unsafe fn free_box(",
        "drop(unsafe { Box::from_raw(block) });",
    );
    let free_call = line_of(source, "fn rust_use_after_free()", "unsafe { free_box(block) };");
    assert_stack_names(
        &symbolized,
        "allocated by thread ",
        None,
        "make_box",
        "guard.rs",
        box_new,
    );
    assert_stack_names(
        &symbolized,
        "freed by thread ",
        None,
        "free_box",
        "guard.rs",
        box_drop,
    );
    assert_stack_names(
        &symbolized,
        "freed by thread ",
        None,
        "rust_use_after_free",
        "guard.rs",
        free_call,
    );
    // The access is the faulting store itself, the instruction right after the call to
    // free_box: `tally symbolize` looks it up where it is (not at its address minus one, as for
    // a return address, which would name the call's line).
    let store = line_of(source, "fn rust_use_after_free()", "std::ptr::write_volatile(");
    assert_stack_names(
        &symbolized,
        "access at:",
        Some(0),
        "rust_use_after_free",
        "guard.rs",
        store,
    );
}

#[test]
fn tally_run_guard_prints_the_report_with_files_and_lines() {
    let scratch = ScratchDir::new(env!("CARGO_TARGET_TMPDIR"), "guard-run");
    let exe = compile_c("guard.c", scratch.path());
    let source = std::fs::read_to_string(program("guard.c")).expect("read guard.c");
    let malloc_line = line_of(&source, "static char *make_block(", "char *p = malloc(size);");
    let free_line = line_of(&source, "static void release_block(", "free(p);");
    let out_dir = scratch.subdir("run");
    // The shell turns core dumps off for the program `tally run` starts; it runs without Tally.
    let mut cmd = Command::new("sh");
    cmd.args(["-c", "ulimit -c 0; exec \"$0\" \"$@\""])
        .arg(tally_binary())
        .args(["run", "--guard=1", "--out"])
        .arg(&out_dir)
        .arg("--")
        .arg(&exe)
        .arg("write-after-free");
    let out = run(cmd, Mode::Plain, LIMIT);
    let stderr = out.stderr_text();
    assert_eq!(out.status.code(), Some(128 + SIGSEGV), "{}", out.dump());
    // The program's own report, then `tally run`'s symbolized copy of it.
    assert_eq!(
        stderr.matches("use-after-free: write at 0x").count(),
        2,
        "{}",
        out.dump()
    );
    let symbolized = &stderr[stderr
        .rfind(&format!("{PREFIX}use-after-free:"))
        .expect("a report")..];
    for (title, function, line) in [
        ("allocated by thread ", "make_block", malloc_line),
        ("freed by thread ", "release_block", free_line),
    ] {
        assert_stack_names(symbolized, title, Some(0), function, "guard.c", line);
    }
    assert!(
        !stderr.contains("before it wrote a heap profile"),
        "a crash the guard reported is not a run error of its own:\n{}",
        out.dump()
    );
}

#[test]
fn the_fault_handler_passes_faults_on_to_the_handler_installed_before_it() {
    let scratch = ScratchDir::new(env!("CARGO_TARGET_TMPDIR"), "guard-chain");
    let exe = compile_c("guard_chain.c", scratch.path());
    let chained = |case: &str| {
        let mut cmd = Command::new(&exe);
        cmd.arg(case);
        let out = run_with_conf(cmd, Mode::Preloaded, ERROR_CONF, LIMIT);
        assert_eq!(
            (out.status.code(), out.stdout_text().as_str()),
            (Some(42), "program handler\n"),
            "guard_chain {case}: the program's own handler must run\n{}",
            out.dump()
        );
        out.stderr_text()
    };
    // A fault that is not Tally's: no report, the program's handler.
    let wild = chained("wild");
    assert!(!wild.contains(PREFIX), "{wild}");
    // A guarded block's: the report first, then the program's handler.
    let guarded = chained("guarded");
    assert!(
        guarded.starts_with(&format!("{PREFIX}use-after-free: write at 0x")),
        "{guarded}"
    );
    assert!(
        guarded.contains(&format!(
            "{PREFIX}SIGSEGV goes on to the handler installed before Tally's; "
        )),
        "{guarded}"
    );
}
