//! The core entry points every front end calls: allocate, free, resize, size a block. The C ABI
//! (`capi.rs`), Rust's `GlobalAlloc` (`global.rs`) and the Rust API (`api.rs`) are thin shims
//! over this module.
//!
//! # Fast paths
//! `alloc` of a small size: one table lookup for the class, the thread's bins at a fixed offset
//! from the thread pointer, one compare of the bin's count, one pop. `free` of a small block: the page-map lookup (two loads), the
//! page's info word, a multiply to check the pointer is a block boundary, one compare, one push.
//! Everything else — empty or full bins, large and huge blocks, a thread's first call, errors —
//! is in `#[cold]` functions.
//!
//! # Thread states
//! Each thread is `Uninit` until its first call that misses, then `Initializing` while its cache
//! is made (calls made meanwhile, for example by `pthread_setspecific`, are served straight from
//! an arena), then `Ready`. At thread exit the cache is flushed and the thread is `TornDown`:
//! destructors that run after ours still allocate, straight from an arena. With `tcache:false`
//! threads stay `NoCache`. A thread without a cache has bins of capacity 0 (its thread block
//! starts zeroed), so "no cache" is just a miss on the fast path, never an extra branch.

use core::cell::{Cell, UnsafeCell};
use core::ffi::c_void;
use core::ptr;
use core::sync::atomic::{AtomicU32, AtomicU8, Ordering};

use crate::arena::{self, Arena};
use crate::chunk::{info_class, info_offset, ChunkHeader, CHUNK, CHUNK_SHIFT};
use crate::huge::{self, HugeBlock};
use crate::options::{self, Options};
use crate::pagemap::{self, TAG_HUGE};
use crate::pal::{self, PAGE, PAGE_SHIFT};
use crate::size_class::{class_for, class_for_aligned, SizeClass, LARGE_MAX, NCACHED, NCLASSES, SMALL_MAX};
use crate::tcache::{self, thread_bins, TCache, ThreadBins};
use crate::{decay, sample};

/// Largest request Tally tries to serve; anything larger fails with `ENOMEM`.
pub const MAX_REQUEST: usize = isize::MAX as usize - 2 * CHUNK;

#[derive(Clone, Copy, PartialEq, Eq)]
enum ThreadState {
    Uninit,
    Initializing,
    Ready,
    TornDown,
    NoCache,
}

thread_local! {
    static STATE: Cell<ThreadState> = const { Cell::new(ThreadState::Uninit) };
    /// Whether this thread is running process-wide initialization.
    static IN_GLOBAL_INIT: Cell<bool> = const { Cell::new(false) };
    /// Arena for calls served without a cache.
    static DIRECT_ARENA: Cell<*const Arena> = const { Cell::new(ptr::null()) };
}

// ---------------------------------------------------------------------------------------------
// Process-wide initialization.

const GLOBAL_NEW: u8 = 0;
const GLOBAL_RUNNING: u8 = 1;
const GLOBAL_READY: u8 = 2;

static GLOBAL: AtomicU8 = AtomicU8::new(GLOBAL_NEW);
static THREAD_KEY: AtomicU32 = AtomicU32::new(u32::MAX);

/// The options, written once by the initializing thread before `GLOBAL` becomes ready.
struct OptionsCell(UnsafeCell<Options>);
// SAFETY: written only by the one thread that wins the GLOBAL_NEW -> GLOBAL_RUNNING exchange,
// before the Release store of GLOBAL_READY; read only after an Acquire load sees it.
unsafe impl Sync for OptionsCell {}
static OPTIONS: OptionsCell = OptionsCell(UnsafeCell::new(Options::DEFAULT));

/// The options in force (defaults until initialization has read the environment).
pub fn options() -> Options {
    if GLOBAL.load(Ordering::Acquire) == GLOBAL_READY {
        // SAFETY: see OptionsCell.
        unsafe { *OPTIONS.0.get() }
    } else {
        Options::DEFAULT
    }
}

/// Makes sure process-wide initialization has run (or is running in this thread).
#[inline]
fn ensure_global() {
    if GLOBAL.load(Ordering::Acquire) != GLOBAL_READY {
        init_global();
    }
}

