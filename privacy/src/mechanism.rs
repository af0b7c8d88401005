//! The high-level per-query API the aggregator and the CLI use: a
//! [`Mechanism`] and its RDP curve per answered query, data-independent
//! (for budget enforcement) or data-dependent (for reports).
//!
//! Conventions (ARCHITECTURE.md, "Privacy model"): one record changes one vote,
//! so the histogram has L1 sensitivity 2 and L2 sensitivity `sqrt(2)`.
//!
//! * LNMax with Laplace scale `b` is pure `2/b`-DP; its RDP at order `a` is
//!   bounded by `min(a (2/b)^2 / 2, 2/b)` (the bound the reference's
//!   `rdp_pure_eps` returns when `q` is large).
//! * GNMax with noise `sigma` has RDP `a / sigma^2`.
//! * Confident GNMax pays the threshold step, `a / (2 sigma1^2)`, on every
//!   query and GNMax's `a / sigma2^2` on the answered ones. Before the
//!   answer is known the data-independent cost assumes it is answered.
//!
//! Data-dependent bounds come in two [`NoiseModel`]s: the reference's
//! (continuous noise, what the papers and their test vectors assume) and the
//! one the aggregator runs (OpenDP's integer noise, ties to the lowest
//! class), whose failure probability [`crate::discrete`] bounds. Only the
//! latter is sound for this project's ledgers.

use serde::{Deserialize, Serialize};
use thiserror::Error;

use crate::confident::{compute_logpr_answered, compute_rdp_data_independent_threshold, compute_rdp_threshold};
use crate::gnmax::{compute_logq_gaussian, rdp_data_independent_gaussian, rdp_gaussian};
use crate::lnmax::{compute_logq_laplace, rdp_pure_eps, rdp_pure_eps_data_independent};

pub use crate::orders::default_orders;
pub use crate::rdp::{eps_from_rdp, Conversion, EpsilonAt};

/// A noisy aggregation mechanism and its noise parameters.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind")]
pub enum Mechanism {
    /// Laplace noisy max with scale `b` on each count (`2/b`-DP).
    #[serde(rename = "lnmax")]
    LnMax {
        /// Laplace scale `b`.
        scale: f64,
    },
    /// Gaussian noisy max with standard deviation `sigma` on each count.
    #[serde(rename = "gnmax")]
    GnMax {
        /// Gaussian standard deviation.
        sigma: f64,
    },
    /// Confident GNMax: answer only if `max + N(0, sigma1^2) >= threshold`,
    /// then GNMax with `sigma2`.
    #[serde(rename = "confident-gnmax")]
    ConfidentGnMax {
        /// Threshold `T` on the top count.
        threshold: f64,
        /// Noise of the threshold test.
        sigma1: f64,
        /// Noise of the GNMax step.
        sigma2: f64,
    },
}

/// Mechanism names on the command line (`--mechanism`), shared by the
/// aggregator and `pate privacy` (clap's `ValueEnum` with the `clap` feature).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[cfg_attr(feature = "clap", derive(clap::ValueEnum))]
pub enum MechanismKind {
    /// Laplace noisy max (PATE 2017).
    Lnmax,
    /// Gaussian noisy max (PATE 2018).
    Gnmax,
    /// Gaussian noisy max behind a noisy consensus threshold (PATE 2018).
    ConfidentGnmax,
}

impl MechanismKind {
    /// The mechanism of this kind with its noise parameters (those the kind
    /// does not use are ignored); not yet validated.
    pub fn with_noise(self, scale: f64, sigma: f64, threshold: f64, sigma1: f64, sigma2: f64) -> Mechanism {
        match self {
            MechanismKind::Lnmax => Mechanism::LnMax { scale },
            MechanismKind::Gnmax => Mechanism::GnMax { sigma },
            MechanismKind::ConfidentGnmax => Mechanism::ConfidentGnMax { threshold, sigma1, sigma2 },
        }
    }
}

/// Which noise a data-dependent bound assumes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum NoiseModel {
    /// Continuous Laplace / Gaussian noise, as the 2017 and 2018 reference
    /// analyses (and their test vectors) assume.
    #[default]
    Continuous,
    /// The integer noise the aggregator draws (OpenDP discrete Laplace and
    /// discrete Gaussian) with ties to the lowest class: [`crate::discrete`].
    Discrete,
}

/// Invalid mechanism parameters.
#[derive(Debug, Clone, PartialEq, Error)]
pub enum MechanismError {
    /// A noise parameter is not a finite positive number.
    #[error("{name} must be a finite number > 0, got {value}")]
    NotPositive {
        /// Parameter name.
        name: &'static str,
        /// The value given.
        value: f64,
    },
    /// The threshold is not finite.
    #[error("threshold must be finite, got {0}")]
    BadThreshold(f64),
}

