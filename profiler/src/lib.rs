//! Tally's sampling heap profiler.
//!
//! This crate stands below the allocator (`tally`) and never calls back into it: its memory
//! comes from `mmap` directly, it links no allocator of its own, and its system calls and its
//! lock come from `tally-pal`, the platform layer it shares with the allocator. The dump format
//! and the estimate maths live in `tally-format` (see `docs/heap-format.md`).
//!
//! # Layers, bottom up
//! Each module uses only the ones above it in this list (a test reads this list and the code's
//! `use crate::` lines and fails on an import against it):
//!
//! 1. `sampler` — the sampling settings and each thread's distance to its next sample.
//! 2. `unwind` — stack capture behind one `Unwinder` interface (frame pointers, libgcc).
//! 3. `cfi` — on x86-64 Linux, a DWARF walker with a rule cache, the default unwinder.
//! 4. `stacks` — the stack table (interned stacks and their counters).
//! 5. `live` — the live-block table (sampled blocks by address).
//! 6. `dump` — writing `heap_v2` dumps and naming their files.
//! 7. `schedule` — when profiles are written (interval, peak, request, exit).
//!
//! This file holds [`Profiler`], which ties the tables, the sampling settings and the schedule
//! together, the global instance [`PROFILER`] and the functions the allocator calls.
//!
//! # The contract with the allocator
//! The profiler owns the sampling rate, whether sampling is on, and the accumulation of bytes
//! for interval dumps. The allocator keeps a [`ThreadSampler`] in each thread's block and
//! counts allocated bytes down on its fast path; when its countdown runs out it calls
//! [`Sampling::settle`] (through `PROFILER.sampling`) with the bytes spent, and
//! [`Schedule::count_bytes`] and [`Profiler::write_due_profiles`]. When `settle` returns true:
//! 1. with **no allocator lock held**, [`capture_stack_into`] a [`Frames`] buffer on the stack;
//! 2. allocate the block (marked as sampled, so that its free finds the record);
//! 3. [`on_sampled_alloc`]`(ptr, size, frames)`.
//!
//! On freeing a block marked as sampled: [`on_sampled_free`]`(ptr)`.
//!
//! What these functions do and never do:
//! - They may call `mmap`/`munmap` (tables are mapped on first use and grow), and take the
//!   profiler's own locks (ranked first in the lock order, `tally_pal::sync::Rank`) for a few
//!   hundred instructions; those locks are never held while calling anything that could
//!   allocate or come back into the allocator.
//! - They never call `malloc` (a test with a counting `#[global_allocator]` proves it), never
//!   panic, and never fail loudly: when memory runs out, a sample is dropped.
//! - [`capture_stack`] may fall back to the libgcc unwinder, which can go through
//!   `dl_iterate_phdr` and the dynamic loader's lock: see [`unwind`] for why no allocator lock
//!   may be held then, and call [`prepare`] before the first capture. The allocator must treat a
//!   `malloc` that happens inside a capture or a dump as re-entry (its per-thread guard) and not
//!   sample it.
//! - The dump functions ([`dump_to_path`], [`Profiler::dump_with_prefix`],
//!   [`Profiler::dump_to_fd`]) open, write and rename files and read `/proc/self/maps`, all with
//!   system calls: no `malloc` either, so they can run from inside the allocator (at exit, on a
//!   request, on an interval).
#![no_std]

#[cfg(test)]
extern crate std;

use core::sync::atomic::{AtomicBool, AtomicU64, Ordering};

#[cfg(all(target_arch = "x86_64", target_os = "linux"))]
pub mod cfi;
pub mod dump;
pub mod live;
pub mod sampler;
pub mod schedule;
pub mod stacks;
pub mod unwind;

pub use dump::{DumpError, DumpKind};
pub use sampler::{neg_ln_unit, next_sample_distance, Sampling, ThreadSampler};
pub use schedule::Schedule;
pub use stacks::StackId;
pub use tally_format::Estimate;
use unwind::Unwinder as _;

pub use sampler::DEFAULT_LG_PROF_SAMPLE;
pub use unwind::{Frames, StackKey, MAX_FRAMES};

/// Stacks the global profiler interns at most (address space reserved, memory used as filled).
pub const MAX_STACKS: usize = 1 << 20;
/// Frame words the global profiler stores at most, over all stacks.
pub const MAX_FRAME_WORDS: usize = 1 << 25;

