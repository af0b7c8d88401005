//! Special functions the accountant needs: the complementary error function
//! and its scaled, logarithmic and inverse forms, the normal log tail, and
//! the log-space helpers of the reference code.
//!
//! `erf`/`erfc` come from the `libm` crate (a port of musl's fdlibm code,
//! below one ulp). Everything else is written here:
//!
//! * [`erfcx`], the scaled `exp(x^2) erfc(x)`, multiplies `erfc` by an
//!   `exp(x^2)` whose argument is split exactly with a fused multiply-add, and
//!   switches to the asymptotic series past `x = 26` where `erfc` underflows.
//! * [`log_ndtr`] follows the formula SciPy uses (`ln(erfcx(-t)/2) - t^2` in
//!   the lower tail), so `ln Pr[N(0,1) > x]` stays finite for any finite `x`.
//! * [`erfcinv`] solves `ln erfc(x) = ln y` with Newton steps (the function is
//!   concave, so the iteration converges from any start) and is accurate to a
//!   few ulps even for `y` near the smallest subnormal.

use std::f64::consts::{FRAC_1_SQRT_2, LN_2, PI, SQRT_2};

/// `1/sqrt(pi)`.
const FRAC_1_SQRT_PI: f64 = 0.564_189_583_547_756_3;
/// `2/sqrt(pi)`.
const FRAC_2_SQRT_PI: f64 = std::f64::consts::FRAC_2_SQRT_PI;

/// The error function.
pub fn erf(x: f64) -> f64 {
    libm::erf(x)
}

/// The complementary error function `1 - erf(x)`.
pub fn erfc(x: f64) -> f64 {
    libm::erfc(x)
}

/// `exp(x^2)` with the square split exactly into `hi + lo`, so the result
/// keeps full relative precision even when `x^2` is in the hundreds.
fn exp_x2(x: f64) -> f64 {
    let hi = x * x;
    let lo = x.mul_add(x, -hi);
    hi.exp() * (1.0 + lo)
}

/// The scaled complementary error function `exp(x^2) * erfc(x)`.
///
/// Finite and accurate for all `x >= -26`; overflows to `+inf` below that,
/// as the true value does.
pub fn erfcx(x: f64) -> f64 {
    if x.is_nan() {
        return f64::NAN;
    }
    if x < 0.0 {
        if x < -26.7 {
            return f64::INFINITY;
        }
        return 2.0 * exp_x2(x) - erfcx(-x);
    }
    if x < 26.0 {
        return erfc(x) * exp_x2(x);
    }
    if x.is_infinite() {
        return 0.0;
    }
    // Asymptotic series: erfcx(x) = 1/(x sqrt(pi)) * sum_n (-1)^n (2n-1)!! / (2x^2)^n.
    // At x >= 26 the terms fall by a factor (2n-1)/(2x^2) <= 1/1352 at first,
    // so a handful of terms reach full precision.
    let inv2x2 = 1.0 / (2.0 * x * x);
    let mut term = 1.0;
    let mut sum = 1.0;
    for n in 1..40 {
        term *= -((2 * n - 1) as f64) * inv2x2;
        sum += term;
        if term.abs() < 1e-17 * sum.abs() {
            break;
        }
    }
    FRAC_1_SQRT_PI / x * sum
}

/// `ln(erfc(x))`, accurate deep in the upper tail where `erfc` underflows.
pub fn log_erfc(x: f64) -> f64 {
    if x.is_nan() {
        return f64::NAN;
    }
    if x <= 0.0 {
        return erfc(x).ln();
    }
    if x.is_infinite() {
        return f64::NEG_INFINITY;
    }
    let hi = x * x;
    let lo = x.mul_add(x, -hi);
    erfcx(x).ln() - hi - lo
}

/// `ln Phi(a)`, the log of the standard normal CDF (SciPy's `log_ndtr`).
pub fn log_ndtr(a: f64) -> f64 {
    let t = a * FRAC_1_SQRT_2;
    if a < -1.0 {
        (erfcx(-t) / 2.0).ln() - t * t
    } else {
        (-erfc(t) / 2.0).ln_1p()
    }
}

/// `ln Pr[N(0, scale^2) > x]` (SciPy's `norm.logsf(x, scale=scale)`).
pub fn norm_logsf(x: f64, scale: f64) -> f64 {
    log_ndtr(-(x / scale))
}

/// The inverse complementary error function: the `x` with `erfc(x) = y`,
/// for `y` in `[0, 2]` (`+inf` at 0, `-inf` at 2, NaN outside).
pub fn erfcinv(y: f64) -> f64 {
    if y.is_nan() || !(0.0..=2.0).contains(&y) {
        return f64::NAN;
    }
    if y == 0.0 {
        return f64::INFINITY;
    }
    if y == 2.0 {
        return f64::NEG_INFINITY;
    }
    if y > 1.0 {
        // 2 - y is exact here (Sterbenz), and erfc(-x) = 2 - erfc(x).
        return -erfcinv_le1(2.0 - y);
    }
    erfcinv_le1(y)
}

