//! Debian's unmodified `jeprof` reads what the writer writes.
//!
//! The test compiles a small C program that prints the addresses of three of its functions and
//! its own `/proc/self/maps`, writes a dump whose stacks point into those functions and whose
//! `MAPPED_LIBRARIES:` section is that map, runs `jeprof --text --show_bytes <exe> <dump>` and
//! checks that it names the functions with the byte counts Tally estimated.
//!
//! Needs `cc`, `perl`, binutils and `jeprof` (Debian: `libjemalloc-dev`). Where one is missing the
//! test says so on stderr and passes: the format's own tests do not depend on it.
#![cfg(feature = "std")]

use std::path::{Path, PathBuf};
use std::process::Command;

use tally_format::{Estimate, Writer};

const PROGRAM: &str = r#"
#include <stdio.h>
__attribute__((noinline)) void tally_alpha(void) { __asm__ volatile("nop; nop; nop; nop"); }
__attribute__((noinline)) void tally_beta(void) { __asm__ volatile("nop; nop; nop; nop"); }
__attribute__((noinline)) void tally_gamma(void) { __asm__ volatile("nop; nop; nop; nop"); }
int main(void) {
  printf("%p %p %p %p\n", (void *)tally_alpha, (void *)tally_beta, (void *)tally_gamma, (void *)main);
  FILE *f = fopen("/proc/self/maps", "r");
  int c;
  while ((c = fgetc(f)) != EOF) putchar(c);
  return 0;
}
"#;

fn have(tool: &str) -> bool {
    Command::new("sh")
        .arg("-c")
        .arg(format!("command -v {tool}"))
        .output()
        .is_ok_and(|o| o.status.success())
}

