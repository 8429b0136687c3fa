//! Byte-countdown sampling.
//!
//! Each thread counts down the bytes it allocates ([`ThreadSampler::left`]); the
//! allocation that reaches zero is sampled, and the next distance is drawn from an exponential
//! distribution with mean `T = 2^lg_prof_sample` bytes. That makes the sampled byte positions a
//! Poisson process of rate `1/T`, so a block of `z` bytes is sampled with probability
//! `1 − e^(−z/T)` whatever happened before it (the distribution is memoryless), which is what the
//! estimate maths (`tally_format::estimate`) assumes.
//!
//! The allocator counts the bytes down on its fast path (one subtraction, shared with its other
//! budgets) and hands them to [`Sampling::settle`] when its countdown runs out; drawing a
//! distance is an xorshift64* step and one `ln` from `tally_format::math` (no `std`, no libm).
//! The settings live here, once: [`Sampling`] is part of the profiler.

use core::sync::atomic::{AtomicBool, AtomicU32, Ordering};

#[cfg(doc)]
use tally_format::math::ln;

/// One step of xorshift64* (Vigna): a 64-bit state that must not be 0, a full-period generator
/// whose high bits are good enough for drawing distances.
pub fn next_random(state: &mut u64) -> u64 {
    let mut x = *state;
    if x == 0 {
        x = 0x9e37_79b9_7f4a_7c15;
    }
    x ^= x >> 12;
    x ^= x << 25;
    x ^= x >> 27;
    *state = x;
    x.wrapping_mul(0x2545_f491_4f6c_dd1d)
}

/// `ln(1 + i/16)` for `i = 0..16`, checked against `std` by its test
/// (`ln_step_is_computed`), as the size-class tables are by their `_compute` twins.
#[rustfmt::skip]
const LN_STEP: [f64; 16] = [
    0.0,
    0.06062462181643484,
    0.11778303565638346,
    0.17185025692665923,
    0.22314355131420976,
    0.27193371548364176,
    0.3184537311185346,
    0.3629054936893685,
    0.4054651081081644,
    0.44628710262841953,
    0.48550781578170077,
    0.5232481437645479,
    0.5596157879354227,
    0.5947071077466928,
    0.6286086594223741,
    0.661398482245365,
];

/// `−ln(u)` for `u = (r + 1) / 2^53` (`r < 2^53`), in `[0, 36.8]`, to about 1e-15 relative; the
/// draw of every sampling distance. `r + 1 = 2^e·m` with `m ∈ [1, 2)`; `m` lies in the sixteenth
/// `[c, c + 1/16)`, `c = 1 + i/16`, so `ln m = ln c + 2·atanh(s)` with `s = (m − c)/(m + c) <
/// 1/33`, where four terms of the series suffice (`s^11/11 < 10^-17·s`). Half the dependent
/// floating-point steps of [`ln`] over `[√½, √2)`: with the live-table update, these steps were
/// the largest part of a sample after the stack walk.
#[inline]
pub fn neg_ln_unit(r: u64) -> f64 {
    let x = (r + 1) as f64; // exact: r + 1 ≤ 2^53
    let bits = x.to_bits();
    let e = (bits >> 52) as i64 - 1023;
    let i = ((bits >> 48) & 15) as usize;
    let m = f64::from_bits((bits & ((1u64 << 52) - 1)) | (1023u64 << 52));
    let c = 1.0 + i as f64 * (1.0 / 16.0);
    let s = (m - c) / (m + c);
    let s2 = s * s;
    let atanh = s + s * s2 * (1.0 / 3.0 + s2 * (1.0 / 5.0 + s2 * (1.0 / 7.0 + s2 * (1.0 / 9.0))));
    (53 - e) as f64 * core::f64::consts::LN_2 - (LN_STEP[i] + 2.0 * atanh)
}

