//! The trust boundaries over real gRPC: mutual TLS refuses clients without
//! a certificate, with one from another CA, and in plaintext; roles refuse
//! a student at a teacher and a teacher at the aggregator; each student
//! has its own budget; Describe carries no statistic of private data.

mod common;

use std::path::Path;

use common::*;
use pate_proto::auth::Role;
use pate_proto::tls::{ServerRole, TlsArgs, Transport};
use pate_proto::v1::aggregator_client::AggregatorClient;
use pate_proto::v1::teacher_client::TeacherClient;
use pate_proto::v1::{BudgetRequest, DescribeRequest, LabelRequest, VoteRequest};
use tonic::transport::{Certificate, Channel, ClientTlsConfig, Endpoint, Identity};
use tonic::Code;

fn vote() -> VoteRequest {
    VoteRequest { request_id: "v".into(), samples: Some(eval_samples(2).to_tensor()), ..Default::default() }
}

fn read(path: &Path) -> Vec<u8> {
    std::fs::read(path).expect("read certificate file")
}

/// A TLS channel trusting `ca`, presenting the certificate of `identity` in
/// `dir` (or none).
async fn tls_channel(addr: std::net::SocketAddr, ca: &Path, identity: Option<(&Path, Role)>) -> Result<Channel, tonic::transport::Error> {
    let mut config = ClientTlsConfig::new().ca_certificate(Certificate::from_pem(read(ca)));
    if let Some((dir, role)) = identity {
        let (pem, key) = pate_proto::certs::party_files(dir, role);
        config = config.identity(Identity::from_pem(read(&pem), read(&key)));
    }
    Endpoint::from_shared(format!("https://{addr}")).expect("url").tls_config(config)?.connect().await
}

/// What a Vote over `channel` gets: the labels, or the error (a failed
/// connection, or the call's status) as (code, message).
async fn try_vote(channel: Result<Channel, tonic::transport::Error>) -> Result<usize, (Code, String)> {
    let channel = channel.map_err(|e| (Code::Unavailable, format!("connect: {e:?}")))?;
    match TeacherClient::new(channel).vote(vote()).await {
        Ok(r) => Ok(r.into_inner().labels.len()),
        Err(s) => Err((s.code(), s.message().to_string())),
    }
}

#[tokio::test]
async fn a_teacher_answers_only_the_aggregators_certificate() {
    let teacher = start_teacher(&teacher_checkpoint(0)).await;
    let addr = teacher.addr;
    let ca = certs().join("ca.pem");

    assert_eq!(try_vote(channel(addr, &transport(Role::Aggregator), ServerRole::Teacher).await).await, Ok(2), "the aggregator is answered");

    let (code, msg) = try_vote(channel(addr, &transport(Role::Student(0)), ServerRole::Teacher).await).await.expect_err("a student is refused");
    assert_eq!(code, Code::PermissionDenied, "{msg}");
    assert!(msg.contains("answers only the aggregator") && msg.contains("pate://student/0"), "{msg}");
    let (code, msg) = try_vote(channel(addr, &transport(Role::Teacher(1)), ServerRole::Teacher).await).await.expect_err("another teacher is refused");
    assert_eq!(code, Code::PermissionDenied, "{msg}");

    // No client certificate: the handshake is refused, no call gets through.
    let (code, msg) = try_vote(tls_channel(addr, &ca, None).await).await.expect_err("no certificate");
    // The server aborts the handshake: the connect fails (Unavailable) or,
    // when the lazy handshake is only tried by the call, the call does
    // (Unknown, "transport error"). Either way no call gets through.
    assert!(matches!(code, Code::Unavailable | Code::Unknown), "{code:?}: {msg}");

    // The aggregator's name from another CA: refused by the teacher ...
    let other = tempfile::tempdir().expect("tempdir");
    pate_proto::certs::init(other.path(), 1, 1, &[], false).expect("other CA");
    let (code, msg) = try_vote(tls_channel(addr, &ca, Some((other.path(), Role::Aggregator))).await).await.expect_err("foreign CA");
    assert!(matches!(code, Code::Unavailable | Code::Unknown), "{code:?}: {msg}");
    // ... and a client of the other CA does not trust our teacher either.
    let foreign = TlsArgs::for_party(other.path(), Role::Aggregator).load().expect("load");
    let (code, msg) = try_vote(channel(addr, &foreign, ServerRole::Teacher).await).await.expect_err("server from another CA");
    assert!(matches!(code, Code::Unavailable | Code::Unknown), "{code:?}: {msg}");

    // Plaintext against a TLS server.
    let (code, msg) = try_vote(channel(addr, &Transport::plaintext(), ServerRole::Teacher).await).await.expect_err("plaintext");
    assert!(matches!(code, Code::Unavailable | Code::Unknown), "{code:?}: {msg}");

    // Clients check the server's role too: a student that expects the
    // aggregator does not accept a teacher's certificate (nor would the
    // aggregator take a student's or the aggregator's for a teacher's).
    let err = channel(addr, &transport(Role::Student(0)), ServerRole::Aggregator).await.expect_err("a teacher is not the aggregator");
    assert!(format!("{err:?}").contains("expected pate://aggregator"), "{err:?}");

    // Still serving the aggregator after all that.
    assert_eq!(try_vote(channel(addr, &transport(Role::Aggregator), ServerRole::Teacher).await).await, Ok(2));
    teacher.stop().await.expect("clean shutdown");
}

