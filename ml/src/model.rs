//! Candle classifiers: a small MLP, a small CNN and a linear classifier on
//! fixed scattering features, with a deterministic, seeded initialisation
//! (candle's CPU RNG cannot be seeded).
//!
//! Input: `f32 [batch, 1, rows, cols]` in `[0, 1]`; output: logits `[batch, classes]`.
//!
//! - MLP: flatten → 256 ReLU → 128 ReLU → classes.
//! - CNN: conv 3x3 16ch (pad 1) ReLU → maxpool 2 → conv 3x3 32ch (pad 1)
//!   ReLU → maxpool 2 → linear 128 ReLU → classes. The convolutions run as
//!   im2col + gemm with fused ReLU + max-pool ([`crate::conv`]); the weights
//!   have candle `Conv2d`'s names and shapes.
//! - CNN-wide: the same layers at twice the width (32 and 64 channels, 256
//!   hidden), about three times the compute: a student with a few hundred
//!   labels and a pool to learn from may use the capacity (FixMatch's
//!   networks are far wider than this one).
//! - Scatter: the fixed wavelet scattering transform ([`crate::scatter`],
//!   nothing learned) → linear → classes: a logistic regression on
//!   privacy-free features, for teachers with few items. Its features can
//!   be computed once per training set ([`Classifier::fixed_features`]).

use std::fmt;
use std::str::FromStr;

use candle_core::{DType, Device, Module, Tensor};
use candle_nn::{VarBuilder, VarMap};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Serialize};

use crate::conv::ConvReluPool;
use crate::dense::Dense;
use crate::scatter::Scattering;

/// Hidden widths of the MLP.
pub const MLP_HIDDEN: [usize; 2] = [256, 128];
/// Channels of the CNN's two convolutions.
pub const CNN_CHANNELS: [usize; 2] = [16, 32];
/// Width of the CNN's hidden linear layer.
pub const CNN_HIDDEN: usize = 128;
/// Channels of the wide CNN's two convolutions.
pub const CNN_WIDE_CHANNELS: [usize; 2] = [32, 64];
/// Width of the wide CNN's hidden linear layer.
pub const CNN_WIDE_HIDDEN: usize = 256;
/// Kernel side of the CNN's convolutions (zero padding keeps the size).
pub const CNN_KERNEL: usize = 3;
/// Smallest image side the CNN accepts (two 2x2 poolings).
pub const CNN_MIN_SIDE: usize = 4;

/// Which architecture.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ModelKind {
    /// Multi-layer perceptron.
    Mlp,
    /// Small convolutional network.
    Cnn,
    /// The small CNN at twice the width.
    #[serde(rename = "cnn-wide")]
    CnnWide,
    /// Linear classifier on fixed wavelet scattering features.
    Scatter,
}

impl fmt::Display for ModelKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            ModelKind::Mlp => "mlp",
            ModelKind::Cnn => "cnn",
            ModelKind::CnnWide => "cnn-wide",
            ModelKind::Scatter => "scatter",
        })
    }
}

impl FromStr for ModelKind {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.to_ascii_lowercase().as_str() {
            "mlp" => Ok(ModelKind::Mlp),
            "cnn" => Ok(ModelKind::Cnn),
            "cnn-wide" => Ok(ModelKind::CnnWide),
            "scatter" => Ok(ModelKind::Scatter),
            _ => Err(format!("unknown model kind {s:?} (expected mlp, cnn, cnn-wide or scatter)")),
        }
    }
}

#[derive(Clone, Debug)]
enum Layers {
    Mlp {
        fc1: Dense,
        fc2: Dense,
        fc3: Dense,
    },
    Cnn {
        conv1: ConvReluPool,
        conv2: ConvReluPool,
        fc1: Dense,
        fc2: Dense,
    },
    Scatter {
        transform: std::sync::Arc<Scattering>,
        fc: Dense,
    },
}

/// A classifier of `rows x cols` single-channel images into `classes` classes.
#[derive(Clone, Debug)]
pub struct Classifier {
    layers: Layers,
    kind: ModelKind,
    rows: usize,
    cols: usize,
    classes: usize,
}

