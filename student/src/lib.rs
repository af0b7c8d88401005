//! A PATE student: it holds public, unlabelled inputs and a small labelled
//! evaluation set. It asks the aggregator to label some of the inputs,
//! trains its own model on the answers, and checks itself on the evaluation
//! set. It never sees a teacher or a teacher's data.

pub mod query;
pub mod rank;

use std::path::PathBuf;

use anyhow::Context;
use pate_ml::checkpoint::{self, ModelMeta};
use pate_ml::data::{load_idx_dir, student_split, Dataset, Images};
use pate_ml::data_dir::resolve_data_dir;
use pate_ml::model::ModelKind;
use pate_ml::semi::{train_semi, SemiSupervised};
use pate_ml::train::{accuracy, predict, Augment, TrainConfig, Trained};
use pate_ml::trigger::{poison_indices, PoisonSpec, Trigger, TriggerArgs};
use rand::seq::SliceRandom;
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Serialize};

pub use query::{label_pool, Labelled};

/// How the student runs.
#[derive(clap::Args, Debug, Clone)]
pub struct Config {
    /// Aggregator address (host:port or http://host:port).
    #[arg(long, default_value = "127.0.0.1:50050", env = "PATE_AGGREGATOR")]
    pub aggregator: String,
    /// Directory with the four IDX files [default: $PATE_DATA_DIR, then
    /// /usr/share/datasets/fashion-mnist, then the download cache].
    #[arg(long)]
    pub data: Option<PathBuf>,
    /// The last K items of the test split are the labelled evaluation set;
    /// the rest is the public pool the student may query.
    #[arg(long, default_value_t = 1000, env = "PATE_EVAL_SIZE")]
    pub eval_size: usize,
    /// Pool items to ask labels for (capped at the pool's size).
    #[arg(long, default_value_t = 1000, env = "PATE_QUERIES")]
    pub queries: usize,
    /// Ask the first N queries in random order, then the rest of the pool
    /// surest first (a linear model on scattering features, trained on the
    /// answers so far, ranks it; its classes take turns) (0 = all random).
    /// Under Confident-GNMax far more ranked queries pass the threshold
    /// check and come back right, for the same epsilon, at no privacy cost;
    /// but on Fashion-MNIST the semi-supervised student learned less from
    /// them (docs/PRIVATE_LAB.md).
    #[arg(long, default_value_t = 0, env = "PATE_RANK_AFTER")]
    pub rank_after: usize,
    /// Samples per Label call (capped at the aggregator's limit).
    #[arg(long, default_value_t = 250, env = "PATE_QUERY_BATCH")]
    pub query_batch: usize,
    /// Label calls in flight at once: overlapping them keeps the teachers
    /// busy and lets the aggregator merge their fan-outs into one Vote per
    /// teacher. A call refused beside others is asked again alone, and
    /// near a data-dependent target the aggregator decides calls one at a
    /// time in arrival order, so the run stops where one at a time would
    /// [default: enough calls to carry twice the aggregator's largest
    /// batch, at most 256: 205 calls of 10 against its default 1024;
    /// docs/BENCHMARKS.md, "Labelling at scale"].
    #[arg(long, env = "PATE_MAX_IN_FLIGHT")]
    pub max_in_flight: Option<usize>,
    /// Seed that picks the queried items and trains the student.
    #[arg(long, default_value_t = 0, env = "PATE_SEED")]
    pub seed: u64,
    /// Prefix of the request ids; rerunning with the same run id replays
    /// the recorded answers at no privacy cost [default: random].
    #[arg(long, env = "PATE_RUN_ID")]
    pub run_id: Option<String>,
    /// Student model architecture.
    #[arg(long, default_value = "mlp", env = "PATE_MODEL")]
    pub model: ModelKind,
    /// Training epochs of the student.
    #[arg(long, default_value_t = 40, env = "PATE_EPOCHS")]
    pub epochs: usize,
    /// Semi-supervised training: also learn from the unlabelled rest of the
    /// public pool with a FixMatch-style consistency loss (no privacy cost).
    #[arg(long, env = "PATE_SEMI_SUPERVISED")]
    pub semi_supervised: bool,
    /// Semi-supervised: weight of the consistency loss on unlabelled items.
    #[arg(long, default_value_t = 1.0, env = "PATE_UNLABELLED_WEIGHT")]
    pub unlabelled_weight: f64,
    /// Semi-supervised: a pseudo-label is used only where the model's top
    /// probability on the weak view reaches this.
    #[arg(long, default_value_t = 0.95, env = "PATE_PSEUDO_CONFIDENCE")]
    pub pseudo_confidence: f64,
    /// Learning rate of the student's AdamW.
    #[arg(long, default_value_t = TrainConfig::default().learning_rate, env = "PATE_LEARNING_RATE")]
    pub learning_rate: f64,
    /// Semi-supervised: mirror images left-right at random in both views
    /// (and the labelled items).
    #[arg(long, env = "PATE_FLIP")]
    pub flip: bool,
    /// Semi-supervised: the strong view's contrast jitter (pixels scaled by
    /// a factor in 1 ± this; 0 = off).
    #[arg(long, default_value_t = 0.0, env = "PATE_STRONG_CONTRAST")]
    pub strong_contrast: f32,
    /// Semi-supervised: the strong view's Gaussian pixel noise (sd on the
    /// 0-1 scale; 0 = off).
    #[arg(long, default_value_t = 0.0, env = "PATE_STRONG_NOISE")]
    pub strong_noise: f32,
    /// Semi-supervised: the trained model is the moving average of the
    /// weights with this decay (0 = the last weights; FixMatch uses 0.999).
    #[arg(long, default_value_t = 0.0, env = "PATE_AVERAGE")]
    pub average: f32,
    /// Semi-supervised: cosine decay of the learning rate over the run.
    #[arg(long, env = "PATE_COSINE")]
    pub cosine: bool,
    /// Semi-supervised: label smoothing of the answered items' loss, in
    /// [0, 1) (answers are noisy; smoothing caps a wrong one's pull).
    #[arg(long, default_value_t = 0.0, env = "PATE_LABEL_SMOOTHING")]
    pub label_smoothing: f32,
    /// Seconds to keep retrying an aggregator that is not up yet, or that
    /// is briefly unavailable mid-run (restarting, below its quorum):
    /// retries reuse the request id, so they are never charged twice.
    #[arg(long, default_value_t = 120.0, env = "PATE_CONNECT_TIMEOUT")]
    pub connect_timeout: f64,
    /// Seconds to pause between two Label batches (0 = none): paces a
    /// student sharing the aggregator with others, and fault drills.
    #[arg(long, default_value_t = 0.0, env = "PATE_QUERY_INTERVAL")]
    pub query_interval: f64,
    /// Directory for the student's checkpoint, report.json and progress.json.
    #[arg(long, default_value = "student-out", env = "PATE_OUT")]
    pub out: PathBuf,
    /// EXPERIMENTS ONLY (the honest-limit control of backdoor experiments):
    /// share of the queried public items stamped with the trigger before
    /// they are sent for labelling (0 = pristine public data).
    #[arg(long, default_value_t = 0.0, env = "PATE_PUBLIC_TRIGGER_RATE")]
    pub public_trigger_rate: f64,
    /// EXPERIMENTS ONLY: the trigger stamped on public items.
    #[command(flatten)]
    pub trigger: TriggerArgs,
    /// Transport security: the student's certificate identifies it to the
    /// aggregator (and to its own budget there).
    #[command(flatten)]
    pub tls: pate_proto::tls::TlsArgs,
}

