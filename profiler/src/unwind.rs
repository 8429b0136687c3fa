//! Stack capture: one [`Unwinder`] interface, two walkers here (and `cfi`'s, the default).
//!
//! - [`FramePointers`] follows the saved frame-pointer chain (`[fp] = caller's fp`,
//!   `[fp + 8] = return address` on x86-64 and AArch64). It is fast and needs no tables, but only
//!   sees frames of code that keeps frame pointers (Rust with `-C force-frame-pointers=yes`, C with
//!   `-fno-omit-frame-pointer`, a JVM with `-XX:+PreserveFramePointer`); elsewhere the chain
//!   ends early or holds garbage. The walk never faults on unmapped memory: it reads only
//!   16-byte-aligned frame pointers that climb the stack by less than [`MAX_FRAME_BYTES`], and it
//!   asks the kernel (`mincore`) about each page it has not yet seen mapped in this walk (the
//!   pages of a stack are contiguous, so usually one or two calls per capture). A garbage pointer
//!   into a mapped `PROT_NONE` page could still fault; that needs a chain already corrupt.
//! - [`Libgcc`] asks libgcc's DWARF unwinder (`_Unwind_Backtrace`), which reads `.eh_frame` and
//!   works for all code built with unwind tables (the default for C, C++ and Rust on Linux), but
//!   costs more per frame. Its walk ends at the first return address without unwind tables
//!   (JIT-compiled code).
//!
//! The default walker on x86-64 Linux, `cfi::Cfi`, is a third: DWARF rules cached per return
//! address, and a mixed walk that crosses code without tables by its frame pointers (the two
//! above in one walk, each where it works; see its module docs).
//!
//! What is known about `_Unwind_Backtrace` and `malloc` (glibc, libgcc_s):
//! - It finds each frame's FDE through `_Unwind_Find_FDE` → `dl_iterate_phdr`, which takes the
//!   dynamic loader's lock (`dl_load_write_lock`, recursive). `dlopen` holds that lock while it
//!   calls `malloc`. So capturing while holding an allocator lock can deadlock against a thread in
//!   `dlopen` waiting for that allocator lock (reported for tcmalloc, async-profiler and
//!   libunwind): capture with no allocator lock held. Same-thread re-entry (a sampled `malloc`
//!   inside `dlopen`) is fine: the lock is recursive.
//! - The PT_GNU_EH_FRAME path (every normally linked object) searches `.eh_frame_hdr` and a
//!   static cache of program headers: no allocation. Objects that register frames with
//!   `__register_frame_info` (some JITs, old static binaries) are sorted on first lookup with
//!   `malloc` in older libgcc (`init_object`), and newer libgcc (13+) allocates b-tree nodes when
//!   frames are registered. glibc's `backtrace()` additionally `dlopen`s libgcc_s on its first call;
//!   calling `_Unwind_Backtrace` directly, linked, avoids that.
//! - jemalloc and libbacktrace therefore make one capture at initialization, so that any lazy
//!   set-up happens before the profiler is live: [`Unwinder::prepare`]. The allocator must still
//!   treat a `malloc` from inside a capture as re-entry (its per-thread guard), never sample it.

use core::mem::MaybeUninit;

/// Frames captured per sampled stack at most.
pub const MAX_FRAMES: usize = 128;

/// A buffer for a capture that need not be initialized first: the unwinder writes
/// `frames[..n]` and returns `n` (zeroing 1 KiB for nothing was 4% of a profiler sample).
pub type Frames = [MaybeUninit<usize>; MAX_FRAMES];