#[cold]
#[inline(never)]
fn init_global() {
    match GLOBAL.compare_exchange(GLOBAL_NEW, GLOBAL_RUNNING, Ordering::Acquire, Ordering::Acquire) {
        Ok(_) => {}
        Err(GLOBAL_READY) => return,
        Err(_) => {
            // A call from inside our own initialization (pthread_atfork may allocate) goes on
            // with the defaults; other threads wait.
            if IN_GLOBAL_INIT.get() {
                return;
            }
            while GLOBAL.load(Ordering::Acquire) != GLOBAL_READY {
                // SAFETY: sched_yield has no preconditions.
                unsafe { libc::sched_yield() };
            }
            return;
        }
    }
    IN_GLOBAL_INIT.set(true);
    if pal::kernel_page_size() != PAGE {
        pal::fatal(format_args!(
            "tally: the kernel's page size is {}, Tally needs {PAGE}\n",
            pal::kernel_page_size()
        ));
    }
    let mut opts = Options::DEFAULT;
    let mut errors = 0;
    let mut report = |line: &[u8]| pal::write_stderr(line);
    if let Some(text) = pal::getenv(c"MALLOC_CONF") {
        errors += options::parse("MALLOC_CONF", text, &mut opts, &mut report);
    }
    if let Some(text) = pal::getenv(c"TALLY_CONF") {
        errors += options::parse("TALLY_CONF", text, &mut opts, &mut report);
    }
    if errors > 0 && opts.abort_conf {
        pal::fatal(format_args!(
            "tally: aborting on configuration errors (abort_conf:true)\n"
        ));
    }
    let narenas = if opts.narenas == 0 {
        4 * pal::cpu_count()
    } else {
        opts.narenas
    };
    arena::set_arena_count(narenas);
    opts.narenas = arena::arena_count();
    if opts.stats_print {
        // Programs such as GNU coreutils close stderr before exiting; keep our own copy for the
        // report printed at exit.
        pal::keep_stderr();
    }
    decay::configure(&opts);
    tcache::configure(opts.tcache_max);
    sample::configure(&opts);
    // SAFETY: only this thread writes OPTIONS, before publishing GLOBAL_READY.
    unsafe { *OPTIONS.0.get() = opts };
    if let Some(key) = pal::thread_exit_key(thread_exit) {
        THREAD_KEY.store(key, Ordering::Relaxed);
    }
    pal::on_fork(prefork, postfork_parent, postfork_child);
    GLOBAL.store(GLOBAL_READY, Ordering::Release);
    IN_GLOBAL_INIT.set(false);
    // Creating a thread allocates, so it comes last, with initialization complete.
    decay::start_background_thread();
}

// ---------------------------------------------------------------------------------------------
// Threads.

/// Gives the calling thread a cache if it may have one. Returns true if it now has one, false
/// when the thread is to be served without a cache.
#[cold]
#[inline(never)]
fn thread_start() -> bool {
    if STATE.get() != ThreadState::Uninit {
        return false;
    }
    STATE.set(ThreadState::Initializing);
    ensure_global();
    if !options().caches_enabled() {
        STATE.set(ThreadState::NoCache);
        return false;
    }
    let tb = thread_bins();
    // SAFETY: `tb` is this thread's bins; an Uninit thread has no cache.
    let tc = unsafe { TCache::attach(tb) };
    if tc.is_null() {
        STATE.set(ThreadState::Uninit);
        return false;
    }
    let key = THREAD_KEY.load(Ordering::Relaxed);
    if key != u32::MAX {
        pal::arm_thread_exit(key, tc.cast());
    }
    STATE.set(ThreadState::Ready);
    true
}

/// Whether the calling thread has a cache.
#[inline]
fn has_cache(tb: *mut ThreadBins) -> bool {
    // SAFETY: the thread's own bins.
    unsafe { !(*tb).cache.is_null() }
}

/// Thread-exit destructor: flushes the thread's cache and returns it to the pool.
unsafe extern "C" fn thread_exit(tc: *mut c_void) {
    let tb = thread_bins();
    // SAFETY: the exiting thread's own bins.
    if tc.is_null() || unsafe { (*tb).cache } != tc.cast::<TCache>() {
        return;
    }
    STATE.set(ThreadState::TornDown);
    // SAFETY: the cache belongs to this thread, which is exiting.
    unsafe { TCache::detach(tb) };
}

/// Returns every block in the calling thread's cache to its arena.
pub fn flush_thread_cache() {
    let tb = thread_bins();
    if has_cache(tb) {
        for i in 0..NCACHED {
            // SAFETY: the calling thread's own bins, with a cache.
            unsafe { tcache::flush(tb, SizeClass(i as u8), 0) };
        }
    }
}

