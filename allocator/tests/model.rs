//! Random sequences of malloc/calloc/realloc/free/aligned allocations, checked against a shadow
//! model: contents survive realloc, alignment is honoured, the usable size covers the request,
//! and no two live blocks overlap.

use std::collections::BTreeMap;
use std::ffi::c_void;

use proptest::prelude::*;
use proptest::strategy::ValueTree;
use tally::api;

#[derive(Clone, Debug)]
enum Op {
    Malloc(usize),
    Calloc(usize, usize),
    Aligned(usize, u32),
    PosixMemalign(usize, u32),
    Realloc(usize, usize),
    Free(usize),
}

/// Sizes weighted towards small blocks, with large and huge ones mixed in.
fn size() -> impl Strategy<Value = usize> {
    prop_oneof![
        8 => 0usize..=256,
        4 => 257usize..=16 * 1024,
        2 => 16 * 1024usize..=512 * 1024,
        1 => 512 * 1024usize..=5 * 1024 * 1024,
    ]
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        6 => size().prop_map(Op::Malloc),
        1 => (0usize..64, size()).prop_map(|(n, s)| Op::Calloc(n, s / 64 + 1)),
        1 => (size(), 0u32..=21).prop_map(|(s, a)| Op::Aligned(s, a)),
        1 => (size(), 3u32..=16).prop_map(|(s, a)| Op::PosixMemalign(s, a)),
        4 => (any::<usize>(), size()).prop_map(|(i, s)| Op::Realloc(i, s)),
        5 => any::<usize>().prop_map(Op::Free),
    ]
}

struct Live {
    size: usize,
    align: usize,
    seed: u8,
}

/// The shadow model: live blocks by address.
#[derive(Default)]
struct Model {
    blocks: BTreeMap<usize, Live>,
}

fn pattern(seed: u8, i: usize) -> u8 {
    seed.wrapping_add((i as u8).wrapping_mul(31)) ^ (i >> 8) as u8
}

fn fill(p: *mut u8, size: usize, seed: u8) {
    // SAFETY: `p` is a live block of at least `size` bytes.
    let bytes = unsafe { std::slice::from_raw_parts_mut(p, size) };
    for (i, b) in bytes.iter_mut().enumerate() {
        *b = pattern(seed, i);
    }
}

fn check(p: *mut u8, size: usize, seed: u8) {
    // SAFETY: `p` is a live block of at least `size` bytes.
    let bytes = unsafe { std::slice::from_raw_parts(p, size) };
    for (i, &b) in bytes.iter().enumerate() {
        assert_eq!(b, pattern(seed, i), "block {p:p} byte {i} of {size} changed");
    }
}

impl Model {
    fn add(&mut self, p: *mut c_void, size: usize, align: usize, seed: u8, zeroed: bool) {
        assert!(!p.is_null(), "allocation of {size} bytes failed");
        let p = p as *mut u8;
        let addr = p as usize;
        assert_eq!(addr % align, 0, "{p:p} not aligned to {align}");
        let usable = api::malloc_usable_size(p.cast());
        assert!(usable >= size, "usable {usable} < requested {size}");
        // No overlap with the live neighbours on either side.
        if let Some((&prev, live)) = self.blocks.range(..=addr).next_back() {
            let prev_end = prev + api::malloc_usable_size(prev as *mut c_void).max(live.size);
            assert!(prev_end <= addr, "{p:p} overlaps block at {prev:#x}");
        }
        if let Some((&next, _)) = self.blocks.range(addr..).next() {
            assert!(
                addr + usable <= next,
                "{p:p}+{usable} overlaps block at {next:#x}"
            );
        }
        if zeroed {
            // SAFETY: live block of `size` bytes.
            let bytes = unsafe { std::slice::from_raw_parts(p, size) };
            assert!(bytes.iter().all(|&b| b == 0), "calloc block {p:p} not zeroed");
        }
        fill(p, size, seed);
        self.blocks.insert(addr, Live { size, align, seed });
    }

