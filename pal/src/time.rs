//! Clocks and sleeping.
//!
//! The clocks are read through the vDSO's `clock_gettime`, called directly: its address is
//! looked up once in the vDSO's dynamic symbol table ([`elf::vdso_function`]). Not through the C
//! library's `clock_gettime`: that is a few instructions too, but they lie in a page of the C
//! library's code a program may never run otherwise, and a first call maps its whole 64 KiB
//! window (the kernel's fault-around) into the program's resident memory. Where there is no
//! vDSO (under valgrind, or if the lookup fails) the clocks are read with the system call.

use core::sync::atomic::{AtomicUsize, Ordering};

use crate::elf;

/// Milliseconds on a monotonic clock, cheaply (the coarse clock, read in user space through the
/// vDSO; resolution a few milliseconds).
#[inline]
pub fn now_ms() -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    clock_gettime(libc::CLOCK_MONOTONIC_COARSE, &mut ts);
    ts.tv_sec as u64 * 1000 + ts.tv_nsec as u64 / 1_000_000
}

/// Nanoseconds on the monotonic clock (0 if the clock cannot be read).
#[inline]
pub fn now_ns() -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    if !clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) {
        return 0;
    }
    (ts.tv_sec as u64)
        .wrapping_mul(1_000_000_000)
        .wrapping_add(ts.tv_nsec as u64)
}

/// Sleeps for `ms` milliseconds (the background thread only).
#[inline]
pub fn sleep_ms(ms: u64) {
    let ts = libc::timespec {
        tv_sec: (ms / 1000) as libc::time_t,
        tv_nsec: ((ms % 1000) * 1_000_000) as libc::c_long,
    };
    // SAFETY: `ts` is a valid timespec; the remainder pointer may be null.
    unsafe { libc::nanosleep(&ts, core::ptr::null_mut()) };
}

/// The vDSO's `clock_gettime`: 0 before the first look, [`NO_VDSO`] when there is none, else
/// its address.
static VDSO_CLOCK: AtomicUsize = AtomicUsize::new(0);
const NO_VDSO: usize = 1;

/// The vDSO's name for `clock_gettime`. In the section of the data every program reads
/// (`allocator/hot-text.ld`): the lookup runs in every program that frees a page.
#[cfg(target_arch = "x86_64")]
#[cfg_attr(target_os = "linux", link_section = ".rodata.hot.tally")]
static VDSO_CLOCK_NAME: [u8; 20] = *b"__vdso_clock_gettime";
#[cfg(target_arch = "aarch64")]
#[cfg_attr(target_os = "linux", link_section = ".rodata.hot.tally")]
static VDSO_CLOCK_NAME: [u8; 22] = *b"__kernel_clock_gettime";
#[cfg(not(any(target_arch = "x86_64", target_arch = "aarch64")))]
static VDSO_CLOCK_NAME: [u8; 0] = [];

/// The signature of `clock_gettime`, which the vDSO's function has too.
type ClockGettime = unsafe extern "C" fn(libc::clockid_t, *mut libc::timespec) -> libc::c_int;

/// Reads `clock` into `ts`; false when the clock cannot be read.
#[inline]
fn clock_gettime(clock: libc::clockid_t, ts: &mut libc::timespec) -> bool {
    let mut f = VDSO_CLOCK.load(Ordering::Relaxed);
    if f == 0 {
        // Threads that race here find the same address.
        f = elf::vdso_function(&VDSO_CLOCK_NAME).unwrap_or(NO_VDSO);
        VDSO_CLOCK.store(f, Ordering::Relaxed);
    }
    if f != NO_VDSO {
        // SAFETY: `f` is the address of the vDSO's function of that name (`elf::vdso_function`
        // found it in the vDSO's symbol table), which has `clock_gettime`'s signature and contract.
        let f = unsafe { core::mem::transmute::<usize, ClockGettime>(f) };
        // SAFETY: `ts` is a valid timespec to write.
        return unsafe { f(clock, ts) } == 0;
    }
    // SAFETY: as for `clock_gettime(2)`: `ts` is a valid timespec to write.
    unsafe { libc::syscall(libc::SYS_clock_gettime, clock, ts as *mut libc::timespec) == 0 }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn libc_clock(clock: libc::clockid_t) -> u64 {
        let mut ts = libc::timespec {
            tv_sec: 0,
            tv_nsec: 0,
        };
        // SAFETY: `ts` is a valid timespec to write.
        assert_eq!(unsafe { libc::clock_gettime(clock, &mut ts) }, 0);
        ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64
    }

    #[test]
    #[cfg(any(target_arch = "x86_64", target_arch = "aarch64"))]
    fn the_clocks_are_read_through_the_vdso() {
        let f = elf::vdso_function(&VDSO_CLOCK_NAME).expect("the vDSO's clock_gettime");
        now_ms();
        assert_eq!(VDSO_CLOCK.load(Ordering::Relaxed), f);
    }

    #[test]
    fn the_clocks_agree_with_the_c_librarys() {
        for _ in 0..1000 {
            let before = libc_clock(libc::CLOCK_MONOTONIC);
            let ns = now_ns();
            let after = libc_clock(libc::CLOCK_MONOTONIC);
            assert!(before <= ns && ns <= after, "{before} <= {ns} <= {after}");
            let coarse = libc_clock(libc::CLOCK_MONOTONIC_COARSE) / 1_000_000;
            let ms = now_ms();
            let coarse_after = libc_clock(libc::CLOCK_MONOTONIC_COARSE) / 1_000_000;
            assert!(
                coarse <= ms && ms <= coarse_after,
                "{coarse} <= {ms} <= {coarse_after}"
            );
        }
    }

    #[test]
    fn the_system_call_reads_the_same_clock() {
        let mut ts = libc::timespec {
            tv_sec: 0,
            tv_nsec: 0,
        };
        let before = libc_clock(libc::CLOCK_MONOTONIC);
        let clock = libc::CLOCK_MONOTONIC;
        // SAFETY: as in `clock_gettime`'s fallback: `ts` is a valid timespec to write.
        let rc = unsafe { libc::syscall(libc::SYS_clock_gettime, clock, &mut ts as *mut libc::timespec) };
        assert_eq!(rc, 0);
        let ns = ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64;
        assert!(before <= ns && ns <= libc_clock(libc::CLOCK_MONOTONIC));
    }
}
