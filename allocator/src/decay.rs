//! Decay: freed pages go back to the OS on a schedule.
//!
//! The page heaps (`extent.rs`) know which free runs are dirty and since when; this module
//! decides when they look. Allocator activity calls [`tick`] (every
//! [`crate::thread_event::TICKS_PER_LOOK`]th of a thread's ticks: one every [`TICK_BYTES`] it
//! allocates and one for each slow path it takes; [`balance`] at every tick), which at most
//! once per [`interval_ms`] purges every
//! arena whose lock is free. With `background_thread:true` a thread of Tally's own does the same
//! on time while the program is idle; after `fork` it is started again in the child on the first
//! tick. `malloc_trim(0)`, and an allocation the OS refused before it tries again, purge
//! everything at once ([`purge_all`]). The chunks a purge finds wholly free are unmapped at the
//! end of the pass, or at the next tick, once every thread has forgotten them
//! ([`unmap_retired`]).
//!
//! Free pages of an arena serve only its threads, so decay alone lets each arena keep the most
//! its threads ever freed. [`tick`] also balances: pages any arena faults in (new chunks, or
//! pages given back before) make as many free resident pages go back at once from the arenas
//! holding the most beyond twice what they use ([`balance`], issue 13).

use core::ffi::c_void;
use core::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use crate::arena::{self, Arena, ARENAS};
use crate::bin;
use crate::chunk;
use crate::extent::{DIRTY_DECAY_MS, FRESH_PAGES, MUZZY_DECAY_MS};
use crate::huge;
use crate::options::Options;
use crate::size_class::SizeClass;
use tally_pal as pal;

/// A thread balances ([`balance`]) and steps its cache's GC after allocating this many bytes,
/// and calls [`tick`] every [`crate::thread_event::TICKS_PER_LOOK`]th time.
pub const TICK_BYTES: i64 = 64 * 1024;

static NEXT_TICK_MS: AtomicU64 = AtomicU64::new(0);
static BACKGROUND: AtomicBool = AtomicBool::new(false);
/// The background thread's run: the process it runs in (high 32 bits; 0: none) and a number
/// counting starts (low 32 bits). A thread that finds another value here exits.
static BACKGROUND_RUN: AtomicU64 = AtomicU64::new(0);
/// Purge passes run so far (a statistic).
pub static PASSES: AtomicU64 = AtomicU64::new(0);

#[cfg(test)]
std::thread_local! {
    /// The calling thread's calls of [`tick`], for the tests.
    pub static LOOKS: core::cell::Cell<u64> = const { core::cell::Cell::new(0) };
}

/// Takes the decay settings from the options (at initialization).
pub fn configure(opts: &Options) {
    DIRTY_DECAY_MS.store(opts.dirty_decay_ms, Ordering::Relaxed);
    MUZZY_DECAY_MS.store(opts.muzzy_decay_ms, Ordering::Relaxed);
    BACKGROUND.store(opts.background_thread, Ordering::Relaxed);
}

/// How often purging looks: a tenth of the shortest positive decay time, between 1 ms and 1 s;
/// `None` when nothing ever decays.
pub fn interval_ms() -> Option<u64> {
    let dirty = DIRTY_DECAY_MS.load(Ordering::Relaxed);
    let muzzy = MUZZY_DECAY_MS.load(Ordering::Relaxed);
    let shortest = [dirty, muzzy].into_iter().filter(|&d| d > 0).min();
    match shortest {
        Some(d) => Some((d as u64 / 10).clamp(1, 1000)),
        // Decay 0 purges at free time; only muzzy pages from that may wait for a pass.
        None if dirty == 0 && muzzy > 0 => Some(1),
        None => None,
    }
}

/// Free resident pages every arena keeps whatever other arenas fault in (2 MiB): see
/// [`keep_idle`].
pub const IDLE_RESERVE_PAGES: usize = 512;

/// Free resident pages an arena with `active` pages in use keeps whatever other arenas fault
/// in: twice its active pages, at least [`IDLE_RESERVE_PAGES`]. Measured on
/// `benches/workloads/generations.c`, where every arena reuses its own pages from one
/// generation to the next (before [`BALANCE_BATCH_PAGES`]): keeping only the reserve gave back,
/// and faulted in again, so much that it ran 2.8 times as long; keeping once the active pages,
/// 1.5 times; twice, 1.5 times, and with the batch as long as without balancing, peak RSS
/// 91-95 MiB instead of 103 (glibc 105; `benches/programs/generations_rss.c` 78-81 MiB, glibc
/// 86); four times, 83-87 MiB on `generations_rss.c`.
#[link_section = ".text.hot.tally"]
fn keep_idle(active: usize) -> usize {
    IDLE_RESERVE_PAGES.max(2 * active)
}

