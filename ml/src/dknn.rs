//! Deep k-Nearest Neighbors (Papernot and McDaniel, arXiv 1803.04765),
//! for experiments: the k nearest training items of an input in each
//! layer's representation vote; the nonconformity of label j is the number
//! of neighbours, over all layers, whose label is not j; conformal
//! prediction against a held-out calibration set turns it into p-values.
//! The prediction is the label of highest p-value, its **credibility** that
//! p-value and its **confidence** one minus the second highest. Inputs that
//! move the representation away from the training data in some layers
//! (adversarial, out of distribution) get low credibility.

use candle_core::{Device, Tensor};

use crate::model::Classifier;
use crate::train::MAX_CNN_BATCH;

/// Fewest calibration items accepted.
pub const MIN_CALIBRATION: usize = 10;

/// Errors of Deep k-NN.
#[derive(Debug, thiserror::Error)]
pub enum DknnError {
    /// A candle operation failed.
    #[error("tensor error: {0}")]
    Candle(#[from] candle_core::Error),
    /// The input or a parameter is unusable.
    #[error("invalid deep k-NN input: {0}")]
    Invalid(String),
}

/// What Deep k-NN says of one input.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct DknnOutput {
    /// Label of the highest p-value.
    pub prediction: u8,
    /// That p-value.
    pub credibility: f64,
    /// One minus the second highest p-value.
    pub confidence: f64,
}

/// A fitted Deep k-NN over a model's layers.
#[derive(Debug)]
pub struct DeepKnn {
    /// Per layer: the training representations `[n, d]` and their squared norms.
    layers: Vec<(Tensor, Vec<f32>)>,
    labels: Vec<u8>,
    k: usize,
    classes: usize,
    /// Nonconformity of each calibration item's true label, sorted.
    calibration: Vec<f64>,
}

/// Each layer's representation of `x` (batched for the CNN), as `[n, d]` tensors.
fn layer_reps(model: &Classifier, x: &Tensor) -> Result<Vec<Tensor>, DknnError> {
    let n = x.dim(0)?;
    let mut parts: Vec<Vec<Tensor>> = Vec::new();
    let mut start = 0;
    while start < n {
        let len = MAX_CNN_BATCH.min(n - start);
        parts.push(model.representations(&x.narrow(0, start, len)?)?);
        start += len;
    }
    let layers = parts.first().map_or(0, Vec::len);
    (0..layers)
        .map(|l| Ok(Tensor::cat(&parts.iter().map(|p| p[l].clone()).collect::<Vec<_>>(), 0)?.contiguous()?))
        .collect()
}

impl DeepKnn {
    /// Indexes the `train` items (`[n, 1, rows, cols]` in `[0, 1]`, labels
    /// `train_labels`) in every layer of `model`, and calibrates on the
    /// held-out `calib` items. `k` must be in `1..=n`; at least
    /// [`MIN_CALIBRATION`] calibration items.
    pub fn fit(model: &Classifier, train: &Tensor, train_labels: &[u8], calib: &Tensor, calib_labels: &[u8], k: usize) -> Result<Self, DknnError> {
        let n = train.dim(0)?;
        if n != train_labels.len() || calib.dim(0)? != calib_labels.len() {
            return Err(DknnError::Invalid("inputs and labels differ in number".into()));
        }
        if k == 0 || k > n {
            return Err(DknnError::Invalid(format!("k = {k} neighbours, but the training set has {n} items (k must be in 1..={n})")));
        }
        if calib_labels.len() < MIN_CALIBRATION {
            return Err(DknnError::Invalid(format!(
                "too few calibration items: {} (at least {MIN_CALIBRATION})",
                calib_labels.len()
            )));
        }
        let classes = model.classes();
        if let Some(&bad) = train_labels.iter().chain(calib_labels).find(|&&l| usize::from(l) >= classes) {
            return Err(DknnError::Invalid(format!("label {bad} is not a class of the model")));
        }
        let layers = layer_reps(model, train)?
            .into_iter()
            .map(|t| {
                let sq = t.sqr()?.sum(1)?.to_vec1::<f32>()?;
                Ok((t, sq))
            })
            .collect::<Result<Vec<_>, DknnError>>()?;
        let mut knn = DeepKnn { layers, labels: train_labels.to_vec(), k, classes, calibration: Vec::new() };
        let mut cal: Vec<f64> = knn
            .nonconformity(model, calib)?
            .iter()
            .zip(calib_labels)
            .map(|(a, &y)| a[usize::from(y)])
            .collect();
        cal.sort_by(f64::total_cmp);
        knn.calibration = cal;
        Ok(knn)
    }

