//! The estimate maths: from sampled allocations to estimated totals, and from those totals to the
//! integer pairs a `heap_v2` dump carries.
//!
//! Glossary: `T` is the mean sampling period in bytes (`2^lg_prof_sample`); `z` a sampled block's
//! size; `p(z) = 1 − e^(−z/T)` the probability that a block of `z` bytes is sampled (byte sampling
//! is a Poisson process of rate `1/T` over the bytes allocated).
//!
//! 1. **Unbias each sample** ([`Estimate::of_sample`]): a sample of size `z` stands for
//!    `1/p(z)` objects and `z/p(z)` bytes. Summing these per stack gives unbiased estimates
//!    `(C, S)` even when one stack allocates many sizes.
//! 2. **Back-solve what to write** ([`Estimate::to_written`]): jeprof (and pprof's legacy reader)
//!    unbias a written pair `(n, s)` with the stack's *average* size:
//!    `scale = 1/(1 − e^(−(s/n)/T))`, reporting `(n·scale, s·scale)`
//!    ([`Counts::jeprof_estimate`]). We want that to land on `(C, S)`. With `x = S/C` and
//!    `y = S·p(x)`, writing `n = y/x`, `s = y` does it: then `s/n = x` and
//!    `s·scale = y/p(x) = S`, `n·scale = S/x = C`. This is jemalloc's `prof_do_unbias`.
//! 3. The file holds integers, so `n` and `s` are rounded. For `s` (bytes, usually large) that is
//!    harmless; for a stack with few samples the rounding of `n` moves the average size jeprof
//!    computes and so its scale: with `n` near 1.5 rounded to 2, a stack of small objects reads
//!    back about a third too big. jemalloc has the same error; the parser of Tally's report can
//!    avoid it only where it knows more than the file says, so keep it in mind when reading
//!    small stacks.

use crate::math::expm1;

/// One line's pair of integers as a `heap_v2` dump holds it: objects and bytes, *before* the
/// reader's unbiasing.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct Counts {
    /// Objects (the first number of a pair).
    pub objects: u64,
    /// Bytes (the second number of a pair).
    pub bytes: u64,
}

/// Unbiased estimates of objects and bytes, as real numbers.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct Estimate {
    /// Estimated number of objects.
    pub objects: f64,
    /// Estimated number of bytes.
    pub bytes: f64,
}

/// `p(z) = 1 − e^(−z/T)`: the probability that byte sampling with mean period `T` picks a block of
/// `z` bytes. Accurate for `z ≪ T` (no cancellation).
pub fn sample_probability(size: f64, period: f64) -> f64 {
    -expm1(-size / period)
}

/// `1/p(z)`: the objects one sampled block of `z` bytes stands for at mean period `T`. Up to
/// `z/T = 1/4` from the series `1/(1 − e^(−r)) = 1/r + 1/2 + Σ B₂ₖ·r^(2k−1)/(2k)!`
/// (`= 1/r + 1/2 + r/12 − r³/720 + r⁵/30240 − …`, the Bernoulli numbers; each term about
/// `(r/2π)²` of the one before): three terms for `r ≤ 1/64` (every block up to 8 KiB at the
/// default period; the next term is below 2^-47 of the first there), six up to `r = 1/4` (blocks
/// up to 128 KiB; the seventh is below 2^-60 of the sum). One division and a few products that
/// run beside it, where `1/p` after `expm1`'s series is a chain of dependent steps and then a
/// division: 2.5% of a 4 KiB alloc/free loop with the profiler on (`perf`), and some 90
/// instructions of a sample of a 4-64 KiB block. Past `r = 1/4`, `1/p(z)` itself, and past
/// `r = 38` (19 MiB at the default period), where that rounds to it, 1.
#[inline]
pub fn sample_weight(size: f64, period: f64) -> f64 {
    let r = size / period;
    let r2 = r * r;
    if r <= 1.0 / 64.0 {
        period / size + (0.5 + r * (1.0 / 12.0 - r2 * (1.0 / 720.0 - r2 * (1.0 / 30240.0))))
    } else if r <= 0.25 {
        // B₈/8! = −1/1209600, B₁₀/10! = 1/47900160, B₁₂/12! = −691/1307674368000.
        let tail = 1.0 / 1209600.0 - r2 * (1.0 / 47900160.0 - r2 * (691.0 / 1307674368000.0));
        period / size + (0.5 + r * (1.0 / 12.0 - r2 * (1.0 / 720.0 - r2 * (1.0 / 30240.0 - r2 * tail))))
    } else if r < 38.0 {
        1.0 / sample_probability(size, period)
    } else {
        // e^(−r) < 2^-54: 1 − e^(−r) rounds to 1, as the formula would give.
        1.0
    }
}

