//! gcc under Tally: compiling and linking a C file gives the same diagnostics, the same
//! executable byte for byte, and that executable prints the known output.
//!
//! The gcc driver spawns `cc1`, `as`, `collect2` and `ld`, each a separate process inheriting
//! `LD_PRELOAD`, so this covers several very different allocation profiles (cc1's trees and
//! hash tables, ld's symbol tables) and checks Tally in child processes. A miscompiled or
//! mislinked byte caused by corrupted compiler memory shows up in the binary comparison.

use std::process::Command;
use tally_tests::{
    assert_same_behaviour, program, require_tool, run, Mode, Outcome, ScratchDir, DEFAULT_TIMEOUT,
};

#[test]
fn gcc_compiles_identically_under_tally() {
    let gcc = require_tool("gcc", "gcc (or build-essential)");
    let source = program("compiled.c");
    let expected = std::fs::read_to_string(program("compiled.expected")).expect("expected output");
    let scratch = ScratchDir::new(env!("CARGO_TARGET_TMPDIR"), "gcc");

    let mut runs: Vec<(Outcome, Vec<u8>)> = Vec::new();
    for mode in Mode::BOTH {
        let dir = scratch.subdir(mode.name());
        let mut cmd = Command::new(&gcc);
        cmd.current_dir(&dir)
            .args(["-O2", "-Wall", "-Wextra", "-o", "prog"])
            .arg(&source)
            // Messages in a fixed language and no colour codes.
            .env("LC_ALL", "C")
            .env_remove("GCC_COLORS");
        let compile = run(cmd, mode, DEFAULT_TIMEOUT);
        compile.assert_success();
        let exe = dir.join("prog");
        let binary = std::fs::read(&exe).expect("gcc produced no executable");

        let output = run(Command::new(&exe), Mode::Plain, DEFAULT_TIMEOUT);
        output.assert_success();
        assert_eq!(
            output.stdout_text(),
            expected,
            "program compiled by gcc ({} run) printed wrong output",
            mode.name()
        );
        runs.push((compile, binary));
    }
    let (plain, plain_binary) = &runs[0];
    let (preloaded, preloaded_binary) = &runs[1];
    assert_same_behaviour(plain, preloaded);
    assert!(
        plain_binary == preloaded_binary,
        "gcc under Tally produced a different executable ({} bytes vs {} plain)",
        preloaded_binary.len(),
        plain_binary.len()
    );
    preloaded.assert_used_tally();
    eprintln!(
        "gcc: {} processes reported stats; plain {:.2?}, preloaded {:.2?}",
        preloaded.stats.len(),
        plain.elapsed,
        preloaded.elapsed
    );
}
