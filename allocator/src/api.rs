//! The malloc family with C semantics (`errno`, glibc's edge cases), callable from Rust. The C
//! symbols in `capi.rs` forward here one to one, and tests call these directly.
//!
//! Every function here is `#[inline(always)]`: the exported C symbols must contain the code,
//! not jump to it, so that a stack captured inside `calloc` has a frame in `calloc` (which
//! jeprof and the report tool know to drop) rather than in an internal Tally function.
//!
//! Edge cases follow glibc: `malloc(0)` returns a unique block; `realloc(p, 0)` frees `p` and
//! returns null; `realloc(NULL, n)` is `malloc(n)`; a failed `realloc` leaves `p` alone; sizes
//! that overflow give null with `ENOMEM`; bad alignments give `EINVAL`.

use core::ffi::c_void;
use core::ptr;

use crate::{alloc, block, free, realloc};
use tally_pal::{self as pal, PAGE};

#[inline(always)]
fn out_of_memory(p: *mut u8) -> *mut c_void {
    if p.is_null() {
        return enomem();
    }
    p.cast()
}

#[cold]
#[inline(never)]
fn enomem() -> *mut c_void {
    pal::set_errno(libc::ENOMEM);
    ptr::null_mut()
}

/// `malloc(3)`.
///
/// The miss paths are called, not jumped to, though a jump would save `malloc` the 2
/// instructions that align the stack for the call: a sampled allocation's stack must have its
/// outermost Tally frame in `malloc` itself, which jeprof and the report tool leave out; after a
/// jump that frame would be an internal function's.
#[inline(always)]
pub fn malloc(size: usize) -> *mut c_void {
    let p = alloc::alloc(size);
    if p.is_null() {
        return enomem();
    }
    p.cast()
}

/// `calloc(3)`: zeroed; null with `ENOMEM` if `n * size` overflows.
#[inline(always)]
pub fn calloc(n: usize, size: usize) -> *mut c_void {
    match n.checked_mul(size) {
        Some(total) => out_of_memory(alloc::alloc_zeroed(total)),
        None => out_of_memory(ptr::null_mut()),
    }
}

/// `free(3)`. Aborts with a message if `p` is not a live block of Tally's.
///
/// # Safety
/// `p` must be null or a block not used after this call.
#[inline(always)]
pub unsafe fn free(p: *mut c_void) {
    // SAFETY: per the contract.
    unsafe { free::free(p.cast()) }
}

/// `realloc(3)`.
///
/// # Safety
/// `p` must be null or a live block; it must not be used after a non-null result (or after
/// `size == 0`).
#[inline(always)]
pub unsafe fn realloc(p: *mut c_void, size: usize) -> *mut c_void {
    // SAFETY: per the contract.
    let q = unsafe { realloc::realloc(p.cast(), size) };
    if q.is_null() && size != 0 {
        return out_of_memory(q);
    }
    q.cast()
}

/// `reallocarray(3)`: `realloc(p, n * size)` with an overflow check (`ENOMEM`).
///
/// # Safety
/// As for [`realloc`].
#[inline(always)]
pub unsafe fn reallocarray(p: *mut c_void, n: usize, size: usize) -> *mut c_void {
    match n.checked_mul(size) {
        // SAFETY: per the contract.
        Some(total) => unsafe { realloc(p, total) },
        None => out_of_memory(ptr::null_mut()),
    }
}

#[inline(always)]
fn aligned(size: usize, align: usize) -> *mut c_void {
    out_of_memory(alloc::alloc_aligned(size, align))
}

/// `posix_memalign(3)`: `EINVAL` unless `align` is a power of two multiple of the pointer size;
/// `ENOMEM` when out of memory. Returns the error instead of setting `errno`.
///
/// # Safety
/// `out` must be valid for a pointer write.
#[inline(always)]
pub unsafe fn posix_memalign(out: *mut *mut c_void, align: usize, size: usize) -> i32 {
    if !align.is_power_of_two() || align % core::mem::size_of::<*mut c_void>() != 0 {
        return libc::EINVAL;
    }
    let p = alloc::alloc_aligned(size, align);
    if p.is_null() {
        return libc::ENOMEM;
    }
    // SAFETY: per the contract.
    unsafe { *out = p.cast() };
    0
}

/// `aligned_alloc(3)`: `EINVAL` unless `align` is a power of two (glibc accepts any size).
#[inline(always)]
pub fn aligned_alloc(align: usize, size: usize) -> *mut c_void {
    if !align.is_power_of_two() {
        pal::set_errno(libc::EINVAL);
        return ptr::null_mut();
    }
    aligned(size, align)
}

/// `memalign(3)`: like glibc, a non-power-of-two alignment is rounded up to one.
#[inline(always)]
pub fn memalign(align: usize, size: usize) -> *mut c_void {
    match align.max(1).checked_next_power_of_two() {
        Some(a) => aligned(size, a),
        None => {
            pal::set_errno(libc::EINVAL);
            ptr::null_mut()
        }
    }
}

/// `valloc(3)`: page-aligned.
#[inline(always)]
pub fn valloc(size: usize) -> *mut c_void {
    aligned(size, PAGE)
}

/// `pvalloc(3)`: page-aligned, size rounded up to whole pages (at least one).
#[inline(always)]
pub fn pvalloc(size: usize) -> *mut c_void {
    match size.max(1).checked_next_multiple_of(PAGE) {
        Some(s) => aligned(s, PAGE),
        None => out_of_memory(ptr::null_mut()),
    }
}

/// `malloc_usable_size(3)`: bytes usable in the block (0 for null). Aborts on a pointer that is
/// not a live block.
#[inline(always)]
pub fn malloc_usable_size(p: *mut c_void) -> usize {
    block::usable_size(p.cast())
}

/// `malloc_trim(3)`: gives free memory back to the OS now. Returns 1 if any was released.
#[inline(always)]
pub fn malloc_trim(_pad: usize) -> i32 {
    i32::from(crate::stats::trim())
}

/// `malloc_stats(3)`: prints statistics to stderr (as `stats_print` would at exit).
#[inline(always)]
pub fn malloc_stats() {
    crate::stats::print(crate::init::options().stats_print_opts);
}

/// `tally_stats_print(opts)`: prints statistics to stderr; `opts` holds `stats_print_opts` letters
/// (`J` for JSON, `a` and `b` to leave out the arena and size-class tables). Unknown letters are
/// ignored.
#[inline(always)]
pub fn tally_stats_print(opts: &[u8]) {
    let mut flags = 0;
    for &c in opts {
        if let Some(i) = crate::options::STATS_FLAGS.bytes().position(|f| f == c) {
            flags |= 1 << i;
        }
    }
    crate::stats::print(flags);
}

/// `free_sized` (C23): frees `p`, whose requested size was `size`.
///
/// # Safety
/// As for [`free`].
#[inline(always)]
pub unsafe fn free_sized(p: *mut c_void, _size: usize) {
    // SAFETY: per the contract.
    unsafe { free::free(p.cast()) }
}

/// `free_aligned_sized` (C23): frees `p`, allocated with alignment `align` and size `size`.
///
/// # Safety
/// As for [`free`].
#[inline(always)]
pub unsafe fn free_aligned_sized(p: *mut c_void, _align: usize, _size: usize) {
    // SAFETY: per the contract.
    unsafe { free::free(p.cast()) }
}
