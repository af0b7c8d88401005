//! `pate data`: fetch and inspect IDX datasets.

use std::path::PathBuf;

use anyhow::Context;
use pate_ml::data::{load_idx_dir, resolve_data_dir};
use pate_ml::fetch::{cache_dir, fetch, FetchSpec, DEFAULT_BASE_URL};

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
        DataCommand::Info { data } => {
            let dir = resolve_data_dir(data.as_deref())?;
            let d = load_idx_dir(&dir).with_context(|| format!("loading {}", dir.display()))?;
            println!("{}: train {} items, test {} items, {}x{} pixels, {} classes", dir.display(), d.train.len(), d.test.len(), d.train.images.rows, d.train.images.cols, d.num_classes());
        }
    }
    Ok(())
}
