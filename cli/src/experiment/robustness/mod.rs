//! `pate experiment robustness`: the rest of the lecture on how models
//! break, measured in process on one data set: FGSM and adversarial
//! training ([`attacks`]), defensive distillation and the substitute attack
//! that defeats it ([`distillation`]), temperature scaling ([`calib`]),
//! Deep k-NN credibility ([`credibility`]), and a backdoor fine-tuned
//! against distilled away ([`backdoor`]). Writes `report.json`, `report.md`
//! and plots ([`report`]); `pate experiment run` runs grids of it ([`grid`]).

pub mod attacks;
pub mod backdoor;
pub mod calib;
pub mod credibility;
pub mod distillation;
pub mod grid;
pub mod report;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::{ensure, Context};
use candle_core::{Device, Tensor};
use pate_ml::attack::check_epsilon;
use pate_ml::data::{load_idx_dir, student_split, Dataset};
use pate_ml::data_dir::resolve_data_dir;
use pate_ml::model::ModelKind;
use pate_ml::train::{images_to_tensor, TrainConfig};
use pate_ml::trigger::TriggerArgs;
use serde::{Deserialize, Serialize};

use crate::progress::say;

/// Arguments of `pate experiment robustness` (also the cells of a
/// robustness grid: every field is a grid key).
#[derive(clap::Args, Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RobustnessArgs {
    /// Directory with the four IDX files [default: as `pate lab`].
    #[arg(long)]
    pub data: Option<PathBuf>,
    /// Model of every network trained (mlp or cnn).
    #[arg(long, default_value = "mlp")]
    pub model: ModelKind,
    /// Seed of subsampling, training, attacks' random steps and noise.
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// Training items used (a seeded subsample; 0 = all).
    #[arg(long, default_value_t = 6000)]
    pub train_size: usize,
    /// Training epochs of every model trained on the training items.
    #[arg(long, default_value_t = 5)]
    pub epochs: usize,
    /// The last K test items are the evaluation set (attacked, scored).
    #[arg(long, default_value_t = 1000)]
    pub eval_size: usize,
    /// Attack radii (L-infinity, inputs in [0, 1]).
    #[arg(long, value_delimiter = ',', default_value = "0.05,0.1,0.2,0.3")]
    pub epsilons: Vec<f64>,
    /// Radius of adversarial training (FGSM and R+FGSM).
    #[arg(long, default_value_t = 0.1)]
    pub train_eps: f64,
    /// R+FGSM's random step, as a share of the radius (Tramer et al.: 0.5).
    #[arg(long, default_value_t = 0.5)]
    pub alpha_share: f64,
    /// Defensive distillation temperatures.
    #[arg(long, value_delimiter = ',', default_value = "20,100")]
    pub temperatures: Vec<f64>,
    /// Epochs of defensive distillation's teacher and of its distilled
    /// model, each (Papernot et al. train 50; the logits, and so the
    /// saturation at T = 1, grow with training).
    #[arg(long, default_value_t = 30)]
    pub distill_epochs: usize,
    /// Public items the substitute starts from (labelled by the oracle).
    #[arg(long, default_value_t = 150)]
    pub substitute_items: usize,
    /// Rounds of Jacobian-based augmentation (each doubles the substitute's set).
    #[arg(long, default_value_t = 4)]
    pub jacobian_rounds: usize,
    /// Step of the Jacobian-based augmentation.
    #[arg(long, default_value_t = 0.1)]
    pub jacobian_lambda: f64,
    /// Epochs of the substitute's training after each round.
    #[arg(long, default_value_t = 10)]
    pub substitute_epochs: usize,
    /// Held-out items (from the public pool) temperatures are fitted on and
    /// Deep k-NN is calibrated on.
    #[arg(long, default_value_t = 500)]
    pub calibration_size: usize,
    /// Public items (from the pool, after the calibration items) students
    /// learn from and the backdoored model is fine-tuned on.
    #[arg(long, default_value_t = 1000)]
    pub public_size: usize,
    /// Teachers of the PATE-style student (partitions of the training items).
    #[arg(long, default_value_t = 5)]
    pub teachers: usize,
    /// LNMax Laplace scale of the PATE-style student's labels (in process; no budget kept).
    #[arg(long, default_value_t = 2.0)]
    pub noise_scale: f64,
    /// Epochs of students (PATE-style and distilled).
    #[arg(long, default_value_t = 20)]
    pub student_epochs: usize,
    /// Deep k-NN neighbours per layer.
    #[arg(long, default_value_t = 75)]
    pub k: usize,
    /// Training items indexed by Deep k-NN (the first of the training items).
    #[arg(long, default_value_t = 3000)]
    pub dknn_train: usize,
    /// Evaluation items scored by Deep k-NN (each also attacked, triggered and matched by an OOD item).
    #[arg(long, default_value_t = 500)]
    pub dknn_eval: usize,
    /// Radius of the FGSM items Deep k-NN must tell apart.
    #[arg(long, default_value_t = 0.1)]
    pub dknn_eps: f64,
    /// Out-of-distribution data: the test images, then the training images,
    /// of this IDX directory, resized (bilinear) to the data's shape
    /// [default: the evaluation images with their pixels inverted].
    #[arg(long)]
    pub ood: Option<PathBuf>,
    /// Share of the training items poisoned with the trigger.
    #[arg(long, default_value_t = 0.1)]
    pub poison_rate: f64,
    /// The backdoor's target class.
    #[arg(long, default_value_t = 0)]
    pub target: u8,
    /// The trigger of the backdoor comparison.
    #[command(flatten)]
    #[serde(flatten)]
    pub trigger: TriggerArgs,
    /// Seeds of the backdoor comparison: seed * N + i for i < N, so that
    /// runs of consecutive seeds never share a backdoor seed.
    #[arg(long, default_value_t = 3)]
    pub backdoor_seeds: usize,
    /// Epochs of fine-tuning the backdoored model on the public items.
    #[arg(long, default_value_t = 10)]
    pub finetune_epochs: usize,
    /// Distillation temperature of the backdoor comparison's student.
    #[arg(long, default_value_t = 1.0)]
    pub distill_temperature: f64,
    /// Output directory (report.json, report.md, plots).
    #[arg(long, default_value = "robustness-out")]
    pub out: PathBuf,
}

