//! Assembling a [`LabReport`]: one place for how the parts of a run (the
//! student's report, the ledger's account, the operator's noise-free
//! measurement, the wall times) become the report's keys, shared by
//! `pate lab` and `pate deploy report`, so the two reports keep one schema.

use pate_ml::model::ModelKind;
use pate_ml::train::accuracy;
use pate_privacy::histogram::plurality;
use pate_privacy::release::ReleaseParams;
use pate_student::StudentReport;

use super::preset::Plan;
use super::LabReport;
use crate::privacy::LedgerReport;

/// The operator's noise-free measurement of the teachers on the evaluation set.
#[derive(Debug, Clone)]
pub struct EnsembleScores {
    /// Each teacher's accuracy.
    pub teacher_accuracies: Vec<f64>,
    /// Accuracy of their noise-free plurality.
    pub ensemble_accuracy: f64,
}

impl EnsembleScores {
    /// Scores `votes[teacher][item]` against `labels`.
    pub fn of(votes: &[Vec<u8>], labels: &[u8], classes: usize) -> Self {
        EnsembleScores {
            teacher_accuracies: votes.iter().map(|v| accuracy(v, labels)).collect(),
            ensemble_accuracy: accuracy(&plurality(votes, classes), labels),
        }
    }
}

/// Wall seconds of the phases of a run.
#[derive(Debug, Clone, Copy, Default)]
pub struct Timings {
    /// Training the teachers.
    pub train_teachers: f64,
    /// Starting the servers.
    pub serve: f64,
    /// Measuring the ensemble.
    pub ensemble: f64,
    /// The student (querying and training).
    pub student: f64,
    /// The whole run.
    pub total: f64,
}

impl LabReport {
    /// The report of a run of `plan` with teachers of `model`: the student's
    /// counts and accuracies, the ledger's epsilons, and the released one
    /// (`released`, when a release was drawn). The guarantee `epsilon` is
    /// the smaller of the released and the data-independent epsilon.
    pub fn assemble(
        plan: Plan,
        model: ModelKind,
        student: &StudentReport,
        ledger: &LedgerReport,
        released: Option<(f64, ReleaseParams)>,
        scores: EnsembleScores,
        times: Timings,
    ) -> Self {
        let independent = ledger.data_independent_epsilon;
        LabReport {
            num_teachers: plan.teachers,
            queries_asked: student.queries_asked,
            queries_answered: student.queries_answered,
            epsilon: released.as_ref().map_or(independent, |(e, _)| e.min(independent)),
            epsilon_data_independent: independent,
            epsilon_data_dependent: ledger.data_dependent_epsilon,
            epsilon_released: released.as_ref().map(|(e, _)| *e),
            release: released.map(|(_, p)| p),
            delta: student.delta,
            plan,
            queries_refused: student.queries_refused,
            student_accuracy: student.student_accuracy,
            ensemble_accuracy: scores.ensemble_accuracy,
            teacher_accuracies: scores.teacher_accuracies,
            label_accuracy: student.label_accuracy,
            model: model.to_string(),
            train_teachers_seconds: times.train_teachers,
            serve_seconds: times.serve,
            ensemble_seconds: times.ensemble,
            student_seconds: times.student,
            student_query_seconds: student.query_seconds,
            student_train_seconds: student.train_seconds,
            total_seconds: times.total,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ensemble_scores_are_per_teacher_and_plurality() {
        // Three teachers on three items labelled 0, 1, 2.
        let votes = vec![vec![0, 1, 0], vec![0, 2, 2], vec![1, 1, 2]];
        let s = EnsembleScores::of(&votes, &[0, 1, 2], 3);
        assert_eq!(s.teacher_accuracies, vec![2.0 / 3.0, 2.0 / 3.0, 2.0 / 3.0]);
        assert_eq!(s.ensemble_accuracy, 1.0);
    }
}
