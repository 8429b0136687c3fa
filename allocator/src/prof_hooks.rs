//! The profiler's hooks in the allocator: sampled blocks, and the guard that keeps the
//! profiler's own allocations from being sampled. Everything else about profiling (the rate,
//! whether it is on, the byte count for interval dumps, when and under which names profiles are
//! written) belongs to the profiler (`tally_profiler::PROFILER`); the allocator's thread events
//! (`thread_event.rs`) tell it the bytes each thread spent.
//!
//! A sampled allocation takes [`alloc_sampled`]: its stack is captured with no allocator lock
//! held, it is served from a page run of its own whose pages say [`SAMPLED`] in the page map,
//! and it is recorded in the profiler's live-block table. So `free` of an ordinary block never
//! looks anything up; only frees of sampled pages (which fail the fast path's class check) reach
//! [`free_sampled`]. Rust's `dealloc`, which skips the page map for the cached classes, tells
//! sampled and guarded blocks by their address instead: the page runs of sampled blocks of those
//! classes come from a range set apart for them (`chunk::SAMPLED_REGION`), and one mask test
//! ([`SPECIAL_MASK`], [`may_be_special`]) picks out that range and the guarded one. A thread-local
//! guard keeps allocations made while capturing or dumping (libgcc's unwinder may allocate on
//! first use) from being sampled themselves. A sampled block `realloc` grows into a larger class
//! grows in place over the pages after its run when its new size is sampled too ([`resizing`]),
//! as one of a class past the thread cache's shrinks into a smaller such class; one of a class
//! past the thread cache's whose new size is not sampled becomes an ordinary large block where it
//! is ([`unsample`]).

use core::cell::Cell;
use core::mem::MaybeUninit;
use core::sync::atomic::{AtomicBool, AtomicU64, AtomicU8, AtomicUsize, Ordering};

use tally_pal::{self as pal, PAGE};
use tally_profiler::{self as profiler, DumpError, MAX_FRAMES, PROFILER};

use crate::arena::{self, Arena};
use crate::chunk::{RunState, Span, CHUNK};
use crate::extent::DIRTY_DECAY_MS;
use crate::options::Options;
use crate::size_class::{SizeClass, NCACHED, NCLASSES, NSMALL};
use crate::{chunk, decay, freed, huge, mapcache, pagemap, tcache};

/// Page-map class byte of a sampled block's pages.
pub const SAMPLED: u8 = 0xFD;
const _: () = assert!((SAMPLED as usize) >= NCLASSES && SAMPLED < chunk::FREE_RUN);

/// Which blocks Rust's `dealloc` may not free by their class alone, as a mask over the block's
/// address: `dealloc` sends `p` to a function that sorts it out when `p & mask == 0`. Set at
/// initialization (and changed once if the sampled region runs out):
/// - `usize::MAX` when no such blocks can exist (`p` is never null, so nothing matches);
/// - with the profiler on (`prof:true`) or guarded sampling (`guard_rate` above 0), the bits
///   above the sampled region (`chunk::SAMPLED_REGION`) and the guarded region, which are
///   reserved low in the address space ([`SAMPLED_REGION_AT`], `guard::POOL_AT`), below where
///   the kernel puts mappings it places itself (checked at initialization with one): every
///   sampled block of a class the cache keeps and every guarded block lies there, so every other
///   block takes the class's path as without them. (A chunk of Tally's mapped that low anyway
///   would only take the slower path: the function looks at the block's page.);
/// - `PAGE - 1`, page-aligned blocks, with the profiler on but no region apart (none could be
///   reserved, it is full, or the process's mappings go low too, as under valgrind): a sampled
///   block starts a page run of its own, and is known by its page's info word;
/// - `0`, every block, in that case with guarded sampling on too, or with a guarded region the
///   kernel put high: a guarded block may start anywhere in its page, and is known by its
///   address in the guarded region (tested first).
///
/// Invariant: every sampled block of a class the thread cache keeps has its masked bits 0, from
/// before it is handed out until it is freed. (A mask, one word: `dealloc` tests it in 4
/// instructions, as it tested a flag before the region.)
static SPECIAL_MASK: AtomicUsize = AtomicUsize::new(usize::MAX);

/// Where the sampled region is asked for: at 64 GiB, above the 32 GiB a JVM's compressed
/// pointers want and far below where Linux maps anything it picks itself (the executable and
/// libraries near 2^46-2^47), so the mask has the 27 bits above 2^37.
pub const SAMPLED_REGION_AT: usize = 64 << 30;