impl Classifier {
    /// Builds the model, taking (or creating) its weights from `vb`.
    ///
    /// With a `VarBuilder` over a [`VarMap`] the weights are created with
    /// candle's unseeded initialisation; call [`seeded_init`] afterwards for a
    /// reproducible start ([`Classifier::new_seeded`] does both).
    pub fn new(kind: ModelKind, rows: usize, cols: usize, classes: usize, vb: VarBuilder) -> candle_core::Result<Self> {
        if rows == 0 || cols == 0 || classes == 0 {
            candle_core::bail!("invalid model shape: {rows}x{cols} images, {classes} classes");
        }
        let layers = match kind {
            ModelKind::Mlp => Layers::Mlp {
                fc1: Dense::new(rows * cols, MLP_HIDDEN[0], vb.pp("fc1"))?,
                fc2: Dense::new(MLP_HIDDEN[0], MLP_HIDDEN[1], vb.pp("fc2"))?,
                fc3: Dense::new(MLP_HIDDEN[1], classes, vb.pp("fc3"))?,
            },
            ModelKind::Cnn | ModelKind::CnnWide => {
                let (channels, hidden) = if kind == ModelKind::Cnn {
                    (CNN_CHANNELS, CNN_HIDDEN)
                } else {
                    (CNN_WIDE_CHANNELS, CNN_WIDE_HIDDEN)
                };
                if rows < CNN_MIN_SIDE || cols < CNN_MIN_SIDE {
                    candle_core::bail!(
                        "the CNN needs images of at least {CNN_MIN_SIDE}x{CNN_MIN_SIDE}, got {rows}x{cols}"
                    );
                }
                let flat = channels[1] * (rows / 4) * (cols / 4);
                Layers::Cnn {
                    conv1: ConvReluPool::new(1, channels[0], CNN_KERNEL, CNN_KERNEL / 2, vb.pp("conv1"))?,
                    conv2: ConvReluPool::new(channels[0], channels[1], CNN_KERNEL, CNN_KERNEL / 2, vb.pp("conv2"))?,
                    fc1: Dense::new(flat, hidden, vb.pp("fc1"))?,
                    fc2: Dense::new(hidden, classes, vb.pp("fc2"))?,
                }
            }
            ModelKind::Scatter => {
                let transform = Scattering::new(rows, cols).ok_or_else(|| {
                    candle_core::Error::Msg(format!(
                        "the scattering transform needs images of at least {0}x{0}, got {rows}x{cols}",
                        crate::scatter::MIN_SIDE
                    ))
                })?;
                // Standardised only in training, with a real L2 penalty
                // (`TrainConfig::feature_l2`), then folded into this head:
                // standardising without one made 240-item teachers worse
                // (0.73 against 0.78).
                let fc = Dense::new(transform.features(), classes, vb.pp("fc"))?;
                Layers::Scatter { transform: std::sync::Arc::new(transform), fc }
            }
        };
        Ok(Classifier {
            layers,
            kind,
            rows,
            cols,
            classes,
        })
    }

    /// A fresh model with seeded weights, and the [`VarMap`] holding them (for training).
    pub fn new_seeded(
        kind: ModelKind,
        rows: usize,
        cols: usize,
        classes: usize,
        seed: u64,
        device: &Device,
    ) -> candle_core::Result<(Self, VarMap)> {
        let varmap = VarMap::new();
        let vb = VarBuilder::from_varmap(&varmap, DType::F32, device);
        let model = Classifier::new(kind, rows, cols, classes, vb)?;
        seeded_init(&varmap, seed)?;
        Ok((model, varmap))
    }

    /// The architecture.
    pub fn kind(&self) -> ModelKind {
        self.kind
    }

    /// Image rows expected.
    pub fn rows(&self) -> usize {
        self.rows
    }

    /// Image columns expected.
    pub fn cols(&self) -> usize {
        self.cols
    }

    /// Number of classes (width of the output).
    pub fn classes(&self) -> usize {
        self.classes
    }
}

impl Classifier {
    /// The features of `images` that no training changes, computed once:
    /// the scattering transform for [`ModelKind::Scatter`] (`[n, features]`;
    /// [`Classifier::forward_features`] finishes the forward pass from
    /// them), `None` for the other kinds.
    pub fn fixed_features(&self, images: &crate::data::Images) -> candle_core::Result<Option<Tensor>> {
        let Layers::Scatter { transform, .. } = &self.layers else { return Ok(None) };
        let features = transform.transform_images(images);
        Ok(Some(Tensor::from_vec(features, (images.len(), transform.features()), &Device::Cpu)?))
    }

