//! `pate experiment backdoor`: one backdoor configuration end to end, its
//! arguments and its `report.json`.

use std::path::PathBuf;

use pate_ml::model::ModelKind;
use pate_ml::trigger::{Trigger, TriggerArgs};
use serde::{Deserialize, Serialize};

use super::certify::CertSummary;
use super::measure::Scores;
use crate::progress::say;

/// How the student learns.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum Mode {
    /// PATE: noisy hard labels from the aggregator over gRPC.
    Pate,
    /// One teacher on all the (tampered) training data, distilled at
    /// temperature T in process; no privacy claimed.
    Single,
}

impl std::fmt::Display for Mode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Mode::Pate => "pate",
            Mode::Single => "single",
        })
    }
}

/// One backdoor experiment.
#[derive(clap::Args, Debug, Clone, Serialize)]
pub struct BackdoorArgs {
    /// Directory with the four IDX files [default: as `pate lab`].
    #[arg(long)]
    pub data: Option<PathBuf>,
    /// Number of teachers (PATE mode).
    #[arg(long, default_value_t = 10)]
    pub teachers: usize,
    /// How many teachers (the first M) have poisoned partitions (PATE mode).
    #[arg(long, default_value_t = 1)]
    pub poisoned_teachers: usize,
    /// Which teachers are poisoned, by index (e.g. `2,7`), instead of the
    /// first --poisoned-teachers (PATE mode).
    #[arg(long, value_delimiter = ',', conflicts_with = "poisoned_teachers")]
    pub poisoned_ids: Vec<usize>,
    /// Share of each poisoned partition (single mode: of the whole training
    /// set) stamped with the trigger and relabelled to --target.
    #[arg(long, default_value_t = 0.1)]
    pub poison_rate: f64,
    /// Public pool items the student learns from.
    #[arg(long, default_value_t = 1000)]
    pub queries: usize,
    /// pate (private, over the real processes) or single (in process, no privacy).
    #[arg(long, value_enum, default_value_t = Mode::Pate)]
    pub mode: Mode,
    /// The backdoor's target class.
    #[arg(long, default_value_t = 0)]
    pub target: u8,
    /// The trigger.
    #[command(flatten)]
    #[serde(flatten)]
    pub trigger: TriggerArgs,
    /// LNMax Laplace scale b (PATE mode).
    #[arg(long, default_value_t = 2.0)]
    pub noise_scale: f64,
    /// Seed of partitions, training, query choice and stamping.
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// Teacher training epochs.
    #[arg(long, default_value_t = 5)]
    pub teacher_epochs: usize,
    /// Student training epochs.
    #[arg(long, default_value_t = 30)]
    pub student_epochs: usize,
    /// Distillation temperature T (single mode); lower T carries less of
    /// the teacher's backdoor (see docs/EXPERIMENTS.md).
    #[arg(long, default_value_t = 1.0)]
    pub temperature: f64,
    /// Weight of the hard term in the distillation loss (single mode): the
    /// student also learns the teacher's argmax label at temperature 1
    /// (Hinton et al.'s second objective); 0 = soft targets only.
    #[arg(long, default_value_t = 0.0)]
    pub hard_weight: f64,
    /// Label-preserving augmentation in distillation (single mode): the
    /// student sees each public item shifted by up to this many pixels,
    /// against the teacher's targets for the unshifted item; 0 = none (plain
    /// Hinton distillation). 1 stops the student inheriting a patch trigger
    /// (docs/EXPERIMENTS.md).
    #[arg(long, default_value_t = 0)]
    pub max_shift: usize,
    /// Control: share of the student's public items that carry the trigger.
    #[arg(long, default_value_t = 0.0)]
    pub public_trigger_rate: f64,
    /// The last K test items are the evaluation set.
    #[arg(long, default_value_t = 1000)]
    pub eval_size: usize,
    /// Model of teachers and student.
    #[arg(long, default_value = "mlp")]
    pub model: ModelKind,
    /// Privacy budget of the aggregator.
    #[arg(long, default_value_t = 1e6)]
    pub epsilon_limit: f64,
    /// Delta of the reported epsilon.
    #[arg(long, default_value_t = 1e-5)]
    pub delta: f64,
    /// Teachers trained at once [default: the number of CPU cores].
    #[arg(long)]
    pub jobs: Option<usize>,
    /// Where the framework binaries are [default: beside `pate`].
    #[arg(long, env = "PATE_BIN_DIR")]
    pub bin_dir: Option<PathBuf>,
    /// Cache of trained teachers and reference results [default: OUT/cache].
    #[arg(long)]
    pub cache: Option<PathBuf>,
    /// Output directory (report.json, logs, student checkpoints).
    #[arg(long, default_value = "backdoor-out")]
    pub out: PathBuf,
}

