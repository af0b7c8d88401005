//! `pate lab`: a whole PATE run on one machine, with every party a real
//! process on a loopback port: teachers trained in parallel, then served;
//! the aggregator; the student. Prints a summary and writes `report.json`.

pub mod ensemble;
pub mod parties;
pub mod procs;

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use pate_ml::data::{load_idx_dir, resolve_data_dir, student_split};
use pate_ml::model::ModelKind;
use pate_ml::train::accuracy;
use serde::{Deserialize, Serialize};

use parties::{AggregatorSettings, Bins, PartyTls, RunDirs};
use procs::{run_bounded, Children};

/// What a lab runs.
#[derive(clap::Args, Debug, Clone)]
pub struct LabArgs {
    /// Directory with the four IDX files [default: $PATE_DATA_DIR, then
    /// /usr/share/datasets/fashion-mnist, then the download cache].
    #[arg(long)]
    pub data: Option<PathBuf>,
    /// Number of teachers (disjoint partitions of the training split).
    #[arg(long, default_value_t = 20, env = "PATE_TEACHERS_N")]
    pub teachers: usize,
    /// Pool items the student asks labels for (capped at the pool's size).
    #[arg(long, default_value_t = 3000, env = "PATE_QUERIES")]
    pub queries: usize,
    /// The last K test items are the student's labelled evaluation set.
    #[arg(long, default_value_t = 1000, env = "PATE_EVAL_SIZE")]
    pub eval_size: usize,
    /// LNMax Laplace scale b (each answer costs 2/b pure epsilon).
    #[arg(long, default_value_t = 2.0, env = "PATE_NOISE_SCALE")]
    pub noise_scale: f64,
    /// Model architecture of teachers and student.
    #[arg(long, default_value = "mlp", env = "PATE_MODEL")]
    pub model: ModelKind,
    /// Teacher training epochs.
    #[arg(long, default_value_t = 10)]
    pub teacher_epochs: usize,
    /// Student training epochs.
    #[arg(long, default_value_t = 40)]
    pub student_epochs: usize,
    /// Privacy budget; queries past it are refused.
    #[arg(long, default_value_t = 1e6, env = "PATE_EPSILON_LIMIT")]
    pub epsilon_limit: f64,
    /// Delta of the reported (epsilon, delta); 0 reports pure epsilon.
    #[arg(long, default_value_t = 1e-5, env = "PATE_DELTA")]
    pub delta: f64,
    /// Seed for partitions, training and query choice.
    #[arg(long, default_value_t = 0, env = "PATE_SEED")]
    pub seed: u64,
    /// Teachers trained at once [default: the number of CPU cores].
    #[arg(long)]
    pub jobs: Option<usize>,
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
    /// Data-independent epsilon spent.
    pub epsilon: f64,
    /// Data-dependent epsilon of the same answers, from the ledger's vote
    /// histograms (for the operator; releasing it exactly leaks, see
    /// `pate privacy report` for the smooth-sensitivity release). Absent
    /// for pure DP (delta 0).
    pub data_dependent_epsilon: Option<f64>,
    /// Delta of that epsilon (0 for pure DP).
    pub delta: f64,
    /// Laplace scale used.
    pub noise_scale: f64,
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

/// `v` as a command-line argument.
pub fn s(v: impl ToString) -> String {
    v.to_string()
}

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
    anyhow::ensure!(args.teachers > 0, "--teachers must be at least 1");
    let bins = Bins::locate(args.bin_dir.as_deref())?;
    let data_dir = resolve_data_dir(args.data.as_deref())?;
    let dd = data_dir.clone();
    let data = tokio::task::spawn_blocking(move || load_idx_dir(&dd)).await??;
    let split = student_split(&data.test, args.eval_size)?;
    anyhow::ensure!(args.teachers <= data.train.len(), "--teachers {} exceeds the {} training items", args.teachers, data.train.len());
    let out = args.out.clone();
    let dirs = RunDirs::create(&out)?;
    let logs = dirs.logs.clone();
    let tls = PartyTls::provision(&out, args.teachers, 1, args.insecure)?;
    println!("pate lab: {} teachers ({}), {} queries, Laplace scale {}, data {}", args.teachers, args.model, args.queries, args.noise_scale, data_dir.display());

