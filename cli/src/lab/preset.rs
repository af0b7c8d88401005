//! `pate lab --preset`: the quick non-private smoke configuration and the
//! private one, resolved with the explicit flags into one [`Plan`], and the
//! bad-input checks that must fail before any teacher is trained or any
//! budget is spent.

use pate_privacy::MechanismKind;
use pate_ml::model::ModelKind;
use pate_privacy::budget::Budget;
use pate_privacy::target::DataDependentTarget;
use pate_privacy::{default_orders, Mechanism};
use serde::{Deserialize, Serialize};

use super::LabArgs;

/// A starting configuration; every explicit flag overrides it.
#[derive(clap::ValueEnum, Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Preset {
    /// The quick smoke run: 20 MLP teachers, LNMax with Laplace scale 2,
    /// 3,000 queries, supervised student. It gives no meaningful privacy
    /// (data-independent epsilon in the thousands).
    Fast,
    /// A private run after PATE 2018: 250 teachers, Confident-GNMax with
    /// T = 0.8 n, sigma1 = 0.6 n, sigma2 = 0.16 n (the paper's 200/150/40
    /// at n = 250), a data-independent budget of 2 (a guarantee) and a
    /// data-dependent target epsilon of 2, queries over the
    /// whole public pool until the target stops them, MLP teachers trained
    /// for 40 epochs, and a semi-supervised CNN student.
    Private,
}

/// The resolved configuration of one lab run.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Plan {
    /// The preset it started from.
    pub preset: Preset,
    /// Teachers.
    pub teachers: usize,
    /// Queries the student asks (at most the public pool).
    pub queries: usize,
    /// Aggregation mechanism.
    pub mechanism: Mechanism,
    /// The data-independent budget the aggregator enforces.
    pub epsilon_limit: f64,
    /// The data-dependent target epsilon, if any.
    pub target_epsilon: Option<f64>,
    /// Semi-supervised student.
    pub semi_supervised: bool,
    /// Teacher training epochs.
    pub teacher_epochs: usize,
    /// Student training epochs.
    pub student_epochs: usize,
    /// Student architecture.
    pub student_model: ModelKind,
    /// Samples per Label call.
    pub query_batch: usize,
}

impl Plan {
    /// A one-line description for the lab's banner.
    pub fn describe(&self) -> String {
        let m = match self.mechanism {
            Mechanism::LnMax { scale } => format!("LNMax, Laplace scale {scale}"),
            Mechanism::GnMax { sigma } => format!("GNMax, sigma {sigma}"),
            Mechanism::ConfidentGnMax {
                threshold,
                sigma1,
                sigma2,
            } => {
                format!("Confident-GNMax, T {threshold} sigma1 {sigma1} sigma2 {sigma2}")
            }
        };
        let target = self
            .target_epsilon
            .map_or(String::new(), |t| format!(", target epsilon {t}"));
        let semi = if self.semi_supervised {
            ", semi-supervised student"
        } else {
            ""
        };
        format!(
            "{} teachers, {} queries, {m}, budget {}{target}{semi}",
            self.teachers, self.queries, self.epsilon_limit
        )
    }
}