    fn nth(&self, i: usize) -> Option<usize> {
        if self.blocks.is_empty() {
            None
        } else {
            self.blocks.keys().nth(i % self.blocks.len()).copied()
        }
    }

    fn apply(&mut self, op: &Op, step: usize) {
        let seed = step as u8;
        match *op {
            Op::Malloc(size) => self.add(api::malloc(size), size, 8, seed, false),
            Op::Calloc(n, size) => self.add(api::calloc(n, size), n * size, 8, seed, true),
            Op::Aligned(size, lg) => {
                let align = 1usize << lg;
                self.add(api::aligned_alloc(align, size), size, align, seed, false)
            }
            Op::PosixMemalign(size, lg) => {
                let align = 1usize << lg;
                let mut p = std::ptr::null_mut();
                // SAFETY: `p` is a valid out-pointer.
                assert_eq!(unsafe { api::posix_memalign(&mut p, align, size) }, 0);
                self.add(p, size, align, seed, false)
            }
            Op::Realloc(i, size) => {
                let Some(addr) = self.nth(i) else { return };
                let live = self.blocks.remove(&addr).unwrap();
                check(addr as *mut u8, live.size, live.seed);
                // SAFETY: `addr` is a live block from the model, given up to realloc.
                let q = unsafe { api::realloc(addr as *mut c_void, size) };
                if size == 0 {
                    assert!(q.is_null(), "realloc(p, 0) must free and return null");
                    return;
                }
                assert!(!q.is_null());
                check(q as *mut u8, live.size.min(size), live.seed);
                // Alignment is only promised for what malloc gives.
                let keep = (live.size.min(size), live.seed);
                self.add_resized(q, size, keep);
                let _ = live.align;
            }
            Op::Free(i) => {
                let Some(addr) = self.nth(i) else { return };
                let live = self.blocks.remove(&addr).unwrap();
                check(addr as *mut u8, live.size, live.seed);
                // SAFETY: `addr` is a live block from the model.
                unsafe { api::free(addr as *mut c_void) };
            }
        }
    }

    /// Records a block that realloc produced, whose first `kept.0` bytes carry seed `kept.1`.
    fn add_resized(&mut self, q: *mut c_void, size: usize, kept: (usize, u8)) {
        let (kept_len, seed) = kept;
        // Rewrite the whole block with the old seed so later checks cover all of it.
        let p = q as *mut u8;
        check(p, kept_len, seed);
        self.add(q, size, 8, seed, false);
    }

    fn clear(&mut self) {
        for (addr, live) in std::mem::take(&mut self.blocks) {
            check(addr as *mut u8, live.size, live.seed);
            // SAFETY: live block from the model.
            unsafe { api::free(addr as *mut c_void) };
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

    #[test]
    fn random_sequences_match_the_model(ops in proptest::collection::vec(op(), 1..300)) {
        let mut model = Model::default();
        for (step, op) in ops.iter().enumerate() {
            model.apply(op, step);
        }
        model.clear();
    }
}

#[test]
fn a_long_sequence_matches_the_model() {
    let mut runner = proptest::test_runner::TestRunner::deterministic();
    let ops = proptest::collection::vec(op(), 20_000)
        .new_tree(&mut runner)
        .unwrap()
        .current();
    let mut model = Model::default();
    for (step, op) in ops.iter().enumerate() {
        model.apply(op, step);
    }
    model.clear();
}

/// The long sequence again in child processes, under options that send blocks through the other
/// paths: no thread caches, junk and zero filling, no cached classes, immediate purging, one arena.
#[test]
fn the_model_holds_under_other_options() {
    for conf in [
        "tcache:false",
        "junk:true",
        "zero:true",
        "tcache_max:0",
        "dirty_decay_ms:0",
        "narenas:1",
    ] {
        let out = std::process::Command::new(std::env::current_exe().unwrap())
            .args(["--exact", "a_long_sequence_matches_the_model", "--test-threads=1"])
            .env("TALLY_CONF", conf)
            .output()
            .unwrap();
        assert!(
            out.status.success() && String::from_utf8_lossy(&out.stdout).contains("1 passed"),
            "{conf}:\n{}\n{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
}
