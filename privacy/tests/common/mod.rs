//! Shared helpers for the reference-vector tests: loading
//! `tests/data/pate_vectors.json` (a copy of `shared/reference`, so the suite
//! runs on a fresh clone), decoding its floats ("inf", "-inf" and "nan" are
//! strings), looking up histograms, and a checker that collects every
//! mismatch with the name of its record before failing.

#![allow(dead_code)]

use std::sync::OnceLock;

use pate_privacy::rdp::{eps_at_order, Conversion};
use serde_json::Value;

/// The parsed vectors file.
pub fn vectors() -> &'static Value {
    static V: OnceLock<Value> = OnceLock::new();
    V.get_or_init(|| {
        let path = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/data/pate_vectors.json");
        let text = std::fs::read_to_string(path).unwrap_or_else(|e| panic!("cannot read {path}: {e}"));
        serde_json::from_str(&text).unwrap_or_else(|e| panic!("cannot parse {path}: {e}"))
    })
}

/// A float from the file (numbers, or "inf"/"-inf"/"nan").
pub fn f(v: &Value) -> f64 {
    match v {
        Value::Number(n) => n.as_f64().unwrap_or_else(|| panic!("not a float: {v}")),
        Value::String(s) => match s.as_str() {
            "inf" => f64::INFINITY,
            "-inf" => f64::NEG_INFINITY,
            "nan" => f64::NAN,
            _ => panic!("not a float: {s:?}"),
        },
        _ => panic!("not a float: {v}"),
    }
}

/// A list of floats.
pub fn fv(v: &Value) -> Vec<f64> {
    v.as_array()
        .unwrap_or_else(|| panic!("not a list: {v}"))
        .iter()
        .map(f)
        .collect()
}

/// A field of a record as a float.
pub fn ff(rec: &Value, key: &str) -> f64 {
    f(rec.get(key).unwrap_or_else(|| panic!("record lacks {key}: {rec}")))
}

/// A field of a record as a list of floats.
pub fn ffv(rec: &Value, key: &str) -> Vec<f64> {
    fv(rec.get(key).unwrap_or_else(|| panic!("record lacks {key}: {rec}")))
}

/// A field as a string.
pub fn fs<'a>(rec: &'a Value, key: &str) -> &'a str {
    rec.get(key)
        .and_then(Value::as_str)
        .unwrap_or_else(|| panic!("record lacks string {key}: {rec}"))
}

/// A field as a bool.
pub fn fb(rec: &Value, key: &str) -> bool {
    rec.get(key)
        .and_then(Value::as_bool)
        .unwrap_or_else(|| panic!("record lacks bool {key}: {rec}"))
}

/// The records of `section.array`.
pub fn records(section: &str, array: &str) -> &'static [Value] {
    vectors()[section][array]
        .as_array()
        .unwrap_or_else(|| panic!("no array {section}.{array}"))
}

/// An order list by name ("short" or "long").
pub fn orders(name: &str) -> Vec<f64> {
    fv(&vectors()["orders"][name])
}

/// All queries of a histogram set.
pub fn set_votes(id: &str) -> Vec<Vec<f64>> {
    let sets = vectors()["histogram_sets"].as_array().expect("histogram_sets");
    let s = sets
        .iter()
        .find(|s| s["id"] == id)
        .unwrap_or_else(|| panic!("no set {id}"));
    s["votes"].as_array().expect("votes").iter().map(fv).collect()
}

/// The histogram a per-query record refers to (`set` + `index`, or `edge`).
pub fn votes_of(rec: &Value) -> Vec<f64> {
    if let Some(set) = rec.get("set").and_then(Value::as_str) {
        let i = rec["index"].as_u64().expect("index") as usize;
        return set_votes(set)[i].clone();
    }
    let id = fs(rec, "edge");
    let edges = vectors()["edge_histograms"].as_array().expect("edge_histograms");
    let e = edges
        .iter()
        .find(|e| e["id"] == id)
        .unwrap_or_else(|| panic!("no edge {id}"));
    fv(&e["votes"])
}

/// A short name for a record in failure messages.
pub fn name(section: &str, i: usize, rec: &Value) -> String {
    let mut tags = Vec::new();
    for k in [
        "set",
        "index",
        "edge",
        "sigma",
        "sigma1",
        "lambda",
        "noise_eps",
        "delta",
        "q",
        "logq",
        "priv_eps",
        "threshold",
        "data_independent",
    ] {
        if let Some(v) = rec.get(k) {
            tags.push(format!("{k}={v}"));
        }
    }
    format!("{section}[{i}] ({})", tags.join(", "))
}

