//! A fused AdamW optimiser for candle's CPU device.
//!
//! candle-nn's `AdamW` runs about fifteen separate tensor operations per
//! variable and step, each allocating a fresh tensor; on a small CPU that
//! cost more than the forward and backward passes together. This one keeps
//! both moment estimates as plain `Vec<f32>` and updates each variable in
//! place, in one loop, as a candle in-place op that reads the gradient where
//! backprop left it: no copy of the gradient, the weights or the result per
//! step (those three copies were 6-8 % of MLP training). The arithmetic is
//! the same as candle's and PyTorch's AdamW (decoupled weight decay,
//! bias-corrected moments).

use std::sync::Mutex;

use candle_core::backprop::GradStore;
use candle_core::{CpuStorage, DType, InplaceOp1, Layout, Result, Tensor, Var};
use rayon::prelude::*;
pub use candle_nn::ParamsAdamW;

use crate::conv::f32_slice;

struct State {
    var: Var,
    m: Vec<f32>,
    v: Vec<f32>,
    /// Exponential moving average of the weights (empty when not tracked).
    avg: Vec<f32>,
    /// The raw weights while the variable holds their average (empty
    /// otherwise): the next step goes on from them.
    raw: Vec<f32>,
}

/// Gradients and moments below these are flushed to zero. They change no
/// update (`eps` = 1e-8 dominates the denominator: a moment under 1e-30
/// moves a weight by under 1e-21 of the learning rate), but once they
/// decay into f32's subnormal range every operation on them takes a
/// microcode assist: the moments of weights whose inputs are nearly always
/// zero (Fashion-MNIST's border pixels, for the MLP's first layer) get
/// there after several hundred steps. `TINY_GRAD` keeps
/// `(1 - beta2) * g * g` normal.
const TINY_GRAD: f32 = 1e-17;
const TINY_MOMENT: f32 = 1e-30;

/// AdamW over `f32` variables, updated in place with plain loops.
pub struct FusedAdamW {
    states: Vec<State>,
    params: ParamsAdamW,
    step: i32,
    /// Decay of the weights' moving average (0 = not tracked).
    avg_decay: f32,
}

impl FusedAdamW {
    /// Takes ownership of the optimisation of `vars` (all must be `f32`).
    pub fn new(vars: Vec<Var>, params: ParamsAdamW) -> Result<Self> {
        let mut states = Vec::with_capacity(vars.len());
        for var in vars {
            if var.dtype() != DType::F32 {
                candle_core::bail!("FusedAdamW only handles f32 variables, got {:?}", var.dtype());
            }
            let n = var.elem_count();
            states.push(State {
                var,
                m: vec![0.0; n],
                v: vec![0.0; n],
                avg: Vec::new(),
                raw: Vec::new(),
            });
        }
        Ok(FusedAdamW {
            states,
            params,
            step: 0,
            avg_decay: 0.0,
        })
    }

    /// Sets the learning rate of the next steps (a schedule's hook).
    pub fn set_learning_rate(&mut self, lr: f64) {
        self.params.lr = lr;
    }

    /// Tracks an exponential moving average of the weights from now on
    /// (`avg = decay * avg + (1 - decay) * w` after every step; Polyak
    /// averaging as in FixMatch's evaluation model); [`Self::load_average`]
    /// puts it into the variables.
    pub fn track_average(&mut self, decay: f32) -> Result<()> {
        self.avg_decay = decay;
        for s in &mut self.states {
            s.avg = s.var.as_tensor().flatten_all()?.to_vec1::<f32>()?;
        }
        Ok(())
    }

    /// Sets every variable to its moving average (a no-op when none is
    /// tracked). Further steps continue from the raw weights.
    pub fn load_average(&mut self) -> Result<()> {
        for s in self.states.iter_mut().filter(|s| !s.avg.is_empty()) {
            if s.raw.is_empty() {
                s.raw = s.var.as_tensor().flatten_all()?.to_vec1::<f32>()?;
            }
            s.var.set(&Tensor::from_slice(&s.avg, s.var.shape(), s.var.device())?)?;
        }
        Ok(())
    }

