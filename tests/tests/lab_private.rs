//! `pate lab` in a private configuration, end to end on the small digits
//! data set (tests/data/digits): Confident-GNMax, a data-dependent target,
//! the semi-supervised student, and the report's three epsilons; and the bad
//! inputs it must refuse before training any teacher.

mod common;

use std::path::Path;
use std::process::{Command, Output};

const DIGITS: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/data/digits");

fn lab(out: &Path, args: &[&str]) -> Output {
    Command::new(common::bin("pate"))
        .args(["lab", "--data", DIGITS, "--eval-size", "200", "--jobs", "2"])
        .args(args)
        .arg("--out")
        .arg(out)
        .output()
        .expect("run pate lab")
}

#[test]
fn bad_input_is_refused_before_any_teacher_is_trained() {
    let dir = tempfile::tempdir().expect("tempdir");
    let cases: [(&[&str], &str); 4] = [
        (&["--queries", "201"], "exceeds the public pool of 200"),
        (
            &["--preset", "private", "--teachers", "10", "--threshold", "11"],
            "above the 10 teachers",
        ),
        (
            &["--preset", "private", "--teachers", "10", "--target-epsilon", "0.01"],
            "cannot be met",
        ),
        (&["--mechanism", "gnmax", "--delta", "0"], "set delta > 0"),
    ];
    for (i, (args, words)) in cases.iter().enumerate() {
        let out = dir.path().join(format!("case-{i}"));
        let o = lab(&out, args);
        let stderr = String::from_utf8_lossy(&o.stderr);
        assert!(!o.status.success(), "{args:?} should fail");
        assert!(stderr.contains(words), "{args:?}: expected '{words}' in: {stderr}");
        assert!(
            !out.join("teachers").exists(),
            "{args:?}: teachers were trained before the check"
        );
        assert!(
            !out.join("ledger.db").exists(),
            "{args:?}: an aggregator ran before the check"
        );
    }
}

/// 12 teachers on 1,397 digits: T = 8, sigma1 = 6, sigma2 = 3 (no
/// meaningful privacy at this size: the threshold step alone costs about
/// order / 72 per query), and a target that stops the 200-item pool
/// partway: about 60 answers fit in batches of 10. The target, not the
/// preset's data-independent budget, is the stop under test; an MLP
/// student learns on 8x8 digits in 30 short epochs where the CNN does not.
const SMALL_PRIVATE: &[&str] = &[
    "--preset", "private", "--teachers", "12", "--threshold", "8", "--sigma1", "6", "--sigma2", "3",
    "--target-epsilon", "30", "--epsilon-limit", "1e6", "--student-model", "mlp", "--teacher-epochs", "20",
    "--student-epochs", "30", "--query-batch", "10",
];