/// The arena for calls served without a cache.
fn direct_arena() -> &'static Arena {
    let a = DIRECT_ARENA.get();
    if !a.is_null() {
        // SAFETY: DIRECT_ARENA only ever holds pointers into the static ARENAS.
        return unsafe { &*a };
    }
    let a = arena::next_arena();
    DIRECT_ARENA.set(a);
    a
}

/// The calling thread's arena.
fn thread_arena() -> &'static Arena {
    let tb = thread_bins();
    if has_cache(tb) {
        // SAFETY: a thread's own live cache; its arena is one of the static ARENAS.
        unsafe { &*(*(*tb).cache).arena }
    } else {
        direct_arena()
    }
}

// ---------------------------------------------------------------------------------------------
// Allocation.

/// Allocates `size` bytes (`size == 0` gives a unique minimal block). Null when out of memory.
#[inline(always)]
pub fn alloc(size: usize) -> *mut u8 {
    if size <= SMALL_MAX {
        // SAFETY: sizes up to SMALL_MAX always have a class.
        let class = unsafe { class_for(size).unwrap_unchecked() };
        return alloc_small(class, size);
    }
    alloc_big(size, PAGE)
}

/// Allocates one block of `class`, a class the thread cache keeps (small, or large up to
/// `TCACHE_MAX`).
/// `size` is the request (it drives the thread's event countdown).
#[inline(always)]
fn alloc_small(class: SizeClass, size: usize) -> *mut u8 {
    let tb = thread_bins();
    debug_assert!(class.index() < NCACHED);
    // SAFETY: `tb` is this thread's bins and callers pass only cached classes; a bin with
    // count > 0 holds `count` valid slots (ThreadBins invariant).
    unsafe {
        let event = (*tb).event - size as i64;
        (*tb).event = event;
        let bin = (*tb).bins.get_unchecked(class.index());
        let count = bin.count();
        if (count != 0) & (event >= 0) {
            bin.set_count(count - 1);
            bin.count_malloc();
            return *bin.slots.add(count as usize - 1);
        }
    }
    alloc_small_miss(class, size)
}

#[cold]
#[inline(never)]
fn alloc_small_miss(class: SizeClass, size: usize) -> *mut u8 {
    let tb = thread_bins();
    // SAFETY: the thread's own bins.
    if unsafe { (*tb).event } < 0 && unsafe { sample::on_event(tb) } {
        ensure_global();
        return sample::alloc_sampled(size, Some(class), thread_arena());
    }
    if !has_cache(tb) && !thread_start() {
        return alloc_direct(class);
    }
    // SAFETY: `tb` is this thread's bins, with a cache.
    unsafe {
        let bin = &(*tb).bins[class.index()];
        let count = bin.count();
        if count != 0 {
            // The miss was the event countdown; the bin has blocks.
            bin.set_count(count - 1);
            bin.count_malloc();
            return *bin.slots.add(count as usize - 1);
        }
        if bin.cap == 0 {
            // A class above `tcache_max`.
            return alloc_direct(class);
        }
    }
    decay::tick();
    // SAFETY: `tb` is this thread's bins, with a cache, and the bin is empty.
    unsafe { tcache::fill_and_pop(tb, class) }
}

/// Counts `size` bytes against the thread's event countdown (for allocations that do not go
/// through `alloc_small`); returns whether this allocation is to be sampled.
fn count_down(size: usize) -> bool {
    let tb = thread_bins();
    // SAFETY: the thread's own bins.
    unsafe {
        (*tb).event -= size.min(i64::MAX as usize) as i64;
        (*tb).event < 0 && sample::on_event(tb)
    }
}

/// Allocates one block of a cached class straight from an arena (no cache, or a class above
/// `tcache_max`), applying `junk` and `zero`.
fn alloc_direct(class: SizeClass) -> *mut u8 {
    let arena = direct_arena();
    let p = if class.is_small() {
        let mut one = [ptr::null_mut()];
        arena.bins[class.index()].fill(class, &arena.pages, &mut one);
        one[0]
    } else {
        arena.alloc_large(class, PAGE)
    };
    tcache::MERGED_NMALLOC[class.index()].fetch_add(1, Ordering::Relaxed);
    new_block(p, class.size())
}

