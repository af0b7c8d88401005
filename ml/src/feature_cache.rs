//! A file of precomputed scattering features for public images, so that the
//! hundreds of teacher processes of a lab on one machine do not each
//! transform the same evaluation items and queries (250 teachers x 10,000
//! public items, where one transform of each suffices).
//!
//! The features are a fixed function of the pixels (nothing learned, nothing
//! private), so any process may compute them for any other. A row is found
//! by the SHA-256 of the image's bytes (the file's header holds the shape):
//! a teacher asked about an image the file lacks, or about one whose bytes
//! differ by one pixel, computes its features itself, so the cache can make
//! a vote faster but never different. The digest is the wire's sample key
//! (`pate_proto::sample_key`), so a teacher can also be asked for an image
//! by its key alone ([`FeatureCache::predict_keys`]): 32 bytes instead of
//! the pixels, for every teacher of a round. Rows are read with positioned
//! reads (no `mmap`, no `unsafe`): the page cache shares the file among the
//! processes.
//!
//! Layout, little-endian: the magic `PATESCT2`, then `u32` rows, cols,
//! features, a zero `u32`, a `u64` count; `count` 32-byte keys; `count`
//! rows of `features` `f32`s. The magic names the transform's version: a
//! change to [`crate::scatter`] changes the magic, and an old file is then
//! refused, not read.

use std::collections::{HashMap, HashSet};
use std::fs::File;
use std::io::{BufWriter, Read, Write};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

use candle_core::{Device, Tensor, D};
use sha2::{Digest, Sha256};

use crate::data::Images;
use crate::model::{Classifier, ModelKind};
use crate::scatter::Scattering;

/// The file's first bytes; the digit is the version of the transform and
/// of the keys (1 hashed the shape with the bytes).
const MAGIC: &[u8; 8] = b"PATESCT2";
const HEADER: u64 = 8 + 4 * 4 + 8;
/// Bytes of a key.
pub const KEY: usize = 32;

