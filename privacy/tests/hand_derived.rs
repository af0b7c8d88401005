//! Values derived by hand (not from the reference vectors): data-independent
//! epsilons of each mechanism from their closed forms, the tighter Balle et
//! al. 2020 conversion, and `plan` inverting them.

use pate_privacy::rdp::{eps_from_rdp, Conversion};
use pate_privacy::{
    data_dependent_rdp, data_independent_rdp, default_orders, plan, Mechanism, PlanMechanism, PlanRequest,
};

fn total(m: &Mechanism, q: f64) -> (Vec<f64>, Vec<f64>) {
    let o = default_orders();
    let t = data_independent_rdp(m, &o).iter().map(|x| x * q).collect();
    (t, o)
}

/// GNMax, sigma = 40, Q = 100, delta = 1e-5: eps(a) = Q a / sigma^2 +
/// ln(1/delta)/(a-1) is smallest near a = 1 + sqrt(ln(1/delta) sigma^2 / Q)
/// = 14.57; on the half-integer grid a = 14.5 wins:
/// 100 * 14.5 / 1600 + ln(1e5) / 13.5 = 0.90625 + 0.852809... = 1.759059...
#[test]
fn gnmax_data_independent_by_hand() {
    let (t, o) = total(&Mechanism::GnMax { sigma: 40.0 }, 100.0);
    let e = eps_from_rdp(&t, &o, 1e-5, Conversion::Classic);
    let by_hand = 100.0 * 14.5 / 1600.0 + (1e5f64).ln() / 13.5;
    assert_eq!(e.order, 14.5);
    assert!((e.epsilon - by_hand).abs() < 1e-14, "{} vs {by_hand}", e.epsilon);
    let a_star = 1.0 + ((1e5f64).ln() * 1600.0 / 100.0).sqrt();
    assert!((a_star - 14.57).abs() < 0.01);
}

/// LNMax, b = 20 (eps = 0.1 per query), Q = 100, delta = 1e-5: RDP per query
/// min(a * 0.01 / 2, 0.1); total 0.5 a for a <= 20, so eps(a) = 0.5 a +
/// ln(1e5)/(a-1), smallest at a = 6: 3 + 2.302585... = 5.302585..., the
/// 2017 paper's data-independent bound for the same setting (moment 5).
#[test]
fn lnmax_data_independent_by_hand() {
    let (t, o) = total(&Mechanism::LnMax { scale: 20.0 }, 100.0);
    let e = eps_from_rdp(&t, &o, 1e-5, Conversion::Classic);
    assert_eq!(e.order, 6.0);
    assert!((e.epsilon - (3.0 + (1e5f64).ln() / 5.0)).abs() < 1e-14);
}

/// Confident GNMax T = 200, sigma1 = 150, sigma2 = 40, Q = 100 answered:
/// per query a/(2 * 150^2) + a/40^2 = a (1/45000 + 1/1600).
#[test]
fn confident_data_independent_by_hand() {
    let m = Mechanism::ConfidentGnMax {
        threshold: 200.0,
        sigma1: 150.0,
        sigma2: 40.0,
    };
    let (t, o) = total(&m, 100.0);
    let c = 100.0 * (1.0 / 45000.0 + 1.0 / 1600.0);
    let best = o
        .iter()
        .map(|a| c * a + (1e5f64).ln() / (a - 1.0))
        .fold(f64::INFINITY, f64::min);
    let e = eps_from_rdp(&t, &o, 1e-5, Conversion::Classic);
    assert!((e.epsilon - best).abs() < 1e-13);
}

/// Balle et al. 2020 at one order a: eps = rdp + ln((a-1)/a) - (ln delta +
/// ln a)/(a-1); for GNMax above at a = 14.5 that is 0.90625 + ln(13.5/14.5)
/// + (ln 1e5 - ln 14.5)/13.5, and the minimum over the grid is no larger.
#[test]
fn balle2020_by_hand() {
    let (t, o) = total(&Mechanism::GnMax { sigma: 40.0 }, 100.0);
    let e = eps_from_rdp(&t, &o, 1e-5, Conversion::Balle2020);
    let at = 0.90625 + (13.5f64 / 14.5).ln() + ((1e5f64).ln() - 14.5f64.ln()) / 13.5;
    assert!(e.epsilon <= at + 1e-14);
    assert!(e.epsilon < eps_from_rdp(&t, &o, 1e-5, Conversion::Classic).epsilon - 0.1);
}

/// A unanimous GNMax vote with large sigma has tiny q and a data-dependent
/// RDP far below a / sigma^2; a tie gets exactly the data-independent bound.
#[test]
fn gnmax_data_dependent_extremes() {
    let o = default_orders();
    let m = Mechanism::GnMax { sigma: 20.0 };
    let ind = data_independent_rdp(&m, &o);
    let mut unanimous = vec![0.0; 10];
    unanimous[0] = 250.0;
    let dep = data_dependent_rdp(&m, &unanimous, None, &o);
    assert!(dep[0] < ind[0] * 1e-3);
    let tie = data_dependent_rdp(&m, &[125.0, 125.0, 0.0], None, &o);
    assert_eq!(tie, ind);
}

/// `plan` inverts the GNMax closed form: sigma for eps = 1.759059... at
/// Q = 100, delta = 1e-5 is 40 (to bisection precision).
#[test]
fn plan_inverts_gnmax() {
    let target = 100.0 * 14.5 / 1600.0 + (1e5f64).ln() / 13.5;
    let p = plan(&PlanRequest {
        mechanism: PlanMechanism::GnMax,
        target_epsilon: target,
        delta: 1e-5,
        queries: 100,
        conversion: Conversion::Classic,
        orders: None,
    })
    .expect("feasible");
    assert!((p.value - 40.0).abs() < 1e-6, "{}", p.value);
    assert!(p.epsilon <= target);
    let j = serde_json::to_value(&p).expect("json");
    assert_eq!(j["parameter"], "sigma");
    assert_eq!(j["mechanism"]["kind"], "gnmax");
}

/// Confident GNMax plan: sigma2 such that Q (a/(2 sigma1^2) + a/sigma2^2)
/// meets the target; the result's epsilon is at most the target and a 1%
/// smaller sigma2 misses it.
#[test]
fn plan_confident_sigma2() {
    let p = plan(&PlanRequest {
        mechanism: PlanMechanism::ConfidentGnMax {
            threshold: 200.0,
            sigma1: 150.0,
        },
        target_epsilon: 2.0,
        delta: 1e-5,
        queries: 100,
        conversion: Conversion::Classic,
        orders: None,
    })
    .expect("feasible");
    assert!(p.epsilon <= 2.0);
    let smaller = Mechanism::ConfidentGnMax {
        threshold: 200.0,
        sigma1: 150.0,
        sigma2: p.value * 0.99,
    };
    let (t, o) = total(&smaller, 100.0);
    assert!(eps_from_rdp(&t, &o, 1e-5, Conversion::Classic).epsilon > 2.0);
}
