//! Saving and loading trained models: `DIR/model.safetensors` (the weights)
//! and `DIR/meta.json` ([`ModelMeta`]). Both are written atomically
//! (temporary file, then rename).

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use candle_core::{DType, Device, Tensor};
use candle_nn::VarBuilder;
use serde::{Deserialize, Serialize};

use crate::model::{Classifier, ModelKind};
use crate::train::Trained;
use crate::trigger::PoisonSpec;

/// File name of the weights inside a checkpoint directory.
pub const WEIGHTS_FILE: &str = "model.safetensors";
/// File name of the metadata inside a checkpoint directory.
pub const META_FILE: &str = "meta.json";

/// What a checkpoint says about its model and the data it was trained on.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
pub struct ModelMeta {
    /// The architecture.
    pub model_kind: ModelKind,
    /// Image rows.
    pub rows: usize,
    /// Image columns.
    pub cols: usize,
    /// Number of classes.
    pub classes: usize,
    /// Which partition the model was trained on (0-based).
    pub partition_index: usize,
    /// Into how many partitions the training set was cut.
    pub partition_count: usize,
    /// [`crate::data::fingerprint`] of the training data.
    pub data_fingerprint: String,
    /// Accuracy on the training data.
    pub train_accuracy: f64,
    /// Number of training items.
    pub train_items: usize,
    /// Set when the training data was poisoned (experiments only).
    pub poison: Option<PoisonSpec>,
}

impl ModelMeta {
    /// Describes a model just trained on `data` (partition `index` of
    /// `count`): fingerprints the data and measures the training accuracy.
    pub fn of_training(
        trained: &Trained,
        data: &crate::data::Dataset,
        (index, count): (usize, usize),
        poison: Option<PoisonSpec>,
    ) -> Result<Self, crate::train::TrainError> {
        let pred = crate::train::predict(&trained.model, &data.images, 512)?;
        Ok(ModelMeta {
            model_kind: trained.kind,
            rows: trained.rows,
            cols: trained.cols,
            classes: trained.classes,
            partition_index: index,
            partition_count: count,
            data_fingerprint: crate::data::fingerprint(data),
            train_accuracy: crate::train::accuracy(&pred, &data.labels),
            train_items: data.len(),
            poison,
        })
    }
}

/// Errors while saving or loading a checkpoint. Each names the file.
#[derive(Debug, thiserror::Error)]
pub enum CheckpointError {
    /// A file is missing or cannot be read or written.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The underlying error.
        #[source]
        source: std::io::Error,
    },
    /// `meta.json` is not valid.
    #[error("{path}: invalid checkpoint metadata: {source}")]
    Meta {
        /// The file.
        path: PathBuf,
        /// The underlying error.
        #[source]
        source: serde_json::Error,
    },
    /// The metadata describes an impossible model.
    #[error("{path}: {reason}")]
    BadMeta {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        reason: String,
    },
    /// The weights are corrupt or do not fit the model the metadata describes.
    #[error("{path}: weights do not load into a {kind} model of {rows}x{cols} inputs and {classes} classes: {source}")]
    Weights {
        /// The weights file.
        path: PathBuf,
        /// The architecture in the metadata.
        kind: ModelKind,
        /// Rows in the metadata.
        rows: usize,
        /// Columns in the metadata.
        cols: usize,
        /// Classes in the metadata.
        classes: usize,
        /// The underlying error.
        #[source]
        source: Box<candle_core::Error>,
    },
    /// The trained model and the metadata disagree.
    #[error("metadata does not match the trained model: {0}")]
    Mismatch(String),
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> CheckpointError {
    let path = path.to_path_buf();
    move |source| CheckpointError::Io { path, source }
}

/// Writes `bytes` to `path` through a temporary file in the same directory.
fn write_atomic(path: &Path, bytes: &[u8]) -> Result<(), CheckpointError> {
    let tmp = path.with_extension(format!("tmp-{}", std::process::id()));
    let res = std::fs::write(&tmp, bytes)
        .map_err(io(&tmp))
        .and_then(|()| std::fs::rename(&tmp, path).map_err(io(path)));
    if res.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    res
}

/// Saves `trained` and `meta` into `dir` (created if needed).
pub fn save(dir: &Path, trained: &Trained, meta: &ModelMeta) -> Result<(), CheckpointError> {
    let ours = (trained.kind, trained.rows, trained.cols, trained.classes);
    let theirs = (meta.model_kind, meta.rows, meta.cols, meta.classes);
    if ours != theirs {
        return Err(CheckpointError::Mismatch(format!(
            "model is {ours:?}, metadata says {theirs:?}"
        )));
    }
    std::fs::create_dir_all(dir).map_err(io(dir))?;
    let tensors: HashMap<String, Tensor> = {
        let data = trained
            .varmap
            .data()
            .lock()
            .map_err(|_| CheckpointError::Mismatch("variable map lock poisoned".into()))?;
        data.iter().map(|(k, v)| (k.clone(), v.as_tensor().clone())).collect()
    };
    let wpath = dir.join(WEIGHTS_FILE);
    let tmp = wpath.with_extension(format!("tmp-{}", std::process::id()));
    let res = candle_core::safetensors::save(&tensors, &tmp)
        .map_err(|e| CheckpointError::Io {
            path: tmp.clone(),
            source: std::io::Error::other(e.to_string()),
        })
        .and_then(|()| std::fs::rename(&tmp, &wpath).map_err(io(&wpath)));
    if res.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    res?;
    let mpath = dir.join(META_FILE);
    let json = serde_json::to_vec_pretty(meta).map_err(|source| CheckpointError::Meta {
        path: mpath.clone(),
        source,
    })?;
    write_atomic(&mpath, &json)
}

