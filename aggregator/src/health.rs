//! Health that reflects reality: the aggregator can answer only while a
//! quorum of its teachers is up, so a monitor probes every teacher's gRPC
//! health service and flips the aggregator's own health (the overall ""
//! service and `pate.v1.Aggregator`) to NOT_SERVING below the quorum and
//! back to SERVING when enough teachers recover. Readiness probes
//! (Kubernetes, compose health checks) then stop sending students to an
//! aggregator that would only fail their queries.

use std::sync::Arc;
use std::time::Duration;

use pate_proto::v1::aggregator_server::AggregatorServer;
use tonic::server::NamedService;
use tonic_health::server::HealthReporter;
use tonic_health::ServingStatus;

use crate::pool::TeacherPool;
use crate::service::AggregatorService;

/// A health service name that is SERVING for as long as the process runs:
/// what a liveness probe asks, so that a lost quorum (readiness) does not
/// get the aggregator restarted.
pub const LIVENESS: &str = "liveness";

/// Sets the aggregator's health from how many of `up` teachers vote.
pub async fn report(reporter: &HealthReporter, up: usize, quorum: usize) -> bool {
    let serving = up >= quorum;
    let status = if serving { ServingStatus::Serving } else { ServingStatus::NotServing };
    reporter.set_service_status("", status).await;
    reporter.set_service_status(<AggregatorServer<AggregatorService> as NamedService>::NAME, status).await;
    crate::metrics::health(up, quorum, serving);
    serving
}

/// Probes the teachers every `every` forever, updating `reporter`; logs
/// each change of the count of teachers up.
pub async fn monitor(pool: Arc<TeacherPool>, reporter: HealthReporter, every: Duration) {
    let timeout = every.max(Duration::from_secs(1));
    let mut last: Option<usize> = None;
    loop {
        tokio::time::sleep(every).await;
        let flags = pool.probe(timeout).await;
        let up = flags.iter().filter(|&&ok| ok).count();
        let serving = report(&reporter, up, pool.quorum()).await;
        if last != Some(up) {
            let down: Vec<&str> = pool.addrs().zip(&flags).filter(|(_, &ok)| !ok).map(|(a, _)| a).collect();
            if serving {
                tracing::info!(up, quorum = pool.quorum(), ?down, "teachers up: serving");
            } else {
                tracing::warn!(up, quorum = pool.quorum(), ?down, "below quorum: health NOT_SERVING");
            }
            last = Some(up);
        }
    }
}
