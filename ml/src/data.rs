//! IDX datasets (MNIST format, gzipped or raw): reading, validation,
//! fingerprints and the student's pool/evaluation split. Every reader takes
//! an explicit directory; where the binaries look by default is
//! [`crate::data_dir`]'s business.
//!
//! The IDX format is a big-endian header (magic number, then one `u32` per
//! dimension) followed by the raw `u8` items. Images use magic `0x00000803`
//! (three dimensions: count, rows, cols), labels `0x00000801` (one dimension).

use std::io::Read;
use std::ops::Range;
use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};

/// Magic number of an IDX file of `u8` items with three dimensions (images).
pub const IMAGES_MAGIC: u32 = 0x0000_0803;
/// Magic number of an IDX file of `u8` items with one dimension (labels).
pub const LABELS_MAGIC: u32 = 0x0000_0801;

/// Errors while reading or splitting a dataset. Every file error names the file.
#[derive(Debug, thiserror::Error)]
pub enum DataError {
    /// The file could not be read (or its gzip stream is broken).
    #[error("cannot read {path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The underlying error.
        #[source]
        source: std::io::Error,
    },
    /// None of the accepted names for one of the four files exists.
    #[error("{dir}: no {what} file (looked for {tried})")]
    Missing {
        /// The directory searched.
        dir: PathBuf,
        /// Which file, for example `train-images`.
        what: String,
        /// The names tried, comma-separated.
        tried: String,
    },
    /// The file does not start with the expected magic number.
    #[error("{path}: wrong magic number 0x{found:08x} (expected 0x{expected:08x}); not an IDX {kind} file")]
    BadMagic {
        /// The file.
        path: PathBuf,
        /// `images` or `labels`.
        kind: &'static str,
        /// The magic number expected.
        expected: u32,
        /// The magic number found.
        found: u32,
    },
    /// The header or body is shorter or longer than the header says.
    #[error("{path}: corrupt IDX file: {reason}")]
    Corrupt {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        reason: String,
    },
    /// The images and labels files hold different numbers of items.
    #[error("{images} holds {n_images} images but {labels} holds {n_labels} labels")]
    CountMismatch {
        /// The images file.
        images: PathBuf,
        /// The labels file.
        labels: PathBuf,
        /// Number of images.
        n_images: usize,
        /// Number of labels.
        n_labels: usize,
    },
    /// The training and test images have different shapes.
    #[error("train images are {train_rows}x{train_cols} but test images are {test_rows}x{test_cols}")]
    ShapeMismatch {
        /// Training image rows.
        train_rows: usize,
        /// Training image columns.
        train_cols: usize,
        /// Test image rows.
        test_rows: usize,
        /// Test image columns.
        test_cols: usize,
    },
    /// A split was asked for that the data cannot give.
    #[error("invalid split: {0}")]
    Split(String),
}

/// A set of equally sized `u8` images, stored contiguously.
#[derive(Clone, Debug, PartialEq, Eq, Default)]
pub struct Images {
    /// `len() * rows * cols` bytes, image after image, each row-major.
    pub data: Vec<u8>,
    /// Rows per image.
    pub rows: usize,
    /// Columns per image.
    pub cols: usize,
}

impl Images {
    /// Number of images.
    pub fn len(&self) -> usize {
        match self.item_len() {
            0 => 0,
            n => self.data.len() / n,
        }
    }

    /// Whether there are no images.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Bytes per image (`rows * cols`).
    pub fn item_len(&self) -> usize {
        self.rows * self.cols
    }

    /// The bytes of image `i`. Panics if `i >= len()`, like slice indexing.
    pub fn item(&self, i: usize) -> &[u8] {
        let n = self.item_len();
        &self.data[i * n..(i + 1) * n]
    }

