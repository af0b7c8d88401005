//! `pate experiment backdoor` end to end: a small PATE configuration with one
//! poisoned teacher of four (chosen by index), real binaries as processes over loopback, on
//! real Fashion-MNIST.

mod common;

use std::process::Command;

#[test]
fn backdoor_experiment_measures_every_stage() {
    let dir = tempfile::tempdir().expect("tempdir");
    let out = dir.path().join("backdoor");
    let bin_dir = common::bin("pate-teacher").parent().expect("bin dir").to_path_buf();
    let status = Command::new(common::bin("pate"))
        .args(["experiment", "backdoor", "--teachers", "4", "--poisoned-ids", "2", "--poison-rate", "0.1"])
        .args(["--queries", "200", "--teacher-epochs", "2", "--student-epochs", "20", "--noise-scale", "1", "--delta", "0"])
        .args(["--jobs", "2", "--data"])
        .arg(common::data_dir())
        .arg("--bin-dir")
        .arg(&bin_dir)
        .arg("--out")
        .arg(&out)
        .status()
        .expect("run pate experiment backdoor");
    assert!(status.success(), "pate experiment backdoor failed: {status}");
    let report: serde_json::Value =
        serde_json::from_slice(&std::fs::read(out.join("report.json")).expect("report.json")).expect("json");
    let f = |k: &str| report[k].as_f64().unwrap_or_else(|| panic!("report.json lacks {k}: {report}"));
    for key in [
        "teacher_asr_poisoned", "teacher_asr_clean", "ensemble_asr", "student_asr", "student_accuracy",
        "reference_student_asr", "reference_student_accuracy", "epsilon", "certified_share", "noisy_aggregate_asr",
    ] {
        let v = f(key);
        assert!((0.0..=1.0).contains(&v) || key == "epsilon", "{key} = {v}");
    }
    // Pure LNMax: 200 answers at 2/b = 2 each.
    assert!((f("epsilon") - 400.0).abs() < 1e-9, "epsilon {}", f("epsilon"));
    // The poisoned teacher learned the trigger; clean ones did not.
    assert!(f("teacher_asr_poisoned") > 0.6, "poisoned teacher ASR {}", f("teacher_asr_poisoned"));
    assert!(f("teacher_asr_poisoned") > f("teacher_asr_clean") + 0.4, "{report}");
    // One vote of four cannot carry the plurality, and the student never saw the trigger.
    assert!(f("ensemble_asr") < 0.3, "ensemble ASR {}", f("ensemble_asr"));
    assert!(f("student_asr") < 0.3, "student ASR {}", f("student_asr"));
    assert!((f("student_asr") - f("reference_student_asr")).abs() < 0.15, "{report}");
    assert!(f("student_accuracy") > 0.5 && f("reference_student_accuracy") > 0.5, "{report}");
    assert_eq!(report["teachers"].as_array().map(Vec::len), Some(4));
    assert_eq!(report["poisoned_ids"], serde_json::json!([2]), "{report}");
    assert_eq!(report["poisoned_teachers"], 1);
    let asr = |i: usize| report["teachers"][i]["asr"].as_f64().expect("teacher asr");
    assert!((0..4).filter(|&i| i != 2).all(|i| asr(i) + 0.4 < asr(2)), "teacher 2 is the poisoned one: {report}");
    let cert = &report["certified_clean"]["certified_accuracy"];
    assert_eq!(cert.as_array().map(Vec::len), Some(3), "radii 0..=2 for 4 teachers");
    // No child outlives the experiment.
    let ps = Command::new("pgrep").args(["-f", &out.display().to_string()]).output().expect("pgrep");
    assert!(ps.stdout.is_empty(), "children still running: {}", String::from_utf8_lossy(&ps.stdout));
}

/// `pate experiment run` on a lab grid (`experiment = "lab"`): every cell a
/// real `pate lab` process on the small digits set; the two cells differ
/// only in the aggregator's noise, so the second starts from hard links of
/// the first one's teachers instead of training them; the tables have one
/// line per cell and one group per configuration.
#[test]
fn lab_grid_runs_pate_lab_per_cell_and_shares_teachers() {
    let dir = tempfile::tempdir().expect("tempdir");
    let out = dir.path().join("grid");
    let grid = dir.path().join("grid.toml");
    let digits = concat!(env!("CARGO_MANIFEST_DIR"), "/data/digits");
    std::fs::write(
        &grid,
        format!(
            "experiment = \"lab\"\n[defaults]\npreset = \"fast\"\ndata = \"{digits}\"\nteachers = 3\nqueries = 100\neval_size = 200\n\
             student_epochs = 5\ninsecure = true\n[[grid]]\nnoise_scale = [1.0, 4.0]\n"
        ),
    )
    .expect("grid file");
    let bin_dir = common::bin("pate-teacher").parent().expect("bin dir").to_path_buf();
    let status = Command::new(common::bin("pate"))
        .args(["experiment", "run"])
        .arg(&grid)
        .arg("--out")
        .arg(&out)
        .arg("--bin-dir")
        .arg(&bin_dir)
        .args(["--jobs", "2"])
        .status()
        .expect("run pate experiment run");
    assert!(status.success(), "pate experiment run failed: {status}");
    let cells: Vec<std::path::PathBuf> = {
        let mut c: Vec<_> = std::fs::read_dir(out.join("cells")).expect("cells").map(|e| e.expect("entry").path()).collect();
        c.sort();
        c
    };
    assert_eq!(cells.len(), 2, "{cells:?}");
    let log = |c: &std::path::Path| std::fs::read_to_string(c.join("lab.log")).expect("lab.log");
    assert!(!log(&cells[0]).contains("reusing"), "the first cell trains its teachers");
    assert!(log(&cells[1]).contains("reusing 3 teachers"), "the second shares them: {}", log(&cells[1]));
    for c in &cells {
        let r: serde_json::Value = serde_json::from_slice(&std::fs::read(c.join("report.json")).expect("report.json")).expect("json");
        assert_eq!(r["queries_answered"], 100, "{r}");
    }
    let csv = std::fs::read_to_string(out.join("results.csv")).expect("results.csv");
    assert_eq!(csv.lines().count(), 3, "{csv}");
    assert!(csv.contains("--noise-scale=4.0"), "{csv}");
    let summary: serde_json::Value = serde_json::from_slice(&std::fs::read(out.join("summary.json")).expect("summary")).expect("json");
    assert_eq!(summary.as_array().map(Vec::len), Some(2));
    assert!(out.join("accuracy-epsilon.png").is_file() && out.join("report.md").is_file());
    // A second run finds every cell done and trains nothing.
    let again = Command::new(common::bin("pate")).args(["experiment", "run"]).arg(&grid).arg("--out").arg(&out).arg("--bin-dir").arg(&bin_dir).output().expect("rerun");
    assert!(again.status.success());
    assert_eq!(String::from_utf8_lossy(&again.stdout).matches("done before").count(), 2, "{}", String::from_utf8_lossy(&again.stdout));
}
