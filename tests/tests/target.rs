//! The aggregator's `--target-epsilon` stop over real gRPC: it answers while
//! the data-dependent epsilon of what it answered stays under the target,
//! then refuses with RESOURCE_EXHAUSTED at no cost, a restart restores the
//! data-dependent spend from the ledger, and a target no query can meet is
//! refused at start-up.

mod common;

use common::*;
use pate_proto::v1::{BudgetRequest, LabelRequest};
use tonic::Code;

#[tokio::test]
async fn stops_at_the_target_and_refusals_cost_nothing() {
    let teacher = start_teacher(&teacher_checkpoint(0)).await;
    let dir = tempfile::tempdir().expect("tempdir");
    let ledger = dir.path().join("ledger.db");
    let t = teacher.addr.to_string();
    // One teacher, GNMax sigma 20: each answer costs about order/400 (one
    // vote cannot make q small), so about 16-19 answers fit in epsilon 1.5
    // at delta 1e-5. The data-independent limit is out of the way.
    let flags = [
        "--teacher",
        &t,
        "--mechanism",
        "gnmax",
        "--sigma",
        "20",
        "--epsilon-limit",
        "1e9",
        "--target-epsilon",
        "1.5",
        "--ledger",
        ledger.to_str().expect("utf-8"),
    ];
    let agg = start_aggregator(aggregator_config(&flags)).await;
    let mut client = aggregator_client(agg.addr).await;
    let label = |id: String, n: usize| LabelRequest {
        request_id: id,
        samples: Some(eval_samples(n).to_tensor()),
    };

    let mut answered = 0;
    let mut refusal = None;
    for i in 0..20 {
        match client.label(label(format!("b{i}"), 2)).await {
            Ok(r) => answered += r.into_inner().labels.len(),
            Err(e) => {
                refusal = Some(e);
                break;
            }
        }
    }
    let err = refusal.expect("the target stops the aggregator within 40 queries");
    assert_eq!(err.code(), Code::ResourceExhausted);
    assert!(
        err.message().contains("target epsilon reached") && err.message().contains("cost nothing"),
        "{}",
        err.message()
    );
    assert!((10..=20).contains(&answered), "answered {answered}");
    let b = client.budget(BudgetRequest {}).await.expect("budget").into_inner();
    assert_eq!(
        (b.queries_answered, b.queries_refused),
        (answered as u64, 2),
        "the refused batch is counted, not charged"
    );
    // Refused again: still nothing charged.
    let err = client
        .label(label("again".into(), 2))
        .await
        .expect_err("still over the target");
    assert_eq!(err.code(), Code::ResourceExhausted);
    let b = client.budget(BudgetRequest {}).await.expect("budget").into_inner();
    assert_eq!(b.queries_answered, answered as u64);
    agg.stop().await.expect("clean shutdown");

    // The operator's report: the data-dependent epsilon of what was answered is under the target.
    let report = || {
        let out = std::process::Command::new(bin("pate"))
            .args(["privacy", "report", "--delta", "1e-5", "--ledger"])
            .arg(&ledger)
            .output()
            .expect("run pate privacy report");
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        serde_json::from_slice::<serde_json::Value>(&out.stdout).expect("json")
    };
    let r = report();
    let dd = r["data_dependent_epsilon"].as_f64().expect("data-dependent epsilon");
    assert!(dd <= 1.5 && dd > 1.0, "{r}");

    // A restart restores the data-dependent spend: still refused.
    let agg = start_aggregator(aggregator_config(&flags)).await;
    let mut client = aggregator_client(agg.addr).await;
    let err = client
        .label(label("after-restart".into(), 2))
        .await
        .expect_err("the target survives a restart");
    assert_eq!(err.code(), Code::ResourceExhausted);
    agg.stop().await.expect("clean shutdown");
    teacher.stop().await.expect("clean shutdown");
    assert_eq!(report()["queries_answered"].as_u64(), Some(answered as u64));
}

#[tokio::test]
async fn a_target_no_query_can_meet_is_refused_at_start() {
    let dir = tempfile::tempdir().expect("tempdir");
    let ledger = dir.path().join("ledger.db");
    // Nothing listens there: the check must come before any teacher is asked.
    let flags = [
        "--teacher",
        "127.0.0.1:9",
        "--mechanism",
        "gnmax",
        "--sigma",
        "40",
        "--target-epsilon",
        "0.01",
        "--ledger",
        ledger.to_str().expect("utf-8"),
    ];
    let err = start_aggregator(aggregator_config(&flags))
        .await
        .join()
        .await
        .expect_err("unreachable target");
    assert!(format!("{err:#}").contains("cannot be met"), "{err:#}");
}
