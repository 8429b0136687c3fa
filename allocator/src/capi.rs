//! The C ABI: the malloc family glibc programs use, exported unprefixed (feature `c-abi`, on
//! by default) so `LD_PRELOAD=libtally.so` replaces the system allocator. Each symbol forwards
//! to `api.rs`; nothing else lives here. None of these can unwind: Tally's code does not panic,
//! and `extern "C"` turns any panic into an abort.

use core::ffi::{c_char, c_int, c_void};

use crate::api;

/// `malloc(3)`.
// fast-path budget: malloc 21 instructions, 3 branches (a thread-cache hit, no call; checked
// by scripts/check-fast-paths.sh)
#[no_mangle]
#[link_section = ".text.hot.tally"]
pub extern "C" fn malloc(size: usize) -> *mut c_void {
    api::malloc(size)
}

/// `calloc(3)`.
#[no_mangle]
#[link_section = ".text.hot.tally"]
pub extern "C" fn calloc(n: usize, size: usize) -> *mut c_void {
    api::calloc(n, size)
}

/// `free(3)`.
///
/// # Safety
/// `p` must be null or a live block of this allocator, not used afterwards.
// fast-path budget: free 33 instructions, 4 branches (a small block of this thread's arena, in
// the chunk its last free found, into a bin with room, its free mark checked and written, no
// call; checked by scripts/check-fast-paths.sh)
#[no_mangle]
#[link_section = ".text.hot.tally"]
pub unsafe extern "C" fn free(p: *mut c_void) {
    // SAFETY: the C contract of free.
    unsafe { api::free(p) }
}

/// `realloc(3)`.
///
/// # Safety
/// The C contract of realloc.
// fast-path budget: realloc 92 instructions, 11 branches (a small block moved to another small
// class: a thread-cache hit for the new block and a bin with room for the old, the free mark
// checked and written; one call, the C library's memcpy for the copy, not counted; checked by
// scripts/check-fast-paths.sh)
#[no_mangle]
#[link_section = ".text.hot.tally"]
pub unsafe extern "C" fn realloc(p: *mut c_void, size: usize) -> *mut c_void {
    // SAFETY: the C contract of realloc.
    unsafe { api::realloc(p, size) }
}

/// `reallocarray(3)`. Not in the hot text, which the programs `scripts/check-hot-text.sh` runs
/// (a small C program and CPython) fill up to its 64 KiB without it: they never call it.
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
#[link_section = ".text.hot.tally"]
pub unsafe extern "C" fn posix_memalign(out: *mut *mut c_void, align: usize, size: usize) -> c_int {
    // SAFETY: the C contract of posix_memalign.
    unsafe { api::posix_memalign(out, align, size) }
}

/// `aligned_alloc(3)`. Not in the first 64 KiB of the code (`hot-text.ld`), as [`free_sized`]
/// is not: C programs ask for aligned blocks through `posix_memalign` and `memalign` far more
/// (C++'s aligned `new` is this one's usual caller), and the window had no room left when
/// `free`'s path for other threads' blocks (`free::free_in_other_arena`) joined it.
#[no_mangle]
pub extern "C" fn aligned_alloc(align: usize, size: usize) -> *mut c_void {
    api::aligned_alloc(align, size)
}

/// `memalign(3)`.
#[no_mangle]
#[link_section = ".text.hot.tally"]
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
#[link_section = ".text.hot.tally"]
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
    // SAFETY: per the contract.
    api::tally_stats_print(unsafe { c_str_or_empty(opts) })
}

/// The bytes of `s`, a C string, or none when it is null.
///
/// # Safety
/// `s` must be null or a NUL-terminated string that outlives the result.
unsafe fn c_str_or_empty<'a>(s: *const core::ffi::c_char) -> &'a [u8] {
    if s.is_null() {
        &[]
    } else {
        // SAFETY: per the contract, a NUL-terminated string.
        unsafe { core::ffi::CStr::from_ptr(s) }.to_bytes()
    }
}

