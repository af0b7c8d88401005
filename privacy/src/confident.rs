//! Confident-GNMax accounting (Papernot et al. 2018, Algorithm 1): a noisy
//! threshold test on the top vote count (step 1, Gaussian noise `sigma1`),
//! then GNMax (step 2, noise `sigma2`) only if the test passes.
//!
//! Step 1 has sensitivity 1 (one teacher moves the maximum by at most one),
//! half of GNMax's L2 sensitivity `sqrt(2)`, so its RDP is that of GNMax with
//! noise `sqrt(2) * sigma1`. Translated from the reference's
//! `compute_logpr_answered`, `compute_rdp_threshold`,
//! `compute_rdp_data_independent_threshold` and
//! `is_data_independent_always_opt_threshold`.
//!
//! Totals: the realized cost when it is known which queries were answered
//! (`rdp1 + rdp2` or `rdp1`), the expected cost otherwise
//! (`rdp1 + Pr[answered] * rdp2`, as the reference's `_compute_rdp`).

use std::f64::consts::SQRT_2;

use serde::{Deserialize, Serialize};

use crate::gnmax::{add_rdp_gaussian, compute_logq_gaussian, np_isclose, rdp_data_independent_gaussian, rdp_gaussian};
use crate::special::{log1mexp, norm_logsf};

/// `ln Pr[max(counts) + N(0, sigma^2) >= t]`, with `max(counts)` rounded to the
/// nearest integer, ties to even (the reference rounds with Python's `round`;
/// this matters only for fractional counts). An empty histogram counts as a
/// maximum of 0.
pub fn compute_logpr_answered(t: f64, sigma: f64, counts: &[f64]) -> f64 {
    let max = counts.iter().copied().fold(f64::NEG_INFINITY, f64::max);
    let max = if max.is_finite() { max.round_ties_even() } else { 0.0 };
    norm_logsf(t - max, sigma)
}

/// Data-independent RDP of the threshold step: `order / (2 sigma^2)`,
/// computed as the reference does, via GNMax with `sqrt(2) * sigma`.
pub fn compute_rdp_data_independent_threshold(sigma: f64, orders: &[f64]) -> Vec<f64> {
    rdp_data_independent_gaussian(SQRT_2 * sigma, orders)
}

/// The `logq` fed to Theorem 6 for the threshold step: the less likely of
/// the two outcomes, `min(ln p, ln(1 - p))`.
pub fn threshold_logq(log_pr_answered: f64) -> f64 {
    let other = log1mexp(log_pr_answered);
    if other < log_pr_answered {
        other
    } else {
        log_pr_answered
    }
}

/// Data-dependent RDP of the threshold step given `ln Pr[answered]`.
pub fn compute_rdp_threshold(log_pr_answered: f64, sigma: f64, orders: &[f64]) -> Vec<f64> {
    rdp_gaussian(threshold_logq(log_pr_answered), SQRT_2 * sigma, orders)
}

/// Whether the data-independent bound for the threshold step is always
/// optimal at each order (both extremes, `max(votes) = 0` and
/// `max(votes) = num_teachers`, gain nothing; NumPy `isclose`).
pub fn is_data_independent_always_opt_threshold(
    num_teachers: usize,
    threshold: f64,
    sigma: f64,
    orders: &[f64],
) -> Vec<bool> {
    let l1 = compute_logpr_answered(threshold, sigma, &[0.0]);
    let l2 = compute_logpr_answered(threshold, sigma, &[num_teachers as f64]);
    let d1 = compute_rdp_threshold(l1, sigma, orders);
    let d2 = compute_rdp_threshold(l2, sigma, orders);
    let ind = compute_rdp_data_independent_threshold(sigma, orders);
    (0..orders.len())
        .map(|i| np_isclose(d1[i], ind[i]) && np_isclose(d2[i], ind[i]))
        .collect()
}

/// Per-query parts of the Confident-GNMax cost.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ConfidentQuery {
    /// `ln Pr[answered]` (step 1 passes).
    pub log_pr_answered: f64,
    /// RDP of step 1 per order.
    pub rdp_step1: Vec<f64>,
    /// `ln q` of step 2 (GNMax).
    pub logq_step2: f64,
    /// RDP of step 2 per order (paid only if answered).
    pub rdp_step2: Vec<f64>,
}

/// Computes both steps' data-dependent RDP for one histogram.
pub fn confident_query(votes: &[f64], threshold: f64, sigma1: f64, sigma2: f64, orders: &[f64]) -> ConfidentQuery {
    let lpa = compute_logpr_answered(threshold, sigma1, votes);
    let logq2 = compute_logq_gaussian(votes, sigma2);
    ConfidentQuery {
        log_pr_answered: lpa,
        rdp_step1: compute_rdp_threshold(lpa, sigma1, orders),
        logq_step2: logq2,
        rdp_step2: rdp_gaussian(logq2, sigma2, orders),
    }
}

/// Per-set totals of Confident GNMax.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ConfidentTotals {
    /// Sum of the step-1 RDP per order.
    pub rdp_step1_total: Vec<f64>,
    /// Total RDP per order (expected or realized cost).
    pub rdp_total: Vec<f64>,
    /// Expected number of answered queries, `sum Pr[answered]`.
    pub expected_answered: f64,
}

