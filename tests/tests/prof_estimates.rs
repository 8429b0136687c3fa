//! The profiler's estimates against known truth, read by Debian's unmodified `jeprof`:
//! `programs/sites.c` keeps 100 MiB live from `site_a` (mixed sizes), 10 MiB from `site_b`, and
//! allocates and frees 1 GiB from `site_c`. Under `LD_PRELOAD=libtally.so` at the default
//! sampling rate (`lg_prof_sample:19`, 512 KiB) the final profile must give, through
//! `jeprof --text`: `site_a` first, A and B within 10% of the truth, C under 1% of live bytes;
//! and with `prof_accum:true`, C's cumulative bytes within 10% of 1 GiB.

use std::path::Path;
use std::process::Command;

use tally_tests::{compile_c, libtally_so, require_tool, ScratchDir};

const MIB: f64 = 1024.0 * 1024.0;

/// Runs sites.c under Tally with `conf` and returns the final profile's path.
fn profile(exe: &Path, dir: &Path, conf: &str) -> std::path::PathBuf {
    let prefix = dir.join("prof");
    let out = Command::new(exe)
        .env("LD_PRELOAD", libtally_so())
        .env(
            "TALLY_CONF",
            format!(
                "prof:true,prof_final:true,prof_prefix:{},{conf}",
                prefix.display()
            ),
        )
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(String::from_utf8_lossy(&out.stdout).contains(": ok"));
    let dump = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .find(|p| p.to_string_lossy().ends_with(".f.heap"))
        .expect("a final profile (.f.heap)");
    dump
}

/// `jeprof --text --show_bytes` rows: (flat bytes, cum bytes, function), in jeprof's order.
fn jeprof_rows(exe: &Path, dump: &Path, extra: &[&str]) -> Vec<(f64, f64, String)> {
    let out = Command::new(require_tool("jeprof", "libjemalloc-dev"))
        .args(["--text", "--show_bytes"])
        .args(extra)
        .arg(exe)
        .arg(dump)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "jeprof failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|line| {
            let f: Vec<&str> = line.split_whitespace().collect();
            if f.len() < 6 || !f[1].ends_with('%') {
                return None;
            }
            Some((f[0].parse().ok()?, f[3].parse().ok()?, f[5].to_string()))
        })
        .collect()
}

fn row<'a>(rows: &'a [(f64, f64, String)], name: &str) -> Option<&'a (f64, f64, String)> {
    rows.iter().find(|r| r.2 == name)
}

#[test]
fn live_estimates_within_ten_percent_and_jeprof_names_site_a_first() {
    let scratch = ScratchDir::new(env!("CARGO_TARGET_TMPDIR"), "prof-estimates");
    let exe = compile_c("sites.c", scratch.path());
    let dir = scratch.subdir("live");
    let dump = profile(&exe, &dir, "");
    let rows = jeprof_rows(&exe, &dump, &[]);
    assert_eq!(
        rows.first().map(|r| r.2.as_str()),
        Some("site_a"),
        "jeprof's first row: {rows:?}"
    );
    let total: f64 = rows.iter().map(|r| r.0).sum();
    let a = row(&rows, "site_a").expect("site_a").0;
    let b = row(&rows, "site_b").expect("site_b").0;
    let c = row(&rows, "site_c").map_or(0.0, |r| r.0);
    eprintln!(
        "live: site_a {:.1} MiB (truth 100), site_b {:.1} MiB (truth 10), site_c {:.3} MiB of {:.1} MiB",
        a / MIB,
        b / MIB,
        c / MIB,
        total / MIB
    );
    assert!((a / (100.0 * MIB) - 1.0).abs() < 0.10, "site_a: {} MiB", a / MIB);
    assert!((b / (10.0 * MIB) - 1.0).abs() < 0.10, "site_b: {} MiB", b / MIB);
    assert!(c < 0.01 * total, "site_c holds {} of {} live bytes", c, total);
    // site_a's share of what the program holds (110 MiB plus start-up), within 10% of the truth.
    let share = a / total;
    assert!(
        (share / (100.0 / 110.0) - 1.0).abs() < 0.10,
        "site_a's share {share}"
    );
}

#[test]
fn cumulative_estimate_of_site_c_within_ten_percent() {
    let scratch = ScratchDir::new(env!("CARGO_TARGET_TMPDIR"), "prof-accum");
    let exe = compile_c("sites.c", scratch.path());
    let dir = scratch.subdir("accum");
    let dump = profile(&exe, &dir, "prof_accum:true");
    let rows = jeprof_rows(&exe, &dump, &["--alloc_space"]);
    let c = row(&rows, "site_c").expect("site_c in the alloc_space view").0;
    eprintln!("cumulative: site_c {:.1} MiB (truth 1024)", c / MIB);
    assert!(
        (c / (1024.0 * MIB) - 1.0).abs() < 0.10,
        "site_c allocated {} MiB",
        c / MIB
    );
    // Live bytes are unaffected by prof_accum.
    let live = jeprof_rows(&exe, &dump, &[]);
    assert_eq!(live.first().map(|r| r.2.as_str()), Some("site_a"));
}

/// Whichever entry point a program allocates through, jeprof names the caller: every `via_*`
/// function of `programs/entry_points.c` has its own row, and no row is an allocator-internal
/// function.
#[test]
fn jeprof_names_the_caller_of_every_entry_point() {
    let scratch = ScratchDir::new(env!("CARGO_TARGET_TMPDIR"), "prof-entry-points");
    let exe = compile_c("entry_points.c", scratch.path());
    let dir = scratch.subdir("profiles");
    let dump = profile(&exe, &dir, "lg_prof_sample:12");
    let rows = jeprof_rows(&exe, &dump, &[]);
    for f in [
        "via_malloc",
        "via_calloc",
        "via_realloc",
        "via_posix_memalign",
        "via_aligned_alloc",
        "via_memalign",
    ] {
        let r = row(&rows, f).unwrap_or_else(|| panic!("{f} has no row: {rows:?}"));
        // 4096 blocks of about 1 KiB each.
        assert!(r.0 > 3.0 * MIB && r.0 < 6.0 * MIB, "{f}: {} bytes", r.0);
    }
    for r in &rows {
        assert!(!r.2.starts_with("tally::"), "an allocator-internal row: {r:?}");
    }
}