fn positive(name: &'static str, value: f64) -> Result<(), MechanismError> {
    if value > 0.0 && value.is_finite() {
        Ok(())
    } else {
        Err(MechanismError::NotPositive { name, value })
    }
}

impl Mechanism {
    /// Checks the parameters (noise finite and positive, threshold finite).
    pub fn validate(&self) -> Result<(), MechanismError> {
        match *self {
            Mechanism::LnMax { scale } => positive("scale", scale),
            Mechanism::GnMax { sigma } => positive("sigma", sigma),
            Mechanism::ConfidentGnMax {
                threshold,
                sigma1,
                sigma2,
            } => {
                if !threshold.is_finite() {
                    return Err(MechanismError::BadThreshold(threshold));
                }
                positive("sigma1", sigma1)?;
                positive("sigma2", sigma2)
            }
        }
    }

    /// The mechanism's name as the CLI spells it.
    pub fn name(&self) -> &'static str {
        match self {
            Mechanism::LnMax { .. } => "lnmax",
            Mechanism::GnMax { .. } => "gnmax",
            Mechanism::ConfidentGnMax { .. } => "confident-gnmax",
        }
    }
}

/// Per-query RDP curve at the given orders; data-independent (no votes).
///
/// For Confident GNMax this is the worst case, a query that is answered:
/// `a/(2 sigma1^2) + a/sigma2^2`. Parameters are assumed valid
/// ([`Mechanism::validate`]).
pub fn data_independent_rdp(m: &Mechanism, orders: &[f64]) -> Vec<f64> {
    data_independent_rdp_realized(m, true, orders)
}

/// Data-independent RDP of one query once it is known whether it was
/// answered. Only Confident GNMax can decline (then only the threshold step
/// is paid); the other mechanisms always answer and ignore `answered`.
///
/// Paying step 2 only on answered queries is sound because whether a query
/// is answered is itself the released output of step 1.
pub fn data_independent_rdp_realized(m: &Mechanism, answered: bool, orders: &[f64]) -> Vec<f64> {
    match *m {
        Mechanism::LnMax { scale } => rdp_pure_eps_data_independent(2.0 / scale, orders),
        Mechanism::GnMax { sigma } => rdp_data_independent_gaussian(sigma, orders),
        Mechanism::ConfidentGnMax { sigma1, sigma2, .. } => {
            let mut r = compute_rdp_data_independent_threshold(sigma1, orders);
            if answered {
                for (x, y) in r.iter_mut().zip(rdp_data_independent_gaussian(sigma2, orders)) {
                    *x += y;
                }
            }
            r
        }
    }
}

/// Whether a histogram can be used for a data-dependent bound: at least two
/// classes, every count finite and non-negative.
pub(crate) fn usable(votes: &[f64]) -> bool {
    votes.len() >= 2 && votes.iter().all(|v| v.is_finite() && *v >= 0.0)
}

/// Data-dependent per-query RDP curve from a vote histogram (counts per
/// class, f64).
///
/// For Confident GNMax `answered` says whether step 2 released:
/// `Some(true)` gives `rdp1 + rdp2`, `Some(false)` gives `rdp1`, and `None`
/// the expected cost `rdp1 + Pr[answered] * rdp2`. The other mechanisms
/// ignore `answered`.
///
/// A histogram with fewer than two classes or a negative or non-finite count
/// gets the data-independent curve (conservative) instead.
pub fn data_dependent_rdp(m: &Mechanism, votes: &[f64], answered: Option<bool>, orders: &[f64]) -> Vec<f64> {
    data_dependent_rdp_with(m, votes, answered, orders, NoiseModel::Continuous)
}

/// `ln Pr[answered]` of Confident-GNMax's threshold step under `model`.
pub fn log_pr_answered_with(threshold: f64, sigma1: f64, votes: &[f64], model: NoiseModel) -> f64 {
    match model {
        NoiseModel::Continuous => compute_logpr_answered(threshold, sigma1, votes),
        NoiseModel::Discrete => crate::discrete::log_pr_answered(threshold, sigma1, votes).0,
    }
}

