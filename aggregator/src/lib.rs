//! The PATE aggregator, the trusted curator: it sends each student query to
//! every teacher, counts the votes, adds noise to the counts, releases only
//! the noisy winner (or an abstention), and accounts every bit of privacy it
//! spends in a durable ledger against one global budget.

pub mod coalesce;
pub mod health;
pub mod inflight;
pub mod metrics;
pub mod pool;
pub mod service;
pub mod students;

use std::future::Future;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context;
use pate_privacy::budget::Budget;
use pate_privacy::noise::NoisyMax;
use pate_privacy::target::DataDependentTarget;
use pate_privacy::{default_orders, Mechanism};
use pate_proto::auth::RequireRole;
use pate_proto::tls::TlsArgs;
use pate_proto::v1::aggregator_server::AggregatorServer;
use tonic::service::interceptor::InterceptedService;
use tokio::net::TcpListener;

/// The ledger lives in its own crate (`pate privacy report` reads it too).
pub use pate_ledger as ledger;
pub use pate_ledger::Ledger;
pub use pool::TeacherPool;
pub use service::AggregatorService;
pub use students::StudentBudgets;

pub use pate_proto::MAX_MESSAGE_BYTES;

pub use pate_privacy::MechanismKind;

/// How the aggregator runs.
#[derive(clap::Args, Debug, Clone)]
pub struct Config {
    /// Teacher address (host:port or http://host:port); repeat for each teacher.
    #[arg(long = "teacher", env = "PATE_TEACHERS", value_delimiter = ',')]
    pub teachers: Vec<String>,
    /// File with one teacher address per line (blank lines and # comments ignored).
    #[arg(long, env = "PATE_TEACHERS_FILE")]
    pub teachers_file: Option<PathBuf>,
    /// Teachers that must vote for a query to be answered [default: a majority].
    #[arg(long, env = "PATE_QUORUM")]
    pub quorum: Option<usize>,
    /// Seconds a teacher has to answer one vote batch before it counts as abstaining.
    #[arg(long, default_value_t = 60.0, env = "PATE_VOTE_TIMEOUT")]
    pub vote_timeout: f64,
    /// Seconds between two health probes of every teacher; below the quorum
    /// the aggregator's own gRPC health turns NOT_SERVING.
    #[arg(long, default_value_t = 2.0, env = "PATE_HEALTH_INTERVAL")]
    pub health_interval: f64,
    /// Seconds to keep retrying teachers that are not up yet at start-up.
    #[arg(long, default_value_t = 60.0, env = "PATE_CONNECT_TIMEOUT")]
    pub connect_timeout: f64,
    /// Noise mechanism.
    #[arg(long, value_enum, default_value = "lnmax", env = "PATE_MECHANISM")]
    pub mechanism: MechanismKind,
    /// LNMax: Laplace scale b on each count (each answer costs 2/b pure epsilon).
    #[arg(long, default_value_t = 20.0, env = "PATE_NOISE_SCALE")]
    pub noise_scale: f64,
    /// GNMax: standard deviation of the Gaussian noise on each count.
    #[arg(long, default_value_t = 40.0, env = "PATE_SIGMA")]
    pub sigma: f64,
    /// Confident-GNMax: threshold T on the top count.
    #[arg(long, default_value_t = 200.0, env = "PATE_THRESHOLD")]
    pub threshold: f64,
    /// Confident-GNMax: noise of the threshold check.
    #[arg(long, default_value_t = 150.0, env = "PATE_SIGMA1")]
    pub sigma1: f64,
    /// Confident-GNMax: noise of the answer.
    #[arg(long, default_value_t = 40.0, env = "PATE_SIGMA2")]
    pub sigma2: f64,
    /// The global privacy budget: queries that could push the spent epsilon past it are refused.
    #[arg(long, default_value_t = 10.0, env = "PATE_EPSILON_LIMIT")]
    pub epsilon_limit: f64,
    /// Each student's own budget, beside the global one: a student whose
    /// queries could push its own spent epsilon past it is refused, however
    /// much global budget is left [default: the global --epsilon-limit].
    #[arg(long, env = "PATE_STUDENT_EPSILON_LIMIT")]
    pub student_epsilon_limit: Option<f64>,
    /// Stop answering once the data-dependent epsilon (at --delta, with the noise actually drawn) of
    /// everything answered could pass this target (PATE 2018 practice; refused queries cost nothing).
    /// The guarantee is the released or the data-independent epsilon, not this one.
    #[arg(long, env = "PATE_TARGET_EPSILON")]
    pub target_epsilon: Option<f64>,
    /// Delta of the (epsilon, delta) guarantee; 0 means pure DP (LNMax only).
    #[arg(long, default_value_t = 1e-5, env = "PATE_DELTA")]
    pub delta: f64,
    /// Accept an epsilon limit or delta other than the one pinned in the
    /// ledger, and record the change there; without it such a restart is
    /// refused, so the global budget never changes by accident.
    #[arg(long, env = "PATE_CHANGE_BUDGET")]
    pub change_budget: bool,
    /// Largest batch of samples one Label call may carry.
    #[arg(long, default_value_t = 1024, env = "PATE_MAX_BATCH")]
    pub max_batch: usize,
    /// SQLite ledger of every answered query; a restart restores the budget from it.
    #[arg(long, default_value = "pate-ledger.db", env = "PATE_LEDGER")]
    pub ledger: PathBuf,
    /// Transport security: the same certificate serves students and
    /// authenticates the aggregator to the teachers; only students' certificates get labels.
    #[command(flatten)]
    pub tls: TlsArgs,
}

impl Config {
    /// The configured mechanism, validated.
    pub fn mechanism(&self) -> anyhow::Result<Mechanism> {
        let m = self.mechanism.with_noise(self.noise_scale, self.sigma, self.threshold, self.sigma1, self.sigma2);
        m.validate()?;
        Ok(m)
    }

