//! Data owners' directories: the training split cut into one directory per
//! teacher partition, and a directory with only the test split for the
//! student. A deployment mounts each teacher's directory into that
//! teacher's container alone, so no container ever holds another partition.
//!
//! Each directory is a valid IDX directory for [`crate::data::load_idx_dir`]:
//! a teacher's holds its partition as the training split and an empty test
//! split; the student's holds the test split and an empty training split.
//! A teacher's directory also holds `partition.json` ([`PartitionManifest`]),
//! which says which partition it is, so that training from it uses every
//! item instead of cutting it again.

use std::io::Write;
use std::path::Path;

use serde::{Deserialize, Serialize};

use crate::data::{fingerprint, Dataset, IdxData, Images, IMAGES_MAGIC, LABELS_MAGIC};
use crate::partition::{partition, PartitionError};

/// Name of the manifest inside a partition directory.
pub const MANIFEST_FILE: &str = "partition.json";

/// Errors while writing or reading owners' directories.
#[derive(Debug, thiserror::Error)]
pub enum SplitError {
    /// Writing or reading a file failed.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: std::path::PathBuf,
        /// The underlying error.
        #[source]
        source: std::io::Error,
    },
    /// The partition cannot be cut.
    #[error(transparent)]
    Partition(#[from] PartitionError),
    /// The manifest does not parse.
    #[error("{path}: bad partition manifest: {reason}")]
    Manifest {
        /// The manifest file.
        path: std::path::PathBuf,
        /// What is wrong.
        reason: String,
    },
}

/// What a teacher's directory holds, written beside its IDX files.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
pub struct PartitionManifest {
    /// Which partition (0-based; equals the teacher index).
    pub partition: usize,
    /// Into how many partitions the training split was cut.
    pub partitions: usize,
    /// Seed of the permutation that cut them.
    pub partition_seed: u64,
    /// Classes of the whole dataset (a small partition may miss one).
    pub classes: usize,
    /// Items in this partition.
    pub items: usize,
    /// [`fingerprint`] of this partition's data.
    pub fingerprint: String,
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> SplitError + '_ {
    move |source| SplitError::Io { path: path.to_path_buf(), source }
}

/// Writes `bytes` to `path` through a temporary file and a rename.
fn write_atomic(path: &Path, bytes: &[u8]) -> Result<(), SplitError> {
    let tmp = path.with_extension("tmp");
    let mut f = std::fs::File::create(&tmp).map_err(io(&tmp))?;
    f.write_all(bytes).map_err(io(&tmp))?;
    f.sync_all().map_err(io(&tmp))?;
    std::fs::rename(&tmp, path).map_err(io(path))
}

/// An IDX images file (raw, uncompressed).
pub fn idx_images_bytes(images: &Images) -> Vec<u8> {
    let mut out = Vec::with_capacity(16 + images.data.len());
    for v in [IMAGES_MAGIC, images.len() as u32, images.rows as u32, images.cols as u32] {
        out.extend_from_slice(&v.to_be_bytes());
    }
    out.extend_from_slice(&images.data);
    out
}

/// An IDX labels file (raw, uncompressed).
pub fn idx_labels_bytes(labels: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(8 + labels.len());
    for v in [LABELS_MAGIC, labels.len() as u32] {
        out.extend_from_slice(&v.to_be_bytes());
    }
    out.extend_from_slice(labels);
    out
}

/// Writes one split (`train` or `t10k`) of `ds` into `dir`.
fn write_split(dir: &Path, split: &str, ds: &Dataset) -> Result<(), SplitError> {
    write_atomic(&dir.join(format!("{split}-images-idx3-ubyte")), &idx_images_bytes(&ds.images))?;
    write_atomic(&dir.join(format!("{split}-labels-idx1-ubyte")), &idx_labels_bytes(&ds.labels))
}

fn empty_like(ds: &Dataset) -> Dataset {
    Dataset { images: Images { data: Vec::new(), rows: ds.images.rows, cols: ds.images.cols }, labels: Vec::new() }
}

