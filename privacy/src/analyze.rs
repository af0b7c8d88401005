//! Analysis of a whole set of answered queries (what `pate privacy analyze`
//! prints): data-dependent and data-independent epsilon under the RDP
//! accountant or the 2017 moments accountant, and the parameters for
//! releasing the data-dependent epsilon with smooth sensitivity.
//!
//! With the defaults (RDP, classic conversion, the default orders; or, for
//! `Moments2017`, moments 1..=8 and beta 0.09) the epsilons equal the
//! reference's per-set totals for the same votes.

use serde::{Deserialize, Serialize};
use thiserror::Error;

use crate::lnmax::{moments_2017_totals, SmoothedSensVariant};
use crate::mechanism::{data_dependent_rdp_with, data_independent_rdp_realized, Mechanism, MechanismError, NoiseModel};
use crate::release::{release_params, ReleaseParams};
use crate::orders::default_orders;
use crate::rdp::{check_delta, check_orders, eps_from_rdp, Conversion, RdpError};
use crate::ss_release::{analyze_ss_release, SsRelease, ThresholdStep};

/// Which accountant to use.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Accountant {
    /// Rényi DP (2018), over a list of orders.
    #[default]
    Rdp,
    /// The 2017 moments accountant (LNMax only), over moments `l = 1..=8`.
    Moments2017,
}

impl std::str::FromStr for Accountant {
    type Err = AnalyzeError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.to_ascii_lowercase().as_str() {
            "rdp" => Ok(Accountant::Rdp),
            "moments2017" | "moments-2017" | "moments" => Ok(Accountant::Moments2017),
            _ => Err(AnalyzeError::UnknownAccountant(s.to_string())),
        }
    }
}