/// Address space reserved for the chunks of sampled blocks when the profiler is on: 16 GiB,
/// 4096 chunks. A sampled block of a small class takes a page run of its own (1 to 8 pages),
/// so at the default rate (a sample every 512 KiB) this holds the samples of 2 TiB of live small
/// blocks; only reserved, it costs no memory.
pub const SAMPLED_REGION_BYTES: usize = 16 << 30;

/// Whether `p`, a block Rust's `dealloc` is given, may be a sampled or guarded one (see
/// [`SPECIAL_MASK`]): false for every block when neither kind can exist.
#[inline(always)]
pub fn may_be_special(p: *mut u8) -> bool {
    p as usize & crate::hot::hot_load!(SPECIAL_MASK) == 0
}

/// Makes [`may_be_special`] true for every page-aligned block at least (every block with
/// guarding on), before a sampled block of a cached class is made outside the sampled region;
/// the store comes before the block is handed out, so whoever is given it sees it.
fn page_aligned_special() {
    let wide = if GUARDED.load(Ordering::Relaxed) {
        0
    } else {
        PAGE - 1
    };
    if SPECIAL_MASK.load(Ordering::Relaxed) & !wide != 0 {
        SPECIAL_MASK.store(wide, Ordering::Relaxed);
    }
}

/// The bits above `end` rounded up to a power of two, if a fresh mapping the kernel places
/// itself has one of them set (so blocks below `end` are told apart by them); else 0.
fn mask_above(end: usize) -> usize {
    let above = !end.checked_next_power_of_two().unwrap_or(0).wrapping_sub(1);
    let probe = pal::map(PAGE);
    if probe.is_null() {
        return 0;
    }
    let apart = probe as usize & above != 0;
    // SAFETY: the page was mapped just above and nothing refers to it.
    unsafe { pal::unmap(probe, PAGE) };
    if apart {
        above
    } else {
        0
    }
}

/// Whether guarded blocks may exist (see [`configure_dealloc`]).
static GUARDED: AtomicBool = AtomicBool::new(false);

/// Narrows [`SPECIAL_MASK`] to the regions initialization reserved (after [`configure`] and
/// `guard::configure`): every block sampled or guarded since lies in them. `guarded` is the
/// guarded region, if guarding is on.
pub fn configure_dealloc(opts: &Options, guarded: Option<(usize, usize)>) {
    GUARDED.store(guarded.is_some(), Ordering::Relaxed);
    if !opts.prof && guarded.is_none() {
        // Guarding asked for but refused its memory: no special blocks after all.
        SPECIAL_MASK.store(usize::MAX, Ordering::Relaxed);
        return;
    }
    let region = sampled_region();
    let mut end = 0;
    for (base, len) in guarded.into_iter().chain(region) {
        end = end.max(base + len);
    }
    let apart = if opts.prof && region.is_none() {
        0
    } else {
        mask_above(end)
    };
    let fallback = if guarded.is_some() { 0 } else { PAGE - 1 };
    SPECIAL_MASK.store(if apart != 0 { apart } else { fallback }, Ordering::Relaxed);
}

/// The sampled region's first address and length, if one was reserved (`tally::prof`).
pub fn sampled_region() -> Option<(usize, usize)> {
    Some(chunk::SAMPLED_REGION.bounds()).filter(|&(_, len)| len != 0)
}

/// Whether the profiler is on (`prof:true`): sampled blocks may exist.
#[inline]
pub fn profiler_on() -> bool {
    PROFILER.sampling.is_on()
}

/// Whether the page-aligned block `p` of a class up to `LARGE_MAX` is a sampled block: one load
/// of its page's info word, no page-map walk (such a block always lies in a chunk).
///
/// # Safety
/// `p` must be a live block of Tally's of a class (not huge).
#[inline(always)]
pub unsafe fn is_sampled_class_block(p: *mut u8) -> bool {
    let chunk = chunk::ChunkHeader::of(p as usize);
    // SAFETY: per the contract `p` lies in a live chunk, so its page index is in bounds.
    unsafe {
        let info = (*chunk).page_info[(*chunk).page_index(p as usize)].load(Ordering::Relaxed);
        chunk::info_class(info) == SAMPLED
    }
}