/// The profiler's tables and settings. The allocator uses the global [`PROFILER`]; tests build
/// private ones.
pub struct Profiler {
    /// Interned stacks and their counters.
    pub stacks: stacks::StackTable,
    /// Sampled blocks alive.
    pub live: live::LiveTable,
    /// Whether it is on, whether it samples now, and the rate.
    pub sampling: Sampling,
    /// When profiles are written, and their names.
    pub schedule: Schedule,
    accum: AtomicBool,
    seq: AtomicU64,
    dropped: AtomicU64,
    /// Dump failures already reported on stderr, as [`failure_key`]s (0: free slot).
    reported: [AtomicU64; REPORTED_FAILURES],
}

/// Distinct dump failures remembered, so each is reported once; past this many, new ones are
/// still reported, each time (a process does not meet that many different failures).
const REPORTED_FAILURES: usize = 16;

/// A non-zero key naming a dump failure: the error and the prefix it happened with (FNV-1a).
fn failure_key(e: DumpError, prefix: &[u8]) -> u64 {
    let code: u64 = match e {
        DumpError::Off => 1 << 32,
        DumpError::Os(errno) => errno as u32 as u64,
        DumpError::PathTooLong => 2 << 32,
        DumpError::Format => 3 << 32,
    };
    let mut h = 0xcbf2_9ce4_8422_2325u64;
    for &b in code.to_le_bytes().iter().chain(prefix) {
        h = (h ^ u64::from(b)).wrapping_mul(0x0000_0100_0000_01b3);
    }
    h | 1
}

impl Profiler {
    /// A profiler with room for `max_stacks` stacks and `max_frame_words` frames; maps nothing
    /// until the first sample.
    pub const fn new(max_stacks: usize, max_frame_words: usize) -> Self {
        Profiler {
            stacks: stacks::StackTable::new(max_stacks, max_frame_words),
            live: live::LiveTable::new(),
            sampling: Sampling::new(),
            schedule: Schedule::new(),
            accum: AtomicBool::new(false),
            seq: AtomicU64::new(0),
            dropped: AtomicU64::new(0),
            reported: [const { AtomicU64::new(0) }; REPORTED_FAILURES],
        }
    }

    /// The mean sampling period in bytes, `2^lg_prof_sample` (the rate is `sampling`'s).
    pub fn period(&self) -> u64 {
        1u64 << self.sampling.lg()
    }

    /// Turns cumulative counting (`prof_accum`) on or off.
    pub fn set_accum(&self, on: bool) {
        self.accum.store(on, Ordering::Relaxed);
    }

    /// Whether cumulative counting is on.
    pub fn accum_enabled(&self) -> bool {
        self.accum.load(Ordering::Relaxed)
    }

    /// Samples dropped because a table was full or memory could not be mapped.
    pub fn dropped(&self) -> u64 {
        self.dropped.load(Ordering::Relaxed)
    }

    fn next_seq(&self) -> u64 {
        self.seq.fetch_add(1, Ordering::Relaxed)
    }

    /// Records a sampled block of `size` bytes at `ptr` allocated from `frames` (innermost first).
    /// Returns false if the sample was dropped. Never allocates; may map memory.
    pub fn on_sampled_alloc(&self, ptr: usize, size: usize, frames: &[usize]) -> bool {
        self.on_sampled_alloc_keyed(ptr, size, frames, &StackKey::NONE)
    }

