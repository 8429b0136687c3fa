//! The malloc/free pair micro-benchmark: the workloads every allocator's binary runs.
//!
//! # What is measured
//!
//! Each workload repeats one allocation pattern for a fixed time and reports the wall-clock time
//! divided by the number of malloc+free pairs done, in nanoseconds. With several threads that is
//! the time per pair of the whole process (aggregate throughput), not of one thread: on a machine
//! with `c` free cores, `t` threads that scale perfectly show `1/min(t, c)` of the one-thread
//! figure.
//!
//! | pattern   | threads | what each thread does                                           |
//! |-----------|---------|-----------------------------------------------------------------|
//! | `pair`    | 1, 2, 4 | allocates a block, writes a byte, frees it, again               |
//! | `batch64` | 1       | allocates 64 blocks, then frees them in the order allocated     |
//! | `xthread` | 2       | allocates a batch of 64, hands it to the other thread, frees    |
//! |           |         | the batch it was handed: every free is of another thread's block |
//!
//! Each pattern runs at every size in [`SIZES`], with `align = 8` (what `Box<u64>` asks for).
//!
//! # Keeping the optimizer out
//!
//! Rust allocation calls are known to LLVM, which deletes an allocation that does not escape, and
//! with LTO a Rust allocator (Tally, stoolap-jemalloc) is inlined into the loop, where its
//! size-class lookup of a constant or loop-invariant size would be hoisted out of the loop while
//! the C allocators (glibc, mimalloc, jemalloc) compute theirs on every call. So every pair passes
//! its size through [`black_box`], writes a byte into the block and passes the pointer through
//! [`black_box`] before freeing it.
//!
//! # Timing
//!
//! A workload first runs for the warm-up time unmeasured (thread caches fill, pages fault in),
//! then for the measured time. One thread times itself in chunks of [`CHUNK`] pairs. Several
//! threads wait at a barrier, count their pairs in per-thread counters, and the main thread reads
//! the counters and the clock at the start and at the end of the measured window, then tells the
//! threads to stop; the counters lag by at most a chunk, far below the window's millions of pairs.
//!
//! # Settings (environment)
//!
//! | variable                 | default | meaning                                            |
//! |--------------------------|---------|----------------------------------------------------|
//! | `TALLY_BENCH_MEASURE_MS` | 150     | measured time per workload                         |
//! | `TALLY_BENCH_WARMUP_MS`  | 50      | unmeasured time before it                          |
//! | `TALLY_BENCH_FILTER`     | (all)   | comma-separated substrings; run workloads matching one |
//! | `TALLY_BENCH_STACK_PHASE`| 0       | the stack phase every workload's threads run at, 0 to 7 (`criterion_suite::on_stack_phase`) |
//!
//! # Output
//!
//! One comment line `# micro allocator=<name> measure_ms=<n> warmup_ms=<n>`, then one line per
//! workload, tab-separated: `<workload>\t<ns per pair>\t<pairs measured>`, e.g.
//! `pair/1t/64\t7.81\t19203328`.

use std::alloc::{alloc, dealloc, handle_alloc_error, Layout};
use std::collections::VecDeque;
use std::hint::black_box;
use std::io::Write as _;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Barrier, Mutex};
use std::time::{Duration, Instant};

use crate::criterion_suite::{on_stack_phase, stack_phase_from_env};

/// Block sizes of every pattern, in bytes: small classes, a page, and two large sizes (the
/// second above glibc's initial 128 KiB mmap threshold).
pub const SIZES: [usize; 7] = [16, 64, 256, 1024, 4096, 32 * 1024, 256 * 1024];

/// Alignment of every block.
pub(crate) const ALIGN: usize = 8;

/// Pairs between two reads of the clock or two updates of a thread's counter.
pub const CHUNK: u64 = 256;

/// Blocks per batch in the `batch64` and `xthread` patterns.
const BATCH: usize = 64;

/// How far a multithreaded window is stretched while no pair completes (see [`time_threads`]).
const STALL_LIMIT: Duration = Duration::from_secs(10);

