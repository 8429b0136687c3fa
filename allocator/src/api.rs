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

use crate::arena::{self, Arena, ARENAS};
use crate::{alloc, block, ctl, free, realloc, thread};
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
    crate::stats::print(stats_flags(opts));
}

/// The `stats_print_opts` bits of the letters in `opts` (others are ignored).
fn stats_flags(opts: &[u8]) -> u32 {
    let mut flags = 0;
    for &c in opts {
        if let Some(i) = crate::options::STATS_FLAGS.bytes().position(|f| f == c) {
            flags |= 1 << i;
        }
    }
    flags
}

/// jemalloc's `write_cb` of `malloc_stats_print`: gets its `cbopaque` and a NUL-terminated piece
/// of the report.
pub type StatsWriteCb = unsafe extern "C" fn(*mut c_void, *const core::ffi::c_char);

/// `malloc_stats_print(write_cb, cbopaque, opts)` (jemalloc): Tally's statistics (as
/// `tally_stats_print(opts)`: `J` JSON, `a` no arena table, `b` no size-class table; jemalloc's
/// other letters ignored) handed to `write_cb` in NUL-terminated pieces, or to stderr when it is
/// null.
///
/// # Safety
/// `write_cb`, when given, must be callable with `cbopaque` and a C string.
#[inline(always)]
pub unsafe fn malloc_stats_print(write_cb: Option<StatsWriteCb>, cbopaque: *mut c_void, opts: &[u8]) {
    let flags = stats_flags(opts);
    match write_cb {
        None => crate::stats::print(flags),
        // SAFETY: per the contract; each piece ends with the NUL `print_to` puts after it.
        Some(cb) => crate::stats::print_to(flags, &mut |text| unsafe { cb(cbopaque, text.as_ptr().cast()) }),
    }
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

/// jemalloc's `MALLOCX_LG_ALIGN(la)` (and `MALLOCX_ALIGN(a)`, its power-of-two form): the low 6
/// bits of the flags are the alignment's log; 0 asks for none beyond the natural one.
pub const MALLOCX_LG_ALIGN_MASK: i32 = 0x3f;
/// jemalloc's `MALLOCX_ZERO`: the block (the whole of it, as `sallocx` counts it) reads as zero;
/// for `rallocx`, the bytes past the old usable size.
pub const MALLOCX_ZERO: i32 = 0x40;

/// jemalloc's `MALLOCX_TCACHE(tc)` bits: `(tc + 2) << 8`, 0 for the thread's own cache.
pub const MALLOCX_TCACHE_MASK: i32 = 0xfff00;
/// jemalloc's `MALLOCX_TCACHE_NONE` (`MALLOCX_TCACHE(-1)`): past the thread cache.
pub const MALLOCX_TCACHE_NONE: i32 = 1 << 8;
/// jemalloc's `MALLOCX_ARENA(a)` bits: `(a + 1) << 20`.
pub const MALLOCX_ARENA_SHIFT: u32 = 20;

/// The arena a `mallocx` with these flags allocates from past the thread cache: `None` for the
/// thread's cache (no `MALLOCX_ARENA`, no `MALLOCX_TCACHE_NONE`; Tally has no explicit caches,
/// so `MALLOCX_TCACHE(tc)` means the thread's own), the arena named or the thread's own,
/// `Err` for an arena Tally does not have (the allocation fails, as in jemalloc).
fn uncached_arena(flags: i32) -> Option<Result<&'static Arena, ()>> {
    let named = (flags as u32) >> MALLOCX_ARENA_SHIFT;
    if named != 0 {
        let i = named as usize - 1;
        return Some(if i < arena::arena_count() {
            Ok(&ARENAS[i])
        } else {
            Err(())
        });
    }
    (flags & MALLOCX_TCACHE_MASK == MALLOCX_TCACHE_NONE).then(|| Ok(thread::thread_arena()))
}

