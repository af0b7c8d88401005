//! Prometheus metrics, shared by the three servers: the `--metrics-addr`
//! flag (one `clap::Args` struct each server flattens into its config) and
//! the exporter behind it. The servers record through the `metrics` facade
//! (`metrics::counter!` and friends); without `--metrics-addr` nothing is
//! installed and recording is a no-op.

use std::net::SocketAddr;

use metrics_exporter_prometheus::PrometheusBuilder;

/// Latency buckets in seconds, for every histogram the servers record: from
/// a loopback round trip (~1 ms) to a vote that hits its timeout (60 s).
pub const LATENCY_BUCKETS: &[f64] = &[0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0];

/// Why the metrics endpoint could not start.
#[derive(Debug, thiserror::Error)]
pub enum MetricsError {
    /// The exporter failed to bind or to install itself.
    #[error("cannot serve metrics on {addr}: {reason}")]
    Start {
        /// The address asked for.
        addr: SocketAddr,
        /// What went wrong.
        reason: String,
    },
}

/// Where a server exposes its metrics.
#[derive(clap::Args, Debug, Clone, Default)]
pub struct MetricsArgs {
    /// Serve Prometheus metrics (text format) at http://HOST:PORT/metrics;
    /// off when unset.
    #[arg(long, env = "PATE_METRICS_ADDR")]
    pub metrics_addr: Option<SocketAddr>,
}

impl MetricsArgs {
    /// Starts the exporter when `--metrics-addr` is set. Call it from inside
    /// the tokio runtime (the HTTP listener runs as a task on it). The
    /// recorder is process-wide: a second call in one process (tests running
    /// several servers) keeps the first recorder and logs that it did.
    pub fn install(&self) -> Result<(), MetricsError> {
        let Some(addr) = self.metrics_addr else { return Ok(()) };
        let start = |reason: String| MetricsError::Start { addr, reason };
        let builder = PrometheusBuilder::new()
            .with_http_listener(addr)
            .set_buckets(LATENCY_BUCKETS)
            .map_err(|e| start(e.to_string()))?;
        let (recorder, exporter) = builder.build().map_err(|e| start(e.to_string()))?;
        if metrics::set_global_recorder(recorder).is_err() {
            tracing::warn!(%addr, "a metrics recorder is already installed in this process; not serving a second one");
            return Ok(());
        }
        tokio::spawn(async move {
            if let Err(e) = exporter.await {
                tracing::error!(error = ?e, "metrics endpoint stopped");
            }
        });
        tracing::info!(%addr, "serving prometheus metrics at /metrics");
        Ok(())
    }
}