#[tokio::test]
async fn the_aggregator_labels_only_for_students() {
    let teacher = start_teacher(&teacher_checkpoint(0)).await;
    let dir = tempfile::tempdir().expect("tempdir");
    let ledger = dir.path().join("ledger.db");
    let t = teacher.addr.to_string();
    let agg = start_aggregator(aggregator_config(&["--teacher", &t, "--delta", "0", "--ledger", ledger.to_str().expect("utf-8")])).await;
    let label = LabelRequest { request_id: "r".into(), samples: Some(eval_samples(2).to_tensor()) };

    for role in [Role::Teacher(0), Role::Aggregator] {
        let mut client = aggregator_client_as(agg.addr, role).await;
        let err = client.label(label.clone()).await.expect_err("not a student");
        assert_eq!(err.code(), Code::PermissionDenied, "{role}: {err:?}");
        assert!(err.message().contains("answers only students"), "{}", err.message());
        let err = client.budget(BudgetRequest {}).await.expect_err("not a student");
        assert_eq!(err.code(), Code::PermissionDenied, "{role}: {err:?}");
    }
    let mut student = aggregator_client_as(agg.addr, Role::Student(1)).await;
    let r = student.label(label).await.expect("a student is answered").into_inner();
    assert_eq!(r.labels.len(), 2);
    assert_eq!(r.budget.expect("budget").caller, "pate://student/1");
    agg.stop().await.expect("clean shutdown");
    teacher.stop().await.expect("clean shutdown");
}

#[tokio::test]
async fn each_student_has_its_own_budget_across_restarts() {
    let teacher = start_teacher(&teacher_checkpoint(0)).await;
    let dir = tempfile::tempdir().expect("tempdir");
    let ledger = dir.path().join("ledger.db");
    let t = teacher.addr.to_string();
    // Pure DP, b = 4: 0.5 epsilon per answer; 4 answers per student, 100 in all.
    let flags = ["--teacher", &t, "--delta", "0", "--noise-scale", "4", "--epsilon-limit", "100", "--student-epsilon-limit", "2",
        "--ledger", ledger.to_str().expect("utf-8")];
    let label = |id: &str, n: usize| LabelRequest { request_id: id.into(), samples: Some(eval_samples(n).to_tensor()) };

    let agg = start_aggregator(aggregator_config(&flags)).await;
    let (mut s0, mut s1) = (aggregator_client_as(agg.addr, Role::Student(0)).await, aggregator_client_as(agg.addr, Role::Student(1)).await);
    s0.label(label("s0-a", 4)).await.expect("student 0 fills its budget");
    let err = s0.label(label("s0-b", 1)).await.expect_err("student 0 is out");
    assert_eq!(err.code(), Code::ResourceExhausted);
    assert!(err.message().contains("budget of pate://student/0"), "{}", err.message());

    let r = s1.label(label("s1-a", 4)).await.expect("student 1 is not stopped by student 0").into_inner();
    let b = r.budget.expect("budget");
    assert_eq!(b.caller, "pate://student/1");
    assert!((b.caller_epsilon_spent - 2.0).abs() < 1e-12 && (b.caller_epsilon_limit - 2.0).abs() < 1e-12, "{b:?}");
    assert!((b.epsilon_spent - 4.0).abs() < 1e-12, "the global budget pays for both: {b:?}");
    // Student 0's request id is not a free replay for student 1.
    let err = s1.label(label("s0-a", 4)).await.expect_err("another student's request id");
    assert_eq!(err.code(), Code::InvalidArgument, "{err:?}");
    agg.stop().await.expect("clean shutdown");

    // A restart restores every student's spending from the ledger.
    let agg = start_aggregator(aggregator_config(&flags)).await;
    let (mut s0, mut s1) = (aggregator_client_as(agg.addr, Role::Student(0)).await, aggregator_client_as(agg.addr, Role::Student(1)).await);
    let b = s0.budget(BudgetRequest {}).await.expect("budget").into_inner();
    assert!((b.caller_epsilon_spent - 2.0).abs() < 1e-12 && (b.epsilon_spent - 4.0).abs() < 1e-12, "{b:?}");
    assert_eq!(s0.label(label("s0-c", 1)).await.expect_err("still out").code(), Code::ResourceExhausted);
    assert_eq!(s1.label(label("s1-b", 1)).await.expect_err("out too").code(), Code::ResourceExhausted);
    let replay = s0.label(label("s0-a", 4)).await.expect("its own request id replays at no cost").into_inner();
    assert_eq!(replay.labels.len(), 4);
    agg.stop().await.expect("clean shutdown");
    teacher.stop().await.expect("clean shutdown");
}

