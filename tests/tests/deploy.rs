//! `pate deploy compose|k8s` and `pate data split` without a container
//! engine: bad input fails cleanly with nothing written; each data owner's
//! directory holds exactly its partition; the Kubernetes manifests pass the
//! Kubernetes schemas in strict mode (offline, `kubernetes-validate`) for 1
//! and 250 teachers; the NetworkPolicies let a teacher be reached only by
//! the aggregator and the aggregator only by students; every party gets
//! its own certificate (a Secret, or a compose volume) and no link runs
//! without TLS.

mod common;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use common::*;
use serde_json::Value;

fn pate(args: &[&str]) -> Output {
    Command::new(bin("pate")).args(args).output().expect("run pate")
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

fn entries(dir: &Path) -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir(dir).expect("ls").map(|e| e.expect("entry").file_name().to_string_lossy().into_owned()).collect();
    v.sort();
    v
}

#[test]
fn bad_input_is_refused_and_nothing_is_written() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let data = data_dir();
    let data = data.to_str().expect("utf-8");
    let out = tmp.path().join("gen");
    let o = out.to_str().expect("utf-8");
    let cases: [(&[&str], &str); 6] = [
        (&["deploy", "compose", "--teachers", "0", "--data", data, "--out", o], "--teachers must be at least 1"),
        (&["deploy", "compose", "--teachers", "2", "--data", data, "--image", "pate image", "--out", o], "not a valid image reference"),
        (&["deploy", "k8s", "--teachers", "0", "--image", "pate:1", "--out", o], "--teachers must be at least 1"),
        (&["deploy", "k8s", "--teachers", "2", "--image", "my registry/pate", "--out", o], "not a valid image reference"),
        (&["deploy", "k8s", "--teachers", "2", "--image", "pate", "--quorum", "3", "--out", o], "--quorum 3"),
        (&["data", "split", "--partitions", "0", "--data", data, "--out", o], "--partitions must be at least 1"),
    ];
    for (args, want) in cases {
        let r = pate(args);
        assert!(!r.status.success(), "{args:?} succeeded");
        assert!(stderr(&r).contains(want), "{args:?}: expected {want:?} in: {}", stderr(&r));
        assert!(!out.exists(), "{args:?} left {} behind", out.display());
        assert_eq!(entries(tmp.path()), Vec::<String>::new(), "{args:?} left a staging directory");
    }
    // An output directory holding someone else's file: refused, untouched.
    std::fs::create_dir(&out).expect("mkdir");
    std::fs::write(out.join("notes.txt"), "mine").expect("write");
    for args in [
        vec!["deploy", "compose", "--teachers", "2", "--data", data, "--out", o],
        vec!["deploy", "k8s", "--teachers", "2", "--image", "pate:1", "--out", o],
        vec!["data", "split", "--partitions", "2", "--data", data, "--out", o],
    ] {
        let r = pate(&args);
        assert!(!r.status.success(), "{args:?} succeeded");
        assert!(stderr(&r).contains("is not empty"), "{args:?}: {}", stderr(&r));
        assert_eq!(entries(&out), ["notes.txt"], "{args:?} wrote into a foreign directory");
        assert_eq!(entries(tmp.path()), ["gen"], "{args:?} left a staging directory");
    }
}

