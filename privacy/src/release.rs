//! Releasing the data-dependent epsilon of a run with smooth sensitivity
//! (Papernot et al. 2018, section 4 and appendices B and C: the Gaussian
//! noise with smooth sensitivity, GNSS, mechanism), for GNMax and
//! Confident-GNMax with the integer noise the aggregator actually draws.
//!
//! The data-dependent epsilon depends on the votes, so publishing it exactly
//! leaks. Instead, at one Rényi order `lambda` (the one minimising the
//! data-dependent epsilon, as the reference does), the data-dependent RDP
//! total `f(D) = sum_i rdp_i(D)` is released as
//! `f(D) + SS_beta(D) * sigma_ss * N(0, 1)`, where `SS_beta` is a
//! beta-smooth upper bound on its local sensitivity. That release is itself
//! RDP at `lambda` with cost `c = lambda e^{2 beta} / sigma_ss^2 +
//! (beta lambda - ln(1 - 2 lambda beta) / 2) / (lambda - 1)` (Theorem 23),
//! which composes with the answers at the same order, so the released
//! epsilon is
//!
//! ```text
//! epsilon_released = f(D) + SS * sigma_ss * Z + c + ln(1/delta) / (lambda - 1)
//! ```
//!
//! with `beta` and `sigma_ss` chosen on the reference's grid to minimise
//! `f + c + 2 SS sigma_ss` ([`release_params`]); [`draw_released`] draws it.
//!
//! Local sensitivities. The threshold step's RDP depends on the top count
//! only, which moves by at most one per changed teacher: its local
//! sensitivity at distance `d` is exact
//! ([`crate::smooth_sensitivity::threshold_ls_from_list`], on the list of
//! its RDP for every top count, computed with the discrete `q`). For the
//! GNMax step the reference's bounds (`bl`, `bu`, Proposition 12) are
//! derived for the continuous `q`, so they are not reused. Instead, with
//! `k_j` the thresholds of the union bound
//! ([`crate::discrete::effective_gaps`]) and `Q(k) = sum_j Pr[D >= k_j]`:
//! one changed teacher moves every `k_j` by at most 2, so on every histogram
//! within distance `d` (same first arg-max, guaranteed while
//! `min_j k_j - 2(d + 1) >= 1`) `ln q` lies in `[ln Q(k + 2d), ln Q(k - 2d)]`,
//! and one more step changes it by at most
//! `max_j ln Pr[D >= x_j - 2] - ln Pr[D >= x_j]` at `x_j = k_j + 2d` (the
//! tails of the log-concave `D` are log-concave, so that ratio grows with
//! the gap), likewise downwards. The RDP is non-decreasing in `q`
//! (`rdp_is_monotone_in_q` in the tests), so its largest one-step change
//! over that interval is bounded on a grid of `ln q` (step 0.05, rounding
//! outwards). Once the arg-max may change the whole data-independent bound
//! is taken. Like the paper's Algorithm 3 this bounds the local
//! sensitivity at distance `d` by the worst one-step change on the ball;
//! it is somewhat looser (a box of gaps instead of the worst path), which
//! only makes the release noisier, never unsound.

use opendp::domains::AtomDomain;
use opendp::measurements::make_gaussian;
use opendp::metrics::AbsoluteDistance;
use serde::{Deserialize, Serialize};

use crate::discrete::{effective_gaps, logq_from_gaps, threshold_logq, DiscreteNoise};
use crate::gnmax::rdp_gaussian_at;
use crate::mechanism::{data_dependent_rdp_with, Mechanism, NoiseModel};
use crate::orders::arange;
use crate::smooth_sensitivity::{
    compute_discounted_max, compute_rdp_of_smooth_sensitivity_gaussian, threshold_ls_from_list, SmoothSensitivityError,
};

