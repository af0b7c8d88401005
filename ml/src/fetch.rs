//! Downloading Fashion-MNIST (or any IDX set) into a cache, with SHA-256
//! checks on the decompressed bytes and atomic writes.
//!
//! Checksums are taken over the *decompressed* IDX bytes, so a mirror that
//! re-compresses the files still verifies. Files already present with the
//! right checksum are not downloaded again.

use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::time::Duration;

use sha2::{Digest, Sha256};

/// The Fashion-MNIST files in Zalando's repository, over HTTPS. (Their S3
/// *website* endpoint, quoted in many tutorials, serves plain HTTP only; an
/// `https://` address of it never connects.) The SHA-256 checks below guard
/// the bytes whichever mirror `--base-url` names.
pub const DEFAULT_BASE_URL: &str = "https://github.com/zalandoresearch/fashion-mnist/raw/master/data/fashion/";

/// Largest response body accepted, in bytes (the largest Fashion-MNIST file is ~26 MB gzipped).
pub const MAX_DOWNLOAD_BYTES: u64 = 512 * 1024 * 1024;

/// SHA-256 of the decompressed Fashion-MNIST files, by their `.gz` name.
pub const FASHION_MNIST_SHA256: [(&str, &str); 4] = [
    (
        "train-images-idx3-ubyte.gz",
        "c59f468a2f672dc815687fe0f83887768d799fd8a3f3276145d20f83aa44d888",
    ),
    (
        "train-labels-idx1-ubyte.gz",
        "bad3541b69d912435c50bb6ba87bec294ff4f6a2e1246121d8633921760443d9",
    ),
    (
        "t10k-images-idx3-ubyte.gz",
        "5b4141f0afbad91edebe8549f8fcffe087ea10ca49f1dbef5c9a5cd8815ce37b",
    ),
    (
        "t10k-labels-idx1-ubyte.gz",
        "0402a96d92fd2663957122ceb108a494c5af83dab82d92729df917d7dec38c34",
    ),
];

/// Errors while downloading. Each names the file (or URL) concerned.
#[derive(Debug, thiserror::Error)]
pub enum FetchError {
    /// The HTTP request failed (connection, status code, body).
    #[error("downloading {url}: {source}")]
    Http {
        /// The URL.
        url: String,
        /// The underlying error.
        #[source]
        source: Box<ureq::Error>,
    },
    /// A local file could not be read or written.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The underlying error.
        #[source]
        source: std::io::Error,
    },
    /// The downloaded file's checksum is wrong; nothing was written.
    #[error("checksum mismatch for {file}: expected sha256 {expected}, got {actual} (of the decompressed bytes); file discarded")]
    Checksum {
        /// The file name.
        file: String,
        /// The expected hex SHA-256.
        expected: String,
        /// The actual hex SHA-256.
        actual: String,
    },
    /// The downloaded file is not valid gzip; nothing was written.
    #[error("downloaded {file} is corrupt: {reason}; file discarded")]
    Corrupt {
        /// The file name.
        file: String,
        /// What is wrong.
        reason: String,
    },
    /// The spec is unusable (bad file name).
    #[error("invalid fetch spec: {0}")]
    Spec(String),
}

/// What to download: a base URL and `(file name, sha256 of decompressed bytes)` pairs.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FetchSpec {
    /// The base URL; file names are appended (a missing trailing `/` is added).
    pub base_url: String,
    /// File names and the hex SHA-256 of their decompressed content.
    pub files: Vec<(String, String)>,
}

impl FetchSpec {
    /// The four Fashion-MNIST files from `base_url` (for example [`DEFAULT_BASE_URL`]).
    pub fn fashion_mnist(base_url: &str) -> Self {
        FetchSpec {
            base_url: base_url.to_string(),
            files: FASHION_MNIST_SHA256
                .iter()
                .map(|(f, h)| (f.to_string(), h.to_string()))
                .collect(),
        }
    }

    /// The URL of `file`.
    pub fn url(&self, file: &str) -> String {
        if self.base_url.ends_with('/') {
            format!("{}{file}", self.base_url)
        } else {
            format!("{}/{file}", self.base_url)
        }
    }
}

/// Hex SHA-256 of `bytes`, decompressed first if they are gzip.
pub fn sha256_decompressed(bytes: &[u8]) -> std::io::Result<String> {
    let mut h = Sha256::new();
    if bytes.starts_with(&[0x1f, 0x8b]) {
        let mut dec = flate2::read::MultiGzDecoder::new(bytes);
        let mut buf = vec![0u8; 1 << 16];
        loop {
            let n = dec.read(&mut buf)?;
            if n == 0 {
                break;
            }
            h.update(&buf[..n]);
        }
    } else {
        h.update(bytes);
    }
    Ok(hex::encode(h.finalize()))
}

/// Whether `path` exists and its decompressed content has checksum `expected`.
fn present_and_valid(path: &Path, expected: &str) -> bool {
    match std::fs::read(path) {
        Ok(bytes) => sha256_decompressed(&bytes).is_ok_and(|h| h.eq_ignore_ascii_case(expected)),
        Err(_) => false,
    }
}

/// What [`fetch`] tells its caller as it goes: one line per step, and the
/// bytes of each download as they arrive (for a progress bar; ignored unless
/// implemented). Any `FnMut(&str)` takes the lines.
pub trait FetchProgress {
    /// One human-readable line per step.
    fn line(&mut self, msg: &str);
    /// The download of `file` starts; `size` is its length when the server sent one.
    fn start(&mut self, _file: &str, _size: Option<u64>) {}
    /// `n` more bytes of the current download arrived.
    fn received(&mut self, _n: u64) {}
    /// The current download's body has arrived in full (its check follows).
    fn done(&mut self) {}
}

