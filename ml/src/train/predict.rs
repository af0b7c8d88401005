//! Prediction: labels, probabilities at a temperature and raw logits, in
//! batches (the CNN's capped), for `Images` or input tensors; and accuracy.

use candle_core::{DType, Device, Module, Tensor, D};

use super::batch::images_to_tensor;
use super::TrainError;
use crate::data::Images;
use crate::model::{Classifier, ModelKind};

/// Largest batch the CNN is run on at once when predicting. Its convolution
/// blocks need only per-thread scratch, but the activations of a batch
/// (`16 * rows * cols` floats per item after the first block) still grow
/// with it: 256 items keep them around 3 MB, and larger requested batches
/// are cut into these.
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
        ModelKind::Cnn | ModelKind::CnnWide => batch_size.clamp(1, MAX_CNN_BATCH),
        ModelKind::Mlp | ModelKind::Scatter => batch_size.max(1),
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
    use super::super::toy::halves;
    use super::*;

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