impl Default for RobustnessArgs {
    fn default() -> Self {
        #[derive(clap::Parser)]
        struct W {
            #[command(flatten)]
            args: RobustnessArgs,
        }
        <W as clap::Parser>::parse_from(["robustness"]).args
    }
}

impl RobustnessArgs {
    /// Rejects bad parameters before anything is trained.
    pub fn validate(&self) -> anyhow::Result<()> {
        ensure!(!self.epsilons.is_empty(), "--epsilons is empty");
        for &e in self.epsilons.iter().chain([&self.train_eps, &self.dknn_eps]) {
            check_epsilon(e).map_err(|err| anyhow::anyhow!("{err}"))?;
        }
        ensure!((0.0..=1.0).contains(&self.alpha_share), "--alpha-share must be in [0, 1], got {}", self.alpha_share);
        ensure!(!self.temperatures.is_empty(), "--temperatures is empty");
        for &t in self.temperatures.iter().chain([&self.distill_temperature]) {
            ensure!(t.is_finite() && t > 0.0, "a temperature must be positive, got {t}");
        }
        ensure!(self.jacobian_lambda > 0.0 && self.jacobian_lambda <= 1.0, "--jacobian-lambda must be in (0, 1]");
        ensure!(
            self.calibration_size >= pate_ml::dknn::MIN_CALIBRATION,
            "too few calibration items: --calibration-size {} (at least {})",
            self.calibration_size,
            pate_ml::dknn::MIN_CALIBRATION
        );
        ensure!(self.k >= 1, "--k must be at least 1");
        ensure!(self.k <= self.dknn_train, "--k {} is larger than the Deep k-NN training set (--dknn-train {})", self.k, self.dknn_train);
        ensure!((0.0..=1.0).contains(&self.poison_rate), "--poison-rate must be in [0, 1]");
        ensure!(self.teachers >= 1 && self.backdoor_seeds >= 1, "--teachers and --backdoor-seeds must be at least 1");
        ensure!(self.epochs >= 1 && self.distill_epochs >= 1 && self.student_epochs >= 1 && self.substitute_epochs >= 1 && self.finetune_epochs >= 1, "epochs must be at least 1");
        ensure!(self.substitute_items >= 1 && self.dknn_eval >= 1 && self.public_size >= 1, "sizes must be at least 1");
        Ok(())
    }