    /// The images at `idx`, in that order. Indices out of range are skipped.
    pub fn select(&self, idx: &[usize]) -> Images {
        let n = self.item_len();
        let len = self.len();
        let mut data = Vec::with_capacity(idx.len() * n);
        for &i in idx.iter().filter(|&&i| i < len) {
            data.extend_from_slice(self.item(i));
        }
        Images {
            data,
            rows: self.rows,
            cols: self.cols,
        }
    }

    /// The images in range `r` (clamped to `0..len()`).
    pub fn range(&self, r: Range<usize>) -> Images {
        let n = self.item_len();
        let end = r.end.min(self.len());
        let start = r.start.min(end);
        Images {
            data: self.data[start * n..end * n].to_vec(),
            rows: self.rows,
            cols: self.cols,
        }
    }
}

/// Labelled images.
#[derive(Clone, Debug, PartialEq, Eq, Default)]
pub struct Dataset {
    /// The images.
    pub images: Images,
    /// One label per image.
    pub labels: Vec<u8>,
}

impl Dataset {
    /// Number of items.
    pub fn len(&self) -> usize {
        self.labels.len()
    }

    /// Whether there are no items.
    pub fn is_empty(&self) -> bool {
        self.labels.is_empty()
    }

    /// The items at `idx`, in that order. Indices out of range are skipped.
    pub fn select(&self, idx: &[usize]) -> Dataset {
        let len = self.len().min(self.images.len());
        let idx: Vec<usize> = idx.iter().copied().filter(|&i| i < len).collect();
        Dataset {
            images: self.images.select(&idx),
            labels: idx.iter().map(|&i| self.labels[i]).collect(),
        }
    }

    /// The items in range `r` (clamped to `0..len()`).
    pub fn range(&self, r: Range<usize>) -> Dataset {
        let end = r.end.min(self.len());
        let start = r.start.min(end);
        Dataset {
            images: self.images.range(start..end),
            labels: self.labels[start..end].to_vec(),
        }
    }

    /// Number of classes: the largest label plus one (0 when empty).
    pub fn num_classes(&self) -> usize {
        self.labels.iter().max().map_or(0, |&m| m as usize + 1)
    }
}

/// The training and test splits of an IDX dataset.
#[derive(Clone, Debug)]
pub struct IdxData {
    /// The training split (60,000 items for Fashion-MNIST).
    pub train: Dataset,
    /// The test split (10,000 items for Fashion-MNIST).
    pub test: Dataset,
}

impl IdxData {
    /// Number of classes over both splits.
    pub fn num_classes(&self) -> usize {
        self.train.num_classes().max(self.test.num_classes())
    }
}

/// Base names of the four standard files, as `(split, kind, idx dimension)`.
pub const FILES: [(&str, &str, u8); 4] = [
    ("train", "images", 3),
    ("train", "labels", 1),
    ("t10k", "images", 3),
    ("t10k", "labels", 1),
];

/// The file names accepted for one of the four standard files, most usual first.
pub fn candidate_names(split: &str, kind: &str, dim: u8) -> Vec<String> {
    let mut out = Vec::new();
    for sep in ['-', '.'] {
        let base = format!("{split}-{kind}{sep}idx{dim}-ubyte");
        out.push(format!("{base}.gz"));
        out.push(base);
    }
    out
}

/// Finds one of the standard files in `dir`.
pub fn find_file(dir: &Path, split: &str, kind: &str, dim: u8) -> Result<PathBuf, DataError> {
    let names = candidate_names(split, kind, dim);
    names
        .iter()
        .map(|n| dir.join(n))
        .find(|p| p.is_file())
        .ok_or_else(|| DataError::Missing {
            dir: dir.to_path_buf(),
            what: format!("{split}-{kind}"),
            tried: names.join(", "),
        })
}

/// Whether `dir` holds all four standard files (under any accepted name).
pub fn has_idx_files(dir: &Path) -> bool {
    FILES.iter().all(|(s, k, d)| find_file(dir, s, k, *d).is_ok())
}