impl Config {
    /// The consistency training these flags ask for, on images whose
    /// smaller side is `side` pixels: the strong view's shift and cutout
    /// scale with the image (3 and 8 pixels on 28x28, as FixMatch's
    /// defaults on 32x32).
    pub fn semi_config(&self, side: usize) -> SemiSupervised {
        let weak = Augment { flip: self.flip, ..Augment::shift(1) };
        SemiSupervised {
            unlabelled_weight: self.unlabelled_weight,
            confidence: self.pseudo_confidence,
            weak,
            strong: Augment {
                shift: (side / 9).max(1),
                cutout: side * 2 / 7,
                contrast: self.strong_contrast,
                noise: self.strong_noise,
                ..weak
            },
            average: self.average,
            cosine: self.cosine,
            label_smoothing: self.label_smoothing,
            ..SemiSupervised::default()
        }
    }

    /// The trigger stamping of the public items, if the control is on (the
    /// spec's target class is unused: the labels come from the aggregator).
    pub fn public_tamper(&self) -> Option<PoisonSpec> {
        public_tamper(self.public_trigger_rate, self.trigger.into(), self.seed)
    }
}

/// The stamping of a share `rate` of the public queries with `trigger`
/// (`None` when `rate` is 0), seeded from the student's `seed`.
pub fn public_tamper(rate: f64, trigger: Trigger, seed: u64) -> Option<PoisonSpec> {
    (rate > 0.0).then_some(PoisonSpec { trigger, rate, target_class: 0, seed: seed ^ 0x7075_626c_6963 })
}