impl Estimate {
    /// No objects, no bytes.
    pub const ZERO: Estimate = Estimate {
        objects: 0.0,
        bytes: 0.0,
    };

    /// What one sampled block of `size` bytes stands for at mean period `period`:
    /// `1/p(size)` objects and `size/p(size)` bytes. A `size` of 0 is counted as 1 byte (a
    /// zero-size allocation still takes a slot, and 0 would divide by zero).
    #[inline]
    pub fn of_sample(size: u64, period: u64) -> Estimate {
        // Converted as signed integers, one instruction each (an unsigned one takes eight):
        // sizes and periods past 2^63 count as 2^63 − 1, the same double to 15 digits.
        let signed = |x: u64| x.clamp(1, i64::MAX as u64) as i64 as f64;
        let z = signed(size);
        let weight = sample_weight(z, signed(period));
        Estimate {
            objects: weight,
            bytes: z * weight,
        }
    }

    /// Adds another estimate (for summing per-sample estimates into a stack's).
    pub fn add(&mut self, other: Estimate) {
        self.objects += other.objects;
        self.bytes += other.bytes;
    }

    /// Subtracts another estimate (a freed sample leaves its stack's live counters), clamping at
    /// zero so that float round-off never leaves a tiny negative.
    pub fn sub(&mut self, other: Estimate) {
        self.objects = (self.objects - other.objects).max(0.0);
        self.bytes = (self.bytes - other.bytes).max(0.0);
        if self.objects < 1e-9 || self.bytes < 1e-9 {
            *self = Estimate::ZERO;
        }
    }

    /// The integer pair to write so that jeprof's per-stack unbiasing gives back this estimate
    /// (step 2 of the module docs), rounded half away from zero and saturating at `u64::MAX`.
    /// An estimate with no objects or no bytes writes `0: 0`.
    pub fn to_written(self, period: u64) -> Counts {
        if !(self.objects > 0.0 && self.bytes > 0.0) {
            return Counts::default();
        }
        let average = self.bytes / self.objects;
        let y = self.bytes * sample_probability(average, period.max(1) as f64);
        Counts {
            objects: to_u64(y / average),
            bytes: to_u64(y),
        }
    }
}

impl Counts {
    /// No objects, no bytes.
    pub const ZERO: Counts = Counts { objects: 0, bytes: 0 };

    /// What jeprof and pprof's legacy reader make of this written pair at `period` (jeprof's
    /// `AdjustSamples` for `heap_v2`): scale both by `1/p(bytes/objects)`. A pair with zero
    /// objects is left as it is (jeprof skips the scaling then too).
    pub fn jeprof_estimate(self, period: u64) -> Estimate {
        let (n, s) = (self.objects as f64, self.bytes as f64);
        if self.objects == 0 {
            return Estimate { objects: n, bytes: s };
        }
        let p = sample_probability(s / n, period.max(1) as f64);
        if p > 0.0 {
            Estimate {
                objects: n / p,
                bytes: s / p,
            }
        } else {
            // bytes == 0 with objects > 0: jeprof divides by zero here (Perl dies); report zero.
            Estimate::ZERO
        }
    }
}

/// Rounds half away from zero and saturates into `u64` (NaN gives 0), like jemalloc's
/// `prof_double_uint64_cast`.
fn to_u64(x: f64) -> u64 {
    let r = x + 0.5;
    if r >= 18_446_744_073_709_551_616.0 {
        u64::MAX
    } else if r >= 1.0 {
        r as u64
    } else {
        0
    }
}

#[cfg(test)]
mod tests {
    extern crate std;
    use super::*;

    const T: u64 = 1 << 19;

    fn close(a: f64, b: f64, rel: f64) -> bool {
        (a - b).abs() <= rel * b.abs().max(1e-300)
    }

    #[test]
    fn a_single_sample_is_written_as_itself() {
        for size in [1u64, 8, 16, 100, 4096, 1 << 19, 1 << 20, 10 << 20, 1 << 30] {
            let written = Estimate::of_sample(size, T).to_written(T);
            assert_eq!(
                written,
                Counts {
                    objects: 1,
                    bytes: size
                },
                "size {size}"
            );
        }
    }

