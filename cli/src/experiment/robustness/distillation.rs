//! Defensive distillation (Papernot et al., arXiv 1511.04508) and the
//! black-box substitute attack that defeats it (Papernot et al., arXiv
//! 1602.02697).
//!
//! At temperature T a teacher is trained on the training items' one-hot
//! labels with `softmax(logits / T)`; a fresh model is trained at the same
//! T on the teacher's softened outputs and deployed at T = 1, where its
//! logits are ~T times larger than needed, the softmax saturates and the
//! input gradient of the loss is (in `f32`) exactly zero once an item's
//! logit gap passes ~100 ([`pate_ml::attack::input_gradient`] says why not
//! before): white-box FGSM has nothing to follow. How far the models get
//! there is measured (logit gaps, items with an all-zero gradient), and
//! so is FGSM through the logits divided by T (Carlini and Wagner, arXiv
//! 1607.04311), which undoes the masking. The substitute attack never asks for a
//! gradient: a substitute MLP is trained on the deployed model's labels of
//! a few public items, grown by Jacobian-based augmentation (each round adds
//! `x + lambda * sign(d F_y / dx)` for every item, labelled by the oracle),
//! and FGSM crafted on the substitute is sent to the deployed model.

use std::collections::BTreeMap;

use candle_core::{Device, Tensor};
use pate_ml::attack::{input_gradient, jacobian_augment, AtTemperature, Attack};
use pate_ml::data::{Dataset, Images};
use pate_ml::model::ModelKind;
use pate_ml::train::{accuracy, images_to_tensor, predict, predict_logits_tensor, predict_proba, predict_tensor, train, train_soft, TrainConfig, Trained};
use pate_ml::Classifier;
use serde::{Deserialize, Serialize};

use super::attacks::{attacked_accuracy, crafted_accuracy};
use super::{accuracy_on, key, Ctx, PerEps};
use crate::progress::say;

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
    /// How saturated each distilled model is at T = 1, per temperature.
    pub saturation: BTreeMap<String, Saturation>,
    /// White-box FGSM through the logits divided by T, per temperature, per epsilon.
    pub fgsm_at_t: BTreeMap<String, PerEps>,
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

/// How far a model's softmax is saturated at T = 1 on the evaluation items.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Saturation {
    /// Median gap between the two largest logits.
    pub median_logit_gap: f64,
    /// Share of items whose gap exceeds 104, where `exp(-gap)` underflows
    /// even `f32`'s subnormal numbers and the loss gradient is exactly zero.
    pub gap_over_104: f64,
    /// Share of items (of the first 256) whose whole input gradient is exactly zero.
    pub zero_gradient_items: f64,
}

/// Share of the input-gradient components on the evaluation items that are
/// exactly zero, and how saturated the model is.
fn saturation(ctx: &Ctx, model: &Classifier) -> anyhow::Result<(f64, Saturation)> {
    let n = ctx.eval.len().min(256);
    let y = Tensor::from_vec(ctx.eval.labels[..n].iter().map(|&l| u32::from(l)).collect::<Vec<_>>(), n, &Device::Cpu)?;
    let g = input_gradient(model, &ctx.eval_x.narrow(0, 0, n)?, &y, 1.0)?.flatten_all()?.to_vec1::<f32>()?;
    let zero = g.iter().filter(|&&x| x == 0.0).count() as f64 / g.len().max(1) as f64;
    let per = g.len() / n.max(1);
    let dead = g.chunks(per.max(1)).filter(|c| c.iter().all(|&v| v == 0.0)).count() as f64 / n.max(1) as f64;
    let mut gaps: Vec<f64> = predict_logits_tensor(model, &ctx.eval_x, 512)?
        .iter()
        .map(|l| {
            let mut v: Vec<f32> = l.clone();
            v.sort_by(|a, b| b.total_cmp(a));
            f64::from(v[0] - v.get(1).copied().unwrap_or(v[0]))
        })
        .collect();
    gaps.sort_by(f64::total_cmp);
    let over = gaps.iter().filter(|&&d| d > 104.0).count() as f64 / gaps.len().max(1) as f64;
    let median = gaps.get(gaps.len() / 2).copied().unwrap_or(0.0);
    Ok((zero, Saturation { median_logit_gap: median, gap_over_104: over, zero_gradient_items: dead }))
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
        transfer.insert(key(eps), crafted_accuracy(ctx, &sub.model, oracle, Attack::Fgsm { eps }, a.seed)?);
    }
    let row = SubstituteRow {
        oracle: name.into(),
        items: set.len(),
        substitute_accuracy: accuracy(&sub_pred, &ctx.eval.labels),
        agreement: accuracy(&sub_pred, &oracle_pred),
        transfer,
    };
    say!(
        "  substitute of {name}: {} items, accuracy {:.3}, agreement {:.3}, transfer {:?}",
        row.items, row.substitute_accuracy, row.agreement, row.transfer
    );
    Ok(row)
}

/// Distils at every temperature, attacks white-box and through a substitute.
pub fn run(ctx: &Ctx, standard: &Trained) -> anyhow::Result<DistillOutcome> {
    let a = &ctx.args;
    let cfg = a.cfg(a.distill_epochs, a.seed);
    let mut out = DistillOutcome {
        clean: BTreeMap::new(),
        fgsm: BTreeMap::new(),
        zero_gradient_share: BTreeMap::new(),
        saturation: BTreeMap::new(),
        fgsm_at_t: BTreeMap::new(),
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
        let (mut fgsm, mut at_t) = (PerEps::new(), PerEps::new());
        let hot = AtTemperature { model: m, temperature: t };
        for &eps in &a.epsilons {
            fgsm.insert(key(eps), attacked_accuracy(ctx, m, Attack::Fgsm { eps }, a.seed)?);
            at_t.insert(key(eps), crafted_accuracy(ctx, &hot, m, Attack::Fgsm { eps }, a.seed)?);
        }
        let (zero, sat) = saturation(ctx, m)?;
        say!(
            "  distilled at T = {t}: clean {clean:.3}, white-box FGSM {fgsm:?}, FGSM through logits / T {at_t:?}, \
             zero gradient components {zero:.3}, items {:.3}, median logit gap {:.1}",
            sat.zero_gradient_items, sat.median_logit_gap
        );
        let sub = substitute_attack(ctx, m, &format!("distilled T={t}"))?;
        out.clean.insert(key(t), clean);
        out.fgsm.insert(key(t), fgsm);
        out.zero_gradient_share.insert(key(t), zero);
        out.saturation.insert(key(t), sat);
        out.fgsm_at_t.insert(key(t), at_t);
        out.transfer.insert(key(t), sub.transfer.clone());
        out.substitutes.push(sub);
    }
    Ok(out)
}