/// Free resident pages an arena with `active` pages in use keeps when huge blocks fault pages in:
/// a quarter of its active pages, at least [`IDLE_RESERVE_PAGES`]. A huge block cannot use an
/// arena's free pages, so those an arena holds beyond what it needs for its own churn cost as
/// much as if the block had been given them. The suite's `sqlite` workload frees 60 MiB of
/// sorted records into its arena and then grows a 16 MiB sorter buffer by `realloc`: its peak
/// RSS was 144 MB, 136 MB with this rule (glibc 126 MB, whose heap serves both from one pool).
#[link_section = ".text.hot.tally"]
fn keep_idle_beside_huge(active: usize) -> usize {
    IDLE_RESERVE_PAGES.max(active / 4)
}

/// [`balance`] looks once this many pages were faulted in since it last did (1 MiB), so that
/// its survey of the arenas (a lock each) is paid per megabyte of growth, not per slab.
const BALANCE_BATCH_PAGES: u64 = 256;

/// Fresh pages counted when [`balance`] last looked.
static BALANCED_PAGES: AtomicU64 = AtomicU64::new(0);
/// Fresh pages of huge blocks counted when [`balance`] last looked.
static BALANCED_HUGE_PAGES: AtomicU64 = AtomicU64::new(0);

/// Balances fresh pages against idle ones: for each page any arena handed out that was not
/// resident (a new chunk's, or one given back before) since the last look, gives back one of
/// the oldest free resident pages of the arenas holding the most (each keeps
/// [`keep_idle`]), whatever its age. Free pages of an arena serve only that arena's
/// threads; when threads come and go, one arena may fault pages in while another keeps what its
/// exited threads freed, which none of its threads now needs (issue 13: generations of threads
/// rotating over the arenas left in each one the most any thread of it had freed, and the
/// arenas added those up). An arena that reuses its own pages faults nothing in and loses
/// nothing; one that grows makes as many idle pages elsewhere go back, so what exited threads
/// left behind costs no more than if the growing thread could have reused it.
///
/// Pages mapped for huge blocks are balanced the same way, each arena keeping
/// [`keep_idle_beside_huge`]; the huge paths call this as soon as they map, before the program
/// touches the pages.
#[link_section = ".text.hot.tally"]
pub fn balance() {
    if DIRTY_DECAY_MS.load(Ordering::Relaxed) < 0 {
        return; // never purge
    }
    release_empty_on_fresh();
    if let Some(quota) = fresh_since(&FRESH_PAGES, &BALANCED_PAGES) {
        give_back_idle(&ARENAS[..arena::arena_count()], quota, pal::now_ms(), keep_idle);
    }
    if let Some(quota) = fresh_since(&huge::HUGE_FRESH_PAGES, &BALANCED_HUGE_PAGES) {
        give_back_idle(
            &ARENAS[..arena::arena_count()],
            quota,
            pal::now_ms(),
            keep_idle_beside_huge,
        );
    }
}

/// [`FRESH_PAGES`] and [`huge::HUGE_FRESH_PAGES`], summed, when [`release_empty_on_fresh`] last
/// looked.
static FRESH_SEEN: AtomicU64 = AtomicU64::new(0);

/// Gives every bin's empty slabs back to their page heaps (bins another thread holds are passed
/// over) if any arena or huge block faulted pages in since the last look: an arena's could have
/// come from them, where any class or large block takes them (`bin.rs`); a huge block's are to
/// be balanced by idle pages of the arenas ([`balance`]), which the slabs become.
#[inline(always)]
fn release_empty_on_fresh() {
    let fresh = FRESH_PAGES.load(Ordering::Relaxed) + huge::HUGE_FRESH_PAGES.load(Ordering::Relaxed);
    if fresh == FRESH_SEEN.load(Ordering::Relaxed) {
        return;
    }
    FRESH_SEEN.store(fresh, Ordering::Relaxed);
    if !bin::any_held(arena::arena_count()) {
        return;
    }
    release_all_empty();
}