    /// The hyper-parameters.
    pub fn params(&self) -> &ParamsAdamW {
        &self.params
    }

    /// Applies one update from the gradients in `grads` (variables without a
    /// gradient are left alone).
    pub fn step(&mut self, grads: &GradStore) -> Result<()> {
        self.step_parts(&[(grads, 1.0)])
    }

    /// Applies one update from the weighted sum of several gradient stores
    /// (`sum of c * g`: the parts of a batch split over threads, each
    /// weighted by its share), summed inside the update loop rather than in
    /// a pass of its own. A variable no part has a gradient for is left
    /// alone.
    pub fn step_parts(&mut self, parts: &[(&GradStore, f32)]) -> Result<()> {
        self.step = self.step.saturating_add(1);
        let p = &self.params;
        let (lr, b1, b2, eps) = (p.lr as f32, p.beta1 as f32, p.beta2 as f32, p.eps as f32);
        let decay = 1.0 - (p.lr * p.weight_decay) as f32;
        let c1 = 1.0 / (1.0 - p.beta1.powi(self.step)) as f32;
        let c2 = 1.0 / (1.0 - p.beta2.powi(self.step)) as f32;
        let k = Coeffs { lr, b1, b2, eps, decay, c1, c2 };
        for s in &mut self.states {
            let mut grads = Vec::with_capacity(parts.len());
            for (store, c) in parts {
                if let Some(g) = store.get(s.var.as_tensor()) {
                    if g.elem_count() != s.m.len() {
                        candle_core::bail!("gradient has {} elements for a variable of {}", g.elem_count(), s.m.len());
                    }
                    grads.push((g.to_dtype(DType::F32)?.contiguous()?, *c));
                }
            }
            if grads.is_empty() {
                continue;
            }
            if !s.raw.is_empty() {
                let raw = std::mem::take(&mut s.raw);
                s.var.set(&Tensor::from_slice(&raw, s.var.shape(), s.var.device())?)?;
            }
            // The moments travel into the op and back: `cpu_fwd` takes `&self`.
            let op = InPlace {
                k,
                avg_decay: self.avg_decay,
                grads,
                state: Mutex::new(Moments {
                    m: std::mem::take(&mut s.m),
                    v: std::mem::take(&mut s.v),
                    avg: std::mem::take(&mut s.avg),
                }),
            };
            let done = s.var.as_tensor().inplace_op1(&op);
            let back = op.state.into_inner().unwrap_or_else(std::sync::PoisonError::into_inner);
            (s.m, s.v, s.avg) = (back.m, back.v, back.avg);
            done?;
        }
        Ok(())
    }

    /// Back-propagates `loss` and applies one update.
    pub fn backward_step(&mut self, loss: &Tensor) -> Result<()> {
        let grads = loss.backward()?;
        self.step(&grads)
    }
}

/// One step's constants.
#[derive(Clone, Copy)]
struct Coeffs {
    lr: f32,
    b1: f32,
    b2: f32,
    eps: f32,
    decay: f32,
    c1: f32,
    c2: f32,
}

/// One variable's optimiser state, lent to [`InPlace`] for a step.
struct Moments {
    m: Vec<f32>,
    v: Vec<f32>,
    avg: Vec<f32>,
}

/// One AdamW step on a variable, in its own storage, from the weighted sum
/// of `grads` (tensors of other storages, read inside the op).
struct InPlace {
    k: Coeffs,
    avg_decay: f32,
    grads: Vec<(Tensor, f32)>,
    state: Mutex<Moments>,
}

/// Weights per thread's share of an update: below two of these the update
/// stays on the calling thread.
const UPDATE_CHUNK: usize = 1 << 15;

