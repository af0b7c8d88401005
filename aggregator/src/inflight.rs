//! Request ids being answered right now, and the claim that makes a Label
//! call safe to cancel and safe to race.
//!
//! A Label call claims its request id *before* it looks in the ledger, so
//! a second call with the same id cannot slip between the first's lookup
//! and its commit: it waits until the first is done, then looks in the
//! ledger again and replays what the first recorded (never fresh noise,
//! never a second insert of the same id).
//!
//! The claim also holds the call's budget reservation. Dropping it (the call
//! failed, or the client went away and tonic dropped the handler future)
//! releases both the reservation and the id. [`Claim::commit`] turns the
//! reservation into the realized charge; the service calls it inside the
//! same blocking task as the ledger commit, so once the commit has run the
//! charge is made even if nobody is left to receive the answer.
//!
//! With a `--target-epsilon`, the claim holds the batch's worst-case
//! reservation against the data-dependent target as well (taken once the
//! votes are in, before any noise is drawn): the commit settles it at the
//! realized cost, a drop cancels it, and a refusal by the target gives the
//! budget reservation back and counts the batch as refused. Batches take
//! that reservation one at a time in the order they ask; one crowded out
//! only by the reservations of batches in flight waits (and keeps the
//! batches behind it waiting) until one of them settles or is cancelled,
//! so each batch is decided as it would be one at a time
//! (`pate_privacy::target` says why that matters).

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard};

use pate_privacy::budget::{Budget, BudgetSnapshot};
use pate_privacy::target::{DataDependentTarget, Reservation, TargetError};
use tokio::sync::{watch, Notify};

use crate::ledger::QueryRecord;
use crate::service::LabelError;
use crate::students::StudentBudgets;

/// The budget and the ids in flight, behind one lock.
pub struct State {
    /// The global budget.
    pub budget: Budget,
    /// Each student's own budget.
    pub students: StudentBudgets,
    /// The `--target-epsilon` stop on the data-dependent epsilon, if set.
    pub target: Option<DataDependentTarget>,
    /// Ids being answered; the receiver wakes when the owner lets go.
    in_flight: HashMap<String, watch::Receiver<()>>,
    /// The queue batches take the target's reservation in (tokio's mutex is fair: first come, first served).
    turn: Arc<tokio::sync::Mutex<()>>,
    /// Woken when a target reservation settles or is cancelled.
    settled: Arc<Notify>,
}

/// The state shared by the service and every claim.
pub type Shared = Arc<Mutex<State>>;

/// A fresh shared state around the global and the students' budgets.
pub fn shared(budget: Budget, students: StudentBudgets) -> Shared {
    Arc::new(Mutex::new(State {
        budget,
        students,
        target: None,
        in_flight: HashMap::new(),
        turn: Default::default(),
        settled: Default::default(),
    }))
}

/// Locks the state. A panic while holding the lock cannot leave the budget
/// half-updated (every update is a single call), so a poisoned lock is
/// still usable.
pub fn lock(m: &Mutex<State>) -> MutexGuard<'_, State> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// What [`claim`] found.
pub enum Entry {
    /// This call owns the id until the claim is dropped or committed.
    Owner(Claim),
    /// Another call owns the id: wait with [`wait`], then claim again.
    Busy(watch::Receiver<()>),
}

/// Claims `id` for `student`, or says who to wait for.
pub fn claim(shared: &Shared, id: &str, student: &str) -> Entry {
    let mut st = lock(shared);
    if let Some(rx) = st.in_flight.get(id) {
        return Entry::Busy(rx.clone());
    }
    let (done, rx) = watch::channel(());
    st.in_flight.insert(id.to_string(), rx);
    Entry::Owner(Claim { shared: Arc::clone(shared), id: id.to_string(), student: student.to_string(), reserved: 0, target: None, _done: done })
}

