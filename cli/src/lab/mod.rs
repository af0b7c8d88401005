//! `pate lab`: a whole PATE run on one machine, with every party a real
//! process on a loopback port: teachers trained in parallel, then served;
//! the aggregator; the student. Prints a summary and writes `report.json`.

pub mod ensemble;
pub mod parties;
pub mod preset;
pub mod procs;
pub mod report;
pub mod workers;

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use pate_ml::data::student_split;
use pate_ml::data_dir::resolve_data_dir;
use pate_ml::decoded::decoded_copy;
use pate_ml::model::ModelKind;
use serde::{Deserialize, Serialize};

use parties::{AggregatorSettings, Bins, PartyTls, RunDirs};
use pate_privacy::MechanismKind;
use pate_privacy::release::ReleaseParams;
use pate_privacy::Mechanism;
use preset::{Plan, Preset};
use procs::{run_bounded, Children};
use report::{EnsembleScores, Timings};
use workers::Concurrency;

use crate::progress::Bar;

/// What a lab runs.
#[derive(clap::Args, Debug, Clone)]
pub struct LabArgs {
    /// Directory with the four IDX files [default: $PATE_DATA_DIR, then
    /// /usr/share/datasets/fashion-mnist, then the download cache].
    #[arg(long)]
    pub data: Option<PathBuf>,
    /// Starting configuration: private (250 teachers on fixed scattering
    /// features, Confident-GNMax,
    /// a data-dependent target epsilon, semi-supervised CNN student; see
    /// docs/PRIVATE_LAB.md) or fast (quick, not private: smoke tests).
    /// Explicit flags override it.
    #[arg(long, value_enum, default_value = "private", env = "PATE_PRESET")]
    pub preset: Preset,
    /// Number of teachers (disjoint partitions of the training split) [fast: 20, private: 250].
    #[arg(long, env = "PATE_TEACHERS_N")]
    pub teachers: Option<usize>,
    /// Pool items the student asks labels for [fast: 3000, private: the whole pool]; more than the pool is an error.
    #[arg(long, env = "PATE_QUERIES")]
    pub queries: Option<usize>,
    /// The last K test items are the student's labelled evaluation set.
    #[arg(long, default_value_t = 1000, env = "PATE_EVAL_SIZE")]
    pub eval_size: usize,
    /// Aggregation mechanism [fast: lnmax, private: confident-gnmax].
    #[arg(long, value_enum, env = "PATE_MECHANISM")]
    pub mechanism: Option<MechanismKind>,
    /// LNMax Laplace scale b (each answer costs 2/b pure epsilon).
    #[arg(long, default_value_t = 2.0, env = "PATE_NOISE_SCALE")]
    pub noise_scale: f64,
    /// GNMax noise [default: 0.16 x teachers].
    #[arg(long, env = "PATE_SIGMA")]
    pub sigma: Option<f64>,
    /// Confident-GNMax threshold on the top vote count [default: 0.8 x teachers].
    #[arg(long, env = "PATE_THRESHOLD")]
    pub threshold: Option<f64>,
    /// Confident-GNMax noise of the threshold check [default: 0.6 x teachers].
    #[arg(long, env = "PATE_SIGMA1")]
    pub sigma1: Option<f64>,
    /// Confident-GNMax noise of the answer [default: 0.16 x teachers].
    #[arg(long, env = "PATE_SIGMA2")]
    pub sigma2: Option<f64>,
    /// Stop answering once the data-dependent epsilon could pass this [fast: none, private: 1.4, which releases at about 1.75].
    #[arg(long, env = "PATE_TARGET_EPSILON")]
    pub target_epsilon: Option<f64>,
    /// Semi-supervised student (consistency loss on the unlabelled pool) [fast: false, private: true].
    #[arg(long, num_args = 0..=1, default_missing_value = "true", env = "PATE_SEMI_SUPERVISED")]
    pub semi_supervised: Option<bool>,
    /// Samples per Label call of the student [fast: 250, private: 10: the budget reserves a whole batch's worst case, so small batches waste less of it].
    #[arg(long, env = "PATE_QUERY_BATCH")]
    pub query_batch: Option<usize>,
    /// Model architecture of the teachers (and of the student in `fast`
    /// unless --student-model): mlp, cnn, or scatter (a linear classifier on
    /// fixed wavelet scattering features: privacy-free features for small
    /// partitions) [fast: mlp, private: scatter].
    #[arg(long, env = "PATE_MODEL")]
    pub model: Option<ModelKind>,
    /// Model architecture of the student [fast: --model, private: cnn].
    #[arg(long, env = "PATE_STUDENT_MODEL")]
    pub student_model: Option<ModelKind>,
    /// Teacher training epochs [fast: 10, private: 300 (full-batch steps of the linear classifier)].
    #[arg(long)]
    pub teacher_epochs: Option<usize>,
    /// Shift augmentation of the teachers, in pixels (each training item
    /// moved by up to this much along both axes, anew every epoch) [default: 0].
    #[arg(long, env = "PATE_TEACHER_SHIFT")]
    pub teacher_shift: Option<usize>,
    /// Teacher minibatch size [fast: 128, private: 256, i.e. the whole partition of 240 items].
    #[arg(long, env = "PATE_TEACHER_BATCH")]
    pub teacher_batch: Option<usize>,
    /// Teacher AdamW learning rate [fast: 0.001, private: 0.03].
    #[arg(long, env = "PATE_TEACHER_LR")]
    pub teacher_lr: Option<f64>,
    /// Scatter teachers: standardise the features on each partition and
    /// penalise the head's squared weights by this (0 = raw features, no
    /// penalty; 0.007 is sklearn's C = 0.3 on 240 items) [default: 0:
    /// on Fashion-MNIST it raised the vote a point but lowered consensus,
    /// so fewer queries were answered; docs/PRIVATE_LAB.md].
    #[arg(long, env = "PATE_TEACHER_FEATURE_L2")]
    pub teacher_feature_l2: Option<f64>,
    /// Student training epochs [fast: 40, private: 200; a semi-supervised epoch is a pass over the unlabelled pool].
    #[arg(long)]
    pub student_epochs: Option<usize>,
    /// The student asks its first N queries in random order, then the rest
    /// of the pool surest first (ranked by a linear model on scattering
    /// features trained on the answers; no privacy cost) [default: 0, all
    /// random: on Fashion-MNIST ranking doubled the answers at the same
    /// epsilon but gave a worse student; docs/PRIVATE_LAB.md].
    #[arg(long, env = "PATE_RANK_AFTER")]
    pub rank_after: Option<usize>,
    /// Data-independent privacy budget at --delta; queries that could pass
    /// it are refused [fast: 1e6, private: 8, a guarantee whatever the
    /// votes; the target stops the private run long before it binds].
    #[arg(long, env = "PATE_EPSILON_LIMIT")]
    pub epsilon_limit: Option<f64>,
    /// Delta of the reported (epsilon, delta); 0 reports pure epsilon.
    #[arg(long, default_value_t = 1e-5, env = "PATE_DELTA")]
    pub delta: f64,
    /// Seed for partitions, training and query choice.
    #[arg(long, default_value_t = 0, env = "PATE_SEED")]
    pub seed: u64,
    /// Teachers trained at once [default: the number of CPU cores]; the
    /// cores are shared out among them (RAYON_NUM_THREADS of each process).
    #[arg(long, env = "PATE_JOBS")]
    pub jobs: Option<usize>,
    /// Keep every teacher already trained under `<out>/teachers/<i>` (a
    /// checkpoint with its meta.json) instead of training it again: for
    /// re-running the aggregation and the student on the same teachers.
    /// Nothing checks that they were trained with today's flags, and
    /// `train_teachers_seconds` covers only the ones trained now.
    #[arg(long)]
    pub reuse_teachers: bool,
    /// Where the teacher, aggregator and student binaries are [default: beside `pate`].
    #[arg(long, env = "PATE_BIN_DIR")]
    pub bin_dir: Option<PathBuf>,
    /// Output directory: checkpoints, logs, ledger, certificates, report.json.
    #[arg(long, default_value = "lab-out")]
    pub out: PathBuf,
    /// Run every link in plaintext, without certificates or roles (by
    /// default the lab provisions a CA and one certificate per party under
    /// `<out>/certs` and runs mutual TLS everywhere).
    #[arg(long)]
    pub insecure: bool,
}

