//! `TALLY_CONF` / `MALLOC_CONF` in a real program under `LD_PRELOAD`: each bad setting gives its
//! one-line message (`tally: TALLY_CONF: <what is wrong> in "<the text>"`) and the program runs on
//! unchanged with the defaults, and after ten such lines one more counts the rest;
//! `abort_conf:true` aborts instead; `TALLY_CONF` wins over `MALLOC_CONF` on a key both set;
//! `prof_signal` refuses signals that are not meant to be sent to ask for a profile.

use std::os::unix::process::ExitStatusExt;
use std::process::{Command, Output};

use tally_tests::{libtally_so, require_tool, split_stats};

fn perl(tally_conf: Option<&str>, malloc_conf: Option<&str>) -> Output {
    let mut cmd = Command::new(require_tool("perl", "perl"));
    cmd.args([
        "-e",
        "my %h; $h{$_} = 'x' x $_ for 1..2000; print scalar(keys %h), \"\\n\"",
    ]);
    cmd.env("LD_PRELOAD", libtally_so())
        .env_remove("TALLY_CONF")
        .env_remove("MALLOC_CONF");
    if let Some(conf) = tally_conf {
        cmd.env("TALLY_CONF", conf);
    }
    if let Some(conf) = malloc_conf {
        cmd.env("MALLOC_CONF", conf);
    }
    cmd.output().expect("run perl")
}

const BAD: &[&str] = &[
    "prof",
    "narenas:-1",
    "narenas:1e99",
    "narenas:99999999999999999999999",
    "narenas:",
    "narenas:257",
    "tcache:yes",
    "tcache:TRUE",
    ":true",
    "unknown:1",
    "narenas:\u{663}",
    "ñ:1",
    "stats_print:true:false",
    "narenas:0x10",
    "narenas: 4",
    "dirty_decay_ms:-2",
    "junk:maybe",
    "stats_print_opts:JJ",
    "tcache_max:262145",
    "background_thread:1",
    "narenas:4,",
];

#[test]
fn bad_settings_give_one_line_each_and_the_program_runs_on() {
    let long = "x".repeat(10 * 1024);
    let dup = "narenas:2,narenas:-3";
    let mut cases: Vec<&str> = BAD.to_vec();
    cases.push(&long);
    cases.push(dup);
    for conf in cases {
        let out = perl(Some(conf), None);
        let shown: String = conf.chars().take(40).collect();
        assert!(
            out.status.success(),
            "TALLY_CONF={shown:?}: perl failed: {:?}",
            out.status
        );
        assert_eq!(
            String::from_utf8_lossy(&out.stdout),
            "2000\n",
            "TALLY_CONF={shown:?}: output changed"
        );
        let stderr = String::from_utf8_lossy(&out.stderr);
        let lines: Vec<&str> = stderr.lines().collect();
        assert_eq!(
            lines.len(),
            1,
            "TALLY_CONF={shown:?}: want exactly one line, got:\n{stderr}"
        );
        assert!(
            lines[0].starts_with("tally: TALLY_CONF: ")
                && lines[0].ends_with('"')
                && lines[0].contains(" in \""),
            "TALLY_CONF={shown:?}: {:?}",
            lines[0]
        );
        assert!(lines[0].len() < 512, "the message is one short line");
    }
}

#[test]
fn option_errors_stop_after_ten_with_a_count_of_the_rest() {
    // 120,000 commas: 120,001 empty options, which used to print 120,001 lines.
    let commas = ",".repeat(120_000);
    let out = perl(Some(&commas), Some("lg_chunk:21"));
    assert!(out.status.success());
    assert_eq!(String::from_utf8_lossy(&out.stdout), "2000\n");
    let stderr = String::from_utf8_lossy(&out.stderr);
    let lines: Vec<&str> = stderr.lines().collect();
    assert_eq!(lines.len(), 11, "{stderr:.2000}");
    assert!(lines[0].starts_with("tally: MALLOC_CONF: unknown option \"lg_chunk\""));
    for line in &lines[1..10] {
        assert!(
            line.starts_with("tally: TALLY_CONF: empty option in \",,,"),
            "{line}"
        );
        assert!(line.len() < 512);
    }
    assert_eq!(lines[10], "tally: ... and 119992 more option errors");
}