/// How a workload allocates and frees.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Pattern {
    /// Allocate one block, free it, repeat.
    Pair,
    /// Allocate `BATCH` blocks, then free them first to last.
    Batch,
    /// Threads in a ring: allocate a batch, pass it on, free the batch received.
    CrossThread,
}

/// One line of the benchmark's output: a pattern, a thread count and a block size.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Workload {
    /// The allocation pattern.
    pub pattern: Pattern,
    /// Threads running the pattern at once.
    pub threads: usize,
    /// Size of every block, in bytes.
    pub size: usize,
}

impl Workload {
    /// The name printed in the output, `<pattern>/<threads>t/<size>`, e.g. `pair/4t/32K`.
    pub fn name(&self) -> String {
        let pattern = match self.pattern {
            Pattern::Pair => "pair",
            Pattern::Batch => "batch64",
            Pattern::CrossThread => "xthread",
        };
        let size = if self.size.is_multiple_of(1024) {
            format!("{}K", self.size / 1024)
        } else {
            self.size.to_string()
        };
        format!("{pattern}/{}t/{size}", self.threads)
    }
}

/// Every workload, in output order: grouped by pattern and thread count, sizes ascending.
pub fn workloads() -> Vec<Workload> {
    let groups = [
        (Pattern::Pair, 1),
        (Pattern::Batch, 1),
        (Pattern::Pair, 2),
        (Pattern::Pair, 4),
        (Pattern::CrossThread, 2),
    ];
    groups
        .iter()
        .flat_map(|&(pattern, threads)| {
            SIZES.iter().map(move |&size| Workload {
                pattern,
                threads,
                size,
            })
        })
        .collect()
}

/// Settings of a run, read from the environment (see the module documentation).
#[derive(Clone, Debug)]
pub struct Config {
    /// Measured time per workload.
    pub measure: Duration,
    /// Unmeasured time before it.
    pub warmup: Duration,
    /// Run only workloads whose name contains one of these; all if empty.
    pub filter: Vec<String>,
    /// The stack phase every workload's threads run at ([`on_stack_phase`]): the process's
    /// stack starts at a random offset within a page, and a loop's speed may follow where its
    /// frames fall (`vec_push/1000` under Criterion: 650 or 850 ns by the process).
    pub phase: usize,
}

impl Config {
    /// Reads `TALLY_BENCH_MEASURE_MS`, `TALLY_BENCH_WARMUP_MS`, `TALLY_BENCH_FILTER` and
    /// `TALLY_BENCH_STACK_PHASE`; a one-line error if a time is set but is not a whole number
    /// of milliseconds, or the phase is not one.
    pub fn from_env() -> Result<Config, String> {
        let millis = |name: &str, default: u64| -> Result<Duration, String> {
            let ms = match std::env::var(name) {
                Ok(text) => text
                    .trim()
                    .parse()
                    .map_err(|_| format!("{name}={text:?} is not a number of milliseconds"))?,
                Err(_) => default,
            };
            Ok(Duration::from_millis(ms))
        };
        let filter = std::env::var("TALLY_BENCH_FILTER")
            .unwrap_or_default()
            .split(',')
            .map(str::trim)
            .filter(|part| !part.is_empty())
            .map(String::from)
            .collect();
        Ok(Config {
            measure: millis("TALLY_BENCH_MEASURE_MS", 150)?,
            warmup: millis("TALLY_BENCH_WARMUP_MS", 50)?,
            filter,
            phase: stack_phase_from_env()?,
        })
    }

    fn selects(&self, name: &str) -> bool {
        self.filter.is_empty() || self.filter.iter().any(|part| name.contains(part.as_str()))
    }
}

