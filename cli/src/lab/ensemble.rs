//! The operator's noise-free view of the ensemble: every teacher's votes on
//! the evaluation set, asked directly (this costs no budget because nothing
//! leaves the operator; students never get it). The operator runs the
//! aggregator and so holds its certificate, the only one teachers answer.

use std::net::SocketAddr;

use anyhow::Context;
use pate_ml::data::Images;
use pate_proto::tls::{ServerRole, Transport};
use pate_proto::v1::{teacher_client::TeacherClient, VoteRequest};
use pate_proto::Samples;

/// Rows per Vote call.
const BATCH: usize = 1000;

/// Each teacher's labels for every image, in teacher order.
pub async fn teacher_votes(addrs: &[SocketAddr], images: &Images, transport: &Transport) -> anyhow::Result<Vec<Vec<u8>>> {
    teacher_votes_tagged(addrs, images, "lab-eval", transport).await
}

/// As [`teacher_votes`], with request ids starting `tag`.
pub async fn teacher_votes_tagged(addrs: &[SocketAddr], images: &Images, tag: &str, transport: &Transport) -> anyhow::Result<Vec<Vec<u8>>> {
    let mut all = Vec::with_capacity(addrs.len());
    for addr in addrs {
        let channel = transport
            .endpoint(&addr.to_string(), ServerRole::Teacher)?
            .connect()
            .await
            .with_context(|| format!("connecting to teacher {addr}"))?;
        let mut client = TeacherClient::new(channel).max_encoding_message_size(pate_proto::MAX_MESSAGE_BYTES);
        let mut labels = Vec::with_capacity(images.len());
        for start in (0..images.len()).step_by(BATCH) {
            let chunk = images.range(start..(start + BATCH).min(images.len()));
            let samples = Samples { n: chunk.len(), rows: chunk.rows, cols: chunk.cols, pixels: chunk.data };
            let req = VoteRequest { request_id: format!("{tag}-{start}"), samples: Some(samples.to_tensor()), with_probabilities: false };
            labels.extend(client.vote(req).await.with_context(|| format!("teacher {addr} vote"))?.into_inner().labels);
        }
        all.push(labels);
    }
    Ok(all)
}