    /// Every configured teacher address, flags first, then the file.
    pub fn teacher_addrs(&self) -> anyhow::Result<Vec<String>> {
        let mut addrs: Vec<String> = self.teachers.iter().map(|s| s.trim().to_string()).filter(|s| !s.is_empty()).collect();
        if let Some(path) = &self.teachers_file {
            let text = std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
            addrs.extend(
                text.lines().map(str::trim).filter(|l| !l.is_empty() && !l.starts_with('#')).map(str::to_string),
            );
        }
        Ok(addrs)
    }
}

/// Connects to the teachers, restores the budget from the ledger, and serves
/// the aggregator on `listener` until `shutdown` resolves.
pub async fn run(config: Config, listener: TcpListener, shutdown: impl Future<Output = ()>) -> anyhow::Result<()> {
    let transport = config.tls.load().context("transport security")?;
    let mechanism = config.mechanism()?;
    NoisyMax::new(&mechanism)?; // fail at start-up, not on the first query
    if pate_privacy::noise::SECURE_NOISE {
        tracing::info!(source = pate_privacy::noise::NOISE_SOURCE, "noise source");
    } else {
        tracing::warn!(source = pate_privacy::noise::NOISE_SOURCE, "noise source is not cryptographically secure");
    }
    let orders = default_orders();
    let mut budget = Budget::new(mechanism, config.epsilon_limit, config.delta, orders.clone())?;
    let student_limit = config.student_epsilon_limit.unwrap_or(config.epsilon_limit);
    let mut students = StudentBudgets::new(mechanism, student_limit, config.delta, orders.clone())
        .context("bad --student-epsilon-limit")?;
    let mut ledger = Ledger::open(&config.ledger, &mechanism, &orders)
        .with_context(|| format!("opening ledger {}", config.ledger.display()))?;
    let changes = ledger
        .pin_budget(config.epsilon_limit, config.delta, config.change_budget)
        .with_context(|| format!("checking the budget pinned in {}", config.ledger.display()))?;
    for (key, old, new) in changes {
        tracing::warn!(key, old, new, "budget changed on request (--change-budget); recorded in the ledger");
    }
    let restored = ledger.restore_into(&mut budget).context("restoring the budget from the ledger")?;
    let known = students.restore(&ledger).context("restoring the students' budgets from the ledger")?;
    let spent = budget.spent();
    tracing::info!(ledger = %config.ledger.display(), restored, students = known, epsilon = spent, student_limit, "budget restored");

    let addrs = config.teacher_addrs()?;
    // A target no query can meet is an error now, before any teacher is asked
    // (two classes and every configured teacher unanimous: the cheapest query).
    let target = match config.target_epsilon {
        None => None,
        Some(eps) => {
            let mut t = DataDependentTarget::new(mechanism, eps, config.delta, orders.clone())?;
            t.check_reachable(addrs.len(), 2)?;
            for q in ledger.queries().context("restoring the data-dependent epsilon from the ledger")? {
                t.restore(&q.histogram, q.answer.is_some());
            }
            // Answering that stopped stays stopped (pate_privacy::target), unless
            // the operator has raised the target since.
            match ledger.target_stopped_at().context("reading the target stop from the ledger")? {
                Some(at) if eps <= at => {
                    t.stop();
                    tracing::warn!(target = eps, stopped_at = at, epsilon = t.spent(), "target reached before this start: every label request will be refused");
                }
                Some(at) => tracing::warn!(target = eps, stopped_at = at, "target raised since answering stopped: answering resumes"),
                None => {}
            }
            tracing::info!(target = eps, epsilon = t.spent(), "data-dependent target set");
            Some(t)
        }
    };
    let quorum = config.quorum.unwrap_or(addrs.len() / 2 + 1);
    let secs = |s: f64, what: &str| Duration::try_from_secs_f64(s).with_context(|| format!("bad {what}: {s}"));
    let health_every = secs(config.health_interval, "--health-interval")?;
    anyhow::ensure!(!health_every.is_zero(), "--health-interval must be positive");
    let pool = TeacherPool::connect(
        &addrs,
        quorum,
        secs(config.vote_timeout, "--vote-timeout")?,
        secs(config.connect_timeout, "--connect-timeout")?,
        &transport,
    )
    .await?;
    let [rows, cols] = pool.input_shape();
    tracing::info!(teachers = pool.len(), quorum, rows, cols, classes = pool.classes(), mechanism = mechanism.name(), "ensemble ready");
    metrics::budget(&budget.snapshot());

    let pool = std::sync::Arc::new(pool);
    let service = AggregatorService::new(pool.clone(), budget, students, ledger, config.max_batch).with_target(target);
    let (reporter, health) = tonic_health::server::health_reporter();
    reporter.set_service_status(health::LIVENESS, tonic_health::ServingStatus::Serving).await;
    health::report(&reporter, pool.len(), pool.quorum()).await;
    let monitor = tokio::spawn(health::monitor(pool, reporter, health_every));
    let addr = listener.local_addr().context("listener address")?;
    tracing::info!(%addr, "serving labels");
    let aggregator = AggregatorServer::new(service)
        .max_decoding_message_size(MAX_MESSAGE_BYTES)
        .max_encoding_message_size(MAX_MESSAGE_BYTES);
    let served = transport
        .server()?
        .add_service(health)
        .add_service(InterceptedService::new(aggregator, RequireRole::students_only(transport.is_tls())))
        .serve_with_incoming_shutdown(pate_proto::runtime::incoming(listener), shutdown)
        .await
        .context("aggregator server failed");
    monitor.abort();
    served?;
    tracing::info!("stopped");
    Ok(())
}