    /// The weight of the head on fixed features (what an L2 penalty acts
    /// on), `None` for the kinds without fixed features.
    pub(crate) fn head_weight(&self) -> Option<&Tensor> {
        match &self.layers {
            Layers::Scatter { fc, .. } => Some(fc.weight()),
            _ => None,
        }
    }

    /// The logits from rows of [`Classifier::fixed_features`].
    pub fn forward_features(&self, features: &Tensor) -> candle_core::Result<Tensor> {
        match &self.layers {
            Layers::Scatter { fc, .. } => fc.forward(features, false),
            _ => candle_core::bail!("a {} model has no fixed features", self.kind),
        }
    }

    /// The scattering features of a batch `[b, 1, rows, cols]`.
    fn scatter(transform: &Scattering, xs: &Tensor) -> candle_core::Result<Tensor> {
        let b = xs.dim(0)?;
        let pixels = xs.flatten_all()?.to_vec1::<f32>()?;
        Tensor::from_vec(transform.transform(&pixels), (b, transform.features()), xs.device())
    }

    /// The representation of `xs` at every layer, each flattened to
    /// `[batch, features]`, the logits last (Deep k-NN's layers). MLP: the two
    /// hidden ReLU layers and the logits; CNN: both convolution blocks, the
    /// hidden linear layer and the logits.
    pub fn representations(&self, xs: &Tensor) -> candle_core::Result<Vec<Tensor>> {
        let b = xs.dim(0)?;
        match &self.layers {
            Layers::Mlp { fc1, fc2, fc3 } => {
                let x = xs.reshape((b, self.rows * self.cols))?;
                let h1 = fc1.forward(&x, true)?;
                let h2 = fc2.forward(&h1, true)?;
                let out = fc3.forward(&h2, false)?;
                Ok(vec![h1, h2, out])
            }
            Layers::Cnn { conv1, conv2, fc1, fc2 } => {
                let x = xs.reshape((b, 1, self.rows, self.cols))?;
                let c1 = conv1.forward(&x)?;
                let c2 = conv2.forward(&c1)?;
                let h = fc1.forward(&c2.flatten_from(1)?, true)?;
                let out = fc2.forward(&h, false)?;
                Ok(vec![c1.flatten_from(1)?, c2.flatten_from(1)?, h, out])
            }
            Layers::Scatter { transform, fc } => {
                let f = Self::scatter(transform, xs)?;
                let out = fc.forward(&f, false)?;
                Ok(vec![f, out])
            }
        }
    }
}

impl Module for Classifier {
    fn forward(&self, xs: &Tensor) -> candle_core::Result<Tensor> {
        let b = xs.dim(0)?;
        match &self.layers {
            Layers::Mlp { fc1, fc2, fc3 } => {
                let x = xs.reshape((b, self.rows * self.cols))?;
                let x = fc1.forward(&x, true)?;
                let x = fc2.forward(&x, true)?;
                fc3.forward(&x, false)
            }
            Layers::Cnn { conv1, conv2, fc1, fc2 } => {
                let x = xs.reshape((b, 1, self.rows, self.cols))?;
                let x = conv1.forward(&x)?;
                let x = conv2.forward(&x)?;
                let x = x.flatten_from(1)?;
                let x = fc1.forward(&x, true)?;
                fc2.forward(&x, false)
            }
            Layers::Scatter { transform, fc } => fc.forward(&Self::scatter(transform, xs)?, false),
        }
    }
}

