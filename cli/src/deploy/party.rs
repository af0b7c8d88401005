//! The parties of a deployment as container commands: the same binaries
//! and flags whether compose or Kubernetes runs them, with the paths the
//! image (deploy/docker/Dockerfile) prepares for the `pate` user.

use super::Settings;
use crate::lab::s;

/// A teacher's (its partition only) or the student's (test split only) data.
pub const DATA: &str = "/var/lib/pate/data";
/// A teacher's checkpoint volume.
pub const MODEL: &str = "/var/lib/pate/model";
/// The teacher's checkpoint directory inside [`MODEL`].
pub const CHECKPOINT: &str = "/var/lib/pate/model/teacher";
/// The aggregator's ledger volume.
pub const LEDGER_DIR: &str = "/var/lib/pate/ledger";
/// The ledger file.
pub const LEDGER: &str = "/var/lib/pate/ledger/ledger.db";
/// The student's output (checkpoint and report.json).
pub const STUDENT_OUT: &str = "/var/lib/pate/out";
/// Where a party's certificate, key and the CA are mounted.
pub const CERTS: &str = "/var/lib/pate/certs";
/// gRPC port of a teacher.
pub const TEACHER_PORT: u16 = 50051;
/// gRPC port of the aggregator.
pub const AGGREGATOR_PORT: u16 = 50050;
/// Prometheus metrics port of every server.
pub const METRICS_PORT: u16 = 9090;

/// The mutual-TLS flags of every server and client: the party's own
/// certificate and key and the deployment's CA, mounted under [`CERTS`]
/// (and nothing else of any other party). There is no plaintext variant:
/// a generated deployment never passes `--insecure`.
pub fn tls_flags() -> Vec<String> {
    vec![
        s("--tls-cert"), format!("{CERTS}/{CERT_FILE}"),
        s("--tls-key"), format!("{CERTS}/{KEY_FILE}"),
        s("--tls-ca"), format!("{CERTS}/{CA_FILE}"),
    ]
}

/// The certificate's file name under [`CERTS`] (as in a Kubernetes TLS Secret).
pub const CERT_FILE: &str = "tls.crt";
/// The private key's file name under [`CERTS`].
pub const KEY_FILE: &str = "tls.key";
/// The CA's file name under [`CERTS`].
pub const CA_FILE: &str = "ca.crt";

/// `pate health` asking the server in this container (over mutual TLS,
/// with the container's own certificate) whether `service` is SERVING:
/// the readiness and liveness check of compose and Kubernetes, whose
/// native gRPC probes cannot present a client certificate.
pub fn health(port: u16, server: &str, service: Option<&str>) -> Vec<String> {
    let mut a = vec![s("pate"), s("health"), s("--addr"), format!("127.0.0.1:{port}"), s("--server"), s(server)];
    if let Some(svc) = service {
        a.extend([s("--service"), s(svc)]);
    }
    a.extend(tls_flags());
    a
}

/// `pate-teacher train` of partition `index`, from a directory holding
/// only that partition (see `pate data split`).
pub fn train(st: &Settings, index: usize) -> Vec<String> {
    vec![
        s("pate-teacher"), s("train"), s("--data"), s(DATA), s("--partition"), s(index), s("--partitions"), s(st.teachers),
        s("--partition-seed"), s(st.seed), s("--seed"), s(st.seed + index as u64), s("--model"), s(st.model),
        s("--epochs"), s(st.teacher_epochs), s("--out"), s(CHECKPOINT),
    ]
}

/// `pate-teacher serve` of the checkpoint in its volume.
pub fn serve() -> Vec<String> {
    let mut a = vec![
        s("pate-teacher"), s("serve"), s("--checkpoint"), s(CHECKPOINT), s("--listen"), format!("0.0.0.0:{TEACHER_PORT}"),
        s("--metrics-addr"), format!("0.0.0.0:{METRICS_PORT}"),
    ];
    a.extend(tls_flags());
    a
}

/// `pate-aggregator` asking `teachers` (host:port each).
pub fn aggregator(st: &Settings, teachers: &[String]) -> Vec<String> {
    let mut a = vec![s("pate-aggregator")];
    for t in teachers {
        a.extend([s("--teacher"), t.clone()]);
    }
    a.extend([
        s("--listen"), format!("0.0.0.0:{AGGREGATOR_PORT}"), s("--ledger"), s(LEDGER), s("--mechanism"), s("lnmax"),
        s("--noise-scale"), s(st.noise_scale), s("--epsilon-limit"), s(st.epsilon_limit), s("--delta"), s(st.delta),
        s("--max-batch"), s(st.query_batch.max(1024)),
        // Teachers may still be loading their checkpoints when it starts.
        s("--connect-timeout"), s(300), s("--metrics-addr"), format!("0.0.0.0:{METRICS_PORT}"),
    ]);
    if let Some(q) = st.quorum {
        a.extend([s("--quorum"), s(q)]);
    }
    a.extend(tls_flags());
    a
}

/// `pate-student` asking `aggregator` (host:port). The run id is fixed, so
/// a restarted student replays the recorded answers at no privacy cost.
pub fn student(st: &Settings, aggregator: &str) -> Vec<String> {
    let mut a = vec![
        s("pate-student"), s("--aggregator"), s(aggregator), s("--data"), s(DATA), s("--eval-size"), s(st.eval_size),
        s("--queries"), s(st.queries), s("--query-batch"), s(st.query_batch), s("--query-interval"), s(st.query_interval),
        s("--seed"), s(st.seed), s("--model"), s(st.model), s("--epochs"), s(st.student_epochs),
        s("--run-id"), format!("deploy-{}", st.seed), s("--connect-timeout"), s(600), s("--out"), s(STUDENT_OUT),
    ];
    a.extend(tls_flags());
    a
}
