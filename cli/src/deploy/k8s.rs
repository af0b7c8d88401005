//! `pate deploy k8s`: plain Kubernetes manifests for the same parties.
//!
//! - `train-teachers.yaml`: an Indexed Job, completion index = partition;
//!   each pod mounts only `teacher-<index>/` of the owners' data volume
//!   (subPathExpr) and writes its checkpoint to `teacher-<index>/` of the
//!   models volume. No network: an egress-deny policy covers it.
//! - `teachers.yaml`: per partition `i` a headless Service and a
//!   single-replica StatefulSet `teacher-<i>`, serving the checkpoint of
//!   partition `i` once the Job wrote it. One StatefulSet per teacher
//!   rather than one with N ordinals because each teacher mounts its own
//!   TLS Secret and no other, and a pod template cannot name a Secret per
//!   ordinal (mounting them all would put every teacher's key on every node
//!   that runs a teacher).
//! - `aggregator.yaml`: a single-replica StatefulSet (one ledger writer)
//!   with its ledger on a PersistentVolumeClaim, its teachers in a
//!   ConfigMap, and the Service `aggregator` for students.
//! - `student.yaml`: a Job.
//! - `secrets.yaml`: one `kubernetes.io/tls` Secret per party (`tls.crt`,
//!   `tls.key`, `ca.crt`), from a fresh CA provisioned into `certs/`
//!   (`pate certs init`; the Service names are the party names the
//!   certificates carry). `certs/ca.key` is for the operator, offline.
//! - `network-policies.yaml`: deny all ingress; teachers accept only the
//!   aggregator, the aggregator only students; training pods get no egress.
//! - `storage.yaml`, `namespace.yaml`.
//!
//! Readiness and liveness run `pate health` in the container, over mutual
//! TLS with the pod's own certificate (the kubelet's native gRPC probe
//! cannot present one): the aggregator's readiness turns false below its
//! quorum, its liveness asks the always-serving `liveness` service, so a
//! lost quorum does not restart it.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use anyhow::Context;
use pate_proto::auth::Role;
use serde_json::{json, Value};

use super::party::{self, AGGREGATOR_PORT, METRICS_PORT, TEACHER_PORT};
use super::{out_dir, validate_image, Settings};
use crate::lab::argv;

/// `pate deploy k8s` flags.
#[derive(clap::Args, Debug, Clone)]
pub struct K8sArgs {
    #[command(flatten)]
    pub settings: Settings,
    /// Image holding the pate binaries (deploy/docker/Dockerfile), as the
    /// cluster pulls it.
    #[arg(long)]
    pub image: String,
    /// Namespace of every object.
    #[arg(long, default_value = "pate")]
    pub namespace: String,
    /// Teachers trained at once by the Indexed Job.
    #[arg(long, default_value_t = 4)]
    pub parallelism: usize,
    /// Storage class of the volumes [default: the cluster's default].
    #[arg(long)]
    pub storage_class: Option<String>,
    /// Output directory (must be absent or empty): the manifests, and
    /// certs/ (the CA and every party's certificate the Secrets carry).
    #[arg(long)]
    pub out: PathBuf,
}

/// The label every object carries, and the component labels the
/// NetworkPolicies select on.
pub const APP: &str = "pate";
/// Component label key.
pub const COMPONENT: &str = "app.kubernetes.io/component";
/// Instance label key: which teacher a pod serves.
pub const INSTANCE: &str = "app.kubernetes.io/instance";

fn labels(component: &str) -> Value {
    json!({ "app.kubernetes.io/name": APP, COMPONENT: component })
}

fn meta(name: &str, ns: &str, component: &str) -> Value {
    json!({ "name": name, "namespace": ns, "labels": labels(component) })
}

fn resources(cpu_req: &str, mem_req: &str, cpu_lim: &str, mem_lim: &str) -> Value {
    json!({ "requests": { "cpu": cpu_req, "memory": mem_req }, "limits": { "cpu": cpu_lim, "memory": mem_lim } })
}