/// Errors of [`analyze`].
#[derive(Debug, Clone, PartialEq, Error)]
pub enum AnalyzeError {
    /// Invalid mechanism parameters.
    #[error(transparent)]
    Mechanism(#[from] MechanismError),
    /// Invalid delta or orders.
    #[error(transparent)]
    Rdp(#[from] RdpError),
    /// No queries.
    #[error("no queries to analyze")]
    NoQueries,
    /// A histogram is unusable.
    #[error("query {query}: {reason}")]
    BadHistogram {
        /// 0-based query index.
        query: usize,
        /// What is wrong.
        reason: String,
    },
    /// The moments accountant was asked for a mechanism other than LNMax.
    #[error("the moments2017 accountant only analyzes lnmax, not {0}")]
    MomentsNeedLnMax(&'static str),
    /// `answered` was given with the wrong length or for a mechanism that
    /// always answers.
    #[error("answered flags: {0}")]
    BadAnswered(String),
    /// Unknown accountant name.
    #[error("unknown accountant {0:?} (expected rdp or moments2017)")]
    UnknownAccountant(String),
}

/// Options of [`analyze_with`].
#[derive(Debug, Clone, PartialEq)]
pub struct AnalyzeOptions {
    /// Target delta.
    pub delta: f64,
    /// Accountant.
    pub accountant: Accountant,
    /// RDP to (eps, delta) conversion (RDP accountant only).
    pub conversion: Conversion,
    /// Orders (default: [`default_orders`]).
    pub orders: Option<Vec<f64>>,
    /// For Confident GNMax: which queries were answered (realized cost);
    /// `None` gives the expected cost.
    pub answered: Option<Vec<bool>>,
    /// Compute the smooth-sensitivity release parameters (GNMax and
    /// Confident GNMax under RDP; the 2017 smoothed sensitivity under
    /// moments2017).
    pub smooth_sensitivity: bool,
    /// Smoothness beta of the 2017 smoothed sensitivity (0.09 in the paper).
    pub beta_2017: f64,
    /// Number of moments of the 2017 accountant (8).
    pub moments_2017: u32,
    /// Number of teachers (default: the largest row sum).
    pub num_teachers: Option<usize>,
    /// Which noise the data-dependent bounds assume: the reference's
    /// continuous noise (default, reproduces the papers) or the integer
    /// noise the aggregator draws (for its ledgers). Under
    /// [`NoiseModel::Discrete`] the smooth-sensitivity release is
    /// [`crate::release`]'s, reported in `release`.
    pub noise_model: NoiseModel,
}

impl Default for AnalyzeOptions {
    fn default() -> Self {
        AnalyzeOptions {
            delta: 1e-5,
            accountant: Accountant::Rdp,
            conversion: Conversion::Classic,
            orders: None,
            answered: None,
            smooth_sensitivity: true,
            beta_2017: 0.09,
            moments_2017: 8,
            num_teachers: None,
            noise_model: NoiseModel::Continuous,
        }
    }
}

/// The 2017 smoothed-sensitivity release of the data-dependent epsilon.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Smoothed2017 {
    /// Smoothness beta.
    pub beta: f64,
    /// Sum of the smoothed sensitivities over queries divided by `l`, at the
    /// moment that attains epsilon. Computed on sorted histograms (the
    /// reference tests the histogram in class order, so its value depends on
    /// how the classes are numbered).
    pub smoothed_sensitivity: f64,
    /// The same for every moment `l = 1..`.
    pub smoothed_sensitivity_per_moment: Vec<f64>,
    /// `2 beta ln(1/delta)`: the epsilon of the release.
    pub ss_eps: f64,
    /// Laplace scale per unit of smoothed sensitivity, `2 / ss_eps`.
    pub ss_scale: f64,
}

/// The report of [`analyze`] (serialised as the CLI's JSON).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AnalysisReport {
    /// The mechanism and its parameters.
    pub mechanism: Mechanism,
    /// Accountant used.
    pub accountant: Accountant,
    /// Conversion used (RDP only).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub conversion: Option<Conversion>,
    /// Target delta.
    pub delta: f64,
    /// Number of queries analysed.
    pub queries: usize,
    /// Number of classes.
    pub num_classes: usize,
    /// Number of teachers (largest row sum unless given).
    pub num_teachers: usize,
    /// Data-dependent epsilon at `delta`.
    pub epsilon: f64,
    /// Rényi order attaining `epsilon` (RDP).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub order: Option<f64>,
    /// Moment attaining `epsilon` (moments2017).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub moment: Option<u32>,
    /// Data-independent epsilon at `delta`.
    pub data_independent_epsilon: f64,
    /// Order attaining it (RDP).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub data_independent_order: Option<f64>,
    /// Moment attaining it (moments2017).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub data_independent_moment: Option<u32>,
    /// LNMax only: the basic composition bound `Q * 2/b` (pure DP, any delta).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub pure_dp_epsilon: Option<f64>,
    /// Confident GNMax: expected number of answered queries.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub expected_answered: Option<f64>,
    /// Confident GNMax with realized answers: number answered.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub answered: Option<usize>,
    /// GNMax / Confident GNMax under RDP: smooth-sensitivity release.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub smooth_sensitivity: Option<SsRelease>,
    /// Why the smooth-sensitivity analysis could not be done, if it failed.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub smooth_sensitivity_error: Option<String>,
    /// LNMax under moments2017: the 2017 smoothed-sensitivity release.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub smoothed_sensitivity_2017: Option<Smoothed2017>,
    /// Which noise the data-dependent bounds assumed.
    pub noise_model: NoiseModel,
    /// Under the discrete noise model: the parameters of releasing the
    /// data-dependent epsilon with smooth sensitivity (nothing drawn).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub release: Option<ReleaseParams>,
}

/// Analyses a votes matrix with the default options at `delta`.
pub fn analyze(
    votes: &[Vec<f64>],
    mechanism: &Mechanism,
    delta: f64,
    accountant: Accountant,
) -> Result<AnalysisReport, AnalyzeError> {
    analyze_with(
        votes,
        mechanism,
        &AnalyzeOptions {
            delta,
            accountant,
            ..AnalyzeOptions::default()
        },
    )
}

fn check_votes(votes: &[Vec<f64>]) -> Result<usize, AnalyzeError> {
    let first = votes.first().ok_or(AnalyzeError::NoQueries)?;
    let m = first.len();
    for (i, v) in votes.iter().enumerate() {
        if v.len() != m {
            return Err(AnalyzeError::BadHistogram {
                query: i,
                reason: format!("{} classes, expected {m}", v.len()),
            });
        }
        if v.len() < 2 {
            return Err(AnalyzeError::BadHistogram {
                query: i,
                reason: "fewer than 2 classes".into(),
            });
        }
        if let Some(x) = v.iter().find(|x| !(x.is_finite() && **x >= 0.0)) {
            return Err(AnalyzeError::BadHistogram {
                query: i,
                reason: format!("vote count {x} is not >= 0"),
            });
        }
    }
    Ok(m)
}

/// Analyses a votes matrix (rows = queries, columns = class counts).
pub fn analyze_with(
    votes: &[Vec<f64>],
    mechanism: &Mechanism,
    opts: &AnalyzeOptions,
) -> Result<AnalysisReport, AnalyzeError> {
    mechanism.validate()?;
    check_delta(opts.delta)?;
    let num_classes = check_votes(votes)?;
    let q = votes.len();
    let num_teachers = opts
        .num_teachers
        .unwrap_or_else(|| votes.iter().map(|v| v.iter().sum::<f64>()).fold(0.0, f64::max).round() as usize);
    let is_confident = matches!(mechanism, Mechanism::ConfidentGnMax { .. });
    if let Some(a) = &opts.answered {
        if !is_confident {
            return Err(AnalyzeError::BadAnswered(format!(
                "{} answers every query",
                mechanism.name()
            )));
        }
        if a.len() != q {
            return Err(AnalyzeError::BadAnswered(format!("{} flags for {q} queries", a.len())));
        }
    }
    let mut report = AnalysisReport {
        mechanism: *mechanism,
        accountant: opts.accountant,
        conversion: None,
        delta: opts.delta,
        queries: q,
        num_classes,
        num_teachers,
        epsilon: f64::NAN,
        order: None,
        moment: None,
        data_independent_epsilon: f64::NAN,
        data_independent_order: None,
        data_independent_moment: None,
        pure_dp_epsilon: None,
        expected_answered: None,
        answered: None,
        smooth_sensitivity: None,
        smooth_sensitivity_error: None,
        smoothed_sensitivity_2017: None,
        noise_model: opts.noise_model,
        release: None,
    };
    if let Mechanism::LnMax { scale } = mechanism {
        report.pure_dp_epsilon = Some(q as f64 * 2.0 / scale);
    }

    match opts.accountant {
        Accountant::Moments2017 => {
            let Mechanism::LnMax { scale } = *mechanism else {
                return Err(AnalyzeError::MomentsNeedLnMax(mechanism.name()));
            };
            let t = moments_2017_totals(
                votes,
                1.0 / scale,
                opts.delta,
                opts.beta_2017,
                opts.moments_2017.max(1),
                opts.smooth_sensitivity.then_some(SmoothedSensVariant::Sorted),
            );
            report.epsilon = t.eps;
            report.moment = Some(t.eps_argmin_moment);
            report.data_independent_epsilon = t.data_independent_eps;
            report.data_independent_moment = Some(t.data_independent_argmin_moment);
            if opts.smooth_sensitivity {
                let idx = t.eps_argmin_moment as usize - 1;
                report.smoothed_sensitivity_2017 = Some(Smoothed2017 {
                    beta: opts.beta_2017,
                    smoothed_sensitivity: t
                        .smoothed_sensitivity_total_over_l
                        .get(idx)
                        .copied()
                        .unwrap_or(f64::NAN),
                    smoothed_sensitivity_per_moment: t.smoothed_sensitivity_total_over_l,
                    ss_eps: t.ss_eps,
                    ss_scale: t.ss_scale,
                });
            }
        }
        Accountant::Rdp => {
            let default;
            let orders: &[f64] = match &opts.orders {
                Some(o) => o,
                None => {
                    default = default_orders();
                    &default
                }
            };
            check_orders(orders)?;
            report.conversion = Some(opts.conversion);
            let mut dep = vec![0.0; orders.len()];
            let mut ind = vec![0.0; orders.len()];
            let ind_answered = data_independent_rdp_realized(mechanism, true, orders);
            let ind_declined = data_independent_rdp_realized(mechanism, false, orders);
            let mut n_answered = 0usize;
            for (i, v) in votes.iter().enumerate() {
                let ans = opts.answered.as_ref().and_then(|a| a.get(i).copied());
                let r = data_dependent_rdp_with(mechanism, v, ans, orders, opts.noise_model);
                crate::rdp::accumulate(&mut dep, &r);
                if ans != Some(false) {
                    n_answered += 1;
                }
            }
            // Data-independent: every query answered, unless realized answers
            // are known (then declined queries pay the threshold step only).
            let n_declined = q - n_answered;
            for j in 0..orders.len() {
                ind[j] = n_answered as f64 * ind_answered[j] + n_declined as f64 * ind_declined[j];
            }
            let e = eps_from_rdp(&dep, orders, opts.delta, opts.conversion);
            let d = eps_from_rdp(&ind, orders, opts.delta, opts.conversion);
            report.epsilon = e.epsilon;
            report.order = Some(e.order);
            report.data_independent_epsilon = d.epsilon;
            report.data_independent_order = Some(d.order);
            if let Mechanism::ConfidentGnMax { threshold, sigma1, .. } = *mechanism {
                report.expected_answered = Some(
                    votes
                        .iter()
                        .map(|v| crate::mechanism::log_pr_answered_with(threshold, sigma1, v, opts.noise_model).exp())
                        .sum(),
                );
                if opts.answered.is_some() {
                    report.answered = Some(n_answered);
                }
            }
            if opts.smooth_sensitivity && opts.noise_model == NoiseModel::Discrete {
                if !matches!(mechanism, Mechanism::LnMax { .. }) {
                    match release_params(mechanism, votes, opts.answered.as_deref(), num_teachers, opts.delta, orders) {
                        Ok(p) => report.release = Some(p),
                        Err(e) => report.smooth_sensitivity_error = Some(e.to_string()),
                    }
                }
            } else if opts.smooth_sensitivity {
                let (step1, sigma2) = match *mechanism {
                    Mechanism::GnMax { sigma } => (None, Some(sigma)),
                    Mechanism::ConfidentGnMax {
                        threshold,
                        sigma1,
                        sigma2,
                    } => (Some(ThresholdStep { threshold, sigma1 }), Some(sigma2)),
                    Mechanism::LnMax { .. } => (None, None),
                };
                if let Some(sigma2) = sigma2 {
                    match analyze_ss_release(
                        votes,
                        num_teachers,
                        step1,
                        sigma2,
                        opts.delta,
                        orders,
                        opts.answered.as_deref(),
                    ) {
                        Ok(s) => report.smooth_sensitivity = Some(s),
                        Err(e) => report.smooth_sensitivity_error = Some(e.to_string()),
                    }
                }
            }
        }
    }
    Ok(report)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rejects_bad_input() {
        let m = Mechanism::GnMax { sigma: 40.0 };
        assert_eq!(analyze(&[], &m, 1e-5, Accountant::Rdp), Err(AnalyzeError::NoQueries));
        let bad = vec![vec![1.0, 2.0], vec![1.0]];
        assert!(matches!(
            analyze(&bad, &m, 1e-5, Accountant::Rdp),
            Err(AnalyzeError::BadHistogram { query: 1, .. })
        ));
        let v = vec![vec![10.0, 0.0]];
        assert!(matches!(
            analyze(&v, &m, 2.0, Accountant::Rdp),
            Err(AnalyzeError::Rdp(_))
        ));
        assert!(matches!(
            analyze(&v, &m, 1e-5, Accountant::Moments2017),
            Err(AnalyzeError::MomentsNeedLnMax(_))
        ));
        let opts = AnalyzeOptions {
            answered: Some(vec![true]),
            ..Default::default()
        };
        assert!(matches!(analyze_with(&v, &m, &opts), Err(AnalyzeError::BadAnswered(_))));
        assert!("nope".parse::<Accountant>().is_err());
        assert_eq!("moments2017".parse::<Accountant>(), Ok(Accountant::Moments2017));
    }

    #[test]
    fn report_serializes() {
        let v = vec![vec![200.0, 30.0, 20.0]; 5];
        let r = analyze(&v, &Mechanism::LnMax { scale: 20.0 }, 1e-5, Accountant::Rdp).expect("ok");
        let j = serde_json::to_value(&r).expect("json");
        for k in ["epsilon", "order", "data_independent_epsilon", "queries"] {
            assert!(j.get(k).is_some(), "{k} missing in {j}");
        }
        assert!(r.epsilon <= r.data_independent_epsilon);
    }
}