    /// [`Profiler::on_sampled_alloc`] of frames the default unwinder captured with `key`
    /// ([`capture_stack_keyed`]): their stack id from the key when the walker knows it (the
    /// capture repeated the one before it, whose frames this table interned), else interned and
    /// told to the walker. `frames` must be a function of the captured ones alone (a slice of
    /// them), so that the same capture always gives the same frames here; when
    /// [`Profiler::knows_stack`] says so of `key`, `frames` is not read (it may be empty).
    ///
    /// Never inlined: every sample the allocator records calls it once, and
    /// `benches/run-prof-cost.sh` counts a run's samples by those calls.
    #[inline(never)]
    pub fn on_sampled_alloc_keyed(&self, ptr: usize, size: usize, frames: &[usize], key: &StackKey) -> bool {
        let frames = &frames[..frames.len().min(MAX_FRAMES)];
        let table = self.table_id();
        let stack = match key.known(table) {
            Some(id) => {
                STACKS_KNOWN.store(STACKS_KNOWN.load(Ordering::Relaxed) + 1, Ordering::Relaxed);
                StackId(id)
            }
            None => {
                let Some(stack) = self.stacks.intern(frames) else {
                    self.dropped.fetch_add(1, Ordering::Relaxed);
                    return false;
                };
                if key.memo != StackKey::NO_MEMO {
                    DefaultUnwinder::default().remember_stack(key, table, stack.0);
                }
                stack
            }
        };
        let estimate = Estimate::of_sample(size as u64, self.period());
        let record = live::Record {
            addr: ptr,
            stack,
            size: size as u64,
            estimate,
        };
        match self.live.insert(record) {
            Ok(replaced) => {
                if let Some(old) = replaced {
                    self.stacks.sub(old.stack, old.estimate);
                }
                self.stacks.add(stack, estimate, self.accum_enabled());
                true
            }
            Err(_) => {
                self.dropped.fetch_add(1, Ordering::Relaxed);
                false
            }
        }
    }

    /// Whether this profiler's stack table holds the stack `key` knows (its capture repeated one
    /// whose frames the table interned): then [`Profiler::on_sampled_alloc_keyed`] reads no
    /// frame.
    #[inline]
    pub fn knows_stack(&self, key: &StackKey) -> bool {
        key.known(self.table_id()).is_some()
    }

    /// The stack table's address, which names it to the walker's keys.
    #[inline(always)]
    fn table_id(&self) -> usize {
        &self.stacks as *const stacks::StackTable as usize
    }

    /// `fork`'s prepare handler: takes the tables' locks so the child does not inherit one held
    /// by a thread that does not exist there.
    #[cfg_attr(target_os = "linux", link_section = ".text.hot.tally")]
    pub fn lock_for_fork(&self) {
        self.stacks.lock_for_fork();
        self.live.lock_for_fork();
        #[cfg(all(target_arch = "x86_64", target_os = "linux"))]
        cfi::lock_for_fork();
    }

    /// Releases the locks taken by [`Profiler::lock_for_fork`], in the parent or the `child`.
    ///
    /// # Safety
    /// The calling thread must have called `lock_for_fork` before the fork.
    #[cfg_attr(target_os = "linux", link_section = ".text.hot.tally")]
    pub unsafe fn unlock_after_fork(&self, child: bool) {
        // SAFETY: per the contract.
        unsafe {
            self.live.unlock_after_fork(child);
            self.stacks.unlock_after_fork(child);
        }
        #[cfg(all(target_arch = "x86_64", target_os = "linux"))]
        cfi::unlock_after_fork();
    }

    /// `prof.reset`: forgets every sample and zeroes every stack's counters, so that profiles
    /// written afterwards show only what is sampled from now on.
    pub fn reset(&self) {
        self.live.clear();
        self.stacks.reset_counters();
    }

    /// Forgets a sampled block that is being freed. Returns whether `ptr` was recorded.
    #[inline]
    pub fn on_sampled_free(&self, ptr: usize) -> bool {
        match self.live.remove(ptr) {
            Some(r) => {
                self.stacks.sub(r.stack, r.estimate);
                true
            }
            None => false,
        }
    }
}

impl Profiler {
    /// Writes a whole dump into `sink`: header, totals, every stack with something live (or,
    /// with `prof_accum`, ever allocated), then the memory map read from `/proc/self/maps` if
    /// `with_maps`. Returns the sink.
    pub fn write_dump<S: tally_format::Sink>(&self, sink: S, with_maps: bool) -> Result<S, DumpError> {
        dump::write_dump(&self.stacks, self.period(), self.accum_enabled(), sink, with_maps)
    }

    /// Writes a dump to an open file descriptor (not closed).
    pub fn dump_to_fd(&self, fd: core::ffi::c_int) -> Result<(), DumpError> {
        let mut sink = self.write_dump(dump::FdSink::new(fd), true)?;
        sink.flush()
            .map_err(|tally_format::SinkError(e)| DumpError::Os(e))
    }

