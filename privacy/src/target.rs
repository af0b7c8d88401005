//! The target-epsilon stop of PATE 2018: answer until the data-dependent
//! epsilon of everything answered (RDP over the orders, at the budget's
//! delta, from the recorded vote histograms, with the `q` of the integer
//! noise actually drawn, [`crate::discrete`]) would pass a target, then
//! refuse.
//!
//! This is the paper's practice, not a guarantee by itself: the decision to
//! stop depends on the votes. What the run can stand behind is the
//! data-dependent epsilon released with smooth sensitivity
//! ([`crate::release`]) or the data-independent bound ([`crate::budget`]),
//! which the aggregator enforces independently.
//!
//! Before a batch is answered it reserves its worst case: every query
//! answered (for Confident-GNMax, the threshold step plus the GNMax step).
//! Once the noise is drawn the realized cost replaces the reservation
//! (a declined query pays the threshold step only). Reservations let
//! concurrent batches share the target without overshooting it. A refused
//! batch costs nothing: no noise is drawn for it.
//!
//! Concurrent batches must decide exactly as one batch at a time would, or
//! concurrency chooses queries by their votes: a batch refused beside
//! others (whose reservations, computed from their exact votes, took the
//! room) could be followed by cheaper, higher-consensus batches that still
//! fit, a noise-free selection of the easy queries that no release accounts
//! for (docs/BENCHMARKS.md, 2026-12-07: 570-610 queries considered at 205
//! calls in flight against 430-510 at 16, at the same data-dependent
//! epsilon). So:
//! - a batch that does not fit only because of others' reservations is not
//!   refused: [`TargetError::Busy`] tells the caller to ask again once one
//!   of them settles or is cancelled, and the caller lets no later batch
//!   decide before it (the aggregator queues them in arrival order);
//! - a batch that does not fit with nothing else reserved is refused, and
//!   that first refusal ends answering for good ([`DataDependentTarget::stop`];
//!   the aggregator files it in its ledger, so a restart stays stopped).
//!
//! What is answered is then the prefix of the arrival order that one batch
//! at a time would answer; only where that prefix ends depends on the
//! votes, which is the paper's practice. (Stopping at the first refusal
//! without the wait ended the private lab's answering at data-dependent
//! epsilon 0.9-1.2 of its 1.4: the worst cases reserved by the batches in
//! flight are far above what they realize.)

use crate::mechanism::{data_dependent_rdp_with, Mechanism, NoiseModel};
use crate::rdp::{eps_from_rdp, Conversion};

/// Why a target could not be set or a batch was refused.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum TargetError {
    /// The target is not a finite positive epsilon.
    #[error("target epsilon must be finite and > 0, got {0}")]
    BadTarget(f64),
    /// The data-dependent epsilon needs an RDP conversion at some delta > 0.
    #[error("a target epsilon needs delta in (0, 1), got {0}")]
    BadDelta(f64),
    /// Even the most favourable single query would pass the target.
    #[error(
        "target epsilon {target} cannot be met: one query with a unanimous vote of {teachers} teachers \
         already costs data-dependent epsilon {one_query:.4} at delta {delta}; raise the target or the noise"
    )]
    Unreachable {
        /// The target.
        target: f64,
        /// Teachers assumed for the unanimous vote.
        teachers: usize,
        /// Epsilon of that one query.
        one_query: f64,
        /// Delta.
        delta: f64,
    },
    /// Answering would pass the target.
    #[error(
        "target epsilon reached: answering {asked} more queries could bring the data-dependent epsilon to \
         {would_be:.4}, over the target {target} (now {spent:.4}); no more queries are answered and refused \
         queries cost nothing"
    )]
    Reached {
        /// Queries in the refused batch.
        asked: u64,
        /// Data-dependent epsilon of what was answered so far.
        spent: f64,
        /// Worst-case data-dependent epsilon after this batch.
        would_be: f64,
        /// The target.
        target: f64,
    },
    /// The batch fits what is spent but not beside the reservations of
    /// batches in flight: ask again when one of them settles or is
    /// cancelled (not a refusal; nothing changed).
    #[error("target epsilon: {outstanding} batches in flight hold the room this batch needs; wait for them")]
    Busy {
        /// Reservations outstanding.
        outstanding: usize,
    },
    /// An earlier batch was refused: answering has stopped.
    #[error(
        "target epsilon reached: answering stopped at data-dependent epsilon {spent:.4} (target {target}) \
         when an earlier batch would have passed it; the {asked} queries of this batch are refused and cost nothing"
    )]
    Stopped {
        /// Queries in the refused batch.
        asked: u64,
        /// Data-dependent epsilon of what was answered so far.
        spent: f64,
        /// The target.
        target: f64,
    },
}