    /// Per input, per class: the number of neighbours (over all layers) whose label is not that class.
    pub fn nonconformity(&self, model: &Classifier, x: &Tensor) -> Result<Vec<Vec<f64>>, DknnError> {
        let n = x.dim(0)?;
        let reps = layer_reps(model, x)?;
        if reps.len() != self.layers.len() {
            return Err(DknnError::Invalid("the model is not the one the index was built with".into()));
        }
        let mut counts = vec![vec![0usize; self.classes]; n];
        for (q, (t, sq)) in reps.iter().zip(&self.layers) {
            // ||q - t||^2 = ||q||^2 + ||t||^2 - 2 q.t; ||q||^2 does not change the ranking.
            let chunk = 256;
            let mut start = 0;
            while start < n {
                let len = chunk.min(n - start);
                let dots = q.narrow(0, start, len)?.matmul(&t.t()?)?.to_vec2::<f32>()?;
                for (i, row) in dots.iter().enumerate() {
                    let mut d: Vec<(f32, usize)> = row.iter().zip(sq).enumerate().map(|(j, (&p, &s))| (s - 2.0 * p, j)).collect();
                    d.select_nth_unstable_by(self.k - 1, |a, b| a.0.total_cmp(&b.0));
                    for &(_, j) in &d[..self.k] {
                        counts[start + i][usize::from(self.labels[j])] += 1;
                    }
                }
                start += len;
            }
        }
        let total = (self.k * self.layers.len()) as f64;
        Ok(counts.into_iter().map(|c| c.into_iter().map(|v| total - v as f64).collect()).collect())
    }

    /// The share of calibration items at least as nonconforming as `alpha`.
    fn p_value(&self, alpha: f64) -> f64 {
        let below = self.calibration.partition_point(|&v| v < alpha);
        (self.calibration.len() - below) as f64 / self.calibration.len() as f64
    }

    /// Prediction, credibility and confidence of each input.
    pub fn predict(&self, model: &Classifier, x: &Tensor) -> Result<Vec<DknnOutput>, DknnError> {
        Ok(self
            .nonconformity(model, x)?
            .iter()
            .map(|a| {
                let p: Vec<f64> = a.iter().map(|&v| self.p_value(v)).collect();
                let (best, cred) = p.iter().enumerate().fold((0, f64::MIN), |b, (i, &v)| if v > b.1 { (i, v) } else { b });
                let second = p.iter().enumerate().filter(|&(i, _)| i != best).map(|(_, &v)| v).fold(0.0, f64::max);
                DknnOutput { prediction: best as u8, credibility: cred, confidence: 1.0 - second }
            })
            .collect())
    }
}

