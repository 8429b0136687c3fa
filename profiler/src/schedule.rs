//! When profiles are written, and under which names: every `2^lg_prof_interval` bytes
//! allocated (all threads together), on a new high of mapped memory (`prof_gdump`), after a
//! request that may come from a signal handler (`prof_signal`), at exit (`prof_final`), and on
//! demand. Files are named `<prof_prefix>.<pid>.<seq>.<kind>.heap`.
//!
//! The allocator reports bytes and asks for due profiles from its thread events; everything
//! else (the counters, the sequence numbers, the prefix) is kept here; `Profiler` (in `lib.rs`)
//! writes what is due. Nothing here allocates:
//! the prefix is a fixed buffer and failures are printed on one line of stderr.

use core::sync::atomic::{AtomicBool, AtomicI64, AtomicU64, AtomicU8, AtomicUsize, Ordering};

use crate::dump::DumpKind;

/// Longest `prof_prefix` kept.
pub const PREFIX_MAX: usize = 256;

/// The dump schedule of a [`Profiler`](crate::Profiler).
pub struct Schedule {
    lg_interval: AtomicI64,
    gdump: AtomicBool,
    /// Bytes allocated by all threads, as reported at their events (interval dumps only).
    allocated: AtomicU64,
    intervals_done: AtomicU64,
    interval_seq: AtomicU64,
    manual_seq: AtomicU64,
    peak_seq: AtomicU64,
    peak_mapped: AtomicU64,
    requested: AtomicBool,
    prefix: [AtomicU8; PREFIX_MAX],
    prefix_len: AtomicUsize,
}

impl Schedule {
    /// No periodic dumps, prefix `jeprof` (jemalloc's default).
    pub const fn new() -> Self {
        const JEPROF: &[u8] = b"jeprof";
        let mut prefix = [const { AtomicU8::new(0) }; PREFIX_MAX];
        let mut i = 0;
        while i < JEPROF.len() {
            prefix[i] = AtomicU8::new(JEPROF[i]);
            i += 1;
        }
        Schedule {
            lg_interval: AtomicI64::new(-1),
            gdump: AtomicBool::new(false),
            allocated: AtomicU64::new(0),
            intervals_done: AtomicU64::new(0),
            interval_seq: AtomicU64::new(0),
            manual_seq: AtomicU64::new(0),
            peak_seq: AtomicU64::new(0),
            peak_mapped: AtomicU64::new(0),
            requested: AtomicBool::new(false),
            prefix,
            prefix_len: AtomicUsize::new(JEPROF.len()),
        }
    }

    /// Sets `lg_prof_interval` (-1: off), `prof_gdump` and `prof_prefix` (cut at
    /// [`PREFIX_MAX`]).
    pub fn configure(&self, lg_interval: i64, gdump: bool, prefix: &[u8]) {
        self.lg_interval.store(lg_interval, Ordering::Relaxed);
        self.gdump.store(gdump, Ordering::Relaxed);
        let prefix = &prefix[..prefix.len().min(PREFIX_MAX)];
        for (slot, &b) in self.prefix.iter().zip(prefix) {
            slot.store(b, Ordering::Relaxed);
        }
        self.prefix_len.store(prefix.len(), Ordering::Relaxed);
    }

    /// Counts `bytes` allocated, for interval dumps. Only interval dumps need the process-wide
    /// count: an atomic add on one cache line from every thread at every event is measurable
    /// with several threads, so without them nothing is written.
    #[inline]
    pub fn count_bytes(&self, bytes: u64) {
        if self.lg_interval.load(Ordering::Relaxed) >= 0 {
            self.allocated.fetch_add(bytes, Ordering::Relaxed);
        }
    }

    /// Asks for a manual profile at the next event. Async-signal-safe: one store.
    pub fn request(&self) {
        self.requested.store(true, Ordering::Relaxed);
    }

    /// Whether a profile may be due now: interval profiles or peaks are watched, or one was
    /// requested. When not, [`Schedule::due`] has nothing to say, and a thread event need not
    /// ask (three loads instead of the thread-local guard and a call).
    #[inline]
    pub fn may_be_due(&self) -> bool {
        self.lg_interval.load(Ordering::Relaxed) >= 0
            || self.gdump.load(Ordering::Relaxed)
            || self.requested.load(Ordering::Relaxed)
    }

