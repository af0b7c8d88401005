//! The failure probability `q` of the noisy arg-max the aggregator actually
//! runs: integer noise (OpenDP's discrete Laplace and discrete Gaussian) on
//! integer counts, ties to the lowest class index.
//!
//! # Why the continuous bounds are not enough
//!
//! The data-dependent bounds of PATE (Theorem 3 of the 2017 paper for LNMax,
//! Theorem 6 of the 2018 paper for GNMax and the threshold step) hold for
//! *any* mechanism with the stated data-independent guarantee, given an
//! upper bound `q >= Pr[M(D) != i*]` for one fixed outcome `i*`. The
//! data-independent guarantees carry over to the discrete samplers unchanged
//! (discrete Laplace of scale `b` is `Delta_1/b`-DP; the discrete Gaussian
//! is `Delta_2^2/(2 sigma^2)`-zCDP, Canonne, Kamath and Steinke 2020,
//! Theorem 14), so only `q` must be redone. The reference's `q`
//! (`compute_logq_laplace`, `compute_logq_gaussian`) is the union bound of
//! *continuous* tails `Pr[N(0, 2 sigma^2) > gap]`; with integer noise and
//! ties to the lowest index a class below the winner wins on a tie, so its
//! term is `Pr[Z_j - Z_i* >= gap]`, about `Pr[N(0, 2 sigma^2) >= gap - 1/2]`:
//! larger than the continuous term. On the histogram `[0, 1]` with
//! `sigma = 40` the true `q` is 0.4965 and the continuous bound 0.4930
//! (`continuous_bound_fails_under_lowest_index_ties` in the tests). So the
//! continuous bound does not hold for the mechanism as run; this module
//! computes a sound one.
//!
//! # The bound used ([`logq_noisy_max`])
//!
//! Let `i*` be the first arg-max of the counts `n` (the class the reference
//! analysis calls the winner), `g_j = n_i* - n_j >= 0`, and `D = Z_j - Z_i*`
//! the difference of two independent draws of the noise. With ties going to
//! the lowest index, the output is `j` only if `n_j + Z_j >= n_i* + Z_i*`
//! when `j < i*` (then `g_j >= 1`, since `i*` is the *first* maximum) and
//! only if `n_j + Z_j > n_i* + Z_i*` when `j > i*`. So, by the union bound,
//!
//! ```text
//! q = Pr[out != i*] <= sum_{j < i*} Pr[D >= g_j] + sum_{j > i*} Pr[D >= g_j + 1]
//! ```
//!
//! with every threshold an integer `k_j >= 1` ([`effective_gaps`]). The
//! tails `Pr[D >= k]` are exact: in closed form for the discrete Laplace
//! ([`DiscreteNoise::log_diff_sf`]), and for the discrete Gaussian by exact
//! summation of its pmf over `|x| <= 14 sigma + 2`, plus the whole mass
//! beyond that window (so truncation can only raise the bound). The sum is
//! capped at `1 - 1/m` (`m` classes), which holds for any i.i.d. noise under
//! this tie rule: swapping the noise of `i*` and of any `j` maps every
//! outcome where `j` wins to one where `i*` wins (`n_i* >= n_j`, and if
//! `n_i* = n_j` then `j > i*` and `i*` wins the tie), so
//! `Pr[out = i*] >= Pr[out = j]` for every `j`, hence `>= 1/m`. The result
//! is raised by a relative `1e-9` to cover floating-point rounding.
//!
//! For the threshold step of Confident-GNMax the aggregator answers when
//! `n_max + Z >= T` with an integer draw `Z`, i.e. when `Z >= ceil(T -
//! n_max)`; both `Pr[answered]` and `Pr[declined]` are exact discrete tails
//! ([`log_pr_answered`]), computed without subtraction (by symmetry,
//! `Pr[Z < k] = Pr[Z >= 1 - k]`).
//!
//! `privacy/tests/discrete_q.rs` checks the bound against the exact `q`,
//! computed from the full joint distribution, over many histograms.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, OnceLock};

use crate::special::{log1mexp, logaddexp, logsumexp};

/// Relative safety margin on every bound, for floating-point rounding.
const ROUNDING_MARGIN: f64 = 1e-9;