/// TeacherInfo as it was before the statistics were taken off the wire:
/// decoding the live answer with it shows what the teacher still sends.
#[derive(Clone, PartialEq, prost::Message)]
struct LegacyTeacherInfo {
    #[prost(uint32, tag = "6")]
    num_classes: u32,
    #[prost(double, tag = "7")]
    train_accuracy: f64,
    #[prost(string, tag = "8")]
    data_fingerprint: String,
    #[prost(bytes = "vec", tag = "9")]
    poison: Vec<u8>,
}

#[tokio::test]
async fn describe_carries_no_statistic_of_private_data() {
    let checkpoint = teacher_checkpoint(0);
    let meta: serde_json::Value = serde_json::from_slice(&read(&checkpoint.join("meta.json"))).expect("meta.json");
    assert!(meta["train_accuracy"].as_f64().expect("accuracy") > 0.0, "the checkpoint on disk keeps it for experiments");
    let teacher = start_teacher(&checkpoint).await;
    let ch = channel(teacher.addr, &transport(Role::Aggregator), ServerRole::Teacher).await.expect("connect");
    let info = TeacherClient::new(ch.clone()).describe(DescribeRequest {}).await.expect("describe").into_inner();
    assert_eq!((info.input_shape, info.num_classes), (vec![28, 28], 10));

    let mut grpc = tonic::client::Grpc::new(ch);
    grpc.ready().await.expect("ready");
    let codec = tonic_prost::ProstCodec::<DescribeRequest, LegacyTeacherInfo>::default();
    let path = tonic::codegen::http::uri::PathAndQuery::from_static("/pate.v1.Teacher/Describe");
    let legacy = grpc.unary(tonic::Request::new(DescribeRequest {}), path, codec).await.expect("describe").into_inner();
    assert_eq!(legacy.num_classes, 10, "the legacy decoder reads the live answer");
    assert_eq!(legacy.train_accuracy, 0.0, "no training accuracy on the wire");
    assert!(legacy.data_fingerprint.is_empty() && legacy.poison.is_empty(), "no data digest or poisoning on the wire");
    teacher.stop().await.expect("clean shutdown");
}

#[tokio::test]
async fn insecure_is_explicit_and_makes_one_anonymous_student() {
    let err = start_teacher_with(&teacher_checkpoint(0), TlsArgs::default()).await.join().await.expect_err("no TLS, no --insecure");
    assert!(format!("{err:#}").contains("no transport security configured"), "{err:#}");

    let teacher = start_teacher_with(&teacher_checkpoint(0), TlsArgs::insecure()).await;
    let dir = tempfile::tempdir().expect("tempdir");
    let ledger = dir.path().join("ledger.db");
    let t = teacher.addr.to_string();
    let agg = start_aggregator(aggregator_config(&["--insecure", "--teacher", &t, "--delta", "0", "--ledger", ledger.to_str().expect("utf-8")])).await;
    let mut client = AggregatorClient::new(channel(agg.addr, &Transport::plaintext(), ServerRole::Aggregator).await.expect("connect"));
    let r = client.label(LabelRequest { request_id: "i".into(), samples: Some(eval_samples(2).to_tensor()) }).await.expect("label");
    assert_eq!(r.into_inner().budget.expect("budget").caller, "anonymous");
    agg.stop().await.expect("clean shutdown");
    teacher.stop().await.expect("clean shutdown");
}