/// The lab's `report.json`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct LabReport {
    /// Teachers in the ensemble.
    pub num_teachers: usize,
    /// Queries the student asked.
    pub queries_asked: usize,
    /// Queries answered with a label.
    pub queries_answered: usize,
    /// The guarantee this run stands behind, at `delta`: the smaller of
    /// `epsilon_released` and `epsilon_data_independent`.
    pub epsilon: f64,
    /// Data-independent epsilon of the answers (what the aggregator's
    /// budget enforces): a guarantee that depends on nothing but the
    /// mechanism and the number of answers.
    pub epsilon_data_independent: f64,
    /// Data-dependent epsilon of the same answers, from the ledger's vote
    /// histograms with the integer noise actually drawn: NOT a guarantee by
    /// itself (it depends on the votes; publishing it exactly leaks).
    /// Absent for pure DP (delta 0).
    pub epsilon_data_dependent: Option<f64>,
    /// The data-dependent epsilon released with smooth sensitivity (one
    /// draw, PATE 2018 appendix C), including the cost of the release: a
    /// guarantee. Absent for LNMax, pure DP, or when no query was answered.
    pub epsilon_released: Option<f64>,
    /// The parameters of that release (order, beta, noise).
    pub release: Option<ReleaseParams>,
    /// Delta of every epsilon here (0 for pure DP).
    pub delta: f64,
    /// The resolved configuration (preset, mechanism, target, student).
    pub plan: Plan,
    /// Queries refused (budget or target).
    pub queries_refused: usize,
    /// Student accuracy on the evaluation set.
    pub student_accuracy: f64,
    /// Noise-free plurality vote of all teachers on the evaluation set.
    pub ensemble_accuracy: f64,
    /// Each teacher's accuracy on the evaluation set.
    pub teacher_accuracies: Vec<f64>,
    /// Share of released labels that were correct.
    pub label_accuracy: f64,
    /// Model architecture.
    pub model: String,
    /// Wall seconds training the teachers.
    pub train_teachers_seconds: f64,
    /// Wall seconds starting the servers.
    pub serve_seconds: f64,
    /// Wall seconds measuring the ensemble.
    pub ensemble_seconds: f64,
    /// Wall seconds of the student (querying and training).
    pub student_seconds: f64,
    /// Student time spent querying.
    pub student_query_seconds: f64,
    /// Student time spent training.
    pub student_train_seconds: f64,
    /// Wall seconds of the whole lab.
    pub total_seconds: f64,
}