/// The integer noise OpenDP adds to each count.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum DiscreteNoise {
    /// Discrete Laplace: `Pr[Z = x]` proportional to `exp(-|x| / scale)`.
    Laplace {
        /// The scale `b`.
        scale: f64,
    },
    /// Discrete Gaussian: `Pr[Z = x]` proportional to `exp(-x^2 / (2 sigma^2))`.
    Gaussian {
        /// The parameter `sigma`.
        sigma: f64,
    },
}

impl DiscreteNoise {
    /// `ln Pr[Z = x]`.
    pub fn log_pmf(&self, x: i64) -> f64 {
        match *self {
            DiscreteNoise::Laplace { scale } => {
                let (ln_t, _) = laplace_t(scale);
                laplace_log_norm(scale) + ln_t * x.unsigned_abs() as f64
            }
            DiscreteNoise::Gaussian { sigma } => gaussian(sigma).log_pmf(x),
        }
    }

    /// `ln Pr[Z >= m]`.
    pub fn log_sf(&self, m: i64) -> f64 {
        match *self {
            DiscreteNoise::Laplace { scale } => {
                // Pr[Z >= m] = t^m / (1 + t) for m >= 1.
                let (ln_t, t) = laplace_t(scale);
                let upper = |m: i64| ln_t * m as f64 - t.ln_1p();
                if m >= 1 {
                    upper(m)
                } else {
                    log1mexp(upper(1 - m))
                }
            }
            DiscreteNoise::Gaussian { sigma } => gaussian(sigma).log_sf(m),
        }
    }

    /// `ln Pr[Z_1 - Z_2 >= k]` for two independent draws and an integer
    /// `k >= 1` (for `k < 1` it returns 0, i.e. probability 1, an upper bound).
    pub fn log_diff_sf(&self, k: i64) -> f64 {
        if k < 1 {
            return 0.0;
        }
        match *self {
            DiscreteNoise::Laplace { scale } => {
                // Pr[D = d] = A t^d (d + c) for d >= 0, A = ((1-t)/(1+t))^2,
                // c = (1+t^2)/(1-t^2); summed over d >= k in closed form.
                let (ln_t, t) = laplace_t(scale);
                let one_minus_t = -(-1.0 / scale).exp_m1();
                let ln_a = 2.0 * (one_minus_t.ln() - t.ln_1p());
                let c = (1.0 + t * t) / (one_minus_t * (1.0 + t));
                let k = k as f64;
                let bracket = (k * one_minus_t + t) / (one_minus_t * one_minus_t) + c / one_minus_t;
                ln_a + ln_t * k + bracket.ln()
            }
            DiscreteNoise::Gaussian { sigma } => gaussian(sigma).log_diff_sf(k),
        }
    }
}

/// `(ln t, t)` with `t = exp(-1/scale)`.
fn laplace_t(scale: f64) -> (f64, f64) {
    let ln_t = -1.0 / scale;
    (ln_t, ln_t.exp())
}

/// `ln((1 - t) / (1 + t))`, the discrete Laplace's normalising constant.
fn laplace_log_norm(scale: f64) -> f64 {
    let (_, t) = laplace_t(scale);
    (-(-1.0 / scale).exp_m1()).ln() - t.ln_1p()
}

/// Exact discrete Gaussian tails for one `sigma`, memoised.
struct GaussTails {
    sigma: f64,
    /// `ln sum_x exp(-x^2 / (2 sigma^2))`.
    log_norm: f64,
    /// Half-width of the summation window of [`GaussTails::log_diff_sf`].
    window: i64,
    /// `ln Pr[Z >= m]` for `m = 0..sf.len()`.
    sf: Vec<f64>,
    /// `ln Pr[Z_1 - Z_2 >= k]`, by `k`.
    diff: Mutex<HashMap<i64, f64>>,
}

/// `sum_{x >= m} exp(-(x^2 - m^2) / (2 sigma^2))` for `m >= 0`, in log space
/// relative to `exp(-m^2 / (2 sigma^2))`: returns the full log sum.
fn gauss_log_sum_from(sigma: f64, m: i64) -> f64 {
    let two_var = 2.0 * sigma * sigma;
    let m_f = m as f64;
    let mut sum = 0.0;
    let mut x = m_f;
    loop {
        let term = (-(x * x - m_f * m_f) / two_var).exp();
        sum += term;
        if term < 1e-18 * sum || term == 0.0 {
            break;
        }
        x += 1.0;
    }
    -(m_f * m_f) / two_var + sum.ln()
}

