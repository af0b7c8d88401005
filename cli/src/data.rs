//! `pate data`: fetch and inspect IDX datasets.

use std::path::PathBuf;

use anyhow::Context;
use pate_ml::data::load_idx_dir;
use pate_ml::data_dir::{cache_dir, resolve_data_dir};
use pate_ml::fetch::{fetch, FetchSpec, DEFAULT_BASE_URL};

use crate::progress::FetchBars;

/// `pate data` subcommands.
#[derive(clap::Subcommand, Debug)]
pub enum DataCommand {
    /// Download Fashion-MNIST into the cache and check every file's SHA-256.
    Fetch {
        /// Base URL holding the four .gz files.
        #[arg(long, default_value = DEFAULT_BASE_URL, env = "PATE_DATA_URL")]
        base_url: String,
        /// Directory to write [default: $PATE_CACHE_DIR or ~/.cache/pate/fashion-mnist].
        #[arg(long)]
        dest: Option<PathBuf>,
    },
    /// Cut the training split into one directory per teacher partition
    /// (`OUT/teacher-<i>/`, with `partition.json`) and write the test split
    /// alone into `OUT/student/`: each data owner's view, for deployments
    /// that give every teacher container only its own partition.
    Split {
        /// Directory with the four IDX files.
        #[arg(long)]
        data: Option<PathBuf>,
        /// Number of partitions (teachers).
        #[arg(long)]
        partitions: usize,
        /// Seed of the permutation (as `pate-teacher train --partition-seed`).
        #[arg(long, default_value_t = 0)]
        partition_seed: u64,
        /// Directory to write; must be empty or absent.
        #[arg(long)]
        out: PathBuf,
    },
    /// Show where the data is found and what it holds.
    Info {
        /// Directory with the four IDX files.
        #[arg(long)]
        data: Option<PathBuf>,
    },
}

/// Runs a `pate data` subcommand.
pub fn run(cmd: DataCommand) -> anyhow::Result<()> {
    match cmd {
        DataCommand::Fetch { base_url, dest } => {
            let dest = dest.unwrap_or_else(cache_dir);
            std::fs::create_dir_all(&dest).with_context(|| format!("creating {}", dest.display()))?;
            fetch(&FetchSpec::fashion_mnist(&base_url), &dest, &mut FetchBars::default())?;
            println!("Fashion-MNIST ready in {}", dest.display());
        }
        DataCommand::Split { data, partitions, partition_seed, out } => {
            anyhow::ensure!(partitions > 0, "--partitions must be at least 1");
            crate::deploy::out_dir::ensure_empty(&out)?;
            let dir = resolve_data_dir(data.as_deref())?;
            let d = load_idx_dir(&dir).with_context(|| format!("loading {}", dir.display()))?;
            std::fs::create_dir_all(&out).with_context(|| format!("creating {}", out.display()))?;
            let manifests = pate_ml::split::write_owner_dirs(&d, partitions, partition_seed, &out)?;
            println!("{} partitions of {} training items and the {} test items written to {}", manifests.len(), d.train.len(), d.test.len(), out.display());
        }
        DataCommand::Info { data } => {
            let dir = resolve_data_dir(data.as_deref())?;
            let d = load_idx_dir(&dir).with_context(|| format!("loading {}", dir.display()))?;
            println!("{}: train {} items, test {} items, {}x{} pixels, {} classes", dir.display(), d.train.len(), d.test.len(), d.train.images.rows, d.train.images.cols, d.num_classes());
        }
    }
    Ok(())
}
