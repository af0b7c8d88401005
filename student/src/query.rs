//! Asking the aggregator for labels, batch by batch, with free retries.

use std::time::Duration;

use anyhow::Context;
use pate_ml::data::Images;
use pate_proto::v1::{aggregator_client::AggregatorClient, BudgetRequest, BudgetState, EnsembleRequest, LabelRequest, LabelResponse};
use pate_proto::Samples;
use pate_proto::tls::{ServerRole, Transport};
use tonic::transport::Channel;
use tonic::Code;

use crate::Config;

/// Longest pause between two retries of one batch.
const MAX_BACKOFF: Duration = Duration::from_secs(2);

/// The labels the aggregator released.
#[derive(Debug, Clone)]
pub struct Labelled {
    /// Indices (into the queried images) that got a label.
    pub items: Vec<usize>,
    /// Their labels.
    pub labels: Vec<u8>,
    /// Queries the aggregator abstained on.
    pub abstained: usize,
    /// Queries refused for lack of budget (never sent again).
    pub refused: usize,
    /// The budget after the last answer.
    pub budget: BudgetState,
}

async fn connect(addr: &str, wait: Duration, transport: &Transport) -> anyhow::Result<AggregatorClient<Channel>> {
    let ep = transport.endpoint(addr, ServerRole::Aggregator).with_context(|| format!("bad aggregator address {addr:?}"))?;
    let channel = pate_proto::retry::retry_for(wait, || ep.connect()).await.with_context(|| format!("aggregator {addr} unreachable"))?;
    Ok(AggregatorClient::new(channel).max_encoding_message_size(pate_proto::MAX_MESSAGE_BYTES))
}

pub(crate) fn random_run_id() -> String {
    format!("{:016x}", rand::random::<u64>())
}

/// Asks the aggregator to label every image in `images`, in batches.
/// Stops asking once the budget is exhausted and returns what it got.
pub async fn label_pool(config: &Config, images: &Images, classes: usize) -> anyhow::Result<Labelled> {
    let wait = Duration::try_from_secs_f64(config.connect_timeout).context("bad --connect-timeout")?;
    let transport = config.tls.load().context("transport security")?;
    let mut client = connect(&config.aggregator, wait, &transport).await?;
    let ensemble = client.ensemble(EnsembleRequest {}).await.context("asking the aggregator about its ensemble")?.into_inner();
    anyhow::ensure!(
        ensemble.input_shape == [images.rows as u32, images.cols as u32] && ensemble.num_classes as usize == classes,
        "the aggregator's ensemble takes {:?} inputs with {} classes, but this data is {}x{} with {classes} classes",
        ensemble.input_shape,
        ensemble.num_classes,
        images.rows,
        images.cols
    );
    let batch = config.query_batch.clamp(1, (ensemble.max_batch as usize).max(1));
    let run_id = config.run_id.clone().unwrap_or_else(random_run_id);
    tracing::info!(teachers = ensemble.num_teachers, mechanism = %ensemble.mechanism, queries = images.len(), batch, %run_id, "querying aggregator");

    let interval = Duration::try_from_secs_f64(config.query_interval).context("bad --query-interval")?;
    let mut out = Labelled { items: Vec::new(), labels: Vec::new(), abstained: 0, refused: 0, budget: BudgetState::default() };
    let starts: Vec<usize> = (0..images.len()).step_by(batch).collect();
    // Up to --max-in-flight batches on the wire at once: the aggregator
    // fans each out to every teacher, and overlapping them keeps the
    // teachers busy while one batch's answers are recorded (and lets the
    // aggregator send them to the teachers together). See [`Schedule`] for
    // what a refusal then means.
    let width = config.max_in_flight.unwrap_or_else(|| default_in_flight(ensemble.max_batch as usize, batch));
    tracing::debug!(width, "label calls in flight at most");
    let mut schedule = Schedule::new(starts.len(), width);
    let mut results: Vec<Option<Result<LabelResponse, tonic::Status>>> = (0..starts.len()).map(|_| None).collect();
    let mut running = tokio::task::JoinSet::new();
    let mut answered = 0;
    loop {
        while let Some((b, again)) = schedule.next() {
            let start = starts[b];
            let chunk = images.range(start..(start + batch).min(images.len()));
            let samples = Samples { n: chunk.len(), rows: chunk.rows, cols: chunk.cols, pixels: chunk.data };
            let id = if again { format!("{run_id}-{b}-again") } else { format!("{run_id}-{b}") };
            let req = LabelRequest { request_id: id, samples: Some(samples.to_tensor()) };
            if b > 0 && !interval.is_zero() {
                tokio::time::sleep(interval).await;
            }
            let mut client = client.clone();
            running.spawn(async move { (b, send(&mut client, req, wait).await) });
        }
        let Some(joined) = running.join_next().await else { break };
        let (b, result) = joined.context("label task failed")?;
        let refused = matches!(&result, Err(status) if status.code() == Code::ResourceExhausted);
        let again = schedule.finished(b, refused);
        match &result {
            Ok(resp) => {
                answered += resp.labels.iter().filter(|&&l| l >= 0).count();
                let epsilon = resp.budget.as_ref().map_or(0.0, |s| s.epsilon_spent);
                tracing::info!(batch = b + 1, of = starts.len(), answered, epsilon, "labelled batch");
            }
            Err(status) if status.code() == Code::ResourceExhausted => {
                if again {
                    tracing::info!(batch = b + 1, reason = status.message(), "refused beside other batches in flight: asking again alone");
                } else {
                    tracing::warn!(batch = b + 1, reason = status.message(), "privacy budget exhausted: training on what was answered");
                }
            }
            Err(status) => return Err(anyhow::anyhow!("label request {b} failed: {:?}: {}", status.code(), status.message())),
        }
        results[b] = Some(result);
    }
    for (result, &start) in results.into_iter().zip(&starts) {
        let len = (start + batch).min(images.len()) - start;
        match result {
            Some(Ok(resp)) => {
                for (i, &label) in resp.labels.iter().enumerate() {
                    match u8::try_from(label) {
                        Ok(l) if (l as usize) < classes => {
                            out.items.push(start + i);
                            out.labels.push(l);
                        }
                        _ => out.abstained += 1,
                    }
                }
                // The state after the latest answer: the most spent.
                let state = resp.budget.unwrap_or_default();
                if state.epsilon_spent >= out.budget.epsilon_spent {
                    out.budget = state;
                }
            }
            // Refused, or never sent after a refusal.
            Some(Err(_)) | None => out.refused += len,
        }
    }
    if out.refused > 0 {
        tracing::warn!(refused = out.refused, "queries refused for lack of budget");
    }
    if out.items.is_empty() {
        out.budget = client.budget(BudgetRequest {}).await?.into_inner();
    }
    Ok(out)
}

