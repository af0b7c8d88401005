//! Training with hard labels beyond [`crate::train::train`], for
//! experiments: adversarial training (each minibatch also attacked against
//! the current weights, Goodfellow et al.'s mixed loss
//! `0.5 * CE(x) + 0.5 * CE(x_adv)`) and fine-tuning a trained model (its
//! weights copied, training continued on new data, as in BadNets' transfer
//! learning).

use candle_core::{DType, Device, Module, Tensor};
use candle_nn::{ParamsAdamW, VarBuilder, VarMap};
use rand::seq::SliceRandom;
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;

use crate::attack::{perturb, Attack};
use crate::data::Dataset;
use crate::model::{Classifier, ModelKind};
use crate::optim::FusedAdamW;
use crate::train::{batch_tensor, EpochReport, TrainConfig, TrainError, Trained};

impl From<crate::attack::AttackError> for TrainError {
    fn from(e: crate::attack::AttackError) -> Self {
        match e {
            crate::attack::AttackError::Candle(c) => TrainError::Candle(c),
            crate::attack::AttackError::Invalid(s) => TrainError::Invalid(s),
        }
    }
}

/// A copy of `src` with weights of its own (training it leaves `src` alone).
pub fn copy_trained(src: &Trained) -> Result<Trained, TrainError> {
    let varmap = VarMap::new();
    let vb = VarBuilder::from_varmap(&varmap, DType::F32, &Device::Cpu);
    let model = Classifier::new(src.kind, src.rows, src.cols, src.classes, vb)?;
    {
        let from = src.varmap.data().lock().map_err(|_| TrainError::Invalid("varmap lock poisoned".into()))?;
        let to = varmap.data().lock().map_err(|_| TrainError::Invalid("varmap lock poisoned".into()))?;
        for (name, var) in to.iter() {
            let v = from.get(name).ok_or_else(|| TrainError::Invalid(format!("the source model has no {name}")))?;
            var.set(&v.as_tensor().copy()?)?;
        }
    }
    Ok(Trained { model, varmap, kind: src.kind, rows: src.rows, cols: src.cols, classes: src.classes })
}

fn check(data: &Dataset, classes: usize, cfg: &TrainConfig) -> Result<(), TrainError> {
    if data.is_empty() || data.labels.len() != data.images.len() {
        return Err(TrainError::Invalid(format!("{} images but {} labels", data.images.len(), data.labels.len())));
    }
    if let Some(&bad) = data.labels.iter().find(|&&l| usize::from(l) >= classes) {
        return Err(TrainError::Invalid(format!("label {bad} is not below the class count {classes}")));
    }
    if cfg.batch_size == 0 || cfg.epochs == 0 {
        return Err(TrainError::Invalid("batch size and epochs must be at least 1".into()));
    }
    if !(cfg.learning_rate.is_finite() && cfg.learning_rate > 0.0) {
        return Err(TrainError::Invalid("learning rate must be positive".into()));
    }
    Ok(())
}

/// Minibatch AdamW on hard labels from the model's current weights; with an
/// `attack`, the loss is `0.5 * CE(x) + 0.5 * CE(attack(x))`.
fn run(trained: &Trained, data: &Dataset, cfg: &TrainConfig, attack: Option<Attack>, progress: &mut dyn FnMut(EpochReport)) -> Result<(), TrainError> {
    check(data, trained.classes, cfg)?;
    if let Some(a) = attack {
        a.check()?;
    }
    let device = Device::Cpu;
    let params = ParamsAdamW { lr: cfg.learning_rate, weight_decay: cfg.weight_decay, ..Default::default() };
    let mut opt = FusedAdamW::new(trained.varmap.all_vars(), params)?;
    let mut rng = ChaCha8Rng::seed_from_u64(cfg.seed ^ 0x5eed_5eed_5eed_5eed);
    let mut attack_rng = ChaCha8Rng::seed_from_u64(cfg.seed ^ 0xad5e_7a11_ad5e_7a11);
    let mut order: Vec<usize> = (0..data.len()).collect();
    for epoch in 1..=cfg.epochs {
        let start = std::time::Instant::now();
        order.shuffle(&mut rng);
        let (mut loss_sum, mut correct) = (0f64, 0usize);
        for idx in order.chunks(cfg.batch_size) {
            let x = batch_tensor(&data.images, idx, &device)?;
            let labels: Vec<u8> = idx.iter().map(|&i| data.labels[i]).collect();
            let y32: Vec<u32> = labels.iter().map(|&l| u32::from(l)).collect();
            let logits = trained.model.forward(&x)?;
            let mut loss = crate::train::cross_entropy(&logits, &y32)?;
            let y = Tensor::from_vec(y32.clone(), idx.len(), &device)?;
            if let Some(a) = attack {
                let adv = perturb(&trained.model, &x, &labels, a, &mut attack_rng)?.detach();
                let adv_loss = crate::train::cross_entropy(&trained.model.forward(&adv)?, &y32)?;
                loss = ((loss + adv_loss)? * 0.5)?;
            }
            let (l, c) = crate::train::step(&mut opt, &loss, &logits, &y, idx.len())?;
            loss_sum += l;
            correct += c;
        }
        crate::train::finish_epoch(epoch, loss_sum, correct, data.len(), start, progress)?;
    }
    Ok(())
}