/// Applies `junk:alloc` and `zero` to a fresh block of `usable` bytes (slow paths only: these
/// options turn the thread caches off).
fn new_block(p: *mut u8, usable: usize) -> *mut u8 {
    if !p.is_null() {
        let opts = options();
        if opts.zero {
            // SAFETY: `p` is a fresh block of `usable` bytes.
            unsafe { ptr::write_bytes(p, 0, usable) };
        } else if opts.junk_alloc {
            // SAFETY: as above.
            unsafe { ptr::write_bytes(p, 0xa5, usable) };
        }
    }
    p
}

/// Applies `junk:free` to a block of `usable` bytes about to be freed.
fn dead_block(p: *mut u8, usable: usize) {
    if options().junk_free {
        // SAFETY: the caller gives up `p`, a block of `usable` bytes.
        unsafe { ptr::write_bytes(p, 0x5a, usable) };
    }
}

/// Allocates a large or huge block of `size` bytes aligned to `align`.
#[cold]
#[inline(never)]
fn alloc_big(size: usize, align: usize) -> *mut u8 {
    if size > MAX_REQUEST {
        return ptr::null_mut();
    }
    if let Some(class) = class_for(size.max(SMALL_MAX + 1)) {
        if class.index() < NCACHED && align <= PAGE {
            return alloc_small(class, size);
        }
        ensure_global();
        if count_down(size) && align <= PAGE {
            return sample::alloc_sampled(size, Some(class), thread_arena());
        }
        decay::tick();
        let p = thread_arena().alloc_large(class, align);
        if !p.is_null() {
            return new_block(p, class.size());
        }
        if align <= PAGE {
            return p;
        }
    }
    ensure_global();
    if count_down(size) && align <= PAGE {
        return sample::alloc_sampled(size, None, thread_arena());
    }
    decay::tick();
    let p = huge::alloc(size, align);
    if !p.is_null() && options().junk_alloc {
        return new_block(p, size);
    }
    p
}

/// Allocates `size` bytes aligned to `align`, a power of two. Null when out of memory.
#[inline(always)]
pub fn alloc_aligned(size: usize, align: usize) -> *mut u8 {
    debug_assert!(align.is_power_of_two());
    if align <= 8 || (align <= 16 && size > 8) {
        return alloc(size);
    }
    if align <= PAGE {
        match class_for_aligned(size, align) {
            Some(class) if class.is_small() => alloc_small(class, size),
            _ => alloc_big(size, PAGE),
        }
    } else {
        alloc_big(size, align)
    }
}

/// Allocates `n * size` zeroed bytes; null (with `errno` untouched) on overflow or when out of
/// memory.
pub fn alloc_zeroed(size: usize) -> *mut u8 {
    let p = alloc(size);
    if !p.is_null() && (size <= LARGE_MAX || options().junk_alloc || huge::is_recycled(p)) {
        // SAFETY: `p` is a fresh block of at least `size` bytes. Huge blocks in fresh mappings
        // are already zero (unless `junk` filled them).
        unsafe { ptr::write_bytes(p, 0, size) };
    }
    p
}

// ---------------------------------------------------------------------------------------------
// Finding a block from a pointer.

/// What a pointer handed to `free` or `realloc` refers to.
enum Block {
    Small(SizeClass),
    Large(*mut crate::chunk::Span, SizeClass),
    /// A block the profiler sampled: a page run of its own, of the given class.
    Sampled(*mut crate::chunk::Span, SizeClass),
    Huge(*mut HugeBlock),
}

