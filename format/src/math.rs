//! `exp`, `expm1` and `ln` for `f64` without `std`.
//!
//! `core` has no transcendental functions (they live in `std`, which calls the C library), and the
//! profiler's recording path cannot call the C library's `libm` freely either, so the two
//! functions the estimate maths needs are written here:
//!
//! - `exp(x)`: range reduction `x = (32k + j)·ln 2/32 + r` with `|r| ≤ ln 2 / 64`, a table of
//!   `2^(j/32)`, a Taylor polynomial for `e^r − 1` (7 terms: the truncation error is below
//!   `2^-70`), then `2^k` applied to the exponent bits. `ln 2/32` is split in a high and a low
//!   part so that `n·ln2_hi/32` is exact. (With `|r| ≤ ln 2 / 2` and no table it took 18 terms:
//!   150 instructions of a sample of a block past a quarter of the sampling period.)
//! - `expm1(x) = e^x − 1` without the cancellation of `exp(x) − 1` near 0: the same polynomial
//!   without its constant term when `|x| ≤ ln 2 / 2`.
//! - `ln(x)`: `x = m·2^e` with `m ∈ [√½, √2)`, then `ln m = 2·atanh(s)` with `s = (m−1)/(m+1)`,
//!   `|s| ≤ 0.1716`, summed as an odd series to `s^21`.
//!
//! Accuracy is a few ulps over the ranges the profiler uses (checked against `std` in the tests).
//! Speed matters a little: `ln` and `expm1` run once per *sampled* allocation (drawing the next
//! distance, weighing the sample), where their chains of dependent floating-point steps were a
//! third of a sample's time with 15 and 18 terms and a division in each step of `expm1`.

/// ln 2 rounded to 32 significant bits, so that `k·LN2_HI` is exact for `|k| < 2^11`.
const LN2_HI: f64 = 6.931_471_803_691_238e-1; // bits 0x3fe62e42_fee00000
/// `ln 2 − LN2_HI`.
const LN2_LO: f64 = 1.908_214_929_270_587_7e-10; // bits 0x3dea39ef_35793c76
const INV_LN2: f64 = core::f64::consts::LOG2_E;

/// `1/n` for `n = 1..=18` (`INV[0]` unused), so that [`expm1_reduced`] multiplies where it would
/// divide: its 18 steps depend on each other, and a division takes 13-20 cycles to a
/// multiplication's 3-4 (18 divisions were a quarter of a profiler sample's time).
const INV: [f64; 19] = {
    let mut inv = [0.0; 19];
    let mut n = 1;
    while n < 19 {
        inv[n] = 1.0 / n as f64;
        n += 1;
    }
    inv
};

/// `e^r − 1` for `|r| ≤ ln 2 / 2` (about 0.347), by Horner on the Taylor series: 18 terms, or 9
/// for `|r| ≤ 1/64` (where the profiler's weights mostly are: a block of up to 8 KiB at the
/// default rate), which is as exact and half the dependent steps.
fn expm1_reduced(r: f64) -> f64 {
    // 1/n! for n = 1..=18; r^19/19! < 2^-64 for |r| ≤ 0.35, and r^10/10! < 2^-81·r for
    // |r| ≤ 1/64.
    let mut p = 0.0;
    let mut n = if r.abs() <= 1.0 / 64.0 { 9 } else { 18 };
    while n >= 1 {
        p = (p + 1.0) * r * INV[n];
        n -= 1;
    }
    p
}

/// Rounds to the nearest integer, halves away from zero (`f64::round` is in `std`).
fn round_to_int(x: f64) -> i64 {
    if x >= 0.0 {
        (x + 0.5) as i64
    } else {
        (x - 0.5) as i64
    }
}

