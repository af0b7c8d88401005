//! Where the binaries look for data and put downloads: the environment
//! (`$PATE_DATA_DIR`, `$PATE_CACHE_DIR`, `$XDG_CACHE_HOME`, `$HOME`) and
//! Debian's path. This is policy for the front ends (`pate`, `pate-teacher`,
//! `pate-student`, and the tests and benches that look for the real data):
//! the library's readers ([`crate::data`]) and downloader ([`crate::fetch`])
//! take explicit directories and never read the environment. A `--data`
//! flag left out resolves through [`resolve_data_dir`], `pate data fetch`
//! without `--dest` writes to [`cache_dir`].

use std::path::{Path, PathBuf};

use crate::data::has_idx_files;

/// Where Debian's `dataset-fashion-mnist` package installs the data.
pub const DEBIAN_FASHION_MNIST_DIR: &str = "/usr/share/datasets/fashion-mnist";
/// Environment variable naming the data directory.
pub const DATA_DIR_ENV: &str = "PATE_DATA_DIR";
/// Environment variable overriding the download cache directory.
pub const CACHE_DIR_ENV: &str = "PATE_CACHE_DIR";

/// No data directory was given and none was found.
#[derive(Debug, thiserror::Error)]
pub enum DataDirError {
    /// Nothing named, nothing found where the defaults point.
    #[error("no dataset found: {0}")]
    NotFound(String),
}

fn env_path(key: &str) -> Option<PathBuf> {
    std::env::var_os(key).filter(|v| !v.is_empty()).map(PathBuf::from)
}

/// The download cache: `$PATE_CACHE_DIR`, else `$XDG_CACHE_HOME/pate/fashion-mnist`,
/// else `~/.cache/pate/fashion-mnist` (else `./.cache/pate/fashion-mnist`).
pub fn cache_dir() -> PathBuf {
    if let Some(p) = env_path(CACHE_DIR_ENV) {
        return p;
    }
    let base = env_path("XDG_CACHE_HOME")
        .or_else(|| env_path("HOME").map(|h| h.join(".cache")))
        .unwrap_or_else(|| PathBuf::from(".cache"));
    base.join("pate").join("fashion-mnist")
}

/// Finds the data directory.
///
/// Order: `explicit`, else `$PATE_DATA_DIR`, else Debian's
/// `/usr/share/datasets/fashion-mnist` if it holds the files, else the
/// download cache ([`cache_dir`]) if it holds them. An explicit directory or
/// `$PATE_DATA_DIR` is returned as is (loading reports what is missing in it).
pub fn resolve_data_dir(explicit: Option<&Path>) -> Result<PathBuf, DataDirError> {
    if let Some(p) = explicit {
        return Ok(p.to_path_buf());
    }
    if let Some(p) = env_path(DATA_DIR_ENV) {
        return Ok(p);
    }
    let debian = PathBuf::from(DEBIAN_FASHION_MNIST_DIR);
    if has_idx_files(&debian) {
        return Ok(debian);
    }
    let cache = cache_dir();
    if has_idx_files(&cache) {
        return Ok(cache);
    }
    Err(DataDirError::NotFound(format!(
        "no --data given, ${DATA_DIR_ENV} unset, and neither {} nor {} holds the IDX files; \
         run `pate data fetch` to download Fashion-MNIST, or `apt-get install dataset-fashion-mnist`",
        debian.display(),
        cache.display()
    )))
}