/// Waits until the owner of a busy id has let go (committed, failed or was
/// cancelled). Nothing is ever sent: the owner's sender is dropped.
pub async fn wait(mut rx: watch::Receiver<()>) {
    while rx.changed().await.is_ok() {}
}

/// Ownership of a request id and of its budget reservation.
pub struct Claim {
    shared: Shared,
    id: String,
    student: String,
    reserved: u64,
    target: Option<Reservation>,
    // Dropped after `Drop::drop` has removed the id: wakes the waiters.
    _done: watch::Sender<()>,
}

impl Claim {
    /// Reserves room for `n` queries (worst case) for this call in the
    /// global budget and in the student's own; a refusal by either is
    /// counted as a refusal of the global budget.
    pub fn reserve(&mut self, n: u64) -> Result<(), LabelError> {
        let mut st = lock(&self.shared);
        st.budget.reserve(n)?;
        let State { budget, students, .. } = &mut *st;
        if let Err(source) = students.get(&self.student).reserve(n) {
            budget.release(n);
            budget.restore_refused(n);
            return Err(LabelError::StudentBudget { caller: self.student.clone(), source });
        }
        self.reserved += n;
        Ok(())
    }

    /// Reserves the worst case of answering `histograms` against the
    /// data-dependent target, if one is set, in this call's turn: calls
    /// decide in the order they ask, and one crowded out only by the
    /// reservations of calls in flight waits for one of them to settle or
    /// be cancelled (the calls behind it wait too). A refusal gives this
    /// call's budget reservation back and counts the batch as refused by
    /// the global budget: no noise is drawn, nothing is charged.
    pub async fn reserve_target(&mut self, histograms: &[Vec<u32>]) -> Result<(), LabelError> {
        let (turn, settled) = {
            let st = lock(&self.shared);
            if st.target.is_none() {
                return Ok(());
            }
            (Arc::clone(&st.turn), Arc::clone(&st.settled))
        };
        let _turn = turn.lock().await;
        loop {
            // Registered before the check, so a settle between the two is not missed.
            let notified = settled.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            match self.try_reserve_target(histograms) {
                Err(LabelError::Target(TargetError::Busy { outstanding })) => {
                    tracing::debug!(request_id = %self.id, outstanding, "waiting for batches in flight to settle against the target");
                    notified.await;
                }
                decided => return decided,
            }
        }
    }

    fn try_reserve_target(&mut self, histograms: &[Vec<u32>]) -> Result<(), LabelError> {
        let mut st = lock(&self.shared);
        let State { budget, students, target, .. } = &mut *st;
        let Some(t) = target.as_mut() else { return Ok(()) };
        match t.reserve(histograms) {
            Ok(r) => {
                self.target = Some(r);
                Ok(())
            }
            Err(e @ TargetError::Busy { .. }) => Err(LabelError::Target(e)),
            Err(e) => {
                let n = std::mem::take(&mut self.reserved);
                budget.release(n);
                budget.restore_refused(n);
                students.get(&self.student).release(n);
                Err(LabelError::Target(e))
            }
        }
    }

    /// Charges the committed `records` in place of the reservation (and
    /// settles the target's) and lets go of the id. Call it right after
    /// the ledger commit. Returns the global budget's state and the student's.
    pub fn commit(mut self, records: &[QueryRecord]) -> (BudgetSnapshot, BudgetSnapshot) {
        let mut st = lock(&self.shared);
        let reserved = std::mem::take(&mut self.reserved);
        let State { budget, students, target, settled, .. } = &mut *st;
        if let (Some(t), Some(r)) = (target.as_mut(), self.target.take()) {
            t.settle(r, records.iter().map(|q| (q.histogram.as_slice(), q.answer.is_some())));
            settled.notify_waiters();
        }
        let own = students.get(&self.student);
        budget.release(reserved);
        own.release(reserved);
        for r in records {
            budget.charge(r.answer.is_some());
            own.charge(r.answer.is_some());
        }
        (budget.snapshot(), own.snapshot())
    }
}