/// `2^k` as an `f64`, for `-1074 ≤ k ≤ 1023` (subnormals included).
fn pow2(k: i64) -> f64 {
    if k >= -1022 {
        f64::from_bits(((k + 1023) as u64) << 52)
    } else {
        // Subnormal: 2^-1022 · 2^(k+1022), the second factor a normal number.
        f64::from_bits(1u64 << 52) * f64::from_bits(((k + 1022 + 1023) as u64) << 52)
    }
}

/// `2^(j/32)` for `j = 0..32`, each the nearest double (checked against `std` by its test).
const EXP2_32: [f64; 32] = [
    1.0,
    1.0218971486541166,
    1.0442737824274138,
    1.0671404006768237,
    1.0905077326652577,
    1.1143867425958924,
    1.1387886347566916,
    1.1637248587775775,
    1.189207115002721,
    1.215247359980469,
    1.241857812073484,
    1.2690509571917332,
    1.2968395546510096,
    1.3252366431597413,
    1.3542555469368927,
    1.383909881963832,
    core::f64::consts::SQRT_2,
    1.4451808069770467,
    1.4768261459394993,
    1.5091644275934228,
    1.5422108254079407,
    1.5759808451078865,
    1.6104903319492543,
    1.645755478153965,
    1.681792830507429,
    1.718619298122478,
    1.7562521603732995,
    1.7947090750031072,
    1.8340080864093424,
    1.8741676341103,
    1.9152065613971474,
    1.9571441241754002,
];

/// `e^x`. NaN gives NaN, `x > 709.78` gives `+∞`, `x < −745.2` gives `0`.
pub fn exp(x: f64) -> f64 {
    if x.is_nan() {
        return x;
    }
    if x > 709.782_712_893_384 {
        return f64::INFINITY;
    }
    if x < -745.133_219_101_941_1 {
        return 0.0;
    }
    // x = n·ln2/32 + r: |n| < 2^16, so n·(LN2_HI/32) is exact (LN2_HI has 32 significant bits).
    let n = round_to_int(x * (32.0 * INV_LN2));
    let r = (x - n as f64 * (LN2_HI / 32.0)) - n as f64 * (LN2_LO / 32.0);
    // e^r − 1 for |r| ≤ ln2/64 < 0.0109: r^8/8! < 2^-70.
    let p = r + r
        * r
        * (0.5
            + r * (1.0 / 6.0
                + r * (1.0 / 24.0 + r * (1.0 / 120.0 + r * (1.0 / 720.0 + r * (1.0 / 5040.0))))));
    let (k, j) = (n >> 5, (n & 31) as usize);
    let t = EXP2_32[j];
    let e = t + t * p;
    // Apply 2^k in two steps so that neither factor overflows or underflows on its own.
    let half = k / 2;
    e * pow2(half) * pow2(k - half)
}

/// `e^x − 1`, accurate near 0 (where `exp(x) − 1` loses digits).
pub fn expm1(x: f64) -> f64 {
    if x.abs() <= 0.346_573_590_279_972_6 {
        expm1_reduced(x)
    } else {
        exp(x) - 1.0
    }
}

/// Natural logarithm. `ln(0) = −∞`, negative or NaN gives NaN, `ln(+∞) = +∞`.
pub fn ln(x: f64) -> f64 {
    if x.is_nan() || x < 0.0 {
        return f64::NAN;
    }
    if x == 0.0 {
        return f64::NEG_INFINITY;
    }
    if x.is_infinite() {
        return x;
    }
    let mut bits = x.to_bits();
    let mut e: i64 = 0;
    if bits >> 52 == 0 {
        // Subnormal: scale by 2^54 into the normal range first.
        bits = (x * f64::from_bits(((54 + 1023) as u64) << 52)).to_bits();
        e -= 54;
    }
    e += ((bits >> 52) & 0x7ff) as i64 - 1023;
    // m in [1, 2), then moved to [√½, √2).
    let mut m = f64::from_bits((bits & ((1u64 << 52) - 1)) | (1023u64 << 52));
    if m > core::f64::consts::SQRT_2 {
        m *= 0.5;
        e += 1;
    }
    let s = (m - 1.0) / (m + 1.0);
    let s2 = s * s;
    // atanh(s) = s + s^3/3 + s^5/5 + ... ; s^23/23 < 2^-60·s for |s| ≤ 0.1716 (each term one
    // multiplication and one addition that wait for the one before: no more than needed).
    let mut sum = 0.0;
    let mut n = 21;
    while n >= 3 {
        sum = (sum + 1.0 / n as f64) * s2;
        n -= 2;
    }
    let ln_m = 2.0 * (s + s * sum);
    e as f64 * LN2_HI + (e as f64 * LN2_LO + ln_m)
}

