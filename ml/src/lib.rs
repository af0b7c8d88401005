//! pate-ml: the machine-learning half of the PATE framework, with no network
//! code except the dataset downloader.
//!
//! - [`data`]: IDX datasets (gzipped or raw) read from an explicit
//!   directory, fingerprints, the student's pool/evaluation split.
//! - [`data_dir`]: the binaries' policy for where data is found by default
//!   and where downloads go (environment, Debian's path, the cache).
//! - [`decoded`]: an uncompressed copy of a data set, made once for the
//!   many processes of a lab.
//! - [`feature_cache`]: precomputed scattering features of public images,
//!   shared by a lab's teacher processes.
//! - [`fetch`]: downloading Fashion-MNIST into a cache with SHA-256 checks.
//! - [`partition`]: disjoint teacher partitions from a seeded permutation.
//! - [`split`]: one directory per data owner (teacher partition, student).
//! - [`model`]: candle MLP and CNN classifiers with seeded initialisation;
//!   their layers are fused candle custom ops (`conv`, `dense`) over one
//!   bounds-checked `gemm` wrapper, the crate's only `unsafe` code.
//! - [`scatter`]: a fixed wavelet scattering transform (privacy-free
//!   features for the `scatter` model).
//! - [`optim`]: a fused AdamW (candle-nn's is slow on CPU).
//! - [`train`]: minibatch AdamW training, distillation on soft targets,
//!   prediction and accuracy.
//! - [`semi`]: semi-supervised (FixMatch-style) training on labelled and
//!   unlabelled items, for the student.
//! - [`checkpoint`]: safetensors weights plus a JSON metadata file.
//! - [`trigger`]: BadNets triggers, poisoning and attack success rate
//!   (experiments only).
//! - [`attack`], [`advtrain`], [`calibration`], [`dknn`]: adversarial
//!   examples, adversarial training and fine-tuning, calibration metrics and
//!   Deep k-NN credibility (experiments only; `pate experiment robustness`).

pub mod advtrain;
pub mod attack;
pub mod calibration;
pub mod checkpoint;
mod conv;
pub mod data;
pub mod data_dir;
pub mod decoded;
mod dense;
pub mod dknn;
pub mod feature_cache;
pub mod fetch;
mod gemm;
pub mod model;
pub mod optim;
pub mod partition;
pub mod scatter;
#[cfg(test)]
mod test_util;
pub mod semi;
pub mod split;
pub mod train;
pub mod trigger;

pub use data::{Dataset, IdxData, Images, StudentSplit};
pub use model::{Classifier, ModelKind};
pub use train::{EpochReport, TrainConfig, Trained};

/// The variable that sizes candle's own CPU thread pool.
const CANDLE_THREADS_ENV: &str = "CANDLE_NUM_THREADS";

/// Keeps candle's own thread pool (its elementwise ops over large tensors)
/// to the calling thread, by setting `CANDLE_NUM_THREADS=1` unless the
/// environment already sets it. pate-ml does its parallel work on rayon's
/// threads (the layers' kernels, a batch's parts); candle's pool lets one
/// caller in at a time and spins after every op, so with it beside rayon's
/// two threads the MLP trained at under half the speed (46-50k against
/// 108k samples/s, docs/BENCHMARKS.md). Call it first thing in `main`,
/// before any thread starts (it sets an environment variable, which child
/// processes inherit).
pub fn init_cpu_threads() {
    if std::env::var_os(CANDLE_THREADS_ENV).is_none() {
        std::env::set_var(CANDLE_THREADS_ENV, "1");
    }
}