/// Sampled blocks allocated / freed so far, per class (statistics).
pub static SAMPLED_OUT: [AtomicU64; NCLASSES] = [const { AtomicU64::new(0) }; NCLASSES];
/// See [`SAMPLED_OUT`].
pub static SAMPLED_IN: [AtomicU64; NCLASSES] = [const { AtomicU64::new(0) }; NCLASSES];

/// Tally's own code range (0, 0 when linked into the executable), found on the first sample.
static CODE_LO: AtomicUsize = AtomicUsize::new(0);
static CODE_HI: AtomicUsize = AtomicUsize::new(0);
static PREPARED: AtomicU8 = AtomicU8::new(0);

/// [`ThreadBins::prof_flags`](tcache::ThreadBins): set while this thread captures a stack,
/// records a sample or writes a profile.
const IN_PROFILER: u8 = 1;
/// [`ThreadBins::prof_flags`](tcache::ThreadBins): set while [`RESIZING`] holds a run.
const IS_RESIZING: u8 = 2;

std::thread_local! {
    /// The run of the sampled block whose `realloc` to another class is allocating its new size
    /// ([`resizing`]); read only while the thread's [`IS_RESIZING`] flag is set (a
    /// `thread_local!` costs a call to `__tls_get_addr`).
    static RESIZING: Cell<*mut Span> = const { Cell::new(core::ptr::null_mut()) };
}

/// The calling thread's profiler flags ([`IN_PROFILER`], [`IS_RESIZING`]).
#[inline(always)]
fn prof_flags() -> *mut u8 {
    // SAFETY: the thread's own bins, in its thread block; only a field's address is taken.
    unsafe { core::ptr::addr_of_mut!((*tcache::thread_bins()).prof_flags) }
}

/// Sets (`on`) or clears the calling thread's profiler flag `flag`; returns whether it was set.
#[inline(always)]
fn set_prof_flag(flag: u8, on: bool) -> bool {
    let flags = prof_flags();
    // SAFETY: the thread's own flags; no other thread reads or writes them.
    unsafe {
        let was = *flags & flag != 0;
        *flags = if on { *flags | flag } else { *flags & !flag };
        was
    }
}

/// Runs `alloc`, a `realloc`'s allocation of the new size of the sampled block whose run is
/// `span`, so that if that allocation is to be sampled too (the countdown decides, as for any
/// allocation), the block is resized in place (`alloc` returns the block's own address: no new
/// run, no copy): grown over the free pages after its run where there are enough, or, from a
/// class past the thread cache's to a smaller one such, shrunk, the pages after its new end given
/// back to the page heap. The old sample leaves the profile and the new one, of the new size at
/// `realloc`'s stack, takes its place, as when the block moves. Without this a sampled buffer
/// grown a few bytes at a time was copied at every class it crossed: a large block's next
/// allocation is sampled again more often than not (a 256 KiB one seven times in eight at
/// `lg_prof_sample:17`), and a sampled block never grew in place (the suite's `realloc_growth`:
/// the profiler at `lg_prof_sample:17` added 26% to its instructions, most of them copies); and
/// a sampled builder shrunk to its final length was copied too (the same workload's largest
/// remaining copies with the profiler on).
pub fn resizing<R>(span: *mut Span, alloc: impl FnOnce() -> R) -> R {
    RESIZING.set(span);
    set_prof_flag(IS_RESIZING, true);
    let r = alloc();
    set_prof_flag(IS_RESIZING, false);
    RESIZING.set(core::ptr::null_mut());
    r
}

/// [`resize_sampled_in_place`] for `alloc_sampled`: the block's address if it was resized, its
/// old sample gone from the profile (the new one is recorded by the caller; the block's bytes are
/// the program's, so no mark is cleared).
///
/// # Safety
/// As for [`resize_sampled_in_place`].
unsafe fn resample_in_place(span: *mut Span, class: SizeClass) -> Option<*mut u8> {
    // SAFETY: per the contract.
    let old = unsafe { resize_sampled_in_place(span, class) }?;
    SAMPLED_IN[old.index()].fetch_add(1, Ordering::Relaxed);
    SAMPLED_OUT[class.index()].fetch_add(1, Ordering::Relaxed);
    profiler::on_sampled_free(Span::start(span));
    Some(Span::start(span) as *mut u8)
}

