//! Deep k-NN credibility (Papernot and McDaniel, arXiv 1803.04765) as a
//! detector: ROC AUC of credibility for clean evaluation items against
//! FGSM items (the standard model), against triggered items (the backdoored
//! model, indexed on its own poisoned training items) and against
//! out-of-distribution items; the model's own top softmax probability is
//! scored the same way as a baseline (Hendrycks and Gimpel's detector).

use std::path::Path;

use candle_core::{Device, Tensor};
use pate_ml::attack::{perturb_all, Attack};
use pate_ml::calibration::roc_auc;
use pate_ml::data::{load_idx_dir, Dataset, Images};
use pate_ml::dknn::DeepKnn;
use pate_ml::train::{images_to_tensor, predict_proba_tensor, Trained};
use pate_ml::Classifier;
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Serialize};

use super::Ctx;
use crate::progress::say;

/// Bins of the credibility histograms.
pub const HIST_BINS: usize = 10;

/// Details of the section.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct DknnInfo {
    /// Neighbours per layer.
    pub k: usize,
    /// Layers (representations) used.
    pub layers: usize,
    /// Training items indexed.
    pub train_items: usize,
    /// Calibration items.
    pub calibration_items: usize,
    /// Evaluation items scored per population.
    pub items: usize,
    /// FGSM radius of the adversarial population.
    pub eps: f64,
    /// Where the out-of-distribution items come from.
    pub ood_source: String,
    /// Deep k-NN's accuracy on the clean items (standard model's index).
    pub dknn_accuracy: f64,
    /// AUC clean vs FGSM.
    pub auc_fgsm: f64,
    /// AUC clean vs triggered (backdoored model).
    pub auc_trigger: f64,
    /// AUC clean vs out of distribution.
    pub auc_ood: f64,
    /// Baseline AUCs of the top softmax probability: fgsm, trigger, ood.
    pub softmax_auc: [f64; 3],
    /// Mean credibility of clean, FGSM, clean (backdoored model), triggered and OOD items.
    pub mean_credibility: [f64; 5],
    /// Credibility histograms (shares per bin of width 0.1): clean, FGSM, triggered, OOD.
    pub histograms: Vec<(String, Vec<f64>)>,
}

/// Bilinear resize of one `r0 x c0` image to `r1 x c1` (pixel centres aligned).
pub fn resize(img: &[u8], (r0, c0): (usize, usize), (r1, c1): (usize, usize)) -> Vec<u8> {
    let at = |r: usize, c: usize| f64::from(img[r * c0 + c]);
    let coord = |d: usize, n0: usize, n1: usize| ((d as f64 + 0.5) * n0 as f64 / n1 as f64 - 0.5).clamp(0.0, (n0 - 1) as f64);
    let mut out = Vec::with_capacity(r1 * c1);
    for r in 0..r1 {
        let y = coord(r, r0, r1);
        let (ya, fy) = (y.floor() as usize, y - y.floor());
        let yb = (ya + 1).min(r0 - 1);
        for c in 0..c1 {
            let x = coord(c, c0, c1);
            let (xa, fx) = (x.floor() as usize, x - x.floor());
            let xb = (xa + 1).min(c0 - 1);
            let v = (1.0 - fy) * ((1.0 - fx) * at(ya, xa) + fx * at(ya, xb)) + fy * ((1.0 - fx) * at(yb, xa) + fx * at(yb, xb));
            out.push(v.round().clamp(0.0, 255.0) as u8);
        }
    }
    out
}

/// `n` out-of-distribution images of the evaluation items' shape, and where they come from.
fn ood_images(ctx: &Ctx, n: usize) -> anyhow::Result<(Images, String)> {
    let (rows, cols) = (ctx.eval.images.rows, ctx.eval.images.cols);
    match &ctx.args.ood {
        Some(dir) => {
            let set = load_idx_dir(dir)?;
            let (test, train) = (&set.test.images, &set.train.images);
            anyhow::ensure!(
                test.len() + train.len() >= n,
                "{}: {} test and {} training images, {n} out-of-distribution items needed (lower --dknn-eval)",
                dir.display(),
                test.len(),
                train.len()
            );
            let mut data = Vec::with_capacity(n * rows * cols);
            for i in 0..n {
                let img = if i < test.len() { test.item(i) } else { train.item(i - test.len()) };
                data.extend(resize(img, (test.rows, test.cols), (rows, cols)));
            }
            let src = format!(
                "{} images ({}x{}; test items first, then training items) resized bilinearly to {rows}x{cols}",
                display(dir),
                test.rows,
                test.cols
            );
            Ok((Images { data, rows, cols }, src))
        }
        None => {
            let mut imgs = ctx.eval.images.range(0..n);
            imgs.data.iter_mut().for_each(|p| *p = 255 - *p);
            Ok((imgs, "the evaluation images with inverted pixels (255 - v)".into()))
        }
    }
}

fn display(p: &Path) -> String {
    p.display().to_string()
}

fn histogram(v: &[f64]) -> Vec<f64> {
    let mut h = [0f64; HIST_BINS];
    for &x in v {
        h[((x * HIST_BINS as f64) as usize).min(HIST_BINS - 1)] += 1.0;
    }
    h.iter().map(|c| c / v.len().max(1) as f64).collect()
}

fn top_prob(model: &Classifier, x: &Tensor) -> anyhow::Result<Vec<f64>> {
    Ok(predict_proba_tensor(model, x, 512, 1.0)?.iter().map(|p| f64::from(p.iter().copied().fold(0f32, f32::max))).collect())
}

