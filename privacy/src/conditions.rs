//! Numerical check of conditions C5 and C6 (2018 paper, appendix B.4.2),
//! which the smooth-sensitivity analysis of GNMax needs:
//!
//! * C5: `beta(q)`, Theorem 6's RDP bound as a function of `q`, is
//!   non-decreasing on `(0, q0)`;
//! * C6: `beta(bu(q)) - beta(q)` is non-decreasing on `(0, bl(q0))`.
//!
//! The reference builds both functions in SymPy, differentiates them
//! symbolically and minimises the derivative with SciPy's bounded Brent
//! method. Here the derivative comes from forward-mode automatic
//! differentiation (a dual number carries the value and the derivative
//! through the same formula, exact up to rounding), and the minimisation is
//! [`crate::optimize::fminbound`], a step-for-step port of SciPy's.

use std::f64::consts::PI;
use std::ops::{Add, Div, Mul, Neg, Sub};

use serde::{Deserialize, Serialize};

use crate::optimize::fminbound;
use crate::smooth_sensitivity::{compute_bl_gnmax, compute_logq0_gnmax, SmoothSensitivityError};
use crate::special::{erfc, erfcinv};

/// A dual number `v + d*eps` with `eps^2 = 0`.
#[derive(Debug, Clone, Copy, PartialEq)]
struct Dual {
    v: f64,
    d: f64,
}

impl Dual {
    fn var(x: f64) -> Self {
        Dual { v: x, d: 1.0 }
    }
    fn c(x: f64) -> Self {
        Dual { v: x, d: 0.0 }
    }
    fn ln(self) -> Self {
        Dual {
            v: self.v.ln(),
            d: self.d / self.v,
        }
    }
    fn exp(self) -> Self {
        let e = self.v.exp();
        Dual { v: e, d: e * self.d }
    }
    fn sqrt(self) -> Self {
        let s = self.v.sqrt();
        Dual {
            v: s,
            d: self.d / (2.0 * s),
        }
    }
    /// `self^y` for a dual exponent (`self > 0`).
    fn pow(self, y: Dual) -> Self {
        let p = self.v.powf(y.v);
        Dual {
            v: p,
            d: p * (y.d * self.v.ln() + y.v * self.d / self.v),
        }
    }
    /// `self^y` for a constant exponent.
    fn powf(self, y: f64) -> Self {
        let p = self.v.powf(y);
        Dual {
            v: p,
            d: y * self.v.powf(y - 1.0) * self.d,
        }
    }
    fn erfc(self) -> Self {
        Dual {
            v: erfc(self.v),
            d: -2.0 / PI.sqrt() * (-self.v * self.v).exp() * self.d,
        }
    }
    fn erfcinv(self) -> Self {
        let x = erfcinv(self.v);
        Dual {
            v: x,
            d: -PI.sqrt() / 2.0 * (x * x).exp() * self.d,
        }
    }
}

impl Add for Dual {
    type Output = Dual;
    fn add(self, o: Dual) -> Dual {
        Dual {
            v: self.v + o.v,
            d: self.d + o.d,
        }
    }
}
impl Sub for Dual {
    type Output = Dual;
    fn sub(self, o: Dual) -> Dual {
        Dual {
            v: self.v - o.v,
            d: self.d - o.d,
        }
    }
}
impl Mul for Dual {
    type Output = Dual;
    fn mul(self, o: Dual) -> Dual {
        Dual {
            v: self.v * o.v,
            d: self.d * o.v + self.v * o.d,
        }
    }
}
impl Div for Dual {
    type Output = Dual;
    fn div(self, o: Dual) -> Dual {
        Dual {
            v: self.v / o.v,
            d: (self.d * o.v - self.v * o.d) / (o.v * o.v),
        }
    }
}
impl Neg for Dual {
    type Output = Dual;
    fn neg(self) -> Dual {
        Dual { v: -self.v, d: -self.d }
    }
}
impl Add<f64> for Dual {
    type Output = Dual;
    fn add(self, o: f64) -> Dual {
        self + Dual::c(o)
    }
}
impl Sub<f64> for Dual {
    type Output = Dual;
    fn sub(self, o: f64) -> Dual {
        self - Dual::c(o)
    }
}
impl Sub<Dual> for f64 {
    type Output = Dual;
    fn sub(self, o: Dual) -> Dual {
        Dual::c(self) - o
    }
}
impl Mul<Dual> for f64 {
    type Output = Dual;
    fn mul(self, o: Dual) -> Dual {
        Dual::c(self) * o
    }
}
impl Div<f64> for Dual {
    type Output = Dual;
    fn div(self, o: f64) -> Dual {
        self / Dual::c(o)
    }
}
impl Div<Dual> for f64 {
    type Output = Dual;
    fn div(self, o: Dual) -> Dual {
        Dual::c(self) / o
    }
}

