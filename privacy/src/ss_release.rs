//! Parameters for releasing a data-dependent epsilon with the Gaussian noise
//! with smooth sensitivity (GNSS) mechanism: the Table-2 procedure of the
//! 2018 paper (the reference's `ICLR2018/smooth_sensitivity_table.py`).
//!
//! Steps, as in the reference's `main()`:
//! 1. pick the order that minimises the expected data-dependent epsilon over
//!    the default orders ([`optimal_order`], the reference's `_compute_rdp`);
//! 2. at that order, decide whether each step is data-independent anyway
//!    ([`is_data_ind_step1`], [`is_data_ind_step2`]); if both are, there is
//!    nothing to release;
//! 3. check conditions C5 and C6 ([`crate::conditions::check_conditions`]);
//!    the reference stops if they fail;
//! 4. accumulate the expected RDP and expected local sensitivities over the
//!    queries and search a grid of `beta` for the smallest
//!    `rdp + cost of GNSS + 2 * ss * sigma_ss`
//!    ([`find_optimal_smooth_sensitivity_parameters`]).
//!
//! The interactive (baseline) variant of the reference is not included:
//! PATE's aggregator here always runs with a zero baseline.

use serde::{Deserialize, Serialize};
use thiserror::Error;

use crate::confident::{compute_logpr_answered, compute_rdp_data_independent_threshold, compute_rdp_threshold};
use crate::confident::{confident_totals, is_data_independent_always_opt_threshold, Step2Charge};
use crate::gnmax::rdp_gaussian_at;
use crate::gnmax::{compute_logq_gaussian, is_data_independent_always_opt_gaussian, rdp_data_independent_gaussian};
use crate::orders::arange;
use crate::rdp::{eps_from_rdp, Conversion};
use crate::smooth_sensitivity::{
    compute_discounted_max, compute_rdp_of_smooth_sensitivity_gaussian, threshold_ls_from_list, threshold_rdp_list,
    GnmaxSs, SmoothSensitivityError,
};

/// Errors of the smooth-sensitivity release search.
#[derive(Debug, Clone, PartialEq, Error)]
pub enum SsReleaseError {
    /// An error of the smooth-sensitivity analysis.
    #[error(transparent)]
    SmoothSensitivity(#[from] SmoothSensitivityError),
    /// No `beta` on the grid gave a finite cost (for example a smooth
    /// sensitivity of zero).
    #[error("no beta on the grid gives a finite cost")]
    NoFiniteCost,
    /// There are no queries.
    #[error("no queries to analyze")]
    NoQueries,
}

/// The threshold step of Confident GNMax: `(threshold, sigma1)`.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct ThresholdStep {
    /// The threshold `T`.
    pub threshold: f64,
    /// The noise `sigma1` of the threshold test.
    pub sigma1: f64,
}

/// The order minimising the (expected) data-dependent epsilon of GNMax or
/// Confident GNMax over `orders` (the reference's `_compute_rdp`).
pub fn optimal_order<V: AsRef<[f64]>>(
    votes: &[V],
    step1: Option<ThresholdStep>,
    sigma2: f64,
    delta: f64,
    orders: &[f64],
) -> f64 {
    let total = match step1 {
        Some(t) => confident_totals(votes, t.threshold, t.sigma1, sigma2, orders, Step2Charge::Expected).rdp_total,
        None => {
            let mut total = vec![0.0; orders.len()];
            for v in votes {
                crate::gnmax::add_rdp_gaussian(
                    &mut total,
                    compute_logq_gaussian(v.as_ref(), sigma2),
                    sigma2,
                    orders,
                    1.0,
                );
            }
            total
        }
    };
    eps_from_rdp(&total, orders, delta, Conversion::Classic).order
}

/// Whether step 1 (the threshold) is data-independent at `order` (always
/// true without a threshold step).
pub fn is_data_ind_step1(num_teachers: usize, step1: Option<ThresholdStep>, order: f64) -> bool {
    match step1 {
        None => true,
        Some(t) => is_data_independent_always_opt_threshold(num_teachers, t.threshold, t.sigma1, &[order])
            .into_iter()
            .all(|b| b),
    }
}