    /// Writes a dump to `path` (bytes, no NUL needed): first to a new private file of a random
    /// name next to it (mode 0600, see [`dump::write_file`]), then renamed over `path`, so a
    /// reader never sees a partial file. On failure the temporary file is removed.
    pub fn dump_to_path(&self, path: &[u8]) -> Result<(), DumpError> {
        dump::write_file(path, |fd| self.dump_to_fd(fd))
    }

    /// Writes a dump named `<prefix>.<pid>.<seq>.<kind>.heap`, `<seq>` counting this process's
    /// dumps from 0. Returns the sequence number used.
    pub fn dump_with_prefix(&self, prefix: &[u8], kind: DumpKind) -> Result<u64, DumpError> {
        let seq = self.next_seq();
        let mut name = [0u8; dump::PATH_MAX];
        let len = dump::dump_file_name(&mut name, prefix, tally_pal::pid(), seq, kind)?;
        self.dump_to_path(&name[..len])?;
        Ok(seq)
    }
}

impl Profiler {
    /// Writes a profile of `kind` named after `prof_prefix`; a failure is reported on one line
    /// of stderr, in words, the first time it happens (see [`Profiler::first_failure`]).
    pub fn dump_scheduled(&self, kind: DumpKind) {
        let mut buf = [0u8; schedule::PREFIX_MAX];
        let prefix = self.schedule.prefix(&mut buf);
        if let Err(e) = self.dump_with_prefix(prefix, kind) {
            if self.first_failure(e, prefix) {
                tally_pal::print(format_args!(
                    "tally: cannot write a heap profile with prefix {}: {e} (the same failure again is not reported)\n",
                    ShownPath(prefix)
                ));
            }
        }
    }

    /// Whether `e` with `prefix` is a failure not reported before (and now counted as reported):
    /// a program writing a profile every few megabytes into a directory it cannot write to
    /// gets one line, not one per profile; a different error, or another prefix, gets its own.
    /// Lock-free (a compare-exchange per slot), so a signal handler or any thread may call it.
    pub fn first_failure(&self, e: DumpError, prefix: &[u8]) -> bool {
        let key = failure_key(e, prefix);
        for slot in &self.reported {
            match slot.compare_exchange(0, key, Ordering::Relaxed, Ordering::Relaxed) {
                Ok(_) => return true,
                Err(seen) if seen == key => return false,
                Err(_) => {}
            }
        }
        true
    }

    /// Writes every profile that is due now (see [`Schedule::due`]).
    pub fn write_due_profiles(&self, mapped: impl FnOnce() -> u64) {
        let due = self.schedule.due(mapped);
        for kind in [due.interval, due.peak, due.manual].into_iter().flatten() {
            self.dump_scheduled(kind);
        }
    }

    /// Writes a manual profile (`.m<n>.heap`) named after `prof_prefix`; returns its sequence
    /// number. [`DumpError::Off`] if the profiler is off.
    pub fn dump_manual(&self) -> Result<u64, DumpError> {
        if !self.sampling.is_on() {
            return Err(DumpError::Off);
        }
        let mut buf = [0u8; schedule::PREFIX_MAX];
        let prefix = self.schedule.prefix(&mut buf);
        self.dump_with_prefix(prefix, self.schedule.next_manual())
    }

    /// At exit: the final profile (`prof_final`) and the leak summary (`prof_leak`) on stderr.
    pub fn at_exit(&self, final_profile: bool, leak_summary: bool) {
        if !self.sampling.is_on() {
            return;
        }
        if final_profile {
            self.dump_scheduled(DumpKind::Final);
        }
        if leak_summary {
            let (mut bytes, mut objects, mut stacks) = (0.0f64, 0.0f64, 0u64);
            for s in self.stacks.iter() {
                if s.live.bytes > 0.0 {
                    bytes += s.live.bytes;
                    objects += s.live.objects;
                    stacks += 1;
                }
            }
            let mut buf = [0u8; schedule::PREFIX_MAX];
            let prefix = core::str::from_utf8(self.schedule.prefix(&mut buf)).unwrap_or("tally");
            tally_pal::print(format_args!(
                "tally: leak summary: about {bytes:.0} bytes in {objects:.0} objects still live at exit, from {stacks} stacks (sampled)\n"
            ));
            if final_profile {
                tally_pal::print(format_args!(
                    "tally: to see where: tally report --text {prefix}.{}.*.f.heap\n",
                    tally_pal::pid()
                ));
            } else {
                tally_pal::print(format_args!(
                    "tally: add prof_final:true to write the final profile, then run tally report on it\n"
                ));
            }
        }
    }
}