/// Why a release could not be computed or drawn.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum ReleaseError {
    /// Only GNMax and Confident-GNMax have a smooth-sensitivity analysis.
    #[error("no smooth-sensitivity release for {0}; use the data-independent epsilon")]
    Unsupported(&'static str),
    /// Nothing to release.
    #[error("no queries to release an epsilon for")]
    NoQueries,
    /// Delta outside (0, 1).
    #[error("delta must be in (0, 1), got {0}")]
    BadDelta(f64),
    /// `answered` has the wrong length.
    #[error("answered flags: {got} for {queries} queries")]
    BadAnswered {
        /// Flags given.
        got: usize,
        /// Queries.
        queries: usize,
    },
    /// The GNSS cost could not be computed.
    #[error(transparent)]
    SmoothSensitivity(#[from] SmoothSensitivityError),
    /// No beta on the grid gives a finite cost.
    #[error("no beta on the grid gives a finite cost")]
    NoFiniteCost,
    /// OpenDP could not draw the noise.
    #[error("opendp: {0}")]
    OpenDp(String),
}

/// The parameters of one GNSS release of a run's data-dependent epsilon.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ReleaseParams {
    /// The Rényi order `lambda`.
    pub order: f64,
    /// Smoothness `beta`.
    pub beta: f64,
    /// The beta-smooth sensitivity `SS` of the data-dependent RDP total.
    pub smooth_sensitivity: f64,
    /// The GNSS noise multiplier `sigma_ss`.
    pub sigma_ss: f64,
    /// Data-dependent RDP total at `order` (not to be published).
    pub rdp_data_dependent: f64,
    /// `rdp + ln(1/delta)/(order - 1)`: the data-dependent epsilon at this order (not to be published).
    pub epsilon_data_dependent: f64,
    /// RDP cost of the release itself at `order`.
    pub release_cost: f64,
    /// `epsilon_data_dependent + release_cost`: the mean of the released epsilon.
    pub mean: f64,
    /// `SS * sigma_ss`: standard deviation of the released epsilon.
    pub noise_std: f64,
    /// Delta.
    pub delta: f64,
}

/// The GNMax RDP at one order on a grid of `ln q` (capped at `1 - 1/m`),
/// for bounds on its largest change over an interval that use nothing but
/// its monotonicity in `q`.
struct RdpGrid {
    y0: f64,
    step: f64,
    rdp: Vec<f64>,
}

impl RdpGrid {
    fn new(sigma: f64, order: f64, classes: usize) -> Self {
        let (y0, step) = (-80.0, 0.05);
        let cap = (1.0 - 1.0 / classes as f64).ln();
        let rdp = (0..=1600)
            .map(|i| rdp_gaussian_at((y0 + i as f64 * step).min(cap), sigma, order))
            .collect();
        RdpGrid { y0, step, rdp }
    }

    /// The RDP at grid point `i`: 0 (a lower bound) below the grid, the
    /// capped value above it.
    fn at(&self, i: i64) -> f64 {
        if i < 0 {
            0.0
        } else {
            self.rdp[(i as usize).min(self.rdp.len() - 1)]
        }
    }

    fn cell(&self, y: f64) -> i64 {
        ((y - self.y0) / self.step).floor() as i64
    }

    /// At least `max over y in [lo, hi] of rdp(y + a) - rdp(y)`, `a >= 0`:
    /// on the cell `[y_i, y_i+1]` it is at most `rdp(y_i+1 + a) - rdp(y_i)`.
    fn max_rise(&self, lo: f64, hi: f64, a: f64) -> f64 {
        let s = 1 + (a / self.step).ceil() as i64;
        let (first, last) = (self.cell(lo), self.cell(hi));
        // Below the grid: rdp(y + a) - rdp(y) <= rdp(y0 + a).
        let mut best = if first < 0 { self.at(s) } else { 0.0 };
        for i in first.max(0)..=last.max(0) {
            best = best.max(self.at(i + s) - self.at(i));
        }
        best
    }

    /// At least `max over y in [lo, hi] of rdp(y) - rdp(y - b)`, `b >= 0`.
    fn max_drop(&self, lo: f64, hi: f64, b: f64) -> f64 {
        let s = (b / self.step).ceil() as i64;
        let (first, last) = (self.cell(lo), self.cell(hi));
        let mut best = if first < 0 { self.at(0) } else { 0.0 };
        for i in first.max(0)..=last.max(0) {
            best = best.max(self.at(i + 1) - self.at(i - s));
        }
        best
    }
}