/// Whether step 2 (GNMax) is data-independent at `order`.
pub fn is_data_ind_step2(num_teachers: usize, num_classes: usize, sigma2: f64, order: f64) -> bool {
    is_data_independent_always_opt_gaussian(num_teachers, num_classes, sigma2, &[order])
        .into_iter()
        .all(|b| b)
}

/// Result of the smooth-sensitivity parameter search at one order.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SsParams {
    /// The Rényi order used.
    pub order: f64,
    /// The `beta` grid searched.
    pub beta_grid: Vec<f64>,
    /// The best `beta` (0 when both steps are data-independent).
    pub beta_opt: f64,
    /// The (expected) beta-smooth sensitivity of the RDP at `beta_opt`.
    pub ss_opt: f64,
    /// The GNSS noise multiplier: the released value gets
    /// `N(0, (ss * sigma_ss)^2)` noise.
    pub sigma_ss_opt: f64,
    /// Expected number of answered queries.
    pub expected_answered: f64,
    /// The (expected) data-dependent RDP at `order`.
    pub rdp_at_order: f64,
    /// `rdp + ln(1/delta)/(order - 1)`.
    pub eps_before_ss: f64,
    /// `eps_before_ss` plus the RDP of the GNSS release.
    pub eps_with_ss: f64,
    /// Standard deviation of the noise on the released epsilon,
    /// `ss_opt * sigma_ss_opt`.
    pub noise_std_of_released_eps: f64,
}

/// Searches `beta` for the GNSS release of the data-dependent RDP at `order`
/// (the reference's `_find_optimal_smooth_sensitivity_parameters`).
///
/// `answered`, when given, charges step 2 with the realized outcome (1 or 0)
/// instead of `Pr[answered]`, for both the RDP and the local sensitivities.
#[allow(clippy::too_many_arguments)]
pub fn find_optimal_smooth_sensitivity_parameters<V: AsRef<[f64]>>(
    votes: &[V],
    num_teachers: usize,
    step1: Option<ThresholdStep>,
    sigma2: f64,
    delta: f64,
    ind_step1: bool,
    ind_step2: bool,
    order: f64,
    answered: Option<&[bool]>,
) -> Result<SsParams, SsReleaseError> {
    let num_classes = votes
        .first()
        .map(|v| v.as_ref().len())
        .ok_or(SsReleaseError::NoQueries)?;
    let betas = arange(0.3 / order, 0.495 / order, 0.01 / order);
    let cost_delta = (1.0 / delta).ln() / (order - 1.0);

    let gn = if ind_step2 {
        None
    } else {
        Some(GnmaxSs::new(sigma2, order, num_classes)?)
    };
    let th_list = match step1 {
        Some(t) if !ind_step1 => Some(threshold_rdp_list(num_teachers, t.threshold, t.sigma1, order)),
        _ => None,
    };
    let rdp1_ind = step1.map(|t| compute_rdp_data_independent_threshold(t.sigma1, &[order])[0]);
    let rdp2_ind = rdp_data_independent_gaussian(sigma2, &[order])[0];

    let mut rdp_cum = 0.0;
    let mut answered_cum = 0.0;
    let mut ls_cum = vec![0.0; num_teachers];
    for (i, v) in votes.iter().enumerate() {
        let v = v.as_ref();
        let (log_pr_answered, rdp1) = match step1 {
            None => (0.0, 0.0),
            Some(t) => {
                let lpa = compute_logpr_answered(t.threshold, t.sigma1, v);
                let rdp1 = match (ind_step1, rdp1_ind) {
                    (true, Some(r)) => r,
                    _ => compute_rdp_threshold(lpa, t.sigma1, &[order])[0],
                };
                (lpa, rdp1)
            }
        };
        let pr_answered = log_pr_answered.exp();
        answered_cum += pr_answered;
        let weight = match answered.and_then(|a| a.get(i)) {
            Some(&true) => 1.0,
            Some(&false) => 0.0,
            None => pr_answered,
        };
        let rdp2 = match gn {
            None => rdp2_ind,
            Some(_) => rdp_gaussian_at(compute_logq_gaussian(v, sigma2), sigma2, order),
        };
        rdp_cum += rdp1 + weight * rdp2;

        let ls1 = th_list.as_ref().map(|list| threshold_ls_from_list(v, list));
        let ls2 = gn.map(|g| g.local_sensitivity_bounds(v, num_teachers));
        for (d, slot) in ls_cum.iter_mut().enumerate() {
            let a = ls1.as_ref().map_or(0.0, |l| l[d]);
            let b = ls2.as_ref().map_or(0.0, |l| l[d]);
            *slot += a + weight * b;
        }
    }

    let (beta_opt, ss_opt, sigma_ss_opt) = if ind_step1 && ind_step2 {
        (0.0, 0.0, f64::INFINITY)
    } else {
        let mut best: Option<(f64, f64, f64, f64)> = None;
        for &beta in &betas {
            let ss = compute_discounted_max(beta, &ls_cum);
            let sigma_ss = ((order * (2.0 * beta).exp()) / ss).powf(1.0 / 3.0);
            let cost_ss = compute_rdp_of_smooth_sensitivity_gaussian(beta, sigma_ss, order)?;
            let cost = rdp_cum + cost_ss + 2.0 * ss * sigma_ss;
            if best.is_none_or(|b| cost < b.0) && !cost.is_nan() {
                best = Some((cost, beta, ss, sigma_ss));
            }
        }
        let (_, b, s, sg) = best.ok_or(SsReleaseError::NoFiniteCost)?;
        (b, s, sg)
    };
    let eps_before_ss = rdp_cum + cost_delta;
    let eps_with_ss = eps_before_ss + compute_rdp_of_smooth_sensitivity_gaussian(beta_opt, sigma_ss_opt, order)?;
    Ok(SsParams {
        order,
        beta_grid: betas,
        beta_opt,
        ss_opt,
        sigma_ss_opt,
        expected_answered: answered_cum,
        rdp_at_order: rdp_cum,
        eps_before_ss,
        eps_with_ss,
        noise_std_of_released_eps: ss_opt * sigma_ss_opt,
    })
}