/// Resizes the sampled block of run `span` to the class `new` in place: to a larger class if its
/// run has the pages or the pages after it are free; to a smaller one if both are past the
/// thread cache's classes (the only shrink `realloc` resizes in place: one into a cached class
/// moves), the pages after the new end going back to the page heap. Returns its old class if it
/// did.
///
/// # Safety
/// `span` must be the run of a live sampled block (not huge) of the calling thread's, whose
/// `realloc` is in progress.
unsafe fn resize_sampled_in_place(span: *mut Span, new: SizeClass) -> Option<SizeClass> {
    // SAFETY: per the contract `span` is a live sampled run: its chunk is live and belongs to
    // that arena, and its descriptor changes only under the page heap's lock, held below.
    unsafe {
        let arena = arena::of_chunk(Span::chunk(span));
        let mut heap = arena.pages.lock();
        let old = SizeClass((*span).class);
        let pages = new.size().div_ceil(PAGE);
        let have = (*span).pages as usize;
        if new.size() > old.size() {
            // The pages it gains say `SAMPLED`, as its first does.
            if pages > have && !heap.grow_in_place(span, pages) {
                return None;
            }
        } else if new.size() < old.size() && new.index() >= NCACHED && old.index() >= NCACHED {
            if pages < have {
                heap.shrink_in_place(span, pages);
            }
        } else {
            return None;
        }
        (*span).class = new.0;
        Some(old)
    }
}

/// Makes the live sampled block of run `span`, of the large class `class`, an ordinary large
/// block where it is, for a `realloc` whose allocation of the new size is no event (neither
/// sampled nor guarded): its sample leaves the profile, as when it moves to an unsampled block,
/// but its bytes stay. The caller then resizes it as any large block (in place over the pages
/// after it, or by moving it); without this a sampled buffer that was not sampled again was
/// copied out of its run at every class it crossed, even with free pages after it.
///
/// # Safety
/// `span` must be the run of a live sampled block of the calling thread's (not huge) whose
/// `realloc` is in progress, and `class` its class, at least [`NCACHED`] (a sampled block of a
/// class the thread cache keeps may lie in the sampled region, where an ordinary block of that
/// class would take `dealloc`'s slower path).
pub unsafe fn unsample(span: *mut Span, class: SizeClass) {
    debug_assert!(class.index() >= NCACHED);
    profiler::on_sampled_free(Span::start(span));
    SAMPLED_IN[class.index()].fetch_add(1, Ordering::Relaxed);
    // SAFETY: per the contract `span` is a live sampled run: its chunk is live and belongs to
    // that arena; its pages' words change only under the page heap's lock, held here (a
    // neighbour being freed reads the words at the run's ends under it).
    unsafe {
        let chunk = Span::chunk(span);
        let mut heap = arena::of_chunk(chunk).pages.lock();
        let (first, pages) = (Span::first_page(span), (*span).pages as usize);
        // A large block's words: its class at both ends, `FREE_RUN` between (`chunk.rs`).
        (*chunk).mark_run(first, pages, chunk::FREE_RUN);
        (*chunk).mark_ends(first, pages, class.0);
        heap.large_allocated[class.index() - NSMALL] += 1;
    }
}

/// Hands the profiler's options to the profiler (at initialization).
pub fn configure(opts: &Options) {
    // The widest mask that may be needed, before any block is sampled or guarded; narrowed by
    // `configure_dealloc` once both regions are reserved.
    if opts.guard_rate > 0 {
        SPECIAL_MASK.store(0, Ordering::Relaxed);
    } else if opts.prof {
        SPECIAL_MASK.store(PAGE - 1, Ordering::Relaxed);
    }
    if !opts.prof {
        return;
    }
    chunk::SAMPLED_REGION.reserve(SAMPLED_REGION_AT, SAMPLED_REGION_BYTES);
    PROFILER.set_accum(opts.prof_accum);
    PROFILER
        .schedule
        .configure(opts.lg_prof_interval, opts.prof_gdump, opts.prof_prefix());
    // The options admit only signals meant to be sent (`options::is_request_signal`): a handler
    // that returns on SIGSEGV or SIGFPE would run the faulting instruction again forever.
    if opts.prof_signal > 0 {
        if let Err(e) = pal::process::on_signal(opts.prof_signal, on_prof_signal) {
            pal::print(format_args!(
                "tally: prof_signal: cannot handle {}: {}\n",
                pal::process::SignalName(opts.prof_signal),
                pal::OsError(e)
            ));
        }
    }
    PROFILER.sampling.configure(opts.lg_prof_sample, opts.prof_active);
}