/// Most Label calls the student keeps in flight by default.
const MAX_DEFAULT_IN_FLIGHT: usize = 256;

/// Label calls in flight by default: enough to carry two of the
/// aggregator's largest merged rounds (`max_batch` samples each), so one
/// round fills while the other is out with the teachers. With 250 teachers
/// and calls of 10, 16 calls in flight labelled at a third of the rate that
/// two full rounds reach (docs/BENCHMARKS.md, "Labelling at scale").
fn default_in_flight(max_batch: usize, batch: usize) -> usize {
    (2 * max_batch).div_ceil(batch.max(1)).clamp(1, MAX_DEFAULT_IN_FLIGHT)
}

async fn send(client: &mut AggregatorClient<Channel>, req: LabelRequest, wait: Duration) -> Result<pate_proto::v1::LabelResponse, tonic::Status> {
    // Retries are free (the aggregator replays a recorded request id), so a
    // restarting aggregator or a brief loss of quorum only delays the run.
    // Cancelled too: this student never cancels a call, so a cancelled one
    // was cut by the transport (calls in flight when an aggregator dies).
    let deadline = tokio::time::Instant::now() + wait;
    let mut attempt: u32 = 0;
    loop {
        match client.label(req.clone()).await {
            Ok(r) => return Ok(r.into_inner()),
            Err(s) if matches!(s.code(), Code::Unavailable | Code::Aborted | Code::Unknown | Code::Cancelled) && tokio::time::Instant::now() < deadline => {
                attempt += 1;
                tracing::warn!(request_id = %req.request_id, attempt, code = ?s.code(), error = s.message(), "retrying label batch");
                tokio::time::sleep((pate_proto::retry::RETRY_PAUSE * attempt).min(MAX_BACKOFF)).await;
            }
            Err(s) => return Err(s),
        }
    }
}

/// Which batch goes out next, and what a refusal means when several are
/// in flight. Batches in flight each reserve their worst case at the
/// aggregator, so near the end of a budget or target a batch can be
/// refused only because of the others' reservations, where asked alone it
/// would have been answered. So a refusal of a batch sent beside others
/// drops to one batch at a time and asks that batch once more, alone,
/// under a new request id (a new query: it costs only if answered); a
/// refusal of a batch sent alone ends the run, as it always has. Against
/// the data-independent budget (each query reserves the same) the run thus
/// stops where a one-at-a-time student would stop. A data-dependent target
/// stops the aggregator for good at its first refusal (reservations there
/// depend on the votes, so letting later batches in would select them by
/// their votes: `pate_privacy::target`); the batch asked again is refused
/// too and the run ends.
#[derive(Debug)]
struct Schedule {
    total: usize,
    next: usize,
    width: usize,
    again: std::collections::BTreeSet<usize>,
    retried: std::collections::HashSet<usize>,
    in_flight: std::collections::HashSet<usize>,
    /// Whether batch b was the only one in flight all its life so far.
    alone: Vec<bool>,
    stopped: bool,
}

