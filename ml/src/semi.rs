//! Semi-supervised training for the PATE student (FixMatch-style; Sohn et
//! al. 2020): the student holds the whole public pool, but the aggregator
//! labelled only part of it (every answer costs privacy). The unlabelled
//! rest still carries information about the input distribution, which a
//! consistency loss exploits for free.
//!
//! Each step takes a batch of labelled items (weakly augmented: shifted by
//! up to `weak_shift` pixels) with the usual cross-entropy, and `ratio`
//! times as many unlabelled items. For those the model's own prediction on
//! a weak view becomes a pseudo-label where it is confident (max
//! probability at least `confidence`), and the model is trained to predict
//! that label on a strong view (shifted by up to `strong_shift` pixels,
//! with a random square cut out). The total loss is
//! `CE(labelled) + unlabelled_weight * mean_u(mask * CE(strong, pseudo))`.
//! The pseudo-labels are constants (no gradient flows through the weak
//! view). An epoch is one pass over the unlabelled items (`ratio` of them
//! per labelled one, the labelled items cycled), or over the labelled ones
//! where those take more batches.

use std::time::Instant;

use candle_core::{DType, Device, Module, D};
use rand::seq::SliceRandom;
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use rayon::prelude::*;

use crate::data::{Dataset, Images};
use crate::model::ModelKind;
use crate::train::{
    apply_parts, augmented_batch_tensor, finish_epoch, fresh, split_batch, Augment, EpochReport, Part, TrainConfig,
    TrainError, Trained,
};

/// The consistency part of [`train_semi`].
#[derive(Clone, Copy, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct SemiSupervised {
    /// Weight of the unlabelled loss (FixMatch's `lambda_u`).
    pub unlabelled_weight: f64,
    /// Pseudo-labels are kept only where the weak view's top probability
    /// reaches this (FixMatch's `tau`).
    pub confidence: f64,
    /// Unlabelled items per labelled item in a step (FixMatch's `mu`).
    pub ratio: usize,
    /// The weak view, also used on the labelled items.
    pub weak: Augment,
    /// The strong view.
    pub strong: Augment,
    /// Decay of the moving average of the weights that becomes the trained
    /// model (FixMatch evaluates such an average, decay 0.999); 0 = the
    /// last weights.
    pub average: f32,
    /// Cosine decay of the learning rate over all steps (FixMatch's
    /// `lr * cos(7 pi k / 16 K)`); false = constant.
    pub cosine: bool,
    /// Label smoothing of the labelled items' cross-entropy, in `[0, 1)`:
    /// the student's labels are noisy answers, and smoothing caps how hard
    /// a wrong one pulls (0 = none).
    #[serde(default)]
    pub label_smoothing: f32,
}

impl Default for SemiSupervised {
    /// FixMatch's defaults where they apply (`lambda_u` 1, `tau` 0.95,
    /// `mu` 7), with shifts of 1 and 3 pixels and an 8-pixel cutout for
    /// 28x28 images.
    fn default() -> Self {
        SemiSupervised {
            unlabelled_weight: 1.0,
            confidence: 0.95,
            ratio: 7,
            weak: Augment::shift(1),
            strong: Augment { shift: 3, cutout: 8, ..Augment::default() },
            average: 0.0,
            cosine: false,
            label_smoothing: 0.0,
        }
    }
}

