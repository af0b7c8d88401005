//! Measurements of a backdoor experiment from the teachers' noise-free
//! votes: per-teacher and ensemble clean accuracy and attack success rate,
//! and the noisy aggregate, obtained by applying the aggregator's own LNMax
//! mechanism ([`pate_privacy::noise::NoisyMax`]) to the operator's
//! histograms locally, so that measuring it spends none of the budget.

use std::path::Path;

use anyhow::Context;
use pate_ml::data::{Dataset, Images};
use pate_ml::train::{accuracy, predict};
use pate_ml::trigger::attack_success_rate;
use serde::{Deserialize, Serialize};

use pate_privacy::histogram::{histograms, plurality};

/// Accuracy on clean evaluation items and ASR on their triggered copies.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Default)]
pub struct Scores {
    /// Clean accuracy.
    pub accuracy: f64,
    /// Attack success rate.
    pub asr: f64,
}

impl Scores {
    /// Scores of predictions on clean (`clean`) and triggered (`triggered`) items.
    pub fn of(clean: &[u8], triggered: &[u8], labels: &[u8], target: u8) -> Scores {
        Scores { accuracy: accuracy(clean, labels), asr: attack_success_rate(triggered, labels, target) }
    }
}

/// The votes of a set of teachers on the evaluation items.
pub struct EvalVotes<'a> {
    /// `clean[t][i]`: teacher t's label for clean item i.
    pub clean: &'a [Vec<u8>],
    /// Same on the triggered copies.
    pub triggered: &'a [Vec<u8>],
    /// True labels.
    pub labels: &'a [u8],
    /// Classes.
    pub classes: usize,
    /// The backdoor's target class.
    pub target: u8,
}

/// LNMax answers (Laplace scale `scale`) on the histograms of `votes`,
/// drawn locally with the aggregator's mechanism; abstentions count as wrong.
pub fn noisy(votes: &[Vec<u8>], classes: usize, scale: f64) -> anyhow::Result<Vec<u8>> {
    let mech = pate_privacy::noise::NoisyMax::lnmax(scale)?;
    histograms(votes, classes)
        .iter()
        .map(|h| Ok(mech.answer(h)?.map_or(u8::MAX, |c| c as u8)))
        .collect()
}

impl EvalVotes<'_> {
    /// Each teacher's scores.
    pub fn teachers(&self) -> Vec<Scores> {
        self.clean.iter().zip(self.triggered).map(|(c, t)| Scores::of(c, t, self.labels, self.target)).collect()
    }

    /// The noise-free plurality's scores.
    pub fn ensemble(&self) -> Scores {
        let (c, t) = (plurality(self.clean, self.classes), plurality(self.triggered, self.classes));
        Scores::of(&c, &t, self.labels, self.target)
    }

    /// The noisy aggregate's scores (one local draw of LNMax noise).
    pub fn noisy_aggregate(&self, scale: f64) -> anyhow::Result<Scores> {
        let (c, t) = (noisy(self.clean, self.classes, scale)?, noisy(self.triggered, self.classes, scale)?);
        Ok(Scores::of(&c, &t, self.labels, self.target))
    }
}

/// Scores of a model on the evaluation set and its triggered copy.
pub fn score_model(model: &pate_ml::Classifier, eval: &Dataset, triggered: &Images, target: u8) -> anyhow::Result<Scores> {
    let clean = predict(model, &eval.images, 512)?;
    let trig = predict(model, triggered, 512)?;
    Ok(Scores::of(&clean, &trig, &eval.labels, target))
}

/// As [`score_model`], for a checkpoint directory (blocking).
pub fn score_checkpoint(dir: &Path, eval: &Dataset, triggered: &Images, target: u8) -> anyhow::Result<Scores> {
    let (model, _) = pate_ml::checkpoint::load(dir).with_context(|| format!("loading {}", dir.display()))?;
    score_model(&model, eval, triggered, target)
}

/// Mean of the selected values; `None` when nothing is selected.
pub fn mean_where(values: &[f64], keep: impl Fn(usize) -> bool) -> Option<f64> {
    let picked: Vec<f64> = values.iter().enumerate().filter(|&(i, _)| keep(i)).map(|(_, &v)| v).collect();
    (!picked.is_empty()).then(|| picked.iter().sum::<f64>() / picked.len() as f64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scores_of_an_ensemble() {
        // Three teachers, target 0; teacher 0 is backdoored.
        let clean = vec![vec![1, 2, 3], vec![1, 2, 3], vec![1, 2, 0]];
        let triggered = vec![vec![0, 0, 0], vec![1, 2, 3], vec![1, 2, 3]];
        let labels = [1, 2, 3];
        let v = EvalVotes { clean: &clean, triggered: &triggered, labels: &labels, classes: 4, target: 0 };
        let t = v.teachers();
        assert_eq!(t[0], Scores { accuracy: 1.0, asr: 1.0 });
        assert_eq!(t[2].asr, 0.0);
        assert!((t[2].accuracy - 2.0 / 3.0).abs() < 1e-12);
        assert_eq!(v.ensemble(), Scores { accuracy: 1.0, asr: 0.0 });
        let n = v.noisy_aggregate(1e-3).expect("noise");
        assert_eq!(n, Scores { accuracy: 1.0, asr: 0.0 });
        assert_eq!(mean_where(&[1.0, 2.0, 4.0], |i| i > 0), Some(3.0));
        assert_eq!(mean_where(&[1.0], |_| false), None);
    }
}