/// Identifies the block at `p`, or aborts with a one-line message naming `who` and `p` if `p`
/// is not the start of a live block Tally handed out.
fn block_of(p: *mut u8, who: &str) -> Block {
    let addr = p as usize;
    let entry = pagemap::lookup(addr);
    if entry == 0 {
        invalid(who, p, format_args!("not allocated by Tally"));
    }
    if entry & TAG_HUGE != 0 {
        let d = (entry & !TAG_HUGE) as *mut HugeBlock;
        // SAFETY: page-map entries tagged huge point at live descriptors.
        let base = unsafe { (*d).base };
        if base != addr {
            invalid(who, p, format_args!("inside a huge block at {:#x}", base));
        }
        return Block::Huge(d);
    }
    let chunk = entry as *mut ChunkHeader;
    // SAFETY: untagged non-zero entries point at live chunk headers, and `addr` lies in that
    // chunk, so its page index is in bounds.
    unsafe {
        let page = (*chunk).page_index(addr);
        let info = (*chunk).page_info[page].load(Ordering::Relaxed);
        let class = info_class(info);
        if class == sample::SAMPLED {
            let head = page - info_offset(info);
            if addr != (*chunk).page_addr(head) {
                invalid(
                    who,
                    p,
                    format_args!("inside a sampled block at {:#x}", (*chunk).page_addr(head)),
                );
            }
            let span = ptr::addr_of_mut!((*chunk).spans[head]);
            return Block::Sampled(span, SizeClass((*span).class));
        }
        if class as usize >= NCLASSES {
            invalid(who, p, format_args!("not a live block"));
        }
        let class = SizeClass(class);
        let head = page - info_offset(info);
        let start = (*chunk).page_addr(head);
        if class.is_small() {
            let offset = addr - start;
            let index = class.divide(offset);
            if index * class.size() != offset || index >= class.slab_objects() {
                invalid(
                    who,
                    p,
                    format_args!("not the start of a {}-byte block", class.size()),
                );
            }
            Block::Small(class)
        } else {
            if addr != start {
                invalid(
                    who,
                    p,
                    format_args!("inside a block of {} bytes at {:#x}", class.size(), start),
                );
            }
            Block::Large(ptr::addr_of_mut!((*chunk).spans[head]), class)
        }
    }
}

#[cold]
#[inline(never)]
fn invalid(who: &str, p: *mut u8, why: core::fmt::Arguments<'_>) -> ! {
    pal::fatal(format_args!("tally: {who}(): invalid pointer {p:p}: {why}\n"))
}

/// The small class of `p` if it is a valid small block, checked inline; `None` for anything
/// else (large, huge or invalid: the caller's slow path sorts those out).
#[inline(always)]
fn small_class_of(p: *mut u8) -> Option<SizeClass> {
    small_block_of(p).map(|(class, _)| class)
}

/// The class of `p` and the index of the arena owning it, if `p` is a valid small block.
#[inline(always)]
fn small_block_of(p: *mut u8) -> Option<(SizeClass, u32)> {
    let addr = p as usize;
    let entry = pagemap::lookup(addr);
    if entry == 0 || entry & TAG_HUGE != 0 {
        return None;
    }
    let chunk = entry as *const ChunkHeader;
    // SAFETY: untagged non-zero entries point at live chunk headers containing `addr`.
    unsafe {
        let page = (addr - chunk as usize) >> PAGE_SHIFT;
        let info = (*chunk).page_info[page].load(Ordering::Relaxed);
        let class = SizeClass(info_class(info));
        if !class.is_small() {
            return None;
        }
        let start = chunk as usize + ((page - info_offset(info)) << PAGE_SHIFT);
        let offset = addr - start;
        let index = class.divide(offset);
        if index * class.size() != offset || index >= class.slab_objects() {
            return None;
        }
        Some((class, (*chunk).arena))
    }
}

// ---------------------------------------------------------------------------------------------
// Freeing.

/// Frees `p` (null is ignored). Aborts with a message if `p` is not a live block of Tally's.
///
/// # Safety
/// `p` must not be used after this call.
#[inline(always)]
pub unsafe fn free(p: *mut u8) {
    if let Some((class, arena)) = small_block_of(p) {
        // SAFETY: `p` is a valid small block of `class` the caller gives up; the thread's own
        // bins.
        unsafe {
            if arena != (*thread_bins()).arena {
                return free_foreign(p, class);
            }
            return free_known(p, class);
        }
    }
    if !p.is_null() {
        // SAFETY: the caller gives up `p`.
        unsafe { free_other(p, "free") }
    }
}

/// Frees `p`, a small block of another thread's arena: into the thread cache like any block,
/// but under the top slot, so the thread's next allocation of the class is the block it freed
/// last of its own. Reusing the other thread's block at once would put this thread's next
/// object next to that thread's objects, on a cache line both write (active false sharing);
/// buried, it waits until the bin drains, or goes home with the next flush, which takes the
/// oldest blocks first. Into an empty bin it goes home at once: measured against filling the bin
/// first and burying it there, that keeps a thread that frees other threads' blocks (a consumer,
/// or the thread collecting exited workers' leftovers) from holding them: peak RSS of
/// `thread_churn` 7.9 MiB instead of 11.6, `prodcons` 4.1 instead of 4.6.
///
/// # Safety
/// `p` must be a live block of `class` (a cached class) that the caller gives up.
#[inline(never)]
unsafe fn free_foreign(p: *mut u8, class: SizeClass) {
    let tb = thread_bins();
    // SAFETY: the thread's own bins; a bin with 0 < count < cap has a top slot and room above.
    unsafe {
        let bin = (*tb).bins.get_unchecked(class.index());
        let count = bin.count();
        if count == 0 && bin.cap > 0 {
            // Nothing to bury it under: on top it would be the next block of the class, again
            // after every free, and the bin would never fill from this thread's arena.
            dead_block(p, class.size());
            tcache::return_grouped(class, &mut [p]);
            return;
        }
        if count == 0 || count >= bin.cap as u32 {
            return free_known(p, class);
        }
        let top = bin.slots.add(count as usize - 1);
        *bin.slots.add(count as usize) = *top;
        *top = p;
        bin.set_count(count + 1);
    }
}

