//! The teachers' own inference bound on labelling: every teacher of a lab
//! predicts the same query set in this one process, no network, no noise,
//! no ledger. Labels per second can go no faster end to end than this (on
//! the same cores), which is what `pate lab`'s labelling is measured
//! against (docs/BENCHMARKS.md, "Labelling at scale").
//!
//! Run: `PATE_BENCH_TEACHERS=lab-out/teachers cargo bench -p pate-ml
//! --bench ensemble`. Env: `PATE_BENCH_TEACHERS` (a
//! directory of checkpoints `0/`, `1/`, ...: a lab's `teachers/`),
//! `PATE_BENCH_QUERIES` (pool items; default 9,000, the private lab's
//! pool), `PATE_BENCH_BATCHES` (items per predict call, comma-separated;
//! default `10,250,4096`: the private and fast presets' Label batches and
//! one call per teacher), `PATE_BENCH_WORKERS` (threads over teachers;
//! default the cores), `PATE_BENCH_FEATURE_CACHE` (a lab's
//! `data/scatter-*.bin`: scatter teachers then read the pool's features from
//! it, as the lab's teachers do with `--feature-cache`, once asked by the
//! pixels, which each teacher hashes, and once by the images' keys, hashed
//! once beforehand as the aggregator does for a vote by key),
//! `PATE_BENCH_ORDER` (`teachers`, the default: each teacher predicts the
//! whole pool before the next starts; `rounds`: every teacher predicts one
//! call's items before the next call, as the lab's merged rounds ask them,
//! so the call's cached features stay in the CPU's cache from one teacher
//! to the next: a higher bound, docs/BENCHMARKS.md). Each worker runs
//! its share of the teachers one after another in its own one-thread rayon
//! pool, so the cores each run one
//! forward pass at a time, as the lab's teacher processes do (with one
//! shared global pool of one thread, the scattering transform's parallel
//! loop ran every worker's images on that one thread: half the bound on
//! two cores).

use std::path::PathBuf;
use std::time::Instant;

use anyhow::Context;
use pate_ml::data::{load_idx_dir, student_split};
use pate_ml::data_dir::resolve_data_dir;
use pate_ml::feature_cache::{key, FeatureCache};
use pate_ml::train::predict;

fn main() -> anyhow::Result<()> {
    pate_ml::init_cpu_threads();
    let env = |k: &str| std::env::var(k).ok().filter(|v| !v.is_empty());
    let dir =
        PathBuf::from(env("PATE_BENCH_TEACHERS").context("set PATE_BENCH_TEACHERS to a lab's teachers/ directory")?);
    let queries: usize = env("PATE_BENCH_QUERIES").map_or(Ok(9000), |v| v.parse())?;
    let batches: Vec<usize> = env("PATE_BENCH_BATCHES")
        .unwrap_or_else(|| "10,250,4096".into())
        .split(',')
        .map(str::parse)
        .collect::<Result<_, _>>()?;
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    let workers: usize = env("PATE_BENCH_WORKERS").map_or(Ok(cores), |v| v.parse())?;
    let rounds = env("PATE_BENCH_ORDER").is_some_and(|v| v == "rounds");
    let cache = env("PATE_BENCH_FEATURE_CACHE").map(|p| FeatureCache::open(std::path::Path::new(&p))).transpose()?;

    let data = load_idx_dir(&resolve_data_dir(None)?)?;
    let split = student_split(&data.test, 1000)?;
    let pool = split.pool.range(0..queries);
    let mut teachers = Vec::new();
    while dir.join(teachers.len().to_string()).join("meta.json").is_file() {
        let (model, _) = pate_ml::checkpoint::load(&dir.join(teachers.len().to_string()))?;
        teachers.push(model);
    }
    anyhow::ensure!(!teachers.is_empty(), "no checkpoint {}/0/meta.json", dir.display());
    println!(
        "{} teachers from {}, {} queries, {workers} workers of one thread each, features {}",
        teachers.len(),
        dir.display(),
        pool.len(),
        cache.as_ref().map_or("computed per call".into(), |c| format!("read from {}", c.path().display()))
    );
    println!();
    // Asked by key: the keys are computed once, outside the timing.
    let keys: Vec<_> = (0..pool.len()).map(|i| key(pool.item(i))).collect();
    let modes: &[bool] = if cache.is_some() { &[false, true] } else { &[false] };
    println!("| items per predict call | asked by | wall (s) | teacher-predictions/s | labels/s (bound) |");
    println!("|---:|---|---:|---:|---:|");
    for (&batch, &by_key) in batches.iter().flat_map(|b| modes.iter().map(move |m| (b, m))) {
        let started = Instant::now();
        std::thread::scope(|s| -> anyhow::Result<()> {
            let handles: Vec<_> = (0..workers.max(1))
                .map(|w| {
                    let (teachers, pool, cache, keys) = (&teachers, &pool, &cache, &keys);
                    s.spawn(move || -> anyhow::Result<()> {
                        let own = rayon::ThreadPoolBuilder::new().num_threads(1).build()?;
                        own.install(|| -> anyhow::Result<()> {
                            let mine: Vec<_> = teachers.iter().skip(w).step_by(workers.max(1)).collect();
                            let call = |model, start: usize| -> anyhow::Result<()> {
                                let end = (start + batch).min(pool.len());
                                match cache {
                                    Some(c) if by_key => drop(c.predict_keys(model, &keys[start..end])?),
                                    Some(c) => drop(c.predict(model, &pool.range(start..end))?),
                                    None => drop(predict(model, &pool.range(start..end), batch)?),
                                }
                                Ok(())
                            };
                            if rounds {
                                for start in (0..pool.len()).step_by(batch) {
                                    for &model in &mine {
                                        call(model, start)?;
                                    }
                                }
                            } else {
                                for &model in &mine {
                                    for start in (0..pool.len()).step_by(batch) {
                                        call(model, start)?;
                                    }
                                }
                            }
                            Ok(())
                        })
                    })
                })
                .collect();
            for h in handles {
                h.join().map_err(|_| anyhow::anyhow!("worker panicked"))??;
            }
            Ok(())
        })?;
        let secs = started.elapsed().as_secs_f64();
        let n = pool.len() as f64;
        println!(
            "| {batch} | {} | {secs:.2} | {:.0} | {:.0} |",
            if by_key { "keys" } else { "pixels" },
            n * teachers.len() as f64 / secs,
            n / secs
        );
    }
    Ok(())
}
