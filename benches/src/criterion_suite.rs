//! The Criterion micro-benchmarks of the Rust `GlobalAlloc` path: what each benchmark does, the
//! variants (allocator and profiler setting) they run under, and Criterion's settings (see
//! `docs/benchmarks.md`).
//!
//! # Where the pieces live
//!
//! A binary has one `#[global_allocator]`, so each allocator is one `[[bench]]` target of the
//! package `tally-criterion` (`benches/criterion/`), `benches/criterion_<variant>.rs`: a few lines
//! that install the allocator, name the variant (and switch stoolap's profiler on), and call the
//! Criterion glue the targets share, `benches/driver/mod.rs`. Tally's two variants are one
//! target run twice, with and without `prof:true` in `TALLY_CONF`. (Why a package of its own: see its
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
//! | `btree_strings/1000000` | build a `BTreeMap<String, Vec<u8>>` of a million entries (keys: 0 to 999999 as 8 digits, in order; values 16-63 bytes), drop it |
//! | `vec_extend/67108864` | grow a `Vec<u8>` to 64 MiB by `extend_from_slice` of 1 KiB, drop it |
//!
//! Block sizes are [`SIZES`] with alignment 8; `realloc_grow` starts at 64, since a block that
//! starts at 16 bytes does not grow to 16.
//!
//! # Heavy benchmarks
//!
//! The last two are *heavy* ([`Bench::heavy`]): one iteration takes tens to hundreds of
//! milliseconds and tens of MiB, like a program's data structure rather than one call. They run
//! with [`HEAVY_SAMPLE_SIZE`] samples and flat sampling (every sample the same iteration count,
//! one iteration for `btree_strings`), whatever `--sample-size` says, so each takes seconds per
//! variant, not minutes. The driver runs each in a process of its own (the target run again),
//! so that what earlier benchmarks left in the allocator is not counted, and records the
//! process's peak RSS while it runs ([`reset_peak_rss`], [`peak_rss_kib`]) in
//! [`PEAK_RSS_FILE`], which the table reads.
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
//! | `tally`        | `criterion_tally`        | `tally::Tally`, profiler off (`prof:false`, the default) |
//! | `tally+prof`   | `criterion_tally`        | the same program with `prof:true` in `TALLY_CONF` (default rate, `lg_prof_sample:19`), which `benches/run-criterion.sh` adds: the program names its column after the profiler's state, so the two columns are the same code |
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
use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use crate::micro::{self, ALIGN};

/// Block sizes of `alloc_free`, `batch64` and `realloc_grow`, in bytes (those of the malloc/free
/// pair micro-benchmark).
pub const SIZES: [usize; 7] = micro::SIZES;

/// Elements per collection in `vec_push`, `vec_string` and `btree_map`.
pub const ELEMENTS: usize = 1000;

/// Size a `realloc_grow` block starts at.
const GROW_FROM: usize = 16;

/// Entries of the map `btree_strings` builds.
pub const MAP_ENTRIES: usize = 1_000_000;

/// Bytes `vec_extend` grows its vector to: 64 MiB.
pub const VEC_BYTES: usize = 64 << 20;

/// Bytes `vec_extend` appends at a time.
const EXTEND_STEP: usize = 1024;

/// Criterion's samples per heavy benchmark (the least Criterion takes), with flat sampling.
pub const HEAVY_SAMPLE_SIZE: usize = 10;

/// The file in Criterion's directory where the driver appends the peak RSS of each heavy
/// benchmark: lines of `<Unix time>\t<full id>\t<peak RSS in KiB>`, the latest line of an id
/// being its result.
pub const PEAK_RSS_FILE: &str = "peak_rss.tsv";

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
        "tally+prof" => "the same program with `TALLY_CONF=prof:true` (default `lg_prof_sample:19`)",
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
    /// A large `BTreeMap<String, Vec<u8>>` built by inserts.
    BTreeStrings,
    /// A `Vec<u8>` grown by `extend_from_slice`.
    VecExtend,
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
            Workload::BTreeStrings => "btree_strings",
            Workload::VecExtend => "vec_extend",
        }
    }
}

