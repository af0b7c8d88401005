//! A backdoor fine-tuned against distilled away. The single-teacher mode's
//! poisoned model (BadNets' checkerboard on a share of the training items,
//! relabelled to the target) is (a) fine-tuned, all layers, on the pristine
//! public items with their true labels — BadNets' transfer-learning setting
//! (Gu et al., arXiv 1708.06733), where the backdoor survived — and (b)
//! distilled into a fresh model on the same pristine items (Hinton's loss
//! at temperature T), which never sees the trigger and has no weights of
//! the poisoned model. Several seeds.

use pate_ml::advtrain::fine_tune;
use pate_ml::data::Dataset;
use pate_ml::train::{predict_proba, train, train_soft, Trained};
use pate_ml::trigger::{poison, PoisonSpec, Trigger};
use serde::{Deserialize, Serialize};

use super::Ctx;
use crate::experiment::measure::{score_model, Scores};
use crate::progress::say;

/// One seed of the comparison.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct BackdoorSeed {
    /// Seed of poisoning and training.
    pub seed: u64,
    /// The poisoned model.
    pub poisoned: Scores,
    /// It, fine-tuned on the public items.
    pub finetune: Scores,
    /// A fresh model distilled from it on the public items.
    pub distill: Scores,
}

/// What the section measured.
pub struct BdOutcome {
    /// Per seed.
    pub seeds: Vec<BackdoorSeed>,
    /// ASR of the standard (clean) model.
    pub clean_asr: f64,
    /// The first seed's poisoned model (for Deep k-NN on triggered items).
    pub first_poisoned: Trained,
    /// Its (poisoned) training items.
    pub first_poisoned_train: Dataset,
}

/// The trigger of the comparison.
pub fn trigger(ctx: &Ctx) -> Trigger {
    ctx.args.trigger.into()
}

/// Runs every seed.
pub fn run(ctx: &Ctx, standard: &Trained) -> anyhow::Result<BdOutcome> {
    let a = &ctx.args;
    let trig = trigger(ctx);
    let eval_trig = trig.stamp_all(&ctx.eval.images);
    let clean_asr = score_model(&standard.model, &ctx.eval, &eval_trig, a.target)?.asr;
    let mut seeds = Vec::new();
    let mut first = None;
    let n = a.backdoor_seeds as u64;
    for s in a.seed * n..a.seed * n + n {
        let spec = PoisonSpec { trigger: trig.clone(), rate: a.poison_rate, target_class: a.target, seed: s ^ 0x51_4e_47 };
        let data = poison(&ctx.train, &spec);
        let poisoned = train(a.model, &data, ctx.classes, &a.cfg(a.epochs, s), &mut |_| {})?;
        let tuned = fine_tune(&poisoned, &ctx.public, &a.cfg(a.finetune_epochs, s), &mut |_| {})?;
        let targets = predict_proba(&poisoned.model, &ctx.public.images, 512, a.distill_temperature)?;
        let student = train_soft(a.model, &ctx.public.images, &targets, a.distill_temperature, &a.cfg(a.student_epochs, s), &mut |_| {})?;
        let row = BackdoorSeed {
            seed: s,
            poisoned: score_model(&poisoned.model, &ctx.eval, &eval_trig, a.target)?,
            finetune: score_model(&tuned.model, &ctx.eval, &eval_trig, a.target)?,
            distill: score_model(&student.model, &ctx.eval, &eval_trig, a.target)?,
        };
        say!(
            "  seed {s}: poisoned ASR {:.3} (acc {:.3}) | fine-tuned ASR {:.3} (acc {:.3}) | distilled ASR {:.3} (acc {:.3})",
            row.poisoned.asr, row.poisoned.accuracy, row.finetune.asr, row.finetune.accuracy, row.distill.asr, row.distill.accuracy
        );
        seeds.push(row);
        if first.is_none() {
            first = Some((poisoned, data));
        }
    }
    let (first_poisoned, first_poisoned_train) = first.ok_or_else(|| anyhow::anyhow!("no backdoor seed ran"))?;
    say!("  clean model's ASR (the trigger's natural rate): {clean_asr:.3}");
    Ok(BdOutcome { seeds, clean_asr, first_poisoned, first_poisoned_train })
}