/// `prof_signal`'s handler: writes a requested profile (`.m<n>.heap`) at once, so that an idle
/// program (every thread blocked in `read`, `sleep` or `poll`) answers too.
///
/// Writing a dump here is safe because a dump needs no lock and no allocation: it reads the
/// stack table without a lock (published entries never change but for their atomic counters),
/// formats into stack buffers and writes with system calls (`open`, `write`, `fsync`, `rename`,
/// `read` of `/proc/self/maps`), all async-signal-safe, and touches no allocator state. So it
/// may run between any two instructions of the allocator, even with an allocator lock held by
/// the interrupted thread. The one case left to the thread's next allocation event (a flag, as
/// before this handler wrote anything) is a thread interrupted inside the profiler itself
/// ([`in_profiler`]: capturing, recording or writing another profile): a dump would not conflict
/// with it, but the profiler stays non-reentrant on a thread, and that thread was allocating, so
/// its next event is near. `errno` is saved and restored around the system calls.
extern "C" fn on_prof_signal(_: i32) {
    let errno = pal::errno();
    if in_profiler() || !profiler_on() {
        PROFILER.schedule.request();
    } else {
        unsampled(|| PROFILER.dump_scheduled(PROFILER.schedule.next_manual()));
    }
    pal::set_errno(errno);
}

/// Whether the calling thread is inside the profiler (its allocations are not sampled, and it
/// writes no profile).
#[inline]
pub fn in_profiler() -> bool {
    // SAFETY: the thread's own flags.
    unsafe { *prof_flags() & IN_PROFILER != 0 }
}

/// Runs `f` with the thread's profiler guard set: nothing it allocates is sampled (the
/// recording path, and the profiler's work outside it, such as a pprof profile).
pub fn unsampled<R>(f: impl FnOnce() -> R) -> R {
    let was = set_prof_flag(IN_PROFILER, true);
    let r = f();
    set_prof_flag(IN_PROFILER, was);
    r
}

/// Allocates a sampled block for a request of `size` bytes: of `class` from `arena`'s pages,
/// or huge when `class` is `None`. Records its stack. Null when out of memory. Inlined into its
/// one caller, `alloc::alloc_chosen` (itself cold): a frame less between `malloc` and the
/// capture, for the walk to step over and for the call to save and restore (22 instructions a
/// sample).
#[inline(always)]
pub fn alloc_sampled(size: usize, class: Option<SizeClass>, arena: &Arena) -> *mut u8 {
    // What `unsampled` does, and `IS_RESIZING` taken, in one visit to the flags.
    let flags = prof_flags();
    // SAFETY: the thread's own flags; no other thread reads or writes them.
    let was = unsafe {
        let was = *flags;
        *flags = (was & !IS_RESIZING) | IN_PROFILER;
        was
    };
    let resized = if was & IS_RESIZING != 0 {
        RESIZING.replace(core::ptr::null_mut())
    } else {
        core::ptr::null_mut()
    };
    let p = (|| {
        let prepared = prepare();
        let mut frames: profiler::Frames = [MaybeUninit::uninit(); MAX_FRAMES];
        let (n, key) = profiler::capture_stack_keyed(&mut frames, 0);
        // The stack id a key knows is for the frames from `first` on; until the code range
        // that finds `first` is known, `first` is another function of the frames.
        let key = if prepared { key } else { profiler::StackKey::NONE };
        // SAFETY: the capture wrote `frames[..n]`; `MaybeUninit<usize>` has `usize`'s layout.
        let frames = unsafe { core::slice::from_raw_parts(frames.as_ptr().cast::<usize>(), n) };
        let in_place = match class {
            // SAFETY: `resizing`'s caller, `realloc`, gave the run of its live sampled block.
            Some(class) if !resized.is_null() => unsafe { resample_in_place(resized, class) },
            _ => None,
        };
        let p = match (in_place, class) {
            (Some(p), _) => p,
            (None, Some(class)) => {
                let pages = class.size().div_ceil(PAGE);
                let mut run = arena.stash.take(pages);
                if run.is_null() {
                    let mut heap = arena.pages.lock();
                    if class.index() < NCACHED {
                        run = heap.alloc_sampled(pages, SAMPLED, arena.index(), &chunk::SAMPLED_REGION);
                    }
                    if run.is_null() {
                        if class.index() < NCACHED {
                            page_aligned_special();
                        }
                        run = heap.alloc(pages, SAMPLED, RunState::Large, arena.index());
                    }
                }
                if run.is_null() {
                    return core::ptr::null_mut();
                }
                // SAFETY: the run is ours (fresh, or taken from the stash); `class` records the
                // block's class for `malloc_usable_size`, `realloc` and statistics.
                unsafe { (*run).class = class.0 };
                SAMPLED_OUT[class.index()].fetch_add(1, Ordering::Relaxed);
                let p = Span::start(run) as *mut u8;
                // A stashed run's block carries its free mark (and a fresh run may hold an old
                // block's mark where it starts): this block is the program's now.
                // SAFETY: a block of at least 8 bytes, page-aligned, ours.
                unsafe { freed::unmark(p) };
                p
            }
            (None, None) => {
                let p = huge::alloc(size, PAGE);
                // As `alloc::alloc` does for huge blocks: fresh pages balanced by idle ones.
                decay::balance();
                if !p.is_null() {
                    let d = (pagemap::lookup(p as usize) & !pagemap::TAG_HUGE) as *mut huge::HugeBlock;
                    // SAFETY: the page map sends a fresh huge block to its live descriptor.
                    unsafe { (*d).sampled = true };
                }
                p
            }
        };
        if !p.is_null() {
            // `first` depends on the frames alone (the code range is fixed by `prepare`), as the
            // key needs. A stack the profiler knows by the key was interned from the frames from
            // `first` on of the same walk, and no frame is read for it: then `first`, a look at
            // each of the allocator's own frames, is not worked out (28 instructions a sample).
            let first = if profiler::knows_stack(&key) {
                frames.len()
            } else {
                first_caller_frame(frames)
            };
            profiler::on_sampled_alloc_keyed(p as usize, size, &frames[first..], &key);
        }
        p
    })();
    // SAFETY: as above; the guard goes back to what it was (`unsampled`).
    unsafe { *flags = (*flags & !IN_PROFILER) | (was & IN_PROFILER) };
    p
}

