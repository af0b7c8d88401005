//! Crash safety: kill -9 the aggregator process in the middle of a stream of
//! queries, restart it on the same ledger, and check that the spent budget is
//! never below what was answered and every answer the student received is
//! in the ledger (a retry replays it, at no new cost). With delta > 0
//! (GNMax, Confident-GNMax) the spent epsilon comes from the RDP curves
//! alone, so equal epsilons before and after a kill -9 show the curves were
//! restored, not just the counts.

mod common;

use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::*;
use pate_proto::auth::Role;
use pate_proto::tls::ServerRole;
use pate_proto::v1::{aggregator_client::AggregatorClient, BudgetRequest, LabelRequest};
use tonic::transport::Channel;

async fn spawn_aggregator(teacher: &str, ledger: &std::path::Path, addr_file: &std::path::Path, flags: &[&str]) -> (tokio::process::Child, std::net::SocketAddr) {
    let _ = std::fs::remove_file(addr_file);
    let child = tokio::process::Command::new(bin("pate-aggregator"))
        .args(["--teacher", teacher, "--listen", "127.0.0.1:0"])
        .args(flags)
        .args(tls(Role::Aggregator).to_args())
        .arg("--ledger")
        .arg(ledger)
        .arg("--addr-file")
        .arg(addr_file)
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
    let flags = ["--delta", "0", "--noise-scale", "10", "--epsilon-limit", "1000"];
    let (mut child, url) = spawn_aggregator(&t, &ledger, &addr_file, &flags).await;

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
    let (child, url) = spawn_aggregator(&t, &ledger, &addr_file, &flags).await;
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

/// Answers a few batches with `mechanism` at delta = 1e-5, has one request
/// refused, kills the aggregator with SIGKILL and checks the restarted one
/// reports the same spent epsilon (from the restored RDP curves) and counts.
async fn restore_with_delta_after_kill_9(mechanism: pate_privacy::Mechanism, flags: &[&str]) {
    let teacher = start_teacher(&teacher_checkpoint(0)).await;
    let t = teacher.addr.to_string();
    let dir = tempfile::tempdir().expect("tempdir");
    let (ledger, addr_file) = (dir.path().join("ledger.db"), dir.path().join("agg.addr"));
    let (mut child, url) = spawn_aggregator(&t, &ledger, &addr_file, flags).await;
    let mut client = student(url).await;
    for i in 0..3 {
        let r = LabelRequest { request_id: format!("r{i}"), samples: Some(eval_samples(4).to_tensor()) };
        client.label(r).await.expect("fits");
    }
    let big = LabelRequest { request_id: "big".into(), samples: Some(eval_samples(1000).to_tensor()) };
    let err = client.label(big).await.expect_err("1000 more queries do not fit");
    assert_eq!(err.code(), tonic::Code::ResourceExhausted, "{err:?}");
    let before = client.budget(BudgetRequest {}).await.expect("budget").into_inner();
    assert_eq!(before.queries_answered + before.queries_abstained, 12);
    assert_eq!(before.queries_refused, 1000);

    child.start_kill().expect("kill -9");
    child.wait().await.expect("reap");
    let (child, url) = spawn_aggregator(&t, &ledger, &addr_file, flags).await;
    let mut client = student(url).await;
    let after = client.budget(BudgetRequest {}).await.expect("budget").into_inner();
    assert_eq!(after, before, "restored from the ledger after kill -9");

    // The epsilon is the RDP curve of what was answered and abstained, at
    // delta 1e-5: recompute it independently of the ledger.
    let mut expected = pate_privacy::budget::Budget::new(mechanism, before.epsilon_limit, 1e-5, pate_privacy::default_orders()).expect("budget");
    (0..before.queries_answered).for_each(|_| expected.charge(true));
    (0..before.queries_abstained).for_each(|_| expected.charge(false));
    assert!(before.epsilon_spent > 0.0);
    assert!((after.epsilon_spent - expected.spent()).abs() < 1e-9, "{} vs {}", after.epsilon_spent, expected.spent());
    drop(child);
    teacher.stop().await.expect("clean shutdown");
}

#[tokio::test]
async fn gnmax_restores_its_rdp_curve_after_kill_9() {
    let m = pate_privacy::Mechanism::GnMax { sigma: 40.0 };
    restore_with_delta_after_kill_9(m, &["--mechanism", "gnmax", "--sigma", "40", "--delta", "1e-5", "--epsilon-limit", "2"]).await;
}

#[tokio::test]
async fn confident_gnmax_restores_its_rdp_curve_after_kill_9() {
    // One teacher: the top count is 1, so a threshold of 1 with sigma1 = 1
    // answers some queries and abstains on others.
    let m = pate_privacy::Mechanism::ConfidentGnMax { threshold: 1.0, sigma1: 1.0, sigma2: 5.0 };
    let flags = ["--mechanism", "confident-gnmax", "--threshold", "1", "--sigma1", "1", "--sigma2", "5", "--delta", "1e-5", "--epsilon-limit", "500"];
    restore_with_delta_after_kill_9(m, &flags).await;
}
