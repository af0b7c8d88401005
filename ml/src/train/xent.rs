//! Softmax cross-entropy on hard labels as one candle custom op.
//!
//! candle-nn's `cross_entropy` is `log_softmax` + `gather` + a mean: about
//! ten graph nodes per minibatch, each allocating its output and, in the
//! backward pass, a zero gradient to add into. This op computes the mean
//! loss in one pass over the logits, keeps the softmax, and its backward is
//! the closed form `(softmax - onehot) / n`. With label smoothing `e` the
//! target is `(1 - e) onehot + e / classes` (Szegedy et al. 2016), which
//! caps how hard a wrong label can pull (the student's labels are noisy
//! answers); the gradient stays `(softmax - target) / n`.

use std::sync::{Arc, OnceLock};

use candle_core::{CpuStorage, CustomOp1, Layout, Result, Shape, Tensor};

use crate::conv::f32_slice;

/// `-(1/n) Σ_i log softmax(logits_i)[labels_i]` for `logits [n, classes]`.
///
/// An error if a label is not below `classes` or the counts differ.
pub(crate) fn cross_entropy(logits: &Tensor, labels: &[u32]) -> Result<Tensor> {
    smoothed_cross_entropy(logits, labels, 0.0)
}

/// The cross-entropy against `(1 - smoothing) onehot + smoothing / classes`;
/// `smoothing` 0 is [`cross_entropy`]. An error unless it is in `[0, 1)`.
pub(crate) fn smoothed_cross_entropy(logits: &Tensor, labels: &[u32], smoothing: f32) -> Result<Tensor> {
    if !(0.0..1.0).contains(&smoothing) {
        candle_core::bail!("cross-entropy: label smoothing {smoothing} is not in [0, 1)");
    }
    let op = Xent {
        labels: labels.into(),
        smoothing,
        softmax: OnceLock::new(),
    };
    logits.contiguous()?.apply_op1(op)
}

#[derive(Debug)]
struct Xent {
    labels: Arc<[u32]>,
    smoothing: f32,
    softmax: OnceLock<Arc<Vec<f32>>>,
}

