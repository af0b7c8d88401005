//! The operator's noise-free view of the ensemble: every teacher's votes on
//! the evaluation set, asked directly (this costs no budget because nothing
//! leaves the operator; students never get it). The operator runs the
//! aggregator and so holds its certificate, the only one teachers answer.

use std::net::SocketAddr;

use anyhow::Context;
use pate_ml::data::Images;
use pate_proto::tls::{ServerRole, Transport};
use pate_proto::v1::{teacher_client::TeacherClient, DescribeRequest, VoteRequest};
use pate_proto::Samples;

/// Rows per Vote call, at most (fewer where a teacher takes fewer).
const BATCH: usize = 1000;

/// Each teacher's labels for every image, in teacher order.
pub async fn teacher_votes(addrs: &[SocketAddr], images: &Images, transport: &Transport) -> anyhow::Result<Vec<Vec<u8>>> {
    teacher_votes_tagged(addrs, images, "lab-eval", transport).await
}

/// As [`teacher_votes`], with request ids starting `tag`. A few teachers
/// are asked at once (twice the cores: one's connection is set up while
/// another computes), so the operator's measurement of hundreds of
/// teachers is not a queue of handshakes.
pub async fn teacher_votes_tagged(addrs: &[SocketAddr], images: &Images, tag: &str, transport: &Transport) -> anyhow::Result<Vec<Vec<u8>>> {
    let window = 2 * super::workers::cores();
    let mut all: Vec<Option<Vec<u8>>> = vec![None; addrs.len()];
    let mut running = tokio::task::JoinSet::new();
    let mut pending = addrs.iter().copied().enumerate();
    let images = std::sync::Arc::new(images.clone());
    loop {
        while running.len() < window {
            let Some((i, addr)) = pending.next() else { break };
            let (images, tag, transport) = (std::sync::Arc::clone(&images), tag.to_string(), transport.clone());
            running.spawn(async move { (i, votes_of(addr, &images, &tag, &transport).await) });
        }
        let Some(joined) = running.join_next().await else { break };
        let (i, labels) = joined.context("vote task failed")?;
        all[i] = Some(labels?);
    }
    Ok(all.into_iter().flatten().collect())
}

/// One teacher's labels for every image.
async fn votes_of(addr: SocketAddr, images: &Images, tag: &str, transport: &Transport) -> anyhow::Result<Vec<u8>> {
    let channel = transport
        .endpoint(&addr.to_string(), ServerRole::Teacher)?
        .connect()
        .await
        .with_context(|| format!("connecting to teacher {addr}"))?;
    let mut client = TeacherClient::new(channel).max_encoding_message_size(pate_proto::MAX_MESSAGE_BYTES);
    // A teacher started with a smaller --max-batch refuses bigger calls.
    let info = client.describe(DescribeRequest {}).await.with_context(|| format!("teacher {addr} describe"))?.into_inner();
    let batch = BATCH.min(info.max_batch as usize).max(1);
    let mut labels = Vec::with_capacity(images.len());
    for start in (0..images.len()).step_by(batch) {
        let chunk = images.range(start..(start + batch).min(images.len()));
        let samples = Samples { n: chunk.len(), rows: chunk.rows, cols: chunk.cols, pixels: chunk.data };
        let req = VoteRequest { request_id: format!("{tag}-{start}"), samples: Some(samples.to_tensor()), ..Default::default() };
        labels.extend(client.vote(req).await.with_context(|| format!("teacher {addr} vote"))?.into_inner().labels);
    }
    Ok(labels)
}