/// Draws the next sampling distance in bytes: `⌈−ln(U)·2^lg⌉` for `U` uniform in `(0, 1]`, at
/// least 1. With `lg = 0` it is always 1, so every allocation of at least one byte is sampled (as
/// jemalloc does with `lg_prof_sample:0`; the estimates then weigh blocks of 8 bytes or more at
/// 1.0003 or less). `lg` above 62 is treated as 62.
#[inline]
pub fn next_sample_distance(rng_state: &mut u64, lg_period: u32) -> u64 {
    if lg_period == 0 {
        return 1;
    }
    // 53 random bits: U = (bits + 1)/2^53, in (0, 1].
    let mean = (1u64 << lg_period.min(62)) as f64;
    // −ln(U) ≤ 36.8 for 53-bit U, so from `lg` 57 up a draw may pass 2^62: capped there, far
    // beyond any distance a thread counts down (`IDLE_DISTANCE`).
    let d = (neg_ln_unit(next_random(rng_state) >> 11) * mean).min(MAX_DISTANCE as f64);
    // SAFETY: `d` is finite and in [0, 2^62] (a product of finite non-negative numbers,
    // capped), so it fits an i64. The conversions are signed ones, a single instruction each
    // (an unsigned one, or a saturating `as`, took 15 more instructions a sample).
    let whole = unsafe { d.to_int_unchecked::<i64>() };
    let ceil = whole + ((whole as f64) < d) as i64;
    ceil.max(1) as u64
}

/// The largest distance [`next_sample_distance`] draws: 2^62 bytes.
const MAX_DISTANCE: i64 = 1 << 62;

/// Default `lg_prof_sample`: the mean sampling distance is `2^19` bytes (512 KiB), as in jemalloc.
pub const DEFAULT_LG_PROF_SAMPLE: u32 = 19;

/// Distance a thread keeps while sampling is off: far enough that its events come from the
/// allocator's other budgets, never from sampling.
pub const IDLE_DISTANCE: i64 = 1 << 40;

/// The sampling settings, owned by the profiler: whether it is on at all (`prof:true`), whether
/// sampling is active now (`prof_active`), and the rate (`lg_prof_sample`). Each change bumps
/// an epoch, so threads redraw their distance at their next event.
pub struct Sampling {
    on: AtomicBool,
    active: AtomicBool,
    lg: AtomicU32,
    epoch: AtomicU32,
}

impl Sampling {
    /// Off, at the default rate.
    pub const fn new() -> Self {
        Sampling {
            on: AtomicBool::new(false),
            active: AtomicBool::new(false),
            lg: AtomicU32::new(DEFAULT_LG_PROF_SAMPLE),
            epoch: AtomicU32::new(1),
        }
    }

    /// Turns the profiler on (`prof:true`), at `lg` (`lg_prof_sample`, at most 62), sampling
    /// from now on if `active` (`prof_active`).
    pub fn configure(&self, lg: u32, active: bool) {
        self.lg.store(lg.min(62), Ordering::Relaxed);
        self.active.store(active, Ordering::Relaxed);
        self.on.store(true, Ordering::Release);
        self.epoch.fetch_add(1, Ordering::Relaxed);
    }

    /// Whether the profiler is on (`prof:true`): sampled blocks may exist.
    #[inline]
    pub fn is_on(&self) -> bool {
        self.on.load(Ordering::Acquire)
    }

    /// Whether sampling is active now.
    pub fn is_active(&self) -> bool {
        self.is_on() && self.active.load(Ordering::Relaxed)
    }

    /// Switches sampling on or off. Returns false (and changes nothing) if the profiler is off.
    pub fn set_active(&self, active: bool) -> bool {
        if !self.is_on() {
            return false;
        }
        self.active.store(active, Ordering::Relaxed);
        self.epoch.fetch_add(1, Ordering::Relaxed);
        true
    }

    /// `lg_prof_sample` in force.
    #[inline]
    pub fn lg(&self) -> u32 {
        self.lg.load(Ordering::Relaxed)
    }

    /// Sets `lg_prof_sample` (at most 62) for the samples to come, whether or not the profiler is
    /// on (a private profiler of a test is never switched on). Samples keep the estimate computed
    /// when they were taken.
    pub fn set_lg(&self, lg: u32) {
        self.lg.store(lg.min(62), Ordering::Relaxed);
        self.epoch.fetch_add(1, Ordering::Relaxed);
    }

