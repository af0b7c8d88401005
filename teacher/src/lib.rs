//! A PATE teacher: trains a model on one disjoint partition of the sensitive
//! training data, then answers one question over gRPC, "what label do you
//! vote for on these inputs?". The data never leaves this process.

pub mod service;
pub mod train;

use std::future::Future;
use std::path::PathBuf;
use std::sync::Arc;

use anyhow::Context;
use pate_proto::auth::RequireRole;
use pate_proto::tls::TlsArgs;
use pate_proto::v1::teacher_server::TeacherServer;
use tonic::service::interceptor::InterceptedService;
use tokio::net::TcpListener;

pub use service::TeacherService;
pub use train::{train, TrainArgs};

pub use pate_proto::MAX_MESSAGE_BYTES;

/// How `serve` runs.
#[derive(clap::Args, Debug, Clone)]
pub struct ServeConfig {
    /// Checkpoint directory written by `pate-teacher train`.
    #[arg(long, env = "PATE_CHECKPOINT")]
    pub checkpoint: PathBuf,
    /// Identifier reported by Describe (default: `teacher-<partition>`).
    #[arg(long, env = "PATE_TEACHER_ID")]
    pub id: Option<String>,
    /// Largest batch of samples one Vote may carry.
    #[arg(long, default_value_t = 4096, env = "PATE_MAX_BATCH")]
    pub max_batch: usize,
    /// Precomputed scattering features of public images (written by `pate
    /// lab`), for scatter models: an image found there is not transformed
    /// again; any other is. Votes are the same with or without it.
    #[arg(long, env = "PATE_FEATURE_CACHE")]
    pub feature_cache: Option<PathBuf>,
    /// Transport security: the teacher answers only the aggregator's certificate.
    #[command(flatten)]
    pub tls: TlsArgs,
}

/// Serves the teacher in `config` on `listener` until `shutdown` resolves.
pub async fn run(config: ServeConfig, listener: TcpListener, shutdown: impl Future<Output = ()>) -> anyhow::Result<()> {
    let transport = config.tls.load().context("transport security")?;
    let dir = config.checkpoint.clone();
    let (model, meta) = tokio::task::spawn_blocking(move || pate_ml::checkpoint::load(&dir))
        .await
        .context("checkpoint loader panicked")?
        .with_context(|| format!("loading checkpoint {}", config.checkpoint.display()))?;
    let cache = match config.feature_cache.clone() {
        Some(path) => {
            let cache = tokio::task::spawn_blocking(move || pate_ml::feature_cache::FeatureCache::open(&path))
                .await
                .context("feature cache loader panicked")??;
            cache.check_model(&model)?;
            tracing::info!(path = %cache.path().display(), images = cache.len(), "public images' features read from a cache");
            Some(Arc::new(cache))
        }
        None => None,
    };
    let id = config.id.clone().unwrap_or_else(|| format!("teacher-{}", meta.partition_index));
    let service = TeacherService::new(id.clone(), Arc::new(model), meta, config.max_batch).with_feature_cache(cache);

    let (reporter, health) = tonic_health::server::health_reporter();
    reporter.set_serving::<TeacherServer<TeacherService>>().await;
    let addr = listener.local_addr().context("listener address")?;
    tracing::info!(teacher = %id, %addr, "serving votes");
    let teacher = TeacherServer::new(service).max_decoding_message_size(MAX_MESSAGE_BYTES);
    transport
        .server()?
        .add_service(health)
        .add_service(InterceptedService::new(teacher, RequireRole::aggregator_only(transport.is_tls())))
        .serve_with_incoming_shutdown(pate_proto::runtime::incoming(listener), shutdown)
        .await
        .context("teacher server failed")?;
    tracing::info!(teacher = %id, "stopped");
    Ok(())
}