/// Puts `p` in the thread cache (flushing half of the bin first if it is full), or returns it to
/// its arena when the thread has no cache.
///
/// # Safety
/// `p` must be a live block of `class` (a cached class) that the caller gives up.
#[cold]
#[inline(never)]
unsafe fn free_small_miss(p: *mut u8, class: SizeClass) {
    let tb = thread_bins();
    // SAFETY: the thread's own bins.
    if (!has_cache(tb) && !thread_start()) || unsafe { (*tb).bins[class.index()].cap } == 0 {
        dead_block(p, class.size());
        // SAFETY: `p` is a free block of `class` only we can reach.
        unsafe { tcache::return_grouped(class, &mut [p]) };
        decay::tick();
        return;
    }
    // SAFETY: `tb` is this thread's bins, with a cache.
    unsafe {
        let bin = &(*tb).bins[class.index()];
        if bin.count() == bin.cap as u32 {
            tcache::flush(tb, class, bin.cap as usize / 2);
            decay::tick();
        }
        let bin = &(*tb).bins[class.index()];
        let count = bin.count();
        *bin.slots.add(count as usize) = p;
        bin.set_count(count + 1);
    }
}

/// Frees a pointer that is not a valid small block: a large or huge block, or an error.
///
/// # Safety
/// The caller gives up `p`.
#[cold]
#[inline(never)]
unsafe fn free_other(p: *mut u8, who: &str) {
    match block_of(p, who) {
        // A small block reaching here passed the checks in `block_of`; free it normally.
        // SAFETY: the caller gives up `p`.
        Block::Small(class) => unsafe { free_small_miss(p, class) },
        // SAFETY: the caller gives up `p`, a live large block of `class`.
        Block::Large(_, class) if class.index() < NCACHED => unsafe { free_small_miss(p, class) },
        Block::Large(span, class) => {
            dead_block(p, class.size());
            let chunk = crate::chunk::Span::chunk(span);
            // SAFETY: `span` is the live large run of `p`, which the caller gives up.
            unsafe { arena::of_chunk(chunk).free_large(span) };
            decay::tick();
        }
        Block::Sampled(span, class) => {
            dead_block(p, class.size());
            // SAFETY: `p` is a live sampled block of `class` with run `span`, given up.
            unsafe { sample::free_sampled(p, span, class) };
            decay::tick();
        }
        // SAFETY: `d` is the live descriptor of `p`, which the caller gives up.
        Block::Huge(d) => unsafe {
            dead_block(p, (*d).mapped);
            if (*d).sampled {
                sample::forget_sampled_huge(p);
            }
            huge::free(d);
        },
    }
}

/// Frees `p`, a block the caller knows to be of `class`, a class the thread cache keeps (Rust's
/// `dealloc` knows the size it asked for). Skips the page-map lookup and pointer checks.
///
/// # Safety
/// `p` must be a live block of `class` allocated by Tally, not used after this call.
#[inline(always)]
pub unsafe fn free_known(p: *mut u8, class: SizeClass) {
    let tb = thread_bins();
    debug_assert!(class.index() < NCACHED);
    // SAFETY: `tb` is this thread's bins and callers pass only cached classes; a bin with
    // count < cap has room for one more slot.
    unsafe {
        let bin = (*tb).bins.get_unchecked(class.index());
        let count = bin.count();
        if count < bin.cap as u32 {
            *bin.slots.add(count as usize) = p;
            bin.set_count(count + 1);
            return;
        }
        free_small_miss(p, class)
    }
}

