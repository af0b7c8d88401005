//! Budget integrity under cancellation and races, over real gRPC with a
//! teacher stand-in that holds votes behind a gate: a student that gives up
//! mid-fan-out leaves no request id stuck in flight and no budget reserved,
//! and a duplicate request id racing the first waits for it and replays its
//! answer (one fan-out, one charge, never fresh noise).

mod common;

use std::sync::atomic::Ordering;
use std::time::Duration;

use common::slow_teacher::{self, Block, Event};
use common::*;
use pate_proto::v1::{BudgetRequest, LabelRequest};
use tonic::Code;

/// Upper bound on waiting for something that must happen: a hang guard,
/// not a timing assertion.
const HANG: Duration = Duration::from_secs(60);

fn label(id: &str, n: usize, level: u8) -> LabelRequest {
    LabelRequest { request_id: id.into(), samples: Some(slow_teacher::samples(n, level).to_tensor()) }
}

/// Pure LNMax with b = 4 (0.5 epsilon per answer) and a limit of 5: exactly
/// 10 answers fit. A vote timeout far beyond the test, so only the
/// cancellation can end the first call.
fn flags(teacher: &str, ledger: &std::path::Path) -> Vec<String> {
    ["--teacher", teacher, "--delta", "0", "--noise-scale", "4", "--epsilon-limit", "5", "--vote-timeout", "3600"]
        .iter()
        .map(|s| s.to_string())
        .chain(["--ledger".to_string(), ledger.to_str().expect("utf-8").to_string()])
        .collect()
}

async fn next(events: &mut tokio::sync::mpsc::UnboundedReceiver<Event>) -> Event {
    tokio::time::timeout(HANG, events.recv()).await.expect("hang guard").expect("teacher running")
}

#[tokio::test]
async fn a_call_cancelled_mid_fan_out_releases_its_id_and_reservation() {
    let mut teacher = slow_teacher::start(Block::First).await;
    let dir = tempfile::tempdir().expect("tempdir");
    let flags = flags(&teacher.server.addr.to_string(), &dir.path().join("ledger.db"));
    let agg = start_aggregator(aggregator_config(&flags.iter().map(String::as_str).collect::<Vec<_>>())).await;
    let client = aggregator_client(agg.addr).await;

    // The whole budget (10 answers) is reserved by a call that then hangs
    // in the fan-out; the student gives up on it.
    let mut c = client.clone();
    let call = tokio::spawn(async move { c.label(label("x", 10, 7)).await });
    assert_eq!(next(&mut teacher.events).await, Event::Started(0));
    call.abort();
    assert!(call.await.expect_err("aborted").is_cancelled());
    // The aggregator dropped the handler, and with it the fan-out.
    assert_eq!(next(&mut teacher.events).await, Event::Cancelled(0));

    // Were the id still in flight the retry would wait or fail; were the
    // reservation kept, 10 + 10 answers would not fit in the budget.
    let mut c = client.clone();
    let r = tokio::time::timeout(HANG, c.label(label("x", 10, 7))).await.expect("hang guard").expect("retry answered");
    let r = r.into_inner();
    assert_eq!(r.labels.len(), 10);
    let b = r.budget.expect("budget");
    assert_eq!((b.queries_answered, b.queries_refused), (10, 0), "only what was answered is charged: {b:?}");
    assert_eq!(b.epsilon_spent, 5.0, "exactly 10 answers at 0.5");

    // The answered call is in the ledger: the next retry replays it free.
    let again = c.label(label("x", 10, 7)).await.expect("replay").into_inner();
    assert_eq!(again.labels, r.labels);
    let b = c.budget(BudgetRequest {}).await.expect("budget").into_inner();
    assert_eq!((b.queries_answered, b.epsilon_spent), (10, 5.0));
    assert_eq!(teacher.votes.load(Ordering::SeqCst), 2, "one cancelled fan-out, one answered");
    agg.stop().await.expect("clean shutdown");
    teacher.server.stop().await.expect("clean shutdown");
}

#[tokio::test]
async fn a_duplicate_id_racing_the_first_waits_and_replays_its_answer() {
    let mut teacher = slow_teacher::start(Block::All).await;
    let dir = tempfile::tempdir().expect("tempdir");
    let flags = flags(&teacher.server.addr.to_string(), &dir.path().join("ledger.db"));
    let agg = start_aggregator(aggregator_config(&flags.iter().map(String::as_str).collect::<Vec<_>>())).await;
    let client = aggregator_client(agg.addr).await;

    // Six queries each: two fan-outs would need 12 answers (only 10 fit)
    // and, with one teacher voting 3 and b = 4, would draw different noise.
    let spawn = |id: &'static str, level: u8| {
        let mut c = client.clone();
        tokio::spawn(async move { c.label(label(id, 6, level)).await })
    };
    let first = spawn("dup", 7);
    assert_eq!(next(&mut teacher.events).await, Event::Started(0));
    let second = spawn("dup", 7);
    let other_samples = spawn("dup", 9);
    // Let the duplicates reach the aggregator while the first is held. Their
    // arrival cannot be observed from outside; should they arrive after the
    // first is answered, they take the replay path and every assertion
    // below holds all the same.
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(!second.is_finished() && !other_samples.is_finished(), "duplicates wait, they are not refused");
    teacher.gate.send(true).expect("open the gate");

    let a = tokio::time::timeout(HANG, first).await.expect("hang guard").expect("task").expect("answered").into_inner();
    let b = tokio::time::timeout(HANG, second).await.expect("hang guard").expect("task").expect("replayed").into_inner();
    assert_eq!(a.labels, b.labels, "the duplicate gets the first call's answer, not fresh noise");
    let err = tokio::time::timeout(HANG, other_samples).await.expect("hang guard").expect("task").expect_err("other samples");
    assert_eq!(err.code(), Code::InvalidArgument, "{err:?}");
    assert_eq!(teacher.votes.load(Ordering::SeqCst), 1, "one fan-out for one request id");

    let mut c = client.clone();
    let budget = c.budget(BudgetRequest {}).await.expect("budget").into_inner();
    assert_eq!((budget.queries_answered, budget.queries_refused), (6, 0), "one charge: {budget:?}");
    assert_eq!(budget.epsilon_spent, 3.0);
    agg.stop().await.expect("clean shutdown");
    teacher.server.stop().await.expect("clean shutdown");
}