impl TargetError {
    /// The target a refusal was measured against, if it is a refusal.
    pub fn reached_target(&self) -> Option<f64> {
        match *self {
            TargetError::Reached { target, .. } | TargetError::Stopped { target, .. } => Some(target),
            _ => None,
        }
    }
}

/// The running data-dependent RDP of an aggregator against a target.
#[derive(Debug, Clone)]
pub struct DataDependentTarget {
    mechanism: Mechanism,
    target: f64,
    delta: f64,
    orders: Vec<f64>,
    spent: Vec<f64>,
    reserved: Vec<f64>,
    /// Reservations not yet settled or cancelled.
    outstanding: usize,
    stopped: bool,
}

/// A batch's worst-case reservation, to settle or cancel.
#[derive(Debug, Clone, PartialEq)]
pub struct Reservation {
    rdp: Vec<f64>,
    /// Each query's answered cost, kept so that settling an answered query
    /// adds it as computed here instead of computing it again.
    answered: Vec<Vec<f64>>,
}

fn add(total: &mut [f64], x: &[f64]) {
    total.iter_mut().zip(x).for_each(|(t, c)| *t += c);
}

fn sub(total: &mut [f64], x: &[f64]) {
    total.iter_mut().zip(x).for_each(|(t, c)| *t = (*t - c).max(0.0));
}

fn as_f64(h: &[u32]) -> Vec<f64> {
    h.iter().map(|&c| f64::from(c)).collect()
}

impl DataDependentTarget {
    /// An empty account against `target` at `delta`, over `orders`.
    pub fn new(mechanism: Mechanism, target: f64, delta: f64, orders: Vec<f64>) -> Result<Self, TargetError> {
        if !(target.is_finite() && target > 0.0) {
            return Err(TargetError::BadTarget(target));
        }
        if !(delta > 0.0 && delta < 1.0) {
            return Err(TargetError::BadDelta(delta));
        }
        let zeros = vec![0.0; orders.len()];
        Ok(DataDependentTarget {
            mechanism,
            target,
            delta,
            orders,
            spent: zeros.clone(),
            reserved: zeros,
            outstanding: 0,
            stopped: false,
        })
    }

    /// Refuses a target that no query can meet: the cheapest possible
    /// answered query (all `teachers` voting for one class of `classes`)
    /// already passes it.
    pub fn check_reachable(&self, teachers: usize, classes: usize) -> Result<(), TargetError> {
        let mut h = vec![0.0; classes.max(2)];
        h[0] = teachers as f64;
        let rdp = data_dependent_rdp_with(&self.mechanism, &h, Some(true), &self.orders, NoiseModel::Discrete);
        let one_query = self.epsilon_of(&rdp);
        if one_query > self.target {
            return Err(TargetError::Unreachable {
                target: self.target,
                teachers,
                one_query,
                delta: self.delta,
            });
        }
        Ok(())
    }

    fn epsilon_of(&self, rdp: &[f64]) -> f64 {
        eps_from_rdp(rdp, &self.orders, self.delta, Conversion::Classic).epsilon
    }

    /// Data-dependent epsilon of the queries settled so far (0 before any).
    pub fn spent(&self) -> f64 {
        if self.spent.iter().all(|&x| x == 0.0) {
            return 0.0;
        }
        self.epsilon_of(&self.spent)
    }

    /// The target.
    pub fn target(&self) -> f64 {
        self.target
    }

    /// The data-dependent RDP curve of one query of this mechanism.
    pub fn query_rdp(&self, histogram: &[u32], answered: Option<bool>) -> Vec<f64> {
        data_dependent_rdp_with(
            &self.mechanism,
            &as_f64(histogram),
            answered,
            &self.orders,
            NoiseModel::Discrete,
        )
    }

    /// Ends answering: every later [`reserve`](Self::reserve) is refused.
    /// The first refusal calls it; a restart calls it when the ledger says
    /// answering stopped at this target or a higher one.
    pub fn stop(&mut self) {
        self.stopped = true;
    }