impl Drop for Claim {
    fn drop(&mut self) {
        let mut st = lock(&self.shared);
        if self.reserved > 0 {
            tracing::info!(request_id = %self.id, reserved = self.reserved, "request ended before its commit: reservation released");
        }
        st.budget.release(self.reserved);
        st.students.get(&self.student).release(self.reserved);
        if let (Some(t), Some(r)) = (st.target.as_mut(), self.target.take()) {
            t.cancel(r);
            st.settled.notify_waiters();
        }
        st.in_flight.remove(&self.id);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use pate_privacy::{default_orders, Mechanism};

    fn state() -> Shared {
        // b = 2: one epsilon per answer, 4 answers fit.
        let m = Mechanism::LnMax { scale: 2.0 };
        let students = StudentBudgets::new(m, 4.0, 0.0, default_orders()).expect("budgets");
        shared(Budget::new(m, 4.0, 0.0, default_orders()).expect("budget"), students)
    }

    fn answered() -> QueryRecord {
        QueryRecord { histogram: vec![1, 0], answer: Some(0), rdp: vec![0.0; default_orders().len()] }
    }

    #[test]
    fn a_dropped_claim_releases_the_id_and_the_reservation() {
        let s = state();
        let Entry::Owner(mut c) = claim(&s, "a", "s") else { panic!("free id") };
        c.reserve(4).expect("4 fit");
        assert!(matches!(claim(&s, "a", "s"), Entry::Busy(_)), "the id is taken while in flight");
        assert!(lock(&s).budget.reserve(1).is_err(), "the whole budget is reserved");
        drop(c); // the call was cancelled before its commit
        let Entry::Owner(mut again) = claim(&s, "a", "s") else { panic!("id released") };
        again.reserve(4).expect("the reservation was released");
        let (snap, _) = again.commit(&[answered(), answered(), answered(), answered()]);
        assert_eq!((snap.queries_answered, snap.queries_refused), (4, 1));
        assert!((snap.epsilon_spent - 4.0).abs() < 1e-12);
        assert_eq!(lock(&s).budget.affordable(), 0, "the charge stays after the claim is gone");
        assert!(matches!(claim(&s, "a", "s"), Entry::Owner(_)), "commit lets go of the id");
    }

    /// A state with budgets out of the way and a data-dependent target of
    /// 1.5 for one teacher under GNMax sigma 20: every answer of one vote
    /// costs the same, and 18 fit.
    fn targeted() -> Shared {
        use pate_privacy::target::DataDependentTarget;
        let m = Mechanism::GnMax { sigma: 20.0 };
        let orders = default_orders();
        let students = StudentBudgets::new(m, 1e9, 1e-5, orders.clone()).expect("budgets");
        let s = shared(Budget::new(m, 1e9, 1e-5, orders.clone()).expect("budget"), students);
        lock(&s).target = Some(DataDependentTarget::new(m, 1.5, 1e-5, orders).expect("target"));
        s
    }

    #[tokio::test]
    async fn the_target_reservation_follows_the_claim() {
        let s = targeted();
        let hists = vec![vec![1, 0]; 2];
        let answered = || QueryRecord { histogram: vec![1, 0], answer: Some(0), rdp: vec![0.0; default_orders().len()] };
        let spent = |s: &Shared| lock(s).target.as_ref().expect("target").spent();

        // Dropped after reserving: the next claim finds the same room.
        let Entry::Owner(mut c) = claim(&s, "a", "s") else { panic!("free id") };
        c.reserve(2).expect("budget");
        c.reserve_target(&hists).await.expect("room");
        drop(c);
        assert_eq!(spent(&s), 0.0);
        let mut fits = 0;
        loop {
            let Entry::Owner(mut c) = claim(&s, "a", "s") else { panic!("free id") };
            c.reserve(2).expect("budget");
            match c.reserve_target(&hists).await {
                Ok(()) => {
                    c.commit(&[answered(), answered()]);
                    fits += 1;
                }
                Err(e) => {
                    assert!(matches!(e, LabelError::Target(_)), "{e}");
                    // Refused: the budget reservation is back, counted as refused, nothing charged.
                    let snap = lock(&s).budget.snapshot();
                    assert_eq!((snap.queries_answered, snap.queries_refused), (2 * fits, 2));
                    drop(c);
                    break;
                }
            }
            assert!(fits < 100, "never stopped");
        }
        assert!(fits > 1 && spent(&s) <= 1.5, "{fits} batches, spent {}", spent(&s));
    }

    /// A batch crowded out by another's reservation waits for it instead of
    /// being refused, and a batch that asks later waits behind it even
    /// when it would fit: the order of decisions is the order of asking.
    #[tokio::test]
    async fn a_crowded_out_batch_waits_for_the_others_and_keeps_its_place() {
        let s = targeted();
        let one = || vec![vec![1u32, 0]];
        let record = || QueryRecord { histogram: vec![1, 0], answer: Some(0), rdp: vec![0.0; default_orders().len()] };
        // A holds the room of 10 queries of the 18 that fit; B's 10 do not fit beside it.
        let Entry::Owner(mut a) = claim(&s, "a", "s") else { panic!("free id") };
        a.reserve_target(&vec![vec![1, 0]; 10]).await.expect("room");
        let Entry::Owner(mut b) = claim(&s, "b", "s") else { panic!("free id") };
        let b = tokio::spawn(async move {
            let r = b.reserve_target(&vec![vec![1, 0]; 10]).await;
            (b, r)
        });
        let Entry::Owner(mut c) = claim(&s, "c", "s") else { panic!("free id") };
        for _ in 0..10 {
            tokio::task::yield_now().await;
        }
        let c = tokio::spawn(async move {
            let r = c.reserve_target(&one()).await;
            (c, r)
        });
        for _ in 0..10 {
            tokio::task::yield_now().await;
        }
        assert!(!b.is_finished(), "B waits for A instead of being refused");
        assert!(!c.is_finished(), "C would fit beside A but asked after B: it waits its turn");
        // A is cancelled (its client went away): B now fits, then C.
        drop(a);
        let (b, rb) = b.await.expect("b");
        rb.expect("B fits once A's reservation is gone");
        let (c, rc) = c.await.expect("c");
        rc.expect("C fits beside B");
        b.commit(&vec![record(); 10]);
        c.commit(&[record()]);
        // 11 answered: 10 more do not fit and nothing is in flight: refused, and answering stops.
        let Entry::Owner(mut d) = claim(&s, "d", "s") else { panic!("free id") };
        let refused = d.reserve_target(&vec![vec![1, 0]; 10]).await;
        assert!(matches!(refused, Err(LabelError::Target(TargetError::Reached { .. }))));
        let Entry::Owner(mut e) = claim(&s, "e", "s") else { panic!("free id") };
        let stopped = e.reserve_target(&one()).await;
        assert!(matches!(stopped, Err(LabelError::Target(TargetError::Stopped { .. }))), "one would fit, but answering stopped");
    }

    #[tokio::test]
    async fn a_waiter_wakes_when_the_owner_lets_go() {
        let s = state();
        let Entry::Owner(c) = claim(&s, "a", "s") else { panic!("free id") };
        let Entry::Busy(rx) = claim(&s, "a", "s") else { panic!("taken") };
        let waiter = tokio::spawn(async move { wait(rx).await });
        tokio::task::yield_now().await;
        assert!(!waiter.is_finished(), "the waiter waits while the owner holds the id");
        c.commit(&[answered()]);
        waiter.await.expect("woken");
        assert!(matches!(claim(&s, "a", "s"), Entry::Owner(_)));
        // A waiter that arrives after the owner left does not hang either.
        let Entry::Owner(c) = claim(&s, "b", "s") else { panic!("free id") };
        let Entry::Busy(rx) = claim(&s, "b", "s") else { panic!("taken") };
        drop(c);
        wait(rx).await;
    }
}
