//! `tally run`: the environment it gives the program, its exit code, and what it says when the
//! program wrote no dump. Here `TALLY_SO` points at another library (Debian's jemalloc), so these
//! need no build of `libtally.so`; the end to end runs under the real one are in
//! `run_end_to_end.rs`.

mod common;

use std::path::Path;
use std::process::{Command, Output};

use common::*;

const LS: &str = "jemalloc-5.3-ls.heap";

/// `tally run` with `TALLY_SO` set to an existing library (Debian's jemalloc stands in).
fn tally_run(dir: &Path, args: &[&str]) -> Output {
    tally_run_jemalloc(dir, args).output().unwrap()
}

/// The command [`tally_run`] runs.
fn tally_run_jemalloc(dir: &Path, args: &[&str]) -> Command {
    need(JEMALLOC, "libjemalloc2");
    let mut command = tally();
    command
        .arg("run")
        .arg("--out")
        .arg(dir)
        .args(args)
        .env("TALLY_SO", JEMALLOC)
        .env_remove("LD_PRELOAD")
        .env_remove("TALLY_CONF");
    command
}

#[test]
fn sets_up_the_environment_and_passes_the_exit_code() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("dumps");
    let output = tally_run(
        &out,
        &[
            "--conf",
            "lg_prof_sample:12",
            "--",
            "sh",
            "-c",
            "echo \"LD_PRELOAD=$LD_PRELOAD\"; echo \"TALLY_CONF=$TALLY_CONF\"; exit 7",
        ],
    );
    let (stdout, stderr) = (
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr),
    );
    assert!(stdout.contains(&format!("LD_PRELOAD={JEMALLOC}\n")), "{stdout}");
    assert!(
        stdout.contains(&format!(
            "TALLY_CONF=prof:true,prof_final:true,prof_prefix:{}/tally,prof_signal:{},lg_prof_sample:12\n",
            out.display(),
            tally_report::run::default_prof_signal()
        )),
        "{stdout}"
    );
    assert!(out.is_dir(), "--out is made");
    // The program's code, and the missing dump named.
    assert_eq!(output.status.code(), Some(7), "{stderr}");
    assert_eq!(
        stderr.trim_end(),
        format!(
            "tally: run: sh wrote no heap profile in {} (is libtally.so built with the profiler?)",
            out.display()
        )
    );
}

#[test]
fn no_dump_from_a_successful_program_is_an_error() {
    let dir = tempfile::tempdir().unwrap();
    let output = tally_run(dir.path(), &["true"]);
    assert_eq!(output.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("true wrote no heap profile in"), "{stderr}");
}

#[test]
fn a_signal_exits_as_a_shell_would() {
    let dir = tempfile::tempdir().unwrap();
    let output = tally_run(dir.path(), &["sh", "-c", "kill -TERM $$"]);
    assert_eq!(output.status.code(), Some(128 + 15));
}

#[test]
fn a_program_killed_by_a_signal_is_reported_as_such() {
    // Not a question about the build: the program died before it could write its profile.
    let dir = tempfile::tempdir().unwrap();
    let output = tally_run(dir.path(), &["sh", "-c", "kill -SEGV $$"]);
    assert_eq!(output.status.code(), Some(128 + 11));
    assert_eq!(
        String::from_utf8_lossy(&output.stderr),
        "tally: run: sh was killed by SIGSEGV (Segmentation fault) before it wrote a heap profile\n"
    );
}

#[test]
fn an_interrupt_reaches_the_programs_whole_group_and_no_other_signal_does() {
    // The program (a shell and its sleep) does not catch prof_signal (Debian's jemalloc stands
    // in for libtally.so), so tally does not send it (a real-time signal nobody catches kills);
    // the SIGINT sent to tally alone reaches both processes of the program's group.
    use std::io::{BufRead, BufReader};
    let dir = tempfile::tempdir().unwrap();
    let mut command = tally_run_jemalloc(dir.path(), &["sh", "-c", "echo ready; sleep 30; echo survived"]);
    interrupts_at_their_defaults(&mut command);
    let mut child = command
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdout = BufReader::new(child.stdout.take().unwrap());
    let mut line = String::new();
    stdout.read_line(&mut line).unwrap();
    assert_eq!(line, "ready\n");
    std::thread::sleep(std::time::Duration::from_millis(100));
    let started = std::time::Instant::now();
    // SAFETY: kill has no memory-safety preconditions; the pid is our unreaped child's.
    unsafe { libc::kill(child.id() as libc::pid_t, libc::SIGINT) };
    let output = child.wait_with_output().unwrap();
    assert!(started.elapsed().as_secs() < 10, "the sleep was not interrupted");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(130), "{stderr}");
    assert_eq!(
        stderr,
        "tally: run: sh was killed by SIGINT (Interrupt) before it wrote a heap profile\n"
    );
}

