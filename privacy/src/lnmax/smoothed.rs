//! The 2017 smoothed sensitivity of LNMax's log moments (Papernot et al.
//! 2017, `research/pate_2017/smooth_sensitivity.py`), the reference's
//! class-order-dependent form and a sorted companion.

use serde::{Deserialize, Serialize};

use super::moments::{compute_q_noisy_max, logmgf_exact, logmgf_from_counts};

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

/// Which smoothed sensitivity the 2017 totals use.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SmoothedSensVariant {
    /// The reference's, on the histogram as given (class-order dependent).
    Reference,
    /// Ours, on the sorted histogram.
    Sorted,
}