/// A path for messages: its bytes as text, with bytes that are not printable ASCII as `\xNN`.
struct ShownPath<'a>(&'a [u8]);

impl core::fmt::Display for ShownPath<'_> {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        use core::fmt::Write as _;
        for &b in self.0 {
            if (0x20..0x7f).contains(&b) {
                f.write_char(b as char)?;
            } else {
                write!(f, "\\x{b:02x}")?;
            }
        }
        Ok(())
    }
}

/// The unwinder the profiler uses: on x86-64 Linux the caching DWARF walker ([`cfi::Cfi`],
/// libgcc for what it does not interpret), elsewhere libgcc.
#[cfg(all(target_arch = "x86_64", target_os = "linux"))]
pub type DefaultUnwinder = cfi::Cfi;
/// The unwinder the profiler uses.
#[cfg(not(all(target_arch = "x86_64", target_os = "linux")))]
pub type DefaultUnwinder = unwind::Libgcc;

/// The process's profiler.
pub static PROFILER: Profiler = Profiler::new(MAX_STACKS, MAX_FRAME_WORDS);

/// Captures the calling thread's stack with the default unwinder, dropping `skip` frames above
/// the caller of this function. Returns the number of frames written. Inlined, so that the walk
/// starts in the caller's frame whatever the compiler makes of a wrapper: it compiled the one
/// before, which skipped one frame more for its own, into a jump with no frame, so the caller's
/// frame was the one dropped.
#[inline(always)]
pub fn capture_stack(frames: &mut [usize; MAX_FRAMES], skip: usize) -> usize {
    DefaultUnwinder::default().capture(frames, skip)
}

/// [`capture_stack`] into a buffer not initialized first: writes `frames[..n]`, returns `n`.
#[inline(always)]
pub fn capture_stack_into(frames: &mut Frames, skip: usize) -> usize {
    DefaultUnwinder::default().capture_into(frames, skip)
}

/// [`capture_stack_into`], and the key for [`on_sampled_alloc_keyed`].
#[inline(always)]
pub fn capture_stack_keyed(frames: &mut Frames, skip: usize) -> (usize, StackKey) {
    DefaultUnwinder::default().capture_keyed(frames, skip)
}

/// Samples whose stack id came from the walker's key instead of the stack table (a statistic,
/// and what the tests look at; counted without a locked instruction, so samples on several
/// threads at once may lose some of each other's counts).
pub static STACKS_KNOWN: AtomicU64 = AtomicU64::new(0);

/// Before the first capture: one throw-away capture, so that the unwinder's lazy set-up happens
/// now (see [`unwind`]).
pub fn prepare() {
    DefaultUnwinder::default().prepare();
}

/// [`Profiler::on_sampled_alloc`] on the global profiler.
pub fn on_sampled_alloc(ptr: usize, size: usize, frames: &[usize]) -> bool {
    PROFILER.on_sampled_alloc(ptr, size, frames)
}

/// [`Profiler::on_sampled_alloc_keyed`] on the global profiler.
#[inline]
pub fn on_sampled_alloc_keyed(ptr: usize, size: usize, frames: &[usize], key: &StackKey) -> bool {
    PROFILER.on_sampled_alloc_keyed(ptr, size, frames, key)
}

/// Whether the global profiler's stack table holds the stack `key` knows (its capture repeated
/// one whose frames the table interned): then [`on_sampled_alloc_keyed`] reads no frame.
#[inline]
pub fn knows_stack(key: &StackKey) -> bool {
    PROFILER.knows_stack(key)
}

/// [`Profiler::on_sampled_free`] on the global profiler.
#[inline]
pub fn on_sampled_free(ptr: usize) -> bool {
    PROFILER.on_sampled_free(ptr)
}

/// [`Profiler::dump_to_path`] on the global profiler: `path` as bytes, no NUL needed.
/// [`DumpError::Off`] if the profiler is off.
pub fn dump_to_path(path: &[u8]) -> Result<(), DumpError> {
    if !PROFILER.sampling.is_on() {
        return Err(DumpError::Off);
    }
    PROFILER.dump_to_path(path)
}

