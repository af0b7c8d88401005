//! Shared helpers: the built binaries, a small real teacher, and servers
//! started in process on `127.0.0.1:0` that shut down cleanly.

#![allow(dead_code)]

pub mod slow_teacher;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use clap::Parser;
use pate_proto::v1::aggregator_client::AggregatorClient;
use pate_proto::v1::teacher_client::TeacherClient;
use pate_proto::Samples;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;
use tonic::transport::Channel;

/// A built binary of the workspace (cargo test --workspace builds them all).
pub fn bin(name: &str) -> PathBuf {
    let exe = std::env::current_exe().expect("test executable path");
    let dir = exe.parent().and_then(Path::parent).expect("target/<profile> directory");
    let path = dir.join(name);
    assert!(path.is_file(), "{} not built: run `cargo test --workspace` (it builds every binary)", path.display());
    path
}

/// The real Fashion-MNIST from Debian's package (installed by scripts/setup.sh).
pub fn data_dir() -> PathBuf {
    pate_ml::data::resolve_data_dir(None).expect("Fashion-MNIST: run scripts/setup.sh")
}

fn scratch() -> &'static Path {
    static DIR: OnceLock<tempfile::TempDir> = OnceLock::new();
    DIR.get_or_init(|| tempfile::tempdir().expect("tempdir")).path()
}

/// Trains (once per test binary) a small MLP teacher on partition
/// `index` of 30 of the real training split, and returns its checkpoint.
pub fn teacher_checkpoint(index: usize) -> PathBuf {
    static LOCK: std::sync::Mutex<()> = std::sync::Mutex::new(());
    let _guard = LOCK.lock().unwrap_or_else(|p| p.into_inner());
    let out = scratch().join(format!("teacher-{index}"));
    if !out.join("meta.json").exists() {
        #[derive(Parser)]
        struct W {
            #[command(flatten)]
            args: pate_teacher::TrainArgs,
        }
        let dir = data_dir();
        let args = W::parse_from([
            "t", "--data", dir.to_str().expect("utf-8"), "--partition", &index.to_string(), "--partitions", "30",
            "--epochs", "2", "--out", out.to_str().expect("utf-8"),
        ])
        .args;
        pate_teacher::train(&args).expect("train teacher");
    }
    out
}

/// A server running in this process until [`Server::stop`].
pub struct Server {
    pub addr: SocketAddr,
    stop: Option<oneshot::Sender<()>>,
    task: JoinHandle<anyhow::Result<()>>,
}

impl Server {
    /// Stops the server and returns how its `run` ended.
    pub async fn stop(mut self) -> anyhow::Result<()> {
        if let Some(tx) = self.stop.take() {
            let _ = tx.send(());
        }
        self.task.await?
    }

    /// Whether `run` has returned (for start-up failures).
    pub async fn join(self) -> anyhow::Result<()> {
        self.task.await?
    }
}

async fn listener() -> tokio::net::TcpListener {
    tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind loopback")
}

/// Serves the checkpoint as a teacher.
pub async fn start_teacher(checkpoint: &Path) -> Server {
    let l = listener().await;
    let addr = l.local_addr().expect("addr");
    let (tx, rx) = oneshot::channel();
    let config = pate_teacher::ServeConfig { checkpoint: checkpoint.to_path_buf(), id: None, max_batch: 64 };
    let task = tokio::spawn(pate_teacher::run(config, l, async { let _ = rx.await; }));
    Server { addr, stop: Some(tx), task }
}

/// Parses aggregator flags (as on its command line) into a config.
pub fn aggregator_config(args: &[&str]) -> pate_aggregator::Config {
    #[derive(Parser)]
    struct W {
        #[command(flatten)]
        config: pate_aggregator::Config,
    }
    W::parse_from(std::iter::once("a").chain(args.iter().copied())).config
}

/// Runs an aggregator with `config`.
pub async fn start_aggregator(config: pate_aggregator::Config) -> Server {
    let l = listener().await;
    let addr = l.local_addr().expect("addr");
    let (tx, rx) = oneshot::channel();
    let task = tokio::spawn(pate_aggregator::run(config, l, async { let _ = rx.await; }));
    Server { addr, stop: Some(tx), task }
}

pub async fn teacher_client(addr: SocketAddr) -> TeacherClient<Channel> {
    TeacherClient::connect(format!("http://{addr}")).await.expect("connect teacher")
}

/// Connects once the aggregator is serving (it first connects to its teachers).
pub async fn aggregator_client(addr: SocketAddr) -> AggregatorClient<Channel> {
    AggregatorClient::connect(format!("http://{addr}")).await.expect("connect aggregator")
}

/// `n` real evaluation images (the last items of the test split).
pub fn eval_samples(n: usize) -> Samples {
    static TEST: OnceLock<pate_ml::data::Dataset> = OnceLock::new();
    let test = TEST.get_or_init(|| pate_ml::data::load_idx_dir(&data_dir()).expect("load data").test);
    let imgs = test.images.range(test.len() - n..test.len());
    Samples { n, rows: imgs.rows, cols: imgs.cols, pixels: imgs.data }
}
