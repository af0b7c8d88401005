//! The aggregator's accounting over real gRPC: retries are free and replay
//! the recorded answer, the query that would cross the limit is refused,
//! refusals cost nothing, and a restart restores the spent budget.

mod common;

use common::*;
use pate_proto::v1::{BudgetRequest, LabelRequest};
use tonic::Code;

#[tokio::test]
async fn idempotent_retries_and_exhaustion() {
    let teacher = start_teacher(&teacher_checkpoint(0)).await;
    let dir = tempfile::tempdir().expect("tempdir");
    let ledger = dir.path().join("ledger.db");
    let t = teacher.addr.to_string();
    // Pure DP, b = 4: 0.5 epsilon per answer, 10 answers fit in 5.0.
    let flags = ["--teacher", &t, "--delta", "0", "--noise-scale", "4", "--epsilon-limit", "5", "--ledger", ledger.to_str().expect("utf-8")];
    let agg = start_aggregator(aggregator_config(&flags)).await;
    let mut client = aggregator_client(agg.addr).await;
    let label = |id: &str, n: usize| LabelRequest { request_id: id.into(), samples: Some(eval_samples(n).to_tensor()) };

    let first = client.label(label("a", 6)).await.expect("fits").into_inner();
    let again = client.label(label("a", 6)).await.expect("retry").into_inner();
    assert_eq!(first.labels, again.labels, "a retry replays the recorded labels");
    let b = again.budget.expect("budget");
    assert_eq!(b.queries_answered, 6, "a retry costs nothing");
    assert!((b.epsilon_spent - 3.0).abs() < 1e-12);

    let err = client.label(label("a", 5)).await.expect_err("same id, other samples");
    assert_eq!(err.code(), Code::InvalidArgument);

    let err = client.label(label("b", 5)).await.expect_err("6 + 5 answers pass the limit");
    assert_eq!(err.code(), Code::ResourceExhausted);
    assert!(err.message().contains("remaining 2.0000") && err.message().contains("at most 4 more"), "{}", err.message());
    let b = client.budget(BudgetRequest {}).await.expect("budget").into_inner();
    assert_eq!((b.queries_answered, b.queries_refused), (6, 5), "a refused query costs nothing");
    assert!((b.epsilon_spent - 3.0).abs() < 1e-12 && (b.epsilon_remaining - 2.0).abs() < 1e-12);

    client.label(label("c", 4)).await.expect("exactly fills the budget");
    let err = client.label(label("d", 1)).await.expect_err("nothing left");
    assert_eq!(err.code(), Code::ResourceExhausted);
    let b = client.budget(BudgetRequest {}).await.expect("budget").into_inner();
    assert!(b.epsilon_spent <= b.epsilon_limit + 1e-12, "never over the limit: {b:?}");
    agg.stop().await.expect("clean shutdown");

    // A restart restores the spent budget from the ledger and still replays.
    let agg = start_aggregator(aggregator_config(&flags)).await;
    let mut client = aggregator_client(agg.addr).await;
    let b = client.budget(BudgetRequest {}).await.expect("budget").into_inner();
    assert_eq!((b.queries_answered, b.queries_refused), (10, 6));
    assert!((b.epsilon_spent - 5.0).abs() < 1e-12);
    let replay = client.label(label("a", 6)).await.expect("replay after restart").into_inner();
    assert_eq!(replay.labels, first.labels);
    agg.stop().await.expect("clean shutdown");

    // The limit and delta are pinned in the ledger: a restart that would
    // quietly raise the budget, or change its delta, is refused ...
    let (mut raised, mut other_delta) = (flags.to_vec(), flags.to_vec());
    raised[7] = "50";
    other_delta[3] = "1e-6";
    for (what, f) in [("raised limit", &raised), ("other delta", &other_delta)] {
        let err = start_aggregator(aggregator_config(f)).await.join().await.expect_err(what);
        assert!(format!("{err:#}").contains("--change-budget"), "{what}: {err:#}");
    }
    // ... unless the operator asks for it, and then the change is recorded.
    raised.push("--change-budget");
    let agg = start_aggregator(aggregator_config(&raised)).await;
    let b = aggregator_client(agg.addr).await.budget(BudgetRequest {}).await.expect("budget").into_inner();
    assert_eq!((b.epsilon_limit, b.epsilon_spent, b.queries_answered), (50.0, 5.0, 10), "{b:?}");
    agg.stop().await.expect("clean shutdown");
    let l = pate_aggregator::Ledger::open_read_only(&ledger).expect("ledger");
    assert_eq!(l.budget_changes().expect("changes"), vec![("epsilon_limit".into(), "5.0".into(), "50.0".into())]);
    teacher.stop().await.expect("clean shutdown");

    // The operator's report reads the same ledger.
    let out = std::process::Command::new(bin("pate"))
        .args(["privacy", "report", "--delta", "0", "--ledger"])
        .arg(&ledger)
        .output()
        .expect("run pate privacy report");
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let r: serde_json::Value = serde_json::from_slice(&out.stdout).expect("json");
    assert_eq!((r["queries_answered"].as_u64(), r["queries_refused"].as_u64()), (Some(10), Some(6)), "{r}");
    assert!((r["data_independent_epsilon"].as_f64().expect("eps") - 5.0).abs() < 1e-12, "{r}");
}

