//! Training (minibatch AdamW, seeded), distillation against soft targets,
//! prediction and accuracy.
//!
//! Everything runs on candle's CPU device. Each minibatch is one tensor built
//! straight from the `u8` pixels; shuffling uses a `ChaCha8Rng` and the
//! weights start from [`crate::model::seeded_init`], so a run is reproducible
//! from its seed.

use std::time::Instant;

use candle_core::{DType, Device, Module, Tensor, D};
use candle_nn::{ParamsAdamW, VarMap};
use rand::seq::SliceRandom;
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;

use crate::data::{Dataset, Images};
use crate::model::{Classifier, ModelKind};
use crate::optim::FusedAdamW;

/// Errors from training or prediction.
#[derive(Debug, thiserror::Error)]
pub enum TrainError {
    /// A candle operation failed.
    #[error("tensor error: {0}")]
    Candle(#[from] candle_core::Error),
    /// The training data or configuration is unusable.
    #[error("invalid training input: {0}")]
    Invalid(String),
    /// The loss became NaN or infinite.
    #[error("training diverged at epoch {epoch}: loss is {loss}")]
    Diverged {
        /// The epoch (1-based).
        epoch: usize,
        /// The loss value.
        loss: f64,
    },
}

/// Training hyper-parameters.
#[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct TrainConfig {
    /// Passes over the data.
    pub epochs: usize,
    /// Items per minibatch.
    pub batch_size: usize,
    /// AdamW learning rate.
    pub learning_rate: f64,
    /// AdamW (decoupled) weight decay.
    pub weight_decay: f64,
    /// Seed for the initial weights and the shuffling.
    pub seed: u64,
}

impl Default for TrainConfig {
    /// Tuned for Fashion-MNIST on a small CPU: 10 epochs, batch 128, lr 1e-3,
    /// weight decay 1e-4 (the MLP reaches ~88% test accuracy on all 60,000
    /// items, ~83% on a 6,000-item partition; see docs/BENCHMARKS.md).
    fn default() -> Self {
        TrainConfig {
            epochs: 10,
            batch_size: 128,
            learning_rate: 1e-3,
            weight_decay: 1e-4,
            seed: 0,
        }
    }
}

/// Progress after one epoch.
#[derive(Clone, Debug, PartialEq)]
pub struct EpochReport {
    /// The epoch (1-based).
    pub epoch: usize,
    /// Mean training loss over the epoch.
    pub loss: f64,
    /// Share of training items classified right during the epoch (as the
    /// weights moved; for soft targets: agreement with the targets' argmax).
    pub train_accuracy: f64,
    /// Training throughput of the epoch.
    pub samples_per_sec: f64,
}

/// A trained model and its variables.
pub struct Trained {
    /// The model.
    pub model: Classifier,
    /// Its variables (what [`crate::checkpoint::save`] writes).
    pub varmap: VarMap,
    /// The architecture.
    pub kind: ModelKind,
    /// Image rows.
    pub rows: usize,
    /// Image columns.
    pub cols: usize,
    /// Number of classes.
    pub classes: usize,
}

impl std::fmt::Debug for Trained {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Trained")
            .field("kind", &self.kind)
            .field("rows", &self.rows)
            .field("cols", &self.cols)
            .field("classes", &self.classes)
            .finish_non_exhaustive()
    }
}

