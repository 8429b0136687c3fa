//! The Criterion micro-benchmarks of the Rust `GlobalAlloc` path: what each benchmark does, the
//! variants (allocator and profiler setting) they run under, and Criterion's settings (see
//! `docs/benchmarks.md`).
//!
//! # Where the pieces live
//!
//! A binary has one `#[global_allocator]`, so each variant is one `[[bench]]` target of the
//! package `tally-criterion` (`benches/criterion/`), `benches/criterion_<variant>.rs`: a few lines
//! that install the allocator, switch its profiler on or check that it is off, and call the
//! Criterion glue the targets share, `benches/driver/mod.rs`. (Why a package of its own: see its
//! `Cargo.toml`.) Criterion is a dev-dependency there, which only those targets can use, so this
//! module holds no Criterion types: each workload is a plain function of an iteration count that
//! calls the global allocator, and the driver times it with `Bencher::iter_custom`. So this
//! library, the `micro_*` binaries and `criterion_table` build without Criterion, and
//! `cargo test` runs the workloads.
//!
//! # Benchmarks
//!
//! A benchmark's Criterion id is `<variant>/<workload>/<parameter>`, e.g.
//! `tally+prof/alloc_free/16`; `<workload>/<parameter>` is its row in the comparison table and is
//! the same under every variant. Criterion reports the time of one iteration:
//!
//! | benchmark             | one iteration                                                     |
//! |-----------------------|-------------------------------------------------------------------|
//! | `alloc_free/<size>`   | `alloc`, write a byte, `dealloc` (the pair of [`crate::micro`])   |
//! | `batch64/<size>`      | 64 `alloc`s, each written, then 64 `dealloc`s in allocation order |
//! | `realloc_grow/<size>` | `alloc` 16 bytes, `realloc` to 32, 64, … `<size>` writing the last byte each time, `dealloc` |
//! | `vec_push/1000`       | push 1000 `u64`s on an empty `Vec` (which grows by doubling), drop it |
//! | `vec_string/1000`     | collect 1000 short `String`s (1-25 bytes) into a `Vec`, drop it |
//! | `btree_map/1000`      | insert 1000 scattered keys into a `BTreeMap<u64, u64>`, drop it  |
//!
//! Block sizes are [`SIZES`] with alignment 8; `realloc_grow` starts at 64, since a block that
//! starts at 16 bytes does not grow to 16.
//!
//! # Keeping the optimizer out
//!
//! As in [`crate::micro`] (whose loops `alloc_free` and `batch64` are): every size passes through
//! [`black_box`] on every call, every block gets a byte written and its pointer passed through
//! [`black_box`] before it is freed, and so do each collection's elements and the finished
//! collection. LLVM can then neither delete an allocation nor hoist a size-class lookup out of
//! the loop. Each workload is an `#[inline(never)]` loop over the iteration count, called once per
//! Criterion sample: the timing adds one call per sample, not one per iteration.
//!
//! # Variants
//!
//! | variant        | target                   | global allocator and profiler                      |
//! |----------------|--------------------------|----------------------------------------------------|
//! | `system`       | `criterion_system`       | `std::alloc::System` (glibc malloc), the baseline of the ratios |
//! | `tally`        | `criterion_tally`        | `tally::Tally`, profiler off (`prof:false`, the default); refuses to run if `TALLY_CONF` or `MALLOC_CONF` turn it on |
//! | `tally+prof`   | `criterion_tally_prof`   | `tally::Tally` with `prof:true` (default rate, `lg_prof_sample:19`): the target runs itself again with `prof:true` added to `TALLY_CONF` unless the profiler is already on |
//! | `mimalloc`     | `criterion_mimalloc`     | `mimalloc::MiMalloc`                               |
//! | `jemalloc`     | `criterion_jemalloc`     | `tikv_jemallocator::Jemalloc` (no profiler built)  |
//! | `stoolap`      | `criterion_stoolap`      | `stoolap_jemalloc::Jemalloc::new()`: profiler never activated |
//! | `stoolap+prof` | `criterion_stoolap_prof` | `Jemalloc::new().with_profiling()`: sampling from the first allocation, mean interval 512 KiB |
//!
//! Both profilers sample once per 512 KiB allocated on average, so the two `+prof` columns pay
//! for the same number of samples.

