//! Distillation: training against soft targets (a teacher's probabilities)
//! with Hinton et al.'s loss, optionally mixed with a hard term and with
//! shift augmentation.

use candle_core::{Tensor, D};

use super::fit::{train_impl, Targets};
use super::{EpochReport, TrainConfig, TrainError, Trained};
use crate::data::Images;
use crate::model::ModelKind;

/// Distillation: trains a fresh `kind` model on `images` against soft
/// targets (one probability vector per image, all of the same length, which
/// is the class count), for example a teacher's [`super::predict_proba`] at
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
    // The shift is checked by the shared loop.
    train_impl(kind, images, Targets::Soft(targets, loss), classes, cfg, progress)
}

/// The loss of one minibatch: `logits` against the targets `p` (both
/// `[batch, classes]`), and the targets' argmax (what the epoch's accuracy
/// counts against).
pub(super) fn loss(logits: &Tensor, p: &Tensor, d: &Distillation) -> candle_core::Result<(Tensor, Tensor)> {
    let n = p.dim(0)?;
    let (t, w) = (d.temperature, d.hard_weight);
    let logp = candle_nn::ops::log_softmax(&(logits / t)?, D::Minus1)?;
    let soft = (p.mul(&logp)?.sum_all()? * (-t * t / n as f64))?;
    let hard_labels = p.argmax(D::Minus1)?;
    let ce = if w > 0.0 {
        let hard = candle_nn::loss::cross_entropy(logits, &hard_labels)?;
        ((soft * (1.0 - w))? + (hard * w)?)?
    } else {
        soft
    };
    Ok((ce, hard_labels))
}

#[cfg(test)]
mod tests {
    use super::super::toy::halves;
    use super::*;
    use crate::data::Dataset;
    use crate::train::{accuracy, predict, predict_proba, train};

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
}
