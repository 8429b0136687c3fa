//! `realloc` of sampled blocks under `LD_PRELOAD=libtally.so` with every allocation sampled
//! (`prof:true,lg_prof_sample:0`), `programs/sampled_realloc.c`:
//!
//! - `grow`: a block with another right after it moves when it grows past its run, its bytes and
//!   its neighbour's intact; blocks of 100 B to 300 KB stay where they are when resized within
//!   their class, and grow in place (sampled again) past several classes a few bytes at a time
//!   while the pages after them are free, at most a quarter of the class changes moving them,
//!   their bytes checked after every step; all leave the profile when freed: the `heap_v2`
//!   totals of a profile dumped with them held and one dumped after they were freed differ by
//!   exactly those blocks (the program's first allocation, which starts Tally, draws the first
//!   distance and is not sampled itself);
//! - `interior`: a pointer one page into a sampled block is refused with a message naming the
//!   block, not resized as if a block started there;
//! - `freed`: a sampled block freed before is caught as a double free.

use std::os::unix::process::ExitStatusExt;
use std::process::Command;
use std::time::Duration;

use tally_tests::{compile_c, run_with_conf, Mode, ScratchDir};

const CONF: &str = "prof:true,lg_prof_sample:0";

/// The `t*` totals of a `heap_v2` profile: (objects, bytes).
fn totals(profile: &str) -> (f64, f64) {
    let line = profile
        .lines()
        .nth(1)
        .filter(|line| line.trim_start().starts_with("t*:"))
        .unwrap_or_else(|| panic!("no t* line second in the profile:\n{profile}"));
    let fields: Vec<f64> = line
        .trim_start()
        .trim_start_matches("t*:")
        .split([':', '[', ']'])
        .filter_map(|field| field.trim().parse().ok())
        .collect();
    (fields[0], fields[1])
}

#[test]
fn sampled_blocks_resize_move_and_leave_the_profile() {
    let scratch = ScratchDir::new(env!("CARGO_TARGET_TMPDIR"), "sampled-realloc");
    let exe = compile_c("sampled_realloc.c", scratch.path());
    let prefix = scratch.join("profile");
    let mut cmd = Command::new(&exe);
    cmd.arg("grow").arg(&prefix);
    let out = run_with_conf(cmd, Mode::Preloaded, CONF, Duration::from_secs(60));
    out.assert_success();
    let stdout = out.stdout_text();
    assert!(stdout.contains("sampled_realloc: ok"), "{}", out.dump());
    let read = |suffix: &str| {
        let path = format!("{}.{suffix}", prefix.display());
        std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{path}: {e}\n{}", out.dump()))
    };
    let (live_objects, live_bytes) = totals(&read("live"));
    let (freed_objects, freed_bytes) = totals(&read("freed"));
    // Every allocation is sampled, each counting (about) one object of its size.
    assert!(
        (live_objects - freed_objects - 8.0).abs() < 0.01,
        "{live_objects} objects live, {freed_objects} after freeing eight"
    );
    // Sampled blocks of a page or more grew in place while the pages after them were free (the
    // new size's allocation sampled again, as every one is here): before, each class change
    // moved the block.
    let value = |key: &str| -> usize {
        let line = stdout.lines().find_map(|line| line.strip_prefix(key));
        line.and_then(|v| v.parse().ok())
            .unwrap_or_else(|| panic!("no {key}\n{}", out.dump()))
    };
    let (changes, moved) = (value("class_changes="), value("moved="));
    assert!(
        changes >= 20 && moved * 4 < changes,
        "{moved} of {changes} class changes moved the block"
    );
    // The six grew to three times 100 + 3000 + 20000 + 30000 + 70000 + 300000 bytes. A sample
    // keeps the size its block was last moved at (a resize within the class leaves it), and
    // classes lie at most a quarter apart: the sizes that left the profile add up to more than
    // twice the first ones, and no more than three times (plus the last step).
    let first = (100 + 3000 + 20000 + 30000 + 70000 + 300000) as f64;
    // The two side by side: one of 20000 bytes, one moved to 50000.
    let gone = live_bytes - freed_bytes - 70000.0;
    assert!(
        gone > 2.0 * first && gone <= 3.1 * first,
        "{gone} bytes left the profile, want between {} and {}",
        2.0 * first,
        3.1 * first
    );
}

#[test]
fn an_interior_or_freed_sampled_block_is_refused() {
    let scratch = ScratchDir::new(env!("CARGO_TARGET_TMPDIR"), "sampled-realloc-bad");
    let exe = compile_c("sampled_realloc.c", scratch.path());
    for (case, message) in [
        ("interior", "inside a sampled block at 0x"),
        ("freed", "double free of 0x"),
    ] {
        let mut cmd = Command::new(&exe);
        cmd.arg(case);
        let out = run_with_conf(cmd, Mode::Preloaded, CONF, Duration::from_secs(60));
        assert_eq!(
            out.status.signal(),
            Some(6),
            "{case}: want SIGABRT\n{}",
            out.dump()
        );
        let stderr = out.stderr_text();
        assert!(stderr.contains("realloc()"), "{case}\n{}", out.dump());
        assert!(
            stderr.contains(message),
            "{case}: want {message:?}\n{}",
            out.dump()
        );
        assert!(
            !stderr.contains("sampled_realloc: FAILED"),
            "{case}\n{}",
            out.dump()
        );
    }
}
