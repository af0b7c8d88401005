//! `pate deploy report`: the `report.json` of a compose run, with the keys
//! of `pate lab`'s ([`crate::lab::LabReport`]). scripts/compose-lab.sh copies
//! out of the containers what the parties left: the student's report, the
//! ledger and the teachers' checkpoints; this command adds the operator's
//! noise-free measurement (each teacher checkpoint and their plurality on
//! the evaluation set, computed here offline, so no network path to a
//! teacher is ever opened for it) and the ledger's data-dependent epsilon.

use std::path::PathBuf;

use anyhow::Context;
use pate_ml::data::{load_idx_dir, student_split};
use pate_ml::train::predict;

use super::Settings;
use crate::lab::preset::{Plan, Preset};
use crate::lab::report::{EnsembleScores, Timings};
use crate::lab::LabReport;

/// `pate deploy report` flags.
#[derive(clap::Args, Debug, Clone)]
pub struct ReportArgs {
    #[command(flatten)]
    pub settings: Settings,
    /// The output directory of scripts/compose-lab.sh: the project under
    /// compose/ (its data/student/ holds the evaluation set), and what was
    /// collected under collected/ (student/report.json, ledger/ledger.db,
    /// teachers/<i>/).
    #[arg(long)]
    pub dir: PathBuf,
    /// Wall seconds the teachers' training took.
    #[arg(long, default_value_t = 0.0)]
    pub train_seconds: f64,
    /// Wall seconds from training done to the aggregator serving.
    #[arg(long, default_value_t = 0.0)]
    pub serve_seconds: f64,
    /// Wall seconds the student's container ran.
    #[arg(long, default_value_t = 0.0)]
    pub student_seconds: f64,
    /// Wall seconds of the whole run.
    #[arg(long, default_value_t = 0.0)]
    pub total_seconds: f64,
}

/// Runs `pate deploy report`; prints and writes DIR/report.json.
pub fn run(args: &ReportArgs) -> anyhow::Result<()> {
    let st = &args.settings;
    let collected = args.dir.join("collected");
    let path = collected.join("student/report.json");
    let sr: pate_student::StudentReport =
        serde_json::from_slice(&std::fs::read(&path).with_context(|| format!("reading {}", path.display()))?)
            .with_context(|| format!("parsing {}", path.display()))?;
    let data_dir = args.dir.join("compose/data/student");
    let data = load_idx_dir(&data_dir).with_context(|| format!("loading {}", data_dir.display()))?;
    let split = student_split(&data.test, st.eval_size)?;

    let t = std::time::Instant::now();
    let mut votes = Vec::with_capacity(st.teachers);
    for i in 0..st.teachers {
        let ckpt = collected.join(format!("teachers/{i}"));
        let (model, _) = pate_ml::checkpoint::load(&ckpt).with_context(|| format!("loading teacher checkpoint {}", ckpt.display()))?;
        votes.push(predict(&model, &split.eval.images, 512)?);
    }
    let scores = EnsembleScores::of(&votes, &split.eval.labels, data.num_classes());
    let ensemble_seconds = t.elapsed().as_secs_f64();
    let ledger = crate::privacy::ledger_report(&collected.join("ledger/ledger.db"), st.delta, pate_privacy::Conversion::Classic)?;

    // The compose lab runs LNMax (pure epsilon per answer, no release):
    // its guarantee is the data-independent bound.
    let plan = Plan {
        preset: Preset::Fast,
        teachers: st.teachers,
        queries: st.queries,
        mechanism: pate_privacy::Mechanism::LnMax { scale: st.noise_scale },
        epsilon_limit: st.epsilon_limit,
        target_epsilon: None,
        semi_supervised: false,
        model: st.model,
        teacher_epochs: st.teacher_epochs,
        teacher_shift: 0,
        teacher_batch: pate_ml::train::TrainConfig::default().batch_size,
        teacher_lr: pate_ml::train::TrainConfig::default().learning_rate,
        teacher_feature_l2: 0.0,
        student_epochs: st.student_epochs,
        student_model: st.model,
        query_batch: st.query_batch,
        rank_after: 0,
    };
    let times = Timings {
        train_teachers: args.train_seconds,
        serve: args.serve_seconds,
        ensemble: ensemble_seconds,
        student: args.student_seconds,
        total: args.total_seconds,
    };
    let report = LabReport::assemble(plan, st.model, &sr, &ledger, None, scores, times);
    let out = args.dir.join("report.json");
    std::fs::write(&out, serde_json::to_vec_pretty(&report)?).with_context(|| format!("writing {}", out.display()))?;
    crate::lab::print_summary(&report, &args.dir);
    Ok(())
}