#[test]
fn private_lab_reports_three_epsilons() {
    let dir = tempfile::tempdir().expect("tempdir");
    let out = dir.path().join("lab");
    let o = lab(&out, SMALL_PRIVATE);
    assert!(
        o.status.success(),
        "pate lab failed: {}",
        String::from_utf8_lossy(&o.stderr)
    );
    let r: serde_json::Value =
        serde_json::from_slice(&std::fs::read(out.join("report.json")).expect("report.json")).expect("json");
    let f = |k: &str| r[k].as_f64().unwrap_or_else(|| panic!("report.json lacks {k}: {r}"));
    assert_eq!(r["plan"]["mechanism"]["kind"], "confident-gnmax", "{r}");
    assert_eq!(r["plan"]["semi_supervised"], true);
    assert_eq!(r["plan"]["query_batch"], 10);
    let (di, dd, rel, eps) = (
        f("epsilon_data_independent"),
        f("epsilon_data_dependent"),
        f("epsilon_released"),
        f("epsilon"),
    );
    assert!(dd <= 30.0 + 1e-9, "the target stops the data-dependent epsilon: {r}");
    assert!(f("queries_refused") > 0.0, "the target stopped the student before the pool's end: {r}");
    assert!(dd <= di, "{r}");
    assert!(
        (eps - rel.min(di)).abs() < 1e-12,
        "epsilon is the smaller guarantee: {r}"
    );
    // Chance is 0.1; a few dozen noisy labels and the unlabelled pool.
    assert!(f("queries_answered") > 0.0 && f("student_accuracy") > 0.15, "{r}");
    assert!(r["release"]["noise_std"].as_f64().is_some(), "{r}");
    // The scatter teachers read the public images' features from the one
    // cache the lab wrote (their votes are tested equal either way in
    // pate-ml's feature_cache tests).
    let caches = std::fs::read_dir(out.join("data")).expect("data dir").filter_map(Result::ok);
    assert!(caches.into_iter().any(|e| e.file_name().to_string_lossy().starts_with("scatter-")), "no feature cache written");
    let log = std::fs::read_to_string(out.join("logs").join("teacher-0-serve.log")).expect("teacher log");
    assert!(log.contains("features read from a cache"), "{log}");
    // The answers the student trained on are kept: one released label per
    // answered query, each for a distinct pool item.
    let a: serde_json::Value = serde_json::from_slice(
        &std::fs::read(out.join("student").join("answers.json")).expect("student/answers.json"),
    )
    .expect("json");
    let (idx, labels) = (a["pool_index"].as_array().expect("pool_index"), a["label"].as_array().expect("label"));
    assert_eq!(idx.len() as f64, f("queries_answered"), "{a}");
    assert_eq!(labels.len(), idx.len(), "{a}");
    assert!(labels.iter().all(|l| l.as_u64().is_some_and(|l| l < 10)), "{a}");
    let distinct: std::collections::BTreeSet<u64> = idx.iter().filter_map(serde_json::Value::as_u64).collect();
    assert_eq!(distinct.len(), idx.len(), "{a}");
}

/// `--rank-after`: the student asks 30 queries at random, ranks the rest of
/// the pool with a model trained on those answers, and asks on under its
/// own request ids until the target stops it; the answers still name
/// distinct pool items, one label each, and the run stops at the target.
#[test]
fn ranked_querying_asks_in_two_phases_under_the_same_target() {
    let dir = tempfile::tempdir().expect("tempdir");
    let out = dir.path().join("lab");
    let o = lab(&out, &[SMALL_PRIVATE, &["--rank-after", "30"]].concat());
    assert!(o.status.success(), "pate lab failed: {}", String::from_utf8_lossy(&o.stderr));
    let r: serde_json::Value =
        serde_json::from_slice(&std::fs::read(out.join("report.json")).expect("report.json")).expect("json");
    assert_eq!(r["plan"]["rank_after"], 30, "{r}");
    let answered = r["queries_answered"].as_u64().expect("queries_answered");
    assert!(r["epsilon_data_dependent"].as_f64().expect("dd") <= 30.0 + 1e-9, "{r}");
    let log = std::fs::read_to_string(out.join("logs").join("student.log")).expect("student.log");
    assert!(log.contains("surest first"), "no ranking phase in the student's log:\n{log}");
    assert!(log.contains("-ranked"), "the second phase asks under its own request ids:\n{log}");
    let a: serde_json::Value =
        serde_json::from_slice(&std::fs::read(out.join("student").join("answers.json")).expect("answers.json"))
            .expect("json");
    let idx: Vec<u64> = a["pool_index"].as_array().expect("pool_index").iter().filter_map(|v| v.as_u64()).collect();
    assert_eq!(idx.len() as u64, answered, "{a}");
    assert!(answered > 0 && idx.iter().all(|&i| i < 200), "{a}");
    let distinct: std::collections::BTreeSet<u64> = idx.iter().copied().collect();
    assert_eq!(distinct.len(), idx.len(), "each pool item answered once: {a}");
}
