//! The global privacy budget of an aggregator.
//!
//! Every answered query composes into one budget, whichever student asked:
//! the budget protects the teachers' data. Spending is tracked on the
//! data-independent bound, which depends on nothing but the mechanism, so
//! the decision to answer leaks nothing about the votes. For LNMax the pure
//! composition `n * 2/b` is tracked beside the RDP curve and the smaller
//! epsilon wins; with `delta = 0` only the pure one applies.

use crate::mechanism::{data_independent_rdp, data_independent_rdp_realized, Mechanism};
use crate::rdp::{eps_from_rdp, Conversion};

/// Why a budget could not be built or a query was refused.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum BudgetError {
    /// The limit is not a finite positive epsilon.
    #[error("epsilon limit must be finite and > 0, got {0}")]
    BadLimit(f64),
    /// Delta outside [0, 1).
    #[error("delta must be in [0, 1), got {0}")]
    BadDelta(f64),
    /// A mechanism without a pure-DP guarantee needs delta > 0.
    #[error("{0} has no pure-DP guarantee: set delta > 0")]
    NeedsDelta(&'static str),
    /// Answering would pass the limit.
    #[error(
        "privacy budget exhausted: answering {asked} more queries would spend epsilon {would_be:.4} \
         over the limit {limit}; spent {spent:.4}, remaining {remaining:.4}, at most {affordable} more queries fit"
    )]
    Exhausted {
        /// Queries in the refused request.
        asked: u64,
        /// Epsilon spent so far.
        spent: f64,
        /// Epsilon after answering.
        would_be: f64,
        /// The configured limit.
        limit: f64,
        /// `limit - spent`.
        remaining: f64,
        /// How many queries still fit.
        affordable: u64,
    },
}

/// A snapshot of the budget, as reported to students and operators.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct BudgetSnapshot {
    /// Data-independent epsilon spent.
    pub epsilon_spent: f64,
    /// The configured limit.
    pub epsilon_limit: f64,
    /// Delta of the guarantee (0 for pure DP).
    pub delta: f64,
    /// Queries answered with a label.
    pub queries_answered: u64,
    /// Queries refused for lack of budget.
    pub queries_refused: u64,
    /// Queries the mechanism declined to answer (Confident-GNMax).
    pub queries_abstained: u64,
}

/// Composition of every answered query against one limit.
#[derive(Debug, Clone)]
pub struct Budget {
    mechanism: Mechanism,
    limit: f64,
    delta: f64,
    orders: Vec<f64>,
    rdp: Vec<f64>,
    pure: f64,
    reserved: u64,
    answered: u64,
    refused: u64,
    abstained: u64,
}

impl Budget {
    /// An empty budget for `mechanism` at `(limit, delta)` over `orders`.
    pub fn new(mechanism: Mechanism, limit: f64, delta: f64, orders: Vec<f64>) -> Result<Self, BudgetError> {
        if !(limit.is_finite() && limit > 0.0) {
            return Err(BudgetError::BadLimit(limit));
        }
        if !(0.0..1.0).contains(&delta) {
            return Err(BudgetError::BadDelta(delta));
        }
        if delta == 0.0 && pure_eps(&mechanism).is_infinite() {
            return Err(BudgetError::NeedsDelta(mechanism.name()));
        }
        let rdp = vec![0.0; orders.len()];
        Ok(Budget { mechanism, limit, delta, orders, rdp, pure: 0.0, reserved: 0, answered: 0, refused: 0, abstained: 0 })
    }

    /// Epsilon at this budget's delta of a total (RDP curve, pure epsilon).
    fn epsilon_of(&self, rdp: &[f64], pure: f64) -> f64 {
        if self.delta == 0.0 {
            return pure;
        }
        eps_from_rdp(rdp, &self.orders, self.delta, Conversion::Classic).epsilon.min(pure)
    }

