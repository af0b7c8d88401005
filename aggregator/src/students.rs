//! One budget per student identity, beside the global one: the global
//! budget protects the teachers' data whoever asks; a student's own budget
//! (`--student-epsilon-limit`) keeps one student from spending what the
//! deployment meant for all. Both are charged for every answer and both
//! must have room before a query is answered. Identities are the callers'
//! certificate roles (`pate://student/<j>`), or `anonymous` under
//! `--insecure`, where every caller is one anonymous student.

use std::collections::HashMap;

use pate_privacy::budget::{Budget, BudgetError};
use pate_privacy::Mechanism;

use crate::ledger::{Ledger, LedgerError};

/// The per-student budgets, created on a student's first query.
pub struct StudentBudgets {
    empty: Budget,
    budgets: HashMap<String, Budget>,
}

impl StudentBudgets {
    /// Budgets of `limit` each, for the global budget's mechanism, delta
    /// and orders.
    pub fn new(mechanism: Mechanism, limit: f64, delta: f64, orders: Vec<f64>) -> Result<Self, BudgetError> {
        Ok(StudentBudgets { empty: Budget::new(mechanism, limit, delta, orders)?, budgets: HashMap::new() })
    }

    /// The budget of the student `key`.
    pub fn get(&mut self, key: &str) -> &mut Budget {
        self.budgets.entry(key.to_string()).or_insert_with(|| self.empty.clone())
    }

    /// Replays every recorded query into the budget of the student who
    /// asked it; returns how many students have spent something.
    pub fn restore(&mut self, ledger: &Ledger) -> Result<usize, LedgerError> {
        for (student, q) in ledger.queries_by_student()? {
            self.get(&student).restore(&q.rdp, q.answer.is_some());
        }
        Ok(self.budgets.len())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ledger::QueryRecord;

    #[test]
    fn restore_charges_each_student_only_for_their_own_queries() {
        let dir = tempfile::tempdir().expect("tempdir");
        let m = Mechanism::LnMax { scale: 4.0 };
        let orders = vec![2.0];
        let mut ledger = Ledger::open(&dir.path().join("l.db"), &m, &orders).expect("open");
        let q = QueryRecord { histogram: vec![1, 0], answer: Some(0), rdp: vec![0.0] };
        ledger.record("a", "d", &[q.clone(), q.clone()], "pate://student/0").expect("record");
        ledger.record("b", "d", &[q], "pate://student/1").expect("record");
        let mut s = StudentBudgets::new(m, 1.0, 0.0, orders).expect("budgets");
        assert_eq!(s.restore(&ledger).expect("restore"), 2);
        // b = 4: 0.5 per answer, a limit of 1.0 holds two.
        assert!((s.get("pate://student/0").spent() - 1.0).abs() < 1e-12);
        assert!(s.get("pate://student/0").reserve(1).is_err(), "student 0 is out");
        assert!(s.get("pate://student/1").reserve(1).is_ok(), "student 1 still has 0.5");
        assert_eq!(s.get("pate://student/2").spent(), 0.0);
    }
}
