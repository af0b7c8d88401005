//! Smooth sensitivity of the data-dependent RDP of GNMax and of the threshold
//! step, and the Gaussian release of a data-dependent epsilon scaled to it
//! (Papernot et al. 2018, section 4 and appendix B; translated from the
//! reference's `research/pate_2018/smooth_sensitivity.py`).
//!
//! The reference caches `logq0` per `(sigma, order)` in a global dictionary;
//! here [`GnmaxSs`] holds `logq0` and `logq1` for one `(sigma, order,
//! num_classes)` so callers compute them once.
//!
//! One reference function is not translated: `compute_smooth_sensitivity_gnmax`
//! passes its arguments in the wrong order (a reference bug). Use
//! [`compute_local_sensitivity_bounds_gnmax`] then [`compute_discounted_max`].

use thiserror::Error;

use crate::confident::compute_rdp_threshold;
use crate::gnmax::compute_logq_gaussian;
use crate::optimize::{brentq, OptimizeError, BRENTQ_RTOL, BRENTQ_XTOL};
use crate::special::{chi2_1_isf, erfc, erfcinv, logaddexp, ndtri, norm_logsf};

/// Errors of the smooth-sensitivity analysis (the reference's assertions and
/// `ValueError`s).
#[derive(Debug, Clone, PartialEq, Error)]
pub enum SmoothSensitivityError {
    /// The natural upper bound on `q0` fails Theorem 6's validity conditions.
    #[error("the upper bound on log q0 ({0}) fails the validity conditions of Theorem 6")]
    UpperBoundInvalid(f64),
    /// No bracketing lower bound on `log q0` above -10000 was found.
    #[error("the lower bound on q0 is way too low (sigma = {sigma}, order = {order})")]
    LowerBoundTooLow {
        /// Noise.
        sigma: f64,
        /// Rényi order.
        order: f64,
    },
    /// Root finding failed.
    #[error("root finding for log q0 failed: {0}")]
    RootFinding(#[from] OptimizeError),
    /// The root fails Theorem 6's validity conditions.
    #[error("log q0 = {0} fails the validity conditions of Theorem 6")]
    RootInvalid(f64),
    /// `logq1 > logq0`, which the analysis assumes cannot happen.
    #[error("log q1 ({logq1}) exceeds log q0 ({logq0})")]
    Q1AboveQ0 {
        /// `ln q1`.
        logq1: f64,
        /// `ln q0`.
        logq0: f64,
    },
    /// The GNSS order is outside `(1, 1/(2 beta))`.
    #[error("order {order} outside the (1, 1/(2*beta)) range for beta = {beta}")]
    OrderOutOfRange {
        /// Rényi order.
        order: f64,
        /// Smoothness.
        beta: f64,
    },
}

/// `mu1, mu2` of Proposition 10.
fn mu1_mu2(sigma: f64, logq: f64) -> (f64, f64) {
    let mu2 = sigma * (-logq).sqrt();
    (mu2 + 1.0, mu2)
}

/// Theorem 6's bound without checking its preconditions (the reference's
/// `_compute_data_dep_bound_gnmax`; the caller compares `logq` with `logq0`).
pub fn compute_data_dep_bound_gnmax(sigma: f64, logq: f64, order: f64) -> f64 {
    let variance = sigma * sigma;
    let (mu1, mu2) = mu1_mu2(sigma, logq);
    let eps1 = mu1 / variance;
    let eps2 = mu2 / variance;
    let log1q = (-logq.exp()).ln_1p();
    let log_a = (order - 1.0) * (log1q - (-((logq + eps2) * (1.0 - 1.0 / mu2)).exp()).ln_1p());
    let log_b = (order - 1.0) * (eps1 - logq / (mu1 - 1.0));
    logaddexp(log1q + log_a, logq + log_b) / (order - 1.0)
}

/// The point `ln q0` above which the data-independent bound `order/sigma^2`
/// beats Theorem 6 (found by Brent's method, as the reference does).
pub fn compute_logq0_gnmax(sigma: f64, order: f64) -> Result<f64, SmoothSensitivityError> {
    let valid = |logq: f64| -> bool {
        let (mu1, mu2) = mu1_mu2(sigma, logq);
        if mu1 < order {
            return false;
        }
        let eps2 = mu2 / (sigma * sigma);
        logq <= (mu2 - 1.0) * eps2 - mu2 * (mu1 / (mu1 - 1.0) * mu2 / (mu2 - 1.0)).ln()
    };
    let ind = order / (sigma * sigma);
    let cmp = |logq: f64| compute_data_dep_bound_gnmax(sigma, logq, order) - ind;

    let logub = (-(1.0 + 1.0 / sigma).powi(2))
        .min(-((order - 0.99) / sigma).powi(2))
        .min(-1.0 / (sigma * sigma));
    if !valid(logub) {
        return Err(SmoothSensitivityError::UpperBoundInvalid(logub));
    }
    if cmp(logub) < 0.0 {
        return Ok(logub);
    }
    let mut loglb = 2.0 * logub;
    while cmp(loglb) > 0.0 {
        if loglb.is_nan() || loglb <= -10000.0 {
            return Err(SmoothSensitivityError::LowerBoundTooLow { sigma, order });
        }
        loglb *= 1.5;
    }
    let logq0 = brentq(cmp, loglb, logub, BRENTQ_XTOL, BRENTQ_RTOL, 100)?;
    if !valid(logq0) {
        return Err(SmoothSensitivityError::RootInvalid(logq0));
    }
    Ok(logq0)
}

/// Lower bound on `q` after one teacher changes its vote (Proposition 12):
/// `(m-1)/2 * erfc(1/sigma + erfcinv(2q/(m-1)))`.
pub fn compute_bl_gnmax(q: f64, sigma: f64, num_classes: usize) -> f64 {
    let m1 = (num_classes as f64) - 1.0;
    m1 / 2.0 * erfc(1.0 / sigma + erfcinv(2.0 * q / m1))
}

/// Upper bound on `q` after one teacher changes its vote:
/// `min(1, (m-1)/2 * erfc(-1/sigma + erfcinv(2q/(m-1))))`.
pub fn compute_bu_gnmax(q: f64, sigma: f64, num_classes: usize) -> f64 {
    let m1 = (num_classes as f64) - 1.0;
    let v = m1 / 2.0 * erfc(-1.0 / sigma + erfcinv(2.0 * q / m1));
    if v < 1.0 {
        v
    } else {
        1.0
    }
}

/// Python's two-argument `max` (returns the first unless the second is larger).
fn py_max(a: f64, b: f64) -> f64 {
    if b > a {
        b
    } else {
        a
    }
}

/// Smooth-sensitivity context of GNMax for one `(sigma, order, num_classes)`:
/// `ln q0` and `ln q1 = ln bl(q0)`, computed once.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct GnmaxSs {
    /// Noise of GNMax.
    pub sigma: f64,
    /// Rényi order.
    pub order: f64,
    /// Number of classes `m`.
    pub num_classes: usize,
    /// `ln q0` ([`compute_logq0_gnmax`]).
    pub logq0: f64,
    /// `ln q1 = ln bl(q0)`.
    pub logq1: f64,
}

