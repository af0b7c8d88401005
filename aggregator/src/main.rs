//! `pate-aggregator`: the trusted curator between students and teachers.

use std::net::SocketAddr;
use std::path::PathBuf;

use anyhow::Context;
use clap::Parser;
use pate_proto::runtime::{init_tracing, shutdown_signal, write_addr_file};

/// Aggregates teacher votes with calibrated noise and accounts the privacy spent.
#[derive(Parser, Debug)]
#[command(version, about)]
struct Cli {
    #[command(flatten)]
    config_file: pate_proto::config::ConfigArg,
    #[command(flatten)]
    config: pate_aggregator::Config,
    /// Address to listen on (port 0 picks a free port).
    #[arg(long, default_value = "127.0.0.1:50050", env = "PATE_LISTEN")]
    listen: SocketAddr,
    /// Write the bound address to this file once listening.
    #[arg(long, env = "PATE_ADDR_FILE")]
    addr_file: Option<PathBuf>,
    /// Log as JSON lines.
    #[arg(long, env = "PATE_LOG_JSON")]
    log_json: bool,
    #[command(flatten)]
    metrics: pate_proto::metrics::MetricsArgs,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    pate_proto::config::apply_config_file::<Cli>()?;
    let cli = Cli::parse();
    init_tracing(cli.log_json);
    cli.metrics.install()?;
    let listener = tokio::net::TcpListener::bind(cli.listen).await.with_context(|| format!("binding {}", cli.listen))?;
    if let Some(path) = &cli.addr_file {
        write_addr_file(path, listener.local_addr()?).with_context(|| format!("writing {}", path.display()))?;
    }
    pate_aggregator::run(cli.config, listener, shutdown_signal()).await
}