#[test]
fn compose_gives_each_owner_exactly_its_partition() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let out = tmp.path().join("c");
    let data = data_dir();
    let r = pate(&["deploy", "compose", "--teachers", "3", "--seed", "5", "--data", data.to_str().expect("utf-8"), "--out", out.to_str().expect("utf-8")]);
    assert!(r.status.success(), "{}", stderr(&r));
    assert_eq!(entries(&out), ["certs", "data", "docker-compose.yml"]);
    let mut want_certs = vec!["aggregator.key", "aggregator.pem", "ca.key", "ca.pem", "student-0.key", "student-0.pem"];
    want_certs.extend(["teacher-0.key", "teacher-0.pem", "teacher-1.key", "teacher-1.pem", "teacher-2.key", "teacher-2.pem"]);
    assert_eq!(entries(&out.join("certs")), want_certs);
    let yaml = std::fs::read_to_string(out.join("docker-compose.yml")).expect("compose file");
    assert!(!yaml.contains("insecure") && !yaml.contains("PATE_INSECURE"), "a generated deployment must not turn TLS off");
    assert!(!yaml.contains("ca.key"), "the CA's key must be mounted nowhere");
    assert_eq!(entries(&out.join("data")), ["student", "teacher-0", "teacher-1", "teacher-2"]);
    let full = pate_ml::data::load_idx_dir(&data).expect("load");
    let mut seen = 0;
    for i in 0..3 {
        let owner = pate_ml::data::load_idx_dir(&out.join(format!("data/teacher-{i}"))).expect("owner dir");
        let want = full.train.select(&pate_ml::partition::partition_part(full.train.len(), 3, 5, i).expect("part"));
        assert!(owner.train == want, "teacher-{i}'s directory is not exactly partition {i}");
        assert!(owner.test.is_empty(), "teacher-{i} must not get the test split");
        seen += owner.train.len();
    }
    assert_eq!(seen, full.train.len());
    let student = pate_ml::data::load_idx_dir(&out.join("data/student")).expect("student dir");
    assert!(student.train.is_empty(), "the student must not get training data");
    assert!(student.test == full.test);

    // The file is what docker-compose itself accepts, where it is installed.
    if Command::new("docker-compose").arg("version").output().is_ok_and(|o| o.status.success()) {
        let r = Command::new("docker-compose").args(["-f", "docker-compose.yml", "config", "-q"]).current_dir(&out).output().expect("docker-compose");
        assert!(r.status.success(), "docker-compose rejects the file: {}", stderr(&r));
    } else {
        eprintln!("SKIP docker-compose config check: docker-compose not installed");
    }
}

/// `pate deploy k8s` into a fresh directory; the manifests by file name.
fn k8s(teachers: usize, dir: &Path) -> BTreeMap<String, Vec<Value>> {
    let r = pate(&["deploy", "k8s", "--teachers", &teachers.to_string(), "--image", "registry.example.com/pate:0.1.0", "--out", dir.to_str().expect("utf-8")]);
    assert!(r.status.success(), "{}", stderr(&r));
    entries(dir)
        .into_iter()
        .filter(|f| f.ends_with(".yaml"))
        .map(|f| {
            let text = std::fs::read_to_string(dir.join(&f)).expect("read");
            let docs = text.split("\n---\n").skip(1).map(|d| serde_norway::from_str::<Value>(d).expect("yaml")).collect();
            (f, docs)
        })
        .collect()
}

fn validator() -> Option<PathBuf> {
    let path = std::env::var_os("PATE_K8S_VALIDATE").map(PathBuf::from).unwrap_or_else(|| {
        let home = std::env::var_os("HOME").map(PathBuf::from).unwrap_or_default();
        home.join(".cache/pate/venv-k8s/bin/kubernetes-validate")
    });
    if path.is_file() {
        return Some(path);
    }
    let msg = format!("kubernetes-validate not found at {}: run scripts/setup-k8s-validate.sh", path.display());
    assert!(std::env::var_os("PATE_REQUIRE_K8S_VALIDATE").is_none(), "{msg}");
    eprintln!("SKIP k8s schema validation: {msg}");
    None
}

fn validate(validator: &Path, files: &[PathBuf]) -> Output {
    Command::new(validator).args(["--strict", "--kubernetes-version", "1.30.0", "--no-warn"]).args(files).output().expect("run kubernetes-validate")
}

