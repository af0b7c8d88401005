//! `--config FILE` on the three servers, as an operator uses it: the
//! shipped examples are accepted, a typo is refused by name, and flags and
//! PATE_* variables win over the file.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

fn example(role: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../docs/config").join(format!("{role}.toml"))
}

/// Runs a binary in a scratch directory (the aggregator writes its ledger
/// in the working directory by default), with PATE_* variables cleared.
fn run(name: &str, args: &[&str], env: &[(&str, &str)], dir: &Path) -> Output {
    let mut cmd = Command::new(common::bin(name));
    cmd.args(args).current_dir(dir);
    for (key, _) in std::env::vars().filter(|(k, _)| k.starts_with("PATE_")) {
        cmd.env_remove(key);
    }
    cmd.envs(env.iter().copied()).output().expect("run binary")
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

#[test]
fn the_shipped_examples_are_accepted() {
    let dir = tempfile::tempdir().expect("tempdir");
    let cases: [(&str, &str, &[&str]); 4] = [
        ("pate-aggregator", "aggregator", &[]),
        ("pate-student", "student", &[]),
        ("pate-teacher", "teacher", &["train"]),
        ("pate-teacher", "teacher", &["serve"]),
    ];
    for (bin, role, sub) in cases {
        let file = example(role);
        let mut args: Vec<&str> = sub.to_vec();
        args.extend(["--config", file.to_str().expect("utf-8"), "--help"]);
        let out = run(bin, &args, &[], dir.path());
        assert!(out.status.success(), "{bin} {args:?}: {}", stderr(&out));
    }
}

#[test]
fn a_typo_in_the_file_is_refused_by_name() {
    let dir = tempfile::tempdir().expect("tempdir");
    let file = dir.path().join("agg.toml");
    std::fs::write(&file, "epsilon-limt = 2.0\n").expect("write");
    let out = run("pate-aggregator", &["--config", file.to_str().expect("utf-8")], &[], dir.path());
    assert!(!out.status.success());
    assert!(stderr(&out).contains("unknown key `epsilon-limt`"), "{}", stderr(&out));
    let out = run("pate-aggregator", &["--config", "/nonexistent/agg.toml"], &[], dir.path());
    assert!(!out.status.success());
    assert!(stderr(&out).contains("/nonexistent/agg.toml"), "{}", stderr(&out));
}

#[test]
fn flags_and_env_override_the_file() {
    let dir = tempfile::tempdir().expect("tempdir");
    let file = dir.path().join("agg.toml");
    // A value clap rejects shows whether the file's value is the one used.
    std::fs::write(&file, "mechanism = \"nonsense\"\nconnect-timeout = 0.0\n").expect("write");
    let path = file.to_str().expect("utf-8");

    let from_file = run("pate-aggregator", &["--config", path], &[], dir.path());
    assert_eq!(from_file.status.code(), Some(2), "a clap usage error: {}", stderr(&from_file));
    assert!(stderr(&from_file).contains("nonsense"), "{}", stderr(&from_file));

    let from_env = run("pate-aggregator", &[], &[("PATE_CONFIG", path)], dir.path());
    assert!(stderr(&from_env).contains("nonsense"), "PATE_CONFIG names the file: {}", stderr(&from_env));

    // With the mechanism set by a flag or a variable the file's value is not
    // used; the aggregator then fails later (it has no teachers), not on it.
    for (args, env) in [
        (vec!["--config", path, "--mechanism", "gnmax"], vec![]),
        (vec!["--config", path], vec![("PATE_MECHANISM", "gnmax")]),
    ] {
        let out = run("pate-aggregator", &args, &env, dir.path());
        assert!(!stderr(&out).contains("nonsense"), "{args:?} {env:?}: {}", stderr(&out));
    }
}
