//! The recording path and the dump never allocate: a counting `#[global_allocator]` sees zero
//! allocations during many captures, sampled allocations, frees and dumps.
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

fn main() {
    tally_profiler::prepare();
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
            // Vary the stacks so that tables grow while we count.
            frames[0] ^= i % 1500;
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
