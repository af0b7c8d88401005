//! Training and inference throughput of the MLP and CNN on Fashion-MNIST.
//!
//! Run: `cargo bench -p pate-ml --bench train` (all cases) or with filters,
//! e.g. `cargo bench -p pate-ml --bench train -- mlp-6k cnn-6k`. Set
//! `PATE_BENCH_EPOCHS=N` / `PATE_BENCH_BATCH=N` to override the epoch count
//! and batch size of `TrainConfig::default()`. The data is found as
//! `pate_ml::data_dir::resolve_data_dir(None)` finds it. Results go to stdout as
//! a Markdown table.

use std::time::Instant;

use pate_ml::data::load_idx_dir;
use pate_ml::data_dir::resolve_data_dir;
use pate_ml::model::ModelKind;
use pate_ml::partition::partition;
use pate_ml::train::{accuracy, predict, train, TrainConfig};

struct Case {
    name: &'static str,
    kind: ModelKind,
    /// 0 = the whole training split; else partition 0 of `parts`.
    parts: usize,
}

const CASES: [Case; 4] = [
    Case {
        name: "mlp-6k",
        kind: ModelKind::Mlp,
        parts: 10,
    },
    Case {
        name: "mlp-60k",
        kind: ModelKind::Mlp,
        parts: 0,
    },
    Case {
        name: "cnn-6k",
        kind: ModelKind::Cnn,
        parts: 10,
    },
    Case {
        name: "cnn-60k",
        kind: ModelKind::Cnn,
        parts: 0,
    },
];

fn main() -> anyhow::Result<()> {
    pate_ml::init_cpu_threads();
    let filters: Vec<String> = std::env::args().skip(1).filter(|a| !a.starts_with("--")).collect();
    let dir = resolve_data_dir(None)?;
    let data = load_idx_dir(&dir)?;
    let classes = data.train.num_classes();
    let mut cfg = TrainConfig::default();
    let env = |k: &str| std::env::var(k).ok().and_then(|v| v.parse::<usize>().ok());
    if let Some(e) = env("PATE_BENCH_EPOCHS") {
        cfg.epochs = e;
    }
    if let Some(b) = env("PATE_BENCH_BATCH") {
        cfg.batch_size = b;
    }
    println!(
        "data: {} ({} train, {} test), config: {cfg:?}",
        dir.display(),
        data.train.len(),
        data.test.len()
    );
    println!(
        "threads: {}",
        std::env::var("RAYON_NUM_THREADS").unwrap_or_else(|_| "default (all cores)".into())
    );
    println!();
    println!(
        "| case | items | epochs | train time (s) | train samples/s (mean) | test accuracy | inference samples/s |"
    );
    println!("|---|---:|---:|---:|---:|---:|---:|");
    for case in CASES
        .iter()
        .filter(|c| filters.is_empty() || filters.iter().any(|f| c.name.contains(f.as_str())))
    {
        let ds = if case.parts == 0 {
            data.train.clone()
        } else {
            data.train.select(&partition(data.train.len(), case.parts, 0)?[0])
        };
        let start = Instant::now();
        let mut rates = Vec::new();
        let trained = train(case.kind, &ds, classes, &cfg, &mut |r| {
            eprintln!(
                "{} epoch {}: loss {:.4} train acc {:.4} {:.0} samples/s",
                case.name, r.epoch, r.loss, r.train_accuracy, r.samples_per_sec
            );
            rates.push(r.samples_per_sec);
        })?;
        let secs = start.elapsed().as_secs_f64();
        let t0 = Instant::now();
        let pred = predict(&trained.model, &data.test.images, 1000)?;
        let infer = data.test.len() as f64 / t0.elapsed().as_secs_f64();
        let mean_rate = (ds.len() * cfg.epochs) as f64 / secs;
        println!(
            "| {} | {} | {} | {:.1} | {:.0} | {:.4} | {:.0} |",
            case.name,
            ds.len(),
            cfg.epochs,
            secs,
            mean_rate,
            accuracy(&pred, &data.test.labels),
            infer
        );
    }
    Ok(())
}
