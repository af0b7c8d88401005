//! The federated lab on the real Docker engine (scripts/compose-lab.sh):
//! four teacher containers, each holding only its partition; the student
//! queries through the aggregator while a drill runs. Asserts: the report
//! is written with `pate lab`'s keys and a sane student; from inside the
//! student container no teacher is reachable (by name or address) while
//! the aggregator is; one teacher killed mid-run and the run still
//! completes with quorum; the aggregator restarted mid-run and the ledger
//! holds every query exactly once with the budget the student was told
//! (no double spend, no loss); /metrics scraped twice shows counters moving;
//! every link is mutual TLS and each container holds only its own key.
//! Where the Docker engine or docker-compose is missing it says so and skips.

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;

use common::sample;
use serde_json::Value;

/// The repository root, when the Docker engine and a compose are there;
/// otherwise None, having said why the test skips.
fn docker_or_skip() -> Option<&'static Path> {
    let ok = |cmd: &str, args: &[&str]| Command::new(cmd).args(args).output().is_ok_and(|o| o.status.success());
    let why = if !ok("docker", &["info"]) {
        "the Docker engine is not reachable (docker info failed)"
    } else if !ok("docker-compose", &["version"]) && !ok("docker", &["compose", "version"]) {
        "neither docker-compose nor `docker compose` is installed"
    } else {
        return Path::new(env!("CARGO_MANIFEST_DIR")).parent();
    };
    eprintln!("SKIP compose lab on Docker: {why}");
    None
}

/// The release binaries, next to the debug ones (scripts/test.sh builds them).
fn release_dir() -> Option<PathBuf> {
    let debug = common::bin("pate");
    let dir = debug.parent()?.parent()?.join("release");
    dir.join("pate-aggregator").is_file().then_some(dir)
}

fn read_json(p: &Path) -> Value {
    serde_json::from_slice(&std::fs::read(p).unwrap_or_else(|e| panic!("{}: {e}", p.display()))).expect("json")
}

#[test]
fn compose_lab_refuses_bad_input_before_touching_anything() {
    let Some(root) = docker_or_skip() else { return };
    let Some(bin) = release_dir() else {
        eprintln!("SKIP compose-lab bad input: no release binaries (scripts/test.sh builds them)");
        return;
    };
    let tmp = tempfile::tempdir().expect("tempdir");
    let out = tmp.path().join("lab");
    let run = |args: &[&str]| {
        let o = Command::new(root.join("scripts/compose-lab.sh")).args(args).arg("--out").arg(&out).env("PATE_BIN_DIR", &bin).output().expect("run");
        (o.status.success(), String::from_utf8_lossy(&o.stderr).into_owned())
    };
    for (args, want) in [
        (&["--teachers", "0"][..], "--teachers must be at least 1"),
        (&["--teachers", "2", "--image", "pate image"][..], "not a valid image reference"),
    ] {
        let (ok, err) = run(args);
        assert!(!ok && err.contains(want), "{args:?}: {err}");
        assert!(!out.exists(), "{args:?} left {} behind", out.display());
    }
    std::fs::create_dir(&out).expect("mkdir");
    std::fs::write(out.join("notes.txt"), "mine").expect("write");
    let (ok, err) = run(&["--teachers", "2"]);
    assert!(!ok && err.contains("is not empty"), "{err}");
    assert_eq!(std::fs::read_dir(&out).expect("ls").count(), 1, "a foreign directory was written into");
}