/// The images the student sends for labelling: the `picked` pool items, with
/// the trigger stamped on a seeded share of them when `tamper` is given.
/// Also returns which of the picked positions carry the trigger.
pub fn query_images(pool: &Images, picked: &[usize], tamper: Option<&PoisonSpec>) -> (Images, Vec<usize>) {
    let mut images = pool.select(picked);
    let Some(spec) = tamper else { return (images, Vec::new()) };
    let stamped = poison_indices(picked.len(), spec);
    let (n, rows, cols) = (images.item_len(), images.rows, images.cols);
    for &i in &stamped {
        spec.trigger.stamp(&mut images.data[i * n..(i + 1) * n], rows, cols);
    }
    (images, stamped)
}

/// What the student reports (also written to `report.json`).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct StudentReport {
    /// Pool items the student asked about.
    pub queries_asked: usize,
    /// Of those, answered with a label.
    pub queries_answered: usize,
    /// The aggregator abstained.
    pub queries_abstained: usize,
    /// Refused for lack of budget.
    pub queries_refused: usize,
    /// Share of the answered labels that match the pool's true labels
    /// (a measurement for experiments; a real student cannot know it).
    pub label_accuracy: f64,
    /// Accuracy on the evaluation set.
    pub student_accuracy: f64,
    /// Data-independent epsilon the aggregator reports as spent.
    pub epsilon: f64,
    /// Delta of that epsilon (0 for pure DP).
    pub delta: f64,
    /// Seconds spent querying.
    pub query_seconds: f64,
    /// Seconds spent training.
    pub train_seconds: f64,
    /// Queried public items that carried the trigger (experiment control).
    #[serde(default)]
    pub public_triggered: usize,
}

/// File in the student's `--out` directory holding its training progress,
/// rewritten after every epoch: what `pate lab` draws its bar of student
/// epochs from (the student's own output goes to a log there).
pub const PROGRESS_FILE: &str = "progress.json";

/// The student's training progress, as written to [`PROGRESS_FILE`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Progress {
    /// Epochs done (1-based: 1 after the first).
    pub epoch: usize,
    /// Epochs in all.
    pub epochs: usize,
}

impl Progress {
    /// Writes `self` to `dir`/[`PROGRESS_FILE`] whole (a reader never sees
    /// half a file: it is written beside and renamed).
    pub fn write(&self, dir: &std::path::Path) -> std::io::Result<()> {
        let tmp = dir.join(format!("{PROGRESS_FILE}.tmp"));
        std::fs::write(&tmp, serde_json::to_vec(self)?)?;
        std::fs::rename(tmp, dir.join(PROGRESS_FILE))
    }

    /// The progress in `dir`, if the student has written any.
    pub fn read(dir: &std::path::Path) -> Option<Progress> {
        serde_json::from_slice(&std::fs::read(dir.join(PROGRESS_FILE)).ok()?).ok()
    }
}

/// File in the student's `--out` directory holding the answers it trained
/// on: which public pool items got which label (the aggregator's released
/// output, so keeping it costs no privacy). Lets the student's training be
/// studied again without asking, hence without paying, a second time.
pub const ANSWERS_FILE: &str = "answers.json";

/// The aggregator's answers, as written to [`ANSWERS_FILE`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Answers {
    /// Indices into the public pool (the test split without its last
    /// `eval_size` items).
    pub pool_index: Vec<usize>,
    /// The released label of each.
    pub label: Vec<u8>,
}