/// Gives back the empty slabs of every bin that holds some (bins another thread holds are
/// passed over). Out of the hot text: only a program whose bins keep empty slabs runs it.
#[cold]
#[inline(never)]
fn release_all_empty() {
    for arena in ARENAS[..arena::arena_count()].iter().filter(|a| a.has_chunks()) {
        arena.release_empty_slabs(0, true, false);
    }
}

/// The pages counted in `fresh` since `balanced` was last brought up to it, if a batch
/// ([`BALANCE_BATCH_PAGES`]) or more and this thread is the one that brings it up now.
#[inline(always)]
fn fresh_since(fresh: &AtomicU64, balanced: &AtomicU64) -> Option<usize> {
    let fresh = fresh.load(Ordering::Relaxed);
    let done = balanced.load(Ordering::Relaxed);
    if fresh < done + BALANCE_BATCH_PAGES
        || balanced
            .compare_exchange(done, fresh, Ordering::Relaxed, Ordering::Relaxed)
            .is_err()
    {
        return None;
    }
    Some((fresh - done) as usize)
}

/// Gives back at least `quota` free resident pages (when there are so many), oldest first,
/// from the arenas of `arenas` holding the most beyond what they keep (`keep` of their active
/// pages); an arena whose page heap another thread holds is passed over. Returns the pages given
/// back.
#[link_section = ".text.hot.tally"]
fn give_back_idle(arenas: &[Arena], quota: usize, now: u64, keep: fn(usize) -> usize) -> u64 {
    let mut given = 0u64;
    for _ in 0..arenas.len() {
        if given >= quota as u64 {
            break;
        }
        let Some((arena, excess)) = arenas
            .iter()
            .filter(|a| a.has_chunks())
            .filter_map(|a| {
                let (idle, active) = a.idle_and_active_pages()?;
                Some((a, idle.saturating_sub(keep(active))))
            })
            .max_by_key(|&(_, excess)| excess)
        else {
            break;
        };
        if excess == 0 {
            break;
        }
        let want = excess.min(quota - given as usize);
        let Some(mut heap) = arena.pages.try_lock() else {
            break;
        };
        // What the survey saw may have changed since: give back `want` of what there is now
        // (the kept large runs among it: `purge_down_to` frees them first).
        let keep = heap.idle_pages().saturating_sub(want);
        let purged = heap.purge_down_to(keep, now);
        if purged == 0 {
            break;
        }
        given += purged;
    }
    given
}

/// Allocator activity: balances pages faulted in since the last look against idle pages
/// ([`balance`]), and purges decayed pages if a pass is due. Cheap when neither is due (one read
/// of a counter, one of the coarse clock).
#[link_section = ".text.hot.tally"]
pub fn tick() {
    #[cfg(test)]
    LOOKS.with(|looks| looks.set(looks.get() + 1));
    // Chunks a `free` retired (`dirty_decay_ms:0` purges at once) or the balance below.
    unmap_retired();
    balance();
    let Some(interval) = interval_ms() else { return };
    let now = pal::now_ms();
    let next = NEXT_TICK_MS.load(Ordering::Relaxed);
    if now < next
        || NEXT_TICK_MS
            .compare_exchange(next, now + interval, Ordering::Relaxed, Ordering::Relaxed)
            .is_err()
    {
        return;
    }
    purge_arenas(now, false);
    if BACKGROUND.load(Ordering::Relaxed) && !background_running() {
        start_background_thread();
    }
}

/// Purges every arena now: decayed pages only, or everything when `everything` — then the bins'
/// empty current slabs go back to their page heaps first, every free run is given back at once,
/// every chunk left wholly free is unmapped, and so is every cached huge mapping. Returns the
/// pages given back.
pub fn purge_all(everything: bool) -> u64 {
    let now = pal::now_ms();
    PASSES.fetch_add(1, Ordering::Relaxed);
    let arenas: u64 = ARENAS[..arena::arena_count()]
        .iter()
        .map(|a| purge_one(a, now, everything))
        .sum();
    unmap_retired();
    arenas + crate::huge::purge(now, everything)
}