/// How step 2 is charged in [`confident_totals`].
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Step2Charge<'a> {
    /// `Pr[answered] * rdp2` (expected cost; the reference's `_compute_rdp`).
    Expected,
    /// `rdp2` for the queries marked answered, 0 for the others.
    Realized(&'a [bool]),
}

/// Sums the data-dependent Confident-GNMax RDP over a set of histograms.
/// With [`Step2Charge::Realized`], queries past the end of the slice are
/// charged the expected cost.
pub fn confident_totals<V: AsRef<[f64]>>(
    votes: &[V],
    threshold: f64,
    sigma1: f64,
    sigma2: f64,
    orders: &[f64],
    charge: Step2Charge<'_>,
) -> ConfidentTotals {
    let mut step1 = vec![0.0; orders.len()];
    let mut total = vec![0.0; orders.len()];
    let mut answered = 0.0;
    let mut rdp1 = vec![0.0; orders.len()];
    for (i, v) in votes.iter().enumerate() {
        let v = v.as_ref();
        let lpa = compute_logpr_answered(threshold, sigma1, v);
        let p = lpa.exp();
        let weight = match charge {
            Step2Charge::Realized(a) => a.get(i).map_or(p, |&b| if b { 1.0 } else { 0.0 }),
            Step2Charge::Expected => p,
        };
        rdp1.iter_mut().for_each(|x| *x = 0.0);
        add_rdp_gaussian(&mut rdp1, threshold_logq(lpa), SQRT_2 * sigma1, orders, 1.0);
        for j in 0..orders.len() {
            step1[j] += rdp1[j];
        }
        // rdp = rdp1 + rdp2 * weight, summed in that order as the reference does.
        let logq2 = compute_logq_gaussian(v, sigma2);
        let rdp2 = rdp_gaussian(logq2, sigma2, orders);
        for j in 0..orders.len() {
            total[j] += rdp1[j] + rdp2[j] * weight;
        }
        answered += p;
    }
    ConfidentTotals {
        rdp_step1_total: step1,
        rdp_total: total,
        expected_answered: answered,
    }
}

/// The reference's `data_independent=True` totals: both steps' curves
/// replaced by their data-independent bounds, but step 2 still weighted by
/// the data-dependent `Pr[answered]` (a reference quirk: the weight itself
/// depends on the data). Kept for comparison with the reference only; a true
/// data-independent bound is `Q * (rdp1_ind + rdp2_ind)`
/// ([`crate::mechanism::data_independent_rdp`] per query).
pub fn confident_totals_reference_data_independent<V: AsRef<[f64]>>(
    votes: &[V],
    threshold: f64,
    sigma1: f64,
    sigma2: f64,
    orders: &[f64],
) -> ConfidentTotals {
    let ind1 = compute_rdp_data_independent_threshold(sigma1, orders);
    let ind2 = rdp_data_independent_gaussian(sigma2, orders);
    let mut step1 = vec![0.0; orders.len()];
    let mut total = vec![0.0; orders.len()];
    let mut answered = 0.0;
    for v in votes {
        let p = compute_logpr_answered(threshold, sigma1, v.as_ref()).exp();
        for j in 0..orders.len() {
            step1[j] += ind1[j];
            total[j] += ind1[j] + ind2[j] * p;
        }
        answered += p;
    }
    ConfidentTotals {
        rdp_step1_total: step1,
        rdp_total: total,
        expected_answered: answered,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_half_to_even() {
        // max 200.5 rounds to 200, 201.5 to 202.
        let a = compute_logpr_answered(200.0, 10.0, &[200.5, 3.0]);
        assert!((a - 0.5f64.ln()).abs() < 1e-15);
        let b = compute_logpr_answered(202.0, 10.0, &[201.5]);
        assert!((b - 0.5f64.ln()).abs() < 1e-15);
    }

    #[test]
    fn threshold_data_independent_by_hand() {
        let r = compute_rdp_data_independent_threshold(150.0, &[45.0]);
        assert!((r[0] - 45.0 / (2.0 * 150.0 * 150.0)).abs() < 1e-18);
    }

    #[test]
    fn realized_between_step1_and_full() {
        let votes = vec![vec![240.0, 10.0, 0.0], vec![100.0, 90.0, 60.0]];
        let o = crate::orders::short_orders();
        let none = confident_totals(&votes, 200.0, 150.0, 40.0, &o, Step2Charge::Realized(&[false, false]));
        let all = confident_totals(&votes, 200.0, 150.0, 40.0, &o, Step2Charge::Realized(&[true, true]));
        let exp = confident_totals(&votes, 200.0, 150.0, 40.0, &o, Step2Charge::Expected);
        for j in 0..o.len() {
            assert_eq!(none.rdp_total[j], none.rdp_step1_total[j]);
            assert!(none.rdp_total[j] <= exp.rdp_total[j] && exp.rdp_total[j] <= all.rdp_total[j]);
        }
    }
}
