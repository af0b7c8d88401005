//! The Aggregator gRPC service: noisy labels for students, budget for all.

use std::sync::{Arc, Mutex};

use pate_privacy::budget::{Budget, BudgetError, BudgetSnapshot};
use pate_privacy::histogram::histograms;
use pate_privacy::noise::{NoiseError, NoisyMax};
use pate_privacy::target::{DataDependentTarget, TargetError};
use pate_proto::auth::Caller;
use pate_proto::v1::{self, aggregator_server::Aggregator};
use pate_proto::Samples;
use tonic::{Request, Response, Status};
use tracing::instrument;

use crate::coalesce::VoteBatcher;
use crate::inflight::{self, lock, Claim, Entry, Shared};
use crate::ledger::{Ledger, LedgerError, QueryRecord};
use crate::pool::{PoolError, TeacherPool};
use crate::students::StudentBudgets;

/// Vote rounds in flight at once: one fans out while the next collects
/// the calls that arrive meanwhile (and a slow teacher's deadline does not
/// stall everything behind it).
const VOTE_ROUNDS: usize = 2;

/// Why a Label call failed.
#[derive(Debug, thiserror::Error)]
pub enum LabelError {
    /// The request was malformed.
    #[error(transparent)]
    Input(#[from] pate_proto::ProtoError),
    /// No request id: retries could not be recognised.
    #[error("request_id must be a non-empty string (it makes retries free)")]
    NoRequestId,
    /// Answering would pass the privacy budget.
    #[error(transparent)]
    Budget(#[from] BudgetError),
    /// Answering would pass the caller's own budget.
    #[error("the budget of {caller} is exhausted (each student has its own as well as the global one): {source}")]
    StudentBudget {
        /// The caller's identity.
        caller: String,
        /// The refusal.
        source: BudgetError,
    },
    /// Answering could pass the target data-dependent epsilon.
    #[error(transparent)]
    Target(#[from] TargetError),
    /// Too few teachers answered.
    #[error(transparent)]
    Pool(#[from] PoolError),
    /// Noise sampling failed.
    #[error(transparent)]
    Noise(#[from] NoiseError),
    /// The ledger failed; nothing was released.
    #[error(transparent)]
    Ledger(#[from] LedgerError),
    /// A worker thread died.
    #[error("worker failed: {0}")]
    Worker(#[from] tokio::task::JoinError),
}

impl From<LabelError> for Status {
    fn from(err: LabelError) -> Self {
        let msg = err.to_string();
        match err {
            LabelError::Input(e) => e.into(),
            LabelError::NoRequestId | LabelError::Ledger(LedgerError::ReusedId(_)) => Status::invalid_argument(msg),
            LabelError::Budget(_) | LabelError::StudentBudget { .. } | LabelError::Target(_) => Status::resource_exhausted(msg),
            LabelError::Pool(_) => Status::unavailable(msg),
            LabelError::Noise(_) | LabelError::Ledger(_) | LabelError::Worker(_) => Status::internal(msg),
        }
    }
}

/// Noisy aggregation over a teacher pool, with a durable ledger.
pub struct AggregatorService {
    pool: Arc<TeacherPool>,
    votes: VoteBatcher,
    mechanism: pate_privacy::Mechanism,
    state: Shared,
    ledger: Arc<Mutex<Ledger>>,
    max_batch: usize,
}

fn lock_ledger(m: &Mutex<Ledger>) -> std::sync::MutexGuard<'_, Ledger> {
    // A panic while holding the lock leaves no half-done transaction:
    // SQLite rolls back an uncommitted one when it is dropped.
    m.lock().unwrap_or_else(|p| p.into_inner())
}

fn budget_state(s: &BudgetSnapshot, mechanism: &str, caller: &str, own: &BudgetSnapshot) -> v1::BudgetState {
    v1::BudgetState {
        caller: caller.to_string(),
        caller_epsilon_spent: own.epsilon_spent,
        caller_epsilon_limit: own.epsilon_limit,
        epsilon_spent: s.epsilon_spent,
        epsilon_limit: s.epsilon_limit,
        delta: s.delta,
        queries_answered: s.queries_answered,
        queries_refused: s.queries_refused,
        queries_abstained: s.queries_abstained,
        mechanism: mechanism.to_string(),
        epsilon_remaining: (s.epsilon_limit - s.epsilon_spent).max(0.0),
    }
}

/// Identifies a batch's samples and who asked, so a reused request id
/// cannot fetch answers recorded for other inputs or for another student
/// (which would be free labels off someone else's budget). Anonymous
/// callers hash as before per-student accounting, so old ledgers replay.
fn samples_digest(caller: &Caller, s: &Samples) -> String {
    use sha2::{Digest, Sha256};
    let mut h = Sha256::new();
    if let Caller::Party(role) = caller {
        h.update(role.uri().as_bytes());
        h.update([0u8]);
    }
    h.update((s.n as u64).to_le_bytes());
    h.update((s.rows as u64).to_le_bytes());
    h.update((s.cols as u64).to_le_bytes());
    h.update(&s.pixels);
    hex::encode(h.finalize())
}

impl AggregatorService {
    /// Builds the service; `budget` must already hold what `ledger` recorded.
    /// `students` likewise. Starts the task that merges concurrent calls'
    /// fan-outs (a round of at most `max_batch` samples, as one call may
    /// carry, and no more than every teacher accepts: none merged if a
    /// teacher did not say), so it must run inside a tokio runtime.
    pub fn new(pool: Arc<TeacherPool>, budget: Budget, students: StudentBudgets, ledger: Ledger, max_batch: usize) -> Self {
        let merge_limit = max_batch.min(pool.vote_limit());
        AggregatorService {
            votes: VoteBatcher::spawn(Arc::clone(&pool), merge_limit, VOTE_ROUNDS),
            pool,
            mechanism: *budget.mechanism(),
            state: inflight::shared(budget, students),
            ledger: Arc::new(Mutex::new(ledger)),
            max_batch,
        }
    }

    /// Stops answering once the data-dependent epsilon could pass the
    /// target's; `target` must already hold what the ledger recorded.
    pub fn with_target(self, target: Option<DataDependentTarget>) -> Self {
        lock(&self.state).target = target;
        self
    }

    fn budget_now(&self, caller: &str) -> v1::BudgetState {
        let mut st = lock(&self.state);
        let own = st.students.get(caller).snapshot();
        budget_state(&st.budget.snapshot(), st.budget.mechanism().name(), caller, &own)
    }

    async fn with_ledger<R: Send + 'static>(
        &self,
        f: impl FnOnce(&mut Ledger) -> Result<R, LedgerError> + Send + 'static,
    ) -> Result<R, LabelError> {
        let ledger = Arc::clone(&self.ledger);
        // SQLite blocks on fsync: keep it off the async runtime.
        Ok(tokio::task::spawn_blocking(move || f(&mut lock_ledger(&ledger))).await??)
    }

    async fn label(&self, req: v1::LabelRequest, caller: Caller) -> Result<v1::LabelResponse, LabelError> {
        let student = caller.key();
        let id = req.request_id;
        if id.is_empty() {
            return Err(LabelError::NoRequestId);
        }
        let samples = Samples::from_request(req.samples)?;
        let [rows, cols] = self.pool.input_shape();
        samples.check(rows, cols, self.max_batch)?;
        let digest = samples_digest(&caller, &samples);
        // Claim the id before looking in the ledger: a duplicate racing
        // this call waits here, then finds the answer recorded.
        let mut claim = loop {
            match inflight::claim(&self.state, &id, &student) {
                Entry::Owner(claim) => break claim,
                Entry::Busy(rx) => {
                    tracing::info!(request_id = %id, "same request id in flight: waiting for its answer");
                    inflight::wait(rx).await;
                }
            }
        };
        let (key, d) = (id.clone(), digest.clone());
        if let Some(labels) = self.with_ledger(move |l| l.lookup(&key, &d)).await? {
            tracing::info!(request_id = %id, n = labels.len(), "replayed recorded answer at no cost");
            return Ok(v1::LabelResponse { labels, budget: Some(self.budget_now(&student)) });
        }
        let n = samples.n as u64;
        if let Err(e) = claim.reserve(n) {
            drop(claim);
            crate::metrics::refused(n);
            let key = id.clone();
            self.with_ledger(move |l| l.record_refusal(&key, n)).await?;
            tracing::warn!(request_id = %id, n, caller = %student, "refused: budget exhausted");
            return Err(e);
        }
        // If this future is dropped from here on (the client went away),
        // the claim's drop releases the reservations and the id.
        let answered = self.answer(claim, &id, &digest, &samples, &student).await;
        if let Err(LabelError::Target(e)) = &answered {
            // The claim is gone: a duplicate of this id may already be
            // asking; it finds no answer and is refused in its turn.
            let (key, at) = (id.clone(), e.reached_target());
            self.with_ledger(move |l| {
                l.record_refusal(&key, n)?;
                // A restart must not answer again behind the refusal.
                at.map_or(Ok(()), |t| l.record_target_stop(t))
            })
            .await?;
            tracing::warn!(request_id = %id, n, caller = %student, error = %e, "refused: target epsilon reached");
        }
        let (records, (snapshot, own)) = answered?;
        let labels: Vec<i32> = records.iter().map(|r| r.answer.map_or(-1, i32::from)).collect();
        let abstained = labels.iter().filter(|&&l| l < 0).count();
        crate::metrics::answered(labels.len() as u64 - abstained as u64, abstained as u64);
        crate::metrics::budget(&snapshot);
        tracing::info!(request_id = %id, n, abstained, caller = %student, epsilon = snapshot.epsilon_spent, "answered label batch");
        Ok(v1::LabelResponse { labels, budget: Some(budget_state(&snapshot, self.noise_name(), &student, &own)) })
    }

    fn noise_name(&self) -> &'static str {
        self.mechanism.name()
    }

    /// Collects votes, reserves against the data-dependent target, draws
    /// the noisy answers, commits them to the ledger and charges them, in
    /// that order.
    async fn answer(
        &self,
        mut claim: Claim,
        id: &str,
        digest: &str,
        samples: &Samples,
        student: &str,
    ) -> Result<(Vec<QueryRecord>, (BudgetSnapshot, BudgetSnapshot)), LabelError> {
        let votes = self.votes.collect(id, samples).await?;
        // Every vector holds one label per sample (the pool checks it).
        let hists = histograms(&votes, self.pool.classes());
        // The target's worst case is reserved before any noise is drawn: a
        // refused batch has released nothing and costs nothing.
        claim.reserve_target(&hists).await?;
        let (cost_answered, cost_declined) = {
            let st = lock(&self.state);
            (st.budget.query_cost(true), st.budget.query_cost(false))
        };
        let mechanism = self.mechanism;
        // Exact integer sampling is CPU work: keep it off the async runtime.
        let records = tokio::task::spawn_blocking(move || {
            let noise = NoisyMax::new(&mechanism)?;
            hists
                .into_iter()
                .map(|histogram| {
                    let answer = noise.answer(&histogram)?.map(|c| c as u8);
                    let rdp = if answer.is_some() { cost_answered.clone() } else { cost_declined.clone() };
                    Ok(QueryRecord { histogram, answer, rdp })
                })
                .collect::<Result<Vec<_>, NoiseError>>()
        })
        .await??;
        // The claim moves into the blocking task: once the commit has run,
        // the charge follows in the same task even if this future is
        // dropped meanwhile; a failed commit drops the claim (no charge).
        let (key, digest, student) = (id.to_string(), digest.to_string(), student.to_string());
        self.with_ledger(move |l| {
            l.record(&key, &digest, &records, &student)?;
            let snapshot = claim.commit(&records);
            Ok((records, snapshot))
        })
        .await
    }
}

#[tonic::async_trait]
impl Aggregator for AggregatorService {
    #[instrument(skip_all, fields(request_id))]
    async fn label(&self, req: Request<v1::LabelRequest>) -> Result<Response<v1::LabelResponse>, Status> {
        let caller = Caller::of(&req)?;
        let req = req.into_inner();
        tracing::Span::current().record("request_id", req.request_id.as_str());
        let started = std::time::Instant::now();
        let result = self.label(req, caller).await.inspect_err(|e| tracing::warn!(error = %e, "label request failed")).map_err(Status::from);
        crate::metrics::label_request(result.as_ref().map_or_else(Status::code, |_| tonic::Code::Ok), started.elapsed());
        Ok(Response::new(result?))
    }

    #[instrument(skip_all)]
    async fn budget(&self, req: Request<v1::BudgetRequest>) -> Result<Response<v1::BudgetState>, Status> {
        Ok(Response::new(self.budget_now(&Caller::of(&req)?.key())))
    }

    #[instrument(skip_all)]
    async fn ensemble(&self, _req: Request<v1::EnsembleRequest>) -> Result<Response<v1::EnsembleInfo>, Status> {
        let [rows, cols] = self.pool.input_shape();
        Ok(Response::new(v1::EnsembleInfo {
            num_teachers: self.pool.len() as u32,
            input_shape: vec![rows as u32, cols as u32],
            num_classes: self.pool.classes() as u32,
            mechanism: self.noise_name().to_string(),
            max_batch: self.max_batch as u32,
        }))
    }
}
