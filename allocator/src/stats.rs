//! Statistics: where the memory is, read on demand.
//!
//! Nothing here costs the fast paths anything beyond what they do anyway: thread caches keep a
//! count per bin and an allocation counter (plain relaxed stores by the owner), and the arenas
//! count the objects and large blocks they hand out and take back, the fills and the batches
//! returned, under the locks those slow paths take already (never in a process-wide atomic that
//! every thread's slow path would write: `bin::BinCounts`). A reader sums them:
//!
//! - live objects of a class = handed out by arenas − returned to arenas − sitting in caches;
//! - `allocated` = Σ live objects × class size + bytes of live huge blocks;
//! - `active` = pages of runs in use (slabs and large blocks, but the empty slabs bins keep for
//!   their next refills and the freed large runs page heaps keep whole, which count as
//!   `dirty`) + huge blocks;
//! - `dirty`/`muzzy` = free pages that may still be resident (dirty includes the bins' empty
//!   slabs, the kept large runs and freed huge mappings kept for reuse); `retained` = free pages
//!   given back (mapped, not resident);
//! - `metadata` = chunk headers + the metadata pool + page-map leaves;
//! - `mapped` = chunks + huge blocks and cached huge mappings + metadata outside chunks; `resident` ≈ active + dirty +
//!   muzzy + metadata (an estimate from above, like jemalloc's).
//!
//! The sums are exact when the threads are quiescent; while they run, each counter is read at a
//! slightly different moment.

use core::fmt::Write;
use core::sync::atomic::Ordering;

use crate::arena::{self, ARENAS, MAX_ARENAS};
use crate::bin::BinCounts;
use crate::chunk::{self, CHUNK, HEADER_PAGES, USABLE_PAGES};
use crate::size_class::{SizeClass, NCACHED, NCLASSES, NSMALL};
use crate::{decay, guard, huge, mapcache, meta, options, pagemap, prof_hooks, tcache};
use tally_pal::{self as pal, LineBuf, PAGE};

/// Counters of one size class.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ClassStats {
    /// The class's size in bytes.
    pub size: u64,
    /// Blocks of the class live now.
    pub live: u64,
    /// Blocks allocated so far (for classes thread caches keep: through caches or without one;
    /// for other large classes: from arenas).
    pub nmalloc: u64,
    /// Blocks freed so far (`nmalloc - live`).
    pub nfree: u64,
    /// Slabs held now (small classes).
    pub slabs: u64,
    /// Blocks sitting in thread caches now.
    pub cached: u64,
    /// Allocations that took blocks from the arenas' slabs so far (cache misses): a thread
    /// cache's refill, or an allocation made without a cache.
    pub misses: u64,
}

impl ClassStats {
    /// All zero.
    pub const ZERO: ClassStats = ClassStats {
        size: 0,
        live: 0,
        nmalloc: 0,
        nfree: 0,
        slabs: 0,
        cached: 0,
        misses: 0,
    };

    /// Share of allocations served from a thread cache without a refill (0 when none).
    pub fn hit_rate(&self) -> f64 {
        if self.nmalloc == 0 {
            0.0
        } else {
            1.0 - (self.misses as f64 / self.nmalloc as f64).min(1.0)
        }
    }
}

/// Counters of one arena.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ArenaStats {
    /// Threads whose cache fills from this arena.
    pub threads: u64,
    /// Chunks held.
    pub chunks: u64,
    /// Pages of runs in use.
    pub active_pages: u64,
    /// Free pages that may be resident and dirty.
    pub dirty_pages: u64,
    /// Free pages given back with `MADV_FREE`.
    pub muzzy_pages: u64,
    /// Free pages given back to the OS.
    pub retained_pages: u64,
    /// Pages given back with `MADV_DONTNEED` or by unmapping, so far.
    pub purged_pages: u64,
}

impl ArenaStats {
    /// All zero.
    pub const ZERO: ArenaStats = ArenaStats {
        threads: 0,
        chunks: 0,
        active_pages: 0,
        dirty_pages: 0,
        muzzy_pages: 0,
        retained_pages: 0,
        purged_pages: 0,
    };
}