impl GnmaxSs {
    /// Computes `ln q0` and `ln q1`.
    pub fn new(sigma: f64, order: f64, num_classes: usize) -> Result<Self, SmoothSensitivityError> {
        let logq0 = compute_logq0_gnmax(sigma, order)?;
        let logq1 = compute_bl_gnmax(logq0.exp(), sigma, num_classes).ln();
        if logq1.is_nan() || logq1 > logq0 {
            return Err(SmoothSensitivityError::Q1AboveQ0 { logq1, logq0 });
        }
        Ok(GnmaxSs {
            sigma,
            order,
            num_classes,
            logq0,
            logq1,
        })
    }

    /// RDP of GNMax at `logq` with the switch at `logq0` (the reference's
    /// `_compute_rdp_gnmax`).
    pub fn rdp(&self, logq: f64) -> f64 {
        if logq >= self.logq0 {
            self.order / (self.sigma * self.sigma)
        } else {
            compute_data_dep_bound_gnmax(self.sigma, logq, self.order)
        }
    }

    /// Upper bound on the local sensitivity of the RDP at `logq`
    /// (Algorithm 3, Proposition 13).
    pub fn local_sens(&self, logq: f64) -> f64 {
        let logq = if self.logq1 <= logq && logq <= self.logq0 {
            self.logq1
        } else {
            logq
        };
        let beta = self.rdp(logq);
        let q = logq.exp();
        let beta_bu = self.rdp(compute_bu_gnmax(q, self.sigma, self.num_classes).ln());
        let beta_bl = self.rdp(compute_bl_gnmax(q, self.sigma, self.num_classes).ln());
        py_max(beta_bu - beta, beta - beta_bl)
    }

