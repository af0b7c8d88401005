//! Calibration by temperature scaling (Guo et al., arXiv 1706.04599): ECE
//! (15 bins) and NLL of the single model, of PATE-style teachers and of
//! their student, before and after fitting T on the held-out calibration
//! items.
//!
//! The PATE-style student is made in process, not over gRPC: teachers on
//! disjoint partitions of the training items vote on the public items, the
//! aggregator's LNMax mechanism ([`super::super::measure::noisy`]) is drawn
//! locally on the histograms (no budget is kept), and the student learns
//! the answers as hard labels (abstentions dropped).

use pate_ml::calibration::{fit_temperature, nll, reliability, Reliability};
use pate_ml::partition::partition;
use pate_ml::train::{accuracy, predict, predict_logits_tensor, train, Trained};
use pate_ml::Classifier;
use serde::{Deserialize, Serialize};

use super::Ctx;
use crate::experiment::measure::noisy;
use crate::progress::say;

/// Bins of the expected calibration error.
pub const ECE_BINS: usize = 15;

/// One model's calibration.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct CalRow {
    /// `single`, `teacher <i>` or `pate student`.
    pub model: String,
    /// Clean accuracy on the evaluation items.
    pub accuracy: f64,
    /// Temperature fitted on the calibration items.
    pub temperature: f64,
    /// ECE on the calibration items (where T was fitted) at T = 1.
    pub fit_ece_before: f64,
    /// ... at the fitted T.
    pub fit_ece_after: f64,
    /// NLL on the calibration items at T = 1.
    pub fit_nll_before: f64,
    /// ... at the fitted T.
    pub fit_nll_after: f64,
    /// ECE on the evaluation items at T = 1.
    pub ece_before: f64,
    /// ... at the fitted T.
    pub ece_after: f64,
    /// NLL on the evaluation items at T = 1.
    pub nll_before: f64,
    /// ... at the fitted T.
    pub nll_after: f64,
}

/// How the PATE-style student was made.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct StudentInfo {
    /// Teachers.
    pub teachers: usize,
    /// LNMax Laplace scale.
    pub noise_scale: f64,
    /// Public items asked.
    pub queries: usize,
    /// Answered (not abstained).
    pub answered: usize,
    /// Share of the answers equal to the true label.
    pub label_accuracy: f64,
    /// What it is.
    pub note: String,
}

/// What the section measured.
pub struct CalOutcome {
    /// The single model's row.
    pub single: CalRow,
    /// Every row.
    pub rows: Vec<CalRow>,
    /// The single model's reliability diagram before scaling.
    pub reliability_before: Reliability,
    /// After.
    pub reliability_after: Reliability,
    /// The student.
    pub student: StudentInfo,
}

/// Fits a temperature for `model` on the calibration items and scores it.
fn row(ctx: &Ctx, model: &Classifier, name: &str) -> anyhow::Result<(CalRow, Reliability, Reliability)> {
    let calib_x = pate_ml::train::images_to_tensor(&ctx.calib.images, &candle_core::Device::Cpu)?;
    let fit_logits = predict_logits_tensor(model, &calib_x, 512)?;
    let eval_logits = predict_logits_tensor(model, &ctx.eval_x, 512)?;
    let (fl, el) = (&ctx.calib.labels, &ctx.eval.labels);
    let t = fit_temperature(&fit_logits, fl)?;
    let before = reliability(&eval_logits, el, 1.0, ECE_BINS)?;
    let after = reliability(&eval_logits, el, t, ECE_BINS)?;
    let r = CalRow {
        model: name.into(),
        accuracy: accuracy(&predict(model, &ctx.eval.images, 512)?, el),
        temperature: t,
        fit_ece_before: reliability(&fit_logits, fl, 1.0, ECE_BINS)?.ece,
        fit_ece_after: reliability(&fit_logits, fl, t, ECE_BINS)?.ece,
        fit_nll_before: nll(&fit_logits, fl, 1.0)?,
        fit_nll_after: nll(&fit_logits, fl, t)?,
        ece_before: before.ece,
        ece_after: after.ece,
        nll_before: nll(&eval_logits, el, 1.0)?,
        nll_after: nll(&eval_logits, el, t)?,
    };
    say!(
        "  {name:<12} T = {t:.3}: ECE {:.4} -> {:.4}, NLL {:.4} -> {:.4} (evaluation items)",
        r.ece_before, r.ece_after, r.nll_before, r.nll_after
    );
    Ok((r, before, after))
}

/// Calibrates the single model, the teachers and the student.
pub fn run(ctx: &Ctx, single: &Trained) -> anyhow::Result<CalOutcome> {
    let a = &ctx.args;
    let (single_row, reliability_before, reliability_after) = row(ctx, &single.model, "single")?;
    let mut rows = vec![single_row.clone()];
    let parts = partition(ctx.train.len(), a.teachers, a.seed)?;
    let mut votes = Vec::with_capacity(parts.len());
    for (i, part) in parts.iter().enumerate() {
        let t = train(a.model, &ctx.train.select(part), ctx.classes, &a.cfg(a.epochs, a.seed + i as u64), &mut |_| {})?;
        rows.push(row(ctx, &t.model, &format!("teacher {i}"))?.0);
        votes.push(predict(&t.model, &ctx.public.images, 512)?);
    }
    let answers = noisy(&votes, ctx.classes, a.noise_scale)?;
    let kept: Vec<usize> = (0..answers.len()).filter(|&i| usize::from(answers[i]) < ctx.classes).collect();
    anyhow::ensure!(!kept.is_empty(), "the noisy aggregate abstained on every public item");
    let mut set = ctx.public.select(&kept);
    set.labels = kept.iter().map(|&i| answers[i]).collect();
    let label_accuracy = accuracy(&set.labels, &ctx.public.select(&kept).labels);
    let student = train(a.model, &set, ctx.classes, &a.cfg(a.student_epochs, a.seed), &mut |_| {})?;
    rows.push(row(ctx, &student.model, "pate student")?.0);
    Ok(CalOutcome {
        single: single_row,
        rows,
        reliability_before,
        reliability_after,
        student: StudentInfo {
            teachers: a.teachers,
            noise_scale: a.noise_scale,
            queries: answers.len(),
            answered: kept.len(),
            label_accuracy,
            note: "in process: teachers on disjoint partitions of the training items, LNMax drawn locally on their votes, \
                   student trained on the answers (no gRPC, no budget kept)"
                .into(),
        },
    })
}