/// The inputs of `x` as `f32 [n, 1, rows, cols]` on the CPU (for callers with flat data).
pub fn input_tensor(data: Vec<f32>, n: usize, rows: usize, cols: usize) -> Result<Tensor, DknnError> {
    Ok(Tensor::from_vec(data, (n, 1, rows, cols), &Device::Cpu)?)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::data::{Dataset, Images};
    use crate::train::{images_to_tensor, train, TrainConfig};
    use crate::ModelKind;

    /// Two classes: bright top half (0) or bright bottom half (1), 4x4.
    fn halves(n: usize, offset: usize) -> Dataset {
        let mut data = Vec::new();
        let mut labels = Vec::new();
        for i in 0..n {
            let label = (i % 2) as u8;
            for r in 0..4 {
                for c in 0..4 {
                    let bright = (r < 2) == (label == 0);
                    data.push(if bright { 180 + ((i + offset + c) % 60) as u8 } else { ((i + offset + r) % 40) as u8 });
                }
            }
            labels.push(label);
        }
        Dataset { images: Images { data, rows: 4, cols: 4 }, labels }
    }

    /// Left-half or right-half bright 4x4 images with alternating labels:
    /// a region of the input space where the labels disagree.
    fn contested(n: usize) -> Dataset {
        let mut data = Vec::new();
        for i in 0..n {
            for r in 0..4 {
                for c in 0..4 {
                    data.push(if (c < 2) == (i % 4 < 2) { 170 + ((i * 7 + r) % 80) as u8 } else { ((i * 3 + c) % 30) as u8 });
                }
            }
        }
        Dataset { images: Images { data, rows: 4, cols: 4 }, labels: (0..n).map(|i| (i % 2) as u8).collect() }
    }

    #[test]
    fn credible_on_the_data_not_off_it() -> Result<(), DknnError> {
        let clean = halves(200, 0);
        let noisy = contested(60);
        let train_set = Dataset {
            images: Images { data: [clean.images.data.clone(), noisy.images.data.clone()].concat(), rows: 4, cols: 4 },
            labels: [clean.labels.clone(), noisy.labels.clone()].concat(),
        };
        let cfg = TrainConfig { epochs: 5, batch_size: 16, ..Default::default() };
        let model = train(ModelKind::Mlp, &train_set, 2, &cfg, &mut |_| {}).map_err(|e| DknnError::Invalid(e.to_string()))?.model;
        let calib = halves(40, 7);
        let t = images_to_tensor(&train_set.images, &Device::Cpu)?;
        let c = images_to_tensor(&calib.images, &Device::Cpu)?;
        let knn = DeepKnn::fit(&model, &t, &train_set.labels, &c, &calib.labels, 5)?;
        // Fresh items like the clean training data: right and credible.
        let test = halves(20, 13);
        let out = knn.predict(&model, &images_to_tensor(&test.images, &Device::Cpu)?)?;
        let right = out.iter().zip(&test.labels).filter(|(o, &y)| o.prediction == y).count();
        assert_eq!(right, 20);
        let mean = |v: &[DknnOutput]| v.iter().map(|o| o.credibility).sum::<f64>() / v.len() as f64;
        assert!(mean(&out) > 0.5, "{out:?}");
        // Items from the contested region: their neighbours disagree, so
        // their nonconformity exceeds the calibration items' and
        // credibility falls.
        let odd = contested(24);
        let off = knn.predict(&model, &images_to_tensor(&odd.images, &Device::Cpu)?)?;
        assert!(mean(&off) < mean(&out) - 0.3, "contested {} vs clean {}", mean(&off), mean(&out));
        // Nonconformity counts neighbours: 3 layers of 5, none of the other class
        // for a clean training item's own class.
        let a = knn.nonconformity(&model, &t.narrow(0, 0, 1)?)?;
        assert_eq!(a[0][0] + a[0][1], (5 * 3) as f64, "{a:?}");
        assert!(a[0][0] < a[0][1], "{a:?}");
        Ok(())
    }

    #[test]
    fn bad_parameters_are_errors() -> Result<(), DknnError> {
        let train_set = halves(30, 0);
        let (model, _) = Classifier::new_seeded(ModelKind::Mlp, 4, 4, 2, 0, &Device::Cpu)?;
        let t = images_to_tensor(&train_set.images, &Device::Cpu)?;
        let few = t.narrow(0, 0, 5)?;
        let k_err = DeepKnn::fit(&model, &t, &train_set.labels, &t, &train_set.labels, 31).expect_err("k > n");
        assert!(k_err.to_string().contains("k = 31"), "{k_err}");
        assert!(DeepKnn::fit(&model, &t, &train_set.labels, &t, &train_set.labels, 0).is_err());
        let cal_err = DeepKnn::fit(&model, &t, &train_set.labels, &few, &train_set.labels[..5], 3).expect_err("too few");
        assert!(cal_err.to_string().contains("too few calibration items"), "{cal_err}");
        Ok(())
    }
}