    /// Max local sensitivity at distance `d` for `d = 0..num_teachers`
    /// (Algorithms 4 and 5 in `O(teachers * classes)`).
    pub fn local_sensitivity_bounds(&self, votes: &[f64], num_teachers: usize) -> Vec<f64> {
        let mut logq = compute_logq_gaussian(votes, self.sigma);
        let plateau = self.local_sens(self.logq1);
        let mut res = vec![plateau; num_teachers];
        if (self.logq1 <= logq && logq <= self.logq0) || num_teachers == 0 || votes.len() < 2 {
            return res;
        }
        let mut v = votes.to_vec();
        v.sort_by(|a, b| b.total_cmp(a));
        res[0] = self.local_sens(logq);
        let mut d = 0usize;
        let go_left = logq > self.logq0;
        while (go_left && logq > self.logq0 && v[1] > 0.0) || (!go_left && logq < self.logq1) {
            d += 1;
            if d >= num_teachers {
                break;
            }
            if go_left {
                v[0] += 1.0;
                v[1] -= 1.0;
                let mut idx = 1;
                while idx < v.len() - 1 && v[idx] < v[idx + 1] {
                    v.swap(idx, idx + 1);
                    idx += 1;
                }
            } else {
                v[0] -= 1.0;
                v[1] += 1.0;
            }
            logq = compute_logq_gaussian(&v, self.sigma);
            res[d] = self.local_sens(logq);
        }
        res
    }
}

/// Max local sensitivity at distance `d`, `0 <= d < num_teachers`, of the
/// GNMax RDP (the reference's `compute_local_sensitivity_bounds_gnmax`).
pub fn compute_local_sensitivity_bounds_gnmax(
    votes: &[f64],
    num_teachers: usize,
    sigma: f64,
    order: f64,
) -> Result<Vec<f64>, SmoothSensitivityError> {
    Ok(GnmaxSs::new(sigma, order, votes.len())?.local_sensitivity_bounds(votes, num_teachers))
}

/// RDP of the threshold step for every possible top count `v = 0..=n`
/// (the reference's `_compute_rdp_list_threshold`).
pub fn threshold_rdp_list(num_teachers: usize, threshold: f64, sigma: f64, order: f64) -> Vec<f64> {
    (0..=num_teachers)
        .map(|v| {
            let logp = norm_logsf(threshold - v as f64, sigma);
            compute_rdp_threshold(logp, sigma, &[order])[0]
        })
        .collect()
}

/// Max local sensitivity at distance `d` of the threshold step's RDP, from a
/// precomputed [`threshold_rdp_list`].
pub fn threshold_ls_from_list(counts: &[f64], rdp_list: &[f64]) -> Vec<f64> {
    let n = rdp_list.len().saturating_sub(1);
    let ls_at = |v: usize| -> f64 {
        let down = (v > 0).then(|| (rdp_list[v - 1] - rdp_list[v]).abs());
        let up = (v < n).then(|| (rdp_list[v + 1] - rdp_list[v]).abs());
        max_present(down, up)
    };
    let max = counts.iter().copied().fold(f64::NEG_INFINITY, f64::max);
    let cur_max = if max.is_finite() {
        max.round_ties_even().clamp(0.0, n as f64) as usize
    } else {
        0
    };
    let mut ls = vec![0.0; n];
    for (d, slot) in ls.iter_mut().enumerate().take(cur_max.max(n - cur_max)) {
        let up = (cur_max + d <= n).then(|| ls_at(cur_max + d));
        let down = (cur_max >= d).then(|| ls_at(cur_max - d));
        *slot = max_present(up, down);
    }
    ls
}