    /// Epsilon spent so far.
    pub fn spent(&self) -> f64 {
        if self.answered + self.abstained == 0 {
            return 0.0;
        }
        self.epsilon_of(&self.rdp, self.pure)
    }

    /// Epsilon after `n` more worst-case queries.
    fn spent_after(&self, n: u64) -> f64 {
        let per_query = data_independent_rdp(&self.mechanism, &self.orders);
        let rdp: Vec<f64> = self.rdp.iter().zip(&per_query).map(|(t, q)| t + n as f64 * q).collect();
        self.epsilon_of(&rdp, self.pure + n as f64 * pure_eps(&self.mechanism))
    }

    /// The most further queries that fit under the limit.
    pub fn affordable(&self) -> u64 {
        if self.spent_after(1) > self.limit {
            return 0;
        }
        let (mut lo, mut hi) = (1u64, 2u64);
        while self.spent_after(hi) <= self.limit {
            lo = hi;
            hi = hi.saturating_mul(2);
            if hi == u64::MAX {
                return lo;
            }
        }
        while hi - lo > 1 {
            let mid = lo + (hi - lo) / 2;
            if self.spent_after(mid) <= self.limit {
                lo = mid;
            } else {
                hi = mid;
            }
        }
        lo
    }

    /// Reserves room for `n` more queries, worst case (every one answered),
    /// on top of those already reserved; refuses and counts the refusal if
    /// they do not fit. Reservations let concurrent requests share one
    /// budget without ever overdrawing it.
    pub fn reserve(&mut self, n: u64) -> Result<(), BudgetError> {
        let would_be = self.spent_after(self.reserved + n);
        if would_be <= self.limit {
            self.reserved += n;
            return Ok(());
        }
        self.refused += n;
        let spent = self.spent();
        Err(BudgetError::Exhausted {
            asked: n,
            spent,
            would_be,
            limit: self.limit,
            remaining: (self.limit - spent).max(0.0),
            affordable: self.affordable().saturating_sub(self.reserved),
        })
    }

    /// Gives back `n` reserved queries (answered, or failed at no cost).
    pub fn release(&mut self, n: u64) {
        self.reserved = self.reserved.saturating_sub(n);
    }

    /// Records one query's realized cost: `answered` is false only when the
    /// mechanism abstained.
    pub fn charge(&mut self, answered: bool) {
        let cost = self.query_cost(answered);
        self.restore(&cost, answered);
    }

    /// Records a query charged in an earlier run (restored from a ledger):
    /// its data-independent RDP curve as recorded then.
    pub fn restore(&mut self, rdp: &[f64], answered: bool) {
        self.rdp.iter_mut().zip(rdp).for_each(|(t, c)| *t += c);
        if answered {
            self.pure += pure_eps(&self.mechanism);
            self.answered += 1;
        } else {
            self.abstained += 1;
        }
    }

    /// Records refusals that happened in an earlier run.
    pub fn restore_refused(&mut self, refused: u64) {
        self.refused += refused;
    }

    /// The RDP curve one query costs once it is known whether it was answered.
    pub fn query_cost(&self, answered: bool) -> Vec<f64> {
        data_independent_rdp_realized(&self.mechanism, answered, &self.orders)
    }

    /// The current state.
    pub fn snapshot(&self) -> BudgetSnapshot {
        BudgetSnapshot {
            epsilon_spent: self.spent(),
            epsilon_limit: self.limit,
            delta: self.delta,
            queries_answered: self.answered,
            queries_refused: self.refused,
            queries_abstained: self.abstained,
        }
    }

    /// The mechanism this budget accounts.
    pub fn mechanism(&self) -> &Mechanism {
        &self.mechanism
    }
}