/// A snapshot of Tally's statistics. See the module docs for what each total means.
#[derive(Clone, Copy, Debug)]
pub struct Stats {
    /// Bytes in live blocks (usable sizes).
    pub allocated: u64,
    /// Bytes in pages of runs in use and in huge blocks.
    pub active: u64,
    /// Bytes believed resident: active, dirty and muzzy pages and metadata.
    pub resident: u64,
    /// Bytes mapped: chunks, huge blocks and metadata.
    pub mapped: u64,
    /// Bytes mapped but given back to the OS.
    pub retained: u64,
    /// Bytes of Tally's own bookkeeping.
    pub metadata: u64,
    /// Bytes of free pages that may be resident and dirty.
    pub dirty: u64,
    /// Bytes of free pages given back with `MADV_FREE`.
    pub muzzy: u64,
    /// Live huge blocks.
    pub huge_live: u64,
    /// Arenas in use.
    pub narenas: usize,
    /// Threads with a cache.
    pub threads: usize,
    /// Whether the background purging thread runs in this process.
    pub background_thread: bool,
    /// Per size class (`classes[i]` is class `i`).
    pub classes: [ClassStats; NCLASSES],
    /// Per arena (the first `narenas` entries).
    pub arenas: [ArenaStats; MAX_ARENAS],
    /// Slow-path counters.
    pub counters: Counters,
}

impl Stats {
    /// All zero (no arena, no thread): a starting value for a snapshot.
    pub const ZERO: Stats = Stats {
        allocated: 0,
        active: 0,
        resident: 0,
        mapped: 0,
        retained: 0,
        metadata: 0,
        dirty: 0,
        muzzy: 0,
        huge_live: 0,
        narenas: 0,
        threads: 0,
        background_thread: false,
        classes: [ClassStats::ZERO; NCLASSES],
        arenas: [ArenaStats::ZERO; MAX_ARENAS],
        counters: Counters::ZERO,
    };
}

/// Counters of slow-path events since the process started.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Counters {
    /// 4 MiB chunks mapped for slabs and large blocks.
    pub chunks_mapped: u64,
    /// Chunks unmapped again after all their pages were free and purged.
    pub chunks_unmapped: u64,
    /// Chunks made of a chunk window of a cached huge mapping instead of a fresh mapping.
    pub chunk_reuses: u64,
    /// Small blocks handed from arenas to thread caches (or to threads without one).
    pub tcache_fills: u64,
    /// Batches of small blocks returned from thread caches to arenas.
    pub tcache_flushes: u64,
    /// Thread-cache bins that garbage collection took blocks from.
    pub tcache_gc_flushes: u64,
    /// Large blocks allocated.
    pub large_allocs: u64,
    /// Huge blocks mapped.
    pub huge_allocs: u64,
    /// Huge blocks resized by `mremap` (no copy).
    pub huge_remaps: u64,
    /// Huge blocks served from a cached mapping instead of a fresh one.
    pub huge_reuses: u64,
    /// Purge passes over the arenas.
    pub purge_passes: u64,
    /// Times the OS refused memory and everything free was given back to try once more.
    pub out_of_memory: u64,
    /// Blocks guarded sampling placed between guard pages (`guard_rate`).
    pub guarded_allocs: u64,
    /// Guarded blocks freed.
    pub guarded_frees: u64,
}

impl Counters {
    /// All zero.
    pub const ZERO: Counters = Counters {
        chunks_mapped: 0,
        chunks_unmapped: 0,
        chunk_reuses: 0,
        tcache_fills: 0,
        tcache_flushes: 0,
        tcache_gc_flushes: 0,
        large_allocs: 0,
        huge_allocs: 0,
        huge_remaps: 0,
        huge_reuses: 0,
        purge_passes: 0,
        out_of_memory: 0,
        guarded_allocs: 0,
        guarded_frees: 0,
    };