    /// The series agrees with `1/(1 − e^(−r))` from `std` to two units in the last place, down to
    /// blocks of one byte at large periods, and the formula past it as before.
    #[test]
    fn sample_weight_is_one_over_the_probability() {
        let exact = |r: f64| 1.0 / -(-r).exp_m1();
        let mut r = 1e-12f64;
        while r < 4.0 {
            for z in [1.0, 3.0, 48.0, 1000.0, 4096.0, 65536.0] {
                let period = z / r;
                let (got, want) = (sample_weight(z, period), exact(z / period));
                // Past the series, `math::expm1` (held to 4e-16) and a division.
                let tolerance = if r <= 0.25 { 4e-16 } else { 1e-15 };
                assert!(
                    close(got, want, tolerance),
                    "r {r:e}, z {z}: {got} against {want}"
                );
            }
            r *= 1.0137;
        }
        // Past r = 38, exactly what the formula gives: 1.
        for r in [38.0, 38.5, 100.0, 1e6] {
            assert_eq!(sample_weight(r, 1.0), 1.0);
            assert_eq!(1.0 / sample_probability(r, 1.0), 1.0);
        }
        assert!(sample_weight(37.0, 1.0) > 1.0);
        // Right at the switches and just past them.
        for edge in [1.0 / 64.0, 0.25] {
            for r in [edge, edge * (1.0 + f64::EPSILON), edge * (1.0 - f64::EPSILON)] {
                assert!(close(sample_weight(r, 1.0), exact(r), 4e-16), "r {r}");
            }
        }
    }

    #[test]
    fn sample_weights_match_the_formula() {
        let e = Estimate::of_sample(T, T);
        let w = 1.0 / (1.0 - (-1.0f64).exp());
        assert!(close(e.objects, w, 1e-14) && close(e.bytes, w * T as f64, 1e-14));
        // Tiny blocks stand for about T/z objects and T bytes.
        let e = Estimate::of_sample(16, T);
        assert!(close(e.objects, T as f64 / 16.0, 1e-4) && close(e.bytes, T as f64, 1e-4));
        // Huge blocks are always sampled: weight 1.
        let e = Estimate::of_sample(1 << 40, T);
        assert_eq!(e.objects, 1.0);
    }

    #[test]
    fn jeprof_lands_on_the_estimate_of_a_mixed_stack() {
        // Many samples of two sizes on one stack: summing raw counts then unbiasing by the
        // average would be biased; back-solving must give jeprof exactly the per-sample sum.
        let mut sum = Estimate::ZERO;
        for i in 0..400u64 {
            sum.add(Estimate::of_sample(if i % 2 == 0 { 32 } else { 3 << 20 }, T));
        }
        let read = sum.to_written(T).jeprof_estimate(T);
        assert!(close(read.bytes, sum.bytes, 1e-3), "{read:?} vs {sum:?}");
        assert!(close(read.objects, sum.objects, 1e-3), "{read:?} vs {sum:?}");
        // The naive reading (raw sums unbiased with the average size) is far off.
        let naive = Counts {
            objects: 400,
            bytes: 200 * 32 + 200 * (3 << 20),
        }
        .jeprof_estimate(T);
        assert!(!close(naive.objects, sum.objects, 0.5));
    }

    #[test]
    fn zero_and_extreme_inputs_do_not_misbehave() {
        assert_eq!(Estimate::ZERO.to_written(T), Counts::ZERO);
        assert_eq!(
            Estimate {
                objects: f64::NAN,
                bytes: 1.0
            }
            .to_written(T),
            Counts::ZERO
        );
        assert_eq!(
            Estimate {
                objects: 1.0,
                bytes: f64::INFINITY
            }
            .to_written(T)
            .bytes,
            u64::MAX
        );
        assert_eq!(Counts::ZERO.jeprof_estimate(T), Estimate::ZERO);
        assert_eq!(Counts { objects: 3, bytes: 0 }.jeprof_estimate(T), Estimate::ZERO);
        assert_eq!(Counts { objects: 0, bytes: 7 }.jeprof_estimate(T).bytes, 7.0);
        let e = Estimate::of_sample(0, 0);
        assert!(e.objects.is_finite() && e.objects >= 1.0);
        // Past 2^63 the inputs count as 2^63 − 1: finite, positive, one object a sample.
        let e = Estimate::of_sample(u64::MAX, u64::MAX);
        assert!(e.objects.is_finite() && e.objects >= 1.0 && e.bytes >= (1u64 << 62) as f64);
        let e = Estimate::of_sample(u64::MAX, T);
        assert_eq!(e, Estimate::of_sample(i64::MAX as u64, T));
        assert_eq!(e.objects, 1.0);
        let mut e = Estimate::of_sample(100, T);
        e.sub(Estimate::of_sample(100, T));
        assert_eq!(e, Estimate::ZERO);
    }
}