impl GaussTails {
    fn new(sigma: f64) -> Self {
        // sum over all integers = 2 * sum_{x >= 0} - 1 (x = 0 counted once).
        let half = gauss_log_sum_from(sigma, 0);
        let log_norm = (2.0 * half.exp() - 1.0).ln();
        let window = (14.0 * sigma).ceil() as i64 + 2;
        let len = (4 * window + 64) as usize;
        let mut sf = vec![0.0; len];
        let last = len as i64 - 1;
        sf[len - 1] = gauss_log_sum_from(sigma, last) - log_norm;
        let two_var = 2.0 * sigma * sigma;
        for m in (0..len - 1).rev() {
            let lp = -((m * m) as f64) / two_var - log_norm;
            sf[m] = logaddexp(lp, sf[m + 1]);
        }
        GaussTails {
            sigma,
            log_norm,
            window,
            sf,
            diff: Mutex::new(HashMap::new()),
        }
    }

    fn log_pmf(&self, x: i64) -> f64 {
        let x = x as f64;
        -(x * x) / (2.0 * self.sigma * self.sigma) - self.log_norm
    }

    fn log_sf(&self, m: i64) -> f64 {
        if m <= 0 {
            // Pr[Z >= m] = 1 - Pr[Z <= m - 1] = 1 - Pr[Z >= 1 - m].
            return log1mexp(self.log_sf(1 - m));
        }
        match self.sf.get(m as usize) {
            Some(&v) => v,
            None => gauss_log_sum_from(self.sigma, m) - self.log_norm,
        }
    }

    fn log_diff_sf(&self, k: i64) -> f64 {
        if let Some(&v) = self.diff.lock().unwrap_or_else(|p| p.into_inner()).get(&k) {
            return v;
        }
        let w = self.window;
        let mut terms: Vec<f64> = (-w..=w).map(|x| self.log_pmf(x) + self.log_sf(k + x)).collect();
        // Everything outside the window, counted as if it always won.
        terms.push(std::f64::consts::LN_2 + self.log_sf(w + 1));
        let v = logsumexp(&terms).min(0.0);
        self.diff.lock().unwrap_or_else(|p| p.into_inner()).insert(k, v);
        v
    }
}

/// The memoised tails of the discrete Gaussian with this `sigma`.
fn gaussian(sigma: f64) -> Arc<GaussTails> {
    static CACHE: OnceLock<Mutex<HashMap<u64, Arc<GaussTails>>>> = OnceLock::new();
    let cache = CACHE.get_or_init(|| Mutex::new(HashMap::new()));
    let mut map = cache.lock().unwrap_or_else(|p| p.into_inner());
    Arc::clone(
        map.entry(sigma.to_bits())
            .or_insert_with(|| Arc::new(GaussTails::new(sigma))),
    )
}

/// The integer thresholds `k_j >= 1` of the union bound, one per class other
/// than the first arg-max `i*`: class `j` can only win if
/// `Z_j - Z_i* >= k_j`, with `k_j = ceil(g_j)` for `j < i*` (it wins ties)
/// and `floor(g_j) + 1` for `j > i*` (it loses them), `g_j = n_i* - n_j`.
/// Returns `(i*, k)` with `k` in class order, `i*` left out.
pub fn effective_gaps(counts: &[f64]) -> (usize, Vec<i64>) {
    let winner = crate::special::argmax(counts).unwrap_or(0);
    let top = counts.get(winner).copied().unwrap_or(0.0);
    let k = counts
        .iter()
        .enumerate()
        .filter(|&(j, _)| j != winner)
        .map(|(j, &c)| {
            let g = top - c;
            let k = if j < winner { g.ceil() } else { g.floor() + 1.0 };
            (k.max(1.0).min(i64::MAX as f64 / 4.0)) as i64
        })
        .collect();
    (winner, k)
}

/// `ln` of the union bound `min(1 - 1/m, sum_j Pr[D >= k_j])` from the
/// thresholds of [`effective_gaps`], for `m` classes.
pub fn logq_from_gaps(noise: &DiscreteNoise, gaps: &[i64], num_classes: usize) -> f64 {
    let terms: Vec<f64> = gaps.iter().map(|&k| noise.log_diff_sf(k)).collect();
    capped_logq(logsumexp(&terms), num_classes)
}

/// The `ln q` the accounting uses for a union-bound sum `ln S`: raised by
/// the rounding margin and capped at `ln(1 - 1/m)`. Non-decreasing in
/// `log_sum`, which the smooth-sensitivity bounds rely on.
pub fn capped_logq(log_sum: f64, num_classes: usize) -> f64 {
    let cap = (1.0 - 1.0 / num_classes as f64).ln();
    (log_sum + ROUNDING_MARGIN).min(cap)
}

