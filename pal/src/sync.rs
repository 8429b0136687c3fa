//! The one lock type of Tally, and the lock order.
//!
//! [`Mutex`] is a futex lock (Drepper's three-state design) that spins briefly before sleeping.
//! It never allocates, can be built in a `static`, and can be taken across `fork` and reset in
//! the child, which `std::sync::Mutex` cannot. The allocator and the profiler both use it.
//!
//! # Lock order
//! Every mutex carries a [`Rank`]. A thread holding a lock of rank `r` may only take locks of
//! a rank above `r`: that one rule makes deadlock impossible, and it is checked. With the
//! checker on (debug builds, and feature `lock-rank`, which the allocator's and the profiler's
//! tests turn on), each thread keeps the set of ranks it holds and an out-of-order acquisition
//! aborts with one line naming both locks. `try_lock` cannot deadlock, so it is not checked, but
//! what it takes is recorded. `fork`'s prepare handler takes every lock in rank order
//! ([`Mutex::lock_for_fork`] allows several locks of one rank: all the bins of all arenas).
//!
//! The ranks, in order, are the variants of [`Rank`]; `docs/architecture.md` says why each
//! sits where it does.

use core::cell::UnsafeCell;
use core::ops::{Deref, DerefMut};
use core::sync::atomic::{AtomicU32, Ordering};

use crate::thread::{futex_wait, futex_wake_one};

/// A lock's place in the lock order: a thread holding a lock only takes locks of a higher rank.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
#[repr(u8)]
pub enum Rank {
    /// The statistics snapshot of `mallctl` (allocator, `ctl.rs`): taken alone, its reader copies
    /// figures out under it; first, so its own `fork` handler (registered after the allocator's,
    /// so run before them) takes it before every other lock.
    Ctl,
    /// The profiler's stack table (`tally-profiler`, `stacks.rs`): taken alone.
    ProfilerStacks,
    /// The profiler's live-block table (`live.rs`): taken alone.
    ProfilerLive,
    /// The registry of thread caches (allocator, `tcache.rs`).
    CacheRegistry,
    /// A bin's slabs (`bin.rs`); takes its arena's page heap to make or free a slab.
    Bin,
    /// An arena's page heap (`arena.rs`, `extent.rs`).
    PageHeap,
    /// The free huge-block descriptors (`huge.rs`).
    HugeDescriptors,
    /// The cache of freed huge mappings (`huge.rs`).
    HugeCache,
    /// The metadata pool (`meta.rs`): the last of the allocator's, since everyone may need
    /// metadata.
    Meta,
    /// The queue of guarded-sampling slots (allocator, `guard`): taken alone, and last by the
    /// `fork` handlers.
    GuardSlots,
    /// Locks of this crate's unit tests that are not part of the order.
    #[cfg(test)]
    Test,
}

impl Rank {
    /// The rank's name, for the lock-order message.
    #[cfg(any(test, debug_assertions, feature = "lock-rank"))]
    fn name(self) -> &'static str {
        match self {
            Rank::Ctl => "Ctl",
            Rank::ProfilerStacks => "ProfilerStacks",
            Rank::ProfilerLive => "ProfilerLive",
            Rank::CacheRegistry => "CacheRegistry",
            Rank::Bin => "Bin",
            Rank::PageHeap => "PageHeap",
            Rank::HugeDescriptors => "HugeDescriptors",
            Rank::HugeCache => "HugeCache",
            Rank::Meta => "Meta",
            Rank::GuardSlots => "GuardSlots",
            #[cfg(test)]
            Rank::Test => "Test",
        }
    }

    #[cfg(any(test, debug_assertions, feature = "lock-rank"))]
    fn bit(self) -> u32 {
        1 << self as u8
    }
}

/// The per-thread record of held ranks, and the check.
#[cfg(any(test, debug_assertions, feature = "lock-rank"))]
mod checker {
    use core::cell::Cell;

    use super::Rank;