/// `malloc_stats_print(write_cb, cbopaque, opts)` (jemalloc): Tally's statistics to `write_cb`
/// (stderr when null); `opts` as for `tally_stats_print`.
///
/// # Safety
/// `write_cb`, when not null, must be callable with `cbopaque` and a C string; `opts` must be
/// null or a NUL-terminated string.
#[no_mangle]
pub unsafe extern "C" fn malloc_stats_print(
    write_cb: Option<api::StatsWriteCb>,
    cbopaque: *mut c_void,
    opts: *const core::ffi::c_char,
) {
    // SAFETY: per the contract.
    unsafe { api::malloc_stats_print(write_cb, cbopaque, c_str_or_empty(opts)) }
}

/// `tally_prof_dump(path)`: writes a heap profile to `path`, or, when `path` is null, to
/// `<prof_prefix>.<pid>.<seq>.m<n>.heap`. Returns 0, or -1 with `errno` set (`ENOTSUP` when the
/// profiler is off).
///
/// # Safety
/// `path` must be null or a NUL-terminated string.
#[no_mangle]
pub unsafe extern "C" fn tally_prof_dump(path: *const core::ffi::c_char) -> c_int {
    let result = if path.is_null() {
        crate::prof::dump_auto()
    } else {
        // SAFETY: per the contract, a NUL-terminated string.
        let bytes = unsafe { core::ffi::CStr::from_ptr(path) }.to_bytes();
        crate::prof::dump(<std::ffi::OsStr as std::os::unix::ffi::OsStrExt>::from_bytes(
            bytes,
        ))
    };
    match result {
        Ok(()) => 0,
        Err(e) => {
            tally_pal::set_errno(match e {
                crate::prof::DumpError::ProfilerOff => libc::ENOTSUP,
                crate::prof::DumpError::BadPath => libc::EINVAL,
                crate::prof::DumpError::Os(e) => e,
            });
            -1
        }
    }
}

/// `tally_prof_activate(on)`: starts (non-zero) or stops (0) sampling. Returns 0, or -1 when
/// the profiler is off.
#[no_mangle]
pub extern "C" fn tally_prof_activate(on: c_int) -> c_int {
    let done = if on != 0 {
        crate::prof::activate()
    } else {
        crate::prof::deactivate()
    };
    if done {
        0
    } else {
        -1
    }
}

/// `tally_prof_reset()`: forgets everything sampled so far. Returns 0, or -1 when the profiler
/// is off.
#[no_mangle]
pub extern "C" fn tally_prof_reset() -> c_int {
    if crate::prof::reset() {
        0
    } else {
        -1
    }
}

/// `tally_prof_set_sample(lg)`: sets the mean sampling distance to `2^lg` bytes. Returns 0, or
/// -1 when the profiler is off.
#[no_mangle]
pub extern "C" fn tally_prof_set_sample(lg: c_int) -> c_int {
    if lg >= 0 && crate::prof::set_sample_rate(lg as u32) {
        0
    } else {
        -1
    }
}

/// `free_sized` (C23). Not in the first 64 KiB of the code with `free` (`hot-text.ld`): few
/// programs call it yet, and its copy of `free`'s path and `free_aligned_sized`'s (290 bytes
/// each) were what pushed the code every program runs past the window when `alloc.rs`'s
/// `take_with_room` joined it.
///
/// # Safety
/// The C contract of free.
#[no_mangle]
pub unsafe extern "C" fn free_sized(p: *mut c_void, size: usize) {
    // SAFETY: the C contract of free_sized.
    unsafe { api::free_sized(p, size) }
}

/// `free_aligned_sized` (C23); out of the first 64 KiB of the code as [`free_sized`] is.
///
/// # Safety
/// The C contract of free.
#[no_mangle]
pub unsafe extern "C" fn free_aligned_sized(p: *mut c_void, align: usize, size: usize) {
    // SAFETY: the C contract of free_aligned_sized.
    unsafe { api::free_aligned_sized(p, align, size) }
}

/// `mallocx` (jemalloc; flags `MALLOCX_LG_ALIGN`/`MALLOCX_ALIGN`, `MALLOCX_ZERO`).
#[no_mangle]
pub extern "C" fn mallocx(size: usize, flags: c_int) -> *mut c_void {
    api::mallocx(size, flags)
}