/// Theorem 6's bound as a function of `q` (the reference's
/// `_construct_symbolic_beta`).
fn beta_of_q(q: Dual, sigma: f64, order: f64) -> Dual {
    let mu2 = sigma * (1.0 / q).ln().sqrt();
    let mu1 = mu2 + 1.0;
    let eps1 = mu1 / (sigma * sigma);
    let eps2 = mu2 / (sigma * sigma);
    let a = (1.0 - q) / (1.0 - (q * eps2.exp()).pow(1.0 - 1.0 / mu2));
    let b = eps1.exp() / q.pow(1.0 / (mu1 - 1.0));
    let s = (1.0 - q) * a.powf(order - 1.0) + q * b.powf(order - 1.0);
    (1.0 / (order - 1.0)) * s.ln()
}

/// `bu(q)` (the reference's `_construct_symbolic_bu`).
fn bu_of_q(q: Dual, sigma: f64, m: usize) -> Dual {
    let m1 = m as f64 - 1.0;
    (m1 / 2.0) * ((2.0 * q / m1).erfcinv() + (-1.0 / sigma)).erfc()
}

/// Derivative of Theorem 6's bound with respect to `q`.
pub fn dbeta_dq(q: f64, sigma: f64, order: f64) -> f64 {
    beta_of_q(Dual::var(q), sigma, order).d
}

/// Derivative of `beta(bu(q)) - beta(q)` with respect to `q`.
pub fn ddelta_beta_dq(q: f64, sigma: f64, num_classes: usize, order: f64) -> f64 {
    let x = Dual::var(q);
    (beta_of_q(bu_of_q(x, sigma, num_classes), sigma, order) - beta_of_q(x, sigma, order)).d
}

/// Outcome of [`check_conditions`], with the minima found.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct ConditionsReport {
    /// Condition C5 holds.
    pub cond5: bool,
    /// Condition C6 holds (false when C5 fails, as in the reference).
    pub cond6: bool,
    /// Minimum of `d beta / dq` found on `(0, q0)`.
    pub min_dbeta: f64,
    /// Minimum of `d (beta(bu(q)) - beta(q)) / dq` on `(0, bl(q0))`; NaN if
    /// not checked.
    pub min_ddelta_beta: f64,
}

/// Checks conditions C5 and C6 for GNMax with noise `sigma`, `m` classes, at
/// one Rényi order (the reference's `check_conditions`). A minimisation that
/// fails (NaN derivative) counts as the condition failing.
pub fn check_conditions(sigma: f64, m: usize, order: f64) -> Result<ConditionsReport, SmoothSensitivityError> {
    let q0 = compute_logq0_gnmax(sigma, order)?.exp();
    let r5 = fminbound(|q| dbeta_dq(q, sigma, order), 0.0, q0, 1e-5, 500);
    let cond5 = r5.success && r5.fun >= 0.0;
    if !cond5 {
        return Ok(ConditionsReport {
            cond5,
            cond6: false,
            min_dbeta: r5.fun,
            min_ddelta_beta: f64::NAN,
        });
    }
    let bl_q0 = compute_bl_gnmax(q0, sigma, m);
    let r6 = fminbound(|q| ddelta_beta_dq(q, sigma, m, order), 0.0, bl_q0, 1e-5, 500);
    Ok(ConditionsReport {
        cond5,
        cond6: r6.success && r6.fun >= 0.0,
        min_dbeta: r5.fun,
        min_ddelta_beta: r6.fun,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dual_derivatives_match_finite_differences() {
        let (sigma, order) = (40.0, 10.0);
        for &q in &[1e-4, 1e-3, 0.01] {
            let h = q * 1e-6;
            let num =
                (beta_of_q(Dual::c(q + h), sigma, order).v - beta_of_q(Dual::c(q - h), sigma, order).v) / (2.0 * h);
            let ad = dbeta_dq(q, sigma, order);
            assert!(((num - ad) / ad).abs() < 1e-5, "q={q} num={num} ad={ad}");
            let f = |x: f64| {
                let d = Dual::c(x);
                (beta_of_q(bu_of_q(d, sigma, 10), sigma, order) - beta_of_q(d, sigma, order)).v
            };
            let num6 = (f(q + h) - f(q - h)) / (2.0 * h);
            let ad6 = ddelta_beta_dq(q, sigma, 10, order);
            assert!(((num6 - ad6) / ad6).abs() < 1e-4, "q={q} num={num6} ad={ad6}");
        }
    }
}