/// Reads a file, decompressing it if it starts with the gzip magic bytes.
pub fn read_maybe_gz(path: &Path) -> Result<Vec<u8>, DataError> {
    let io = |source| DataError::Io {
        path: path.to_path_buf(),
        source,
    };
    let raw = std::fs::read(path).map_err(io)?;
    decompress_if_gz(raw).map_err(io)
}

/// Decompresses `raw` if it starts with the gzip magic bytes, else returns it as is.
pub fn decompress_if_gz(raw: Vec<u8>) -> std::io::Result<Vec<u8>> {
    if raw.starts_with(&[0x1f, 0x8b]) {
        let mut out = Vec::with_capacity(raw.len() * 4);
        flate2::read::MultiGzDecoder::new(raw.as_slice()).read_to_end(&mut out)?;
        Ok(out)
    } else {
        Ok(raw)
    }
}

/// Parses an IDX header with `ndims` dimensions; returns the dimensions and the body.
fn parse_header<'a>(
    path: &Path,
    bytes: &'a [u8],
    magic: u32,
    kind: &'static str,
    ndims: usize,
) -> Result<(Vec<usize>, &'a [u8]), DataError> {
    let corrupt = |reason: String| DataError::Corrupt {
        path: path.to_path_buf(),
        reason,
    };
    let header_len = 4 * (1 + ndims);
    if bytes.len() < 4 {
        return Err(corrupt(format!(
            "only {} bytes, too short for an IDX header",
            bytes.len()
        )));
    }
    let word = |i: usize| u32::from_be_bytes([bytes[4 * i], bytes[4 * i + 1], bytes[4 * i + 2], bytes[4 * i + 3]]);
    let found = word(0);
    if found != magic {
        return Err(DataError::BadMagic {
            path: path.to_path_buf(),
            kind,
            expected: magic,
            found,
        });
    }
    if bytes.len() < header_len {
        return Err(corrupt(format!(
            "header truncated: {} of {header_len} bytes",
            bytes.len()
        )));
    }
    let dims: Vec<usize> = (1..=ndims).map(|i| word(i) as usize).collect();
    let expected = dims
        .iter()
        .try_fold(1usize, |acc, &d| acc.checked_mul(d))
        .ok_or_else(|| corrupt(format!("dimensions {dims:?} overflow")))?;
    let body = &bytes[header_len..];
    if body.len() < expected {
        return Err(corrupt(format!(
            "truncated: dimensions {dims:?} need {expected} data bytes, found {}",
            body.len()
        )));
    }
    if body.len() > expected {
        return Err(corrupt(format!(
            "{} trailing bytes after {expected} data bytes (dimensions {dims:?})",
            body.len() - expected
        )));
    }
    Ok((dims, body))
}

/// Reads and validates an IDX images file (gzipped or raw).
pub fn read_images(path: &Path) -> Result<Images, DataError> {
    decode_images(path, &read_maybe_gz(path)?)
}

/// Validates the (decompressed) bytes of an IDX images file; `path` only
/// names the file in errors.
pub fn decode_images(path: &Path, bytes: &[u8]) -> Result<Images, DataError> {
    let (dims, body) = parse_header(path, bytes, IMAGES_MAGIC, "images", 3)?;
    let (rows, cols) = (dims[1], dims[2]);
    if rows == 0 || cols == 0 {
        return Err(DataError::Corrupt {
            path: path.to_path_buf(),
            reason: format!("image shape {rows}x{cols} is empty"),
        });
    }
    Ok(Images {
        data: body.to_vec(),
        rows,
        cols,
    })
}

/// Reads and validates an IDX labels file (gzipped or raw).
pub fn read_labels(path: &Path) -> Result<Vec<u8>, DataError> {
    decode_labels(path, &read_maybe_gz(path)?)
}

