//! `pate deploy compose`: the federated lab as a docker-compose project.
//!
//! Per teacher `i`: `train-i`, a one-shot container with no network at all
//! that sees only `data/teacher-i` (its partition, read-only) and writes
//! its checkpoint into the named volume `teacher-i-model`; then `teacher-i`,
//! started once `train-i` completed successfully, serving that checkpoint on
//! the internal network `teachers`. The aggregator joins `teachers` and the
//! internal network `students`, with its ledger on the named volume
//! `ledger`; the student is on `students` only and sees `data/student` (the
//! test split). Containers on different networks have no route to each
//! other, so the student cannot reach a teacher.
//!
//! Every link is mutual TLS. The generator provisions a fresh CA and one
//! certificate per party into `certs/` (`pate certs init`; each server's
//! certificate names its compose service, `aggregator` or `teacher-<i>`).
//! The one-shot `certs` service (root, no network) copies each party's
//! certificate, key and the CA into that party's own named volume
//! `<party>-tls`, owned by the image's user 10001 with the key 0600, so
//! each container mounts its own identity and no other (bind mounts would
//! keep the host's owner, which the container's user may not be). The CA's
//! key is mounted nowhere.
//!
//! The file has no `version` key (the Compose Specification), which
//! docker-compose 1.27+ (v1) and `docker compose` (v2) both read;
//! `condition: service_completed_successfully` needs 1.29+.

use std::path::{Path, PathBuf};

use anyhow::Context;
use pate_proto::auth::Role;
use serde_json::{json, Map, Value};

use super::party::{self, AGGREGATOR_PORT, TEACHER_PORT};
use super::{out_dir, validate_image, Settings};
use pate_ml::data::load_idx_dir;
use pate_ml::data_dir::resolve_data_dir;

/// Name of the compose file inside the output directory.
pub const COMPOSE_FILE: &str = "docker-compose.yml";
/// The image's user and group (deploy/docker/Dockerfile).
pub const UID: u32 = 10001;

/// `pate deploy compose` flags.
#[derive(clap::Args, Debug, Clone)]
pub struct ComposeArgs {
    #[command(flatten)]
    pub settings: Settings,
    /// Directory with the four IDX files to cut into the owners' directories
    /// [default: $PATE_DATA_DIR, then /usr/share/datasets/fashion-mnist, then the cache].
    #[arg(long)]
    pub data: Option<PathBuf>,
    /// Image holding the pate binaries (deploy/docker/Dockerfile).
    #[arg(long, default_value = "pate:local")]
    pub image: String,
    /// Output directory (must be absent or empty): docker-compose.yml,
    /// certs/ (the deployment's CA and one certificate per party),
    /// data/teacher-<i>/ and data/student/.
    #[arg(long)]
    pub out: PathBuf,
}

fn strings(v: Vec<String>) -> Value {
    Value::Array(v.into_iter().map(Value::String).collect())
}

/// The party names of a deployment with `teachers` teachers and one student.
pub fn parties(teachers: usize) -> Vec<String> {
    let mut p = vec![Role::Aggregator.name()];
    p.extend((0..teachers as u32).map(|i| Role::Teacher(i).name()));
    p.push(Role::Student(0).name());
    p
}

/// The party's own TLS volume, read-only where its server or client runs.
fn tls_mount(party: &str) -> String {
    format!("{party}-tls:{}:ro", party::CERTS)
}

/// A Docker health check running `pate health` in the container.
fn healthcheck(port: u16, server: &str) -> Value {
    let mut test = vec![String::from("CMD")];
    test.extend(party::health(port, server, None));
    json!({ "test": test, "interval": "5s", "timeout": "10s", "retries": 3, "start_period": "30s" })
}

/// The one-shot service that installs every party's identity into its volume.
fn certs_service(image: &str, parties: &[String]) -> Value {
    // $$ is a literal $ to compose; the party names are the arguments.
    let script = format!(
        "set -eu; for p in \"$$@\"; do d=/out/$$p; \
         install -o {UID} -g {UID} -m 0644 /in/$$p.pem $$d/{cert}; \
         install -o {UID} -g {UID} -m 0600 /in/$$p.key $$d/{key}; \
         install -o {UID} -g {UID} -m 0644 /in/ca.pem $$d/{ca}; \
         chown {UID}:{UID} $$d; chmod 0700 $$d; done",
        cert = party::CERT_FILE,
        key = party::KEY_FILE,
        ca = party::CA_FILE,
    );
    let mut command = vec![String::from("bash"), String::from("-c"), script, String::from("certs")];
    command.extend(parties.iter().cloned());
    let mut volumes = vec![String::from("./certs/ca.pem:/in/ca.pem:ro")];
    for p in parties {
        volumes.push(format!("./certs/{p}.pem:/in/{p}.pem:ro"));
        volumes.push(format!("./certs/{p}.key:/in/{p}.key:ro"));
        volumes.push(format!("{p}-tls:/out/{p}"));
    }
    json!({ "image": image, "user": "0:0", "network_mode": "none", "command": command, "volumes": volumes })
}

