//! The training loop: a fresh seeded model, minibatch AdamW over a seeded
//! shuffle, hard labels or soft targets, one [`EpochReport`] per epoch.

use std::time::Instant;

use candle_core::{Device, Module, Tensor, D};
use candle_nn::{ParamsAdamW, VarMap};
use rand::seq::SliceRandom;
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;

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
    let mut order: Vec<usize> = (0..images.len()).collect();
    for epoch in 1..=cfg.epochs {
        let start = Instant::now();
        order.shuffle(&mut rng);
        let (mut loss_sum, mut correct) = (0f64, 0usize);
        for idx in order.chunks(cfg.batch_size) {
            let logits = if let Some(f) = &fixed {
                let rows: Vec<u32> = idx.iter().map(|&i| i as u32).collect();
                model.forward_features(&f.index_select(&Tensor::from_vec(rows, idx.len(), &device)?, 0)?)?
            } else if max_shift == 0 {
                model.forward(&batch_tensor(images, idx, &device)?)?
            } else {
                model.forward(&shifted_batch_tensor(images, idx, max_shift, &mut shift_rng, &device)?)?
            };
            let (loss, want) = match &targets {
                Targets::Hard(labels) => {
                    let y: Vec<u32> = idx.iter().map(|&i| u32::from(labels[i])).collect();
                    let loss = super::cross_entropy(&logits, &y)?;
                    (loss, Tensor::from_vec(y, idx.len(), &device)?)
                }
                Targets::Soft(probs, loss) => {
                    let flat: Vec<f32> = idx.iter().flat_map(|&i| probs[i].iter().copied()).collect();
                    let p = Tensor::from_vec(flat, (idx.len(), classes), &device)?;
                    distil::loss(&logits, &p, loss)?
                }
            };
            let (l, c) = step(&mut opt, &loss, &logits, &want, idx.len())?;
            loss_sum += l;
            correct += c;
        }
        finish_epoch(epoch, loss_sum, correct, images.len(), start, progress)?;
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

/// One AdamW step on a minibatch's `loss`, for every training loop here:
/// the loss summed over the batch's `n` items, and how many of `logits`'
/// argmaxes hit `want`.
pub(crate) fn step(
    opt: &mut FusedAdamW,
    loss: &Tensor,
    logits: &Tensor,
    want: &Tensor,
    n: usize,
) -> Result<(f64, usize), TrainError> {
    opt.backward_step(loss)?;
    let loss_sum = f64::from(loss.to_scalar::<f32>()?) * n as f64;
    // Counted on the host from the logits already computed: no graph nodes.
    let classes = logits.dim(D::Minus1)?;
    let z = logits.flatten_all()?.to_vec1::<f32>()?;
    let want = want.to_vec1::<u32>()?;
    let hits = z
        .chunks(classes.max(1))
        .zip(&want)
        .filter(|(row, &w)| {
            let best = row
                .iter()
                .enumerate()
                .fold(0, |b, (i, v)| if *v > row[b] { i } else { b });
            best == w as usize
        })
        .count();
    Ok((loss_sum, hits))
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
}