/// The container security every container runs with (the image's `pate` user).
fn security() -> Value {
    json!({
        "runAsNonRoot": true, "runAsUser": 10001, "runAsGroup": 10001,
        "allowPrivilegeEscalation": false, "readOnlyRootFilesystem": true,
        "capabilities": { "drop": ["ALL"] }, "seccompProfile": { "type": "RuntimeDefault" },
    })
}

/// The pod security: volumes (ledger, models, the TLS Secret) group-owned
/// by the `pate` group, so the non-root user can write and read them.
fn pod_security() -> Value {
    json!({ "runAsNonRoot": true, "runAsUser": 10001, "runAsGroup": 10001, "fsGroup": 10001 })
}

/// The party's TLS Secret as a volume: the kubelet owns the files as root,
/// so the key is 0440 and readable through the `pate` group (fsGroup).
fn tls_volume(party: &str) -> Value {
    json!({ "name": "tls", "secret": { "secretName": format!("{party}-tls"), "defaultMode": 0o440 } })
}

fn tls_mount() -> Value {
    json!({ "name": "tls", "mountPath": party::CERTS, "readOnly": true })
}

fn exec_probe(command: Vec<String>, period: u32, failures: u32) -> Value {
    json!({ "exec": { "command": command }, "periodSeconds": period, "failureThreshold": failures, "timeoutSeconds": 10 })
}

fn pvc(name: &str, ns: &str, component: &str, mode: &str, size: &str, class: Option<&str>) -> Value {
    let mut spec = json!({ "accessModes": [mode], "resources": { "requests": { "storage": size } } });
    if let Some(c) = class {
        spec["storageClassName"] = json!(c);
    }
    json!({ "apiVersion": "v1", "kind": "PersistentVolumeClaim", "metadata": meta(name, ns, component), "spec": spec })
}

/// One party's Secret from a `pate certs` directory.
fn secret(certs: &Path, ns: &str, role: Role) -> anyhow::Result<Value> {
    let (pem, key) = pate_proto::certs::party_files(certs, role);
    let read = |p: &Path| std::fs::read_to_string(p).with_context(|| format!("reading {}", p.display()));
    let party = role.name();
    Ok(json!({
        "apiVersion": "v1", "kind": "Secret", "type": "kubernetes.io/tls",
        "metadata": meta(&format!("{party}-tls"), ns, "tls"),
        "stringData": { party::CERT_FILE: read(&pem)?, party::KEY_FILE: read(&key)?, party::CA_FILE: read(&certs.join("ca.pem"))? },
    }))
}

/// Every party's Secret, from the certificates provisioned in `certs`.
pub fn secrets(certs: &Path, ns: &str, teachers: u32) -> anyhow::Result<Vec<Value>> {
    let roles = std::iter::once(Role::Aggregator).chain((0..teachers).map(Role::Teacher)).chain([Role::Student(0)]);
    roles.map(|r| secret(certs, ns, r)).collect()
}

