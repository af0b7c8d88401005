//! One-dimensional root finding and minimisation, written to follow the SciPy
//! routines the reference analysis calls, step for step, so that roots and
//! minima land where the reference's do:
//!
//! * [`brentq`]: Brent's method as in SciPy's `optimize.brentq` (defaults
//!   `xtol = 2e-12`, `rtol = 4 eps`, 100 iterations).
//! * [`fminbound`]: the bounded Brent minimiser of
//!   `optimize.minimize_scalar(method="bounded")` (default `xatol = 1e-5`,
//!   500 evaluations).

use thiserror::Error;

/// Failures of the numerical routines.
#[derive(Debug, Clone, PartialEq, Error)]
pub enum OptimizeError {
    /// The function has the same sign at both ends of the bracket.
    #[error("f(a) and f(b) must have different signs (f({a}) = {fa}, f({b}) = {fb})")]
    SameSign {
        /// Left end.
        a: f64,
        /// Right end.
        b: f64,
        /// Value at the left end.
        fa: f64,
        /// Value at the right end.
        fb: f64,
    },
    /// The iteration limit was reached before convergence.
    #[error("no convergence after {0} iterations")]
    NoConvergence(usize),
    /// The function returned NaN.
    #[error("the function returned NaN")]
    Nan,
}

/// Default absolute tolerance of SciPy's `brentq`.
pub const BRENTQ_XTOL: f64 = 2e-12;
/// Default relative tolerance of SciPy's `brentq` (4 machine epsilons).
pub const BRENTQ_RTOL: f64 = 4.0 * f64::EPSILON;

/// Finds a root of `f` in `[xa, xb]` with Brent's method (SciPy's `brentq`).
pub fn brentq<F: FnMut(f64) -> f64>(
    mut f: F,
    xa: f64,
    xb: f64,
    xtol: f64,
    rtol: f64,
    maxiter: usize,
) -> Result<f64, OptimizeError> {
    let (mut xpre, mut xcur) = (xa, xb);
    let (mut xblk, mut fblk, mut spre, mut scur) = (0.0f64, 0.0f64, 0.0f64, 0.0f64);
    let mut fpre = f(xpre);
    let mut fcur = f(xcur);
    if fpre.is_nan() || fcur.is_nan() {
        return Err(OptimizeError::Nan);
    }
    if fpre == 0.0 {
        return Ok(xpre);
    }
    if fcur == 0.0 {
        return Ok(xcur);
    }
    if fpre.is_sign_negative() == fcur.is_sign_negative() {
        return Err(OptimizeError::SameSign {
            a: xa,
            b: xb,
            fa: fpre,
            fb: fcur,
        });
    }
    for _ in 0..maxiter {
        if fpre != 0.0 && fcur != 0.0 && fpre.is_sign_negative() != fcur.is_sign_negative() {
            xblk = xpre;
            fblk = fpre;
            spre = xcur - xpre;
            scur = spre;
        }
        if fblk.abs() < fcur.abs() {
            xpre = xcur;
            xcur = xblk;
            xblk = xpre;
            fpre = fcur;
            fcur = fblk;
            fblk = fpre;
        }
        let delta = (xtol + rtol * xcur.abs()) / 2.0;
        let sbis = (xblk - xcur) / 2.0;
        if fcur == 0.0 || sbis.abs() < delta {
            return Ok(xcur);
        }
        if spre.abs() > delta && fcur.abs() < fpre.abs() {
            let stry = if xpre == xblk {
                // interpolate
                -fcur * (xcur - xpre) / (fcur - fpre)
            } else {
                // extrapolate
                let dpre = (fpre - fcur) / (xpre - xcur);
                let dblk = (fblk - fcur) / (xblk - xcur);
                -fcur * (fblk * dblk - fpre * dpre) / (dblk * dpre * (fblk - fpre))
            };
            if 2.0 * stry.abs() < spre.abs().min(3.0 * sbis.abs() - delta) {
                spre = scur;
                scur = stry;
            } else {
                spre = sbis;
                scur = sbis;
            }
        } else {
            spre = sbis;
            scur = sbis;
        }
        xpre = xcur;
        fpre = fcur;
        if scur.abs() > delta {
            xcur += scur;
        } else {
            xcur += if sbis > 0.0 { delta } else { -delta };
        }
        fcur = f(xcur);
        if fcur.is_nan() {
            return Err(OptimizeError::Nan);
        }
    }
    Err(OptimizeError::NoConvergence(maxiter))
}

/// Result of [`fminbound`].
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct MinResult {
    /// The minimiser found.
    pub x: f64,
    /// The function value there.
    pub fun: f64,
    /// Number of function evaluations.
    pub nfev: usize,
    /// Whether the search converged (SciPy's `success`).
    pub success: bool,
}

