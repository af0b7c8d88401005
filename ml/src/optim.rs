//! A fused AdamW optimiser for candle's CPU device.
//!
//! candle-nn's `AdamW` runs about fifteen separate tensor operations per
//! variable and step, each allocating a fresh tensor; on a small CPU that
//! cost more than the forward and backward passes together. This one keeps
//! the weights and both moment estimates as plain `Vec<f32>`, updates them in
//! one loop per variable, and copies the result back into the variable. The
//! arithmetic is the same as candle's and PyTorch's AdamW (decoupled weight
//! decay, bias-corrected moments).

use candle_core::backprop::GradStore;
use candle_core::{DType, Result, Tensor, Var};
pub use candle_nn::ParamsAdamW;

struct State {
    var: Var,
    theta: Vec<f32>,
    m: Vec<f32>,
    v: Vec<f32>,
    /// Exponential moving average of `theta` (empty when not tracked).
    avg: Vec<f32>,
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
            let theta = var.as_tensor().flatten_all()?.to_vec1::<f32>()?;
            let n = theta.len();
            states.push(State {
                var,
                theta,
                m: vec![0.0; n],
                v: vec![0.0; n],
                avg: Vec::new(),
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
    pub fn track_average(&mut self, decay: f32) {
        self.avg_decay = decay;
        for s in &mut self.states {
            s.avg.clone_from(&s.theta);
        }
    }

    /// Sets every variable to its moving average (a no-op when none is
    /// tracked). Further steps continue from the raw weights.
    pub fn load_average(&self) -> Result<()> {
        for s in self.states.iter().filter(|s| !s.avg.is_empty()) {
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
        self.step = self.step.saturating_add(1);
        let p = &self.params;
        let (lr, b1, b2, eps) = (p.lr as f32, p.beta1 as f32, p.beta2 as f32, p.eps as f32);
        let decay = 1.0 - (p.lr * p.weight_decay) as f32;
        let c1 = 1.0 / (1.0 - p.beta1.powi(self.step)) as f32;
        let c2 = 1.0 / (1.0 - p.beta2.powi(self.step)) as f32;
        for s in &mut self.states {
            let Some(g) = grads.get(s.var.as_tensor()) else {
                continue;
            };
            let g = g.flatten_all()?.to_dtype(DType::F32)?.to_vec1::<f32>()?;
            if g.len() != s.theta.len() {
                candle_core::bail!("gradient has {} elements for a variable of {}", g.len(), s.theta.len());
            }
            let k = Coeffs { lr, b1, b2, eps, decay, c1, c2 };
            update(&mut s.theta, &mut s.m, &mut s.v, &g, k);
            if !s.avg.is_empty() {
                let d = self.avg_decay;
                s.avg
                    .iter_mut()
                    .zip(&s.theta)
                    .for_each(|(a, &w)| *a = d * *a + (1.0 - d) * w);
            }
            let t = Tensor::from_slice(&s.theta, s.var.shape(), s.var.device())?;
            s.var.set(&t)?;
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

/// The update of every weight, [`LANES`] at a time through fixed-length
/// arrays the compiler turns into vector instructions, where the plain
/// zipped loop stayed scalar (a square root and a division per weight,
/// waited on one by one: 31-41 % of MLP training), then the remainder.
fn update(w: &mut [f32], m: &mut [f32], v: &mut [f32], g: &[f32], k: Coeffs) {
    let n = g.len().min(w.len()).min(m.len()).min(v.len());
    let body = n - n % LANES;
    for i in (0..body).step_by(LANES) {
        let r = i..i + LANES;
        let (Ok(w), Ok(m), Ok(v), Ok(g)) = (
            <&mut [f32; LANES]>::try_from(&mut w[r.clone()]),
            <&mut [f32; LANES]>::try_from(&mut m[r.clone()]),
            <&mut [f32; LANES]>::try_from(&mut v[r.clone()]),
            <&[f32; LANES]>::try_from(&g[r]),
        ) else {
            unreachable!("blocks of LANES")
        };
        block(w, m, v, g, k);
    }
    for i in body..n {
        let (mut wi, mut mi, mut vi) = ([w[i]], [m[i]], [v[i]]);
        block(&mut wi, &mut mi, &mut vi, &[g[i]], k);
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
        opt.track_average(0.5);
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
