//! FGSM against a standard model (Goodfellow et al., arXiv 1412.6572) and
//! adversarial training with FGSM and with R+FGSM (Tramer et al., arXiv
//! 1705.07204), each model evaluated under FGSM, R+FGSM and a two-step
//! iterative FGSM at every radius.

use candle_core::Module;
use pate_ml::advtrain::train_adversarial;
use pate_ml::attack::{perturb_all, Attack};
use pate_ml::train::{train, Trained};
use pate_ml::Classifier;
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Serialize};

use super::{accuracy_on, key, Ctx, PerEps};
use crate::progress::say;

/// One model under every attack.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct AdvRow {
    /// How it was trained: `standard`, `fgsm` or `r+fgsm` (adversarial training).
    pub training: String,
    /// Adversarial training radius.
    pub train_eps: Option<f64>,
    /// Clean accuracy.
    pub clean_accuracy: f64,
    /// Accuracy under FGSM, per epsilon.
    pub fgsm: PerEps,
    /// Under R+FGSM (random step `alpha_share * eps`).
    pub rfgsm: PerEps,
    /// Under two-step iterative FGSM.
    pub two_step: PerEps,
}

/// What the section measured, and the standard model for the others.
pub struct AdvOutcome {
    /// The standard model.
    pub standard: Trained,
    /// Its clean accuracy.
    pub clean_accuracy: f64,
    /// Its accuracy under FGSM.
    pub fgsm_accuracy: PerEps,
    /// The FGSM-trained model's under FGSM.
    pub adv_trained_fgsm_accuracy: PerEps,
    /// The R+FGSM-trained model's under FGSM.
    pub rfgsm_trained_fgsm_accuracy: PerEps,
    /// Every model under every attack.
    pub rows: Vec<AdvRow>,
}

/// Accuracy of `model` on the evaluation items attacked by `attack`.
pub fn attacked_accuracy(ctx: &Ctx, model: &Classifier, attack: Attack, seed: u64) -> anyhow::Result<f64> {
    crafted_accuracy(ctx, model, model, attack, seed)
}

/// Accuracy of `judged` on the evaluation items attacked by `attack`
/// crafted on `source` (the same model seen another way, or another model).
pub fn crafted_accuracy<M: Module>(ctx: &Ctx, source: &M, judged: &Classifier, attack: Attack, seed: u64) -> anyhow::Result<f64> {
    let mut rng = ChaCha8Rng::seed_from_u64(seed ^ 0x00a7_7ac4);
    let adv = perturb_all(source, &ctx.eval_x, &ctx.eval.labels, attack, 256, &mut rng)?;
    accuracy_on(judged, &adv, &ctx.eval.labels)
}

/// Evaluates one model under the three attacks at every radius.
pub fn evaluate(ctx: &Ctx, model: &Classifier, training: &str, train_eps: Option<f64>) -> anyhow::Result<AdvRow> {
    let a = &ctx.args;
    let mut row = AdvRow {
        training: training.into(),
        train_eps,
        clean_accuracy: accuracy_on(model, &ctx.eval_x, &ctx.eval.labels)?,
        fgsm: PerEps::new(),
        rfgsm: PerEps::new(),
        two_step: PerEps::new(),
    };
    for &eps in &a.epsilons {
        row.fgsm.insert(key(eps), attacked_accuracy(ctx, model, Attack::Fgsm { eps }, a.seed)?);
        row.rfgsm.insert(key(eps), attacked_accuracy(ctx, model, Attack::RandFgsm { eps, alpha: a.alpha_share * eps }, a.seed)?);
        row.two_step.insert(key(eps), attacked_accuracy(ctx, model, Attack::Iterative { eps, steps: 2 }, a.seed)?);
    }
    let show = |m: &PerEps| m.iter().map(|(k, v)| format!("{k}: {v:.3}")).collect::<Vec<_>>().join(", ");
    say!("  {training:<9} clean {:.3} | FGSM {} | R+FGSM {} | two-step {}", row.clean_accuracy, show(&row.fgsm), show(&row.rfgsm), show(&row.two_step));
    Ok(row)
}

/// Trains the standard and the two adversarially trained models and evaluates them.
pub fn run(ctx: &Ctx) -> anyhow::Result<AdvOutcome> {
    let a = &ctx.args;
    let cfg = a.cfg(a.epochs, a.seed);
    let standard = train(a.model, &ctx.train, ctx.classes, &cfg, &mut |_| {})?;
    let std_row = evaluate(ctx, &standard.model, "standard", None)?;
    let eps = a.train_eps;
    let fgsm_model = train_adversarial(a.model, &ctx.train, ctx.classes, &cfg, Some(Attack::Fgsm { eps }), &mut |_| {})?;
    let fgsm_row = evaluate(ctx, &fgsm_model.model, "fgsm", Some(eps))?;
    let rand_attack = Attack::RandFgsm { eps, alpha: a.alpha_share * eps };
    let rfgsm_model = train_adversarial(a.model, &ctx.train, ctx.classes, &cfg, Some(rand_attack), &mut |_| {})?;
    let rfgsm_row = evaluate(ctx, &rfgsm_model.model, "r+fgsm", Some(eps))?;
    Ok(AdvOutcome {
        clean_accuracy: std_row.clean_accuracy,
        fgsm_accuracy: std_row.fgsm.clone(),
        adv_trained_fgsm_accuracy: fgsm_row.fgsm.clone(),
        rfgsm_trained_fgsm_accuracy: rfgsm_row.fgsm.clone(),
        rows: vec![std_row, fgsm_row, rfgsm_row],
        standard,
    })
}
