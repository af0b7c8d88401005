//! Adversarial examples by input gradients (experiments only): the fast
//! gradient sign method (Goodfellow et al., arXiv 1412.6572), its variant
//! with a random first step, R+FGSM (Tramer et al., arXiv 1705.07204), an
//! iterative FGSM of a few steps, and the Jacobian-based dataset
//! augmentation that trains a black-box attack's substitute (Papernot et
//! al., arXiv 1602.02697).
//!
//! Inputs are `f32 [n, 1, rows, cols]` in `[0, 1]`; every attack clips its
//! result to `[0, 1]`. Gradients come from candle's autograd with the input
//! made a [`Var`]; the project's own convolution ([`crate::conv`]) has a
//! backward pass for its input, so the CNN is attacked the same way as the MLP.

use candle_core::{Device, Module, Tensor, Var, D};
use rand::Rng;
use rand_distr::{Distribution, StandardNormal};

/// Errors of an attack.
#[derive(Debug, thiserror::Error)]
pub enum AttackError {
    /// A candle operation failed.
    #[error("tensor error: {0}")]
    Candle(#[from] candle_core::Error),
    /// A parameter is out of range.
    #[error("invalid attack: {0}")]
    Invalid(String),
}

/// An attack within an L-infinity ball of radius `eps` around each input.
#[derive(Clone, Copy, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "kebab-case", tag = "kind")]
pub enum Attack {
    /// One step of `eps * sign(gradient)`.
    Fgsm {
        /// Radius.
        eps: f64,
    },
    /// A random step `alpha * sign(N(0, I))`, then FGSM of `eps - alpha`
    /// from there (Tramer et al.'s R+FGSM; they use `alpha = eps / 2`).
    RandFgsm {
        /// Radius.
        eps: f64,
        /// Size of the random step, in `[0, eps]`.
        alpha: f64,
    },
    /// `steps` FGSM steps of `eps / steps`, each projected back into the
    /// ball (Kurakin et al.'s iterative FGSM; 2 steps = the two-step attack).
    Iterative {
        /// Radius.
        eps: f64,
        /// Number of steps (at least 1).
        steps: usize,
    },
}

/// Checks that `eps` is a radius for inputs in `[0, 1]`.
pub fn check_epsilon(eps: f64) -> Result<(), AttackError> {
    if !(eps.is_finite() && (0.0..=1.0).contains(&eps)) {
        return Err(AttackError::Invalid(format!(
            "epsilon must be in [0, 1] (inputs are scaled to [0, 1]), got {eps}"
        )));
    }
    Ok(())
}

impl Attack {
    /// Validates the parameters.
    pub fn check(&self) -> Result<(), AttackError> {
        match *self {
            Attack::Fgsm { eps } => check_epsilon(eps),
            Attack::RandFgsm { eps, alpha } => {
                check_epsilon(eps)?;
                if !(alpha.is_finite() && (0.0..=eps).contains(&alpha)) {
                    return Err(AttackError::Invalid(format!(
                        "R+FGSM's random step must be in [0, eps = {eps}], got {alpha}"
                    )));
                }
                Ok(())
            }
            Attack::Iterative { eps, steps } => {
                check_epsilon(eps)?;
                if steps == 0 {
                    return Err(AttackError::Invalid("an iterative attack needs at least one step".into()));
                }
                Ok(())
            }
        }
    }

