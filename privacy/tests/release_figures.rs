//! The released epsilon for a few vote profiles, against the figures
//! docs/PRIVACY.md quotes (run with `--nocapture` to print the table):
//! Confident-GNMax in the 2018 paper's MNIST setting (250 teachers, T = 200,
//! sigma1 = 150) with strong consensus must release well under 2 where its
//! data-dependent epsilon is about 1.

use pate_privacy::mechanism::Mechanism;
use pate_privacy::orders::default_orders;
use pate_privacy::release::{release_params, ReleaseParams};
use pate_privacy::{data_dependent_rdp_with, eps_from_rdp, Conversion, NoiseModel};

const TEACHERS: usize = 250;
const DELTA: f64 = 1e-5;

fn confident(sigma2: f64) -> Mechanism {
    Mechanism::ConfidentGnMax {
        threshold: 200.0,
        sigma1: 150.0,
        sigma2,
    }
}

/// Four classes, top class 234..240 of 250.
fn clear4(n: usize) -> Vec<Vec<f64>> {
    (0..n)
        .map(|i| vec![240.0 - (i % 7) as f64, 5.0, 5.0 + (i % 7) as f64, 0.0])
        .collect()
}

/// Ten classes, top class 228..236 of 250, the rest spread thin (MNIST-like).
fn mnist10(n: usize) -> Vec<Vec<f64>> {
    (0..n)
        .map(|i| {
            let (a, b) = ((i % 9) as f64, (i % 5) as f64);
            vec![236.0 - a, 4.0 + b, 5.0 + a - b, 2.0, 1.0, 1.0, 0.0, 0.0, 1.0, 0.0]
        })
        .collect()
}

/// The paper's MNIST shape: 640 asked, 286 answered with strong consensus,
/// 354 declined (top class 100..179).
fn paper_like() -> (Vec<Vec<f64>>, Vec<bool>) {
    let mut v = mnist10(286);
    v.extend((0..354).map(|i| {
        let t = (i % 80) as f64;
        vec![100.0 + t, 120.0 - t, 20.0, 10.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0]
    }));
    let answered = (0..640).map(|i| i < 286).collect();
    (v, answered)
}

/// The run's data-dependent epsilon (best order) and the release.
fn release(m: &Mechanism, votes: &[Vec<f64>], answered: &[bool]) -> (f64, ReleaseParams) {
    let orders = default_orders();
    let mut total = vec![0.0; orders.len()];
    for (v, &a) in votes.iter().zip(answered) {
        let r = data_dependent_rdp_with(m, v, Some(a), &orders, NoiseModel::Discrete);
        total.iter_mut().zip(r).for_each(|(t, c)| *t += c);
    }
    let eps = eps_from_rdp(&total, &orders, DELTA, Conversion::Classic).epsilon;
    let p = release_params(m, votes, Some(answered), TEACHERS, DELTA, &orders).expect("release");
    (eps, p)
}

fn row(name: &str, eps: f64, p: &ReleaseParams) {
    println!(
        "{name:<34} eps_dd {eps:.3} | order {:>5.1} eps_dd@order {:.3} beta {:.4} SS {:.2e} sigma_ss {:>6.2} | released {:.3} +- {:.3} (mean + 2 sd {:.3})",
        p.order,
        p.epsilon_data_dependent,
        p.beta,
        p.smooth_sensitivity,
        p.sigma_ss,
        p.mean,
        p.noise_std,
        p.mean + 2.0 * p.noise_std
    );
}

#[test]
fn strong_consensus_releases_well_under_two() {
    let all = vec![true; 300];
    let (e, p) = release(&confident(40.0), &clear4(300), &all);
    row("clear4 x300, sigma2 40", e, &p);
    let (e10, p10) = release(&confident(40.0), &mnist10(300), &all);
    row("mnist10 x300, sigma2 40", e10, &p10);
    let (votes, answered) = paper_like();
    let (ep, pp) = release(&confident(40.0), &votes, &answered);
    row("paper-like 640 asked/286 answered", ep, &pp);
    for s2 in [60.0, 100.0] {
        let (es, ps) = release(&confident(s2), &mnist10(300), &all);
        row(&format!("mnist10 x300, sigma2 {s2}"), es, &ps);
    }
    // The bounds: the reference's own analysis (tensorflow/privacy
    // research/pate_2018, continuous noise, its Algorithm 3 local
    // sensitivities, beta on our grid and the same order search) gives
    // mean + 2 sd = 1.728, 1.872 and 1.949 on these three profiles; the
    // discrete analysis may cost at most 2% more.
    for (p, reference, e) in [(&p, 1.728, e), (&p10, 1.872, e10), (&pp, 1.949, ep)] {
        assert!((p.mean - p.epsilon_data_dependent - p.release_cost).abs() < 1e-12);
        assert!(p.noise_std > 0.0);
        assert!(p.mean + 2.0 * p.noise_std <= 1.02 * reference, "{p:?}");
        // Well under 2 where the data-dependent epsilon is about 1.
        assert!(e < 1.0 && p.mean < 1.6 && p.mean + 2.0 * p.noise_std < 2.0, "{p:?}");
    }
}
