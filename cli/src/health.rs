//! `pate health`: asks a server's gRPC health service whether it is
//! SERVING, over the same mutual TLS as everything else. Container
//! orchestrators run it as their readiness and liveness check: the native
//! gRPC probes of Kubernetes and Docker cannot present a client
//! certificate, and the servers accept no connection without one.

use std::time::Duration;

use anyhow::Context;
use pate_proto::tls::{ServerRole, TlsArgs};
use tonic_health::pb::health_check_response::ServingStatus;
use tonic_health::pb::{health_client::HealthClient, HealthCheckRequest};

/// Which kind of server is asked (its certificate must name that role).
#[derive(clap::ValueEnum, Debug, Clone, Copy, PartialEq, Eq)]
pub enum ServerKind {
    /// The aggregator (`pate://aggregator`).
    Aggregator,
    /// A teacher (`pate://teacher/<i>`).
    Teacher,
}

/// `pate health` flags.
#[derive(clap::Args, Debug, Clone)]
pub struct HealthArgs {
    /// The server's address, host:port.
    #[arg(long, env = "PATE_HEALTH_ADDR")]
    pub addr: String,
    /// Which kind of server it is.
    #[arg(long, value_enum, env = "PATE_HEALTH_SERVER")]
    pub server: ServerKind,
    /// Health service name to ask about: "" is the server as a whole (the
    /// aggregator's turns NOT_SERVING below its quorum); the aggregator's
    /// `liveness` is SERVING for as long as the process runs.
    #[arg(long, default_value = "", env = "PATE_HEALTH_SERVICE")]
    pub service: String,
    /// Seconds to wait for the answer.
    #[arg(long, default_value_t = 5.0, env = "PATE_HEALTH_TIMEOUT")]
    pub timeout: f64,
    /// This caller's certificate (any party of the deployment's CA; in a
    /// container, its own).
    #[command(flatten)]
    pub tls: TlsArgs,
}

/// Runs `pate health`: Ok when SERVING, an error saying what was found otherwise.
pub async fn run(args: HealthArgs) -> anyhow::Result<()> {
    let timeout = Duration::try_from_secs_f64(args.timeout).with_context(|| format!("bad --timeout {}", args.timeout))?;
    let transport = args.tls.load().context("transport security")?;
    let role = match args.server {
        ServerKind::Aggregator => ServerRole::Aggregator,
        ServerKind::Teacher => ServerRole::Teacher,
    };
    let ep = transport.endpoint(&args.addr, role)?.connect_timeout(timeout).timeout(timeout);
    // One deadline over connect, TLS handshake and call: the endpoint's
    // timeouts do not cover the handshake, and a probe must never hang.
    let check = async {
        let channel = ep.connect().await.with_context(|| format!("connecting to {}", args.addr))?;
        let reply = HealthClient::new(channel)
            .check(HealthCheckRequest { service: args.service.clone() })
            .await
            .with_context(|| format!("health check of {} service {:?}", args.addr, args.service))?;
        anyhow::Ok(reply.into_inner().status)
    };
    let status = tokio::time::timeout(timeout, check)
        .await
        .map_err(|_| anyhow::anyhow!("{} did not answer a health check within {:?}", args.addr, timeout))??;
    let status = ServingStatus::try_from(status).unwrap_or(ServingStatus::Unknown);
    anyhow::ensure!(status == ServingStatus::Serving, "{} service {:?} is {}", args.addr, args.service, status.as_str_name());
    println!("{} service {:?} is SERVING", args.addr, args.service);
    Ok(())
}
