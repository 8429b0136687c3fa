//! The profiler's mixed walk end to end: a C program (`data/jit_trampoline.c`) whose `main` calls
//! the leaking function through a hand-made function in anonymous executable memory, with a frame
//! pointer and no unwind tables (what a JVM's compiled code looks like to a native unwinder). Under
//! the real `libtally.so`, the leak's stack in `tally report --collapsed` has frames on both sides
//! of it: `main` and its callers below, the trampoline as a bare address, `leak_through_jit`
//! above. (libgcc's walk, and Tally's before the mixed walk, stopped at the trampoline.)
//!
//! Needs `cargo build --release -p tally-alloc` first (see `common::libtally`).

mod common;

use common::*;

#[test]
fn stacks_continue_past_code_without_unwind_tables() {
    let dir = tempfile::tempdir().unwrap();
    let program = compile(&data("jit_trampoline.c"), dir.path(), "jit_trampoline");
    let out = dir.path().join("dumps");
    let output = tally()
        .args(["run", "--conf", "lg_prof_sample:12", "--out"])
        .arg(&out)
        .arg("--")
        .arg(&program)
        .env("TALLY_SO", libtally())
        .env_remove("LD_PRELOAD")
        .env_remove("TALLY_CONF")
        .env_remove("MALLOC_CONF")
        .output()
        .unwrap();
    let printed = String::from_utf8_lossy(&output.stdout);
    assert_eq!(
        output.status.code(),
        Some(3),
        "{printed}{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let returns_to = printed
        .lines()
        .find_map(|l| l.strip_prefix("trampoline return address 0x"))
        .and_then(|hex| usize::from_str_radix(hex.trim(), 16).ok())
        .unwrap_or_else(|| panic!("no trampoline address:\n{printed}"));
    let profile = printed
        .lines()
        .find_map(|l| l.strip_prefix("Heap profile: "))
        .unwrap_or_else(|| panic!("no Heap profile line:\n{printed}"));

    let collapsed = stdout(tally().args(["report", "--collapsed", profile]));
    // The leak's stack, as `root;...;leaf value`: its heaviest line ending in the leak.
    let (stack, bytes) = collapsed
        .lines()
        .filter_map(|l| l.rsplit_once(' '))
        .filter(|(stack, _)| stack.ends_with(";leak_through_jit"))
        .map(|(stack, value)| (stack, value.parse::<f64>().unwrap()))
        .max_by(|a, b| a.1.total_cmp(&b.1))
        .unwrap_or_else(|| panic!("no stack ends in leak_through_jit:\n{collapsed}"));
    // The report names a frame by its call instruction: the return address minus one.
    let trampoline = format!("{:#x}", returns_to - 1);
    let frames: Vec<&str> = stack.split(';').collect();
    assert!(frames.len() >= 4, "the stack ends at the trampoline: {stack}");
    let at = frames.len() - 2;
    assert_eq!(frames[at], trampoline, "the trampoline's frame: {stack}");
    assert_eq!(frames[at - 1], "main", "its caller, found again: {stack}");
    assert!(
        frames[..at - 1].contains(&"__libc_start_call_main"),
        "and main's callers: {stack}"
    );
    assert_close(bytes / (1 << 20) as f64, 4.0, 20.0, "the leak's MiB");
}