/// The alignment the `*allocx` flags ask for (0: none).
#[inline(always)]
fn mallocx_align(flags: i32) -> usize {
    match flags & MALLOCX_LG_ALIGN_MASK {
        0 => 0,
        lg => 1usize << lg,
    }
}

/// `mallocx(size, flags)` (jemalloc): `malloc` with the alignment and zeroing of `flags`. The
/// thread-cache and arena bits (`MALLOCX_TCACHE*`, `MALLOCX_ARENA`) are accepted and not
/// honoured: every block comes through the calling thread's cache and arena. Null when out of
/// memory (jemalloc sets no `errno` here; neither does Tally).
#[inline(always)]
pub fn mallocx(size: usize, flags: i32) -> *mut c_void {
    let p = match (mallocx_align(flags), uncached_arena(flags)) {
        (_, Some(Err(()))) => return ptr::null_mut(),
        (align, Some(Ok(arena))) => alloc::alloc_uncached(size, align.max(1), arena),
        (0, None) => alloc::alloc(size),
        (align, None) => alloc::alloc_aligned(size, align),
    };
    if !p.is_null() && flags & MALLOCX_ZERO != 0 {
        // SAFETY: a fresh block of its usable size.
        unsafe { ptr::write_bytes(p, 0, block::usable_size(p)) };
    }
    p.cast()
}

/// `rallocx(p, size, flags)` (jemalloc): `realloc` keeping the alignment of `flags` (a block
/// that is not aligned so, or whose new size needs another class, moves to one that is), the
/// bytes past the old usable size zero with `MALLOCX_ZERO`. Null, `p` untouched, when out of
/// memory. A size of 0 is taken as 1 (jemalloc leaves it undefined).
///
/// # Safety
/// `p` must be a live block of Tally's, not used after a non-null return.
#[inline(always)]
pub unsafe fn rallocx(p: *mut c_void, size: usize, flags: i32) -> *mut c_void {
    let old = block::usable_size(p.cast());
    let size = size.max(1);
    if uncached_arena(flags).is_some() {
        // Past the thread cache or from a named arena: a new block as `mallocx` makes it (zeroed
        // whole with MALLOCX_ZERO, the old bytes copied over), the old one freed as `dallocx`
        // frees it.
        let q = mallocx(size, flags);
        if !q.is_null() {
            // SAFETY: both blocks are live and distinct; `old` and `size` bound their bytes.
            unsafe {
                ptr::copy_nonoverlapping(p.cast::<u8>(), q.cast::<u8>(), old.min(size));
                dallocx(p, flags);
            }
        }
        return q;
    }
    let align = mallocx_align(flags);
    let q = if align <= 16 || (p as usize % align == 0 && nallocx(size, flags) == old) {
        // SAFETY: per the contract; classes up to 16-byte alignment keep it when they move.
        unsafe { realloc::realloc(p.cast(), size.max(align)) }
    } else {
        let q = alloc::alloc_aligned(size, align);
        if !q.is_null() {
            // SAFETY: both blocks are live and distinct; `old` and `size` bound their bytes.
            unsafe {
                ptr::copy_nonoverlapping(p.cast::<u8>(), q, old.min(size));
                free::free(p.cast());
            }
        }
        q
    };
    if !q.is_null() && flags & MALLOCX_ZERO != 0 {
        let new = block::usable_size(q);
        if new > old {
            // SAFETY: the block's bytes from `old` to its usable size.
            unsafe { ptr::write_bytes(q.add(old), 0, new - old) };
        }
    }
    q.cast()
}

/// `xallocx(p, size, extra, flags)` (jemalloc): resizes `p` in place, never moving it, to
/// `size + extra` bytes where it can, else to `size`, and returns its usable size, which is less
/// than `size` when it could not grow (`realloc::resize_in_place` says which blocks can). With
/// `MALLOCX_ZERO` the bytes it gained read as zero. The block's address, so its alignment, stays.
///
/// # Safety
/// `p` must be a live block of Tally's.
#[inline(always)]
pub unsafe fn xallocx(p: *mut c_void, size: usize, extra: usize, flags: i32) -> usize {
    let zero = flags & MALLOCX_ZERO != 0;
    let old = if zero { block::usable_size(p.cast()) } else { 0 };
    // SAFETY: per the contract.
    let new = unsafe { realloc::resize_in_place(p.cast(), size, extra) };
    if zero && new > old {
        // SAFETY: the block's bytes from `old` to its new usable size.
        unsafe { ptr::write_bytes(p.cast::<u8>().add(old), 0, new - old) };
    }
    new
}