#[test]
fn a_dump_of_another_process_is_named_not_reported() {
    // The program's child (here: a file named as a dump of pid 1) is another process, as a
    // concurrent run's program would be: its dump is named in the error, not reported.
    let dir = tempfile::tempdir().unwrap();
    let script = format!("cp {} \"$0/tally.1.0.f.heap\"", data(LS).display());
    let output = tally_run(
        dir.path(),
        &["sh", "-c", &script, &dir.path().display().to_string()],
    );
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(2), "{stderr}");
    assert!(
        output.stdout.is_empty(),
        "{}",
        String::from_utf8_lossy(&output.stdout)
    );
    assert_eq!(stderr.lines().count(), 1, "{stderr}");
    assert!(
        stderr.contains(&format!(
            "wrote no heap profile in {}, but other processes did (tally.1.0.f.heap): ",
            dir.path().display()
        )),
        "{stderr}"
    );
}

#[test]
fn arguments_and_options_of_the_program_pass_through() {
    let dir = tempfile::tempdir().unwrap();
    let output = tally_run(dir.path(), &["printf", "%s|", "--top", "-x"]);
    assert_eq!(String::from_utf8_lossy(&output.stdout), "--top|-x|");
}

#[test]
fn reports_the_final_dump_of_the_program() {
    // A program that leaves a final dump where Tally's profiler would: `tally.<pid>.<seq>.f.heap`.
    let dir = tempfile::tempdir().unwrap();
    let script = format!("cp {} \"$0/tally.$$.0.f.heap\"", data(LS).display());
    let output = tally_run(
        dir.path(),
        &["sh", "-c", &script, &dir.path().display().to_string()],
    );
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert_eq!(
        output.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let first = stdout.lines().next().unwrap();
    assert!(
        first.starts_with(&format!("Heap profile: {}/tally.", dir.path().display()))
            && first.ends_with(".0.f.heap"),
        "{stdout}"
    );
    assert!(stdout.lines().nth(1).unwrap().starts_with("Total: "), "{stdout}");
}

#[test]
fn a_missing_library_is_an_error() {
    let output = tally()
        .args(["run", "true"])
        .env("TALLY_SO", "/nonexistent/libtally.so")
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(2));
    assert_eq!(
        String::from_utf8_lossy(&output.stderr),
        "tally: run: TALLY_SO=/nonexistent/libtally.so is not a file\n"
    );
    let output = Command::new(env!("CARGO_BIN_EXE_tally"))
        .args(["run"])
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(2), "no program is a usage error");
}

#[test]
fn a_program_reading_the_terminal_is_given_it() {
    // On a terminal (script(1) makes one), the program's own process group is in the
    // background: its read stops it with SIGTTIN, and tally hands it the terminal and continues
    // it, so it reads the line typed. Without that it would stay stopped.
    use std::io::Write;
    need("script", "bsdutils");
    need(JEMALLOC, "libjemalloc2");
    let dir = tempfile::tempdir().unwrap();
    let command = format!(
        "{} run --out {} -- head -1",
        env!("CARGO_BIN_EXE_tally"),
        dir.path().display()
    );
    let mut child = Command::new("script")
        .args(["-qec", &command, "/dev/null"])
        .env("TALLY_SO", JEMALLOC)
        .env_remove("LD_PRELOAD")
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdin = child.stdin.take().unwrap();
    std::thread::sleep(std::time::Duration::from_millis(700));
    stdin.write_all(b"typed line\n").unwrap();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    while child.try_wait().unwrap().is_none() {
        if std::time::Instant::now() > deadline {
            let _ = child.kill();
            panic!("the program never read the terminal");
        }
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    drop(stdin);
    let output = child.wait_with_output().unwrap();
    let text = String::from_utf8_lossy(&output.stdout).replace('\r', "");
    // The terminal's echo, then head's copy of the line.
    assert!(text.contains("typed line\ntyped line\n"), "{text:?}");
    assert!(text.contains("head wrote no heap profile"), "{text:?}");
}

/// `tally run --out dir args` with `TALLY_SO` set to an empty shared library built here (for
/// what needs neither an allocator nor a profile, and so not Debian's jemalloc either).
fn tally_run_stub(dir: &Path, args: &[&str]) -> Output {
    let stub = dir.join("stub.so");
    if !stub.is_file() {
        need("cc", "build-essential");
        std::fs::create_dir_all(dir).unwrap();
        common::run(
            Command::new("cc")
                .args(["-shared", "-o"])
                .arg(&stub)
                .args(["-x", "c", "/dev/null"]),
        );
    }
    tally()
        .arg("run")
        .arg("--out")
        .arg(dir)
        .args(args)
        .env("TALLY_SO", &stub)
        .env_remove("LD_PRELOAD")
        .env_remove("TALLY_CONF")
        .output()
        .unwrap()
}

/// A `TALLY_CONF` already in the environment reaches the program, first, so its keys stay in
/// force where `tally run` and `--conf` set none.
#[test]
fn keeps_the_environments_tally_conf() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("dumps");
    let output = tally_run_jemalloc(
        &out,
        &[
            "--conf",
            "lg_prof_interval:31",
            "--",
            "sh",
            "-c",
            "echo \"TALLY_CONF=$TALLY_CONF\"",
        ],
    )
    .env("TALLY_CONF", "lg_prof_sample:17,lg_prof_interval:30")
    .output()
    .unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        stdout.contains(&format!(
            "TALLY_CONF=lg_prof_sample:17,lg_prof_interval:30,prof:true,prof_final:true,\
             prof_prefix:{}/tally,prof_signal:{},lg_prof_interval:31\n",
            out.display(),
            tally_report::run::default_prof_signal()
        )),
        "{stdout}"
    );
}

