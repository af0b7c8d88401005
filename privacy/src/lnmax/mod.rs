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
//!
//! One file per analysis: [`moments`] (the 2017 moments accountant and its
//! per-set totals), [`smoothed`] (the 2017 smoothed sensitivity of the log
//! moments) and [`rdp`] (the 2018 RDP form). Their items are re-exported
//! here, so callers name them `lnmax::*`.

mod moments;
mod rdp;
mod smoothed;

pub use moments::{
    compute_q_noisy_max, compute_q_noisy_max_approx, data_independent_logmgf_2017, logmgf_exact,
    logmgf_exact_checked, logmgf_from_counts, moments_2017_totals, Moments2017Totals,
};
pub(crate) use rdp::np_minimum;
pub use rdp::{compute_logq_laplace, rdp_pure_eps, rdp_pure_eps_at, rdp_pure_eps_data_independent};
pub use smoothed::{sens_at_k, smoothed_sens, smoothed_sens_moments, smoothed_sens_sorted, SmoothedSensVariant};

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