fn mean(v: &[f64]) -> f64 {
    v.iter().sum::<f64>() / v.len().max(1) as f64
}

/// A Deep k-NN over `model`, indexed on the first `dknn_train` items of `train`.
fn fit(ctx: &Ctx, model: &Classifier, train: &Dataset) -> anyhow::Result<DeepKnn> {
    let m = ctx.args.dknn_train.min(train.len());
    let tx = images_to_tensor(&train.images.range(0..m), &Device::Cpu)?;
    let cx = images_to_tensor(&ctx.calib.images, &Device::Cpu)?;
    Ok(DeepKnn::fit(model, &tx, &train.labels[..m], &cx, &ctx.calib.labels, ctx.args.k)?)
}

/// Scores the four populations.
pub fn run(ctx: &Ctx, standard: &Trained, poisoned: &Trained, poisoned_train: &Dataset) -> anyhow::Result<DknnInfo> {
    let a = &ctx.args;
    let n = a.dknn_eval.min(ctx.eval.len());
    let labels = &ctx.eval.labels[..n];
    let clean_x = ctx.eval_x.narrow(0, 0, n)?;
    let knn = fit(ctx, &standard.model, &ctx.train)?;
    let creds = |knn: &DeepKnn, model: &Classifier, x: &Tensor| -> anyhow::Result<Vec<f64>> {
        Ok(knn.predict(model, x)?.iter().map(|o| o.credibility).collect())
    };
    let clean_out = knn.predict(&standard.model, &clean_x)?;
    let dknn_accuracy = clean_out.iter().zip(labels).filter(|(o, &y)| o.prediction == y).count() as f64 / n as f64;
    let clean = clean_out.iter().map(|o| o.credibility).collect::<Vec<_>>();
    let mut rng = ChaCha8Rng::seed_from_u64(a.seed);
    let fgsm_x = perturb_all(&standard.model, &clean_x, labels, Attack::Fgsm { eps: a.dknn_eps }, 256, &mut rng)?;
    let fgsm = creds(&knn, &standard.model, &fgsm_x)?;
    let (ood_imgs, ood_source) = ood_images(ctx, n)?;
    let ood_x = images_to_tensor(&ood_imgs, &Device::Cpu)?;
    let ood = creds(&knn, &standard.model, &ood_x)?;
    // The backdoored model, indexed on its own (poisoned) training items, as its operator would.
    let pknn = fit(ctx, &poisoned.model, poisoned_train)?;
    let trig_imgs = super::backdoor::trigger(ctx).stamp_all(&ctx.eval.images.range(0..n));
    let trig_x = images_to_tensor(&trig_imgs, &Device::Cpu)?;
    let p_clean = creds(&pknn, &poisoned.model, &clean_x)?;
    let trig = creds(&pknn, &poisoned.model, &trig_x)?;
    let auc = |p: &[f64], q: &[f64]| roc_auc(p, q).unwrap_or(0.5);
    let sm = |m: &Classifier, x: &Tensor| top_prob(m, x);
    let (sm_clean, sm_p_clean) = (sm(&standard.model, &clean_x)?, sm(&poisoned.model, &clean_x)?);
    let info = DknnInfo {
        k: a.k,
        layers: standard.model.representations(&clean_x.narrow(0, 0, 1)?)?.len(),
        train_items: a.dknn_train.min(ctx.train.len()),
        calibration_items: ctx.calib.len(),
        items: n,
        eps: a.dknn_eps,
        ood_source,
        dknn_accuracy,
        auc_fgsm: auc(&clean, &fgsm),
        auc_trigger: auc(&p_clean, &trig),
        auc_ood: auc(&clean, &ood),
        softmax_auc: [
            auc(&sm_clean, &sm(&standard.model, &fgsm_x)?),
            auc(&sm_p_clean, &sm(&poisoned.model, &trig_x)?),
            auc(&sm_clean, &sm(&standard.model, &ood_x)?),
        ],
        mean_credibility: [mean(&clean), mean(&fgsm), mean(&p_clean), mean(&trig), mean(&ood)],
        histograms: vec![
            ("clean".into(), histogram(&clean)),
            (format!("FGSM eps={}", a.dknn_eps), histogram(&fgsm)),
            ("triggered (backdoored model)".into(), histogram(&trig)),
            ("out of distribution".into(), histogram(&ood)),
        ],
    };
    say!(
        "  credibility AUC: FGSM {:.3}, trigger {:.3}, OOD {:.3} (softmax baseline {:.3}, {:.3}, {:.3}); Deep k-NN accuracy {:.3}",
        info.auc_fgsm, info.auc_trigger, info.auc_ood, info.softmax_auc[0], info.softmax_auc[1], info.softmax_auc[2], info.dknn_accuracy
    );
    Ok(info)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn resize_keeps_constant_images_and_corners() {
        assert_eq!(resize(&[7; 4], (2, 2), (5, 5)), vec![7; 25]);
        let up = resize(&[0, 255, 0, 255], (2, 2), (4, 4));
        assert_eq!(up[0], 0);
        assert_eq!(up[3], 255);
        assert!(up[1] > 0 && up[1] < up[2], "{up:?}");
        assert_eq!(resize(&[1, 2, 3, 4], (2, 2), (2, 2)), vec![1, 2, 3, 4]);
        assert_eq!(histogram(&[0.0, 0.05, 0.95, 1.0]), vec![0.5, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.5]);
    }
}