use std::alloc::{handle_alloc_error, realloc, Layout};
use std::collections::BTreeMap;
use std::hint::black_box;
use std::time::Duration;

use crate::micro::{self, ALIGN};

/// Block sizes of `alloc_free`, `batch64` and `realloc_grow`, in bytes (those of the malloc/free
/// pair micro-benchmark).
pub const SIZES: [usize; 7] = micro::SIZES;

/// Elements per collection in `vec_push`, `vec_string` and `btree_map`.
pub const ELEMENTS: usize = 1000;

/// Size a `realloc_grow` block starts at.
const GROW_FROM: usize = 16;

/// Criterion's warm-up time per benchmark (its command line's `--warm-up-time` overrides it).
pub const WARM_UP: Duration = Duration::from_millis(300);

/// Criterion's measurement time per benchmark (`--measurement-time`; with `--quick`, the most a
/// benchmark may take).
pub const MEASUREMENT: Duration = Duration::from_secs(1);

/// Criterion's samples per benchmark (`--sample-size`; at least 10).
pub const SAMPLE_SIZE: usize = 20;

/// The variants in run and column order; `criterion_<name with + as _>` is each one's target.
pub const VARIANTS: [&str; 7] = [
    "system",
    "tally",
    "tally+prof",
    "mimalloc",
    "jemalloc",
    "stoolap",
    "stoolap+prof",
];

/// The variant the ratios are taken against.
pub const BASELINE: &str = "system";

/// Pairs of variants that differ only by the profiler: (off, on).
pub const PROFILED: [(&str, &str); 2] = [("tally", "tally+prof"), ("stoolap", "stoolap+prof")];

/// The allocator of a variant (the variant without `+prof`), as [`crate::micro_report::ALLOCATORS`]
/// names it.
pub fn allocator_of(variant: &str) -> &str {
    variant.strip_suffix("+prof").unwrap_or(variant)
}

/// What each variant is, for the report's legend.
pub fn describe(variant: &str) -> &'static str {
    match variant {
        "system" => "`std::alloc::System` (glibc malloc)",
        "tally" => "`tally::Tally`, profiler off (`prof:false`)",
        "tally+prof" => "`tally::Tally` with `TALLY_CONF=prof:true` (default `lg_prof_sample:19`)",
        "mimalloc" => "`mimalloc::MiMalloc` (crate `mimalloc`)",
        "jemalloc" => "`tikv_jemallocator::Jemalloc` (crate `tikv-jemallocator`)",
        "stoolap" => "`stoolap_jemalloc::Jemalloc::new()`, profiler never activated",
        "stoolap+prof" => {
            "`stoolap_jemalloc::Jemalloc::new().with_profiling()` (sampling every 512 KiB on average)"
        }
        _ => "unknown",
    }
}

/// An allocation pattern; [`Bench`] gives it its parameter.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Workload {
    /// `alloc`, write a byte, `dealloc`.
    AllocFree,
    /// 64 `alloc`s, then 64 `dealloc`s in allocation order.
    Batch64,
    /// A block grown by doubling with `realloc`.
    ReallocGrow,
    /// `Vec<u64>::push` from empty.
    VecPush,
    /// A `Vec<String>` of short strings.
    VecString,
    /// A `BTreeMap<u64, u64>` built by inserts.
    BTreeMap,
}

impl Workload {
    /// The workload's part of a benchmark id, e.g. `alloc_free`.
    pub fn name(self) -> &'static str {
        match self {
            Workload::AllocFree => "alloc_free",
            Workload::Batch64 => "batch64",
            Workload::ReallocGrow => "realloc_grow",
            Workload::VecPush => "vec_push",
            Workload::VecString => "vec_string",
            Workload::BTreeMap => "btree_map",
        }
    }
}

