//! Child processes for the tests that need a process of their own (options are read once per
//! process; counters must not see other tests' blocks; some cases must abort).
//!
//! Each test file that uses this module has one `#[ignore]`d test, `child_entry`: a normal run
//! skips it, and the file's scenarios run it in this test binary again with
//! `--ignored --exact child_entry` and its case in the environment. The child reads its case
//! with [`case`], which panics when the variable is missing, so `child_entry` never passes by
//! doing nothing; [`run`] checks that the harness really selected `child_entry`, so a renamed or
//! missing entry fails the parent instead of running zero tests successfully.

use std::process::{Command, Output};

/// Runs `child_entry` of this test binary in a new process with `env` set (and `TALLY_CONF`
/// cleared unless `env` sets it), and returns what it did.
///
/// Panics if the harness did not select exactly one test: the scenario would check nothing.
pub fn run(env: &[(&str, &str)]) -> Output {
    run_limited(env, None)
}

/// [`run`], with the child's address space limited to `limit_as` bytes (`ulimit -v`) from before
/// its first instruction, if given.
pub fn run_limited(env: &[(&str, &str)], limit_as: Option<u64>) -> Output {
    let mut command = Command::new(std::env::current_exe().expect("the test binary's path"));
    if let Some(bytes) = limit_as {
        use std::os::unix::process::CommandExt;
        // SAFETY: the closure runs in the forked child before exec and makes one
        // async-signal-safe system call, touching no memory but its own stack.
        unsafe {
            command.pre_exec(move || {
                let limit = libc::rlimit {
                    rlim_cur: bytes,
                    rlim_max: bytes,
                };
                if libc::setrlimit(libc::RLIMIT_AS, &limit) != 0 {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(())
            });
        }
    }
    command
        .args([
            "--ignored",
            "--exact",
            "child_entry",
            "--nocapture",
            "--test-threads=1",
        ])
        .env_remove("TALLY_CONF")
        .env_remove("MALLOC_CONF");
    for (name, value) in env {
        command.env(name, value);
    }
    let out = command.output().expect("the test binary runs");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        stdout.lines().any(|l| l == "running 1 test"),
        "the child did not run child_entry (env {env:?}):\n{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

/// The value of `name` in a child process; panics with the reason when it is missing.
#[track_caller]
pub fn case(name: &str) -> String {
    std::env::var(name).unwrap_or_else(|_| {
        panic!(
            "{name} is not set: child_entry is the child process of this file's scenarios, \
             which run it with its case in {name}; it has nothing to do on its own"
        )
    })
}