/// [`Profiler::dump_with_prefix`] on the global profiler.
pub fn dump_with_prefix(prefix: &[u8], kind: DumpKind) -> Result<u64, DumpError> {
    PROFILER.dump_with_prefix(prefix, kind)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::vec::Vec;

    /// A capture of the caller's stack with its key, from one call site.
    #[inline(never)]
    fn capture_here() -> (Vec<usize>, StackKey) {
        let mut frames: Frames = [core::mem::MaybeUninit::uninit(); MAX_FRAMES];
        let (n, key) = capture_stack_keyed(&mut frames, 0);
        // SAFETY: the capture wrote `frames[..n]`.
        (
            frames[..n].iter().map(|f| unsafe { f.assume_init() }).collect(),
            key,
        )
    }

    #[test]
    fn a_known_stack_is_recorded_without_its_frames() {
        let p = Profiler::new(1000, 10_000);
        p.sampling.set_lg(12);
        let mut recorded = 0;
        let mut known = 0;
        let mut first = Vec::new();
        // Repeated walks from one place: the first is interned from its frames, the walker
        // learns its id, and a later one recorded with no frames at all lands on that stack.
        for i in 0..8usize {
            let (frames, key) = capture_here();
            assert!(frames.len() > 2);
            if i == 0 {
                first = frames[1..].iter().map(|&f| f as u64).collect();
            }
            if p.knows_stack(&key) {
                assert!(p.on_sampled_alloc_keyed(0x1000_0000 + i * 64, 48, &[], &key));
                known += 1;
            } else {
                assert!(p.on_sampled_alloc_keyed(0x1000_0000 + i * 64, 48, &frames[1..], &key));
            }
            recorded += 1;
        }
        assert!(known >= 4, "{known} of {recorded} walks known");
        // A key of another table is not known to this one.
        let other = Profiler::new(1000, 10_000);
        let (_, key) = capture_here();
        assert!(!other.knows_stack(&key));
        let mut out = Vec::new();
        let sink = |bytes: &[u8]| {
            out.extend_from_slice(bytes);
            Ok(())
        };
        let _ = p.write_dump(sink, false).unwrap();
        let profile = tally_format::parse(&out).unwrap();
        // One stack, every sample on it, with the frames of the first walk.
        assert_eq!(profile.stacks.len(), 1, "{:x?}", profile.stacks);
        assert_eq!(profile.stacks[0].frames, first);
    }

    #[test]
    fn record_free_and_dump_round_trip() {
        let p = Profiler::new(1000, 10_000);
        p.sampling.set_lg(12);
        p.set_accum(true);
        let a = [0x401000usize, 0x402000];
        let b = [0x403000usize];
        for i in 0..100usize {
            assert!(p.on_sampled_alloc(0x1000_0000 + i * 64, 48, &a));
        }
        assert!(p.on_sampled_alloc(0x2000_0000, 1 << 20, &b));
        for i in 0..50usize {
            assert!(p.on_sampled_free(0x1000_0000 + i * 64));
        }
        assert!(!p.on_sampled_free(0x1000_0000));
        assert!(p.on_sampled_free(0x2000_0000));
        assert_eq!(p.live.len(), 50);

        let mut out = Vec::new();
        let sink = |bytes: &[u8]| {
            out.extend_from_slice(bytes);
            Ok(())
        };
        let _ = p.write_dump(sink, true).unwrap();
        let profile = tally_format::parse(&out).unwrap();
        assert_eq!(profile.period, 4096);
        // Stack b has nothing live but was allocated: with prof_accum it is written.
        assert_eq!(profile.stacks.len(), 2);
        let sa = &profile.stacks[0];
        assert_eq!(sa.frames, [0x401000, 0x402000]);
        let want = {
            let mut e = Estimate::ZERO;
            for _ in 0..50 {
                e.add(Estimate::of_sample(48, 4096));
            }
            e
        };
        let got = sa.live_estimate(4096);
        assert!(
            (got.bytes - want.bytes).abs() < 1e-3 * want.bytes,
            "{got:?} vs {want:?}"
        );
        assert_eq!(profile.stacks[1].live, tally_format::Counts::ZERO);
        assert_eq!(
            profile.stacks[1].accum,
            tally_format::Counts {
                objects: 1,
                bytes: 1 << 20
            }
        );
        assert!(!profile.maps.is_empty());
        p.stacks.debug_check_invariants();
        p.live.debug_check_invariants();
    }

    #[test]
    fn dump_files_are_private_and_complete() {
        let p = Profiler::new(100, 1000);
        p.on_sampled_alloc(0x5000, 100, &[1, 2, 3]);
        let dir = std::env::temp_dir().join(std::format!("tally-profiler-dump-{}", tally_pal::pid()));
        std::fs::create_dir_all(&dir).unwrap();
        let prefix = dir.join("prof");
        let seq = p
            .dump_with_prefix(prefix.to_str().unwrap().as_bytes(), DumpKind::Manual(0))
            .unwrap();
        assert_eq!(seq, 0);
        let path = dir.join(std::format!("prof.{}.0.m0.heap", tally_pal::pid()));
        let meta = std::fs::metadata(&path).unwrap();
        use std::os::unix::fs::PermissionsExt;
        assert_eq!(meta.permissions().mode() & 0o777, 0o600);
        let text = std::fs::read(&path).unwrap();
        let profile = tally_format::parse(&text).unwrap();
        assert_eq!(profile.stacks.len(), 1);
        let names: Vec<_> = std::fs::read_dir(&dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect();
        assert_eq!(
            names,
            [std::format!("prof.{}.0.m0.heap", tally_pal::pid())],
            "no temporary file left"
        );
        assert_eq!(
            p.dump_with_prefix(prefix.to_str().unwrap().as_bytes(), DumpKind::Final),
            Ok(1)
        );
        assert!(p.dump_to_path(b"/nonexistent-dir/x.heap").is_err());
        std::fs::remove_dir_all(&dir).ok();
    }

    #[test]
    fn planted_temporary_files_and_symlinks_are_neither_used_nor_written() {
        use std::os::unix::fs::{MetadataExt, PermissionsExt};
        let p = Profiler::new(100, 1000);
        p.on_sampled_alloc(0x5000, 100, &[1, 2, 3]);
        let dir = std::env::temp_dir().join(std::format!("tally-profiler-plant-{}", tally_pal::pid()));
        std::fs::create_dir_all(&dir).unwrap();
        let target = dir.join("target");
        std::fs::write(&target, "target").unwrap();
        let path = dir.join("x.heap");
        // The names the old code used, and a symlink at the final name.
        std::fs::write(dir.join("x.heap.tmp"), "planted").unwrap();
        std::os::unix::fs::symlink(&target, &path).unwrap();
        p.dump_to_path(path.to_str().unwrap().as_bytes()).unwrap();
        let meta = std::fs::symlink_metadata(&path).unwrap();
        assert!(meta.file_type().is_file(), "the symlink was replaced by the dump");
        assert_eq!(meta.permissions().mode() & 0o777, 0o600);
        assert_eq!(meta.uid(), std::fs::metadata(&dir).unwrap().uid());
        assert_eq!(std::fs::read_to_string(&target).unwrap(), "target");
        assert_eq!(
            std::fs::read_to_string(dir.join("x.heap.tmp")).unwrap(),
            "planted"
        );
        tally_format::parse(&std::fs::read(&path).unwrap()).unwrap();
        std::fs::remove_dir_all(&dir).ok();
    }

    #[test]
    fn each_failure_is_reported_once() {
        let p = Profiler::new(10, 100);
        let denied = DumpError::Os(13);
        assert!(p.first_failure(denied, b"/root/secret/p"));
        assert!(
            !p.first_failure(denied, b"/root/secret/p"),
            "the same failure again"
        );
        assert!(
            p.first_failure(DumpError::Os(2), b"/root/secret/p"),
            "another errno"
        );
        assert!(p.first_failure(denied, b"/root/other/p"), "another prefix");
        assert!(p.first_failure(DumpError::PathTooLong, b"/root/secret/p"));
        assert!(!p.first_failure(DumpError::Os(2), b"/root/secret/p"));
        for i in 0..100u32 {
            p.first_failure(DumpError::Os(1000 + i as i32), b"x");
        }
        assert!(
            p.first_failure(DumpError::Os(5000), b"x"),
            "a full table still reports"
        );
        let shown = std::format!("{}", ShownPath(b"/tmp/a\nb\xff"));
        assert_eq!(shown, "/tmp/a\\x0ab\\xff");
    }
}