    /// The counters by name, as both report forms print them.
    pub fn fields(&self) -> [(&'static str, u64); 14] {
        [
            ("chunks_mapped", self.chunks_mapped),
            ("chunks_unmapped", self.chunks_unmapped),
            ("chunk_reuses", self.chunk_reuses),
            ("tcache_fills", self.tcache_fills),
            ("tcache_flushes", self.tcache_flushes),
            ("tcache_gc_flushes", self.tcache_gc_flushes),
            ("large_allocs", self.large_allocs),
            ("huge_allocs", self.huge_allocs),
            ("huge_remaps", self.huge_remaps),
            ("huge_reuses", self.huge_reuses),
            ("purge_passes", self.purge_passes),
            ("out_of_memory", self.out_of_memory),
            ("guarded_allocs", self.guarded_allocs),
            ("guarded_frees", self.guarded_frees),
        ]
    }
}

/// The slow-path counters now (the thread caches' fills and flushes added up from the bins,
/// which keep them under their locks, `bin::BinCounts`, and the large allocations from the page
/// heaps).
pub fn counters() -> Counters {
    let mut kept = Kept::default();
    for arena in &ARENAS[..arena::arena_count()] {
        for bin in &arena.bins {
            kept.add_bin(bin.counts());
        }
        kept.large_runs += arena.pages.lock().large_runs;
    }
    counters_with(kept)
}

/// The counters the bins and page heaps keep, added up ([`counters`], and [`stats`] in the
/// pass over the bins it makes anyway).
#[derive(Default)]
struct Kept {
    fills: u64,
    flushes: u64,
    large_runs: u64,
}

impl Kept {
    fn add_bin(&mut self, counts: BinCounts) {
        self.fills += counts.handed_out;
        self.flushes += counts.batches;
    }
}

/// [`counters`], with what the bins and page heaps keep added up already.
fn counters_with(kept: Kept) -> Counters {
    Counters {
        tcache_fills: kept.fills,
        tcache_flushes: kept.flushes,
        chunks_mapped: chunk::CHUNKS_MAPPED.load(Ordering::Relaxed),
        chunks_unmapped: chunk::CHUNKS_UNMAPPED.load(Ordering::Relaxed),
        chunk_reuses: mapcache::CHUNK_REUSES.load(Ordering::Relaxed),
        tcache_gc_flushes: tcache::GC_FLUSHES.load(Ordering::Relaxed),
        large_allocs: kept.large_runs,
        huge_allocs: huge::HUGE_ALLOCS.load(Ordering::Relaxed),
        huge_remaps: huge::HUGE_REMAPS.load(Ordering::Relaxed),
        huge_reuses: mapcache::HUGE_REUSES.load(Ordering::Relaxed),
        purge_passes: decay::PASSES.load(Ordering::Relaxed),
        out_of_memory: crate::alloc::OUT_OF_MEMORY.load(Ordering::Relaxed),
        guarded_allocs: guard::GUARDED_OUT.load(Ordering::Relaxed),
        guarded_frees: guard::GUARDED_IN.load(Ordering::Relaxed),
    }
}

/// Reads the statistics now. Takes each lock briefly, never allocates.
pub fn stats() -> Stats {
    let mut s = Stats {
        narenas: arena::arena_count(),
        background_thread: decay::background_running(),
        ..Stats::ZERO
    };
    let mut threads = [0u32; MAX_ARENAS];
    // Per class: blocks in thread caches, and allocations the caches served (every allocation
    // of a bin's class; those of a big-cache class the arenas did not see).
    let mut cached = [0u64; NCLASSES];
    let mut nmalloc = [0u64; NCLASSES];
    s.threads = tcache::visit_caches(&mut threads, &mut |class, c, n| {
        cached[class] += c;
        nmalloc[class] += n;
    });
    let mut handed_out = [0u64; NCLASSES];
    let mut returned = [0u64; NCLASSES];
    let mut misses = [0u64; NSMALL];
    let mut kept = Kept::default();
    for (i, arena) in ARENAS[..s.narenas].iter().enumerate() {
        // The empty slabs bins keep for their next refills are free pages, as resident as the
        // page heap's dirty ones and given back the same way (`bin.rs`): counted with those.
        let mut empty_pages = 0;
        for (c, bin) in arena.bins.iter().enumerate() {
            let counts = bin.counts();
            kept.add_bin(counts);
            empty_pages += counts.empty * SizeClass(c as u8).pages();
            s.classes[c].slabs += counts.slabs as u64;
            handed_out[c] += counts.handed_out;
            returned[c] += counts.returned;
            misses[c] += counts.fills;
        }
        let heap = arena.pages.lock();
        kept.large_runs += heap.large_runs;
        for k in 0..NCLASSES - NSMALL {
            handed_out[NSMALL + k] += heap.large_allocated[k];
            returned[NSMALL + k] += heap.large_freed[k];
        }
        let a = &mut s.arenas[i];
        a.threads = threads[i] as u64;
        a.chunks = heap.chunks as u64;
        // So are the freed large runs the page heap keeps whole (`extent.rs`).
        empty_pages += heap.kept_pages;
        let in_use = heap.chunks * USABLE_PAGES - heap.free_pages;
        a.active_pages = in_use.saturating_sub(empty_pages) as u64;
        a.dirty_pages = (heap.dirty_pages + in_use.min(empty_pages)) as u64;
        a.muzzy_pages = heap.muzzy_pages as u64;
        a.retained_pages = (heap.free_pages - heap.dirty_pages - heap.muzzy_pages) as u64;
        a.purged_pages = heap.purged_pages;
    }
    s.counters = counters_with(kept);
    for c in 0..NCLASSES {
        let out = prof_hooks::SAMPLED_OUT[c].load(Ordering::Relaxed);
        handed_out[c] += out;
        returned[c] += prof_hooks::SAMPLED_IN[c].load(Ordering::Relaxed);
        if c < NCACHED {
            nmalloc[c] += out;
        }
    }
    for (c, class) in s.classes.iter_mut().enumerate() {
        class.size = SizeClass(c as u8).size() as u64;
        let in_caches = cached[c];
        class.live = handed_out[c]
            .saturating_sub(returned[c])
            .saturating_sub(in_caches);
        class.cached = in_caches;
        class.nmalloc = if c < NCACHED {
            nmalloc[c]
        } else {
            handed_out[c] + nmalloc[c]
        };
        class.nfree = class.nmalloc.saturating_sub(class.live);
        class.misses = misses.get(c).copied().unwrap_or(0);
        s.allocated += class.live * class.size;
    }
    let huge_bytes = huge::HUGE_BYTES.load(Ordering::Relaxed);
    s.huge_live = huge::HUGE_LIVE.load(Ordering::Relaxed);
    s.allocated += huge_bytes;
    let page = PAGE as u64;
    let arenas = &s.arenas[..s.narenas];
    let chunks: u64 = arenas.iter().map(|a| a.chunks).sum();
    s.active = arenas.iter().map(|a| a.active_pages).sum::<u64>() * page + huge_bytes;
    let huge_cached = mapcache::HUGE_CACHED.load(Ordering::Relaxed);
    s.dirty = arenas.iter().map(|a| a.dirty_pages).sum::<u64>() * page + huge_cached;
    s.muzzy = arenas.iter().map(|a| a.muzzy_pages).sum::<u64>() * page;
    s.retained = arenas.iter().map(|a| a.retained_pages).sum::<u64>() * page;
    let outside = meta::MAPPED.load(Ordering::Relaxed) + pagemap::LEAF_BYTES.load(Ordering::Relaxed) as u64;
    s.metadata = chunks * (HEADER_PAGES * PAGE) as u64 + outside;
    s.mapped = chunks * CHUNK as u64 + huge_bytes + huge_cached + outside;
    s.resident = s.active + s.dirty + s.muzzy + s.metadata;
    s
}

/// Flushes the calling thread's cache and gives every free page back to the OS now. Returns
/// whether any memory was released (what `malloc_trim` returns).
pub fn trim() -> bool {
    crate::alloc::give_back_all()
}

/// Prints the statistics to stderr: with the `STATS_JSON` bit, as one JSON object on one line;
/// else as text: the first line `tally: stats: key=value ...` (for scripts), then tables for
/// people, then `tally: end of stats`. `flags` takes the `STATS_*` bits of `stats_print_opts`.
/// The report is written with as few `write` calls as a 32 KiB stack buffer allows, so reports of
/// processes exiting together do not interleave.
pub fn print(flags: u32) {
    print_to(flags, &mut |text| pal::write_stderr(&text[..text.len() - 1]));
}

/// [`print()`] to `sink` instead of stderr: it gets the report in pieces of at most 32 KiB, each
/// followed by a NUL (`sink` sees it as the last byte of its slice), as jemalloc's
/// `malloc_stats_print` hands its text to a `write_cb`.
pub fn print_to(flags: u32, sink: &mut dyn FnMut(&[u8])) {
    let s = stats();
    let mut out = Report {
        buf: [0; REPORT_BYTES + 1],
        len: 0,
        sink,
    };
    if flags & options::STATS_JSON != 0 {
        print_json(&mut out, &s, flags);
    } else {
        print_text(&mut out, &s, flags);
    }
    out.flush();
}

/// The most a report hands its sink at once.
const REPORT_BYTES: usize = 32 * 1024;

/// The report being written: a buffer handed to its sink, NUL-terminated, when full.
struct Report<'a> {
    buf: [u8; REPORT_BYTES + 1],
    len: usize,
    sink: &'a mut dyn FnMut(&[u8]),
}

