//! A fully connected layer with an optional ReLU, as one candle custom op
//! with its own backward pass.
//!
//! candle's `Linear` + `relu` is four graph nodes (matmul, transpose,
//! broadcast add, relu), each allocating its output and, in the backward
//! pass, a zero gradient to add into; and the matmul's backward computes
//! the input gradient even when the input is data. Here one `gemm` writes
//! into a destination pre-filled with the bias, the ReLU runs in place, and
//! the backward pass is one op: the ReLU mask, the weight gradient, the bias
//! gradient, and the input gradient only when the input needs one (not for
//! the MLP's first layer, where that is the largest product of the step).
//!
//! Weights keep candle `Linear`'s names and shapes (`weight [out, in]`,
//! `bias [out]`), so checkpoints are unchanged.

use std::sync::{Arc, OnceLock};

use candle_core::{CpuStorage, CustomOp3, Layout, Result, Shape, Tensor};
use candle_nn::{Init, VarBuilder};

use crate::conv::f32_slice;
use rayon::prelude::*;

use crate::gemm::{matmul, Mat};

/// `y = x @ weight^T + bias`, then ReLU when `relu`.
#[derive(Clone, Debug)]
pub(crate) struct Dense {
    weight: Tensor,
    bias: Tensor,
}

impl Dense {
    /// Creates (or loads) `weight [out, in]` and `bias [out]` from `vb`, with
    /// candle-nn `linear`'s initialisation.
    pub(crate) fn new(inputs: usize, outputs: usize, vb: VarBuilder) -> Result<Self> {
        let weight = vb.get_with_hints((outputs, inputs), "weight", candle_nn::init::DEFAULT_KAIMING_NORMAL)?;
        let bound = 1.0 / (inputs.max(1) as f64).sqrt();
        let bias = vb.get_with_hints(outputs, "bias", Init::Uniform { lo: -bound, up: bound })?;
        Ok(Dense { weight, bias })
    }

    /// The weight `[out, in]`.
    pub(crate) fn weight(&self) -> &Tensor {
        &self.weight
    }

    /// `[n, in]` → `[n, out]`.
    pub(crate) fn forward(&self, x: &Tensor, relu: bool) -> Result<Tensor> {
        let op = DenseOp {
            relu,
            mask: OnceLock::new(),
        };
        x.contiguous()?
            .apply_op3(&self.weight.contiguous()?, &self.bias.contiguous()?, op)
    }
}

/// The sizes of one product: `n` rows of `inputs` to `outputs`.
fn dims(x: &Layout, w: &Layout, name: &str) -> Result<(usize, usize, usize)> {
    let (n, inputs) = x.shape().dims2()?;
    let (outputs, w_in) = w.shape().dims2()?;
    if w_in != inputs {
        candle_core::bail!("{name}: input {:?} does not fit weight {:?}", x.dims(), w.dims());
    }
    Ok((n, inputs, outputs))
}

/// Forward: `(x, weight, bias)` → `y`, saving the ReLU's mask.
#[derive(Debug)]
struct DenseOp {
    relu: bool,
    mask: OnceLock<Arc<Vec<bool>>>,
}

impl CustomOp3 for DenseOp {
    fn name(&self) -> &'static str {
        "dense"
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
        s3: &CpuStorage,
        l3: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        let (n, inputs, outputs) = dims(l1, l2, self.name())?;
        let x = f32_slice(s1, l1, self.name())?;
        let w = f32_slice(s2, l2, self.name())?;
        let bias = f32_slice(s3, l3, self.name())?;
        if bias.len() != outputs {
            candle_core::bail!("dense: bias of {} for {outputs} outputs", bias.len());
        }
        let mut y = vec![0f32; n * outputs];
        if outputs > 0 {
            for row in y.chunks_mut(outputs) {
                row.copy_from_slice(bias);
            }
        }
        rows_matmul(&mut y, x, n, inputs, Mat::rows(w, outputs, inputs).t());
        if self.relu {
            let mask: Vec<bool> = y.iter().map(|&v| v > 0.0).collect();
            for (v, &m) in y.iter_mut().zip(&mask) {
                if !m {
                    *v = 0.0;
                }
            }
            let _ = self.mask.set(Arc::new(mask));
        }
        Ok((CpuStorage::F32(y), Shape::from((n, outputs))))
    }

    fn bwd(
        &self,
        x: &Tensor,
        weight: &Tensor,
        bias: &Tensor,
        _res: &Tensor,
        grad: &Tensor,
    ) -> Result<(Option<Tensor>, Option<Tensor>, Option<Tensor>)> {
        let mask = match (self.relu, self.mask.get()) {
            (false, _) => None,
            (true, Some(m)) => Some(Arc::clone(m)),
            (true, None) => candle_core::bail!("dense: backward before forward"),
        };
        let need_dx = x.track_op();
        let op = DenseBwd { need_dx, mask };
        let flat = x.apply_op3_no_bwd(weight, &grad.contiguous()?, &op)?;
        let (nx, nw) = (if need_dx { x.elem_count() } else { 0 }, weight.elem_count());
        let dx = need_dx.then(|| flat.narrow(0, 0, nx)?.reshape(x.shape())).transpose()?;
        let dw = flat.narrow(0, nx, nw)?.reshape(weight.shape())?;
        let db = flat.narrow(0, nx + nw, bias.elem_count())?;
        Ok((dx, Some(dw), Some(db)))
    }
}