/// Unmaps the chunks purging retired (`chunk::retire`), by the rest of the protocol of
/// `pagemap::ChunkSeen`: every thread passes a memory barrier, every thread forgets the chunks
/// it remembered (`tcache::forget_chunks_everywhere`), and only then are they unmapped.
/// One load when there are none; called wherever a purge may have retired some, with no
/// allocator lock held (it takes the thread-cache registry's).
#[inline(always)]
pub fn unmap_retired() {
    if chunk::any_retired() {
        unmap_taken();
    }
}

/// [`unmap_retired`] once a chunk is retired: out of line, outside the hot text (it runs only
/// where chunks become wholly free).
#[cold]
#[inline(never)]
fn unmap_taken() {
    let mut base = chunk::take_retired();
    // Asked for (and known to work) before any chunk was retired. Should it fail now, the
    // chunks stay mapped, out of every list: address space lost, never a chunk unmapped that a
    // thread may still read through.
    if base == 0 || !pal::thread::barrier_all_threads() {
        return;
    }
    crate::tcache::forget_chunks_everywhere();
    while base != 0 {
        // SAFETY: taken from the retired stack, still mapped; every thread forgot it since it
        // was retired (the barrier, then the forgetting above).
        unsafe {
            let next = chunk::next_retired(base);
            chunk::unmap_forgotten(base);
            base = next;
        }
    }
}

/// Purges arena `index` now, as [`purge_all`] purges each (huge mappings belong to no arena and
/// are left alone). Returns the pages given back.
pub fn purge_arena(index: usize, everything: bool) -> u64 {
    PASSES.fetch_add(1, Ordering::Relaxed);
    let pages = purge_one(
        &ARENAS[index.min(arena::arena_count() - 1)],
        pal::now_ms(),
        everything,
    );
    unmap_retired();
    pages
}

fn purge_one(arena: &Arena, now: u64, everything: bool) -> u64 {
    if !arena.has_chunks() {
        return 0;
    }
    if everything {
        arena.release_empty_slabs(0, true, true);
        for (i, bin) in arena.bins.iter().enumerate() {
            bin.release_empty_current(SizeClass(i as u8), &arena.pages);
        }
    }
    let mut heap = arena.pages.lock();
    arena.stash.drain(&mut heap, everything);
    heap.purge(now, everything)
}

/// Purges decayed pages of every arena: the background thread waits for each arena's lock
/// (`wait`); allocator activity passes a busy arena by until the next pass.
#[link_section = ".text.hot.tally"]
fn purge_arenas(now: u64, wait: bool) -> u64 {
    PASSES.fetch_add(1, Ordering::Relaxed);
    let mut released = 0;
    for arena in ARENAS[..arena::arena_count()].iter().filter(|a| a.has_chunks()) {
        // The empty slabs each bin did not need since the last pass, and the runs of freed
        // sampled blocks (those of a stash no sample used since the last pass), go back to the
        // page heap first, so they decay like any free pages.
        arena.release_empty_slabs(0, false, wait);
        let heap = if wait {
            Some(arena.pages.lock())
        } else {
            arena.pages.try_lock()
        };
        if let Some(mut heap) = heap {
            arena.stash.drain(&mut heap, false);
            released += heap.purge(now, false);
        }
    }
    unmap_retired();
    released + crate::huge::purge(now, false)
}

/// Turns the background thread on or off (`mallctl("background_thread")`): on starts it in this
/// process unless it runs; off makes it exit at its next wake-up. Returns whether it was
/// running; `Err(())` when it could not be started.
pub fn set_background(on: bool) -> Result<bool, ()> {
    let was = background_running();
    BACKGROUND.store(on, Ordering::Relaxed);
    if on {
        start_background_thread();
        if !background_running() {
            BACKGROUND.store(false, Ordering::Relaxed);
            return Err(());
        }
    } else {
        BACKGROUND_RUN.store(0, Ordering::Relaxed);
    }
    Ok(was)
}

/// Starts the background thread if `background_thread:true` and it is not running in this
/// process. Called once initialization is complete (it creates a thread, which allocates).
pub fn start_background_thread() {
    if !BACKGROUND.load(Ordering::Relaxed) {
        return;
    }
    let pid = pal::pid() as u64;
    let old = BACKGROUND_RUN.load(Ordering::Relaxed);
    if old >> 32 == pid {
        return;
    }
    let run = pid << 32 | (old.wrapping_add(1) & u32::MAX as u64);
    if BACKGROUND_RUN
        .compare_exchange(old, run, Ordering::Relaxed, Ordering::Relaxed)
        .is_ok()
        && !pal::thread::spawn(background_main)
    {
        let _ = BACKGROUND_RUN.compare_exchange(run, old, Ordering::Relaxed, Ordering::Relaxed);
    }
}

