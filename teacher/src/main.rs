//! `pate-teacher`: train a teacher on its partition, or serve its votes.

use std::net::SocketAddr;
use std::path::PathBuf;

use anyhow::Context;
use clap::{Parser, Subcommand};
use pate_proto::runtime::{init_tracing, shutdown_signal, write_addr_file};

/// A PATE teacher: one model on one disjoint partition of sensitive data.
#[derive(Parser, Debug)]
#[command(version, about)]
struct Cli {
    #[command(flatten)]
    config_file: pate_proto::config::ConfigArg,
    /// Log as JSON lines.
    #[arg(long, global = true, env = "PATE_LOG_JSON")]
    log_json: bool,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Train on one partition and write a checkpoint.
    Train(pate_teacher::TrainArgs),
    /// Serve Describe and Vote over gRPC from a checkpoint.
    Serve {
        #[command(flatten)]
        config: pate_teacher::ServeConfig,
        /// Address to listen on (port 0 picks a free port).
        #[arg(long, default_value = "127.0.0.1:50051", env = "PATE_LISTEN")]
        listen: SocketAddr,
        /// Write the bound address to this file once listening.
        #[arg(long, env = "PATE_ADDR_FILE")]
        addr_file: Option<PathBuf>,
        #[command(flatten)]
        metrics: pate_proto::metrics::MetricsArgs,
    },
}

fn main() -> anyhow::Result<()> {
    pate_ml::init_cpu_threads();
    pate_proto::config::apply_config_file::<Cli>()?;
    let cli = Cli::parse();
    init_tracing(cli.log_json);
    match cli.command {
        // On the main thread, with no runtime: training has nothing to
        // await, and glibc's main arena keeps the megabyte buffers each step
        // frees, where a worker thread's arena returned them to the kernel
        // and faulted them in again.
        Command::Train(args) => pate_teacher::train(&args).map(drop),
        Command::Serve { config, listen, addr_file, metrics } => {
            let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build().context("tokio runtime")?;
            runtime.block_on(async {
                metrics.install()?;
                let listener = tokio::net::TcpListener::bind(listen).await.with_context(|| format!("binding {listen}"))?;
                if let Some(path) = addr_file {
                    write_addr_file(&path, listener.local_addr()?).with_context(|| format!("writing {}", path.display()))?;
                }
                pate_teacher::run(config, listener, shutdown_signal()).await
            })
        }
    }
}