impl CustomOp1 for Xent {
    fn name(&self) -> &'static str {
        "cross-entropy"
    }

    fn cpu_fwd(&self, s: &CpuStorage, l: &Layout) -> Result<(CpuStorage, Shape)> {
        let (n, classes) = l.shape().dims2()?;
        if n != self.labels.len() || n == 0 || classes == 0 {
            candle_core::bail!("cross-entropy: {n}x{classes} logits for {} labels", self.labels.len());
        }
        if let Some(&bad) = self.labels.iter().find(|&&y| y as usize >= classes) {
            candle_core::bail!("cross-entropy: label {bad} is not below the class count {classes}");
        }
        let z = f32_slice(s, l, self.name())?;
        let mut probs = vec![0f32; n * classes];
        let mut total = 0f64;
        let e = self.smoothing;
        for ((row, p), &y) in z.chunks(classes).zip(probs.chunks_mut(classes)).zip(self.labels.iter()) {
            let max = row.iter().copied().fold(f32::NEG_INFINITY, f32::max);
            let mut sum = 0f32;
            for (q, &v) in p.iter_mut().zip(row) {
                *q = (v - max).exp();
                sum += *q;
            }
            p.iter_mut().for_each(|q| *q /= sum);
            // -log softmax[k] = log Σ exp(z - max) - (z[k] - max)
            let nll = |k: usize| sum.ln() - (row[k] - max);
            let mut loss = (1.0 - e) * nll(y as usize);
            if e > 0.0 {
                loss += e / classes as f32 * (0..classes).map(nll).sum::<f32>();
            }
            total += f64::from(loss);
        }
        let _ = self.softmax.set(Arc::new(probs));
        Ok((CpuStorage::F32(vec![(total / n as f64) as f32]), Shape::from(())))
    }

    fn bwd(&self, arg: &Tensor, _res: &Tensor, grad: &Tensor) -> Result<Option<Tensor>> {
        let Some(probs) = self.softmax.get() else {
            candle_core::bail!("cross-entropy: backward before forward");
        };
        let (n, classes) = arg.dims2()?;
        let scale = grad.to_scalar::<f32>()? / n as f32;
        let spread = self.smoothing / classes as f32;
        let mut g: Vec<f32> = probs.iter().map(|p| (p - spread) * scale).collect();
        for (row, &y) in g.chunks_mut(classes).zip(self.labels.iter()) {
            row[y as usize] -= (1.0 - self.smoothing) * scale;
        }
        Ok(Some(Tensor::from_vec(g, (n, classes), arg.device())?))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::{DType, Device, Var};

    /// Value and gradient equal candle-nn's cross-entropy, also when the
    /// loss is scaled before the backward pass (the gradient's scale).
    #[test]
    fn matches_candle_nn() -> Result<()> {
        let dev = Device::Cpu;
        let z: Vec<f32> = (0..35).map(|i| ((i * 7919) % 23) as f32 * 0.4 - 4.0).collect();
        let labels = [0u32, 4, 2, 2, 1, 3, 0];
        let v = Var::from_vec(z, (7, 5), &dev)?;
        let ours = cross_entropy(v.as_tensor(), &labels)?;
        let want = Tensor::new(&labels[..], &dev)?;
        let theirs = candle_nn::loss::cross_entropy(v.as_tensor(), &want)?;
        let (a, b) = (ours.to_scalar::<f32>()?, theirs.to_scalar::<f32>()?);
        assert!((a - b).abs() < 1e-5, "{a} vs {b}");
        let g1 = (ours * 3.0)?.backward()?;
        let g2 = (theirs * 3.0)?.backward()?;
        let d = (g1.get(v.as_tensor()).expect("grad") - g2.get(v.as_tensor()).expect("grad"))?
            .abs()?
            .max_all()?
            .to_dtype(DType::F32)?
            .to_scalar::<f32>()?;
        assert!(d < 1e-5, "gradient off by {d}");
        Ok(())
    }

    /// Smoothing `e` equals `(1 - e) CE(y) + e * mean_k CE(k)` built from
    /// candle-nn's cross-entropy, value and gradient.
    #[test]
    fn smoothing_matches_the_mixture() -> Result<()> {
        let dev = Device::Cpu;
        let z: Vec<f32> = (0..24).map(|i| ((i * 31) % 17) as f32 * 0.5 - 3.0).collect();
        let labels = [2u32, 0, 3, 1, 1, 2];
        let e = 0.2f64;
        let v = Var::from_vec(z, (6, 4), &dev)?;
        let ours = smoothed_cross_entropy(v.as_tensor(), &labels, e as f32)?;
        let mut theirs = (candle_nn::loss::cross_entropy(v.as_tensor(), &Tensor::new(&labels[..], &dev)?)? * (1.0 - e))?;
        for k in 0..4u32 {
            let all_k = Tensor::new(&[k; 6][..], &dev)?;
            theirs = (theirs + (candle_nn::loss::cross_entropy(v.as_tensor(), &all_k)? * (e / 4.0))?)?;
        }
        let (a, b) = (ours.to_scalar::<f32>()?, theirs.to_scalar::<f32>()?);
        assert!((a - b).abs() < 1e-5, "{a} vs {b}");
        let g1 = ours.backward()?;
        let g2 = theirs.backward()?;
        let d = (g1.get(v.as_tensor()).expect("grad") - g2.get(v.as_tensor()).expect("grad"))?
            .abs()?
            .max_all()?
            .to_scalar::<f32>()?;
        assert!(d < 1e-5, "gradient off by {d}");
        Ok(())
    }

    #[test]
    fn bad_labels_are_errors() -> Result<()> {
        let z = Tensor::zeros((2, 3), DType::F32, &Device::Cpu)?;
        assert!(cross_entropy(&z, &[0, 3]).is_err(), "label >= classes");
        assert!(cross_entropy(&z, &[0]).is_err(), "count");
        assert!(smoothed_cross_entropy(&z, &[0, 1], 1.0).is_err(), "smoothing 1");
        assert!(smoothed_cross_entropy(&z, &[0, 1], -0.1).is_err(), "negative smoothing");
        Ok(())
    }
}