/// Frees the sampled block `p` of `class` whose run is `span`, marked free so that a second
/// free is caught: into its arena's stash of sampled runs if `stash` allows, there is room and
/// freed pages may wait (`dirty_decay_ms` is not 0), else back to the page heap. Returns
/// whether the page heap took it (the caller may then tick decay).
///
/// # Safety
/// `p` must be a live sampled block (not huge) that the caller gives up.
#[inline(always)]
pub unsafe fn free_sampled(p: *mut u8, span: *mut Span, class: SizeClass, stash: bool) -> bool {
    profiler::on_sampled_free(p as usize);
    SAMPLED_IN[class.index()].fetch_add(1, Ordering::Relaxed);
    // SAFETY: `span` is the run of a dead sampled block; its chunk belongs to that arena, and
    // the run (at least 8 bytes, page-aligned) is ours to mark and give up.
    unsafe {
        let arena = arena::of_chunk(Span::chunk(span));
        // Marked whether the run waits in the stash or not: every path that hands a block out
        // of pages where one started clears or rewrites its first word.
        freed::mark(p);
        // With `dirty_decay_ms:0` freed pages go back at once, so none wait in a stash.
        if stash && DIRTY_DECAY_MS.load(Ordering::Relaxed) != 0 && arena.stash.put(span) {
            return false;
        }
        arena.pages.lock().free(span);
    }
    true
}

/// Forgets the sampled huge block at `p` (its memory is freed by the caller).
pub fn forget_sampled_huge(p: *mut u8) {
    profiler::on_sampled_free(p as usize);
}

/// First-sample set-up: warms the unwinder up and finds Tally's own code, so captured stacks
/// can start at the allocator's entry point. Returns whether that is done (false while another
/// thread is doing it: the code range is not known yet).
fn prepare() -> bool {
    if PREPARED.load(Ordering::Acquire) == 2 {
        return true;
    }
    if PREPARED
        .compare_exchange(0, 1, Ordering::Acquire, Ordering::Acquire)
        .is_ok()
    {
        profiler::prepare();
        if let Some((lo, hi)) = pal::process::own_code_range() {
            CODE_LO.store(lo, Ordering::Relaxed);
            CODE_HI.store(hi, Ordering::Relaxed);
        }
        PREPARED.store(2, Ordering::Release);
        return true;
    }
    false
}