/// Runs every workload selected by the environment under the binary's global allocator and
/// prints one line per workload to stdout (format in the module documentation).
///
/// `allocator` names the global allocator in the output's first line. A bad setting is one
/// line on stderr and exit status 2.
pub fn run_all(allocator: &str) {
    let config = Config::from_env().unwrap_or_else(|error| {
        eprintln!("micro_{allocator}: {error}");
        std::process::exit(2);
    });
    let mut out = std::io::stdout().lock();
    writeln!(
        out,
        "# micro allocator={allocator} measure_ms={} warmup_ms={} stack_phase={}",
        config.measure.as_millis(),
        config.warmup.as_millis(),
        config.phase
    )
    .expect("stdout");
    for workload in workloads() {
        let name = workload.name();
        if !config.selects(&name) {
            continue;
        }
        let result = run(workload, &config);
        writeln!(out, "{name}\t{:.2}\t{}", result.ns_per_pair(), result.pairs).expect("stdout");
        out.flush().expect("stdout");
    }
}

/// What one workload measured.
#[derive(Clone, Copy, Debug)]
pub struct Measurement {
    /// Malloc+free pairs completed in the measured window.
    pub pairs: u64,
    /// Length of the measured window.
    pub elapsed: Duration,
}

impl Measurement {
    /// Wall-clock nanoseconds per pair.
    pub fn ns_per_pair(&self) -> f64 {
        self.elapsed.as_nanos() as f64 / self.pairs.max(1) as f64
    }
}

/// Runs one workload with the given times, its threads at the stack phase of `config`.
pub fn run(workload: Workload, config: &Config) -> Measurement {
    let size = workload.size;
    match (workload.pattern, workload.threads) {
        (Pattern::Pair, 1) => on_stack_phase(config.phase, || time_inline(config, || pairs(size, CHUNK))),
        (Pattern::Batch, 1) => on_stack_phase(config.phase, || {
            time_inline(config, || batches(size, CHUNK / BATCH as u64))
        }),
        (Pattern::Pair, threads) => time_threads(config, threads, |_, meter| {
            let mut done = 0;
            while meter.running() {
                done += pairs(size, CHUNK);
                meter.record(done);
            }
        }),
        (Pattern::Batch, threads) => time_threads(config, threads, |_, meter| {
            let mut done = 0;
            while meter.running() {
                done += batches(size, CHUNK / BATCH as u64);
                meter.record(done);
            }
        }),
        (Pattern::CrossThread, threads) => cross_thread(config, threads, size),
    }
}

// ---------------------------------------------------------------------------------------------
// Blocks

/// Allocates a block of `size` bytes (`size` > 0) and writes its first byte.
#[inline(always)]
pub(crate) fn allocate(size: usize) -> *mut u8 {
    // SAFETY: ALIGN is a power of two and every size used is at most 256 KiB, so rounding it up
    // to ALIGN cannot overflow isize.
    let layout = unsafe { Layout::from_size_align_unchecked(size, ALIGN) };
    // SAFETY: every size used is non-zero.
    let block = unsafe { alloc(layout) };
    if block.is_null() {
        handle_alloc_error(layout);
    }
    // SAFETY: `block` is a live allocation of at least one byte.
    unsafe { block.write_volatile(0xA5) };
    black_box(block)
}

/// Frees a block that [`allocate`] returned for the same `size`.
///
/// # Safety
///
/// `block` came from `allocate(size)` and was not freed since.
#[inline(always)]
pub(crate) unsafe fn free(block: *mut u8, size: usize) {
    // SAFETY: as in `allocate`; the caller passes the size the block was allocated with.
    let layout = unsafe { Layout::from_size_align_unchecked(size, ALIGN) };
    // SAFETY: the caller guarantees the block is live and was allocated with this layout.
    unsafe { dealloc(block, layout) };
}

/// `count` malloc+free pairs of `size` bytes; returns `count`.
#[inline(never)]
pub(crate) fn pairs(size: usize, count: u64) -> u64 {
    for _ in 0..count {
        let size = black_box(size);
        let block = allocate(size);
        // SAFETY: allocated just above with this size.
        unsafe { free(block, size) };
    }
    count
}