#[test]
fn guard_puts_its_options_before_the_users_conf() {
    let dir = tempfile::tempdir().unwrap();
    let echo = ["sh", "-c", "echo \"TALLY_CONF=$TALLY_CONF\""];
    let conf_of = |flags: &[&str]| {
        let args: Vec<&str> = flags.iter().chain(&["--"]).chain(&echo).copied().collect();
        let output = tally_run_stub(dir.path(), &args);
        let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
        stdout
            .lines()
            .find_map(|l| l.strip_prefix("TALLY_CONF="))
            .unwrap_or_else(|| panic!("{stdout}"))
            .to_string()
    };
    let base = format!(
        "prof:true,prof_final:true,prof_prefix:{}/tally,prof_signal:{}",
        dir.path().display(),
        tally_report::run::default_prof_signal()
    );
    assert_eq!(conf_of(&[]), base, "no guard options without --guard");
    assert_eq!(
        conf_of(&["--guard"]),
        format!(
            "{base},guard_rate:100,guard_slots:512,guard_report:{}/tally",
            dir.path().display()
        )
    );
    assert_eq!(
        conf_of(&["--guard=7", "--conf", "guard_slots:8"]),
        format!(
            "{base},guard_rate:7,guard_slots:512,guard_report:{}/tally,guard_slots:8",
            dir.path().display()
        )
    );
}

#[test]
fn guard_prints_the_programs_report_symbolized_and_a_fault_without_a_dump_is_no_error() {
    // The program stands in for the allocator: it writes the report of its own pid where
    // guard_report says, then dies of SIGSEGV before any heap profile.
    let dir = tempfile::tempdir().unwrap();
    let binary = compile(&data("guard_uaf.c"), dir.path(), "uaf");
    let in_make_block = return_address(&binary, "make_block", "malloc");
    let frame = format!(
        "tally: guard:   #0 0x000055f1d2a01171 in make_block+0x18 ({}+{in_make_block:#x})",
        binary.display()
    );
    let kind = "tally: guard: use-after-free: write at 0x7f0c1a2b3f08, 8 bytes into the 64-byte block at 0x7f0c1a2b3f00";
    let out = dir.path().join("out");
    let script = format!(
        "prefix=${{TALLY_CONF##*guard_report:}}; printf '%s\\n' '{kind}' '{frame}' > \"$prefix.$$.guard\"; kill -SEGV $$"
    );
    let output = tally_run_stub(&out, &["--guard", "sh", "-c", &script]);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(128 + 11), "{stderr}");
    let source = data("guard_uaf.c");
    assert_eq!(
        stderr,
        format!(
            "{kind}\ntally: guard:   #0 0x000055f1d2a01171 in make_block at {}:{} ({}+{in_make_block:#x})\n",
            source.display(),
            line_of(&source, "make_block: malloc"),
            binary.display()
        )
    );
    assert_eq!(String::from_utf8_lossy(&output.stdout), "");

    // Without --guard (and so without guard_report), no report is looked for.
    let output = tally_run_stub(&out, &["sh", "-c", "kill -SEGV $$"]);
    assert!(
        String::from_utf8_lossy(&output.stderr).contains("before it wrote a heap profile"),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
}