/// Why a feature cache could not be written, read or used.
#[derive(Debug, thiserror::Error)]
pub enum FeatureCacheError {
    /// Reading or writing the file failed.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The underlying error.
        #[source]
        source: std::io::Error,
    },
    /// The file is not a feature cache of this version, or is damaged.
    #[error("{path}: not a scattering feature cache of this version ({why})")]
    Format {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        why: String,
    },
    /// The images do not fit the cache or the transform.
    #[error("{0}")]
    Shape(String),
    /// Building the feature tensor failed.
    #[error(transparent)]
    Tensor(#[from] candle_core::Error),
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> FeatureCacheError + '_ {
    move |source| FeatureCacheError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// The key of one image: the SHA-256 of its bytes, as the wire's
/// `pate_proto::sample_key` (this crate speaks no protocol; the teacher's
/// tests check that the two agree).
pub fn key(pixels: &[u8]) -> [u8; KEY] {
    Sha256::digest(pixels).into()
}

/// Images per product in [`FeatureCache::predict`].
pub const PREDICT_ROWS: usize = 8;

/// An open feature cache.
#[derive(Debug)]
pub struct FeatureCache {
    path: PathBuf,
    file: File,
    rows: usize,
    cols: usize,
    features: usize,
    /// Key to row.
    index: HashMap<[u8; KEY], u64>,
    data_start: u64,
    scattering: Scattering,
}

impl FeatureCache {
    /// Writes the features of every image of `images` (duplicates once) to
    /// `path`, through a temporary file renamed into place, and opens it.
    pub fn build(path: &Path, images: &Images) -> Result<FeatureCache, FeatureCacheError> {
        let scattering = Scattering::new(images.rows, images.cols).ok_or_else(|| {
            FeatureCacheError::Shape(format!(
                "no scattering transform for {}x{} images",
                images.rows, images.cols
            ))
        })?;
        let mut seen = HashSet::new();
        let (mut unique, mut keys) = (Vec::new(), Vec::new());
        for i in 0..images.len() {
            let k = key(images.item(i));
            if seen.insert(k) {
                unique.push(i);
                keys.push(k);
            }
        }
        let unique = images.select(&unique);
        let features = scattering.transform_images(&unique);
        let f = scattering.features();
        let dir = path.parent().unwrap_or(Path::new("."));
        std::fs::create_dir_all(dir).map_err(io(dir))?;
        let tmp = dir.join(format!(
            ".features-partial-{}-{:016x}",
            std::process::id(),
            rand::random::<u64>()
        ));
        let written = (|| {
            let file = File::create(&tmp)?;
            let mut w = BufWriter::new(file);
            w.write_all(MAGIC)?;
            for v in [unique.rows, unique.cols, f, 0] {
                w.write_all(&u32::try_from(v).map_err(std::io::Error::other)?.to_le_bytes())?;
            }
            w.write_all(&(unique.len() as u64).to_le_bytes())?;
            for k in &keys {
                w.write_all(k)?;
            }
            for v in &features {
                w.write_all(&v.to_le_bytes())?;
            }
            w.into_inner().map_err(|e| e.into_error())?.sync_all()
        })();
        if let Err(e) = written.and_then(|()| std::fs::rename(&tmp, path)) {
            let _ = std::fs::remove_file(&tmp);
            return Err(io(path)(e));
        }
        FeatureCache::open(path)
    }

    /// The cache of `images` under `root` (`scatter-<key>.bin`, the key a
    /// SHA-256 over the transform's version and every image), built
    /// unless a cache of exactly these images is already there. Returns it
    /// and whether it was built now.
    pub fn shared(root: &Path, images: &Images) -> Result<(FeatureCache, bool), FeatureCacheError> {
        let mut h = Sha256::new();
        h.update(MAGIC);
        for v in [images.len(), images.rows, images.cols] {
            h.update((v as u64).to_le_bytes());
        }
        h.update(&images.data);
        let path = root.join(format!("scatter-{}.bin", &hex::encode(h.finalize())[..16]));
        if path.is_file() {
            return Ok((FeatureCache::open(&path)?, false));
        }
        Ok((FeatureCache::build(&path, images)?, true))
    }

    /// The file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Opens a cache written by [`FeatureCache::build`], checking its
    /// version and that its size matches its header.
    pub fn open(path: &Path) -> Result<FeatureCache, FeatureCacheError> {
        let format = |why: String| FeatureCacheError::Format {
            path: path.to_path_buf(),
            why,
        };
        let mut file = File::open(path).map_err(io(path))?;
        let mut header = [0u8; HEADER as usize];
        file.read_exact(&mut header)
            .map_err(|_| format("shorter than its header".into()))?;
        if &header[..8] != MAGIC {
            return Err(format("wrong magic".into()));
        }
        let word = |at: usize| u32::from_le_bytes(header[at..at + 4].try_into().expect("4 bytes")) as usize;
        let (rows, cols, features) = (word(8), word(12), word(16));
        let count = u64::from_le_bytes(header[24..32].try_into().expect("8 bytes"));
        let scattering = Scattering::new(rows, cols)
            .ok_or_else(|| format(format!("no scattering transform for {rows}x{cols} images")))?;
        if scattering.features() != features {
            return Err(format(format!(
                "{features} features per image, the transform gives {}",
                scattering.features()
            )));
        }
        let data_start = count
            .checked_mul(KEY as u64)
            .and_then(|k| k.checked_add(HEADER))
            .ok_or_else(|| format("count overflows".into()))?;
        let expected = count
            .checked_mul(features as u64 * 4)
            .and_then(|d| d.checked_add(data_start))
            .ok_or_else(|| format("count overflows".into()))?;
        let len = file.metadata().map_err(io(path))?.len();
        if len != expected {
            return Err(format(format!("{len} bytes, the header says {expected}")));
        }
        let mut keys = vec![0u8; (count as usize) * KEY];
        file.read_exact(&mut keys).map_err(io(path))?;
        let index = keys
            .chunks_exact(KEY)
            .enumerate()
            .map(|(row, k)| (k.try_into().expect("32 bytes"), row as u64))
            .collect();
        Ok(FeatureCache {
            path: path.to_path_buf(),
            file,
            rows,
            cols,
            features,
            index,
            data_start,
            scattering,
        })
    }

    /// Images held.
    pub fn len(&self) -> usize {
        self.index.len()
    }

    /// Whether the cache holds no image.
    pub fn is_empty(&self) -> bool {
        self.index.is_empty()
    }

    /// Values per image.
    pub fn features(&self) -> usize {
        self.features
    }

    /// The features of `images` (`[n, features]`): read from the file where
    /// it holds an image, computed for the rest. Returns the tensor and how
    /// many images were found.
    pub fn features_of(&self, images: &Images) -> Result<(Tensor, usize), FeatureCacheError> {
        if (images.rows, images.cols) != (self.rows, self.cols) {
            return Err(FeatureCacheError::Shape(format!(
                "images are {}x{}, the feature cache holds {}x{}",
                images.rows, images.cols, self.rows, self.cols
            )));
        }
        let (n, f) = (images.len(), self.features);
        // Filled row by row (no zeroing pass): a cached row as read, a
        // missing one as zeros until it is computed below.
        let mut out = Vec::with_capacity(n * f);
        let mut bytes = vec![0u8; f * 4];
        let mut missing = Vec::new();
        for i in 0..n {
            match self.index.get(&key(images.item(i))) {
                Some(&row) => self.read_row(row, &mut bytes, &mut out)?,
                None => {
                    missing.push(i);
                    out.resize(out.len() + f, 0.0);
                }
            }
        }
        if !missing.is_empty() {
            let computed = self.scattering.transform_images(&images.select(&missing));
            for (&i, row) in missing.iter().zip(computed.chunks_exact(f)) {
                out[i * f..][..f].copy_from_slice(row);
            }
        }
        Ok((Tensor::from_vec(out, (n, f), &Device::Cpu)?, n - missing.len()))
    }

    /// Appends row `row`'s features to `out`, read through `bytes` (one
    /// row's worth).
    fn read_row(&self, row: u64, bytes: &mut [u8], out: &mut Vec<f32>) -> Result<(), FeatureCacheError> {
        let at = self.data_start + row * (self.features as u64) * 4;
        self.file.read_exact_at(bytes, at).map_err(io(&self.path))?;
        out.extend(bytes.chunks_exact(4).map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]])));
        Ok(())
    }

    /// Whether `model` reads these features: a scatter model of the same
    /// image shape.
    pub fn check_model(&self, model: &Classifier) -> Result<(), FeatureCacheError> {
        if model.kind() != ModelKind::Scatter || (model.rows(), model.cols()) != (self.rows, self.cols) {
            return Err(FeatureCacheError::Shape(format!(
                "the feature cache holds scattering features of {}x{} images; the model is a {} on {}x{}",
                self.rows,
                self.cols,
                model.kind(),
                model.rows(),
                model.cols()
            )));
        }
        Ok(())
    }

    /// The labels a scatter `model` predicts for `images`, [`PREDICT_ROWS`]
    /// at a time, and how many images the cache held.
    pub fn predict(&self, model: &Classifier, images: &Images) -> Result<(Vec<u8>, usize), FeatureCacheError> {
        self.check_model(model)?;
        // A few rows at a time: their features (16 KB an image) stay in the
        // core's cache from the read to the product. A teacher answering a
        // merged round of 80 images built a 1.3 MB matrix per call, which
        // 250 processes faulted in and zeroed afresh: labelling ran at a
        // quarter of the teachers' inference bound (docs/BENCHMARKS.md).
        let (mut labels, mut hits) = (Vec::with_capacity(images.len()), 0);
        for start in (0..images.len()).step_by(PREDICT_ROWS) {
            let (f, h) = self.features_of(&images.range(start..(start + PREDICT_ROWS).min(images.len())))?;
            hits += h;
            labels.extend(predicted_classes(model, &f)?);
        }
        Ok((labels, hits))
    }

    /// The labels a scatter `model` predicts for the images filed under
    /// `keys` ([`key`]), [`PREDICT_ROWS`] at a time, and the indices of the
    /// keys this cache does not hold (their labels are 0 and mean nothing).
    pub fn predict_keys(&self, model: &Classifier, keys: &[[u8; KEY]]) -> Result<(Vec<u8>, Vec<usize>), FeatureCacheError> {
        self.check_model(model)?;
        let (mut held, mut unknown) = (Vec::with_capacity(keys.len()), Vec::new());
        for (i, k) in keys.iter().enumerate() {
            match self.index.get(k) {
                Some(&row) => held.push((i, row)),
                None => unknown.push(i),
            }
        }
        let mut labels = vec![0u8; keys.len()];
        let mut bytes = vec![0u8; self.features * 4];
        for group in held.chunks(PREDICT_ROWS) {
            let mut out = Vec::with_capacity(group.len() * self.features);
            for &(_, row) in group {
                self.read_row(row, &mut bytes, &mut out)?;
            }
            let features = Tensor::from_vec(out, (group.len(), self.features), &Device::Cpu)?;
            for (&(i, _), v) in group.iter().zip(predicted_classes(model, &features)?) {
                labels[i] = v;
            }
        }
        Ok((labels, unknown))
    }
}

