//! `pate-privacy`: privacy accounting for PATE (no ML, no network).
//!
//! * Accountants, translated from the reference analysis in
//!   tensorflow/privacy (`research/pate_2017`, `research/pate_2018`) and
//!   checked against its test vectors: [`lnmax`] (2017 moments accountant
//!   and 2018 RDP), [`gnmax`], [`confident`] (Confident GNMax),
//!   [`smooth_sensitivity`], [`conditions`] (C5/C6) and [`ss_release`]
//!   (the Table-2 search for releasing a data-dependent epsilon).
//! * RDP to `(epsilon, delta)`: [`rdp`] (classic and Balle et al. 2020),
//!   over the reference's default [`orders`].
//! * The API the aggregator and the CLI use: [`mechanism`]
//!   ([`Mechanism`], [`data_independent_rdp`], [`data_dependent_rdp`]),
//!   [`analyze`], [`plan`] and the CSV reader [`votes`].
//! * Numerics written for this crate: [`special`] (scaled and log `erfc`,
//!   `erfcinv`, normal log tails) and [`optimize`] (Brent root finding and
//!   bounded minimisation, as SciPy does them).
//! * [`discrete`]: the failure probability of the noisy arg-max with the
//!   integer noise the aggregator really draws (the sound `q` for its
//!   data-dependent accounting); [`discrete_ss`]: the local sensitivity of
//!   that accounting at every distance, for [`release`] (the released
//!   epsilon, smooth sensitivity).
//! * For the aggregator: [`noise`] (integer noisy max with OpenDP's
//!   samplers) and [`budget`] (the global budget on the data-independent
//!   bound); for it and the CLI: [`histogram`] (vote histograms from
//!   teachers' labels, the noise-free plurality).

pub mod analyze;
pub mod budget;
pub mod conditions;
pub mod confident;
pub mod discrete;
pub mod discrete_ss;
pub mod gnmax;
pub mod histogram;
pub mod lnmax;
pub mod mechanism;
pub mod noise;
pub mod optimize;
pub mod orders;
pub mod plan;
pub mod rdp;
pub mod release;
pub mod smooth_sensitivity;
pub mod special;
pub mod ss_release;
pub mod target;
pub mod votes;

pub use analyze::{analyze, analyze_with, Accountant, AnalysisReport, AnalyzeError, AnalyzeOptions};
pub use mechanism::{
    data_dependent_rdp, data_dependent_rdp_with, data_independent_rdp, data_independent_rdp_realized, Mechanism,
    MechanismError, MechanismKind, NoiseModel,
};
pub use orders::default_orders;
pub use plan::{plan, Plan, PlanError, PlanMechanism, PlanRequest};
pub use rdp::{eps_from_rdp, Conversion, EpsilonAt};
pub use votes::{parse_votes_csv, read_votes_csv, VotesError};