/// Every manifest file but the Secrets: name -> documents.
pub fn manifests(a: &K8sArgs) -> BTreeMap<&'static str, Vec<Value>> {
    let (st, ns, img) = (&a.settings, a.namespace.as_str(), a.image.as_str());
    let class = a.storage_class.as_deref();
    let mut files = BTreeMap::new();
    files.insert("namespace.yaml", vec![json!({ "apiVersion": "v1", "kind": "Namespace", "metadata": { "name": ns, "labels": { "app.kubernetes.io/name": APP } } })]);
    files.insert("storage.yaml", vec![
        // Filled by the data owners: teacher-<i>/ per partition (`pate data split`).
        pvc("teacher-data", ns, "teacher-data", "ReadOnlyMany", "1Gi", class),
        pvc("teacher-models", ns, "teacher-models", "ReadWriteMany", "1Gi", class),
        // The test split only (`pate data split` writes it as student/).
        pvc("student-data", ns, "student-data", "ReadOnlyMany", "1Gi", class),
    ]);
    files.insert("train-teachers.yaml", vec![train_job(a)]);
    files.insert("teachers.yaml", (0..st.teachers).flat_map(|i| teacher(a, i)).collect());

    let teachers: Vec<String> = (0..st.teachers).map(|i| format!("teacher-{i}:{TEACHER_PORT}")).collect();
    let mut agg_cmd = party::aggregator(st, &[]);
    agg_cmd.extend(argv!["--teachers-file", "/etc/pate/teachers.txt"]);
    let mut claim = json!({ "accessModes": ["ReadWriteOnce"], "resources": { "requests": { "storage": "1Gi" } } });
    if let Some(c) = class {
        claim["storageClassName"] = json!(c);
    }
    files.insert("aggregator.yaml", vec![
        json!({ "apiVersion": "v1", "kind": "ConfigMap", "metadata": meta("aggregator-teachers", ns, "aggregator"),
            "data": { "teachers.txt": teachers.join("\n") + "\n" } }),
        json!({ "apiVersion": "v1", "kind": "Service", "metadata": meta("aggregator", ns, "aggregator"),
            "spec": { "selector": labels("aggregator"), "ports": svc_ports(AGGREGATOR_PORT) } }),
        json!({
            "apiVersion": "apps/v1", "kind": "StatefulSet", "metadata": meta("aggregator", ns, "aggregator"),
            // One replica: the ledger has one writer, and the budget is global.
            "spec": {
                "serviceName": "aggregator", "replicas": 1, "selector": { "matchLabels": labels("aggregator") },
                "template": {
                    "metadata": { "labels": labels("aggregator") },
                    "spec": {
                        "automountServiceAccountToken": false, "securityContext": pod_security(),
                        "containers": [{
                            "name": "aggregator", "image": img, "command": agg_cmd, "ports": ports(AGGREGATOR_PORT),
                            "volumeMounts": [
                                { "name": "ledger", "mountPath": party::LEDGER_DIR },
                                { "name": "teachers", "mountPath": "/etc/pate", "readOnly": true },
                                { "name": "tmp", "mountPath": "/tmp" }, tls_mount(),
                            ],
                            "readinessProbe": exec_probe(party::health(AGGREGATOR_PORT, "aggregator", None), 5, 3),
                            "livenessProbe": exec_probe(party::health(AGGREGATOR_PORT, "aggregator", Some("liveness")), 10, 3),
                            // Connecting to the teachers may take minutes.
                            "startupProbe": exec_probe(party::health(AGGREGATOR_PORT, "aggregator", Some("liveness")), 5, 120),
                            "resources": resources("500m", "256Mi", "2", "1Gi"), "securityContext": security(),
                        }],
                        "volumes": [{ "name": "teachers", "configMap": { "name": "aggregator-teachers" } }, { "name": "tmp", "emptyDir": {} }, tls_volume("aggregator")],
                    },
                },
                "volumeClaimTemplates": [{ "metadata": { "name": "ledger", "labels": labels("aggregator") }, "spec": claim }],
            },
        }),
    ]);

    files.insert("student.yaml", vec![json!({
        "apiVersion": "batch/v1", "kind": "Job", "metadata": meta("student-0", ns, "student"),
        "spec": {
            "backoffLimit": 2,
            "template": {
                "metadata": { "labels": labels("student") },
                "spec": {
                    "restartPolicy": "Never", "automountServiceAccountToken": false, "securityContext": pod_security(),
                    "containers": [{
                        "name": "student", "image": img,
                        "command": party::student(st, &format!("aggregator:{AGGREGATOR_PORT}")),
                        "volumeMounts": [
                            { "name": "data", "mountPath": party::DATA, "readOnly": true }, { "name": "out", "mountPath": party::STUDENT_OUT },
                            { "name": "tmp", "mountPath": "/tmp" }, tls_mount(),
                        ],
                        "resources": resources("500m", "512Mi", "2", "2Gi"), "securityContext": security(),
                    }],
                    "volumes": [
                        { "name": "data", "persistentVolumeClaim": { "claimName": "student-data", "readOnly": true } },
                        { "name": "out", "emptyDir": {} }, { "name": "tmp", "emptyDir": {} }, tls_volume("student-0"),
                    ],
                },
            },
        },
    })]);
    files.insert("network-policies.yaml", network_policies(ns));
    files
}

fn ports(grpc: u16) -> Value {
    json!([{ "name": "grpc", "containerPort": grpc }, { "name": "metrics", "containerPort": METRICS_PORT }])
}