/// Pure epsilon of one answered query; infinite when there is none.
pub fn pure_eps(m: &Mechanism) -> f64 {
    match *m {
        Mechanism::LnMax { scale } => 2.0 / scale,
        _ => f64::INFINITY,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::orders::default_orders;

    fn lnmax(scale: f64, limit: f64, delta: f64) -> Budget {
        Budget::new(Mechanism::LnMax { scale }, limit, delta, default_orders()).expect("valid")
    }

    #[test]
    fn pure_lnmax_composes_linearly() {
        let mut b = lnmax(20.0, 1.0, 0.0);
        assert_eq!(b.affordable(), 10);
        for _ in 0..10 {
            b.reserve(1).expect("fits");
            b.charge(true);
            b.release(1);
        }
        assert!((b.spent() - 1.0).abs() < 1e-12);
        let err = b.reserve(1).expect_err("11th query passes the limit");
        assert!(matches!(err, BudgetError::Exhausted { affordable: 0, .. }), "{err}");
        assert_eq!(b.snapshot().queries_refused, 1);
        assert_eq!(b.snapshot().queries_answered, 10);
    }

    /// With delta > 0, 1000 LNMax queries at b = 20 (pure composition: 100)
    /// cost about 0.5*1000*0.01 + 2*sqrt(5*ln(1e5)) ~ 20.2 through zCDP.
    #[test]
    fn lnmax_with_delta_uses_the_tighter_rdp_bound() {
        let mut b = lnmax(20.0, 1000.0, 1e-5);
        (0..1000).for_each(|_| b.charge(true));
        let eps = b.spent();
        assert!(eps < 100.0 && eps > 15.0 && eps < 21.0, "eps = {eps}");
    }

    #[test]
    fn gnmax_needs_delta_and_matches_closed_form() {
        let m = Mechanism::GnMax { sigma: 40.0 };
        assert_eq!(Budget::new(m, 1.0, 0.0, default_orders()).err(), Some(BudgetError::NeedsDelta("gnmax")));
        let mut b = Budget::new(m, 100.0, 1e-5, default_orders()).expect("valid");
        (0..100).for_each(|_| b.charge(true));
        // min over a of 100 a / 1600 + ln(1e5)/(a - 1), near a = 1 + sqrt(16 ln 1e5 / 1) ~ 14.57.
        let by_hand = (2..=200)
            .map(|i| f64::from(i) * 0.5)
            .filter(|a| *a >= 2.0)
            .map(|a| 100.0 * a / 1600.0 + (1e5f64).ln() / (a - 1.0))
            .fold(f64::INFINITY, f64::min);
        assert!((b.spent() - by_hand).abs() < 1e-9, "{} vs {by_hand}", b.spent());
    }

    #[test]
    fn abstentions_cost_only_the_threshold_step() {
        let m = Mechanism::ConfidentGnMax { threshold: 200.0, sigma1: 150.0, sigma2: 40.0 };
        let mut answered = Budget::new(m, 100.0, 1e-5, default_orders()).expect("valid");
        let mut declined = answered.clone();
        (0..50).for_each(|_| answered.charge(true));
        (0..50).for_each(|_| declined.charge(false));
        assert!(declined.spent() < answered.spent());
        assert_eq!(declined.snapshot().queries_abstained, 50);
    }

    #[test]
    fn reservations_never_overdraw() {
        let mut b = lnmax(20.0, 1.0, 0.0);
        b.reserve(6).expect("6 of 10 fit");
        assert!(b.reserve(5).is_err(), "6 reserved + 5 > 10");
        b.reserve(4).expect("6 + 4 fit");
        b.release(10);
        assert_eq!(b.affordable(), 10, "released reservations cost nothing");
        assert_eq!(b.snapshot().queries_refused, 5);
    }

    #[test]
    fn rejects_bad_configuration() {
        let m = Mechanism::LnMax { scale: 1.0 };
        assert!(Budget::new(m, 0.0, 0.0, vec![2.0]).is_err());
        assert!(Budget::new(m, 1.0, 1.0, vec![2.0]).is_err());
        assert!(Budget::new(m, f64::NAN, 0.0, vec![2.0]).is_err());
    }
}