/// `rallocx` (jemalloc).
///
/// # Safety
/// `p` must be a live block of this allocator, not used after a non-null return.
#[no_mangle]
pub unsafe extern "C" fn rallocx(p: *mut c_void, size: usize, flags: c_int) -> *mut c_void {
    // SAFETY: the contract of rallocx.
    unsafe { api::rallocx(p, size, flags) }
}

/// `xallocx` (jemalloc).
///
/// # Safety
/// `p` must be a live block of this allocator.
#[no_mangle]
pub unsafe extern "C" fn xallocx(p: *mut c_void, size: usize, extra: usize, flags: c_int) -> usize {
    // SAFETY: the contract of xallocx.
    unsafe { api::xallocx(p, size, extra, flags) }
}

/// `sallocx` (jemalloc).
#[no_mangle]
pub extern "C" fn sallocx(p: *const c_void, flags: c_int) -> usize {
    api::sallocx(p, flags)
}

/// `dallocx` (jemalloc).
///
/// # Safety
/// As for `free`.
#[no_mangle]
pub unsafe extern "C" fn dallocx(p: *mut c_void, flags: c_int) {
    // SAFETY: the contract of dallocx.
    unsafe { api::dallocx(p, flags) }
}

/// `sdallocx` (jemalloc).
///
/// # Safety
/// As for `free`.
#[no_mangle]
pub unsafe extern "C" fn sdallocx(p: *mut c_void, size: usize, flags: c_int) {
    // SAFETY: the contract of sdallocx.
    unsafe { api::sdallocx(p, size, flags) }
}

/// `nallocx` (jemalloc).
#[no_mangle]
pub extern "C" fn nallocx(size: usize, flags: c_int) -> usize {
    api::nallocx(size, flags)
}

/// `mallctl` (jemalloc): reads or writes a named setting or statistic (`docs/jemalloc-api.md`).
///
/// # Safety
/// `name` must be null or a C string; the buffers as jemalloc's `mallctl` requires.
#[no_mangle]
pub unsafe extern "C" fn mallctl(
    name: *const c_char,
    oldp: *mut c_void,
    oldlenp: *mut usize,
    newp: *mut c_void,
    newlen: usize,
) -> c_int {
    // SAFETY: per the contract.
    unsafe { api::mallctl(c_str_or_empty(name), oldp, oldlenp, newp, newlen) }
}

/// `mallctlnametomib` (jemalloc).
///
/// # Safety
/// `name` must be null or a C string; `miblenp` valid to read and write, and `mibp` valid to
/// write `*miblenp` entries (both may be null: `EINVAL`).
#[no_mangle]
pub unsafe extern "C" fn mallctlnametomib(
    name: *const c_char,
    mibp: *mut usize,
    miblenp: *mut usize,
) -> c_int {
    if mibp.is_null() || miblenp.is_null() {
        return libc::EINVAL;
    }
    // SAFETY: per the contract, `mibp` holds `*miblenp` writable entries.
    let mib = unsafe { core::slice::from_raw_parts_mut(mibp, *miblenp) };
    // SAFETY: per the contract.
    match api::mallctlnametomib(unsafe { c_str_or_empty(name) }, mib) {
        Ok(n) => {
            // SAFETY: as above.
            unsafe { *miblenp = n };
            0
        }
        Err(e) => e,
    }
}

/// `mallctlbymib` (jemalloc).
///
/// # Safety
/// `mib` must be valid to read `miblen` entries (or null with `miblen` 0); the buffers as for
/// [`mallctl`].
#[no_mangle]
pub unsafe extern "C" fn mallctlbymib(
    mib: *const usize,
    miblen: usize,
    oldp: *mut c_void,
    oldlenp: *mut usize,
    newp: *mut c_void,
    newlen: usize,
) -> c_int {
    let mib = if mib.is_null() {
        &[][..]
    } else {
        // SAFETY: per the contract.
        unsafe { core::slice::from_raw_parts(mib, miblen) }
    };
    // SAFETY: per the contract.
    unsafe { api::mallctlbymib(mib, oldp, oldlenp, newp, newlen) }
}