fn svc_ports(grpc: u16) -> Value {
    json!([{ "name": "grpc", "port": grpc, "targetPort": grpc }, { "name": "metrics", "port": METRICS_PORT, "targetPort": METRICS_PORT }])
}

/// The Indexed Job training every teacher, partition = completion index.
fn train_job(a: &K8sArgs) -> Value {
    let (st, ns, img) = (&a.settings, a.namespace.as_str(), a.image.as_str());
    // party::train with the partition from the environment.
    let mut args = party::train(st, 0);
    let at = args.iter().position(|x| x == "--partition").expect("train has --partition");
    args.drain(at..at + 2); // PATE_PARTITION (env) gives it
    let at = args.iter().position(|x| x == "--seed").expect("train has --seed");
    args[at + 1] = st.seed.to_string(); // one seed for all: a pod template cannot add its index
    let index = "metadata.annotations['batch.kubernetes.io/job-completion-index']";
    let owner_mount = |volume: &str, path: &str, ro: bool| json!({ "name": volume, "mountPath": path, "subPathExpr": "teacher-$(PATE_PARTITION)", "readOnly": ro });
    json!({
        "apiVersion": "batch/v1", "kind": "Job", "metadata": meta("train-teachers", ns, "teacher-train"),
        "spec": {
            "completionMode": "Indexed", "completions": st.teachers, "parallelism": a.parallelism.clamp(1, st.teachers),
            "backoffLimit": 3 * st.teachers.min(100),
            "template": {
                "metadata": { "labels": labels("teacher-train") },
                "spec": {
                    "restartPolicy": "Never", "automountServiceAccountToken": false, "securityContext": pod_security(),
                    "containers": [{
                        "name": "train", "image": img, "command": args,
                        "env": [{ "name": "PATE_PARTITION", "valueFrom": { "fieldRef": { "fieldPath": index } } }],
                        "volumeMounts": [owner_mount("data", party::DATA, true), owner_mount("models", party::MODEL, false)],
                        "resources": resources("500m", "512Mi", "2", "2Gi"), "securityContext": security(),
                    }],
                    "volumes": [
                        { "name": "data", "persistentVolumeClaim": { "claimName": "teacher-data", "readOnly": true } },
                        { "name": "models", "persistentVolumeClaim": { "claimName": "teacher-models" } },
                    ],
                },
            },
        },
    })
}

/// Teacher `i`: its headless Service and its single-replica StatefulSet.
fn teacher(a: &K8sArgs, i: usize) -> [Value; 2] {
    let (ns, img) = (a.namespace.as_str(), a.image.as_str());
    let name = format!("teacher-{i}");
    let mut pod_labels = labels("teacher");
    pod_labels[INSTANCE] = json!(name);
    let model = json!({ "name": "models", "mountPath": party::MODEL, "subPath": name, "readOnly": true });
    [
        json!({ "apiVersion": "v1", "kind": "Service", "metadata": meta(&name, ns, "teacher"),
            "spec": { "clusterIP": "None", "selector": pod_labels, "ports": svc_ports(TEACHER_PORT) } }),
        json!({
            "apiVersion": "apps/v1", "kind": "StatefulSet", "metadata": meta(&name, ns, "teacher"),
            "spec": {
                "serviceName": name, "replicas": 1, "selector": { "matchLabels": pod_labels },
                "template": {
                    "metadata": { "labels": pod_labels },
                    "spec": {
                        "automountServiceAccountToken": false, "securityContext": pod_security(),
                        // Serve only once the Indexed Job wrote this partition's checkpoint.
                        "initContainers": [{
                            "name": "wait-for-checkpoint", "image": img,
                            "command": ["bash", "-c", format!("until [ -f {}/meta.json ]; do echo waiting for the checkpoint of partition {i}; sleep 5; done", party::CHECKPOINT)],
                            "volumeMounts": [model],
                            "resources": resources("10m", "16Mi", "100m", "64Mi"), "securityContext": security(),
                        }],
                        "containers": [{
                            "name": "teacher", "image": img, "command": party::serve(),
                            "ports": ports(TEACHER_PORT),
                            "volumeMounts": [model, tls_mount()],
                            "readinessProbe": exec_probe(party::health(TEACHER_PORT, "teacher", None), 5, 3),
                            "livenessProbe": exec_probe(party::health(TEACHER_PORT, "teacher", None), 10, 3),
                            "resources": resources("250m", "256Mi", "1", "1Gi"), "securityContext": security(),
                        }],
                        "volumes": [{ "name": "models", "persistentVolumeClaim": { "claimName": "teacher-models", "readOnly": true } }, tls_volume(&name)],
                    },
                },
            },
        }),
    ]
}