/// Backward of [`DenseOp`]: `(x, weight, grad_y)` → the flat concatenation
/// `[grad_x (when needed), grad_weight, grad_bias]`.
#[derive(Debug)]
struct DenseBwd {
    need_dx: bool,
    mask: Option<Arc<Vec<bool>>>,
}

impl CustomOp3 for DenseBwd {
    fn name(&self) -> &'static str {
        "dense-bwd"
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
        s3: &CpuStorage,
        l3: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        let (n, inputs, outputs) = dims(l1, l2, self.name())?;
        let x = f32_slice(s1, l1, self.name())?;
        let w = f32_slice(s2, l2, self.name())?;
        let g = f32_slice(s3, l3, self.name())?;
        if g.len() != n * outputs || self.mask.as_ref().is_some_and(|m| m.len() != g.len()) {
            candle_core::bail!("dense-bwd: gradient of {} for {n}x{outputs}", g.len());
        }
        let g: Vec<f32> = match &self.mask {
            Some(mask) => g
                .iter()
                .zip(mask.iter())
                .map(|(&v, &m)| if m { v } else { 0.0 })
                .collect(),
            None => g.to_vec(),
        };
        let nx = if self.need_dx { n * inputs } else { 0 };
        let mut flat = vec![0f32; nx + outputs * inputs + outputs];
        let (dx, rest) = flat.split_at_mut(nx);
        let (dw, db) = rest.split_at_mut(outputs * inputs);
        weight_grad(dw, &g, x, n, inputs, outputs);
        if outputs > 0 {
            for row in g.chunks(outputs) {
                db.iter_mut().zip(row).for_each(|(a, b)| *a += b);
            }
        }
        if self.need_dx {
            rows_matmul(dx, &g, n, outputs, Mat::rows(w, outputs, inputs));
        }
        let len = flat.len();
        Ok((CpuStorage::F32(flat), Shape::from(len)))
    }
}

/// Rows of the batch each thread takes: the whole batch on one thread when
/// the product is small (forking costs more than it saves), else an even
/// share. Splitting the batch, rather than letting `gemm` split one
/// product, keeps each thread on its own rows with no synchronisation
/// inside the product (two-thread MLP training was slower than one thread
/// with `gemm`'s own parallelism).
fn rows_per_thread(n: usize, macs_per_row: usize) -> usize {
    let threads = rayon::current_num_threads().max(1);
    if threads == 1 || n * macs_per_row < PARALLEL_MIN_MACS {
        n.max(1)
    } else {
        n.div_ceil(threads).max(1)
    }
}

/// Products below this many multiply-adds run on the calling thread.
const PARALLEL_MIN_MACS: usize = 1 << 20;

/// `dst [n, rhs.cols] += lhs [n, k] @ rhs`, the batch's rows spread over
/// rayon's threads.
fn rows_matmul(dst: &mut [f32], lhs: &[f32], n: usize, k: usize, rhs: Mat<'_>) {
    let cols = rhs.cols();
    if n == 0 || cols == 0 {
        return;
    }
    let r = rows_per_thread(n, k * cols);
    dst[..n * cols]
        .par_chunks_mut(r * cols)
        .zip(lhs[..n * k].par_chunks((r * k).max(1)))
        .for_each(|(d, l)| matmul(d, Mat::rows(l, d.len() / cols, k), rhs, true));
}

