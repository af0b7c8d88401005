//! The aggregator's Prometheus metrics (served when `--metrics-addr` is
//! set; see `pate_proto::metrics`). One place names them all, so the
//! dashboards and the README have one list to follow:
//!
//! - `pate_aggregator_queries_total{outcome}`: queries (samples) answered,
//!   abstained on, or refused for lack of budget.
//! - `pate_aggregator_label_requests_total{code}` and
//!   `pate_aggregator_label_request_seconds`: Label calls and their latency.
//! - `pate_aggregator_epsilon_spent`, `pate_aggregator_epsilon_limit`: the
//!   data-independent budget (at `pate_aggregator_delta`).
//! - `pate_aggregator_teacher_vote_seconds{teacher}` and
//!   `pate_aggregator_teacher_errors_total{teacher}`: each teacher's vote
//!   latency and failures (timeouts, errors, malformed votes).
//! - `pate_aggregator_teachers_up`, `pate_aggregator_quorum`,
//!   `pate_aggregator_serving`: the health monitor's view.

use std::time::Duration;

use pate_privacy::budget::BudgetSnapshot;

/// One teacher's vote: its latency, and whether it failed.
pub fn teacher_vote(teacher: &str, took: Duration, ok: bool) {
    let teacher = teacher.to_string();
    metrics::histogram!("pate_aggregator_teacher_vote_seconds", "teacher" => teacher.clone()).record(took.as_secs_f64());
    if !ok {
        metrics::counter!("pate_aggregator_teacher_errors_total", "teacher" => teacher).increment(1);
    }
}

/// One Label call: its gRPC status code name and latency.
pub fn label_request(code: tonic::Code, took: Duration) {
    metrics::counter!("pate_aggregator_label_requests_total", "code" => format!("{code:?}")).increment(1);
    metrics::histogram!("pate_aggregator_label_request_seconds").record(took.as_secs_f64());
}

/// Queries answered and abstained on in one batch.
pub fn answered(answered: u64, abstained: u64) {
    metrics::counter!("pate_aggregator_queries_total", "outcome" => "answered").increment(answered);
    metrics::counter!("pate_aggregator_queries_total", "outcome" => "abstained").increment(abstained);
}

/// Queries refused for lack of budget.
pub fn refused(n: u64) {
    metrics::counter!("pate_aggregator_queries_total", "outcome" => "refused").increment(n);
}

/// The budget after a change (or as restored from the ledger).
pub fn budget(s: &BudgetSnapshot) {
    metrics::gauge!("pate_aggregator_epsilon_spent").set(s.epsilon_spent);
    metrics::gauge!("pate_aggregator_epsilon_limit").set(s.epsilon_limit);
    metrics::gauge!("pate_aggregator_delta").set(s.delta);
}

/// The health monitor's latest view.
pub fn health(up: usize, quorum: usize, serving: bool) {
    metrics::gauge!("pate_aggregator_teachers_up").set(up as f64);
    metrics::gauge!("pate_aggregator_quorum").set(quorum as f64);
    metrics::gauge!("pate_aggregator_serving").set(if serving { 1.0 } else { 0.0 });
}
