//! `pate privacy`: analyze vote histograms, report a ledger, plan noise.

use std::path::PathBuf;

use anyhow::Context;
use pate_ledger::Ledger;
use pate_privacy::analyze::{analyze_with, Accountant, AnalyzeOptions};
use pate_privacy::plan::{plan, PlanMechanism, PlanRequest};
use pate_privacy::rdp::{eps_from_rdp, Conversion};
use pate_privacy::{read_votes_csv, Mechanism, MechanismKind};
use serde::Serialize;

/// Noise parameters shared by the subcommands.
#[derive(clap::Args, Debug, Clone)]
pub struct NoiseArgs {
    /// Noise mechanism.
    #[arg(long, value_enum, default_value = "lnmax")]
    pub mechanism: MechanismKind,
    /// LNMax Laplace scale b (gamma = 1/b in the 2017 paper).
    #[arg(long, default_value_t = 20.0)]
    pub scale: f64,
    /// GNMax sigma.
    #[arg(long, default_value_t = 40.0)]
    pub sigma: f64,
    /// Confident-GNMax threshold T.
    #[arg(long, default_value_t = 200.0)]
    pub threshold: f64,
    /// Confident-GNMax sigma of the threshold check.
    #[arg(long, default_value_t = 150.0)]
    pub sigma1: f64,
    /// Confident-GNMax sigma of the answer.
    #[arg(long, default_value_t = 40.0)]
    pub sigma2: f64,
}

impl NoiseArgs {
    fn mechanism(&self) -> Mechanism {
        self.mechanism.with_noise(self.scale, self.sigma, self.threshold, self.sigma1, self.sigma2)
    }
}

/// `pate privacy` subcommands.
#[derive(clap::Subcommand, Debug)]
pub enum PrivacyCommand {
    /// Data-dependent and data-independent epsilon of a votes file (CSV: one
    /// query per line, one integer vote count per class, no header).
    Analyze {
        /// The votes CSV.
        #[arg(long)]
        votes: PathBuf,
        #[command(flatten)]
        noise: NoiseArgs,
        /// Target delta.
        #[arg(long)]
        delta: f64,
        /// rdp (2018) or moments2017 (the 2017 moments accountant, LNMax only).
        #[arg(long, default_value = "rdp")]
        accountant: Accountant,
        /// RDP to (epsilon, delta) conversion: classic (the reference's) or balle2020 (tighter).
        #[arg(long, default_value = "classic")]
        conversion: Conversion,
    },
    /// Epsilon spent as recorded in an aggregator's ledger.
    Report {
        /// The aggregator's SQLite ledger.
        #[arg(long)]
        ledger: PathBuf,
        /// Delta to report at.
        #[arg(long, default_value_t = 1e-5)]
        delta: f64,
        /// RDP to (epsilon, delta) conversion.
        #[arg(long, default_value = "classic")]
        conversion: Conversion,
    },
    /// The smallest noise that keeps Q answered queries within a target
    /// epsilon under the data-independent bound.
    Plan {
        /// Epsilon to stay within.
        #[arg(long)]
        target_epsilon: f64,
        /// Delta.
        #[arg(long)]
        delta: f64,
        /// Number of answered queries.
        #[arg(long)]
        queries: u64,
        /// Mechanism to size: lnmax (scale), gnmax (sigma), confident-gnmax (sigma2, with --threshold and --sigma1 fixed).
        #[arg(long, value_enum, default_value = "lnmax")]
        mechanism: MechanismKind,
        /// Confident-GNMax threshold T.
        #[arg(long, default_value_t = 200.0)]
        threshold: f64,
        /// Confident-GNMax sigma of the threshold check.
        #[arg(long, default_value_t = 150.0)]
        sigma1: f64,
        /// RDP to (epsilon, delta) conversion.
        #[arg(long, default_value = "classic")]
        conversion: Conversion,
    },
}

