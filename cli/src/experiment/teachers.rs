//! Teachers of an experiment, trained once and cached: each teacher's
//! checkpoint lives in `CACHE/<hash>/` where the hash covers everything
//! that shapes it (data, partitioning, seed, model, epochs, poisoning).
//! Grid cells that share a teacher configuration reuse its checkpoint.

use std::path::{Path, PathBuf};

use anyhow::Context;
use pate_ml::model::ModelKind;
use pate_ml::trigger::{Trigger, TriggerArgs};
use serde::Serialize;
use sha2::{Digest, Sha256};

use crate::lab::parties::RunDirs;
use crate::lab::procs::run_bounded;
use crate::lab::workers::Concurrency;
use crate::lab::{argv, path_arg};
use crate::progress::{say, Bar};

/// Everything that determines one PATE teacher's checkpoint.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct TeacherSpec {
    /// Data directory.
    pub data: PathBuf,
    /// Partition index.
    pub partition: usize,
    /// Number of partitions.
    pub partitions: usize,
    /// Seed of the partitioning.
    pub partition_seed: u64,
    /// Training seed.
    pub seed: u64,
    /// Architecture.
    pub model: ModelKind,
    /// Training epochs.
    pub epochs: usize,
    /// Poisoning (rate, target, trigger), if any.
    pub poison: Option<(f64, u8, Trigger)>,
}

/// Short stable hash of a serialisable configuration (for cache keys).
pub fn config_hash(value: &impl Serialize) -> String {
    let json = serde_json::to_vec(value).unwrap_or_default();
    hex::encode(&Sha256::digest(&json)[..8])
}

impl TeacherSpec {
    /// The checkpoint directory of this teacher in `cache`.
    pub fn dir(&self, cache: &Path) -> PathBuf {
        let kind = if self.poison.is_some() { "poisoned" } else { "clean" };
        cache.join(format!("teacher-{}of{}-{kind}-{}", self.partition, self.partitions, config_hash(self)))
    }

    /// The `pate-teacher train` flags writing to `out`, reading `data`
    /// (the same data set as `self.data`, maybe its decoded copy).
    fn train_args(&self, out: &Path, data: &Path) -> Vec<String> {
        let mut a = argv![
            "train", "--data", path_arg(data), "--partition", self.partition, "--partitions", self.partitions,
            "--partition-seed", self.partition_seed, "--seed", self.seed, "--model", self.model,
            "--epochs", self.epochs, "--out", path_arg(out),
        ];
        if let Some((rate, target, trigger)) = &self.poison {
            a.extend(argv!["--poison-rate", rate, "--poison-target", target]);
            a.extend(TriggerArgs::from(trigger.clone()).to_flags());
        }
        a
    }
}

/// Trains (as `pate-teacher train` processes, `jobs` at a time, by default
/// one per core, sharing the cores) every spec whose checkpoint is not in
/// `cache` yet; returns how many it trained. The processes read `data`, a
/// decoded copy of the specs' data set ([`pate_ml::decoded`]); the specs
/// (and so the cache keys) keep naming the source.
pub async fn ensure_trained(
    bin: &Path,
    specs: &[TeacherSpec],
    cache: &Path,
    dirs: &RunDirs,
    jobs: Option<usize>,
    data: &Path,
) -> anyhow::Result<usize> {
    std::fs::create_dir_all(cache).with_context(|| format!("creating {}", cache.display()))?;
    let mut pending = Vec::new();
    let mut finals = Vec::new();
    for spec in specs {
        let dir = spec.dir(cache);
        if dir.join("meta.json").is_file() || finals.contains(&dir) {
            continue;
        }
        let tmp = dir.with_extension("partial");
        let _ = std::fs::remove_dir_all(&tmp);
        let label = dir.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
        pending.push((bin.to_path_buf(), spec.train_args(&tmp, data), dirs.logs.join(format!("{label}-train.log")), label));
        finals.push(dir);
    }
    let trained = pending.len();
    if trained == 0 {
        say!("  all {} teachers found in the cache {}", specs.len(), cache.display());
        return Ok(0);
    }
    let plan = Concurrency::on_this_machine(jobs, trained);
    say!("  training {trained} teachers ({} cached), {} at once, {} thread(s) each", specs.len() - trained, plan.processes, plan.threads);
    let bar = Bar::teachers(trained);
    run_bounded(pending, plan, |label, done, total| bar.step(format_args!("  [{done:>3}/{total}] trained {label}"))).await?;
    drop(bar);
    for dir in finals {
        let tmp = dir.with_extension("partial");
        std::fs::rename(&tmp, &dir).with_context(|| format!("moving {} to {}", tmp.display(), dir.display()))?;
    }
    Ok(trained)
}
