//! The aggregator's `--target-epsilon` stop over real gRPC: it answers while
//! the data-dependent epsilon of what it answered stays under the target,
//! then refuses with RESOURCE_EXHAUSTED at no cost and stops answering
//! (even a smaller batch that would still fit is refused, also after a
//! restart, until the operator raises the target), a restart restores the
//! data-dependent spend from the ledger, and a target no query can meet is
//! refused at start-up.

mod common;

use common::*;
use pate_privacy::orders::default_orders;
use pate_privacy::target::DataDependentTarget;
use pate_privacy::Mechanism;
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
    // at delta 1e-5 (asked 4 at a time, so a batch is refused while one
    // query alone would still fit). The data-independent limit is out of
    // the way.
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
        match client.label(label(format!("b{i}"), 4)).await {
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
        (answered as u64, 4),
        "the refused batch is counted, not charged"
    );
    // One query alone would still fit under the target (one vote per
    // query, so every answer costs the same: this is deterministic)...
    let one_fits = {
        let mut t = DataDependentTarget::new(Mechanism::GnMax { sigma: 20.0 }, 1.5, 1e-5, default_orders()).expect("target");
        let mut one = vec![0u32; 10];
        one[0] = 1;
        (0..answered).for_each(|_| t.restore(&one, true));
        t.reserve(&[one]).is_ok()
    };
    assert!(one_fits, "precondition: after {answered} answers one more fits the target");
    // ...but answering has stopped: still refused, still nothing charged.
    let err = client
        .label(label("again".into(), 1))
        .await
        .expect_err("answering stopped at the first refusal");
    assert_eq!(err.code(), Code::ResourceExhausted);
    assert!(err.message().contains("answering stopped"), "{}", err.message());
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

    // A restart restores the data-dependent spend and the stop: the one
    // query that would fit is still refused.
    let agg = start_aggregator(aggregator_config(&flags)).await;
    let mut client = aggregator_client(agg.addr).await;
    let err = client
        .label(label("after-restart".into(), 1))
        .await
        .expect_err("the stop survives a restart");
    assert_eq!(err.code(), Code::ResourceExhausted);
    assert!(err.message().contains("answering stopped"), "{}", err.message());
    agg.stop().await.expect("clean shutdown");
    assert_eq!(report()["queries_answered"].as_u64(), Some(answered as u64));

    // The operator raises the target: answering resumes.
    let raised: Vec<&str> = flags.iter().map(|&f| if f == "1.5" { "3" } else { f }).collect();
    let agg = start_aggregator(aggregator_config(&raised)).await;
    let mut client = aggregator_client(agg.addr).await;
    let r = client.label(label("raised".into(), 1)).await.expect("answered under the raised target");
    assert_eq!(r.into_inner().labels.len(), 1);
    agg.stop().await.expect("clean shutdown");
    teacher.stop().await.expect("clean shutdown");
    assert_eq!(report()["queries_answered"].as_u64(), Some(answered as u64 + 1));
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