/// Reads `dir/meta.json`.
pub fn load_meta(dir: &Path) -> Result<ModelMeta, CheckpointError> {
    let mpath = dir.join(META_FILE);
    let bytes = std::fs::read(&mpath).map_err(io(&mpath))?;
    let meta: ModelMeta = serde_json::from_slice(&bytes).map_err(|source| CheckpointError::Meta {
        path: mpath.clone(),
        source,
    })?;
    if meta.rows == 0 || meta.cols == 0 || meta.classes == 0 || meta.classes > 256 {
        return Err(CheckpointError::BadMeta {
            path: mpath,
            reason: format!(
                "impossible shape: {}x{} images, {} classes",
                meta.rows, meta.cols, meta.classes
            ),
        });
    }
    Ok(meta)
}

/// Loads a checkpoint for inference (CPU).
pub fn load(dir: &Path) -> Result<(Classifier, ModelMeta), CheckpointError> {
    let meta = load_meta(dir)?;
    let wpath = dir.join(WEIGHTS_FILE);
    let bytes = std::fs::read(&wpath).map_err(io(&wpath))?;
    let weights_err = |source| CheckpointError::Weights {
        path: wpath.clone(),
        kind: meta.model_kind,
        rows: meta.rows,
        cols: meta.cols,
        classes: meta.classes,
        source: Box::new(source),
    };
    let tensors = candle_core::safetensors::load_buffer(&bytes, &Device::Cpu).map_err(weights_err)?;
    let vb = VarBuilder::from_tensors(tensors, DType::F32, &Device::Cpu);
    let model = Classifier::new(meta.model_kind, meta.rows, meta.cols, meta.classes, vb).map_err(weights_err)?;
    Ok((model, meta))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::data::{Dataset, Images};
    use crate::train::{predict_proba, train, TrainConfig};

    fn meta(t: &Trained) -> ModelMeta {
        ModelMeta {
            model_kind: t.kind,
            rows: t.rows,
            cols: t.cols,
            classes: t.classes,
            partition_index: 1,
            partition_count: 3,
            data_fingerprint: "ab".into(),
            train_accuracy: 0.5,
            train_items: 20,
            poison: None,
        }
    }

    #[test]
    fn round_trip_and_errors() -> anyhow::Result<()> {
        let ds = Dataset {
            images: Images {
                data: (0..20 * 64).map(|v| (v * 7 % 256) as u8).collect(),
                rows: 8,
                cols: 8,
            },
            labels: (0..20).map(|v| (v % 3) as u8).collect(),
        };
        let cfg = TrainConfig {
            epochs: 1,
            batch_size: 8,
            ..Default::default()
        };
        let dir = tempfile::tempdir()?;
        for kind in [ModelKind::Mlp, ModelKind::Cnn] {
            let t = train(kind, &ds, 3, &cfg, &mut |_| {})?;
            let d = dir.path().join(kind.to_string());
            save(&d, &t, &meta(&t))?;
            let (m, back) = load(&d)?;
            assert_eq!(back, meta(&t));
            assert_eq!(
                predict_proba(&m, &ds.images, 7, 1.0)?,
                predict_proba(&t.model, &ds.images, 7, 1.0)?
            );
        }
        let t = train(ModelKind::Mlp, &ds, 3, &cfg, &mut |_| {})?;
        let d = dir.path().join("bad");
        // Metadata disagreeing with the model is refused on save.
        assert!(matches!(
            save(&d, &t, &ModelMeta { classes: 4, ..meta(&t) }),
            Err(CheckpointError::Mismatch(_))
        ));
        // Missing directory.
        assert!(matches!(load(&d), Err(CheckpointError::Io { .. })));
        save(&d, &t, &meta(&t))?;
        // Shape mismatch: metadata claims another class count.
        let mut m = meta(&t);
        m.classes = 5;
        std::fs::write(d.join(META_FILE), serde_json::to_vec(&m)?)?;
        let e = load(&d).expect_err("shape mismatch");
        assert!(matches!(e, CheckpointError::Weights { .. }), "{e}");
        assert!(e.to_string().contains(WEIGHTS_FILE), "{e}");
        // Corrupt metadata and weights.
        std::fs::write(d.join(META_FILE), b"{ not json")?;
        assert!(matches!(load(&d), Err(CheckpointError::Meta { .. })));
        std::fs::write(d.join(META_FILE), serde_json::to_vec(&meta(&t))?)?;
        std::fs::write(d.join(WEIGHTS_FILE), b"garbage")?;
        assert!(matches!(load(&d), Err(CheckpointError::Weights { .. })));
        Ok(())
    }
}
