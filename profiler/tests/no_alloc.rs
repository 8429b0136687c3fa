//! The recording path and the dump never allocate: a counting `#[global_allocator]` sees zero
//! allocations during many captures (on x86-64 Linux also mixed walks, through a hand-made
//! function without unwind tables), sampled allocations, frees and dumps.
//!
//! Runs without the test harness (the harness allocates on other threads while tests run).

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

use tally_profiler::unwind::{FramePointers, Libgcc, Unwinder};
use tally_profiler::{capture_stack, Profiler, MAX_FRAMES};

struct Counting;

static COUNTING: AtomicBool = AtomicBool::new(false);
static ALLOCATIONS: AtomicUsize = AtomicUsize::new(0);

// SAFETY: forwards to the system allocator; counting has no effect on the blocks.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        if COUNTING.load(Ordering::Relaxed) {
            ALLOCATIONS.fetch_add(1, Ordering::Relaxed);
        }
        // SAFETY: same contract as ours.
        unsafe { System.alloc(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: same contract as ours.
        unsafe { System.dealloc(ptr, layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        if COUNTING.load(Ordering::Relaxed) {
            ALLOCATIONS.fetch_add(1, Ordering::Relaxed);
        }
        // SAFETY: same contract as ours.
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

static P: Profiler = Profiler::new(1 << 16, 1 << 20);

#[inline(never)]
fn deep(n: usize, f: &mut dyn FnMut()) {
    if n == 0 {
        f();
    } else {
        deep(n - 1, f);
    }
    std::hint::black_box(n);
}

/// A hand-made function in anonymous executable memory, without unwind tables, that keeps a
/// frame pointer: `push rbp; mov rbp, rsp; mov rax, rdi; mov rdi, rsi; call rax; pop rbp; ret`,
/// so `f(target, arg)` calls `target(arg)`.
#[cfg(all(target_arch = "x86_64", target_os = "linux"))]
fn trampoline() -> extern "C" fn(extern "C" fn(*mut std::ffi::c_void), *mut std::ffi::c_void) {
    const CODE: [u8; 14] = [
        0x55, 0x48, 0x89, 0xe5, 0x48, 0x89, 0xf8, 0x48, 0x89, 0xf7, 0xff, 0xd0, 0x5d, 0xc3,
    ];
    let page = tally_pal::map(tally_pal::PAGE);
    assert!(!page.is_null());
    // SAFETY: a fresh page of ours: the code goes in, then the page becomes executable, and the
    // code is a function of this signature that keeps the ABI's rules.
    unsafe {
        std::ptr::copy_nonoverlapping(CODE.as_ptr(), page, CODE.len());
        assert_eq!(
            libc::mprotect(page.cast(), tally_pal::PAGE, libc::PROT_READ | libc::PROT_EXEC),
            0
        );
        std::mem::transmute(page)
    }
}

/// Captures into the `([usize; MAX_FRAMES], usize)` at `arg`.
#[cfg(all(target_arch = "x86_64", target_os = "linux"))]
extern "C" fn capture_into(arg: *mut std::ffi::c_void) {
    // SAFETY: `arg` is the pair `main` passes, alive for the call.
    let (frames, n) = unsafe { &mut *arg.cast::<([usize; MAX_FRAMES], usize)>() };
    *n = capture_stack(frames, 0);
}

fn main() {
    tally_profiler::prepare();
    #[cfg(all(target_arch = "x86_64", target_os = "linux"))]
    let through = trampoline();
    P.sampling.set_lg(10);
    P.set_accum(true);
    let devnull = std::fs::OpenOptions::new().write(true).open("/dev/null").unwrap();
    use std::os::fd::AsRawFd;
    let fd = devnull.as_raw_fd();

    COUNTING.store(true, Ordering::SeqCst);
    let mut sampled = 0usize;
    deep(20, &mut || {
        let mut frames = [0usize; MAX_FRAMES];
        for i in 0..20_000usize {
            let n = match i % 3 {
                0 => capture_stack(&mut frames, 0),
                1 => Libgcc.capture(&mut frames, 0),
                _ => FramePointers.capture(&mut frames, 0),
            };
            // Vary the stacks so that tables grow while we count (in bits above the code's
            // addresses, so that two walkers' first frames, a few bytes apart, never meet).
            frames[0] ^= (i % 1500) << 24;
            let ptr = 0x10_0000 + 16 * i;
            if P.on_sampled_alloc(ptr, 16 + i % 5000, &frames[..n.max(1)]) {
                sampled += 1;
            }
            if i % 4 != 0 {
                assert!(P.on_sampled_free(ptr));
            }
            if i % 5000 == 0 {
                P.dump_to_fd(fd).unwrap();
            }
        }
    });
    // Mixed walks: through the hand-made function and on to the end of the stack.
    #[cfg(all(target_arch = "x86_64", target_os = "linux"))]
    deep(20, &mut || {
        let mut captured = ([0usize; MAX_FRAMES], 0usize);
        for _ in 0..2_000 {
            through(
                capture_into,
                (&mut captured as *mut ([usize; MAX_FRAMES], usize)).cast(),
            );
            assert!(captured.1 > 23, "the walk stopped at {} frames", captured.1);
        }
    });
    COUNTING.store(false, Ordering::SeqCst);
    let allocations = ALLOCATIONS.load(Ordering::SeqCst);

    assert_eq!(sampled, 20_000, "no sample dropped");
    assert_eq!(P.live.len(), 5_000);
    assert!(
        P.stacks.len() >= 1000,
        "{} stacks, {} dropped",
        P.stacks.len(),
        P.dropped()
    );
    if allocations != 0 {
        println!("test no_alloc ... FAILED: {allocations} allocations on the recording path");
        println!("test result: FAILED. 0 passed; 1 failed");
        std::process::exit(1);
    }
    println!("test recording_and_dumping_do_not_allocate ... ok");
    println!("test result: ok. 1 passed; 0 failed");
}