impl Report<'_> {
    fn flush(&mut self) {
        if self.len == 0 {
            return;
        }
        self.buf[self.len] = 0;
        (self.sink)(&self.buf[..=self.len]);
        self.len = 0;
    }

    fn line(&mut self, args: core::fmt::Arguments<'_>) {
        let mut l = LineBuf::new();
        let _ = l.write_fmt(args);
        let bytes = l.as_bytes();
        if self.len + bytes.len() > REPORT_BYTES {
            self.flush();
        }
        self.buf[self.len..self.len + bytes.len()].copy_from_slice(bytes);
        self.len += bytes.len();
    }
}

/// The byte totals, named as both report forms print them.
fn totals(s: &Stats) -> [(&'static str, u64); 8] {
    [
        ("allocated", s.allocated),
        ("active", s.active),
        ("resident", s.resident),
        ("mapped", s.mapped),
        ("retained", s.retained),
        ("metadata", s.metadata),
        ("dirty", s.dirty),
        ("muzzy", s.muzzy),
    ]
}

/// Bytes with a binary unit, for people.
struct Bytes(u64);

impl core::fmt::Display for Bytes {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
        let mut v = self.0 as f64;
        let mut u = 0;
        while v >= 1024.0 && u < UNITS.len() - 1 {
            v /= 1024.0;
            u += 1;
        }
        // Format into a buffer first, so that width and alignment apply to the whole text.
        let mut text = LineBuf::new();
        let _ = if u == 0 {
            write!(text, "{} B", self.0)
        } else {
            write!(text, "{v:.1} {}", UNITS[u])
        };
        f.pad(core::str::from_utf8(text.as_bytes()).unwrap_or("?"))
    }
}

