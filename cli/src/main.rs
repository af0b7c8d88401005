//! `pate`: one front door to the PATE framework.

mod certs;
mod data;
mod deploy;
mod experiment;
mod health;
mod lab;
mod privacy;
mod progress;

use clap::{Parser, Subcommand};
use pate_proto::runtime::init_tracing;

// Training frees and allocates megabyte buffers every step on several
// threads; glibc's per-thread arenas return them to the kernel and fault
// them in again; mimalloc keeps them for reuse (see pate-student's main).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// PATE: private aggregation of teacher ensembles, as real processes over gRPC.
#[derive(Parser, Debug)]
#[command(version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Run a whole PATE lab locally: teachers, aggregator and student as processes.
    Lab(lab::LabArgs),
    /// Fetch or inspect datasets.
    #[command(subcommand)]
    Data(data::DataCommand),
    /// Backdoor experiments: one configuration, or a grid from a TOML file.
    #[command(subcommand)]
    Experiment(experiment::ExperimentCommand),
    /// Privacy accounting: analyze votes, report a ledger, plan noise.
    #[command(subcommand)]
    Privacy(privacy::PrivacyCommand),
    /// Provision certificates: a CA and one per party, the role inside.
    #[command(subcommand)]
    Certs(certs::CertsCommand),
    /// Deploy the parties as containers: docker-compose or Kubernetes.
    #[command(subcommand)]
    Deploy(deploy::DeployCommand),
    /// Ask a server's gRPC health over mutual TLS (exit 0 iff SERVING): the
    /// readiness and liveness check of the container deployments.
    Health(health::HealthArgs),
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    // Before any child starts: the teachers and the student inherit it.
    pate_ml::init_cpu_threads();
    let cli = Cli::parse();
    init_tracing(false);
    match cli.command {
        Command::Lab(args) => {
            lab::run(args).await?;
        }
        Command::Data(cmd) => data::run(cmd)?,
        Command::Experiment(cmd) => experiment::run(cmd).await?,
        Command::Privacy(cmd) => privacy::run(cmd)?,
        Command::Certs(cmd) => certs::run(cmd)?,
        Command::Deploy(cmd) => deploy::run(cmd)?,
        Command::Health(args) => health::run(args).await?,
    }
    Ok(())
}
