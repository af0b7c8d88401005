//! A decoded (uncompressed) copy of an IDX data directory, made once per
//! data set so that the many processes of a lab read raw bytes instead of
//! each decompressing the same ~30 MB of gzip.
//!
//! The copy lives in `ROOT/idx-<key>/`, where the key is a SHA-256 over the
//! four source files' names and bytes: a changed source gets a new key, so
//! a stale copy is never used, whatever the files' timestamps say. The copy
//! is written into a private directory and renamed into place, and the
//! rename is the commit: a reader sees the whole copy or none of it, even
//! with two labs filling the same root at once.

use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};

use crate::data::{decompress_if_gz, find_file, load_idx_dir, DataError, IdxData, FILES};
use crate::split::MANIFEST_FILE;

/// Why a decoded copy could not be made or read.
#[derive(Debug, thiserror::Error)]
pub enum DecodedError {
    /// Reading a source file or writing the copy failed.
    #[error("{path}: {source}")]
    Io {
        /// The file or directory.
        path: PathBuf,
        /// The underlying error.
        #[source]
        source: std::io::Error,
    },
    /// The source (or the copy) is not a valid IDX directory.
    #[error(transparent)]
    Data(#[from] DataError),
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> DecodedError + '_ {
    move |source| DecodedError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// A data set ready for many readers.
#[derive(Debug, Clone)]
pub struct Decoded {
    /// The directory to hand to child processes (`--data`): the decoded
    /// copy, or the source itself when it holds nothing to decode.
    pub dir: PathBuf,
    /// The data, loaded and validated.
    pub data: IdxData,
    /// Whether this call wrote the copy (false: found it, or none needed).
    pub written: bool,
}

/// The raw name a decoded copy gives one of the standard files.
fn raw_name(split: &str, kind: &str, dim: u8) -> String {
    format!("{split}-{kind}-idx{dim}-ubyte")
}

/// Returns a directory with the IDX files of `src` uncompressed, under
/// `root`, making it if no valid copy of these exact bytes exists yet, and
/// the data it holds. A source with no gzipped file, or a data owner's
/// partition directory (`pate data split`, whose manifest belongs with its
/// files), is returned as is.
pub fn decoded_copy(src: &Path, root: &Path) -> Result<Decoded, DecodedError> {
    let mut sources = Vec::with_capacity(FILES.len());
    for (split, kind, dim) in FILES {
        let path = find_file(src, split, kind, dim)?;
        let bytes = std::fs::read(&path).map_err(io(&path))?;
        sources.push((raw_name(split, kind, dim), path, bytes));
    }
    let gzipped = sources.iter().any(|(_, _, b)| b.starts_with(&[0x1f, 0x8b]));
    if !gzipped || src.join(MANIFEST_FILE).exists() {
        return Ok(Decoded {
            dir: src.to_path_buf(),
            data: load_idx_dir(src)?,
            written: false,
        });
    }
    let mut h = Sha256::new();
    for (name, _, bytes) in &sources {
        h.update((name.len() as u64).to_le_bytes());
        h.update(name.as_bytes());
        h.update((bytes.len() as u64).to_le_bytes());
        h.update(bytes);
    }
    let dir = root.join(format!("idx-{}", &hex::encode(h.finalize())[..16]));
    if dir.is_dir() {
        // Renamed into place only once complete and valid: load it (a
        // copy damaged since is reported, not silently rebuilt).
        return Ok(Decoded {
            data: load_idx_dir(&dir)?,
            dir,
            written: false,
        });
    }
    std::fs::create_dir_all(root).map_err(io(root))?;
    let tmp = root.join(format!(
        ".idx-partial-{}-{:016x}",
        std::process::id(),
        rand::random::<u64>()
    ));
    let made = write_copy(&tmp, sources).and_then(|()| Ok(load_idx_dir(&tmp)?));
    let data = match made {
        Ok(data) => data,
        Err(e) => {
            let _ = std::fs::remove_dir_all(&tmp);
            return Err(e);
        }
    };
    if let Err(e) = std::fs::rename(&tmp, &dir) {
        let _ = std::fs::remove_dir_all(&tmp);
        // Another process committed the same copy first: use it.
        if !dir.is_dir() {
            return Err(io(&dir)(e));
        }
    }
    Ok(Decoded {
        dir,
        data,
        written: true,
    })
}

/// Writes every source, decompressed, into the new directory `tmp`.
fn write_copy(tmp: &Path, sources: Vec<(String, PathBuf, Vec<u8>)>) -> Result<(), DecodedError> {
    std::fs::create_dir(tmp).map_err(io(tmp))?;
    for (name, path, bytes) in sources {
        let raw = decompress_if_gz(bytes).map_err(io(&path))?;
        let out = tmp.join(name);
        std::fs::write(&out, raw).map_err(io(&out))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::data::{Dataset, Images};
    use crate::split::{idx_images_bytes, idx_labels_bytes};
    use std::io::Write;

    fn dataset(n: usize, seed: u8) -> Dataset {
        let images = Images {
            data: (0..n * 4)
                .map(|i| (i as u8).wrapping_mul(7).wrapping_add(seed))
                .collect(),
            rows: 2,
            cols: 2,
        };
        Dataset {
            images,
            labels: (0..n).map(|i| ((i + seed as usize) % 3) as u8).collect(),
        }
    }

    fn gz(bytes: &[u8]) -> Vec<u8> {
        let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        e.write_all(bytes).expect("gzip");
        e.finish().expect("gzip")
    }

    /// Writes `data` as the four standard files, gzipped or raw.
    fn write_source(dir: &Path, data: &IdxData, gzipped: bool) {
        for (split, ds) in [("train", &data.train), ("t10k", &data.test)] {
            for (kind, dim, bytes) in [
                ("images", 3, idx_images_bytes(&ds.images)),
                ("labels", 1, idx_labels_bytes(&ds.labels)),
            ] {
                let name = raw_name(split, kind, dim);
                let (name, bytes) = if gzipped {
                    (format!("{name}.gz"), gz(&bytes))
                } else {
                    (name, bytes)
                };
                std::fs::write(dir.join(name), bytes).expect("write source");
            }
        }
    }

    fn copies(root: &Path) -> Vec<PathBuf> {
        let mut v: Vec<PathBuf> = std::fs::read_dir(root)
            .expect("root")
            .map(|e| e.expect("entry").path())
            .collect();
        v.sort();
        v
    }

    fn sample() -> IdxData {
        IdxData {
            train: dataset(11, 1),
            test: dataset(5, 2),
        }
    }

    /// A temporary source holding `data` (gzipped or raw), and an empty root.
    fn setup(data: &IdxData, gzipped: bool) -> (tempfile::TempDir, tempfile::TempDir) {
        let (src, root) = (tempfile::tempdir().expect("src"), tempfile::tempdir().expect("root"));
        write_source(src.path(), data, gzipped);
        (src, root)
    }

    #[test]
    fn a_gzipped_source_is_decoded_once_and_read_raw_after() {
        let (data, (src, root)) = (sample(), setup(&sample(), true));
        let first = decoded_copy(src.path(), root.path()).expect("first");
        assert!(first.written);
        assert_ne!(first.dir, src.path());
        assert_eq!(
            (first.data.train.clone(), first.data.test.clone()),
            (data.train.clone(), data.test.clone())
        );
        for (split, kind, dim) in FILES {
            let bytes = std::fs::read(first.dir.join(raw_name(split, kind, dim))).expect("raw file");
            assert!(!bytes.starts_with(&[0x1f, 0x8b]), "the copy must be uncompressed");
        }
        let again = decoded_copy(src.path(), root.path()).expect("second");
        assert!(!again.written, "an unchanged source must reuse the copy");
        assert_eq!(again.dir, first.dir);
        assert_eq!(again.data.train, data.train);
        assert_eq!(
            copies(root.path()),
            vec![first.dir.clone()],
            "no partial directory may be left behind"
        );
    }

    #[test]
    fn a_changed_source_gets_a_fresh_copy_even_with_the_same_size() {
        let (_data, (src, root)) = (sample(), setup(&sample(), true));
        let first = decoded_copy(src.path(), root.path()).expect("first");
        // Same shapes and sizes, other pixels and labels: timestamps may
        // not even move within the file system's granularity.
        let changed = IdxData {
            train: dataset(11, 9),
            test: dataset(5, 2),
        };
        write_source(src.path(), &changed, true);
        let second = decoded_copy(src.path(), root.path()).expect("second");
        assert!(second.written);
        assert_ne!(second.dir, first.dir);
        assert_eq!(second.data.train, changed.train);
        assert_eq!(load_idx_dir(&second.dir).expect("reload").train, changed.train);
    }

    #[test]
    fn raw_sources_and_owner_directories_are_used_as_they_are() {
        let (data, (src, root)) = (sample(), setup(&sample(), false));
        let d = decoded_copy(src.path(), root.path()).expect("raw");
        assert_eq!((d.dir.as_path(), d.written), (src.path(), false));
        assert_eq!(d.data.test, data.test);
        let owner = tempfile::tempdir().expect("owner");
        write_source(owner.path(), &data, true);
        std::fs::write(owner.path().join(MANIFEST_FILE), b"{}").expect("manifest");
        assert_eq!(
            decoded_copy(owner.path(), root.path()).expect("owner").dir,
            owner.path()
        );
        assert!(copies(root.path()).is_empty(), "nothing to decode, nothing written");
    }

    #[test]
    fn an_invalid_source_is_refused_and_leaves_nothing() {
        let (_data, (src, root)) = (sample(), setup(&sample(), true));
        // Six labels for eleven training images.
        std::fs::write(
            src.path().join("train-labels-idx1-ubyte.gz"),
            gz(&idx_labels_bytes(&[0; 6])),
        )
        .expect("overwrite");
        let e = decoded_copy(src.path(), root.path()).expect_err("count mismatch");
        assert!(matches!(e, DecodedError::Data(DataError::CountMismatch { .. })), "{e}");
        assert!(copies(root.path()).is_empty(), "a failed copy must be removed");
    }
}
