//! The profiler under pressure: every allocation sampled (`lg_prof_sample:0`) while many threads
//! allocate and free each other's blocks, the process forks, and threads dlopen libraries with
//! thread-local storage — no deadlock, no crash, no corrupted block, and profiles still written.
//! Each run is bounded in time; a hang fails the test.

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use tally_tests::{compile_c, libtally_so, program, ScratchDir};

const CONF: &str = "prof:true,lg_prof_sample:0,prof_final:true,stats_print:true";

fn run_profiled(mut cmd: Command, dir: &Path, limit: Duration) -> String {
    let prefix = dir.join("prof");
    cmd.env("LD_PRELOAD", libtally_so())
        .env("TALLY_CONF", format!("{CONF},prof_prefix:{}", prefix.display()));
    let start = Instant::now();
    let mut child = cmd
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    loop {
        if child.try_wait().unwrap().is_some() {
            break;
        }
        if start.elapsed() > limit {
            let _ = child.kill();
            panic!("still running after {limit:?}: deadlock?");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let out = child.wait_with_output().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "{:?}\n{stdout}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    let dumps: Vec<_> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.to_string_lossy().ends_with(".f.heap"))
        .collect();
    assert!(!dumps.is_empty(), "no final profile written");
    for d in &dumps {
        let text = std::fs::read(d).unwrap();
        let profile = tally_format::parse(&text).unwrap_or_else(|e| panic!("{}: {e}", d.display()));
        assert!(!profile.maps.is_empty());
    }
    eprintln!(
        "{:?}: {} profiles, {:.1?}",
        cmd.get_program(),
        dumps.len(),
        start.elapsed()
    );
    stdout
}

#[test]
fn stress_with_every_allocation_sampled() {
    let scratch = ScratchDir::new(env!("CARGO_TARGET_TMPDIR"), "prof-stress");
    let exe = compile_c("stress.c", scratch.path());
    let mut cmd = Command::new(&exe);
    cmd.args(["8", "20000", "7"]);
    let stdout = run_profiled(cmd, &scratch.subdir("profiles"), Duration::from_secs(120));
    assert!(stdout.contains("stress: ok"), "{stdout}");
}

#[test]
fn fork_with_every_allocation_sampled() {
    let scratch = ScratchDir::new(env!("CARGO_TARGET_TMPDIR"), "prof-fork");
    let exe = compile_c("fork.c", scratch.path());
    let mut cmd = Command::new(&exe);
    cmd.args(["50", "4"]);
    let stdout = run_profiled(cmd, &scratch.subdir("profiles"), Duration::from_secs(120));
    assert!(stdout.contains("fork: ok"), "{stdout}");
}

#[test]
fn dlopen_and_thread_exit_with_every_allocation_sampled() {
    let scratch = ScratchDir::new(env!("CARGO_TARGET_TMPDIR"), "prof-lifecycle");
    let exe = compile_c("lifecycle.c", scratch.path());
    let module = scratch.join("libtls_module.so");
    let status = Command::new("cc")
        .args(["-shared", "-fPIC", "-O2", "-o"])
        .arg(&module)
        .arg(program("tls_module.c"))
        .status()
        .unwrap();
    assert!(status.success());
    let mut cmd = Command::new(&exe);
    cmd.arg(&module).args(["50", "8"]);
    let stdout = run_profiled(cmd, &scratch.subdir("profiles"), Duration::from_secs(120));
    assert!(stdout.contains("lifecycle: ok"), "{stdout}");
}
