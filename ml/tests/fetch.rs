//! The downloader against a local HTTP server (no internet): success,
//! skip-if-present, wrong checksum, missing file, replacement of a bad file.

mod common;

use std::collections::HashMap;
use std::sync::atomic::Ordering;

use common::{gz, idx_images, idx_labels, Server};
use pate_ml::data::load_idx_dir;
use pate_ml::fetch::{fetch, sha256_decompressed, FetchError, FetchProgress, FetchSpec, FASHION_MNIST_SHA256};

/// Served files by name, and the spec's `(name, sha256)` pairs.
type Files = (HashMap<String, Vec<u8>>, Vec<(String, String)>);

/// The tiny dataset as served files (gzipped) and their spec (checksums of the raw bytes).
fn tiny_files() -> Files {
    let raw = [
        ("train-images-idx3-ubyte.gz", idx_images(12, 4, 3)),
        ("train-labels-idx1-ubyte.gz", idx_labels(12, 3)),
        ("t10k-images-idx3-ubyte.gz", idx_images(5, 4, 3)),
        ("t10k-labels-idx1-ubyte.gz", idx_labels(5, 3)),
    ];
    let mut served = HashMap::new();
    let mut spec = Vec::new();
    for (name, bytes) in raw {
        spec.push((name.to_string(), sha256_decompressed(&bytes).expect("hash")));
        served.insert(name.to_string(), gz(&bytes));
    }
    (served, spec)
}

fn dir_names(dir: &std::path::Path) -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir(dir)
        .expect("read_dir")
        .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
        .collect();
    v.sort();
    v
}

#[test]
fn downloads_verifies_and_skips_present_files() {
    let (served, files) = tiny_files();
    let server = Server::start(served);
    let dest = tempfile::tempdir().expect("tempdir");
    let dest = dest.path().join("cache");
    let spec = FetchSpec {
        base_url: server.base_url.clone(),
        files,
    };
    let mut lines = Vec::new();
    fetch(&spec, &dest, &mut |l: &str| lines.push(l.to_string())).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(server.requests.load(Ordering::SeqCst), 4);
    assert_eq!(
        dir_names(&dest).len(),
        4,
        "no temporary files left: {:?}",
        dir_names(&dest)
    );
    let d = load_idx_dir(&dest).expect("load fetched");
    assert_eq!(d.train.len(), 12);

    // Second run: everything present with the right checksum, nothing downloaded.
    let mut lines = Vec::new();
    fetch(&spec, &dest, &mut |l: &str| lines.push(l.to_string())).expect("second fetch");
    assert_eq!(server.requests.load(Ordering::SeqCst), 4, "no new requests");
    assert!(lines.iter().all(|l| l.contains("already present")), "{lines:?}");

    // A damaged file is downloaded again and replaced.
    std::fs::write(dest.join("t10k-labels-idx1-ubyte.gz"), b"damaged").expect("write");
    fetch(&spec, &dest, &mut |_: &str| {}).expect("repair");
    assert_eq!(server.requests.load(Ordering::SeqCst), 5);
    assert_eq!(load_idx_dir(&dest).expect("load repaired").test.len(), 5);
}

/// Every event of a fetch, in order.
#[derive(Default)]
struct Recorder {
    /// `(file, announced size, bytes received, done)` per download.
    downloads: Vec<(String, Option<u64>, u64, bool)>,
    lines: usize,
}

impl FetchProgress for Recorder {
    fn line(&mut self, _msg: &str) {
        self.lines += 1;
    }
    fn start(&mut self, file: &str, size: Option<u64>) {
        self.downloads.push((file.to_string(), size, 0, false));
    }
    fn received(&mut self, n: u64) {
        if let Some(d) = self.downloads.last_mut() {
            d.2 += n;
        }
    }
    fn done(&mut self) {
        if let Some(d) = self.downloads.last_mut() {
            d.3 = true;
        }
    }
}

