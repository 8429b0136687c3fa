//! Cost per capture of each unwinder at a 20-deep recursion.
//!
//! `cargo run -p tally-profiler --release --example unwind_cost`; add
//! `RUSTFLAGS="-C force-frame-pointers=yes"` to give the frame-pointer walker a chain to follow.

use std::time::Instant;

use tally_profiler::unwind::{FramePointers, Libgcc, Unwinder};
use tally_profiler::MAX_FRAMES;

#[inline(never)]
fn recurse(n: usize, f: &mut dyn FnMut()) {
    if n == 0 {
        f();
    } else {
        recurse(n - 1, f);
    }
    std::hint::black_box(n);
}

fn measure(name: &str, u: &dyn Unwinder) {
    let mut frames = [0usize; MAX_FRAMES];
    let iterations = 200_000u32;
    let mut depth = 0;
    recurse(20, &mut || {
        u.prepare();
        let start = Instant::now();
        for _ in 0..iterations {
            depth = u.capture(&mut frames, 0);
            std::hint::black_box(&frames);
        }
        let ns = start.elapsed().as_nanos() as f64 / f64::from(iterations);
        println!(
            "{name:>15}: {ns:8.1} ns per capture, {depth} frames ({:.1} ns per frame)",
            ns / depth.max(1) as f64
        );
    });
}

fn main() {
    measure("frame pointers", &FramePointers);
    measure("libgcc", &Libgcc);
    #[cfg(all(target_arch = "x86_64", target_os = "linux"))]
    measure("cached dwarf", &tally_profiler::cfi::Cfi);
}