/// A stack walker. `capture` fills `frames` with return addresses, innermost first, starting in
/// the function that called `capture` and dropping `skip` more frames; it returns how many it
/// wrote. It never allocates through `malloc` after [`Unwinder::prepare`], never panics and
/// never takes a lock of the allocator. A walker implements [`Unwinder::capture_into`] (the
/// walkers here) or [`Unwinder::capture`] (an earlier copy that `benches/src/bin/unwind_cost.rs`
/// times against this one); each one's default calls the other, inlined, so the walk starts in
/// the same frame either way.
pub trait Unwinder {
    /// Captures the calling thread's stack into `frames`: writes `frames[..n]`, returns `n`.
    #[inline(always)]
    fn capture_into(&self, frames: &mut Frames, skip: usize) -> usize {
        let frames = frames.as_mut_ptr().cast::<usize>();
        // SAFETY: `Frames` has the layout of `[usize; MAX_FRAMES]`; written all over first.
        unsafe {
            frames.write_bytes(0, MAX_FRAMES);
            self.capture(&mut *frames.cast::<[usize; MAX_FRAMES]>(), skip)
        }
    }
    /// [`Unwinder::capture_into`] a buffer already initialized.
    #[inline(always)]
    fn capture(&self, frames: &mut [usize; MAX_FRAMES], skip: usize) -> usize {
        // SAFETY: `MaybeUninit<usize>` has `usize`'s layout, and an unwinder writes only whole
        // `usize` values, so the array stays initialized.
        self.capture_into(
            unsafe { &mut *(frames as *mut [usize; MAX_FRAMES]).cast::<Frames>() },
            skip,
        )
    }
    /// [`Unwinder::capture_into`], and what the walker knows about the frames it wrote: a walker
    /// that can tell a capture repeats the one before it (`cfi`'s memo) gives back the id a
    /// stack table told it for those frames ([`Unwinder::remember_stack`]); the others, nothing.
    #[inline(always)]
    fn capture_keyed(&self, frames: &mut Frames, skip: usize) -> (usize, StackKey) {
        (self.capture_into(frames, skip), StackKey::NONE)
    }
    /// Tells the walker that the stack table at `table` interned the frames of the capture that
    /// gave `key` as `stack`, so that a capture that repeats it can say so in its key. Never
    /// waits; a walker may forget it at any time.
    fn remember_stack(&self, key: &StackKey, table: usize, stack: u32) {
        let _ = (key, table, stack);
    }
    /// One capture whose result is thrown away, to do lazy initialization early.
    fn prepare(&self) {
        let mut frames = [MaybeUninit::uninit(); MAX_FRAMES];
        self.capture_into(&mut frames, 0);
    }
}

/// What a capture's walker knew about the frames it wrote ([`Unwinder::capture_keyed`]): which of
/// its memos the walk used and that memo's walk number, and, when the walk repeated the memo's
/// last one step for step (so wrote the same frames), the stack id a table gave for them then.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct StackKey {
    /// The walker's memo ([`StackKey::NO_MEMO`]: none, the key knows nothing).
    pub memo: u32,
    /// The memo's walk number: it changes whenever a walk leaves the memo other frames.
    pub walk: u64,
    /// The table whose id `stack` is (0: no id known).
    pub table: usize,
    /// The id `table` gave these frames.
    pub stack: u32,
}

impl StackKey {
    /// No memo.
    pub const NO_MEMO: u32 = u32::MAX;
    /// A key that knows nothing.
    pub const NONE: StackKey = StackKey {
        memo: StackKey::NO_MEMO,
        walk: 0,
        table: 0,
        stack: 0,
    };

    /// The id the table at `table` gave the captured frames, if the walker knows it.
    #[inline(always)]
    pub fn known(&self, table: usize) -> Option<u32> {
        (table != 0 && self.table == table).then_some(self.stack)
    }
}

/// Largest distance between two consecutive frame pointers the walk accepts.
pub const MAX_FRAME_BYTES: usize = 1 << 20;

/// The frame-pointer walker.
#[derive(Clone, Copy, Debug, Default)]
pub struct FramePointers;

#[inline(always)]
fn frame_pointer() -> usize {
    let fp: usize;
    #[cfg(target_arch = "x86_64")]
    // SAFETY: reads a register, nothing else.
    unsafe {
        core::arch::asm!("mov {}, rbp", out(reg) fp, options(nomem, nostack, preserves_flags));
    }
    #[cfg(target_arch = "aarch64")]
    // SAFETY: reads a register, nothing else.
    unsafe {
        core::arch::asm!("mov {}, x29", out(reg) fp, options(nomem, nostack, preserves_flags));
    }
    #[cfg(not(any(target_arch = "x86_64", target_arch = "aarch64")))]
    {
        fp = 0;
    }
    fp
}

