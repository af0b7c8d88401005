//! `pate privacy analyze | plan | report` as a user runs them.

mod common;

use std::process::Command;

fn pate(args: &[&str]) -> serde_json::Value {
    let out = Command::new(common::bin("pate")).arg("privacy").args(args).output().expect("run pate");
    assert!(out.status.success(), "pate privacy {args:?} failed: {}", String::from_utf8_lossy(&out.stderr));
    serde_json::from_slice(&out.stdout).expect("JSON on stdout")
}

fn vectors() -> serde_json::Value {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../privacy/tests/data/pate_vectors.json");
    serde_json::from_slice(&std::fs::read(path).expect("vectors")).expect("json")
}

fn close(a: f64, b: f64, rel: f64) -> bool {
    (a - b).abs() <= rel * b.abs().max(1e-300)
}

/// With the defaults, analyze gives the reference's per-set totals.
#[test]
fn analyze_matches_the_reference_set_totals() {
    let v = vectors();
    let dir = tempfile::tempdir().expect("tempdir");
    let mut checked = 0;
    for set in v["histogram_sets"].as_array().expect("sets") {
        let id = set["id"].as_str().expect("id");
        let csv: String = set["votes"].as_array().expect("votes").iter()
            .map(|row| row.as_array().expect("row").iter().map(|x| x.to_string()).collect::<Vec<_>>().join(",") + "\n")
            .collect();
        let path = dir.path().join(format!("{id}.csv"));
        std::fs::write(&path, csv).expect("write csv");
        let p = path.to_str().expect("utf-8");
        for t in v["gnmax"]["set_totals"].as_array().expect("totals").iter().filter(|t| t["set"] == id) {
            let (sigma, delta) = (t["sigma"].to_string(), t["delta"].to_string());
            let r = pate(&["analyze", "--votes", p, "--mechanism", "gnmax", "--sigma", &sigma, "--delta", &delta]);
            assert!(close(r["epsilon"].as_f64().expect("eps"), t["eps"].as_f64().expect("eps"), 1e-7), "{id} gnmax {r}");
            assert!(close(r["data_independent_epsilon"].as_f64().expect("eps"), t["data_independent_eps"].as_f64().expect("eps"), 1e-9));
            checked += 1;
        }
        for t in v["lnmax_2017"]["set_totals"].as_array().expect("totals").iter().filter(|t| t["set"] == id) {
            let scale = (1.0 / t["noise_eps"].as_f64().expect("gamma")).to_string();
            let delta = t["delta"].to_string();
            let r = pate(&["analyze", "--votes", p, "--scale", &scale, "--delta", &delta, "--accountant", "moments2017"]);
            assert!(close(r["epsilon"].as_f64().expect("eps"), t["eps"].as_f64().expect("eps"), 1e-9), "{id} lnmax {r}");
            assert_eq!(r["moment"], t["eps_argmin_moment"]);
            checked += 1;
        }
    }
    assert!(checked >= 20, "only {checked} totals checked");
}

/// Plan inverts the data-independent GNMax bound: at the sigma it returns,
/// epsilon equals the target; by hand, Q a / sigma^2 + ln(1/delta)/(a-1).
#[test]
fn plan_meets_the_target_exactly() {
    let r = pate(&["plan", "--target-epsilon", "2", "--delta", "1e-5", "--queries", "1000", "--mechanism", "gnmax"]);
    let (sigma, eps) = (r["value"].as_f64().expect("sigma"), r["epsilon"].as_f64().expect("eps"));
    assert!(close(eps, 2.0, 1e-6) && eps <= 2.0 + 1e-12, "{r}");
    let a = r["order"].as_f64().expect("order");
    assert!(close(1000.0 * a / (sigma * sigma) + (1e5f64).ln() / (a - 1.0), eps, 1e-9));
    let bad = Command::new(common::bin("pate")).args(["privacy", "plan", "--target-epsilon=-1", "--delta", "1e-5", "--queries", "10"]).output().expect("run");
    assert!(!bad.status.success() && String::from_utf8_lossy(&bad.stderr).contains("target epsilon"));
}

/// A bad votes file is a clear error naming the line, never a panic.
#[test]
fn analyze_reports_bad_lines() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("bad.csv");
    std::fs::write(&path, "1,2,3\n4,x,6\n").expect("write");
    let out = Command::new(common::bin("pate")).args(["privacy", "analyze", "--votes"]).arg(&path).args(["--delta", "1e-5"]).output().expect("run");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success() && err.contains("line 2"), "{err}");
    assert!(!err.contains("panicked"));
}