/// GNMax and Confident-GNMax through the real service: a threshold no vote
/// count can reach makes every query an abstention (-1) that costs only the
/// threshold step; GNMax answers everything.
#[tokio::test]
async fn gaussian_mechanisms_answer_and_abstain() {
    let teacher = start_teacher(&teacher_checkpoint(0)).await;
    let dir = tempfile::tempdir().expect("tempdir");
    let t = teacher.addr.to_string();
    let label = LabelRequest { request_id: "g".into(), samples: Some(eval_samples(8).to_tensor()) };

    let ledger = dir.path().join("confident.db");
    let flags = ["--teacher", &t, "--mechanism", "confident-gnmax", "--threshold", "1000", "--sigma1", "1", "--sigma2", "1", "--epsilon-limit", "1e9",
        "--ledger", ledger.to_str().expect("utf-8")];
    let agg = start_aggregator(aggregator_config(&flags)).await;
    let mut client = aggregator_client(agg.addr).await;
    let r = client.label(label.clone()).await.expect("answered").into_inner();
    assert_eq!(r.labels, vec![-1; 8], "one teacher never reaches a threshold of 1000");
    let b = r.budget.expect("budget");
    assert_eq!((b.queries_answered, b.queries_abstained), (0, 8));
    assert_eq!(b.mechanism, "confident-gnmax");
    agg.stop().await.expect("clean shutdown");

    let ledger = dir.path().join("gnmax.db");
    let flags = ["--teacher", &t, "--mechanism", "gnmax", "--sigma", "0.01", "--epsilon-limit", "1e12", "--ledger", ledger.to_str().expect("utf-8")];
    let agg = start_aggregator(aggregator_config(&flags)).await;
    let mut client = aggregator_client(agg.addr).await;
    let r = client.label(label).await.expect("answered").into_inner();
    let votes = teacher_client(teacher.addr)
        .await
        .vote(pate_proto::v1::VoteRequest { request_id: "v".into(), samples: Some(eval_samples(8).to_tensor()), ..Default::default() })
        .await
        .expect("vote")
        .into_inner()
        .labels;
    let expected: Vec<i32> = votes.iter().map(|&l| i32::from(l)).collect();
    assert_eq!(r.labels, expected, "with sigma 0.01 GNMax releases the single teacher's vote");
    assert_eq!(r.budget.expect("budget").queries_answered, 8);
    agg.stop().await.expect("clean shutdown");
    teacher.stop().await.expect("clean shutdown");
}
