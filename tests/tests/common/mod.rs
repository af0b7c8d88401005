//! Shared helpers: the built binaries, a small real teacher, certificates
//! (provisioned once per test binary), and servers started in process on
//! `127.0.0.1:0`, with mutual TLS, that shut down cleanly.

#![allow(dead_code)]

pub mod slow_teacher;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use clap::Parser;
use pate_proto::auth::Role;
use pate_proto::tls::{ServerRole, TlsArgs, Transport};
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
    pate_ml::data_dir::resolve_data_dir(None).expect("Fashion-MNIST: run scripts/setup.sh")
}

fn scratch() -> &'static Path {
    static DIR: OnceLock<tempfile::TempDir> = OnceLock::new();
    DIR.get_or_init(|| tempfile::tempdir().expect("tempdir")).path()
}

/// A CA with an aggregator, two teachers and two students, provisioned
/// once per test binary.
pub fn certs() -> &'static Path {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    DIR.get_or_init(|| {
        let dir = scratch().join("certs");
        pate_proto::certs::init(&dir, 2, 2, &[], false).expect("provision certificates");
        dir
    })
}

/// The TLS flags of `role`.
pub fn tls(role: Role) -> TlsArgs {
    TlsArgs::for_party(certs(), role)
}

/// The loaded transport of `role`.
pub fn transport(role: Role) -> Transport {
    tls(role).load().expect("load certificates")
}

/// A channel to the `server` at `addr` over `transport` (connected now).
pub async fn channel(addr: SocketAddr, transport: &Transport, server: ServerRole) -> Result<Channel, tonic::transport::Error> {
    transport.endpoint(&addr.to_string(), server).expect("endpoint").connect().await
}

/// Trains (once per test binary) a small MLP teacher on partition
/// `index` of 30 of the real training split, and returns its checkpoint.
pub fn teacher_checkpoint(index: usize) -> PathBuf {
    static LOCK: std::sync::Mutex<()> = std::sync::Mutex::new(());
    let _guard = LOCK.lock().unwrap_or_else(|p| p.into_inner());
    let out = scratch().join(format!("teacher-{index}"));
    if !out.join("meta.json").exists() {
        train_teacher(&out, &["--partition", &index.to_string(), "--partitions", "30", "--epochs", "2"]);
    }
    out
}

/// Trains a teacher on the real data with the given `pate-teacher train`
/// flags and writes its checkpoint to `out`.
pub fn train_teacher(out: &Path, flags: &[&str]) {
    #[derive(Parser)]
    struct W {
        #[command(flatten)]
        args: pate_teacher::TrainArgs,
    }
    let (dir, out) = (data_dir(), out.to_str().expect("utf-8").to_string());
    let base = ["t", "--data", dir.to_str().expect("utf-8"), "--out", &out];
    let args = W::parse_from(base.iter().chain(flags)).args;
    pate_teacher::train(&args).expect("train teacher");
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

/// Serves the checkpoint as a teacher, with teacher 0's certificate.
pub async fn start_teacher(checkpoint: &Path) -> Server {
    start_teacher_with(checkpoint, tls(Role::Teacher(0))).await
}

/// Serves the checkpoint as a teacher with the given transport flags.
pub async fn start_teacher_with(checkpoint: &Path, tls: TlsArgs) -> Server {
    start_teacher_config(pate_teacher::ServeConfig { checkpoint: checkpoint.to_path_buf(), id: None, max_batch: 64, feature_cache: None, tls }).await
}

/// Serves a teacher configured as given.
pub async fn start_teacher_config(config: pate_teacher::ServeConfig) -> Server {
    let l = listener().await;
    let addr = l.local_addr().expect("addr");
    let (tx, rx) = oneshot::channel();
    let task = tokio::spawn(pate_teacher::run(config, l, async { let _ = rx.await; }));
    Server { addr, stop: Some(tx), task }
}

/// Parses aggregator flags (as on its command line) into a config; without
/// --insecure or --tls-* flags it gets the aggregator's certificate.
pub fn aggregator_config(args: &[&str]) -> pate_aggregator::Config {
    #[derive(Parser)]
    struct W {
        #[command(flatten)]
        config: pate_aggregator::Config,
    }
    let mut config = W::parse_from(std::iter::once("a").chain(args.iter().copied())).config;
    if config.tls == TlsArgs::default() {
        config.tls = tls(Role::Aggregator);
    }
    config
}

/// Runs an aggregator with `config`.
pub async fn start_aggregator(config: pate_aggregator::Config) -> Server {
    let l = listener().await;
    let addr = l.local_addr().expect("addr");
    let (tx, rx) = oneshot::channel();
    let task = tokio::spawn(pate_aggregator::run(config, l, async { let _ = rx.await; }));
    Server { addr, stop: Some(tx), task }
}

/// A client of the teacher at `addr`, as the aggregator (the only role a
/// teacher answers).
pub async fn teacher_client(addr: SocketAddr) -> TeacherClient<Channel> {
    TeacherClient::new(channel(addr, &transport(Role::Aggregator), ServerRole::Teacher).await.expect("connect teacher"))
}

/// A client of the aggregator at `addr`, as student 0.
pub async fn aggregator_client(addr: SocketAddr) -> AggregatorClient<Channel> {
    aggregator_client_as(addr, Role::Student(0)).await
}

/// A client of the aggregator at `addr` with `role`'s certificate.
pub async fn aggregator_client_as(addr: SocketAddr, role: Role) -> AggregatorClient<Channel> {
    AggregatorClient::new(channel(addr, &transport(role), ServerRole::Aggregator).await.expect("connect aggregator"))
}

/// `n` real evaluation images (the last items of the test split).
pub fn eval_samples(n: usize) -> Samples {
    static TEST: OnceLock<pate_ml::data::Dataset> = OnceLock::new();
    let test = TEST.get_or_init(|| pate_ml::data::load_idx_dir(&data_dir()).expect("load data").test);
    let imgs = test.images.range(test.len() - n..test.len());
    Samples { n, rows: imgs.rows, cols: imgs.cols, pixels: imgs.data }
}

/// The value of the Prometheus sample `name` (with its labels, exactly as
/// exposed) in a scrape, or 0 when absent.
pub fn sample(text: &str, name: &str) -> f64 {
    text.lines().find_map(|l| l.strip_prefix(name).and_then(|r| r.strip_prefix(' '))).map_or(0.0, |v| v.trim().parse().expect("number"))
}
