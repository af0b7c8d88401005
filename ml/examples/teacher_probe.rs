//! Trains the first K teachers of an N-way partition of the training split
//! and prints their mean accuracy on the evaluation items (the last 1,000
//! test items): a quick probe of a teacher configuration before a whole
//! `pate lab` run (docs/PRIVATE_LAB.md lists the probes behind the private
//! preset's teachers).
//!
//! `cargo run --release -p pate-ml --example teacher_probe -- DATA_DIR N K MODEL EPOCHS SHIFT BATCH [LR [WEIGHT_DECAY]]`

use std::time::Instant;

use pate_ml::data::{load_idx_dir, student_split};
use pate_ml::model::ModelKind;
use pate_ml::partition::partition_part;
use pate_ml::train::{accuracy, predict, train, TrainConfig};

fn main() -> anyhow::Result<()> {
    pate_ml::init_cpu_threads();
    let a: Vec<String> = std::env::args().skip(1).collect();
    anyhow::ensure!(a.len() >= 7, "usage: teacher_probe DATA_DIR N K MODEL EPOCHS SHIFT BATCH [LR [WEIGHT_DECAY [FEATURE_L2]]]");
    let data = load_idx_dir(std::path::Path::new(&a[0]))?;
    let (n, k): (usize, usize) = (a[1].parse()?, a[2].parse()?);
    let model: ModelKind = a[3].parse().map_err(|e| anyhow::anyhow!("{e}"))?;
    let default = TrainConfig::default();
    let cfg = TrainConfig {
        epochs: a[4].parse()?,
        max_shift: a[5].parse()?,
        batch_size: a[6].parse()?,
        learning_rate: a.get(7).map_or(Ok(default.learning_rate), |s| s.parse())?,
        weight_decay: a.get(8).map_or(Ok(default.weight_decay), |s| s.parse())?,
        feature_l2: a.get(9).map_or(Ok(default.feature_l2), |s| s.parse())?,
        ..default
    };
    let eval = student_split(&data.test, 1000)?.eval;
    let (mut accs, start) = (Vec::new(), Instant::now());
    let mut votes = vec![vec![0usize; data.num_classes()]; eval.len()];
    for i in 0..k {
        let part = data.train.select(&partition_part(data.train.len(), n, 0, i)?);
        let seeded = TrainConfig { seed: i as u64, ..cfg.clone() };
        let t = train(model, &part, data.num_classes(), &seeded, &mut |_| {})?;
        let pred = predict(&t.model, &eval.images, 500)?;
        pred.iter().zip(&mut votes).for_each(|(&p, v)| v[p as usize] += 1);
        accs.push(accuracy(&pred, &eval.labels));
    }
    let mean = accs.iter().sum::<f64>() / k as f64;
    let sd = (accs.iter().map(|x| (x - mean).powi(2)).sum::<f64>() / (k as f64 - 1.0).max(1.0)).sqrt();
    let plurality: Vec<u8> =
        votes.iter().map(|v| (0..v.len()).max_by_key(|&c| (v[c], std::cmp::Reverse(c))).unwrap_or(0) as u8).collect();
    let consensus = votes.iter().filter(|v| v.iter().max().is_some_and(|&m| m * 5 >= 4 * k)).count();
    println!(
        "vote of the {k}: accuracy {:.4}, items with >= 80% agreement {:.3}",
        accuracy(&plurality, &eval.labels),
        consensus as f64 / eval.len() as f64
    );
    println!(
        "{model} n={n} epochs={} shift={} batch={} lr={} wd={}: mean {mean:.4} sd {sd:.4} over {k}, {:.1}s per teacher",
        cfg.epochs,
        cfg.max_shift,
        cfg.batch_size,
        cfg.learning_rate,
        cfg.weight_decay,
        start.elapsed().as_secs_f64() / k as f64
    );
    Ok(())
}
