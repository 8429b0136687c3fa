//! The JVM under Tally: javac compiles a multithreaded program to identical class files, and
//! the program (four threads building strings, GZIP and Deflater/Inflater round trips, >= 3 s)
//! prints the same checksums and exits the same way as without Tally.
//!
//! The JVM is the hardest common LD_PRELOAD client: dozens of native threads (GC, JIT compiler,
//! workers) allocate concurrently from C++ code, zlib state lives in malloc'ed memory, and
//! thread-local storage set-up and `dlopen` of its own libraries call malloc early.

use std::process::Command;
use std::time::Duration;
use tally_tests::{
    assert_same_behaviour, program, require_tool, run, run_both, Mode, ScratchDir, DEFAULT_TIMEOUT,
};

const JDK: &str = "default-jdk (or openjdk-17-jdk-headless)";

#[test]
fn javac_and_multithreaded_java_program_run_identically_under_tally() {
    let javac = require_tool("javac", JDK);
    let java = require_tool("java", JDK);
    let source = program("Workload.java");
    let scratch = ScratchDir::new(env!("CARGO_TARGET_TMPDIR"), "java");

    // javac is itself a Java program: compile once per mode and compare the class files.
    let mut class_files = Vec::new();
    let mut compiles = Vec::new();
    for mode in Mode::BOTH {
        let out = scratch.subdir(&format!("classes-{}", mode.name()));
        let mut cmd = Command::new(&javac);
        cmd.arg("-d").arg(&out).arg(&source).env("LC_ALL", "C");
        let outcome = run(cmd, mode, DEFAULT_TIMEOUT);
        outcome.assert_success();
        let bytes = std::fs::read(out.join("Workload.class")).expect("javac wrote no class file");
        class_files.push(bytes);
        compiles.push(outcome);
    }
    assert_same_behaviour(&compiles[0], &compiles[1]);
    assert!(
        class_files[0] == class_files[1],
        "javac under Tally produced a different Workload.class"
    );
    compiles[1].assert_used_tally();

    let classes = scratch.join("classes-plain");
    let (plain, preloaded) = run_both(
        || {
            let mut cmd = Command::new(&java);
            cmd.args(["-Xmx256m", "-cp"])
                .arg(&classes)
                .arg("Workload")
                .current_dir(scratch.path())
                .env("LC_ALL", "C")
                .env_remove("JAVA_TOOL_OPTIONS")
                .env_remove("_JAVA_OPTIONS");
            cmd
        },
        DEFAULT_TIMEOUT,
    );
    let stdout = plain.stdout_text();
    assert!(
        stdout.ends_with("ok\n") && stdout.matches("cycle checksum").count() == 4,
        "unexpected output from the plain JVM run:\n{stdout}"
    );
    assert!(
        preloaded.elapsed >= Duration::from_secs(3),
        "the preloaded JVM run finished in {:.2?}; the workload must run at least 3 s",
        preloaded.elapsed
    );
    eprintln!(
        "java: plain {:.2?}, preloaded {:.2?}",
        plain.elapsed, preloaded.elapsed
    );
}