/// One benchmark: a workload and its parameter, a block size in bytes or an element count.
///
/// Invariant: `parameter` is one of [`SIZES`] for the block workloads (`AllocFree`, `Batch64`,
/// `ReallocGrow`, the last one above `GROW_FROM`), [`ELEMENTS`] for the small collections,
/// [`MAP_ENTRIES`] for `BTreeStrings` and [`VEC_BYTES`] for `VecExtend`; only [`benches`] makes
/// a `Bench`, so the workloads' unchecked layouts rely on it.
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

    /// Whether the benchmark is heavy (see the module documentation): few samples, flat
    /// sampling, peak RSS recorded.
    pub fn heavy(&self) -> bool {
        matches!(self.workload, Workload::BTreeStrings | Workload::VecExtend)
    }

    /// `<workload>/<parameter>`, e.g. `alloc_free/16`: the id without the variant.
    pub fn name(&self) -> String {
        format!("{}/{}", self.workload.name(), self.parameter)
    }

    /// Runs `iterations` iterations (see the module documentation) under the global allocator,
    /// at stack phase 0 ([`Bench::run_at_phase`]).
    pub fn run(&self, iterations: u64) {
        self.run_at_phase(iterations, 0);
    }

    /// Runs `iterations` iterations with the workload's frames at stack phase `phase` (taken
    /// modulo [`STACK_PHASES`]): the same offsets from a page boundary in every process that
    /// asks for that phase, whatever address the kernel started its stack at.
    pub fn run_at_phase(&self, iterations: u64, phase: usize) {
        on_stack_phase(phase, || self.run_here(iterations));
    }

    fn run_here(&self, iterations: u64) {
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
            Workload::BTreeStrings => btree_strings(parameter, iterations),
            Workload::VecExtend => vec_extend(parameter, iterations),
        }
    }
}

/// Every benchmark, in table order: the block workloads by size, then the collections, the heavy
/// ones last.
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
    let heavy = [
        Bench {
            workload: Workload::BTreeStrings,
            parameter: MAP_ENTRIES,
        },
        Bench {
            workload: Workload::VecExtend,
            parameter: VEC_BYTES,
        },
    ];
    blocks.chain(collections).chain(heavy).collect()
}

/// Criterion's directory as a benchmark binary finds it (as Criterion does): `$CRITERION_HOME`,
/// else `$CARGO_TARGET_DIR/criterion`, else `criterion` in the target directory the binary is
/// in (`<target>/release/deps/criterion_<variant>-<hash>`).
pub fn criterion_dir_of_bench() -> PathBuf {
    if let Some(home) = std::env::var_os("CRITERION_HOME") {
        return PathBuf::from(home);
    }
    if let Some(target) = std::env::var_os("CARGO_TARGET_DIR") {
        return PathBuf::from(target).join("criterion");
    }
    let exe = std::env::current_exe().expect("the path of this program");
    exe.ancestors().nth(3).map_or_else(
        || PathBuf::from("target/criterion"),
        |target| target.join("criterion"),
    )
}

/// The `main` of the `criterion_once` programs, one per allocator (`program` is the binary's
/// name, for its messages): runs the workloads its arguments name, `<workload>/<parameter>
/// ITERATIONS` pairs, in order, under the global allocator. With several pairs it prints on
/// stderr the time of each pass in ns an iteration to 3 decimals (`<name>: <ns> ns an
/// iteration`), then the peak RSS of the passes (`peak RSS: <KiB> KiB`, [`peak_rss_kib`] since
/// [`reset_peak_rss`] just before the first). A wrong argument is a one-line error, exit 2.
pub fn once_main(program: &str) {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let usage =
        format!("usage: {program} <workload>/<parameter> ITERATIONS [<workload>/<parameter> ITERATIONS ...]");
    if args.is_empty() || !args.len().is_multiple_of(2) {
        eprintln!("{usage}");
        std::process::exit(2);
    }
    let all = benches();
    let mut runs = Vec::new();
    for pair in args.chunks(2) {
        let Some(iterations) = pair[1].parse::<u64>().ok() else {
            eprintln!("{usage}");
            std::process::exit(2);
        };
        let Some(bench) = all.iter().find(|b| b.name() == pair[0]) else {
            eprintln!("{program}: no benchmark {}", pair[0]);
            std::process::exit(2);
        };
        runs.push((bench, iterations));
    }
    let phase = stack_phase_from_env().unwrap_or_else(|e| {
        eprintln!("{program}: {e}");
        std::process::exit(2);
    });
    let several = runs.len() > 1;
    let peak_known = several && reset_peak_rss();
    for (bench, iterations) in runs {
        let start = std::time::Instant::now();
        bench.run_at_phase(iterations, phase);
        if several {
            let ns = start.elapsed().as_nanos() as f64 / iterations.max(1) as f64;
            eprintln!("{}: {ns:.3} ns an iteration", bench.name());
        }
    }
    if peak_known {
        if let Some(kib) = peak_rss_kib() {
            eprintln!("peak RSS: {kib} KiB");
        }
    }
}

