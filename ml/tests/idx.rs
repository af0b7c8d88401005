//! The IDX reader on hand-made files (raw, gzipped, broken) and on the real
//! Fashion-MNIST installed by Debian's `dataset-fashion-mnist`.

mod common;

use std::path::Path;

use common::{gz, idx_images, idx_labels, write_tiny};
use pate_ml::data::{fingerprint, load_idx_dir, student_split, DataError};
use pate_ml::data_dir::resolve_data_dir;

#[test]
fn tiny_raw_gz_and_dot_names_load() {
    for (compress, sep) in [(false, '-'), (true, '-'), (false, '.'), (true, '.')] {
        let dir = tempfile::tempdir().expect("tempdir");
        write_tiny(dir.path(), compress, sep);
        let d = load_idx_dir(dir.path()).unwrap_or_else(|e| panic!("gz={compress} sep={sep}: {e}"));
        assert_eq!(d.train.len(), 12);
        assert_eq!(d.test.len(), 5);
        assert_eq!((d.train.images.rows, d.train.images.cols), (4, 3));
        assert_eq!(d.train.images.item(2), &[2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13]);
        assert_eq!(d.train.labels[..4], [0, 1, 2, 0]);
        assert_eq!(d.num_classes(), 3);
    }
}

/// Writes the tiny set, then replaces one file's bytes; returns the error and the file's path.
fn broken(file: &str, bytes: Vec<u8>) -> (DataError, std::path::PathBuf) {
    let dir = tempfile::tempdir().expect("tempdir");
    write_tiny(dir.path(), false, '-');
    let path = dir.path().join(file);
    std::fs::write(&path, bytes).expect("write");
    let err = load_idx_dir(dir.path()).expect_err("must fail");
    (err, path)
}

fn assert_names(err: &DataError, path: &Path) {
    let msg = err.to_string();
    assert!(
        msg.contains(&path.display().to_string()),
        "error does not name {}: {msg}",
        path.display()
    );
}

#[test]
fn truncated_body_is_an_error_naming_the_file() {
    let mut b = idx_images(12, 4, 3);
    b.truncate(b.len() - 5);
    let (e, p) = broken("train-images-idx3-ubyte", b);
    assert!(matches!(e, DataError::Corrupt { .. }), "{e}");
    assert!(e.to_string().contains("truncated"), "{e}");
    assert_names(&e, &p);
}

#[test]
fn truncated_header_is_an_error() {
    let (e, p) = broken("t10k-labels-idx1-ubyte", vec![0, 0, 8, 1, 0, 0]);
    assert!(matches!(e, DataError::Corrupt { .. }), "{e}");
    assert_names(&e, &p);
    let (e, p) = broken("t10k-labels-idx1-ubyte", vec![]);
    assert!(matches!(e, DataError::Corrupt { .. }), "{e}");
    assert_names(&e, &p);
}

#[test]
fn trailing_bytes_are_an_error() {
    let mut b = idx_labels(12, 3);
    b.push(1);
    let (e, p) = broken("train-labels-idx1-ubyte", b);
    assert!(matches!(e, DataError::Corrupt { .. }), "{e}");
    assert_names(&e, &p);
}

#[test]
fn wrong_magic_is_an_error() {
    // A labels file where images are expected.
    let (e, p) = broken("train-images-idx3-ubyte", idx_labels(12, 3));
    assert!(
        matches!(
            e,
            DataError::BadMagic {
                expected: 0x803,
                found: 0x801,
                ..
            }
        ),
        "{e}"
    );
    assert_names(&e, &p);
    let (e, p) = broken("t10k-labels-idx1-ubyte", b"PK\x03\x04 zip, not idx".to_vec());
    assert!(matches!(e, DataError::BadMagic { .. }), "{e}");
    assert_names(&e, &p);
}

#[test]
fn mismatched_counts_are_an_error() {
    let (e, p) = broken("train-labels-idx1-ubyte", idx_labels(11, 3));
    match &e {
        DataError::CountMismatch {
            n_images: 12,
            n_labels: 11,
            labels,
            ..
        } => assert_eq!(labels, &p),
        other => panic!("wrong error {other}"),
    }
    assert_names(&e, &p);
}

#[test]
fn corrupt_gzip_is_an_error_naming_the_file() {
    let dir = tempfile::tempdir().expect("tempdir");
    write_tiny(dir.path(), false, '-');
    let raw = dir.path().join("t10k-images-idx3-ubyte");
    std::fs::remove_file(&raw).expect("rm");
    let mut z = gz(&idx_images(5, 4, 3));
    z.truncate(z.len() / 2);
    let path = dir.path().join("t10k-images-idx3-ubyte.gz");
    std::fs::write(&path, z).expect("write");
    let e = load_idx_dir(dir.path()).expect_err("must fail");
    assert!(matches!(e, DataError::Io { .. }), "{e}");
    assert_names(&e, &path);
}

#[test]
fn missing_file_lists_names_tried() {
    let dir = tempfile::tempdir().expect("tempdir");
    write_tiny(dir.path(), true, '-');
    std::fs::remove_file(dir.path().join("train-labels-idx1-ubyte.gz")).expect("rm");
    let e = load_idx_dir(dir.path()).expect_err("must fail");
    assert!(matches!(e, DataError::Missing { .. }), "{e}");
    assert!(e.to_string().contains("train-labels-idx1-ubyte.gz"), "{e}");
}

#[test]
fn train_and_test_shapes_must_agree() {
    let dir = tempfile::tempdir().expect("tempdir");
    write_tiny(dir.path(), false, '-');
    std::fs::write(dir.path().join("t10k-images-idx3-ubyte"), idx_images(5, 3, 4)).expect("write");
    let e = load_idx_dir(dir.path()).expect_err("must fail");
    assert!(matches!(e, DataError::ShapeMismatch { .. }), "{e}");
}

#[test]
fn explicit_dir_wins() {
    let p = Path::new("/somewhere/else");
    assert_eq!(resolve_data_dir(Some(p)).expect("explicit"), p);
}

#[test]
fn real_fashion_mnist() {
    let dir = resolve_data_dir(None).expect("Fashion-MNIST not found: apt-get install dataset-fashion-mnist");
    let d = load_idx_dir(&dir).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(d.train.len(), 60_000);
    assert_eq!(d.test.len(), 10_000);
    assert_eq!((d.train.images.rows, d.train.images.cols), (28, 28));
    assert_eq!(d.train.num_classes(), 10);
    assert_eq!(d.test.num_classes(), 10);
    // Fashion-MNIST is balanced: 6000 per class in train, 1000 in test.
    for c in 0..10u8 {
        assert_eq!(d.train.labels.iter().filter(|&&l| l == c).count(), 6000);
        assert_eq!(d.test.labels.iter().filter(|&&l| l == c).count(), 1000);
    }
    let s = student_split(&d.test, 1000).expect("split");
    assert_eq!(s.pool.len(), 9000);
    assert_eq!(s.pool_labels.len(), 9000);
    assert_eq!(s.eval.len(), 1000);
    assert_eq!(s.eval.labels[..], d.test.labels[9000..]);
    assert_eq!(s.pool.item(8999), d.test.images.item(8999));
    assert!(student_split(&d.test, 10_000).is_err());
    assert_eq!(fingerprint(&d.test), fingerprint(&d.test.range(0..10_000)));
    assert_ne!(fingerprint(&d.test), fingerprint(&d.test.range(0..9_999)));
}
