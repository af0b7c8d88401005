//! A teacher stand-in whose votes wait behind a gate, to hold a Label call
//! in the middle of its fan-out: it reports when each vote starts and when
//! a waiting vote is cancelled (its caller went away), and counts the votes.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use pate_proto::v1::teacher_server::{Teacher, TeacherServer};
use pate_proto::v1::{DescribeRequest, TeacherInfo, VoteRequest, VoteResponse};
use pate_proto::Samples;
use tokio::sync::{mpsc, oneshot, watch};
use tonic::{Request, Response, Status};

use super::Server;

/// Which votes wait for the gate.
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum Block {
    /// Only the first vote; later ones answer at once.
    First,
    /// Every vote, until the gate opens.
    All,
}

/// What the stand-in saw.
#[derive(Debug, PartialEq, Eq)]
pub enum Event {
    /// Vote number `k` (0-based) arrived.
    Started(usize),
    /// Vote `k` was dropped while waiting at the gate.
    Cancelled(usize),
}

/// The handle a test holds.
pub struct SlowTeacher {
    pub server: Server,
    /// Events in the order they happened.
    pub events: mpsc::UnboundedReceiver<Event>,
    /// Send `true` to open the gate.
    pub gate: watch::Sender<bool>,
    /// Votes received so far.
    pub votes: Arc<AtomicUsize>,
}

struct Service {
    block: Block,
    votes: Arc<AtomicUsize>,
    gate: watch::Receiver<bool>,
    events: mpsc::UnboundedSender<Event>,
}

/// Reports a cancellation unless disarmed.
struct OnDrop(Option<(mpsc::UnboundedSender<Event>, usize)>);

impl Drop for OnDrop {
    fn drop(&mut self) {
        if let Some((tx, k)) = self.0.take() {
            let _ = tx.send(Event::Cancelled(k));
        }
    }
}

#[tonic::async_trait]
impl Teacher for Service {
    async fn describe(&self, _req: Request<DescribeRequest>) -> Result<Response<TeacherInfo>, Status> {
        Ok(Response::new(TeacherInfo { teacher_id: "slow".into(), input_shape: vec![28, 28], num_classes: 10, ..Default::default() }))
    }

    async fn vote(&self, req: Request<VoteRequest>) -> Result<Response<VoteResponse>, Status> {
        let k = self.votes.fetch_add(1, Ordering::SeqCst);
        let samples = Samples::from_request(req.into_inner().samples)?;
        let _ = self.events.send(Event::Started(k));
        if self.block == Block::All || k == 0 {
            let mut armed = OnDrop(Some((self.events.clone(), k)));
            let mut gate = self.gate.clone();
            gate.wait_for(|open| *open).await.map_err(|_| Status::unavailable("gate gone"))?;
            armed.0 = None;
        }
        // Every teacher votes class 3: only the aggregator's noise varies.
        Ok(Response::new(VoteResponse { labels: vec![3; samples.n], ..Default::default() }))
    }
}

/// Starts the stand-in on 127.0.0.1:0 with its gate closed.
pub async fn start(block: Block) -> SlowTeacher {
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind loopback");
    let addr = l.local_addr().expect("addr");
    let (events_tx, events) = mpsc::unbounded_channel();
    let (gate, gate_rx) = watch::channel(false);
    let votes = Arc::new(AtomicUsize::new(0));
    let service = Service { block, votes: Arc::clone(&votes), gate: gate_rx, events: events_tx };
    let (tx, rx) = oneshot::channel::<()>();
    // Teacher 0's certificate, as a real teacher has: the aggregator talks
    // mutual TLS and checks the teacher role.
    let mut builder = super::transport(pate_proto::auth::Role::Teacher(0)).server().expect("teacher TLS");
    let task = tokio::spawn(async move {
        builder
            .add_service(TeacherServer::new(service))
            .serve_with_incoming_shutdown(pate_proto::runtime::incoming(l), async {
                let _ = rx.await;
            })
            .await?;
        Ok(())
    });
    SlowTeacher { server: Server { addr, stop: Some(tx), task }, events, gate, votes }
}

/// `n` blank 28x28 samples of grey level `level`.
pub fn samples(n: usize, level: u8) -> Samples {
    Samples { n, rows: 28, cols: 28, pixels: vec![level; n * 28 * 28] }
}
