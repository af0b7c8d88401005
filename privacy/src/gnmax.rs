//! GNMax (Gaussian noisy max) accounting, translated from the 2018
//! reference (`research/pate_2018/core.py`, Papernot et al. 2018,
//! arXiv 1802.08908).
//!
//! With Gaussian noise `N(0, sigma^2)` on each count the L2 sensitivity of the
//! histogram is `sqrt(2)`, so the data-independent RDP is `order / sigma^2`
//! (Proposition 8). The data-dependent bound (Theorem 6) needs an upper bound
//! `q` on the probability of a non-argmax answer, computed by a union bound
//! over Gaussian tails (Proposition 7) in log space, which stays finite deep
//! in the tail where a plain `ln(erfc(x))` underflows.

use crate::special::{argmax, log1mexp, logaddexp, logsumexp, norm_logsf};

/// Upper bound on `ln Pr[outcome != argmax]` for GNMax with noise `sigma`
/// (Proposition 7): `ln sum_j Pr[N(0, 2 sigma^2) > n* - n_j]` over the
/// classes other than the (first) argmax, capped at `ln(1 - 1/n)`.
pub fn compute_logq_gaussian(counts: &[f64], sigma: f64) -> f64 {
    let n = counts.len();
    let variance = sigma * sigma;
    let idx = argmax(counts).unwrap_or(0);
    let cw = counts.get(idx).copied().unwrap_or(0.0);
    let scale = (2.0 * variance).sqrt();
    let terms: Vec<f64> = counts
        .iter()
        .enumerate()
        .filter(|&(i, _)| i != idx)
        .map(|(_, &c)| norm_logsf(cw - c, scale))
        .collect();
    logsumexp(&terms).min((1.0 - 1.0 / n as f64).ln())
}

/// Data-independent RDP of GNMax: `order / sigma^2` at every order
/// (Proposition 8).
pub fn rdp_data_independent_gaussian(sigma: f64, orders: &[f64]) -> Vec<f64> {
    let variance = sigma * sigma;
    orders.iter().map(|a| a / variance).collect()
}

/// Precomputed quantities of Theorem 6 for one `(logq, sigma)`, so the curve
/// can be evaluated at many orders cheaply.
#[derive(Debug, Clone, Copy)]
struct GaussianBound {
    variance: f64,
    /// `None` when the data-dependent bound does not apply at any order
    /// (or `logq = -inf`, where the RDP is 0).
    dep: Option<DepTerms>,
    zero: bool,
}

#[derive(Debug, Clone, Copy)]
struct DepTerms {
    mu_hi1: f64,
    log1q: f64,
    logq: f64,
    a_coef: f64,
    b_coef: f64,
}

impl GaussianBound {
    fn new(logq: f64, sigma: f64) -> Self {
        let variance = sigma * sigma;
        if logq == f64::NEG_INFINITY {
            return GaussianBound {
                variance,
                dep: None,
                zero: true,
            };
        }
        let mu_hi2 = (variance * -logq).sqrt();
        let mu_hi1 = mu_hi2 + 1.0;
        let rdp_hi1 = mu_hi1 / variance;
        let rdp_hi2 = mu_hi2 / variance;
        let log_a2 = (mu_hi2 - 1.0) * rdp_hi2;
        // The reference also requires some order to pass the mask
        // (mu_hi1 > order and mu_hi2 > 1); that is checked per order below,
        // and a bound that applies to no order changes nothing.
        let applies = mu_hi2 > 1.0
            && logq <= log_a2 - mu_hi2 * ((1.0 + 1.0 / (mu_hi1 - 1.0)).ln() + (1.0 + 1.0 / (mu_hi2 - 1.0)).ln())
            && -logq > rdp_hi2;
        let dep = applies.then(|| {
            let log1q = log1mexp(logq);
            DepTerms {
                mu_hi1,
                log1q,
                logq,
                a_coef: log1q - log1mexp((logq + rdp_hi2) * (1.0 - 1.0 / mu_hi2)),
                b_coef: rdp_hi1 - logq / (mu_hi1 - 1.0),
            }
        });
        GaussianBound {
            variance,
            dep,
            zero: false,
        }
    }

    fn at(&self, order: f64) -> f64 {
        if self.zero {
            return 0.0;
        }
        let ind = order / self.variance;
        match self.dep {
            Some(d) if d.mu_hi1 > order => {
                let log_a = (order - 1.0) * d.a_coef;
                let log_b = (order - 1.0) * d.b_coef;
                let log_s = logaddexp(d.log1q + log_a, d.logq + log_b);
                crate::lnmax::np_minimum(ind, log_s / (order - 1.0))
            }
            _ => ind,
        }
    }
}

