//! The 2017 moments accountant for LNMax (Papernot et al. 2017,
//! `research/pate_2017/analysis.py`): the probability `q` that the noisy
//! arg-max is not the plurality, the log moments of one answer, and the
//! reference's per-set totals over moments `l = 1..=8`.

use serde::{Deserialize, Serialize};

use super::smoothed::{smoothed_sens_moments, SmoothedSensVariant};
use crate::special::argmax;

/// Gaps `gamma * (count_winner - count_j)` for every class but the winner.
fn gaps_2017(counts: &[f64], noise_eps: f64) -> impl Iterator<Item = f64> + '_ {
    let winner = argmax(counts).unwrap_or(0);
    let cw = counts.get(winner).copied().unwrap_or(0.0);
    counts
        .iter()
        .enumerate()
        .filter(move |&(i, _)| i != winner)
        .map(move |(_, &c)| -(noise_eps * (c - cw)))
}

/// Upper bound on `Pr[outcome != argmax]` for LNMax (2017, union bound of
/// `(gap + 2) / (4 e^gap)` over the other classes), capped at `1 - 1/n`.
pub fn compute_q_noisy_max(counts: &[f64], noise_eps: f64) -> f64 {
    let mut q = 0.0;
    for gap in gaps_2017(counts, noise_eps) {
        q += (gap + 2.0) / (4.0 * gap.exp());
    }
    q.min(1.0 - 1.0 / counts.len() as f64)
}

/// The 2017 approximation of [`compute_q_noisy_max`] from the smallest gap
/// only: `(n - 1) (gap + 2) / (4 e^gap)`, capped at `1 - 1/n`.
pub fn compute_q_noisy_max_approx(counts: &[f64], noise_eps: f64) -> f64 {
    let gap = gaps_2017(counts, noise_eps).fold(f64::INFINITY, f64::min);
    let n = counts.len() as f64;
    ((n - 1.0) * (gap + 2.0) / (4.0 * gap.exp())).min(1.0 - 1.0 / n)
}

/// Python's `min` over three values (first minimum, NaN never replaces).
fn py_min3(a: f64, b: f64, c: f64) -> f64 {
    let mut m = a;
    if b < m {
        m = b;
    }
    if c < m {
        m = c;
    }
    m
}

/// Upper bound on the log moment `alpha(l)` of a `priv_eps`-DP mechanism
/// whose non-argmax outcome has probability at most `q` (2017
/// `logmgf_exact`, reference behaviour: data-dependent bound for `q < 0.5`).
pub fn logmgf_exact(q: f64, priv_eps: f64, l: f64) -> f64 {
    let log_t = if q < 0.5 {
        let t_one = (1.0 - q) * ((1.0 - q) / (1.0 - priv_eps.exp() * q)).powf(l);
        let t_two = q * (priv_eps * l).exp();
        let t = t_one + t_two;
        if t > 0.0 {
            t.ln()
        } else if t.is_nan() {
            f64::NAN
        } else {
            // Python's math.log raises on t <= 0; the reference falls back.
            priv_eps * l
        }
    } else {
        priv_eps * l
    };
    py_min3(0.5 * priv_eps * priv_eps * l * (l + 1.0), log_t, priv_eps * l)
}

/// [`logmgf_exact`] with the paper's condition `q < 1/(e^eps + 1)` for the
/// data-dependent term (the theorem's hypothesis). Outside it, only the
/// data-independent bounds `min(eps^2 l (l+1)/2, eps l)` apply.
pub fn logmgf_exact_checked(q: f64, priv_eps: f64, l: f64) -> f64 {
    if q < 1.0 / (priv_eps.exp() + 1.0) {
        logmgf_exact(q, priv_eps, l)
    } else {
        logmgf_exact(1.0, priv_eps, l)
    }
}

/// Log moment of one LNMax answer with `gamma = noise_eps` (the mechanism is
/// `2*gamma`-DP): `logmgf_exact(compute_q_noisy_max(counts), 2 gamma, l)`.
pub fn logmgf_from_counts(counts: &[f64], noise_eps: f64, l: f64) -> f64 {
    let q = compute_q_noisy_max(counts, noise_eps);
    logmgf_exact(q, 2.0 * noise_eps, l)
}