    /// The radius.
    pub fn eps(&self) -> f64 {
        match *self {
            Attack::Fgsm { eps } | Attack::RandFgsm { eps, .. } | Attack::Iterative { eps, .. } => eps,
        }
    }
}

fn sign(v: f32) -> f32 {
    if v > 0.0 {
        1.0
    } else if v < 0.0 {
        -1.0
    } else {
        0.0
    }
}

/// The gradient, with respect to the input, of the summed cross-entropy of
/// `softmax(model(x) / temperature)` against `labels` (a `u32 [n]` tensor).
///
/// The loss is candle's `cross_entropy`, computed from the logits in `f32`
/// as `log_softmax` with the largest logit subtracted first, not as the log
/// of a probability. Its gradient with respect to logit j of an item is
/// `exp(z_j - z_max) / S - [j = y]` (S the sum of the exponentials): for a
/// correctly classified item it is `exp(-gap_j)` for every other class, tiny
/// but with its sign intact, until the gap passes about 87 (where `f32`
/// leaves normal numbers) or 104 (where it leaves subnormal ones) and the
/// exponential underflows to exactly zero. So the gradient saturates as in
/// the defensive-distillation papers only when the logit gaps pass ~100;
/// a loss taken as `-log(clip(p))` on probabilities (Keras' clip at 1e-7)
/// would already vanish at a gap of ~16.
pub fn input_gradient<M: Module>(model: &M, x: &Tensor, labels: &Tensor, temperature: f64) -> Result<Tensor, AttackError> {
    let n = x.dim(0)?;
    let var = Var::from_tensor(&x.detach().copy()?)?;
    let logits = model.forward(var.as_tensor())?;
    let logits = if temperature == 1.0 { logits } else { (logits / temperature)? };
    // Summed, not averaged, so that the gradient of one item does not
    // depend on the batch size.
    let loss = (candle_nn::loss::cross_entropy(&logits, labels)? * n as f64)?;
    let grads = loss.backward()?;
    grads
        .get(var.as_tensor())
        .cloned()
        .ok_or_else(|| AttackError::Invalid("the model does not depend on its input".into()))
}

/// A model whose logits are divided by a temperature: attacking
/// `AtTemperature { model, temperature: T }` follows the gradient of
/// `softmax(logits / T)` instead of the deployed `softmax(logits)`. Against
/// a defensively distilled model (trained at T, deployed at T = 1) this is
/// Carlini and Wagner's answer to its vanishing gradients (arXiv
/// 1607.04311): dividing the logits by T undoes the saturation, and the
/// sign of the gradient is there to follow again.
pub struct AtTemperature<'a, M> {
    /// The attacked model.
    pub model: &'a M,
    /// The temperature its logits are divided by (positive).
    pub temperature: f64,
}

impl<M: Module> Module for AtTemperature<'_, M> {
    fn forward(&self, xs: &Tensor) -> candle_core::Result<Tensor> {
        self.model.forward(xs)? / self.temperature
    }
}

/// `clip(x + step * sign(grad), [x0 - eps, x0 + eps] ∩ [0, 1])`.
fn signed_step(x: &Tensor, grad: &Tensor, step: f64, x0: &Tensor, eps: f64) -> Result<Tensor, AttackError> {
    let xs = x.flatten_all()?.to_vec1::<f32>()?;
    let gs = grad.flatten_all()?.to_vec1::<f32>()?;
    let x0s = x0.flatten_all()?.to_vec1::<f32>()?;
    let (step, eps) = (step as f32, eps as f32);
    let out: Vec<f32> = xs
        .iter()
        .zip(&gs)
        .zip(&x0s)
        .map(|((&v, &g), &o)| (v + step * sign(g)).clamp(o - eps, o + eps).clamp(0.0, 1.0))
        .collect();
    Ok(Tensor::from_vec(out, x.shape(), x.device())?)
}