/// The class `model` predicts for each row of scattering `features`.
fn predicted_classes(model: &Classifier, features: &Tensor) -> Result<Vec<u8>, FeatureCacheError> {
    let classes = model.forward_features(features)?.argmax(D::Minus1)?.to_vec1::<u32>()?;
    Ok(classes.into_iter().map(|v| v as u8).collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn images(n: usize, seed: u8) -> Images {
        // Distinct items: the value mixes the pixel, the item and the seed.
        let data = (0..n * 64)
            .map(|i| ((i % 64) * 37 + (i / 64) * 101 + usize::from(seed) * 59) as u8)
            .collect();
        Images { data, rows: 8, cols: 8 }
    }

    /// Cached rows are bit for bit what the transform gives, images the
    /// file lacks are computed, and a one-pixel change is a miss, not a
    /// stale hit.
    #[test]
    fn hits_equal_the_transform_and_misses_are_computed() -> Result<(), FeatureCacheError> {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("f.bin");
        let public = images(5, 1);
        let cache = FeatureCache::build(&path, &public)?;
        assert_eq!(cache.len(), 5);
        let mut asked = images(3, 9);
        asked.data.extend_from_slice(public.item(2));
        asked.data.extend_from_slice(public.item(0));
        let mut changed = public.item(4).to_vec();
        changed[10] ^= 1;
        asked.data.extend_from_slice(&changed);
        let (got, hits) = cache.features_of(&asked)?;
        assert_eq!(hits, 2);
        let want = Scattering::new(8, 8).expect("8x8").transform_images(&asked);
        assert_eq!(got.flatten_all()?.to_vec1::<f32>()?, want);
        Ok(())
    }

    /// A scatter model votes the same from the cache as from the pixels;
    /// another kind of model is refused.
    #[test]
    fn votes_from_the_cache_equal_votes_from_pixels() -> Result<(), Box<dyn std::error::Error>> {
        let dir = tempfile::tempdir()?;
        let public = images(40, 3);
        let cache = FeatureCache::build(&dir.path().join("f.bin"), &public)?;
        let (model, _vars) = Classifier::new_seeded(ModelKind::Scatter, 8, 8, 4, 7, &Device::Cpu)?;
        let mut asked = public.range(10..30);
        asked.data.extend_from_slice(&images(5, 77).data);
        let (labels, hits) = cache.predict(&model, &asked)?;
        assert_eq!(hits, 20);
        assert_eq!(labels, crate::train::predict(&model, &asked, 64)?);
        let (mlp, _vars) = Classifier::new_seeded(ModelKind::Mlp, 8, 8, 4, 7, &Device::Cpu)?;
        assert!(matches!(
            cache.predict(&mlp, &asked),
            Err(FeatureCacheError::Shape(_))
        ));
        // Asked by key: the same votes for the keys held (more than
        // PREDICT_ROWS of them, unknown ones between), the others listed.
        let keys: Vec<_> = (0..asked.len()).map(|i| key(asked.item(i))).collect();
        let (by_key, unknown) = cache.predict_keys(&model, &keys)?;
        assert_eq!(unknown, (20..25).collect::<Vec<_>>());
        assert_eq!(by_key[..20], labels[..20]);
        let mixed = [keys[21], keys[3], keys[22], keys[4]];
        let (by_key, unknown) = cache.predict_keys(&model, &mixed)?;
        assert_eq!((by_key[1], by_key[3], unknown), (labels[3], labels[4], vec![0, 2]));
        assert!(matches!(
            cache.predict_keys(&mlp, &keys),
            Err(FeatureCacheError::Shape(_))
        ));
        Ok(())
    }

    /// The same images find the same file; other images get their own.
    #[test]
    fn shared_caches_are_keyed_by_their_images() -> Result<(), FeatureCacheError> {
        let dir = tempfile::tempdir().expect("tempdir");
        let (a, built) = FeatureCache::shared(dir.path(), &images(4, 0))?;
        assert!(built);
        let (again, built) = FeatureCache::shared(dir.path(), &images(4, 0))?;
        assert!(!built);
        assert_eq!(a.path(), again.path());
        let (other, built) = FeatureCache::shared(dir.path(), &images(4, 1))?;
        assert!(built);
        assert_ne!(a.path(), other.path());
        Ok(())
    }

    #[test]
    fn damaged_or_foreign_files_are_refused() -> Result<(), FeatureCacheError> {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("f.bin");
        FeatureCache::build(&path, &images(3, 0))?;
        let good = std::fs::read(&path).expect("read");
        std::fs::write(&path, &good[..good.len() - 4]).expect("write");
        assert!(matches!(
            FeatureCache::open(&path),
            Err(FeatureCacheError::Format { .. })
        ));
        let mut foreign = good.clone();
        foreign[7] = b'0';
        std::fs::write(&path, &foreign).expect("write");
        assert!(matches!(
            FeatureCache::open(&path),
            Err(FeatureCacheError::Format { .. })
        ));
        std::fs::write(&path, &good).expect("write");
        let cache = FeatureCache::open(&path)?;
        let wrong = Images {
            data: vec![0; 100],
            rows: 10,
            cols: 10,
        };
        assert!(matches!(cache.features_of(&wrong), Err(FeatureCacheError::Shape(_))));
        Ok(())
    }
}
