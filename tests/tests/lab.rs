//! `pate lab` end to end: real binaries as processes over loopback, on real
//! Fashion-MNIST, in a small configuration.

mod common;

use std::process::Command;

#[test]
fn lab_runs_the_whole_pipeline_on_real_data() {
    let dir = tempfile::tempdir().expect("tempdir");
    let out = dir.path().join("lab");
    let bin_dir = common::bin("pate-teacher").parent().expect("bin dir").to_path_buf();
    let status = Command::new(common::bin("pate"))
        .args(["lab", "--preset", "fast", "--teachers", "5", "--queries", "400", "--teacher-epochs", "3", "--student-epochs", "30"])
        .args(["--noise-scale", "1", "--delta", "0", "--jobs", "2"])
        .arg("--bin-dir")
        .arg(&bin_dir)
        .arg("--out")
        .arg(&out)
        .status()
        .expect("run pate lab");
    assert!(status.success(), "pate lab failed: {status}");
    let report: serde_json::Value =
        serde_json::from_slice(&std::fs::read(out.join("report.json")).expect("report.json")).expect("json");
    let f = |k: &str| report[k].as_f64().unwrap_or_else(|| panic!("report.json lacks {k}: {report}"));
    assert_eq!(f("num_teachers"), 5.0);
    assert_eq!(f("queries_answered"), 400.0);
    // Pure LNMax composition, by hand: 400 answers at 2/b = 2 each.
    assert_eq!(f("delta"), 0.0);
    assert!((f("epsilon") - 800.0).abs() < 1e-9, "epsilon {}", f("epsilon"));
    // Chance is 0.10 on Fashion-MNIST; these teachers see 12,000 items each.
    assert!(f("ensemble_accuracy") > 0.75, "ensemble {}", f("ensemble_accuracy"));
    assert!(f("student_accuracy") > 0.60, "student {}", f("student_accuracy"));
    for key in ["train_teachers_seconds", "student_seconds", "total_seconds"] {
        assert!(f(key) > 0.0);
    }
    // Every released label is in the durable ledger.
    let ledger = pate_aggregator::Ledger::open_read_only(&out.join("ledger.db")).expect("ledger");
    let queries = ledger.queries().expect("queries");
    assert_eq!(queries.len(), 400);
    assert!(queries.iter().all(|q| q.histogram.iter().sum::<u32>() == 5 && q.answer.is_some()));
    // Every link ran mutual TLS with certificates the lab provisioned.
    for party in ["aggregator", "teacher-4", "student-0"] {
        assert!(out.join(format!("certs/{party}.pem")).is_file(), "no certificate for {party}");
    }
    let log = std::fs::read_to_string(out.join("logs/aggregator.log")).expect("aggregator log");
    assert!(log.contains("mutual TLS on") && !log.contains("--insecure"), "{log}");
    // No child outlives the lab.
    let ps = Command::new("pgrep").args(["-f", &out.display().to_string()]).output().expect("pgrep");
    assert!(ps.stdout.is_empty(), "children still running: {}", String::from_utf8_lossy(&ps.stdout));
}

/// Any IDX dataset works: scikit-learn's 8x8 handwritten digits (shipped in
/// tests/data/digits), 1,397 training and 400 test items, with the split
/// moved by --eval-size. The pool is 400 - 200 = 200 items.
#[test]
fn lab_runs_on_another_idx_dataset() {
    let dir = tempfile::tempdir().expect("tempdir");
    let out = dir.path().join("lab");
    let data = concat!(env!("CARGO_MANIFEST_DIR"), "/data/digits");
    let status = Command::new(common::bin("pate"))
        .args(["lab", "--preset", "fast", "--data", data, "--teachers", "3", "--queries", "200", "--eval-size", "200"])
        .args(["--teacher-epochs", "20", "--noise-scale", "0.5", "--delta", "0"])
        .arg("--out")
        .arg(&out)
        .status()
        .expect("run pate lab");
    assert!(status.success(), "pate lab failed: {status}");
    let report: serde_json::Value =
        serde_json::from_slice(&std::fs::read(out.join("report.json")).expect("report.json")).expect("json");
    assert_eq!(report["queries_asked"], 200, "{report}");
    assert_eq!(report["queries_answered"], 200);
    assert!(report["student_accuracy"].as_f64().expect("accuracy") > 0.6, "{report}");

    // Again on the same teachers: none is trained twice. With every
    // process's --max-batch at 64 (below the 200 evaluation items): the
    // lab's own ensemble measurement must ask in calls a teacher takes.
    let o = Command::new(common::bin("pate"))
        .args(["lab", "--preset", "fast", "--data", data, "--teachers", "3", "--queries", "200", "--eval-size", "200"])
        .args(["--teacher-epochs", "20", "--noise-scale", "0.5", "--delta", "0", "--reuse-teachers"])
        .env("PATE_MAX_BATCH", "64")
        .arg("--out")
        .arg(&out)
        .output()
        .expect("run pate lab");
    let stdout = String::from_utf8_lossy(&o.stdout);
    assert!(o.status.success(), "pate lab --reuse-teachers failed: {}", String::from_utf8_lossy(&o.stderr));
    assert!(stdout.contains("reusing 3 teachers") && !stdout.contains("trained teacher"), "{stdout}");
}
