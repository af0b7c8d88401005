//! `pate`: one front door to the PATE framework.

mod data;
mod lab;

use clap::{Parser, Subcommand};
use pate_proto::runtime::init_tracing;

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
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    init_tracing(false);
    match cli.command {
        Command::Lab(args) => {
            lab::run(args).await?;
        }
        Command::Data(cmd) => data::run(cmd)?,
    }
    Ok(())
}
