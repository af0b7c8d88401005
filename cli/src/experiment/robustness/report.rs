//! `report.md`, the plots (PNG and SVG, with the backdoor grid's chart
//! code in [`crate::experiment::plots`]) and the terminal summary of one
//! robustness run.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use plotters::prelude::SeriesLabelPosition;

use super::{PerEps, RobustnessReport};
use crate::experiment::plots::{save, Chart};
use crate::progress::say;

/// `(eps, accuracy)` points with the clean accuracy at eps = 0.
fn curve(clean: Option<f64>, m: &PerEps) -> Vec<(f64, f64)> {
    let mut pts: Vec<(f64, f64)> = clean.map(|c| (0.0, c)).into_iter().collect();
    pts.extend(m.iter().filter_map(|(k, v)| k.parse::<f64>().ok().map(|e| (e, *v))));
    pts.sort_by(|a, b| a.0.total_cmp(&b.0));
    pts
}

/// Draws every plot into `out`; returns the files written.
pub fn draw(r: &RobustnessReport, out: &Path) -> anyhow::Result<Vec<PathBuf>> {
    let mut written = Vec::new();
    let mut series = Vec::new();
    for row in &r.adversarial_training {
        let c = Some(row.clean_accuracy);
        series.push((format!("{} model, FGSM", row.training), curve(c, &row.fgsm)));
        if row.training != "standard" {
            series.push((format!("{} model, R+FGSM", row.training), curve(c, &row.rfgsm)));
            series.push((format!("{} model, two-step", row.training), curve(c, &row.two_step)));
        }
    }
    let x_label = "epsilon (L-infinity, inputs in [0, 1])";
    let chart = Chart::new("Accuracy under white-box attacks vs epsilon", x_label, "accuracy (evaluation items)", series);
    written.extend(save(&chart.y_range(0.0, 1.0), &out.join("accuracy_vs_epsilon"))?);
    let mut series = vec![("standard, white-box FGSM".to_string(), curve(Some(r.clean_accuracy), &r.fgsm_accuracy))];
    if let Some(s) = r.substitutes.iter().find(|s| s.oracle == "standard") {
        series.push(("standard, substitute (transfer)".into(), curve(Some(r.clean_accuracy), &s.transfer)));
    }
    for (t, m) in &r.distilled_fgsm_accuracy {
        let c = r.distilled_clean_accuracy.get(t).copied();
        series.push((format!("distilled T={t}, white-box FGSM"), curve(c, m)));
        if let Some(h) = r.distilled_fgsm_at_t_accuracy.get(t) {
            series.push((format!("distilled T={t}, FGSM through logits / T"), curve(c, h)));
        }
        if let Some(tr) = r.distilled_transfer_accuracy.get(t) {
            series.push((format!("distilled T={t}, substitute (transfer)"), curve(c, tr)));
        }
    }
    let title = "Defensive distillation: white-box FGSM vs the substitute attack";
    let chart = Chart::new(title, x_label, "accuracy (evaluation items)", series).legend(SeriesLabelPosition::LowerLeft);
    written.extend(save(&chart.y_range(0.0, 1.0), &out.join("distillation_vs_epsilon"))?);
    let bins = |rel: &pate_ml::calibration::Reliability| -> Vec<(f64, f64)> {
        rel.bins.iter().filter(|b| b.count > 0).map(|b| (b.confidence, b.accuracy)).collect()
    };
    let title = format!("Reliability (single model): ECE {:.3} at T = 1, {:.3} at T = {:.2}", r.ece_before, r.ece_after, r.temperature);
    let series = vec![
        ("perfect calibration".into(), vec![(0.0, 0.0), (1.0, 1.0)]),
        ("before (T = 1)".into(), bins(&r.reliability_before)),
        (format!("after (T = {:.2})", r.temperature), bins(&r.reliability_after)),
    ];
    let chart = Chart::new(title, "mean confidence of the bin (15 bins)", "accuracy of the bin", series).legend(SeriesLabelPosition::UpperLeft);
    written.extend(save(&chart.y_range(0.0, 1.0), &out.join("reliability"))?);
    let w = 1.0 / r.dknn.histograms.first().map_or(10, |h| h.1.len()) as f64;
    let series = r.dknn.histograms.iter().map(|(name, h)| (name.clone(), h.iter().enumerate().map(|(i, &v)| ((i as f64 + 0.5) * w, v)).collect()));
    let chart = Chart::new(format!("Deep k-NN credibility (k = {})", r.dknn.k), "credibility (bin centre)", "share of items", series.collect());
    written.extend(save(&chart.y_range(0.0, 1.0), &out.join("credibility"))?);
    Ok(written)
}