    /// The training configuration of seed `seed` with `epochs` epochs.
    pub fn cfg(&self, epochs: usize, seed: u64) -> TrainConfig {
        TrainConfig { epochs, seed, ..TrainConfig::default() }
    }
}

/// The data every section uses.
pub struct Ctx {
    /// The run's arguments.
    pub args: RobustnessArgs,
    /// The (subsampled) training items.
    pub train: Dataset,
    /// Classes.
    pub classes: usize,
    /// Evaluation items.
    pub eval: Dataset,
    /// Their inputs as a tensor.
    pub eval_x: Tensor,
    /// Held-out calibration items (from the pool).
    pub calib: Dataset,
    /// Public items (from the pool, after the calibration items).
    pub public: Dataset,
}

/// Accuracy of `model` on inputs `x` against `labels`.
pub fn accuracy_on(model: &pate_ml::Classifier, x: &Tensor, labels: &[u8]) -> anyhow::Result<f64> {
    Ok(pate_ml::train::accuracy(&pate_ml::train::predict_tensor(model, x, 512)?, labels))
}

/// A JSON-friendly key of a number (`0.1` → `"0.1"`).
pub fn key(v: f64) -> String {
    format!("{v}")
}

/// Per-epsilon results (keys from [`key`]).
pub type PerEps = BTreeMap<String, f64>;

/// `report.json` of `pate experiment robustness`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct RobustnessReport {
    /// The arguments (data directory resolved).
    pub args: RobustnessArgs,
    /// Training items used.
    pub train_items: usize,
    /// Evaluation items.
    pub eval_items: usize,
    /// The standard model's clean accuracy.
    pub clean_accuracy: f64,
    /// The standard model's accuracy under white-box FGSM, per epsilon.
    pub fgsm_accuracy: PerEps,
    /// The FGSM-adversarially-trained model's accuracy under FGSM, per epsilon.
    pub adv_trained_fgsm_accuracy: PerEps,
    /// The R+FGSM-adversarially-trained model's accuracy under FGSM, per epsilon.
    pub rfgsm_trained_fgsm_accuracy: PerEps,
    /// Every model of the adversarial-training section under every attack.
    pub adversarial_training: Vec<attacks::AdvRow>,
    /// Distilled models' clean accuracy, per temperature.
    pub distilled_clean_accuracy: BTreeMap<String, f64>,
    /// Distilled models' accuracy under white-box FGSM (at T = 1), per temperature, per epsilon.
    pub distilled_fgsm_accuracy: BTreeMap<String, PerEps>,
    /// Share of the distilled models' input gradients (evaluation items) that are exactly zero.
    pub distilled_zero_gradient_share: BTreeMap<String, f64>,
    /// How saturated the distilled models' softmax is at T = 1, per temperature.
    pub distilled_saturation: BTreeMap<String, distillation::Saturation>,
    /// Distilled models' accuracy under white-box FGSM through their logits
    /// divided by T (Carlini and Wagner's fix), per temperature, per epsilon.
    pub distilled_fgsm_at_t_accuracy: BTreeMap<String, PerEps>,
    /// Distilled models' accuracy under FGSM crafted on a substitute and transferred, per temperature, per epsilon.
    pub distilled_transfer_accuracy: BTreeMap<String, PerEps>,
    /// Every substitute attack (the standard model as oracle too).
    pub substitutes: Vec<distillation::SubstituteRow>,
    /// The single model's ECE (15 bins) on the evaluation items at T = 1.
    pub ece_before: f64,
    /// The same after temperature scaling.
    pub ece_after: f64,
    /// The single model's NLL on the evaluation items at T = 1.
    pub nll_before: f64,
    /// The same after temperature scaling.
    pub nll_after: f64,
    /// The single model's temperature fitted on the calibration items.
    pub temperature: f64,
    /// Every model's calibration (single, teachers, PATE-style student).
    pub calibration: Vec<calib::CalRow>,
    /// The single model's reliability diagram before scaling (evaluation items).
    pub reliability_before: pate_ml::calibration::Reliability,
    /// The same after.
    pub reliability_after: pate_ml::calibration::Reliability,
    /// How the PATE-style student was made.
    pub pate_student: calib::StudentInfo,
    /// ROC AUC of Deep k-NN credibility: clean against FGSM items.
    pub dknn_auc_fgsm: f64,
    /// Clean against triggered items (on the backdoored model).
    pub dknn_auc_trigger: f64,
    /// Clean against out-of-distribution items.
    pub dknn_auc_ood: f64,
    /// Details of the Deep k-NN section.
    pub dknn: credibility::DknnInfo,
    /// Mean ASR of the backdoored model fine-tuned on the public items.
    pub finetune_asr: f64,
    /// Mean ASR of its student distilled on the public items.
    pub distill_asr: f64,
    /// ASR of the standard (clean) model: the trigger's natural rate.
    pub clean_asr: f64,
    /// Mean ASR of the backdoored model itself.
    pub poisoned_asr: f64,
    /// Mean clean accuracy of the fine-tuned model.
    pub finetune_accuracy: f64,
    /// Mean clean accuracy of the distilled student.
    pub distill_accuracy: f64,
    /// Mean clean accuracy of the backdoored model.
    pub poisoned_accuracy: f64,
    /// Per seed.
    pub backdoor: Vec<backdoor::BackdoorSeed>,
    /// Wall seconds.
    pub total_seconds: f64,
}