    /// Whether answering has stopped.
    pub fn stopped(&self) -> bool {
        self.stopped
    }

    /// Reserves the worst case of answering every histogram, on top of what
    /// is spent and reserved. If that could pass the target: [`TargetError::Busy`]
    /// while other reservations are outstanding, else a refusal that stops
    /// answering (see the module's documentation).
    pub fn reserve(&mut self, histograms: &[Vec<u32>]) -> Result<Reservation, TargetError> {
        if self.stopped {
            return Err(TargetError::Stopped { asked: histograms.len() as u64, spent: self.spent(), target: self.target });
        }
        let answered: Vec<Vec<f64>> = histograms.iter().map(|h| self.query_rdp(h, Some(true))).collect();
        let mut rdp = vec![0.0; self.orders.len()];
        for a in &answered {
            add(&mut rdp, a);
        }
        let mut after = self.spent.clone();
        add(&mut after, &self.reserved);
        add(&mut after, &rdp);
        let would_be = self.epsilon_of(&after);
        if would_be > self.target {
            if self.outstanding > 0 {
                return Err(TargetError::Busy { outstanding: self.outstanding });
            }
            self.stopped = true;
            return Err(TargetError::Reached {
                asked: histograms.len() as u64,
                spent: self.spent(),
                would_be,
                target: self.target,
            });
        }
        add(&mut self.reserved, &rdp);
        self.outstanding += 1;
        Ok(Reservation { rdp, answered })
    }

    /// Drops a reservation whose batch was not answered.
    pub fn cancel(&mut self, r: Reservation) {
        self.outstanding = self.outstanding.saturating_sub(1);
        if self.outstanding == 0 {
            // Exactly nothing reserved, not the rounding left by subtracting.
            self.reserved.iter_mut().for_each(|x| *x = 0.0);
        } else {
            sub(&mut self.reserved, &r.rdp);
        }
    }