/// Makes the process's peak RSS (`VmHWM`) its current RSS, by writing 5 to
/// `/proc/self/clear_refs` (Linux 4.0 and later); false if that failed.
pub fn reset_peak_rss() -> bool {
    std::fs::write("/proc/self/clear_refs", "5").is_ok()
}

/// The process's peak RSS in KiB since it started or since [`reset_peak_rss`]: `VmHWM` in
/// `/proc/self/status`.
pub fn peak_rss_kib() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    status
        .lines()
        .find_map(|line| line.strip_prefix("VmHWM:"))?
        .trim()
        .strip_suffix("kB")?
        .trim()
        .parse()
        .ok()
}

/// Appends the peak RSS of the benchmark `full_id` (`<variant>/<workload>/<parameter>`) to
/// [`PEAK_RSS_FILE`] in `criterion_dir`, stamped with the time now.
///
/// # Errors
///
/// If the file cannot be opened or written.
pub fn record_peak_rss(criterion_dir: &Path, full_id: &str, kib: u64) -> std::io::Result<()> {
    std::fs::create_dir_all(criterion_dir)?;
    let seconds = SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |since| since.as_secs());
    let mut file = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(criterion_dir.join(PEAK_RSS_FILE))?;
    writeln!(file, "{seconds}\t{full_id}\t{kib}")
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

/// The stack phases a run may ask for ([`Bench::run_at_phase`], `criterion_once`'s
/// [`STACK_PHASE_VAR`]).
///
/// The kernel starts each process's stack at a random 16-byte offset within a page (and the
/// environment's size moves it further), and some workloads run at two speeds depending on where
/// their frames fall: `vec_push/1000` took 650 or 850 ns an iteration by the process, under every
/// allocator alike; with address randomization off it followed the environment's length (a
/// variable of 32 or 48 bytes fast, of 0, 16 or 64 slow). So a run puts the workload's frames at
/// a chosen phase instead: the stack aligned to a page, then [`STACK_PHASE_STRIDE`] bytes a
/// phase further down. Eight phases 528 bytes apart take every 16-byte offset within a cache
/// line twice, spread over the page. The runners give every column of a round the same phase,
/// a different one each round, so every allocator meets the same offsets.
pub const STACK_PHASES: usize = 8;
/// Bytes between two stack phases: 33 × 16, so consecutive phases step through a cache line's
/// four 16-byte offsets.
pub const STACK_PHASE_STRIDE: usize = 528;
/// The environment variable that gives `criterion_once` its stack phase (0 if unset).
pub const STACK_PHASE_VAR: &str = "TALLY_BENCH_STACK_PHASE";

/// The padding of phase 0: a stride as well, so that every phase's padded frame has the same
/// shape (with an empty or a 16-byte array the compiler laid phase 0's frame out differently).
const PAD_BASE: usize = STACK_PHASE_STRIDE;

/// Runs `f` at stack phase `phase` modulo [`STACK_PHASES`] and returns what it returns.
pub fn on_stack_phase<R>(phase: usize, f: impl FnOnce() -> R) -> R {
    match phase % STACK_PHASES {
        0 => on_page_aligned_stack::<PAD_BASE, R>(f),
        1 => on_page_aligned_stack::<{ PAD_BASE + STACK_PHASE_STRIDE }, R>(f),
        2 => on_page_aligned_stack::<{ PAD_BASE + 2 * STACK_PHASE_STRIDE }, R>(f),
        3 => on_page_aligned_stack::<{ PAD_BASE + 3 * STACK_PHASE_STRIDE }, R>(f),
        4 => on_page_aligned_stack::<{ PAD_BASE + 4 * STACK_PHASE_STRIDE }, R>(f),
        5 => on_page_aligned_stack::<{ PAD_BASE + 5 * STACK_PHASE_STRIDE }, R>(f),
        6 => on_page_aligned_stack::<{ PAD_BASE + 6 * STACK_PHASE_STRIDE }, R>(f),
        _ => on_page_aligned_stack::<{ PAD_BASE + 7 * STACK_PHASE_STRIDE }, R>(f),
    }
}