/// Whether a background thread is running in this process.
pub fn background_running() -> bool {
    BACKGROUND_RUN.load(Ordering::Relaxed) >> 32 == pal::pid() as u64
}

extern "C" fn background_main(_: *mut c_void) -> *mut c_void {
    let run = BACKGROUND_RUN.load(Ordering::Relaxed);
    loop {
        pal::sleep_ms(interval_ms().unwrap_or(1000));
        if BACKGROUND_RUN.load(Ordering::Relaxed) != run {
            // Turned off (or off and on again: a newer thread runs), or this is a fork child,
            // which got a copy of the variable, not of this thread.
            return core::ptr::null_mut();
        }
        purge_arenas(pal::now_ms(), true);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::chunk::{RunState, Span};
    use crate::extent::PageHeap;
    use crate::size_class::NSMALL;
    use std::sync::MutexGuard as TestGuard;
    use tally_pal::PAGE;

    /// Tests that change the decay settings or the tick schedule run one at a time (on the lock
    /// that tests elsewhere depending on the settings hold too).
    use crate::extent::DECAY_SETTINGS as SERIAL;

    /// The decay settings in force when saved, put back when dropped (also when an assertion
    /// fails). Holds the serial lock meanwhile.
    struct Saved {
        dirty: i64,
        muzzy: i64,
        background: bool,
        _serial: TestGuard<'static, ()>,
    }

    impl Saved {
        fn new() -> Self {
            let serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
            Saved {
                dirty: DIRTY_DECAY_MS.load(Ordering::Relaxed),
                muzzy: MUZZY_DECAY_MS.load(Ordering::Relaxed),
                background: BACKGROUND.load(Ordering::Relaxed),
                _serial: serial,
            }
        }
    }

    impl Drop for Saved {
        fn drop(&mut self) {
            DIRTY_DECAY_MS.store(self.dirty, Ordering::Relaxed);
            MUZZY_DECAY_MS.store(self.muzzy, Ordering::Relaxed);
            BACKGROUND.store(self.background, Ordering::Relaxed);
        }
    }

    /// The default options with these decay times (and no background thread, which a test
    /// must not start: it would outlive the test).
    fn decay_options(dirty: i64, muzzy: i64) -> Options {
        Options {
            dirty_decay_ms: dirty,
            muzzy_decay_ms: muzzy,
            background_thread: false,
            ..Options::DEFAULT
        }
    }

    /// The arena index recorded in the chunks of a private page heap (never looked up).
    const TEST_ARENA: u32 = 255;

    /// A private page heap with one freshly freed, written run of `pages` pages; returns it
    /// with the clock read just before and just after the free.
    fn heap_with_dirty_run(pages: usize) -> (PageHeap, u64, u64) {
        let mut heap = PageHeap::new();
        let run = heap.alloc(pages, NSMALL as u8, RunState::Large, TEST_ARENA);
        assert!(!run.is_null());
        // SAFETY: the run is ours: written, then freed once.
        unsafe {
            core::ptr::write_bytes(Span::start(run) as *mut u8, 0xab, pages * PAGE);
            let before = pal::now_ms();
            heap.free(run);
            let after = pal::now_ms();
            assert_eq!(heap.dirty_pages, pages);
            (heap, before, after)
        }
    }

    #[test]
    fn configure_takes_the_decay_options() {
        let _saved = Saved::new();
        configure(&decay_options(1234, 567));
        assert_eq!(DIRTY_DECAY_MS.load(Ordering::Relaxed), 1234);
        assert_eq!(MUZZY_DECAY_MS.load(Ordering::Relaxed), 567);
        assert!(!BACKGROUND.load(Ordering::Relaxed));
        assert_eq!(interval_ms(), Some(56));
        configure(&decay_options(-1, 0));
        assert_eq!(interval_ms(), None);
    }

    #[test]
    fn the_interval_is_a_tenth_of_the_shortest_decay_between_1_ms_and_1_s() {
        let _saved = Saved::new();
        for (dirty, muzzy, interval) in [
            (10_000, 0, Some(1000)),
            (5_000, 300, Some(30)),
            (300, 5_000, Some(30)),
            (-1, 20_000, Some(1000)),
            (100_000, -1, Some(1000)),
            (5, -1, Some(1)),
            (0, 50, Some(5)),
            (0, 0, None),
            (-1, -1, None),
        ] {
            DIRTY_DECAY_MS.store(dirty, Ordering::Relaxed);
            MUZZY_DECAY_MS.store(muzzy, Ordering::Relaxed);
            assert_eq!(interval_ms(), interval, "dirty {dirty}, muzzy {muzzy}");
        }
    }

    #[test]
    fn tick_purges_at_most_once_per_interval() {
        let _saved = Saved::new();
        configure(&decay_options(10_000, 0));
        let interval = interval_ms().unwrap();
        assert_eq!(interval, 1000);

        // A pass is due: a tick runs one (this thread's or a racing thread's).
        let start = pal::now_ms();
        NEXT_TICK_MS.store(0, Ordering::Relaxed);
        let passes = PASSES.load(Ordering::Relaxed);
        tick();
        assert!(PASSES.load(Ordering::Relaxed) > passes, "a due tick purges");
        assert!(
            NEXT_TICK_MS.load(Ordering::Relaxed) > start,
            "and sets the next one"
        );

        // Ticks from every thread share one schedule.
        let passes = PASSES.load(Ordering::Relaxed);
        let start = pal::now_ms();
        for _ in 0..100_000 {
            tick();
        }
        let elapsed = pal::now_ms() - start;
        let ran = PASSES.load(Ordering::Relaxed) - passes;
        assert!(ran <= elapsed / interval + 1, "{ran} passes in {elapsed} ms");

        // Nothing decays: ticks never purge.
        configure(&decay_options(-1, -1));
        NEXT_TICK_MS.store(0, Ordering::Relaxed);
        let passes = PASSES.load(Ordering::Relaxed);
        for _ in 0..1000 {
            tick();
        }
        assert_eq!(PASSES.load(Ordering::Relaxed), passes);
    }

    #[test]
    fn dirty_runs_go_back_once_older_than_dirty_decay_ms() {
        let _saved = Saved::new();
        const DIRTY: u64 = 10_000;
        configure(&decay_options(DIRTY as i64, 0));
        let (mut heap, before, after) = heap_with_dirty_run(8);
        assert_eq!(heap.purge(before + DIRTY - 1, false), 0, "too young");
        assert_eq!(heap.dirty_pages, 8);
        assert_eq!(heap.purge(after + DIRTY, false), 8, "old enough");
        assert_eq!(heap.dirty_pages, 0);
        // The chunk was all free and is now clean: unmapped.
        assert_eq!((heap.chunks, heap.free_pages), (0, 0));
        heap.debug_check_invariants();

        // `everything` does not wait.
        let (mut heap, before, _) = heap_with_dirty_run(8);
        assert_eq!(heap.purge(before, true), 8);
        assert_eq!(heap.dirty_pages, 0);

        // Decay -1: never, unless everything.
        configure(&decay_options(-1, -1));
        let (mut heap, _, after) = heap_with_dirty_run(8);
        assert_eq!(heap.purge(after + (1 << 40), false), 0);
        assert_eq!(heap.dirty_pages, 8);
        assert_eq!(heap.purge(after, true), 8);
    }

    #[test]
    fn purge_down_to_gives_back_the_oldest_runs_first_whatever_their_age() {
        let _saved = Saved::new();
        configure(&decay_options(10_000, 0));
        let mut heap = PageHeap::new();
        // Three dirty runs of 8 pages, freed oldest first, kept apart by live one-page runs.
        let mut runs = [core::ptr::null_mut(); 3];
        for run in &mut runs {
            *run = heap.alloc(8, NSMALL as u8, RunState::Large, TEST_ARENA);
            assert!(!heap.alloc(1, NSMALL as u8, RunState::Large, TEST_ARENA).is_null());
        }
        // SAFETY: the runs are ours: written, then freed once.
        unsafe {
            for &run in &runs {
                assert!(!run.is_null());
                core::ptr::write_bytes(Span::start(run) as *mut u8, 0xab, 8 * PAGE);
                heap.free(run);
            }
        }
        assert_eq!(heap.dirty_pages, 24);
        let now = pal::now_ms();
        assert_eq!(heap.purge_down_to(24, now), 0, "nothing beyond the reserve");
        assert_eq!(heap.purge_down_to(10, now), 16, "young, but beyond the reserve");
        assert_eq!(heap.dirty_pages, 8);
        // SAFETY: the free runs' spans stay valid in their chunk's header.
        unsafe {
            assert_eq!((*runs[0]).resident, 0, "the oldest run went first");
            assert_eq!((*runs[1]).resident, 0);
            assert_eq!((*runs[2]).resident, 8, "the newest stays for the next thread");
        }
        assert_eq!(heap.purge_down_to(0, now), 8);
        assert_eq!(heap.dirty_pages, 0);
        heap.debug_check_invariants();
    }

    /// Arenas no thread is given: this one and the next, `MAX_ARENAS - 13` and `- 12` (the
    /// tests in `arena.rs` take `- 6` to `- 11` and `- 14`; two tests sharing a spare arena see
    /// each other's pages).
    const SPARE: usize = arena::MAX_ARENAS - 13;

    /// Puts `blocks` dirty runs of 2 MiB (written, freed) in spare arena `index`: all taken
    /// first, so each is a run of its own.
    fn dirty_arena(index: usize, blocks: usize) -> &'static Arena {
        let arena = &ARENAS[index];
        assert!(index >= arena::arena_count());
        let large = crate::size_class::class_for(512 * PAGE).unwrap();
        let taken: std::vec::Vec<*mut u8> = (0..blocks).map(|_| arena.alloc_large(large, PAGE)).collect();
        for &p in &taken {
            assert!(!p.is_null());
            let chunk = crate::chunk::ChunkHeader::of(p as usize);
            // SAFETY: a fresh block, written, then given back once; a large block's span is at
            // its first page.
            unsafe {
                core::ptr::write_bytes(p, 0xab, 512 * PAGE);
                let span = core::ptr::addr_of_mut!((*chunk).spans[(*chunk).page_index(p as usize)]);
                arena.free_large(span, false);
            }
        }
        arena
    }

    #[test]
    fn fresh_pages_are_balanced_by_idle_pages_of_the_arenas_holding_the_most() {
        let _saved = Saved::new();
        configure(&decay_options(10_000, 0));
        let most = dirty_arena(SPARE, 4);
        let fewer = dirty_arena(SPARE + 1, 2);
        let arenas = &ARENAS[SPARE..SPARE + 2];
        let dirty = |a: &Arena| a.pages.lock().dirty_pages;
        assert_eq!((dirty(most), dirty(fewer)), (2048, 1024));
        let now = pal::now_ms();

        // 1000 pages, taken from the arena holding the most, its oldest runs first.
        let given = give_back_idle(arenas, 1000, now, keep_idle);
        assert!(given >= 1000, "{given} pages given back");
        assert!(dirty(most) <= 2048 - 1000);
        assert_eq!(dirty(fewer), 1024, "the other arena held fewer");

        // Every arena keeps its reserve, however much is asked.
        give_back_idle(arenas, usize::MAX, now, keep_idle);
        assert!(dirty(most) <= IDLE_RESERVE_PAGES && dirty(fewer) <= IDLE_RESERVE_PAGES);
        assert_eq!(give_back_idle(arenas, usize::MAX, now, keep_idle), 0);
        for arena in arenas {
            arena.pages.lock().debug_check_invariants();
        }
    }

    #[test]
    fn with_muzzy_decay_dirty_runs_turn_muzzy_then_go_back() {
        let _saved = Saved::new();
        const DIRTY: u64 = 10_000;
        const MUZZY: u64 = 5_000;
        configure(&decay_options(DIRTY as i64, MUZZY as i64));
        let (mut heap, _, after) = heap_with_dirty_run(8);
        let now = after + DIRTY;
        assert_eq!(heap.purge(now, false), 0, "given back lazily: not counted yet");
        assert_eq!((heap.dirty_pages, heap.muzzy_pages), (0, 8));
        assert_eq!(heap.purge(now + MUZZY - 1, false), 0);
        assert_eq!(heap.muzzy_pages, 8);
        assert_eq!(heap.purge(now + MUZZY, false), 8);
        assert_eq!((heap.muzzy_pages, heap.chunks), (0, 0));
        heap.debug_check_invariants();
    }
}