/// Captures the calling thread's stack for a report of guarded sampling: the program's frames,
/// as `(first, n)` into `frames`: when Tally is a library of its own, none of its frames (not
/// even the entry point a profile keeps: a report names the caller of `malloc` or `free`
/// first); linked into the program, all. Inside the profiler's guard, so that an allocation the
/// unwinder makes is neither sampled nor guarded.
pub fn capture_caller_stack(frames: &mut [usize; MAX_FRAMES]) -> (usize, usize) {
    unsampled(|| {
        prepare();
        let n = profiler::capture_stack(frames, 0);
        let (lo, hi) = (CODE_LO.load(Ordering::Relaxed), CODE_HI.load(Ordering::Relaxed));
        let first = frames[..n].iter().take_while(|&&pc| pc >= lo && pc < hi).count();
        (first, n)
    })
}

/// Index of the first frame to keep: when Tally is a library of its own, its frames are dropped
/// but the outermost (its exported entry point, `malloc` or the like, which jeprof and the report
/// tool know to leave out); linked into the executable, all frames stay.
fn first_caller_frame(frames: &[usize]) -> usize {
    let (lo, hi) = (CODE_LO.load(Ordering::Relaxed), CODE_HI.load(Ordering::Relaxed));
    if lo == hi {
        return 0;
    }
    // `lo <= pc < hi` as one unsigned compare.
    let inside = frames
        .iter()
        .take_while(|&&pc| pc.wrapping_sub(lo) < hi - lo)
        .count();
    inside.saturating_sub(1)
}

/// Tells the profiler about `bytes` a thread allocated and writes the profiles that are due
/// (from a thread event, outside every allocator lock).
pub fn on_bytes(bytes: u64) {
    if !profiler_on() {
        return;
    }
    PROFILER.schedule.count_bytes(bytes);
    if PROFILER.schedule.may_be_due() && !in_profiler() {
        unsampled(|| PROFILER.write_due_profiles(mapped_bytes));
    }
}

/// Bytes Tally has mapped (chunks and huge blocks, cached ones included), for `prof_gdump`.
fn mapped_bytes() -> u64 {
    let chunks =
        chunk::CHUNKS_MAPPED.load(Ordering::Relaxed) - chunk::CHUNKS_UNMAPPED.load(Ordering::Relaxed);
    chunks * CHUNK as u64
        + huge::HUGE_BYTES.load(Ordering::Relaxed)
        + mapcache::HUGE_CACHED.load(Ordering::Relaxed)
}

/// Writes a profile to `path` ([`DumpError::Off`] if the profiler is off).
pub fn dump_to(path: &[u8]) -> Result<(), DumpError> {
    unsampled(|| profiler::dump_to_path(path))
}

/// Writes a manual profile named after `prof_prefix` (`.m<n>.heap`).
pub fn dump_manual() -> Result<u64, DumpError> {
    unsampled(|| PROFILER.dump_manual())
}

/// At exit: the final profile (`prof_final`) and the leak summary (`prof_leak`).
pub fn at_exit(opts: &Options) {
    if opts.prof {
        unsampled(|| PROFILER.at_exit(opts.prof_final, opts.prof_leak));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_profiler_flags_live_in_the_thread_block_and_nest() {
        let block = pal::thread::thread_block() as usize;
        let flags = prof_flags() as usize;
        assert!(
            (block..block + pal::thread::THREAD_BLOCK_BYTES).contains(&flags),
            "the flags are in the thread block (no `__tls_get_addr` call to find them)"
        );
        assert!(!in_profiler());
        let inner = unsampled(|| {
            assert!(in_profiler());
            let nested = unsampled(in_profiler);
            (nested, in_profiler())
        });
        assert_eq!(inner, (true, true), "a nested guard leaves the outer one set");
        assert!(!in_profiler(), "the guard is cleared when the outermost returns");

        // The resizing run is seen once, by the allocation it is for, and never after.
        let span = 0x1000 as *mut Span;
        let seen = resizing(span, || {
            // SAFETY: the thread's own flags.
            let flagged = unsafe { *prof_flags() & IS_RESIZING != 0 };
            (flagged, RESIZING.get())
        });
        assert_eq!(seen, (true, span));
        // SAFETY: the thread's own flags.
        assert_eq!(unsafe { *prof_flags() }, 0, "no flag left set");
        assert!(RESIZING.get().is_null());
        // Other threads have flags of their own.
        unsampled(|| {
            std::thread::scope(|s| {
                s.spawn(|| assert!(!in_profiler())).join().unwrap();
            })
        });
    }
}
