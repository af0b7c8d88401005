//! The Teacher gRPC service: Describe and Vote.

use std::sync::Arc;

use pate_ml::checkpoint::ModelMeta;
use pate_ml::data::Images;
use pate_ml::model::Classifier;
use pate_ml::train::{predict, predict_proba};
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
    /// The model failed on valid input.
    #[error("model failed: {0}")]
    Model(#[from] pate_ml::train::TrainError),
    /// The worker thread died.
    #[error("vote worker failed: {0}")]
    Worker(#[from] tokio::task::JoinError),
}

impl From<VoteError> for Status {
    fn from(err: VoteError) -> Self {
        match err {
            VoteError::Input(e) => e.into(),
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
}

impl TeacherService {
    /// Wraps a loaded model and its metadata.
    pub fn new(id: String, model: Arc<Classifier>, meta: ModelMeta, max_batch: usize) -> Self {
        TeacherService { id, model, meta, max_batch }
    }

    async fn vote(&self, req: v1::VoteRequest) -> Result<v1::VoteResponse, VoteError> {
        let samples = Samples::from_request(req.samples)?;
        samples.check(self.meta.rows, self.meta.cols, self.max_batch)?;
        let images = Images { data: samples.pixels, rows: samples.rows, cols: samples.cols };
        let model = Arc::clone(&self.model);
        let with_probabilities = req.with_probabilities;
        // A forward pass is CPU work: keep it off the async runtime.
        tokio::task::spawn_blocking(move || {
            let labels = predict(&model, &images, FORWARD_BATCH)?;
            let probabilities = if with_probabilities {
                predict_proba(&model, &images, FORWARD_BATCH, 1.0)?.concat()
            } else {
                Vec::new()
            };
            Ok(v1::VoteResponse { labels, probabilities })
        })
        .await?
    }
}

#[tonic::async_trait]
impl Teacher for TeacherService {
    #[instrument(skip_all, fields(teacher = %self.id))]
    async fn describe(&self, _req: Request<v1::DescribeRequest>) -> Result<Response<v1::TeacherInfo>, Status> {
        let m = &self.meta;
        let poison = m.poison.as_ref().map(|p| v1::PoisonInfo {
            trigger: format!("{} {}x{} {}", p.trigger.pattern, p.trigger.size, p.trigger.size, p.trigger.corner),
            rate: p.rate,
            target_class: u32::from(p.target_class),
        });
        Ok(Response::new(v1::TeacherInfo {
            teacher_id: self.id.clone(),
            partition_index: m.partition_index as u32,
            partition_count: m.partition_count as u32,
            model_kind: m.model_kind.to_string(),
            input_shape: vec![m.rows as u32, m.cols as u32],
            num_classes: m.classes as u32,
            train_accuracy: m.train_accuracy,
            data_fingerprint: m.data_fingerprint.clone(),
            poison,
        }))
    }

    #[instrument(skip_all, fields(teacher = %self.id, request_id))]
    async fn vote(&self, req: Request<v1::VoteRequest>) -> Result<Response<v1::VoteResponse>, Status> {
        let req = req.into_inner();
        tracing::Span::current().record("request_id", req.request_id.as_str());
        let resp = self.vote(req).await.inspect_err(|e| tracing::warn!(error = %e, "vote rejected"))?;
        tracing::debug!(n = resp.labels.len(), "answered vote batch");
        Ok(Response::new(resp))
    }
}
