//! The aggregator's health follows its quorum, and its Prometheus metrics
//! move as it answers: with two teachers and a quorum of two, stopping one
//! turns the aggregator's gRPC health to NOT_SERVING (and its Label calls
//! fail at no cost); bringing the teacher back on the same address turns it
//! SERVING again. A scrape of /metrics before and after some answers shows
//! the counters, the epsilon gauge and the per-teacher histograms moving.
//! `pate health`, the probe the container deployments run over mutual TLS,
//! exits 0 exactly while the aggregator is SERVING.

mod common;

use std::time::Duration;

use common::*;
use pate_proto::auth::Role;
use pate_proto::tls::ServerRole;
use pate_proto::v1::LabelRequest;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tonic_health::pb::health_check_response::ServingStatus;
use tonic_health::pb::{health_client::HealthClient, HealthCheckRequest};

async fn scrape(addr: std::net::SocketAddr) -> String {
    let mut s = tokio::net::TcpStream::connect(addr).await.expect("connect to /metrics");
    s.write_all(b"GET /metrics HTTP/1.0\r\nHost: localhost\r\n\r\n").await.expect("send");
    let mut text = String::new();
    s.read_to_string(&mut text).await.expect("read");
    assert!(text.starts_with("HTTP/1.") && text.contains(" 200 "), "{text}");
    text
}


async fn status(addr: std::net::SocketAddr, service: &str) -> i32 {
    let ch = channel(addr, &transport(Role::Student(0)), ServerRole::Aggregator).await.expect("connect health");
    let mut c = HealthClient::new(ch);
    c.check(HealthCheckRequest { service: service.to_string() }).await.expect("check").into_inner().status
}

/// `pate health` against the aggregator at `addr`, as student 0: whether
/// it exited 0. (Waited for off the runtime, which serves the aggregator.)
async fn probe(addr: std::net::SocketAddr, service: &str) -> bool {
    let mut cmd = std::process::Command::new(bin("pate"));
    cmd.args(["health", "--addr", &addr.to_string(), "--server", "aggregator", "--service", service]);
    cmd.args(tls(Role::Student(0)).to_args());
    let out = tokio::task::spawn_blocking(move || cmd.output()).await.expect("join").expect("run pate health");
    out.status.success()
}

/// Polls the aggregator's overall health until it is `want` (the monitor
/// probes every 0.2 s; the wait is for an event, not a timing assertion).
async fn wait_for(addr: std::net::SocketAddr, want: ServingStatus) {
    for _ in 0..600 {
        if status(addr, "").await == want as i32 {
            return;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("aggregator health never became {want:?}");
}

#[tokio::test]
async fn health_follows_the_quorum_and_metrics_move() {
    let metrics_port = std::net::TcpListener::bind("127.0.0.1:0").expect("free port").local_addr().expect("addr");
    pate_proto::metrics::MetricsArgs { metrics_addr: Some(metrics_port) }.install().expect("metrics");

    let (c0, c1) = (teacher_checkpoint(0), teacher_checkpoint(1));
    let t0 = start_teacher(&c0).await;
    let t1 = start_teacher(&c1).await;
    let t1_addr = t1.addr;
    let dir = tempfile::tempdir().expect("tempdir");
    let ledger = dir.path().join("ledger.db");
    let config = aggregator_config(&[
        "--teacher", &t0.addr.to_string(), "--teacher", &t1_addr.to_string(), "--quorum", "2", "--health-interval", "0.2",
        "--vote-timeout", "5", "--noise-scale", "10", "--epsilon-limit", "1000", "--delta", "0", "--ledger", ledger.to_str().expect("utf-8"),
    ]);
    let agg = start_aggregator(config).await;
    let mut client = aggregator_client(agg.addr).await;
    wait_for(agg.addr, ServingStatus::Serving).await;
    assert_eq!(status(agg.addr, "liveness").await, ServingStatus::Serving as i32);
    assert!(probe(agg.addr, "").await, "pate health must pass while serving");

    let before = scrape(metrics_port).await;
    for i in 0..3 {
        client.label(LabelRequest { request_id: format!("m{i}"), samples: Some(eval_samples(4).to_tensor()) }).await.expect("label");
    }
    let after = scrape(metrics_port).await;
    let answered = r#"pate_aggregator_queries_total{outcome="answered"}"#;
    assert_eq!(sample(&after, answered) - sample(&before, answered), 12.0, "answered counter did not move by 12:\n{after}");
    assert!(sample(&after, "pate_aggregator_epsilon_spent") > sample(&before, "pate_aggregator_epsilon_spent"));
    assert_eq!(sample(&after, "pate_aggregator_epsilon_limit"), 1000.0);
    let votes = format!(r#"pate_aggregator_teacher_vote_seconds_count{{teacher="{}"}}"#, t1_addr);
    assert!(sample(&after, &votes) >= 3.0, "no vote latency for {t1_addr}:\n{after}");
    assert!(sample(&after, "pate_aggregator_label_request_seconds_count") >= 3.0);
    assert!(sample(&after, "pate_teacher_votes_total") >= 6.0, "teachers' own counters (same process) did not move");

    // One of two teachers down, quorum two: NOT_SERVING, and queries fail free.
    t1.stop().await.expect("stop teacher 1");
    wait_for(agg.addr, ServingStatus::NotServing).await;
    let spent = sample(&scrape(metrics_port).await, "pate_aggregator_epsilon_spent");
    let err = client.label(LabelRequest { request_id: "down".into(), samples: Some(eval_samples(4).to_tensor()) }).await.expect_err("below quorum");
    assert_eq!(err.code(), tonic::Code::Unavailable, "{err:?}");
    let down = scrape(metrics_port).await;
    assert_eq!(sample(&down, "pate_aggregator_epsilon_spent"), spent, "a failed query must cost nothing");
    assert_eq!(sample(&down, "pate_aggregator_serving"), 0.0);
    assert!(sample(&down, &format!(r#"pate_aggregator_teacher_errors_total{{teacher="{t1_addr}"}}"#)) >= 1.0, "{down}");
    assert_eq!(status(agg.addr, "liveness").await, ServingStatus::Serving as i32, "liveness must not follow the quorum");
    assert!(!probe(agg.addr, "").await, "pate health must fail below the quorum");
    assert!(probe(agg.addr, "liveness").await, "pate health on liveness must pass below the quorum");

    // The teacher comes back on the same address: SERVING again, and answering.
    let l = tokio::net::TcpListener::bind(t1_addr).await.expect("rebind the teacher's address");
    let (tx, rx) = tokio::sync::oneshot::channel::<()>();
    let config = pate_teacher::ServeConfig { checkpoint: c1, id: None, max_batch: 64, feature_cache: None, tls: tls(Role::Teacher(1)) };
    let back = tokio::spawn(pate_teacher::run(config, l, async { let _ = rx.await; }));
    wait_for(agg.addr, ServingStatus::Serving).await;
    client.label(LabelRequest { request_id: "up".into(), samples: Some(eval_samples(4).to_tensor()) }).await.expect("label after recovery");
    assert_eq!(sample(&scrape(metrics_port).await, "pate_aggregator_serving"), 1.0);

    let _ = tx.send(());
    back.await.expect("join").expect("teacher");
    agg.stop().await.expect("stop aggregator");
    t0.stop().await.expect("stop teacher 0");
}