/// Full smooth-sensitivity release analysis of a set of queries.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SsRelease {
    /// The order chosen by minimising the expected data-dependent epsilon.
    pub order: f64,
    /// Step 1 is data-independent at that order.
    pub data_ind_step1: bool,
    /// Step 2 is data-independent at that order.
    pub data_ind_step2: bool,
    /// Conditions C5 and C6 hold (`None` when not checked because both steps
    /// are data-independent). The reference stops when they fail; we still
    /// report the parameters, flagged.
    pub conditions_c5_c6_hold: Option<bool>,
    /// The search result (`None` when both steps are data-independent:
    /// nothing data-dependent to release).
    pub params: Option<SsParams>,
}

/// Runs the whole Table-2 procedure (see the module docs).
pub fn analyze_ss_release<V: AsRef<[f64]>>(
    votes: &[V],
    num_teachers: usize,
    step1: Option<ThresholdStep>,
    sigma2: f64,
    delta: f64,
    orders: &[f64],
    answered: Option<&[bool]>,
) -> Result<SsRelease, SsReleaseError> {
    let num_classes = votes
        .first()
        .map(|v| v.as_ref().len())
        .ok_or(SsReleaseError::NoQueries)?;
    let order = optimal_order(votes, step1, sigma2, delta, orders);
    let ind1 = is_data_ind_step1(num_teachers, step1, order);
    let ind2 = is_data_ind_step2(num_teachers, num_classes, sigma2, order);
    if ind1 && ind2 {
        return Ok(SsRelease {
            order,
            data_ind_step1: ind1,
            data_ind_step2: ind2,
            conditions_c5_c6_hold: None,
            params: None,
        });
    }
    let c = crate::conditions::check_conditions(sigma2, num_classes, order)?;
    let params = find_optimal_smooth_sensitivity_parameters(
        votes,
        num_teachers,
        step1,
        sigma2,
        delta,
        ind1,
        ind2,
        order,
        answered,
    )?;
    Ok(SsRelease {
        order,
        data_ind_step1: ind1,
        data_ind_step2: ind2,
        conditions_c5_c6_hold: Some(c.cond5 && c.cond6),
        params: Some(params),
    })
}