/// Writes `dir/teacher-<i>/` for every partition `i` of `data.train` (cut
/// by `partition(.., partitions, seed)`, exactly as `pate-teacher train`
/// cuts it) and `dir/student/` with the test split. `dir` must exist.
pub fn write_owner_dirs(data: &IdxData, partitions: usize, seed: u64, dir: &Path) -> Result<Vec<PartitionManifest>, SplitError> {
    let parts = partition(data.train.len(), partitions, seed)?;
    let classes = data.num_classes();
    let mut manifests = Vec::with_capacity(partitions);
    for (i, idx) in parts.iter().enumerate() {
        let owner = dir.join(format!("teacher-{i}"));
        std::fs::create_dir_all(&owner).map_err(io(&owner))?;
        let part = data.train.select(idx);
        write_split(&owner, "train", &part)?;
        write_split(&owner, "t10k", &empty_like(&part))?;
        let manifest = PartitionManifest {
            partition: i,
            partitions,
            partition_seed: seed,
            classes,
            items: part.len(),
            fingerprint: fingerprint(&part),
        };
        let text = serde_json::to_vec_pretty(&manifest).map_err(|e| SplitError::Manifest { path: owner.join(MANIFEST_FILE), reason: e.to_string() })?;
        write_atomic(&owner.join(MANIFEST_FILE), &text)?;
        manifests.push(manifest);
    }
    let student = dir.join("student");
    std::fs::create_dir_all(&student).map_err(io(&student))?;
    write_split(&student, "t10k", &data.test)?;
    write_split(&student, "train", &empty_like(&data.test))?;
    Ok(manifests)
}

/// The manifest of a teacher's directory, if `dir` is one.
pub fn read_manifest(dir: &Path) -> Result<Option<PartitionManifest>, SplitError> {
    let path = dir.join(MANIFEST_FILE);
    match std::fs::read(&path) {
        Ok(bytes) => serde_json::from_slice(&bytes).map(Some).map_err(|e| SplitError::Manifest { path, reason: e.to_string() }),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(SplitError::Io { path, source: e }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::data::load_idx_dir;
    use crate::partition::partition_part;

    fn dataset(n: usize, seed: u8) -> Dataset {
        let images = Images { data: (0..n * 4).map(|i| (i as u8).wrapping_mul(7).wrapping_add(seed)).collect(), rows: 2, cols: 2 };
        Dataset { images, labels: (0..n).map(|i| (i % 3) as u8).collect() }
    }

    #[test]
    fn owners_hold_exactly_their_partition_and_the_student_only_the_test_split() {
        let data = IdxData { train: dataset(11, 1), test: dataset(5, 2) };
        let dir = tempfile::tempdir().expect("tempdir");
        let manifests = write_owner_dirs(&data, 3, 9, dir.path()).expect("split");
        assert_eq!(manifests.len(), 3);
        let mut total = 0;
        for (i, m) in manifests.iter().enumerate() {
            let owner = dir.path().join(format!("teacher-{i}"));
            let got = load_idx_dir(&owner).expect("load partition dir");
            let want = data.train.select(&partition_part(11, 3, 9, i).expect("part"));
            assert_eq!(got.train, want, "partition {i} differs from the lab's cut");
            assert!(got.test.is_empty(), "a teacher's directory must not hold the test split");
            assert_eq!(read_manifest(&owner).expect("manifest"), Some(m.clone()));
            assert_eq!((m.partition, m.partitions, m.classes), (i, 3, 3));
            total += got.train.len();
        }
        assert_eq!(total, 11);
        let student = load_idx_dir(&dir.path().join("student")).expect("load student dir");
        assert_eq!(student.test, data.test);
        assert!(student.train.is_empty(), "the student's directory must not hold training data");
        assert_eq!(read_manifest(&dir.path().join("student")).expect("no manifest"), None);
    }
}
