//! `pate experiment robustness` end to end on the small digits data set
//! (8x8, in the repository): every section runs, the report has its keys,
//! and what the papers predict at this scale holds where it could fail;
//! bad parameters are clear errors; a two-seed grid averages its cells.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

fn digits() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("data/digits")
}

/// Small sizes for the 1,397 training and 400 test items of digits.
const SMALL: &[&str] = &[
    "--train-size", "0", "--epochs", "15", "--distill-epochs", "15", "--eval-size", "200", "--calibration-size", "80", "--public-size", "120",
    "--substitute-items", "60", "--jacobian-rounds", "2", "--substitute-epochs", "15", "--teachers", "3",
    "--student-epochs", "30", "--k", "10", "--dknn-train", "1000", "--dknn-eval", "100", "--trigger-size", "3",
    "--backdoor-seeds", "2", "--finetune-epochs", "5",
];

fn robustness(extra: &[&str], out: &Path) -> Output {
    Command::new(common::bin("pate"))
        .args(["experiment", "robustness", "--data"])
        .arg(digits())
        .args(extra)
        .arg("--out")
        .arg(out)
        .output()
        .expect("run pate experiment robustness")
}

#[test]
fn robustness_experiment_measures_every_section() {
    let dir = tempfile::tempdir().expect("tempdir");
    let out = dir.path().join("robust");
    let res = robustness(SMALL, &out);
    assert!(res.status.success(), "failed: {}\n{}", String::from_utf8_lossy(&res.stdout), String::from_utf8_lossy(&res.stderr));
    let r: serde_json::Value = serde_json::from_slice(&std::fs::read(out.join("report.json")).expect("report.json")).expect("json");
    let f = |path: &[&str]| -> f64 {
        path.iter().try_fold(&r, |v, k| v.get(k)).and_then(serde_json::Value::as_f64).unwrap_or_else(|| panic!("report.json lacks {path:?}"))
    };
    for key in [
        "ece_before", "ece_after", "temperature", "dknn_auc_fgsm", "dknn_auc_trigger", "dknn_auc_ood", "finetune_asr", "distill_asr",
        "clean_asr", "clean_accuracy",
    ] {
        let v = f(&[key]);
        assert!(v.is_finite() && v >= 0.0 && (v <= 1.0 || key == "temperature"), "{key} = {v}");
    }
    for eps in ["0.05", "0.1", "0.2", "0.3"] {
        for key in ["fgsm_accuracy", "adv_trained_fgsm_accuracy"] {
            let v = f(&[key, eps]);
            assert!((0.0..=1.0).contains(&v), "{key}[{eps}] = {v}");
        }
        for t in ["20", "100"] {
            assert!((0.0..=1.0).contains(&f(&["distilled_fgsm_accuracy", t, eps])));
            assert!((0.0..=1.0).contains(&f(&["distilled_transfer_accuracy", t, eps])));
            assert!((0.0..=1.0).contains(&f(&["distilled_fgsm_at_t_accuracy", t, eps])));
        }
    }
    for t in ["20", "100"] {
        let gap = f(&["distilled_saturation", t, "median_logit_gap"]);
        let dead = f(&["distilled_saturation", t, "zero_gradient_items"]);
        assert!(gap.is_finite() && gap >= 0.0 && (0.0..=1.0).contains(&dead), "T = {t}: gap {gap}, dead {dead}");
        // Through the logits divided by T the gradient is back: FGSM at 0.3
        // takes most of the distilled model's accuracy, whatever the masking.
        let clean_t = f(&["distilled_clean_accuracy", t]);
        assert!(f(&["distilled_fgsm_at_t_accuracy", t, "0.3"]) < clean_t - 0.3, "T = {t}: {r}");
    }
    let clean = f(&["clean_accuracy"]);
    assert!(clean > 0.7, "the standard model learned digits: {clean}");
    // FGSM works: at 0.3 the standard model loses most of its accuracy,
    // more than at 0.05.
    assert!(f(&["fgsm_accuracy", "0.3"]) < clean - 0.3, "{r}");
    assert!(f(&["fgsm_accuracy", "0.3"]) <= f(&["fgsm_accuracy", "0.05"]), "{r}");
    // Adversarial training at 0.1 helps against FGSM at 0.1.
    assert!(f(&["adv_trained_fgsm_accuracy", "0.1"]) > f(&["fgsm_accuracy", "0.1"]), "{r}");
    // Temperature scaling fitted on the calibration split does not make it worse there.
    let single = &r["calibration"][0];
    assert_eq!(single["model"], "single");
    let g = |k: &str| single[k].as_f64().unwrap_or_else(|| panic!("calibration lacks {k}"));
    assert!(g("fit_nll_after") <= g("fit_nll_before") + 1e-9, "{single}");
    assert!(g("fit_ece_after") <= g("fit_ece_before") + 0.02, "{single}");
    assert!(r["calibration"].as_array().map(Vec::len) == Some(1 + 3 + 1), "single, 3 teachers, student");
    // The backdoor took: the poisoned model's ASR is far above the clean model's.
    assert!(f(&["poisoned_asr"]) > f(&["clean_asr"]) + 0.3, "{r}");
    assert_eq!(r["backdoor"].as_array().map(Vec::len), Some(2));
    for plot in ["accuracy_vs_epsilon", "distillation_vs_epsilon", "reliability", "credibility"] {
        for ext in ["png", "svg"] {
            assert!(out.join(format!("{plot}.{ext}")).is_file(), "{plot}.{ext}");
        }
    }
    let md = std::fs::read_to_string(out.join("report.md")).expect("report.md");
    assert!(md.contains("Deep k-NN") && md.contains("substitute"), "{md}");
}