/// Per-query data-dependent RDP at `order` and local sensitivities at
/// distances `0..num_teachers` (see the module docs).
/// `threshold_list` is the threshold step's RDP at `order` for every top
/// count `0..=num_teachers` (Confident-GNMax only).
fn query_rdp_and_ls(
    m: &Mechanism,
    votes: &[f64],
    answered: bool,
    num_teachers: usize,
    order: f64,
    threshold_list: Option<&[f64]>,
    grid: Option<&RdpGrid>,
) -> (f64, Vec<f64>) {
    let sigma2 = match *m {
        Mechanism::GnMax { sigma } => sigma,
        Mechanism::ConfidentGnMax { sigma2, .. } => sigma2,
        Mechanism::LnMax { scale } => scale, // not reached: release_params refuses LNMax
    };
    let rdp = data_dependent_rdp_with(m, votes, Some(answered), &[order], NoiseModel::Discrete)[0];
    let mut ls = vec![0.0; num_teachers];
    if let Some(list) = threshold_list {
        for (x, y) in ls.iter_mut().zip(threshold_ls_from_list(votes, list)) {
            *x += y;
        }
    }
    if let (true, Some(grid)) = (answered, grid) {
        let noise = DiscreteNoise::Gaussian { sigma: sigma2 };
        let (_, k) = effective_gaps(votes);
        let classes = votes.len();
        let kmin = k.iter().copied().min().unwrap_or(1);
        let ind = order / (sigma2 * sigma2);
        let t = |x: i64| noise.log_diff_sf(x);
        for (d, x) in ls.iter_mut().enumerate() {
            let r = 2 * d as i64;
            let bound = if kmin - r - 2 >= 1 {
                // ln q on the ball: between the gaps all pushed out and all pulled in.
                let pulled: Vec<i64> = k.iter().map(|&g| g - r).collect();
                let pushed: Vec<i64> = k.iter().map(|&g| g + r).collect();
                let (lo, hi) = (
                    logq_from_gaps(&noise, &pushed, classes),
                    logq_from_gaps(&noise, &pulled, classes),
                );
                // Largest one-step change of ln q there (log-concave tails:
                // the ratio grows with the gap, so take the largest gaps).
                let up = k.iter().map(|&g| t(g + r - 2) - t(g + r)).fold(0.0, f64::max);
                let down = k.iter().map(|&g| t(g + r) - t(g + r + 2)).fold(0.0, f64::max);
                grid.max_rise(lo, hi, up).max(grid.max_drop(lo, hi, down))
            } else {
                // The arg-max may change: anything between 0 and the
                // data-independent bound (and so at every larger distance).
                ind
            };
            *x += bound.min(ind);
        }
    }
    (rdp, ls)
}

/// Chooses the order and the GNSS parameters for releasing the
/// data-dependent epsilon of `votes` (one histogram per query; for
/// Confident-GNMax `answered` gives the realized outcome of each, otherwise
/// every query counts as answered).
pub fn release_params(
    mechanism: &Mechanism,
    votes: &[Vec<f64>],
    answered: Option<&[bool]>,
    num_teachers: usize,
    delta: f64,
    orders: &[f64],
) -> Result<ReleaseParams, ReleaseError> {
    if let Mechanism::LnMax { .. } = mechanism {
        return Err(ReleaseError::Unsupported(mechanism.name()));
    }
    if votes.is_empty() {
        return Err(ReleaseError::NoQueries);
    }
    if !(delta > 0.0 && delta < 1.0) {
        return Err(ReleaseError::BadDelta(delta));
    }
    if let Some(a) = answered {
        if a.len() != votes.len() {
            return Err(ReleaseError::BadAnswered {
                got: a.len(),
                queries: votes.len(),
            });
        }
    }
    let flag = |i: usize| answered.map_or(true, |a| a[i]);
    // The order minimising the data-dependent epsilon.
    let mut total = vec![0.0; orders.len()];
    for (i, v) in votes.iter().enumerate() {
        let r = data_dependent_rdp_with(mechanism, v, Some(flag(i)), orders, NoiseModel::Discrete);
        total.iter_mut().zip(r).for_each(|(t, c)| *t += c);
    }
    let ln_inv_delta = (1.0 / delta).ln();
    let (order, _) = orders
        .iter()
        .zip(&total)
        .map(|(&a, &r)| (a, r + ln_inv_delta / (a - 1.0)))
        .fold((f64::NAN, f64::INFINITY), |best, x| if x.1 < best.1 { x } else { best });

    let threshold_list: Option<Vec<f64>> = match *mechanism {
        Mechanism::ConfidentGnMax { threshold, sigma1, .. } => Some(
            (0..=num_teachers)
                .map(|v| {
                    let logq = threshold_logq(threshold, sigma1, &[v as f64]);
                    rdp_gaussian_at(logq, std::f64::consts::SQRT_2 * sigma1, order)
                })
                .collect(),
        ),
        _ => None,
    };
    let sigma2 = match *mechanism {
        Mechanism::GnMax { sigma } | Mechanism::ConfidentGnMax { sigma2: sigma, .. } => sigma,
        Mechanism::LnMax { scale } => scale,
    };
    let grid = RdpGrid::new(sigma2, order, votes[0].len());
    let mut rdp = 0.0;
    let mut ls = vec![0.0; num_teachers];
    for (i, v) in votes.iter().enumerate() {
        let (r, l) = query_rdp_and_ls(
            mechanism,
            v,
            flag(i),
            num_teachers,
            order,
            threshold_list.as_deref(),
            Some(&grid),
        );
        rdp += r;
        ls.iter_mut().zip(l).for_each(|(t, c)| *t += c);
    }
    let epsilon_data_dependent = rdp + ln_inv_delta / (order - 1.0);
    let no_noise = |beta| ReleaseParams {
        order,
        beta,
        smooth_sensitivity: 0.0,
        sigma_ss: 0.0,
        rdp_data_dependent: rdp,
        epsilon_data_dependent,
        release_cost: 0.0,
        mean: epsilon_data_dependent,
        noise_std: 0.0,
        delta,
    };
    if ls.iter().all(|&x| x == 0.0) {
        // A constant function of the data is released exactly, at no cost.
        return Ok(no_noise(0.0));
    }
    let mut best: Option<(f64, ReleaseParams)> = None;
    for beta in arange(0.3 / order, 0.495 / order, 0.01 / order) {
        let ss = compute_discounted_max(beta, &ls);
        let sigma_ss = ((order * (2.0 * beta).exp()) / ss).powf(1.0 / 3.0);
        let cost = compute_rdp_of_smooth_sensitivity_gaussian(beta, sigma_ss, order)?;
        let objective = rdp + cost + 2.0 * ss * sigma_ss;
        if objective.is_finite() && best.as_ref().is_none_or(|(b, _)| objective < *b) {
            let p = ReleaseParams {
                smooth_sensitivity: ss,
                sigma_ss,
                release_cost: cost,
                mean: epsilon_data_dependent + cost,
                noise_std: ss * sigma_ss,
                ..no_noise(beta)
            };
            best = Some((objective, p));
        }
    }
    best.map(|(_, p)| p).ok_or(ReleaseError::NoFiniteCost)
}

