//! The C ABI: the malloc family glibc programs use, exported unprefixed (feature `c-abi`, on
//! by default) so `LD_PRELOAD=libtally.so` replaces the system allocator. Each symbol forwards
//! to `api.rs`; nothing else lives here. None of these can unwind: Tally's code does not panic,
//! and `extern "C"` turns any panic into an abort.

use core::ffi::{c_int, c_void};

use crate::api;

/// `malloc(3)`.
#[no_mangle]
pub extern "C" fn malloc(size: usize) -> *mut c_void {
    api::malloc(size)
}

/// `calloc(3)`.
#[no_mangle]
pub extern "C" fn calloc(n: usize, size: usize) -> *mut c_void {
    api::calloc(n, size)
}

/// `free(3)`.
///
/// # Safety
/// `p` must be null or a live block of this allocator, not used afterwards.
#[no_mangle]
pub unsafe extern "C" fn free(p: *mut c_void) {
    // SAFETY: the C contract of free.
    unsafe { api::free(p) }
}

/// `realloc(3)`.
///
/// # Safety
/// The C contract of realloc.
#[no_mangle]
pub unsafe extern "C" fn realloc(p: *mut c_void, size: usize) -> *mut c_void {
    // SAFETY: the C contract of realloc.
    unsafe { api::realloc(p, size) }
}

/// `reallocarray(3)`.
///
/// # Safety
/// The C contract of reallocarray.
#[no_mangle]
pub unsafe extern "C" fn reallocarray(p: *mut c_void, n: usize, size: usize) -> *mut c_void {
    // SAFETY: the C contract of reallocarray.
    unsafe { api::reallocarray(p, n, size) }
}

/// `posix_memalign(3)`.
///
/// # Safety
/// `out` must be valid for writing a pointer.
#[no_mangle]
pub unsafe extern "C" fn posix_memalign(out: *mut *mut c_void, align: usize, size: usize) -> c_int {
    // SAFETY: the C contract of posix_memalign.
    unsafe { api::posix_memalign(out, align, size) }
}

/// `aligned_alloc(3)`.
#[no_mangle]
pub extern "C" fn aligned_alloc(align: usize, size: usize) -> *mut c_void {
    api::aligned_alloc(align, size)
}

/// `memalign(3)`.
#[no_mangle]
pub extern "C" fn memalign(align: usize, size: usize) -> *mut c_void {
    api::memalign(align, size)
}

/// `valloc(3)`.
#[no_mangle]
pub extern "C" fn valloc(size: usize) -> *mut c_void {
    api::valloc(size)
}

/// `pvalloc(3)`.
#[no_mangle]
pub extern "C" fn pvalloc(size: usize) -> *mut c_void {
    api::pvalloc(size)
}

/// `malloc_usable_size(3)`.
#[no_mangle]
pub extern "C" fn malloc_usable_size(p: *mut c_void) -> usize {
    api::malloc_usable_size(p)
}

/// `malloc_trim(3)`: gives free memory back to the OS now; returns 1 if any was released.
#[no_mangle]
pub extern "C" fn malloc_trim(pad: usize) -> c_int {
    api::malloc_trim(pad)
}

/// `malloc_stats(3)`: prints statistics to stderr.
#[no_mangle]
pub extern "C" fn malloc_stats() {
    api::malloc_stats()
}

/// `tally_stats_print(opts)`: prints statistics to stderr; `opts` (may be null) holds
/// `stats_print_opts` letters.
///
/// # Safety
/// `opts` must be null or a NUL-terminated string.
#[no_mangle]
pub unsafe extern "C" fn tally_stats_print(opts: *const core::ffi::c_char) {
    let opts = if opts.is_null() {
        &[][..]
    } else {
        // SAFETY: per the contract, a NUL-terminated string.
        unsafe { core::ffi::CStr::from_ptr(opts) }.to_bytes()
    };
    api::tally_stats_print(opts)
}

/// `free_sized` (C23).
///
/// # Safety
/// The C contract of free.
#[no_mangle]
pub unsafe extern "C" fn free_sized(p: *mut c_void, size: usize) {
    // SAFETY: the C contract of free_sized.
    unsafe { api::free_sized(p, size) }
}

/// `free_aligned_sized` (C23).
///
/// # Safety
/// The C contract of free.
#[no_mangle]
pub unsafe extern "C" fn free_aligned_sized(p: *mut c_void, align: usize, size: usize) {
    // SAFETY: the C contract of free_aligned_sized.
    unsafe { api::free_aligned_sized(p, align, size) }
}