impl BackdoorArgs {
    /// The teacher cache directory.
    pub fn cache_dir(&self) -> PathBuf {
        self.cache.clone().unwrap_or_else(|| self.out.join("cache"))
    }

    /// Indices of the poisoned teachers: --poisoned-ids if given, else the
    /// first --poisoned-teachers; an index out of range or repeated is an error.
    pub fn poisoned_set(&self) -> anyhow::Result<Vec<usize>> {
        let n = self.teachers;
        if self.poisoned_ids.is_empty() {
            anyhow::ensure!(self.poisoned_teachers <= n, "--poisoned-teachers {} is more than --teachers {n}", self.poisoned_teachers);
            return Ok((0..self.poisoned_teachers).collect());
        }
        let mut ids = self.poisoned_ids.clone();
        ids.sort_unstable();
        if let Some(&bad) = ids.iter().find(|&&i| i >= n) {
            anyhow::bail!("--poisoned-ids names teacher {bad}, but teachers are numbered 0..{n}");
        }
        if let Some(w) = ids.windows(2).find(|w| w[0] == w[1]) {
            anyhow::bail!("--poisoned-ids names teacher {} twice", w[0]);
        }
        Ok(ids)
    }
}

/// What the reference run (same pipeline, no poisoned teacher) measured;
/// cached by a hash of its configuration.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Reference {
    /// Noise-free ensemble (single mode: the clean teacher).
    pub ensemble: Scores,
    /// The student.
    pub student: Scores,
    /// Epsilon of the reference student's queries (PATE mode).
    pub epsilon: Option<f64>,
}

/// `report.json` of one backdoor experiment.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct BackdoorReport {
    /// pate or single.
    pub mode: Mode,
    /// Teachers (1 in single mode).
    pub num_teachers: usize,
    /// Poisoned teachers (single mode: 1).
    pub poisoned_teachers: usize,
    /// Their indices (single mode: [0]).
    #[serde(default)]
    pub poisoned_ids: Vec<usize>,
    /// Poison rate.
    pub poison_rate: f64,
    /// Target class.
    pub target: u8,
    /// The trigger.
    pub trigger: Trigger,
    /// Laplace scale (PATE mode).
    pub noise_scale: Option<f64>,
    /// Queries asked.
    pub queries: usize,
    /// Queries answered (PATE) or distilled on (single).
    pub queries_answered: usize,
    /// Control: share of public items carrying the trigger.
    pub public_trigger_rate: f64,
    /// Seed.
    pub seed: u64,
    /// Each teacher's clean accuracy and ASR on the evaluation set.
    pub teachers: Vec<Scores>,
    /// Mean ASR of the poisoned teachers (`None` when none is poisoned).
    pub teacher_asr_poisoned: Option<f64>,
    /// Mean ASR of the clean teachers (single mode: the clean reference teacher).
    pub teacher_asr_clean: Option<f64>,
    /// Mean clean accuracy of the poisoned teachers.
    pub teacher_accuracy_poisoned: Option<f64>,
    /// Mean clean accuracy of the clean teachers.
    pub teacher_accuracy_clean: Option<f64>,
    /// ASR of the noise-free plurality (single mode: the one teacher).
    pub ensemble_asr: f64,
    /// Clean accuracy of the noise-free plurality.
    pub ensemble_accuracy: f64,
    /// ASR of LNMax answers drawn locally on the histograms (PATE mode).
    pub noisy_aggregate_asr: Option<f64>,
    /// Clean accuracy of those answers.
    pub noisy_aggregate_accuracy: Option<f64>,
    /// Student ASR.
    pub student_asr: f64,
    /// Student clean accuracy.
    pub student_accuracy: f64,
    /// Share of the student's training labels equal to the pool's true labels.
    pub label_accuracy: f64,
    /// Reference (no poisoned teacher) ensemble ASR.
    pub reference_ensemble_asr: f64,
    /// Reference ensemble clean accuracy.
    pub reference_ensemble_accuracy: f64,
    /// Reference student ASR (the trigger's natural rate).
    pub reference_student_asr: f64,
    /// Reference student clean accuracy.
    pub reference_student_accuracy: f64,
    /// Data-independent epsilon spent (`None` in single mode: no privacy).
    pub epsilon: Option<f64>,
    /// Delta of epsilon.
    pub delta: Option<f64>,
    /// Share of the student's queries whose noise-free label is certified at
    /// radius >= the number of poisoned teachers (`None` in single mode).
    pub certified_share: Option<f64>,
    /// Certification of the clean evaluation items.
    pub certified_clean: Option<CertSummary>,
    /// Certification of the triggered evaluation items (against true labels).
    pub certified_triggered: Option<CertSummary>,
    /// Queried public items that carried the trigger.
    pub public_triggered: usize,
    /// Teachers trained by this run (the rest came from the cache).
    pub teachers_trained: usize,
    /// Wall seconds.
    pub total_seconds: f64,
}

