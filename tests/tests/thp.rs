//! `thp` in a real program: CPython under `LD_PRELOAD` reads the kernel's account of the
//! mappings that hold two of its own buffers (`VmFlags` in `/proc/self/smaps`: `hg` for huge
//! pages wanted, `nh` for refused), a 1 MiB `bytearray` (a large block in an arena's chunk) and a
//! 16 MiB one (a huge block of its own mapping), under Tally's default and jemalloc's settings
//! from either variable.

use std::process::Command;

use tally_tests::{libtally_so, python_interpreter};

/// Prints the advice on the mappings holding a 1 MiB and a 16 MiB buffer.
const SCRIPT: &str = r#"
import ctypes
def advice(buf):
    addr = ctypes.addressof((ctypes.c_char * len(buf)).from_buffer(buf))
    inside = False
    for line in open("/proc/self/smaps"):
        first = line.split()[0] if line.split() else ""
        if "-" in first and not first.endswith(":"):
            lo, hi = (int(x, 16) for x in first.split("-"))
            inside = lo <= addr < hi
        elif inside and line.startswith("VmFlags:"):
            flags = line.split()[1:]
            return "hg" if "hg" in flags else "nh" if "nh" in flags else "-"
    return "unmapped"
small = bytearray(1 << 20)
huge = bytearray(16 << 20)
print("chunk=%s huge=%s" % (advice(small), advice(huge)))
"#;

fn run(var: &str, conf: &str) -> String {
    let out = Command::new(python_interpreter())
        .args(["-c", SCRIPT])
        .env("LD_PRELOAD", libtally_so())
        .env_remove("TALLY_CONF")
        .env_remove("MALLOC_CONF")
        .env(var, conf)
        .output()
        .expect("run python3");
    assert!(out.status.success(), "{var}={conf}: {out:?}");
    assert!(out.stderr.is_empty(), "{var}={conf}: {out:?}");
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

#[test]
fn python_buffers_get_the_advice_of_each_mode() {
    if !std::path::Path::new("/sys/kernel/mm/transparent_hugepage").exists() {
        // A kernel without transparent huge pages refuses every advice; nothing to read back.
        assert_eq!(run("TALLY_CONF", "thp:always"), "chunk=- huge=-");
        return;
    }
    for (var, conf, want) in [
        ("TALLY_CONF", "", "chunk=nh huge=-"),
        ("TALLY_CONF", "thp:default", "chunk=- huge=-"),
        ("MALLOC_CONF", "thp:always", "chunk=hg huge=hg"),
        ("MALLOC_CONF", "thp:never", "chunk=nh huge=nh"),
    ] {
        assert_eq!(run(var, conf), want, "{var}={conf}");
    }
}