/// Validates the (decompressed) bytes of an IDX labels file; `path` only
/// names the file in errors.
pub fn decode_labels(path: &Path, bytes: &[u8]) -> Result<Vec<u8>, DataError> {
    let (_, body) = parse_header(path, bytes, LABELS_MAGIC, "labels", 1)?;
    Ok(body.to_vec())
}

/// Reads one split (images and labels) and checks the counts agree.
fn read_split(dir: &Path, split: &str) -> Result<Dataset, DataError> {
    let ip = find_file(dir, split, "images", 3)?;
    let lp = find_file(dir, split, "labels", 1)?;
    let images = read_images(&ip)?;
    let labels = read_labels(&lp)?;
    if images.len() != labels.len() {
        return Err(DataError::CountMismatch {
            images: ip,
            labels: lp,
            n_images: images.len(),
            n_labels: labels.len(),
        });
    }
    Ok(Dataset { images, labels })
}

/// Loads the four standard IDX files from `dir`.
///
/// Accepted names are `train-images-idx3-ubyte`, `train-labels-idx1-ubyte`,
/// `t10k-images-idx3-ubyte`, `t10k-labels-idx1-ubyte`, each optionally with
/// `.gz`, and the variants with `.` before `idx` (`train-images.idx3-ubyte`).
/// Gzip is detected from the content, not the name.
pub fn load_idx_dir(dir: &Path) -> Result<IdxData, DataError> {
    let train = read_split(dir, "train")?;
    let test = read_split(dir, "t10k")?;
    if (train.images.rows, train.images.cols) != (test.images.rows, test.images.cols) {
        return Err(DataError::ShapeMismatch {
            train_rows: train.images.rows,
            train_cols: train.images.cols,
            test_rows: test.images.rows,
            test_cols: test.images.cols,
        });
    }
    Ok(IdxData { train, test })
}

/// Hex SHA-256 fingerprint of a dataset: over its shape (item count, rows,
/// cols as little-endian `u64`), then the image bytes, then the labels.
pub fn fingerprint(ds: &Dataset) -> String {
    let mut h = Sha256::new();
    for v in [ds.len(), ds.images.rows, ds.images.cols] {
        h.update((v as u64).to_le_bytes());
    }
    h.update(&ds.images.data);
    h.update(&ds.labels);
    hex::encode(h.finalize())
}

/// The student's view of the test split.
#[derive(Clone, Debug)]
pub struct StudentSplit {
    /// The public, unlabelled pool the student may query: `test[0..n - eval_size]`.
    pub pool: Images,
    /// The pool's true labels, kept for measurement only; never sent anywhere.
    pub pool_labels: Vec<u8>,
    /// The labelled evaluation set, never queried: the last `eval_size` items.
    pub eval: Dataset,
}

