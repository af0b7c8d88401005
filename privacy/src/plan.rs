//! Sizing an experiment before spending anything (`pate privacy plan`): the
//! smallest noise whose data-independent epsilon after `Q` answered queries
//! is at most a target at `delta`.
//!
//! The noise searched is the Laplace scale for LNMax, sigma for GNMax and
//! sigma2 for Confident GNMax (threshold and sigma1 given; the
//! data-independent bound assumes every query is answered, so the threshold
//! itself does not matter). The data-independent epsilon falls as the noise
//! grows, so a bisection on a bracket found by doubling converges to the
//! smallest feasible value; the answer returned always meets the target.

use serde::{Deserialize, Serialize};
use thiserror::Error;

use crate::mechanism::{data_independent_rdp, Mechanism, MechanismError};
use crate::orders::default_orders;
use crate::rdp::{check_delta, check_orders, eps_from_rdp, Conversion, RdpError};

/// Which mechanism to size.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind")]
pub enum PlanMechanism {
    /// Search the Laplace scale.
    #[serde(rename = "lnmax")]
    LnMax,
    /// Search sigma.
    #[serde(rename = "gnmax")]
    GnMax,
    /// Search sigma2 with the threshold step fixed.
    #[serde(rename = "confident-gnmax")]
    ConfidentGnMax {
        /// Threshold `T`.
        threshold: f64,
        /// Noise of the threshold test.
        sigma1: f64,
    },
}

/// What to plan for.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PlanRequest {
    /// Mechanism to size.
    pub mechanism: PlanMechanism,
    /// Largest acceptable epsilon.
    pub target_epsilon: f64,
    /// Delta.
    pub delta: f64,
    /// Number of answered queries.
    pub queries: u64,
    /// Conversion.
    #[serde(default)]
    pub conversion: Conversion,
    /// Orders (default: the default orders).
    #[serde(default)]
    pub orders: Option<Vec<f64>>,
}

/// The plan.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Plan {
    /// The mechanism with the noise chosen.
    pub mechanism: Mechanism,
    /// Name of the parameter searched (`scale`, `sigma` or `sigma2`).
    pub parameter: String,
    /// Its smallest value meeting the target (to about 1e-9 relative).
    pub value: f64,
    /// Data-independent epsilon achieved with that value.
    pub epsilon: f64,
    /// Order attaining it.
    pub order: f64,
    /// The target.
    pub target_epsilon: f64,
    /// Delta.
    pub delta: f64,
    /// Number of queries.
    pub queries: u64,
    /// Conversion used.
    pub conversion: Conversion,
}