/// Runs one experiment, writes `OUT/report.json` and prints a summary.
pub async fn run(args: BackdoorArgs) -> anyhow::Result<BackdoorReport> {
    anyhow::ensure!((0.0..=1.0).contains(&args.poison_rate), "--poison-rate must be in [0, 1]");
    anyhow::ensure!((0.0..=1.0).contains(&args.public_trigger_rate), "--public-trigger-rate must be in [0, 1]");
    anyhow::ensure!((0.0..=1.0).contains(&args.hard_weight), "--hard-weight must be in [0, 1]");
    std::fs::create_dir_all(&args.out)?;
    let report = match args.mode {
        Mode::Pate => super::pate::run(&args).await?,
        Mode::Single => super::single::run(&args).await?,
    };
    std::fs::write(args.out.join("report.json"), serde_json::to_vec_pretty(&report)?)?;
    print_summary(&report);
    say!("  report: {}", args.out.join("report.json").display());
    Ok(report)
}

fn print_summary(r: &BackdoorReport) {
    let o = |v: Option<f64>| v.map_or_else(|| "-".into(), |x| format!("{x:.4}"));
    say!();
    say!("  {:<40} {:>10}", "mode / teachers / poisoned", format!("{} {}/{}", r.mode, r.num_teachers, r.poisoned_teachers));
    say!("  {:<40} {:>10}", "poisoned teacher ASR", o(r.teacher_asr_poisoned));
    say!("  {:<40} {:>10}", "clean teacher ASR", o(r.teacher_asr_clean));
    say!("  {:<40} {:>10.4}", "ensemble ASR (noise-free)", r.ensemble_asr);
    say!("  {:<40} {:>10}", "noisy aggregate ASR (local LNMax)", o(r.noisy_aggregate_asr));
    say!("  {:<40} {:>10.4}", "student ASR", r.student_asr);
    say!("  {:<40} {:>10.4}", "reference student ASR", r.reference_student_asr);
    say!("  {:<40} {:>10.4}", "student accuracy", r.student_accuracy);
    say!("  {:<40} {:>10.4}", "reference student accuracy", r.reference_student_accuracy);
    say!("  {:<40} {:>10}", "epsilon", o(r.epsilon));
    say!("  {:<40} {:>10}", "certified share of queries", o(r.certified_share));
    say!("  {:<40} {:>10.1}", "wall time (s)", r.total_seconds);
}

#[cfg(test)]
mod tests {
    use clap::Parser;

    use super::BackdoorArgs;

    #[derive(Parser)]
    struct Cli {
        #[command(flatten)]
        args: BackdoorArgs,
    }

    fn parse(flags: &[&str]) -> Result<BackdoorArgs, clap::Error> {
        Cli::try_parse_from(std::iter::once("backdoor").chain(flags.iter().copied())).map(|c| c.args)
    }

    #[test]
    fn poisoned_teachers_by_count_or_by_list() {
        let set = |flags: &[&str]| parse(flags).expect("flags parse").poisoned_set();
        assert_eq!(set(&["--poisoned-teachers", "3"]).expect("count"), vec![0, 1, 2]);
        assert_eq!(set(&["--poisoned-ids", "7,2"]).expect("list"), vec![2, 7]);
        assert!(parse(&["--poisoned-ids", "2", "--poisoned-teachers", "1"]).is_err(), "count and list conflict");
        let out_of_range = set(&["--teachers", "5", "--poisoned-ids", "5"]).expect_err("index 5 of 5");
        assert!(out_of_range.to_string().contains("numbered 0..5"), "{out_of_range}");
        assert!(set(&["--poisoned-ids", "1,1"]).is_err(), "repeated index");
        assert!(set(&["--teachers", "2", "--poisoned-teachers", "3"]).is_err());
    }

    #[test]
    fn trigger_flags_are_the_shared_ones() {
        use pate_ml::trigger::{Corner, Pattern, TriggerArgs};
        assert_eq!(parse(&[]).expect("defaults").trigger, TriggerArgs::default());
        let t = parse(&["--trigger", "solid", "--trigger-size", "3", "--trigger-corner", "top-right"]).expect("flags").trigger;
        assert_eq!(t, TriggerArgs { pattern: Pattern::Solid, size: 3, corner: Corner::TopRight });
        assert!(parse(&["--trigger-corner", "middle"]).is_err());
    }
}