#[test]
fn progress_counts_every_byte_of_every_download() {
    let (served, files) = tiny_files();
    let sizes: Vec<u64> = files.iter().map(|(f, _)| served[f].len() as u64).collect();
    let server = Server::start(served);
    let dest = tempfile::tempdir().expect("tempdir");
    let spec = FetchSpec { base_url: server.base_url.clone(), files: files.clone() };
    let mut rec = Recorder::default();
    fetch(&spec, dest.path(), &mut rec).unwrap_or_else(|e| panic!("{e}"));
    let want: Vec<(String, Option<u64>, u64, bool)> =
        files.iter().zip(&sizes).map(|((f, _), &n)| (f.clone(), Some(n), n, true)).collect();
    assert_eq!(rec.downloads, want);
    assert_eq!(rec.lines, 8, "downloading and checksum ok, per file");
}

#[test]
fn wrong_checksum_is_an_error_and_leaves_no_file() {
    let (served, mut files) = tiny_files();
    let server = Server::start(served);
    let good = files[1].1.clone();
    let wrong = "0".repeat(64);
    files[1].1 = wrong.clone();
    let dest = tempfile::tempdir().expect("tempdir");
    let spec = FetchSpec {
        base_url: server.base_url.clone(),
        files,
    };
    let e = fetch(&spec, dest.path(), &mut |_: &str| {}).expect_err("must fail");
    match &e {
        FetchError::Checksum { file, expected, actual } => {
            assert_eq!(file, "train-labels-idx1-ubyte.gz");
            assert_eq!(expected, &wrong);
            assert_eq!(actual, &good);
        }
        other => panic!("wrong error: {other}"),
    }
    let msg = e.to_string();
    assert!(
        msg.contains("train-labels-idx1-ubyte.gz") && msg.contains(&wrong) && msg.contains(&good),
        "{msg}"
    );
    // Only the file verified before the bad one is there; no bad or temporary file.
    assert_eq!(dir_names(dest.path()), vec!["train-images-idx3-ubyte.gz".to_string()]);
}

#[test]
fn missing_file_and_unreachable_server_are_errors() {
    let (served, mut files) = tiny_files();
    let server = Server::start(served);
    files.push(("nope.gz".into(), "0".repeat(64)));
    let dest = tempfile::tempdir().expect("tempdir");
    let spec = FetchSpec {
        base_url: server.base_url.clone(),
        files,
    };
    let e = fetch(&spec, dest.path(), &mut |_: &str| {}).expect_err("404");
    assert!(matches!(e, FetchError::Http { .. }), "{e}");
    assert!(e.to_string().contains("nope.gz"), "{e}");
    assert!(!dest.path().join("nope.gz").exists());

    // A port nobody listens on.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .expect("bind")
        .local_addr()
        .expect("addr")
        .port();
    let spec = FetchSpec::fashion_mnist(&format!("http://127.0.0.1:{port}"));
    let e = fetch(&spec, dest.path(), &mut |_: &str| {}).expect_err("refused");
    assert!(matches!(e, FetchError::Http { .. }), "{e}");
}

#[test]
fn bad_file_names_are_refused() {
    let dest = tempfile::tempdir().expect("tempdir");
    let spec = FetchSpec {
        base_url: "http://127.0.0.1:1/".into(),
        files: vec![("../x".into(), "0".into())],
    };
    assert!(matches!(
        fetch(&spec, dest.path(), &mut |_: &str| {}),
        Err(FetchError::Spec(_))
    ));
}

/// The built-in checksums match the real files (Debian's package), and the
/// real label files fetch through the local server with them.
#[test]
fn fashion_mnist_checksums_match_the_real_files() {
    let dir = pate_ml::data_dir::resolve_data_dir(None).expect("Fashion-MNIST not found");
    let mut served = HashMap::new();
    for (name, sha) in FASHION_MNIST_SHA256 {
        let bytes = std::fs::read(dir.join(name)).unwrap_or_else(|e| panic!("{name}: {e}"));
        assert_eq!(sha256_decompressed(&bytes).expect("hash"), sha, "{name}");
        served.insert(name.to_string(), bytes);
    }
    let server = Server::start(served);
    let mut spec = FetchSpec::fashion_mnist(&server.base_url);
    spec.files.retain(|(n, _)| n.contains("labels"));
    let dest = tempfile::tempdir().expect("tempdir");
    fetch(&spec, dest.path(), &mut |_: &str| {}).expect("fetch real labels");
    assert_eq!(dir_names(dest.path()).len(), 2);
}