    std::thread_local! {
        /// Bit `r` set: the thread holds a lock of rank `r`.
        static HELD: Cell<u32> = const { Cell::new(0) };
    }

    /// Records that the thread takes a lock of `rank`; aborts if it holds one ranked at or above
    /// it (strictly above when `same_rank_ok`).
    pub fn acquire(rank: Rank, check: bool, same_rank_ok: bool) {
        let held = HELD.get();
        if check {
            let not_below = if same_rank_ok {
                !((rank.bit() << 1) - 1)
            } else {
                !(rank.bit() - 1)
            };
            if held & not_below != 0 {
                let worst = 31 - (held & not_below).leading_zeros();
                crate::stderr::fatal(format_args!(
                    "tally: lock order violated: taking {} while holding a lock of rank {} (see sync::Rank)\n",
                    rank.name(),
                    worst
                ));
            }
        }
        HELD.set(held | rank.bit());
    }

    /// Records that the thread released its lock(s) of `rank`.
    pub fn release(rank: Rank) {
        HELD.set(HELD.get() & !rank.bit());
    }

    /// The ranks the thread holds, as a bit set (for tests).
    pub fn held() -> u32 {
        HELD.get()
    }
}

/// Whether this build checks the lock order.
pub const RANKS_CHECKED: bool = cfg!(any(test, debug_assertions, feature = "lock-rank"));

/// The ranks the calling thread holds, as a bit set (bit `r` for `Rank` `r`). Always 0 when the
/// lock order is not checked.
pub fn held_ranks() -> u32 {
    #[cfg(any(test, debug_assertions, feature = "lock-rank"))]
    {
        checker::held()
    }
    #[cfg(not(any(test, debug_assertions, feature = "lock-rank")))]
    {
        0
    }
}

const UNLOCKED: u32 = 0;
const LOCKED: u32 = 1;
const CONTENDED: u32 = 2;

/// A mutual-exclusion lock around a `T`, with its place in the lock order.
///
/// The rank is stored only where it is checked: in a release build a mutex is its state word
/// and its data, so a mutex of all-zero data is all zero bytes and a table of them (the arenas)
/// stays in `.bss`.
///
/// Invariant: `state` is UNLOCKED, LOCKED (held, nobody sleeping) or CONTENDED (held, maybe
/// sleepers); `data` is only touched by the holder.
pub struct Mutex<T> {
    state: AtomicU32,
    #[cfg(any(test, debug_assertions, feature = "lock-rank"))]
    rank: Rank,
    data: UnsafeCell<T>,
}

// SAFETY: access to `data` is serialized by `state`; `T: Send` lets it move between holders.
unsafe impl<T: Send> Sync for Mutex<T> {}
// SAFETY: as above.
unsafe impl<T: Send> Send for Mutex<T> {}

impl<T> Mutex<T> {
    /// A new unlocked mutex of `rank`.
    pub const fn new(rank: Rank, value: T) -> Self {
        #[cfg(not(any(test, debug_assertions, feature = "lock-rank")))]
        let _ = rank;
        Mutex {
            state: AtomicU32::new(UNLOCKED),
            #[cfg(any(test, debug_assertions, feature = "lock-rank"))]
            rank,
            data: UnsafeCell::new(value),
        }
    }

    /// Records (and with `check`, checks) an acquisition for the lock-order checker.
    #[inline(always)]
    fn note_acquire(&self, check: bool, same_rank_ok: bool) {
        #[cfg(any(test, debug_assertions, feature = "lock-rank"))]
        checker::acquire(self.rank, check, same_rank_ok);
        #[cfg(not(any(test, debug_assertions, feature = "lock-rank")))]
        let _ = (check, same_rank_ok);
    }

    /// Records a release for the lock-order checker.
    #[inline(always)]
    fn note_release(&self) {
        #[cfg(any(test, debug_assertions, feature = "lock-rank"))]
        checker::release(self.rank);
    }