    /// Replaces a reservation by the realized cost of its answered batch:
    /// `realized` holds the reserved histograms, in the same order, each
    /// with whether it was answered.
    pub fn settle<'a>(&mut self, mut r: Reservation, realized: impl IntoIterator<Item = (&'a [u32], bool)>) {
        let costs = std::mem::take(&mut r.answered);
        self.cancel(r);
        let mut costs = costs.into_iter();
        for (h, answered) in realized {
            match costs.next() {
                Some(cost) if answered => add(&mut self.spent, &cost),
                _ => self.restore(h, answered),
            }
        }
    }

    /// Adds one query recorded earlier (restored from a ledger).
    pub fn restore(&mut self, histogram: &[u32], answered: bool) {
        let rdp = self.query_rdp(histogram, Some(answered));
        add(&mut self.spent, &rdp);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::orders::default_orders;

    fn confident() -> Mechanism {
        Mechanism::ConfidentGnMax {
            threshold: 150.0,
            sigma1: 100.0,
            sigma2: 40.0,
        }
    }

    #[test]
    fn stops_at_the_target_and_refusals_cost_nothing() {
        let mut t = DataDependentTarget::new(confident(), 2.0, 1e-5, default_orders()).expect("valid");
        let clear = vec![vec![240, 5, 5, 0]; 10];
        let mut answered = 0;
        loop {
            match t.reserve(&clear) {
                Ok(r) => {
                    t.settle(r, clear.iter().map(|h| (h.as_slice(), true)));
                    answered += clear.len();
                }
                Err(e) => {
                    assert!(matches!(e, TargetError::Reached { .. }), "{e}");
                    break;
                }
            }
            assert!(answered < 1_000_000, "never stopped");
        }
        let spent = t.spent();
        assert!(spent <= 2.0 && spent > 0.0, "spent {spent}");
        assert!(answered > 10, "answered {answered}");
        // A refused batch leaves the account as it was, and answering has stopped.
        assert!(matches!(t.reserve(&clear), Err(TargetError::Stopped { .. })));
        assert_eq!(t.spent(), spent);
        // Contested votes cost more than clear ones.
        let c = t.query_rdp(&[130, 120, 0, 0], Some(true));
        let e = t.query_rdp(&[240, 5, 5, 0], Some(true));
        assert!(c.iter().zip(&e).all(|(a, b)| a >= b));
    }

    /// After a refusal even a batch that would fit is refused: cheaper
    /// batches must not slip in behind a refused expensive one.
    #[test]
    fn the_first_refusal_stops_answering() {
        let mut t = DataDependentTarget::new(confident(), 1.0, 1e-5, default_orders()).expect("valid");
        let clear = vec![vec![240, 5, 5, 0]; 5];
        let contested = vec![vec![130, 120, 0, 0]; 200];
        let r = t.reserve(&clear).expect("room");
        t.settle(r, clear.iter().map(|h| (h.as_slice(), true)));
        let before = t.clone();
        assert!(matches!(t.reserve(&contested), Err(TargetError::Reached { .. })));
        assert!(t.stopped());
        let mut unstopped = before.clone();
        unstopped.reserve(&clear).expect("the clear batch alone fits");
        match t.reserve(&clear) {
            Err(TargetError::Stopped { asked, spent, target }) => {
                assert_eq!((asked, spent, target), (5, before.spent(), 1.0));
            }
            other => panic!("expected Stopped, got {other:?}"),
        }
        let mut restored = before;
        restored.stop();
        assert!(restored.reserve(&clear).is_err(), "a restart stopped by the ledger stays stopped");
    }

    /// A batch that does not fit beside others' reservations waits (Busy),
    /// refuses nothing and stops nothing; once they settle it is decided
    /// against what they really cost, as one batch at a time would be.
    #[test]
    fn a_batch_crowded_out_by_reservations_waits_instead_of_stopping() {
        let mut t = DataDependentTarget::new(confident(), 1.0, 1e-5, default_orders()).expect("valid");
        let batch = vec![vec![200, 30, 20, 0]; 50];
        let mut held = Vec::new();
        let busy = loop {
            match t.reserve(&batch) {
                Ok(r) => held.push(r),
                Err(e) => break e,
            }
        };
        assert!(matches!(busy, TargetError::Busy { outstanding } if outstanding == held.len()), "{busy}");
        assert!(!t.stopped());
        // Declined: each pays the threshold step only, far below the reserved worst case.
        for r in held {
            t.settle(r, batch.iter().map(|h| (h.as_slice(), false)));
        }
        t.reserve(&batch).expect("fits against the realized cost");
    }

    /// Settling adds exactly what restoring the same queries from a ledger adds.
    #[test]
    fn settling_equals_restoring() {
        let batch = vec![vec![240, 5, 5, 0], vec![130, 120, 0, 0], vec![200, 30, 20, 0]];
        let answered = [true, false, true];
        let mut settled = DataDependentTarget::new(confident(), 5.0, 1e-5, default_orders()).expect("valid");
        let mut restored = settled.clone();
        let r = settled.reserve(&batch).expect("room");
        settled.settle(r, batch.iter().map(Vec::as_slice).zip(answered));
        batch.iter().zip(answered).for_each(|(h, a)| restored.restore(h, a));
        assert_eq!(settled.spent, restored.spent);
        assert!(settled.spent() > 0.0);
    }

    #[test]
    fn reservations_never_overshoot() {
        let mut t = DataDependentTarget::new(confident(), 1.0, 1e-5, default_orders()).expect("valid");
        let batch = vec![vec![200, 30, 20, 0]; 50];
        let mut held = Vec::new();
        while let Ok(r) = t.reserve(&batch) {
            held.push(r);
        }
        assert!(!held.is_empty());
        assert!(!t.stopped(), "crowded out, not refused");
        for r in held {
            t.settle(r, batch.iter().map(|h| (h.as_slice(), true)));
        }
        assert!(t.spent() <= 1.0, "{}", t.spent());
    }

    #[test]
    fn unreachable_and_bad_targets() {
        let t = DataDependentTarget::new(Mechanism::GnMax { sigma: 2.0 }, 0.01, 1e-5, default_orders()).expect("valid");
        assert!(matches!(
            t.check_reachable(10, 10),
            Err(TargetError::Unreachable { .. })
        ));
        let t = DataDependentTarget::new(confident(), 2.0, 1e-5, default_orders()).expect("valid");
        t.check_reachable(250, 10)
            .expect("a unanimous query of 250 teachers is nearly free");
        assert!(DataDependentTarget::new(confident(), 0.0, 1e-5, default_orders()).is_err());
        assert!(DataDependentTarget::new(confident(), 1.0, 0.0, default_orders()).is_err());
    }
}