/// [`data_dependent_rdp`] under a chosen [`NoiseModel`]. With
/// [`NoiseModel::Discrete`] the `q` fed to the data-dependent theorems is the
/// sound bound for the integer noise the aggregator draws (the theorems
/// themselves hold for any mechanism with the data-independent guarantee,
/// which the discrete samplers have; see [`crate::discrete`]).
pub fn data_dependent_rdp_with(
    m: &Mechanism,
    votes: &[f64],
    answered: Option<bool>,
    orders: &[f64],
    model: NoiseModel,
) -> Vec<f64> {
    use crate::discrete::{logq_noisy_max, DiscreteNoise};
    if !usable(votes) {
        return data_independent_rdp_realized(m, answered.unwrap_or(true), orders);
    }
    match *m {
        Mechanism::LnMax { scale } => {
            let logq = match model {
                NoiseModel::Continuous => compute_logq_laplace(votes, scale),
                NoiseModel::Discrete => logq_noisy_max(&DiscreteNoise::Laplace { scale }, votes),
            };
            rdp_pure_eps(logq, 2.0 / scale, orders)
        }
        Mechanism::GnMax { sigma } => rdp_gaussian(logq_gaussian(votes, sigma, model), sigma, orders),
        Mechanism::ConfidentGnMax {
            threshold,
            sigma1,
            sigma2,
        } => {
            let lpa = log_pr_answered_with(threshold, sigma1, votes, model);
            let mut r = match model {
                NoiseModel::Continuous => compute_rdp_threshold(lpa, sigma1, orders),
                NoiseModel::Discrete => rdp_gaussian(
                    crate::discrete::threshold_logq(threshold, sigma1, votes),
                    std::f64::consts::SQRT_2 * sigma1,
                    orders,
                ),
            };
            let weight = match answered {
                Some(true) => 1.0,
                Some(false) => return r,
                None => lpa.exp(),
            };
            let rdp2 = rdp_gaussian(logq_gaussian(votes, sigma2, model), sigma2, orders);
            for (x, y) in r.iter_mut().zip(rdp2) {
                *x += y * weight;
            }
            r
        }
    }
}

/// The GNMax `logq` under `model`.
fn logq_gaussian(votes: &[f64], sigma: f64, model: NoiseModel) -> f64 {
    match model {
        NoiseModel::Continuous => compute_logq_gaussian(votes, sigma),
        NoiseModel::Discrete => {
            crate::discrete::logq_noisy_max(&crate::discrete::DiscreteNoise::Gaussian { sigma }, votes)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn data_independent_by_hand() {
        let o = [2.0, 20.0];
        assert_eq!(
            data_independent_rdp(&Mechanism::GnMax { sigma: 10.0 }, &o),
            vec![0.02, 0.2]
        );
        // LNMax b = 20: eps = 0.1; min(a * 0.01 / 2, 0.1).
        let l = data_independent_rdp(&Mechanism::LnMax { scale: 20.0 }, &o);
        assert!((l[0] - 0.01).abs() < 1e-16 && (l[1] - 0.1).abs() < 1e-16);
        let c = Mechanism::ConfidentGnMax {
            threshold: 200.0,
            sigma1: 10.0,
            sigma2: 10.0,
        };
        let r = data_independent_rdp(&c, &o);
        assert!((r[0] - (0.01 + 0.02)).abs() < 1e-15);
        let r = data_independent_rdp_realized(&c, false, &o);
        assert!((r[0] - 0.01).abs() < 1e-15);
    }

    #[test]
    fn validation() {
        assert!(Mechanism::LnMax { scale: 0.0 }.validate().is_err());
        assert!(Mechanism::GnMax { sigma: f64::NAN }.validate().is_err());
        assert!(Mechanism::ConfidentGnMax {
            threshold: f64::INFINITY,
            sigma1: 1.0,
            sigma2: 1.0
        }
        .validate()
        .is_err());
        assert!(Mechanism::ConfidentGnMax {
            threshold: 1.0,
            sigma1: 1.0,
            sigma2: 1.0
        }
        .validate()
        .is_ok());
    }

    #[test]
    fn dependent_below_independent_and_fallback() {
        let o = default_orders();
        let v = [240.0, 5.0, 5.0];
        for m in [
            Mechanism::LnMax { scale: 20.0 },
            Mechanism::GnMax { sigma: 40.0 },
            Mechanism::ConfidentGnMax {
                threshold: 200.0,
                sigma1: 150.0,
                sigma2: 40.0,
            },
        ] {
            let d = data_dependent_rdp(&m, &v, Some(true), &o);
            let i = data_independent_rdp(&m, &o);
            assert!(d.iter().zip(&i).all(|(a, b)| a <= b), "{m:?}");
            assert_eq!(data_dependent_rdp(&m, &[1.0], None, &o), i);
        }
    }

    #[test]
    fn serde_names() {
        let s = serde_json::to_string(&Mechanism::ConfidentGnMax {
            threshold: 1.0,
            sigma1: 2.0,
            sigma2: 3.0,
        })
        .expect("serializes");
        assert_eq!(
            s,
            r#"{"kind":"confident-gnmax","threshold":1.0,"sigma1":2.0,"sigma2":3.0}"#
        );
    }
}