/// Minimises `f` on `(x1, x2)` with the bounded Brent method of SciPy's
/// `minimize_scalar(method="bounded")`. Never evaluates `f` at the bounds.
pub fn fminbound<F: FnMut(f64) -> f64>(mut f: F, x1: f64, x2: f64, xatol: f64, maxfun: usize) -> MinResult {
    let sqrt_eps = 2.2e-16f64.sqrt();
    let golden_mean = 0.5 * (3.0 - 5.0f64.sqrt());
    let (mut a, mut b) = (x1, x2);
    let mut fulc = a + golden_mean * (b - a);
    let mut nfc = fulc;
    let mut xf = fulc;
    let mut rat = 0.0f64;
    let mut e = 0.0f64;
    let mut fx = f(xf);
    let mut num = 1usize;
    let mut fu = f64::INFINITY;
    let mut ffulc = fx;
    let mut fnfc = fx;
    let mut xm = 0.5 * (a + b);
    let mut tol1 = sqrt_eps * xf.abs() + xatol / 3.0;
    let mut tol2 = 2.0 * tol1;
    let mut flag_maxfun = false;

    while (xf - xm).abs() > (tol2 - 0.5 * (b - a)) {
        let mut golden = true;
        if e.abs() > tol1 {
            golden = false;
            let mut r = (xf - nfc) * (fx - ffulc);
            let mut q = (xf - fulc) * (fx - fnfc);
            let mut p = (xf - fulc) * q - (xf - nfc) * r;
            q = 2.0 * (q - r);
            if q > 0.0 {
                p = -p;
            }
            q = q.abs();
            r = e;
            e = rat;
            if p.abs() < (0.5 * q * r).abs() && p > q * (a - xf) && p < q * (b - xf) {
                rat = (p + 0.0) / q;
                let x = xf + rat;
                if (x - a) < tol2 || (b - x) < tol2 {
                    let si = sign(xm - xf) + if xm - xf == 0.0 { 1.0 } else { 0.0 };
                    rat = tol1 * si;
                }
            } else {
                golden = true;
            }
        }
        if golden {
            e = if xf >= xm { a - xf } else { b - xf };
            rat = golden_mean * e;
        }
        let si = sign(rat) + if rat == 0.0 { 1.0 } else { 0.0 };
        let x = xf + si * rat.abs().max(tol1);
        fu = f(x);
        num += 1;
        if fu <= fx {
            if x >= xf {
                a = xf;
            } else {
                b = xf;
            }
            fulc = nfc;
            ffulc = fnfc;
            nfc = xf;
            fnfc = fx;
            xf = x;
            fx = fu;
        } else {
            if x < xf {
                a = x;
            } else {
                b = x;
            }
            if fu <= fnfc || nfc == xf {
                fulc = nfc;
                ffulc = fnfc;
                nfc = x;
                fnfc = fu;
            } else if fu <= ffulc || fulc == xf || fulc == nfc {
                fulc = x;
                ffulc = fu;
            }
        }
        xm = 0.5 * (a + b);
        tol1 = sqrt_eps * xf.abs() + xatol / 3.0;
        tol2 = 2.0 * tol1;
        if num >= maxfun {
            flag_maxfun = true;
            break;
        }
    }
    let nan = xf.is_nan() || fx.is_nan() || fu.is_nan();
    MinResult {
        x: xf,
        fun: fx,
        nfev: num,
        success: !flag_maxfun && !nan,
    }
}

/// NumPy's `sign`: -1, 0 or 1.
fn sign(x: f64) -> f64 {
    if x > 0.0 {
        1.0
    } else if x < 0.0 {
        -1.0
    } else {
        0.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn brentq_finds_sqrt2() {
        let r = brentq(|x| x * x - 2.0, 0.0, 2.0, BRENTQ_XTOL, BRENTQ_RTOL, 100).expect("converges");
        assert!((r - std::f64::consts::SQRT_2).abs() < 1e-11);
        assert!(matches!(
            brentq(|x| x * x + 1.0, 0.0, 2.0, 1e-12, 1e-15, 100),
            Err(OptimizeError::SameSign { .. })
        ));
    }

    #[test]
    fn fminbound_parabola() {
        let r = fminbound(|x| (x - 0.3) * (x - 0.3) + 1.0, 0.0, 1.0, 1e-5, 500);
        assert!(r.success);
        assert!((r.x - 0.3).abs() < 1e-5);
        assert!((r.fun - 1.0).abs() < 1e-9);
        // Minimum at the boundary: approaches it without evaluating it.
        let r = fminbound(|x| x, 0.0, 1.0, 1e-5, 500);
        assert!(r.x > 0.0 && r.x < 1e-4);
    }
}
