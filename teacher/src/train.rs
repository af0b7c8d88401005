//! `pate-teacher train`: fit a model to one partition and write its checkpoint.

use std::path::PathBuf;

use anyhow::Context;
use pate_ml::checkpoint::{self, ModelMeta};
use pate_ml::data::load_idx_dir;
use pate_ml::data_dir::resolve_data_dir;
use pate_ml::model::ModelKind;
use pate_ml::partition::partition_part;
use pate_ml::split::read_manifest;
use pate_ml::train::TrainConfig;
use pate_ml::trigger::{PoisonSpec, TriggerArgs};

/// How to train one teacher.
#[derive(clap::Args, Debug, Clone)]
pub struct TrainArgs {
    /// Directory with the four IDX files [default: $PATE_DATA_DIR, then
    /// /usr/share/datasets/fashion-mnist, then the download cache]. A
    /// directory written by `pate data split` holds only this teacher's
    /// partition and is used whole.
    #[arg(long)]
    pub data: Option<PathBuf>,
    /// Which partition this teacher owns (0-based).
    #[arg(long, env = "PATE_PARTITION")]
    pub partition: usize,
    /// Into how many disjoint partitions the training set is cut.
    #[arg(long, env = "PATE_PARTITIONS")]
    pub partitions: usize,
    /// Seed of the permutation that cuts the partitions; every teacher of
    /// one ensemble must use the same.
    #[arg(long, default_value_t = 0, env = "PATE_PARTITION_SEED")]
    pub partition_seed: u64,
    /// Model architecture.
    #[arg(long, default_value = "mlp", env = "PATE_MODEL")]
    pub model: ModelKind,
    /// Training epochs.
    #[arg(long, default_value_t = TrainConfig::default().epochs, env = "PATE_EPOCHS")]
    pub epochs: usize,
    /// Minibatch size.
    #[arg(long, default_value_t = TrainConfig::default().batch_size, env = "PATE_BATCH_SIZE")]
    pub batch_size: usize,
    /// AdamW learning rate.
    #[arg(long, default_value_t = TrainConfig::default().learning_rate, env = "PATE_LEARNING_RATE")]
    pub learning_rate: f64,
    /// Shift augmentation: every training item is moved by a random offset
    /// of up to this many pixels along both axes, anew in every epoch
    /// (0: none). Helps small partitions; costs no privacy.
    #[arg(long, default_value_t = 0, env = "PATE_MAX_SHIFT")]
    pub max_shift: usize,
    /// Models on fixed features (scatter): standardise the features on the
    /// partition and penalise the head's squared weights by this in the
    /// loss (0 = raw features, no penalty; sklearn's C = 1 / (2 n L2)).
    #[arg(long, default_value_t = 0.0, env = "PATE_FEATURE_L2")]
    pub feature_l2: f64,
    /// Seed of weight initialisation and shuffling.
    #[arg(long, default_value_t = 0, env = "PATE_SEED")]
    pub seed: u64,
    /// Checkpoint directory to write (model.safetensors + meta.json).
    #[arg(long, env = "PATE_CHECKPOINT")]
    pub out: PathBuf,
    /// EXPERIMENTS ONLY: share of this partition to stamp with a backdoor
    /// trigger and relabel to --poison-target (0 = clean).
    #[arg(long, default_value_t = 0.0, env = "PATE_POISON_RATE")]
    pub poison_rate: f64,
    /// EXPERIMENTS ONLY: the class poisoned items are relabelled to.
    #[arg(long, default_value_t = 0, env = "PATE_POISON_TARGET")]
    pub poison_target: u8,
    /// EXPERIMENTS ONLY: the trigger stamped on poisoned items.
    #[command(flatten)]
    pub trigger: TriggerArgs,
}

impl TrainArgs {
    /// The poisoning this run applies, if any.
    pub fn poison_spec(&self) -> Option<PoisonSpec> {
        (self.poison_rate > 0.0).then(|| PoisonSpec {
            trigger: self.trigger.into(),
            rate: self.poison_rate,
            target_class: self.poison_target,
            seed: self.seed ^ (self.partition as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15),
        })
    }
}

/// Trains the teacher described by `args` and writes its checkpoint.
/// Blocking: call it from a thread of its own, not the async runtime.
pub fn train(args: &TrainArgs) -> anyhow::Result<ModelMeta> {
    let dir = resolve_data_dir(args.data.as_deref())?;
    let data = load_idx_dir(&dir).with_context(|| format!("loading data from {}", dir.display()))?;
    // A data owner's directory (`pate data split`) already holds only this
    // partition: train on all of it, after checking it is the one asked for.
    let (classes, mut part) = match read_manifest(&dir)? {
        Some(m) => {
            anyhow::ensure!(
                (m.partition, m.partitions, m.partition_seed) == (args.partition, args.partitions, args.partition_seed),
                "{} holds partition {} of {} (seed {}), but this teacher is partition {} of {} (seed {})",
                dir.display(), m.partition, m.partitions, m.partition_seed, args.partition, args.partitions, args.partition_seed
            );
            anyhow::ensure!(data.train.len() == m.items, "{} holds {} items, its manifest says {}", dir.display(), data.train.len(), m.items);
            (m.classes, data.train)
        }
        None => {
            let idx = partition_part(data.train.len(), args.partitions, args.partition_seed, args.partition)?;
            (data.num_classes(), data.train.select(&idx))
        }
    };
    let poison = args.poison_spec();
    if let Some(spec) = &poison {
        anyhow::ensure!((0.0..=1.0).contains(&spec.rate), "--poison-rate must be in [0, 1], got {}", spec.rate);
        anyhow::ensure!((spec.target_class as usize) < classes, "--poison-target {} is not a class", spec.target_class);
        tracing::warn!(partition = args.partition, rate = spec.rate, target = spec.target_class, "poisoning training data (experiment)");
        part = pate_ml::trigger::poison(&part, spec);
    }
    let cfg = TrainConfig {
        epochs: args.epochs,
        batch_size: args.batch_size,
        learning_rate: args.learning_rate,
        seed: args.seed,
        max_shift: args.max_shift,
        feature_l2: args.feature_l2,
        ..TrainConfig::default()
    };
    let partition = args.partition;
    tracing::info!(partition, partitions = args.partitions, items = part.len(), model = %args.model, "training teacher");
    let trained = pate_ml::train::train(args.model, &part, classes, &cfg, &mut |r| {
        tracing::info!(partition, epoch = r.epoch, loss = r.loss, accuracy = r.train_accuracy, samples_per_sec = r.samples_per_sec as u64, "epoch done");
    })?;
    let meta = ModelMeta::of_training(&trained, &part, (args.partition, args.partitions), poison)?;
    checkpoint::save(&args.out, &trained, &meta).with_context(|| format!("writing checkpoint {}", args.out.display()))?;
    tracing::info!(partition, accuracy = meta.train_accuracy, out = %args.out.display(), "teacher trained");
    Ok(meta)
}