/// `max` over the values that are present (the reference relies on Python
/// 2's `max(x, None) = x`); 0 if none is.
fn max_present(a: Option<f64>, b: Option<f64>) -> f64 {
    match (a, b) {
        (Some(x), Some(y)) => py_max(x, y),
        (Some(x), None) | (None, Some(x)) => x,
        (None, None) => 0.0,
    }
}

/// Max local sensitivity at distance `d` of the threshold step's RDP (the
/// reference's `compute_local_sensitivity_bounds_threshold`).
pub fn compute_local_sensitivity_bounds_threshold(
    counts: &[f64],
    num_teachers: usize,
    threshold: f64,
    sigma: f64,
    order: f64,
) -> Vec<f64> {
    threshold_ls_from_list(counts, &threshold_rdp_list(num_teachers, threshold, sigma, order))
}

/// `max_d ls[d] * exp(-beta d)`: the beta-smooth sensitivity from local
/// sensitivities at distance `d`. 0 for an empty slice.
pub fn compute_discounted_max(beta: f64, ls: &[f64]) -> f64 {
    let mut best = f64::NEG_INFINITY;
    for (d, &x) in ls.iter().enumerate() {
        let v = x * (-beta * d as f64).exp();
        if v > best {
            best = v;
        }
    }
    if ls.is_empty() {
        0.0
    } else {
        best
    }
}

/// RDP of the Gaussian noise with smooth sensitivity (GNSS) mechanism
/// (Theorem 23): `order e^{2 beta} / sigma^2 + (-ln(1 - 2 order beta)/2 +
/// beta order) / (order - 1)`, for `1 < order < 1/(2 beta)`.
pub fn compute_rdp_of_smooth_sensitivity_gaussian(
    beta: f64,
    sigma: f64,
    order: f64,
) -> Result<f64, SmoothSensitivityError> {
    if beta > 0.0 && !(1.0 < order && order < 1.0 / (2.0 * beta)) {
        return Err(SmoothSensitivityError::OrderOutOfRange { order, beta });
    }
    Ok(order * (2.0 * beta).exp() / (sigma * sigma)
        + (-0.5 * (1.0 - 2.0 * order * beta).ln() + beta * order) / (order - 1.0))
}

/// `(alpha, beta)` for releasing a value with Gaussian noise scaled to its
/// beta-smooth sensitivity under `(eps, delta)`-DP (Lemmas 2.6 and 2.10 of
/// Nissim, Raskhodnikova and Smith; the reference's
/// `compute_params_for_ss_release`).
pub fn compute_params_for_ss_release(eps: f64, delta: f64) -> (f64, f64) {
    let a = ndtri(1.0 - delta / 2.0);
    let alpha = (a * a + eps / 2.0).sqrt() - a;
    let beta = eps / (2.0 * chi2_1_isf(delta / 2.0));
    (alpha, beta)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn gnss_rdp_beta_zero_is_gaussian() {
        // beta = 0: order / sigma^2.
        let r = compute_rdp_of_smooth_sensitivity_gaussian(0.0, 5.0, 10.0).expect("in range");
        assert!((r - 0.4).abs() < 1e-15);
        assert!(compute_rdp_of_smooth_sensitivity_gaussian(0.1, 5.0, 10.0).is_err());
    }

    #[test]
    fn bl_le_q_le_bu() {
        for &q in &[1e-20, 1e-5, 0.1, 0.4] {
            let bl = compute_bl_gnmax(q, 40.0, 10);
            let bu = compute_bu_gnmax(q, 40.0, 10);
            assert!(bl < q && q < bu, "q={q} bl={bl} bu={bu}");
        }
    }

    #[test]
    fn discounted_max_by_hand() {
        let ls = [1.0, 3.0, 3.0];
        let v = compute_discounted_max(0.5, &ls);
        assert!((v - 3.0 * (-0.5f64).exp()).abs() < 1e-15);
        assert_eq!(compute_discounted_max(0.5, &[]), 0.0);
    }

    #[test]
    fn threshold_ls_handles_ends() {
        // cur_max at num_teachers: only the step down exists.
        let ls = compute_local_sensitivity_bounds_threshold(&[30.0, 0.0], 30, 16.0, 2.0, 10.0);
        assert_eq!(ls.len(), 30);
        assert!(ls.iter().all(|x| x.is_finite() && *x >= 0.0));
    }
}