/// Splits the test set into the public pool and the evaluation set (the
/// last `eval_size` items). Errors if `eval_size` is 0 or leaves no pool.
pub fn student_split(test: &Dataset, eval_size: usize) -> Result<StudentSplit, DataError> {
    let n = test.len();
    if eval_size == 0 {
        return Err(DataError::Split("eval size must be at least 1".into()));
    }
    if eval_size >= n {
        return Err(DataError::Split(format!(
            "eval size {eval_size} leaves no public pool in a test set of {n} items"
        )));
    }
    let cut = n - eval_size;
    let pool = test.range(0..cut);
    Ok(StudentSplit {
        pool: pool.images,
        pool_labels: pool.labels,
        eval: test.range(cut..n),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tiny(n: usize) -> Dataset {
        Dataset {
            images: Images {
                data: (0..n * 4).map(|v| v as u8).collect(),
                rows: 2,
                cols: 2,
            },
            labels: (0..n).map(|v| (v % 3) as u8).collect(),
        }
    }

    #[test]
    fn select_and_range() {
        let ds = tiny(5);
        assert_eq!(ds.len(), 5);
        assert_eq!(ds.images.len(), 5);
        assert_eq!(ds.num_classes(), 3);
        let s = ds.select(&[4, 0, 9]);
        assert_eq!(s.labels, vec![1, 0]);
        assert_eq!(s.images.item(0), &[16, 17, 18, 19]);
        let r = ds.range(3..10);
        assert_eq!(r.len(), 2);
        assert_eq!(r.images.item(1), ds.images.item(4));
        assert!(ds.range(7..9).is_empty());
    }

    #[test]
    fn split_sizes_and_errors() {
        let ds = tiny(10);
        let s = student_split(&ds, 3).expect("split");
        assert_eq!(s.pool.len(), 7);
        assert_eq!(s.pool_labels.len(), 7);
        assert_eq!(s.eval.len(), 3);
        assert_eq!(s.eval.images.item(0), ds.images.item(7));
        assert!(student_split(&ds, 0).is_err());
        assert!(student_split(&ds, 10).is_err());
    }

    #[test]
    fn fingerprint_changes_with_content() {
        let a = tiny(4);
        let mut b = a.clone();
        assert_eq!(fingerprint(&a), fingerprint(&b));
        b.labels[0] = 2;
        assert_ne!(fingerprint(&a), fingerprint(&b));
        assert_eq!(fingerprint(&a).len(), 64);
    }

    #[test]
    fn header_errors() {
        let p = Path::new("x");
        let e = parse_header(p, &[0, 0], LABELS_MAGIC, "labels", 1).expect_err("short");
        assert!(matches!(e, DataError::Corrupt { .. }), "{e}");
        let e = parse_header(p, &[0, 0, 8, 3, 0, 0, 0, 1], LABELS_MAGIC, "labels", 1).expect_err("magic");
        assert!(matches!(e, DataError::BadMagic { .. }), "{e}");
        let (dims, body) = parse_header(p, &[0, 0, 8, 1, 0, 0, 0, 2, 7, 9], LABELS_MAGIC, "labels", 1).expect("valid");
        assert_eq!(dims, vec![2]);
        assert_eq!(body, &[7, 9]);
    }

    /// The property-test twin of `fuzz/fuzz_targets/idx.rs`: headers with
    /// any dimensions (up to u32::MAX) and bodies one byte short, exact or
    /// one byte long, and plain random bytes, decode exactly or give an
    /// error, never a panic.
    mod props {
        use super::*;
        use proptest::collection::vec;
        use proptest::prelude::*;

        fn check(bytes: &[u8]) {
            let p = Path::new("prop.idx");
            if let Ok(images) = decode_images(p, bytes) {
                assert!(images.rows > 0 && images.cols > 0);
                assert_eq!(images.data.len(), images.len() * images.rows * images.cols);
                assert_eq!(images.data.len() + 16, bytes.len());
            }
            if let Ok(labels) = decode_labels(p, bytes) {
                assert_eq!(labels.len() + 8, bytes.len());
            }
        }

        proptest! {
            #![proptest_config(ProptestConfig::with_cases(256))]

            #[test]
            fn headers_with_any_dimensions(
                magic in prop_oneof![Just(IMAGES_MAGIC), Just(LABELS_MAGIC), any::<u32>()],
                dims in vec(prop_oneof![0u32..4, any::<u32>()], 0..4),
                slack in -1i64..=1,
            ) {
                let mut bytes = magic.to_be_bytes().to_vec();
                dims.iter().for_each(|d| bytes.extend(d.to_be_bytes()));
                // Three u32 dimensions can overflow a u64 product: saturate.
                let want = dims.iter().try_fold(1u64, |a, &d| a.checked_mul(u64::from(d))).unwrap_or(u64::MAX);
                if want < 4096 {
                    let len = (want as i64 + slack).max(0) as usize;
                    bytes.extend(std::iter::repeat_n(7u8, len));
                }
                check(&bytes);
            }

            #[test]
            fn random_bytes(bytes in vec(any::<u8>(), 0..64)) {
                check(&bytes);
            }
        }
    }
}
