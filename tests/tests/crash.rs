//! Crash safety: kill -9 the aggregator process in the middle of a stream of
//! queries, restart it on the same ledger, and check that the spent budget is
//! never below what was answered and every answer the student received is
//! in the ledger (a retry replays it, at no new cost).

mod common;

use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::*;
use pate_proto::auth::Role;
use pate_proto::tls::ServerRole;
use pate_proto::v1::{aggregator_client::AggregatorClient, BudgetRequest, LabelRequest};
use tonic::transport::Channel;

async fn spawn_aggregator(teacher: &str, ledger: &std::path::Path, addr_file: &std::path::Path) -> (tokio::process::Child, std::net::SocketAddr) {
    let _ = std::fs::remove_file(addr_file);
    let child = tokio::process::Command::new(bin("pate-aggregator"))
        .args(["--teacher", teacher, "--delta", "0", "--noise-scale", "10", "--epsilon-limit", "1000", "--listen", "127.0.0.1:0"])
        .arg("--ledger")
        .arg(ledger)
        .arg("--addr-file")
        .arg(addr_file)
        .args(tls(Role::Aggregator).to_args())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .expect("start pate-aggregator");
    for _ in 0..600 {
        if let Ok(addr) = std::fs::read_to_string(addr_file) {
            return (child, addr.trim().parse().expect("address"));
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("aggregator did not start");
}

/// Student 0's client, once the aggregator answers TLS.
async fn student(addr: std::net::SocketAddr) -> AggregatorClient<Channel> {
    AggregatorClient::new(channel(addr, &transport(Role::Student(0)), ServerRole::Aggregator).await.expect("connect"))
}

fn request(i: usize) -> LabelRequest {
    LabelRequest { request_id: format!("q{i}"), samples: Some(eval_samples(5 + i % 3).to_tensor()) }
}

#[tokio::test]
async fn kill_9_mid_stream_loses_no_spent_budget() {
    let teacher = start_teacher(&teacher_checkpoint(0)).await;
    let t = teacher.addr.to_string();
    let dir = tempfile::tempdir().expect("tempdir");
    let (ledger, addr_file) = (dir.path().join("ledger.db"), dir.path().join("agg.addr"));
    let (mut child, url) = spawn_aggregator(&t, &ledger, &addr_file).await;

    // A student streaming queries; it keeps every answer it receives.
    let received: Arc<Mutex<Vec<(usize, Vec<i32>)>>> = Arc::default();
    let sink = Arc::clone(&received);
    let stream = tokio::spawn(async move {
        let mut client = student(url).await;
        for i in 0.. {
            match client.label(request(i)).await {
                Ok(r) => sink.lock().expect("lock").push((i, r.into_inner().labels)),
                Err(_) => return i, // the aggregator died under this request
            }
        }
        unreachable!()
    });
    while received.lock().expect("lock").len() < 20 {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    child.start_kill().expect("kill -9");
    child.wait().await.expect("reap");
    let interrupted = stream.await.expect("stream task");
    let received = received.lock().expect("lock").clone();
    assert!(received.len() >= 20 && interrupted >= received.len());

    // Restart on the same ledger.
    let (child, url) = spawn_aggregator(&t, &ledger, &addr_file).await;
    let mut client = student(url).await;
    let before = client.budget(BudgetRequest {}).await.expect("budget").into_inner();
    let answered: usize = received.iter().map(|(_, l)| l.len()).sum();
    assert!(before.queries_answered as usize >= answered, "{before:?} < {answered} answered");
    assert!(before.epsilon_spent >= answered as f64 * 0.2 - 1e-9, "spent {} below what was answered", before.epsilon_spent);
    for (i, labels) in &received {
        let replay = client.label(request(*i)).await.expect("replay").into_inner();
        assert_eq!(&replay.labels, labels, "request q{i} must replay the recorded answer");
    }
    let after = client.budget(BudgetRequest {}).await.expect("budget").into_inner();
    assert_eq!(after.queries_answered, before.queries_answered, "replays cost nothing");
    drop(child);
    teacher.stop().await.expect("clean shutdown");
}