/// `erfcinv` on `(0, 1]`, where the answer is non-negative.
fn erfcinv_le1(y: f64) -> f64 {
    if y >= 0.5 {
        // Near the centre, solve erf(x) = 1 - y (exact) with Newton steps.
        let p = 1.0 - y;
        if p == 0.0 {
            return 0.0;
        }
        let c = PI.sqrt() / 2.0;
        let mut x = c * (p + PI / 12.0 * p.powi(3) + 7.0 * PI * PI / 480.0 * p.powi(5));
        for _ in 0..50 {
            let dx = (erf(x) - p) / (FRAC_2_SQRT_PI * (-x * x).exp());
            x -= dx;
            // Quadratic convergence: the error left after a step of size dx
            // is about x dx^2, below an ulp once dx < 1e-9 x.
            if dx.abs() <= 1e-9 * x.abs() {
                break;
            }
        }
        return x;
    }
    // Tail: solve ln erfc(x) = ln y. ln erfc is concave and decreasing, so
    // Newton's method converges monotonically after at most one overshoot;
    // Acklam's approximation of the normal quantile (rel. error ~1e-9) as the
    // start leaves one or two steps.
    let target = y.ln();
    let mut x = -acklam_ndtri(y / 2.0) * FRAC_1_SQRT_2;
    if !x.is_finite() || x <= 0.0 {
        x = (-target).sqrt();
    }
    for _ in 0..100 {
        let g = log_erfc(x) - target;
        let dg = -FRAC_2_SQRT_PI / erfcx(x);
        let dx = g / dg;
        x -= dx;
        // Quadratic convergence: the error left is about dx^2 / 16.
        if dx.abs() <= 1e-9 * x.abs() {
            break;
        }
    }
    x
}

/// Acklam's rational approximation of the standard normal quantile for
/// `p` in `(0, 0.5]` (relative error about 1e-9): a starting point only.
fn acklam_ndtri(p: f64) -> f64 {
    const A: [f64; 6] = [
        -3.969_683_028_665_376e1,
        2.209_460_984_245_205e2,
        -2.759_285_104_469_687e2,
        1.383_577_518_672_69e2,
        -3.066_479_806_614_716e1,
        2.506_628_277_459_239,
    ];
    const B: [f64; 5] = [
        -5.447_609_879_822_406e1,
        1.615_858_368_580_409e2,
        -1.556_989_798_598_866e2,
        6.680_131_188_771_972e1,
        -1.328_068_155_288_572e1,
    ];
    const C: [f64; 6] = [
        -7.784_894_002_430_293e-3,
        -3.223_964_580_411_365e-1,
        -2.400_758_277_161_838,
        -2.549_732_539_343_734,
        4.374_664_141_464_968,
        2.938_163_982_698_783,
    ];
    const D: [f64; 4] = [7.784_695_709_041_462e-3, 3.224_671_290_700_398e-1, 2.445_134_137_142_996, 3.754_408_661_907_416];
    if p < 0.02425 {
        let q = (-2.0 * p.ln()).sqrt();
        (((((C[0] * q + C[1]) * q + C[2]) * q + C[3]) * q + C[4]) * q + C[5])
            / ((((D[0] * q + D[1]) * q + D[2]) * q + D[3]) * q + 1.0)
    } else {
        let q = p - 0.5;
        let r = q * q;
        (((((A[0] * r + A[1]) * r + A[2]) * r + A[3]) * r + A[4]) * r + A[5]) * q
            / (((((B[0] * r + B[1]) * r + B[2]) * r + B[3]) * r + B[4]) * r + 1.0)
    }
}

/// The inverse of the standard normal CDF (SciPy's `ndtri`).
pub fn ndtri(p: f64) -> f64 {
    if p.is_nan() || !(0.0..=1.0).contains(&p) {
        return f64::NAN;
    }
    if p > 0.5 {
        // 1 - p is exact for p in (0.5, 1].
        SQRT_2 * erfcinv(2.0 * (1.0 - p))
    } else {
        -SQRT_2 * erfcinv(2.0 * p)
    }
}

/// The inverse survival function of the chi-square distribution with one
/// degree of freedom (SciPy's `chdtri(1, p)`): the `x` with `Pr[X > x] = p`.
pub fn chi2_1_isf(p: f64) -> f64 {
    let z = erfcinv(p);
    2.0 * z * z
}

/// Numerically stable `ln(1 - exp(x))` for `x <= 0` (the reference's
/// `_log1mexp`); `-inf` at 0 and NaN for positive `x` (where the reference
/// raises).
pub fn log1mexp(x: f64) -> f64 {
    if x < -1.0 {
        (-x.exp()).ln_1p()
    } else if x < 0.0 {
        (-x.exp_m1()).ln()
    } else if x == 0.0 {
        f64::NEG_INFINITY
    } else {
        f64::NAN
    }
}

