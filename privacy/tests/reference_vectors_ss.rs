//! The `smooth_sensitivity` section of the reference vectors (split from
//! `reference_vectors.rs` to keep files short): `logq0`, `bl`/`bu`, local
//! sensitivities of GNMax and of the threshold, discounted maxima, the RDP of
//! GNSS, the release parameters, conditions C5/C6, and the three set-level
//! runs of the Table-2 parameter search.
//!
//! Tolerances: rel 1e-7 for everything through the normal tail, root finding
//! or local/smooth sensitivities, rel 1e-12 for closed forms. (Even the
//! local sensitivity of 3e-17 for votes `[10, 0, 0]`, a difference of two
//! nearly equal RDPs, matches at rel 1e-7 without an absolute floor.)

mod common;

use common::*;
use pate_privacy::conditions::check_conditions;
use pate_privacy::smooth_sensitivity::*;
use pate_privacy::ss_release::{
    find_optimal_smooth_sensitivity_parameters, is_data_ind_step1, is_data_ind_step2, optimal_order, ThresholdStep,
};

fn ss(array: &str) -> &'static [serde_json::Value] {
    records("smooth_sensitivity", array)
}

#[test]
fn logq0_gnmax() {
    let mut c = Checker::new("smooth_sensitivity.logq0_gnmax");
    for (i, r) in ss("logq0_gnmax").iter().enumerate() {
        let ctx = name("logq0_gnmax", i, r);
        match compute_logq0_gnmax(ff(r, "sigma"), ff(r, "order")) {
            Ok(v) => c.num(&ctx, "logq0", v, ff(r, "logq0"), TAIL),
            Err(e) => c.fail(format!("{ctx}: {e}")),
        }
    }
    c.finish();
}

#[test]
fn bl_bu_gnmax() {
    let mut c = Checker::new("smooth_sensitivity.bl_bu_gnmax");
    for (i, r) in ss("bl_bu_gnmax").iter().enumerate() {
        let ctx = name("bl_bu_gnmax", i, r);
        let (q, sigma) = (ff(r, "q"), ff(r, "sigma"));
        let m = r["num_classes"].as_u64().expect("num_classes") as usize;
        c.num(&ctx, "bl", compute_bl_gnmax(q, sigma, m), ff(r, "bl"), TAIL);
        c.num(&ctx, "bu", compute_bu_gnmax(q, sigma, m), ff(r, "bu"), TAIL);
    }
    c.finish();
}

fn discounted(c: &mut Checker, ctx: &str, r: &serde_json::Value, ls: &[f64]) {
    for d in r["discounted_max"].as_array().expect("discounted_max") {
        let beta = ff(d, "beta");
        c.num(
            ctx,
            &format!("discounted_max(beta={beta})"),
            compute_discounted_max(beta, ls),
            ff(d, "value"),
            TAIL,
        );
    }
}

#[test]
fn local_sensitivity_gnmax() {
    let mut c = Checker::new("smooth_sensitivity.local_sensitivity_gnmax");
    for (i, r) in ss("local_sensitivity_gnmax").iter().enumerate() {
        let ctx = name("local_sensitivity_gnmax", i, r);
        let votes = ffv(r, "votes");
        let n = r["num_teachers"].as_u64().expect("num_teachers") as usize;
        match compute_local_sensitivity_bounds_gnmax(&votes, n, ff(r, "sigma"), ff(r, "order")) {
            Ok(ls) => {
                c.vec(&ctx, "ls", &ls, &ffv(r, "ls"), TAIL);
                discounted(&mut c, &ctx, r, &ls);
            }
            Err(e) => c.fail(format!("{ctx}: {e}")),
        }
    }
    c.finish();
}

#[test]
fn local_sensitivity_threshold() {
    let mut c = Checker::new("smooth_sensitivity.local_sensitivity_threshold");
    for (i, r) in ss("local_sensitivity_threshold").iter().enumerate() {
        let ctx = name("local_sensitivity_threshold", i, r);
        let n = r["num_teachers"].as_u64().expect("num_teachers") as usize;
        let ls = compute_local_sensitivity_bounds_threshold(
            &ffv(r, "counts"),
            n,
            ff(r, "threshold"),
            ff(r, "sigma"),
            ff(r, "order"),
        );
        c.vec(&ctx, "ls", &ls, &ffv(r, "ls"), TAIL);
        discounted(&mut c, &ctx, r, &ls);
    }
    c.finish();
}

#[test]
fn rdp_of_smooth_sensitivity_gaussian() {
    let mut c = Checker::new("smooth_sensitivity.rdp_of_smooth_sensitivity_gaussian");
    for (i, r) in ss("rdp_of_smooth_sensitivity_gaussian").iter().enumerate() {
        let ctx = name("rdp_of_smooth_sensitivity_gaussian", i, r);
        match compute_rdp_of_smooth_sensitivity_gaussian(ff(r, "beta"), ff(r, "sigma"), ff(r, "order")) {
            Ok(v) => c.num(&ctx, "rdp", v, ff(r, "rdp"), CLOSED),
            Err(e) => c.fail(format!("{ctx}: {e}")),
        }
    }
    c.finish();
}

