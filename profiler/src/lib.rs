//! Tally's sampling heap profiler.
//!
//! This crate stands below the allocator (`tally`) and never calls back into it. It will hold the
//! byte-countdown sampler, the stack unwinder, the live-block table and the `heap_v2` dump writer
//! (see `docs/architecture.md`). Until the profiler issue lands it only fixes the constants the
//! allocator already agrees on.
#![no_std]

/// Default `lg_prof_sample`: the mean sampling distance is `2^19` bytes (512 KiB), as in jemalloc.
pub const DEFAULT_LG_PROF_SAMPLE: u32 = 19;
/// Frames captured per sampled stack at most.
pub const MAX_FRAMES: usize = 128;