/// Draws the released epsilon: `mean + noise_std * N(0, 1)` (OpenDP's
/// Gaussian sampler). Each draw is a fresh release and costs
/// `release_cost` again: draw once per run and record it.
pub fn draw_released(p: &ReleaseParams) -> Result<f64, ReleaseError> {
    if p.noise_std == 0.0 {
        return Ok(p.mean);
    }
    let m = make_gaussian(
        AtomDomain::<f64>::new_non_nan(),
        AbsoluteDistance::<f64>::default(),
        p.noise_std,
        None,
    )
    .map_err(|e| ReleaseError::OpenDp(e.to_string()))?;
    m.invoke(&p.mean).map_err(|e| ReleaseError::OpenDp(e.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::orders::default_orders;

    fn confident() -> Mechanism {
        Mechanism::ConfidentGnMax {
            threshold: 200.0,
            sigma1: 150.0,
            sigma2: 40.0,
        }
    }

    /// The local-sensitivity argument needs the RDP to grow with `q`.
    #[test]
    fn rdp_is_monotone_in_q() {
        for sigma in [5.0, 40.0, 150.0 * std::f64::consts::SQRT_2] {
            for order in [2.0, 8.0, 20.0, 64.0] {
                let mut last = 0.0;
                let mut logq = -400.0;
                while logq < 0.0 {
                    let r = rdp_gaussian_at(logq, sigma, order);
                    assert!(
                        r >= last - 1e-15,
                        "sigma {sigma} order {order} logq {logq}: {r} < {last}"
                    );
                    last = r;
                    logq += 0.05;
                }
            }
        }
    }

    #[test]
    fn clear_votes_release_with_finite_noise() {
        let votes: Vec<Vec<f64>> = (0..300)
            .map(|i| vec![240.0 - (i % 7) as f64, 5.0, 5.0 + (i % 7) as f64, 0.0])
            .collect();
        let answered = vec![true; votes.len()];
        let p = release_params(&confident(), &votes, Some(&answered), 250, 1e-5, &default_orders()).expect("release");
        assert!(p.noise_std > 0.0 && p.release_cost > 0.0, "{p:?}");
        assert!(
            p.epsilon_data_dependent < 1.0 && p.mean < 5.0 && p.noise_std.is_finite(),
            "{p:?}"
        );
        assert!((p.mean - p.epsilon_data_dependent - p.release_cost).abs() < 1e-12);
        // Contested votes cost more.
        let hard: Vec<Vec<f64>> = (0..300).map(|_| vec![130.0, 120.0, 0.0, 0.0]).collect();
        let q = release_params(
            &Mechanism::GnMax { sigma: 40.0 },
            &hard,
            None,
            250,
            1e-5,
            &default_orders(),
        )
        .expect("release");
        assert!(q.epsilon_data_dependent > p.epsilon_data_dependent);
    }

    #[test]
    fn bad_input() {
        let o = default_orders();
        assert!(matches!(
            release_params(&Mechanism::LnMax { scale: 2.0 }, &[vec![1.0, 0.0]], None, 1, 1e-5, &o),
            Err(ReleaseError::Unsupported(_))
        ));
        assert_eq!(
            release_params(&confident(), &[], None, 1, 1e-5, &o),
            Err(ReleaseError::NoQueries)
        );
        assert!(release_params(&confident(), &[vec![1.0, 0.0]], Some(&[]), 1, 1e-5, &o).is_err());
    }
}
