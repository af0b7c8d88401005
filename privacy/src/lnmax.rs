//! LNMax (Laplace noisy max) accounting.
//!
//! Two analyses, both translated from the reference code:
//!
//! * The 2017 moments accountant (Papernot et al. 2017, arXiv 1610.05755;
//!   `research/pate_2017/analysis.py`): [`compute_q_noisy_max`],
//!   [`logmgf_exact`], [`logmgf_from_counts`], the smoothed sensitivity of
//!   the log moments, and per-set totals over moments `l = 1..=8`.
//!   `noise_eps` there is `gamma = 1/b` for Laplace noise `Lap(b)`; each query
//!   is `2*gamma`-DP; moment `l` is RDP order `l + 1`.
//! * The 2018 RDP form (Papernot et al. 2018, arXiv 1802.08908;
//!   `research/pate_2018/core.py`): [`compute_logq_laplace`] and
//!   [`rdp_pure_eps`].
//!
//! Two reference quirks are reproduced on purpose and have corrected
//! companions here:
//!
//! * `logmgf_exact` applies the data-dependent bound whenever `q < 0.5`; the
//!   theorem needs `q < 1/(e^eps + 1)` ([`logmgf_exact_checked`] enforces it,
//!   as `rdp_pure_eps` does).
//! * `sens_at_k` tests `counts[0] < counts[1] + k` on the caller's class order,
//!   so [`smoothed_sens`] depends on the order of the classes;
//!   [`smoothed_sens_sorted`] sorts the histogram first.

use serde::{Deserialize, Serialize};

use crate::special::{argmax, log1mexp, logaddexp, logsumexp};

// ---------------------------------------------------------------------------
// 2017 moments accountant
// ---------------------------------------------------------------------------

/// Gaps `gamma * (count_winner - count_j)` for every class but the winner.
fn gaps_2017(counts: &[f64], noise_eps: f64) -> impl Iterator<Item = f64> + '_ {
    let winner = argmax(counts);
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

/// Local sensitivity of the log moment at distance `k` (2017 `sens_at_k`,
/// including its quirk: the gap test uses `counts[0]` and `counts[1]` in the
/// caller's order, not the sorted histogram). Needs at least two classes;
/// returns 0 otherwise.
pub fn sens_at_k(counts: &[f64], noise_eps: f64, l: f64, k: f64) -> f64 {
    if counts.len() < 2 || 0.5 * noise_eps * l > 1.0 {
        return 0.0;
    }
    if counts[0] < counts[1] + k {
        return 0.0;
    }
    let mut sorted = counts.to_vec();
    sorted.sort_by(|a, b| b.total_cmp(a));
    sorted[0] -= k;
    sorted[1] += k;
    let val = logmgf_from_counts(&sorted, noise_eps, l);
    sorted[0] -= 1.0;
    sorted[1] += 1.0;
    let val_changed = logmgf_from_counts(&sorted, noise_eps, l);
    val_changed - val
}

/// Beta-smooth sensitivity of the log moment (2017 `smoothed_sens`, with the
/// class-order quirk of [`sens_at_k`]).
pub fn smoothed_sens(counts: &[f64], noise_eps: f64, l: f64, beta: f64) -> f64 {
    let max_count = counts.iter().copied().fold(f64::NEG_INFINITY, f64::max);
    let mut k = 0.0;
    let mut ss = sens_at_k(counts, noise_eps, l, k);
    while k < max_count {
        k += 1.0;
        let s = sens_at_k(counts, noise_eps, l, k);
        let cand = (-beta * k).exp() * s;
        if cand > ss {
            ss = cand;
        }
        if s == 0.0 {
            break;
        }
    }
    ss
}

/// [`smoothed_sens`] on the histogram sorted in decreasing order, so the
/// result does not depend on the order of the classes (our correction of
/// the 2017 quirk).
pub fn smoothed_sens_sorted(counts: &[f64], noise_eps: f64, l: f64, beta: f64) -> f64 {
    let mut sorted = counts.to_vec();
    sorted.sort_by(|a, b| b.total_cmp(a));
    smoothed_sens(&sorted, noise_eps, l, beta)
}

