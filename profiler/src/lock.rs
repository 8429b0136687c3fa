//! A spin lock for the profiler's tables.
//!
//! The profiler's locks guard only table updates: no allocation, no system call other than
//! `mmap`/`munmap` when a table grows, no call into code that could come back into `malloc`. So a
//! thread holding one always finishes quickly, `malloc` can never re-enter while one is held, and
//! a simple test-and-test-and-set lock with `sched_yield` after some spinning is enough. It is
//! constructible in a `static` and never allocates.
//!
//! Lock order: [`crate::stacks`] is never held while taking [`crate::live`]'s lock or the reverse;
//! each is taken alone.

use core::cell::UnsafeCell;
use core::ops::{Deref, DerefMut};
use core::sync::atomic::{AtomicBool, Ordering};

/// A spin lock around a `T`.
pub struct SpinLock<T> {
    locked: AtomicBool,
    value: UnsafeCell<T>,
}

// SAFETY: access to `value` is serialized by `locked`.
unsafe impl<T: Send> Sync for SpinLock<T> {}
// SAFETY: moving the lock moves the value; no thread-affine state.
unsafe impl<T: Send> Send for SpinLock<T> {}

impl<T> SpinLock<T> {
    /// An unlocked lock around `value`.
    pub const fn new(value: T) -> Self {
        SpinLock {
            locked: AtomicBool::new(false),
            value: UnsafeCell::new(value),
        }
    }

    /// Takes the lock and keeps it past the end of any scope, for `fork`'s prepare handler.
    pub fn lock_for_fork(&self) {
        core::mem::forget(self.lock());
    }

    /// Releases a lock taken by [`SpinLock::lock_for_fork`], in the parent or the child of the
    /// fork (in the child only the forking thread survives, and it holds the lock).
    ///
    /// # Safety
    /// The calling thread must have taken the lock with `lock_for_fork` before the fork.
    pub unsafe fn unlock_after_fork(&self) {
        self.locked.store(false, Ordering::Release);
    }

    /// Takes the lock, spinning (then yielding) until it is free.
    pub fn lock(&self) -> SpinGuard<'_, T> {
        let mut spins = 0u32;
        loop {
            if !self.locked.load(Ordering::Relaxed)
                && self
                    .locked
                    .compare_exchange_weak(false, true, Ordering::Acquire, Ordering::Relaxed)
                    .is_ok()
            {
                return SpinGuard { lock: self };
            }
            spins += 1;
            if spins < 64 {
                core::hint::spin_loop();
            } else {
                // SAFETY: sched_yield has no preconditions.
                unsafe { libc::sched_yield() };
            }
        }
    }
}

/// Holds a [`SpinLock`]; unlocks on drop.
pub struct SpinGuard<'a, T> {
    lock: &'a SpinLock<T>,
}

impl<T> Deref for SpinGuard<'_, T> {
    type Target = T;
    fn deref(&self) -> &T {
        // SAFETY: the guard proves the lock is held, so no one else accesses the value.
        unsafe { &*self.lock.value.get() }
    }
}

impl<T> DerefMut for SpinGuard<'_, T> {
    fn deref_mut(&mut self) -> &mut T {
        // SAFETY: the guard proves the lock is held, so no one else accesses the value.
        unsafe { &mut *self.lock.value.get() }
    }
}

impl<T> Drop for SpinGuard<'_, T> {
    fn drop(&mut self) {
        self.lock.locked.store(false, Ordering::Release);
    }
}