/// `dw [outputs, inputs] = g^T @ x` over the batch's `n` rows, the
/// weight's rows (outputs) spread over rayon's threads: each thread writes
/// its own rows of `dw` straight away, with no partial sums to allocate and
/// add (splitting the batch instead cost two weight-sized buffers and a
/// reduction per step, and made two-thread MLP training slower than one).
fn weight_grad(dw: &mut [f32], g: &[f32], x: &[f32], n: usize, inputs: usize, outputs: usize) {
    if n == 0 || outputs == 0 || inputs == 0 {
        dw.fill(0.0);
        return;
    }
    let r = rows_per_thread(outputs, inputs * n);
    dw[..outputs * inputs]
        .par_chunks_mut(r * inputs)
        .enumerate()
        .for_each(|(t, d)| {
            let (o0, rows) = (t * r, d.len() / inputs);
            // g^T's rows o0..o0+rows: columns o0.. of g, `rows` of them.
            let gt = Mat::rows(&g[o0..], n, outputs).first_cols(rows).t();
            matmul(d, gt, Mat::rows(x, n, inputs), false);
        });
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::{DType, Device};
    use candle_nn::{Linear, Module};
    use crate::test_util::{max_abs_diff, seeded};
    use rand::SeedableRng;

    /// Values and gradients agree with candle's `Linear` (+ `relu`), with
    /// and without ReLU, with a variable input and with data as input
    /// (whose gradient must then be absent), on random shapes including one
    /// large enough to use the thread pool.
    #[test]
    fn matches_candle_linear() -> Result<()> {
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(11);
        for (n, inputs, outputs, relu, var_input) in [
            (5, 7, 3, true, true),
            (4, 9, 6, false, true),
            (1, 3, 2, true, false),
            (64, 200, 130, true, false),
            (33, 129, 65, false, true),
            // Over the parallel threshold with an odd number of outputs:
            // the threads' shares of the weight's rows differ in size.
            (50, 250, 101, true, true),
        ] {
            let xv = seeded(&[n, inputs], 1.0, &mut rng)?;
            let x = if var_input {
                xv.as_tensor().clone()
            } else {
                xv.as_tensor().detach()
            };
            let wv = seeded(&[outputs, inputs], 1.0, &mut rng)?;
            let bv = seeded(&[outputs], 1.0, &mut rng)?;
            let ours = Dense {
                weight: wv.as_tensor().clone(),
                bias: bv.as_tensor().clone(),
            };
            let theirs = Linear::new(wv.as_tensor().clone(), Some(bv.as_tensor().clone()));
            let y1 = ours.forward(&x, relu)?;
            let mut y2 = theirs.forward(&x)?;
            if relu {
                y2 = y2.relu()?;
            }
            assert!(max_abs_diff(&y1, &y2)? < 1e-4, "forward {:?}", (n, inputs, outputs));
            let proj = seeded(&[n, outputs], 1.0, &mut rng)?.as_tensor().clone();
            let g1 = (&y1 * &proj)?.sum_all()?.backward()?;
            let g2 = (&y2 * &proj)?.sum_all()?.backward()?;
            for (name, v) in [("weight", wv.as_tensor()), ("bias", bv.as_tensor()), ("x", &x)] {
                if name == "x" && !var_input {
                    assert!(g1.get(v).is_none(), "no gradient is computed for data");
                    continue;
                }
                match (g1.get(v), g2.get(v)) {
                    (Some(a), Some(b)) => {
                        let d = max_abs_diff(a, b)?;
                        assert!(
                            d < 1e-3,
                            "{name} gradient off by {d} for {:?}",
                            (n, inputs, outputs, relu)
                        );
                    }
                    (a, b) => panic!("{name}: gradient present {} vs {}", a.is_some(), b.is_some()),
                }
            }
        }
        Ok(())
    }

    #[test]
    fn mismatched_shapes_are_errors() -> Result<()> {
        let dev = Device::Cpu;
        let layer = Dense {
            weight: Tensor::zeros((3, 4), DType::F32, &dev)?,
            bias: Tensor::zeros(3, DType::F32, &dev)?,
        };
        assert!(layer.forward(&Tensor::zeros((2, 5), DType::F32, &dev)?, true).is_err());
        let bad_bias = Dense {
            bias: Tensor::zeros(2, DType::F32, &dev)?,
            ..layer
        };
        assert!(bad_bias
            .forward(&Tensor::zeros((2, 4), DType::F32, &dev)?, false)
            .is_err());
        Ok(())
    }
}
