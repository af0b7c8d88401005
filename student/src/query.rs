//! Asking the aggregator for labels, batch by batch, with free retries.

use std::time::Duration;

use anyhow::Context;
use pate_ml::data::Images;
use pate_proto::v1::{aggregator_client::AggregatorClient, BudgetRequest, BudgetState, EnsembleRequest, LabelRequest};
use pate_proto::Samples;
use pate_proto::tls::{ServerRole, Transport};
use tonic::transport::Channel;
use tonic::Code;

use crate::Config;

/// Longest pause between two retries of one batch.
const MAX_BACKOFF: Duration = Duration::from_secs(2);

/// The labels the aggregator released.
#[derive(Debug, Clone)]
pub struct Labelled {
    /// Indices (into the queried images) that got a label.
    pub items: Vec<usize>,
    /// Their labels.
    pub labels: Vec<u8>,
    /// Queries the aggregator abstained on.
    pub abstained: usize,
    /// Queries refused for lack of budget (never sent again).
    pub refused: usize,
    /// The budget after the last answer.
    pub budget: BudgetState,
}

async fn connect(addr: &str, wait: Duration, transport: &Transport) -> anyhow::Result<AggregatorClient<Channel>> {
    let ep = transport.endpoint(addr, ServerRole::Aggregator).with_context(|| format!("bad aggregator address {addr:?}"))?;
    let channel = pate_proto::retry::retry_for(wait, || ep.connect()).await.with_context(|| format!("aggregator {addr} unreachable"))?;
    Ok(AggregatorClient::new(channel).max_encoding_message_size(pate_proto::MAX_MESSAGE_BYTES))
}

fn random_run_id() -> String {
    format!("{:016x}", rand::random::<u64>())
}

/// Asks the aggregator to label every image in `images`, in batches.
/// Stops asking once the budget is exhausted and returns what it got.
pub async fn label_pool(config: &Config, images: &Images, classes: usize) -> anyhow::Result<Labelled> {
    let wait = Duration::try_from_secs_f64(config.connect_timeout).context("bad --connect-timeout")?;
    let transport = config.tls.load().context("transport security")?;
    let mut client = connect(&config.aggregator, wait, &transport).await?;
    let ensemble = client.ensemble(EnsembleRequest {}).await.context("asking the aggregator about its ensemble")?.into_inner();
    anyhow::ensure!(
        ensemble.input_shape == [images.rows as u32, images.cols as u32] && ensemble.num_classes as usize == classes,
        "the aggregator's ensemble takes {:?} inputs with {} classes, but this data is {}x{} with {classes} classes",
        ensemble.input_shape,
        ensemble.num_classes,
        images.rows,
        images.cols
    );
    let batch = config.query_batch.clamp(1, (ensemble.max_batch as usize).max(1));
    let run_id = config.run_id.clone().unwrap_or_else(random_run_id);
    tracing::info!(teachers = ensemble.num_teachers, mechanism = %ensemble.mechanism, queries = images.len(), batch, %run_id, "querying aggregator");

    let interval = Duration::try_from_secs_f64(config.query_interval).context("bad --query-interval")?;
    let mut out = Labelled { items: Vec::new(), labels: Vec::new(), abstained: 0, refused: 0, budget: BudgetState::default() };
    let starts: Vec<usize> = (0..images.len()).step_by(batch).collect();
    for (b, &start) in starts.iter().enumerate() {
        let end = (start + batch).min(images.len());
        let chunk = images.range(start..end);
        let samples = Samples { n: chunk.len(), rows: chunk.rows, cols: chunk.cols, pixels: chunk.data };
        let req = LabelRequest { request_id: format!("{run_id}-{b}"), samples: Some(samples.to_tensor()) };
        if b > 0 && !interval.is_zero() {
            tokio::time::sleep(interval).await;
        }
        match send(&mut client, req, wait).await {
            Ok(resp) => {
                for (i, &label) in resp.labels.iter().enumerate() {
                    match u8::try_from(label) {
                        Ok(l) if (l as usize) < classes => {
                            out.items.push(start + i);
                            out.labels.push(l);
                        }
                        _ => out.abstained += 1,
                    }
                }
                out.budget = resp.budget.unwrap_or_default();
                tracing::info!(batch = b + 1, of = starts.len(), answered = out.items.len(), epsilon = out.budget.epsilon_spent, "labelled batch");
            }
            Err(status) if status.code() == Code::ResourceExhausted => {
                out.refused = images.len() - start;
                tracing::warn!(refused = out.refused, reason = status.message(), "privacy budget exhausted: training on what was answered");
                break;
            }
            Err(status) => return Err(anyhow::anyhow!("label request {b} failed: {:?}: {}", status.code(), status.message())),
        }
    }
    if out.items.is_empty() {
        out.budget = client.budget(BudgetRequest {}).await?.into_inner();
    }
    Ok(out)
}

async fn send(client: &mut AggregatorClient<Channel>, req: LabelRequest, wait: Duration) -> Result<pate_proto::v1::LabelResponse, tonic::Status> {
    // Retries are free (the aggregator replays a recorded request id), so a
    // restarting aggregator or a brief loss of quorum only delays the run.
    let deadline = tokio::time::Instant::now() + wait;
    let mut attempt: u32 = 0;
    loop {
        match client.label(req.clone()).await {
            Ok(r) => return Ok(r.into_inner()),
            Err(s) if matches!(s.code(), Code::Unavailable | Code::Aborted | Code::Unknown) && tokio::time::Instant::now() < deadline => {
                attempt += 1;
                tracing::warn!(request_id = %req.request_id, attempt, code = ?s.code(), error = s.message(), "retrying label batch");
                tokio::time::sleep((pate_proto::retry::RETRY_PAUSE * attempt).min(MAX_BACKOFF)).await;
            }
            Err(s) => return Err(s),
        }
    }
}