/// Data-dependent RDP of GNMax at one order, given `logq` (Theorem 6; the
/// reference's `rdp_gaussian` for a scalar order).
pub fn rdp_gaussian_at(logq: f64, sigma: f64, order: f64) -> f64 {
    GaussianBound::new(logq, sigma).at(order)
}

/// Data-dependent RDP curve of GNMax given `logq` (the reference's
/// `rdp_gaussian`): the smaller of Theorem 6's bound and `order / sigma^2`
/// wherever Theorem 6 applies, `order / sigma^2` elsewhere, 0 if `q = 0`.
/// Expects `logq <= 0`, `sigma > 0` and orders `> 1`.
pub fn rdp_gaussian(logq: f64, sigma: f64, orders: &[f64]) -> Vec<f64> {
    let b = GaussianBound::new(logq, sigma);
    orders.iter().map(|&a| b.at(a)).collect()
}

/// Adds the data-dependent GNMax RDP curve for `logq` into `total`.
pub fn add_rdp_gaussian(total: &mut [f64], logq: f64, sigma: f64, orders: &[f64], weight: f64) {
    let b = GaussianBound::new(logq, sigma);
    for (t, &a) in total.iter_mut().zip(orders) {
        *t += b.at(a) * weight;
    }
}

/// NumPy's `isclose` with its defaults (`rtol = 1e-5`, `atol = 1e-8`).
pub fn np_isclose(a: f64, b: f64) -> bool {
    if a == b {
        return true;
    }
    if !a.is_finite() || !b.is_finite() {
        return false;
    }
    (a - b).abs() <= 1e-8 + 1e-5 * b.abs()
}

/// Whether the data-independent bound is always as good as the
/// data-dependent one for GNMax at each order (the reference's
/// `is_data_independent_always_opt_gaussian`): true when even a unanimous
/// histogram gets no benefit, compared with NumPy's `isclose`.
pub fn is_data_independent_always_opt_gaussian(
    num_teachers: usize,
    num_classes: usize,
    sigma: f64,
    orders: &[f64],
) -> Vec<bool> {
    let mut unanimous = vec![0.0; num_classes.max(1)];
    unanimous[0] = num_teachers as f64;
    let logq = compute_logq_gaussian(&unanimous, sigma);
    let dep = rdp_gaussian(logq, sigma, orders);
    let ind = rdp_data_independent_gaussian(sigma, orders);
    dep.iter().zip(&ind).map(|(&d, &i)| np_isclose(d, i)).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn logq_two_classes_by_hand() {
        // Two classes, gap g: q = Pr[N(0, 2 sigma^2) > g] = erfc(g / (2 sigma)) / 2.
        let (g, sigma) = (30.0, 10.0);
        let lq = compute_logq_gaussian(&[g, 0.0], sigma);
        let expected = (crate::special::erfc(g / (2.0 * sigma)) / 2.0).ln();
        assert!(((lq - expected) / expected).abs() < 1e-13);
    }

    #[test]
    fn logq_deep_tail_is_finite() {
        // A gap of 250 with sigma 2: q ~ 1e-3400, far below f64's range.
        let lq = compute_logq_gaussian(&[250.0, 0.0, 0.0], 2.0);
        assert!(lq.is_finite() && lq < -3000.0);
        // ln(2) + ln Phi(-250/(2 sqrt 2)).
        let z: f64 = 250.0 / (2.0 * 2f64.sqrt());
        let approx = 2f64.ln() - z * z / 2.0 - (z * (2.0 * std::f64::consts::PI).sqrt()).ln();
        assert!((lq - approx).abs() < 1e-3);
    }

    #[test]
    fn data_independent_by_hand() {
        assert_eq!(rdp_data_independent_gaussian(40.0, &[16.0]), vec![0.01]);
        // q = 0 costs nothing; a huge q gets the data-independent bound.
        assert_eq!(rdp_gaussian(f64::NEG_INFINITY, 40.0, &[2.0]), vec![0.0]);
        assert_eq!(
            rdp_gaussian(0.5f64.ln(), 40.0, &[2.0, 10.0]),
            vec![2.0 / 1600.0, 10.0 / 1600.0]
        );
    }

    #[test]
    fn dependent_never_exceeds_independent() {
        for &lq in &[-1.0, -5.0, -20.0, -100.0, -1000.0] {
            let orders = crate::orders::default_orders();
            let dep = rdp_gaussian(lq, 20.0, &orders);
            let ind = rdp_data_independent_gaussian(20.0, &orders);
            assert!(dep.iter().zip(&ind).all(|(d, i)| d <= i && *d >= 0.0));
        }
    }
}
