//! The Teacher gRPC service: Describe and Vote.

use std::sync::Arc;

use pate_ml::checkpoint::ModelMeta;
use pate_ml::data::Images;
use pate_ml::feature_cache::FeatureCache;
use pate_ml::model::Classifier;
use pate_ml::train::predict;
use pate_proto::v1::{self, teacher_server::Teacher};
use pate_proto::Samples;
use tonic::{Request, Response, Status};
use tracing::instrument;

/// Rows per forward pass while voting.
const FORWARD_BATCH: usize = 512;

/// Why a vote failed.
#[derive(Debug, thiserror::Error)]
pub enum VoteError {
    /// The request was malformed.
    #[error(transparent)]
    Input(#[from] pate_proto::ProtoError),
    /// The request asked for probability vectors, which are never served.
    #[error("teachers return labels only: probability vectors are not served over the network")]
    Probabilities,
    /// A vote by key to a teacher that holds no feature cache, or one that
    /// carried both keys and samples.
    #[error("{0}")]
    Keys(&'static str),
    /// The model failed on valid input.
    #[error("model failed: {0}")]
    Model(#[from] pate_ml::train::TrainError),
    /// The feature cache could not be read.
    #[error("feature cache: {0}")]
    FeatureCache(#[from] pate_ml::feature_cache::FeatureCacheError),
    /// The worker thread died.
    #[error("vote worker failed: {0}")]
    Worker(#[from] tokio::task::JoinError),
}

impl From<VoteError> for Status {
    fn from(err: VoteError) -> Self {
        match err {
            VoteError::Input(e) => e.into(),
            VoteError::Probabilities => Status::permission_denied(VoteError::Probabilities.to_string()),
            VoteError::Keys(why) => Status::invalid_argument(why),
            other => Status::internal(other.to_string()),
        }
    }
}

/// A trained model answering votes.
pub struct TeacherService {
    id: String,
    model: Arc<Classifier>,
    meta: ModelMeta,
    max_batch: usize,
    cache: Option<Arc<FeatureCache>>,
}

impl TeacherService {
    /// Wraps a loaded model and its metadata.
    pub fn new(id: String, model: Arc<Classifier>, meta: ModelMeta, max_batch: usize) -> Self {
        TeacherService { id, model, meta, max_batch, cache: None }
    }

    /// Reads the features of public images from `cache` (scatter models).
    pub fn with_feature_cache(mut self, cache: Option<Arc<FeatureCache>>) -> Self {
        self.cache = cache;
        self
    }

    async fn vote(&self, req: v1::VoteRequest) -> Result<v1::VoteResponse, VoteError> {
        if req.with_probabilities {
            return Err(VoteError::Probabilities);
        }
        if !req.sample_keys.is_empty() {
            return self.vote_by_key(req).await;
        }
        let samples = Samples::from_request(req.samples)?;
        samples.check(self.meta.rows, self.meta.cols, self.max_batch)?;
        let images = Images { data: samples.pixels, rows: samples.rows, cols: samples.cols };
        let (model, cache) = (Arc::clone(&self.model), self.cache.clone());
        // A forward pass is CPU work: keep it off the async runtime.
        tokio::task::spawn_blocking(move || {
            let labels = match cache {
                Some(cache) => {
                    let (labels, hits) = cache.predict(&model, &images)?;
                    metrics::counter!("pate_teacher_feature_cache_hits_total").increment(hits as u64);
                    labels
                }
                None => predict(&model, &images, FORWARD_BATCH)?,
            };
            Ok(v1::VoteResponse { labels, unknown: Vec::new() })
        })
        .await?
    }

    /// A vote on the public images filed under `req.sample_keys` in this
    /// teacher's feature cache; the keys it lacks come back as unknown.
    async fn vote_by_key(&self, req: v1::VoteRequest) -> Result<v1::VoteResponse, VoteError> {
        if req.samples.is_some() {
            return Err(VoteError::Keys("a vote carries samples or sample_keys, not both"));
        }
        let Some(cache) = self.cache.clone() else {
            return Err(VoteError::Keys("this teacher holds no feature cache: send the samples, not their keys"));
        };
        let keys = pate_proto::parse_keys(&req.sample_keys, self.max_batch)?;
        let model = Arc::clone(&self.model);
        tokio::task::spawn_blocking(move || {
            let (labels, unknown) = cache.predict_keys(&model, &keys)?;
            metrics::counter!("pate_teacher_feature_cache_hits_total").increment((keys.len() - unknown.len()) as u64);
            let unknown = unknown.into_iter().map(|i| i as u32).collect();
            Ok(v1::VoteResponse { labels, unknown })
        })
        .await?
    }
}

#[tonic::async_trait]
impl Teacher for TeacherService {
    #[instrument(skip_all, fields(teacher = %self.id))]
    async fn describe(&self, _req: Request<v1::DescribeRequest>) -> Result<Response<v1::TeacherInfo>, Status> {
        // Shape and classes only: no statistic of the private partition.
        let m = &self.meta;
        Ok(Response::new(v1::TeacherInfo {
            teacher_id: self.id.clone(),
            partition_index: m.partition_index as u32,
            partition_count: m.partition_count as u32,
            model_kind: m.model_kind.to_string(),
            input_shape: vec![m.rows as u32, m.cols as u32],
            num_classes: m.classes as u32,
            max_batch: u32::try_from(self.max_batch).unwrap_or(u32::MAX),
            votes_by_key: self.cache.is_some(),
        }))
    }

    #[instrument(skip_all, fields(teacher = %self.id, request_id))]
    async fn vote(&self, req: Request<v1::VoteRequest>) -> Result<Response<v1::VoteResponse>, Status> {
        let req = req.into_inner();
        tracing::Span::current().record("request_id", req.request_id.as_str());
        let started = std::time::Instant::now();
        let result = self.vote(req).await.inspect_err(|e| tracing::warn!(error = %e, "vote rejected"));
        // Prometheus metrics (served with --metrics-addr): votes, the
        // samples they carried, failures, and latency.
        metrics::histogram!("pate_teacher_vote_seconds").record(started.elapsed().as_secs_f64());
        let resp = match result {
            Ok(resp) => {
                metrics::counter!("pate_teacher_votes_total").increment(1);
                metrics::counter!("pate_teacher_vote_samples_total").increment(resp.labels.len() as u64);
                resp
            }
            Err(e) => {
                metrics::counter!("pate_teacher_vote_errors_total").increment(1);
                return Err(e.into());
            }
        };
        tracing::debug!(n = resp.labels.len(), "answered vote batch");
        Ok(Response::new(resp))
    }
}