    /// Counts `bytes` a thread allocated against its distance to the next sample; returns true
    /// if the allocation that spent the last of them is to be sampled. Afterwards
    /// `thread.left() >= 1`. `seed` (any value that differs between threads) seeds a thread's
    /// random state on its first draw (it is called at most once per thread).
    pub fn settle(&self, thread: &mut ThreadSampler, bytes: i64, seed: impl FnOnce() -> u64) -> bool {
        let epoch = self.epoch.load(Ordering::Relaxed);
        if thread.epoch != epoch {
            // New settings: the bytes spent under the old ones do not count.
            thread.epoch = epoch;
            thread.left = self.draw(thread, seed);
            return false;
        }
        thread.left -= bytes;
        if thread.left > 0 {
            return false;
        }
        thread.left = self.draw(thread, seed);
        self.active.load(Ordering::Relaxed)
    }

    /// Among the code every program runs (`allocator/hot-text.ld`): a thread's first settle
    /// draws, profiler on or off.
    #[cfg_attr(target_os = "linux", link_section = ".text.hot.tally")]
    fn draw(&self, thread: &mut ThreadSampler, seed: impl FnOnce() -> u64) -> i64 {
        if !self.active.load(Ordering::Relaxed) {
            return IDLE_DISTANCE;
        }
        if thread.rng == 0 {
            thread.rng = seed() | 1;
        }
        next_sample_distance(&mut thread.rng, self.lg()).min(IDLE_DISTANCE as u64) as i64
    }
}

impl Default for Sampling {
    fn default() -> Self {
        Self::new()
    }
}

/// A thread's distance to its next sample. All zero is a valid start (the allocator keeps it in
/// the thread's zeroed thread block): the first settlement sees a new epoch and draws.
///
/// Invariant: `left >= 1` after every [`Sampling::settle`].
#[repr(C)]
#[derive(Debug, Default)]
pub struct ThreadSampler {
    left: i64,
    rng: u64,
    epoch: u32,
}