impl<F: FnMut(&str)> FetchProgress for F {
    fn line(&mut self, msg: &str) {
        self(msg);
    }
}

/// Downloads every file of `spec` into `dest`, verifying checksums.
///
/// Files already in `dest` with the right checksum are skipped. Each file is
/// written to a temporary file in `dest` and renamed into place only once
/// verified, so a failure never leaves a bad or partial file under the final
/// name. `progress` receives one human-readable line per step and the bytes
/// as they arrive.
pub fn fetch(spec: &FetchSpec, dest: &Path, progress: &mut dyn FetchProgress) -> Result<(), FetchError> {
    std::fs::create_dir_all(dest).map_err(|source| FetchError::Io {
        path: dest.to_path_buf(),
        source,
    })?;
    let agent: ureq::Agent = ureq::Agent::config_builder()
        .timeout_connect(Some(Duration::from_secs(30)))
        .timeout_global(Some(Duration::from_secs(30 * 60)))
        .build()
        .into();
    for (file, expected) in &spec.files {
        if file.is_empty() || file.contains(['/', '\\']) || file.starts_with('.') {
            return Err(FetchError::Spec(format!("bad file name {file:?}")));
        }
        let path = dest.join(file);
        if present_and_valid(&path, expected) {
            progress.line(&format!("{file}: already present, checksum ok"));
            continue;
        }
        let url = spec.url(file);
        progress.line(&format!("{file}: downloading {url}"));
        let http = |e: ureq::Error| FetchError::Http {
            url: url.clone(),
            source: Box::new(e),
        };
        let mut resp = agent.get(&url).call().map_err(http)?;
        let size = resp.body().content_length();
        progress.start(file, size);
        let mut body = resp.body_mut().with_config().limit(MAX_DOWNLOAD_BYTES).reader();
        let bytes = read_counted(&mut body, size, progress).map_err(|e| http(e.into()))?;
        progress.done();
        let actual = sha256_decompressed(&bytes).map_err(|e| FetchError::Corrupt {
            file: file.clone(),
            reason: e.to_string(),
        })?;
        if !actual.eq_ignore_ascii_case(expected) {
            return Err(FetchError::Checksum {
                file: file.clone(),
                expected: expected.clone(),
                actual,
            });
        }
        write_atomic(&path, &bytes)?;
        progress.line(&format!("{file}: {} bytes, checksum ok", bytes.len()));
    }
    Ok(())
}

/// Reads `body` to its end (`size` bytes expected, when known), telling
/// `progress` of every chunk.
fn read_counted(body: &mut impl Read, size: Option<u64>, progress: &mut dyn FetchProgress) -> std::io::Result<Vec<u8>> {
    let mut bytes = Vec::with_capacity(size.unwrap_or(0).min(MAX_DOWNLOAD_BYTES) as usize);
    let mut buf = vec![0u8; 1 << 16];
    loop {
        match body.read(&mut buf) {
            Ok(0) => return Ok(bytes),
            Ok(n) => {
                bytes.extend_from_slice(&buf[..n]);
                progress.received(n as u64);
            }
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
}

/// Writes `bytes` to a temporary file next to `path`, then renames it into place.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> Result<(), FetchError> {
    let dir = path.parent().unwrap_or_else(|| Path::new("."));
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let tmp = dir.join(format!(".{name}.tmp-{}", std::process::id()));
    let io = |p: &Path| {
        let p = p.to_path_buf();
        move |source| FetchError::Io { path: p, source }
    };
    let result = (|| {
        let mut f = std::fs::File::create(&tmp).map_err(io(&tmp))?;
        f.write_all(bytes).map_err(io(&tmp))?;
        f.sync_all().map_err(io(&tmp))?;
        std::fs::rename(&tmp, path).map_err(io(path))
    })();
    if result.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    result
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_default_mirror_is_one_that_serves_https() {
        // S3 website endpoints (`*.s3-website*.amazonaws.com`) answer plain
        // HTTP only: the old default never connected.
        assert!(DEFAULT_BASE_URL.starts_with("https://"));
        assert!(!DEFAULT_BASE_URL.contains("s3-website"), "{DEFAULT_BASE_URL}");
        assert_eq!(FetchSpec::fashion_mnist(DEFAULT_BASE_URL).url("t10k-labels-idx1-ubyte.gz"),
            format!("{DEFAULT_BASE_URL}t10k-labels-idx1-ubyte.gz"));
    }

    #[test]
    fn url_joining() {
        let a = FetchSpec::fashion_mnist("http://x/y");
        assert_eq!(a.url("f.gz"), "http://x/y/f.gz");
        let b = FetchSpec::fashion_mnist("http://x/y/");
        assert_eq!(b.url("f.gz"), "http://x/y/f.gz");
        assert_eq!(b.files.len(), 4);
    }

    #[test]
    fn checksum_ignores_compression() {
        let raw = b"hello idx".to_vec();
        let mut enc = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::best());
        enc.write_all(&raw).expect("gz");
        let gz = enc.finish().expect("gz");
        assert_eq!(
            sha256_decompressed(&raw).expect("raw"),
            sha256_decompressed(&gz).expect("gz")
        );
    }
}