/// The compose document for `st` with `image`.
pub fn compose_file(st: &Settings, image: &str) -> Value {
    let mut services = Map::new();
    let mut volumes = Map::new();
    let mut teacher_addrs = Vec::new();
    let mut aggregator_deps = Map::new();
    let certs_done = json!({ "condition": "service_completed_successfully" });
    let all = parties(st.teachers);
    services.insert("certs".into(), certs_service(image, &all));
    for p in &all {
        volumes.insert(format!("{p}-tls"), json!({}));
    }
    for i in 0..st.teachers {
        let (train, teacher, model) = (format!("train-{i}"), format!("teacher-{i}"), format!("teacher-{i}-model"));
        services.insert(train.clone(), json!({
            "image": image,
            "command": strings(party::train(st, i)),
            // Training needs no network: the partition never leaves.
            "network_mode": "none",
            "volumes": [format!("./data/{teacher}:{}:ro", party::DATA), format!("{model}:{}", party::MODEL)],
        }));
        services.insert(teacher.clone(), json!({
            "image": image,
            "command": strings(party::serve()),
            "networks": ["teachers"],
            "volumes": [format!("{model}:{}:ro", party::MODEL), tls_mount(&teacher)],
            "depends_on": { train: { "condition": "service_completed_successfully" }, "certs": certs_done },
            "healthcheck": healthcheck(TEACHER_PORT, "teacher"),
            "restart": "on-failure",
        }));
        volumes.insert(model, json!({}));
        teacher_addrs.push(format!("{teacher}:{TEACHER_PORT}"));
        aggregator_deps.insert(teacher, json!({ "condition": "service_started" }));
    }
    aggregator_deps.insert("certs".into(), certs_done.clone());
    services.insert("aggregator".into(), json!({
        "image": image,
        "command": strings(party::aggregator(st, &teacher_addrs)),
        "networks": ["teachers", "students"],
        "volumes": [format!("ledger:{}", party::LEDGER_DIR), tls_mount("aggregator")],
        "depends_on": aggregator_deps,
        // Unhealthy below the quorum (the aggregator's health follows it).
        "healthcheck": healthcheck(AGGREGATOR_PORT, "aggregator"),
        "restart": "on-failure",
    }));
    services.insert("student".into(), json!({
        "image": image,
        "command": strings(party::student(st, &format!("aggregator:{AGGREGATOR_PORT}"))),
        "networks": ["students"],
        "volumes": [format!("./data/student:{}:ro", party::DATA), format!("student-out:{}", party::STUDENT_OUT), tls_mount("student-0")],
        "depends_on": { "aggregator": { "condition": "service_healthy" }, "certs": certs_done },
    }));
    volumes.insert("ledger".into(), json!({}));
    volumes.insert("student-out".into(), json!({}));
    json!({
        "services": services,
        "networks": {
            // internal: no gateway, so no route out of the network at all.
            "teachers": { "internal": true },
            "students": { "internal": true },
        },
        "volumes": volumes,
    })
}

/// The YAML text of a generated document, with a header saying where it came from.
pub fn to_yaml(doc: &Value, header: &str) -> anyhow::Result<String> {
    let body = serde_norway::to_string(doc).context("serialising YAML")?;
    Ok(format!("{header}{body}"))
}

