//! Byte-countdown sampling.
//!
//! Each thread counts down the bytes it allocates ([`Sampler::bytes_until_sample`]); the
//! allocation that reaches zero is sampled, and the next distance is drawn from an exponential
//! distribution with mean `T = 2^lg_prof_sample` bytes. That makes the sampled byte positions a
//! Poisson process of rate `1/T`, so a block of `z` bytes is sampled with probability
//! `1 − e^(−z/T)` whatever happened before it (the distribution is memoryless), which is what the
//! estimate maths (`tally_format::estimate`) assumes.
//!
//! The fast path is one compare and one subtract ([`Sampler::on_alloc`]); drawing a distance is
//! `#[cold]`: an xorshift64* step and one `ln` from `tally_format::math` (no `std`, no libm).

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

/// Draws the next sampling distance in bytes: `⌈−ln(U)·2^lg⌉` for `U` uniform in `(0, 1]`, at
/// least 1. With `lg = 0` it is always 1, so every allocation of at least one byte is sampled (as
/// jemalloc does with `lg_prof_sample:0`; the estimates then weigh blocks of 8 bytes or more at
/// 1.0003 or less). `lg` above 62 is treated as 62.
pub fn next_sample_distance(rng_state: &mut u64, lg_period: u32) -> u64 {
    if lg_period == 0 {
        return 1;
    }
    // 53 random bits as a double in (0, 1].
    let u = ((next_random(rng_state) >> 11) + 1) as f64 * (1.0 / (1u64 << 53) as f64);
    let mean = (1u64 << lg_period.min(62)) as f64;
    let d = -ln(u) * mean;
    // −ln(U) ≤ 36.8 for 53-bit U, times at most 2^62: far below u64::MAX as a double; `as`
    // saturates anyway.
    let whole = d as u64;
    let ceil = if (whole as f64) < d { whole + 1 } else { whole };
    ceil.max(1)
}

/// A thread's sampling state. The allocator keeps one per thread (in its thread block, zeroed is
/// fine: a zeroed sampler samples the first allocation and then draws properly).
///
/// Invariant: `bytes_until_sample ≥ 1` after every call to [`Sampler::on_alloc`].
#[repr(C)]
#[derive(Debug, Default)]
pub struct Sampler {
    /// Bytes this thread may still allocate before the next sample.
    pub bytes_until_sample: u64,
    /// The random generator's state.
    pub rng: u64,
    /// `lg_prof_sample` this sampler draws with.
    pub lg_period: u32,
}

impl Sampler {
    /// A sampler seeded with `seed` (any value; mix in a thread address and the time) that draws
    /// distances with mean `2^lg_period`.
    pub fn new(seed: u64, lg_period: u32) -> Self {
        let mut s = Sampler {
            bytes_until_sample: 0,
            rng: seed | 1,
            lg_period,
        };
        s.bytes_until_sample = next_sample_distance(&mut s.rng, lg_period);
        s
    }

    /// Counts an allocation of `size` bytes; true if it is to be sampled. The fast path: one
    /// compare, one subtract.
    #[inline(always)]
    pub fn on_alloc(&mut self, size: usize) -> bool {
        let size = size as u64;
        if size < self.bytes_until_sample {
            self.bytes_until_sample -= size;
            false
        } else {
            self.sampled()
        }
    }

    #[cold]
    #[inline(never)]
    fn sampled(&mut self) -> bool {
        self.bytes_until_sample = next_sample_distance(&mut self.rng, self.lg_period);
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
    fn lg_zero_samples_every_allocation() {
        let mut s = Sampler::new(42, 0);
        for size in [1usize, 1, 2, 16, 1000] {
            assert!(s.on_alloc(size));
            assert!(s.bytes_until_sample >= 1);
        }
        let mut rng = 7;
        assert!((0..1000).all(|_| next_sample_distance(&mut rng, 0) == 1));
    }

    #[test]
    fn a_zeroed_sampler_samples_then_counts_down() {
        let mut s = Sampler {
            lg_period: 19,
            ..Sampler::default()
        };
        assert!(s.on_alloc(8));
        let before = s.bytes_until_sample;
        assert!(before >= 1);
        if before > 8 {
            assert!(!s.on_alloc(8));
            assert_eq!(s.bytes_until_sample, before - 8);
        }
    }

    #[test]
    fn sampling_frequency_matches_the_probability() {
        // Blocks of T/4 bytes are sampled with probability 1 − e^(−1/4) ≈ 0.2212.
        let lg = 12;
        let mut s = Sampler::new(99, lg);
        let z = (1usize << lg) / 4;
        let n = 400_000;
        let hits = (0..n).filter(|_| s.on_alloc(z)).count();
        let p = hits as f64 / n as f64;
        assert!((p - 0.2212).abs() < 0.005, "{p}");
    }
}
