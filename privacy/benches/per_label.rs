//! The aggregator's fixed CPU cost per label, outside the teachers and the
//! network: drawing the exact noise (OpenDP's samplers, from OpenSSL's
//! generator in the default build) and the data-dependent target's
//! reservation and settling. Single thread, so wall time is CPU time.
//!
//! ```text
//! cargo bench -p pate-privacy --bench per_label
//! ```
//!
//! It is the floor under issue 11's labelling ratio: every label costs at
//! least this much beside the teachers' inference, on the same cores.
//! Histograms are 250 teachers' votes over 10 classes, a clear and a split
//! one in turn. `PATE_BENCH_QUERIES` (20000) sets the draws per case,
//! `PATE_BENCH_REPS` (3) the repetitions (the fastest is reported).

use std::hint::black_box;
use std::time::Instant;

use pate_privacy::noise::{NoisyMax, NOISE_SOURCE};
use pate_privacy::target::DataDependentTarget;
use pate_privacy::{default_orders, Mechanism};

const HISTOGRAMS: [[u32; 10]; 2] = [
    [190, 25, 10, 8, 5, 4, 3, 2, 2, 1],
    [80, 70, 40, 20, 15, 10, 6, 4, 3, 2],
];

/// The scale runs' setting: every query passes the screen (11 draws), and
/// the target's case reserves against it too.
const EVERY_QUERY_PASSES: Mechanism = Mechanism::ConfidentGnMax { threshold: 1.0, sigma1: 1.0, sigma2: 40.0 };

fn env(name: &str, default: usize) -> usize {
    std::env::var(name).ok().and_then(|v| v.parse().ok()).unwrap_or(default)
}

/// The fastest of `reps` timings of `f`, in microseconds per query.
fn best_us(reps: usize, queries: usize, mut f: impl FnMut()) -> f64 {
    (0..reps.max(1))
        .map(|_| {
            let start = Instant::now();
            f();
            start.elapsed().as_secs_f64() * 1e6 / queries as f64
        })
        .fold(f64::INFINITY, f64::min)
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let queries = env("PATE_BENCH_QUERIES", 20_000);
    let reps = env("PATE_BENCH_REPS", 3);
    println!("noise source: {NOISE_SOURCE}; {queries} queries per case, best of {reps}");
    println!("{:<66} {:>12}", "case", "us / query");
    let cases = [
        ("GNMax sigma 40 (10 draws)", Mechanism::GnMax { sigma: 40.0 }),
        ("Confident-GNMax 1 / 1 / 40 (every query passes: 11 draws)", EVERY_QUERY_PASSES),
        (
            "Confident-GNMax 200 / 150 / 40 (the private preset)",
            Mechanism::ConfidentGnMax { threshold: 200.0, sigma1: 150.0, sigma2: 40.0 },
        ),
        ("LNMax scale 50 (10 draws)", Mechanism::LnMax { scale: 50.0 }),
    ];
    for (name, mechanism) in &cases {
        let noise = NoisyMax::new(mechanism)?;
        let us = best_us(reps, queries, || {
            for i in 0..queries {
                black_box(noise.answer(&HISTOGRAMS[i % 2]).expect("sampled"));
            }
        });
        println!("noise: {name:<59} {us:>12.1}");
    }
    // The target's work per query at the lab's calls of 10: reserve the
    // batch's worst case, then settle it as answered.
    let batch: Vec<Vec<u32>> = (0..10).map(|i| HISTOGRAMS[i % 2].to_vec()).collect();
    let calls = (queries / batch.len()).max(1);
    let us = best_us(reps, calls * batch.len(), || {
        let mut target = DataDependentTarget::new(EVERY_QUERY_PASSES, 1e9, 1e-5, default_orders()).expect("valid target");
        for _ in 0..calls {
            let r = target.reserve(&batch).expect("far below the target");
            target.settle(r, batch.iter().map(|h| (h.as_slice(), true)));
        }
        black_box(target.spent());
    });
    println!("{:<66} {us:>12.1}", "target: reserve + settle, calls of 10");
    Ok(())
}
