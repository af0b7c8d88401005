//! `pate experiment`: backdoor experiments on the real processes.
//!
//! - `pate experiment backdoor ...`: one configuration end to end
//!   ([`backdoor`]: PATE mode in [`pate`], single-teacher mode in [`single`]).
//! - `pate experiment run FILE.toml`: a grid of configurations ([`grid`],
//!   [`runner`]) with a results table and plots ([`plots`]).
//! - `pate experiment robustness ...`: adversarial examples, defensive
//!   distillation, calibration, Deep k-NN credibility and a backdoor
//!   fine-tuned against distilled ([`robustness`]; grids with
//!   `experiment = "robustness"` in the TOML file).
//! - `pate experiment run` on a file with `experiment = "lab"`: a grid of
//!   whole `pate lab` runs ([`lab_grid`]), e.g. experiments/private_lab.toml.

pub mod backdoor;
pub mod certify;
pub mod grid;
pub mod lab_grid;
pub mod measure;
pub mod pate;
pub mod plots;
pub mod robustness;
pub mod runner;
pub mod single;
pub mod summary;
pub mod teachers;

/// Experiments.
#[derive(clap::Subcommand, Debug)]
pub enum ExperimentCommand {
    /// One backdoor configuration end to end; writes OUT/report.json.
    Backdoor(backdoor::BackdoorArgs),
    /// FGSM and adversarial training, defensive distillation and the
    /// substitute attack, temperature scaling, Deep k-NN credibility, and a
    /// backdoor fine-tuned against distilled, in process; writes
    /// OUT/report.json, OUT/report.md and plots.
    Robustness(robustness::RobustnessArgs),
    /// A grid of backdoor configurations from a TOML file: results.csv,
    /// report.md and plots (PNG and SVG). A file with
    /// `experiment = "robustness"` is a grid of robustness runs instead
    /// (per-seed means and spreads in report.md and summary.json), and one
    /// with `experiment = "lab"` a grid of `pate lab` runs (flags as keys;
    /// teachers shared between cells that train them alike).
    Run(runner::RunArgs),
}

/// Runs an experiment command.
pub async fn run(cmd: ExperimentCommand) -> anyhow::Result<()> {
    match cmd {
        ExperimentCommand::Backdoor(args) => {
            backdoor::run(args).await?;
        }
        ExperimentCommand::Robustness(args) => {
            robustness::run(args).await?;
        }
        ExperimentCommand::Run(args) => runner::run(args).await?,
    }
    Ok(())
}