#[test]
fn params_for_ss_release() {
    let mut c = Checker::new("smooth_sensitivity.params_for_ss_release");
    for (i, r) in ss("params_for_ss_release").iter().enumerate() {
        let ctx = name("params_for_ss_release", i, r);
        let (alpha, beta) = compute_params_for_ss_release(ff(r, "eps"), ff(r, "delta"));
        c.num(&ctx, "alpha", alpha, ff(r, "alpha"), TAIL);
        c.num(&ctx, "beta", beta, ff(r, "beta"), TAIL);
    }
    c.finish();
}

#[test]
fn check_conditions_c5_c6() {
    let mut c = Checker::new("smooth_sensitivity.check_conditions");
    for (i, r) in ss("check_conditions").iter().enumerate() {
        let ctx = name("check_conditions", i, r);
        let m = r["num_classes"].as_u64().expect("num_classes") as usize;
        match check_conditions(ff(r, "sigma"), m, ff(r, "order")) {
            Ok(rep) => {
                c.eq(&ctx, "cond5", rep.cond5, fb(r, "cond5"));
                c.eq(&ctx, "cond6", rep.cond6, fb(r, "cond6"));
            }
            Err(e) => c.fail(format!("{ctx}: {e}")),
        }
    }
    c.finish();
}

#[test]
fn set_level_confident_gnmax() {
    let mut c = Checker::new("smooth_sensitivity.set_level_confident_gnmax");
    let long = orders("long");
    for (i, r) in ss("set_level_confident_gnmax").iter().enumerate() {
        let ctx = name("set_level_confident_gnmax", i, r);
        let n_used = r["num_queries_used"].as_u64().expect("num_queries_used") as usize;
        let votes: Vec<Vec<f64>> = set_votes(fs(r, "set")).into_iter().take(n_used).collect();
        let step1 = Some(ThresholdStep {
            threshold: ff(r, "threshold"),
            sigma1: ff(r, "sigma1"),
        });
        let (sigma2, delta) = (ff(r, "sigma2"), ff(r, "delta"));
        let num_teachers = 250;
        let num_classes = votes[0].len();

        let order = optimal_order(&votes, step1, sigma2, delta, &long);
        c.eq(&ctx, "order", order, ff(r, "order"));
        // Continue at the reference's order whatever ours is, so one
        // mismatch does not hide the others.
        let order = ff(r, "order");
        let ind1 = is_data_ind_step1(num_teachers, step1, order);
        let ind2 = is_data_ind_step2(num_teachers, num_classes, sigma2, order);
        c.eq(&ctx, "data_ind_step1", ind1, fb(r, "data_ind_step1"));
        c.eq(&ctx, "data_ind_step2", ind2, fb(r, "data_ind_step2"));
        match check_conditions(sigma2, num_classes, order) {
            Ok(rep) => {
                let hold = rep.cond5 && rep.cond6;
                c.eq(&ctx, "conditions_c5_c6_hold", hold, fb(r, "conditions_c5_c6_hold"));
                let stops = (ind1 && ind2) || !hold;
                c.eq(
                    &ctx,
                    "reference_main_would_stop_before_ss",
                    stops,
                    fb(r, "reference_main_would_stop_before_ss"),
                );
            }
            Err(e) => c.fail(format!("{ctx}: check_conditions: {e}")),
        }
        let p = match find_optimal_smooth_sensitivity_parameters(
            &votes,
            num_teachers,
            step1,
            sigma2,
            delta,
            fb(r, "data_ind_step1"),
            fb(r, "data_ind_step2"),
            order,
            None,
        ) {
            Ok(p) => p,
            Err(e) => {
                c.fail(format!("{ctx}: search: {e}"));
                continue;
            }
        };
        c.vec(&ctx, "beta_grid", &p.beta_grid, &ffv(r, "beta_grid"), CLOSED);
        c.num(
            &ctx,
            "expected_answered",
            p.expected_answered,
            ff(r, "expected_answered"),
            TAIL,
        );
        c.num(&ctx, "rdp_at_order", p.rdp_at_order, ff(r, "rdp_at_order"), TAIL);
        c.num(&ctx, "eps_before_ss", p.eps_before_ss, ff(r, "eps_before_ss"), TAIL);
        if p.beta_opt == ff(r, "beta_opt") {
            c.num(&ctx, "ss_opt", p.ss_opt, ff(r, "ss_opt"), TAIL);
            c.num(&ctx, "sigma_ss_opt", p.sigma_ss_opt, ff(r, "sigma_ss_opt"), TAIL);
            c.num(
                &ctx,
                "noise_std_of_released_eps",
                p.noise_std_of_released_eps,
                ff(r, "noise_std_of_released_eps"),
                TAIL,
            );
            c.num(&ctx, "eps_with_ss", p.eps_with_ss, ff(r, "eps_with_ss"), TAIL);
        } else {
            // A different grid point: it must be as good by the search's own
            // cost (rdp + GNSS cost + 2 ss sigma_ss).
            let cost = |eps_with: f64, std: f64| eps_with + 2.0 * std;
            let ours = cost(p.eps_with_ss, p.noise_std_of_released_eps);
            let theirs = cost(ff(r, "eps_with_ss"), ff(r, "noise_std_of_released_eps"));
            if !close(ours, theirs, TAIL) {
                c.fail(format!(
                    "{ctx}: beta_opt {} vs {}, cost {ours} vs {theirs}",
                    p.beta_opt,
                    ff(r, "beta_opt")
                ));
            }
        }
    }
    c.finish();
}
