//! Training (minibatch AdamW, seeded), distillation against soft targets,
//! prediction and accuracy: the shared types here, one concept per file.
//!
//! - [`batch`]: minibatch tensors from `u8` pixels, and the shift augmentation.
//! - [`fit`]: the training loop (hard labels or soft targets) and its epoch report.
//! - [`distil`]: Hinton et al.'s distillation loss and its entry points.
//! - [`predict`]: prediction, probabilities, logits and accuracy.
//! - `xent`: softmax cross-entropy on hard labels as one fused op.
//!
//! Everything runs on candle's CPU device. Each minibatch is one tensor built
//! straight from the `u8` pixels; shuffling uses a `ChaCha8Rng` and the
//! weights start from [`crate::model::seeded_init`], so a run is reproducible
//! from its seed. Every item keeps its path `pate_ml::train::NAME` through
//! the re-exports below.

use candle_nn::VarMap;

use crate::model::{Classifier, ModelKind};

pub mod batch;
pub mod distil;
pub mod fit;
pub mod predict;
mod xent;

pub use batch::images_to_tensor;
pub use batch::Augment;
pub(crate) use batch::{augmented_batch_tensor, batch_tensor};
pub use distil::{train_distil, train_soft, Distillation};
pub use fit::train;
pub(crate) use fit::{apply_parts, finish_epoch, fresh, part_step, split_batch, step, Part};
pub use predict::{
    accuracy, predict, predict_logits_tensor, predict_proba, predict_proba_tensor, predict_tensor, MAX_CNN_BATCH,
};
pub(crate) use xent::{cross_entropy, smoothed_cross_entropy};

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
    /// Shift augmentation of hard-label training: each item of each batch
    /// is moved by a random offset in `-max_shift..=max_shift` pixels along
    /// both axes (zero fill); 0 trains on the items as they are. Soft-target
    /// training has its own in [`Distillation`].
    #[serde(default)]
    pub max_shift: usize,
    /// Models on fixed features (`scatter`), when > 0: the features are
    /// standardised on the training set and the head's squared weights are
    /// penalised by this in the loss (a real L2 penalty, unlike AdamW's
    /// decoupled decay; sklearn's `C` is `1 / (2 n l2)` for `n` items).
    /// The standardisation is folded into the head afterwards, so the model
    /// keeps its shape. 0 = raw features, no penalty.
    #[serde(default)]
    pub feature_l2: f64,
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
            max_shift: 0,
            feature_l2: 0.0,
        }
    }
}

impl TrainConfig {
    /// How a linear head on scattering features learns from a few hundred
    /// items (the private lab's teachers, 240 items each; the student's
    /// ranking model): full batch (256), 300 AdamW steps at 0.03
    /// (docs/PRIVATE_LAB.md, "How the teachers were chosen").
    pub fn scatter_head(seed: u64) -> Self {
        TrainConfig { epochs: 300, batch_size: 256, learning_rate: 0.03, seed, ..TrainConfig::default() }
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

/// A toy data set the tests of every part of training share.
#[cfg(test)]
pub(crate) mod toy {
    use crate::data::{Dataset, Images};

    /// Two classes told apart by which half of the image is bright.
    pub(crate) fn halves(n: usize) -> Dataset {
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
}