    // 1. Train the teachers, bounded by the cores.
    let t = Instant::now();
    let jobs = (0..args.teachers)
        .map(|i| {
            let a = vec![
                s("train"), s("--data"), path_arg(&data_dir), s("--partition"), s(i), s("--partitions"), s(args.teachers),
                s("--partition-seed"), s(args.seed), s("--seed"), s(args.seed + i as u64), s("--model"), s(args.model),
                s("--epochs"), s(args.teacher_epochs), s("--out"), path_arg(&out.join(format!("teachers/{i}"))),
            ];
            (bins.teacher.clone(), a, logs.join(format!("teacher-{i}-train.log")), format!("teacher {i}"))
        })
        .collect();
    let parallel = args.jobs.unwrap_or_else(|| std::thread::available_parallelism().map_or(2, |n| n.get()));
    run_bounded(jobs, parallel, |label, done, total| println!("  [{done:>3}/{total}] trained {label}")).await?;
    let train_teachers_seconds = t.elapsed().as_secs_f64();

    // 2. Serve the teachers, then the aggregator.
    let t = Instant::now();
    let named: Vec<(String, PathBuf)> = (0..args.teachers).map(|i| (format!("teacher-{i}"), out.join(format!("teachers/{i}")))).collect();
    let teacher_addrs = parties::serve_teachers(children, &bins.teacher, &named, &dirs, &tls).await?;
    println!("  {} teachers serving", teacher_addrs.len());
    let settings = AggregatorSettings { noise_scale: args.noise_scale, epsilon_limit: args.epsilon_limit, delta: args.delta };
    let aggregator_addr =
        parties::start_aggregator(children, &bins.aggregator, "aggregator", &teacher_addrs, &out.join("ledger.db"), settings, &dirs, &tls)
            .await?;
    let serve_seconds = t.elapsed().as_secs_f64();
    println!("  aggregator serving on {aggregator_addr}");

    // 3. The operator's noise-free ensemble measurement.
    let t = Instant::now();
    let votes = ensemble::teacher_votes(&teacher_addrs, &split.eval.images, &tls.operator()?).await?;
    let teacher_accuracies: Vec<f64> = votes.iter().map(|v| accuracy(v, &split.eval.labels)).collect();
    let ensemble_accuracy = accuracy(&ensemble::plurality(&votes, data.num_classes()), &split.eval.labels);
    let ensemble_seconds = t.elapsed().as_secs_f64();
    println!("  ensemble accuracy {ensemble_accuracy:.4} (noise-free plurality)");

    // 4. The student, as its own process.
    let t = Instant::now();
    let student_out = out.join("student");
    let a = vec![s("--aggregator"), aggregator_addr.to_string(), s("--data"), path_arg(&data_dir), s("--eval-size"), s(args.eval_size),
        s("--queries"), s(args.queries), s("--seed"), s(args.seed), s("--model"), s(args.model), s("--epochs"), s(args.student_epochs),
        s("--out"), path_arg(&student_out)];
    let sr = parties::run_student(children, &bins.student, &a, &student_out, &logs.join("student.log"), &tls).await?;
    let student_seconds = t.elapsed().as_secs_f64();
    let ledger = crate::privacy::ledger_report(&out.join("ledger.db"), args.delta, pate_privacy::Conversion::Classic)?;

    let report = LabReport {
        num_teachers: args.teachers,
        queries_asked: sr.queries_asked,
        queries_answered: sr.queries_answered,
        epsilon: sr.epsilon,
        data_dependent_epsilon: ledger.data_dependent_epsilon,
        delta: sr.delta,
        noise_scale: args.noise_scale,
        student_accuracy: sr.student_accuracy,
        ensemble_accuracy,
        teacher_accuracies,
        label_accuracy: sr.label_accuracy,
        model: args.model.to_string(),
        train_teachers_seconds,
        serve_seconds,
        ensemble_seconds,
        student_seconds,
        student_query_seconds: sr.query_seconds,
        student_train_seconds: sr.train_seconds,
        total_seconds: started.elapsed().as_secs_f64(),
    };
    std::fs::write(out.join("report.json"), serde_json::to_vec_pretty(&report)?)?;
    print_summary(&report, &out);
    Ok(report)
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
    println!("  {:<34} {:>12}", "epsilon (data-independent)", format!("{:.2}", r.epsilon));
    if let Some(eps) = r.data_dependent_epsilon {
        println!("  {:<34} {:>12}", "epsilon (data-dependent, operator)", format!("{eps:.2}"));
    }
    println!("  {:<34} {:>12}", "delta", format!("{:e}", r.delta));
    println!("  {:<34} {:>12}", "wall time (s)", format!("{:.1}", r.total_seconds));
    println!("\n  report: {}", out.join("report.json").display());
}
