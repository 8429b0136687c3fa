//! `programs/lifecycle.c` under Tally: malloc during dynamic TLS set-up (a dlopen'ed module's
//! TLS block is malloc'd inside `__tls_get_addr`), inside the dynamic loader (dlopen/dlclose from
//! many threads), and in thread-exit destructors that run after Tally flushed the thread's cache
//! (pthread key destructors that re-arm themselves; `__cxa_thread_atexit_impl` destructors).

use std::process::Command;
use tally_tests::{compile_c, find_value, run, Mode, ScratchDir, DEFAULT_TIMEOUT};

#[test]
fn malloc_works_in_tls_setup_loader_and_thread_exit_under_tally() {
    let scratch = ScratchDir::new(env!("CARGO_TARGET_TMPDIR"), "lifecycle");
    let exe = compile_c("lifecycle.c", scratch.path());
    let module = scratch.join("libtls_module.so");
    let status = Command::new("cc")
        .args(["-shared", "-fPIC", "-O2", "-o"])
        .arg(&module)
        .arg(tally_tests::program("tls_module.c"))
        .status()
        .expect("cc");
    assert!(status.success(), "building the TLS module failed");
    for mode in Mode::BOTH {
        let mut cmd = Command::new(&exe);
        cmd.arg(&module).args(["200", "8"]);
        let outcome = run(cmd, mode, DEFAULT_TIMEOUT);
        outcome.assert_success();
        let stdout = outcome.stdout_text();
        assert!(stdout.contains("lifecycle: ok"), "{}", outcome.dump());
        assert_eq!(
            find_value(&stdout, "destructor_rounds"),
            Some(4 * 8 * 3),
            "{stdout}"
        );
        if mode == Mode::Preloaded {
            outcome.assert_used_tally();
        }
    }
}