#[test]
fn prof_signal_refuses_fatal_and_job_control_signals_by_number_or_name() {
    for (value, name) in [
        ("11", "SIGSEGV"),
        ("SIGSEGV", "SIGSEGV"),
        ("8", "SIGFPE"),
        ("BUS", "SIGBUS"),
        ("SIGILL", "SIGILL"),
        ("6", "SIGABRT"),
        ("SIGTRAP", "SIGTRAP"),
        ("SIGSYS", "SIGSYS"),
        ("9", "SIGKILL"),
        ("SIGSTOP", "SIGSTOP"),
        ("SIGTSTP", "SIGTSTP"),
        ("2", "SIGINT"),
        ("SIGTERM", "SIGTERM"),
        ("SIGQUIT", "SIGQUIT"),
        ("SIGCHLD", "SIGCHLD"),
        ("13", "SIGPIPE"),
        ("SIGALRM", "SIGALRM"),
        ("32", "signal 32"),
    ] {
        let conf = format!("prof:true,prof_signal:{value}");
        let out = perl(Some(&conf), None);
        assert!(out.status.success(), "{conf}: {:?}", out.status);
        assert_eq!(String::from_utf8_lossy(&out.stdout), "2000\n");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(
            stderr,
            format!(
                "tally: TALLY_CONF: prof_signal takes SIGUSR1, SIGUSR2, SIGHUP or SIGRTMIN..SIGRTMAX, \
                 not {name}: \"{value}\" in \"{conf}\"\n"
            )
        );
    }
    for value in ["SIGFOO", "SIGRTMIN+99", "-1", "1e3"] {
        let out = perl(Some(&format!("prof_signal:{value}")), None);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(
            stderr.starts_with("tally: TALLY_CONF: ") && stderr.lines().count() == 1,
            "{value}: {stderr}"
        );
    }
}

#[test]
fn an_empty_setting_is_no_error() {
    // `TALLY_CONF= prog`, or a script passing an empty variable: no options, no message (as
    // jemalloc treats an empty MALLOC_CONF).
    let out = perl(Some(""), None);
    assert!(out.status.success());
    assert_eq!(String::from_utf8_lossy(&out.stdout), "2000\n");
    assert_eq!(String::from_utf8_lossy(&out.stderr), "");
}

#[test]
fn malloc_conf_errors_name_malloc_conf() {
    let out = perl(None, Some("lg_chunk:21"));
    assert!(out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.starts_with("tally: MALLOC_CONF: unknown option \"lg_chunk\""),
        "{stderr}"
    );
}

#[test]
fn abort_conf_aborts_on_a_bad_setting() {
    let out = perl(Some("abort_conf:true,narenas:-1"), None);
    assert_eq!(out.status.signal(), Some(libc_sigabrt()), "{:?}", out.status);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("tally: TALLY_CONF: expected a whole number for narenas"),
        "{stderr}"
    );
    assert!(stderr.contains("abort_conf:true"), "{stderr}");
    assert!(out.stdout.is_empty());
}

fn libc_sigabrt() -> i32 {
    6
}

#[test]
fn tally_conf_wins_over_malloc_conf() {
    let narenas = |tally: &str, malloc: &str| -> u64 {
        let out = perl(Some(tally), Some(malloc));
        assert!(out.status.success());
        let (rest, stats) = split_stats(&out.stderr);
        assert!(rest.is_empty(), "{}", String::from_utf8_lossy(&rest));
        stats[0].get_u64("narenas").expect("narenas in the stats line")
    };
    assert_eq!(narenas("stats_print:true,narenas:5", "narenas:3"), 5);
    assert_eq!(narenas("stats_print:true", "narenas:3"), 3);
    assert_eq!(narenas("stats_print:true", "narenas:3,narenas:7"), 7);
}