    /// Takes the lock, sleeping if another thread holds it.
    #[inline]
    pub fn lock(&self) -> MutexGuard<'_, T> {
        self.note_acquire(true, false);
        if self
            .state
            .compare_exchange(UNLOCKED, LOCKED, Ordering::Acquire, Ordering::Relaxed)
            .is_err()
        {
            lock_contended(&self.state);
        }
        MutexGuard { mutex: self }
    }

    /// Takes the lock if it is free; never waits.
    #[inline]
    pub fn try_lock(&self) -> Option<MutexGuard<'_, T>> {
        let guard = self
            .state
            .compare_exchange(UNLOCKED, LOCKED, Ordering::Acquire, Ordering::Relaxed)
            .ok()
            .map(|_| MutexGuard { mutex: self });
        if guard.is_some() {
            self.note_acquire(false, false);
        }
        guard
    }

    /// Takes the lock and keeps it past the end of any scope, for `fork`'s prepare handler,
    /// which takes every lock in rank order (several of one rank allowed).
    pub fn lock_for_fork(&self) {
        self.note_acquire(true, true);
        let guard = MutexGuard { mutex: self };
        if self
            .state
            .compare_exchange(UNLOCKED, LOCKED, Ordering::Acquire, Ordering::Relaxed)
            .is_err()
        {
            lock_contended(&self.state);
        }
        core::mem::forget(guard);
    }

    /// Releases a lock taken by [`Mutex::lock_for_fork`] after `fork`: in the parent an ordinary
    /// unlock; in the `child`, where only the forking thread survives (and it held the lock), a
    /// reset of the state word, waking no one, since the waiters were other threads.
    ///
    /// # Safety
    /// The calling thread must hold the lock through `lock_for_fork`, taken before this fork.
    pub unsafe fn unlock_after_fork(&self, child: bool) {
        if child {
            self.note_release();
            self.state.store(UNLOCKED, Ordering::Release);
        } else {
            self.unlock();
        }
    }

    fn unlock(&self) {
        self.note_release();
        if self.state.swap(UNLOCKED, Ordering::Release) == CONTENDED {
            futex_wake_one(&self.state);
        }
    }
}

/// Takes the lock whose state word is `state` after a first attempt failed: spins a little,
/// then sleeps on the futex. One function for every `Mutex<T>`, not one per `T`, and in the
/// allocator's hot text (`allocator/hot-text.ld`): two threads that meet on a lock run it in a
/// program that otherwise touches no other code of the library's, and the kernel maps every
/// page of text around the one a program runs (64 KiB resident for a few instructions).
#[cold]
#[inline(never)]
#[cfg_attr(target_os = "linux", link_section = ".text.hot.tally")]
fn lock_contended(state: &AtomicU32) {
    for _ in 0..100 {
        core::hint::spin_loop();
        if state.load(Ordering::Relaxed) == UNLOCKED
            && state
                .compare_exchange(UNLOCKED, LOCKED, Ordering::Acquire, Ordering::Relaxed)
                .is_ok()
        {
            return;
        }
    }
    while state.swap(CONTENDED, Ordering::Acquire) != UNLOCKED {
        futex_wait(state, CONTENDED);
    }
}

/// Proof that the lock is held; releases it on drop.
pub struct MutexGuard<'a, T> {
    mutex: &'a Mutex<T>,
}

impl<T> Deref for MutexGuard<'_, T> {
    type Target = T;
    fn deref(&self) -> &T {
        // SAFETY: the guard proves the lock is held, so no one else touches the data.
        unsafe { &*self.mutex.data.get() }
    }
}

impl<T> DerefMut for MutexGuard<'_, T> {
    fn deref_mut(&mut self) -> &mut T {
        // SAFETY: the guard proves the lock is held, so no one else touches the data.
        unsafe { &mut *self.mutex.data.get() }
    }
}