/// Resolves `args` against their preset for a public pool of `pool` items
/// and `classes` classes, and refuses what cannot work: more queries than
/// the pool, a threshold above the teacher count, a target epsilon no query
/// can meet, invalid noise or budget.
pub fn plan(args: &LabArgs, pool: usize, classes: usize) -> anyhow::Result<Plan> {
    let private = args.preset == Preset::Private;
    let teachers = args.teachers.unwrap_or(if private { 250 } else { 20 });
    anyhow::ensure!(teachers > 0, "--teachers must be at least 1");
    let queries = args.queries.unwrap_or(if private { pool } else { 3000.min(pool) });
    anyhow::ensure!(
        queries <= pool,
        "--queries {queries} exceeds the public pool of {pool} items (the test split minus --eval-size {}): lower --queries or --eval-size",
        args.eval_size
    );
    anyhow::ensure!(queries > 0, "--queries must be at least 1");
    let n = teachers as f64;
    let kind = args.mechanism.unwrap_or(if private {
        MechanismKind::ConfidentGnmax
    } else {
        MechanismKind::Lnmax
    });
    let mechanism = match kind {
        MechanismKind::Lnmax => Mechanism::LnMax {
            scale: args.noise_scale,
        },
        MechanismKind::Gnmax => Mechanism::GnMax {
            sigma: args.sigma.unwrap_or(0.16 * n),
        },
        MechanismKind::ConfidentGnmax => Mechanism::ConfidentGnMax {
            threshold: args.threshold.unwrap_or(0.8 * n),
            sigma1: args.sigma1.unwrap_or(0.6 * n),
            sigma2: args.sigma2.unwrap_or(0.16 * n),
        },
    };
    mechanism.validate()?;
    if let Mechanism::ConfidentGnMax { threshold, .. } = mechanism {
        anyhow::ensure!(
            threshold <= n,
            "--threshold {threshold} is above the {teachers} teachers: no vote count can reach it, so almost nothing would be answered"
        );
    }
    let orders = default_orders();
    let epsilon_limit = args.epsilon_limit.unwrap_or(if private { 2.0 } else { 1e6 });
    Budget::new(mechanism, epsilon_limit, args.delta, orders.clone())?;
    let target_epsilon = args.target_epsilon.or(private.then_some(2.0));
    if let Some(t) = target_epsilon {
        DataDependentTarget::new(mechanism, t, args.delta, orders)?.check_reachable(teachers, classes)?;
    }
    Ok(Plan {
        preset: args.preset,
        teachers,
        queries,
        mechanism,
        epsilon_limit,
        target_epsilon,
        semi_supervised: args.semi_supervised.unwrap_or(private),
        teacher_epochs: args.teacher_epochs.unwrap_or(if private { 40 } else { 10 }),
        student_epochs: args.student_epochs.unwrap_or(40),
        // A CNN student costs no privacy and pays on images; 250 CNN
        // teachers would not train in the lab's time on two cores.
        student_model: args.student_model.unwrap_or(if private { ModelKind::Cnn } else { args.model }),
        query_batch: args.query_batch.unwrap_or(if private { 10 } else { 250 }),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(Parser)]
    struct W {
        #[command(flatten)]
        args: LabArgs,
    }

    fn plan_of(flags: &[&str]) -> anyhow::Result<Plan> {
        plan(&W::parse_from(std::iter::once("lab").chain(flags.iter().copied())).args, 9000, 10)
    }

    #[test]
    fn the_defaults_are_the_private_configuration() {
        let p = plan_of(&[]).expect("defaults");
        assert_eq!(p.preset, Preset::Private);
        assert_eq!((p.teachers, p.queries, p.query_batch), (250, 9000, 10));
        assert_eq!(p.mechanism, Mechanism::ConfidentGnMax { threshold: 200.0, sigma1: 150.0, sigma2: 40.0 });
        assert_eq!((p.epsilon_limit, p.target_epsilon), (2.0, Some(2.0)));
        assert!(p.semi_supervised);
        assert_eq!(p.student_model, ModelKind::Cnn);
        let f = plan_of(&["--preset", "fast"]).expect("fast");
        assert_eq!(f.mechanism, Mechanism::LnMax { scale: 2.0 });
        assert_eq!((f.teachers, f.queries, f.epsilon_limit, f.target_epsilon), (20, 3000, 1e6, None));
        assert!(!f.semi_supervised);
        assert_eq!(f.student_model, ModelKind::Mlp);
    }

    #[test]
    fn bad_input_is_refused() {
        let err = |flags: &[&str]| plan_of(flags).expect_err("bad input").to_string();
        assert!(err(&["--queries", "9001"]).contains("exceeds the public pool"));
        assert!(err(&["--teachers", "100", "--threshold", "101"]).contains("above the 100 teachers"));
        assert!(err(&["--target-epsilon", "0.001"]).contains("cannot be met"));
        assert!(err(&["--teachers", "0"]).contains("at least 1"));
    }
}