impl InplaceOp1 for InPlace {
    fn name(&self) -> &'static str {
        "adamw-step"
    }

    fn cpu_fwd(&self, s1: &mut CpuStorage, l1: &Layout) -> Result<()> {
        let CpuStorage::F32(data) = s1 else {
            candle_core::bail!("adamw-step: the variable is not f32");
        };
        let Some((a, b)) = l1.contiguous_offsets() else {
            candle_core::bail!("adamw-step: the variable is not contiguous");
        };
        let w = &mut data[a..b];
        let storages: Vec<_> = self.grads.iter().map(|(g, c)| (g.storage_and_layout(), *c)).collect();
        let mut grads = Vec::with_capacity(storages.len());
        for ((storage, layout), c) in &storages {
            let candle_core::Storage::Cpu(cpu) = &**storage else {
                candle_core::bail!("adamw-step: a gradient is not on the CPU");
            };
            grads.push((f32_slice(cpu, layout, self.name())?, *c));
        }
        let mut state = self.state.lock().map_err(|_| candle_core::Error::Msg("adamw-step: state poisoned".into()))?;
        let Moments { m, v, avg } = &mut *state;
        let n = w.len();
        if grads.iter().any(|(g, _)| g.len() != n) || m.len() != n || v.len() != n {
            candle_core::bail!("adamw-step: {n} weights, {} moments, gradients of another size", m.len());
        }
        let (k, d) = (self.k, self.avg_decay);
        // Memory-bound: both cores' caches pay when the variable is large.
        let chunk = if n >= 2 * UPDATE_CHUNK && rayon::current_num_threads() > 1 { UPDATE_CHUNK } else { n.max(1) };
        let mut avg_chunks: Vec<Option<&mut [f32]>> = Vec::new();
        if avg.len() == n {
            avg_chunks.extend(avg.chunks_mut(chunk).map(Some));
        }
        avg_chunks.resize_with(n.div_ceil(chunk), || None);
        w.par_chunks_mut(chunk)
            .zip(m.par_chunks_mut(chunk))
            .zip(v.par_chunks_mut(chunk))
            .zip(avg_chunks.into_par_iter())
            .enumerate()
            .for_each(|(i, (((w, m), v), avg))| {
                let r = i * chunk..i * chunk + w.len();
                let parts: Vec<(&[f32], f32)> = grads.iter().map(|(g, c)| (&g[r.clone()], *c)).collect();
                update(w, m, v, &parts, k);
                if let Some(avg) = avg {
                    avg.iter_mut().zip(w.iter()).for_each(|(a, &w)| *a = d * *a + (1.0 - d) * w);
                }
            });
        Ok(())
    }
}

/// Weights per block of [`update`].
const LANES: usize = 16;

/// The update of one block of weights, on arrays of a fixed length.
#[inline(always)]
fn block<const N: usize>(w: &mut [f32; N], m: &mut [f32; N], v: &mut [f32; N], g: &[f32; N], k: Coeffs) {
    for i in 0..N {
        let g = if g[i].abs() < TINY_GRAD { 0.0 } else { g[i] };
        let (m1, v1) = (k.b1 * m[i] + (1.0 - k.b1) * g, k.b2 * v[i] + (1.0 - k.b2) * g * g);
        m[i] = if m1.abs() < TINY_MOMENT { 0.0 } else { m1 };
        v[i] = if v1 < TINY_MOMENT { 0.0 } else { v1 };
    }
    let mut d = [0f32; N];
    for i in 0..N {
        d[i] = (v[i] * k.c2).sqrt() + k.eps;
    }
    for i in 0..N {
        w[i] = w[i] * k.decay - k.lr * (m[i] * k.c1) / d[i];
    }
}

/// The gradient of weights `at..at + N`: the weighted sum of the parts
/// (one part of weight 1 gives its gradient exactly).
#[inline(always)]
fn summed<const N: usize>(parts: &[(&[f32], f32)], at: usize) -> [f32; N] {
    let mut g = [0f32; N];
    for (p, c) in parts {
        let p = &p[at..at + N];
        for i in 0..N {
            g[i] += c * p[i];
        }
    }
    g
}