/// Re-initialises every variable of `varmap` from a `ChaCha8Rng` seeded with
/// `seed`, in name order, as PyTorch's defaults do for `Linear` and `Conv2d`:
/// weights and biases uniform in `±1/sqrt(fan_in)` where `fan_in` is the
/// weight's size divided by its first dimension (a bias uses its sibling
/// `*.weight`'s fan-in).
pub fn seeded_init(varmap: &VarMap, seed: u64) -> candle_core::Result<()> {
    let data = varmap
        .data()
        .lock()
        .map_err(|_| candle_core::Error::Msg("varmap lock poisoned".into()))?;
    let mut names: Vec<&String> = data.keys().collect();
    names.sort();
    let fan_in = |name: &str| -> usize {
        let weight = name.strip_suffix("bias").map(|p| format!("{p}weight"));
        let var = weight.as_deref().and_then(|w| data.get(w)).unwrap_or(&data[name]);
        let dims = var.dims();
        if dims.len() >= 2 {
            dims[1..].iter().product()
        } else {
            dims.first().copied().unwrap_or(1)
        }
    };
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    for name in names {
        let var = &data[name];
        let bound = 1.0 / (fan_in(name).max(1) as f32).sqrt();
        let n = var.elem_count();
        let values: Vec<f32> = (0..n).map(|_| rng.random_range(-bound..bound)).collect();
        let t = Tensor::from_vec(values, var.shape(), var.device())?.to_dtype(var.dtype())?;
        var.set(&t)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shapes() -> candle_core::Result<()> {
        let dev = Device::Cpu;
        for kind in [ModelKind::Mlp, ModelKind::Cnn, ModelKind::CnnWide, ModelKind::Scatter] {
            let (m, vm) = Classifier::new_seeded(kind, 28, 28, 10, 1, &dev)?;
            let x = Tensor::zeros((3, 1, 28, 28), DType::F32, &dev)?;
            assert_eq!(m.forward(&x)?.dims(), &[3, 10]);
            assert!(!vm.all_vars().is_empty());
        }
        // Odd sizes work for the CNN too.
        let (m, _) = Classifier::new_seeded(ModelKind::Cnn, 9, 13, 3, 1, &dev)?;
        assert_eq!(
            m.forward(&Tensor::zeros((2, 1, 9, 13), DType::F32, &dev)?)?.dims(),
            &[2, 3]
        );
        assert!(Classifier::new_seeded(ModelKind::Cnn, 3, 3, 3, 1, &dev).is_err());
        assert!(Classifier::new_seeded(ModelKind::Mlp, 3, 3, 0, 1, &dev).is_err());
        Ok(())
    }

    #[test]
    fn representations_end_with_the_logits() -> candle_core::Result<()> {
        let dev = Device::Cpu;
        for (kind, widths) in [
            (ModelKind::Mlp, vec![256, 128, 10]),
            (ModelKind::Cnn, vec![16 * 14 * 14, 32 * 7 * 7, 128, 10]),
            (ModelKind::CnnWide, vec![32 * 14 * 14, 64 * 7 * 7, 256, 10]),
            (ModelKind::Scatter, vec![81 * 7 * 7, 10]),
        ] {
            let (m, _) = Classifier::new_seeded(kind, 28, 28, 10, 1, &dev)?;
            let x = Tensor::rand(0f32, 1.0, (3, 1, 28, 28), &dev)?;
            let reps = m.representations(&x)?;
            assert_eq!(reps.iter().map(|r| r.dims()[1]).collect::<Vec<_>>(), widths);
            let d = (reps.last().expect("logits") - m.forward(&x)?)?
                .abs()?
                .sum_all()?
                .to_scalar::<f32>()?;
            assert!(d < 1e-5, "{kind}: {d}");
        }
        Ok(())
    }

    #[test]
    fn seeded_init_is_deterministic() -> candle_core::Result<()> {
        let dev = Device::Cpu;
        let x = Tensor::ones((1, 1, 8, 8), DType::F32, &dev)?;
        let out = |seed| -> candle_core::Result<Vec<f32>> {
            let (m, _) = Classifier::new_seeded(ModelKind::Mlp, 8, 8, 4, seed, &dev)?;
            m.forward(&x)?.flatten_all()?.to_vec1()
        };
        assert_eq!(out(3)?, out(3)?);
        assert_ne!(out(3)?, out(4)?);
        Ok(())
    }

    #[test]
    fn kind_parse_display_serde() {
        assert_eq!("CNN".parse::<ModelKind>(), Ok(ModelKind::Cnn));
        assert_eq!("scatter".parse::<ModelKind>(), Ok(ModelKind::Scatter));
        assert_eq!(ModelKind::Mlp.to_string(), "mlp");
        assert!("rnn".parse::<ModelKind>().is_err());
        assert_eq!(serde_json::to_string(&ModelKind::Cnn).expect("json"), "\"cnn\"");
        assert_eq!("cnn-wide".parse::<ModelKind>(), Ok(ModelKind::CnnWide));
        assert_eq!(ModelKind::CnnWide.to_string(), "cnn-wide");
        assert_eq!(serde_json::to_string(&ModelKind::CnnWide).expect("json"), "\"cnn-wide\"");
    }
}