/// Deny all ingress; teachers accept only the aggregator, the aggregator
/// only students (gRPC ports only); training pods get no egress at all.
fn network_policies(ns: &str) -> Vec<Value> {
    let policy = |name: &str, selector: Value, types: &[&str], extra: Value| {
        let mut spec = json!({ "podSelector": selector, "policyTypes": types });
        if let (Some(spec), Some(extra)) = (spec.as_object_mut(), extra.as_object()) {
            spec.extend(extra.clone());
        }
        json!({ "apiVersion": "networking.k8s.io/v1", "kind": "NetworkPolicy", "metadata": meta(name, ns, "network-policy"), "spec": spec })
    };
    let from = |component: &str, port: u16| json!({ "ingress": [{
        "from": [{ "podSelector": { "matchLabels": labels(component) } }],
        "ports": [{ "protocol": "TCP", "port": port }],
    }] });
    vec![
        policy("default-deny-ingress", json!({}), &["Ingress"], json!({})),
        policy("teacher-from-aggregator", json!({ "matchLabels": labels("teacher") }), &["Ingress"], from("aggregator", TEACHER_PORT)),
        policy("aggregator-from-students", json!({ "matchLabels": labels("aggregator") }), &["Ingress"], from("student", AGGREGATOR_PORT)),
        // Training reads a partition and writes a checkpoint: no network at all.
        policy("train-no-egress", json!({ "matchLabels": labels("teacher-train") }), &["Egress"], json!({})),
    ]
}

/// Runs `pate deploy k8s`.
pub fn run(a: &K8sArgs) -> anyhow::Result<()> {
    a.settings.validate()?;
    validate_image(&a.image)?;
    let ns_ok = !a.namespace.is_empty() && a.namespace.len() <= 63
        && a.namespace.chars().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
        && !a.namespace.starts_with('-') && !a.namespace.ends_with('-');
    anyhow::ensure!(ns_ok, "--namespace {:?} is not a DNS label (lowercase letters, digits, '-', at most 63)", a.namespace);
    anyhow::ensure!(a.parallelism > 0, "--parallelism must be at least 1");
    let teachers = u32::try_from(a.settings.teachers).context("--teachers is too large")?;
    let header = format!("# Generated by `pate deploy k8s --teachers {} --image {}` (see deploy/README.md).\n", a.settings.teachers, a.image);
    let yaml = |docs: &[Value]| -> anyhow::Result<String> {
        let mut text = header.clone();
        for d in docs {
            text.push_str("---\n");
            text.push_str(&serde_norway::to_string(d)?);
        }
        Ok(text)
    };
    let texts = manifests(a).iter().map(|(name, docs)| Ok((*name, yaml(docs)?))).collect::<anyhow::Result<Vec<_>>>()?;
    out_dir::publish(&a.out, |staging| {
        for (name, text) in &texts {
            out_dir::write(staging, name, text)?;
        }
        // A fresh CA and every party's certificate (the party names are the
        // Service names), then the Secrets that carry them.
        let certs = staging.join("certs");
        pate_proto::certs::init(&certs, teachers, 1, &[], false)?;
        out_dir::write(staging, "secrets.yaml", &yaml(&secrets(&certs, &a.namespace, teachers)?)?)?;
        Ok(())
    })?;
    println!(
        "wrote {} manifests ({} teachers, image {}) and the certificates under certs/ (keep ca.key offline) to {}",
        texts.len() + 1,
        a.settings.teachers,
        a.image,
        a.out.display()
    );
    Ok(())
}