/// Errors of [`plan`].
#[derive(Debug, Clone, PartialEq, Error)]
pub enum PlanError {
    /// Bad delta or orders.
    #[error(transparent)]
    Rdp(#[from] RdpError),
    /// Bad threshold-step parameters.
    #[error(transparent)]
    Mechanism(#[from] MechanismError),
    /// The target epsilon is not positive and finite.
    #[error("target epsilon must be a finite number > 0, got {0}")]
    BadTarget(f64),
    /// No queries.
    #[error("the number of queries must be at least 1")]
    NoQueries,
    /// Even infinite noise misses the target (the threshold step alone, or
    /// the delta term, exceeds it).
    #[error("target epsilon {target} cannot be met: even with unbounded noise epsilon stays at {floor}")]
    Infeasible {
        /// The target.
        target: f64,
        /// Epsilon as the noise goes to infinity.
        floor: f64,
    },
}

fn build(m: PlanMechanism, noise: f64) -> Mechanism {
    match m {
        PlanMechanism::LnMax => Mechanism::LnMax { scale: noise },
        PlanMechanism::GnMax => Mechanism::GnMax { sigma: noise },
        PlanMechanism::ConfidentGnMax { threshold, sigma1 } => Mechanism::ConfidentGnMax {
            threshold,
            sigma1,
            sigma2: noise,
        },
    }
}

/// Finds the smallest noise meeting the target (see the module docs).
pub fn plan(req: &PlanRequest) -> Result<Plan, PlanError> {
    check_delta(req.delta)?;
    if !(req.target_epsilon > 0.0 && req.target_epsilon.is_finite()) {
        return Err(PlanError::BadTarget(req.target_epsilon));
    }
    if req.queries == 0 {
        return Err(PlanError::NoQueries);
    }
    let orders = req.orders.clone().unwrap_or_else(default_orders);
    check_orders(&orders)?;
    build(req.mechanism, 1.0).validate()?;
    let q = req.queries as f64;
    let eps = |noise: f64| {
        let per = data_independent_rdp(&build(req.mechanism, noise), &orders);
        let total: Vec<f64> = per.iter().map(|r| r * q).collect();
        eps_from_rdp(&total, &orders, req.delta, req.conversion)
    };
    let target = req.target_epsilon;
    // Feasibility: the limit of infinite noise.
    let floor = eps(f64::MAX.sqrt()).epsilon;
    if floor.is_nan() || floor >= target {
        return Err(PlanError::Infeasible { target, floor });
    }
    let mut hi = 1.0;
    while eps(hi).epsilon > target {
        hi *= 2.0;
        if hi > 1e150 {
            return Err(PlanError::Infeasible { target, floor });
        }
    }
    let mut lo = hi / 2.0;
    while eps(lo).epsilon <= target {
        lo /= 2.0;
        if lo < 1e-150 {
            break;
        }
    }
    for _ in 0..200 {
        if (hi - lo) <= 1e-12 * hi {
            break;
        }
        let mid = 0.5 * (lo + hi);
        if eps(mid).epsilon <= target {
            hi = mid;
        } else {
            lo = mid;
        }
    }
    let e = eps(hi);
    let parameter = match req.mechanism {
        PlanMechanism::LnMax => "scale",
        PlanMechanism::GnMax => "sigma",
        PlanMechanism::ConfidentGnMax { .. } => "sigma2",
    };
    Ok(Plan {
        mechanism: build(req.mechanism, hi),
        parameter: parameter.to_string(),
        value: hi,
        epsilon: e.epsilon,
        order: e.order,
        target_epsilon: target,
        delta: req.delta,
        queries: req.queries,
        conversion: req.conversion,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn req(m: PlanMechanism, target: f64, queries: u64) -> PlanRequest {
        PlanRequest {
            mechanism: m,
            target_epsilon: target,
            delta: 1e-5,
            queries,
            conversion: Conversion::Classic,
            orders: None,
        }
    }

    #[test]
    fn gnmax_plan_is_tight() {
        let p = plan(&req(PlanMechanism::GnMax, 2.0, 100)).expect("feasible");
        assert!(p.epsilon <= 2.0);
        // A slightly smaller sigma misses the target.
        let orders = default_orders();
        let s = p.value * (1.0 - 1e-6);
        let total: Vec<f64> = orders.iter().map(|a| 100.0 * a / (s * s)).collect();
        assert!(eps_from_rdp(&total, &orders, 1e-5, Conversion::Classic).epsilon > 2.0);
    }

    #[test]
    fn infeasible_and_bad_inputs() {
        // The threshold step alone costs more than the target.
        let r = req(
            PlanMechanism::ConfidentGnMax {
                threshold: 200.0,
                sigma1: 1.0,
            },
            1.0,
            1000,
        );
        assert!(matches!(plan(&r), Err(PlanError::Infeasible { .. })));
        assert!(matches!(
            plan(&req(PlanMechanism::GnMax, -1.0, 10)),
            Err(PlanError::BadTarget(_))
        ));
        assert!(matches!(
            plan(&req(PlanMechanism::GnMax, 1.0, 0)),
            Err(PlanError::NoQueries)
        ));
        // ln(1/delta)/(500-1) = 0.023 > 0.01: no noise is enough.
        assert!(matches!(
            plan(&req(PlanMechanism::LnMax, 0.01, 1)),
            Err(PlanError::Infeasible { .. })
        ));
    }

    #[test]
    fn lnmax_plan_close_to_paper() {
        // 100 queries at b = 20 give a data-independent epsilon of a few
        // units; planning for exactly that epsilon returns b ~ 20.
        let orders = default_orders();
        let per = data_independent_rdp(&Mechanism::LnMax { scale: 20.0 }, &orders);
        let total: Vec<f64> = per.iter().map(|r| r * 100.0).collect();
        let e = eps_from_rdp(&total, &orders, 1e-5, Conversion::Classic).epsilon;
        let p = plan(&req(PlanMechanism::LnMax, e, 100)).expect("feasible");
        assert!((p.value - 20.0).abs() < 1e-6, "{}", p.value);
    }
}