/// One benchmark: a workload and its parameter, a block size in bytes or an element count.
///
/// Invariant: `parameter` is one of [`SIZES`] for the block workloads (`AllocFree`, `Batch64`,
/// `ReallocGrow`, the last one above [`GROW_FROM`]) and [`ELEMENTS`] for the collections; only
/// [`benches`] makes a `Bench`, so the workloads' unchecked layouts rely on it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Bench {
    workload: Workload,
    parameter: usize,
}

impl Bench {
    /// The workload.
    pub fn workload(&self) -> Workload {
        self.workload
    }

    /// The block size in bytes, or the element count.
    pub fn parameter(&self) -> usize {
        self.parameter
    }

    /// `<workload>/<parameter>`, e.g. `alloc_free/16`: the id without the variant.
    pub fn name(&self) -> String {
        format!("{}/{}", self.workload.name(), self.parameter)
    }

    /// Runs `iterations` iterations (see the module documentation) under the global allocator.
    pub fn run(&self, iterations: u64) {
        let parameter = self.parameter;
        match self.workload {
            Workload::AllocFree => {
                micro::pairs(parameter, iterations);
            }
            Workload::Batch64 => {
                micro::batches(parameter, iterations);
            }
            Workload::ReallocGrow => realloc_grow(parameter, iterations),
            Workload::VecPush => vec_push(parameter, iterations),
            Workload::VecString => vec_string(parameter, iterations),
            Workload::BTreeMap => btree_map(parameter, iterations),
        }
    }
}

/// Every benchmark, in table order: the block workloads by size, then the collections.
pub fn benches() -> Vec<Bench> {
    let blocks = [Workload::AllocFree, Workload::Batch64, Workload::ReallocGrow]
        .into_iter()
        .flat_map(|workload| {
            SIZES
                .into_iter()
                .filter(move |&size| workload != Workload::ReallocGrow || size > GROW_FROM)
                .map(move |parameter| Bench { workload, parameter })
        });
    let collections = [Workload::VecPush, Workload::VecString, Workload::BTreeMap]
        .into_iter()
        .map(|workload| Bench {
            workload,
            parameter: ELEMENTS,
        });
    blocks.chain(collections).collect()
}

/// Runs this program again in place of this process, with `option` appended to the
/// comma-separated options in the environment variable `variable` (so it wins over an earlier
/// setting of the same key), and the same arguments. For an allocator that reads its options
/// once, at the process's first allocation, which comes before `main`.
///
/// # Panics
///
/// If the program was already run again this way (the allocator ignored the option), or cannot
/// be run.
pub fn rerun_with_option(variable: &str, option: &str) -> ! {
    use std::os::unix::process::CommandExt as _;
    const RERUN: &str = "TALLY_BENCH_RERUN";
    let value = match std::env::var(variable) {
        Ok(old) if std::env::var_os(RERUN).is_some() => {
            panic!("{variable}={old:?} did not take effect when this program was run again")
        }
        Ok(old) if !old.trim().is_empty() => format!("{old},{option}"),
        _ => option.to_string(),
    };
    let program = std::env::current_exe().expect("the path of this program");
    let error = std::process::Command::new(&program)
        .args(std::env::args_os().skip(1))
        .env(variable, value)
        .env(RERUN, "1")
        .exec();
    panic!("cannot run {} again: {error}", program.display())
}

// ---------------------------------------------------------------------------------------------
// Workloads