/// Adversarial copies of `x` (one batch) against `model` for the true
/// `labels`; `rng` draws R+FGSM's random step.
pub fn perturb<M: Module, R: Rng>(
    model: &M,
    x: &Tensor,
    labels: &[u8],
    attack: Attack,
    rng: &mut R,
) -> Result<Tensor, AttackError> {
    attack.check()?;
    if x.dim(0)? != labels.len() {
        return Err(AttackError::Invalid(format!("{} inputs but {} labels", x.dim(0)?, labels.len())));
    }
    let y = Tensor::from_vec(labels.iter().map(|&l| u32::from(l)).collect::<Vec<_>>(), labels.len(), x.device())?;
    let x = x.detach();
    match attack {
        Attack::Fgsm { eps } => {
            let g = input_gradient(model, &x, &y, 1.0)?;
            signed_step(&x, &g, eps, &x, eps)
        }
        Attack::RandFgsm { eps, alpha } => {
            let noise: Vec<f32> = (0..x.elem_count())
                .map(|_| {
                    let z: f32 = StandardNormal.sample(rng);
                    sign(z)
                })
                .collect();
            let noise = Tensor::from_vec(noise, x.shape(), x.device())?;
            let start = signed_step(&x, &noise, alpha, &x, eps)?;
            let g = input_gradient(model, &start, &y, 1.0)?;
            signed_step(&start, &g, eps - alpha, &x, eps)
        }
        Attack::Iterative { eps, steps } => {
            let step = eps / steps as f64;
            let mut cur = x.clone();
            for _ in 0..steps {
                let g = input_gradient(model, &cur, &y, 1.0)?;
                cur = signed_step(&cur, &g, step, &x, eps)?;
            }
            Ok(cur)
        }
    }
}

/// [`perturb`] over all of `x`, `batch` items at a time (the CNN's im2col
/// needs bounded batches).
pub fn perturb_all<M: Module, R: Rng>(
    model: &M,
    x: &Tensor,
    labels: &[u8],
    attack: Attack,
    batch: usize,
    rng: &mut R,
) -> Result<Tensor, AttackError> {
    let n = x.dim(0)?;
    let batch = batch.max(1);
    let mut parts = Vec::with_capacity(n.div_ceil(batch));
    let mut start = 0;
    while start < n {
        let len = batch.min(n - start);
        parts.push(perturb(model, &x.narrow(0, start, len)?, &labels[start..start + len], attack, rng)?);
        start += len;
    }
    if parts.is_empty() {
        return Ok(x.clone());
    }
    Ok(Tensor::cat(&parts, 0)?)
}