/// Loads and splits the data.
fn context(args: &RobustnessArgs, data_dir: &Path) -> anyhow::Result<Ctx> {
    let data = load_idx_dir(data_dir)?;
    let classes = data.num_classes();
    let split = student_split(&data.test, args.eval_size)?;
    let need = args.calibration_size + args.public_size;
    ensure!(
        need <= split.pool.len(),
        "--calibration-size {} + --public-size {} = {need} items, but the pool (test items before the last --eval-size {}) holds {}",
        args.calibration_size,
        args.public_size,
        args.eval_size,
        split.pool.len()
    );
    let pool = Dataset { images: split.pool, labels: split.pool_labels };
    let train = if args.train_size == 0 || args.train_size >= data.train.len() {
        data.train
    } else {
        let mut idx = pate_student::pick_queries(data.train.len(), args.train_size, args.seed ^ 0x0074_7261_696e);
        idx.sort_unstable();
        data.train.select(&idx)
    };
    ensure!(args.k <= args.dknn_train.min(train.len()), "--k {} is larger than the Deep k-NN training set ({} items)", args.k, args.dknn_train.min(train.len()));
    ensure!(train.len() >= args.teachers, "{} training items for {} teachers", train.len(), args.teachers);
    let eval_x = images_to_tensor(&split.eval.images, &Device::Cpu)?;
    Ok(Ctx {
        classes,
        calib: pool.range(0..args.calibration_size),
        public: pool.range(args.calibration_size..need),
        eval: split.eval,
        eval_x,
        train,
        args: args.clone(),
    })
}

/// Runs the experiment; writes `OUT/report.json`, `OUT/report.md` and the plots.
pub async fn run(args: RobustnessArgs) -> anyhow::Result<RobustnessReport> {
    args.validate()?;
    let data_dir = resolve_data_dir(args.data.as_deref())?;
    tokio::task::spawn_blocking(move || run_blocking(args, &data_dir)).await?
}

