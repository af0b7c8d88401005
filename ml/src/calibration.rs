//! Calibration and detection metrics (experiments only): reliability bins
//! and expected calibration error, negative log-likelihood, temperature
//! scaling fitted on a held-out split (Guo et al., arXiv 1706.04599), and
//! the ROC AUC of a score telling two populations apart.

use serde::{Deserialize, Serialize};

/// Fewest held-out items a temperature is fitted on.
pub const MIN_FIT_ITEMS: usize = 10;

/// Errors of the calibration metrics.
#[derive(Debug, thiserror::Error)]
pub enum CalibrationError {
    /// The input is unusable.
    #[error("invalid calibration input: {0}")]
    Invalid(String),
}

/// One confidence bin of a reliability diagram.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct Bin {
    /// Lower edge (exclusive, except for the first bin).
    pub lo: f64,
    /// Upper edge (inclusive).
    pub hi: f64,
    /// Items whose confidence falls in the bin.
    pub count: usize,
    /// Their mean confidence (0 when empty).
    pub confidence: f64,
    /// Their accuracy (0 when empty).
    pub accuracy: f64,
}

/// A reliability diagram and its expected calibration error.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Reliability {
    /// Equal-width confidence bins over `[0, 1]`.
    pub bins: Vec<Bin>,
    /// `sum_m |B_m| / n * |acc(B_m) - conf(B_m)|`.
    pub ece: f64,
}

/// `softmax(logits / temperature)` in `f64`.
pub fn softmax(logits: &[f32], temperature: f64) -> Vec<f64> {
    let z: Vec<f64> = logits.iter().map(|&v| f64::from(v) / temperature).collect();
    let max = z.iter().copied().fold(f64::NEG_INFINITY, f64::max);
    let e: Vec<f64> = z.iter().map(|v| (v - max).exp()).collect();
    let s: f64 = e.iter().sum();
    e.into_iter().map(|v| v / s).collect()
}

fn check(logits: &[Vec<f32>], labels: &[u8]) -> Result<(), CalibrationError> {
    if logits.len() != labels.len() {
        return Err(CalibrationError::Invalid(format!("{} predictions but {} labels", logits.len(), labels.len())));
    }
    if let Some((i, _)) = logits.iter().zip(labels).enumerate().find(|(_, (l, &y))| usize::from(y) >= l.len()) {
        return Err(CalibrationError::Invalid(format!("label of item {i} is not a class of the prediction")));
    }
    Ok(())
}

fn check_temperature(t: f64) -> Result<(), CalibrationError> {
    if !(t.is_finite() && t > 0.0) {
        return Err(CalibrationError::Invalid(format!("temperature must be positive, got {t}")));
    }
    Ok(())
}

/// The reliability diagram of `logits` at `temperature` with `bins`
/// equal-width bins (Guo et al. use 15): bin m holds confidences in
/// `((m - 1) / M, m / M]` (the first also holds 0).
pub fn reliability(logits: &[Vec<f32>], labels: &[u8], temperature: f64, bins: usize) -> Result<Reliability, CalibrationError> {
    check(logits, labels)?;
    check_temperature(temperature)?;
    if bins == 0 {
        return Err(CalibrationError::Invalid("at least one bin".into()));
    }
    let mut acc = vec![(0usize, 0f64, 0usize); bins];
    for (l, &y) in logits.iter().zip(labels) {
        let p = softmax(l, temperature);
        let (pred, conf) = p.iter().enumerate().fold((0, f64::MIN), |b, (i, &v)| if v > b.1 { (i, v) } else { b });
        let m = ((conf * bins as f64).ceil() as usize).clamp(1, bins) - 1;
        acc[m].0 += 1;
        acc[m].1 += conf;
        acc[m].2 += usize::from(pred == usize::from(y));
    }
    let n = labels.len().max(1) as f64;
    let bins: Vec<Bin> = acc
        .iter()
        .enumerate()
        .map(|(m, &(count, conf, hits))| {
            let c = count.max(1) as f64;
            Bin {
                lo: m as f64 / bins as f64,
                hi: (m + 1) as f64 / bins as f64,
                count,
                confidence: conf / c,
                accuracy: hits as f64 / c,
            }
        })
        .collect();
    let ece = bins.iter().map(|b| b.count as f64 / n * (b.accuracy - b.confidence).abs()).sum();
    Ok(Reliability { bins, ece })
}