/// Runs `pate deploy compose`.
pub fn run(args: &ComposeArgs) -> anyhow::Result<()> {
    let st = &args.settings;
    st.validate()?;
    validate_image(&args.image)?;
    let teachers = u32::try_from(st.teachers).context("--teachers is too large")?;
    out_dir::ensure_empty(&args.out)?;
    let dir = resolve_data_dir(args.data.as_deref())?;
    let data = load_idx_dir(&dir).with_context(|| format!("loading {}", dir.display()))?;
    anyhow::ensure!(st.teachers <= data.train.len(), "--teachers {} exceeds the {} training items", st.teachers, data.train.len());
    let header = format!(
        "# Generated by `pate deploy compose --teachers {}`: the PATE federated lab on the Docker engine.\n\
         # Run it with scripts/compose-lab.sh, or: docker-compose up -d (see deploy/README.md).\n",
        st.teachers
    );
    let yaml = to_yaml(&compose_file(st, &args.image), &header)?;
    out_dir::publish(&args.out, |staging: &Path| {
        // The party names are the compose service names, so every server's
        // certificate is valid for the name its clients dial.
        pate_proto::certs::init(&staging.join("certs"), teachers, 1, &[], false)?;
        let owners = staging.join("data");
        std::fs::create_dir_all(&owners)?;
        pate_ml::split::write_owner_dirs(&data, st.teachers, st.seed, &owners)?;
        out_dir::write(staging, COMPOSE_FILE, &yaml)?;
        Ok(())
    })?;
    println!(
        "wrote {} ({} teachers, image {}), the owners' data under {} and the certificates under {} (keep ca.key offline)",
        args.out.join(COMPOSE_FILE).display(),
        st.teachers,
        args.image,
        args.out.join("data").display(),
        args.out.join("certs").display()
    );
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(Parser)]
    struct W {
        #[command(flatten)]
        st: Settings,
    }

    fn settings(teachers: usize) -> Settings {
        W::parse_from(["w", "--teachers", &teachers.to_string()]).st
    }

    fn mounts(service: &Value) -> Vec<String> {
        service["volumes"].as_array().map_or_else(Vec::new, |a| a.iter().map(|v| v.as_str().expect("str").to_string()).collect())
    }

    #[test]
    fn student_shares_no_network_with_any_teacher_and_each_party_sees_only_its_own() {
        let doc = compose_file(&settings(3), "pate:local");
        let services = doc["services"].as_object().expect("services");
        let nets = |name: &str| -> Vec<String> {
            services[name]["networks"].as_array().map_or_else(Vec::new, |a| a.iter().map(|v| v.as_str().expect("str").to_string()).collect())
        };
        assert_eq!(nets("student"), ["students"]);
        assert_eq!(nets("aggregator"), ["teachers", "students"]);
        for i in 0..3 {
            assert_eq!(nets(&format!("teacher-{i}")), ["teachers"]);
            assert_eq!(services[&format!("train-{i}")]["network_mode"], "none");
            let partition: Vec<String> = services.values().flat_map(mounts).filter(|v| v.starts_with(&format!("./data/teacher-{i}:"))).collect();
            assert_eq!(partition.len(), 1, "partition {i} must be mounted exactly once: {partition:?}");
            let train = mounts(&services[&format!("train-{i}")]);
            assert!(train.iter().any(|m| m.starts_with(&format!("./data/teacher-{i}:"))) && !train.iter().any(|m| m.contains("tls")), "{train:?}");
        }
        // Each server and the student mount exactly their own TLS volume.
        for (name, party) in [("aggregator", "aggregator"), ("teacher-1", "teacher-1"), ("student", "student-0")] {
            let tls: Vec<String> = mounts(&services[name]).into_iter().filter(|m| m.contains("-tls:") || m.contains("certs")).collect();
            assert_eq!(tls, [format!("{party}-tls:/var/lib/pate/certs:ro")], "{name}");
        }
        // Only the provisioning service sees the certificate files, never ca.key.
        let certs = mounts(&services["certs"]);
        assert!(certs.iter().any(|m| m.starts_with("./certs/teacher-2.key:")));
        for (name, svc) in services {
            assert!(!svc.to_string().contains("ca.key"), "{name} mounts the CA's key");
            assert!(!svc.to_string().contains("insecure"), "{name} runs without TLS");
            if name != "certs" {
                assert!(!mounts(svc).iter().any(|m| m.starts_with("./certs")), "{name} mounts certificate files directly");
            }
        }
        for (name, net) in doc["networks"].as_object().expect("networks") {
            assert_eq!(net["internal"], true, "network {name} must be internal");
        }
        let student = services["student"]["command"].to_string();
        assert!(!student.contains("teacher"), "the student must not know a teacher: {student}");
    }

    #[test]
    fn yaml_round_trips_and_escapes_the_shell() {
        let doc = compose_file(&settings(2), "pate:local");
        let yaml = to_yaml(&doc, "# x\n").expect("yaml");
        let back: Value = serde_norway::from_str(&yaml).expect("parse back");
        assert_eq!(back, doc);
        let script = doc["services"]["certs"]["command"][2].as_str().expect("script");
        assert!(!script.replace("$$", "").contains('$'), "an unescaped $ would be interpolated by compose: {script}");
    }
}
