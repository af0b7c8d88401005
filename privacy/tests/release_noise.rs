//! The released epsilon's noise is calibrated: over many draws its
//! distribution matches `N(mean, noise_std^2)` of the GNSS parameters (mean,
//! spread and a Kolmogorov-Smirnov distance), for parameters computed from a
//! real set of votes, not one draw.

use pate_privacy::mechanism::Mechanism;
use pate_privacy::orders::default_orders;
use pate_privacy::release::{draw_released, release_params, ReleaseParams};
use pate_privacy::special::erfc;

fn normal_cdf(x: f64, mean: f64, std: f64) -> f64 {
    0.5 * erfc(-(x - mean) / (std * std::f64::consts::SQRT_2))
}

fn check_calibration(p: &ReleaseParams, n: usize) {
    let mut xs: Vec<f64> = (0..n).map(|_| draw_released(p).expect("draw")).collect();
    let mean = xs.iter().sum::<f64>() / n as f64;
    let var = xs.iter().map(|x| (x - mean).powi(2)).sum::<f64>() / (n as f64 - 1.0);
    let sd = var.sqrt();
    // Mean within 5 standard errors; spread within 10% (n = 4000: the
    // sample sd's relative standard error is about 1.1%).
    assert!(
        (mean - p.mean).abs() < 5.0 * p.noise_std / (n as f64).sqrt(),
        "mean {mean} vs {}",
        p.mean
    );
    assert!((sd / p.noise_std - 1.0).abs() < 0.1, "sd {sd} vs {}", p.noise_std);
    // Kolmogorov-Smirnov distance to the intended normal, at a level of 1e-6.
    xs.sort_by(f64::total_cmp);
    let mut d: f64 = 0.0;
    for (i, &x) in xs.iter().enumerate() {
        let f = normal_cdf(x, p.mean, p.noise_std);
        d = d
            .max((f - i as f64 / n as f64).abs())
            .max(((i + 1) as f64 / n as f64 - f).abs());
    }
    let critical = 2.69 / (n as f64).sqrt();
    assert!(d < critical, "KS distance {d} >= {critical}");
    // And it is not the wrong distribution: a release with half the spread
    // fails the same test.
    let narrow: Vec<f64> = xs.iter().map(|x| p.mean + (x - p.mean) * 0.5).collect();
    let d_narrow = narrow
        .iter()
        .enumerate()
        .map(|(i, &x)| (normal_cdf(x, p.mean, p.noise_std) - i as f64 / n as f64).abs())
        .fold(0.0, f64::max);
    assert!(
        d_narrow > critical,
        "the KS check cannot tell a halved spread: {d_narrow}"
    );
}

#[test]
fn released_epsilon_has_the_intended_distribution() {
    // 250 teachers, Confident-GNMax as in the 2018 paper, 400 queries with
    // mixed consensus, about half answered.
    let votes: Vec<Vec<f64>> = (0..400)
        .map(|i| {
            let top = 120.0 + ((i * 37) % 130) as f64;
            vec![top, (250.0 - top) * 0.6, (250.0 - top) * 0.4, 0.0]
        })
        .collect();
    let m = Mechanism::ConfidentGnMax {
        threshold: 200.0,
        sigma1: 150.0,
        sigma2: 40.0,
    };
    let answered: Vec<bool> = votes.iter().map(|v| v[0] >= 190.0).collect();
    let p = release_params(&m, &votes, Some(&answered), 250, 1e-5, &default_orders()).expect("release params");
    assert!(p.noise_std > 0.0 && p.noise_std.is_finite(), "{p:?}");
    assert!((p.mean - (p.epsilon_data_dependent + p.release_cost)).abs() < 1e-12);
    check_calibration(&p, 4000);
}