/// The targets of one training run.
enum Targets<'a> {
    /// Hard labels.
    Hard(&'a [u8]),
    /// Probability vectors (one per item, `classes` long) and the loss.
    Soft(&'a [Vec<f32>], Distillation),
}

/// Converts images to `f32 [n, 1, rows, cols]` scaled to `[0, 1]`.
pub fn images_to_tensor(images: &Images, device: &Device) -> candle_core::Result<Tensor> {
    let data: Vec<f32> = images.data.iter().map(|&v| f32::from(v) / 255.0).collect();
    Tensor::from_vec(data, (images.len(), 1, images.rows, images.cols), device)
}

/// Builds the input tensor of the items `idx` of `images`.
pub(crate) fn batch_tensor(images: &Images, idx: &[usize], device: &Device) -> candle_core::Result<Tensor> {
    let n = images.item_len();
    let mut data = Vec::with_capacity(idx.len() * n);
    for &i in idx {
        data.extend(images.item(i).iter().map(|&v| f32::from(v) / 255.0));
    }
    Tensor::from_vec(data, (idx.len(), 1, images.rows, images.cols), device)
}

/// Builds the input tensor of the items `idx` of `images`, each shifted by a
/// random offset in `-max_shift..=max_shift` along both axes (zero fill).
pub(crate) fn shifted_batch_tensor(
    images: &Images,
    idx: &[usize],
    max_shift: usize,
    rng: &mut ChaCha8Rng,
    device: &Device,
) -> candle_core::Result<Tensor> {
    use rand::Rng;
    let (rows, cols) = (images.rows, images.cols);
    let s = i32::try_from(max_shift).unwrap_or(i32::MAX);
    let mut data = vec![0f32; idx.len() * rows * cols];
    for (k, &i) in idx.iter().enumerate() {
        let (dy, dx) = (rng.random_range(-s..=s) as isize, rng.random_range(-s..=s) as isize);
        let src = images.item(i);
        let dst = &mut data[k * rows * cols..(k + 1) * rows * cols];
        for r in 0..rows as isize {
            let sr = r - dy;
            if sr < 0 || sr >= rows as isize {
                continue;
            }
            for c in 0..cols as isize {
                let sc = c - dx;
                if sc >= 0 && sc < cols as isize {
                    dst[(r as usize) * cols + c as usize] = f32::from(src[(sr as usize) * cols + sc as usize]) / 255.0;
                }
            }
        }
    }
    Tensor::from_vec(data, (idx.len(), 1, rows, cols), device)
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

/// Distillation: trains a fresh `kind` model on `images` against soft
/// targets (one probability vector per image, all of the same length, which
/// is the class count), for example a teacher's [`predict_proba`] at
/// temperature `temperature`.
///
/// The loss is Hinton et al.'s: the cross-entropy between the targets and
/// `softmax(logits / temperature)`, scaled by `temperature²` (equal to the KL
/// divergence up to a constant). The trained model is used at temperature 1.
pub fn train_soft(
    kind: ModelKind,
    images: &Images,
    targets: &[Vec<f32>],
    temperature: f64,
    cfg: &TrainConfig,
    progress: &mut dyn FnMut(EpochReport),
) -> Result<Trained, TrainError> {
    let loss = Distillation {
        temperature,
        hard_weight: 0.0,
        max_shift: 0,
    };
    train_distil(kind, images, targets, loss, cfg, progress)
}

/// The distillation loss of [`train_distil`].
#[derive(Clone, Copy, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Distillation {
    /// Temperature T of the soft term.
    pub temperature: f64,
    /// Weight of Hinton et al.'s second, hard term (in `[0, 1]`; 0 = soft
    /// targets only): the cross-entropy at temperature 1 against the targets'
    /// argmax (the teacher's own label, when the items carry none).
    pub hard_weight: f64,
    /// Label-preserving augmentation: each time an item is used, the student
    /// sees it shifted by up to this many pixels in each direction (zero
    /// fill), against the targets of the unshifted item. 0 = none.
    #[serde(default)]
    pub max_shift: usize,
}

/// Distillation with Hinton et al.'s two-term loss:
/// `(1 - w) * T² * CE(targets, softmax(logits / T)) + w * CE(argmax targets, softmax(logits))`.
pub fn train_distil(
    kind: ModelKind,
    images: &Images,
    targets: &[Vec<f32>],
    loss: Distillation,
    cfg: &TrainConfig,
    progress: &mut dyn FnMut(EpochReport),
) -> Result<Trained, TrainError> {
    let classes = targets.first().map_or(0, Vec::len);
    if targets.len() != images.len() {
        return Err(TrainError::Invalid(format!(
            "{} images but {} targets",
            images.len(),
            targets.len()
        )));
    }
    if targets
        .iter()
        .any(|t| t.len() != classes || t.iter().any(|p| !p.is_finite()))
    {
        return Err(TrainError::Invalid(
            "targets must be finite vectors of equal length".into(),
        ));
    }
    let t = loss.temperature;
    if !(t.is_finite() && t > 0.0) {
        return Err(TrainError::Invalid(format!("temperature must be positive, got {t}")));
    }
    if !(0.0..=1.0).contains(&loss.hard_weight) {
        return Err(TrainError::Invalid(format!(
            "hard-label weight must be in [0, 1], got {}",
            loss.hard_weight
        )));
    }
    if loss.max_shift >= images.rows.min(images.cols) {
        return Err(TrainError::Invalid(format!(
            "a shift of {} pixels leaves nothing of {}x{} images",
            loss.max_shift, images.rows, images.cols
        )));
    }
    train_impl(kind, images, Targets::Soft(targets, loss), classes, cfg, progress)
}

fn train_impl(
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
    let (model, varmap) = Classifier::new_seeded(kind, images.rows, images.cols, classes, cfg.seed, &device)?;
    let params = ParamsAdamW {
        lr: cfg.learning_rate,
        weight_decay: cfg.weight_decay,
        ..Default::default()
    };
    let mut opt = FusedAdamW::new(varmap.all_vars(), params)?;
    let mut rng = ChaCha8Rng::seed_from_u64(cfg.seed ^ 0x5eed_5eed_5eed_5eed);
    // A stream of its own, so that training without shifts is unchanged.
    let mut shift_rng = ChaCha8Rng::seed_from_u64(cfg.seed ^ 0x5817_7ed5_5817_7ed5);
    let max_shift = match &targets {
        Targets::Soft(_, loss) => loss.max_shift,
        Targets::Hard(_) => 0,
    };
    let mut order: Vec<usize> = (0..images.len()).collect();
    for epoch in 1..=cfg.epochs {
        let start = Instant::now();
        order.shuffle(&mut rng);
        let (mut loss_sum, mut correct) = (0f64, 0usize);
        for idx in order.chunks(cfg.batch_size) {
            let x = if max_shift == 0 {
                batch_tensor(images, idx, &device)?
            } else {
                shifted_batch_tensor(images, idx, max_shift, &mut shift_rng, &device)?
            };
            let logits = model.forward(&x)?;
            let (loss, want) = match &targets {
                Targets::Hard(labels) => {
                    let y: Vec<u32> = idx.iter().map(|&i| u32::from(labels[i])).collect();
                    let y = Tensor::from_vec(y, idx.len(), &device)?;
                    (candle_nn::loss::cross_entropy(&logits, &y)?, y)
                }
                Targets::Soft(probs, loss) => {
                    let flat: Vec<f32> = idx.iter().flat_map(|&i| probs[i].iter().copied()).collect();
                    let p = Tensor::from_vec(flat, (idx.len(), classes), &device)?;
                    let (t, w) = (loss.temperature, loss.hard_weight);
                    let logp = candle_nn::ops::log_softmax(&(&logits / t)?, D::Minus1)?;
                    let soft = (p.mul(&logp)?.sum_all()? * (-t * t / idx.len() as f64))?;
                    let hard_labels = p.argmax(D::Minus1)?;
                    let ce = if w > 0.0 {
                        let hard = candle_nn::loss::cross_entropy(&logits, &hard_labels)?;
                        ((soft * (1.0 - w))? + (hard * w)?)?
                    } else {
                        soft
                    };
                    (ce, hard_labels)
                }
            };
            opt.backward_step(&loss)?;
            loss_sum += f64::from(loss.to_scalar::<f32>()?) * idx.len() as f64;
            let hit = logits.argmax(D::Minus1)?.eq(&want)?.to_dtype(DType::U32)?.sum_all()?;
            correct += hit.to_scalar::<u32>()? as usize;
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

/// Largest batch the CNN is run on at once when predicting: its im2col
/// matrix takes `9 * 16 * rows * cols` floats per item (~450 MB for 1,000
/// Fashion-MNIST items), so larger requested batches are cut into these.
pub const MAX_CNN_BATCH: usize = 256;

/// Applies `f` to the model's logits on each batch of `x` (`[n, 1, rows, cols]`).
fn for_batches(
    model: &Classifier,
    x: &Tensor,
    batch_size: usize,
    mut f: impl FnMut(Tensor) -> candle_core::Result<()>,
) -> Result<(), TrainError> {
    let n = x.dim(0)?;
    let bs = match model.kind() {
        ModelKind::Cnn => batch_size.clamp(1, MAX_CNN_BATCH),
        ModelKind::Mlp => batch_size.max(1),
    };
    let mut start = 0;
    while start < n {
        let len = bs.min(n - start);
        f(model.forward(&x.narrow(0, start, len)?)?)?;
        start += len;
    }
    Ok(())
}

/// Checks that `images` fit `model`.
fn check_shape(model: &Classifier, images: &Images) -> Result<(), TrainError> {
    if (images.rows, images.cols) != (model.rows(), model.cols()) {
        return Err(TrainError::Invalid(format!(
            "images are {}x{} but the model takes {}x{}",
            images.rows,
            images.cols,
            model.rows(),
            model.cols()
        )));
    }
    Ok(())
}

/// Predicted labels (argmax of the logits) for `images`, `batch_size` at a
/// time (at most [`MAX_CNN_BATCH`] for the CNN).
pub fn predict(model: &Classifier, images: &Images, batch_size: usize) -> Result<Vec<u8>, TrainError> {
    check_shape(model, images)?;
    predict_tensor(model, &images_to_tensor(images, &Device::Cpu)?, batch_size)
}

/// Predicted labels for an input tensor `f32 [n, 1, rows, cols]` (or `[n, rows, cols]`) in `[0, 1]`.
pub fn predict_tensor(model: &Classifier, x: &Tensor, batch_size: usize) -> Result<Vec<u8>, TrainError> {
    let x = as_input(model, x)?;
    let mut out = Vec::with_capacity(x.dim(0)?);
    for_batches(model, &x, batch_size, |logits| {
        out.extend(logits.argmax(D::Minus1)?.to_vec1::<u32>()?.into_iter().map(|v| v as u8));
        Ok(())
    })?;
    Ok(out)
}

/// Class probabilities `softmax(logits / temperature)` for `images`.
pub fn predict_proba(
    model: &Classifier,
    images: &Images,
    batch_size: usize,
    temperature: f64,
) -> Result<Vec<Vec<f32>>, TrainError> {
    check_shape(model, images)?;
    predict_proba_tensor(model, &images_to_tensor(images, &Device::Cpu)?, batch_size, temperature)
}

/// Class probabilities `softmax(logits / temperature)` for an input tensor.
pub fn predict_proba_tensor(
    model: &Classifier,
    x: &Tensor,
    batch_size: usize,
    temperature: f64,
) -> Result<Vec<Vec<f32>>, TrainError> {
    if !(temperature.is_finite() && temperature > 0.0) {
        return Err(TrainError::Invalid(format!(
            "temperature must be positive, got {temperature}"
        )));
    }
    let x = as_input(model, x)?;
    let mut out = Vec::with_capacity(x.dim(0)?);
    for_batches(model, &x, batch_size, |logits| {
        out.extend(candle_nn::ops::softmax_last_dim(&(logits / temperature)?)?.to_vec2::<f32>()?);
        Ok(())
    })?;
    Ok(out)
}

/// The logits for an input tensor (for calibration, which rescales them).
pub fn predict_logits_tensor(model: &Classifier, x: &Tensor, batch_size: usize) -> Result<Vec<Vec<f32>>, TrainError> {
    let x = as_input(model, x)?;
    let mut out = Vec::with_capacity(x.dim(0)?);
    for_batches(model, &x, batch_size, |logits| {
        out.extend(logits.to_vec2::<f32>()?);
        Ok(())
    })?;
    Ok(out)
}

/// Validates an input tensor against the model and reshapes it to `[n, 1, rows, cols]` f32.
fn as_input(model: &Classifier, x: &Tensor) -> Result<Tensor, TrainError> {
    let dims = x.dims();
    let ok = match dims {
        [_, r, c] => (*r, *c) == (model.rows(), model.cols()),
        [_, 1, r, c] => (*r, *c) == (model.rows(), model.cols()),
        _ => false,
    };
    if !ok {
        return Err(TrainError::Invalid(format!(
            "input shape {dims:?} does not fit the model's [n, 1, {}, {}]",
            model.rows(),
            model.cols()
        )));
    }
    Ok(x.to_dtype(DType::F32)?
        .reshape((dims[0], 1, model.rows(), model.cols()))?)
}

/// Share of positions where `pred` and `labels` agree (over the shorter
/// length; 0 when empty).
pub fn accuracy(pred: &[u8], labels: &[u8]) -> f64 {
    let n = pred.len().min(labels.len());
    if n == 0 {
        return 0.0;
    }
    pred.iter().zip(labels).filter(|(p, l)| p == l).count() as f64 / n as f64
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Two classes told apart by which half of the image is bright.
    fn halves(n: usize) -> Dataset {
        let mut data = Vec::new();
        let mut labels = Vec::new();
        for i in 0..n {
            let label = (i % 2) as u8;
            for r in 0..8 {
                for _c in 0..8 {
                    let bright = (r < 4) == (label == 0);
                    data.push(if bright { 200 + (i % 50) as u8 } else { (i % 30) as u8 });
                }
            }
            labels.push(label);
        }
        Dataset {
            images: Images { data, rows: 8, cols: 8 },
            labels,
        }
    }

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
    fn soft_training_follows_targets() -> Result<(), TrainError> {
        let ds = halves(200);
        let targets: Vec<Vec<f32>> = ds
            .labels
            .iter()
            .map(|&l| if l == 0 { vec![0.9, 0.1] } else { vec![0.2, 0.8] })
            .collect();
        let cfg = TrainConfig {
            epochs: 3,
            batch_size: 16,
            ..Default::default()
        };
        let t = train_soft(ModelKind::Mlp, &ds.images, &targets, 2.0, &cfg, &mut |_| {})?;
        assert!(accuracy(&predict(&t.model, &ds.images, 32)?, &ds.labels) > 0.95);
        assert!(train_soft(ModelKind::Mlp, &ds.images, &targets[1..], 2.0, &cfg, &mut |_| {}).is_err());
        assert!(train_soft(ModelKind::Mlp, &ds.images, &targets, 0.0, &cfg, &mut |_| {}).is_err());
        Ok(())
    }

    #[test]
    fn hard_weight_one_is_training_on_the_targets_argmax() -> Result<(), TrainError> {
        let ds = halves(120);
        // Targets whose argmax disagrees with the true label on every third item.
        let targets: Vec<Vec<f32>> = (0..ds.labels.len())
            .map(|i| {
                if (i % 3 == 0) == (ds.labels[i] == 0) {
                    vec![0.3, 0.7]
                } else {
                    vec![0.6, 0.4]
                }
            })
            .collect();
        let argmax = Dataset {
            images: ds.images.clone(),
            labels: targets.iter().map(|t| u8::from(t[1] > t[0])).collect(),
        };
        let cfg = TrainConfig {
            epochs: 2,
            batch_size: 16,
            ..Default::default()
        };
        let hard = train(ModelKind::Mlp, &argmax, 2, &cfg, &mut |_| {})?;
        let loss = Distillation {
            temperature: 3.0,
            hard_weight: 1.0,
            max_shift: 0,
        };
        let distil = train_distil(ModelKind::Mlp, &ds.images, &targets, loss, &cfg, &mut |_| {})?;
        let (a, b) = (
            predict_proba(&hard.model, &ds.images, 64, 1.0)?,
            predict_proba(&distil.model, &ds.images, 64, 1.0)?,
        );
        let gap = a
            .iter()
            .flatten()
            .zip(b.iter().flatten())
            .map(|(x, y)| (x - y).abs())
            .fold(0f32, f32::max);
        assert!(gap < 1e-5, "w = 1 is plain cross-entropy on the argmax (max gap {gap})");
        // A half weight lands somewhere else; weights outside [0, 1] are refused.
        let half = Distillation {
            hard_weight: 0.5,
            ..loss
        };
        let mixed = train_distil(ModelKind::Mlp, &ds.images, &targets, half, &cfg, &mut |_| {})?;
        assert_ne!(predict_proba(&mixed.model, &ds.images, 64, 1.0)?, a);
        for w in [-0.1, 1.5, f64::NAN] {
            let bad = Distillation { hard_weight: w, ..loss };
            assert!(
                train_distil(ModelKind::Mlp, &ds.images, &targets, bad, &cfg, &mut |_| {}).is_err(),
                "w = {w}"
            );
        }
        Ok(())
    }

    #[test]
    fn shifted_batches_move_items_within_the_bound() -> candle_core::Result<()> {
        // One bright pixel in the middle of a 7x7 image.
        let mut data = vec![0u8; 49];
        data[3 * 7 + 3] = 255;
        let images = Images { data, rows: 7, cols: 7 };
        let mut rng = ChaCha8Rng::seed_from_u64(1);
        let mut seen = std::collections::BTreeSet::new();
        for _ in 0..50 {
            let x = shifted_batch_tensor(&images, &[0], 2, &mut rng, &Device::Cpu)?
                .flatten_all()?
                .to_vec1::<f32>()?;
            let lit: Vec<usize> = (0..49).filter(|&i| x[i] > 0.0).collect();
            assert_eq!(lit.len(), 1, "the pixel moves, nothing else appears");
            let (r, c) = ((lit[0] / 7) as isize, (lit[0] % 7) as isize);
            assert!((r - 3).abs() <= 2 && (c - 3).abs() <= 2, "shift within 2: ({r}, {c})");
            assert_eq!(x[lit[0]], 1.0);
            seen.insert((r, c));
        }
        assert!(seen.len() > 10, "offsets vary: {seen:?}");
        // Shifted off the edge, the pixel is gone (zero fill, no wrap-around).
        let corner = Images {
            data: {
                let mut d = vec![0u8; 49];
                d[0] = 255;
                d
            },
            rows: 7,
            cols: 7,
        };
        let sums: Vec<f32> = (0..50)
            .map(|_| {
                shifted_batch_tensor(&corner, &[0], 1, &mut rng, &Device::Cpu)?
                    .sum_all()?
                    .to_scalar::<f32>()
            })
            .collect::<candle_core::Result<_>>()?;
        assert!(
            sums.contains(&0.0) && sums.contains(&1.0),
            "both kept and shifted off: {sums:?}"
        );
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

    #[test]
    fn proba_rows_sum_to_one_and_shape_checked() -> Result<(), TrainError> {
        let (m, _) = Classifier::new_seeded(ModelKind::Mlp, 8, 8, 3, 0, &Device::Cpu)?;
        let ds = halves(5);
        for p in predict_proba(&m, &ds.images, 2, 3.0)? {
            assert!((p.iter().sum::<f32>() - 1.0).abs() < 1e-5);
        }
        let wrong = Images {
            data: vec![0; 9],
            rows: 3,
            cols: 3,
        };
        assert!(predict(&m, &wrong, 4).is_err());
        assert_eq!(accuracy(&[1, 2, 3], &[1, 0, 3]), 2.0 / 3.0);
        assert_eq!(accuracy(&[], &[]), 0.0);
        Ok(())
    }
}