#[test]
fn k8s_manifests_pass_the_schemas_strictly_for_1_and_250_teachers() {
    let Some(v) = validator() else { return };
    for teachers in [1, 250] {
        let dir = tempfile::tempdir().expect("tempdir");
        let docs = k8s(teachers, dir.path());
        let files: Vec<PathBuf> = docs.keys().map(|f| dir.path().join(f)).collect();
        let r = validate(&v, &files);
        assert!(r.status.success(), "{teachers} teachers: {}{}", String::from_utf8_lossy(&r.stdout), stderr(&r));

        let find = |file: &str, kind: &str, name: &str| -> Value {
            docs[file].iter().find(|d| d["kind"] == kind && d["metadata"]["name"] == name).cloned().unwrap_or_else(|| panic!("{kind} {name} in {file}"))
        };
        let job = find("train-teachers.yaml", "Job", "train-teachers");
        assert_eq!(job["spec"]["completionMode"], "Indexed");
        assert_eq!(job["spec"]["completions"], teachers);
        let agg = find("aggregator.yaml", "StatefulSet", "aggregator");
        assert_eq!(agg["spec"]["replicas"], 1);
        assert_eq!(agg["spec"]["volumeClaimTemplates"][0]["metadata"]["name"], "ledger");
        let list = find("aggregator.yaml", "ConfigMap", "aggregator-teachers")["data"]["teachers.txt"].as_str().expect("list").to_string();
        let want: Vec<String> = (0..teachers).map(|i| format!("teacher-{i}:50051")).collect();
        assert_eq!(list.lines().collect::<Vec<_>>(), want, "the aggregator must ask teacher-i for partition i");

        // Each teacher: one pod serving partition i's checkpoint, reached by
        // the Service its certificate names, mounting its own Secret only.
        for i in [0, teachers - 1] {
            let name = format!("teacher-{i}");
            let sts = find("teachers.yaml", "StatefulSet", &name);
            assert_eq!(sts["spec"]["replicas"], 1);
            let pod = &sts["spec"]["template"];
            let selector = serde_json::json!({ "matchLabels": find("teachers.yaml", "Service", &name)["spec"]["selector"] });
            assert!(selects(&selector, &pod["metadata"]["labels"]), "Service {name} misses its pod");
            if i > 0 {
                let first = find("teachers.yaml", "StatefulSet", "teacher-0");
                assert!(!selects(&selector, &first["spec"]["template"]["metadata"]["labels"]), "Service {name} selects teacher-0");
            }
            let volumes = pod["spec"]["volumes"].to_string();
            assert!(volumes.contains(&format!("\"secretName\":\"{name}-tls\"")), "{volumes}");
            assert_eq!(volumes.matches("secretName").count(), 1, "{name} mounts another party's Secret: {volumes}");
            assert_eq!(pod["spec"]["containers"][0]["volumeMounts"][0]["subPath"], name.as_str());
        }
        // One TLS Secret per party, carrying that party's certificate.
        let secrets = &docs["secrets.yaml"];
        assert_eq!(secrets.len(), teachers + 2);
        for sec in secrets {
            assert_eq!(sec["type"], "kubernetes.io/tls");
            for key in ["tls.crt", "tls.key", "ca.crt"] {
                assert!(sec["stringData"][key].as_str().is_some_and(|v| v.contains("-----BEGIN")), "{} lacks {key}", sec["metadata"]["name"]);
            }
        }
        let text: String = docs.values().flatten().map(Value::to_string).collect();
        assert!(!text.contains("--insecure") && !text.contains("PATE_INSECURE"), "a generated deployment must not turn TLS off");
    }

    // The check is strict: a misspelt field is rejected (else it proves nothing).
    let dir = tempfile::tempdir().expect("tempdir");
    k8s(1, dir.path());
    let path = dir.path().join("teachers.yaml");
    let text = std::fs::read_to_string(&path).expect("read").replacen("replicas:", "replica:", 1);
    assert!(text.contains("replica:"), "the mutation must land");
    std::fs::write(&path, text).expect("write");
    let r = validate(&v, &[path]);
    assert!(!r.status.success(), "a misspelt field passed strict validation");
}