/// `ln(e^x + e^y)` with NumPy's `logaddexp` semantics.
pub fn logaddexp(x: f64, y: f64) -> f64 {
    if x == y {
        // Handles infinities of the same sign too.
        return x + LN_2;
    }
    let d = x - y;
    if d > 0.0 {
        x + (-d).exp().ln_1p()
    } else if d <= 0.0 {
        y + d.exp().ln_1p()
    } else {
        d // NaN
    }
}

/// `ln(sum_i e^{x_i})` as the reference's `_logaddexp` computes it: subtract
/// the maximum, sum left to right, take the log. `-inf` for an empty slice.
pub fn logsumexp(xs: &[f64]) -> f64 {
    let m = xs.iter().copied().fold(f64::NEG_INFINITY, f64::max);
    if m == f64::NEG_INFINITY {
        return f64::NEG_INFINITY;
    }
    let s: f64 = xs.iter().map(|&x| (x - m).exp()).fold(0.0, |a, b| a + b);
    m + s.ln()
}

/// Index of the first maximum (NumPy's `argmax`: the lowest index wins
/// ties; the aggregator's tie rule too); `None` for an empty slice.
pub fn argmax<T: PartialOrd + Copy>(values: &[T]) -> Option<usize> {
    let mut best: Option<(usize, T)> = None;
    for (i, &v) in values.iter().enumerate() {
        if best.is_none_or(|(_, b)| v > b) {
            best = Some((i, v));
        }
    }
    best.map(|(i, _)| i)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rel(a: f64, b: f64) -> f64 {
        ((a - b) / b).abs()
    }

    #[test]
    fn erfcx_matches_direct_and_asymptotic() {
        for &x in &[0.0, 0.3, 1.0, 3.0, 10.0, 25.9] {
            let direct = erfc(x) * (x * x).exp();
            assert!(rel(erfcx(x), direct) < 1e-12, "x={x}");
        }
        // Continuity across the switch to the series.
        assert!(rel(erfcx(25.999_999), erfcx(26.0)) < 1e-6);
        // Large x: erfcx(x) ~ 1/(x sqrt(pi)).
        assert!(rel(erfcx(1e6), FRAC_1_SQRT_PI / 1e6) < 1e-12);
        // Negative x: erfcx(-1) = e * erfc(-1).
        assert!(rel(erfcx(-1.0), 1f64.exp() * erfc(-1.0)) < 1e-14);
    }

    #[test]
    fn log_erfc_deep_tail() {
        // ln erfc(40) from mpmath at 40 digits.
        assert!(rel(log_erfc(40.0), -1_604.261_556_653_273_6) < 1e-15);
        assert!(rel(log_erfc(2.0), erfc(2.0).ln()) < 1e-14);
    }

    #[test]
    fn log_ndtr_tail() {
        assert!(rel(log_ndtr(0.0), -LN_2) < 1e-15);
        // ln Phi(-40) from mpmath at 40 digits.
        assert!(rel(log_ndtr(-40.0), -804.608_442_013_753_8) < 1e-15);
    }

    #[test]
    fn erfcinv_roundtrip() {
        for &y in &[
            1e-300,
            1e-30,
            2e-12,
            1e-5,
            0.01,
            0.3,
            0.5,
            0.9,
            1.0,
            1.2,
            1.9,
            2.0 - 1e-10,
        ] {
            let x = erfcinv(y);
            let back = if y < 1.0 { log_erfc(x).exp() } else { erfc(x) };
            assert!(
                rel(back, y) < 1e-12 * (1.0 + x.abs() * x.abs()),
                "y={y} x={x} back={back}"
            );
        }
        assert_eq!(erfcinv(1.0), 0.0);
        assert!(erfcinv(0.0).is_infinite());
    }

    #[test]
    fn ndtri_known_values() {
        assert!(rel(ndtri(0.975), 1.959_963_984_540_054) < 1e-14);
        assert!(rel(ndtri(0.025), -1.959_963_984_540_054) < 1e-14);
        // chi2(1) isf at 0.05 is 1.959964^2.
        assert!(rel(chi2_1_isf(0.05), 1.959_963_984_540_054f64.powi(2)) < 1e-13);
    }

    #[test]
    fn logaddexp_semantics() {
        assert_eq!(logaddexp(f64::NEG_INFINITY, f64::NEG_INFINITY), f64::NEG_INFINITY);
        assert!(rel(logaddexp(0.0, 0.0), LN_2) < 1e-16);
        assert!(rel(logsumexp(&[0.0, 0.0, 0.0]), 3f64.ln()) < 1e-15);
        assert_eq!(argmax(&[1.0, 3.0, 3.0]), Some(1));
    }
}