/// Labelled items per step of semi-supervised training: the student has few
/// labels, so small batches give it enough steps per epoch.
const SEMI_BATCH: usize = 32;

/// Picks `queries` pool indices with a seeded shuffle.
pub fn pick_queries(pool_len: usize, queries: usize, seed: u64) -> Vec<usize> {
    let mut idx: Vec<usize> = (0..pool_len).collect();
    idx.shuffle(&mut ChaCha8Rng::seed_from_u64(seed));
    idx.truncate(queries.min(pool_len));
    idx
}

/// Trains the student as `config` says on `train_set` (the answered
/// items), with the rest of `pool` (all but the `answered` pool indices)
/// as its unlabelled data when semi-supervised, and measures it on `eval`.
/// Writes its progress to `progress_dir` when given. Blocking: call it off
/// the async runtime.
pub fn train_student(
    config: &Config,
    train_set: &Dataset,
    pool: &Images,
    answered: &[usize],
    eval: &Dataset,
    classes: usize,
    progress_dir: Option<&std::path::Path>,
) -> anyhow::Result<(Trained, f64)> {
    // Semi-supervised: the unlabelled rest of the pool, pristine (never
    // stamped), without the items the aggregator labelled.
    let semi = config.semi_supervised.then(|| {
        let answered: std::collections::HashSet<usize> = answered.iter().copied().collect();
        let rest: Vec<usize> = (0..pool.len()).filter(|i| !answered.contains(i)).collect();
        (pool.select(&rest), config.semi_config(pool.rows.min(pool.cols)))
    });
    let batch_size = if semi.is_some() { SEMI_BATCH } else { TrainConfig::default().batch_size };
    let cfg = TrainConfig {
        epochs: config.epochs,
        seed: config.seed,
        batch_size,
        learning_rate: config.learning_rate,
        ..TrainConfig::default()
    };
    let epochs = cfg.epochs;
    let mut log = |r: pate_ml::train::EpochReport| {
        tracing::debug!(epoch = r.epoch, loss = r.loss, accuracy = r.train_accuracy, "student epoch");
        if let Some(dir) = progress_dir {
            if let Err(e) = (Progress { epoch: r.epoch, epochs }).write(dir) {
                tracing::debug!(error = %e, "progress file not written");
            }
        }
    };
    let trained = match &semi {
        None => pate_ml::train::train(config.model, train_set, classes, &cfg, &mut log)?,
        Some((unlabelled, s)) => {
            tracing::info!(unlabelled = unlabelled.len(), "semi-supervised training");
            train_semi(config.model, train_set, unlabelled, classes, &cfg, s, &mut log)?
        }
    };
    let acc = accuracy(&predict(&trained.model, &eval.images, 512)?, &eval.labels);
    Ok((trained, acc))
}