/// Expected calibration error with `bins` bins.
pub fn ece(logits: &[Vec<f32>], labels: &[u8], temperature: f64, bins: usize) -> Result<f64, CalibrationError> {
    Ok(reliability(logits, labels, temperature, bins)?.ece)
}

/// Mean negative log-likelihood of the labels under `softmax(logits / temperature)`.
pub fn nll(logits: &[Vec<f32>], labels: &[u8], temperature: f64) -> Result<f64, CalibrationError> {
    check(logits, labels)?;
    check_temperature(temperature)?;
    if labels.is_empty() {
        return Ok(0.0);
    }
    let total: f64 = logits
        .iter()
        .zip(labels)
        .map(|(l, &y)| {
            let z: Vec<f64> = l.iter().map(|&v| f64::from(v) / temperature).collect();
            let max = z.iter().copied().fold(f64::NEG_INFINITY, f64::max);
            let lse = max + z.iter().map(|v| (v - max).exp()).sum::<f64>().ln();
            lse - z[usize::from(y)]
        })
        .sum();
    Ok(total / labels.len() as f64)
}

/// The temperature minimising the NLL of `labels` (the held-out split):
/// golden-section search over `1 / T` in `[1e-3, 100]` (NLL is convex in
/// `1 / T`), keeping `T = 1` if nothing found is better. Fewer than
/// [`MIN_FIT_ITEMS`] items is an error.
pub fn fit_temperature(logits: &[Vec<f32>], labels: &[u8]) -> Result<f64, CalibrationError> {
    check(logits, labels)?;
    if labels.len() < MIN_FIT_ITEMS {
        return Err(CalibrationError::Invalid(format!(
            "too few calibration items to fit a temperature: {} (at least {MIN_FIT_ITEMS})",
            labels.len()
        )));
    }
    let f = |beta: f64| nll(logits, labels, 1.0 / beta).unwrap_or(f64::INFINITY);
    let (mut a, mut b) = (1e-3f64, 100f64);
    let g = (5f64.sqrt() - 1.0) / 2.0;
    let (mut c, mut d) = (b - g * (b - a), a + g * (b - a));
    let (mut fc, mut fd) = (f(c), f(d));
    for _ in 0..100 {
        if fc < fd {
            (b, d, fd) = (d, c, fc);
            c = b - g * (b - a);
            fc = f(c);
        } else {
            (a, c, fc) = (c, d, fd);
            d = a + g * (b - a);
            fd = f(d);
        }
    }
    let beta = (a + b) / 2.0;
    Ok(if f(beta) < f(1.0) { 1.0 / beta } else { 1.0 })
}