/// Trains a fresh `kind` model on the `labelled` items and the
/// `unlabelled` ones (see the module docs). With `unlabelled_weight` 0 or
/// no unlabelled items it is supervised training with weak augmentation.
pub fn train_semi(
    kind: ModelKind,
    labelled: &Dataset,
    unlabelled: &Images,
    classes: usize,
    cfg: &TrainConfig,
    semi: &SemiSupervised,
    progress: &mut dyn FnMut(EpochReport),
) -> Result<Trained, TrainError> {
    let images = &labelled.images;
    if images.is_empty() || labelled.labels.len() != images.len() {
        return Err(TrainError::Invalid(format!(
            "{} labelled images with {} labels",
            images.len(),
            labelled.labels.len()
        )));
    }
    if let Some(&bad) = labelled.labels.iter().find(|&&l| l as usize >= classes) {
        return Err(TrainError::Invalid(format!(
            "label {bad} is not below the class count {classes}"
        )));
    }
    if !unlabelled.is_empty() && (unlabelled.rows, unlabelled.cols) != (images.rows, images.cols) {
        return Err(TrainError::Invalid(
            "labelled and unlabelled images differ in shape".into(),
        ));
    }
    let side = images.rows.min(images.cols);
    let (weak, strong) = (&semi.weak, &semi.strong);
    if weak.shift >= side || strong.shift >= side || strong.cutout > side || weak.cutout > side {
        return Err(TrainError::Invalid(format!(
            "shifts and cutout must be smaller than the {side}-pixel image"
        )));
    }
    if !(semi.unlabelled_weight.is_finite() && semi.unlabelled_weight >= 0.0 && (0.0..=1.0).contains(&semi.confidence))
    {
        return Err(TrainError::Invalid(
            "unlabelled weight must be >= 0 and confidence in [0, 1]".into(),
        ));
    }
    let in_range = |a: &Augment| (0.0..1.0).contains(&a.contrast) && (0.0..=1.0).contains(&a.noise);
    if !(in_range(weak)
        && in_range(strong)
        && (0.0..1.0).contains(&semi.average)
        && (0.0..1.0).contains(&semi.label_smoothing))
    {
        return Err(TrainError::Invalid(
            "contrast, label smoothing and the average's decay must be in [0, 1), noise in [0, 1]".into(),
        ));
    }
    if cfg.batch_size == 0 || !(cfg.learning_rate.is_finite() && cfg.learning_rate > 0.0) {
        return Err(TrainError::Invalid(
            "batch size must be at least 1 and the learning rate positive".into(),
        ));
    }
    let device = Device::Cpu;
    let (model, varmap, mut opt) = fresh(kind, images, classes, cfg)?;
    let mut rng = ChaCha8Rng::seed_from_u64(cfg.seed ^ 0x5e31_5e31_5e31_5e31);
    let use_unlabelled = semi.unlabelled_weight > 0.0 && !unlabelled.is_empty() && semi.ratio > 0;
    let mut order: Vec<usize> = (0..images.len()).collect();
    let mut u_order: Vec<usize> = (0..unlabelled.len()).collect();
    let mut u_pos = usize::MAX; // forces a shuffle on first use
    let u_batch = cfg.batch_size * semi.ratio;
    // An epoch is one pass over whichever of the two sets takes more
    // batches (FixMatch counts its steps on the unlabelled data): with a
    // few hundred answered labels and thousands of pool items, passes over
    // the labels alone would leave the pool nearly unseen. The labelled
    // items are cycled, reshuffled at every pass.
    let labelled_steps = images.len().div_ceil(cfg.batch_size);
    let steps = if use_unlabelled { labelled_steps.max(unlabelled.len().div_ceil(u_batch)) } else { labelled_steps };
    let mut l_pos = usize::MAX;
    if semi.average > 0.0 {
        opt.track_average(semi.average)?;
    }
    let total_steps = (cfg.epochs * steps) as f64;
    for epoch in 1..=cfg.epochs {
        let start = Instant::now();
        let (mut loss_sum, mut correct, mut seen) = (0f64, 0usize, 0usize);
        for s in 0..steps {
            if semi.cosine {
                let k = ((epoch - 1) * steps + s) as f64 / total_steps;
                opt.set_learning_rate(cfg.learning_rate * (7.0 * std::f64::consts::PI * k / 16.0).cos());
            }
            if l_pos >= order.len() {
                order.shuffle(&mut rng);
                l_pos = 0;
            }
            let idx = &order[l_pos..(l_pos + cfg.batch_size).min(order.len())];
            l_pos += idx.len();
            seen += idx.len();
            let x = augmented_batch_tensor(images, idx, weak, &mut rng, &device)?;
            let y: Vec<u32> = idx.iter().map(|&i| u32::from(labelled.labels[i])).collect();
            // The unlabelled batch and its two views, drawn in the same
            // order as always (the stream of `rng` does not depend on how
            // the step is split).
            let views = if use_unlabelled {
                let mut u_idx = Vec::with_capacity(u_batch);
                while u_idx.len() < u_batch.min(unlabelled.len()) {
                    if u_pos >= u_order.len() {
                        u_order.shuffle(&mut rng);
                        u_pos = 0;
                    }
                    u_idx.push(u_order[u_pos]);
                    u_pos += 1;
                }
                let w = augmented_batch_tensor(unlabelled, &u_idx, weak, &mut rng, &device)?;
                let s = augmented_batch_tensor(unlabelled, &u_idx, strong, &mut rng, &device)?;
                Some((w, s, u_idx.len()))
            } else {
                None
            };
            // Each thread takes a share of both batches; its loss is its
            // share of the batch's (the labelled mean and the unlabelled sum
            // are divided by the whole batches' sizes), so the parts'
            // gradients add up to the whole step's.
            let (nl, shares) = (idx.len(), split_batch(idx.len()));
            let k = shares.len();
            let part = |j: usize| -> Result<Part, TrainError> {
                let (a, len) = shares[j];
                let logits = model.forward(&x.narrow(0, a, len)?)?;
                let ce = crate::train::smoothed_cross_entropy(&logits, &y[a..a + len], semi.label_smoothing)?;
                let mut loss = (ce * (len as f64 / nl as f64))?;
                if let Some((w, s, nu)) = &views {
                    let (ua, ulen) = (j * nu / k, (j + 1) * nu / k - j * nu / k);
                    if ulen > 0 {
                        let weak_logits = model.forward(&w.narrow(0, ua, ulen)?)?.detach();
                        let probs = candle_nn::ops::softmax(&weak_logits, D::Minus1)?;
                        let pseudo = probs.argmax(D::Minus1)?;
                        let mask = probs.max(D::Minus1)?.ge(semi.confidence as f32)?.to_dtype(DType::F32)?;
                        let logp = candle_nn::ops::log_softmax(&model.forward(&s.narrow(0, ua, ulen)?)?, D::Minus1)?;
                        let picked = logp.gather(&pseudo.unsqueeze(1)?, 1)?.squeeze(1)?;
                        let loss_u = (picked.mul(&mask)?.sum_all()? * (-1.0 / *nu as f64))?;
                        loss = (loss + (loss_u * semi.unlabelled_weight)?)?;
                    }
                }
                crate::train::part_step(&loss, &logits, &y[a..a + len], nl as f64, 1.0)
            };
            let parts: Vec<Part> = (0..k).into_par_iter().map(part).collect::<Result<_, _>>()?;
            let (l, c) = apply_parts(&mut opt, &parts)?;
            loss_sum += l;
            correct += c;
        }
        finish_epoch(epoch, loss_sum, correct, seen, start, progress)?;
    }
    opt.load_average()?;
    Ok(Trained {
        model,
        varmap,
        kind,
        rows: images.rows,
        cols: images.cols,
        classes,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::train::{accuracy, predict};
    use rand::Rng;

    /// Horizontal (class 0) or vertical (class 1) bars, two pixels thick, at
    /// `position` on 12x12 images, with a little pixel noise.
    fn bars(positions: &[usize], per_position: usize, seed: u64) -> Dataset {
        let (rows, cols) = (12, 12);
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        let (mut data, mut labels) = (Vec::new(), Vec::new());
        for &p in positions {
            for k in 0..per_position * 2 {
                let label = (k % 2) as u8;
                for r in 0..rows {
                    for c in 0..cols {
                        let on = if label == 0 {
                            r == p || r == p + 1
                        } else {
                            c == p || c == p + 1
                        };
                        let noise: u8 = rng.random_range(0..40);
                        data.push(if on { 215 + noise } else { noise });
                    }
                }
                labels.push(label);
            }
        }
        Dataset {
            images: Images { data, rows, cols },
            labels,
        }
    }

    /// Labels only for bars at the top-left positions 0-2; the unlabelled
    /// pool and the test set have bars at every position. Labelled-only
    /// training (with the same weak augmentation) cannot tell a far
    /// vertical bar from a horizontal one; the consistency loss walks the
    /// labels along the shifts. Several seeds, a clear margin on average
    /// and no seed worse.
    #[test]
    fn consistency_beats_labelled_only() -> Result<(), TrainError> {
        let all: Vec<usize> = (0..=10).collect();
        let labelled = bars(&[0, 1, 2], 4, 1);
        let pool = bars(&all, 40, 2).images;
        let test = bars(&all, 20, 3);
        let semi = SemiSupervised {
            ratio: 4,
            weak: Augment::shift(1),
            strong: Augment::shift(2),
            ..SemiSupervised::default()
        };
        let (mut with, mut without) = (0.0, 0.0);
        let seeds = [0u64, 1, 2];
        for &seed in &seeds {
            let cfg = TrainConfig {
                epochs: 40,
                batch_size: 8,
                seed,
                ..TrainConfig::default()
            };
            let a = train_semi(ModelKind::Mlp, &labelled, &pool, 2, &cfg, &semi, &mut |_| {})?;
            let b = train_semi(
                ModelKind::Mlp,
                &labelled,
                &pool,
                2,
                &cfg,
                &SemiSupervised {
                    unlabelled_weight: 0.0,
                    ..semi
                },
                &mut |_| {},
            )?;
            let acc_a = accuracy(&predict(&a.model, &test.images, 256)?, &test.labels);
            let acc_b = accuracy(&predict(&b.model, &test.images, 256)?, &test.labels);
            assert!(
                acc_a + 0.02 >= acc_b,
                "seed {seed}: semi {acc_a} vs labelled-only {acc_b}"
            );
            with += acc_a;
            without += acc_b;
        }
        let (with, without) = (with / seeds.len() as f64, without / seeds.len() as f64);
        assert!(
            with >= without + 0.10,
            "semi-supervised {with:.3} vs labelled-only {without:.3}"
        );
        Ok(())
    }

    /// Split over two threads (two parts of the 32 labelled items and of
    /// the 128 unlabelled ones), a step is the whole batch's step on one
    /// thread, to float rounding, for the MLP and the CNN, with the moving
    /// average on.
    #[test]
    fn split_steps_match_one_thread() -> Result<(), TrainError> {
        let labelled = bars(&[0, 1, 2, 3], 8, 1);
        let pool = bars(&(0..=10).collect::<Vec<_>>(), 12, 2).images;
        let semi = SemiSupervised { ratio: 4, average: 0.9, confidence: 0.5, ..SemiSupervised::default() };
        let cfg = TrainConfig { epochs: 2, batch_size: 32, ..TrainConfig::default() };
        for kind in [ModelKind::Mlp, ModelKind::Cnn] {
            let run = |threads: usize| -> Result<Vec<f32>, TrainError> {
                let pool_t = rayon::ThreadPoolBuilder::new()
                    .num_threads(threads)
                    .build()
                    .map_err(|e| TrainError::Invalid(e.to_string()))?;
                let t = pool_t.install(|| {
                    assert_eq!(split_batch(32).len(), threads, "the batch is split {threads} ways");
                    train_semi(kind, &labelled, &pool, 2, &cfg, &semi, &mut |_| {})
                })?;
                Ok(crate::train::predict_proba(&t.model, &pool, 64, 1.0)?.concat())
            };
            let (one, two) = (run(1)?, run(2)?);
            let worst = one.iter().zip(&two).map(|(a, b)| (a - b).abs()).fold(0f32, f32::max);
            assert!(worst < 1e-3, "{kind}: probabilities differ by {worst}");
        }
        Ok(())
    }

    #[test]
    fn bad_inputs_are_errors() {
        let d = bars(&[0], 2, 0);
        let cfg = TrainConfig::default();
        let empty = Images {
            data: vec![],
            rows: 12,
            cols: 12,
        };
        let bad = SemiSupervised {
            strong: Augment::shift(12),
            ..SemiSupervised::default()
        };
        assert!(train_semi(ModelKind::Mlp, &d, &empty, 2, &cfg, &bad, &mut |_| {}).is_err());
        assert!(train_semi(
            ModelKind::Mlp,
            &d,
            &empty,
            1,
            &cfg,
            &SemiSupervised::default(),
            &mut |_| {}
        )
        .is_err());
        let other = Images {
            data: vec![0; 64],
            rows: 8,
            cols: 8,
        };
        assert!(train_semi(
            ModelKind::Mlp,
            &d,
            &other,
            2,
            &cfg,
            &SemiSupervised::default(),
            &mut |_| {}
        )
        .is_err());
    }
}
