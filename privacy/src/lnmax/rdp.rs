//! The 2018 RDP form of LNMax (Papernot et al. 2018,
//! `research/pate_2018/core.py`): `compute_logq_laplace` and the RDP of a
//! pure-epsilon mechanism with a data-dependent `q` (Theorem 3 of the 2017
//! paper).

use crate::special::{argmax, log1mexp, logaddexp, logsumexp};


/// Upper bound on `ln Pr[outcome != argmax]` for LNMax with Laplace scale
/// `lambda` (2018 `compute_logq_laplace`), capped at `ln(1 - 1/n)`.
pub fn compute_logq_laplace(counts: &[f64], lambda: f64) -> f64 {
    let idx = argmax(counts).unwrap_or(0);
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