fn scratch_dir() -> PathBuf {
    let dir = std::env::temp_dir().join(format!("tally-format-jeprof-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// Sums the estimates of samples of the given sizes.
fn samples(sizes: &[u64], period: u64) -> Estimate {
    let mut e = Estimate::ZERO;
    for &z in sizes {
        e.add(Estimate::of_sample(z, period));
    }
    e
}

/// jeprof's flat bytes for `function` from `--text --show_bytes` output (first column).
fn flat_bytes(text: &str, function: &str) -> Option<f64> {
    text.lines()
        .find(|l| l.split_whitespace().last() == Some(function))
        .and_then(|l| l.split_whitespace().next())
        .and_then(|n| n.parse().ok())
}

fn run(exe: &Path, dump: &Path) -> String {
    let out = Command::new("jeprof")
        .arg("--text")
        .arg("--show_bytes")
        .arg(exe)
        .arg(dump)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(out.status.success(), "jeprof failed:\n{stdout}\n{stderr}");
    stdout
}

#[test]
fn jeprof_reads_a_written_dump() {
    for tool in ["cc", "perl", "objdump", "nm", "addr2line", "jeprof"] {
        assert!(
            have(tool),
            "`{tool}` is not installed: apt-get install -y libjemalloc-dev gcc binutils (.ci/run does)"
        );
    }
    let dir = scratch_dir();
    let src = dir.join("prog.c");
    let exe = dir.join("prog");
    std::fs::write(&src, PROGRAM).unwrap();
    let st = Command::new("cc")
        .args(["-g", "-O0", "-o"])
        .arg(&exe)
        .arg(&src)
        .status()
        .unwrap();
    assert!(st.success(), "cc failed");
    let out = Command::new(&exe).output().unwrap();
    assert!(out.status.success());
    let text = String::from_utf8(out.stdout).unwrap();
    let (first, maps) = text.split_once('\n').unwrap();
    let addrs: Vec<usize> = first
        .split_whitespace()
        .map(|a| usize::from_str_radix(a.trim_start_matches("0x"), 16).unwrap())
        .collect();
    let [alpha, beta, gamma, main] = addrs[..] else {
        panic!("bad first line {first}")
    };
    // Return addresses a few bytes into each function (jeprof subtracts 1 from all frames but
    // the first, which stays inside the function).
    let at = |f: usize| f + 6;

    let period: u64 = 1 << 12;
    // alpha: one stack, mixed sizes (the case where back-solving matters).
    let alpha_sizes: Vec<u64> = (0..200).map(|i| if i % 2 == 0 { 24 } else { 40_000 }).collect();
    // beta: two stacks (beta <- main, beta <- gamma <- main).
    let beta1: Vec<u64> = vec![512; 300];
    let beta2: Vec<u64> = vec![100_000; 7];
    // gamma: a leaf with one large sample.
    let gamma_sizes: Vec<u64> = vec![1 << 20];

    let stacks: Vec<(Vec<usize>, Estimate)> = vec![
        (vec![at(alpha), at(main)], samples(&alpha_sizes, period)),
        (vec![at(beta), at(main)], samples(&beta1, period)),
        (vec![at(beta), at(gamma), at(main)], samples(&beta2, period)),
        (vec![at(gamma), at(main)], samples(&gamma_sizes, period)),
    ];

    let mut dump = Vec::new();
    {
        let sink = |b: &[u8]| {
            dump.extend_from_slice(b);
            Ok(())
        };
        let mut w = Writer::new(sink, period).unwrap();
        let mut total = Estimate::ZERO;
        for (_, e) in &stacks {
            total.add(*e);
        }
        w.totals(total.to_written(period), Default::default()).unwrap();
        for (frames, e) in &stacks {
            w.stack_estimate(frames, *e, Estimate::ZERO).unwrap();
        }
        w.maps(maps.as_bytes()).unwrap();
        let _ = w.finish().unwrap();
    }
    let dump_path = dir.join("prog.1.0.m0.heap");
    std::fs::write(&dump_path, &dump).unwrap();

    let report = run(&exe, &dump_path);
    eprintln!("{report}");
    // jeprof's arithmetic on the written integers should give Tally's estimates: exact up to
    // the rounding of the written counts.
    let want_alpha = stacks[0].1.bytes;
    let mut want_beta = stacks[1].1;
    want_beta.add(stacks[2].1);
    let want_gamma = stacks[3].1.bytes;
    for (name, want) in [
        ("tally_alpha", want_alpha),
        ("tally_beta", want_beta.bytes),
        ("tally_gamma", want_gamma),
    ] {
        let got =
            flat_bytes(&report, name).unwrap_or_else(|| panic!("jeprof does not name {name}:\n{report}"));
        assert!(
            (got - want).abs() <= 0.01 * want,
            "{name}: jeprof {got}, Tally {want}"
        );
    }
    // The caller (main) is on every stack: its cumulative column is the total.
    assert!(
        report.lines().any(|l| l.ends_with(" main")),
        "main missing:\n{report}"
    );
    std::fs::remove_dir_all(&dir).ok();
}

/// A dump freshly written by Debian's jemalloc (when it is installed and built with profiling)
/// parses, and its frames fall in its own map.
#[test]
fn a_fresh_jemalloc_dump_parses() {
    let lib = Path::new("/usr/lib/x86_64-linux-gnu/libjemalloc.so.2");
    assert!(
        lib.exists() && have("ls"),
        "{} is not installed: apt-get install -y libjemalloc2 (.ci/run does)",
        lib.display()
    );
    let dir = scratch_dir().join("jemalloc");
    std::fs::create_dir_all(&dir).unwrap();
    let prefix = dir.join("je");
    let out = Command::new("ls")
        .arg("-la")
        .arg("/usr/lib")
        .env("LD_PRELOAD", lib)
        .env(
            "MALLOC_CONF",
            format!(
                "prof:true,prof_final:true,lg_prof_sample:10,prof_prefix:{}",
                prefix.display()
            ),
        )
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let dumps: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap()
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|e| e == "heap"))
        .collect();
    assert_eq!(dumps.len(), 1, "expected one final dump in {}", dir.display());
    let text = std::fs::read(&dumps[0]).unwrap();
    let p = tally_format::parse(&text).unwrap_or_else(|e| panic!("{}:{e}", dumps[0].display()));
    assert_eq!(p.period, 1024);
    assert!(!p.stacks.is_empty() && !p.maps.is_empty());
    for s in &p.stacks {
        assert!(s.frames.iter().all(|&f| p.mapping_for(f).is_some()));
    }
    std::fs::remove_dir_all(&dir).ok();
}