/// `count` batches of [`BATCH`] blocks of `size` bytes, each allocated in full and then freed
/// in allocation order; returns the pairs done.
#[inline(never)]
pub(crate) fn batches(size: usize, count: u64) -> u64 {
    let mut blocks = [std::ptr::null_mut::<u8>(); BATCH];
    for _ in 0..count {
        for slot in blocks.iter_mut() {
            *slot = allocate(black_box(size));
        }
        for &block in blocks.iter() {
            // SAFETY: each block was allocated in the loop above with this size.
            unsafe { free(block, black_box(size)) };
        }
    }
    count * BATCH as u64
}

// ---------------------------------------------------------------------------------------------
// Timing

/// Times `chunk` (which does some pairs and returns how many) on the calling thread.
fn time_inline(config: &Config, mut chunk: impl FnMut() -> u64) -> Measurement {
    let warmup = Instant::now();
    while warmup.elapsed() < config.warmup {
        chunk();
    }
    let start = Instant::now();
    let mut pairs = 0;
    loop {
        pairs += chunk();
        let elapsed = start.elapsed();
        if elapsed >= config.measure {
            return Measurement { pairs, elapsed };
        }
    }
}

/// A pair counter alone on its cache lines (128 bytes: two lines, for the adjacent-line
/// prefetcher), so threads do not slow each other down by counting.
#[repr(align(128))]
#[derive(Default)]
struct Counter(AtomicU64);

/// A worker thread's view of the timing: whether to go on, and where to count its pairs.
pub struct Meter<'a> {
    stop: &'a AtomicBool,
    pairs: &'a Counter,
}

impl Meter<'_> {
    /// Whether the workload is still running.
    #[inline]
    pub fn running(&self) -> bool {
        !self.stop.load(Ordering::Relaxed)
    }

    /// Publishes the thread's total of pairs done so far.
    #[inline]
    pub fn record(&self, total: u64) {
        self.pairs.0.store(total, Ordering::Relaxed);
    }
}

/// Runs `worker(index, meter)` on `threads` new threads and times them together: they start at
/// a barrier, run through the warm-up, and the pairs they record during the measured window
/// count; the window is stretched (by at most [`STALL_LIMIT`]) until at least one thread has
/// recorded progress in it. Each worker loops until `meter.running()` is false.
fn time_threads(config: &Config, threads: usize, worker: impl Fn(usize, &Meter<'_>) + Sync) -> Measurement {
    let stop = AtomicBool::new(false);
    let counters: Vec<Counter> = (0..threads).map(|_| Counter::default()).collect();
    let barrier = Barrier::new(threads + 1);
    let total = || -> u64 {
        counters
            .iter()
            .map(|counter| counter.0.load(Ordering::Relaxed))
            .sum()
    };
    std::thread::scope(|scope| {
        for (index, counter) in counters.iter().enumerate() {
            let (stop, barrier, worker) = (&stop, &barrier, &worker);
            let phase = config.phase;
            scope.spawn(move || {
                barrier.wait();
                on_stack_phase(phase, || worker(index, &Meter { stop, pairs: counter }));
            });
        }
        barrier.wait();
        std::thread::sleep(config.warmup);
        let (start, before) = (Instant::now(), total());
        std::thread::sleep(config.measure);
        let (mut end, mut after) = (Instant::now(), total());
        // A window in which no counter moved (a thread stalled in the allocator or the kernel
        // for longer than the window) has no rate: stretch it until one does.
        while after == before && end - start < config.measure + STALL_LIMIT {
            std::thread::sleep(Duration::from_millis(1));
            (end, after) = (Instant::now(), total());
        }
        stop.store(true, Ordering::Relaxed);
        Measurement {
            pairs: after - before,
            elapsed: end - start,
        }
    })
}

// ---------------------------------------------------------------------------------------------
// Cross-thread frees

/// A batch of block addresses (as `usize`, so that batches can cross threads).
type Batch = Vec<usize>;

/// The batches handed to one thread, oldest first.
#[derive(Default)]
struct Mailbox(Mutex<VecDeque<Batch>>);

impl Mailbox {
    fn put(&self, batch: Batch) {
        self.0.lock().expect("mailbox").push_back(batch);
    }

    fn take(&self) -> Option<Batch> {
        self.0.lock().expect("mailbox").pop_front()
    }
}

/// Threads `0..threads` in a ring: thread `i` allocates a batch of [`BATCH`] blocks, puts it in
/// the mailbox of thread `i + 1` (mod `threads`), then frees the batch it finds in its own,
/// waiting for one if need be. Every thread posts before it waits, so the ring never deadlocks,
/// and a thread is at most a few batches ahead of the one after it, so memory stays bounded.
/// Batch vectors are recycled, so after the first rounds the only allocations are the blocks.
fn cross_thread(config: &Config, threads: usize, size: usize) -> Measurement {
    let mailboxes: Vec<Mailbox> = (0..threads).map(|_| Mailbox::default()).collect();
    let measurement = time_threads(config, threads, |index, meter| {
        let outbox = &mailboxes[(index + 1) % threads];
        let inbox = &mailboxes[index];
        let mut spare: Vec<Batch> = (0..4).map(|_| Vec::with_capacity(BATCH)).collect();
        let mut freed = 0;
        'rounds: while meter.running() {
            let mut batch = spare.pop().unwrap_or_else(|| Vec::with_capacity(BATCH));
            for _ in 0..BATCH {
                batch.push(allocate(black_box(size)) as usize);
            }
            outbox.put(batch);
            let mut received = loop {
                if let Some(batch) = inbox.take() {
                    break batch;
                }
                if !meter.running() {
                    break 'rounds;
                }
                for _ in 0..64 {
                    std::hint::spin_loop();
                }
                std::thread::yield_now();
            };
            for &block in received.iter() {
                // SAFETY: another thread allocated the block with this size and handed it over
                // through the mailbox; nothing else frees it.
                unsafe { free(block as *mut u8, black_box(size)) };
            }
            freed += received.len() as u64;
            meter.record(freed);
            received.clear();
            spare.push(received);
        }
    });
    // Batches still in flight when the threads stopped: not measured, but freed.
    for mailbox in &mailboxes {
        while let Some(batch) = mailbox.take() {
            for block in batch {
                // SAFETY: allocated by a worker with this size, never freed: the workers are done.
                unsafe { free(block as *mut u8, size) };
            }
        }
    }
    measurement
}