/// `iterations` times: allocates [`GROW_FROM`] bytes, grows the block to `size` by doubling
/// with `realloc` (writing the last byte of each new size), frees it.
#[inline(never)]
fn realloc_grow(size: usize, iterations: u64) {
    for _ in 0..iterations {
        let mut current = black_box(GROW_FROM);
        let mut block = micro::allocate(current);
        while current < size {
            let next = (current * 2).min(size);
            // SAFETY: ALIGN is a power of two and `current` is at most 256 KiB (one of SIZES, by
            // `Bench`'s invariant), so the layout is valid; `block` is live and was allocated or
            // last reallocated with that layout; `next` is non-zero and at most 256 KiB, so
            // rounding it up to ALIGN cannot overflow isize.
            block = unsafe { realloc(block, Layout::from_size_align_unchecked(current, ALIGN), next) };
            if block.is_null() {
                // SAFETY: as above for `next`.
                handle_alloc_error(unsafe { Layout::from_size_align_unchecked(next, ALIGN) });
            }
            // SAFETY: `block` is live and `next` bytes long.
            unsafe { block.add(next - 1).write_volatile(0xA5) };
            block = black_box(block);
            current = next;
        }
        // SAFETY: `block` is live and was last (re)allocated with `current` bytes.
        unsafe { micro::free(block, current) };
    }
}

/// `iterations` times: pushes `count` values on an empty `Vec<u64>`, drops it.
#[inline(never)]
fn vec_push(count: usize, iterations: u64) {
    for _ in 0..iterations {
        let mut values = Vec::new();
        for value in 0..count as u64 {
            values.push(black_box(value));
        }
        black_box(&mut values);
    }
}

/// The strings of `vec_string`, 1 to 25 bytes long.
const WORDS: [&str; 8] = [
    "a",
    "heap",
    "sample",
    "allocator",
    "size class",
    "thread cache",
    "profile at 512 KiB",
    "a somewhat longer string!",
];

/// `iterations` times: collects `count` short strings into a `Vec<String>`, drops it.
#[inline(never)]
fn vec_string(count: usize, iterations: u64) {
    for _ in 0..iterations {
        let strings: Vec<String> = (0..count)
            .map(|index| String::from(black_box(WORDS[index % WORDS.len()])))
            .collect();
        black_box(&strings);
    }
}

/// Multiplier that scatters consecutive integers over `u64` (2^64 / golden ratio, odd, so
/// distinct inputs stay distinct).
const SCATTER: u64 = 0x9E37_79B9_7F4A_7C15;

/// `iterations` times: inserts `count` scattered keys into a `BTreeMap<u64, u64>`, drops it.
/// Scattered keys make inserts split nodes all over the tree, not only at its right edge.
#[inline(never)]
fn btree_map(count: usize, iterations: u64) {
    for _ in 0..iterations {
        let mut map = BTreeMap::new();
        for value in 0..count as u64 {
            map.insert(black_box(value.wrapping_mul(SCATTER)), value);
        }
        black_box(&mut map);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_unique_and_stable() {
        let names: Vec<String> = benches().iter().map(Bench::name).collect();
        let mut sorted = names.clone();
        sorted.sort();
        sorted.dedup();
        assert_eq!(sorted.len(), names.len());
        for expected in [
            "alloc_free/16",
            "alloc_free/262144",
            "batch64/16",
            "realloc_grow/64",
            "realloc_grow/262144",
            "vec_push/1000",
            "vec_string/1000",
            "btree_map/1000",
        ] {
            assert!(names.iter().any(|name| name == expected), "{expected}");
        }
        assert!(!names.iter().any(|name| name == "realloc_grow/16"));
        assert_eq!(names.len(), 3 * SIZES.len() - 1 + 3);
    }

    #[test]
    fn every_benchmark_runs() {
        for bench in benches() {
            bench.run(0);
            bench.run(3);
        }
    }

    #[test]
    fn variants_name_their_allocators() {
        assert_eq!(allocator_of("tally+prof"), "tally");
        assert_eq!(allocator_of("stoolap"), "stoolap");
        for variant in VARIANTS {
            assert_ne!(describe(variant), "unknown", "{variant}");
            assert!(
                crate::micro_report::ALLOCATORS.contains(&allocator_of(variant)),
                "{variant}"
            );
        }
        for (off, on) in PROFILED {
            assert!(VARIANTS.contains(&off) && VARIANTS.contains(&on));
        }
    }

    #[test]
    fn strings_are_short() {
        assert!(WORDS.iter().all(|word| (1..=25).contains(&word.len())));
    }
}