/// `sallocx(p, flags)` (jemalloc): the usable size of `p` (`malloc_usable_size`).
#[inline(always)]
pub fn sallocx(p: *const c_void, _flags: i32) -> usize {
    block::usable_size(p as *mut u8)
}

/// `dallocx(p, flags)` (jemalloc): `free`.
///
/// # Safety
/// As for [`free`].
#[inline(always)]
pub unsafe fn dallocx(p: *mut c_void, flags: i32) {
    // SAFETY: per the contract.
    unsafe {
        if flags & MALLOCX_TCACHE_MASK == MALLOCX_TCACHE_NONE {
            free::free_uncached(p.cast())
        } else {
            free::free(p.cast())
        }
    }
}

/// `sdallocx(p, size, flags)` (jemalloc): `free` of a block whose size the caller knows (Tally
/// finds it itself).
///
/// # Safety
/// As for [`free`].
#[inline(always)]
pub unsafe fn sdallocx(p: *mut c_void, _size: usize, flags: i32) {
    // SAFETY: per the contract.
    unsafe { dallocx(p, flags) }
}

/// `nallocx(size, flags)` (jemalloc): the usable size `mallocx(size, flags)` would give,
/// without allocating (`sallocx` of that block says the same for every size class and
/// alignment up to a page); 0 when the request cannot be served.
#[inline(always)]
pub fn nallocx(size: usize, flags: i32) -> usize {
    alloc::usable_for(size, mallocx_align(flags).max(1))
}

/// `mallctl(name, oldp, oldlenp, newp, newlen)` (jemalloc): reads or writes the setting or
/// statistic `name` (`ctl.rs`; the names in `docs/jemalloc-api.md`). 0, or an `errno` value:
/// `ENOENT` for a name Tally does not have, `EINVAL` for a wrong size, `EPERM` for a read-only
/// name written, `EFAULT` when a profile cannot be written.
///
/// # Safety
/// When `oldp` and `oldlenp` are both non-null, `oldlenp` must be valid to read and write and
/// `oldp` valid to write `*oldlenp` bytes; `newp`, when non-null, valid to read `newlen` bytes
/// (and, for a name that takes a string, hold a pointer to a C string).
pub unsafe fn mallctl(
    name: &[u8],
    oldp: *mut c_void,
    oldlenp: *mut usize,
    newp: *const c_void,
    newlen: usize,
) -> i32 {
    // SAFETY: per the contract.
    let call = unsafe { ctl::Call::new(oldp, oldlenp, newp, newlen) };
    ctl::by_name(name, &call)
}

/// `mallctlnametomib(name, mibp, miblenp)` (jemalloc): the MIB of `name` (or of its first
/// `mib.len()` components) into `mib`; returns the entries written, or an `errno` value.
pub fn mallctlnametomib(name: &[u8], mib: &mut [usize]) -> Result<usize, i32> {
    ctl::name_to_mib(name, mib)
}

/// `mallctlbymib(mib, miblen, oldp, oldlenp, newp, newlen)` (jemalloc): [`mallctl`] by MIB.
///
/// # Safety
/// As for [`mallctl`].
pub unsafe fn mallctlbymib(
    mib: &[usize],
    oldp: *mut c_void,
    oldlenp: *mut usize,
    newp: *const c_void,
    newlen: usize,
) -> i32 {
    // SAFETY: per the contract.
    let call = unsafe { ctl::Call::new(oldp, oldlenp, newp, newlen) };
    ctl::by_mib(mib, &call)
}