/// Trains a fresh `kind` model on `data`, every minibatch also attacked by
/// `attack` against the current weights (None: plain training, the same
/// as [`crate::train::train`] up to the shuffling stream).
pub fn train_adversarial(
    kind: ModelKind,
    data: &Dataset,
    classes: usize,
    cfg: &TrainConfig,
    attack: Option<Attack>,
    progress: &mut dyn FnMut(EpochReport),
) -> Result<Trained, TrainError> {
    if data.is_empty() {
        return Err(TrainError::Invalid("no training items".into()));
    }
    let (model, varmap) = Classifier::new_seeded(kind, data.images.rows, data.images.cols, classes, cfg.seed, &Device::Cpu)?;
    let trained = Trained { model, varmap, kind, rows: data.images.rows, cols: data.images.cols, classes };
    run(&trained, data, cfg, attack, progress)?;
    Ok(trained)
}

/// A copy of `src` trained further on `data` (all layers, hard labels).
pub fn fine_tune(src: &Trained, data: &Dataset, cfg: &TrainConfig, progress: &mut dyn FnMut(EpochReport)) -> Result<Trained, TrainError> {
    if (data.images.rows, data.images.cols) != (src.rows, src.cols) {
        return Err(TrainError::Invalid(format!("images are {}x{} but the model takes {}x{}", data.images.rows, data.images.cols, src.rows, src.cols)));
    }
    let tuned = copy_trained(src)?;
    run(&tuned, data, cfg, None, progress)?;
    Ok(tuned)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::train::toy::halves;
    use crate::train::{accuracy, predict, predict_proba, train};

    #[test]
    fn adversarial_training_learns_and_fine_tuning_leaves_the_source() -> Result<(), TrainError> {
        let ds = halves(200);
        let cfg = TrainConfig { epochs: 3, batch_size: 16, ..Default::default() };
        let adv = train_adversarial(ModelKind::Mlp, &ds, 2, &cfg, Some(Attack::RandFgsm { eps: 0.2, alpha: 0.1 }), &mut |_| {})?;
        assert!(accuracy(&predict(&adv.model, &ds.images, 64)?, &ds.labels) > 0.95);
        let src = train(ModelKind::Mlp, &ds, 2, &cfg, &mut |_| {})?;
        let before = predict_proba(&src.model, &ds.images, 64, 1.0)?;
        let copy = copy_trained(&src)?;
        assert_eq!(predict_proba(&copy.model, &ds.images, 64, 1.0)?, before, "a copy computes the same");
        // Fine-tune on flipped labels: the copy moves, the source does not.
        let flipped = Dataset { images: ds.images.clone(), labels: ds.labels.iter().map(|l| 1 - l).collect() };
        let tuned = fine_tune(&src, &flipped, &cfg, &mut |_| {})?;
        assert_eq!(predict_proba(&src.model, &ds.images, 64, 1.0)?, before);
        assert!(accuracy(&predict(&tuned.model, &ds.images, 64)?, &flipped.labels) > 0.9);
        // Bad input.
        let bad = TrainConfig { epochs: 0, ..cfg.clone() };
        assert!(fine_tune(&src, &ds, &bad, &mut |_| {}).is_err());
        assert!(train_adversarial(ModelKind::Mlp, &ds, 2, &cfg, Some(Attack::Fgsm { eps: 2.0 }), &mut |_| {}).is_err());
        Ok(())
    }
}
