//! `tally.h` compiles, and C programs linked with `-ltally` (no preload) call the C API it
//! declares: `malloc_trim` releases the pages of freed blocks, `tally_stats_print("Jab")` prints
//! one JSON object; jemalloc's `*allocx` family keeps its promises.

use std::process::Command;

use tally_tests::{libtally_so, require_tool, workspace_root, ScratchDir};

/// Compiles `programs/<name>.c` against `tally.h`, linked with `-ltally` (no preload), and runs
/// it without Tally's variables.
fn run_against_header(name: &str) -> std::process::Output {
    let cc = require_tool("cc", "build-essential");
    let scratch = ScratchDir::new(env!("CARGO_TARGET_TMPDIR"), name);
    let exe = scratch.join(name);
    let lib_dir = libtally_so().parent().unwrap().to_path_buf();
    let status = Command::new(cc)
        .args(["-std=gnu11", "-O2", "-Wall", "-Wextra", "-Werror", "-o"])
        .arg(&exe)
        .arg(tally_tests::program(&format!("{name}.c")))
        .arg("-I")
        .arg(workspace_root().join("allocator/include"))
        .arg("-L")
        .arg(&lib_dir)
        .arg("-ltally")
        .arg(format!("-Wl,-rpath,{}", lib_dir.display()))
        .status()
        .unwrap();
    assert!(status.success(), "compiling {name}.c against tally.h failed");
    Command::new(&exe)
        .env_remove("LD_PRELOAD")
        .env_remove("TALLY_CONF")
        .output()
        .unwrap()
}

#[test]
fn header_declares_the_c_api() {
    let out = run_against_header("header");
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

/// jemalloc's `*allocx` family (`programs/allocx.c`): for every size up to 64 KiB and every
/// alignment up to a page, `nallocx` agrees with `sallocx` of what `mallocx` gives, blocks are
/// aligned and whole; `MALLOCX_ZERO` blocks are zero even where freed dirty blocks were;
/// `rallocx` keeps contents and alignment and zeroes what it adds; `xallocx` answers with the
/// usable size; `nallocx` of an impossible size is 0.
#[test]
fn the_allocx_family_agrees_with_itself() {
    let out = run_against_header("allocx");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success() && stdout.starts_with("allocx ok "),
        "{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let checks: u64 = stdout["allocx ok ".len()..].trim().parse().unwrap();
    assert!(checks > 10_000, "{checks} checks");
}