#[inline(always)]
fn stack_pointer() -> usize {
    let marker = 0u8;
    core::hint::black_box(&marker) as *const u8 as usize
}

impl Unwinder for FramePointers {
    #[inline(never)]
    fn capture_into(&self, frames: &mut Frames, skip: usize) -> usize {
        let page = tally_pal::PAGE;
        let sp = stack_pointer();
        // Pages [low, high) are known mapped: the one holding our own stack pointer, then every
        // page checked on the way up.
        let low = sp & !(page - 1);
        let mut high = low + page;
        let mut fp = frame_pointer();
        let mut prev = sp;
        let mut n = 0;
        let mut skipped = 0;
        while n < MAX_FRAMES {
            if fp == 0 || fp % 16 != 0 || fp < prev || fp - prev > MAX_FRAME_BYTES || fp < low {
                break;
            }
            // fp and fp + 8 share a page (fp is 16-aligned). Extend the known range page by page
            // up to it: a hole means a bad chain.
            while fp >= high {
                if !tally_pal::memory::page_is_mapped(high) {
                    return n;
                }
                high += page;
            }
            // SAFETY: `fp` is 16-aligned inside pages just found mapped (anonymous stack memory is
            // readable); a frame record is two words.
            let (next, ret) = unsafe { (*(fp as *const usize), *((fp + 8) as *const usize)) };
            if ret == 0 {
                break;
            }
            if skipped < skip {
                skipped += 1;
            } else {
                frames[n].write(ret);
                n += 1;
            }
            prev = fp + 16;
            fp = next;
        }
        n
    }
}

/// The libgcc (`_Unwind_Backtrace`) walker.
#[derive(Clone, Copy, Debug, Default)]
pub struct Libgcc;

#[allow(non_camel_case_types)]
type _Unwind_Reason_Code = core::ffi::c_int;
const URC_NO_REASON: _Unwind_Reason_Code = 0;
const URC_NORMAL_STOP: _Unwind_Reason_Code = 4;

#[allow(non_camel_case_types)]
#[repr(C)]
struct _Unwind_Context {
    _opaque: [u8; 0],
}

type TraceFn = extern "C" fn(*mut _Unwind_Context, *mut core::ffi::c_void) -> _Unwind_Reason_Code;

#[link(name = "gcc_s")]
extern "C" {
    fn _Unwind_Backtrace(trace: TraceFn, arg: *mut core::ffi::c_void) -> _Unwind_Reason_Code;
    fn _Unwind_GetIP(ctx: *mut _Unwind_Context) -> usize;
}

struct TraceState<'a> {
    frames: &'a mut Frames,
    n: usize,
    skip: usize,
}

extern "C" fn trace_one(ctx: *mut _Unwind_Context, arg: *mut core::ffi::c_void) -> _Unwind_Reason_Code {
    // SAFETY: `arg` is the `TraceState` that `capture` passed and keeps alive for the walk.
    let state = unsafe { &mut *arg.cast::<TraceState<'_>>() };
    // SAFETY: `ctx` is the context libgcc hands to this callback.
    let ip = unsafe { _Unwind_GetIP(ctx) };
    if ip == 0 {
        return URC_NORMAL_STOP;
    }
    if state.skip > 0 {
        state.skip -= 1;
        return URC_NO_REASON;
    }
    state.frames[state.n].write(ip);
    state.n += 1;
    if state.n == MAX_FRAMES {
        URC_NORMAL_STOP
    } else {
        URC_NO_REASON
    }
}

impl Unwinder for Libgcc {
    #[inline(never)]
    fn capture_into(&self, frames: &mut Frames, skip: usize) -> usize {
        // The first context is this function itself: skip it, so that the first frame is a
        // return address into our caller, as with `FramePointers`.
        let mut state = TraceState {
            frames,
            n: 0,
            skip: skip.saturating_add(1),
        };
        // SAFETY: `trace_one` only touches `state`, which outlives the call.
        unsafe { _Unwind_Backtrace(trace_one, (&mut state as *mut TraceState<'_>).cast()) };
        state.n
    }
}
