//! Defensive distillation (Papernot et al., arXiv 1511.04508) and the
//! black-box substitute attack that defeats it (Papernot et al., arXiv
//! 1602.02697).
//!
//! At temperature T a teacher is trained on the training items' one-hot
//! labels with `softmax(logits / T)`; a fresh model is trained at the same
//! T on the teacher's softened outputs and deployed at T = 1, where its
//! logits are ~T times larger than needed, the softmax saturates and the
//! input gradient of the loss is (in `f32`) mostly exactly zero: white-box
//! FGSM has nothing to follow. The substitute attack never asks for a
//! gradient: a substitute MLP is trained on the deployed model's labels of
//! a few public items, grown by Jacobian-based augmentation (each round adds
//! `x + lambda * sign(d F_y / dx)` for every item, labelled by the oracle),
//! and FGSM crafted on the substitute is sent to the deployed model.

use std::collections::BTreeMap;

use candle_core::{Device, Tensor};
use pate_ml::attack::{input_gradient, jacobian_augment, perturb_all, Attack};
use pate_ml::data::{Dataset, Images};
use pate_ml::model::ModelKind;
use pate_ml::train::{accuracy, images_to_tensor, predict, predict_proba, predict_tensor, train, train_soft, TrainConfig, Trained};
use pate_ml::Classifier;
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Serialize};

use super::attacks::attacked_accuracy;
use super::{accuracy_on, key, Ctx, PerEps};

/// One substitute attack.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct SubstituteRow {
    /// The attacked (oracle) model: `standard` or `distilled T=...`.
    pub oracle: String,
    /// Items the substitute was finally trained on (after augmentation).
    pub items: usize,
    /// The substitute's own accuracy on the evaluation items.
    pub substitute_accuracy: f64,
    /// Share of evaluation items where substitute and oracle agree.
    pub agreement: f64,
    /// The oracle's accuracy on FGSM items crafted on the substitute, per epsilon.
    pub transfer: PerEps,
}

/// What the section measured.
pub struct DistillOutcome {
    /// Clean accuracy per temperature.
    pub clean: BTreeMap<String, f64>,
    /// White-box FGSM accuracy per temperature, per epsilon.
    pub fgsm: BTreeMap<String, PerEps>,
    /// Share of exactly zero input-gradient components per temperature.
    pub zero_gradient_share: BTreeMap<String, f64>,
    /// Transfer accuracy per temperature, per epsilon.
    pub transfer: BTreeMap<String, PerEps>,
    /// Every substitute attack.
    pub substitutes: Vec<SubstituteRow>,
}

/// `[0, 1]` inputs back to pixels (the augmentation's steps are 0.1, far
/// above the 1/255 rounding).
fn to_images(x: &Tensor, rows: usize, cols: usize) -> anyhow::Result<Images> {
    let v = x.flatten_all()?.to_vec1::<f32>()?;
    Ok(Images { data: v.iter().map(|&p| (p * 255.0).round().clamp(0.0, 255.0) as u8).collect(), rows, cols })
}

fn one_hot(labels: &[u8], classes: usize) -> Vec<Vec<f32>> {
    labels.iter().map(|&l| (0..classes).map(|c| if c == usize::from(l) { 1.0 } else { 0.0 }).collect()).collect()
}

/// Share of the input-gradient components on the evaluation items that are exactly zero.
fn zero_gradient_share(ctx: &Ctx, model: &Classifier) -> anyhow::Result<f64> {
    let n = ctx.eval.len().min(256);
    let y = Tensor::from_vec(ctx.eval.labels[..n].iter().map(|&l| u32::from(l)).collect::<Vec<_>>(), n, &Device::Cpu)?;
    let g = input_gradient(model, &ctx.eval_x.narrow(0, 0, n)?, &y, 1.0)?;
    let v = g.flatten_all()?.to_vec1::<f32>()?;
    Ok(v.iter().filter(|&&x| x == 0.0).count() as f64 / v.len().max(1) as f64)
}

