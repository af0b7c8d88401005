//! Times `pate_privacy::analyze` on 10,000 queries of 250 teachers over the
//! default orders, for each mechanism and accountant:
//!
//! ```text
//! cargo bench -p pate-privacy --bench analyze
//! ```
//!
//! Votes come from a seeded SplitMix64 generator (no `rand`): each query has
//! a winning class drawn uniformly from 10, a share `p` uniform in
//! `(0.2, 1)`, and each teacher votes for the winner with probability `p`,
//! otherwise for a uniformly drawn other class (like the reference's
//! `P_mixed_consensus` set). Environment:
//!
//! * `PATE_BENCH_QUERIES` (10000), `PATE_BENCH_TEACHERS` (250),
//!   `PATE_BENCH_REPS` (3; the minimum is reported);
//! * `PATE_BENCH_VOTES_CSV=path` also writes the votes as CSV, for
//!   `benches/reference_timing.py` to time the Python math on the same input.

use std::time::Instant;

use pate_privacy::analyze::{analyze_with, Accountant, AnalyzeOptions};
use pate_privacy::Mechanism;

/// SplitMix64 (Steele, Lea and Flood 2014).
struct SplitMix64(u64);

impl SplitMix64 {
    fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
    /// Uniform in [0, 1) with 53 random bits.
    fn next_f64(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64
    }
    /// Uniform in 0..n.
    fn below(&mut self, n: usize) -> usize {
        (self.next_f64() * n as f64) as usize
    }
}

fn votes(queries: usize, teachers: usize, classes: usize, seed: u64) -> Vec<Vec<f64>> {
    let mut rng = SplitMix64(seed);
    (0..queries)
        .map(|_| {
            let winner = rng.below(classes);
            let p = 0.2 + 0.8 * rng.next_f64();
            let mut h = vec![0.0; classes];
            for _ in 0..teachers {
                let c = if rng.next_f64() < p {
                    winner
                } else {
                    let o = rng.below(classes - 1);
                    if o >= winner {
                        o + 1
                    } else {
                        o
                    }
                };
                h[c] += 1.0;
            }
            h
        })
        .collect()
}

fn env_usize(name: &str, default: usize) -> usize {
    std::env::var(name).ok().and_then(|v| v.parse().ok()).unwrap_or(default)
}

fn main() {
    let queries = env_usize("PATE_BENCH_QUERIES", 10_000);
    let teachers = env_usize("PATE_BENCH_TEACHERS", 250);
    let reps = env_usize("PATE_BENCH_REPS", 3).max(1);
    let t0 = Instant::now();
    let v = votes(queries, teachers, 10, 1610);
    eprintln!(
        "generated {queries} x 10 votes of {teachers} teachers in {:.1} ms",
        t0.elapsed().as_secs_f64() * 1e3
    );
    if let Ok(path) = std::env::var("PATE_BENCH_VOTES_CSV") {
        let csv: String = v
            .iter()
            .map(|h| h.iter().map(|x| format!("{x}")).collect::<Vec<_>>().join(",") + "\n")
            .collect();
        if let Err(e) = std::fs::write(&path, csv) {
            eprintln!("cannot write {path}: {e}");
        }
    }

    let lnmax = Mechanism::LnMax { scale: 20.0 };
    let gnmax = Mechanism::GnMax { sigma: 40.0 };
    let confident = Mechanism::ConfidentGnMax {
        threshold: 200.0,
        sigma1: 150.0,
        sigma2: 40.0,
    };
    let base = AnalyzeOptions {
        delta: 1e-5,
        ..AnalyzeOptions::default()
    };
    let rdp = |ss: bool| AnalyzeOptions {
        smooth_sensitivity: ss,
        ..base.clone()
    };
    let moments = |ss: bool| AnalyzeOptions {
        accountant: Accountant::Moments2017,
        smooth_sensitivity: ss,
        ..base.clone()
    };
    let cases: Vec<(&str, Mechanism, AnalyzeOptions)> = vec![
        ("lnmax rdp (b=20)", lnmax, rdp(false)),
        ("lnmax moments2017 (b=20), no smoothed sens", lnmax, moments(false)),
        ("lnmax moments2017 (b=20) + smoothed sens", lnmax, moments(true)),
        ("gnmax rdp (sigma=40)", gnmax, rdp(false)),
        ("gnmax rdp (sigma=40) + smooth-sens release", gnmax, rdp(true)),
        ("confident-gnmax rdp (200/150/40)", confident, rdp(false)),
        (
            "confident-gnmax rdp (200/150/40) + smooth-sens release",
            confident,
            rdp(true),
        ),
    ];
    println!("queries={queries} teachers={teachers} classes=10 orders=298 delta=1e-5 reps={reps} (min reported)");
    println!(
        "{:<56} {:>10} {:>12} {:>10} {:>10}",
        "case", "total ms", "us/query", "epsilon", "data-ind"
    );
    for (name, m, opts) in &cases {
        let mut best = f64::INFINITY;
        let mut report = None;
        for _ in 0..reps {
            let t = Instant::now();
            let r = analyze_with(&v, m, opts);
            best = best.min(t.elapsed().as_secs_f64());
            report = Some(r);
        }
        match report {
            Some(Ok(r)) => {
                println!(
                    "{:<56} {:>10.1} {:>12.2} {:>10.4} {:>10.4}",
                    name,
                    best * 1e3,
                    best * 1e6 / queries as f64,
                    r.epsilon,
                    r.data_independent_epsilon
                );
                if let Some(s) = &r.smooth_sensitivity {
                    let p = s.params.as_ref();
                    println!(
                        "    release at order {}: data-independent steps {}/{}, C5-C6 {:?}, beta {:.4}, \
                         sigma_ss {:.2}, eps with release {:.4}",
                        s.order,
                        s.data_ind_step1,
                        s.data_ind_step2,
                        s.conditions_c5_c6_hold,
                        p.map_or(f64::NAN, |p| p.beta_opt),
                        p.map_or(f64::NAN, |p| p.sigma_ss_opt),
                        p.map_or(f64::NAN, |p| p.eps_with_ss)
                    );
                }
                if let Some(e) = &r.smooth_sensitivity_error {
                    println!("    release failed: {e}");
                }
            }
            Some(Err(e)) => println!("{name:<56} error: {e}"),
            None => {}
        }
    }
}