/// ROC AUC of a score meant to be higher on `positive` than on `negative`
/// items: the probability that a random positive outscores a random
/// negative, ties counting half. `None` when either side is empty.
pub fn roc_auc(positive: &[f64], negative: &[f64]) -> Option<f64> {
    if positive.is_empty() || negative.is_empty() {
        return None;
    }
    // Rank-sum (Mann-Whitney U) with mid-ranks for ties.
    let mut all: Vec<(f64, bool)> = positive.iter().map(|&v| (v, true)).chain(negative.iter().map(|&v| (v, false))).collect();
    all.sort_by(|a, b| a.0.total_cmp(&b.0));
    let mut rank_sum = 0f64;
    let mut i = 0;
    while i < all.len() {
        let mut j = i;
        while j + 1 < all.len() && all[j + 1].0 == all[i].0 {
            j += 1;
        }
        let mid = (i + j) as f64 / 2.0 + 1.0;
        rank_sum += all[i..=j].iter().filter(|e| e.1).count() as f64 * mid;
        i = j + 1;
    }
    let (p, n) = (positive.len() as f64, negative.len() as f64);
    Some((rank_sum - p * (p + 1.0) / 2.0) / (p * n))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Logits giving confidence `c` to class 0 of two.
    fn two(c: f64) -> Vec<f32> {
        vec![(c / (1.0 - c)).ln() as f32, 0.0]
    }

    #[test]
    fn ece_of_a_hand_made_example() {
        // Four items at confidence 0.85 (three right), two at 0.55 (both right).
        let logits = vec![two(0.85), two(0.85), two(0.85), two(0.85), two(0.55), two(0.55)];
        let labels = [0, 0, 0, 1, 0, 0];
        let r = reliability(&logits, &labels, 1.0, 10).expect("reliability");
        // |0.75 - 0.85| * 4/6 + |1.0 - 0.55| * 2/6.
        assert!((r.ece - (0.1 * 4.0 / 6.0 + 0.45 * 2.0 / 6.0)).abs() < 1e-6, "{}", r.ece);
        assert_eq!(r.bins[8].count, 4, "0.85 is in (0.8, 0.9]");
        assert_eq!(r.bins[5].count, 2, "0.55 is in (0.5, 0.6]");
        assert!((r.bins[8].accuracy - 0.75).abs() < 1e-12);
        // Perfectly calibrated: ten items at 0.7, seven right.
        let logits = vec![two(0.7); 10];
        let labels = [0, 0, 0, 0, 0, 0, 0, 1, 1, 1];
        assert!(ece(&logits, &labels, 1.0, 15).expect("ece") < 1e-6);
    }

    #[test]
    fn nll_and_temperature_scaling() {
        // Overconfident: confidence 0.99 but 70% right.
        let logits: Vec<Vec<f32>> = (0..100).map(|_| two(0.99)).collect();
        let labels: Vec<u8> = (0..100).map(|i| u8::from(i % 10 >= 7)).collect();
        let t = fit_temperature(&logits, &labels).expect("fit");
        assert!(t > 1.0, "softens: {t}");
        // The fitted confidence is the accuracy, 0.7.
        let p = softmax(&logits[0], t);
        assert!((p[0] - 0.7).abs() < 1e-3, "{p:?}");
        assert!(nll(&logits, &labels, t).expect("nll") < nll(&logits, &labels, 1.0).expect("nll"));
        assert!(ece(&logits, &labels, t, 15).expect("ece") < 0.01);
        // Errors.
        assert!(fit_temperature(&logits[..5], &labels[..5]).is_err(), "too few items");
        assert!(nll(&logits, &labels, 0.0).is_err());
        assert!(nll(&logits, &labels, -1.0).is_err());
        assert!(ece(&logits, &labels[1..], 1.0, 15).is_err());
        assert!(ece(&logits, &[2; 100], 1.0, 15).is_err(), "label beyond the classes");
        let nll1 = nll(&[vec![0.0, 0.0]], &[1], 1.0).expect("nll");
        assert!((nll1 - 2f64.ln()).abs() < 1e-12);
    }

    #[test]
    fn roc_auc_of_hand_made_examples() {
        assert_eq!(roc_auc(&[0.9, 0.8], &[0.1, 0.2]), Some(1.0));
        assert_eq!(roc_auc(&[0.1, 0.2], &[0.9, 0.8]), Some(0.0));
        assert_eq!(roc_auc(&[0.5], &[0.5]), Some(0.5));
        // Pairs: (0.9 > 0.3, 0.9 > 0.7), (0.4 > 0.3, 0.4 < 0.7): 3 of 4.
        assert_eq!(roc_auc(&[0.9, 0.4], &[0.3, 0.7]), Some(0.75));
        // A tie counts half: (0.5 = 0.5) and (0.5 > 0.2): 1.5 of 2.
        assert_eq!(roc_auc(&[0.5], &[0.5, 0.2]), Some(0.75));
        assert_eq!(roc_auc(&[], &[0.1]), None);
    }
}