fn row_of(m: &PerEps) -> String {
    m.values().map(|v| format!("{v:.3}")).collect::<Vec<_>>().join(" | ")
}

/// `report.md`.
pub fn markdown(r: &RobustnessReport) -> String {
    let a = &r.args;
    let mut s = String::from("# Robustness report (`pate experiment robustness`)\n\n");
    let _ = writeln!(
        s,
        "{} model, {} training items, {} evaluation items, {} epochs ({} for defensive distillation), seed {}. Inputs in [0, 1]; attacks are L-infinity.\n",
        a.model, r.train_items, r.eval_items, a.epochs, a.distill_epochs, a.seed
    );
    let eps_head = r.fgsm_accuracy.keys().map(|k| format!("eps {k}")).collect::<Vec<_>>().join(" | ");
    let dashes = "|---".repeat(r.fgsm_accuracy.len() + 3);
    let _ = writeln!(s, "## FGSM and adversarial training (radius {}, R+FGSM step {} x eps)\n", a.train_eps, a.alpha_share);
    let _ = writeln!(s, "| model | attack | clean | {eps_head} |\n{dashes}|");
    for row in &r.adversarial_training {
        for (name, m) in [("FGSM", &row.fgsm), ("R+FGSM", &row.rfgsm), ("two-step", &row.two_step)] {
            let _ = writeln!(s, "| {} | {name} | {:.3} | {} |", row.training, row.clean_accuracy, row_of(m));
        }
    }
    let _ = writeln!(s, "\n## Defensive distillation and the substitute attack\n");
    let _ = writeln!(s, "| model | attack | clean | {eps_head} |\n{dashes}|");
    let _ = writeln!(s, "| standard | white-box FGSM | {:.3} | {} |", r.clean_accuracy, row_of(&r.fgsm_accuracy));
    for (t, m) in &r.distilled_fgsm_accuracy {
        let c = r.distilled_clean_accuracy.get(t).copied().unwrap_or(f64::NAN);
        let _ = writeln!(s, "| distilled T={t} | white-box FGSM | {c:.3} | {} |", row_of(m));
        if let Some(h) = r.distilled_fgsm_at_t_accuracy.get(t) {
            let _ = writeln!(s, "| distilled T={t} | FGSM through logits / T | {c:.3} | {} |", row_of(h));
        }
    }
    for sub in &r.substitutes {
        let _ = writeln!(s, "| {} | substitute (transfer) | - | {} |", sub.oracle, row_of(&sub.transfer));
    }
    let _ = writeln!(s, "\nShare of exactly zero input-gradient components at T = 1: {:?}.", r.distilled_zero_gradient_share);
    for (t, x) in &r.distilled_saturation {
        let _ = writeln!(
            s,
            "Distilled T={t} at T = 1: median logit gap {:.1}, share of items with a gap over 104 (gradient underflows) {:.3}, items with an all-zero input gradient {:.3}.",
            x.median_logit_gap, x.gap_over_104, x.zero_gradient_items
        );
    }
    let _ = writeln!(
        s,
        "Substitutes: MLP, {} public items, {} rounds of Jacobian augmentation (lambda {}); items / own accuracy / agreement with the oracle: {}.\n",
        a.substitute_items,
        a.jacobian_rounds,
        a.jacobian_lambda,
        r.substitutes.iter().map(|x| format!("{} {} / {:.3} / {:.3}", x.oracle, x.items, x.substitute_accuracy, x.agreement)).collect::<Vec<_>>().join("; ")
    );
    let _ = writeln!(s, "## Calibration (temperature fitted on {} held-out items; ECE with 15 bins)\n", a.calibration_size);
    let _ = writeln!(s, "| model | accuracy | T | ECE before / after (fit split) | ECE before / after (evaluation) | NLL before / after (evaluation) |\n|---|---|---|---|---|---|");
    for c in &r.calibration {
        let _ = writeln!(
            s,
            "| {} | {:.3} | {:.3} | {:.4} / {:.4} | {:.4} / {:.4} | {:.4} / {:.4} |",
            c.model, c.accuracy, c.temperature, c.fit_ece_before, c.fit_ece_after, c.ece_before, c.ece_after, c.nll_before, c.nll_after
        );
    }
    let p = &r.pate_student;
    let _ = writeln!(s, "\nPATE-style student: {} teachers, LNMax b = {}, {} of {} public items answered, label accuracy {:.3}; {}.\n", p.teachers, p.noise_scale, p.answered, p.queries, p.label_accuracy, p.note);
    let d = &r.dknn;
    let _ = writeln!(s, "## Deep k-NN credibility (k = {}, {} layers, {} training items indexed, {} calibration items, {} items per population)\n", d.k, d.layers, d.train_items, d.calibration_items, d.items);
    let _ = writeln!(s, "| clean vs | credibility AUC | top-softmax AUC (baseline) |\n|---|---|---|");
    let _ = writeln!(s, "| FGSM eps={} (standard model) | {:.3} | {:.3} |", d.eps, d.auc_fgsm, d.softmax_auc[0]);
    let _ = writeln!(s, "| triggered (backdoored model) | {:.3} | {:.3} |", d.auc_trigger, d.softmax_auc[1]);
    let _ = writeln!(s, "| out of distribution | {:.3} | {:.3} |", d.auc_ood, d.softmax_auc[2]);
    let _ = writeln!(s, "\nOOD items: {}. Deep k-NN accuracy on clean items {:.3}; mean credibility clean / FGSM / clean (backdoored model) / triggered / OOD: {}.\n", d.ood_source, d.dknn_accuracy, d.mean_credibility.iter().map(|v| format!("{v:.3}")).collect::<Vec<_>>().join(" / "));
    let _ = writeln!(s, "## Backdoor: fine-tuning against distillation (poison rate {}, target {}, {} public items)\n", a.poison_rate, a.target, a.public_size);
    let _ = writeln!(s, "| seed | poisoned ASR / acc | fine-tuned ASR / acc | distilled ASR / acc |\n|---|---|---|---|");
    for b in &r.backdoor {
        let _ = writeln!(s, "| {} | {:.3} / {:.3} | {:.3} / {:.3} | {:.3} / {:.3} |", b.seed, b.poisoned.asr, b.poisoned.accuracy, b.finetune.asr, b.finetune.accuracy, b.distill.asr, b.distill.accuracy);
    }
    let _ = writeln!(s, "| mean | {:.3} / {:.3} | {:.3} / {:.3} | {:.3} / {:.3} |", r.poisoned_asr, r.poisoned_accuracy, r.finetune_asr, r.finetune_accuracy, r.distill_asr, r.distill_accuracy);
    let _ = writeln!(s, "\nClean model's ASR (the trigger's natural rate): {:.3}. Wall time {:.0} s.", r.clean_asr, r.total_seconds);
    s
}

/// The terminal summary.
pub fn print_summary(r: &RobustnessReport) {
    say!();
    say!("  {:<44} {:>8.4}", "clean accuracy", r.clean_accuracy);
    for (k, v) in &r.fgsm_accuracy {
        let w = r.adv_trained_fgsm_accuracy.get(k).copied().unwrap_or(f64::NAN);
        say!("  {:<44} {:>8.4} / {w:.4}", format!("FGSM eps {k}: standard / FGSM-trained"), v);
    }
    say!("  {:<44} {:>8.4} -> {:.4} (T = {:.3})", "ECE (evaluation items)", r.ece_before, r.ece_after, r.temperature);
    say!("  {:<44} {:>8.4} / {:.4} / {:.4}", "Deep k-NN AUC: FGSM / trigger / OOD", r.dknn_auc_fgsm, r.dknn_auc_trigger, r.dknn_auc_ood);
    say!("  {:<44} {:>8.4} / {:.4} / {:.4}", "ASR: fine-tuned / distilled / clean", r.finetune_asr, r.distill_asr, r.clean_asr);
}