/// Queries the aggregator, trains, evaluates, and writes the checkpoint and
/// `report.json` under `config.out`.
pub async fn run(config: Config) -> anyhow::Result<StudentReport> {
    let dir = resolve_data_dir(config.data.as_deref())?;
    let data_dir = dir.clone();
    let data = tokio::task::spawn_blocking(move || load_idx_dir(&data_dir)).await?
        .with_context(|| format!("loading data from {}", dir.display()))?;
    let classes = data.num_classes();
    let split = student_split(&data.test, config.eval_size)?;
    let picked = pick_queries(split.pool.len(), config.queries, config.seed);
    if picked.len() < config.queries {
        tracing::warn!(asked = config.queries, pool = split.pool.len(), "queries capped at the public pool's size");
    }
    let tamper = config.public_tamper();
    let (queried, stamped) = query_images(&split.pool, &picked, tamper.as_ref());
    if !stamped.is_empty() {
        tracing::warn!(stamped = stamped.len(), "stamping the trigger on public items (experiment control)");
    }
    let query_start = std::time::Instant::now();
    let labelled = if config.rank_after > 0 && config.rank_after < queried.len() {
        rank::label_ranked(&config, &queried, classes).await?
    } else {
        label_pool(&config, &queried, classes).await?
    };
    let query_seconds = query_start.elapsed().as_secs_f64();
    anyhow::ensure!(!labelled.items.is_empty(), "the aggregator answered none of {} queries: nothing to train on", picked.len());

    std::fs::create_dir_all(&config.out).with_context(|| format!("creating {}", config.out.display()))?;
    let answers = Answers { pool_index: labelled.items.iter().map(|&i| picked[i]).collect(), label: labelled.labels.clone() };
    let path = config.out.join(ANSWERS_FILE);
    std::fs::write(&path, serde_json::to_vec(&answers)?).with_context(|| format!("writing {}", path.display()))?;

    let true_labels: Vec<u8> = labelled.items.iter().map(|&i| split.pool_labels[picked[i]]).collect();
    let train_set = Dataset { images: queried.select(&labelled.items), labels: labelled.labels.clone() };
    let label_accuracy = accuracy(&train_set.labels, &true_labels);
    tracing::info!(answered = train_set.len(), label_accuracy, "training student");

    let train_start = std::time::Instant::now();
    let (cfg_in, pool, eval, out) = (config.clone(), split.pool, split.eval, config.out.clone());
    let answered = answers.pool_index.clone();
    let student_accuracy = tokio::task::spawn_blocking(move || -> anyhow::Result<f64> {
        let (trained, acc) = train_student(&cfg_in, &train_set, &pool, &answered, &eval, classes, Some(&out))?;
        let meta = ModelMeta::of_training(&trained, &train_set, (0, 1), None)?;
        checkpoint::save(&out.join("model"), &trained, &meta)?;
        Ok(acc)
    })
    .await??;

    let report = StudentReport {
        queries_asked: picked.len(),
        queries_answered: labelled.items.len(),
        queries_abstained: labelled.abstained,
        queries_refused: labelled.refused,
        label_accuracy,
        student_accuracy,
        epsilon: labelled.budget.epsilon_spent,
        delta: labelled.budget.delta,
        query_seconds,
        train_seconds: train_start.elapsed().as_secs_f64(),
        public_triggered: stamped.len(),
    };
    let path = config.out.join("report.json");
    std::fs::write(&path, serde_json::to_vec_pretty(&report)?).with_context(|| format!("writing {}", path.display()))?;
    tracing::info!(accuracy = student_accuracy, epsilon = report.epsilon, "student done");
    Ok(report)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn progress_round_trips_through_its_file() {
        let dir = tempfile::tempdir().expect("tempdir");
        assert_eq!(Progress::read(dir.path()), None, "nothing written yet");
        let p = Progress { epoch: 3, epochs: 40 };
        p.write(dir.path()).expect("write");
        assert_eq!(Progress::read(dir.path()), Some(p));
        assert!(!dir.path().join(format!("{PROGRESS_FILE}.tmp")).exists());
    }

    #[test]
    fn picks_are_seeded_distinct_and_capped() {
        let a = pick_queries(100, 10, 7);
        assert_eq!(a, pick_queries(100, 10, 7));
        assert_ne!(a, pick_queries(100, 10, 8));
        let mut s = a.clone();
        s.sort_unstable();
        s.dedup();
        assert_eq!(s.len(), 10);
        assert_eq!(pick_queries(5, 10, 0).len(), 5);
    }

    /// The views scale with the image (FixMatch's 3-pixel shift and 8-pixel
    /// cutout at 28x28), and the flags reach them: flip in both views,
    /// jitter only in the strong one.
    #[test]
    fn semi_config_follows_the_flags() {
        #[derive(clap::Parser)]
        struct Cli {
            #[command(flatten)]
            c: Config,
        }
        let parse = |args: &[&str]| <Cli as clap::Parser>::parse_from([&["student"], args].concat()).c;
        let plain = parse(&[]).semi_config(28);
        assert_eq!((plain.weak.shift, plain.strong.shift, plain.strong.cutout), (1, 3, 8));
        assert!(!plain.weak.flip && plain.average == 0.0 && !plain.cosine);
        let tuned = parse(&["--flip", "--strong-noise", "0.1", "--strong-contrast", "0.2", "--average", "0.99", "--cosine"])
            .semi_config(28);
        assert!(tuned.weak.flip && tuned.strong.flip && tuned.cosine);
        assert_eq!((tuned.weak.noise, tuned.strong.noise, tuned.strong.contrast, tuned.average), (0.0, 0.1, 0.2, 0.99));
        assert_eq!(parse(&[]).semi_config(8).strong.cutout, 2);
    }
}