#[cfg(test)]
mod tests {
    extern crate std;
    use super::*;

    fn rel_err(a: f64, b: f64) -> f64 {
        if a == b {
            0.0
        } else {
            ((a - b) / b).abs()
        }
    }

    #[test]
    fn exp2_32_is_computed() {
        for (j, &v) in EXP2_32.iter().enumerate() {
            let want = (j as f64 / 32.0).exp2();
            assert!(
                v.to_bits().abs_diff(want.to_bits()) <= 1,
                "EXP2_32[{j}] = {v:e}, exp2 = {want:e}"
            );
        }
    }

    #[test]
    fn exp_matches_std() {
        let mut x: f64 = -745.0;
        while x < 709.0 {
            // Subnormal results have fewer bits: allow two units in the last place there.
            let ok = if x.exp() < f64::MIN_POSITIVE {
                (exp(x) - x.exp()).abs() <= 2.0 * f64::from_bits(1)
            } else {
                rel_err(exp(x), x.exp()) < 5e-16
            };
            assert!(ok, "exp({x}) = {:e} vs {:e}", exp(x), x.exp());
            x += 0.0137;
        }
        for x in [0.0, 1e-300, -1e-300, 1e-10, -1e-10, 0.5, -0.5, 1.0, 700.0, -700.0] {
            assert!(rel_err(exp(x), x.exp()) < 4e-15, "exp({x})");
        }
        assert_eq!(exp(1000.0), f64::INFINITY);
        assert_eq!(exp(-1000.0), 0.0);
        assert!(exp(f64::NAN).is_nan());
        assert_eq!(exp(f64::NEG_INFINITY), 0.0);
        assert_eq!(exp(f64::INFINITY), f64::INFINITY);
    }

    #[test]
    fn expm1_matches_std() {
        let mut x = -50.0;
        while x < 50.0 {
            assert!(rel_err(expm1(x), x.exp_m1()) < 4e-15, "expm1({x})");
            x += 0.00731;
        }
        for x in [1e-20, -1e-20, 3e-5, -3e-5, 1e-9] {
            assert!(rel_err(expm1(x), x.exp_m1()) < 4e-16, "expm1({x})");
        }
    }

    #[test]
    fn ln_matches_std() {
        let mut x = 1e-310;
        while x < 1e300 {
            assert!(
                rel_err(ln(x), x.ln()) < 4e-15,
                "ln({x}) = {} vs {}",
                ln(x),
                x.ln()
            );
            x *= 1.0173;
        }
        // Dense near 1, where the result is near 0 and relative error is hardest.
        let mut x = 0.9;
        while x < 1.1 {
            assert!((ln(x) - x.ln()).abs() < 2e-17 + 4e-15 * x.ln().abs(), "ln({x})");
            x += 1e-5;
        }
        assert_eq!(ln(1.0), 0.0);
        assert_eq!(ln(0.0), f64::NEG_INFINITY);
        assert!(ln(-1.0).is_nan());
        assert_eq!(ln(f64::INFINITY), f64::INFINITY);
        assert!(rel_err(ln(f64::MIN_POSITIVE / 4.0), (f64::MIN_POSITIVE / 4.0).ln()) < 4e-15);
        assert!(rel_err(ln(f64::from_bits(1)), f64::from_bits(1).ln()) < 4e-15);
    }
}