/// [`smoothed_sens`] for several moments at once, with the same results bit
/// for bit: the probabilities `q` that `sens_at_k` computes at each distance
/// `k` do not depend on the moment, so they are computed once per `k`.
pub fn smoothed_sens_moments(counts: &[f64], noise_eps: f64, ls: &[f64], beta: f64) -> Vec<f64> {
    let mut sorted = counts.to_vec();
    sorted.sort_by(|a, b| b.total_cmp(a));
    let max_count = counts.iter().copied().fold(f64::NEG_INFINITY, f64::max);
    // cache[k] = (q at distance k, q one step further).
    let mut cache: Vec<(f64, f64)> = Vec::new();
    let mut scratch = sorted.clone();
    let mut q_pair = |k: f64| -> (f64, f64) {
        let i = k as usize;
        while cache.len() <= i {
            let kk = cache.len() as f64;
            scratch.copy_from_slice(&sorted);
            scratch[0] -= kk;
            scratch[1] += kk;
            let q = compute_q_noisy_max(&scratch, noise_eps);
            scratch[0] -= 1.0;
            scratch[1] += 1.0;
            cache.push((q, compute_q_noisy_max(&scratch, noise_eps)));
        }
        cache[i]
    };
    let mut out = Vec::with_capacity(ls.len());
    for &l in ls {
        let mut sens = |k: f64| -> f64 {
            if counts.len() < 2 || 0.5 * noise_eps * l > 1.0 || counts[0] < counts[1] + k {
                return 0.0;
            }
            let (q, q_changed) = q_pair(k);
            logmgf_exact(q_changed, 2.0 * noise_eps, l) - logmgf_exact(q, 2.0 * noise_eps, l)
        };
        let mut k = 0.0;
        let mut ss = sens(k);
        while k < max_count {
            k += 1.0;
            let s = sens(k);
            let cand = (-beta * k).exp() * s;
            if cand > ss {
                ss = cand;
            }
            if s == 0.0 {
                break;
            }
        }
        out.push(ss);
    }
    out
}

/// Data-independent log moment of one `2*gamma`-DP answer (the reference's
/// `logmgf_exact(1.0, 2 gamma, l)`).
pub fn data_independent_logmgf_2017(noise_eps: f64, l: f64) -> f64 {
    logmgf_exact(1.0, 2.0 * noise_eps, l)
}

/// Which smoothed sensitivity the 2017 totals use.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SmoothedSensVariant {
    /// The reference's, on the histogram as given (class-order dependent).
    Reference,
    /// Ours, on the sorted histogram.
    Sorted,
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

// ---------------------------------------------------------------------------
// 2018 RDP form
// ---------------------------------------------------------------------------

/// Upper bound on `ln Pr[outcome != argmax]` for LNMax with Laplace scale
/// `lambda` (2018 `compute_logq_laplace`), capped at `ln(1 - 1/n)`.
pub fn compute_logq_laplace(counts: &[f64], lambda: f64) -> f64 {
    let idx = argmax(counts);
    let cw = counts.get(idx).copied().unwrap_or(0.0);
    let terms: Vec<f64> = counts
        .iter()
        .enumerate()
        .filter(|&(i, _)| i != idx)
        .map(|(_, &c)| {
            let x = (c - cw) / lambda;
            (2.0 - x).ln() + 0.25f64.ln() + x
        })
        .collect();
    let logq = logsumexp(&terms);
    logq.min((1.0 - 1.0 / counts.len() as f64).ln())
}

/// RDP at one order of a `pure_eps`-DP mechanism whose non-argmax outcome has
/// log probability at most `logq` (2018 `rdp_pure_eps`, Theorem 3 of the 2017
/// paper). The data-dependent term is used only when
/// `q <= 1/(e^eps + 1)`; the result never exceeds `min(eps^2 a / 2, eps)`.
pub fn rdp_pure_eps_at(logq: f64, pure_eps: f64, order: f64) -> f64 {
    PureEpsBound::new(logq, pure_eps).at(order)
}

/// The order-independent parts of `rdp_pure_eps` for one `(logq, eps)`.
#[derive(Debug, Clone, Copy)]
struct PureEpsBound {
    logq: f64,
    pure_eps: f64,
    /// `(ln(1-q), ln(1-q) - ln(1 - e^{eps} q))` when `q <= 1/(e^eps + 1)`.
    dep: Option<(f64, f64)>,
}