#[test]
fn bad_parameters_are_clear_errors() {
    let dir = tempfile::tempdir().expect("tempdir");
    for (flags, want) in [
        (&["--epsilons", "0.1,1.5"][..], "epsilon must be in [0, 1]"),
        (&["--train-eps=-0.1"][..], "epsilon must be in [0, 1]"),
        (&["--temperatures", "20,0"][..], "temperature must be positive"),
        (&["--distill-temperature=-2"][..], "temperature must be positive"),
        (&["--k", "100", "--dknn-train", "50"][..], "larger than the Deep k-NN training set"),
        // k fits --dknn-train but not the 1,397 training items of digits.
        (&["--k", "1500", "--dknn-train", "2000", "--eval-size", "200", "--calibration-size", "50", "--public-size", "100"][..], "larger than the Deep k-NN training set (1397 items)"),
        (&["--calibration-size", "3"][..], "too few calibration items"),
    ] {
        let res = robustness(flags, &dir.path().join("bad"));
        let err = String::from_utf8_lossy(&res.stderr);
        assert!(!res.status.success(), "{flags:?} accepted");
        assert!(err.contains(want), "{flags:?}: {err}");
        assert!(!err.contains("panicked"), "{flags:?}: {err}");
    }
}

#[test]
fn a_robustness_grid_averages_its_seeds() {
    let dir = tempfile::tempdir().expect("tempdir");
    let file = dir.path().join("grid.toml");
    std::fs::write(
        &file,
        "experiment = \"robustness\"\n[defaults]\ntrain_size = 600\nepochs = 5\neval_size = 200\ncalibration_size = 50\npublic_size = 100\n\
         substitute_items = 30\njacobian_rounds = 1\nsubstitute_epochs = 3\nteachers = 2\nstudent_epochs = 5\nk = 5\ndknn_train = 300\n\
         dknn_eval = 50\ntrigger_size = 3\nbackdoor_seeds = 1\nfinetune_epochs = 2\nepsilons = [0.1, 0.3]\ntemperatures = [20.0]\ndistill_epochs = 5\n[[grid]]\nseeds = [0, 1]\n",
    )
    .expect("grid file");
    let out = dir.path().join("grid");
    let res = Command::new(common::bin("pate"))
        .args(["experiment", "run"])
        .arg(&file)
        .arg("--data")
        .arg(digits())
        .arg("--out")
        .arg(&out)
        .output()
        .expect("run pate experiment run");
    assert!(res.status.success(), "failed: {}\n{}", String::from_utf8_lossy(&res.stdout), String::from_utf8_lossy(&res.stderr));
    // Not a terminal: plain lines, no progress bar or other control codes.
    for (name, text) in [("stdout", &res.stdout), ("stderr", &res.stderr)] {
        assert!(!text.contains(&0x1b) && !text.contains(&b'\r'), "{name} holds control codes: {}", String::from_utf8_lossy(text));
    }
    let stdout = String::from_utf8_lossy(&res.stdout);
    assert!(stdout.contains("[  1/2]") && stdout.contains("[  2/2]"), "the cells' plain progress lines: {stdout}");
    let summary: serde_json::Value = serde_json::from_slice(&std::fs::read(out.join("summary.json")).expect("summary.json")).expect("json");
    assert_eq!(summary.as_array().map(Vec::len), Some(1), "one group of two seeds");
    assert_eq!(summary[0]["seeds"], serde_json::json!([0, 1]));
    let cell = |i: usize| -> f64 {
        let p = out.join("cells").join(format!("{i:03}-mlp-s{i}")).join("report.json");
        let v: serde_json::Value = serde_json::from_slice(&std::fs::read(&p).expect("cell report")).expect("json");
        v["clean_accuracy"].as_f64().expect("clean accuracy")
    };
    let mean = summary[0]["mean"]["clean_accuracy"].as_f64().expect("mean");
    assert!((mean - (cell(0) + cell(1)) / 2.0).abs() < 1e-9, "{mean}");
    assert!(summary[0]["sd"]["fgsm_accuracy"]["0.3"].is_number());
    assert!(std::fs::read_to_string(out.join("report.md")).expect("report.md").contains("±"));
    assert!(out.join("group0-mlp").join("accuracy_vs_epsilon.png").is_file());
}