#[cfg(test)]
mod tests {
    use super::*;

    fn quick() -> Config {
        Config {
            measure: Duration::from_millis(5),
            warmup: Duration::from_millis(1),
            filter: Vec::new(),
            phase: 0,
        }
    }

    #[test]
    fn names_are_unique_and_readable() {
        let names: Vec<String> = workloads().iter().map(Workload::name).collect();
        let mut sorted = names.clone();
        sorted.sort();
        sorted.dedup();
        assert_eq!(sorted.len(), names.len());
        assert!(names.contains(&"pair/1t/16".to_string()));
        assert!(names.contains(&"xthread/2t/256K".to_string()));
    }

    #[test]
    fn every_pattern_measures_pairs() {
        for phase in [0, 5] {
            every_pattern_measures_pairs_at(&Config { phase, ..quick() });
        }
    }

    fn every_pattern_measures_pairs_at(config: &Config) {
        for (pattern, threads) in [
            (Pattern::Pair, 1),
            (Pattern::Batch, 1),
            (Pattern::Pair, 2),
            (Pattern::Batch, 2),
            (Pattern::CrossThread, 2),
            (Pattern::CrossThread, 3),
        ] {
            let workload = Workload {
                pattern,
                threads,
                size: 64,
            };
            let measured = run(workload, config);
            assert!(measured.pairs > 0, "{}", workload.name());
            assert!(measured.ns_per_pair() > 0.0, "{}", workload.name());
        }
    }

    #[test]
    fn filter_selects_by_substring() {
        let config = Config {
            filter: vec!["xthread".into(), "/1t/16".into()],
            ..quick()
        };
        assert!(config.selects("xthread/2t/64"));
        assert!(config.selects("pair/1t/16"));
        assert!(config.selects("pair/1t/16K"));
        assert!(!config.selects("pair/2t/16"));
    }
}
