//! Records the version of the compiler that builds the benchmarks, for their reports; and, when
//! `TALLY_UNWIND_BASE` names a copy of an earlier `profiler/src/cfi.rs`, puts it into
//! `unwind_cost` as a second walker to time against the current one in the same process
//! (`benches/run-unwind-cost.sh` does this).

use std::process::Command;

fn main() {
    let rustc = std::env::var("RUSTC").unwrap_or_else(|_| "rustc".to_string());
    let version = Command::new(&rustc)
        .arg("-V")
        .output()
        .ok()
        .filter(|output| output.status.success())
        .map(|output| String::from_utf8_lossy(&output.stdout).trim().to_string())
        .unwrap_or_else(|| "unknown".to_string());
    println!("cargo:rustc-env=TALLY_BENCH_RUSTC={version}");
    println!("cargo:rerun-if-env-changed=RUSTC");
    println!("cargo:rerun-if-changed=build.rs");

    // `unwind_cost` builds the profiler's `cfi.rs` into itself too (`cfi-this`), so that it and
    // an earlier one (`cfi-base`, when `TALLY_UNWIND_BASE` names a copy) are compiled alike.
    println!("cargo::rustc-check-cfg=cfg(unwind_base)");
    println!("cargo:rerun-if-env-changed=TALLY_UNWIND_BASE");
    println!("cargo:rerun-if-changed=../profiler/src/cfi.rs");
    let out = std::path::PathBuf::from(std::env::var("OUT_DIR").unwrap());
    include_module("../profiler/src/cfi.rs", &out.join("cfi_this.rs"));
    if let Ok(path) = std::env::var("TALLY_UNWIND_BASE") {
        println!("cargo:rerun-if-changed={path}");
        include_module(&path, &out.join("cfi_base.rs"));
        println!("cargo:rustc-cfg=unwind_base");
    }
}

/// Copies a module's source for `include!`, which takes no inner attributes: its `//!` docs go.
fn include_module(from: &str, to: &std::path::Path) {
    let source = std::fs::read_to_string(from).unwrap_or_else(|e| panic!("{from}: {e}"));
    let body: String = source
        .lines()
        .filter(|line| !line.starts_with("//!"))
        .map(|line| format!("{line}\n"))
        .collect();
    std::fs::write(to, body).unwrap();
}