impl<T> Drop for MutexGuard<'_, T> {
    #[inline]
    fn drop(&mut self) {
        self.mutex.unlock();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;
    use std::vec::Vec;

    #[test]
    fn counts_under_contention() {
        let m = Arc::new(Mutex::new(Rank::Test, 0u64));
        let threads: Vec<_> = (0..8)
            .map(|_| {
                let m = m.clone();
                std::thread::spawn(move || {
                    for _ in 0..20_000 {
                        *m.lock() += 1;
                    }
                })
            })
            .collect();
        for t in threads {
            t.join().unwrap();
        }
        assert_eq!(*m.lock(), 160_000);
    }

    #[test]
    fn held_ranks_follow_lock_and_unlock() {
        const { assert!(RANKS_CHECKED, "the tests build with the checker on") };
        let bin = Mutex::new(Rank::Bin, ());
        let pages = Mutex::new(Rank::PageHeap, ());
        let g1 = bin.lock();
        let g2 = pages.lock();
        assert_eq!(held_ranks(), Rank::Bin.bit() | Rank::PageHeap.bit());
        drop(g2);
        drop(g1);
        assert_eq!(held_ranks(), 0);
        let t = pages.try_lock().unwrap();
        assert_eq!(held_ranks(), Rank::PageHeap.bit());
        drop(t);
    }

    /// Runs `body` in a forked child and returns its wait status and what it wrote to stderr.
    fn in_child(body: fn()) -> (i32, std::string::String) {
        let mut fds = [0; 2];
        // SAFETY: plain system calls; the child only runs `body` and exits.
        unsafe {
            assert_eq!(libc::pipe(fds.as_mut_ptr()), 0);
            let pid = libc::fork();
            assert!(pid >= 0);
            if pid == 0 {
                libc::dup2(fds[1], 2);
                body();
                libc::_exit(0);
            }
            libc::close(fds[1]);
            let mut out = Vec::new();
            let mut buf = [0u8; 256];
            loop {
                let n = libc::read(fds[0], buf.as_mut_ptr().cast(), buf.len());
                if n <= 0 {
                    break;
                }
                out.extend_from_slice(&buf[..n as usize]);
            }
            libc::close(fds[0]);
            let mut status = 0;
            libc::waitpid(pid, &mut status, 0);
            (status, std::string::String::from_utf8_lossy(&out).into_owned())
        }
    }

    #[test]
    fn out_of_order_acquisition_aborts_with_one_line() {
        let (status, err) = in_child(|| {
            let bin = Mutex::new(Rank::Bin, ());
            let pages = Mutex::new(Rank::PageHeap, ());
            let _p = pages.lock();
            let _b = bin.lock();
        });
        assert!(
            libc::WIFSIGNALED(status) && libc::WTERMSIG(status) == libc::SIGABRT,
            "status {status}"
        );
        assert!(err.contains("lock order violated: taking Bin"), "{err}");
    }

    #[test]
    fn in_order_and_fork_order_do_not_abort() {
        let (status, err) = in_child(|| {
            let a = Mutex::new(Rank::Bin, ());
            let b = Mutex::new(Rank::Bin, ());
            let pages = Mutex::new(Rank::PageHeap, ());
            a.lock_for_fork();
            b.lock_for_fork();
            pages.lock_for_fork();
            // SAFETY: all three were taken by lock_for_fork in this thread.
            unsafe {
                pages.unlock_after_fork(false);
                b.unlock_after_fork(true);
                a.unlock_after_fork(false);
            }
            let _a = a.lock();
            let _p = pages.lock();
        });
        assert!(
            libc::WIFEXITED(status) && libc::WEXITSTATUS(status) == 0,
            "status {status}: {err}"
        );
    }

    #[test]
    fn same_rank_twice_outside_fork_aborts() {
        let (status, _) = in_child(|| {
            let a = Mutex::new(Rank::Bin, ());
            let b = Mutex::new(Rank::Bin, ());
            let _a = a.lock();
            let _b = b.lock();
        });
        assert!(libc::WIFSIGNALED(status), "status {status}");
    }
}
