//! Links libgcc's unwinder into `libtally.so` instead of loading `libgcc_s.so.1` beside it.
//!
//! Rust's standard library names `libgcc_s` for unwinding, so every program under
//! `LD_PRELOAD=libtally.so` mapped a fourth library, about 100 KiB of resident memory in a small
//! C program that never unwinds (glibc, jemalloc and mimalloc load none). The cdylib links the
//! static `libgcc_eh.a` whole instead: its definitions take the place of `libgcc_s`'s, the linker's
//! `--as-needed` then drops `libgcc_s` from the needed list, and the version script that exports
//! only Tally's C symbols keeps this private copy of the unwinder hidden from the program's own.
//! When the C compiler does not know `libgcc_eh.a` the link stays as it was.
//!
//! It also names the library `libtally.so.0` (its SONAME): a program linked with `-ltally`
//! records that name, and an installed `libtally.so.0` (a symlink to the versioned file,
//! `scripts/install.sh`, the Debian package) keeps serving it across upgrades. The `0` changes
//! only when the C ABI does (`tally.h`); Cargo still writes the file as `libtally.so`.
//!
//! And it lays out the code so that a program touches one 64 KiB window of it: `hot-text.ld`
//! puts the functions marked `#[link_section = ".text.hot.tally"]` first in `.text`, and
//! `-z max-page-size=0x10000 -z separate-code` start the executable segment at a 64 KiB boundary
//! of the file and of the address space (glibc 2.35 and later map a library whose segments say
//! 64 KiB at an address aligned likewise). The kernel maps a file's pages in 64 KiB windows
//! around each page a program touches, so code spread over the library's 770 KiB made four
//! such windows resident in a small C program (272 KiB), now one (68 KiB).
//! `scripts/check-hot-text.sh` checks it. The same script moves the read-only data no program
//! needs to read after the code, and keeps what every program reads with the dynamic symbols
//! (`src/hot.rs`). Where glibc reads packed relocations (2.36 and later), they are packed, which
//! keeps that data in the same 64 KiB window as the dynamic symbols ([`glibc_has_relr`]).

use std::process::Command;

/// The shared library's SONAME (`scripts/install.sh` and `scripts/build-deb.sh` name the
/// symlink after it).
const SONAME: &str = "libtally.so.0";

fn main() {
    println!("cargo:rerun-if-changed=build.rs");
    println!("cargo:rerun-if-changed=hot-text.ld");
    let target_env = std::env::var("CARGO_CFG_TARGET_ENV").unwrap_or_default();
    let target_os = std::env::var("CARGO_CFG_TARGET_OS").unwrap_or_default();
    if target_os != "linux" || target_env != "gnu" {
        return;
    }
    println!("cargo:rustc-cdylib-link-arg=-Wl,-soname,{SONAME}");
    // The code every program runs in one 64 KiB window (see above).
    let dir = std::env::var("CARGO_MANIFEST_DIR").unwrap_or_else(|_| ".".to_string());
    println!("cargo:rustc-cdylib-link-arg=-Wl,-T,{dir}/hot-text.ld");
    println!("cargo:rustc-cdylib-link-arg=-Wl,-z,max-page-size=0x10000,-z,separate-code");
    if glibc_has_relr() {
        println!("cargo:rustc-cdylib-link-arg=-Wl,-z,pack-relative-relocs");
    }
    let cc = std::env::var("CC").unwrap_or_else(|_| "cc".to_string());
    let Ok(out) = Command::new(cc).arg("-print-file-name=libgcc_eh.a").output() else {
        return;
    };
    let path = String::from_utf8_lossy(&out.stdout).trim().to_string();
    // An unknown file is printed back as its bare name.
    if !out.status.success() || !path.starts_with('/') || !std::path::Path::new(&path).exists() {
        return;
    }
    println!("cargo:rustc-cdylib-link-arg=-Wl,--whole-archive,{path},--no-whole-archive");
}

/// Whether the C library the library is built for reads packed relative relocations (`DT_RELR`,
/// glibc 2.36 and later). Packed, the library's 2200 relocations take 1 KiB instead of 53 KiB in
/// the first segment, so the tables `malloc` reads (the size classes, placed by the compiler in
/// `.rodata`, which follows them) lie in the same 64 KiB window of the file as the dynamic
/// symbols every program reads at load: one window of fault-around resident instead of two. A
/// library built so does not load under an older glibc, so only a native build that finds 2.36
/// or later here packs them.
fn glibc_has_relr() -> bool {
    let host = std::env::var("HOST").unwrap_or_default();
    let target = std::env::var("TARGET").unwrap_or_default();
    if host != target {
        return false;
    }
    let Ok(out) = Command::new("getconf").arg("GNU_LIBC_VERSION").output() else {
        return false;
    };
    let text = String::from_utf8_lossy(&out.stdout);
    let Some(version) = text.trim().strip_prefix("glibc ") else {
        return false;
    };
    let mut parts = version.split('.').map(|p| p.parse::<u32>().unwrap_or(0));
    let (major, minor) = (parts.next().unwrap_or(0), parts.next().unwrap_or(0));
    (major, minor) >= (2, 36)
}
