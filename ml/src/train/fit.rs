//! The training loop: a fresh seeded model, minibatch AdamW over a seeded
//! shuffle, hard labels or soft targets, one [`EpochReport`] per epoch.

use std::borrow::Cow;
use std::time::Instant;

use candle_core::backprop::GradStore;
use candle_core::{Device, Module, Tensor, D};
use candle_nn::{ParamsAdamW, VarMap};
use rand::seq::SliceRandom;
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use rayon::prelude::*;

use super::batch::{batch_tensor, shifted_batch_tensor};
use super::distil::{self, Distillation};
use super::{EpochReport, TrainConfig, TrainError, Trained};
use crate::data::{Dataset, Images};
use crate::model::{Classifier, ModelKind};
use crate::optim::FusedAdamW;

/// The targets of one training run.
pub(super) enum Targets<'a> {
    /// Hard labels.
    Hard(&'a [u8]),
    /// Probability vectors (one per item, `classes` long) and the loss.
    Soft(&'a [Vec<f32>], Distillation),
}

/// Trains a fresh `kind` model on `data` with hard labels in `0..classes`.
/// `progress` is called after every epoch.
pub fn train(
    kind: ModelKind,
    data: &Dataset,
    classes: usize,
    cfg: &TrainConfig,
    progress: &mut dyn FnMut(EpochReport),
) -> Result<Trained, TrainError> {
    if data.labels.len() != data.images.len() {
        return Err(TrainError::Invalid(format!(
            "{} images but {} labels",
            data.images.len(),
            data.labels.len()
        )));
    }
    if let Some(&bad) = data.labels.iter().find(|&&l| l as usize >= classes) {
        return Err(TrainError::Invalid(format!(
            "label {bad} is not below the class count {classes}"
        )));
    }
    train_impl(kind, &data.images, Targets::Hard(&data.labels), classes, cfg, progress)
}

/// The loop shared by [`train`] and [`super::distil::train_distil`], which
/// have checked their targets.
pub(super) fn train_impl(
    kind: ModelKind,
    images: &Images,
    targets: Targets<'_>,
    classes: usize,
    cfg: &TrainConfig,
    progress: &mut dyn FnMut(EpochReport),
) -> Result<Trained, TrainError> {
    if images.is_empty() {
        return Err(TrainError::Invalid("no training items".into()));
    }
    if classes == 0 {
        return Err(TrainError::Invalid("zero classes".into()));
    }
    if cfg.batch_size == 0 {
        return Err(TrainError::Invalid("batch size must be at least 1".into()));
    }
    if !(cfg.learning_rate.is_finite() && cfg.learning_rate > 0.0 && cfg.weight_decay.is_finite()) {
        return Err(TrainError::Invalid(
            "learning rate must be positive and weight decay finite".into(),
        ));
    }
    let device = Device::Cpu;
    let (model, varmap, mut opt) = fresh(kind, images, classes, cfg)?;
    let mut rng = ChaCha8Rng::seed_from_u64(cfg.seed ^ 0x5eed_5eed_5eed_5eed);
    // A stream of its own, so that training without shifts is unchanged.
    let mut shift_rng = ChaCha8Rng::seed_from_u64(cfg.seed ^ 0x5817_7ed5_5817_7ed5);
    let max_shift = match &targets {
        Targets::Soft(_, loss) => loss.max_shift,
        Targets::Hard(_) => cfg.max_shift,
    };
    if max_shift >= images.rows.min(images.cols) {
        return Err(TrainError::Invalid(format!(
            "a shift of {max_shift} pixels would move every {}x{} image off itself",
            images.rows, images.cols
        )));
    }
    // Features no step changes (the scattering transform) are computed once,
    // not per batch and epoch; shifted batches need them afresh.
    let fixed = if max_shift == 0 { model.fixed_features(images)? } else { None };
    if !(cfg.feature_l2.is_finite() && cfg.feature_l2 >= 0.0) {
        return Err(TrainError::Invalid(format!("feature L2 {} must be >= 0", cfg.feature_l2)));
    }
    if cfg.feature_l2 > 0.0 && fixed.is_none() {
        return Err(TrainError::Invalid(format!(
            "feature L2 needs a model on fixed features (scatter) trained without shifts, not {kind}"
        )));
    }
    let standard = match &fixed {
        Some(f) if cfg.feature_l2 > 0.0 => Some(Standardise::fit(f)?),
        _ => None,
    };
    let fixed = match (&standard, fixed) {
        (Some(s), Some(f)) => Some(s.apply(&f)?),
        (_, f) => f,
    };
    let head = if standard.is_some() { model.head_weight() } else { None };
    let mut order: Vec<usize> = (0..images.len()).collect();
    for epoch in 1..=cfg.epochs {
        let start = Instant::now();
        order.shuffle(&mut rng);
        let (mut loss_sum, mut correct) = (0f64, 0usize);
        for idx in order.chunks(cfg.batch_size) {
            let n = idx.len();
            let x = if let Some(f) = &fixed {
                let rows: Vec<u32> = idx.iter().map(|&i| i as u32).collect();
                f.index_select(&Tensor::from_vec(rows, n, &device)?, 0)?
            } else if max_shift == 0 {
                batch_tensor(images, idx, &device)?
            } else {
                shifted_batch_tensor(images, idx, max_shift, &mut shift_rng, &device)?
            };
            let want = match &targets {
                Targets::Hard(labels) => Want::Hard(idx.iter().map(|&i| u32::from(labels[i])).collect()),
                Targets::Soft(probs, loss) => {
                    let flat: Vec<f32> = idx.iter().flat_map(|&i| probs[i].iter().copied()).collect();
                    Want::Soft(Tensor::from_vec(flat, (n, classes), &device)?, loss)
                }
            };
            // The batch's parts go through forward and backward on their own
            // threads; the optimiser sums their gradients, weighted by size.
            let part = |(a, len): (usize, usize)| -> Result<Part, TrainError> {
                let xs = x.narrow(0, a, len)?;
                let logits = if fixed.is_some() { model.forward_features(&xs)? } else { model.forward(&xs)? };
                let (loss, hard): (Tensor, Cow<[u32]>) = match &want {
                    Want::Hard(y) => (super::cross_entropy(&logits, &y[a..a + len])?, Cow::Borrowed(&y[a..a + len])),
                    Want::Soft(p, loss) => {
                        let (l, hard) = distil::loss(&logits, &p.narrow(0, a, len)?, loss)?;
                        (l, Cow::Owned(hard.to_vec1::<u32>()?))
                    }
                };
                let loss = match head {
                    Some(w) => (loss + (w.sqr()?.sum_all()? * cfg.feature_l2)?)?,
                    None => loss,
                };
                part_step(&loss, &logits, &hard, len as f64, len as f32 / n as f32)
            };
            let parts: Vec<Part> = split_batch(n).into_par_iter().map(part).collect::<Result<_, _>>()?;
            let (l, c) = apply_parts(&mut opt, &parts)?;
            loss_sum += l;
            correct += c;
        }
        finish_epoch(epoch, loss_sum, correct, images.len(), start, progress)?;
    }
    if let Some(s) = &standard {
        s.fold_into_head(&varmap)?;
    }
    Ok(Trained {
        model,
        varmap,
        kind,
        rows: images.rows,
        cols: images.cols,
        classes,
    })
}

/// Per-feature standardisation of fixed features, fitted on the training
/// set (as sklearn's `StandardScaler`: a feature that never varies keeps
/// scale 1).
struct Standardise {
    mean: Vec<f32>,
    scale: Vec<f32>,
}

impl Standardise {
    fn fit(features: &Tensor) -> candle_core::Result<Self> {
        let (n, d) = features.dims2()?;
        let f = features.flatten_all()?.to_vec1::<f32>()?;
        let (mut mean, mut var) = (vec![0f64; d], vec![0f64; d]);
        for row in f.chunks(d) {
            mean.iter_mut().zip(row).for_each(|(m, &v)| *m += f64::from(v));
        }
        mean.iter_mut().for_each(|m| *m /= n as f64);
        for row in f.chunks(d) {
            var.iter_mut().zip(row).zip(&mean).for_each(|((s, &v), m)| *s += (f64::from(v) - m).powi(2));
        }
        let scale = var.iter().map(|s| (s / n as f64).sqrt()).map(|s| if s > 1e-8 { s as f32 } else { 1.0 }).collect();
        Ok(Standardise { mean: mean.into_iter().map(|m| m as f32).collect(), scale })
    }

    fn apply(&self, features: &Tensor) -> candle_core::Result<Tensor> {
        let d = self.mean.len();
        let mean = Tensor::from_slice(&self.mean, (1, d), features.device())?;
        let scale = Tensor::from_slice(&self.scale, (1, d), features.device())?;
        features.broadcast_sub(&mean)?.broadcast_div(&scale)
    }

    /// Rewrites the head `z = W ((x - mean) / scale) + b` as a head on the
    /// raw features: `W' = W / scale`, `b' = b - W' mean`.
    fn fold_into_head(&self, varmap: &VarMap) -> candle_core::Result<()> {
        let vars = varmap.data().lock().map_err(|_| candle_core::Error::Msg("variable map poisoned".into()))?;
        let (Some(w), Some(b)) = (vars.get("fc.weight"), vars.get("fc.bias")) else {
            candle_core::bail!("no head (fc.weight, fc.bias) to fold the standardisation into");
        };
        let (out, d) = w.as_tensor().dims2()?;
        let mut weight = w.as_tensor().flatten_all()?.to_vec1::<f32>()?;
        let mut bias = b.as_tensor().to_vec1::<f32>()?;
        for (row, bias) in weight.chunks_mut(d).zip(&mut bias) {
            for ((v, s), m) in row.iter_mut().zip(&self.scale).zip(&self.mean) {
                *v /= s;
                *bias -= *v * m;
            }
        }
        w.set(&Tensor::from_vec(weight, (out, d), w.device())?)?;
        b.set(&Tensor::from_vec(bias, out, b.device())?)
    }
}

/// The targets of one batch, as its parts read them.
enum Want<'a> {
    Hard(Vec<u32>),
    Soft(Tensor, &'a Distillation),
}

/// What one part of a batch brings to the step: its gradients and their
/// weight in the batch's, its share of the batch's loss sum, and how many
/// items its logits got right.
pub(crate) struct Part {
    grads: GradStore,
    weight: f32,
    loss_sum: f64,
    hits: usize,
}

/// Items per part below which a batch is not split.
const MIN_PART: usize = 16;

/// The parts `(start, len)` a batch of `n` items is split into for one
/// step: one per rayon thread (each at least [`MIN_PART`] items), or the
/// whole batch. Each part's forward and backward pass runs on its own
/// thread, so the per-op work between the layers' kernels (candle's
/// elementwise ops and gradient sums) runs in parallel too, where
/// splitting each kernel left it serial and forked and joined twice per
/// layer (two threads trained the MLP slower than one).
pub(crate) fn split_batch(n: usize) -> Vec<(usize, usize)> {
    let k = rayon::current_num_threads().min(n / MIN_PART).max(1);
    (0..k).map(|i| (i * n / k, (i + 1) * n / k - i * n / k)).collect()
}

/// Back-propagates one part's `loss`, whose gradients enter the step with
/// `weight` and whose value times `loss_scale` is its share of the batch's
/// loss sum, and counts how many of `logits`' argmaxes hit `want`.
pub(crate) fn part_step(
    loss: &Tensor,
    logits: &Tensor,
    want: &[u32],
    loss_scale: f64,
    weight: f32,
) -> Result<Part, TrainError> {
    let grads = loss.backward()?;
    let loss_sum = f64::from(loss.to_scalar::<f32>()?) * loss_scale;
    Ok(Part { grads, weight, loss_sum, hits: hits(logits, want)? })
}

/// One AdamW step from the weighted gradients of a batch's parts; returns
/// the batch's loss sum and hits.
pub(crate) fn apply_parts(opt: &mut FusedAdamW, parts: &[Part]) -> Result<(f64, usize), TrainError> {
    let weighted: Vec<(&GradStore, f32)> = parts.iter().map(|p| (&p.grads, p.weight)).collect();
    opt.step_parts(&weighted)?;
    Ok((parts.iter().map(|p| p.loss_sum).sum(), parts.iter().map(|p| p.hits).sum()))
}

/// How many rows of `logits` have their argmax at `want`.
fn hits(logits: &Tensor, want: &[u32]) -> Result<usize, TrainError> {
    let classes = logits.dim(D::Minus1)?;
    let z = logits.flatten_all()?.to_vec1::<f32>()?;
    Ok(z.chunks(classes.max(1))
        .zip(want)
        .filter(|(row, &w)| {
            let best = row.iter().enumerate().fold(0, |b, (i, v)| if *v > row[b] { i } else { b });
            best == w as usize
        })
        .count())
}

/// One AdamW step on a minibatch's `loss`, for the training loops that do
/// not split their batches: the loss summed over the batch's `n` items,
/// and how many of `logits`' argmaxes hit `want`.
pub(crate) fn step(
    opt: &mut FusedAdamW,
    loss: &Tensor,
    logits: &Tensor,
    want: &Tensor,
    n: usize,
) -> Result<(f64, usize), TrainError> {
    let part = part_step(loss, logits, &want.to_vec1::<u32>()?, n as f64, 1.0)?;
    apply_parts(opt, &[part])
}

/// A fresh `kind` model for `images` (weights from `cfg.seed`) and its
/// AdamW optimiser: where every training loop from scratch starts.
pub(crate) fn fresh(
    kind: ModelKind,
    images: &Images,
    classes: usize,
    cfg: &TrainConfig,
) -> Result<(Classifier, VarMap, FusedAdamW), TrainError> {
    let (model, varmap) = Classifier::new_seeded(kind, images.rows, images.cols, classes, cfg.seed, &Device::Cpu)?;
    let params = ParamsAdamW {
        lr: cfg.learning_rate,
        weight_decay: cfg.weight_decay,
        ..Default::default()
    };
    let opt = FusedAdamW::new(varmap.all_vars(), params)?;
    Ok((model, varmap, opt))
}

/// Closes one epoch of any training loop here: the mean loss over `n`
/// items (an error if it diverged) and the report to `progress`.
pub(crate) fn finish_epoch(
    epoch: usize,
    loss_sum: f64,
    correct: usize,
    n: usize,
    start: Instant,
    progress: &mut dyn FnMut(EpochReport),
) -> Result<(), TrainError> {
    let n = n as f64;
    let loss = loss_sum / n;
    if !loss.is_finite() {
        return Err(TrainError::Diverged { epoch, loss });
    }
    progress(EpochReport {
        epoch,
        loss,
        train_accuracy: correct as f64 / n,
        samples_per_sec: n / start.elapsed().as_secs_f64().max(1e-9),
    });
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::super::toy::halves;
    use super::*;
    use crate::train::{accuracy, predict, predict_proba};

    #[test]
    fn learns_and_is_deterministic() -> Result<(), TrainError> {
        let ds = halves(200);
        let cfg = TrainConfig {
            epochs: 3,
            batch_size: 16,
            ..Default::default()
        };
        let mut reports = Vec::new();
        let a = train(ModelKind::Mlp, &ds, 2, &cfg, &mut |r| reports.push(r))?;
        assert_eq!(reports.len(), 3);
        let pa = predict(&a.model, &ds.images, 50)?;
        assert!(accuracy(&pa, &ds.labels) > 0.95);
        let b = train(ModelKind::Mlp, &ds, 2, &cfg, &mut |_| {})?;
        let pa = predict_proba(&a.model, &ds.images, 64, 1.0)?;
        let pb = predict_proba(&b.model, &ds.images, 64, 1.0)?;
        assert_eq!(pa, pb, "same seed, same model");
        Ok(())
    }

    /// A batch split over two threads takes the same step as the whole
    /// batch on one (to float rounding: the gradient is summed in another
    /// order), for hard labels on the MLP and the CNN; and the split really
    /// happens (two parts of a 64-item batch on two threads).
    #[test]
    fn split_batches_step_as_the_whole_batch() -> Result<(), TrainError> {
        let ds = halves(128);
        let cfg = TrainConfig { epochs: 2, batch_size: 64, ..Default::default() };
        let pool = |threads| {
            let built = rayon::ThreadPoolBuilder::new().num_threads(threads).build();
            built.map_err(|e| TrainError::Invalid(e.to_string()))
        };
        assert_eq!(pool(2)?.install(|| split_batch(64)), vec![(0, 32), (32, 32)]);
        assert_eq!(pool(2)?.install(|| split_batch(31)), vec![(0, 31)], "parts of at least MIN_PART");
        assert_eq!(pool(3)?.install(|| split_batch(50)), vec![(0, 16), (16, 17), (33, 17)]);
        for kind in [ModelKind::Mlp, ModelKind::Cnn] {
            let one = pool(1)?.install(|| train(kind, &ds, 2, &cfg, &mut |_| {}))?;
            let two = pool(2)?.install(|| train(kind, &ds, 2, &cfg, &mut |_| {}))?;
            let named = |t: &Trained| -> std::collections::BTreeMap<String, Tensor> {
                let vars = t.varmap.data().lock().map(|m| m.clone()).unwrap_or_default();
                vars.into_iter().map(|(k, v)| (k, v.as_tensor().clone())).collect()
            };
            let (a, b) = (named(&one), named(&two));
            assert_eq!(a.keys().collect::<Vec<_>>(), b.keys().collect::<Vec<_>>());
            for (name, x) in &a {
                let d = (x - &b[name])?.abs()?.flatten_all()?.max(0)?.to_scalar::<f32>()?;
                assert!(d < 1e-4, "{kind}: {name} differs by {d}");
            }
            let start = fresh(kind, &ds.images, 2, &cfg)?.1;
            let start = start.data().lock().map(|m| m.clone()).unwrap_or_default();
            let (name, w0) = start.iter().next().ok_or_else(|| TrainError::Invalid("no variables".into()))?;
            let walked = (w0.as_tensor() - &a[name])?.abs()?.sum_all()?.to_scalar::<f32>()?;
            assert!(walked > 1e-3, "{kind}: training moved the weights ({walked})");
        }
        Ok(())
    }

    #[test]
    fn shift_augmentation_trains_and_changes_the_batches() -> Result<(), TrainError> {
        let ds = halves(200);
        let plain = TrainConfig { epochs: 3, batch_size: 16, ..Default::default() };
        let shifted = TrainConfig { max_shift: 2, ..plain.clone() };
        let a = train(ModelKind::Mlp, &ds, 2, &shifted, &mut |_| {})?;
        assert!(accuracy(&predict(&a.model, &ds.images, 50)?, &ds.labels) > 0.95, "still learns");
        let b = train(ModelKind::Mlp, &ds, 2, &plain, &mut |_| {})?;
        let pa = predict_proba(&a.model, &ds.images, 64, 1.0)?;
        let pb = predict_proba(&b.model, &ds.images, 64, 1.0)?;
        assert_ne!(pa, pb, "the shifted batches are not the plain ones");
        let again = train(ModelKind::Mlp, &ds, 2, &shifted, &mut |_| {})?;
        assert_eq!(pa, predict_proba(&again.model, &ds.images, 64, 1.0)?, "same seed, same shifts");
        let whole = TrainConfig { max_shift: 8, ..plain };
        assert!(matches!(train(ModelKind::Mlp, &ds, 2, &whole, &mut |_| {}), Err(TrainError::Invalid(_))));
        Ok(())
    }

    #[test]
    fn bad_inputs_are_errors() {
        let ds = halves(10);
        let cfg = TrainConfig {
            epochs: 1,
            ..Default::default()
        };
        assert!(
            train(ModelKind::Mlp, &ds, 1, &cfg, &mut |_| {}).is_err(),
            "label >= classes"
        );
        assert!(train(ModelKind::Mlp, &Dataset::default(), 2, &cfg, &mut |_| {}).is_err());
        let zero_bs = TrainConfig { batch_size: 0, ..cfg };
        assert!(train(ModelKind::Mlp, &ds, 2, &zero_bs, &mut |_| {}).is_err());
    }

    /// Folding the standardisation into the head leaves the logits as they
    /// were on standardised features (to float rounding).
    #[test]
    fn folded_head_gives_the_standardised_logits() -> Result<(), TrainError> {
        let ds = halves(40);
        let (model, varmap) = Classifier::new_seeded(ModelKind::Scatter, 8, 8, 2, 3, &Device::Cpu)?;
        let f = model.fixed_features(&ds.images)?.ok_or_else(|| TrainError::Invalid("no features".into()))?;
        let s = Standardise::fit(&f)?;
        let before = model.forward_features(&s.apply(&f)?)?.flatten_all()?.to_vec1::<f32>()?;
        s.fold_into_head(&varmap)?;
        let after = model.forward_features(&f)?.flatten_all()?.to_vec1::<f32>()?;
        let worst = before.iter().zip(&after).map(|(a, b)| (a - b).abs()).fold(0f32, f32::max);
        assert!(worst < 1e-3, "logits moved by {worst}");
        assert!(before.iter().any(|v| v.abs() > 0.1), "the logits are not all zero");
        Ok(())
    }

    /// A scatter model trains with the penalty (and learns the toy task);
    /// the penalty shrinks the head; models without fixed features, or a
    /// negative penalty, are refused.
    #[test]
    fn feature_l2_trains_scatter_heads_and_is_refused_elsewhere() -> Result<(), TrainError> {
        let ds = halves(60);
        let base = TrainConfig { epochs: 60, batch_size: 64, learning_rate: 0.01, weight_decay: 0.0, ..Default::default() };
        let norm = |t: &Trained| -> Result<f32, TrainError> {
            let w = t.model.head_weight().ok_or_else(|| TrainError::Invalid("no head".into()))?;
            Ok(w.sqr()?.sum_all()?.to_scalar::<f32>()?)
        };
        let light = train(ModelKind::Scatter, &ds, 2, &TrainConfig { feature_l2: 1e-4, ..base.clone() }, &mut |_| {})?;
        let heavy = train(ModelKind::Scatter, &ds, 2, &TrainConfig { feature_l2: 1.0, ..base.clone() }, &mut |_| {})?;
        assert!(accuracy(&predict(&light.model, &ds.images, 64)?, &ds.labels) > 0.95);
        assert!(norm(&heavy)? < norm(&light)?, "a larger penalty, a smaller (folded) head");
        let mlp = train(ModelKind::Mlp, &ds, 2, &TrainConfig { feature_l2: 0.1, ..base.clone() }, &mut |_| {});
        assert!(matches!(mlp, Err(TrainError::Invalid(_))), "{mlp:?}");
        let negative = train(ModelKind::Scatter, &ds, 2, &TrainConfig { feature_l2: -1.0, ..base }, &mut |_| {});
        assert!(matches!(negative, Err(TrainError::Invalid(_))), "{negative:?}");
        Ok(())
    }
}
