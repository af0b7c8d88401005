//! Helpers shared by the integration tests: writing tiny IDX files and a
//! minimal local HTTP server.

#![allow(dead_code)]

use std::collections::HashMap;
use std::io::{BufRead, BufReader, Write};
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

/// IDX bytes of `n` images of `rows x cols`, pixel `k` of image `i` = `(i + k) % 256`.
pub fn idx_images(n: u32, rows: u32, cols: u32) -> Vec<u8> {
    let mut out = Vec::new();
    for v in [0x0803u32, n, rows, cols] {
        out.extend_from_slice(&v.to_be_bytes());
    }
    let per = (rows * cols) as usize;
    for i in 0..n as usize {
        out.extend((0..per).map(|k| ((i + k) % 256) as u8));
    }
    out
}

/// IDX bytes of `n` labels, label `i` = `i % classes`.
pub fn idx_labels(n: u32, classes: u8) -> Vec<u8> {
    let mut out = Vec::new();
    for v in [0x0801u32, n] {
        out.extend_from_slice(&v.to_be_bytes());
    }
    out.extend((0..n).map(|i| (i % u32::from(classes)) as u8));
    out
}

/// Gzip-compresses `bytes`.
pub fn gz(bytes: &[u8]) -> Vec<u8> {
    let mut enc = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    enc.write_all(bytes).expect("gzip");
    enc.finish().expect("gzip")
}

/// Writes a complete tiny dataset (train: 12 items, test: 5 items, 4x3, 3 classes) into `dir`.
pub fn write_tiny(dir: &Path, compress: bool, sep: char) -> Vec<PathBuf> {
    let files = [
        ("train-images", 3, idx_images(12, 4, 3)),
        ("train-labels", 1, idx_labels(12, 3)),
        ("t10k-images", 3, idx_images(5, 4, 3)),
        ("t10k-labels", 1, idx_labels(5, 3)),
    ];
    let mut paths = Vec::new();
    for (base, dim, bytes) in files {
        let name = format!("{base}{sep}idx{dim}-ubyte{}", if compress { ".gz" } else { "" });
        let p = dir.join(name);
        std::fs::write(&p, if compress { gz(&bytes) } else { bytes }).expect("write");
        paths.push(p);
    }
    paths
}

/// A tiny HTTP/1.1 server on 127.0.0.1 serving fixed files, counting requests.
pub struct Server {
    /// `http://127.0.0.1:PORT/`.
    pub base_url: String,
    /// Number of requests answered.
    pub requests: Arc<AtomicUsize>,
}

impl Server {
    /// Starts serving `files` (path without leading `/` → body). Unknown paths get 404.
    pub fn start(files: HashMap<String, Vec<u8>>) -> Server {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
        let port = listener.local_addr().expect("addr").port();
        let requests = Arc::new(AtomicUsize::new(0));
        let count = requests.clone();
        std::thread::spawn(move || {
            for stream in listener.incoming() {
                let Ok(mut stream) = stream else { continue };
                let mut reader = BufReader::new(stream.try_clone().expect("clone"));
                let mut line = String::new();
                if reader.read_line(&mut line).is_err() {
                    continue;
                }
                // Skip the headers.
                loop {
                    let mut h = String::new();
                    match reader.read_line(&mut h) {
                        Ok(0) | Err(_) => break,
                        Ok(_) if h == "\r\n" || h == "\n" => break,
                        Ok(_) => {}
                    }
                }
                count.fetch_add(1, Ordering::SeqCst);
                let path = line.split_whitespace().nth(1).unwrap_or("/").trim_start_matches('/');
                let (status, body) = match files.get(path) {
                    Some(b) => ("200 OK", b.clone()),
                    None => ("404 Not Found", b"not found".to_vec()),
                };
                let head = format!(
                    "HTTP/1.1 {status}\r\nContent-Length: {}\r\nContent-Type: application/octet-stream\r\nConnection: close\r\n\r\n",
                    body.len()
                );
                let _ = stream.write_all(head.as_bytes());
                let _ = stream.write_all(&body);
                let _ = stream.flush();
            }
        });
        Server {
            base_url: format!("http://127.0.0.1:{port}/"),
            requests,
        }
    }
}
