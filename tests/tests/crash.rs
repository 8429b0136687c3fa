//! A program that crashes under Tally dies of its own signal, whatever the options: no handler
//! of Tally's may catch the fault and return to it (the faulting instruction would run again
//! forever: with `prof_signal:11` a segfaulting program used to spin at 100% CPU), and nothing
//! may turn the crash into an exit or a hang. And `prof_signal` takes only the signals meant to
//! be sent, by number or by name: the program survives raising one of those and writes a
//! profile; a fatal or job-control signal is refused with one line.

use std::path::Path;
use std::process::{Command, ExitStatus};
use std::time::Duration;

use std::os::unix::process::ExitStatusExt;

use tally_tests::{compile_c, describe_status, run_with_conf, Mode, ScratchDir};

const SIGABRT: i32 = 6;
const SIGFPE: i32 = 8;
const SIGSEGV: i32 = 11;

/// How long one run may take: these programs finish in milliseconds; a hang is the bug.
const LIMIT: Duration = Duration::from_secs(20);

/// Runs `exe args` under `LD_PRELOAD=libtally.so` with `conf` in `TALLY_CONF` and no core dump
/// ([`run_with_conf`]); a run still going after [`LIMIT`] is a hang and panics. Returns (status,
/// stdout, stderr).
fn run(exe: &Path, args: &[&str], conf: &str) -> (ExitStatus, String, String) {
    let mut cmd = Command::new(exe);
    cmd.args(args);
    let out = run_with_conf(cmd, Mode::Preloaded, conf, LIMIT);
    (out.status, out.stdout_text(), out.stderr_text())
}

#[test]
fn a_crashing_program_dies_of_its_own_signal_under_every_option() {
    let scratch = ScratchDir::new(env!("CARGO_TARGET_TMPDIR"), "crash");
    let exe = compile_c("crash.c", scratch.path());
    let prefix = format!("prof_prefix:{}/p", scratch.subdir("profiles").display());
    // (options, whether they hold a prof_signal that is refused with one line)
    let confs = [
        // Refused, with one line each: the program must still die of its own signal (with
        // prof_signal:11 or 8 accepted, it spun forever re-running the faulting instruction).
        ("prof:true,prof_signal:11", true),
        ("prof:true,prof_signal:8", true),
        ("prof:true,prof_signal:SIGABRT", true),
        ("prof:true,prof_signal:SIGBUS", true),
        ("", false),
        ("prof:true", false),
        ("prof:true,prof_final:true,prof_leak:true", false),
        ("prof:true,prof_signal:SIGUSR2", false),
        ("prof:true,prof_signal:SIGRTMIN+3", false),
        (
            "prof:true,lg_prof_sample:0,lg_prof_interval:12,prof_gdump:true,prof_accum:true",
            false,
        ),
        ("prof:true,prof_active:false", false),
        ("background_thread:true,dirty_decay_ms:1", false),
        ("junk:true", false),
        ("zero:true", false),
        ("tcache:false", false),
        ("narenas:1,muzzy_decay_ms:100", false),
        ("stats_print:true", false),
    ];
    for (conf, refused) in confs {
        let conf = if conf.contains("prof") {
            format!("{conf},{prefix}")
        } else {
            conf.to_string()
        };
        for (how, signal) in [("segv", SIGSEGV), ("fpe", SIGFPE), ("abort", SIGABRT)] {
            let (status, stdout, stderr) = run(&exe, &[how], &conf);
            assert_eq!(
                status.signal(),
                Some(signal),
                "`crash {how}` with TALLY_CONF={conf}: {}\n{stderr}",
                describe_status(status)
            );
            assert_eq!(stdout, "crash: ready\n", "TALLY_CONF={conf}");
            let messages: Vec<&str> = stderr
                .lines()
                .filter(|l| l.starts_with("tally:") && !l.starts_with("tally: stats:"))
                .collect();
            assert_eq!(
                messages.len(),
                usize::from(refused),
                "TALLY_CONF={conf}: {stderr}"
            );
            if refused {
                assert!(
                    messages[0].starts_with(
                        "tally: TALLY_CONF: prof_signal takes SIGUSR1, SIGUSR2, SIGHUP or SIGRTMIN..SIGRTMAX, not SIG"
                    ),
                    "{}",
                    messages[0]
                );
            }
        }
    }
}

#[test]
fn prof_signal_takes_names_and_numbers_and_writes_a_profile() {
    let scratch = ScratchDir::new(env!("CARGO_TARGET_TMPDIR"), "prof-signal");
    let exe = compile_c("crash.c", scratch.path());
    for (setting, raised) in [
        ("12", "12"),
        ("SIGUSR2", "12"),
        ("USR2", "12"),
        ("usr1", "10"),
        ("SIGHUP", "1"),
        ("SIGRTMIN+3", "RTMIN+3"),
        ("RTMIN+3", "RTMIN+3"),
    ] {
        let dir = scratch.subdir(&format!("p-{setting}"));
        let conf = format!("prof:true,prof_signal:{setting},prof_prefix:{}/p", dir.display());
        let (status, stdout, stderr) = run(&exe, &["raise", raised], &conf);
        assert!(
            status.success(),
            "prof_signal:{setting}, raised {raised}: {}\n{stderr}",
            describe_status(status)
        );
        assert_eq!(stdout, "crash: ready\ncrash: survived\n");
        assert_eq!(stderr, "", "prof_signal:{setting}");
        let dumps: Vec<_> = std::fs::read_dir(&dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect();
        assert!(
            dumps.len() == 1 && dumps[0].ends_with(".m0.heap"),
            "prof_signal:{setting}: {dumps:?}"
        );
    }
}
