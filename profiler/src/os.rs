//! The profiler's whole contract with the operating system: anonymous mappings, and the few file
//! operations a dump needs. Nothing here calls `malloc` (these are thin `libc` wrappers around
//! system calls), and nothing panics.

use core::ffi::c_int;

/// Maps `len` bytes of zeroed, readable and writable memory, reserved lazily
/// (`MAP_NORESERVE`: pages cost memory only once touched). Null on failure.
pub fn map(len: usize) -> *mut u8 {
    // SAFETY: an anonymous private mapping at an address of the kernel's choosing touches no
    // existing memory.
    let p = unsafe {
        libc::mmap(
            core::ptr::null_mut(),
            len,
            libc::PROT_READ | libc::PROT_WRITE,
            libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_NORESERVE,
            -1,
            0,
        )
    };
    if p == libc::MAP_FAILED {
        core::ptr::null_mut()
    } else {
        p.cast()
    }
}

/// Unmaps a mapping made by [`map`].
///
/// # Safety
/// `ptr`/`len` must be exactly a mapping returned by [`map`], and nothing may use it afterwards.
pub unsafe fn unmap(ptr: *mut u8, len: usize) {
    // SAFETY: the caller guarantees this is a whole mapping of ours that nobody uses any more.
    unsafe { libc::munmap(ptr.cast(), len) };
}

/// Whether the page holding `addr` is mapped (`mincore` fails with `ENOMEM` on unmapped
/// memory). Says nothing about `PROT_NONE`.
pub fn page_is_mapped(addr: usize) -> bool {
    let page = addr & !(page_size() - 1);
    let mut vec = 0u8;
    // SAFETY: mincore only reads the page tables for the range and writes one byte to `vec`.
    unsafe { libc::mincore(page as *mut libc::c_void, 1, &mut vec) == 0 }
}

/// The page size (4 KiB on the machines Tally supports; asked once from the kernel).
pub fn page_size() -> usize {
    use core::sync::atomic::{AtomicUsize, Ordering};
    static PAGE: AtomicUsize = AtomicUsize::new(0);
    let p = PAGE.load(Ordering::Relaxed);
    if p != 0 {
        return p;
    }
    // SAFETY: sysconf has no preconditions.
    let p = unsafe { libc::sysconf(libc::_SC_PAGESIZE) };
    let p = if p > 0 { p as usize } else { 4096 };
    PAGE.store(p, Ordering::Relaxed);
    p
}

/// The process id.
pub fn pid() -> u32 {
    // SAFETY: getpid has no preconditions.
    unsafe { libc::getpid() as u32 }
}

/// Nanoseconds on the monotonic clock (0 if the clock cannot be read).
pub fn now_ns() -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `ts` is a valid timespec to write.
    if unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) } != 0 {
        return 0;
    }
    (ts.tv_sec as u64)
        .wrapping_mul(1_000_000_000)
        .wrapping_add(ts.tv_nsec as u64)
}

/// The current `errno`.
pub fn errno() -> i32 {
    // SAFETY: __errno_location returns this thread's errno slot.
    unsafe { *libc::__errno_location() }
}

/// Opens a NUL-terminated path with `flags` and `mode`; `Err(errno)` on failure. Retries `EINTR`.
pub fn open(path: &[u8], flags: c_int, mode: libc::mode_t) -> Result<c_int, i32> {
    if path.last() != Some(&0) {
        return Err(libc::EINVAL);
    }
    loop {
        // SAFETY: `path` is NUL-terminated.
        let fd = unsafe {
            libc::open(
                path.as_ptr().cast(),
                flags | libc::O_CLOEXEC,
                mode as libc::c_uint,
            )
        };
        if fd >= 0 {
            return Ok(fd);
        }
        let e = errno();
        if e != libc::EINTR {
            return Err(e);
        }
    }
}

/// Writes all of `bytes` to `fd`; `Err(errno)` on failure. Retries `EINTR` and short writes.
pub fn write_all(fd: c_int, mut bytes: &[u8]) -> Result<(), i32> {
    while !bytes.is_empty() {
        // SAFETY: `bytes` is a valid readable buffer of its length.
        let n = unsafe { libc::write(fd, bytes.as_ptr().cast(), bytes.len()) };
        if n < 0 {
            let e = errno();
            if e == libc::EINTR {
                continue;
            }
            return Err(e);
        }
        if n == 0 {
            return Err(libc::EIO);
        }
        bytes = &bytes[n as usize..];
    }
    Ok(())
}

/// Reads up to `buf.len()` bytes; `Ok(0)` at the end. Retries `EINTR`.
pub fn read(fd: c_int, buf: &mut [u8]) -> Result<usize, i32> {
    loop {
        // SAFETY: `buf` is a valid writable buffer of its length.
        let n = unsafe { libc::read(fd, buf.as_mut_ptr().cast(), buf.len()) };
        if n >= 0 {
            return Ok(n as usize);
        }
        let e = errno();
        if e != libc::EINTR {
            return Err(e);
        }
    }
}

/// Closes `fd`, ignoring errors.
pub fn close(fd: c_int) {
    // SAFETY: closing a descriptor we own.
    unsafe { libc::close(fd) };
}

/// `fsync`; `Err(errno)` on failure.
pub fn fsync(fd: c_int) -> Result<(), i32> {
    // SAFETY: fsync on a descriptor has no memory-safety preconditions.
    if unsafe { libc::fsync(fd) } == 0 {
        Ok(())
    } else {
        Err(errno())
    }
}

/// Renames NUL-terminated `from` to NUL-terminated `to`; `Err(errno)` on failure.
pub fn rename(from: &[u8], to: &[u8]) -> Result<(), i32> {
    if from.last() != Some(&0) || to.last() != Some(&0) {
        return Err(libc::EINVAL);
    }
    // SAFETY: both paths are NUL-terminated.
    if unsafe { libc::rename(from.as_ptr().cast(), to.as_ptr().cast()) } == 0 {
        Ok(())
    } else {
        Err(errno())
    }
}

/// Removes a NUL-terminated path, ignoring errors.
pub fn unlink(path: &[u8]) {
    if path.last() == Some(&0) {
        // SAFETY: the path is NUL-terminated.
        unsafe { libc::unlink(path.as_ptr().cast()) };
    }
}