/// A comparison tolerance: `|a - e| <= rel * |e| + abs`.
#[derive(Debug, Clone, Copy)]
pub struct Tol {
    /// Relative part.
    pub rel: f64,
    /// Absolute part.
    pub abs: f64,
}

/// Closed forms from exact inputs.
pub const CLOSED: Tol = Tol { rel: 1e-12, abs: 0.0 };
/// Anything through the normal tail, root finding or smooth sensitivity.
pub const TAIL: Tol = Tol { rel: 1e-7, abs: 0.0 };
/// The 2017 moments.
pub const MOMENTS: Tol = Tol { rel: 1e-9, abs: 1e-12 };

/// Whether `a` matches `e` within `tol` (equal infinities and two NaNs match).
pub fn close(a: f64, e: f64, tol: Tol) -> bool {
    if a == e || (a.is_nan() && e.is_nan()) {
        return true;
    }
    (a - e).abs() <= tol.rel * e.abs() + tol.abs
}

/// Collects mismatches; panics at the end listing them.
pub struct Checker {
    what: String,
    failures: Vec<String>,
    /// Number of values compared.
    pub checks: usize,
    /// Largest relative error seen among passing finite comparisons, and where.
    worst: (f64, String),
}

impl Checker {
    /// A new checker for one section.
    pub fn new(what: &str) -> Self {
        Checker {
            what: what.to_string(),
            failures: Vec::new(),
            checks: 0,
            worst: (0.0, String::new()),
        }
    }

    /// Compares one number.
    pub fn num(&mut self, ctx: &str, field: &str, actual: f64, expected: f64, tol: Tol) {
        self.checks += 1;
        let rel = if actual == expected {
            0.0
        } else {
            ((actual - expected) / expected).abs()
        };
        if close(actual, expected, tol) {
            if rel.is_finite() && rel > self.worst.0 {
                self.worst = (rel, format!("{ctx}: {field}"));
            }
        } else {
            self.failures.push(format!(
                "{ctx}: {field}: got {actual:e}, expected {expected:e} (rel err {rel:e})"
            ));
        }
    }

    /// Compares two lists element-wise.
    pub fn vec(&mut self, ctx: &str, field: &str, actual: &[f64], expected: &[f64], tol: Tol) {
        if actual.len() != expected.len() {
            self.checks += 1;
            self.failures.push(format!(
                "{ctx}: {field}: length {} vs expected {}",
                actual.len(),
                expected.len()
            ));
            return;
        }
        for (i, (&a, &e)) in actual.iter().zip(expected).enumerate() {
            self.num(ctx, &format!("{field}[{i}]"), a, e, tol);
        }
    }

    /// Compares a boolean (or any equality).
    pub fn eq<T: PartialEq + std::fmt::Debug>(&mut self, ctx: &str, field: &str, actual: T, expected: T) {
        self.checks += 1;
        if actual != expected {
            self.failures
                .push(format!("{ctx}: {field}: got {actual:?}, expected {expected:?}"));
        }
    }

    /// Compares an argmin over orders: equal orders pass; different orders
    /// pass when the epsilon our curve gives at the reference's order equals
    /// ours within `tol` (two grid points within rounding).
    #[allow(clippy::too_many_arguments)]
    pub fn argmin_order(
        &mut self,
        ctx: &str,
        field: &str,
        our_order: f64,
        our_eps: f64,
        expected_order: f64,
        rdp: &[f64],
        orders: &[f64],
        delta: f64,
        tol: Tol,
    ) {
        self.checks += 1;
        if our_order == expected_order {
            return;
        }
        let at_expected = orders
            .iter()
            .position(|&a| a == expected_order)
            .map(|i| eps_at_order(rdp[i], orders[i], delta, Conversion::Classic));
        match at_expected {
            Some(e) if close(e, our_eps, tol) => {}
            _ => self.failures.push(format!(
                "{ctx}: {field}: got order {our_order}, expected {expected_order} (eps there {at_expected:?} vs ours {our_eps})"
            )),
        }
    }

    /// Records a free-form failure.
    pub fn fail(&mut self, msg: String) {
        self.checks += 1;
        self.failures.push(msg);
    }

    /// Panics if anything failed, listing up to 40 mismatches.
    pub fn finish(self) {
        if !self.failures.is_empty() {
            let n = self.failures.len();
            let shown: Vec<&String> = self.failures.iter().take(40).collect();
            panic!(
                "{}: {n} of {} checks failed:\n{}",
                self.what,
                self.checks,
                shown.iter().map(|s| s.as_str()).collect::<Vec<_>>().join("\n")
            );
        }
        eprintln!(
            "{}: {} checks passed; largest rel err {:e} at {}",
            self.what, self.checks, self.worst.0, self.worst.1
        );
    }
}