fn print_text(out: &mut Report, s: &Stats, flags: u32) {
    let c = &s.counters;
    out.line(format_args!("tally: stats: pid={}", pal::pid()));
    for (key, value) in totals(s) {
        out.line(format_args!(" {key}={value}"));
    }
    for (key, value) in c.fields() {
        out.line(format_args!(" {key}={value}"));
    }
    out.line(format_args!(" narenas={} threads={}\n", s.narenas, s.threads));
    out.line(format_args!("Tally statistics\n"));
    for (name, value, what) in [
        ("allocated", s.allocated, "in live blocks"),
        ("active", s.active, "in pages of blocks and slabs in use"),
        (
            "resident",
            s.resident,
            "estimated resident (active + dirty + muzzy + metadata)",
        ),
        ("mapped", s.mapped, "mapped from the OS"),
        ("retained", s.retained, "mapped, given back to the OS"),
        (
            "dirty",
            s.dirty,
            "free, still resident, waiting for dirty_decay_ms",
        ),
        ("muzzy", s.muzzy, "free, MADV_FREE'd, waiting for muzzy_decay_ms"),
        ("metadata", s.metadata, "Tally's own bookkeeping"),
    ] {
        out.line(format_args!("  {name:<10} {:>12}  {what}\n", Bytes(value)));
    }
    out.line(format_args!(
        "  huge blocks live: {}; arenas: {}; threads with a cache: {}; background thread: {}\n",
        s.huge_live,
        s.narenas,
        s.threads,
        if s.background_thread { "running" } else { "off" }
    ));
    if flags & options::STATS_NO_BINS == 0 {
        out.line(format_args!(
            "Size classes (only those ever used):\n  {:>8} {:>10} {:>12} {:>12} {:>7} {:>8} {:>9}\n",
            "size", "live", "mallocs", "frees", "slabs", "cached", "cache hit"
        ));
        for (i, k) in s.classes.iter().enumerate() {
            if k.nmalloc == 0 && k.live == 0 {
                continue;
            }
            let hit = if i < NCACHED { k.hit_rate() * 100.0 } else { 0.0 };
            out.line(format_args!(
                "  {:>8} {:>10} {:>12} {:>12} {:>7} {:>8} {:>8.1}%\n",
                k.size, k.live, k.nmalloc, k.nfree, k.slabs, k.cached, hit
            ));
        }
    }
    if flags & options::STATS_NO_ARENAS == 0 {
        out.line(format_args!(
            "Arenas (only those with chunks):\n  {:>5} {:>7} {:>6} {:>12} {:>12} {:>12} {:>12}\n",
            "arena", "threads", "chunks", "active", "dirty", "muzzy", "retained"
        ));
        for (i, a) in s.arenas[..s.narenas].iter().enumerate() {
            if a.chunks == 0 && a.threads == 0 {
                continue;
            }
            let page = PAGE as u64;
            out.line(format_args!(
                "  {:>5} {:>7} {:>6} {:>12} {:>12} {:>12} {:>12}\n",
                i,
                a.threads,
                a.chunks,
                Bytes(a.active_pages * page),
                Bytes(a.dirty_pages * page),
                Bytes(a.muzzy_pages * page),
                Bytes(a.retained_pages * page)
            ));
        }
    }
    out.line(format_args!("tally: end of stats\n"));
}

