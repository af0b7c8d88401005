//! Writing a generated deployment all or nothing: everything goes into a
//! staging directory beside the output, which is renamed into place only
//! when complete; on any error the staging directory is removed and the
//! output is left as it was. The output must be absent or empty, so a
//! generator never mixes its files with someone else's.

use std::path::{Path, PathBuf};

/// Why an output directory cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum OutDirError {
    /// The output exists and is not a directory.
    #[error("--out {0} exists and is not a directory")]
    NotADirectory(PathBuf),
    /// The output directory holds files already.
    #[error("--out {path} is not empty (it holds {first:?}, ...); choose a new directory or remove it")]
    NotEmpty {
        /// The directory.
        path: PathBuf,
        /// One of the entries found.
        first: String,
    },
    /// The file system refused.
    #[error("{path}: {source}")]
    Io {
        /// The path involved.
        path: PathBuf,
        /// The underlying error.
        #[source]
        source: std::io::Error,
    },
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> OutDirError + '_ {
    move |source| OutDirError::Io { path: path.to_path_buf(), source }
}

/// Checks that `out` is absent or an empty directory.
pub fn ensure_empty(out: &Path) -> Result<(), OutDirError> {
    match std::fs::metadata(out) {
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(OutDirError::Io { path: out.to_path_buf(), source: e }),
        Ok(m) if !m.is_dir() => Err(OutDirError::NotADirectory(out.to_path_buf())),
        Ok(_) => match std::fs::read_dir(out).map_err(io(out))?.next() {
            None => Ok(()),
            Some(entry) => {
                let first = entry.map_err(io(out))?.file_name().to_string_lossy().into_owned();
                Err(OutDirError::NotEmpty { path: out.to_path_buf(), first })
            }
        },
    }
}

/// Runs `fill` on a fresh staging directory and moves the result to `out`
/// (absent or empty) only if `fill` succeeds; otherwise nothing is left.
pub fn publish(out: &Path, fill: impl FnOnce(&Path) -> anyhow::Result<()>) -> anyhow::Result<()> {
    ensure_empty(out)?;
    let name = out.file_name().map_or_else(|| "out".into(), |n| n.to_string_lossy().into_owned());
    let parent = match out.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => PathBuf::from("."),
    };
    std::fs::create_dir_all(&parent).map_err(io(&parent))?;
    let staging = parent.join(format!(".{name}.partial-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&staging);
    std::fs::create_dir(&staging).map_err(io(&staging))?;
    let result = fill(&staging).and_then(|()| {
        if out.exists() {
            std::fs::remove_dir(out).map_err(io(out))?;
        }
        std::fs::rename(&staging, out).map_err(io(out))?;
        Ok(())
    });
    if result.is_err() {
        let _ = std::fs::remove_dir_all(&staging);
    }
    result
}

/// Writes `text` to `dir/rel`, creating parent directories.
pub fn write(dir: &Path, rel: &str, text: &str) -> Result<(), OutDirError> {
    let path = dir.join(rel);
    if let Some(parent) = path.parent() {
        std::fs::create_dir_all(parent).map_err(io(parent))?;
    }
    std::fs::write(&path, text).map_err(io(&path))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refuses_a_directory_with_files_and_leaves_it_alone() {
        let dir = tempfile::tempdir().expect("tempdir");
        std::fs::write(dir.path().join("mine.txt"), "keep").expect("write");
        let err = publish(dir.path(), |s| Ok(write(s, "x.yaml", "x")?)).expect_err("must refuse");
        assert!(err.to_string().contains("not empty"), "{err}");
        let names: Vec<_> = std::fs::read_dir(dir.path()).expect("ls").map(|e| e.expect("entry").file_name()).collect();
        assert_eq!(names, vec![std::ffi::OsString::from("mine.txt")]);
    }

    #[test]
    fn a_failure_half_way_leaves_nothing() {
        let dir = tempfile::tempdir().expect("tempdir");
        let out = dir.path().join("gen");
        let err = publish(&out, |s| {
            write(s, "first.yaml", "x")?;
            anyhow::bail!("boom")
        });
        assert!(err.is_err());
        assert!(!out.exists());
        assert_eq!(std::fs::read_dir(dir.path()).expect("ls").count(), 0, "staging left behind");
        publish(&out, |s| Ok(write(s, "a/b.yaml", "y")?)).expect("publish into an absent dir");
        assert_eq!(std::fs::read_to_string(out.join("a/b.yaml")).expect("read"), "y");
    }
}