/// One round of Jacobian-based dataset augmentation: for each item `x` with
/// the oracle's label `y`, `clip(x + lambda * sign(d softmax(substitute(x))_y / dx))`.
/// The caller appends the result to the substitute's training set and asks
/// the oracle for its labels.
pub fn jacobian_augment<M: Module>(substitute: &M, x: &Tensor, oracle_labels: &[u8], lambda: f64, batch: usize) -> Result<Tensor, AttackError> {
    if !(lambda.is_finite() && lambda > 0.0 && lambda <= 1.0) {
        return Err(AttackError::Invalid(format!("the augmentation step must be in (0, 1], got {lambda}")));
    }
    let n = x.dim(0)?;
    if n != oracle_labels.len() {
        return Err(AttackError::Invalid(format!("{n} inputs but {} labels", oracle_labels.len())));
    }
    let mut parts = Vec::new();
    let mut start = 0;
    while start < n {
        let len = batch.max(1).min(n - start);
        let xb = x.narrow(0, start, len)?.detach().copy()?;
        let var = Var::from_tensor(&xb)?;
        let probs = candle_nn::ops::softmax(&substitute.forward(var.as_tensor())?, D::Minus1)?;
        let classes = probs.dim(1)?;
        let mut mask = vec![0f32; len * classes];
        for (i, &l) in oracle_labels[start..start + len].iter().enumerate() {
            mask[i * classes + usize::from(l)] = 1.0;
        }
        let mask = Tensor::from_vec(mask, (len, classes), &Device::Cpu)?;
        let grads = (probs * mask)?.sum_all()?.backward()?;
        let g = grads
            .get(var.as_tensor())
            .cloned()
            .ok_or_else(|| AttackError::Invalid("the substitute does not depend on its input".into()))?;
        parts.push(signed_step(&xb, &g, lambda, &xb, lambda)?);
        start += len;
    }
    if parts.is_empty() {
        return Ok(x.clone());
    }
    Ok(Tensor::cat(&parts, 0)?)
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::DType;
    use candle_nn::Linear;
    use rand::SeedableRng;

    /// A 2-class linear model on 4 inputs: logit_1 - logit_0 = x0 - x1 + 0*x2 + 2*x3.
    fn linear() -> candle_core::Result<Linear> {
        let w = Tensor::new(&[[0f32, 0.0, 0.0, 0.0], [1.0, -1.0, 0.0, 2.0]], &Device::Cpu)?;
        Ok(Linear::new(w, None))
    }

    fn close(t: &Tensor, want: &[f32]) -> Result<(), AttackError> {
        let v = t.flatten_all()?.to_vec1::<f32>()?;
        assert_eq!(v.len(), want.len());
        assert!(v.iter().zip(want).all(|(a, b)| (a - b).abs() < 1e-6), "{v:?} vs {want:?}");
        Ok(())
    }

    #[test]
    fn fgsm_steps_along_the_sign_of_the_loss_gradient() -> Result<(), AttackError> {
        let m = linear()?;
        let x = Tensor::new(&[[0.5f32, 0.5, 0.5, 0.5]], &Device::Cpu)?;
        // True class 1: the loss falls as logit_1 - logit_0 grows, so FGSM
        // moves against the weights: x0 down, x1 up, x2 untouched (zero
        // gradient), x3 down.
        let adv = perturb(&m, &x, &[1], Attack::Fgsm { eps: 0.1 }, &mut rand_chacha::ChaCha8Rng::seed_from_u64(0))?;
        close(&adv, &[0.4, 0.6, 0.5, 0.4])?;
        // True class 0: the other way.
        let adv = perturb(&m, &x, &[0], Attack::Fgsm { eps: 0.1 }, &mut rand_chacha::ChaCha8Rng::seed_from_u64(0))?;
        close(&adv, &[0.6, 0.4, 0.5, 0.6])?;
        // Clipped to [0, 1].
        let edge = Tensor::new(&[[0.95f32, 0.02, 0.5, 1.0]], &Device::Cpu)?;
        let adv = perturb(&m, &edge, &[0], Attack::Fgsm { eps: 0.1 }, &mut rand_chacha::ChaCha8Rng::seed_from_u64(0))?;
        close(&adv, &[1.0, 0.0, 0.5, 1.0])?;
        Ok(())
    }

    #[test]
    fn the_gradient_keeps_its_sign_until_the_logit_gap_underflows() -> Result<(), AttackError> {
        // logit_1 - logit_0 = s * (x0 - x1 + 2 x3) = s at x = 0.5: the gap is s.
        let scaled = |s: f32| -> candle_core::Result<Linear> {
            Ok(Linear::new(Tensor::new(&[[0f32, 0.0, 0.0, 0.0], [s, -s, 0.0, 2.0 * s]], &Device::Cpu)?, None))
        };
        let x = Tensor::new(&[[0.5f32, 0.5, 0.5, 0.5]], &Device::Cpu)?;
        let y = Tensor::new(&[1u32], &Device::Cpu)?;
        let rng = &mut rand_chacha::ChaCha8Rng::seed_from_u64(0);
        let fgsm = Attack::Fgsm { eps: 0.1 };
        // A gap of 30: softmax(30) is 1.0 in f32, yet the log-softmax
        // gradient exp(-30) survives and FGSM still finds its direction.
        let m = scaled(30.0)?;
        let g = input_gradient(&m, &x, &y, 1.0)?.flatten_all()?.to_vec1::<f32>()?;
        assert!(g[0] < 0.0 && g[1] > 0.0 && g[3] < 0.0, "{g:?}");
        close(&perturb(&m, &x, &[1], fgsm, rng)?, &[0.4, 0.6, 0.5, 0.4])?;
        // A gap of 200: exp(-200) underflows, the gradient is exactly zero
        // and FGSM does not move (defensive distillation's masking).
        let m = scaled(200.0)?;
        let g = input_gradient(&m, &x, &y, 1.0)?.flatten_all()?.to_vec1::<f32>()?;
        assert!(g.iter().all(|&v| v == 0.0), "{g:?}");
        close(&perturb(&m, &x, &[1], fgsm, rng)?, &[0.5, 0.5, 0.5, 0.5])?;
        // Dividing the logits by T = 100 (gap 2) brings the direction back.
        let hot = AtTemperature { model: &m, temperature: 100.0 };
        close(&perturb(&hot, &x, &[1], fgsm, rng)?, &[0.4, 0.6, 0.5, 0.4])?;
        Ok(())
    }

    #[test]
    fn every_attack_stays_in_the_ball_and_the_box() -> Result<(), AttackError> {
        let m = linear()?;
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(1);
        let x = Tensor::rand(0f32, 1.0, (16, 4), &Device::Cpu)?;
        let labels: Vec<u8> = (0..16).map(|i| (i % 2) as u8).collect();
        for attack in [
            Attack::Fgsm { eps: 0.2 },
            Attack::RandFgsm { eps: 0.2, alpha: 0.1 },
            Attack::Iterative { eps: 0.2, steps: 2 },
        ] {
            let adv = perturb_all(&m, &x, &labels, attack, 5, &mut rng)?;
            let d = (&adv - &x)?.abs()?.flatten_all()?.max(0)?.to_scalar::<f32>()?;
            assert!(d <= 0.2 + 1e-6, "{attack:?} moved {d}");
            let lo = adv.flatten_all()?.min(0)?.to_scalar::<f32>()?;
            let hi = adv.flatten_all()?.max(0)?.to_scalar::<f32>()?;
            assert!((0.0..=1.0).contains(&lo) && hi <= 1.0, "{attack:?}");
            assert!(d > 0.05, "{attack:?} did move");
        }
        Ok(())
    }

    #[test]
    fn the_cnn_has_an_input_gradient() -> Result<(), AttackError> {
        let (m, _) = crate::model::Classifier::new_seeded(crate::ModelKind::Cnn, 8, 8, 3, 2, &Device::Cpu)?;
        let x = Tensor::rand(0f32, 1.0, (2, 1, 8, 8), &Device::Cpu)?;
        let y = Tensor::new(&[0u32, 2], &Device::Cpu)?;
        let g = input_gradient(&m, &x, &y, 1.0)?;
        assert_eq!(g.dims(), &[2, 1, 8, 8]);
        let nonzero = g.abs()?.gt(0.0)?.to_dtype(DType::F32)?.sum_all()?.to_scalar::<f32>()?;
        assert!(nonzero > 32.0, "most pixels get a gradient: {nonzero}");
        Ok(())
    }

    #[test]
    fn bad_parameters_are_errors() {
        for eps in [-0.1, 1.5, f64::NAN] {
            assert!(check_epsilon(eps).is_err(), "{eps}");
            assert!(Attack::Fgsm { eps }.check().is_err());
        }
        assert!(Attack::RandFgsm { eps: 0.1, alpha: 0.2 }.check().is_err());
        assert!(Attack::Iterative { eps: 0.1, steps: 0 }.check().is_err());
        let m = linear().expect("model");
        let x = Tensor::zeros((1, 4), DType::F32, &Device::Cpu).expect("x");
        assert!(jacobian_augment(&m, &x, &[0], 0.0, 4).is_err());
        assert!(jacobian_augment(&m, &x, &[0, 1], 0.1, 4).is_err());
    }

    #[test]
    fn jacobian_augmentation_raises_the_labels_probability() -> Result<(), AttackError> {
        let m = linear()?;
        let x = Tensor::new(&[[0.5f32, 0.5, 0.5, 0.5]], &Device::Cpu)?;
        let aug = jacobian_augment(&m, &x, &[1], 0.1, 8)?;
        close(&aug, &[0.6, 0.4, 0.5, 0.6])?;
        Ok(())
    }
}
