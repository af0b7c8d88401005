//! The parties of a deployment as container commands: the same binaries
//! and flags whether compose or Kubernetes runs them, with the paths the
//! image (deploy/docker/Dockerfile) prepares for the `pate` user.

use super::Settings;
use crate::lab::argv;

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
    argv![
        "--tls-cert", format!("{CERTS}/{CERT_FILE}"),
        "--tls-key", format!("{CERTS}/{KEY_FILE}"),
        "--tls-ca", format!("{CERTS}/{CA_FILE}"),
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
    let mut a = argv!["pate", "health", "--addr", format!("127.0.0.1:{port}"), "--server", server];
    if let Some(svc) = service {
        a.extend(argv!["--service", svc]);
    }
    a.extend(tls_flags());
    a
}

/// `pate-teacher train` of partition `index`, from a directory holding
/// only that partition (see `pate data split`).
pub fn train(st: &Settings, index: usize) -> Vec<String> {
    argv![
        "pate-teacher", "train", "--data", DATA, "--partition", index, "--partitions", st.teachers,
        "--partition-seed", st.seed, "--seed", st.seed + index as u64, "--model", st.model,
        "--epochs", st.teacher_epochs, "--out", CHECKPOINT,
    ]
}

/// `pate-teacher serve` of the checkpoint in its volume.
pub fn serve() -> Vec<String> {
    let mut a = argv![
        "pate-teacher", "serve", "--checkpoint", CHECKPOINT, "--listen", format!("0.0.0.0:{TEACHER_PORT}"),
        "--metrics-addr", format!("0.0.0.0:{METRICS_PORT}"),
    ];
    a.extend(tls_flags());
    a
}

/// `pate-aggregator` asking `teachers` (host:port each).
pub fn aggregator(st: &Settings, teachers: &[String]) -> Vec<String> {
    let mut a = argv!["pate-aggregator"];
    for t in teachers {
        a.extend(argv!["--teacher", t.clone()]);
    }
    a.extend(argv![
        "--listen", format!("0.0.0.0:{AGGREGATOR_PORT}"), "--ledger", LEDGER, "--mechanism", "lnmax",
        "--noise-scale", st.noise_scale, "--epsilon-limit", st.epsilon_limit, "--delta", st.delta,
        "--max-batch", st.query_batch.max(1024),
        // Teachers may still be loading their checkpoints when it starts.
        "--connect-timeout", 300, "--metrics-addr", format!("0.0.0.0:{METRICS_PORT}"),
    ]);
    if let Some(q) = st.quorum {
        a.extend(argv!["--quorum", q]);
    }
    a.extend(tls_flags());
    a
}

/// `pate-student` asking `aggregator` (host:port). The run id is fixed, so
/// a restarted student replays the recorded answers at no privacy cost.
pub fn student(st: &Settings, aggregator: &str) -> Vec<String> {
    let mut a = argv![
        "pate-student", "--aggregator", aggregator, "--data", DATA, "--eval-size", st.eval_size,
        "--queries", st.queries, "--query-batch", st.query_batch, "--query-interval", st.query_interval,
        "--seed", st.seed, "--model", st.model, "--epochs", st.student_epochs,
        "--run-id", format!("deploy-{}", st.seed), "--connect-timeout", 600, "--out", STUDENT_OUT,
    ];
    if st.query_interval > 0.0 {
        // A paced student (a drill watching the run) asks one call at a
        // time, so that each pause separates two batches on the wire.
        a.extend(argv!["--max-in-flight", 1]);
    }
    a.extend(tls_flags());
    a
}