/// A child process's arguments: `argv!["--seed", 7, path_arg(&dir)]` is
/// a `Vec<String>` of each item's `to_string()` (a path goes through
/// [`path_arg`] first).
macro_rules! argv {
    ($($arg:expr),* $(,)?) => {
        vec![$(::std::string::ToString::to_string(&$arg)),*]
    };
}
pub(crate) use argv;

/// A path as a command-line argument.
pub fn path_arg(p: &Path) -> String {
    p.display().to_string()
}

/// Runs the lab; children are killed when it returns, whatever happens.
pub async fn run(args: LabArgs) -> anyhow::Result<LabReport> {
    let mut children = Children::default();
    let result = tokio::select! {
        r = run_inner(&args, &mut children) => r,
        _ = pate_proto::runtime::shutdown_signal() => Err(anyhow::anyhow!("interrupted")),
    };
    children.shutdown().await;
    result
}

async fn run_inner(args: &LabArgs, children: &mut Children) -> anyhow::Result<LabReport> {
    let started = Instant::now();
    let bins = Bins::locate(args.bin_dir.as_deref())?;
    let data_dir = resolve_data_dir(args.data.as_deref())?;
    // Decoded once here; every teacher and the student read the raw copy.
    let (dd, root) = (data_dir.clone(), args.out.join("data"));
    let decoded = tokio::task::spawn_blocking(move || decoded_copy(&dd, &root)).await??;
    let (child_data, data) = (decoded.dir, decoded.data);
    let split = student_split(&data.test, args.eval_size)?;
    // Every bad input is refused here, before any teacher is trained.
    let plan = preset::plan(args, split.pool.len(), data.num_classes())?;
    anyhow::ensure!(plan.teachers <= data.train.len(), "--teachers {} exceeds the {} training items", plan.teachers, data.train.len());
    let out = args.out.clone();
    let dirs = RunDirs::create(&out)?;
    let logs = dirs.logs.clone();
    let tls = PartyTls::provision(&out, plan.teachers, 1, args.insecure)?;
    println!("pate lab ({:?}): {} ({} teachers, {} student), data {}", plan.preset, plan.describe(), plan.model, plan.student_model, data_dir.display());

    // 1. Train the teachers, bounded by the cores.
    let t = Instant::now();
    let trained = |i: usize| args.reuse_teachers && out.join(format!("teachers/{i}/meta.json")).is_file();
    let reused = (0..plan.teachers).filter(|&i| trained(i)).count();
    if reused > 0 {
        println!("  reusing {reused} teachers already trained under {}", out.join("teachers").display());
    }
    let jobs: Vec<_> = (0..plan.teachers)
        .filter(|&i| !trained(i))
        .map(|i| {
            let a = argv![
                "train", "--data", path_arg(&child_data), "--partition", i, "--partitions", plan.teachers,
                "--partition-seed", args.seed, "--seed", args.seed + i as u64, "--model", plan.model,
                "--epochs", plan.teacher_epochs, "--max-shift", plan.teacher_shift, "--batch-size", plan.teacher_batch,
                "--learning-rate", plan.teacher_lr, "--feature-l2", plan.teacher_feature_l2,
                "--out", path_arg(&out.join(format!("teachers/{i}"))),
            ];
            (bins.teacher.clone(), a, logs.join(format!("teacher-{i}-train.log")), format!("teacher {i}"))
        })
        .collect();
    let plan_procs = Concurrency::on_this_machine(args.jobs, jobs.len());
    if !jobs.is_empty() {
        println!("  training {} teachers, {} at once, {} thread(s) each", jobs.len(), plan_procs.processes, plan_procs.threads);
    }
    let bar = Bar::teachers(jobs.len());
    run_bounded(jobs, plan_procs, |label, done, total| bar.step(format_args!("  [{done:>3}/{total}] trained {label}"))).await?;
    drop(bar);
    let train_teachers_seconds = t.elapsed().as_secs_f64();

    // 2. Serve the teachers, then the aggregator.
    let t = Instant::now();
    let named: Vec<(String, PathBuf)> = (0..plan.teachers).map(|i| (format!("teacher-{i}"), out.join(format!("teachers/{i}")))).collect();
    // Scatter teachers: the public images' features computed once here, not
    // once per teacher process (they are a fixed function of public pixels).
    let cache = if plan.model == ModelKind::Scatter {
        let (root, public) = (out.join("data"), data.test.images.clone());
        let (cache, built) =
            tokio::task::spawn_blocking(move || pate_ml::feature_cache::FeatureCache::shared(&root, &public)).await??;
        if built {
            println!("  scattering features of {} public images computed once for all teachers", cache.len());
        }
        Some(cache.path().to_path_buf())
    } else {
        None
    };
    let teacher_addrs = parties::serve_teachers(children, &bins.teacher, &named, &dirs, &tls, cache.as_deref()).await?;
    println!("  {} teachers serving", teacher_addrs.len());
    let settings = AggregatorSettings {
        mechanism: plan.mechanism,
        epsilon_limit: plan.epsilon_limit,
        delta: args.delta,
        target_epsilon: plan.target_epsilon,
    };
    let aggregator_addr =
        parties::start_aggregator(children, &bins.aggregator, "aggregator", &teacher_addrs, &out.join("ledger.db"), settings, &dirs, &tls)
            .await?;
    let serve_seconds = t.elapsed().as_secs_f64();
    println!("  aggregator serving on {aggregator_addr}");

    // 3. The operator's noise-free ensemble measurement.
    let t = Instant::now();
    let votes = ensemble::teacher_votes(&teacher_addrs, &split.eval.images, &tls.operator()?).await?;
    let scores = EnsembleScores::of(&votes, &split.eval.labels, data.num_classes());
    let ensemble_seconds = t.elapsed().as_secs_f64();
    println!("  ensemble accuracy {:.4} (noise-free plurality)", scores.ensemble_accuracy);

    // 4. The student, as its own process.
    let t = Instant::now();
    let student_out = out.join("student");
    let mut a = argv!["--aggregator", aggregator_addr, "--data", path_arg(&child_data), "--eval-size", args.eval_size,
        "--queries", plan.queries, "--query-batch", plan.query_batch, "--seed", args.seed, "--model", plan.student_model,
        "--epochs", plan.student_epochs, "--rank-after", plan.rank_after, "--out", path_arg(&student_out)];
    if plan.semi_supervised {
        a.push("--semi-supervised".to_string());
    }
    let sr = parties::run_student(children, &bins.student, &a, &student_out, &logs.join("student.log"), &tls).await?;
    let student_seconds = t.elapsed().as_secs_f64();
    let ledger = crate::privacy::ledger_report(&out.join("ledger.db"), args.delta, pate_privacy::Conversion::Classic)?;
    let released = released_epsilon(&plan.mechanism, ledger.analysis.as_ref())?;

    let times = Timings {
        train_teachers: train_teachers_seconds,
        serve: serve_seconds,
        ensemble: ensemble_seconds,
        student: student_seconds,
        total: started.elapsed().as_secs_f64(),
    };
    let report = LabReport::assemble(plan.clone(), plan.model, &sr, &ledger, released, scores, times);
    std::fs::write(out.join("report.json"), serde_json::to_vec_pretty(&report)?)?;
    print_summary(&report, &out);
    Ok(report)
}