/// The blocking body of [`run`].
pub fn run_blocking(mut args: RobustnessArgs, data_dir: &Path) -> anyhow::Result<RobustnessReport> {
    let started = Instant::now();
    args.data = Some(data_dir.to_path_buf());
    std::fs::create_dir_all(&args.out).with_context(|| format!("creating {}", args.out.display()))?;
    let ctx = context(&args, data_dir)?;
    say!(
        "pate experiment robustness ({} on {}, {} training items, {} evaluation items, seed {})",
        args.model,
        data_dir.display(),
        ctx.train.len(),
        ctx.eval.len(),
        args.seed
    );
    say!("[1/5] standard model, FGSM and adversarial training");
    let adv = attacks::run(&ctx)?;
    say!("[2/5] defensive distillation and the substitute attack");
    let dist = distillation::run(&ctx, &adv.standard)?;
    say!("[3/5] calibration by temperature scaling");
    let cal = calib::run(&ctx, &adv.standard)?;
    say!("[4/5] backdoor: fine-tuning against distillation");
    let bd = backdoor::run(&ctx, &adv.standard)?;
    say!("[5/5] Deep k-NN credibility");
    let cred = credibility::run(&ctx, &adv.standard, &bd.first_poisoned, &bd.first_poisoned_train)?;
    let mean = |f: &dyn Fn(&backdoor::BackdoorSeed) -> f64| bd.seeds.iter().map(f).sum::<f64>() / bd.seeds.len().max(1) as f64;
    let report = RobustnessReport {
        train_items: ctx.train.len(),
        eval_items: ctx.eval.len(),
        clean_accuracy: adv.clean_accuracy,
        fgsm_accuracy: adv.fgsm_accuracy.clone(),
        adv_trained_fgsm_accuracy: adv.adv_trained_fgsm_accuracy.clone(),
        rfgsm_trained_fgsm_accuracy: adv.rfgsm_trained_fgsm_accuracy.clone(),
        adversarial_training: adv.rows.clone(),
        distilled_clean_accuracy: dist.clean,
        distilled_fgsm_accuracy: dist.fgsm,
        distilled_zero_gradient_share: dist.zero_gradient_share,
        distilled_saturation: dist.saturation,
        distilled_fgsm_at_t_accuracy: dist.fgsm_at_t,
        distilled_transfer_accuracy: dist.transfer,
        substitutes: dist.substitutes,
        ece_before: cal.single.ece_before,
        ece_after: cal.single.ece_after,
        nll_before: cal.single.nll_before,
        nll_after: cal.single.nll_after,
        temperature: cal.single.temperature,
        calibration: cal.rows,
        reliability_before: cal.reliability_before,
        reliability_after: cal.reliability_after,
        pate_student: cal.student,
        dknn_auc_fgsm: cred.auc_fgsm,
        dknn_auc_trigger: cred.auc_trigger,
        dknn_auc_ood: cred.auc_ood,
        dknn: cred,
        finetune_asr: mean(&|s| s.finetune.asr),
        distill_asr: mean(&|s| s.distill.asr),
        clean_asr: bd.clean_asr,
        poisoned_asr: mean(&|s| s.poisoned.asr),
        finetune_accuracy: mean(&|s| s.finetune.accuracy),
        distill_accuracy: mean(&|s| s.distill.accuracy),
        poisoned_accuracy: mean(&|s| s.poisoned.accuracy),
        backdoor: bd.seeds,
        total_seconds: started.elapsed().as_secs_f64(),
        args,
    };
    let out = &report.args.out;
    std::fs::write(out.join("report.json"), serde_json::to_vec_pretty(&report)?)?;
    std::fs::write(out.join("report.md"), report::markdown(&report))?;
    let plots = report::draw(&report, out)?;
    report::print_summary(&report);
    say!("  wrote {}, {} and {} plots", out.join("report.json").display(), out.join("report.md").display(), plots.len());
    Ok(report)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_the_flags_defaults_and_bad_values_are_refused() {
        let d = RobustnessArgs::default();
        assert_eq!(d.epsilons, vec![0.05, 0.1, 0.2, 0.3]);
        assert_eq!(d.temperatures, vec![20.0, 100.0]);
        d.validate().expect("defaults are valid");
        let bad = |f: &dyn Fn(&mut RobustnessArgs)| {
            let mut a = RobustnessArgs::default();
            f(&mut a);
            a.validate().expect_err("refused").to_string()
        };
        assert!(bad(&|a| a.epsilons = vec![0.1, 1.5]).contains("epsilon must be in [0, 1]"));
        assert!(bad(&|a| a.epsilons = vec![-0.1]).contains("epsilon"));
        assert!(bad(&|a| a.temperatures = vec![0.0]).contains("temperature must be positive"));
        assert!(bad(&|a| a.distill_temperature = -1.0).contains("temperature must be positive"));
        assert!(bad(&|a| a.k = 5000).contains("larger than the Deep k-NN training set"));
        assert!(bad(&|a| a.calibration_size = 3).contains("too few calibration items"));
    }
}