/// Runs `f` below a page-aligned frame and `PAD` bytes more.
#[inline(never)]
fn on_page_aligned_stack<const PAD: usize, R>(f: impl FnOnce() -> R) -> R {
    #[repr(align(4096))]
    struct Page(u8);
    let anchor = Page(0);
    black_box(&anchor);
    let r = below_padding::<PAD, R>(f);
    black_box(&anchor.0);
    r
}

/// Runs `f` below a frame of `PAD` bytes (and the function's own few).
#[inline(never)]
fn below_padding<const PAD: usize, R>(f: impl FnOnce() -> R) -> R {
    let pad = [0u8; PAD];
    black_box(&pad);
    let r = f();
    black_box(&pad);
    r
}

/// The stack phase [`STACK_PHASE_VAR`] asks for: 0 when unset, an error for anything but a
/// number below [`STACK_PHASES`].
pub fn stack_phase_from_env() -> Result<usize, String> {
    match std::env::var(STACK_PHASE_VAR) {
        Err(std::env::VarError::NotPresent) => Ok(0),
        Ok(v) => parse_stack_phase(&v),
        Err(e) => Err(format!("{STACK_PHASE_VAR}: {e}")),
    }
}

/// The stack phase `value` of [`STACK_PHASE_VAR`] names, or a one-line error.
fn parse_stack_phase(value: &str) -> Result<usize, String> {
    match value.parse::<usize>() {
        Ok(phase) if phase < STACK_PHASES => Ok(phase),
        _ => Err(format!(
            "{STACK_PHASE_VAR}={value:?}: not a stack phase (0 to {})",
            STACK_PHASES - 1
        )),
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

/// The shortest value of `btree_strings`, in bytes.
const VALUE_MIN: usize = 16;

/// How many lengths the values of `btree_strings` have: 16 to 63 bytes.
const VALUE_LENGTHS: u64 = 48;

/// `iterations` times: builds a `BTreeMap<String, Vec<u8>>` of `count` entries, drops it. Key
/// `i` is `i` in decimal, 8 digits with leading zeros, so the keys come in order and each insert
/// appends at the map's right edge; its value is 16-63 bytes (the length from `i × SCATTER`),
/// filled with `i`'s low byte. (Scattered keys made an iteration take 5.7 s under glibc, most
/// of it cache misses comparing keys, not allocation.)
#[inline(never)]
fn btree_strings(count: usize, iterations: u64) {
    for _ in 0..iterations {
        let mut map = BTreeMap::new();
        for index in 0..count as u64 {
            let index = black_box(index);
            let length = VALUE_MIN + ((index.wrapping_mul(SCATTER) >> 32) % VALUE_LENGTHS) as usize;
            map.insert(format!("{index:08}"), vec![index as u8; length]);
        }
        black_box(&mut map);
    }
}

/// `iterations` times: grows an empty `Vec<u8>` to `bytes` by appending [`EXTEND_STEP`] bytes
/// at a time with `extend_from_slice` (so its capacity doubles up to 64 MiB, a `realloc` of a
/// large block each time), drops it.
#[inline(never)]
fn vec_extend(bytes: usize, iterations: u64) {
    let step: [u8; EXTEND_STEP] = std::array::from_fn(|index| index as u8);
    for _ in 0..iterations {
        let mut vector = Vec::new();
        while vector.len() < bytes {
            vector.extend_from_slice(black_box(&step));
        }
        black_box(&mut vector);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The offset within its page of a local of the closure `on_stack_phase` runs at `phase`,
    /// called from `depth` frames further down the stack.
    fn local_offset(phase: usize, depth: usize) -> usize {
        if depth > 0 {
            let deeper = [0u8; 48];
            black_box(&deeper);
            return black_box(local_offset(phase, depth - 1));
        }
        let mut offset = usize::MAX;
        on_stack_phase(phase, || {
            let local = 0u64;
            offset = black_box(&local as *const u64 as usize) % 4096;
        });
        offset
    }

    #[test]
    fn a_stack_phase_puts_the_frames_at_one_offset_wherever_the_caller_is() {
        let offsets: Vec<usize> = (0..STACK_PHASES).map(|p| local_offset(p, 0)).collect();
        for (phase, &offset) in offsets.iter().enumerate() {
            for depth in [1, 3, 7, 20] {
                assert_eq!(
                    local_offset(phase, depth),
                    offset,
                    "phase {phase}, {depth} frames down"
                );
            }
            assert_eq!(
                local_offset(phase + STACK_PHASES, 2),
                offset,
                "phases are taken modulo STACK_PHASES"
            );
        }
        for p in 1..STACK_PHASES {
            assert_eq!(
                (offsets[p - 1] + 4096 - offsets[p]) % 4096,
                STACK_PHASE_STRIDE,
                "each phase one stride further down: {offsets:?}"
            );
        }
        let mut lines: Vec<usize> = offsets.iter().map(|o| o % 64).collect();
        lines.sort();
        lines.dedup();
        assert_eq!(
            lines.len(),
            4,
            "every 16-byte offset in a cache line: {offsets:?}"
        );
    }

    #[test]
    fn a_stack_phase_is_a_number_below_the_count() {
        assert_eq!(parse_stack_phase("0"), Ok(0));
        assert_eq!(parse_stack_phase("7"), Ok(7));
        for bad in ["8", "-1", "", "one", "1.5"] {
            let error = parse_stack_phase(bad).unwrap_err();
            assert!(error.contains("not a stack phase (0 to 7)"), "{bad}: {error}");
            assert!(!error.contains('\n'));
        }
    }

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
        assert_eq!(names.len(), 3 * SIZES.len() - 1 + 3 + 2);
        let heavy: Vec<String> = benches().iter().filter(|b| b.heavy()).map(Bench::name).collect();
        assert_eq!(heavy, ["btree_strings/1000000", "vec_extend/67108864"]);
    }

    #[test]
    fn every_benchmark_runs() {
        for bench in benches() {
            bench.run(0);
            if !bench.heavy() {
                bench.run(3);
            }
        }
        // The heavy ones, smaller.
        btree_strings(1000, 2);
        vec_extend(1 << 20, 2);
        vec_extend(EXTEND_STEP - 1, 1);
    }

    #[test]
    fn peak_rss_is_read_and_reset() {
        assert!(peak_rss_kib().expect("VmHWM in /proc/self/status") > 0);
        // Raise the peak by 256 MiB that are then given back, so that a reset shows whatever
        // the other tests of this process allocate meanwhile (a few MiB).
        const BIG_KIB: u64 = 256 * 1024;
        // A mapping of its own, not the global allocator's (Tally, in a workspace build, keeps
        // a freed huge block resident in its cache).
        let len = BIG_KIB as usize * 1024;
        // SAFETY: a fresh private anonymous mapping, written and unmapped by this test alone.
        let big = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                len,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_PRIVATE | libc::MAP_ANONYMOUS,
                -1,
                0,
            )
        };
        assert_ne!(big, libc::MAP_FAILED);
        // SAFETY: `big` is `len` writable bytes of our own.
        unsafe { std::ptr::write_bytes(big.cast::<u8>(), 1, len) };
        let peak = peak_rss_kib().expect("VmHWM");
        // SAFETY: the mapping made above, no longer used.
        assert_eq!(unsafe { libc::munmap(big, len) }, 0);
        if reset_peak_rss() {
            let after = peak_rss_kib().expect("VmHWM");
            assert!(
                after + BIG_KIB / 2 <= peak,
                "peak {peak} KiB, after the reset {after} KiB"
            );
        }
        let dir = std::env::temp_dir().join(format!("tally-peak-rss-{}", std::process::id()));
        record_peak_rss(&dir, "system/vec_extend/67108864", 70000).unwrap();
        record_peak_rss(&dir, "tally/vec_extend/67108864", 71000).unwrap();
        let text = std::fs::read_to_string(dir.join(PEAK_RSS_FILE)).unwrap();
        std::fs::remove_dir_all(&dir).unwrap();
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines.len(), 2);
        assert!(lines[1].ends_with("\ttally/vec_extend/67108864\t71000"), "{text}");
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