fn print_json(out: &mut Report, s: &Stats, flags: u32) {
    let c = &s.counters;
    out.line(format_args!("{{\"tally\":{{\"pid\":{}", pal::pid()));
    for (key, value) in totals(s) {
        out.line(format_args!(",\"{key}\":{value}"));
    }
    out.line(format_args!(
        ",\"huge_live\":{},\"narenas\":{},\"threads\":{},\"background_thread\":{},",
        s.huge_live, s.narenas, s.threads, s.background_thread
    ));
    out.line(format_args!("\"counters\":{{"));
    for (i, (key, value)) in c.fields().into_iter().enumerate() {
        out.line(format_args!("{}\"{key}\":{value}", if i == 0 { "" } else { "," }));
    }
    out.line(format_args!("}}"));
    if flags & options::STATS_NO_BINS == 0 {
        out.line(format_args!(",\"classes\":["));
        for (i, k) in s.classes.iter().enumerate() {
            out.line(format_args!(
                "{}{{\"size\":{},\"live\":{},\"nmalloc\":{},\"nfree\":{},\"slabs\":{},\"cached\":{},\"misses\":{}}}",
                if i == 0 { "" } else { "," },
                k.size,
                k.live,
                k.nmalloc,
                k.nfree,
                k.slabs,
                k.cached,
                k.misses
            ));
        }
        out.line(format_args!("]"));
    }
    if flags & options::STATS_NO_ARENAS == 0 {
        out.line(format_args!(",\"arenas\":["));
        for (i, a) in s.arenas[..s.narenas].iter().enumerate() {
            out.line(format_args!(
                "{}{{\"threads\":{},\"chunks\":{},\"active_pages\":{},\"dirty_pages\":{},\"muzzy_pages\":{},\
                 \"retained_pages\":{},\"purged_pages\":{}}}",
                if i == 0 { "" } else { "," },
                a.threads,
                a.chunks,
                a.active_pages,
                a.dirty_pages,
                a.muzzy_pages,
                a.retained_pages,
                a.purged_pages
            ));
        }
        out.line(format_args!("]"));
    }
    out.line(format_args!("}}}}\n"));
}

#[link_section = ".text.hot.tally"]
extern "C" fn at_exit() {
    let opts = crate::init::options();
    prof_hooks::at_exit(opts);
    if opts.stats_print {
        print(opts.stats_print_opts);
    }
}

/// Runs [`at_exit`] when the process exits (or the library is unloaded), without registering
/// anything through `atexit` (which may allocate).
#[used]
#[link_section = ".fini_array"]
static AT_EXIT: extern "C" fn() = at_exit;
