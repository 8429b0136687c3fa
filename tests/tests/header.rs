//! `tally.h` compiles, and a C program linked with `-ltally` (no preload) calls the C API it
//! declares: `malloc_trim` releases the pages of freed blocks, `tally_stats_print("Jab")` prints
//! one JSON object.

use std::process::Command;

use tally_tests::{libtally_so, require_tool, workspace_root, ScratchDir};

#[test]
fn header_declares_the_c_api() {
    let cc = require_tool("cc", "build-essential");
    let scratch = ScratchDir::new(env!("CARGO_TARGET_TMPDIR"), "header");
    let exe = scratch.join("header");
    let lib_dir = libtally_so().parent().unwrap().to_path_buf();
    let status = Command::new(cc)
        .args(["-std=c11", "-Wall", "-Wextra", "-Werror", "-o"])
        .arg(&exe)
        .arg(tally_tests::program("header.c"))
        .arg("-I")
        .arg(workspace_root().join("allocator/include"))
        .arg("-L")
        .arg(&lib_dir)
        .arg("-ltally")
        .arg(format!("-Wl,-rpath,{}", lib_dir.display()))
        .status()
        .unwrap();
    assert!(status.success(), "compiling against tally.h failed");
    let out = Command::new(&exe)
        .env_remove("LD_PRELOAD")
        .env_remove("TALLY_CONF")
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stdout}\n{stderr}");
    assert!(stdout.contains("released=1"), "{stdout}");
    let json = stderr
        .lines()
        .find(|l| l.starts_with("{\"tally\":"))
        .expect("one JSON line");
    assert!(json.contains("\"allocated\":") && json.ends_with("}}"), "{json}");
    assert!(
        !json.contains("\"classes\"") && !json.contains("\"arenas\""),
        "'a' and 'b' leave the tables out"
    );
}