/// The usable size of the block at `p` (0 for null). Aborts if `p` is not a live block.
pub fn usable_size(p: *mut u8) -> usize {
    if p.is_null() {
        return 0;
    }
    if let Some(class) = small_class_of(p) {
        return class.size();
    }
    match block_of(p, "malloc_usable_size") {
        Block::Small(class) | Block::Large(_, class) | Block::Sampled(_, class) => class.size(),
        // SAFETY: live descriptor.
        Block::Huge(d) => unsafe { (*d).mapped },
    }
}

// ---------------------------------------------------------------------------------------------
// Resizing.

/// Resizes the block `p` to `size` bytes, moving it if needed; null `p` allocates; `size == 0`
/// frees `p` and returns null. On failure returns null and leaves `p` untouched.
///
/// # Safety
/// `p` must be null or a live block; if the result is non-null and differs from `p`, `p` is
/// freed.
pub unsafe fn realloc(p: *mut u8, size: usize) -> *mut u8 {
    if p.is_null() {
        return alloc(size);
    }
    if size == 0 {
        // SAFETY: the caller gives up `p`.
        unsafe { free(p) };
        return ptr::null_mut();
    }
    if size > MAX_REQUEST {
        return ptr::null_mut();
    }
    // Small blocks (most reallocs: a string builder growing by a few bytes) are found by the
    // inlined check the free fast path uses; everything else, and an invalid pointer (which
    // fails that check), by `block_of`.
    let block = match small_block_of(p) {
        Some((class, _)) => Block::Small(class),
        None => block_of(p, "realloc"),
    };
    let old_size = match block {
        Block::Small(class) | Block::Large(_, class) | Block::Sampled(_, class) => {
            let new_class = class_for(size);
            if new_class == Some(class) {
                return p;
            }
            if let (Block::Large(span, _), Some(new_class)) = (&block, new_class) {
                if !new_class.is_small() {
                    let chunk = crate::chunk::Span::chunk(*span);
                    // SAFETY: `span` is the live large run of `p`, owned by the caller.
                    if unsafe { arena::of_chunk(chunk).resize_large_in_place(*span, new_class) } {
                        return p;
                    }
                }
            }
            class.size()
        }
        Block::Huge(d) => {
            if size > LARGE_MAX {
                // SAFETY: `d` is the live descriptor of `p`, owned by the caller.
                return unsafe { huge::resize(d, size) };
            }
            // SAFETY: live descriptor.
            unsafe { (*d).mapped }
        }
    };
    let q = alloc(size);
    if q.is_null() {
        return q;
    }
    // SAFETY: `p` holds `old_size` bytes and `q` at least `size`; distinct live blocks.
    unsafe {
        ptr::copy_nonoverlapping(p, q, old_size.min(size));
        free(p);
    }
    q
}

// ---------------------------------------------------------------------------------------------
// fork.

static FORK_LOCKED: AtomicU8 = AtomicU8::new(0);

unsafe extern "C" fn prefork() {
    if GLOBAL.load(Ordering::Acquire) != GLOBAL_READY {
        return;
    }
    // Lock order: see sync.rs. The profiler's table locks are never held while an allocator lock
    // is taken (or the reverse), so they can come first.
    tally_profiler::PROFILER.lock_for_fork();
    for arena in &arena::ARENAS[..arena::arena_count()] {
        arena.lock_for_fork();
    }
    huge::lock_for_fork();
    tcache::lock_for_fork();
    crate::meta::lock_for_fork();
    FORK_LOCKED.store(1, Ordering::Relaxed);
}

unsafe fn postfork(child: bool) {
    if FORK_LOCKED.swap(0, Ordering::Relaxed) == 0 {
        return;
    }
    // SAFETY: prefork took every one of these locks in this thread.
    unsafe {
        crate::meta::unlock_after_fork(child);
        tcache::unlock_after_fork(child);
        huge::unlock_after_fork(child);
        for arena in &arena::ARENAS[..arena::arena_count()] {
            arena.unlock_after_fork(child);
        }
        tally_profiler::PROFILER.unlock_after_fork();
    }
}

unsafe extern "C" fn postfork_parent() {
    // SAFETY: called by fork after prefork, in the forking thread.
    unsafe { postfork(false) }
}

unsafe extern "C" fn postfork_child() {
    // SAFETY: called by fork after prefork, in the only thread of the child.
    unsafe { postfork(true) }
}

const _: () = assert!(CHUNK_SHIFT > PAGE_SHIFT);