impl Schedule {
    fn new(total: usize, width: usize) -> Schedule {
        Schedule {
            total,
            next: 0,
            width: width.max(1),
            again: Default::default(),
            retried: Default::default(),
            in_flight: Default::default(),
            alone: vec![false; total],
            stopped: false,
        }
    }

    /// The batch to send now, and whether it is a second asking; `None`
    /// to wait for one in flight (or when done).
    fn next(&mut self) -> Option<(usize, bool)> {
        if self.stopped || self.in_flight.len() >= self.width {
            return None;
        }
        let (b, again) = match self.again.pop_first() {
            Some(b) => (b, true),
            None if self.next < self.total => {
                self.next += 1;
                (self.next - 1, false)
            }
            None => return None,
        };
        self.alone[b] = self.in_flight.is_empty();
        for &other in &self.in_flight {
            self.alone[other] = false;
        }
        self.in_flight.insert(b);
        Some((b, again))
    }

    /// Batch `b` came back; if it was refused, whether it will be asked
    /// again.
    fn finished(&mut self, b: usize, refused: bool) -> bool {
        self.in_flight.remove(&b);
        if !refused {
            return false;
        }
        if self.alone[b] || !self.retried.insert(b) {
            self.stopped = true;
            return false;
        }
        self.width = 1;
        self.again.insert(b);
        true
    }
}

#[cfg(test)]
mod tests {
    use super::{default_in_flight, Schedule};

    #[test]
    fn the_default_width_carries_two_rounds_within_bounds() {
        assert_eq!(default_in_flight(1024, 10), 205);
        assert_eq!(default_in_flight(1024, 250), 9);
        assert_eq!(default_in_flight(1024, 1), 256, "capped");
        assert_eq!(default_in_flight(0, 10), 1, "at least one");
    }

    #[test]
    fn batches_go_out_in_order_up_to_the_width() {
        let mut s = Schedule::new(5, 3);
        assert_eq!((s.next(), s.next(), s.next(), s.next()), (Some((0, false)), Some((1, false)), Some((2, false)), None));
        assert!(!s.finished(1, false));
        assert_eq!((s.next(), s.next()), (Some((3, false)), None));
        s.finished(0, false);
        assert_eq!((s.next(), s.next()), (Some((4, false)), None));
        for b in [2, 3, 4] {
            s.finished(b, false);
        }
        assert_eq!(s.next(), None, "all sent");
    }

    #[test]
    fn a_refusal_beside_others_is_asked_again_alone_then_one_at_a_time() {
        let mut s = Schedule::new(6, 3);
        for b in 0..3 {
            assert_eq!(s.next(), Some((b, false)));
        }
        // Batch 0 went out first, but others joined it in flight: refused
        // beside them, it is asked again.
        assert!(s.finished(0, true));
        assert_eq!(s.next(), None, "wait until nothing is in flight");
        s.finished(2, false);
        assert_eq!(s.next(), None);
        s.finished(1, false);
        assert_eq!(s.next(), Some((0, true)), "the refused batch first, alone");
        assert_eq!(s.next(), None, "one at a time from now on");
        s.finished(0, false);
        assert_eq!(s.next(), Some((3, false)));
        // Refused alone: the run ends, as a one-at-a-time student's would.
        assert!(!s.finished(3, true));
        assert_eq!(s.next(), None);
    }

    #[test]
    fn a_refusal_alone_ends_the_run_at_once() {
        let mut s = Schedule::new(4, 1);
        assert_eq!(s.next(), Some((0, false)));
        assert!(!s.finished(0, true));
        assert_eq!(s.next(), None);
        // Width 4, but the last batch is the only one left in flight.
        let mut s = Schedule::new(2, 4);
        assert_eq!((s.next(), s.next()), (Some((0, false)), Some((1, false))));
        s.finished(0, false);
        assert!(s.finished(1, true), "batch 1 had batch 0 beside it");
        assert_eq!(s.next(), Some((1, true)));
        assert!(!s.finished(1, true));
        assert_eq!(s.next(), None);
    }

    #[test]
    fn a_batch_is_asked_again_at_most_once() {
        let mut s = Schedule::new(3, 2);
        s.next();
        s.next();
        assert!(s.finished(0, true));
        // The retry refused beside batch 1 still in flight is not asked
        // a third time: the run ends.
        assert!(!s.finished(0, true));
        assert_eq!(s.next(), None);
    }
}