/// Upper bound on `ln Pr[noisy arg-max != i*]` for the integer noise `noise`
/// on the histogram `counts`, ties to the lowest index (see the module docs).
pub fn logq_noisy_max(noise: &DiscreteNoise, counts: &[f64]) -> f64 {
    let (_, gaps) = effective_gaps(counts);
    logq_from_gaps(noise, &gaps, counts.len())
}

/// `(ln Pr[answered], ln Pr[declined])` of the threshold step: answered when
/// `n_max + Z >= threshold` for a discrete Gaussian `Z` of `sigma1`. The top
/// count is rounded to an integer (ties to even, as the reference), which is
/// exact for the aggregator's integer counts. Both are raised by the
/// rounding margin.
pub fn log_pr_answered(threshold: f64, sigma1: f64, counts: &[f64]) -> (f64, f64) {
    let max = counts.iter().copied().fold(f64::NEG_INFINITY, f64::max);
    let top = if max.is_finite() { max.round_ties_even() } else { 0.0 };
    // Z >= threshold - top  <=>  Z >= ceil(threshold - top).
    let k = (threshold - top)
        .ceil()
        .clamp(-(i64::MAX as f64) / 4.0, i64::MAX as f64 / 4.0) as i64;
    let noise = DiscreteNoise::Gaussian { sigma: sigma1 };
    (
        (noise.log_sf(k) + ROUNDING_MARGIN).min(0.0),
        (noise.log_sf(1 - k) + ROUNDING_MARGIN).min(0.0),
    )
}

/// The `logq` of the threshold step for Theorem 6: the less likely of its
/// two outcomes.
pub fn threshold_logq(threshold: f64, sigma1: f64, counts: &[f64]) -> f64 {
    let (a, d) = log_pr_answered(threshold, sigma1, counts);
    a.min(d)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Brute-force tail of one draw, from the pmf.
    fn brute_sf(n: &DiscreteNoise, m: i64, r: i64) -> f64 {
        (m.max(-r)..=r).map(|x| n.log_pmf(x).exp()).sum()
    }

    #[test]
    fn pmf_sums_to_one_and_tails_match_brute_force() {
        for n in [
            DiscreteNoise::Laplace { scale: 0.7 },
            DiscreteNoise::Laplace { scale: 5.0 },
            DiscreteNoise::Gaussian { sigma: 0.4 },
            DiscreteNoise::Gaussian { sigma: 3.0 },
        ] {
            let r = 400;
            let total: f64 = (-r..=r).map(|x| n.log_pmf(x).exp()).sum();
            assert!((total - 1.0).abs() < 1e-12, "{n:?}: {total}");
            for m in [-5, -1, 0, 1, 2, 7] {
                let b = brute_sf(&n, m, r);
                let s = n.log_sf(m).exp();
                assert!((s - b).abs() < 1e-12 * b.max(1e-300) + 1e-15, "{n:?} m={m}: {s} vs {b}");
            }
        }
    }

    #[test]
    fn diff_tails_match_convolution() {
        for n in [
            DiscreteNoise::Laplace { scale: 0.5 },
            DiscreteNoise::Laplace { scale: 4.0 },
            DiscreteNoise::Gaussian { sigma: 0.5 },
            DiscreteNoise::Gaussian { sigma: 2.5 },
        ] {
            let r = 300;
            for k in [1, 2, 3, 6, 12] {
                let brute: f64 = (-r..=r).map(|x| n.log_pmf(x).exp() * brute_sf(&n, k + x, r)).sum();
                let v = n.log_diff_sf(k).exp();
                assert!(v >= brute * (1.0 - 1e-10), "{n:?} k={k}: {v} < {brute}");
                assert!(v <= brute * (1.0 + 1e-9) + 1e-300, "{n:?} k={k}: {v} vs {brute}");
            }
        }
    }

    #[test]
    fn effective_gaps_follow_the_tie_rule() {
        // Winner is class 1 (first max); class 0 below wins ties, class 2 and 3 lose them.
        let (w, k) = effective_gaps(&[4.0, 5.0, 5.0, 1.0]);
        assert_eq!(w, 1);
        assert_eq!(k, vec![1, 1, 5]);
    }
}