/// Whether `selector` (a LabelSelector with matchLabels only) selects `labels`.
fn selects(selector: &Value, labels: &Value) -> bool {
    assert!(selector.get("matchExpressions").is_none(), "only matchLabels is evaluated here");
    selector.get("matchLabels").and_then(Value::as_object).is_none_or(|m| m.iter().all(|(k, v)| labels.get(k) == Some(v)))
}

#[test]
fn network_policies_let_only_the_aggregator_reach_teachers_and_only_students_reach_it() {
    let dir = tempfile::tempdir().expect("tempdir");
    let docs = k8s(3, dir.path());
    let all: Vec<&Value> = docs.values().flatten().collect();
    // Every pod the manifests create, by component, with its labels and ports.
    let pods: BTreeMap<String, Value> = all
        .iter()
        .filter(|d| matches!(d["kind"].as_str(), Some("StatefulSet" | "Job")))
        .map(|d| {
            let labels = d["spec"]["template"]["metadata"]["labels"].clone();
            (labels["app.kubernetes.io/component"].as_str().expect("component").to_string(), labels)
        })
        .collect();
    assert_eq!(pods.keys().collect::<Vec<_>>(), ["aggregator", "student", "teacher", "teacher-train"]);
    let policies: Vec<&Value> = all.iter().copied().filter(|d| d["kind"] == "NetworkPolicy").collect();

    // Ingress to `dst` on `port` from `src` is allowed iff no policy isolates
    // dst, or one of those that do has a rule admitting src on that port.
    let allowed = |src: &str, dst: &str, port: u64| -> bool {
        let isolating: Vec<&&Value> = policies
            .iter()
            .filter(|p| selects(&p["spec"]["podSelector"], &pods[dst]) && p["spec"]["policyTypes"].as_array().expect("types").contains(&Value::from("Ingress")))
            .collect();
        if isolating.is_empty() {
            return true;
        }
        isolating.iter().any(|p| {
            p["spec"]["ingress"].as_array().into_iter().flatten().any(|rule| {
                let from_ok = rule["from"].as_array().into_iter().flatten().any(|f| f.get("podSelector").is_some_and(|s| selects(s, &pods[src])));
                let port_ok = rule["ports"].as_array().is_none_or(|ps| ps.iter().any(|p| p["port"] == port));
                from_ok && port_ok
            })
        })
    };
    assert!(allowed("aggregator", "teacher", 50051));
    assert!(allowed("student", "aggregator", 50050));
    for src in ["student", "teacher", "teacher-train"] {
        assert!(!allowed(src, "teacher", 50051), "{src} can reach a teacher");
    }
    for src in ["teacher", "teacher-train", "aggregator"] {
        assert!(!allowed(src, "aggregator", 50050), "{src} can reach the aggregator's Label port");
    }
    assert!(!allowed("aggregator", "teacher", 9090), "the teacher policy must admit the gRPC port only");
    for dst in ["student", "teacher-train"] {
        assert!(!allowed("aggregator", dst, 50051), "{dst} accepts ingress");
    }
    // Each policy selects exactly the pods its name claims.
    let selected = |name: &str| -> Vec<&str> {
        let p = policies.iter().find(|p| p["metadata"]["name"] == name).unwrap_or_else(|| panic!("policy {name}"));
        pods.iter().filter(|(_, l)| selects(&p["spec"]["podSelector"], l)).map(|(c, _)| c.as_str()).collect()
    };
    assert_eq!(selected("teacher-from-aggregator"), ["teacher"]);
    assert_eq!(selected("aggregator-from-students"), ["aggregator"]);
    assert_eq!(selected("train-no-egress"), ["teacher-train"]);
    assert_eq!(selected("default-deny-ingress"), ["aggregator", "student", "teacher", "teacher-train"]);
    let train = policies.iter().find(|p| p["metadata"]["name"] == "train-no-egress").expect("train policy");
    assert!(train["spec"].get("egress").is_none(), "training pods must get no egress rule at all");
}