#[test]
fn compose_lab_survives_a_killed_teacher_and_a_restarted_aggregator_and_isolates_the_student() {
    let Some(root) = docker_or_skip() else { return };
    let tmp = tempfile::tempdir().expect("tempdir");
    let out = tmp.path().join("lab");
    let mut cmd = Command::new(root.join("scripts/compose-lab.sh"));
    cmd.args([
        "--teachers", "4", "--queries", "300", "--teacher-epochs", "2", "--student-epochs", "20", "--noise-scale", "0.5",
        "--query-batch", "5", "--query-interval", "0.5", "--drill", "--out",
    ])
    .arg(&out);
    if let Some(dir) = release_dir() {
        cmd.env("PATE_BIN_DIR", dir);
    }
    let status = cmd.status().expect("run scripts/compose-lab.sh");
    assert!(status.success(), "compose-lab failed; logs under {}", out.join("logs").display());

    // The report, with pate lab's keys.
    let report = read_json(&out.join("report.json"));
    let keys: Vec<&str> = report.as_object().expect("object").keys().map(String::as_str).collect();
    for k in ["num_teachers", "queries_asked", "queries_answered", "epsilon", "delta", "student_accuracy", "ensemble_accuracy", "teacher_accuracies", "label_accuracy", "total_seconds"] {
        assert!(keys.contains(&k), "report.json lacks {k}: {keys:?}");
    }
    assert_eq!(report["num_teachers"], 4);
    assert_eq!(report["queries_asked"], 300);
    assert_eq!(report["queries_answered"], 300, "the run must complete with quorum after a teacher died");
    let student = report["student_accuracy"].as_f64().expect("accuracy");
    assert!(student > 0.4, "student accuracy {student} is not sane (chance is 0.1)");
    assert!(report["ensemble_accuracy"].as_f64().expect("ensemble") > 0.6);
    for log in ["aggregator", "student", "teacher-0", "train-0"] {
        assert!(out.join(format!("logs/{log}.log")).is_file(), "no log of {log}");
    }

    // Isolation, probed from inside the student container.
    let drill = read_json(&out.join("drill.json"));
    assert_eq!(drill["student_to_teacher_by_name"], false, "the student reached a teacher by name");
    assert_eq!(drill["student_to_teacher_by_ip"], false, "the student reached a teacher by address");
    assert_eq!(drill["student_to_aggregator"], true, "control: the probe must reach the aggregator");
    assert_eq!(drill["aggregator_to_teacher"], true, "control: the aggregator must reach a teacher");
    assert_eq!(drill["student_running_after_probes"], true, "the probes must run inside the live student container");
    // Each container holds its own certificate, key and the CA, nothing
    // else, owned by the image's user with the key private to it.
    for who in ["certs_teacher_0", "certs_student", "certs_aggregator"] {
        assert_eq!(drill[who], "ca.crt:10001:644 tls.crt:10001:644 tls.key:10001:600", "{who}");
    }
    assert_eq!(drill["aggregator_health_after_kill"], "healthy", "3 of 4 teachers make the quorum");

    // Metrics moved between the two scrapes; the killed teacher shows errors.
    let m1 = std::fs::read_to_string(out.join("metrics-1.txt")).expect("metrics-1");
    let m2 = std::fs::read_to_string(out.join("metrics-2.txt")).expect("metrics-2");
    let answered = r#"pate_aggregator_queries_total{outcome="answered"}"#;
    assert!(sample(&m2, answered) > sample(&m1, answered) && sample(&m1, answered) > 0.0, "answered counter did not move");
    assert!(sample(&m2, "pate_aggregator_epsilon_spent") > sample(&m1, "pate_aggregator_epsilon_spent"));
    assert!(sample(&m2, r#"pate_aggregator_teacher_errors_total{teacher="teacher-3:50051"}"#) >= 1.0, "the killed teacher shows no errors:\n{m2}");

    // The aggregator really restarted, and restored a non-empty budget.
    let agg_log = std::fs::read_to_string(out.join("logs/aggregator.log")).expect("aggregator log");
    assert_eq!(agg_log.matches("budget restored").count(), 2, "the aggregator did not restart once");
    // The ledger holds every query once, and the budget the student was told.
    let ledger = out.join("collected/ledger/ledger.db");
    let o = Command::new(common::bin("pate")).args(["privacy", "report", "--delta", "1e-5", "--ledger"]).arg(&ledger).output().expect("pate privacy report");
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let lr: Value = serde_json::from_slice(&o.stdout).expect("ledger report");
    assert_eq!(lr["queries_answered"], 300, "answers lost or double-recorded across the restart");
    assert_eq!(lr["queries_abstained"], 0);
    let (told, recorded) = (report["epsilon"].as_f64().expect("eps"), lr["data_independent_epsilon"].as_f64().expect("eps"));
    assert!((told - recorded).abs() <= 1e-9 * recorded.max(1.0), "student was told epsilon {told}, the ledger holds {recorded}");
}
