//! Helpers the fused layers' tests share: seeded random inputs and the
//! largest elementwise difference between two tensors.

use candle_core::{DType, Device, Result, Tensor, Var};
use rand::Rng;
use rand_chacha::ChaCha8Rng;

/// `n` values uniform in `-scale..scale`.
pub(crate) fn values(n: usize, scale: f32, rng: &mut ChaCha8Rng) -> Vec<f32> {
    (0..n).map(|_| rng.random_range(-scale..scale)).collect()
}

/// A variable of `shape` with [`values`].
pub(crate) fn seeded(shape: &[usize], scale: f32, rng: &mut ChaCha8Rng) -> Result<Var> {
    Var::from_vec(values(shape.iter().product(), scale, rng), shape, &Device::Cpu)
}

/// The largest `|a - b|` over all elements.
pub(crate) fn max_abs_diff(a: &Tensor, b: &Tensor) -> Result<f32> {
    (a - b)?.abs()?.flatten_all()?.max(0)?.to_dtype(DType::F32)?.to_scalar::<f32>()
}