impl ThreadSampler {
    /// Bytes the thread may still allocate before its next sample.
    #[inline]
    pub fn left(&self) -> i64 {
        self.left
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ln_step_is_computed() {
        extern crate std;
        for (i, &v) in LN_STEP.iter().enumerate() {
            let want = (1.0 + i as f64 / 16.0).ln();
            assert!(
                (v - want).abs() <= f64::EPSILON * want,
                "LN_STEP[{i}] = {v:e}, ln = {want:e}"
            );
        }
    }

    #[test]
    fn neg_ln_unit_is_minus_ln() {
        extern crate std;
        let exact = |r: u64| -(((r + 1) as f64) / (1u64 << 53) as f64).ln();
        let mut rng = 0x9e37_79b9_7f4a_7c15u64;
        let edges = [
            0u64,
            1,
            2,
            3,
            15,
            16,
            17,
            (1 << 52) - 1,
            1 << 52,
            (1 << 53) - 2,
            (1 << 53) - 1,
        ];
        // Every sixteenth of every binade, and random draws.
        let steps = (0..53u64).flat_map(|e| (0..16u64).map(move |i| ((16 + i) << e >> 4).max(1) - 1));
        let randoms = (0..200_000).map(|_| next_random(&mut rng) >> 11);
        for r in edges.into_iter().chain(steps).chain(randoms) {
            let (got, want) = (neg_ln_unit(r), exact(r));
            // Absolute near u = 1, where −ln(u) → 0 and the draw rounds up to one byte anyway.
            assert!(
                (got - want).abs() <= 2e-15 * want + 1e-15,
                "r {r}: {got:e} vs {want:e}"
            );
        }
        assert_eq!(neg_ln_unit((1 << 53) - 1), 0.0);
    }

    #[test]
    fn mean_distance_is_the_period() {
        for lg in [1u32, 4, 10, 19, 30] {
            let mut rng = 0x1234_5678_9abc_def1 ^ lg as u64;
            let n = 1_000_000u64;
            let sum: f64 = (0..n).map(|_| next_sample_distance(&mut rng, lg) as f64).sum();
            let mean = sum / n as f64;
            let period = (1u64 << lg) as f64;
            // Rounding up makes the distance geometric: mean 1/(1 − e^(−1/T)) ≈ T + 1/2.
            let expected = 1.0 / -(-1.0 / period).exp_m1();
            assert!(
                (mean - expected).abs() < 0.01 * expected,
                "lg {lg}: mean {mean}, expected {expected}"
            );
            if lg >= 7 {
                assert!(
                    (mean - period).abs() < 0.01 * period,
                    "lg {lg}: mean {mean}, period {period}"
                );
            }
        }
    }

    #[test]
    fn draws_at_the_longest_periods_stay_in_range() {
        // From `lg` 57 up a draw may pass 2^62 and is capped there; below, nothing changes.
        let mut rng = 0x0bad_cafe_f00d_d00du64;
        for lg in 40u32..=62 {
            let cap = 1u64 << 62;
            let draws: [u64; 2000] = core::array::from_fn(|_| next_sample_distance(&mut rng, lg));
            assert!(draws.iter().all(|&d| (1..=cap).contains(&d)), "lg {lg}");
            if lg <= 56 {
                // −ln(U) ≤ 36.8: no draw reaches the cap, and some pass the period.
                assert!(draws.iter().all(|&d| d < 37 << lg), "lg {lg}");
                assert!(draws.iter().any(|&d| d > 1 << lg), "lg {lg}");
            }
        }
    }

    /// An active sampling at `lg` and a thread that has seen its epoch.
    fn active(lg: u32) -> (Sampling, ThreadSampler) {
        let sampling = Sampling::new();
        sampling.configure(lg, true);
        let mut thread = ThreadSampler::default();
        assert!(!sampling.settle(&mut thread, 0, || 42), "a new epoch only draws");
        assert!(thread.left() >= 1);
        (sampling, thread)
    }

    #[test]
    fn lg_zero_samples_every_allocation() {
        let (sampling, mut t) = active(0);
        for size in [1i64, 1, 2, 16, 1000] {
            assert!(sampling.settle(&mut t, size, || 42));
            assert!(t.left() >= 1);
        }
        let mut rng = 7;
        assert!((0..1000).all(|_| next_sample_distance(&mut rng, 0) == 1));
    }

    #[test]
    fn counts_down_then_samples_and_redraws() {
        let (sampling, mut t) = active(19);
        let before = t.left();
        if before > 8 {
            assert!(!sampling.settle(&mut t, 8, || 42));
            assert_eq!(t.left(), before - 8);
        }
        let left = t.left();
        assert!(sampling.settle(&mut t, left, || 42));
        assert!(t.left() >= 1);
    }

    #[test]
    fn inactive_or_off_never_samples_and_changes_redraw() {
        let off = Sampling::new();
        assert!(!off.set_active(true), "the profiler is off");
        let mut t = ThreadSampler::default();
        assert!(!off.settle(&mut t, 1 << 50, || 1));
        assert_eq!(t.left(), IDLE_DISTANCE);
        let (sampling, mut t) = active(4);
        assert!(sampling.set_active(false));
        assert!(!sampling.settle(&mut t, 1, || 1), "new epoch: redraw");
        assert_eq!(t.left(), IDLE_DISTANCE);
        assert!(
            !sampling.settle(&mut t, IDLE_DISTANCE, || 1),
            "inactive: never sampled"
        );
        sampling.set_lg(10);
        assert!(sampling.set_active(true));
        assert!(!sampling.settle(&mut t, 1, || 1));
        assert!(t.left() < IDLE_DISTANCE);
    }

    #[test]
    fn sampling_frequency_matches_the_probability() {
        // Blocks of T/4 bytes are sampled with probability 1 − e^(−1/4) ≈ 0.2212.
        let lg = 12;
        let (sampling, mut t) = active(lg);
        let z = (1i64 << lg) / 4;
        let n = 400_000;
        let hits = (0..n).filter(|_| sampling.settle(&mut t, z, || 99)).count();
        let p = hits as f64 / n as f64;
        assert!((p - 0.2212).abs() < 0.005, "{p}");
    }
}