impl PureEpsBound {
    fn new(logq: f64, pure_eps: f64) -> Self {
        let q = logq.exp();
        let dep = (q <= 1.0 / (pure_eps.exp() + 1.0)).then(|| {
            let l1q = (-q).ln_1p();
            (l1q, l1q - log1mexp(pure_eps + logq))
        });
        PureEpsBound { logq, pure_eps, dep }
    }

    fn at(&self, order: f64) -> f64 {
        let log_t = match self.dep {
            Some((l1q, c)) => logaddexp(l1q + c * (order - 1.0), self.logq + self.pure_eps * (order - 1.0)),
            None => f64::INFINITY,
        };
        let e = self.pure_eps;
        np_minimum(np_minimum(0.5 * e * e * order, log_t / (order - 1.0)), e)
    }
}

/// [`rdp_pure_eps_at`] at every order.
pub fn rdp_pure_eps(logq: f64, pure_eps: f64, orders: &[f64]) -> Vec<f64> {
    let b = PureEpsBound::new(logq, pure_eps);
    orders.iter().map(|&a| b.at(a)).collect()
}

/// Data-independent RDP of a `pure_eps`-DP mechanism: `min(eps^2 a / 2, eps)`
/// (what [`rdp_pure_eps`] returns when `q` is large).
pub fn rdp_pure_eps_data_independent(pure_eps: f64, orders: &[f64]) -> Vec<f64> {
    orders
        .iter()
        .map(|&a| np_minimum(0.5 * pure_eps * pure_eps * a, pure_eps))
        .collect()
}

/// NumPy's `minimum`: NaN propagates.
pub(crate) fn np_minimum(a: f64, b: f64) -> f64 {
    if a.is_nan() || b.is_nan() {
        f64::NAN
    } else if b < a {
        b
    } else {
        a
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn q_noisy_max_by_hand() {
        // Two classes, gap gamma*10 = 1: q = (1 + 2) / (4 e).
        let q = compute_q_noisy_max(&[10.0, 0.0], 0.1);
        assert!((q - 3.0 / (4.0 * 1f64.exp())).abs() < 1e-15);
        // Tie: q = 2/4 = 0.5 = 1 - 1/2 cap.
        assert_eq!(compute_q_noisy_max(&[5.0, 5.0], 0.1), 0.5);
    }

    #[test]
    fn logmgf_bounds() {
        // q = 1: min(eps^2 l(l+1)/2, eps l).
        assert!((logmgf_exact(1.0, 0.1, 3.0) - 0.06).abs() < 1e-15);
        assert_eq!(logmgf_exact(0.0, 0.1, 3.0), 0.0);
        // The quirk: between 1/(e^eps+1) and 0.5 the reference can go negative.
        // (q = 0.2, eps = 2, l = 1 is in the vectors' grid: -1.978.)
        let (q, eps) = (0.2, 2.0);
        assert!(q > 1.0 / (f64::exp(eps) + 1.0));
        assert!((logmgf_exact(q, eps, 1.0) + 1.977_823_371_041_838).abs() < 1e-12);
        assert!((logmgf_exact_checked(q, eps, 1.0) - 2.0).abs() < 1e-15);
    }

    #[test]
    fn smoothed_sens_order_quirk() {
        // Same histogram, classes permuted: the reference value changes, the
        // sorted one does not.
        let a = [200.0, 40.0, 10.0];
        let b = [10.0, 40.0, 200.0];
        assert_ne!(smoothed_sens(&a, 0.05, 4.0, 0.09), smoothed_sens(&b, 0.05, 4.0, 0.09));
        assert_eq!(
            smoothed_sens_sorted(&a, 0.05, 4.0, 0.09),
            smoothed_sens_sorted(&b, 0.05, 4.0, 0.09)
        );
    }

    #[test]
    fn laplace_logq_by_hand() {
        // gap 20 with lambda 20: x = -1, term ln(3) + ln(1/4) - 1.
        let lq = compute_logq_laplace(&[30.0, 10.0], 20.0);
        assert!((lq - (3f64.ln() + 0.25f64.ln() - 1.0)).abs() < 1e-15);
    }

    #[test]
    fn pure_eps_data_independent() {
        let r = rdp_pure_eps_data_independent(0.1, &[2.0, 100.0]);
        assert!((r[0] - 0.01).abs() < 1e-16);
        assert_eq!(r[1], 0.1);
        // A large q gives the same.
        assert_eq!(rdp_pure_eps(0.5f64.ln(), 0.1, &[2.0, 100.0]), r);
    }
}
