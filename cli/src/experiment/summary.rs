//! Seed summaries of a grid: cells that differ only in their seed are one
//! configuration, and `report.md` gives each such group's mean and spread,
//! so that a difference can be weighed against run-to-run noise.

use std::fmt::Write as _;

use super::backdoor::Mode;
use super::grid::Cell;
use super::runner::Row;

/// Mean and sample standard deviation (0 for a single value).
pub fn mean_sd(v: &[f64]) -> (f64, f64) {
    let n = v.len() as f64;
    if v.is_empty() {
        return (f64::NAN, f64::NAN);
    }
    let mean = v.iter().sum::<f64>() / n;
    let var = if v.len() > 1 { v.iter().map(|x| (x - mean).powi(2)).sum::<f64>() / (n - 1.0) } else { 0.0 };
    (mean, var.sqrt())
}

/// Rows grouped by their cell with the seed left out, in order of first appearance.
pub fn by_configuration(rows: &[Row]) -> Vec<Vec<&Row>> {
    super::grid::group_indices(rows, |row| Cell { seed: 0, ..row.cell.clone() })
        .into_iter()
        .map(|g| g.into_iter().map(|i| &rows[i]).collect())
        .collect()
}

/// The accuracy a student is held to: the reference student's in PATE
/// mode, the teacher's in single mode (as the targets say).
fn accuracy_baseline(r: &Row) -> f64 {
    match r.cell.mode {
        Mode::Pate => r.report.reference_student_accuracy,
        Mode::Single => r.report.ensemble_accuracy,
    }
}

/// A markdown table of every configuration run with two or more seeds;
/// `None` when there is none.
pub fn seed_table(rows: &[Row]) -> Option<String> {
    let groups: Vec<Vec<&Row>> = by_configuration(rows).into_iter().filter(|g| g.len() >= 2).collect();
    if groups.is_empty() {
        return None;
    }
    let mut s = String::from("## Over seeds\n\n");
    s.push_str("Configurations run with several seeds: mean ± sample standard deviation. ");
    s.push_str("Gaps are per seed, then averaged: ASR gap = student - reference student; ");
    s.push_str("accuracy gap = baseline - student, where the baseline is the reference student (PATE) or the teacher (single).\n\n");
    s.push_str("| mode | n | m | poison | b / (T, w, shift, epochs) | queries | public trig. | seeds | student ASR | reference ASR | ASR gap | student acc | baseline acc | accuracy gap |\n");
    s.push_str("|---|---|---|---|---|---|---|---|---|---|---|---|---|---|\n");
    for g in groups {
        let col = |f: &dyn Fn(&Row) -> f64| {
            let (m, sd) = mean_sd(&g.iter().map(|r| f(r)).collect::<Vec<_>>());
            format!("{m:.3} ± {sd:.3}")
        };
        let (c, r) = (&g[0].cell, &g[0].report);
        let b = c.knobs();
        let seeds = g.iter().map(|r| r.cell.seed.to_string()).collect::<Vec<_>>().join(", ");
        let _ = writeln!(
            s,
            "| {} | {} | {} | {} | {b} | {} | {} | {seeds} | {} | {} | {} | {} | {} | {} |",
            c.mode, r.num_teachers, r.poisoned_teachers, c.poison_rate, c.queries, c.public_trigger_rate,
            col(&|r| r.report.student_asr), col(&|r| r.report.reference_student_asr),
            col(&|r| r.report.student_asr - r.report.reference_student_asr),
            col(&|r| r.report.student_accuracy), col(&accuracy_baseline),
            col(&|r| accuracy_baseline(r) - r.report.student_accuracy),
        );
    }
    Some(s)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::experiment::backdoor::BackdoorReport;

    fn row(seed: u64, temperature: f64, student_asr: f64, reference_asr: f64) -> Row {
        let report: BackdoorReport = serde_json::from_value(serde_json::json!({
            "mode": "single", "num_teachers": 1, "poisoned_teachers": 1, "poison_rate": 0.1, "target": 0,
            "trigger": pate_ml::trigger::Trigger::default(), "queries": 9000, "queries_answered": 9000,
            "public_trigger_rate": 0.0, "seed": seed, "teachers": [], "ensemble_asr": 1.0, "ensemble_accuracy": 0.88,
            "student_asr": student_asr, "student_accuracy": 0.87, "label_accuracy": 0.88, "reference_ensemble_asr": 0.01,
            "reference_ensemble_accuracy": 0.88, "reference_student_asr": reference_asr, "reference_student_accuracy": 0.87,
            "public_triggered": 0, "teachers_trained": 0, "total_seconds": 1.0
        }))
        .expect("report");
        Row { cell: Cell { mode: Mode::Single, seed, temperature, ..Cell::default() }, report }
    }

    #[test]
    fn groups_seeds_of_one_configuration() {
        let rows = vec![row(0, 1.0, 0.03, 0.01), row(0, 2.0, 0.5, 0.01), row(1, 1.0, 0.02, 0.02)];
        let groups = by_configuration(&rows);
        assert_eq!(groups.iter().map(Vec::len).collect::<Vec<_>>(), vec![2, 1]);
        let table = seed_table(&rows).expect("one group with two seeds");
        // T = 1 over seeds 0 and 1: student ASR 0.025, gap (0.02 + 0.00) / 2 = 0.010; accuracy gap 0.88 - 0.87.
        let line = table.lines().find(|l| l.contains("T = 1,")).expect("T = 1 row");
        assert!(line.contains("| 0, 1 |") && line.contains("0.025 ± 0.007") && line.contains("0.010 ± 0.014"), "{line}");
        assert!(line.contains("0.010 ± 0.000 |"), "{line}");
        assert!(!table.contains("T = 2"), "a single seed is not summarised");
        assert!(seed_table(&rows[1..2]).is_none());
    }

    #[test]
    fn mean_and_sample_sd_by_hand() {
        let (m, sd) = mean_sd(&[1.0, 2.0, 3.0, 4.0]);
        assert!((m - 2.5).abs() < 1e-12);
        // Sample variance: (2.25 + 0.25 + 0.25 + 2.25) / 3 = 5/3.
        assert!((sd - (5.0f64 / 3.0).sqrt()).abs() < 1e-12);
        assert_eq!(mean_sd(&[0.7]), (0.7, 0.0));
        assert!(mean_sd(&[]).0.is_nan());
    }
}