/// Data-independent log moment of one `2*gamma`-DP answer (the reference's
/// `logmgf_exact(1.0, 2 gamma, l)`).
pub fn data_independent_logmgf_2017(noise_eps: f64, l: f64) -> f64 {
    logmgf_exact(1.0, 2.0 * noise_eps, l)
}
/// Per-set totals of the 2017 analysis (the reference's `main()`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Moments2017Totals {
    /// The moments `l` used.
    pub moments: Vec<f64>,
    /// Sum over queries of the log moments, per moment.
    pub total_log_mgf: Vec<f64>,
    /// `(total - ln delta) / l`, per moment.
    pub eps_per_moment: Vec<f64>,
    /// The smallest of `eps_per_moment`.
    pub eps: f64,
    /// The moment (1-based) attaining `eps`.
    pub eps_argmin_moment: u32,
    /// Sum over queries of the smoothed sensitivities, divided by `l`.
    pub smoothed_sensitivity_total_over_l: Vec<f64>,
    /// `2 beta ln(1/delta)`: the epsilon of releasing the data-dependent
    /// epsilon with Laplace noise scaled to the smoothed sensitivity.
    pub ss_eps: f64,
    /// `2 / ss_eps`: the Laplace scale per unit of smoothed sensitivity.
    pub ss_scale: f64,
    /// `Q * logmgf_exact(1, 2 gamma, l)`, per moment.
    pub data_independent_log_mgf: Vec<f64>,
    /// `(data_independent_log_mgf - ln delta) / l`, per moment.
    pub data_independent_eps_per_moment: Vec<f64>,
    /// The smallest of `data_independent_eps_per_moment`.
    pub data_independent_eps: f64,
    /// The moment attaining `data_independent_eps`.
    pub data_independent_argmin_moment: u32,
}

/// First index of the minimum (NaN never wins).
fn argmin(xs: &[f64]) -> usize {
    let mut best = 0;
    for (i, &x) in xs.iter().enumerate() {
        if x < xs[best] || xs[best].is_nan() {
            best = i;
        }
    }
    best
}

/// Runs the 2017 analysis over a set of vote histograms: log moments summed
/// over queries for `l = 1..=moments`, `eps = min_l (total - ln delta)/l`, the
/// smoothed sensitivity with smoothness `beta` (skipped, and reported as 0,
/// when `smoothed` is `None`), and the data-independent bound.
pub fn moments_2017_totals<V: AsRef<[f64]>>(
    votes: &[V],
    noise_eps: f64,
    delta: f64,
    beta: f64,
    moments: u32,
    smoothed: Option<SmoothedSensVariant>,
) -> Moments2017Totals {
    let ls = crate::orders::moments_2017(moments);
    let mut total = vec![0.0; ls.len()];
    let mut total_ss = vec![0.0; ls.len()];
    for v in votes {
        let v = v.as_ref();
        // logmgf_from_counts(v, gamma, l) for every l, with q computed once.
        let q = compute_q_noisy_max(v, noise_eps);
        for (t, &l) in total.iter_mut().zip(&ls) {
            *t += logmgf_exact(q, 2.0 * noise_eps, l);
        }
        let ss = match smoothed {
            None => continue,
            Some(SmoothedSensVariant::Reference) => smoothed_sens_moments(v, noise_eps, &ls, beta),
            Some(SmoothedSensVariant::Sorted) => {
                let mut s = v.to_vec();
                s.sort_by(|a, b| b.total_cmp(a));
                smoothed_sens_moments(&s, noise_eps, &ls, beta)
            }
        };
        for (t, x) in total_ss.iter_mut().zip(ss) {
            *t += x;
        }
    }
    let ln_delta = delta.ln();
    let eps_per_moment: Vec<f64> = total.iter().zip(&ls).map(|(t, l)| (t - ln_delta) / l).collect();
    let i = argmin(&eps_per_moment);
    let ss_eps = 2.0 * beta * (1.0 / delta).ln();
    let n = votes.len() as f64;
    let di: Vec<f64> = ls
        .iter()
        .map(|&l| 0.0 + n * data_independent_logmgf_2017(noise_eps, l))
        .collect();
    let di_eps: Vec<f64> = di.iter().zip(&ls).map(|(t, l)| (t - ln_delta) / l).collect();
    let j = argmin(&di_eps);
    Moments2017Totals {
        eps: eps_per_moment.get(i).copied().unwrap_or(f64::INFINITY),
        eps_argmin_moment: i as u32 + 1,
        smoothed_sensitivity_total_over_l: total_ss.iter().zip(&ls).map(|(s, l)| s / l).collect(),
        ss_eps,
        ss_scale: 2.0 / ss_eps,
        data_independent_eps: di_eps.get(j).copied().unwrap_or(f64::INFINITY),
        data_independent_argmin_moment: j as u32 + 1,
        data_independent_log_mgf: di,
        data_independent_eps_per_moment: di_eps,
        moments: ls,
        total_log_mgf: total,
        eps_per_moment,
    }
}