/// The substitute attack on `oracle`.
pub fn substitute_attack(ctx: &Ctx, oracle: &Classifier, name: &str) -> anyhow::Result<SubstituteRow> {
    let a = &ctx.args;
    let (rows, cols) = (ctx.eval.images.rows, ctx.eval.images.cols);
    let start = ctx.public.images.range(0..a.substitute_items.min(ctx.public.len()));
    let mut set = Dataset { labels: predict(oracle, &start, 512)?, images: start };
    let cfg = TrainConfig { epochs: a.substitute_epochs, batch_size: 32, seed: a.seed ^ 0x5b, ..TrainConfig::default() };
    let fit = |set: &Dataset| -> anyhow::Result<Trained> { Ok(train(ModelKind::Mlp, set, ctx.classes, &cfg, &mut |_| {})?) };
    for _ in 0..a.jacobian_rounds {
        let sub = fit(&set)?;
        let x = images_to_tensor(&set.images, &Device::Cpu)?;
        let grown = to_images(&jacobian_augment(&sub.model, &x, &set.labels, a.jacobian_lambda, 256)?, rows, cols)?;
        let labels = predict(oracle, &grown, 512)?;
        set.images.data.extend_from_slice(&grown.data);
        set.labels.extend(labels);
    }
    let sub = fit(&set)?;
    let sub_pred = predict_tensor(&sub.model, &ctx.eval_x, 512)?;
    let oracle_pred = predict_tensor(oracle, &ctx.eval_x, 512)?;
    let mut transfer = PerEps::new();
    for &eps in &a.epsilons {
        let mut rng = ChaCha8Rng::seed_from_u64(a.seed);
        let adv = perturb_all(&sub.model, &ctx.eval_x, &ctx.eval.labels, Attack::Fgsm { eps }, 256, &mut rng)?;
        transfer.insert(key(eps), accuracy_on(oracle, &adv, &ctx.eval.labels)?);
    }
    let row = SubstituteRow {
        oracle: name.into(),
        items: set.len(),
        substitute_accuracy: accuracy(&sub_pred, &ctx.eval.labels),
        agreement: accuracy(&sub_pred, &oracle_pred),
        transfer,
    };
    println!(
        "  substitute of {name}: {} items, accuracy {:.3}, agreement {:.3}, transfer {:?}",
        row.items, row.substitute_accuracy, row.agreement, row.transfer
    );
    Ok(row)
}

/// Distils at every temperature, attacks white-box and through a substitute.
pub fn run(ctx: &Ctx, standard: &Trained) -> anyhow::Result<DistillOutcome> {
    let a = &ctx.args;
    let cfg = a.cfg(a.epochs, a.seed);
    let mut out = DistillOutcome {
        clean: BTreeMap::new(),
        fgsm: BTreeMap::new(),
        zero_gradient_share: BTreeMap::new(),
        transfer: BTreeMap::new(),
        substitutes: vec![substitute_attack(ctx, &standard.model, "standard")?],
    };
    let hot = one_hot(&ctx.train.labels, ctx.classes);
    for &t in &a.temperatures {
        let teacher = train_soft(a.model, &ctx.train.images, &hot, t, &cfg, &mut |_| {})?;
        let soft = predict_proba(&teacher.model, &ctx.train.images, 512, t)?;
        let distilled = train_soft(a.model, &ctx.train.images, &soft, t, &cfg, &mut |_| {})?;
        let m = &distilled.model;
        let clean = accuracy_on(m, &ctx.eval_x, &ctx.eval.labels)?;
        let mut fgsm = PerEps::new();
        for &eps in &a.epsilons {
            fgsm.insert(key(eps), attacked_accuracy(ctx, m, Attack::Fgsm { eps }, a.seed)?);
        }
        let zero = zero_gradient_share(ctx, m)?;
        println!("  distilled at T = {t}: clean {clean:.3}, white-box FGSM {fgsm:?}, zero input gradients {zero:.3}");
        let sub = substitute_attack(ctx, m, &format!("distilled T={t}"))?;
        out.clean.insert(key(t), clean);
        out.fgsm.insert(key(t), fgsm);
        out.zero_gradient_share.insert(key(t), zero);
        out.transfer.insert(key(t), sub.transfer.clone());
        out.substitutes.push(sub);
    }
    Ok(out)
}