/// What `pate privacy report` prints.
#[derive(Debug, Serialize)]
pub struct LedgerReport {
    /// Mechanism and parameters the ledger was written with.
    pub mechanism: Mechanism,
    /// Delta reported at.
    pub delta: f64,
    /// Queries answered with a label.
    pub queries_answered: u64,
    /// Queries the mechanism declined (Confident-GNMax).
    pub queries_abstained: u64,
    /// Queries refused for lack of budget.
    pub queries_refused: u64,
    /// Data-independent epsilon, as the aggregator enforces it.
    pub data_independent_epsilon: f64,
    /// Data-dependent epsilon from the recorded histograms (for the operator
    /// only: releasing it exactly leaks; see `smooth_sensitivity`).
    pub data_dependent_epsilon: Option<f64>,
    /// The full data-dependent analysis, smooth-sensitivity release included.
    pub analysis: Option<pate_privacy::AnalysisReport>,
}

/// Builds the report of a ledger.
pub fn ledger_report(path: &std::path::Path, delta: f64, conversion: Conversion) -> anyhow::Result<LedgerReport> {
    anyhow::ensure!(path.is_file(), "no ledger at {}", path.display());
    let ledger = Ledger::open_read_only(path).with_context(|| format!("opening {}", path.display()))?;
    let (mechanism, orders, queries) = (ledger.mechanism()?, ledger.orders()?, ledger.queries()?);
    let mut total = vec![0.0; orders.len()];
    queries.iter().for_each(|q| total.iter_mut().zip(&q.rdp).for_each(|(t, c)| *t += c));
    let answered = queries.iter().filter(|q| q.answer.is_some()).count() as u64;
    let pure = pate_privacy::budget::pure_eps(&mechanism) * answered as f64;
    let data_independent_epsilon = if queries.is_empty() {
        0.0
    } else if delta == 0.0 {
        pure
    } else {
        eps_from_rdp(&total, &orders, delta, conversion).epsilon.min(pure)
    };
    let analysis = if queries.is_empty() || delta == 0.0 {
        None
    } else {
        let votes: Vec<Vec<f64>> = queries.iter().map(|q| q.histogram.iter().map(|&c| f64::from(c)).collect()).collect();
        let flags = matches!(mechanism, Mechanism::ConfidentGnMax { .. }).then(|| queries.iter().map(|q| q.answer.is_some()).collect());
        // The ledger records what the aggregator ran: integer noise, ties to the lowest class.
        let opts = AnalyzeOptions {
            delta,
            conversion,
            orders: Some(orders),
            answered: flags,
            noise_model: pate_privacy::NoiseModel::Discrete,
            ..AnalyzeOptions::default()
        };
        Some(analyze_with(&votes, &mechanism, &opts)?)
    };
    Ok(LedgerReport {
        mechanism,
        delta,
        queries_answered: answered,
        queries_abstained: queries.len() as u64 - answered,
        queries_refused: ledger.refused()?,
        data_independent_epsilon,
        data_dependent_epsilon: analysis.as_ref().map(|a| a.epsilon.min(data_independent_epsilon)),
        analysis,
    })
}

/// Runs a `pate privacy` subcommand, printing JSON on stdout.
pub fn run(cmd: PrivacyCommand) -> anyhow::Result<()> {
    let json = match cmd {
        PrivacyCommand::Analyze { votes, noise, delta, accountant, conversion } => {
            let rows = read_votes_csv(&votes)?;
            let opts = AnalyzeOptions { delta, accountant, conversion, ..AnalyzeOptions::default() };
            serde_json::to_string_pretty(&analyze_with(&rows, &noise.mechanism(), &opts)?)?
        }
        PrivacyCommand::Report { ledger, delta, conversion } => {
            serde_json::to_string_pretty(&ledger_report(&ledger, delta, conversion)?)?
        }
        PrivacyCommand::Plan { target_epsilon, delta, queries, mechanism, threshold, sigma1, conversion } => {
            let mechanism = match mechanism {
                MechanismKind::Lnmax => PlanMechanism::LnMax,
                MechanismKind::Gnmax => PlanMechanism::GnMax,
                MechanismKind::ConfidentGnmax => PlanMechanism::ConfidentGnMax { threshold, sigma1 },
            };
            let req = PlanRequest { mechanism, target_epsilon, delta, queries, conversion, orders: None };
            serde_json::to_string_pretty(&plan(&req)?)?
        }
    };
    println!("{json}");
    Ok(())
}