/// Draws the released epsilon once (each draw is a release and costs its
/// share: the lab draws exactly one and records it), from the ledger's
/// analysis; `None` for LNMax or when there is nothing to release.
fn released_epsilon(m: &Mechanism, analysis: Option<&pate_privacy::AnalysisReport>) -> anyhow::Result<Option<(f64, ReleaseParams)>> {
    if matches!(m, Mechanism::LnMax { .. }) {
        return Ok(None);
    }
    let Some(p) = analysis.and_then(|a| a.release.clone()) else { return Ok(None) };
    Ok(Some((pate_privacy::release::draw_released(&p)?, p)))
}

/// Resolves with an error as soon as a server child dies.
pub(crate) async fn watch(children: &mut Children) -> anyhow::Error {
    loop {
        if let Err(e) = children.check_alive() {
            return e;
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

pub(crate) fn print_summary(r: &LabReport, out: &Path) {
    let mean = r.teacher_accuracies.iter().sum::<f64>() / r.teacher_accuracies.len().max(1) as f64;
    println!();
    println!("  {:<34} {:>12}", "teachers", r.num_teachers);
    println!("  {:<34} {:>12.4}", "mean teacher accuracy", mean);
    println!("  {:<34} {:>12.4}", "ensemble accuracy (noise-free)", r.ensemble_accuracy);
    println!("  {:<34} {:>12}", "queries answered / asked", format!("{}/{}", r.queries_answered, r.queries_asked));
    println!("  {:<34} {:>12.4}", "released label accuracy", r.label_accuracy);
    println!("  {:<34} {:>12.4}", "student accuracy", r.student_accuracy);
    println!("  {:<34} {:>12}", "epsilon (data-independent)", format!("{:.2}", r.epsilon_data_independent));
    if let Some(eps) = r.epsilon_data_dependent {
        println!("  {:<34} {:>12}", "epsilon (data-dependent, operator)", format!("{eps:.2}"));
    }
    if let Some(eps) = r.epsilon_released {
        println!("  {:<34} {:>12}", "epsilon (released, smooth sens.)", format!("{eps:.2}"));
    }
    println!("  {:<34} {:>12}", "epsilon (guarantee)", format!("{:.2}", r.epsilon));
    println!("  {:<34} {:>12}", "delta", format!("{:e}", r.delta));
    println!("  {:<34} {:>12}", "wall time (s)", format!("{:.1}", r.total_seconds));
    println!("\n  report: {}", out.join("report.json").display());
}
