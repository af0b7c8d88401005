//! The release's local-sensitivity bounds against brute force: on small
//! histograms (few teachers, few classes, noise small enough that the
//! data-dependent bound bites), the exact worst one-step change of the
//! per-query RDP over every histogram within distance `d`, for every `d`,
//! must never exceed the bound the release uses. And the bound must not be
//! vacuous: at distance 0 it stays within a small factor of the exact value
//! where that is not negligible and no class is empty.

use pate_privacy::mechanism::{data_dependent_rdp_with, Mechanism, NoiseModel};
use pate_privacy::release::query_local_sensitivities;

/// Every histogram of `total` votes over `classes` classes.
fn histograms(total: usize, classes: usize) -> Vec<Vec<usize>> {
    if classes == 1 {
        return vec![vec![total]];
    }
    let mut out = Vec::new();
    for first in 0..=total {
        for mut rest in histograms(total - first, classes - 1) {
            rest.insert(0, first);
            out.push(rest);
        }
    }
    out
}

/// Moves (changed teachers) between two histograms of the same total.
fn distance(a: &[usize], b: &[usize]) -> usize {
    a.iter().zip(b).map(|(&x, &y)| x.abs_diff(y)).sum::<usize>() / 2
}

struct Case {
    mechanism: Mechanism,
    teachers: usize,
    classes: usize,
    order: f64,
    answered: bool,
}

/// Checks every histogram of the case; returns the largest exact local
/// sensitivity at distance 0 and the largest ratio bound / exact there, over
/// histograms without an empty class.
fn check(case: &Case) -> (f64, f64) {
    let hs = histograms(case.teachers, case.classes);
    let f: Vec<f64> = hs
        .iter()
        .map(|h| {
            let v: Vec<f64> = h.iter().map(|&x| x as f64).collect();
            data_dependent_rdp_with(
                &case.mechanism,
                &v,
                Some(case.answered),
                &[case.order],
                NoiseModel::Discrete,
            )[0]
        })
        .collect();
    // Exact local sensitivity of every histogram.
    let ls: Vec<f64> = (0..hs.len())
        .map(|i| {
            (0..hs.len())
                .filter(|&j| distance(&hs[i], &hs[j]) == 1)
                .map(|j| (f[i] - f[j]).abs())
                .fold(0.0, f64::max)
        })
        .collect();
    let (mut top, mut worst_ratio) = (0.0f64, 0.0f64);
    for (i, h) in hs.iter().enumerate() {
        let v: Vec<f64> = h.iter().map(|&x| x as f64).collect();
        let bound = query_local_sensitivities(&case.mechanism, &v, case.answered, case.teachers, case.order);
        assert_eq!(bound.len(), case.teachers);
        for (d, &b) in bound.iter().enumerate() {
            let exact = (0..hs.len())
                .filter(|&j| distance(h, &hs[j]) <= d)
                .map(|j| ls[j])
                .fold(0.0, f64::max);
            assert!(
                b >= exact * (1.0 - 1e-12),
                "{:?} order {} votes {h:?} d {d}: bound {b} < exact {exact}",
                case.mechanism,
                case.order
            );
        }
        // Tightness where every kind of move exists (no empty class: the
        // bound does not use that an empty class cannot lose a vote).
        if ls[i] > 1e-6 && h.iter().all(|&x| x > 0) {
            top = top.max(ls[i]);
            worst_ratio = worst_ratio.max(bound[0] / ls[i]);
        }
    }
    (top, worst_ratio)
}

#[test]
fn gnmax_bound_covers_every_histogram_in_the_ball() {
    let mut nontrivial = 0;
    for &(teachers, classes) in &[(6, 2), (8, 2), (6, 3), (5, 4)] {
        for &sigma in &[0.6, 1.0, 1.7, 3.0] {
            for &order in &[2.0, 3.5, 6.0] {
                let case = Case {
                    mechanism: Mechanism::GnMax { sigma },
                    teachers,
                    classes,
                    order,
                    answered: true,
                };
                let (top, ratio) = check(&case);
                if top > 0.0 {
                    nontrivial += 1;
                    // Not vacuous where the change is material.
                    assert!(
                        ratio < 4.0,
                        "{teachers} teachers {classes} classes sigma {sigma} order {order}: ratio {ratio}"
                    );
                }
            }
        }
    }
    // The cases do exercise the data-dependent bound.
    assert!(nontrivial >= 10, "only {nontrivial} cases with a material change");
}

#[test]
fn confident_bound_covers_every_histogram_in_the_ball() {
    for &(teachers, classes) in &[(7, 2), (6, 3)] {
        for &(threshold, sigma1, sigma2) in &[(4.0, 0.8, 1.0), (5.0, 1.5, 0.7), (3.0, 2.5, 2.0)] {
            for &answered in &[true, false] {
                for &order in &[2.0, 4.0] {
                    check(&Case {
                        mechanism: Mechanism::ConfidentGnMax {
                            threshold,
                            sigma1,
                            sigma2,
                        },
                        teachers,
                        classes,
                        order,
                        answered,
                    });
                }
            }
        }
    }
}
