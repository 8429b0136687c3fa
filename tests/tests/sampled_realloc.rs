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
//! - `unsampled`: a sampled block of a class the thread cache does not keep, grown with sampling
//!   switched off (`prof.active`), becomes an ordinary block where it is: it grows in place at
//!   every class change (it moved at the first before), leaves the profile, and the statistics
//!   count it as an ordinary large block from then on (one large allocation more than the class
//!   changes, as jemalloc counts a resize in place; freed, `stats.allocated` falls by its usable
//!   size and ends where it started);
//! - `shrink`: a sampled block of a class the thread cache does not keep, shrunk into a smaller
//!   such class, stays where it is whether its new size is sampled again (the pages past its new
//!   class's go back to the page heap, where the next block that fits takes them) or not (it
//!   becomes an ordinary block, counted as one); the profile holds its new size after the first
//!   shrink and drops it after the second. Both moved the block before.
//! - `interior`: a pointer one page into a sampled block is refused with a message naming the
//!   block, not resized as if a block started there;
//! - `freed`: a sampled block freed before is caught as a double free.

use std::os::unix::process::ExitStatusExt;
use std::process::Command;
use std::time::Duration;

use tally_tests::{compile_c, run_with_conf, Mode, Outcome, ScratchDir};

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

/// A run of one of the program's cases that write profiles to a path prefix; the scratch
/// directory is kept while the test reads.
struct Case {
    _scratch: ScratchDir,
    prefix: std::path::PathBuf,
    out: Outcome,
}

impl Case {
    /// Runs the program's `case`, which must succeed and say so.
    fn run(case: &str) -> Case {
        let scratch = ScratchDir::new(env!("CARGO_TARGET_TMPDIR"), &format!("sampled-realloc-{case}"));
        let exe = compile_c("sampled_realloc.c", scratch.path());
        let prefix = scratch.join("profile");
        let mut cmd = Command::new(&exe);
        cmd.arg(case).arg(&prefix);
        let out = run_with_conf(cmd, Mode::Preloaded, CONF, Duration::from_secs(60));
        out.assert_success();
        assert!(
            out.stdout_text().contains("sampled_realloc: ok"),
            "{}",
            out.dump()
        );
        Case {
            _scratch: scratch,
            prefix,
            out,
        }
    }

    /// The number the program printed as `key` (`key` ends with `=`).
    fn value(&self, key: &str) -> i64 {
        let stdout = self.out.stdout_text();
        let line = stdout.lines().find_map(|line| line.strip_prefix(key));
        line.and_then(|v| v.parse().ok())
            .unwrap_or_else(|| panic!("no {key}\n{}", self.out.dump()))
    }

    /// The `heap_v2` totals of the profile the program dumped to `<prefix>.<suffix>`.
    fn totals(&self, suffix: &str) -> (f64, f64) {
        let path = format!("{}.{suffix}", self.prefix.display());
        let text =
            std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{path}: {e}\n{}", self.out.dump()));
        totals(&text)
    }

    /// Asserts what `finish` printed: freeing the resized block took its usable size off
    /// `stats.allocated`, which ended where it started.
    fn expect_accounted(&self) {
        self.expect("freed_allocated=", self.value("usable="));
        self.expect("left_allocated=", 0);
    }

    /// Asserts that the program's `key` is `want`.
    fn expect(&self, key: &str, want: i64) {
        assert_eq!(self.value(key), want, "{key}\n{}", self.out.dump());
    }
}

#[test]
fn sampled_blocks_resize_move_and_leave_the_profile() {
    let case = Case::run("grow");
    let (live_objects, live_bytes) = case.totals("live");
    let (freed_objects, freed_bytes) = case.totals("freed");
    // Every allocation is sampled, each counting (about) one object of its size.
    assert!(
        (live_objects - freed_objects - 8.0).abs() < 0.01,
        "{live_objects} objects live, {freed_objects} after freeing eight"
    );
    // Sampled blocks of a page or more grew in place while the pages after them were free (the
    // new size's allocation sampled again, as every one is here): before, each class change
    // moved the block.
    let (changes, moved) = (case.value("class_changes="), case.value("moved="));
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
fn a_sampled_block_not_sampled_again_grows_in_place_as_an_ordinary_one() {
    let case = Case::run("unsampled");
    let changes = case.value("class_changes=");
    assert!(changes >= 8, "{changes} class changes\n{}", case.out.dump());
    // Nothing else is allocated meanwhile: the pages after its run stay free.
    case.expect("moved=", 0);
    // Made ordinary (a large allocation of its class), then resized in place at every change.
    case.expect("large_nmalloc=", changes + 1);
    case.expect_accounted();
    // Both blocks sampled before (each one object of its size at this rate), the small one alone
    // after.
    assert_eq!(case.totals("before"), (2.0, 40100.0));
    assert_eq!(case.totals("after"), (1.0, 100.0));
}

#[test]
fn a_sampled_large_block_shrinks_in_place_sampled_again_or_not() {
    let case = Case::run("shrink");
    case.expect("moved=", 0);
    case.expect("tail_reused=", 1);
    // Made ordinary (a large allocation of its class), then resized in place (another).
    case.expect("large_nmalloc=", 2);
    case.expect_accounted();
    // The shrunk block at its new size beside the one after it; then that one alone.
    assert_eq!(case.totals("resampled"), (2.0, 120000.0));
    assert_eq!(case.totals("unsampled"), (1.0, 20000.0));
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