/// The update of every weight from the weighted sum of `parts` (each as
/// long as `w`), [`LANES`] at a time through fixed-length arrays the
/// compiler turns into vector instructions, where the plain zipped loop
/// stayed scalar (a square root and a division per weight, waited on one
/// by one: 31-41 % of MLP training), then the remainder.
fn update(w: &mut [f32], m: &mut [f32], v: &mut [f32], parts: &[(&[f32], f32)], k: Coeffs) {
    let n = w.len().min(m.len()).min(v.len());
    let body = n - n % LANES;
    let blocks = w[..body]
        .chunks_exact_mut(LANES)
        .zip(m[..body].chunks_exact_mut(LANES))
        .zip(v[..body].chunks_exact_mut(LANES));
    for (i, ((w, m), v)) in blocks.enumerate() {
        let (Ok(w), Ok(m), Ok(v)) = (
            <&mut [f32; LANES]>::try_from(w),
            <&mut [f32; LANES]>::try_from(m),
            <&mut [f32; LANES]>::try_from(v),
        ) else {
            unreachable!("chunks_exact_mut gives blocks of LANES")
        };
        block(w, m, v, &summed(parts, i * LANES), k);
    }
    for i in body..n {
        let (mut wi, mut mi, mut vi) = ([w[i]], [m[i]], [v[i]]);
        block(&mut wi, &mut mi, &mut vi, &summed(parts, i), k);
        (w[i], m[i], v[i]) = (wi[0], mi[0], vi[0]);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::Device;
    use candle_nn::{AdamW, Optimizer};

    /// A weight whose gradient stops (an input that is always zero from
    /// then on) has its moments decay to zero without passing through
    /// subnormal values, and a tiny gradient is taken as zero; the block
    /// path and the remainder path alike (17 weights: one block of 16, one
    /// left over).
    #[test]
    fn moments_never_go_subnormal() -> Result<()> {
        let dev = Device::Cpu;
        let w = Var::new(&[0.5f32; 17], &dev)?;
        let mut opt = FusedAdamW::new(vec![w.clone()], ParamsAdamW::default())?;
        for step in 0..1200 {
            let mut x = [0f32; 17];
            if step == 0 {
                x = [1e-3; 17];
                x[1] = 1e-20;
            }
            let loss = w.as_tensor().mul(&Tensor::new(&x, &dev)?)?.sum_all()?;
            opt.backward_step(&loss)?;
            let s = &opt.states[0];
            for v in s.m.iter().chain(&s.v) {
                assert!(*v == 0.0 || v.is_normal(), "step {step}: moment {v:e} is subnormal");
            }
            assert_eq!(s.m[1], 0.0, "a gradient of 1e-20 is taken as zero");
        }
        assert!(opt.states[0].m.iter().all(|&m| m == 0.0), "the first moments have decayed to zero");
        Ok(())
    }

    /// A variable large enough to be updated in chunks over two threads
    /// (with its moving average) ends bit for bit where one thread takes
    /// it, and two weighted gradient stores step as their weighted sum.
    #[test]
    fn chunked_and_weighted_updates_match() -> Result<()> {
        let dev = Device::Cpu;
        let n = 2 * UPDATE_CHUNK + 1001;
        let init: Vec<f32> = (0..n).map(|i| ((i * 7919) % 1000) as f32 / 500.0 - 1.0).collect();
        let target = Tensor::from_vec((0..n).map(|i| (i % 13) as f32 / 6.0 - 1.0).collect::<Vec<_>>(), n, &dev)?;
        let run = |threads: usize| -> Result<(Vec<f32>, Vec<f32>)> {
            let pool = rayon::ThreadPoolBuilder::new()
                .num_threads(threads)
                .build()
                .map_err(|e| candle_core::Error::Msg(e.to_string()))?;
            pool.install(|| {
                let w = Var::new(init.as_slice(), &dev)?;
                let mut opt = FusedAdamW::new(vec![w.clone()], ParamsAdamW { lr: 0.01, ..Default::default() })?;
                opt.track_average(0.9)?;
                for _ in 0..5 {
                    opt.backward_step(&(w.as_tensor() - &target)?.sqr()?.sum_all()?)?;
                }
                let raw = w.as_tensor().to_vec1::<f32>()?;
                opt.load_average()?;
                Ok((raw, w.as_tensor().to_vec1::<f32>()?))
            })
        };
        let (one, two) = (run(1)?, run(2)?);
        assert_eq!(one, two, "chunks over two threads change nothing");
        assert_ne!(one.0, init, "the steps moved the weights");
        assert_ne!(one.0, one.1, "the average is not the raw weights");

        // Half of each of two gradients is the gradient of half their sum.
        let a = Var::new(&[0.5f32, -1.0, 2.0], &dev)?;
        let b = Var::new(&[0.5f32, -1.0, 2.0], &dev)?;
        let (t1, t2) = (Tensor::new(&[1.0f32, 2.0, 3.0], &dev)?, Tensor::new(&[-3.0f32, 0.5, 1.0], &dev)?);
        let mut split = FusedAdamW::new(vec![a.clone()], ParamsAdamW::default())?;
        let mut whole = FusedAdamW::new(vec![b.clone()], ParamsAdamW::default())?;
        for _ in 0..3 {
            let g1 = (a.as_tensor() * &t1)?.sum_all()?.backward()?;
            let g2 = (a.as_tensor() * &t2)?.sqr()?.sum_all()?.backward()?;
            split.step_parts(&[(&g1, 0.5), (&g2, 0.5)])?;
            let loss = (((b.as_tensor() * &t1)?.sum_all()? + (b.as_tensor() * &t2)?.sqr()?.sum_all()?)? * 0.5)?;
            whole.backward_step(&loss)?;
        }
        for (x, y) in a.as_tensor().to_vec1::<f32>()?.iter().zip(&b.as_tensor().to_vec1::<f32>()?) {
            assert!((x - y).abs() < 1e-6, "{x} vs {y}");
        }
        Ok(())
    }

    /// Same trajectory as candle-nn's AdamW on a small quadratic.
    #[test]
    fn matches_candle_adamw() -> Result<()> {
        let dev = Device::Cpu;
        let init = [0.5f32, -1.0, 2.0, 0.0];
        let target = Tensor::new(&[1.0f32, 2.0, -3.0, 0.5], &dev)?;
        let params = ParamsAdamW {
            lr: 0.05,
            weight_decay: 0.1,
            ..Default::default()
        };
        let a = Var::new(&init, &dev)?;
        let b = Var::new(&init, &dev)?;
        let mut ours = FusedAdamW::new(vec![a.clone()], params.clone())?;
        let mut theirs = AdamW::new(vec![b.clone()], params)?;
        for _ in 0..50 {
            ours.backward_step(&(a.as_tensor() - &target)?.sqr()?.sum_all()?)?;
            theirs.backward_step(&(b.as_tensor() - &target)?.sqr()?.sum_all()?)?;
        }
        let (x, y) = (a.as_tensor().to_vec1::<f32>()?, b.as_tensor().to_vec1::<f32>()?);
        for (x, y) in x.iter().zip(&y) {
            assert!((x - y).abs() < 1e-4, "{x} vs {y}");
        }
        Ok(())
    }

    /// The moving average follows its recurrence, and loading it sets the
    /// variable without disturbing the raw weights of later steps.
    #[test]
    fn moving_average_of_the_weights() -> Result<()> {
        let dev = Device::Cpu;
        let a = Var::new(&[4.0f32], &dev)?;
        let mut opt = FusedAdamW::new(
            vec![a.clone()],
            ParamsAdamW {
                lr: 0.1,
                weight_decay: 0.0,
                ..Default::default()
            },
        )?;
        opt.track_average(0.5)?;
        let mut want = 4.0f32;
        for _ in 0..5 {
            opt.backward_step(&a.as_tensor().sqr()?.sum_all()?)?;
            want = 0.5 * want + 0.5 * a.as_tensor().to_vec1::<f32>()?[0];
        }
        let raw = a.as_tensor().to_vec1::<f32>()?[0];
        assert!(raw < 3.6, "steps moved the weight: {raw}");
        opt.load_average()?;
        let got = a.as_tensor().to_vec1::<f32>()?[0];
        assert!(
            (got - want).abs() < 1e-6 && (got - raw).abs() > 0.05,
            "average {got}, want {want}, raw {raw}"
        );
        opt.set_learning_rate(0.0);
        opt.backward_step(&a.as_tensor().sqr()?.sum_all()?)?;
        assert!(
            (a.as_tensor().to_vec1::<f32>()?[0] - raw).abs() < 1e-6,
            "steps go on from the raw weights"
        );
        Ok(())
    }
}
