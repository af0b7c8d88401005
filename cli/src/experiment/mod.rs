//! `pate experiment`: backdoor experiments on the real processes.
//!
//! - `pate experiment backdoor ...`: one configuration end to end
//!   ([`backdoor`]: PATE mode in [`pate`], single-teacher mode in [`single`]).
//! - `pate experiment run FILE.toml`: a grid of configurations ([`grid`],
//!   [`runner`]) with a results table and plots ([`plots`]).

pub mod backdoor;
pub mod certify;
pub mod grid;
pub mod measure;
pub mod pate;
pub mod plots;
pub mod runner;
pub mod single;
pub mod summary;
pub mod teachers;

/// Experiments.
#[derive(clap::Subcommand, Debug)]
pub enum ExperimentCommand {
    /// One backdoor configuration end to end; writes OUT/report.json.
    Backdoor(backdoor::BackdoorArgs),
    /// A grid of backdoor configurations from a TOML file: results.csv,
    /// report.md and plots (PNG and SVG).
    Run(runner::RunArgs),
}

/// Runs an experiment command.
pub async fn run(cmd: ExperimentCommand) -> anyhow::Result<()> {
    match cmd {
        ExperimentCommand::Backdoor(args) => {
            backdoor::run(args).await?;
        }
        ExperimentCommand::Run(args) => runner::run(args).await?,
    }
    Ok(())
}