    /// Whether mapped memory is watched for new peaks (`prof_gdump`).
    #[inline]
    pub fn watches_peaks(&self) -> bool {
        self.gdump.load(Ordering::Relaxed)
    }

    /// `prof_prefix`, copied into `buf`.
    pub fn prefix<'a>(&self, buf: &'a mut [u8; PREFIX_MAX]) -> &'a [u8] {
        let len = self.prefix_len.load(Ordering::Relaxed);
        for (b, slot) in buf.iter_mut().zip(&self.prefix[..len]) {
            *b = slot.load(Ordering::Relaxed);
        }
        &buf[..len]
    }

    /// The dumps due now, at most one of each kind, given the bytes mapped now (asked only with
    /// `prof_gdump`). Each is claimed by a compare-exchange, so two threads never write the same.
    pub fn due(&self, mapped: impl FnOnce() -> u64) -> Due {
        let mut due = Due::default();
        let lg = self.lg_interval.load(Ordering::Relaxed);
        if lg >= 0 {
            let n = self.allocated.load(Ordering::Relaxed) >> lg;
            let done = self.intervals_done.load(Ordering::Relaxed);
            if n > done
                && self
                    .intervals_done
                    .compare_exchange(done, n, Ordering::Relaxed, Ordering::Relaxed)
                    .is_ok()
            {
                due.interval = Some(DumpKind::Interval(
                    self.interval_seq.fetch_add(1, Ordering::Relaxed),
                ));
            }
        }
        if self.watches_peaks() {
            let mapped = mapped();
            let peak = self.peak_mapped.load(Ordering::Relaxed);
            if mapped > peak
                && self
                    .peak_mapped
                    .compare_exchange(peak, mapped, Ordering::Relaxed, Ordering::Relaxed)
                    .is_ok()
            {
                due.peak = Some(DumpKind::Peak(self.peak_seq.fetch_add(1, Ordering::Relaxed)));
            }
        }
        // Read before writing: a swap at every event would bounce the line between threads.
        if self.requested.load(Ordering::Relaxed) && self.requested.swap(false, Ordering::Relaxed) {
            due.manual = Some(self.next_manual());
        }
        due
    }

    /// The kind of the next manual profile (`m<n>`).
    pub fn next_manual(&self) -> DumpKind {
        DumpKind::Manual(self.manual_seq.fetch_add(1, Ordering::Relaxed))
    }
}

impl Default for Schedule {
    fn default() -> Self {
        Self::new()
    }
}

/// Profiles due at one event.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Due {
    /// An interval profile.
    pub interval: Option<DumpKind>,
    /// A new peak of mapped memory.
    pub peak: Option<DumpKind>,
    /// A requested profile.
    pub manual: Option<DumpKind>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn interval_peak_and_requested_dumps_fall_due_once() {
        let s = Schedule::new();
        s.configure(10, true, b"/tmp/x");
        assert_eq!(
            s.due(|| 100),
            Due {
                peak: Some(DumpKind::Peak(0)),
                ..Due::default()
            }
        );
        assert_eq!(s.due(|| 100), Due::default(), "no new peak");
        s.count_bytes(1023);
        assert_eq!(s.due(|| 50), Due::default());
        s.count_bytes(1);
        assert_eq!(s.due(|| 50).interval, Some(DumpKind::Interval(0)));
        s.count_bytes(5000);
        assert_eq!(
            s.due(|| 50).interval,
            Some(DumpKind::Interval(1)),
            "one dump however many intervals passed"
        );
        assert_eq!(s.due(|| 50).interval, None);
        s.request();
        assert_eq!(s.due(|| 50).manual, Some(DumpKind::Manual(0)));
        assert_eq!(s.due(|| 50).manual, None);
        let mut buf = [0u8; PREFIX_MAX];
        assert_eq!(s.prefix(&mut buf), b"/tmp/x");
    }

    #[test]
    fn without_intervals_bytes_are_not_counted() {
        let s = Schedule::new();
        s.count_bytes(1 << 40);
        s.configure(0, false, b"p");
        assert_eq!(s.due(|| unreachable!("no gdump")), Due::default());
        let mut buf = [0u8; PREFIX_MAX];
        assert_eq!(s.prefix(&mut buf), b"p");
    }
}
