//! Trains a student again on the answers a finished run recorded
//! (`answers.json` in the student's `--out`), with any student flags: the
//! cheap way to compare student configurations on the same labels, since
//! nothing is asked of an aggregator and no privacy is spent.
//!
//! `cargo run --release -p pate-student --example student_probe -- \
//!     --answers lab-out/student/answers.json --model cnn --semi-supervised --epochs 80`
//!
//! Prints one JSON line: the flags that matter, label accuracy, student
//! accuracy on the evaluation items, and seconds.

use std::path::PathBuf;

use anyhow::Context;
use clap::Parser;
use pate_ml::data::{load_idx_dir, student_split, Dataset};
use pate_ml::data_dir::resolve_data_dir;
use pate_ml::train::accuracy;
use pate_student::{train_student, Answers, Config};

#[derive(Parser)]
struct Args {
    /// The recorded answers (a student's answers.json).
    #[arg(long)]
    answers: PathBuf,
    #[command(flatten)]
    student: Config,
}

fn main() -> anyhow::Result<()> {
    pate_ml::init_cpu_threads();
    let args = Args::parse();
    let config = args.student;
    let data = load_idx_dir(&resolve_data_dir(config.data.as_deref())?)?;
    let split = student_split(&data.test, config.eval_size)?;
    let answers: Answers = serde_json::from_slice(
        &std::fs::read(&args.answers).with_context(|| format!("reading {}", args.answers.display()))?,
    )?;
    anyhow::ensure!(
        answers.pool_index.iter().all(|&i| i < split.pool.len()) && answers.pool_index.len() == answers.label.len(),
        "answers do not fit this data set's pool"
    );
    let train_set = Dataset {
        images: split.pool.select(&answers.pool_index),
        labels: answers.label.clone(),
    };
    let truth: Vec<u8> = answers.pool_index.iter().map(|&i| split.pool_labels[i]).collect();
    let start = std::time::Instant::now();
    let (_, acc) = train_student(
        &config,
        &train_set,
        &split.pool,
        &answers.pool_index,
        &split.eval,
        data.num_classes(),
        None,
    )?;
    println!(
        "{}",
        serde_json::json!({
            "model": config.model.to_string(), "epochs": config.epochs, "semi": config.semi_supervised,
            "lr": config.learning_rate, "flip": config.flip, "contrast": config.strong_contrast,
            "noise": config.strong_noise, "average": config.average, "cosine": config.cosine,
            "confidence": config.pseudo_confidence, "smoothing": config.label_smoothing, "seed": config.seed,
            "answers": answers.label.len(), "label_accuracy": accuracy(&answers.label, &truth),
            "student_accuracy": acc, "seconds": start.elapsed().as_secs_f64(),
        })
    );
    Ok(())
}
